//! The fault matrix: every CloudStack command each workflow calls, failing at each of
//! its occurrences, one at a time.
//!
//! For each workflow (test failover in replica and clone mode, their cleanups, live
//! failover, rollback, commit) a clean run on a fresh rig is counted first from
//! cloudsim's `/sim/stats`: which commands it calls and how often. Then, for every
//! (command, n) of that census, a fresh rig is brought to where the workflow starts,
//! cloudsim is armed to fail exactly the n-th call of that command — an async
//! command's job fails (`job_error` 530, as CloudStack reports a failed job), a
//! synchronous command (a read, `queryAsyncJobResult`, `deleteVolume`) is refused
//! (`api_error` 431); an async command is also tried refused that way, before
//! CloudStack accepted a job — and the workflow runs. The verdict:
//!
//! - done: the end state is checked in full (no false "done");
//! - unwound, for the test and live failovers: pgtest1 at rest — replicas on the
//!   appliance, seen by it, the store agreeing, no VM, snapshot or clone left, the
//!   replicas' content as before — and the run's error names the injected failure;
//! - unwound, for a forward workflow (cleanup, rollback, commit): a second run, with
//!   no fault, finishes, and the end state is checked;
//! - stuck, or anything else: the case fails.
//!
//! DESIGN §5's invariants are checked after every run. A fault whose n-th call never
//! came in the faulty run (poll counts vary with timing) counts as tried, not fired.
//! The cases of a workflow run a few at a time, each on its own rig.

use ::ids::RunId;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::flows::{ASYNC_COMMANDS, Flow, assert_invariants, run_matrix};
use common::{TestResult, rig};
use engine::Outcome;
use futures::FutureExt;
use serde_json::{Value, json};

const INJECTED: &str = "injected by the fault matrix";

/// Cases of one workflow run at once (each on its own cloudsim and store).
fn parallel() -> usize {
    std::env::var("FERRY_FAULT_MATRIX_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// How the matrix fails a call: an async command's job fails; a synchronous one is
/// refused.
fn fault_for(command: &str) -> Value {
    if ASYNC_COMMANDS.contains(&command) {
        job_failed(command)
    } else {
        refused(command)
    }
}

fn job_failed(command: &str) -> Value {
    json!({"kind": "job_error", "errorcode": 530, "errortext": format!("{INJECTED}: {command} job failed")})
}

fn refused(command: &str) -> Value {
    json!({"kind": "api_error", "errorcode": 431, "errortext": format!("{INJECTED}: {command} refused")})
}

/// The faults tried at each call of `command`: an async command's job failing, and
/// the command refused before CloudStack accepted a job; a synchronous command
/// refused.
fn faults_for(command: &str) -> Vec<(&'static str, Value)> {
    if ASYNC_COMMANDS.contains(&command) {
        vec![("job", job_failed(command)), ("call", refused(command))]
    } else {
        vec![("call", refused(command))]
    }
}

/// The calls per command of one clean run of `flow` (the run before it excluded).
async fn census(flow: Flow) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(common::flows::census(flow, Default::default()).await?.calls)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The fault fired and the run still ended done, checked.
    Done,
    /// The run unwound to rest (test and live failovers).
    Unwound,
    /// A forward workflow unwound; a second run finished it.
    FinishedByRerun,
    /// The n-th call never came.
    NotFired,
}

async fn case(flow: Flow, command: String, nth: u64, fault: Value) -> anyhow::Result<Verdict> {
    let rig = rig().await?;
    let base = flow.prepare(&rig).await?;
    rig.arm(json!({"command": command, "nth": nth, "fault": fault}))
        .await?;
    let (run, outcome) = flow.run(&rig).await?;
    let armed = rig.admin("faults").await?;
    let fired = armed.as_array().is_some_and(|a| a.is_empty());
    rig.http_delete_faults().await?;
    let verdict = check(&rig, flow, &base, &run, &outcome, fired)
        .await
        .map_err(|e| e.context(format!("the run ended {outcome:?}")));
    if verdict.is_err() && std::env::var_os("FERRY_FAULT_MATRIX_ONLY").is_some() {
        eprintln!("events: {}", common::trio::events(&rig, &run.id).await);
    }
    verdict
}

async fn check(
    rig: &common::Rig,
    flow: Flow,
    base: &common::flows::Baseline,
    run: &store::Run,
    outcome: &Outcome,
    fired: bool,
) -> anyhow::Result<Verdict> {
    let verdict = match outcome {
        Outcome::Done => {
            flow.assert_done(rig, base).await?;
            if fired {
                Verdict::Done
            } else {
                Verdict::NotFired
            }
        }
        Outcome::Unwound { error } => {
            anyhow::ensure!(fired, "the run unwound without the fault: {error}");
            anyhow::ensure!(
                error.contains(INJECTED),
                "the run's error does not name the injected failure: {error}"
            );
            if flow.is_forward() {
                assert_invariants(rig).await?;
                let again = flow.start(&rig.env).await?;
                let outcome = rig
                    .engine
                    .execute(&again.id, &flow.saga(), &rig.env)
                    .await?;
                anyhow::ensure!(
                    outcome == Outcome::Done,
                    "the second {} ended {outcome:?}: {}",
                    flow.name(),
                    common::trio::events(rig, &again.id).await
                );
                flow.assert_done(rig, base).await?;
                Verdict::FinishedByRerun
            } else {
                flow.assert_unwound(rig, base).await?;
                Verdict::Unwound
            }
        }
        other => anyhow::bail!(
            "the run ended {other:?}: {}",
            common::trio::events(rig, &run.id).await
        ),
    };
    Ok(verdict)
}

/// Runs the whole matrix of `flow` and fails with every case that failed.
async fn matrix(flow: Flow) -> TestResult {
    let started = Instant::now();
    let calls = census(flow).await?;
    // FERRY_FAULT_MATRIX_ONLY=attachVolume#2,listVolumes: only those cases.
    let only: Option<Vec<String>> = std::env::var("FERRY_FAULT_MATRIX_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let mut cases = Vec::new();
    for (command, n) in &calls {
        for nth in 1..=*n {
            let wanted = only.as_ref().is_none_or(|only| {
                only.iter()
                    .any(|o| o == command || *o == format!("{command}#{nth}"))
            });
            if wanted {
                for (how, fault) in faults_for(command) {
                    cases.push((
                        format!("{command} #{nth} ({how})"),
                        case(flow, command.clone(), nth, fault).boxed(),
                    ));
                }
            }
        }
    }
    run_matrix(
        "fault-matrix",
        flow,
        started,
        cases,
        parallel(),
        |results| {
            let mut by_verdict: BTreeMap<String, usize> = BTreeMap::new();
            for (_, result, _) in results {
                if let Ok(v) = result {
                    *by_verdict.entry(format!("{v:?}")).or_default() += 1;
                }
            }
            format!("verdicts={by_verdict:?} commands={calls:?}")
        },
        &format!("fault cases of {} failed", flow.name()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_test_failover_failing_unwinds_it_to_rest() -> TestResult {
    matrix(Flow::TestReplica).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_clone_mode_test_failover_failing_unwinds_it_to_rest() -> TestResult {
    matrix(Flow::TestClone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_cleanup_failing_is_finished_by_the_next_cleanup() -> TestResult {
    matrix(Flow::CleanupReplica).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_clone_mode_cleanup_failing_is_finished_by_the_next() -> TestResult {
    matrix(Flow::CleanupClone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_live_failover_failing_unwinds_it_to_rest() -> TestResult {
    matrix(Flow::Live).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_rollback_failing_is_finished_by_the_next_rollback() -> TestResult {
    matrix(Flow::Rollback).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_commit_failing_is_finished_by_the_next_commit() -> TestResult {
    matrix(Flow::Commit).await
}

// ---- Cases the matrix found, pinned so that they fail the same way every time -------------

/// A real step, with something done around its attempts.
struct Around {
    inner: Box<dyn engine::Step<workflows::Env>>,
    before_attempt: Box<dyn Fn(i64) -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
}

#[async_trait::async_trait]
impl engine::Step<workflows::Env> for Around {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn run(
        &self,
        cx: &engine::StepContext<'_, workflows::Env>,
    ) -> Result<Value, engine::StepError> {
        (self.before_attempt)(cx.attempt).await;
        self.inner.run(cx).await
    }

    async fn undo(
        &self,
        cx: &engine::StepContext<'_, workflows::Env>,
        output: Option<&Value>,
    ) -> Result<(), engine::StepError> {
        self.inner.undo(cx, output).await
    }
}

/// A failed deleteVolume of the placeholder ROOT (after its detach) unwinds the test
/// failover without leaving the placeholder behind: create-vm's undo destroys the VM,
/// but a detached placeholder is no longer the VM's to take with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_placeholder_delete_leaves_no_placeholder_behind() -> TestResult {
    for flow in [Flow::TestReplica, Flow::TestClone, Flow::Live] {
        let rig = rig().await?;
        let base = flow.prepare(&rig).await?;
        rig.arm(json!({"command": "deleteVolume", "fault": fault_for("deleteVolume")}))
            .await?;
        let (_, outcome) = flow.run(&rig).await?;
        let Outcome::Unwound { error } = &outcome else {
            anyhow::bail!("{}: expected an unwind, got {outcome:?}", flow.name());
        };
        assert!(error.contains("placeholder ROOT"), "{error}");
        flow.assert_unwound(&rig, &base).await?;
    }
    Ok(())
}

/// A poll of the boot disk's attach job refused: the volume daemon leaves the
/// operation unfinished, the step is tried again after the job finished, finds the
/// replica attached at 0 — and must still record where it is, or the run is done
/// with a store that disagrees with CloudStack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_found_done_on_a_retry_is_recorded() -> TestResult {
    for flow in [Flow::TestReplica, Flow::Live] {
        let rig = rig().await?;
        let base = flow.prepare(&rig).await?;
        let admin = rig.sim.announcement.admin.clone();
        let saga = engine::Saga::new(
            flow.saga()
                .steps
                .into_iter()
                .map(|inner| {
                    if inner.name() != "attach-replicas" {
                        return inner;
                    }
                    let admin = admin.clone();
                    Box::new(Around {
                        inner,
                        before_attempt: Box::new(move |attempt| {
                            let admin = admin.clone();
                            Box::pin(async move {
                                if attempt == 1 {
                                    // The next poll — of the boot disk's attach — is refused.
                                    // Not with 431: that says CloudStack does not know the
                                    // job, which the volume daemon settles at once by
                                    // looking (tests/forgotten_jobs.rs).
                                    reqwest::Client::new()
                                        .post(format!("{admin}/faults"))
                                        .json(&json!({"command": "queryAsyncJobResult",
                                            "fault": {"kind": "api_error", "errorcode": 401,
                                                "errortext": format!("{INJECTED}: poll refused")}}))
                                        .send()
                                        .await
                                        .expect("armed");
                                } else {
                                    // The job has long finished when the step tries again.
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                            })
                        }),
                    }) as Box<dyn engine::Step<workflows::Env>>
                })
                .collect(),
        );
        let run = flow.start(&rig.env).await?;
        let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
        assert_eq!(outcome, Outcome::Done, "{}", flow.name());
        let attempts: Vec<i64> = rig
            .env
            .store
            .steps(&RunId::from(&run.id))
            .await?
            .iter()
            .filter(|s| s.name == "attach-replicas")
            .map(|s| s.attempts)
            .collect();
        assert_eq!(
            attempts,
            vec![2],
            "the refused poll made the step try again"
        );
        flow.assert_done(&rig, &base).await?;
    }
    Ok(())
}

/// One replica's snapshot job fails while the other's is still being made: the
/// step waits for the other before it fails, so the unwind deletes it (CloudStack
/// refuses to delete a snapshot in Creating state, and one made after the unwind
/// looked would be left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_job_unwinds_after_its_sibling_finished() -> TestResult {
    for flow in [Flow::TestReplica, Flow::TestClone, Flow::Live] {
        let rig = rig().await?;
        let base = flow.prepare(&rig).await?;
        // 150 ms per snapshot job at the rig's time scale.
        rig.latency(json!({"createSnapshot": 150_000})).await?;
        rig.arm(json!({"command": "createSnapshot", "fault": fault_for("createSnapshot")}))
            .await?;
        let (_, outcome) = flow.run(&rig).await?;
        let Outcome::Unwound { error } = &outcome else {
            anyhow::bail!("{}: expected an unwind, got {outcome:?}", flow.name());
        };
        assert!(error.contains(INJECTED), "{error}");
        flow.assert_unwound(&rig, &base).await?;
    }
    Ok(())
}

/// Likewise for the clones of a clone-mode drill: one createVolume job fails while
/// the other clone is still being made; the unwind must not leave that clone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_job_unwinds_after_its_sibling_finished() -> TestResult {
    let rig = rig().await?;
    let base = Flow::TestClone.prepare(&rig).await?;
    rig.latency(json!({"createVolume": 150_000})).await?;
    rig.arm(json!({"command": "createVolume", "fault": fault_for("createVolume")}))
        .await?;
    let (_, outcome) = Flow::TestClone.run(&rig).await?;
    assert!(
        matches!(&outcome, Outcome::Unwound { error } if error.contains(INJECTED)),
        "{outcome:?}"
    );
    Flow::TestClone.assert_unwound(&rig, &base).await
}
