//! The store's conformance suite: every test runs against SQLite (a file in a temp
//! directory) and against PostgreSQL (its own schema in the database named by
//! `FERRY_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`; see
//! `store::testing`), so the
//! two backends are held to one behaviour. The constraints are checked by name.

use store::*;

type TestResult = anyhow::Result<()>;

use store::testing::TestStore as Fixture;

async fn sqlite() -> anyhow::Result<Fixture> {
    Ok(store::testing::sqlite().await?)
}

async fn postgres() -> anyhow::Result<Fixture> {
    Ok(store::testing::postgres().await?)
}

/// Runs one scenario on both backends.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() -> super::TestResult {
                    let fx = super::sqlite().await?;
                    super::$name(&fx).await
                }
            )+
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() -> super::TestResult {
                    let fx = super::postgres().await?;
                    super::$name(&fx).await
                }
            )+
        }
    };
}

conformance!(
    migrations_run_once_and_again,
    a_registered_vm_round_trips_with_disks_in_controller_order,
    vm_names_are_unique,
    a_replica_volume_belongs_to_one_disk_only,
    a_vm_has_at_most_one_boot_disk,
    disk_identity_is_controller_bus_unit_not_size,
    a_refused_registration_writes_nothing,
    secure_boot_needs_uefi,
    one_active_run_per_vm,
    concurrent_run_starts_for_one_vm_let_exactly_one_through,
    removing_a_vm_is_refused_while_a_run_is_active,
    removing_a_vm_keeps_its_runs_and_frees_its_name_macs_and_replicas,
    an_update_at_rest_keeps_the_vm_its_runs_and_its_replicas_records,
    an_update_is_refused_unless_the_vm_is_at_rest,
    a_refused_update_changes_nothing,
    two_volumes_never_share_a_device_path,
    volume_ops_are_idempotent_by_key_and_listed_until_finished,
    stale_fencing_generations_are_refused,
    volumes_ferry_created_are_told_apart_from_replicas,
    a_worker_that_lost_its_lease_is_fenced_off,
    steps_and_events_are_recorded_in_order,
    runs_are_listed_newest_first_with_their_operations,
    runs_are_found_by_the_start_of_their_id_among_all,
    a_wait_is_recorded_on_the_run_and_cleared_when_it_ends,
    a_steps_usual_duration_comes_from_its_recent_runs,
    a_worker_name_is_held_by_one_process_at_a_time,
    a_diverged_replica_keeps_its_first_mark_until_a_resync_is_recorded,
    a_plan_round_trips_and_its_name_is_unique,
    a_vm_a_plan_names_cannot_be_removed,
    a_plan_run_moves_only_from_where_it_was_read,
    a_plan_run_is_driven_under_a_lease_and_its_tiers_timed,
    who_asked_for_a_run_and_which_workers_ran_it_are_kept,
    a_plan_runs_hooks_are_recorded_as_they_start_and_end,
    a_run_never_starts_from_a_replaced_definition_nor_an_update_lands_under_a_new_run,
);

const GIB: i64 = 1 << 30;

/// `update_vm` from the VM's version as the store has it now (the version check itself
/// is `a_run_never_starts_from_a_replaced_definition_nor_an_update_lands_under_a_new_run`).
async fn update(
    store: &Store,
    id: &ids::ProtectedVmId,
    vm: &NewVm,
    seen: &[(ids::VolumeId, Attachment)],
    changes: &str,
) -> store::Result<ProtectedVm> {
    let version = store.vm_by_id(id).await?.map_or(0, |v| v.version);
    store.update_vm(id, version, vm, seen, changes).await
}

async fn appliance(store: &Store) -> anyhow::Result<()> {
    store
        .upsert_appliance(&Appliance {
            name: "oma".into(),
            vm_id: "vm-oma".into(),
            zone_id: "zone-1".into(),
            volumed_url: None,
            sysfs_root: Some("/".into()),
        })
        .await?;
    Ok(())
}

fn disk(
    key: i64,
    controller: Controller,
    bus: i64,
    unit: i64,
    gib: i64,
    boot: bool,
    volume: &str,
) -> Disk {
    Disk {
        device_key: key,
        controller,
        bus,
        unit,
        capacity_bytes: gib * GIB,
        label: format!("Hard disk {key}"),
        is_boot: boot,
        boot_order: None,
        replica_volume_id: volume.into(),
    }
}

/// The job sheet's VM: a 107 GiB boot disk and a 10 GiB data disk.
fn pgtest1(name: &str, volumes: [&str; 2], mac: &str) -> NewVm {
    NewVm {
        name: name.into(),
        source_id: format!("vm-{name}"),
        appliance: "oma".into(),
        spec: VmSpec {
            vcpu: 4,
            memory_mb: 8192,
            cpu_speed_mhz: 2000,
            firmware: Firmware::Uefi,
            secure_boot: true,
            guest_os: GuestOs::Linux,
            guest_prep: GuestPrep::Auto,
        },
        nics: vec![Nic {
            position: 0,
            mac: mac.into(),
            source_network: "VM Network".into(),
            test_network_id: "net-test".into(),
            test_ip: None,
            production_network_id: "net-prod".into(),
            production_ip: Some("10.20.0.5".into()),
        }],
        disks: vec![
            disk(2000, Controller::Scsi, 0, 0, 107, true, volumes[0]),
            disk(2001, Controller::Scsi, 0, 1, 10, false, volumes[1]),
        ],
    }
}

/// Registers [`pgtest1`] under `name` with these replica volumes and MAC address.
async fn register(
    store: &Store,
    name: &str,
    volumes: [&str; 2],
    mac: &str,
) -> Result<ProtectedVm, StoreError> {
    store.register_vm(&pgtest1(name, volumes, mac), &[]).await
}

/// The appliance and `pgtest1` with replicas `a` and `b`, registered.
async fn registered(store: &Store) -> anyhow::Result<ProtectedVm> {
    appliance(store).await?;
    Ok(register(store, "pgtest1", ["a", "b"], "00:50:56:00:00:01").await?)
}

#[track_caller]
fn assert_constraint<T: std::fmt::Debug>(result: Result<T, StoreError>, name: &str) {
    match result {
        Err(StoreError::Constraint { constraint, .. }) => assert_eq!(constraint, name),
        other => panic!("expected constraint {name}, got {other:?}"),
    }
}

async fn migrations_run_once_and_again(fx: &Fixture) -> TestResult {
    appliance(&fx.store).await?;
    // Every start runs the migrator: on a database that is already up to date it
    // must change nothing and keep the data.
    let reopened = Store::connect(&fx.url).await?;
    assert_eq!(reopened.backend(), fx.store.backend());
    assert_eq!(reopened.appliances().await?, fx.store.appliances().await?);
    assert_eq!(reopened.appliances().await?.len(), 1);
    reopened.close().await;
    Ok(())
}

async fn a_registered_vm_round_trips_with_disks_in_controller_order(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    appliance(store).await?;
    let mut vm = pgtest1("pgtest1", ["vol-a", "vol-b"], "00:50:56:AA:BB:01");
    // Registered data disk first: the store still returns controller/bus/unit order.
    vm.disks.reverse();
    vm.disks
        .push(disk(3000, Controller::Sata, 0, 0, 10, false, "vol-c"));
    let seen = vec![(
        "vol-a".into(),
        Attachment {
            vm_id: Some("vm-oma".into()),
            device_id: Some(1),
            device_path: Some("/dev/disk/by-id/virtio-vola".into()),
            seen_at: Some(1),
        },
    )];
    let stored = store.register_vm(&vm, &seen).await?;
    assert_eq!(stored.name, "pgtest1");
    assert_eq!(stored.state, VmState::ReadyForFailover);
    assert_eq!(stored.spec, vm.spec);
    assert_eq!(
        stored.nics[0].mac, "00:50:56:aa:bb:01",
        "MACs are stored lower-case"
    );
    let keys: Vec<i64> = stored.disks.iter().map(|d| d.disk.device_key).collect();
    assert_eq!(
        keys,
        vec![3000, 2000, 2001],
        "sata < scsi, then bus, then unit"
    );
    assert_eq!(stored.boot_disk().map(|d| d.disk.device_key), Some(2000));
    let boot = stored.boot_disk().expect("boot");
    assert_eq!(boot.attachment.device_id, Some(1));
    assert_eq!(boot.disk.capacity_bytes, 107 * GIB);
    assert_eq!(store.vm("pgtest1").await?, Some(stored.clone()));
    assert_eq!(store.vms().await?, vec![stored.clone()]);
    let (owner, record) = store
        .replica(&"vol-b".into())
        .await?
        .expect("replica known");
    assert_eq!(owner, "pgtest1");
    assert_eq!(record.disk.device_key, 2001);
    assert!(store.is_replica(&"vol-c".into()).await?);
    assert!(!store.is_replica(&"vol-z".into()).await?);
    Ok(())
}

async fn vm_names_are_unique(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    registered(store).await?;
    assert_constraint(
        register(store, "pgtest1", ["c", "d"], "00:50:56:00:00:02").await,
        "protected_vms_name_key",
    );
    Ok(())
}

async fn a_replica_volume_belongs_to_one_disk_only(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    appliance(store).await?;
    register(store, "one", ["a", "b"], "00:50:56:00:00:01").await?;
    assert_constraint(
        register(store, "two", ["c", "b"], "00:50:56:00:00:02").await,
        "replica_volumes_pkey",
    );
    assert_constraint(
        register(store, "three", ["e", "e"], "00:50:56:00:00:03").await,
        "replica_volumes_pkey",
    );
    Ok(())
}

async fn a_vm_has_at_most_one_boot_disk(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    appliance(store).await?;
    let mut vm = pgtest1("twoboots", ["a", "b"], "00:50:56:00:00:01");
    vm.disks[1].is_boot = true;
    assert_constraint(store.register_vm(&vm, &[]).await, "disks_one_boot_per_vm");
    Ok(())
}

async fn disk_identity_is_controller_bus_unit_not_size(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    appliance(store).await?;
    // Two equal-size disks on different controllers are two disks.
    let mut vm = pgtest1("equal", ["a", "b"], "00:50:56:00:00:01");
    vm.disks
        .push(disk(16000, Controller::Nvme, 0, 0, 10, false, "c"));
    let stored = store.register_vm(&vm, &[]).await?;
    assert_eq!(stored.disks.len(), 3);
    // The same (controller, bus, unit) twice is refused.
    let mut dup = pgtest1("dup", ["d", "e"], "00:50:56:00:00:02");
    dup.disks[1].unit = 0;
    assert_constraint(store.register_vm(&dup, &[]).await, "disks_identity");
    let mut dup_key = pgtest1("dupkey", ["f", "g"], "00:50:56:00:00:03");
    dup_key.disks[1].device_key = 2000;
    assert_constraint(store.register_vm(&dup_key, &[]).await, "disks_device_key");
    Ok(())
}

async fn a_refused_registration_writes_nothing(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    appliance(store).await?;
    let mut vm = pgtest1("partial", ["a", "b"], "00:50:56:00:00:01");
    vm.disks[1].is_boot = true;
    assert!(store.register_vm(&vm, &[]).await.is_err());
    assert_eq!(store.vm("partial").await?, None);
    assert!(
        !store.is_replica(&"a".into()).await?,
        "the first disk's replica was rolled back"
    );
    // The names and volumes are free for a correct registration.
    vm.disks[1].is_boot = false;
    store.register_vm(&vm, &[]).await?;
    Ok(())
}

async fn secure_boot_needs_uefi(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    appliance(store).await?;
    let mut vm = pgtest1("bios", ["a", "b"], "00:50:56:00:00:01");
    vm.spec.firmware = Firmware::Bios;
    let result = store.register_vm(&vm, &[]).await;
    assert!(
        matches!(result, Err(StoreError::Constraint { .. })),
        "the CHECK refuses secure boot on BIOS: {result:?}"
    );
    assert_eq!(store.vm("bios").await?, None);
    Ok(())
}

async fn one_active_run_per_vm(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let run = store
        .create_run(&vm.id, Workflow::TestFailover, Some("replica"))
        .await?;
    assert_eq!(run.state, RunState::Pending);
    assert_constraint(
        store.create_run(&vm.id, Workflow::Cleanup, None).await,
        "runs_one_active_per_vm",
    );
    // A stuck run still holds the VM.
    store
        .set_run_state(&run.id, RunState::Stuck, Some("detach failed"))
        .await?;
    assert_constraint(
        store.create_run(&vm.id, Workflow::Cleanup, None).await,
        "runs_one_active_per_vm",
    );
    assert_eq!(
        store.active_run(&vm.id).await?.map(|r| r.id),
        Some(run.id.clone())
    );
    store
        .set_run_state(&run.id, RunState::Abandoned, None)
        .await?;
    let ended = store.run(&run.id).await?.expect("run");
    assert_eq!(
        ended.error.as_deref(),
        Some("detach failed"),
        "the reason stays"
    );
    assert!(ended.finished_at.is_some());
    let next = store.create_run(&vm.id, Workflow::Cleanup, None).await?;
    assert_eq!(store.active_run(&vm.id).await?.map(|r| r.id), Some(next.id));
    Ok(())
}

async fn concurrent_run_starts_for_one_vm_let_exactly_one_through(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let vm_id = vm.id.clone();
            tokio::spawn(
                async move { store.create_run(&vm_id, Workflow::TestFailover, None).await },
            )
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await? {
            Ok(_) => won += 1,
            Err(StoreError::Constraint { constraint, .. }) => {
                assert_eq!(constraint, "runs_one_active_per_vm")
            }
            Err(other) => return Err(other.into()),
        }
    }
    assert_eq!(won, 1);
    Ok(())
}

async fn removing_a_vm_is_refused_while_a_run_is_active(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let run = store
        .create_run(&vm.id, Workflow::TestFailover, None)
        .await?;
    match store.remove_vm("pgtest1").await {
        Err(StoreError::Refused(message)) => {
            assert!(message.contains(run.id.as_str()), "{message}");
            assert!(message.contains("ferry run cancel"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(store.vm("pgtest1").await?.is_some());
    store.set_run_state(&run.id, RunState::Done, None).await?;
    store.remove_vm("pgtest1").await?;
    assert_eq!(store.vm("pgtest1").await?, None);
    assert!(!store.is_replica(&"a".into()).await?);
    assert!(matches!(
        store.remove_vm("pgtest1").await,
        Err(StoreError::NotFound { .. })
    ));
    Ok(())
}

async fn removing_a_vm_keeps_its_runs_and_frees_its_name_macs_and_replicas(
    fx: &Fixture,
) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let mut runs = Vec::new();
    for workflow in [Workflow::LiveFailover, Workflow::Commit] {
        let run = store.create_run(&vm.id, workflow, None).await?;
        let g = store
            .acquire_run(&run.id, "w", 60_000)
            .await?
            .expect("free");
        store
            .put_step(&run.id, g, &step(0, StepState::Done))
            .await?;
        store
            .add_event(&run.id, "info", Some("step-0"), "done", None)
            .await?;
        store.set_run_state(&run.id, RunState::Done, None).await?;
        runs.push(run.id);
    }
    store.set_vm_state(&vm.id, VmState::Committed, None).await?;
    assert_eq!(store.vm_run_count(&vm.id).await?, 2);

    store.remove_vm("pgtest1").await?;

    // Gone from the inventory: not found by name, not listed, nothing to remove again.
    assert_eq!(store.vm("pgtest1").await?, None);
    assert!(store.vms().await?.is_empty());
    assert!(matches!(
        store.remove_vm("pgtest1").await,
        Err(StoreError::NotFound { .. })
    ));
    // The record is kept: every run with its steps and events, and the VM they name.
    let kept = store.runs(None, 10).await?;
    assert_eq!(kept.len(), 2);
    assert_eq!(store.runs(Some(&vm.id), 10).await?.len(), 2);
    for id in &runs {
        let run = store.run(id).await?.expect("the run is kept");
        assert_eq!(run.vm_id, vm.id);
        assert_eq!(run.state, RunState::Done);
        assert_eq!(store.steps(id).await?.len(), 1);
        assert_eq!(store.events(id).await?.len(), 1);
    }
    let removed = store
        .vm_by_id(&vm.id)
        .await?
        .expect("the removed VM is kept");
    assert_eq!(removed.name, "pgtest1");
    assert!(removed.removed_at.is_some());
    assert!(removed.nics.is_empty() && removed.disks.is_empty());
    assert_eq!(
        store.vm_names().await?,
        vec![VmName {
            id: vm.id.clone(),
            name: "pgtest1".into(),
            removed_at: removed.removed_at,
        }]
    );
    // Its replica volumes are no VM's any more.
    assert!(!store.is_replica(&"a".into()).await?);
    assert_eq!(store.replica(&"b".into()).await?, None);

    // The name, the MAC and the replicas can be registered again: a new VM.
    let again = register(store, "pgtest1", ["a", "b"], "00:50:56:00:00:01").await?;
    assert_ne!(again.id, vm.id);
    assert_eq!(again.removed_at, None);
    assert_eq!(
        store.vm("pgtest1").await?.map(|v| v.id),
        Some(again.id.clone())
    );
    assert_eq!(
        store
            .vms()
            .await?
            .into_iter()
            .map(|v| v.id)
            .collect::<Vec<_>>(),
        vec![again.id.clone()]
    );
    assert_eq!(store.vm_run_count(&again.id).await?, 0);
    assert_eq!(store.runs(None, 10).await?.len(), 2);
    // Removed once more, the two removed VMs share the name without a conflict.
    store.remove_vm("pgtest1").await?;
    let mut names = store.vm_names().await?;
    names.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    assert_eq!(names.len(), 2);
    assert!(
        names
            .iter()
            .all(|n| n.name == "pgtest1" && n.removed_at.is_some())
    );
    Ok(())
}

/// Where a replica sits on the appliance `vm-oma`, as the volume daemon records it
/// (with a device path) or as registration sees it in CloudStack (without).
fn on_oma(device_id: i64, path: Option<&str>) -> Attachment {
    Attachment {
        vm_id: Some("vm-oma".into()),
        device_id: Some(device_id),
        device_path: path.map(str::to_string),
        seen_at: Some(1),
    }
}

async fn an_update_at_rest_keeps_the_vm_its_runs_and_its_replicas_records(
    fx: &Fixture,
) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let path_a = "/dev/disk/by-id/virtio-a";
    store
        .record_attachment(&"a".into(), &on_oma(1, Some(path_a)))
        .await?;
    store
        .record_attachment(&"b".into(), &on_oma(2, Some("/dev/disk/by-id/virtio-b")))
        .await?;
    let run = store
        .create_run(&vm.id, Workflow::TestFailover, None)
        .await?;
    store
        .add_event(&run.id, "info", None, "test failover done", None)
        .await?;
    store.set_run_state(&run.id, RunState::Done, None).await?;
    let before = store.vm("pgtest1").await?.expect("registered");

    // More memory, another MAC, disk 2001 on a new replica, and a new disk 2002.
    let mut new = pgtest1("pgtest1", ["a", "c"], "00:50:56:00:00:02");
    new.spec.memory_mb = 16384;
    new.disks
        .push(disk(2002, Controller::Scsi, 0, 2, 20, false, "d"));
    let seen = [
        ("a".into(), on_oma(1, None)),
        ("c".into(), on_oma(3, None)),
        ("d".into(), on_oma(4, None)),
    ];
    let updated = update(
        store,
        &vm.id,
        &new,
        &seen,
        r#"[{"field":"spec.memory_mb"}]"#,
    )
    .await?;

    // The same VM, in the same state, with its runs and their events.
    assert_eq!(updated.id, vm.id);
    assert_eq!(updated.name, "pgtest1");
    assert_eq!(updated.state, VmState::ReadyForFailover);
    assert_eq!(updated.created_at, vm.created_at);
    assert_eq!(store.runs(Some(&vm.id), 10).await?.len(), 1);
    assert_eq!(store.events(&run.id).await?.len(), 1);
    // The new definition.
    assert_eq!(updated.spec.memory_mb, 16384);
    assert_eq!(updated.nics.len(), 1);
    assert_eq!(updated.nics[0].mac, "00:50:56:00:00:02");
    let disks: Vec<(i64, &str)> = updated
        .disks
        .iter()
        .map(|d| (d.disk.device_key, d.disk.replica_volume_id.as_str()))
        .collect();
    assert_eq!(disks, [(2000, "a"), (2001, "c"), (2002, "d")]);
    // Disks keep their ids by device key; the unchanged replica keeps the daemon's
    // record, device path and all; the new replicas are recorded as seen.
    assert_eq!(updated.disks[0].id, before.disks[0].id);
    assert_eq!(updated.disks[1].id, before.disks[1].id);
    assert_eq!(updated.disks[0].attachment, before.disks[0].attachment);
    assert_eq!(
        updated.disks[0].attachment.device_path.as_deref(),
        Some(path_a)
    );
    assert_eq!(updated.disks[1].attachment, on_oma(3, None));
    assert_eq!(updated.disks[2].attachment, on_oma(4, None));
    // The replaced replica and the old MAC are free again.
    assert!(!store.is_replica(&"b".into()).await?);
    assert_eq!(
        store.replica(&"c".into()).await?.map(|(vm, _)| vm),
        Some("pgtest1".into())
    );
    register(store, "other", ["b", "e"], "00:50:56:00:00:01").await?;
    // Recorded in the VM's history.
    let updates = store.vm_updates(&vm.id).await?;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].changes, r#"[{"field":"spec.memory_mb"}]"#);
    assert!(updates[0].at >= vm.created_at);

    // Two replicas swap disks; CloudStack now shows `a` at another device id, so the
    // daemon's record of it no longer holds and what is seen is recorded instead.
    let swapped = pgtest1("pgtest1", ["c", "a"], "00:50:56:00:00:02");
    let seen = [("a".into(), on_oma(5, None)), ("c".into(), on_oma(3, None))];
    let updated = update(store, &vm.id, &swapped, &seen, "[]").await?;
    let by_key = |key: i64| {
        updated
            .disks
            .iter()
            .find(|d| d.disk.device_key == key)
            .expect("the disk")
    };
    assert_eq!(by_key(2000).disk.replica_volume_id.as_str(), "c");
    assert_eq!(by_key(2001).disk.replica_volume_id.as_str(), "a");
    assert_eq!(by_key(2001).attachment, on_oma(5, None));
    assert!(!store.is_replica(&"d".into()).await?);
    // Where nothing is seen, nothing contradicts the records: they are kept.
    let again = update(store, &vm.id, &swapped, &[], "[]").await?;
    let records = |vm: &ProtectedVm| -> Vec<Attachment> {
        vm.disks.iter().map(|d| d.attachment.clone()).collect()
    };
    assert_eq!(records(&again), records(&updated));
    let updates = store.vm_updates(&vm.id).await?;
    assert_eq!(updates.len(), 3);
    assert!(updates[0].id < updates[1].id, "oldest first");
    Ok(())
}

async fn an_update_is_refused_unless_the_vm_is_at_rest(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let mut new = pgtest1("pgtest1", ["a", "b"], "00:50:56:00:00:01");
    new.spec.vcpu = 8;
    #[track_caller]
    fn refused(result: Result<ProtectedVm, StoreError>, says: &str) {
        match result {
            Err(StoreError::Refused(message)) => {
                assert!(message.contains(says), "`{message}` should say `{says}`")
            }
            other => panic!("expected a refusal saying `{says}`, got {other:?}"),
        }
    }

    let run = store
        .create_run(&vm.id, Workflow::TestFailover, None)
        .await?;
    refused(
        update(store, &vm.id, &new, &[], "[]").await,
        &format!("run {} (test_failover) is pending", run.id),
    );
    store
        .set_run_state(&run.id, RunState::Stuck, Some("undo failed"))
        .await?;
    refused(update(store, &vm.id, &new, &[], "[]").await, "is stuck");
    store
        .set_run_state(&run.id, RunState::Abandoned, None)
        .await?;
    store
        .set_vm_state(&vm.id, VmState::TestFailedOver, Some(&"vm-test".into()))
        .await?;
    refused(
        update(store, &vm.id, &new, &[], "[]").await,
        "it is test_failed_over",
    );
    store
        .set_vm_state(&vm.id, VmState::ReadyForFailover, None)
        .await?;
    // The name is the VM's identity.
    let renamed = pgtest1("pgtest2", ["a", "b"], "00:50:56:00:00:01");
    refused(
        update(store, &vm.id, &renamed, &[], "[]").await,
        "name is its identity",
    );
    assert!(matches!(
        update(store, &"no-such-vm".into(), &new, &[], "[]").await,
        Err(StoreError::NotFound { .. })
    ));
    // None of it changed anything.
    assert_eq!(store.vm("pgtest1").await?.expect("kept").spec.vcpu, 4);
    assert!(store.vm_updates(&vm.id).await?.is_empty());
    // At rest, it is updated.
    assert_eq!(update(store, &vm.id, &new, &[], "[]").await?.spec.vcpu, 8);
    Ok(())
}

async fn a_refused_update_changes_nothing(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    register(store, "other", ["c", "d"], "00:50:56:00:00:02").await?;
    let before = store.vm("pgtest1").await?;
    // Another VM's MAC, another VM's replica, two boot disks: the database refuses each
    // mid-way, after the VM's parts were deleted, and the transaction takes it all back.
    let taken_mac = pgtest1("pgtest1", ["a", "b"], "00:50:56:00:00:02");
    assert_constraint(
        update(store, &vm.id, &taken_mac, &[], "[]").await,
        "nics_mac_key",
    );
    let taken_replica = pgtest1("pgtest1", ["a", "d"], "00:50:56:00:00:01");
    assert_constraint(
        update(store, &vm.id, &taken_replica, &[], "[]").await,
        "replica_volumes_pkey",
    );
    let mut two_boots = pgtest1("pgtest1", ["a", "b"], "00:50:56:00:00:01");
    two_boots.spec.vcpu = 2;
    two_boots.disks[1].is_boot = true;
    assert_constraint(
        update(store, &vm.id, &two_boots, &[], "[]").await,
        "disks_one_boot_per_vm",
    );
    assert_eq!(store.vm("pgtest1").await?, before);
    assert!(store.vm_updates(&vm.id).await?.is_empty());
    Ok(())
}

async fn two_volumes_never_share_a_device_path(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    registered(store).await?;
    let at = |path: &str, device: i64| Attachment {
        vm_id: Some("vm-oma".into()),
        device_id: Some(device),
        device_path: Some(path.into()),
        seen_at: None,
    };
    store
        .record_attachment(&"a".into(), &at("/dev/disk/by-id/virtio-a", 1))
        .await?;
    assert_constraint(
        store
            .record_attachment(&"b".into(), &at("/dev/disk/by-id/virtio-a", 2))
            .await,
        "replica_volumes_one_path",
    );
    assert_eq!(
        store
            .replica_at_path(&"vm-oma".into(), "/dev/disk/by-id/virtio-a")
            .await?
            .as_ref()
            .map(|id| id.as_str()),
        Some("a")
    );
    store
        .record_attachment(&"b".into(), &at("/dev/disk/by-id/virtio-b", 2))
        .await?;
    let vm = store.vm("pgtest1").await?.expect("vm");
    assert_eq!(
        vm.disks[1].attachment.device_path.as_deref(),
        Some("/dev/disk/by-id/virtio-b")
    );
    assert!(vm.disks[1].attachment.seen_at.is_some());
    // Detached: no path, no VM.
    let gone = Attachment {
        vm_id: None,
        device_id: None,
        device_path: None,
        seen_at: None,
    };
    store.record_attachment(&"a".into(), &gone).await?;
    assert!(matches!(
        store.record_attachment(&"nope".into(), &gone).await,
        Err(StoreError::NotFound { .. })
    ));
    Ok(())
}

async fn volume_ops_are_idempotent_by_key_and_listed_until_finished(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let new = NewVolumeOp {
        idempotency_key: "run-1/attach/vol-a".into(),
        kind: "attach".into(),
        vm_id: Some("vm-test".into()),
        volume_id: Some("vol-a".into()),
        request: r#"{"device_id":1}"#.into(),
        ..Default::default()
    };
    let (op, created) = store.begin_op(&new).await?;
    assert!(created);
    assert_eq!(op.state, OpState::Pending);
    let (again, created_again) = store.begin_op(&new).await?;
    assert!(!created_again);
    assert_eq!(again.id, op.id);
    store.op_submitted(&op.id, &"job-1".into(), None).await?;
    let pending = store.unfinished_ops().await?;
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].job_id.as_ref().map(|id| id.as_str()),
        Some("job-1")
    );
    assert_eq!(pending[0].state, OpState::Submitted);
    store
        .op_succeeded(&op.id, r#"{"deviceid":1}"#, None)
        .await?;
    assert!(store.unfinished_ops().await?.is_empty());
    let done = store.op_by_key(&new.idempotency_key).await?.expect("op");
    assert_eq!(done.state, OpState::Succeeded);
    assert_eq!(done.result.as_deref(), Some(r#"{"deviceid":1}"#));
    let (failed, _) = store
        .begin_op(&NewVolumeOp {
            idempotency_key: "k2".into(),
            kind: "detach".into(),
            request: "{}".into(),
            ..Default::default()
        })
        .await?;
    store.op_failed(&failed.id, "boom").await?;
    assert_eq!(
        store.op(&failed.id).await?.expect("op").error.as_deref(),
        Some("boom")
    );
    Ok(())
}

async fn stale_fencing_generations_are_refused(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    store.check_fence(&"run-1".into(), 1).await?;
    store.check_fence(&"run-1".into(), 1).await?;
    store.check_fence(&"run-1".into(), 3).await?;
    match store.check_fence(&"run-1".into(), 2).await {
        Err(StoreError::StaleFence {
            generation,
            current,
            ..
        }) => assert_eq!((generation, current), (2, 3)),
        other => panic!("expected a stale fence, got {other:?}"),
    }
    store.check_fence(&"run-2".into(), 1).await?;
    Ok(())
}

async fn volumes_ferry_created_are_told_apart_from_replicas(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    store
        .record_created_volume(
            &"clone-1".into(),
            "clone",
            Some(&"snap-1".into()),
            Some(&"run-1".into()),
        )
        .await?;
    store
        .record_created_volume(
            &"clone-1".into(),
            "clone",
            Some(&"snap-1".into()),
            Some(&"run-1".into()),
        )
        .await?;
    assert!(store.is_created_volume(&"clone-1".into()).await?);
    assert!(!store.is_created_volume(&"replica-1".into()).await?);
    store.mark_created_volume_deleted(&"clone-1".into()).await?;
    assert!(!store.is_created_volume(&"clone-1".into()).await?);
    Ok(())
}

fn step(position: i64, state: StepState) -> StepRecord {
    StepRecord {
        position,
        name: format!("step-{position}"),
        state,
        attempts: 1,
        output: Some(format!("{{\"n\":{position}}}")),
        error: None,
        started_at: Some(1),
        finished_at: None,
        undo_started_at: None,
        undo_finished_at: None,
    }
}

async fn a_worker_that_lost_its_lease_is_fenced_off(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let run = store
        .create_run(&vm.id, Workflow::TestFailover, None)
        .await?;
    assert_eq!(
        store.claimable_runs("worker-a").await?,
        vec![run.id.clone()]
    );
    // Worker A takes the run, with a lease that has already run out.
    let a = store
        .acquire_run(&run.id, "worker-a", -1)
        .await?
        .expect("free");
    assert_eq!(a, 1);
    store
        .put_step(&run.id, a, &step(0, StepState::Running))
        .await?;
    // Worker B takes it over: the generation rises, and A can no longer write.
    let b = store
        .acquire_run(&run.id, "worker-b", 60_000)
        .await?
        .expect("expired");
    assert_eq!(b, 2);
    assert!(
        store.claimable_runs("worker-a").await?.is_empty(),
        "B holds a live lease"
    );
    assert_eq!(
        store.claimable_runs("worker-b").await?,
        vec![run.id.clone()],
        "B, restarted under its name, takes its run back at once"
    );
    assert_eq!(
        store.runs_held_by_others("worker-a").await?,
        vec![run.id.clone()]
    );
    assert!(store.runs_held_by_others("worker-b").await?.is_empty());
    assert_eq!(store.acquire_run(&run.id, "worker-c", 60_000).await?, None);
    for result in [
        store.put_step(&run.id, a, &step(0, StepState::Done)).await,
        store
            .set_run_state_fenced(&run.id, a, RunState::Running, None)
            .await,
        store.renew_run(&run.id, "worker-a", a, 60_000).await,
    ] {
        assert!(
            matches!(result, Err(StoreError::Fenced { generation: 1, .. })),
            "{result:?}"
        );
    }
    assert_eq!(store.steps(&run.id).await?[0].state, StepState::Running);
    store
        .put_step(&run.id, b, &step(0, StepState::Done))
        .await?;
    store.renew_run(&run.id, "worker-b", b, 60_000).await?;
    store
        .set_run_state_fenced(&run.id, b, RunState::Done, None)
        .await?;
    // An ended run is nobody's to take.
    assert_eq!(store.acquire_run(&run.id, "worker-b", 60_000).await?, None);
    assert!(store.claimable_runs("worker-b").await?.is_empty());
    // Cancellation is a flag the worker reads.
    let next = store.create_run(&vm.id, Workflow::Cleanup, None).await?;
    assert!(!next.cancel_requested);
    store.request_cancel(&next.id).await?;
    assert!(store.run(&next.id).await?.expect("run").cancel_requested);
    Ok(())
}

async fn steps_and_events_are_recorded_in_order(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let run = store
        .create_run(&vm.id, Workflow::TestFailover, Some("replica"))
        .await?;
    store.set_run_plan(&run.id, r#"{"boot":"a"}"#).await?;
    let g = store
        .acquire_run(&run.id, "w", 60_000)
        .await?
        .expect("free");
    store
        .put_step(&run.id, g, &step(1, StepState::Running))
        .await?;
    store
        .put_step(&run.id, g, &step(0, StepState::Done))
        .await?;
    let mut failed = step(1, StepState::Failed);
    failed.error = Some("boom".into());
    failed.attempts = 3;
    store.put_step(&run.id, g, &failed).await?;
    let steps = store.steps(&run.id).await?;
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].name, "step-0");
    assert_eq!(steps[1].state, StepState::Failed);
    assert_eq!(steps[1].attempts, 3);
    assert_eq!(steps[1].error.as_deref(), Some("boom"));
    // An undo's own times are kept beside the action's.
    let mut undone = steps[0].clone();
    undone.state = StepState::Undone;
    undone.finished_at = Some(2);
    undone.undo_started_at = Some(1_700_000_000_000);
    undone.undo_finished_at = Some(1_700_000_000_250);
    store.put_step(&run.id, g, &undone).await?;
    assert_eq!(store.steps(&run.id).await?[0], undone);
    store
        .add_event(&run.id, "info", Some("step-0"), "started", None)
        .await?;
    store
        .add_event(
            &run.id,
            "error",
            Some("step-1"),
            "failed: boom",
            Some(r#"{"job":"j"}"#),
        )
        .await?;
    let events = store.events(&run.id).await?;
    assert_eq!(
        events
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec!["started", "failed: boom"]
    );
    assert_eq!(
        store.run(&run.id).await?.expect("run").plan.as_deref(),
        Some(r#"{"boot":"a"}"#)
    );
    Ok(())
}

async fn runs_are_listed_newest_first_with_their_operations(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    appliance(store).await?;
    let a = register(store, "vm-a", ["a1", "a2"], "00:50:56:00:00:0a").await?;
    let b = register(store, "vm-b", ["b1", "b2"], "00:50:56:00:00:0b").await?;
    let first = store
        .create_run(&a.id, Workflow::TestFailover, Some("replica"))
        .await?;
    store.set_run_state(&first.id, RunState::Done, None).await?;
    let second = store.create_run(&a.id, Workflow::Cleanup, None).await?;
    let other = store
        .create_run(&b.id, Workflow::TestFailover, Some("clone"))
        .await?;
    let ids = |runs: Vec<store::Run>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.runs(None, 10).await?),
        [other.id.clone(), second.id.clone(), first.id.clone()]
    );
    assert_eq!(
        ids(store.runs(Some(&a.id), 10).await?),
        [second.id.clone(), first.id.clone()]
    );
    assert_eq!(ids(store.runs(None, 1).await?), vec![other.id.clone()]);
    assert!(store.runs(Some(&"no-such-vm".into()), 10).await?.is_empty());
    assert_eq!(
        store.run_counts().await?,
        [(RunState::Done, 1), (RunState::Pending, 2)]
    );

    for (key, run) in [("k1", &second.id), ("k2", &other.id), ("k3", &second.id)] {
        store
            .begin_op(&store::NewVolumeOp {
                idempotency_key: key.into(),
                kind: "attach".into(),
                request: "{}".into(),
                run_id: Some(run.clone()),
                ..Default::default()
            })
            .await?;
    }
    let keys = store
        .ops_for_run(&second.id)
        .await?
        .into_iter()
        .map(|op| op.idempotency_key)
        .collect::<Vec<_>>();
    assert_eq!(keys, ["k1", "k3"]);
    Ok(())
}

async fn runs_are_found_by_the_start_of_their_id_among_all(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let mut made = Vec::new();
    for _ in 0..3 {
        let run = store
            .create_run(&vm.id, Workflow::TestFailover, None)
            .await?;
        store.set_run_state(&run.id, RunState::Done, None).await?;
        made.push(run.id);
    }
    let ids = |runs: Vec<store::Run>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let oldest = made[0].as_str();
    // The oldest, by the start of its id, though newer runs fill a page of one.
    assert_eq!(
        ids(store.runs_by_id_prefix(&oldest[..30], 1).await?),
        [made[0].clone()]
    );
    assert_eq!(
        ids(store
            .runs_by_id_prefix(&oldest[..30].to_uppercase(), 1)
            .await?),
        [made[0].clone()],
        "in any case"
    );
    assert_eq!(
        ids(store.runs_by_id_prefix(oldest, 5).await?),
        [made[0].clone()]
    );
    // Ids made one after the other share their start (their time): all, newest first.
    let shared: String =
        made.iter()
            .map(|id| id.as_str())
            .fold(oldest.to_string(), |common, id| {
                common
                    .chars()
                    .zip(id.chars())
                    .take_while(|(a, b)| a == b)
                    .map(|(a, _)| a)
                    .collect()
            });
    assert!(!shared.is_empty());
    assert_eq!(
        ids(store.runs_by_id_prefix(&shared, 5).await?),
        [made[2].clone(), made[1].clone(), made[0].clone()]
    );
    assert_eq!(
        ids(store.runs_by_id_prefix(&shared, 2).await?),
        [made[2].clone(), made[1].clone()]
    );
    // Pattern characters are themselves.
    for pattern in [
        "%",
        "_",
        "\\",
        &format!("{}%", &oldest[..8]),
        &format!("{}_", &oldest[..7]),
    ] {
        assert!(
            store.runs_by_id_prefix(pattern, 5).await?.is_empty(),
            "`{pattern}` matched"
        );
    }
    Ok(())
}

async fn a_wait_is_recorded_on_the_run_and_cleared_when_it_ends(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let run = store
        .create_run(&vm.id, Workflow::TestFailover, Some("replica"))
        .await?;
    let g = store
        .acquire_run(&run.id, "w", 60_000)
        .await?
        .expect("free");
    store
        .set_run_waiting(&run.id, g, Some((1234, "CloudStack: cannot connect")))
        .await?;
    let waiting = store.run(&run.id).await?.expect("the run");
    assert_eq!(waiting.waiting_since, Some(1234));
    assert_eq!(
        waiting.waiting_for.as_deref(),
        Some("CloudStack: cannot connect")
    );
    assert!(
        store.set_run_waiting(&run.id, g - 1, None).await.is_err(),
        "a stale generation may not clear it"
    );
    store.set_run_waiting(&run.id, g, None).await?;
    let cleared = store.run(&run.id).await?.expect("the run");
    assert_eq!((cleared.waiting_since, cleared.waiting_for), (None, None));
    // A run that ends while it waits (a process stopped mid-wait) no longer waits.
    store
        .set_run_waiting(&run.id, g, Some((1, "CloudStack: timed out")))
        .await?;
    store
        .set_run_state_fenced(&run.id, g, RunState::Unwound, Some("boom"))
        .await?;
    let ended = store.run(&run.id).await?.expect("the run");
    assert_eq!((ended.waiting_since, ended.waiting_for), (None, None));
    Ok(())
}

async fn a_steps_usual_duration_comes_from_its_recent_runs(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    // Three test failovers whose step-0 took 10, 20 and 30 s (the last most recent),
    // one whose step-0 failed, and a cleanup whose step-0 took 99 s.
    for (workflow, state, took) in [
        (Workflow::TestFailover, StepState::Done, 10_000),
        (Workflow::TestFailover, StepState::Done, 20_000),
        (Workflow::TestFailover, StepState::Failed, 77_000),
        (Workflow::Cleanup, StepState::Done, 99_000),
        (Workflow::TestFailover, StepState::Done, 30_000),
    ] {
        let run = store.create_run(&vm.id, workflow, None).await?;
        let g = store
            .acquire_run(&run.id, "w", 60_000)
            .await?
            .expect("free");
        let started = store::now_ms();
        let mut record = step(0, state);
        record.started_at = Some(started);
        record.finished_at = Some(started + took);
        store.put_step(&run.id, g, &record).await?;
        store
            .set_run_state_fenced(&run.id, g, RunState::Done, None)
            .await?;
    }
    assert_eq!(
        store
            .recent_step_durations(Workflow::TestFailover, "step-0", 10)
            .await?,
        [30_000, 20_000, 10_000]
    );
    assert_eq!(
        store
            .recent_step_durations(Workflow::TestFailover, "step-0", 2)
            .await?,
        [30_000, 20_000]
    );
    assert!(
        store
            .recent_step_durations(Workflow::Rollback, "step-0", 10)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn a_worker_name_is_held_by_one_process_at_a_time(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    assert_eq!(store.worker_process("w").await?, None);
    store.register_worker("w", "host-a", 11).await?;
    let held = store.worker_process("w").await?.expect("recorded");
    assert_eq!((held.host.as_str(), held.pid), ("host-a", 11));
    assert!(store.worker_heartbeat("w", "host-a", 11).await?);
    // A successor takes the name over; the old process's heartbeat and release no
    // longer touch it.
    store.register_worker("w", "host-b", 22).await?;
    assert!(!store.worker_heartbeat("w", "host-a", 11).await?);
    store.unregister_worker("w", "host-a", 11).await?;
    assert_eq!(store.worker_process("w").await?.map(|p| p.pid), Some(22));
    store.unregister_worker("w", "host-b", 22).await?;
    assert_eq!(store.worker_process("w").await?, None);
    Ok(())
}

async fn a_diverged_replica_keeps_its_first_mark_until_a_resync_is_recorded(
    fx: &Fixture,
) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let [boot, data] = [&vm.disks[0], &vm.disks[1]].map(|d| d.disk.replica_volume_id.clone());
    assert!(vm.disks.iter().all(|d| d.diverged.is_none()));
    let run: ids::RunId = "run-1".into();

    assert!(
        store
            .mark_diverged(&data, Some(&run), "its snapshot was deleted")
            .await?
    );
    // A second finding does not move the moment it stopped being trusted.
    assert!(!store.mark_diverged(&data, None, "something else").await?);
    let vm = store.vm("pgtest1").await?.expect("registered");
    let d = vm
        .disks
        .iter()
        .find(|d| d.disk.replica_volume_id == data)
        .expect("disk");
    let mark = d.diverged.as_ref().expect("marked");
    assert_eq!(mark.reason, "its snapshot was deleted");
    assert_eq!(mark.run_id.as_ref(), Some(&run));
    assert!(
        vm.disks
            .iter()
            .find(|d| d.disk.replica_volume_id == boot)
            .expect("boot")
            .diverged
            .is_none()
    );
    assert_eq!(
        store.diverged_counts().await?,
        vec![("pgtest1".to_string(), 1)]
    );
    assert!(
        store
            .mark_diverged(&"no-such-volume".into(), None, "x")
            .await
            .is_err(),
        "only a registered replica can be marked"
    );

    // A resync is recorded for the replicas named that are diverged and the VM's own.
    let cleared = store
        .record_resync(&vm.id, &[boot.clone(), data.clone()])
        .await?;
    assert_eq!(cleared, vec![data.clone()]);
    let vm = store.vm("pgtest1").await?.expect("registered");
    let d = vm
        .disks
        .iter()
        .find(|d| d.disk.replica_volume_id == data)
        .expect("disk");
    assert!(d.diverged.is_none());
    assert!(d.resynced_at.is_some(), "the resync is kept as history");
    assert!(store.diverged_counts().await?.is_empty());

    // An update of the definition is no resync: a replica it keeps keeps its mark and
    // its history; a replica it replaces takes both with it.
    assert!(
        store
            .mark_diverged(&data, Some(&run), "drift again")
            .await?
    );
    let same = pgtest1("pgtest1", ["a", "b"], "00:50:56:00:00:01");
    let updated = update(store, &vm.id, &same, &[], "[]").await?;
    let d = updated
        .disks
        .iter()
        .find(|d| d.disk.replica_volume_id == data)
        .expect("disk");
    assert_eq!(
        d.diverged.as_ref().map(|m| m.reason.as_str()),
        Some("drift again")
    );
    assert!(d.resynced_at.is_some());
    let replaced = pgtest1("pgtest1", ["a", "z"], "00:50:56:00:00:01");
    let updated = update(store, &vm.id, &replaced, &[], "[]").await?;
    assert!(updated.disks.iter().all(|d| d.diverged.is_none()));
    assert!(store.diverged_counts().await?.is_empty());
    Ok(())
}

fn plan(name: &str, definition: &str, members: &[(&ProtectedVm, i64)]) -> NewPlan {
    NewPlan {
        name: name.into(),
        definition: definition.into(),
        digest: format!("digest of {definition}"),
        members: members
            .iter()
            .map(|(vm, tier)| (vm.id.clone(), *tier))
            .collect(),
    }
}

async fn a_plan_round_trips_and_its_name_is_unique(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let db = registered(store).await?;
    let web = register(store, "web1", ["c", "d"], "00:50:56:00:00:02").await?;
    let added = store
        .add_plan(&plan("shop", "v1", &[(&web, 1), (&db, 0)]))
        .await?;
    assert_eq!(added.name, "shop");
    assert_eq!(added.definition, "v1");
    let members: Vec<(&str, i64)> = added
        .members
        .iter()
        .map(|m| (m.vm_name.as_str(), m.tier))
        .collect();
    assert_eq!(members, [("pgtest1", 0), ("web1", 1)], "by tier");
    assert_constraint(
        store.add_plan(&plan("shop", "v1", &[(&db, 0)])).await,
        "plans_one_name",
    );
    // A VM is in a plan once.
    assert_constraint(
        store
            .add_plan(&plan("twice", "v1", &[(&db, 0), (&db, 1)]))
            .await,
        "plan_vms_pkey",
    );
    assert!(store.plan("twice").await?.is_none(), "nothing written");

    let updated = store.update_plan(&plan("shop", "v2", &[(&db, 0)])).await?;
    assert_eq!(updated.id, added.id, "an update keeps the plan");
    assert_eq!(updated.digest, "digest of v2");
    assert_eq!(updated.members.len(), 1);
    assert!(updated.updated_at >= added.updated_at);
    assert_eq!(store.plans_of_vm(&db.id).await?, ["shop"]);
    assert!(store.plans_of_vm(&web.id).await?.is_empty());
    assert!(matches!(
        store.update_plan(&plan("nope", "v1", &[])).await,
        Err(StoreError::NotFound { .. })
    ));

    store.remove_plan("shop").await?;
    assert!(store.plan("shop").await?.is_none());
    assert!(store.plans().await?.is_empty());
    assert!(matches!(
        store.remove_plan("shop").await,
        Err(StoreError::NotFound { .. })
    ));
    // The name is free again.
    store.add_plan(&plan("shop", "v3", &[(&web, 0)])).await?;
    assert_eq!(store.plans().await?.len(), 1);
    Ok(())
}

async fn a_vm_a_plan_names_cannot_be_removed(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let db = registered(store).await?;
    store.add_plan(&plan("shop", "v1", &[(&db, 0)])).await?;
    match store.remove_vm("pgtest1").await {
        Err(StoreError::Refused(message)) => {
            assert!(message.contains("shop"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(store.vm("pgtest1").await?.is_some(), "still registered");
    store.remove_plan("shop").await?;
    store.remove_vm("pgtest1").await?;
    Ok(())
}

async fn a_plan_run_moves_only_from_where_it_was_read(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let db = registered(store).await?;
    let web = register(store, "web1", ["c", "d"], "00:50:56:00:00:02").await?;
    let plan = store
        .add_plan(&plan("shop", "v1", &[(&db, 0), (&web, 1)]))
        .await?;
    let new = NewPlanRun {
        plan_id: plan.id.clone(),
        workflow: Workflow::TestFailover,
        definition: "v1".into(),
        digest: plan.digest.clone(),
        vms: vec![(db.id.clone(), 0), (web.id.clone(), 1)],
        skipped: Vec::new(),
    };
    let run = store.create_plan_run(&new).await?;
    assert_eq!(run.plan_name, "shop");
    assert_eq!(run.state, PlanRunState::Pending);
    let states: Vec<(&str, i64, PlanVmState)> = run
        .vms
        .iter()
        .map(|v| (v.vm_name.as_str(), v.tier, v.state))
        .collect();
    assert_eq!(
        states,
        [
            ("pgtest1", 0, PlanVmState::Waiting),
            ("web1", 1, PlanVmState::Waiting)
        ]
    );
    // One active run per plan.
    assert_constraint(
        store.create_plan_run(&new).await,
        "plan_runs_one_active_per_plan",
    );
    assert_eq!(store.active_plan_runs().await?.len(), 1);

    // A move from where it was read: the first wins, a second from there does not.
    let pending = (PlanRunState::Pending, 0);
    let running = (PlanRunState::Running, 0);
    assert!(
        store
            .move_plan_run(&run.id, 0, pending, running, None)
            .await?
    );
    assert!(
        !store
            .move_plan_run(&run.id, 0, pending, running, None)
            .await?
    );
    // Tier 0 began with the move.
    let read = store.plan_run(&run.id).await?.expect("plan run");
    assert_eq!(read.tiers.len(), 1, "{:?}", read.tiers);
    assert_eq!((read.tiers[0].tier, read.tiers[0].ended_at), (0, None));

    // A VM: starting (before its run is asked for), then running with its run.
    let mut vm = run.vms[0].clone();
    vm.state = PlanVmState::Starting;
    vm.started_at = Some(1);
    assert!(
        store
            .set_plan_run_vm(&run.id, 0, &vm, PlanVmState::Waiting)
            .await?
    );
    assert!(
        !store
            .set_plan_run_vm(&run.id, 0, &vm, PlanVmState::Waiting)
            .await?,
        "not from a state it is no longer in"
    );
    let vm_run = store
        .create_run(&db.id, Workflow::TestFailover, Some("replica"))
        .await?;
    vm.state = PlanVmState::Ready;
    vm.run_id = Some(vm_run.id.clone());
    vm.ready_at = Some(2);
    vm.readiness = Some("{\"ready\":true}".into());
    assert!(
        store
            .set_plan_run_vm(&run.id, 0, &vm, PlanVmState::Starting)
            .await?
    );
    let read = store.plan_run(&run.id).await?.expect("plan run");
    assert_eq!(read.vms[0], vm);
    assert_eq!(read.state, PlanRunState::Running);
    assert!(read.finished_at.is_none());

    // It ends: finished, not active, the last done drill of the plan; a new one may start.
    assert!(
        store
            .move_plan_run(&run.id, 0, running, (PlanRunState::Done, 1), None)
            .await?
    );
    let done = store.plan_run(&run.id).await?.expect("plan run");
    assert_eq!((done.state, done.tier), (PlanRunState::Done, 1));
    assert!(done.finished_at.is_some());
    assert!(store.active_plan_runs().await?.is_empty());
    assert_eq!(
        store
            .last_done_plan_run(&plan.id, Workflow::TestFailover)
            .await?
            .map(|r| r.id),
        Some(run.id.clone())
    );
    assert!(
        store
            .last_done_plan_run(&plan.id, Workflow::LiveFailover)
            .await?
            .is_none()
    );
    let next = store.create_plan_run(&new).await?;
    match store.remove_plan("shop").await {
        Err(StoreError::Refused(message)) => assert!(message.contains(&next.id), "{message}"),
        other => panic!("expected a refusal while a run is active, got {other:?}"),
    }
    let of_plan: Vec<String> = store
        .plan_runs_of(&plan.id, 10)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(of_plan, [next.id, run.id], "newest first");
    // A stopped run keeps its reason.
    assert!(
        store
            .move_plan_run(
                &of_plan[0],
                0,
                pending,
                (PlanRunState::Stopped, 0),
                Some("web1 did not become ready")
            )
            .await?
    );
    let stopped = store.plan_run(&of_plan[0]).await?.expect("plan run");
    assert_eq!(stopped.error.as_deref(), Some("web1 did not become ready"));
    Ok(())
}

async fn a_plan_run_is_driven_under_a_lease_and_its_tiers_timed(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let db = registered(store).await?;
    let web = register(store, "web1", ["c", "d"], "00:50:56:00:00:02").await?;
    let plan = store
        .add_plan(&plan("shop", "v1", &[(&db, 0), (&web, 1)]))
        .await?;
    let run = store
        .create_plan_run(&NewPlanRun {
            plan_id: plan.id.clone(),
            workflow: Workflow::Cleanup,
            definition: "v1".into(),
            digest: plan.digest.clone(),
            vms: vec![(db.id.clone(), 0), (web.id.clone(), 1)],
            skipped: vec![(web.id.clone(), "web1 never failed over".into())],
        })
        .await?;
    // Skipped from the start, with why.
    let web_vm = run.vms.iter().find(|v| v.vm_name == "web1").expect("web1");
    assert_eq!(web_vm.state, PlanVmState::Skipped);
    assert_eq!(web_vm.detail.as_deref(), Some("web1 never failed over"));
    assert_eq!((run.generation, run.lease_owner.as_deref()), (0, None));

    // worker-a takes the lease; worker-b cannot while it lives.
    assert_eq!(
        store.claimable_plan_runs("worker-b").await?,
        std::slice::from_ref(&run.id)
    );
    let a1 = store.acquire_plan_run(&run.id, "worker-a", 60_000).await?;
    assert_eq!(a1, Some(1));
    assert_eq!(
        store.acquire_plan_run(&run.id, "worker-b", 60_000).await?,
        None
    );
    assert!(store.claimable_plan_runs("worker-b").await?.is_empty());
    assert_eq!(
        store.claimable_plan_runs("worker-a").await?,
        std::slice::from_ref(&run.id)
    );
    let held = store.plan_run(&run.id).await?.expect("plan run");
    assert_eq!(
        (held.lease_owner.as_deref(), held.generation),
        (Some("worker-a"), 1)
    );
    // A write at a generation that is not the plan run's moves nothing.
    let (pending, running) = ((PlanRunState::Pending, 0), (PlanRunState::Running, 0));
    assert!(
        !store
            .move_plan_run(&run.id, 0, pending, running, None)
            .await?
    );
    assert!(
        store
            .move_plan_run(&run.id, 1, pending, running, None)
            .await?
    );

    // worker-a restarted under its name takes it back at once; the old holder is
    // fenced off.
    let a2 = store.acquire_plan_run(&run.id, "worker-a", 60_000).await?;
    assert_eq!(a2, Some(2));
    store.renew_plan_run(&run.id, "worker-a", 2, 60_000).await?;
    assert!(matches!(
        store.renew_plan_run(&run.id, "worker-a", 1, 60_000).await,
        Err(StoreError::Fenced { generation: 1, .. })
    ));
    let mut vm = run.vms[0].clone();
    vm.state = PlanVmState::Starting;
    assert!(
        !store
            .set_plan_run_vm(&run.id, 1, &vm, PlanVmState::Waiting)
            .await?,
        "a driver that was taken over writes no VM"
    );
    assert!(
        store
            .set_plan_run_vm(&run.id, 2, &vm, PlanVmState::Waiting)
            .await?
    );

    // Its lease runs out: worker-b takes it, and worker-a is fenced off.
    assert_eq!(
        store.acquire_plan_run(&run.id, "worker-a", -1).await?,
        Some(3)
    );
    assert_eq!(
        store.acquire_plan_run(&run.id, "worker-b", 60_000).await?,
        Some(4)
    );
    assert!(matches!(
        store.renew_plan_run(&run.id, "worker-a", 3, 60_000).await,
        Err(StoreError::Fenced { .. })
    ));

    // Tiers: the move to tier 1 ends tier 0 and begins tier 1; the stop ends tier 1.
    assert!(
        store
            .move_plan_run(&run.id, 4, running, (PlanRunState::Running, 1), None)
            .await?
    );
    let moved = store.plan_run(&run.id).await?.expect("plan run");
    let tiers: Vec<(i64, bool)> = moved
        .tiers
        .iter()
        .map(|t| (t.tier, t.ended_at.is_some()))
        .collect();
    assert_eq!(tiers, [(0, true), (1, false)]);
    assert!(moved.tiers[0].ended_at >= Some(moved.tiers[0].started_at));
    assert!(moved.tiers[1].started_at >= moved.tiers[0].ended_at.unwrap_or(i64::MAX));
    assert!(
        store
            .move_plan_run(
                &run.id,
                4,
                (PlanRunState::Running, 1),
                (PlanRunState::Stopped, 1),
                Some("stopped")
            )
            .await?
    );
    let stopped = store.plan_run(&run.id).await?.expect("plan run");
    assert!(
        stopped.tiers.iter().all(|t| t.ended_at.is_some()),
        "{:?}",
        stopped.tiers
    );

    // Released, and an ended plan run is nobody's to take.
    store.release_plan_run(&run.id, 4).await?;
    let released = store.plan_run(&run.id).await?.expect("plan run");
    assert_eq!(released.lease_owner, None);
    assert_eq!(
        store.acquire_plan_run(&run.id, "worker-b", 60_000).await?,
        None
    );
    assert!(store.claimable_plan_runs("worker-b").await?.is_empty());
    Ok(())
}

/// The evidence report says who asked for a run and which workers executed it: the
/// requester as the client said it, and every worker that took the lease, in order —
/// kept after the run ends, when the lease itself is cleared.
async fn who_asked_for_a_run_and_which_workers_ran_it_are_kept(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let run = store
        .create_run(&vm.id, Workflow::TestFailover, None)
        .await?;
    assert_eq!(run.requested_by, None);
    assert!(run.workers.is_empty());
    store.set_run_requested_by(&run.id, "alice@ops-1").await?;
    // Worker A, again A (a restart under its name: not repeated), B (a takeover, by a
    // name that ends like A's: told apart), A again, then C.
    let a = store.acquire_run(&run.id, "w-a", -1).await?.expect("free");
    store
        .acquire_run(&run.id, "w-a", -1)
        .await?
        .expect("its own");
    store
        .acquire_run(&run.id, "ow-a", -1)
        .await?
        .expect("expired");
    store
        .acquire_run(&run.id, "w-a", -1)
        .await?
        .expect("expired");
    let last = store
        .acquire_run(&run.id, "w-b", 60_000)
        .await?
        .expect("expired");
    assert!(last > a);
    store
        .set_run_state_fenced(&run.id, last, RunState::Done, None)
        .await?;
    store.release_run(&run.id, last).await?;
    let run = store.run(&run.id).await?.expect("run");
    assert_eq!(run.requested_by.as_deref(), Some("alice@ops-1"));
    assert_eq!(run.lease_owner, None, "the lease is cleared when it ends");
    assert_eq!(run.workers, ["w-a", "ow-a", "w-a", "w-b"]);
    assert!(matches!(
        store
            .set_run_requested_by(&ids::RunId::from("no-such-run"), "bob@x")
            .await,
        Err(StoreError::NotFound { .. })
    ));

    let plan = store.add_plan(&plan("shop", "v1", &[(&vm, 0)])).await?;
    let plan_run = store
        .create_plan_run(&NewPlanRun {
            plan_id: plan.id.clone(),
            workflow: Workflow::TestFailover,
            definition: "v1".into(),
            digest: plan.digest.clone(),
            vms: vec![(vm.id.clone(), 0)],
            skipped: Vec::new(),
        })
        .await?;
    assert_eq!(plan_run.requested_by, None);
    store
        .set_plan_run_requested_by(&plan_run.id, "carol@desk")
        .await?;
    store
        .acquire_plan_run(&plan_run.id, "p-1", -1)
        .await?
        .expect("free");
    store
        .acquire_plan_run(&plan_run.id, "p-1", -1)
        .await?
        .expect("its own");
    store
        .acquire_plan_run(&plan_run.id, "p-2", 60_000)
        .await?
        .expect("expired");
    let plan_run = store.plan_run(&plan_run.id).await?.expect("plan run");
    assert_eq!(plan_run.requested_by.as_deref(), Some("carol@desk"));
    assert_eq!(plan_run.workers, ["p-1", "p-2"]);
    Ok(())
}

/// Each hook a plan run runs is recorded when it starts and when it ends; a hook
/// started again (a plan run resumed after a crash) counts the attempt; the plan's own
/// hooks (no tier) come first, then each tier's, `before` before `after`.
async fn a_plan_runs_hooks_are_recorded_as_they_start_and_end(fx: &Fixture) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let plan = store.add_plan(&plan("shop", "v1", &[(&vm, 0)])).await?;
    let run = store
        .create_plan_run(&NewPlanRun {
            plan_id: plan.id.clone(),
            workflow: Workflow::TestFailover,
            definition: "v1".into(),
            digest: plan.digest.clone(),
            vms: vec![(vm.id.clone(), 0)],
            skipped: vec![],
        })
        .await?;
    assert!(run.hooks.is_empty());
    store
        .start_plan_run_hook(&run.id, Some(0), HookPoint::After, 1, "command `smoke`")
        .await?;
    store
        .start_plan_run_hook(&run.id, None, HookPoint::Before, 0, "command `page`")
        .await?;
    store
        .end_plan_run_hook(
            &run.id,
            None,
            HookPoint::Before,
            0,
            HookOutcome::Succeeded,
            Some("exited 0"),
        )
        .await?;
    let read = store.plan_run(&run.id).await?.expect("plan run");
    let places: Vec<_> = read
        .hooks
        .iter()
        .map(|h| (h.tier, h.point, h.position, h.outcome))
        .collect();
    assert_eq!(
        places,
        [
            (None, HookPoint::Before, 0, HookOutcome::Succeeded),
            (Some(0), HookPoint::After, 1, HookOutcome::Running),
        ]
    );
    let page = &read.hooks[0];
    assert_eq!(page.hook, "command `page`");
    assert_eq!(page.detail.as_deref(), Some("exited 0"));
    assert_eq!(page.attempts, 1);
    assert!(page.ended_at >= Some(page.started_at));
    assert_eq!(read.hooks[1].ended_at, None, "still running");

    // The smoke test's worker died while it ran; it runs again and fails.
    store
        .start_plan_run_hook(&run.id, Some(0), HookPoint::After, 1, "command `smoke`")
        .await?;
    store
        .end_plan_run_hook(
            &run.id,
            Some(0),
            HookPoint::After,
            1,
            HookOutcome::Failed,
            Some("exited with status 3"),
        )
        .await?;
    let read = store.plan_run(&run.id).await?.expect("plan run");
    let smoke = &read.hooks[1];
    assert_eq!(read.hooks.len(), 2, "the same hook, not a second row");
    assert_eq!(
        (smoke.outcome, smoke.attempts, smoke.detail.as_deref()),
        (HookOutcome::Failed, 2, Some("exited with status 3"))
    );
    assert!(smoke.ended_at.is_some());
    Ok(())
}

/// A run's plan is made from the VM as read; an update of the VM between that read and
/// the run's start would leave the run attaching the old disks and verifying against
/// them. Each of the two writes raises the VM's version and is refused when it is not
/// the one it read: a start from a replaced definition is refused, an update read
/// before a run started is refused, and of a start and an update racing from one read
/// exactly one lands — on PostgreSQL under READ COMMITTED too, where two transactions
/// really overlap.
async fn a_run_never_starts_from_a_replaced_definition_nor_an_update_lands_under_a_new_run(
    fx: &Fixture,
) -> TestResult {
    let store = &fx.store;
    let vm = registered(store).await?;
    let read = vm.version;
    let mut bigger = pgtest1("pgtest1", ["a", "b"], "00:50:56:00:00:01");
    bigger.spec.memory_mb = 16384;
    store.update_vm(&vm.id, read, &bigger, &[], "[]").await?;
    // The run planned from the first read is refused, and nothing is started.
    let refused = store
        .create_run_with_plan(&vm.id, Some(read), Workflow::TestFailover, None, Some("{}"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Refused(_))),
        "{refused:?}"
    );
    assert!(store.active_run(&vm.id).await?.is_none());
    // An update from a read made before a run started (and ended) is refused too.
    let now = store.vm_by_id(&vm.id).await?.expect("registered").version;
    assert!(now > read);
    let run = store
        .create_run_with_plan(&vm.id, Some(now), Workflow::TestFailover, None, Some("{}"))
        .await?;
    store.set_run_state(&run.id, RunState::Done, None).await?;
    let stale = store.update_vm(&vm.id, now, &bigger, &[], "[]").await;
    assert!(
        matches!(&stale, Err(StoreError::Refused(m)) if m.contains("try again")),
        "{stale:?}"
    );
    // A start and an update racing from one read: exactly one of them lands.
    for round in 0..10 {
        let read = store.vm_by_id(&vm.id).await?.expect("registered").version;
        bigger.spec.vcpu = 2 + round;
        let (started, updated) = tokio::join!(
            store.create_run_with_plan(
                &vm.id,
                Some(read),
                Workflow::TestFailover,
                None,
                Some("{}")
            ),
            store.update_vm(&vm.id, read, &bigger, &[], "[]"),
        );
        assert!(
            started.is_ok() != updated.is_ok(),
            "round {round}: started {started:?}, updated {updated:?}"
        );
        if let Ok(run) = started {
            store.set_run_state(&run.id, RunState::Done, None).await?;
        }
    }
    Ok(())
}
