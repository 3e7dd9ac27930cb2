//! Drift never wedges a VM (issue 12 §2; docs/operating.md "Drift"): someone changes
//! CloudStack behind ferry's back while pgtest1 is test-failed-over or live-failed-over
//! — through CloudStack's own API, as an administrator would —, and the cleanup or
//! rollback still reaches `done`. What could be put back as the source had it is; what
//! could not is marked diverged, and then pgtest1's next failover is refused until a
//! resync is recorded.

// The drift is made with CloudStack's own volume commands, as a person would.
#![allow(clippy::disallowed_methods)]

mod common;

use ::ids::{VmId, VolumeId};
use std::future::Future;

use cloudsim::World;
use cloudsim::world::{VolumeDef, ids};
use common::flows::{Baseline, Flow, assert_no_clones, clones_alive};
use common::{Rig, RigOptions, TestResult, rig_with};
use engine::Outcome;
use workflows::{StartError, test_failover};

const BOOT: &str = ids::PGTEST1_DISK_2000;
const DATA: &str = ids::PGTEST1_DISK_2001;
/// A volume whose virtio serial (the id's first 20 hex characters) is the data
/// replica's.
const TWIN: &str = "c02e3d1b-4b54-499e-ae29-0000000000ff";

/// A rig whose cloud also has [`TWIN`], detached.
async fn drift_rig() -> anyhow::Result<Rig> {
    let mut world = World::default();
    world.volumes.push(VolumeDef {
        id: Some(TWIN.into()),
        name: "twin".into(),
        size_gb: 1,
        zone: None,
    });
    rig_with(RigOptions {
        world,
        ..RigOptions::default()
    })
    .await
}

/// Brings pgtest1 to where `flow` starts, lets `drift` change CloudStack, runs `flow`
/// and checks it ended `done` with the VM `ready_for_failover`.
async fn drifted<F, Fut>(flow: Flow, drift: F) -> anyhow::Result<(Rig, Baseline, store::Run)>
where
    F: FnOnce(Rig) -> Fut,
    Fut: Future<Output = anyhow::Result<Rig>>,
{
    let rig = drift_rig().await?;
    let base = flow.prepare(&rig).await?;
    let rig = drift(rig).await?;
    let (run, outcome) = flow.run(&rig).await?;
    let events = rig.env.store.events(&run.id).await?;
    assert_eq!(
        outcome,
        Outcome::Done,
        "{} after drift must reach its end: {events:#?}",
        flow.name()
    );
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    assert_eq!(vm.state, store::VmState::ReadyForFailover);
    Ok((rig, base, run))
}

/// The one target VM the flow's prepare made (the test VM, or the VM `pgtest1`).
async fn target(rig: &Rig) -> anyhow::Result<cloudstack::VirtualMachine> {
    let id = rig
        .env
        .store
        .vm("pgtest1")
        .await?
        .and_then(|v| v.target_vm_id)
        .expect("failed over");
    Ok(rig
        .env
        .cloud
        .get_virtual_machine(&id)
        .await?
        .expect("the target VM exists"))
}

async fn detach(rig: &Rig, volume: &str) -> TestResult {
    let job = rig.env.cloud.detach_volume(&VolumeId::from(volume)).await?;
    rig.env.cloud.wait(&job).await?;
    Ok(())
}

async fn attach(rig: &Rig, volume: &str, vm: &VmId) -> TestResult {
    let job = rig
        .env
        .cloud
        .attach_volume(&VolumeId::from(volume), vm, None)
        .await?;
    rig.env.cloud.wait(&job).await?;
    Ok(())
}

async fn destroy(rig: &Rig, vm: &VmId, expunge: bool) -> TestResult {
    let job = rig.env.cloud.destroy_virtual_machine(vm, expunge).await?;
    rig.env.cloud.wait(&job).await?;
    Ok(())
}

async fn stop(rig: &Rig, vm: &VmId) -> TestResult {
    let job = rig.env.cloud.stop_virtual_machine(vm, true).await?;
    rig.env.cloud.wait(&job).await?;
    Ok(())
}

/// Deletes the run's snapshot of replica `volume`.
async fn delete_snapshot_of(rig: &Rig, volume: &str) -> TestResult {
    let snapshots = rig
        .env
        .cloud
        .list_snapshots(Some(&VolumeId::from(volume)), None)
        .await?;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let job = rig.env.cloud.delete_snapshot(&snapshots[0].id).await?;
    rig.env.cloud.wait(&job).await?;
    Ok(())
}

/// A running VM that is not ferry's, for a replica to be attached to.
async fn bystander(rig: &Rig) -> anyhow::Result<VmId> {
    bystander_started(rig, true).await
}

/// A VM that is not ferry's, running or (with its placeholder ROOT) stopped.
async fn bystander_started(rig: &Rig, start: bool) -> anyhow::Result<VmId> {
    let request = cloudstack::DeployVm {
        zone_id: ids::ZONE.into(),
        service_offering_id: ids::OFFERING_CUSTOM.into(),
        template_id: ids::TEMPLATE.into(),
        name: Some("bystander".into()),
        cpu_number: Some(1),
        cpu_speed: Some(1000),
        memory_mb: Some(1024),
        nics: vec![cloudstack::NicRequest {
            network_id: ids::NETWORK_TEST.into(),
            ..Default::default()
        }],
        start,
        ..Default::default()
    };
    let job = rig.env.cloud.deploy_virtual_machine(&request).await?;
    Ok(rig.env.cloud.wait(&job).await?.id)
}

/// pgtest1's replicas that are marked diverged, with their reasons.
async fn diverged(rig: &Rig) -> anyhow::Result<Vec<(String, String)>> {
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    Ok(vm
        .disks
        .iter()
        .filter_map(|d| {
            d.diverged
                .as_ref()
                .map(|m| (d.disk.replica_volume_id.to_string(), m.reason.clone()))
        })
        .collect())
}

/// The run's `warn` events, in words.
async fn warnings(rig: &Rig, run: &store::Run) -> anyhow::Result<Vec<String>> {
    Ok(rig
        .env
        .store
        .events(&run.id)
        .await?
        .into_iter()
        .filter(|e| e.level == "warn")
        .map(|e| e.message)
        .collect())
}

/// Asserts that one of the run's `warn` events says each of `words`.
async fn told(rig: &Rig, run: &store::Run, words: &[&str]) -> TestResult {
    let warned = warnings(rig, run).await?;
    assert!(
        warned
            .iter()
            .any(|w| words.iter().all(|word| w.contains(word))),
        "no warning says {words:?}: {warned:#?}"
    );
    Ok(())
}

/// Asserts that `volume` is pgtest1's only diverged replica, marked for a reason that
/// says `why`.
async fn assert_marked(rig: &Rig, volume: &str, why: &str) -> TestResult {
    let marks = diverged(rig).await?;
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].0, volume, "{marks:?}");
    assert!(marks[0].1.contains(why), "{marks:?}");
    Ok(())
}

/// Asserts that replica `volume` is attached to `vm`, as CloudStack has it.
async fn assert_on(rig: &Rig, volume: &str, vm: &str) -> TestResult {
    let v = rig.replica(volume).await?;
    assert_eq!(
        v.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some(vm),
        "{volume}"
    );
    Ok(())
}

/// pgtest1's record of the disk whose replica is `volume`.
async fn record_of(rig: &Rig, volume: &str) -> anyhow::Result<store::DiskRecord> {
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    Ok(vm
        .disks
        .into_iter()
        .find(|d| d.disk.replica_volume_id.as_str() == volume)
        .expect("the disk"))
}

/// The next failover is refused while `replica` is diverged, and taken once an operator
/// records the resync.
async fn refused_until_resynced(rig: &Rig, replica: &str) -> TestResult {
    let refused = test_failover::start(&rig.env, "pgtest1").await.unwrap_err();
    assert!(
        matches!(&refused, StartError::Diverged { replicas, .. } if replicas.iter().any(|r| r.contains(replica))),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("ferry vm resynced pgtest1"),
        "{refused}"
    );
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    let cleared = rig
        .env
        .store
        .record_resync(&vm.id, &[VolumeId::from(replica)])
        .await?;
    assert_eq!(cleared, vec![VolumeId::from(replica)]);
    test_failover::start(&rig.env, "pgtest1").await?;
    Ok(())
}

// ---- cleanup after a replica-mode test failover ----------------------------------------

#[tokio::test]
async fn a_snapshot_deleted_by_hand_leaves_its_replica_diverged_and_the_cleanup_done() -> TestResult
{
    let (rig, base, run) = drifted(Flow::CleanupReplica, |rig| async move {
        delete_snapshot_of(&rig, DATA).await?;
        Ok(rig)
    })
    .await?;
    // Everything else was done: both replicas on the appliance, no test VM, no snapshot.
    rig.assert_at_rest().await?;
    assert!(rig.test_vms().await?.is_empty());
    assert_eq!(rig.snapshots().await?, 0);
    let now = rig.generations().await?;
    assert_eq!(
        now[BOOT], base.before[BOOT],
        "the boot replica was reverted"
    );
    assert_ne!(
        now[DATA], base.before[DATA],
        "the data replica keeps the drill's writes"
    );
    assert_marked(&rig, DATA, "snapshot").await?;
    // The run ends naming the diverged replica.
    told(&rig, &run, &["back at rest", DATA]).await?;
    refused_until_resynced(&rig, DATA).await
}

#[tokio::test]
async fn a_replica_detached_by_hand_is_reverted_and_put_back() -> TestResult {
    let (rig, base, _) = drifted(Flow::CleanupReplica, |rig| async move {
        detach(&rig, DATA).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.before).await?;
    assert!(diverged(&rig).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_replica_put_on_the_appliance_by_hand_is_still_reverted() -> TestResult {
    let (rig, base, run) = drifted(Flow::CleanupReplica, |rig| async move {
        detach(&rig, DATA).await?;
        attach(&rig, DATA, &VmId::from(ids::APPLIANCE_OMA)).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.before).await?;
    assert!(diverged(&rig).await?.is_empty());
    told(
        &rig,
        &run,
        &["attached to the appliance behind ferry's back"],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_replica_attached_to_another_vm_is_taken_back_and_reverted() -> TestResult {
    let (rig, base, _) = drifted(Flow::CleanupReplica, |rig| async move {
        let other = bystander(&rig).await?;
        detach(&rig, DATA).await?;
        attach(&rig, DATA, &other).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.before).await?;
    assert!(diverged(&rig).await?.is_empty(), "reverted, so trusted");
    Ok(())
}

#[tokio::test]
async fn a_replica_made_the_root_of_a_running_vm_is_left_there_and_marked() -> TestResult {
    let (rig, _, _) = drifted(Flow::CleanupReplica, |rig| async move {
        let other = bystander_started(&rig, false).await?;
        let placeholder = rig.volumes_on(&other).await?.pop().expect("its ROOT");
        detach(&rig, placeholder.id.as_str()).await?;
        detach(&rig, DATA).await?;
        let job = rig
            .env
            .cloud
            .attach_volume(&VolumeId::from(DATA), &other, Some(0))
            .await?;
        rig.env.cloud.wait(&job).await?;
        let job = rig.env.cloud.start_virtual_machine(&other).await?;
        rig.env.cloud.wait(&job).await?;
        Ok(rig)
    })
    .await?;
    let data = rig.replica(DATA).await?;
    let holder = data.virtualmachineid.expect("still held");
    let other = rig
        .env
        .cloud
        .get_virtual_machine(&holder)
        .await?
        .expect("the VM");
    assert_eq!(
        (other.name.as_str(), other.state.as_str()),
        ("bystander", "Running"),
        "ferry does not stop a VM it did not create"
    );
    assert_marked(&rig, DATA, "ROOT disk of VM bystander").await?;
    let record = record_of(&rig, DATA).await?;
    assert_eq!(
        record.attachment.vm_id.as_ref(),
        Some(&holder),
        "the record says where it is"
    );
    // The boot replica came back, reverted.
    assert_eq!(
        rig.replica(BOOT)
            .await?
            .virtualmachineid
            .as_ref()
            .map(|id| id.as_str()),
        Some(ids::APPLIANCE_OMA)
    );
    Ok(())
}

#[tokio::test]
async fn a_test_vm_stopped_by_hand_is_cleaned_up() -> TestResult {
    let (rig, base, _) = drifted(Flow::CleanupReplica, |rig| async move {
        stop(&rig, &target(&rig).await?.id).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.before).await?;
    Ok(())
}

#[tokio::test]
async fn a_test_vm_destroyed_by_hand_is_recovered_then_cleaned_up() -> TestResult {
    let (rig, base, run) = drifted(Flow::CleanupReplica, |rig| async move {
        destroy(&rig, &target(&rig).await?.id, false).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.before).await?;
    assert!(rig.test_vms().await?.is_empty(), "recovered, then expunged");
    assert!(diverged(&rig).await?.is_empty());
    told(&rig, &run, &["recovering it"]).await?;
    Ok(())
}

#[tokio::test]
async fn a_test_vm_expunged_by_hand_took_the_boot_replica_which_is_marked() -> TestResult {
    let (rig, base, _) = drifted(Flow::CleanupReplica, |rig| async move {
        destroy(&rig, &target(&rig).await?.id, true).await?;
        Ok(rig)
    })
    .await?;
    assert!(
        rig.env
            .cloud
            .get_volume(&VolumeId::from(BOOT))
            .await?
            .is_none()
    );
    assert_on(&rig, DATA, ids::APPLIANCE_OMA).await?;
    assert_eq!(
        rig.generations().await?[DATA],
        base.before[DATA],
        "and reverted"
    );
    assert_eq!(rig.snapshots().await?, 0);
    assert_marked(&rig, BOOT, "no longer exists").await?;
    let refused = test_failover::start(&rig.env, "pgtest1").await.unwrap_err();
    assert!(matches!(refused, StartError::Diverged { .. }), "{refused}");
    Ok(())
}

#[tokio::test]
async fn an_extra_volume_on_the_test_vm_is_reported_and_survives() -> TestResult {
    let (rig, base, run) = drifted(Flow::CleanupReplica, |rig| async move {
        attach(&rig, TWIN, &target(&rig).await?.id).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.before).await?;
    let twin = rig
        .env
        .cloud
        .get_volume(&VolumeId::from(TWIN))
        .await?
        .expect("not ferry's to delete");
    assert_eq!(
        twin.virtualmachineid, None,
        "detached when the test VM went"
    );
    told(&rig, &run, &["unexpected volume", TWIN]).await
}

#[tokio::test]
async fn a_serial_collision_on_the_appliance_is_reported_not_a_wedge() -> TestResult {
    let (rig, _, run) = drifted(Flow::CleanupReplica, |rig| async move {
        attach(&rig, TWIN, &VmId::from(ids::APPLIANCE_OMA)).await?;
        Ok(rig)
    })
    .await?;
    assert_on(&rig, DATA, ids::APPLIANCE_OMA).await?;
    let record = record_of(&rig, DATA).await?;
    assert_eq!(
        record.attachment.device_path, None,
        "no path that might be the twin's"
    );
    told(&rig, &run, &["cannot be told apart", DATA]).await
}

// ---- a test failover's own unwind -------------------------------------------------------

#[tokio::test]
async fn a_test_failover_unwinding_after_a_snapshot_was_deleted_marks_that_replica() -> TestResult {
    let rig = drift_rig().await?;
    let before = rig.generations().await?;
    // The start runs long enough to delete a snapshot by hand meanwhile, then fails:
    // the run unwinds through attach-replicas' undo, which reverts the replicas.
    rig.latency(serde_json::json!({"startVirtualMachine": 3_000_000}))
        .await?;
    rig.arm(serde_json::json!({"command": "startVirtualMachine", "times": 10,
        "fault": {"kind": "job_error", "errorcode": 530, "errortext": "Unable to start VM: agent error"}}))
        .await?;
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let saga = test_failover::saga();
    let executing = rig.engine.execute(&run.id, &saga, &rig.env);
    let drift = async {
        loop {
            let steps = rig.env.store.steps(&run.id).await?;
            if steps
                .iter()
                .any(|s| s.name == "start-vm" && s.state == store::StepState::Running)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        delete_snapshot_of(&rig, DATA).await
    };
    let (outcome, drifted) = tokio::join!(executing, drift);
    drifted?;
    assert!(
        matches!(outcome?, Outcome::Unwound { .. }),
        "the failed start unwinds the run"
    );
    // Everything is back on the appliance; the boot replica reverted, the data replica
    // with the test VM's writes and marked.
    assert_on(&rig, BOOT, ids::APPLIANCE_OMA).await?;
    assert_on(&rig, DATA, ids::APPLIANCE_OMA).await?;
    assert!(rig.test_vms().await?.is_empty());
    assert_eq!(rig.generations().await?[BOOT], before[BOOT]);
    assert_marked(&rig, DATA, "snapshot").await?;
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    assert_eq!(vm.state, store::VmState::ReadyForFailover);
    refused_until_resynced(&rig, DATA).await
}

// ---- cleanup after a clone-mode test failover -------------------------------------------

#[tokio::test]
async fn a_clone_deleted_by_hand_is_simply_gone() -> TestResult {
    let (rig, base, _) = drifted(Flow::CleanupClone, |rig| async move {
        // "ID (name, state)"; the data disk's clone (the boot clone is the ROOT of a
        // running VM, which CloudStack does not let go of).
        let alive = clones_alive(&rig)
            .await?
            .into_iter()
            .find(|c| c.contains("-disk-2001"))
            .expect("the data disk's clone");
        let clone = alive.split(' ').next().expect("an id").to_string();
        detach(&rig, &clone).await?;
        rig.env.cloud.delete_volume(&VolumeId::from(clone)).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.before).await?;
    assert_no_clones(&rig).await?;
    assert!(diverged(&rig).await?.is_empty());
    Ok(())
}

// ---- rollback of a live failover --------------------------------------------------------

#[tokio::test]
async fn rollback_recovers_a_vm_destroyed_by_hand() -> TestResult {
    let (rig, base, _) = drifted(Flow::Rollback, |rig| async move {
        destroy(&rig, &target(&rig).await?.id, false).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.at_start).await?;
    assert!(rig.live_vm().await?.is_none());
    assert!(diverged(&rig).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn rollback_with_the_vm_stopped_and_a_snapshot_deleted_by_hand_is_done() -> TestResult {
    let (rig, base, _) = drifted(Flow::Rollback, |rig| async move {
        stop(&rig, &target(&rig).await?.id).await?;
        delete_snapshot_of(&rig, BOOT).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest_as(&base.at_start).await?;
    assert_eq!(rig.snapshots().await?, 0);
    assert!(
        diverged(&rig).await?.is_empty(),
        "a rollback reverts nothing"
    );
    Ok(())
}

#[tokio::test]
async fn rollback_takes_back_a_replica_from_another_vm_and_marks_it() -> TestResult {
    let (rig, _, _) = drifted(Flow::Rollback, |rig| async move {
        let other = bystander(&rig).await?;
        detach(&rig, DATA).await?;
        attach(&rig, DATA, &other).await?;
        Ok(rig)
    })
    .await?;
    rig.assert_at_rest().await?;
    assert_marked(&rig, DATA, "bystander").await?;
    refused_until_resynced(&rig, DATA).await
}

#[tokio::test]
async fn rollback_after_the_vm_was_expunged_marks_the_boot_replica_gone() -> TestResult {
    let (rig, _, _) = drifted(Flow::Rollback, |rig| async move {
        destroy(&rig, &target(&rig).await?.id, true).await?;
        Ok(rig)
    })
    .await?;
    assert_on(&rig, DATA, ids::APPLIANCE_OMA).await?;
    assert_marked(&rig, BOOT, "no longer exists").await
}
