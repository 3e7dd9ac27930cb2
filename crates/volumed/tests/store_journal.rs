//! The journal's rules on ferry's store, on SQLite and on PostgreSQL: one record per
//! idempotency key, the pending → submitted → finished path, unfinished operations
//! listed for resumption, fences, device paths, replicas and volumes ferry created.

use ::ids::{RunId, VolumeId};
use serde_json::json;
use store::testing::TestStore;
use store::{Appliance, Controller, Disk, Firmware, GuestOs, GuestPrep, NewVm, Nic, VmSpec};
use volumed::{
    Begun, DeviceRecord, Journal, JournalError, NewOp, OpKind, OpState, Outcome, StoreJournal,
};

type TestResult = anyhow::Result<()>;

async fn with_replicas(t: &TestStore) -> anyhow::Result<StoreJournal> {
    t.store
        .upsert_appliance(&Appliance {
            name: "oma".into(),
            vm_id: "vm-oma".into(),
            zone_id: "zone".into(),
            volumed_url: None,
            sysfs_root: None,
        })
        .await?;
    let disk = |key: i64, unit: i64, volume: &str| Disk {
        device_key: key,
        controller: Controller::Scsi,
        bus: 0,
        unit,
        capacity_bytes: 1 << 30,
        label: format!("disk {key}"),
        is_boot: unit == 0,
        boot_order: None,
        replica_volume_id: volume.into(),
    };
    t.store
        .register_vm(
            &NewVm {
                name: "pgtest1".into(),
                source_id: "src".into(),
                appliance: "oma".into(),
                spec: VmSpec {
                    vcpu: 1,
                    memory_mb: 1024,
                    cpu_speed_mhz: 1000,
                    firmware: Firmware::Bios,
                    secure_boot: false,
                    guest_os: GuestOs::Linux,
                    guest_prep: GuestPrep::Skip,
                },
                nics: vec![Nic {
                    position: 0,
                    mac: "00:50:56:00:00:01".into(),
                    source_network: "n".into(),
                    test_network_id: "t".into(),
                    test_ip: None,
                    production_network_id: "p".into(),
                    production_ip: None,
                }],
                disks: vec![disk(2000, 0, "replica-a"), disk(2001, 1, "replica-b")],
            },
            &[],
        )
        .await?;
    Ok(StoreJournal::new(t.store.clone()))
}

fn new_op(key: &str) -> NewOp {
    NewOp {
        id: format!("local-{key}"),
        idempotency_key: key.into(),
        kind: OpKind::Attach,
        vm_id: Some("vm-test".into()),
        volume_id: Some("replica-a".into()),
        snapshot_id: None,
        request: json!({"op": "attach", "volume_id": "replica-a", "vm_id": "vm-test"}),
        run_id: Some("run-1".into()),
    }
}

async fn lifecycle(t: TestStore) -> TestResult {
    let journal = with_replicas(&t).await?;
    let first = match journal.begin(new_op("k1")).await? {
        Begun::New(op) => op,
        other => panic!("expected a new record, got {other:?}"),
    };
    assert_eq!(first.state, OpState::Pending);
    assert_eq!(first.kind, OpKind::Attach);
    assert_eq!(first.request["volume_id"], "replica-a");
    match journal.begin(new_op("k1")).await? {
        Begun::Existing(op) => assert_eq!(op.id, first.id),
        other => panic!("expected the existing record, got {other:?}"),
    }
    journal.set_job(&first.id, &"job-1".into(), None).await?;
    let unfinished = journal.unfinished().await?;
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].state, OpState::Submitted);
    assert_eq!(
        unfinished[0].job_id.as_ref().map(|id| id.as_str()),
        Some("job-1")
    );
    assert_eq!(
        unfinished[0].run_id.as_ref().map(|id| id.as_str()),
        Some("run-1")
    );
    journal
        .finish(&first.id, Outcome::Succeeded(json!({"device_id": 1})))
        .await?;
    assert!(journal.unfinished().await?.is_empty());
    match journal.begin(new_op("k1")).await? {
        Begun::Existing(op) => {
            assert_eq!(op.state, OpState::Succeeded);
            assert_eq!(op.result, Some(json!({"device_id": 1})));
        }
        other => panic!("expected the finished record, got {other:?}"),
    }
    let failed = match journal.begin(new_op("k2")).await? {
        Begun::New(op) => op,
        other => panic!("{other:?}"),
    };
    journal
        .finish(
            &failed.id,
            Outcome::Failed(json!({"code": "cloudstack_refused"})),
        )
        .await?;
    match journal.begin(new_op("k2")).await? {
        Begun::Existing(op) => assert_eq!(op.error, Some(json!({"code": "cloudstack_refused"}))),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        journal.set_job("no-such-op", &"job".into(), None).await,
        Err(JournalError::NoSuchOp { .. })
    ));
    // A reopened store (a restarted daemon) sees the same journal.
    let reopened = StoreJournal::new(store::Store::connect(&t.url).await?);
    let pending = match reopened.begin(new_op("k3")).await? {
        Begun::New(op) => op,
        other => panic!("{other:?}"),
    };
    assert_eq!(journal.unfinished().await?[0].id, pending.id);
    Ok(())
}

async fn fences_devices_replicas_and_created_volumes(t: TestStore) -> TestResult {
    let journal = with_replicas(&t).await?;
    journal.check_fence(&RunId::from("run-1"), 2).await?;
    match journal.check_fence(&RunId::from("run-1"), 1).await {
        Err(JournalError::Fenced {
            generation,
            highest,
            ..
        }) => assert_eq!((generation, highest), (1, 2)),
        other => panic!("expected fenced, got {other:?}"),
    }
    let at = |volume: &str, path: &str| DeviceRecord {
        volume_id: volume.into(),
        vm_id: Some("vm-oma".into()),
        device_id: Some(1),
        device_path: Some(path.into()),
    };
    journal
        .record_device(at("replica-a", "/dev/disk/by-id/virtio-a"))
        .await?;
    match journal
        .record_device(at("replica-b", "/dev/disk/by-id/virtio-a"))
        .await
    {
        Err(JournalError::DevicePathTaken {
            path,
            other_volume_id,
        }) => {
            assert_eq!(path, "/dev/disk/by-id/virtio-a");
            assert_eq!(other_volume_id, "replica-a");
        }
        other => panic!("expected the path to be taken, got {other:?}"),
    }
    let vm = t.store.vm("pgtest1").await?.expect("vm");
    assert_eq!(
        vm.disks[0].attachment.device_path.as_deref(),
        Some("/dev/disk/by-id/virtio-a")
    );
    // Volumes that are not replicas have no attachment row: nothing to keep.
    journal
        .record_device(at("clone-1", "/dev/disk/by-id/virtio-c"))
        .await?;
    assert!(journal.is_replica(&VolumeId::from("replica-b")).await?);
    assert!(!journal.is_replica(&VolumeId::from("clone-1")).await?);
    journal
        .record_created_volume(
            &"clone-1".into(),
            Some(&"snap-1".into()),
            Some(&"run-1".into()),
        )
        .await?;
    assert!(
        journal
            .is_created_volume(&VolumeId::from("clone-1"))
            .await?
    );
    journal
        .mark_created_volume_deleted(&VolumeId::from("clone-1"))
        .await?;
    assert!(
        !journal
            .is_created_volume(&VolumeId::from("clone-1"))
            .await?
    );
    Ok(())
}

#[tokio::test]
async fn lifecycle_on_sqlite() -> TestResult {
    lifecycle(store::testing::sqlite().await?).await
}

#[tokio::test]
async fn lifecycle_on_postgres() -> TestResult {
    lifecycle(store::testing::postgres().await?).await
}

#[tokio::test]
async fn fences_devices_replicas_and_created_volumes_on_sqlite() -> TestResult {
    fences_devices_replicas_and_created_volumes(store::testing::sqlite().await?).await
}

#[tokio::test]
async fn fences_devices_replicas_and_created_volumes_on_postgres() -> TestResult {
    fences_devices_replicas_and_created_volumes(store::testing::postgres().await?).await
}
