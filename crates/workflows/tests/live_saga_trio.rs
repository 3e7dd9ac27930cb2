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

use ::ids::{RunId, VolumeId};
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudsim::world::ids;
use common::{REPLICAS, Rig, TestResult, rig};
use engine::{Engine, EngineConfig, Outcome};
use futures::FutureExt;
use store::{StepState, VmState};
use tokio::sync::Notify;
use workflows::{StartError, commit, live, rollback};

use common::trio::*;

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
        n += rig
            .env
            .cloud
            .list_snapshots(Some(&VolumeId::from(id)), None)
            .await?
            .len();
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
    for id in REPLICAS {
        assert!(!rig.guest_sees(id), "the appliance still sees {id}");
    }
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    assert_eq!(vm.state, VmState::FailedOver);
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
        outage_tolerance: Duration::from_secs(60),
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
    assert_eq!(
        vm.target_vm_id.as_ref().map(|id| id.as_str()),
        Some(target.id.as_str())
    );
    assert_eq!(snapshots(&rig).await?, 0, "snapshots left");
    let still = live_vm(&rig).await?.expect("the VM stays");
    assert_eq!(
        (still.id.as_str(), still.state.as_str()),
        (target.id.as_str(), "Running")
    );
    for id in REPLICAS {
        let v = rig
            .env
            .cloud
            .get_volume(&VolumeId::from(id))
            .await?
            .expect("a replica");
        assert_eq!(
            v.virtualmachineid.as_ref().map(|id| id.as_str()),
            Some(target.id.as_str())
        );
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
