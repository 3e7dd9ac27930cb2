//! The crash matrix of live failover, rollback and commit, in-process: the process
//! running a workflow dies — its engine task is aborted and its volume daemon dropped,
//! which aborts the operations the daemon was carrying on — at every step boundary
//! (a step recorded as started, its action not begun; and its action done, not yet
//! recorded) and inside every CloudStack job the workflow starts (the job recorded —
//! in the volume daemon's journal as `submitted`, or in the run's log for a VM
//! command — and still running in CloudStack). A new "process" then starts on the
//! same store: a new volume daemon resumes what its journal holds unfinished (as
//! `ferry serve` does at start), and a new engine under the same worker name takes
//! the run back and finishes it.
//!
//! Every case must end done with the workflow's end state checked in full, the step
//! that was interrupted run twice and every other once, and exactly the async jobs of
//! a clean run: nothing sent twice. (The test failover and its cleanup have the same
//! matrix at the process level, SIGKILLing `ferry serve`: `crates/ferry/tests/crash.rs`.)
//!
//! A job is kept in flight long enough to be caught by slowing its command in
//! cloudsim (200 ms at the rig's time scale) for the first process only.

use ::ids::RunId;
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::flows::{Census, Flow, run_matrix};
use common::trio::{Action, fault_at};
use common::{Rig, TestResult, engine_config, rig};
use engine::{Engine, Outcome};
use futures::FutureExt;
use serde_json::{Value, json};
use store::StepState;
use tokio::sync::Notify;
use workflows::Env;

/// Where the first process dies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Point {
    /// Step `k` recorded as started; its action not begun.
    BeforeStep(usize, String),
    /// Step `k`'s action done; its output not recorded.
    AfterStep(usize, String),
    /// The `nth` job of `command` recorded and still running in CloudStack.
    InJob { command: String, nth: usize },
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::BeforeStep(k, name) => write!(f, "before step {k} {name}"),
            Point::AfterStep(k, name) => write!(f, "after step {k} {name}"),
            Point::InJob { command, nth } => write!(f, "inside {command} job #{nth}"),
        }
    }
}

/// The CloudStack command of a volume-daemon operation kind.
fn command_of(kind: &str) -> &'static str {
    match kind {
        "attach" | "attach_root" => "attachVolume",
        "detach" => "detachVolume",
        "snapshot" => "createSnapshot",
        "revert" => "revertSnapshot",
        "delete_snapshot" => "deleteSnapshot",
        "create_volume" => "createVolume",
        "delete_volume" => "deleteVolume",
        _ => "guestPreparation",
    }
}

/// The CloudStack jobs a run has recorded, per command, in the order recorded: the
/// volume daemon's operations with a job id, and the VM commands in the run's log.
async fn recorded_jobs(
    store: &store::Store,
    run_id: &RunId,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for op in store.ops_for_run(&RunId::from(run_id)).await? {
        if let Some(job) = op.job_id {
            out.entry(command_of(&op.kind).to_string())
                .or_default()
                .push(job.into_string());
        }
    }
    for e in store.events(&RunId::from(run_id)).await? {
        let Some(fields) = e.fields.as_deref() else {
            continue;
        };
        let fields: Value = serde_json::from_str(fields)?;
        if let (Some(command), Some(job)) = (fields["command"].as_str(), fields["job_id"].as_str())
        {
            out.entry(command.to_string())
                .or_default()
                .push(job.to_string());
        }
    }
    Ok(out)
}

/// The last of `jobs` that CloudStack still runs.
async fn pending(rig: &Rig, jobs: &[String]) -> anyhow::Result<Option<String>> {
    let running: Vec<String> = rig
        .env
        .cloud
        .list_async_jobs()
        .await?
        .into_iter()
        .filter(|j| j.jobstatus == cloudstack::JobStatus::Pending)
        .map(|j| j.jobid.into_string())
        .collect();
    Ok(jobs.iter().rev().find(|j| running.contains(j)).cloned())
}

/// The worker of a "process": one name for all, as `ferry serve` on SQLite uses the
/// host's, so a restarted process takes its runs back at once.
fn engine(rig: &Rig) -> Engine {
    Engine::new(
        rig.env.store.clone(),
        engine_config("worker-1", Duration::from_secs(30)),
    )
}

/// A "process": the rig's environment with a volume daemon of its own.
fn process(rig: &Rig) -> (Env, Arc<volumed::Local>) {
    let local = rig.restarted_local();
    let env = Env {
        volumes: local.clone(),
        agents: Default::default(),
        ..rig.env.clone()
    };
    (env, local)
}

/// The points of `flow`: every step boundary, and every job of a clean run.
async fn points(flow: Flow) -> anyhow::Result<(Vec<Point>, Census)> {
    let rig = rig().await?;
    flow.prepare(&rig).await?;
    let before = rig.census_now().await?;
    let (run, outcome) = flow.run(&rig).await?;
    anyhow::ensure!(
        outcome == Outcome::Done,
        "the clean {} ended {outcome:?}",
        flow.name()
    );
    let clean = rig.census_now().await?.since(&before);
    let mut points = Vec::new();
    for (k, name) in flow
        .saga()
        .steps
        .iter()
        .map(|s| s.name().to_string())
        .enumerate()
    {
        points.push(Point::BeforeStep(k, name.clone()));
        points.push(Point::AfterStep(k, name));
    }
    for (command, jobs) in recorded_jobs(&rig.env.store, &run.id).await? {
        for nth in 1..=jobs.len() {
            points.push(Point::InJob {
                command: command.clone(),
                nth,
            });
        }
    }
    Ok((points, clean))
}

/// One case: the first process dies at `point`, the second finishes the run.
async fn case(flow: Flow, point: Point, clean: Census) -> TestResult {
    let rig = rig().await?;
    let base = flow.prepare(&rig).await?;
    let before = rig.census_now().await?;
    let run = flow.start(&rig.env).await?;

    // The first process, and where it dies.
    let reached = Arc::new(Notify::new());
    let saga = match &point {
        Point::BeforeStep(k, _) => fault_at(flow.saga(), *k, Action::HangBefore(reached.clone())),
        Point::AfterStep(k, _) => fault_at(flow.saga(), *k, Action::HangAfter(reached.clone())),
        Point::InJob { command, .. } => {
            rig.latency(json!({ command.as_str(): 200_000 })).await?;
            flow.saga()
        }
    };
    let (env, local) = process(&rig);
    drop(local);
    let first = engine(&rig);
    let run_id = run.id.clone();
    let mut worker = tokio::spawn(async move { first.execute(&run_id, &saga, &env).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut in_flight_job = None;
    loop {
        anyhow::ensure!(Instant::now() < deadline, "{point} was never reached");
        match &point {
            Point::InJob { command, nth } => {
                // Jobs of one command submitted at once (the two replicas' detaches)
                // are recorded in any order: once `nth` are, the kill lands inside
                // whichever of them CloudStack still runs.
                let jobs = recorded_jobs(&rig.env.store, &run.id).await?;
                let recorded = jobs.get(command).cloned().unwrap_or_default();
                if recorded.len() >= *nth {
                    in_flight_job = pending(&rig, &recorded).await?;
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                    ended = &mut worker => anyhow::bail!("the run ended before {point}: {ended:?}"),
                }
            }
            _ => tokio::select! {
                _ = reached.notified() => break,
                ended = &mut worker => anyhow::bail!("the run ended before {point}: {ended:?}"),
            },
        }
    }
    // The process dies: its engine and, with the last handle on it, its volume daemon.
    worker.abort();
    let _ = worker.await;
    if let Point::InJob { command, .. } = &point {
        let Some(job) = &in_flight_job else {
            anyhow::bail!("the kill missed: every recorded {command} job had finished");
        };
        anyhow::ensure!(
            pending(&rig, std::slice::from_ref(job)).await?.is_some(),
            "the kill missed job {job}: it finished before the process was gone"
        );
    }
    if let Point::InJob { command, .. } = &point {
        let normal = cloudsim::world::default_latency_ms(&command.to_lowercase());
        rig.latency(json!({ command.as_str(): normal })).await?;
    }

    // The second process: its volume daemon resumes what the journal holds
    // unfinished, then its engine takes the run back.
    let (env, local) = process(&rig);
    let resumed = local.resume_unfinished().await?;
    if let (Some(job), Point::InJob { command, .. }) = (&in_flight_job, &point)
        && !command.ends_with("VirtualMachine")
    {
        // The dead daemon's operation stayed `submitted`: it is waited on, by its job.
        let ops = rig.env.store.ops_for_run(&RunId::from(&run.id)).await?;
        let op = ops
            .iter()
            .find(|o| o.job_id.as_ref().map(|id| id.as_str()) == Some(job.as_str()));
        anyhow::ensure!(
            op.is_some_and(|o| resumed.iter().any(|r| r.op_id == o.id && r.had_job_id)),
            "the operation of job {job} was not resumed by its job id: the kill did not stop it"
        );
    }
    for r in resumed {
        anyhow::ensure!(
            r.outcome.is_ok(),
            "resuming {} ({}) failed: {:?}",
            r.idempotency_key,
            r.kind.as_str(),
            r.outcome
        );
    }
    let outcome = engine(&rig).execute(&run.id, &flow.saga(), &env).await?;
    anyhow::ensure!(
        outcome == Outcome::Done,
        "after a crash {point}, the run ended {outcome:?}: {}",
        common::trio::events(&rig, &run.id).await
    );
    flow.assert_done(&rig, &base).await?;
    let steps = rig.env.store.steps(&RunId::from(&run.id)).await?;
    let resumed_at = match &point {
        Point::BeforeStep(k, _) | Point::AfterStep(k, _) => Some(*k),
        Point::InJob { .. } => None,
    };
    for (i, s) in steps.iter().enumerate() {
        anyhow::ensure!(
            s.state == StepState::Done,
            "step {} is {:?}",
            s.name,
            s.state
        );
        match resumed_at {
            Some(k) => anyhow::ensure!(
                s.attempts == if i == k { 2 } else { 1 },
                "step {} ran {} times; the run was to resume at step {k} only",
                s.name,
                s.attempts
            ),
            None => anyhow::ensure!(s.attempts <= 2, "step {} ran {} times", s.name, s.attempts),
        }
    }
    let got = rig.census_now().await?.since(&before);
    anyhow::ensure!(
        got.jobs == clean.jobs,
        "a duplicated (or missing) operation after a crash {point}: jobs {:?}, a clean run's {:?}",
        got.jobs,
        clean.jobs
    );
    Ok(())
}

async fn matrix(flow: Flow) -> TestResult {
    let started = Instant::now();
    let (points, clean) = points(flow).await?;
    let total = points.len();
    let in_jobs = points
        .iter()
        .filter(|p| matches!(p, Point::InJob { .. }))
        .count();
    let cases = points
        .into_iter()
        .map(|point| (point.to_string(), case(flow, point, clean.clone()).boxed()))
        .collect();
    run_matrix(
        "crash-matrix",
        flow,
        started,
        cases,
        4,
        |_| format!("boundaries={} in_jobs={in_jobs}", total - in_jobs),
        &format!("crashes of {} went wrong", flow.name()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_survives_a_crash_at_every_step_boundary_and_inside_every_job() -> TestResult
{
    matrix(Flow::Live).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_survives_a_crash_at_every_step_boundary_and_inside_every_job() -> TestResult {
    matrix(Flow::Rollback).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_survives_a_crash_at_every_step_boundary_and_inside_every_job() -> TestResult {
    matrix(Flow::Commit).await
}
