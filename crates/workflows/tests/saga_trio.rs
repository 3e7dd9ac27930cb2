//! The saga trio (STYLE, "Tests") for the test failover and its cleanup, end to end
//! against cloudsim: a definitive failure injected at every step — before the real
//! action ran, and after it ran (the action happened but the step reports failure) —,
//! every action run twice, every undo run twice, a cleanup interrupted at every step
//! and run again, and a worker that dies inside a step and whose run another worker
//! takes over. After each, DESIGN §5's invariants are checked against cloudsim's state.
//!
//! Faults are injected by wrapping the workflows' own steps in [`Faulty`], which
//! delegates to the real step, so the code under test is exactly what production runs.
//! Every case gets a fresh rig (cloudsim, store, volume daemon): cases cannot leak
//! into each other, and at cloudsim's time scale of 0.001 a rig costs little.
//!
//! The cases of one test run one after another, each in its own task, so that one
//! failing case does not hide the others: a test reports every case that failed.

mod common;

use cloudsim::world::ids;
use common::flows::Flow;
use common::{Rig, TestResult, rig};
use store::VmState;
use workflows::test_failover::Mode;
use workflows::{cleanup, test_failover};

use common::trio::*;

/// The end state of a test failover of pgtest1 that went through: one test VM,
/// running, with the boot replica at device 0 as its ROOT and the data replica at 1 —
/// and nothing else —, neither seen by the appliance any more; the store says
/// `test_failed_over` with that VM, and where each replica is.
async fn assert_failed_over(rig: &Rig) -> TestResult {
    let vms = rig.test_vms().await?;
    assert_eq!(vms.len(), 1, "exactly one test VM");
    let target = &vms[0];
    assert_eq!(target.state, "Running");
    assert_eq!((target.cpunumber, target.memory), (Some(4), Some(8192)));
    assert_eq!(target.nic.len(), 1);
    assert_eq!(
        target.nic[0].macaddress.as_deref(),
        Some("00:50:56:8a:11:01")
    );
    assert_eq!(target.nic[0].networkid, ids::NETWORK_TEST);
    rig.assert_replicas_on(target, VmState::TestFailedOver)
        .await
}

// ---- 1. A definitive failure at every step --------------------------------------------

/// The index of `start-vm` in the test failover: from there on, the test VM has run
/// and written to the replicas.
fn start_vm_index() -> usize {
    step_names(&test_failover::saga())
        .iter()
        .position(|n| n == "start-vm")
        .expect("the test failover starts its VM")
}

/// Whether the test VM has run (and written to the replicas) before the run unwinds
/// from a failure `action` at step `k`.
fn test_vm_ran(k: usize, action: &Action) -> bool {
    let start = start_vm_index();
    k > start || (k == start && matches!(action, Action::FailAfter))
}

/// A test failover with `action` (a failure) at step `k` unwinds to rest: every
/// replica on the appliance, seen by it and so recorded, no test VM, no snapshot,
/// nothing ferry created left alive. With `content`, the replicas' content must also
/// be what it was before.
async fn unwinds_to_rest(k: usize, action: Action, content: bool) -> TestResult {
    let (rig, base) = unwound_at(Flow::TestReplica, k, action).await?;
    rig.assert_at_rest_since(Some(&base.registered)).await?;
    if content {
        assert_eq!(
            rig.generations().await?,
            base.before,
            "the replicas' content changed (generations)"
        );
    }
    Ok(())
}

/// Every step's cases for `action`, each checking the content too where the test VM
/// never ran (where it ran, see
/// [`an_unwind_after_the_test_vm_ran_puts_the_replicas_content_back`]).
async fn each_step_unwinds_to_rest(action: Action) -> TestResult {
    run_cases(per_step(&test_failover::saga(), |k| {
        let content = !test_vm_ran(k, &action);
        unwinds_to_rest(k, action.clone(), content)
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_any_step_unwinds_the_test_failover_to_rest() -> TestResult {
    each_step_unwinds_to_rest(Action::FailBefore).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_any_step_ran_unwinds_the_test_failover_to_rest() -> TestResult {
    each_step_unwinds_to_rest(Action::FailAfter).await
}

/// Once the test VM has run, its writes are on the replicas; an unwind must put the
/// replicas' content back to the snapshots taken first, or the replicas no longer
/// match their source and the next replication cycle builds on a disk that diverged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn an_unwind_after_the_test_vm_ran_puts_the_replicas_content_back() -> TestResult {
    run_cases(per_step_failing_where(
        &test_failover::saga(),
        test_vm_ran,
        |k, action| unwinds_to_rest(k, action, true),
    ))
    .await
}

// ---- 2. Every action twice ---------------------------------------------------------------

/// Each action run twice in a row — the test failover's, then the cleanup's — ends
/// exactly where a single run does, without a second VM or a second attach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_twice_ends_where_one_run_does() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    rig.done(&run, twice(test_failover::saga())).await?;
    assert_failed_over(&rig).await?;
    assert_one_deploy_and_two_attaches(&rig).await?;

    let run = cleanup::start(&rig.env, "pgtest1").await?;
    rig.done(&run, twice(cleanup::saga())).await?;
    rig.assert_at_rest_as(&before).await
}

// ---- 3. Every undo twice ----------------------------------------------------------------

/// A failure at the last step, after its action ran, unwinds every step; each undo
/// run twice in a row still leaves the VM at rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_undo_twice_still_unwinds_to_rest() -> TestResult {
    let (rig, _) = unwound_with_every_undo_twice(Flow::TestReplica).await?;
    rig.assert_at_rest().await
}

// ---- 4. Cleanup run again after it was interrupted ---------------------------------------

/// Whether the first cleanup, failing with `action` at step `k`, got as far as
/// putting the replicas back on the appliance.
fn replicas_back(k: usize, action: &Action) -> bool {
    let reattach = step_names(&cleanup::saga())
        .iter()
        .position(|n| n == "reattach-replicas")
        .expect("cleanup re-attaches the replicas");
    k > reattach || (k == reattach && matches!(action, Action::FailAfter))
}

/// The cases of an interrupted cleanup ([`cleanup_finishes_after`]), those that got
/// the replicas back on the appliance or those that did not.
fn cleanup_cases(back: bool) -> Cases {
    per_step_failing_where(
        &cleanup::saga(),
        |k, action| replicas_back(k, action) == back,
        |k, action| async move {
            cleanup_finishes_after(Mode::Replica, k, action).await?;
            Ok(())
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_run_again_finishes_what_an_interrupted_cleanup_left() -> TestResult {
    let cases = cleanup_cases(false);
    assert!(!cases.is_empty());
    run_cases(cases).await
}

/// DESIGN §5: cleanup "can be re-run after any failure and finishes what an
/// interrupted run left" — including after the interrupted run reverted the
/// replicas, put them back on the appliance and perhaps deleted the snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn cleanup_run_again_finishes_after_the_replicas_went_back_to_the_appliance() -> TestResult {
    let cases = cleanup_cases(true);
    assert!(!cases.is_empty());
    run_cases(cases).await
}

// ---- 5. A worker dies inside a step; another takes the run over --------------------------

/// A worker runs the test failover until the action of step `k` has taken effect,
/// then dies before recording it; a second worker takes the run over and finishes it
/// without doing anything twice ([`resumed_after_a_crash_in`]).
async fn resumes_after_a_crash_in(k: usize) -> TestResult {
    let rig = resumed_after_a_crash_in(Flow::TestReplica, k).await?;
    assert_failed_over(&rig).await?;
    assert_one_deploy_and_two_attaches(&rig).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_worker_died_in_a_step_is_resumed_by_another_without_duplicates() -> TestResult
{
    run_cases(per_step(&test_failover::saga(), resumes_after_a_crash_in)).await
}
