//! Test failover in clone mode, and its cleanup, end to end against cloudsim: the test
//! VM gets new volumes made from the replicas' snapshots, while the replicas stay on
//! the appliance — attached, seen in its sysfs tree, their content untouched — the
//! whole time; cleanup deletes the clones (not only detaches them) and leaves pgtest1
//! at rest. Then the saga trio for clone mode: a definitive failure before and after
//! each step (the steps wrapped in [`Faulty`], as in `saga_trio.rs`), every action
//! twice, every undo twice, and a clone-mode cleanup interrupted at each step and run
//! again. After each, DESIGN §5's invariants are checked against cloudsim's state, and
//! no clone is left.

use ::ids::{RunId, VolumeId};
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cloudsim::world::ids;
use common::flows::{Flow, clones_alive};
use common::{REPLICAS, Rig, TestResult, rig};
use engine::{Outcome, Saga};
use serde_json::Value;
use store::VmState;
use workflows::test_failover::Mode;
use workflows::{Env, cleanup, test_failover};

use common::trio::*;

fn clone_saga() -> Saga<Env> {
    test_failover::saga_for(Mode::Clone)
}

// ---- What clone mode promises ----------------------------------------------------------

/// Rest, as `assert_at_rest_since(registered)` checks it, and no clone anywhere.
async fn assert_at_rest_without_clones(rig: &Rig, registered: &store::ProtectedVm) -> TestResult {
    rig.assert_at_rest_since(Some(registered)).await?;
    let alive = clones_alive(rig).await?;
    assert!(alive.is_empty(), "clones left: {alive:?}");
    Ok(())
}

/// Runs `run` with `saga` while watching the replicas: every few milliseconds each
/// must be attached to the appliance, seen in its sysfs tree, and at the content
/// generation it had in `before`. Fails with what the watch saw go wrong; returns the
/// run's outcome.
async fn watching_replicas(
    rig: &Rig,
    before: &BTreeMap<String, u64>,
    run: &store::Run,
    saga: Saga<Env>,
) -> anyhow::Result<Outcome> {
    let finished = AtomicBool::new(false);
    let work = async {
        let out = rig.execute(run, saga).await;
        finished.store(true, Ordering::SeqCst);
        out
    };
    let watch = async {
        let mut problems = Vec::new();
        let mut looks = 0;
        loop {
            let last = finished.load(Ordering::SeqCst);
            looks += 1;
            let volumes = rig.admin("volumes").await?;
            for id in REPLICAS {
                let Some(v) = volumes
                    .as_array()
                    .expect("a list")
                    .iter()
                    .find(|v| v["id"] == id)
                else {
                    problems.push(format!("replica {id} is gone"));
                    continue;
                };
                if v["virtualmachineid"] != ids::APPLIANCE_OMA {
                    problems.push(format!(
                        "look {looks}: replica {id} is on {}",
                        v["virtualmachineid"]
                    ));
                }
                if v["generation"].as_u64() != Some(before[id]) {
                    problems.push(format!(
                        "look {looks}: replica {id} is at generation {}",
                        v["generation"]
                    ));
                }
                if !rig.guest_sees(id) {
                    problems.push(format!("look {looks}: the appliance does not see {id}"));
                }
            }
            if last {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        anyhow::ensure!(looks > 1, "the watch never looked while the run went on");
        Ok::<_, anyhow::Error>(problems)
    };
    let (out, problems) = tokio::join!(work, watch);
    assert_eq!(
        problems?,
        Vec::<String>::new(),
        "the replicas moved or changed"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_mode_drill_gives_the_test_vm_new_volumes_and_leaves_the_replicas_alone()
-> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let mut sizes = BTreeMap::new();
    for id in REPLICAS {
        sizes.insert(id, rig.replica(id).await?.size);
    }

    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    assert_eq!(run.mode.as_deref(), Some("clone"));
    let outcome = watching_replicas(&rig, &before, &run, clone_saga()).await?;
    expect_done(&rig, &run.id, outcome).await?;

    let vms = rig.test_vms().await?;
    assert_eq!(vms.len(), 1);
    let target = &vms[0];
    assert_eq!(target.state, "Running");
    assert_eq!(
        target.nic[0].macaddress.as_deref(),
        Some("00:50:56:8a:11:01")
    );
    assert_eq!(target.nic[0].networkid, ids::NETWORK_TEST);
    let mut on_target = rig.volumes_on(&target.id).await?;
    on_target.sort_by_key(|v| v.deviceid);
    assert_eq!(on_target.len(), 2, "two volumes and nothing else");
    let clone_ids: Vec<String> = on_target.iter().map(|v| v.id.to_string()).collect();
    for (v, (replica, device, kind, key)) in on_target.iter().zip([
        (ids::PGTEST1_DISK_2000, 0, "ROOT", 2000),
        (ids::PGTEST1_DISK_2001, 1, "DATADISK", 2001),
    ]) {
        assert!(!REPLICAS.contains(&v.id.as_str()), "{} is a replica", v.id);
        assert_eq!(v.deviceid, Some(device));
        assert_eq!(v.volume_type, kind);
        assert_eq!(
            v.size, sizes[replica],
            "the clone of {replica} has its size"
        );
        assert_eq!(v.name, format!("{}-disk-{key}", target.name));
        assert!(
            rig.created(&v.id).await?,
            "clone {} is recorded as ferry's",
            v.id
        );
    }
    let vm = rig
        .assert_recorded(VmState::TestFailedOver, &target.id)
        .await?;
    for d in &vm.disks {
        assert_eq!(
            d.attachment.vm_id.as_ref().map(|id| id.as_str()),
            Some(ids::APPLIANCE_OMA),
            "the store still has {} on the appliance",
            d.disk.replica_volume_id
        );
    }
    let verify = &rig.env.store.steps(&RunId::from(&run.id)).await?[6];
    assert_eq!(verify.name, "verify");
    let map: Value = serde_json::from_str(verify.output.as_deref().expect("an output"))?;
    assert_eq!(map["device_map"][0]["volume_id"], clone_ids[0].as_str());
    assert_eq!(
        map["device_map"][0]["replica_volume_id"],
        ids::PGTEST1_DISK_2000
    );
    assert_eq!(map["device_map"][1]["device_id"], 1);
    // The test VM wrote to its clones, not to the replicas.
    let sim = rig.admin("volumes").await?;
    for (clone, replica) in clone_ids.iter().zip(REPLICAS) {
        let generation = sim
            .as_array()
            .expect("a list")
            .iter()
            .find(|v| v["id"] == clone.as_str())
            .and_then(|v| v["generation"].as_u64())
            .expect("the clone");
        assert!(
            generation > before[replica],
            "the test VM wrote to clone {clone} of {replica}"
        );
    }
    let stats = rig.stats().await?;
    let calls = |c: &str| stats.calls.get(c).copied().unwrap_or(0);
    assert_eq!(calls("createVolume"), 2, "{:?}", stats.calls);
    assert_eq!(calls("attachVolume"), 2, "{:?}", stats.calls);
    assert_eq!(
        calls("detachVolume"),
        1,
        "only the placeholder ROOT was detached: {:?}",
        stats.calls
    );

    let cleanup_run = cleanup::start(&rig.env, "pgtest1").await?;
    assert_eq!(cleanup_run.mode.as_deref(), Some("clone"));
    let outcome = watching_replicas(&rig, &before, &cleanup_run, cleanup::saga()).await?;
    expect_done(&rig, &cleanup_run.id, outcome).await?;
    rig.assert_at_rest_as(&before).await?;
    for id in &clone_ids {
        assert!(
            rig.env
                .cloud
                .get_volume(&VolumeId::from(id))
                .await?
                .is_none(),
            "clone {id} was deleted, not only detached"
        );
        assert!(!rig.created(id).await?);
    }
    assert!(clones_alive(&rig).await?.is_empty());
    let stats = rig.stats().await?;
    assert_eq!(
        stats.calls.get("revertSnapshot"),
        None,
        "nothing is reverted in clone mode"
    );
    assert_eq!(
        stats.calls.get("deleteVolume").copied(),
        Some(3),
        "the placeholder and the clones"
    );

    // Ready for another drill.
    test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    Ok(())
}

/// The data clone's attach fails inside CloudStack's job: the run unwinds — boot clone
/// off the test VM, test VM destroyed, both clones deleted, snapshots deleted — and the
/// replicas never noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_attach_unwinds_to_rest_with_no_clone_left() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    // attachVolume calls of a clone-mode drill: the boot clone (1st), the data clone (2nd).
    rig.fail_data_attach().await?;
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    let outcome = watching_replicas(&rig, &before, &run, clone_saga()).await?;
    let Outcome::Unwound { error } = &outcome else {
        panic!("expected an unwound run, got {outcome:?}");
    };
    assert!(error.contains("attach-clones"), "{error}");
    assert!(error.contains("agent error"), "{error}");
    assert_at_rest_without_clones(&rig, &registered).await?;
    assert_eq!(rig.generations().await?, before);
    Ok(())
}

/// A clone-mode run executed with the replica-mode saga stops before a replica moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_mode_run_is_never_executed_as_a_replica_mode_one() -> TestResult {
    let rig = rig().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    let error = rig.unwound(&run, test_failover::saga()).await?;
    assert!(error.contains("clone-mode"), "{error}");
    assert_at_rest_without_clones(&rig, &registered).await?;
    assert_eq!(
        rig.stats().await?.calls.get("detachVolume").copied(),
        Some(1),
        "only the placeholder ROOT was detached"
    );
    // And the run's own saga is what a worker picks for it.
    let run = rig.env.store.run(&run.id).await?.expect("a run");
    assert_eq!(
        step_names(&test_failover::saga_for_run(&run).map_err(anyhow::Error::msg)?),
        step_names(&clone_saga())
    );
    Ok(())
}

// ---- The saga trio, clone mode ---------------------------------------------------------

/// A clone-mode drill with `action` at step `k` unwinds to rest, with no clone left and
/// the replicas' content as it was — whether or not the test VM ran: it ran on clones.
async fn unwinds_to_rest(k: usize, action: Action) -> TestResult {
    let (rig, base) = unwound_at(Flow::TestClone, k, action).await?;
    assert_at_rest_without_clones(&rig, &base.registered).await?;
    assert_eq!(
        rig.generations().await?,
        base.before,
        "the replicas' content changed"
    );
    Ok(())
}

fn each_step(action: Action) -> Cases {
    per_step(&clone_saga(), |k| unwinds_to_rest(k, action.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_any_step_unwinds_the_clone_mode_drill_to_rest() -> TestResult {
    run_cases(each_step(Action::FailBefore)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_any_step_ran_unwinds_the_clone_mode_drill_to_rest() -> TestResult {
    run_cases(each_step(Action::FailAfter)).await
}

/// Every action of the clone-mode drill and of its cleanup run twice in a row ends
/// where one run does: one VM, two clones, two attaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clone_mode_action_twice_ends_where_one_run_does() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    rig.done(&run, twice(clone_saga())).await?;
    let stats = rig.stats().await?;
    let calls = |c: &str| stats.calls.get(c).copied().unwrap_or(0);
    assert_eq!(
        (
            calls("deployVirtualMachine"),
            calls("createVolume"),
            calls("attachVolume")
        ),
        (1, 2, 2),
        "{:?}",
        stats.calls
    );
    assert_eq!(rig.test_vms().await?.len(), 1);
    assert_eq!(clones_alive(&rig).await?.len(), 2);

    let run = cleanup::start(&rig.env, "pgtest1").await?;
    rig.done(&run, twice(cleanup::saga())).await?;
    rig.assert_at_rest_as(&before).await?;
    assert!(clones_alive(&rig).await?.is_empty());
    Ok(())
}

/// A failure at the last step, after its action ran, unwinds every step; each undo run
/// twice still leaves the VM at rest with no clone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clone_mode_undo_twice_still_unwinds_to_rest() -> TestResult {
    let (rig, base) = unwound_with_every_undo_twice(Flow::TestClone).await?;
    assert_at_rest_without_clones(&rig, &base.registered).await
}

/// After a clone-mode drill, a cleanup that fails with `action` at step `k` ends
/// unwound (a forward workflow: nothing undone); a second cleanup, in clone mode too,
/// finishes the work and leaves no clone.
async fn clone_cleanup_finishes_after(k: usize, action: Action) -> TestResult {
    let (rig, second) = cleanup_finishes_after(Mode::Clone, k, action).await?;
    assert_eq!(second.mode.as_deref(), Some("clone"));
    assert!(clones_alive(&rig).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_mode_cleanup_run_again_finishes_what_an_interrupted_one_left() -> TestResult {
    run_cases(per_step_failing(
        &cleanup::saga(),
        clone_cleanup_finishes_after,
    ))
    .await
}
