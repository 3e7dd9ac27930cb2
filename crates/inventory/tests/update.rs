//! Updates at rest against cloudsim (port 0) and a SQLite store: pgtest1 changed —
//! a replica replaced, a disk added, more memory — stays the same VM with its runs and
//! its replicas' attachment records; the same file changes nothing; a dry run writes
//! nothing; and every refusal (another VM's MAC or serial, a new name, a VM not at
//! rest) names what is wrong and changes nothing.

mod common;

use cloudsim::World;
use cloudsim::world::{VolumeDef, ids};
use common::{Env, GIB, TestResult, assert_problem, env, example};
use inventory::{
    Change, ChangeKind, DiskDefinition, Limits, Problem, UpdateError, Updated, VmDefinition,
    register, update,
};
use store::{Attachment, RunState, VmState, Workflow};

/// A 10 GiB volume and a 20 GiB one on the appliance besides pgtest1's replicas, and
/// one sharing the first 20 hex digits (the virtio serial) of the 10 GiB one.
const SPARE_10: &str = "b0000000-0000-4000-8000-000000000010";
const SPARE_20: &str = "c0000000-0000-4000-8000-000000000020";
const SPARE_10_TWIN: &str = "b0000000-0000-4000-8000-000000000099";

fn world() -> World {
    let mut world = World::default();
    for (id, size_gb) in [(SPARE_10, 10), (SPARE_20, 20), (SPARE_10_TWIN, 10)] {
        world.appliances[0].volumes.push(VolumeDef {
            id: Some(id.into()),
            name: id.into(),
            size_gb,
            zone: None,
        });
    }
    world
}

/// The world with pgtest1 registered.
async fn with_pgtest1() -> anyhow::Result<Env> {
    let env = env(world()).await?;
    register(&env.store, &env.cloud, &example()?, Limits::default()).await?;
    Ok(env)
}

impl Env {
    async fn update(&self, def: &VmDefinition, dry_run: bool) -> Result<Updated, UpdateError> {
        update(
            &self.store,
            &self.cloud,
            "pgtest1",
            def,
            Limits::default(),
            dry_run,
        )
        .await
    }

    /// The update must be refused as invalid; returns its problems after checking
    /// nothing was changed.
    async fn refused(&self, def: &VmDefinition) -> anyhow::Result<Vec<Problem>> {
        let before = self.store.vms().await?;
        match self.update(def, false).await {
            Err(UpdateError::Invalid(problems)) => {
                self.unchanged(&before).await?;
                Ok(problems)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The registered VMs are `before`, and pgtest1 has no update in its history.
    async fn unchanged(&self, before: &[store::ProtectedVm]) -> TestResult {
        assert_eq!(
            self.store.vms().await?,
            before,
            "a refusal changed something"
        );
        let vm = self.store.vm("pgtest1").await?.expect("registered");
        assert!(self.store.vm_updates(&vm.id).await?.is_empty());
        Ok(())
    }
}

fn data_disk(key: i64, unit: i64, gib: i64, volume: &str) -> DiskDefinition {
    let mut disk = example().expect("the example").disks[1].clone();
    disk.key = key;
    disk.unit = unit;
    disk.capacity_gib = Some(gib);
    disk.label = None;
    disk.replica_volume_id = volume.into();
    disk
}

fn changed(field: &str, from: &str, to: &str) -> Change {
    Change {
        field: field.into(),
        change: ChangeKind::Changed,
        from: Some(from.into()),
        to: Some(to.into()),
    }
}

#[tokio::test]
async fn an_update_replaces_a_replica_and_adds_a_disk_keeping_the_vm() -> TestResult {
    let env = with_pgtest1().await?;
    let before = env.store.vm("pgtest1").await?.expect("registered");
    // The volume daemon found the boot replica's device on the appliance.
    let boot = &before.disks[0];
    let found = Attachment {
        device_path: Some("/dev/disk/by-id/virtio-233463a7616147e99238".into()),
        ..boot.attachment.clone()
    };
    env.store
        .record_attachment(&boot.disk.replica_volume_id, &found)
        .await?;
    let run = env
        .store
        .create_run(&before.id, Workflow::TestFailover, Some("replica"))
        .await?;
    env.store
        .set_run_state(&run.id, RunState::Done, None)
        .await?;

    let mut def = example()?;
    def.spec.memory_mb = 16384;
    def.disks[1].replica_volume_id = SPARE_10.into();
    def.disks.push(data_disk(2002, 2, 20, SPARE_20));
    let updated = env.update(&def, false).await?;

    assert!(updated.written);
    assert_eq!(
        updated.changes,
        [
            changed("spec.memory_mb", "8192", "16384"),
            changed(
                "disks[key=2001].replica_volume_id",
                ids::PGTEST1_DISK_2001,
                SPARE_10
            ),
            Change {
                field: "disks[key=2002]".into(),
                change: ChangeKind::Added,
                from: None,
                to: Some(format!("scsi:0:2, 20 GiB, data disk, replica {SPARE_20}")),
            },
        ]
    );
    let vm = &updated.vm;
    assert_eq!(vm.id, before.id, "the same VM");
    assert_eq!(vm.state, VmState::ReadyForFailover);
    assert_eq!(vm.spec.memory_mb, 16384);
    assert_eq!(
        env.store.runs(Some(&vm.id), 10).await?.len(),
        1,
        "its run is kept"
    );
    // The unchanged replica keeps the daemon's record; the new ones are where
    // CloudStack shows them, on the appliance.
    assert_eq!(vm.disks[0].attachment, found);
    for disk in &vm.disks[1..] {
        assert_eq!(
            disk.attachment.vm_id.as_ref().map(|v| v.as_str()),
            Some(ids::APPLIANCE_OMA)
        );
        assert!(disk.attachment.device_id.is_some());
    }
    assert_eq!(vm.disks[2].disk.capacity_bytes, 20 * GIB);
    assert_eq!(vm.disks[2].disk.label, "disk-2002");
    // The replaced replica is free for another VM; the update is in the history.
    assert!(!env.store.is_replica(&ids::PGTEST1_DISK_2001.into()).await?);
    let history = env.store.vm_updates(&vm.id).await?;
    assert_eq!(history.len(), 1);
    let recorded: Vec<Change> = serde_json::from_str(&history[0].changes)?;
    assert_eq!(recorded, updated.changes);
    Ok(())
}

#[tokio::test]
async fn the_same_definition_changes_nothing_and_a_dry_run_writes_nothing() -> TestResult {
    let env = with_pgtest1().await?;
    let before = env.store.vms().await?;
    // The same VM, written differently: capacity in bytes, MAC in capitals, the test
    // network by id.
    let mut same = example()?;
    same.disks[0].capacity_gib = None;
    same.disks[0].capacity_bytes = Some(107 * GIB);
    same.nics[0].mac = same.nics[0].mac.to_uppercase();
    same.nics[0].test_network = ids::NETWORK_TEST.into();
    let updated = env.update(&same, false).await?;
    assert_eq!(updated.changes, []);
    assert!(!updated.written);
    env.unchanged(&before).await?;

    let mut more = example()?;
    more.spec.vcpu = 8;
    let dry = env.update(&more, true).await?;
    assert_eq!(dry.changes, [changed("spec.vcpu", "4", "8")]);
    assert!(!dry.written);
    assert_eq!(dry.vm.spec.vcpu, 4, "the VM as it is");
    env.unchanged(&before).await?;
    Ok(())
}

#[tokio::test]
async fn another_vms_mac_replica_or_serial_is_refused_naming_it() -> TestResult {
    let env = with_pgtest1().await?;
    let mut other = example()?;
    other.name = "other".into();
    other.nics[0].mac = "00:50:56:8a:22:01".into();
    other.disks.truncate(1);
    other.disks[0].capacity_gib = Some(10);
    other.disks[0].replica_volume_id = SPARE_10.into();
    register(&env.store, &env.cloud, &other, Limits::default()).await?;

    let mut def = example()?;
    def.nics[0].mac = "00:50:56:8A:22:01".into();
    def.disks.push(data_disk(2002, 2, 10, SPARE_10_TWIN));
    def.spec.vcpu = 0;
    let problems = env.refused(&def).await?;
    assert_problem(
        &problems,
        "nics[0].mac",
        "00:50:56:8A:22:01 is already the MAC of a NIC of the protected VM other",
    );
    assert_problem(
        &problems,
        "disks[2].replica_volume_id",
        &format!(
            "volume {SPARE_10_TWIN} and volume {SPARE_10} (the replica of disk 2000 of other, on the \
             same appliance) share the virtio serial"
        ),
    );
    assert_problem(&problems, "spec.vcpu", "0 vCPUs");
    assert_eq!(problems.len(), 3, "{problems:#?}");

    let mut def = example()?;
    def.disks[1].replica_volume_id = SPARE_10.into();
    let problems = env.refused(&def).await?;
    assert_problem(
        &problems,
        "disks[1].replica_volume_id",
        &format!("volume {SPARE_10} is already registered as the replica of disk 2000 of other"),
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");
    Ok(())
}

#[tokio::test]
async fn the_name_is_the_vms_identity() -> TestResult {
    let env = with_pgtest1().await?;
    let mut renamed = example()?;
    renamed.name = "pgtest2".into();
    let problems = env.refused(&renamed).await?;
    assert_problem(
        &problems,
        "name",
        "the definition names `pgtest2`, but it updates pgtest1: a protected VM's name is its identity",
    );
    match update(
        &env.store,
        &env.cloud,
        "pgtest2",
        &renamed,
        Limits::default(),
        false,
    )
    .await
    {
        Err(e @ UpdateError::NotRegistered(_)) => assert_eq!(
            e.to_string(),
            "no protected VM named pgtest2 is registered: register it with `ferry vm add FILE`"
        ),
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_vm_not_at_rest_is_not_updated() -> TestResult {
    let env = with_pgtest1().await?;
    let vm = env.store.vm("pgtest1").await?.expect("registered");
    let before = env.store.vms().await?;
    let mut def = example()?;
    def.spec.vcpu = 8;

    let run = env
        .store
        .create_run(&vm.id, Workflow::TestFailover, Some("replica"))
        .await?;
    match env.update(&def, true).await {
        Err(e @ UpdateError::NotAtRest { .. }) => {
            let message = e.to_string();
            for says in [
                &format!("run {} (test_failover) is pending", run.id),
                "changes only at rest",
                &format!("`ferry run cancel {}`", run.id),
            ] {
                assert!(message.contains(says), "`{message}` should say `{says}`");
            }
        }
        other => panic!("expected NotAtRest, got {other:?}"),
    }
    env.store
        .set_run_state(&run.id, RunState::Done, None)
        .await?;
    env.store
        .set_vm_state(&vm.id, VmState::TestFailedOver, Some(&"test-vm".into()))
        .await?;
    match env.update(&def, false).await {
        Err(UpdateError::NotAtRest {
            state, active_run, ..
        }) => {
            assert_eq!(state, VmState::TestFailedOver);
            assert!(active_run.is_none());
        }
        other => panic!("expected NotAtRest, got {other:?}"),
    }
    let mut test_failed_over = before.clone();
    test_failed_over[0].state = VmState::TestFailedOver;
    test_failed_over[0].target_vm_id = Some("test-vm".into());
    assert_eq!(env.store.vms().await?, test_failed_over);
    assert!(env.store.vm_updates(&vm.id).await?.is_empty());
    Ok(())
}
