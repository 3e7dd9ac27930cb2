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

use ::ids::RunId;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudsim::world::ids;
use common::{Rig, TestResult, rig};
use engine::{Engine, EngineConfig, Outcome};
use futures::FutureExt;
use futures::future::BoxFuture;
use store::{StepState, VmState};
use tokio::sync::Notify;
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
    let mut on_target: Vec<(i64, String, String)> = rig
        .env
        .cloud
        .list_volumes(&cloudstack::VolumeFilter {
            virtual_machine_id: Some(target.id.clone()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|v| (v.deviceid.unwrap_or(-1), v.id.into_string(), v.volume_type))
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
    for id in common::REPLICAS {
        assert!(!rig.guest_sees(id), "the appliance still sees {id}");
    }
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    assert_eq!(vm.state, VmState::TestFailedOver);
    assert_eq!(
        vm.target_vm_id.as_ref().map(|id| id.as_str()),
        Some(target.id.as_str())
    );
    for d in &vm.disks {
        assert_eq!(
            d.attachment.vm_id.as_ref().map(|id| id.as_str()),
            Some(target.id.as_str()),
            "the store agrees on where {} is",
            d.disk.replica_volume_id
        );
    }
    Ok(())
}

/// Checks cloudsim's call counts: the test VM deployed once, the two replicas
/// attached once each (a test failover attaches nothing to the appliance, so every
/// attachVolume went to the test VM), and none of those calls failed.
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
    let rig = rig().await?;
    let before = rig.generations().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let saga = fault_at(test_failover::saga(), k, action);
    let step = saga.steps[k].name().to_string();
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &run.id, outcome, &step).await?;
    rig.assert_at_rest_since(Some(&registered)).await?;
    if content {
        assert_eq!(
            rig.generations().await?,
            before,
            "the replicas' content changed (generations)"
        );
    }
    Ok(())
}

/// Every step's cases for `action`, each checking the content too where the test VM
/// never ran (where it ran, see
/// [`an_unwind_after_the_test_vm_ran_puts_the_replicas_content_back`]).
async fn each_step_unwinds_to_rest(action: Action) -> TestResult {
    let names = step_names(&test_failover::saga());
    run_cases(
        names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let action = action.clone();
                let content = !test_vm_ran(k, &action);
                (
                    format!("{k} {name}"),
                    unwinds_to_rest(k, action, content).boxed(),
                )
            })
            .collect(),
    )
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
    let names = step_names(&test_failover::saga());
    let mut cases = Vec::new();
    for action in [Action::FailBefore, Action::FailAfter] {
        for (k, name) in names.iter().enumerate() {
            if test_vm_ran(k, &action) {
                let label = match action {
                    Action::FailBefore => format!("{k} {name}, failing before"),
                    _ => format!("{k} {name}, failing after"),
                };
                let action = action.clone();
                cases.push((label, unwinds_to_rest(k, action, true).boxed()));
            }
        }
    }
    assert!(!cases.is_empty());
    run_cases(cases).await
}

// ---- 2. Every action twice ---------------------------------------------------------------

/// Each action run twice in a row — the test failover's, then the cleanup's — ends
/// exactly where a single run does, without a second VM or a second attach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_twice_ends_where_one_run_does() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let saga = faulty(test_failover::saga(), |_| (Action::Twice, Undo::Once));
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_done(&rig, &run.id, outcome).await?;
    assert_failed_over(&rig).await?;
    assert_one_deploy_and_two_attaches(&rig).await?;

    let run = cleanup::start(&rig.env, "pgtest1").await?;
    let saga = faulty(cleanup::saga(), |_| (Action::Twice, Undo::Once));
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_done(&rig, &run.id, outcome).await?;
    rig.assert_at_rest().await?;
    assert_eq!(
        rig.generations().await?,
        before,
        "the replicas were reverted to their snapshots"
    );
    Ok(())
}

// ---- 3. Every undo twice ----------------------------------------------------------------

/// A failure at the last step, after its action ran, unwinds every step; each undo
/// run twice in a row still leaves the VM at rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_undo_twice_still_unwinds_to_rest() -> TestResult {
    let rig = rig().await?;
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let last = test_failover::saga().steps.len() - 1;
    let saga = faulty(test_failover::saga(), |k| {
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
    rig.assert_at_rest().await?;
    Ok(())
}

// ---- 4. Cleanup run again after it was interrupted ---------------------------------------

/// After a test failover, a cleanup that fails with `action` at step `k` ends
/// unwound (its undos do nothing: it is a forward workflow); a fresh cleanup then
/// finishes what it left, and the VM is at rest with its replicas' content back.
async fn cleanup_finishes_after(k: usize, action: Action) -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let outcome = rig
        .engine
        .execute(&run.id, &test_failover::saga(), &rig.env)
        .await?;
    expect_done(&rig, &run.id, outcome).await?;

    let first = cleanup::start(&rig.env, "pgtest1").await?;
    let saga = fault_at(cleanup::saga(), k, action);
    let step = saga.steps[k].name().to_string();
    let outcome = rig.engine.execute(&first.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &first.id, outcome, &step).await?;

    let second = cleanup::start(&rig.env, "pgtest1").await?;
    let outcome = rig
        .engine
        .execute(&second.id, &cleanup::saga(), &rig.env)
        .await?;
    expect_done(&rig, &second.id, outcome).await?;
    rig.assert_at_rest().await?;
    assert_eq!(
        rig.generations().await?,
        before,
        "the replicas were reverted to their snapshots"
    );
    Ok(())
}

/// Whether the first cleanup, failing with `action` at step `k`, got as far as
/// putting the replicas back on the appliance.
fn replicas_back(k: usize, action: &Action) -> bool {
    let reattach = step_names(&cleanup::saga())
        .iter()
        .position(|n| n == "reattach-replicas")
        .expect("cleanup re-attaches the replicas");
    k > reattach || (k == reattach && matches!(action, Action::FailAfter))
}

/// The cases of an interrupted cleanup, those that got the replicas back on the
/// appliance or those that did not.
fn cleanup_cases(back: bool) -> Vec<(String, BoxFuture<'static, TestResult>)> {
    let names = step_names(&cleanup::saga());
    let mut cases = Vec::new();
    for (label, action) in [
        ("failing before", Action::FailBefore),
        ("failing after", Action::FailAfter),
    ] {
        for (k, name) in names.iter().enumerate() {
            if replicas_back(k, &action) == back {
                let action = action.clone();
                cases.push((
                    format!("{k} {name}, {label}"),
                    cleanup_finishes_after(k, action).boxed(),
                ));
            }
        }
    }
    cases
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
/// then dies (its task aborted) before recording it. A second worker, with a new
/// volume daemon on the same store, takes the run over once the first one's lease
/// has expired, and finishes it without doing anything twice.
async fn resumes_after_a_crash_in(k: usize) -> TestResult {
    let rig = rig().await?;
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let config = |owner: &str, lease| EngineConfig {
        owner: owner.into(),
        lease,
        max_attempts: 3,
        backoff_first: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        outage_tolerance: Duration::from_secs(60),
    };

    let reached = Arc::new(Notify::new());
    let first = Engine::new(
        rig.env.store.clone(),
        config("worker-1", Duration::from_millis(300)),
    );
    let saga = fault_at(test_failover::saga(), k, Action::HangAfter(reached.clone()));
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
        match second
            .execute(&run.id, &test_failover::saga(), &env)
            .await?
        {
            Outcome::Held if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            outcome => break outcome,
        }
    };
    expect_done(&rig, &run.id, outcome).await?;
    let steps = rig.env.store.steps(&RunId::from(&run.id)).await?;
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
async fn a_run_whose_worker_died_in_a_step_is_resumed_by_another_without_duplicates() -> TestResult
{
    let names = step_names(&test_failover::saga());
    run_cases(
        names
            .iter()
            .enumerate()
            .map(|(k, name)| (format!("{k} {name}"), resumes_after_a_crash_in(k).boxed()))
            .collect(),
    )
    .await
}
