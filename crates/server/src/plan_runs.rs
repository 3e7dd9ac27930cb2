//! Running recovery plans through the API: starting a plan run (driven at once by this
//! process, `plan_driving`) and showing it (docs/decisions/0002-plan-runs.md).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use plans::PlanDefinition;
use plans::runner::PlanStartError;
use serde::Deserialize;
use store::{HookPoint, PlanRun, PlanRunHook, PlanVmState, Workflow};

use crate::error::ApiError;
use crate::model::{ErrorBody, Problem};
use crate::plan_model::{PlanRunHookView, PlanRunTierView, PlanRunView, PlanRunVmView};
use crate::requester::RequestedBy;
use crate::state::AppState;
use crate::view::time;

type ApiResult<T> = Result<T, ApiError>;

/// Starts a run of plan `name` (refused with every pre-flight problem) and drives it
/// from this process.
pub(crate) async fn start(
    state: &AppState,
    who: RequestedBy,
    name: &str,
    workflow: Workflow,
) -> ApiResult<PlanRunView> {
    let run = state
        .plans
        .driver()
        .start(name, workflow)
        .await
        .map_err(|e| match e {
            PlanStartError::NoPlan(_) => ApiError::NotFound(e.to_string()),
            PlanStartError::Busy { .. } => ApiError::Conflict(e.to_string()),
            PlanStartError::Preflight(problems) => ApiError::Invalid {
                message: format!(
                    "plan {name} was not started, and nothing changed: {} problem(s)",
                    problems.len()
                ),
                problems: problems
                    .into_iter()
                    .map(|p| Problem {
                        field: p.field,
                        message: p.message,
                    })
                    .collect(),
            },
            PlanStartError::Store(e) => e.into(),
        })?;
    if let Some(who) = &who.0 {
        state
            .env
            .store
            .set_plan_run_requested_by(&run.id, who)
            .await?;
    }
    tracing::info!(plan = %name, plan_run = %run.id, %workflow, "plan run started");
    state.plans.drive(run.id.clone());
    Ok(view(&run))
}

macro_rules! start_route {
    ($fn:ident, $path:literal, $workflow:expr, $what:literal) => {
        #[utoipa::path(post, path = $path, tag = "plans",
            params(("name" = String, Path, description = "The plan's name")),
            responses((status = 202, description = $what, body = PlanRunView),
                      (status = 404, body = ErrorBody),
                      (status = 409, description = "A run of the plan is under way", body = ErrorBody),
                      (status = 422, description = "Pre-flight: a VM is not where the workflow starts from, or in another run; `problems` names every one, and nothing changed", body = ErrorBody)))]
        pub(crate) async fn $fn(
            State(state): State<AppState>,
            who: RequestedBy,
            Path(name): Path<String>,
        ) -> ApiResult<(StatusCode, Json<PlanRunView>)> {
            Ok((StatusCode::ACCEPTED, Json(start(&state, who, &name, $workflow).await?)))
        }
    };
}

start_route!(
    start_plan_test,
    "/v1/plans/{name}/test-failover",
    Workflow::TestFailover,
    "A drill of the plan: test failovers tier by tier, each VM's gates checked"
);
start_route!(
    start_plan_cleanup,
    "/v1/plans/{name}/cleanup",
    Workflow::Cleanup,
    "The cleanup of the plan's drill, last tier first"
);
start_route!(
    start_plan_live,
    "/v1/plans/{name}/live-failover",
    Workflow::LiveFailover,
    "A live failover of the plan, tier by tier, each VM's gates checked"
);
start_route!(
    start_plan_rollback,
    "/v1/plans/{name}/rollback",
    Workflow::Rollback,
    "The rollback of the plan's live failover, last tier first"
);
start_route!(
    start_plan_commit,
    "/v1/plans/{name}/commit",
    Workflow::Commit,
    "The commit of the plan's live failover"
);

#[utoipa::path(get, path = "/v1/plan-runs/{id}", tag = "plans",
    params(("id" = String, Path, description = "The plan run's id")),
    responses((status = 200, body = PlanRunView), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_plan_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PlanRunView>> {
    Ok(Json(plan_run(&state, &id).await?))
}

/// Plan run `id`, or 404.
pub(crate) async fn plan_run(state: &AppState, id: &str) -> ApiResult<PlanRunView> {
    let run = state
        .env
        .store
        .plan_run(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no plan run {id}")))?;
    Ok(view(&run))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PlanRunQuery {
    /// At most this many, newest first (default 20, at most 1000).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/plans/{name}/runs", tag = "plans",
    params(("name" = String, Path, description = "The plan's name"), PlanRunQuery),
    responses((status = 200, description = "The plan's runs, newest first", body = Vec<PlanRunView>),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_plan_runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<PlanRunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<PlanRunView>>> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))?;
    Ok(Json(
        runs_of(&state, &name, query.limit.unwrap_or(20)).await?,
    ))
}

/// The runs of plan `name`, newest first, at most `limit` (1 to 1000).
pub(crate) async fn runs_of(
    state: &AppState,
    name: &str,
    limit: i64,
) -> ApiResult<Vec<PlanRunView>> {
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and 1000 (got {limit})"
        )));
    }
    let plan = state.env.store.plan(name).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no recovery plan named `{name}`: `ferry plan list` shows them"
        ))
    })?;
    let runs = state.env.store.plan_runs_of(&plan.id, limit).await?;
    Ok(runs.iter().map(view).collect())
}

pub(crate) fn view(run: &PlanRun) -> PlanRunView {
    let tiers = run.vms.iter().map(|v| v.tier).max().map_or(0, |t| t + 1);
    let plan = PlanDefinition::from_stored(&run.definition).ok();
    PlanRunView {
        id: run.id.clone(),
        plan: run.plan_name.clone(),
        workflow: run.workflow.to_string(),
        state: run.state.to_string(),
        tier: run.tier + 1,
        tiers,
        error: run.error.clone(),
        created_at: time(run.created_at),
        finished_at: run.finished_at.map(time),
        rto_ms: run.rto_ms(),
        worker: run
            .lease_expires_at
            .filter(|&t| t > store::now_ms() && run.state.is_active())
            .and(run.lease_owner.clone()),
        generation: run.generation,
        tier_timings: tier_timings(run, plan.as_ref(), tiers),
        hooks: plan.as_ref().map_or_else(Vec::new, |p| hook_views(run, p)),
        vms: run
            .vms
            .iter()
            .map(|v| PlanRunVmView {
                name: v.vm_name.clone(),
                tier: v.tier + 1,
                state: v.state.to_string(),
                run_id: v.run_id.as_ref().map(|r| r.to_string()),
                rto_ms: run.vm_rto_ms(v),
                detail: v.detail.clone(),
                readiness: v
                    .readiness
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok()),
            })
            .collect(),
    }
}

/// Each tier of `run` (`count` of them) in the order its workflow takes them, with
/// when it began, when its VMs were through and when it ended.
fn tier_timings(run: &PlanRun, plan: Option<&PlanDefinition>, count: i64) -> Vec<PlanRunTierView> {
    let now = store::now_ms();
    (0..count)
        .map(|t| {
            let name = plan
                .and_then(|p| {
                    plans::order::tier_of_order(p, run.workflow, t).map(|i| p.tiers[i].name.clone())
                })
                .unwrap_or_else(|| format!("tier {}", t + 1));
            let times = run.tiers.iter().find(|x| x.tier == t);
            let started = times.map(|x| x.started_at);
            let ended = times.and_then(|x| x.ended_at);
            let vms: Vec<_> = run.vms.iter().filter(|v| v.tier == t).collect();
            let through = started
                .filter(|_| {
                    vms.iter().all(|v| {
                        matches!(
                            v.state,
                            PlanVmState::Ready | PlanVmState::Failed | PlanVmState::Skipped
                        )
                    })
                })
                .and_then(|_| vms.iter().filter_map(|v| v.ready_at.or(v.ended_at)).max());
            PlanRunTierView {
                tier: t + 1,
                name,
                started_at: started.map(time),
                through_at: through.map(time),
                ended_at: ended.map(time),
                vms_ms: started.zip(through).map(|(s, e)| e - s),
                ms: started.map(|s| ended.unwrap_or(now) - s),
            }
        })
        .collect()
}

/// Every hook of `plan` that `run`'s workflow runs, in the order they come, each with
/// what the plan run recorded of it (`not_run` when nothing).
fn hook_views(run: &PlanRun, plan: &PlanDefinition) -> Vec<PlanRunHookView> {
    let now = store::now_ms();
    let view = |tier: Option<(i64, &str)>, position: usize, hook: &plans::PlanHook| {
        let point = match hook.when {
            plans::When::Before => HookPoint::Before,
            plans::When::After => HookPoint::After,
        };
        let recorded: Option<&PlanRunHook> = run.hooks.iter().find(|h| {
            h.tier == tier.map(|(t, _)| t) && h.point == point && h.position == position as i64
        });
        PlanRunHookView {
            tier: tier.map(|(t, _)| t + 1),
            tier_name: tier.map(|(_, name)| name.to_string()),
            point: point.to_string(),
            hook: recorded.map_or_else(|| hook.run.to_string(), |h| h.hook.clone()),
            outcome: recorded.map_or("not_run".into(), |h| h.outcome.to_string()),
            detail: recorded.and_then(|h| h.detail.clone()),
            attempts: recorded.map_or(0, |h| h.attempts),
            started_at: recorded.map(|h| time(h.started_at)),
            ended_at: recorded.and_then(|h| h.ended_at).map(time),
            ms: recorded.map(|h| h.ended_at.unwrap_or(now) - h.started_at),
        }
    };
    let ours = |h: &&plans::PlanHook| h.scope.covers(run.workflow);
    let of = |hooks: &[plans::PlanHook], when: plans::When, tier: Option<(i64, &str)>| {
        hooks
            .iter()
            .enumerate()
            .filter(|(_, h)| h.when == when && ours(h))
            .map(|(i, h)| view(tier, i, h))
            .collect::<Vec<_>>()
    };
    let mut out = of(&plan.hooks, plans::When::Before, None);
    for t in 0..plan.tiers.len() as i64 {
        let Some(tier) = plans::order::tier_of_order(plan, run.workflow, t).map(|i| &plan.tiers[i])
        else {
            continue;
        };
        for when in [plans::When::Before, plans::When::After] {
            out.extend(of(&tier.hooks, when, Some((t, tier.name.as_str()))));
        }
    }
    out.extend(of(&plan.hooks, plans::When::After, None));
    out
}
