//! Test failover (replica mode) and cleanup end to end against cloudsim for VMs with 1,
//! 2, 5, 12 and 32 disks, and for a UEFI (secure boot) VM with two NICs.
//!
//! Each VM gets its own world: the appliance `oma` holds exactly that VM's replica
//! volumes (at most 32, KVM's limit of data disks), a SQLite store, the in-process
//! volume daemon journaling into it. The definitions are built in code so that the
//! boot disk is neither first in the list nor key 2000, the data disks are spread over
//! SCSI, SATA, NVMe (and IDE) controllers on two buses, listed out of order, and disks
//! of equal size sit on different controllers. The expected device ids are computed
//! here from the rules (boot at 0; data by (SCSI < SATA < NVMe < IDE, bus, unit) at 1,
//! 2, 4, 5, …, never 3), independently of the planner.

use ::ids::VolumeId;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cloudsim::world::ids;
use common::{Rig, RigOptions, TestResult, appliance_world, bare_rig, device_path};
use inventory::{DiskDefinition, NicDefinition, SpecDefinition, VmDefinition};
use store::{Controller, Firmware, GuestOs, GuestPrep, VmState};
use workflows::{cleanup, test_failover};

const GIB: i64 = 1 << 30;

// ---------------------------------------------------------------------------------
// The rig: one cloudsim world, store, volume daemon and engine per VM.
// ---------------------------------------------------------------------------------

/// Starts a world whose appliance `oma` holds exactly `def`'s replica volumes, and
/// registers `def`.
async fn rig_for(def: &VmDefinition) -> anyhow::Result<Rig> {
    let volumes: Vec<(String, String, i64)> = def
        .disks
        .iter()
        .map(|d| {
            (
                d.replica_volume_id.clone(),
                format!("{}-disk-{}", def.name, d.key),
                d.capacity_gib.expect("sizes in GiB"),
            )
        })
        .collect();
    assert!(volumes.len() <= 32, "the appliance takes at most 32 disks");
    let rig = bare_rig(RigOptions {
        world: appliance_world(Some(ids::OMA_ROOT), volumes),
        ..RigOptions::default()
    })
    .await?;
    rig.register(def).await?;
    Ok(rig)
}

/// Each volume's simulated content generation (cloudsim `GET {admin}/volumes`).
async fn generations(rig: &Rig) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(rig
        .admin("volumes")
        .await?
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| {
            (
                v["id"].as_str().expect("an id").to_string(),
                v["generation"].as_u64().expect("a generation"),
            )
        })
        .collect())
}

/// The appliance's guest sees the volume: the by-id link resolves to a block device
/// whose `sys/block/<dev>/serial` is the volume's serial.
fn guest_sees(root: &Path, volume_id: &str) -> bool {
    let serial = cloudstack::volume_serial(&VolumeId::from(volume_id));
    let link = root.join("dev/disk/by-id").join(format!("virtio-{serial}"));
    let Ok(target) = std::fs::read_link(&link) else {
        return false;
    };
    let Some(dev) = target.file_name() else {
        return false;
    };
    root.join("dev").join(dev).exists()
        && std::fs::read_to_string(root.join("sys/block").join(dev).join("serial"))
            .is_ok_and(|s| s.trim() == serial)
}

// ---------------------------------------------------------------------------------
// The VM definitions.
// ---------------------------------------------------------------------------------

/// A volume id whose serial (its first 20 hex digits) is unique per (tag, disk).
fn volume_id(tag: u32, disk: usize) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012}",
        0xd15c_0000u32 + tag * 0x100 + disk as u32,
        disk
    )
}

/// VMware-style device keys: SCSI 2000 + 16·bus + unit, SATA 16000 + 30·bus + unit,
/// NVMe 31000 + 15·bus + unit, IDE 3000 + 2·bus + unit.
fn device_key(controller: Controller, bus: i64, unit: i64) -> i64 {
    match controller {
        Controller::Scsi => 2000 + 16 * bus + unit,
        Controller::Sata => 16000 + 30 * bus + unit,
        Controller::Nvme => 31000 + 15 * bus + unit,
        Controller::Ide => 3000 + 2 * bus + unit,
    }
}

/// The slots of data disks on `controller`, buses interleaved. SCSI bus 1 unit 0 is
/// the boot disk's; SCSI unit 7 is the controller's own (VMware).
fn slots(controller: Controller) -> Vec<(i64, i64)> {
    let (bus0, bus1): (Vec<i64>, Vec<i64>) = match controller {
        Controller::Scsi => (
            (0..16).filter(|u| *u != 7).collect(),
            (1..16).filter(|u| *u != 7).collect(),
        ),
        Controller::Sata => ((0..30).collect(), (0..30).collect()),
        Controller::Nvme => ((0..15).collect(), (0..15).collect()),
        Controller::Ide => (vec![1], vec![0, 1]),
    };
    // SATA lists bus 1 first, so that neither list order nor key order is the plan's.
    let (first, second) = if controller == Controller::Sata {
        ((1, bus1), (0, bus0))
    } else {
        ((0, bus0), (1, bus1))
    };
    let mut out = Vec::new();
    for i in 0..first.1.len().max(second.1.len()) {
        if let Some(u) = first.1.get(i) {
            out.push((first.0, *u));
        }
        if let Some(u) = second.1.get(i) {
            out.push((second.0, *u));
        }
    }
    out
}

/// How the boot disk is found by registration.
#[derive(Clone, Copy)]
enum BootMark {
    /// `boot = true` on the boot disk.
    Marked,
    /// `boot_order = 1` on the boot disk, `boot_order = 2` on key 2000 if any.
    Order,
}

/// A definition with `n` disks: the boot disk on SCSI bus 1 unit 0 (key 2016), the
/// data disks round-robin over SCSI, NVMe, SATA on buses 0 and 1 (the last one on IDE
/// when there are 11 data disks or more), listed in a scrambled order with the boot disk second.
/// Sizes follow a repeating pattern: the first two data disks (SCSI and NVMe) are of
/// equal size, and so is the boot disk.
fn definition(n: usize, mark: BootMark) -> VmDefinition {
    assert!(n >= 1);
    let tag = n as u32;
    const CYCLE: [i64; 8] = [4, 4, 9, 1, 4, 16, 9, 2];
    let size = |i: usize| 1 + CYCLE[i % CYCLE.len()] + (n as i64 % 7);
    let order = [Controller::Scsi, Controller::Nvme, Controller::Sata];
    let mut next: BTreeMap<u8, std::vec::IntoIter<(i64, i64)>> = BTreeMap::new();
    let mut data = Vec::new();
    for i in 0..n - 1 {
        let controller = if n >= 12 && i == n - 2 {
            Controller::Ide
        } else {
            order[i % order.len()]
        };
        let (bus, unit) = next
            .entry(rank(controller))
            .or_insert_with(|| slots(controller).into_iter())
            .next()
            .expect("enough slots");
        let key = device_key(controller, bus, unit);
        data.push(DiskDefinition {
            key,
            controller,
            bus,
            unit,
            capacity_bytes: None,
            capacity_gib: Some(size(i)),
            label: Some(format!("Hard disk {}", i + 2)),
            boot: false,
            boot_order: match mark {
                BootMark::Order if key == 2000 => Some(2),
                _ => None,
            },
            replica_volume_id: volume_id(tag, i + 1),
        });
    }
    // A deterministic scramble of the data disks' list order.
    data.sort_by_key(|d| (d.key * 2_654_435_761) % 1_000_003);
    if let Some(pos) = data.iter().position(|d| d.key == 2000) {
        // Key 2000 first in the list: the classic trap for "boot = first disk".
        let d = data.remove(pos);
        data.insert(0, d);
    }
    let boot = DiskDefinition {
        key: 2016,
        controller: Controller::Scsi,
        bus: 1,
        unit: 0,
        capacity_bytes: None,
        capacity_gib: Some(if n == 1 { 30 } else { size(0) }),
        label: Some("Hard disk 1".into()),
        boot: matches!(mark, BootMark::Marked),
        boot_order: match mark {
            BootMark::Order => Some(1),
            BootMark::Marked => None,
        },
        replica_volume_id: volume_id(tag, 0),
    };
    data.insert(data.len().min(1), boot);
    VmDefinition {
        name: format!("disks{n}"),
        source_id: format!("5029a4d2-8b1e-4c1a-9f3e-{n:012}"),
        appliance: "oma".into(),
        spec: SpecDefinition {
            vcpu: 2,
            memory_mb: 2048,
            cpu_speed_mhz: 2000,
            firmware: Firmware::Bios,
            secure_boot: false,
            guest_os: GuestOs::Linux,
            guest_prep: GuestPrep::Auto,
        },
        nics: vec![NicDefinition {
            mac: format!("00:50:56:8a:40:{n:02x}"),
            source_network: "VM Network".into(),
            test_network: "test".into(),
            test_ip: None,
            production_network: "production".into(),
            production_ip: None,
        }],
        disks: data,
    }
}

/// The UEFI, secure-boot VM with two NICs: boot disk on NVMe (key 31000, marked,
/// second in the list), two 20 GiB data disks on SCSI and SATA.
fn uefi_definition() -> VmDefinition {
    let tag = 0x77;
    let disk = |i: usize, controller, bus, unit, gib, boot| DiskDefinition {
        key: device_key(controller, bus, unit),
        controller,
        bus,
        unit,
        capacity_bytes: None,
        capacity_gib: Some(gib),
        label: Some(format!("Hard disk {}", i + 1)),
        boot,
        boot_order: None,
        replica_volume_id: volume_id(tag, i),
    };
    VmDefinition {
        name: "uefi2nic".into(),
        source_id: "5029a4d2-8b1e-4c1a-9f3e-00000000uefi".into(),
        appliance: "oma".into(),
        spec: SpecDefinition {
            vcpu: 2,
            memory_mb: 4096,
            cpu_speed_mhz: 2000,
            firmware: Firmware::Uefi,
            secure_boot: true,
            guest_os: GuestOs::Linux,
            guest_prep: GuestPrep::Auto,
        },
        nics: vec![
            NicDefinition {
                mac: "00:50:56:8a:33:01".into(),
                source_network: "VM Network".into(),
                test_network: "test".into(),
                test_ip: Some("10.10.0.50".into()),
                production_network: "production".into(),
                production_ip: None,
            },
            NicDefinition {
                mac: "00:50:56:8a:33:02".into(),
                source_network: "Backup Network".into(),
                test_network: "production".into(),
                test_ip: None,
                production_network: "test".into(),
                production_ip: None,
            },
        ],
        disks: vec![
            disk(1, Controller::Sata, 0, 0, 20, false),
            disk(0, Controller::Nvme, 0, 0, 40, true),
            disk(2, Controller::Scsi, 0, 0, 20, false),
        ],
    }
}

// ---------------------------------------------------------------------------------
// The expectations, from the rules.
// ---------------------------------------------------------------------------------

fn rank(controller: Controller) -> u8 {
    match controller {
        Controller::Scsi => 0,
        Controller::Sata => 1,
        Controller::Nvme => 2,
        Controller::Ide => 3,
    }
}

/// Replica volume id → (device id, is boot), computed from the rules.
fn expected_devices(def: &VmDefinition) -> BTreeMap<String, (i64, bool)> {
    let boot = match def.disks.iter().filter(|d| d.boot).collect::<Vec<_>>()[..] {
        [one] => one,
        [] => def
            .disks
            .iter()
            .filter(|d| d.boot_order.is_some())
            .min_by_key(|d| d.boot_order)
            .expect("a boot disk"),
        _ => panic!("several disks marked boot"),
    };
    let mut data: Vec<&DiskDefinition> = def.disks.iter().filter(|d| d.key != boot.key).collect();
    data.sort_by_key(|d| (rank(d.controller), d.bus, d.unit));
    let mut map = BTreeMap::new();
    map.insert(boot.replica_volume_id.clone(), (0, true));
    let mut id = 1;
    for d in data {
        if id == 3 {
            id += 1;
        }
        map.insert(d.replica_volume_id.clone(), (id, false));
        id += 1;
    }
    map
}

/// What the definition must be for the drill to prove anything.
fn check_shape(def: &VmDefinition) {
    let n = def.disks.len();
    let boot_index = inventory::boot_disk(&def.disks).expect("a boot disk");
    let boot = &def.disks[boot_index];
    assert_ne!(boot.key, 2000, "the boot disk is not key 2000");
    if n >= 2 {
        assert_ne!(boot_index, 0, "the boot disk is not first in the list");
    }
    if n >= 3 {
        let equal_on_different_controllers = def.disks.iter().any(|a| {
            def.disks.iter().any(|b| {
                a.key != b.key
                    && a.key != boot.key
                    && b.key != boot.key
                    && a.controller != b.controller
                    && a.capacity_gib == b.capacity_gib
            })
        });
        assert!(
            equal_on_different_controllers,
            "two equal-size data disks on different controllers"
        );
        let controllers: BTreeSet<u8> = def
            .disks
            .iter()
            .filter(|d| d.key != boot.key)
            .map(|d| rank(d.controller))
            .collect();
        assert!(controllers.len() >= 2, "data disks on several controllers");
    }
    let ids: BTreeSet<&str> = def
        .disks
        .iter()
        .map(|d| d.replica_volume_id.as_str())
        .collect();
    assert_eq!(ids.len(), n, "a distinct replica per disk");
}

// ---------------------------------------------------------------------------------
// The drill.
// ---------------------------------------------------------------------------------

/// Test failover and cleanup of `def` in a world of its own, checked against cloudsim's
/// state after each; `extra` checks the target VM while the drill is on.
async fn drill(
    def: &VmDefinition,
    extra: impl AsyncFnOnce(&Rig, &cloudstack::VirtualMachine) -> TestResult,
) -> TestResult {
    check_shape(def);
    let expected = expected_devices(def);
    let rig = rig_for(def).await?;
    let name = def.name.as_str();
    let replicas: Vec<String> = expected.keys().cloned().collect();
    let before = generations(&rig).await?;
    let oma_before = rig.volumes_on(ids::APPLIANCE_OMA).await?;
    assert_eq!(oma_before.len(), def.disks.len() + 1, "root + replicas");

    // --- Test failover. ---
    let run = test_failover::start(&rig.env, name).await?;
    rig.done(&run, test_failover::saga()).await?;
    let vms = rig.test_vms_of(name).await?;
    assert_eq!(vms.len(), 1, "{name}: one test VM");
    let target = &vms[0];
    assert_eq!(target.state, "Running", "{name}");

    let on_target: BTreeMap<String, (i64, String, i64)> = rig
        .volumes_on(&target.id)
        .await?
        .into_iter()
        .map(|v| {
            (
                v.id.to_string(),
                (
                    v.deviceid.expect("attached volumes have a device id"),
                    v.volume_type.clone(),
                    v.size,
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (i64, String, i64)> = def
        .disks
        .iter()
        .map(|d| {
            let (device, boot) = expected[&d.replica_volume_id];
            (
                d.replica_volume_id.clone(),
                (
                    device,
                    if boot { "ROOT" } else { "DATADISK" }.to_string(),
                    d.capacity_gib.unwrap() * GIB,
                ),
            )
        })
        .collect();
    assert_eq!(
        on_target, want,
        "{name}: every replica at its planned device id, the boot replica ROOT at 0, nothing else"
    );
    let used: BTreeSet<i64> = on_target.values().map(|(d, _, _)| *d).collect();
    assert_eq!(used.len(), def.disks.len(), "{name}: distinct device ids");
    assert!(!used.contains(&3), "{name}: device id 3 is the CD-ROM's");
    let top = def.disks.len() as i64 - 1 + i64::from(def.disks.len() >= 4);
    assert_eq!(used.last(), Some(&top), "{name}: the highest device id");
    let appliance_now: BTreeSet<String> = rig
        .volumes_on(ids::APPLIANCE_OMA)
        .await?
        .into_iter()
        .map(|v| v.id.into_string())
        .collect();
    for id in &replicas {
        assert!(
            !appliance_now.contains(id),
            "{name}: {id} left the appliance"
        );
        assert!(
            !guest_sees(rig.root.path(), id.as_ref()),
            "{name}: the appliance no longer sees {id}"
        );
    }
    let vm = rig.env.store.vm(name).await?.expect("registered");
    assert_eq!(vm.state, VmState::TestFailedOver);
    assert_eq!(
        vm.target_vm_id.as_ref().map(|id| id.as_str()),
        Some(target.id.as_str())
    );
    for d in &vm.disks {
        assert_eq!(
            (
                d.attachment.vm_id.as_ref().map(|id| id.as_str()),
                d.attachment.device_id
            ),
            (
                Some(target.id.as_str()),
                Some(expected[d.disk.replica_volume_id.as_str()].0)
            ),
            "{name}: the store agrees on {}",
            d.disk.replica_volume_id
        );
    }
    let map = rig.step_output(&run, "verify").await?;
    let recorded: BTreeMap<String, (i64, bool)> = map["device_map"]
        .as_array()
        .expect("a device map")
        .iter()
        .map(|e| {
            (
                e["volume_id"].as_str().unwrap().to_string(),
                (
                    e["device_id"].as_i64().unwrap(),
                    e["boot"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(recorded, expected, "{name}: the recorded device map");
    extra(&rig, target).await?;

    // --- Cleanup. ---
    let run = cleanup::start(&rig.env, name).await?;
    rig.done(&run, cleanup::saga()).await?;
    let detach = rig.step_output(&run, "detach-from-test-vm").await?;
    assert_eq!(
        detach["unexpected"],
        serde_json::json!([]),
        "{name}: nothing unexpected"
    );
    assert_eq!(
        detach["detached"].as_array().map(Vec::len),
        Some(def.disks.len()),
        "{name}: every replica detached from the test VM"
    );

    // --- At rest. ---
    let vm = rig.env.store.vm(name).await?.expect("registered");
    assert_eq!(vm.state, VmState::ReadyForFailover);
    assert_eq!(vm.target_vm_id, None);
    assert_eq!(vm.disks.len(), def.disks.len());
    let on_appliance: BTreeMap<VolumeId, cloudstack::Volume> = rig
        .volumes_on(ids::APPLIANCE_OMA)
        .await?
        .into_iter()
        .map(|v| (v.id.clone(), v))
        .collect();
    assert_eq!(
        on_appliance.len(),
        def.disks.len() + 1,
        "{name}: the appliance holds its root and every replica, nothing else"
    );
    let mut appliance_ids = BTreeSet::new();
    for d in &vm.disks {
        let id = &d.disk.replica_volume_id;
        let v = on_appliance
            .get(id)
            .unwrap_or_else(|| panic!("{name}: replica {id} is back on the appliance"));
        assert_eq!(v.volume_type, "DATADISK", "{name}: {id}");
        assert_ne!(v.deviceid, Some(3), "{name}: {id}");
        assert!(appliance_ids.insert(v.deviceid), "{name}: {id} device id");
        assert_eq!(
            d.attachment.vm_id.as_ref().map(|id| id.as_str()),
            Some(ids::APPLIANCE_OMA),
            "{name}: the store has {id} on the appliance"
        );
        assert_eq!(
            d.attachment.device_id, v.deviceid,
            "{name}: the store agrees on the device id of {id}"
        );
        assert_eq!(
            d.attachment.device_path.as_deref(),
            Some(device_path(id).as_str()),
            "{name}: the device path of {id} is re-correlated"
        );
        assert!(
            guest_sees(rig.root.path(), id.as_ref()),
            "{name}: the appliance sees {id}"
        );
        assert!(
            rig.env
                .cloud
                .list_snapshots(Some(&VolumeId::from(id)), None)
                .await?
                .is_empty(),
            "{name}: snapshots of {id} left"
        );
    }
    assert!(
        rig.env.cloud.list_snapshots(None, None).await?.is_empty(),
        "{name}: no snapshot at all"
    );
    let after = generations(&rig).await?;
    for id in &replicas {
        assert_eq!(
            after.get(id),
            before.get(id),
            "{name}: {id} reverted to its snapshot"
        );
    }
    assert!(
        rig.test_vms_of(name).await?.is_empty(),
        "{name}: the test VM is gone"
    );
    for v in rig.all_volumes().await? {
        assert!(
            !rig.created(&v.id).await?,
            "{name}: volume {} that ferry created is still alive",
            v.id
        );
    }
    Ok(())
}

async fn nothing_more(_: &Rig, _: &cloudstack::VirtualMachine) -> TestResult {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_disk() -> TestResult {
    drill(&definition(1, BootMark::Marked), nothing_more).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_disks_boot_by_boot_order_after_key_2000() -> TestResult {
    let def = definition(2, BootMark::Order);
    assert_eq!(def.disks[0].key, 2000, "key 2000 first, not the boot disk");
    drill(&def, nothing_more).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_disks_cross_device_id_3() -> TestResult {
    let def = definition(5, BootMark::Marked);
    let expected = expected_devices(&def);
    let ids: BTreeSet<i64> = expected.values().map(|(d, _)| *d).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2, 4, 5]));
    drill(&def, nothing_more).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_disks_on_four_controller_types() -> TestResult {
    let def = definition(12, BootMark::Order);
    let controllers: BTreeSet<u8> = def.disks.iter().map(|d| rank(d.controller)).collect();
    assert_eq!(controllers.len(), 4, "SCSI, SATA, NVMe and IDE");
    drill(&def, nothing_more).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_disks_fill_the_appliance() -> TestResult {
    let def = definition(32, BootMark::Marked);
    let expected = expected_devices(&def);
    let ids: Vec<i64> = expected
        .values()
        .map(|(d, _)| *d)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let want: Vec<i64> = (0..=32).filter(|d| *d != 3).collect();
    assert_eq!(ids, want, "31 data disks: 1, 2, 4..=32");
    drill(&def, nothing_more).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uefi_secure_boot_vm_with_two_nics() -> TestResult {
    let def = uefi_definition();
    drill(
        &def,
        async |rig: &Rig, target: &cloudstack::VirtualMachine| {
            let listed = rig
                .env
                .cloud
                .list_virtual_machines(&cloudstack::VmFilter {
                    id: Some(target.id.clone()),
                    ..Default::default()
                })
                .await?;
            let [vm] = listed.as_slice() else {
                panic!("one target VM, got {listed:?}");
            };
            assert_eq!(vm.boottype.as_deref(), Some("UEFI"));
            assert_eq!(vm.bootmode.as_deref(), Some("SECURE"));
            assert_eq!(vm.nic.len(), 2, "{:?}", vm.nic);
            let by_mac: BTreeMap<&str, &cloudstack::Nic> = vm
                .nic
                .iter()
                .map(|n| (n.macaddress.as_deref().unwrap_or_default(), n))
                .collect();
            let first = by_mac
                .get("00:50:56:8a:33:01")
                .unwrap_or_else(|| panic!("the first MAC arrived: {:?}", vm.nic));
            assert_eq!(first.networkid, ids::NETWORK_TEST);
            assert_eq!(first.ipaddress.as_deref(), Some("10.10.0.50"));
            let second = by_mac
                .get("00:50:56:8a:33:02")
                .unwrap_or_else(|| panic!("the second MAC arrived: {:?}", vm.nic));
            assert_eq!(second.networkid, ids::NETWORK_PRODUCTION);
            Ok(())
        },
    )
    .await
}
