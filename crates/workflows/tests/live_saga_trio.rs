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

use cloudsim::world::ids;
use common::flows::Flow;
use common::{Rig, TestResult, rig};
use store::VmState;
use workflows::{StartError, commit, live, rollback};

use common::trio::*;

/// The live failover's unwind left pgtest1 at rest (the invariants of
/// [`Rig::assert_at_rest_since`]), no VM `pgtest1`, and the replicas' content as it
/// was `before` the failover.
async fn assert_unwound_to_rest(rig: &Rig, base: &common::flows::Baseline) -> TestResult {
    rig.assert_at_rest_since(Some(&base.registered)).await?;
    assert_no_live_vm(rig).await?;
    assert_eq!(
        rig.generations().await?,
        base.before,
        "the replicas' content changed (generations)"
    );
    Ok(())
}

async fn assert_no_live_vm(rig: &Rig) -> TestResult {
    if let Some(vm) = rig.live_vm().await? {
        anyhow::bail!("VM pgtest1 ({}, {}) was left", vm.id, vm.state);
    }
    Ok(())
}

/// pgtest1 failed over: `pgtest1` running on the production network, boot at 0 and
/// data at 1 and nothing else, unseen by the appliance; the store agrees.
async fn assert_failed_over(rig: &Rig) -> anyhow::Result<cloudstack::VirtualMachine> {
    let target = rig.live_vm().await?.expect("a VM named pgtest1");
    assert_eq!(target.state, "Running");
    assert_eq!(target.nic.len(), 1);
    assert_eq!(target.nic[0].networkid, ids::NETWORK_PRODUCTION);
    rig.assert_replicas_on(&target, VmState::FailedOver).await?;
    assert_eq!(rig.snapshots().await?, 2, "the way back is kept");
    Ok(target)
}

/// A fresh rig with pgtest1 failed over live (no hooks), and its VM `pgtest1`.
async fn failed_over_rig() -> anyhow::Result<(Rig, cloudstack::VirtualMachine)> {
    let rig = rig().await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    rig.done(&run, live::saga()).await?;
    let target = assert_failed_over(&rig).await?;
    Ok((rig, target))
}

// ---- 1. A definitive failure at every step of the live failover -------------------------

async fn live_unwinds_to_rest(k: usize, action: Action) -> TestResult {
    let (rig, base) = unwound_at(Flow::Live, k, action).await?;
    assert_unwound_to_rest(&rig, &base).await
}

/// The cases of a failure `kind` (before or after) at each step of the live failover.
fn live_failure_cases(kind: fn(&Action) -> bool) -> Cases {
    per_step_failing_where(&live::saga(), |_, a| kind(a), live_unwinds_to_rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_any_step_unwinds_the_live_failover_to_rest() -> TestResult {
    run_cases(live_failure_cases(|a| matches!(a, Action::FailBefore))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_any_step_ran_unwinds_the_live_failover_to_rest() -> TestResult {
    run_cases(live_failure_cases(|a| matches!(a, Action::FailAfter))).await
}

// ---- 2. Every action twice, every undo twice ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_action_twice_ends_where_one_run_does() -> TestResult {
    let rig = rig().await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    rig.done(&run, twice(live::saga())).await?;
    assert_failed_over(&rig).await?;
    assert_one_deploy_and_two_attaches(&rig).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_undo_twice_still_unwinds_to_rest() -> TestResult {
    let (rig, base) = unwound_with_every_undo_twice(Flow::Live).await?;
    assert_unwound_to_rest(&rig, &base).await
}

// ---- 3. A worker dies inside a step; another takes the run over --------------------------

async fn live_resumes_after_a_crash_in(k: usize) -> TestResult {
    let rig = resumed_after_a_crash_in(Flow::Live, k).await?;
    assert_failed_over(&rig).await?;
    assert_one_deploy_and_two_attaches(&rig).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_whose_worker_died_in_a_step_is_resumed_without_duplicates() -> TestResult {
    run_cases(per_step(&live::saga(), live_resumes_after_a_crash_in)).await
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

/// After a live failover, a follow-up `flow` (rollback or commit) that fails with
/// `action` at step `k` ends unwound with pgtest1 still failed over (unless it got to
/// record where the flow brings it; `not_yet` says so otherwise); a fresh run of
/// `flow` finishes what it left.
async fn follow_up_finishes_after(
    rig: &Rig,
    flow: Flow,
    k: usize,
    action: Action,
    not_yet: &str,
) -> TestResult {
    let last = flow.saga().steps.len() - 1;
    let recorded = k == last && matches!(action, Action::FailAfter);

    let first = flow.start(&rig.env).await?;
    expect_unwound_at(rig, &first, fault_at(flow.saga(), k, action), k).await?;
    if !recorded {
        assert_eq!(
            rig.env
                .store
                .vm("pgtest1")
                .await?
                .expect("registered")
                .state,
            VmState::FailedOver,
            "{not_yet}"
        );
    }

    let again = flow.start(&rig.env).await;
    if let Some(second) = start_again(rig, again, flow.done_state(), recorded).await? {
        rig.done(&second, flow.saga()).await?;
    }
    Ok(())
}

/// After a live failover, a rollback that fails with `action` at step `k` ends
/// unwound with pgtest1 still failed over (unless it got to record the rollback);
/// a fresh rollback finishes what it left: ready_for_failover, the replicas back on
/// the appliance and seen, `pgtest1` gone, the snapshots gone, production's writes
/// kept.
async fn rollback_finishes_after(k: usize, action: Action) -> TestResult {
    let (rig, _) = failed_over_rig().await?;
    let during = rig.generations().await?;
    follow_up_finishes_after(
        &rig,
        Flow::Rollback,
        k,
        action,
        "not rolled back until it is",
    )
    .await?;
    rig.assert_at_rest().await?;
    assert_no_live_vm(&rig).await?;
    assert_eq!(rig.snapshots().await?, 0, "snapshots left");
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
    let (rig, target) = failed_over_rig().await?;
    follow_up_finishes_after(&rig, Flow::Commit, k, action, "not committed until it is").await?;
    rig.assert_committed(&target).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_failed_at_any_step_is_finished_by_the_next() -> TestResult {
    run_cases(per_step_failing(&rollback::saga(), rollback_finishes_after)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_failed_at_any_step_is_finished_by_the_next() -> TestResult {
    run_cases(per_step_failing(&commit::saga(), commit_finishes_after)).await
}
