//! The operator's commands, written once for the REST API and the console: reading
//! the VMs and runs as an operator sees them, starting a workflow, and cancelling,
//! retrying or abandoning a run. The API's handlers (`api`) and the console's (`console`) are
//! thin: they turn a request into one of these calls and its answer into JSON or
//! HTML, so a refusal reads the same in both and neither can do what the other
//! would refuse.

use ids::{ProtectedVmId, RunId};
use std::collections::BTreeMap;

use store::{ProtectedVm, Run, RunState};

use crate::error::ApiError;
use crate::model::{RunSummary, TestMode, VmSummary};
use crate::state::AppState;
use crate::view;

type ApiResult<T> = Result<T, ApiError>;

/// A registered protected VM by name, or 404.
pub(crate) async fn vm_by_name(state: &AppState, name: &str) -> ApiResult<ProtectedVm> {
    state.env.store.vm(name).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no protected VM named `{name}`: `ferry vm list` shows them"
        ))
    })
}

/// Every protected VM with its active run, sorted by name.
pub(crate) async fn vm_summaries(state: &AppState) -> ApiResult<Vec<VmSummary>> {
    let mut out = Vec::new();
    for vm in state.env.store.vms().await? {
        let active = state.env.store.active_run(&vm.id).await?;
        out.push(view::vm_summary(&vm, active.as_ref()));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A workflow an operator starts on one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    TestFailover(TestMode),
    Cleanup,
    LiveFailover,
    Rollback,
    Commit,
}

/// Stores a new run of `what` for VM `name` (refused as the workflow's `start`
/// refuses it) with who asked for it, when known (the evidence report says it), wakes
/// the worker to execute it at once, and returns the run.
pub(crate) async fn start(
    state: &AppState,
    name: &str,
    what: Start,
    requested_by: Option<&str>,
) -> ApiResult<RunSummary> {
    let env = &state.env;
    let run = match what {
        Start::TestFailover(mode) => {
            let mode = match mode {
                TestMode::Replica => workflows::test_failover::Mode::Replica,
                TestMode::Clone => workflows::test_failover::Mode::Clone,
            };
            workflows::test_failover::start_with_mode(env, name, mode).await
        }
        Start::Cleanup => workflows::cleanup::start(env, name).await,
        Start::LiveFailover => workflows::live::start(env, name).await,
        Start::Rollback => workflows::rollback::start(env, name).await,
        Start::Commit => workflows::commit::start(env, name).await,
    }?;
    if let Some(who) = requested_by {
        env.store.set_run_requested_by(&run.id, who).await?;
    }
    state.worker.wake();
    let summary = view::run_summary_of(&env.store, &run).await?;
    tracing::info!(run = %run.id, workflow = %run.workflow, vm = %summary.vm, "run started");
    Ok(summary)
}

/// A run by its full id, or 404.
pub(crate) async fn run_by_id(state: &AppState, id: &str) -> ApiResult<Run> {
    state
        .env
        .store
        .run(&RunId::from(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}: `ferry run list` shows them")))
}

/// Which runs to list.
#[derive(Debug, Default)]
pub(crate) struct RunFilter<'a> {
    /// Only this VM's.
    pub vm: Option<&'a str>,
    /// Only those whose id starts with this (any case), among all runs.
    pub id_prefix: Option<&'a str>,
    /// At most this many, newest first: 1 to 1000.
    pub limit: i64,
}

/// The runs `filter` asks for, newest first, each naming its VM as runs do.
pub(crate) async fn runs(state: &AppState, filter: RunFilter<'_>) -> ApiResult<Vec<RunSummary>> {
    let limit = filter.limit;
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and 1000 (got {limit})"
        )));
    }
    let runs = match (filter.vm, filter.id_prefix) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give vm or id_prefix, not both: a run's id names it whatever its VM",
            ));
        }
        (None, Some(prefix)) => {
            if !(1..=36).contains(&prefix.chars().count()) {
                return Err(ApiError::invalid(format!(
                    "id_prefix must be 1 to 36 characters, the start of a run's id (got {} characters)",
                    prefix.chars().count()
                )));
            }
            state
                .env
                .store
                .runs_by_id_prefix(&prefix.to_ascii_lowercase(), limit)
                .await?
        }
        (vm, None) => {
            let vm = match vm {
                Some(name) => Some(vm_by_name(state, name).await?),
                None => None,
            };
            state
                .env
                .store
                .runs(vm.as_ref().map(|v| &v.id), limit)
                .await?
        }
    };
    let names = vm_names(state).await?;
    Ok(runs
        .iter()
        .map(|r| view::run_summary(r, names.get(&r.vm_id).map(String::as_str).unwrap_or("")))
        .collect())
}

/// Every VM's name as runs show it, by id: a removed VM's as `NAME (removed)`.
async fn vm_names(state: &AppState) -> ApiResult<BTreeMap<ProtectedVmId, String>> {
    Ok(state
        .env
        .store
        .vm_names()
        .await?
        .into_iter()
        .map(|v| {
            let name = view::run_vm_name(&v.name, v.removed_at);
            (v.id, name)
        })
        .collect())
}

/// Asks a pending or running run to stop: it unwinds before its next step. Refused
/// for a run that is unwinding, stuck (retry or abandon it) or has ended.
pub(crate) async fn cancel(state: &AppState, id: &str) -> ApiResult<RunSummary> {
    let run = run_by_id(state, id).await?;
    match run.state {
        RunState::Pending | RunState::Running => {}
        RunState::Unwinding => {
            return Err(ApiError::Conflict(format!("run {id} is already unwinding")));
        }
        RunState::Stuck => {
            return Err(ApiError::Conflict(format!(
                "run {id} is stuck: an undo failed. Fix its cause and `ferry run retry {id}`, or `ferry run abandon {id}`"
            )));
        }
        ended => {
            return Err(ApiError::Conflict(format!(
                "run {id} has ended ({ended}); there is nothing to cancel"
            )));
        }
    }
    state.env.store.request_cancel(&RunId::from(id)).await?;
    state.worker.wake();
    tracing::info!(run = %id, "cancel requested");
    summary_now(state, id).await
}

/// Tries a stuck run's failed undo again (refused unless it is stuck).
pub(crate) async fn retry(state: &AppState, id: &str) -> ApiResult<RunSummary> {
    run_by_id(state, id).await?;
    engine::retry_stuck(&state.env.store, &RunId::from(id)).await?;
    state.worker.wake();
    tracing::info!(run = %id, "stuck run retried by an operator");
    summary_now(state, id).await
}

/// Gives up on a stuck run: it no longer holds its VM (refused unless it is stuck).
pub(crate) async fn abandon(state: &AppState, id: &str) -> ApiResult<RunSummary> {
    run_by_id(state, id).await?;
    engine::abandon(&state.env.store, &RunId::from(id)).await?;
    tracing::warn!(run = %id, "stuck run abandoned by an operator");
    summary_now(state, id).await
}

async fn summary_now(state: &AppState, id: &str) -> ApiResult<RunSummary> {
    let run = run_by_id(state, id).await?;
    view::run_summary_of(&state.env.store, &run).await
}
