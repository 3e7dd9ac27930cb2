//! The saga trio (STYLE, "Tests") for the live failover and the two workflows that
//! follow it up, rollback and commit, end to end against cloudsim: a definitive
//! failure injected at every step of the live failover — before its action ran, and
//! after it ran — unwinds it to rest; every action run twice ends where one run does;
//! every undo run twice is harmless; a worker that dies inside a step has its run
//! taken over by another without a duplicate CloudStack operation. Rollback and commit
//! are forward workflows: one that failed at any step is finished by the next. After
//! each, DESIGN §5's invariants are checked against cloudsim's state.
//!
//! Faults are injected by wrapping the workflows' own steps in [`Faulty`] (the same
//! wrapper as `saga_trio.rs`), which delegates to the real step. Every case gets a
//! fresh rig; the cases of one test run one after another, each in its own task, and
//! a test reports every case that failed, not only the first.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloudsim::world::ids;
use common::{REPLICAS, Rig, TestResult, rig};
use engine::{Engine, EngineConfig, Outcome, Saga, Step, StepContext, StepError};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use store::{RunState, StepState, VmState};
use tokio::sync::Notify;
use workflows::{Env, StartError, commit, live, rollback};

// ---- The fault wrapper (as in saga_trio.rs) ----------------------------------------------

/// What a wrapped step's action does.
#[derive(Clone)]
enum Action {
    /// The real action, once.
    Once,
    /// Fail definitively without running the real action.
    FailBefore,
    /// Run the real action, then fail definitively anyway.
    FailAfter,
    /// Run the real action twice and return the second output.
    Twice,
    /// Run the real action, tell the test, then never return: a worker that dies
    /// after the action took effect and before its output was recorded.
    HangAfter(Arc<Notify>),
}

/// What a wrapped step's undo does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Undo {
    Once,
    /// Run the real undo twice.
    Twice,
}

/// A real step with a fault around it.
struct Faulty {
    inner: Box<dyn Step<Env>>,
    action: Action,
    undo: Undo,
}

#[async_trait]
impl Step<Env> for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        match &self.action {
            Action::Once => self.inner.run(cx).await,
            Action::FailBefore => Err(StepError::Definitive(format!(
                "injected failure before the action of {}",
                self.name()
            ))),
            Action::FailAfter => {
                self.inner.run(cx).await?;
                Err(StepError::Definitive(format!(
                    "injected failure after the action of {} ran",
                    self.name()
                )))
            }
            Action::Twice => {
                self.inner.run(cx).await?;
                self.inner.run(cx).await
            }
            Action::HangAfter(reached) => {
                self.inner.run(cx).await?;
                reached.notify_one();
                std::future::pending().await
            }
        }
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        output: Option<&Value>,
    ) -> Result<(), StepError> {
        self.inner.undo(cx, output).await?;
        if self.undo == Undo::Twice {
            self.inner.undo(cx, output).await?;
        }
        Ok(())
    }
}

/// `saga` with each step wrapped as `fault` says for its position.
fn faulty(saga: Saga<Env>, fault: impl Fn(usize) -> (Action, Undo)) -> Saga<Env> {
    Saga::new(
        saga.steps
            .into_iter()
            .enumerate()
            .map(|(k, inner)| {
                let (action, undo) = fault(k);
                Box::new(Faulty {
                    inner,
                    action,
                    undo,
                }) as Box<dyn Step<Env>>
            })
            .collect(),
    )
}

/// `saga` with `action` at step `k` and every other step untouched.
fn fault_at(saga: Saga<Env>, k: usize, action: Action) -> Saga<Env> {
    faulty(saga, |i| {
        (
            if i == k { action.clone() } else { Action::Once },
            Undo::Once,
        )
    })
}

fn step_names(saga: &Saga<Env>) -> Vec<String> {
    saga.steps.iter().map(|s| s.name().to_string()).collect()
}

/// The failures injected at each step: before, then after its action.
fn failures() -> [(&'static str, Action); 2] {
    [
        ("failing before", Action::FailBefore),
        ("failing after", Action::FailAfter),
    ]
}

// ---- Running cases and checking outcomes -------------------------------------------------

type Cases = Vec<(String, BoxFuture<'static, TestResult>)>;

/// Runs the cases one after another, each in its own task, and fails with the list
/// of the cases that failed (an error or a panic), not only the first.
async fn run_cases(cases: Cases) -> TestResult {
    assert!(!cases.is_empty());
    let total = cases.len();
    let mut failed = Vec::new();
    for (label, case) in cases {
        let started = Instant::now();
        let problem = match tokio::spawn(case).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                Some(
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".to_string()),
                )
            }
            Err(e) => Some(e.to_string()),
        };
        eprintln!(
            "case {label}: {} ({:?})",
            if problem.is_some() { "FAILED" } else { "ok" },
            started.elapsed()
        );
        if let Some(problem) = problem {
            failed.push(format!("- {label}: {problem}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    Ok(())
}

/// The run's events, for a failure message.
async fn events(rig: &Rig, run_id: &str) -> String {
    match rig.env.store.events(run_id).await {
        Ok(events) => format!("{events:?}"),
        Err(e) => format!("(no events: {e})"),
    }
}

async fn expect_done(rig: &Rig, run_id: &str, outcome: Outcome) -> TestResult {
    anyhow::ensure!(
        outcome == Outcome::Done,
        "expected the run to be done, got {outcome:?}; events: {}",
        events(rig, run_id).await
    );
    Ok(())
}

/// Checks that the run unwound because of the injected failure at `step`, that
/// nothing ran after it, and that every step that ran (the failed one included) was
/// undone.
async fn expect_unwound_by(rig: &Rig, run_id: &str, outcome: Outcome, step: &str) -> TestResult {
    let Outcome::Unwound { error } = &outcome else {
        anyhow::bail!(
            "expected the run to unwind, got {outcome:?}; events: {}",
            events(rig, run_id).await
        );
    };
    anyhow::ensure!(
        error.contains("injected") && error.contains(step),
        "the run unwound for another reason than the failure injected at {step}: {error}"
    );
    let run = rig.env.store.run(run_id).await?.expect("a run");
    assert_eq!(run.state, RunState::Unwound);
    let steps = rig.env.store.steps(run_id).await?;
    assert_eq!(
        steps.last().map(|s| s.name.as_str()),
        Some(step),
        "nothing ran after the failed step"
    );
    for s in &steps {
        assert_eq!(s.state, StepState::Undone, "step {} was not undone", s.name);
    }
    Ok(())
}

/// The VM named exactly `pgtest1`, if CloudStack has one alive.
async fn live_vm(rig: &Rig) -> anyhow::Result<Option<cloudstack::VirtualMachine>> {
    Ok(rig
        .env
        .cloud
        .list_virtual_machines(&cloudstack::VmFilter::default())
        .await?
        .into_iter()
        .find(|v| v.name == "pgtest1" && v.state != "Destroyed" && v.state != "Expunging"))
}

async fn snapshots(rig: &Rig) -> anyhow::Result<usize> {
    let mut n = 0;
    for id in REPLICAS {
        n += rig.env.cloud.list_snapshots(Some(id), None).await?.len();
    }
    Ok(n)
}

/// The live failover's unwind left pgtest1 at rest (the invariants of
/// [`Rig::assert_at_rest_since`]), no VM `pgtest1`, and the replicas' content as it
/// was `before` the failover.
async fn assert_unwound_to_rest(
    rig: &Rig,
    registered: &store::ProtectedVm,
    before: &std::collections::BTreeMap<String, u64>,
) -> TestResult {
    rig.assert_at_rest_since(Some(registered)).await?;
    if let Some(vm) = live_vm(rig).await? {
        anyhow::bail!("VM pgtest1 ({}, {}) was left", vm.id, vm.state);
    }
    assert_eq!(
        &rig.generations().await?,
        before,
        "the replicas' content changed (generations)"
    );
    Ok(())
}

/// pgtest1 failed over: `pgtest1` running on the production network, boot at 0 and
/// data at 1 and nothing else, unseen by the appliance; the store agrees.
async fn assert_failed_over(rig: &Rig) -> anyhow::Result<cloudstack::VirtualMachine> {
    let target = live_vm(rig).await?.expect("a VM named pgtest1");
    assert_eq!(target.state, "Running");
    assert_eq!(target.nic.len(), 1);
    assert_eq!(target.nic[0].networkid, ids::NETWORK_PRODUCTION);
    let mut on_target: Vec<(i64, String, String)> = rig
        .env
        .cloud
        .list_volumes(&cloudstack::VolumeFilter {
            virtual_machine_id: Some(target.id.clone()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|v| (v.deviceid.unwrap_or(-1), v.id, v.volume_type))
        .collect();
    on_target.sort();
    assert_eq!(
        on_target,
        vec![
            (0, ids::PGTEST1_DISK_2000.to_string(), "ROOT".to_string()),
            (
                1,
                ids::PGTEST1_DISK_2001.to_string(),
                "DATADISK".to_string()
            ),
        ],
        "boot disk at 0, data disk at 1, and nothing else"
    );
    for id in REPLICAS {
        assert!(!rig.guest_sees(id), "the appliance still sees {id}");
    }
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    assert_eq!(vm.state, VmState::FailedOver);
    assert_eq!(vm.target_vm_id.as_deref(), Some(target.id.as_str()));
    for d in &vm.disks {
        assert_eq!(
            d.attachment.vm_id.as_deref(),
            Some(target.id.as_str()),
            "the store agrees on where {} is",
            d.disk.replica_volume_id
        );
    }
    assert_eq!(snapshots(rig).await?, 2, "the way back is kept");
    Ok(target)
}

/// cloudsim's call counts: `pgtest1` deployed once, the two replicas attached once
/// each (a live failover attaches nothing to the appliance), none of those failed.
async fn assert_one_deploy_and_two_attaches(rig: &Rig) -> TestResult {
    let stats = rig.stats().await?;
    let calls = |c: &str| stats.calls.get(c).copied().unwrap_or(0);
    assert_eq!(
        calls("deployVirtualMachine"),
        1,
        "deployVirtualMachine calls: {:?}",
        stats.calls
    );
    assert_eq!(
        calls("attachVolume"),
        2,
        "attachVolume calls: {:?}",
        stats.calls
    );
    for c in ["deployVirtualMachine", "attachVolume"] {
        assert_eq!(stats.errors.get(c), None, "failed {c} calls");
    }
    Ok(())
}

/// A fresh rig with pgtest1 failed over live (no hooks).
async fn failed_over_rig() -> anyhow::Result<Rig> {
    let rig = rig().await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    let outcome = rig.engine.execute(&run.id, &live::saga(), &rig.env).await?;
    expect_done(&rig, &run.id, outcome).await?;
    assert_failed_over(&rig).await?;
    Ok(rig)
}

// ---- 1. A definitive failure at every step of the live failover -------------------------

async fn live_unwinds_to_rest(k: usize, action: Action) -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    let run = live::start(&rig.env, "pgtest1").await?;
    let saga = fault_at(live::saga(), k, action);
    let step = saga.steps[k].name().to_string();
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &run.id, outcome, &step).await?;
    assert_unwound_to_rest(&rig, &registered, &before).await
}

fn live_failure_cases(label: &str, action: Action) -> Cases {
    step_names(&live::saga())
        .into_iter()
        .enumerate()
        .map(|(k, name)| {
            (
                format!("{k} {name}, {label}"),
                live_unwinds_to_rest(k, action.clone()).boxed(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_any_step_unwinds_the_live_failover_to_rest() -> TestResult {
    let [(label, action), _] = failures();
    run_cases(live_failure_cases(label, action)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_any_step_ran_unwinds_the_live_failover_to_rest() -> TestResult {
    let [_, (label, action)] = failures();
    run_cases(live_failure_cases(label, action)).await
}

// ---- 2. Every action twice, every undo twice ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_action_twice_ends_where_one_run_does() -> TestResult {
    let rig = rig().await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    let saga = faulty(live::saga(), |_| (Action::Twice, Undo::Once));
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_done(&rig, &run.id, outcome).await?;
    assert_failed_over(&rig).await?;
    assert_one_deploy_and_two_attaches(&rig).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_undo_twice_still_unwinds_to_rest() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    let run = live::start(&rig.env, "pgtest1").await?;
    let last = live::saga().steps.len() - 1;
    let saga = faulty(live::saga(), |k| {
        (
            if k == last {
                Action::FailAfter
            } else {
                Action::Once
            },
            Undo::Twice,
        )
    });
    let step = saga.steps[last].name().to_string();
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &run.id, outcome, &step).await?;
    assert_unwound_to_rest(&rig, &registered, &before).await
}

// ---- 3. A worker dies inside a step; another takes the run over --------------------------

async fn live_resumes_after_a_crash_in(k: usize) -> TestResult {
    let rig = rig().await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    let config = |owner: &str, lease| EngineConfig {
        owner: owner.into(),
        lease,
        max_attempts: 3,
        backoff_first: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
    };

    let reached = Arc::new(Notify::new());
    let first = Engine::new(
        rig.env.store.clone(),
        config("worker-1", Duration::from_millis(300)),
    );
    let saga = fault_at(live::saga(), k, Action::HangAfter(reached.clone()));
    let env = rig.env.clone();
    let run_id = run.id.clone();
    let worker = tokio::spawn(async move { first.execute(&run_id, &saga, &env).await });
    tokio::time::timeout(Duration::from_secs(20), reached.notified())
        .await
        .map_err(|_| anyhow::anyhow!("step {k}'s action never finished"))?;
    worker.abort();
    assert!(worker.await.expect_err("aborted").is_cancelled());

    let second = Engine::new(
        rig.env.store.clone(),
        config("worker-2", Duration::from_secs(30)),
    );
    let env = rig.restarted_env();
    let deadline = Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        match second.execute(&run.id, &live::saga(), &env).await? {
            Outcome::Held if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            outcome => break outcome,
        }
    };
    expect_done(&rig, &run.id, outcome).await?;
    let steps = rig.env.store.steps(&run.id).await?;
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s.state, StepState::Done);
        assert_eq!(
            s.attempts,
            if i == k { 2 } else { 1 },
            "the run resumed at step {k}, and only there"
        );
    }
    assert_failed_over(&rig).await?;
    assert_one_deploy_and_two_attaches(&rig).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_whose_worker_died_in_a_step_is_resumed_without_duplicates() -> TestResult {
    run_cases(
        step_names(&live::saga())
            .into_iter()
            .enumerate()
            .map(|(k, name)| {
                (
                    format!("{k} {name}"),
                    live_resumes_after_a_crash_in(k).boxed(),
                )
            })
            .collect(),
    )
    .await
}

// ---- 4. Rollback and commit: a failed run is finished by the next -----------------------

/// Starts a follow-up of the live failover again after the first one failed at its
/// last step. A failure injected *after* that step's action ran leaves the state it
/// recorded (the step's undo does nothing in a forward workflow), so the follow-up
/// is then refused — the VM already is where the workflow brings it. `None` then.
async fn start_again(
    rig: &Rig,
    start: Result<store::Run, StartError>,
    already: VmState,
    recorded: bool,
) -> anyhow::Result<Option<store::Run>> {
    match start {
        Ok(run) => {
            anyhow::ensure!(
                !recorded,
                "the first run recorded {already}, yet a new one was started"
            );
            Ok(Some(run))
        }
        Err(StartError::WrongState { state, .. }) if recorded && state == already => Ok(None),
        Err(e) => {
            let state = rig.env.store.vm("pgtest1").await?.map(|v| v.state);
            anyhow::bail!("could not start the workflow again ({state:?}): {e}")
        }
    }
}

/// After a live failover, a rollback that fails with `action` at step `k` ends
/// unwound with pgtest1 still failed over (unless it got to record the rollback);
/// a fresh rollback finishes what it left: ready_for_failover, the replicas back on
/// the appliance and seen, `pgtest1` gone, the snapshots gone, production's writes
/// kept.
async fn rollback_finishes_after(k: usize, action: Action) -> TestResult {
    let rig = failed_over_rig().await?;
    let during = rig.generations().await?;
    let last = rollback::saga().steps.len() - 1;
    let recorded = k == last && matches!(action, Action::FailAfter);

    let first = rollback::start(&rig.env, "pgtest1").await?;
    let saga = fault_at(rollback::saga(), k, action);
    let step = saga.steps[k].name().to_string();
    let outcome = rig.engine.execute(&first.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &first.id, outcome, &step).await?;
    if !recorded {
        assert_eq!(
            rig.env
                .store
                .vm("pgtest1")
                .await?
                .expect("registered")
                .state,
            VmState::FailedOver,
            "not rolled back until it is"
        );
    }

    let again = rollback::start(&rig.env, "pgtest1").await;
    if let Some(second) = start_again(&rig, again, VmState::ReadyForFailover, recorded).await? {
        let outcome = rig
            .engine
            .execute(&second.id, &rollback::saga(), &rig.env)
            .await?;
        expect_done(&rig, &second.id, outcome).await?;
    }
    rig.assert_at_rest().await?;
    if let Some(vm) = live_vm(&rig).await? {
        anyhow::bail!("VM pgtest1 ({}, {}) was left", vm.id, vm.state);
    }
    assert_eq!(snapshots(&rig).await?, 0, "snapshots left");
    assert_eq!(
        rig.generations().await?,
        during,
        "the replicas were not reverted: production's writes are kept"
    );
    Ok(())
}

/// After a live failover, a commit that fails with `action` at step `k` ends unwound;
/// a fresh commit finishes: committed, the snapshots gone, `pgtest1` still running
/// with the replicas.
async fn commit_finishes_after(k: usize, action: Action) -> TestResult {
    let rig = failed_over_rig().await?;
    let target = live_vm(&rig).await?.expect("pgtest1");
    let last = commit::saga().steps.len() - 1;
    let recorded = k == last && matches!(action, Action::FailAfter);

    let first = commit::start(&rig.env, "pgtest1").await?;
    let saga = fault_at(commit::saga(), k, action);
    let step = saga.steps[k].name().to_string();
    let outcome = rig.engine.execute(&first.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &first.id, outcome, &step).await?;
    if !recorded {
        assert_eq!(
            rig.env
                .store
                .vm("pgtest1")
                .await?
                .expect("registered")
                .state,
            VmState::FailedOver,
            "not committed until it is"
        );
    }

    let again = commit::start(&rig.env, "pgtest1").await;
    if let Some(second) = start_again(&rig, again, VmState::Committed, recorded).await? {
        let outcome = rig
            .engine
            .execute(&second.id, &commit::saga(), &rig.env)
            .await?;
        expect_done(&rig, &second.id, outcome).await?;
    }
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    assert_eq!(vm.state, VmState::Committed);
    assert_eq!(vm.target_vm_id.as_deref(), Some(target.id.as_str()));
    assert_eq!(snapshots(&rig).await?, 0, "snapshots left");
    let still = live_vm(&rig).await?.expect("the VM stays");
    assert_eq!(
        (still.id.as_str(), still.state.as_str()),
        (target.id.as_str(), "Running")
    );
    for id in REPLICAS {
        let v = rig.env.cloud.get_volume(id).await?.expect("a replica");
        assert_eq!(v.virtualmachineid.as_deref(), Some(target.id.as_str()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_failed_at_any_step_is_finished_by_the_next() -> TestResult {
    let mut cases: Cases = Vec::new();
    for (label, action) in failures() {
        for (k, name) in step_names(&rollback::saga()).into_iter().enumerate() {
            cases.push((
                format!("{k} {name}, {label}"),
                rollback_finishes_after(k, action.clone()).boxed(),
            ));
        }
    }
    run_cases(cases).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_failed_at_any_step_is_finished_by_the_next() -> TestResult {
    let mut cases: Cases = Vec::new();
    for (label, action) in failures() {
        for (k, name) in step_names(&commit::saga()).into_iter().enumerate() {
            cases.push((
                format!("{k} {name}, {label}"),
                commit_finishes_after(k, action.clone()).boxed(),
            ));
        }
    }
    run_cases(cases).await
}
