use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::Index;
use store::{Attachment, Controller, Disk, DiskRecord};

use super::*;

pub(crate) const GIB: i64 = 1 << 30;

/// A disk of a protected VM, its replica on the appliance (also for the other modules'
/// tests).
pub(crate) fn disk(
    key: i64,
    controller: Controller,
    bus: i64,
    unit: i64,
    size_bytes: i64,
    is_boot: bool,
    volume_id: &str,
) -> DiskRecord {
    DiskRecord {
        id: format!("disk-{key}"),
        disk: Disk {
            device_key: key,
            controller,
            bus,
            unit,
            capacity_bytes: size_bytes,
            label: format!("Hard disk {key}"),
            is_boot,
            boot_order: None,
            replica_volume_id: volume_id.into(),
        },
        attachment: Attachment {
            vm_id: Some("appliance".into()),
            device_id: None,
            device_path: None,
            seen_at: None,
        },
        diverged: None,
        resynced_at: None,
    }
}

/// A disk on SCSI bus 0.
pub(crate) fn scsi_disk(
    key: i64,
    unit: i64,
    size_bytes: i64,
    is_boot: bool,
    volume_id: &str,
) -> DiskRecord {
    disk(
        key,
        Controller::Scsi,
        0,
        unit,
        size_bytes,
        is_boot,
        volume_id,
    )
}

/// What `listVolumes` would show if the plan had been carried out exactly.
fn exact(plan: &DevicePlan) -> Vec<(String, Option<i64>, i64)> {
    plan.disks()
        .iter()
        .map(|d| (d.volume_id.to_string(), Some(d.device_id), d.size_bytes))
        .collect()
}

/// (device key, device id) of every planned disk, in plan order.
fn keys_and_ids(plan: &DevicePlan) -> Vec<(i64, i64)> {
    plan.disks()
        .iter()
        .map(|d| (d.device_key, d.device_id))
        .collect()
}

fn messages(mismatches: &[Mismatch]) -> Vec<String> {
    mismatches.iter().map(ToString::to_string).collect()
}

const PG_ROOT: &str = "f7462ed3-0c4e-4c55-9a8b-3f1d2e6a7b01";
const PG_DATA: &str = "b16589be-5d2a-4e7f-8c3b-9a0e1f2d3c02";

fn pgtest1() -> Vec<DiskRecord> {
    vec![
        disk(2000, Controller::Scsi, 0, 0, 107 * GIB, true, PG_ROOT),
        disk(2001, Controller::Scsi, 0, 1, 10 * GIB, false, PG_DATA),
    ]
}

#[test]
fn pgtest1_boot_at_0_data_at_1() {
    let plan = DevicePlan::new(&pgtest1(), KVM_MAX_DATA_DISKS).unwrap();
    assert_eq!(keys_and_ids(&plan), [(2000, 0), (2001, 1)]);
    assert_eq!(plan.boot().volume_id, PG_ROOT);
    assert_eq!(plan.boot().size_bytes, 107 * GIB);
    assert!(plan.boot().is_boot);
    assert_eq!(plan.data()[0].volume_id, PG_DATA);
    assert_eq!(plan.data()[0].disk_id, "disk-2001");
    assert_eq!(plan.by_volume(&PG_DATA.into()).unwrap().device_id, 1);
    plan.verify(&exact(&plan)).unwrap();

    // The input order does not matter.
    let mut reversed = pgtest1();
    reversed.reverse();
    assert_eq!(
        DevicePlan::new(&reversed, KVM_MAX_DATA_DISKS).unwrap(),
        plan
    );
}

#[test]
fn pgtest1_with_the_placeholder_root_still_attached_is_refused() {
    let plan = DevicePlan::new(&pgtest1(), KVM_MAX_DATA_DISKS).unwrap();
    let observed = [
        ("placeholder-root", Some(0), 8 * GIB),
        (PG_DATA, Some(1), 10 * GIB),
    ];
    let mismatches = plan.verify(&observed).unwrap_err();
    assert_eq!(
        mismatches,
        [
            Mismatch::Missing {
                volume_id: PG_ROOT.into(),
                device_key: 2000,
                is_boot: true,
                planned_device_id: 0,
            },
            Mismatch::Unplanned {
                volume_id: "placeholder-root".into(),
                device_id: Some(0),
                size_bytes: 8 * GIB,
            },
        ]
    );
    let text = messages(&mismatches);
    assert!(text[0].contains("boot volume") && text[0].contains("device id 0 (ROOT)"));
    assert!(text[1].contains("placeholder ROOT"), "{}", text[1]);
}

/// Boot disk on SCSI bus 1 (neither first nor key 2000), and four 20 GiB data disks
/// spread over SCSI and SATA.
fn six_disks() -> Vec<DiskRecord> {
    vec![
        disk(
            16001,
            Controller::Sata,
            0,
            1,
            50 * GIB,
            false,
            "vol-sata-0-1",
        ),
        disk(
            2017,
            Controller::Scsi,
            1,
            1,
            20 * GIB,
            false,
            "vol-scsi-1-1",
        ),
        disk(
            16000,
            Controller::Sata,
            0,
            0,
            20 * GIB,
            false,
            "vol-sata-0-0",
        ),
        disk(
            2016,
            Controller::Scsi,
            1,
            0,
            100 * GIB,
            true,
            "vol-scsi-1-0",
        ),
        disk(
            2001,
            Controller::Scsi,
            0,
            1,
            20 * GIB,
            false,
            "vol-scsi-0-1",
        ),
        disk(
            2000,
            Controller::Scsi,
            0,
            0,
            20 * GIB,
            false,
            "vol-scsi-0-0",
        ),
    ]
}

#[test]
fn six_disks_boot_on_scsi_bus_1_equal_sizes_on_scsi_and_sata() {
    let plan = DevicePlan::new(&six_disks(), KVM_MAX_DATA_DISKS).unwrap();
    assert_eq!(
        keys_and_ids(&plan),
        [
            (2016, 0),
            (2000, 1),
            (2001, 2),
            (2017, 4),
            (16000, 5),
            (16001, 6)
        ]
    );
    // Each disk keeps its own volume, whatever the sizes.
    for d in plan.disks() {
        let source = six_disks()
            .into_iter()
            .find(|r| r.disk.device_key == d.device_key)
            .unwrap();
        assert_eq!(d.volume_id, source.disk.replica_volume_id);
        assert_eq!(d.size_bytes, source.disk.capacity_bytes);
    }
    plan.verify(&exact(&plan)).unwrap();

    // Two equal-size volumes on different controllers, swapped: sizes all match, and
    // it is still refused, naming both.
    let mut observed = exact(&plan);
    let scsi = observed.iter().position(|o| o.0 == "vol-scsi-0-1").unwrap();
    let sata = observed.iter().position(|o| o.0 == "vol-sata-0-0").unwrap();
    observed[scsi].1 = Some(5);
    observed[sata].1 = Some(2);
    let mismatches = plan.verify(&observed).unwrap_err();
    assert_eq!(
        mismatches,
        [
            Mismatch::WrongDeviceId {
                volume_id: "vol-scsi-0-1".into(),
                device_key: 2001,
                is_boot: false,
                planned_device_id: 2,
                observed_device_id: Some(5),
            },
            Mismatch::WrongDeviceId {
                volume_id: "vol-sata-0-0".into(),
                device_key: 16000,
                is_boot: false,
                planned_device_id: 5,
                observed_device_id: Some(2),
            },
        ]
    );
    assert_eq!(
        mismatches[0].to_string(),
        "data volume vol-scsi-0-1 (disk 2001) is at device id 5, not at its planned device id 2"
    );
}

#[test]
fn boot_volume_off_root_says_the_vm_would_not_boot() {
    let plan = DevicePlan::new(&six_disks(), KVM_MAX_DATA_DISKS).unwrap();
    let mut observed = exact(&plan);
    observed[0].1 = Some(7);
    let mismatches = plan.verify(&observed).unwrap_err();
    assert_eq!(mismatches.len(), 1);
    assert_eq!(
        mismatches[0].to_string(),
        "boot volume vol-scsi-1-0 (disk 2016) is at device id 7, not at 0 (ROOT): the VM would \
         not boot from it"
    );
}

#[test]
fn wrong_size_and_stray_volume_are_described() {
    let plan = DevicePlan::new(&pgtest1(), KVM_MAX_DATA_DISKS).unwrap();
    let observed = [
        (PG_ROOT, Some(0), 107 * GIB),
        (PG_DATA, Some(1), 11 * GIB),
        ("stray", Some(2), 5),
    ];
    let text = messages(&plan.verify(&observed).unwrap_err());
    assert_eq!(
        text,
        [
            "data volume b16589be-5d2a-4e7f-8c3b-9a0e1f2d3c02 (disk 2001) has 11 GiB \
             (11811160064 bytes), but the disk has 10 GiB (10737418240 bytes): it is not the \
             disk's replica, or it was resized",
            "volume stray (5 bytes) is attached at device id 2 but is not in the plan: only the \
             planned replica volumes may be attached",
        ]
    );
}

#[test]
fn a_volume_listed_twice_is_a_mismatch() {
    let plan = DevicePlan::new(&pgtest1(), KVM_MAX_DATA_DISKS).unwrap();
    let mut observed = exact(&plan);
    observed.push(observed[1].clone());
    assert_eq!(
        plan.verify(&observed).unwrap_err(),
        [Mismatch::ListedTwice {
            volume_id: PG_DATA.into()
        }]
    );
}

fn boot_and_data(data: usize) -> Vec<DiskRecord> {
    let mut disks = vec![disk(2000, Controller::Scsi, 0, 0, 40 * GIB, true, "boot")];
    for i in 0..data {
        let i = i as i64;
        // SCSI buses take 15 disks (unit 7 is the controller); spread over 4 buses.
        disks.push(disk(
            2001 + i,
            Controller::Scsi,
            (i + 1) / 15,
            (i + 1) % 15,
            GIB,
            false,
            &format!("data-{i}"),
        ));
    }
    disks
}

#[test]
fn five_data_disks_skip_device_id_3() {
    let plan = DevicePlan::new(&boot_and_data(5), KVM_MAX_DATA_DISKS).unwrap();
    let ids: Vec<i64> = plan.data().iter().map(|d| d.device_id).collect();
    assert_eq!(ids, [1, 2, 4, 5, 6]);
    assert_eq!(plan.boot().device_id, 0);
}

#[test]
fn thirty_two_data_disks_end_at_33_and_33_are_refused() {
    let plan = DevicePlan::new(&boot_and_data(32), KVM_MAX_DATA_DISKS).unwrap();
    let ids: Vec<i64> = plan.data().iter().map(|d| d.device_id).collect();
    let expected: Vec<i64> = [1, 2].into_iter().chain(4..=33).collect();
    assert_eq!(ids, expected);
    assert_eq!(plan.data().last().unwrap().device_id, 33);

    let err = DevicePlan::new(&boot_and_data(33), KVM_MAX_DATA_DISKS).unwrap_err();
    assert_eq!(
        err,
        PlanError::TooManyDataDisks {
            count: 33,
            limit: 32
        }
    );
    assert_eq!(
        err.to_string(),
        "the VM has 33 data disks, but the hypervisor takes at most 32 (device ids 1, 2, 4–33; \
         3 is the CD-ROM's); leave 1 data disk(s) out of the VM definition, or fail over to a \
         hypervisor that takes more"
    );
}

#[test]
fn small_limits_name_their_ids() {
    assert_eq!(data_ids(0), "none");
    assert_eq!(data_ids(2), "1, 2");
    assert_eq!(data_ids(3), "1, 2, 4");
    assert_eq!(data_ids(4), "1, 2, 4–5");
    let err = DevicePlan::new(&boot_and_data(4), 3).unwrap_err();
    assert!(err.to_string().contains("(device ids 1, 2, 4;"), "{err}");
}

#[test]
fn controllers_sort_scsi_sata_nvme_ide() {
    let disks = vec![
        disk(3000, Controller::Ide, 0, 1, GIB, false, "ide"),
        disk(31000, Controller::Nvme, 0, 0, GIB, false, "nvme"),
        disk(200, Controller::Ide, 0, 0, GIB, true, "boot"),
        disk(16000, Controller::Sata, 0, 0, GIB, false, "sata"),
        disk(2000, Controller::Scsi, 3, 0, GIB, false, "scsi"),
    ];
    let plan = DevicePlan::new(&disks, KVM_MAX_DATA_DISKS).unwrap();
    let order: Vec<(&str, i64)> = plan
        .disks()
        .iter()
        .map(|d| (d.volume_id.as_str(), d.device_id))
        .collect();
    assert_eq!(
        order,
        [
            ("boot", 0),
            ("scsi", 1),
            ("sata", 2),
            ("nvme", 4),
            ("ide", 5)
        ]
    );
}

#[test]
fn refusals_say_what_is_wrong_and_what_to_do() {
    let no_boot = vec![disk(2000, Controller::Scsi, 0, 0, GIB, false, "a")];
    let err = DevicePlan::new(&no_boot, 32).unwrap_err();
    assert_eq!(err, PlanError::NoBootDisk { disks: 1 });
    assert!(
        err.to_string()
            .contains("mark exactly one disk as the boot disk")
    );
    assert_eq!(
        DevicePlan::new(&[], 32).unwrap_err(),
        PlanError::NoBootDisk { disks: 0 }
    );

    let two_boots = vec![
        disk(2001, Controller::Scsi, 0, 1, GIB, true, "b"),
        disk(2000, Controller::Scsi, 0, 0, GIB, true, "a"),
    ];
    let err = DevicePlan::new(&two_boots, 32).unwrap_err();
    assert_eq!(
        err,
        PlanError::SeveralBootDisks {
            device_keys: vec![2000, 2001]
        }
    );
    assert!(
        err.to_string()
            .starts_with("disks 2000, 2001 are all marked as the boot disk")
    );

    let same_slot = vec![
        disk(2000, Controller::Scsi, 0, 0, GIB, true, "a"),
        disk(16001, Controller::Sata, 1, 2, GIB, false, "b"),
        disk(16000, Controller::Sata, 1, 2, GIB, false, "c"),
    ];
    let err = DevicePlan::new(&same_slot, 32).unwrap_err();
    assert_eq!(
        err,
        PlanError::DuplicateSlot {
            controller: Controller::Sata,
            bus: 1,
            unit: 2,
            first_key: 16000,
            second_key: 16001
        }
    );
    assert!(
        err.to_string()
            .starts_with("disks 16000 and 16001 both claim sata bus 1 unit 2")
    );

    // The boot disk's slot counts too.
    let boot_slot = vec![
        disk(2000, Controller::Scsi, 0, 0, GIB, true, "a"),
        disk(2001, Controller::Scsi, 0, 0, GIB, false, "b"),
    ];
    assert!(matches!(
        DevicePlan::new(&boot_slot, 32),
        Err(PlanError::DuplicateSlot { .. })
    ));

    let same_volume = vec![
        disk(2000, Controller::Scsi, 0, 0, GIB, true, "a"),
        disk(2001, Controller::Scsi, 0, 1, GIB, false, "shared"),
        disk(2002, Controller::Scsi, 0, 2, GIB, false, "shared"),
    ];
    let err = DevicePlan::new(&same_volume, 32).unwrap_err();
    assert_eq!(
        err,
        PlanError::DuplicateVolume {
            volume_id: "shared".into(),
            first_key: 2001,
            second_key: 2002
        }
    );
    assert!(
        err.to_string()
            .contains("both name replica volume shared, but each disk needs its own")
    );
}

#[test]
fn the_plan_round_trips_through_json_and_a_tampered_one_is_refused() {
    let plan = DevicePlan::new(&six_disks(), KVM_MAX_DATA_DISKS).unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["max_data_disks"], 32);
    assert_eq!(json["disks"][0]["device_id"], 0);
    assert_eq!(json["disks"][0]["controller"], "scsi");
    assert_eq!(json["disks"][3]["device_id"], 4);
    let back: DevicePlan = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, plan);

    let mut at_3 = json.clone();
    at_3["disks"][3]["device_id"] = 3.into();
    let err = serde_json::from_value::<DevicePlan>(at_3).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not follow the planning rules"),
        "{err}"
    );

    let mut swapped = json.clone();
    let (a, b) = (
        swapped["disks"][1]["volume_id"].clone(),
        swapped["disks"][2]["volume_id"].clone(),
    );
    swapped["disks"][1]["volume_id"] = b;
    swapped["disks"][2]["volume_id"] = a.clone();
    swapped["disks"][3]["volume_id"] = a;
    let err = serde_json::from_value::<DevicePlan>(swapped).unwrap_err();
    assert!(
        err.to_string().contains("both name replica volume"),
        "{err}"
    );

    let mut lower_limit = json;
    lower_limit["max_data_disks"] = 4.into();
    let err = serde_json::from_value::<DevicePlan>(lower_limit).unwrap_err();
    assert!(err.to_string().contains("takes at most 4"), "{err}");
}

#[test]
fn the_map_reads_one_line_per_disk() {
    let plan = DevicePlan::new(&pgtest1(), KVM_MAX_DATA_DISKS).unwrap();
    assert_eq!(
        plan.to_string(),
        format!(
            " 0  {PG_ROOT}  disk 2000 scsi 0:0  107 GiB (114890375168 bytes)  boot\n \
             1  {PG_DATA}  disk 2001 scsi 0:1  10 GiB (10737418240 bytes)\n"
        )
    );
}

// ---- properties ----

const CONTROLLERS: [Controller; 4] = [
    Controller::Scsi,
    Controller::Sata,
    Controller::Nvme,
    Controller::Ide,
];

/// A VM with `total` disks (one of them boot) in unique, random slots, in random input
/// order, with sizes that often repeat.
fn valid_vm(total: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<DiskRecord>> {
    let slot = (0usize..4, 0i64..4, 0i64..16);
    let size = prop_oneof![Just(10 * GIB), Just(20 * GIB), 1i64..=(1 << 40)];
    proptest::collection::btree_set(slot, total)
        .prop_flat_map(move |slots| {
            let n = slots.len();
            (
                Just(slots.into_iter().collect::<Vec<_>>()).prop_shuffle(),
                0..n,
                proptest::collection::vec(size.clone(), n),
            )
        })
        .prop_map(|(slots, boot, sizes)| {
            slots
                .into_iter()
                .zip(sizes)
                .enumerate()
                .map(|(i, ((c, bus, unit), size))| {
                    disk(
                        2000 + i as i64,
                        CONTROLLERS[c],
                        bus,
                        unit,
                        size,
                        i == boot,
                        &format!("replica-{i:02}"),
                    )
                })
                .collect()
        })
}

#[derive(Debug, Clone)]
enum Perturbation {
    /// Exchange the device ids of two volumes.
    Swap(Index, Index),
    /// A planned volume is not attached.
    Remove(Index),
    /// A volume that is not planned is attached.
    Extra { device_id: Option<i64>, size: i64 },
    /// A planned volume has another size.
    Resize(Index, i64),
}

fn perturbation() -> impl Strategy<Value = Perturbation> {
    prop_oneof![
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Perturbation::Swap(a, b)),
        any::<Index>().prop_map(Perturbation::Remove),
        (proptest::option::of(0i64..40), 1i64..=(1 << 40))
            .prop_map(|(device_id, size)| Perturbation::Extra { device_id, size }),
        (any::<Index>(), prop_oneof![-GIB..=-1, 1..=GIB])
            .prop_map(|(i, delta)| Perturbation::Resize(i, delta)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_valid_vm_is_planned_by_the_rules(disks in valid_vm(1..=33)) {
        let plan = DevicePlan::new(&disks, KVM_MAX_DATA_DISKS).unwrap();
        prop_assert_eq!(plan.disks().len(), disks.len());

        // Boot at 0, and it is the disk marked boot.
        let boot = disks.iter().find(|d| d.disk.is_boot).unwrap();
        prop_assert_eq!(plan.boot().device_id, ROOT_DEVICE_ID);
        prop_assert!(plan.boot().is_boot);
        prop_assert_eq!(&plan.boot().volume_id, &boot.disk.replica_volume_id);

        // Ids unique, never 3, data within 1..=33.
        let ids: HashSet<i64> = plan.disks().iter().map(|d| d.device_id).collect();
        prop_assert_eq!(ids.len(), disks.len());
        prop_assert!(!ids.contains(&CDROM_DEVICE_ID));
        for d in plan.data() {
            prop_assert!(!d.is_boot);
            prop_assert!((1..=33).contains(&d.device_id), "data disk at {}", d.device_id);
        }

        // Ids ascend along the (controller, bus, unit) sort, computed independently.
        let mut sorted: Vec<&DiskRecord> = disks.iter().filter(|d| !d.disk.is_boot).collect();
        sorted.sort_by_key(|d| (controller_rank(d.disk.controller), d.disk.bus, d.disk.unit));
        prop_assert_eq!(sorted.len(), plan.data().len());
        for (i, (want, got)) in sorted.iter().zip(plan.data()).enumerate() {
            prop_assert_eq!(&got.volume_id, &want.disk.replica_volume_id);
            prop_assert_eq!(got.device_id, data_device_id(i));
        }
        for pair in plan.data().windows(2) {
            prop_assert!(pair[0].device_id < pair[1].device_id);
        }

        // Each disk's volume maps to exactly one id, with the disk's own identity.
        for d in &disks {
            let entries: Vec<&PlannedDisk> = plan
                .disks()
                .iter()
                .filter(|p| p.volume_id == d.disk.replica_volume_id)
                .collect();
            prop_assert_eq!(entries.len(), 1);
            let p = entries[0];
            prop_assert_eq!(p.device_key, d.disk.device_key);
            prop_assert_eq!(&p.disk_id, &d.id);
            prop_assert_eq!(
                (p.controller, p.bus, p.unit),
                (d.disk.controller, d.disk.bus, d.disk.unit)
            );
            prop_assert_eq!(p.size_bytes, d.disk.capacity_bytes);
            prop_assert_eq!(p.is_boot, d.disk.is_boot);
        }

        // Deterministic: the input order does not matter; storage does not change it.
        let mut reversed = disks.clone();
        reversed.reverse();
        prop_assert_eq!(&DevicePlan::new(&reversed, KVM_MAX_DATA_DISKS).unwrap(), &plan);
        let json = serde_json::to_string(&plan).unwrap();
        prop_assert_eq!(&serde_json::from_str::<DevicePlan>(&json).unwrap(), &plan);
    }

    #[test]
    fn the_limit_is_enforced(disks in valid_vm(1..=40), limit in 0usize..=34) {
        let data = disks.len() - 1;
        match DevicePlan::new(&disks, limit) {
            Ok(plan) => {
                prop_assert!(data <= limit);
                if let Some(last) = plan.data().last() {
                    prop_assert_eq!(last.device_id, data_device_id(data - 1));
                    prop_assert!(last.device_id <= data_device_id(limit - 1));
                }
            }
            Err(e) => {
                prop_assert!(data > limit);
                prop_assert_eq!(e, PlanError::TooManyDataDisks { count: data, limit });
            }
        }
    }

    #[test]
    fn verify_accepts_the_exact_observation_in_any_order(
        disks in valid_vm(1..=33),
        rotate in any::<Index>(),
        reverse in any::<bool>(),
    ) {
        let plan = DevicePlan::new(&disks, KVM_MAX_DATA_DISKS).unwrap();
        let mut observed = exact(&plan);
        let by = rotate.index(observed.len());
        observed.rotate_left(by);
        if reverse {
            observed.reverse();
        }
        prop_assert_eq!(plan.verify(&observed), Ok(()));
    }

    #[test]
    fn verify_rejects_any_single_perturbation(
        disks in valid_vm(2..=33),
        change in perturbation(),
    ) {
        let plan = DevicePlan::new(&disks, KVM_MAX_DATA_DISKS).unwrap();
        let mut observed = exact(&plan);
        let n = observed.len();
        let mismatches = match change {
            Perturbation::Swap(a, b) => {
                let i = a.index(n);
                // Any other volume: never the same one.
                let j = (i + 1 + b.index(n - 1)) % n;
                let (id_i, id_j) = (observed[i].1, observed[j].1);
                observed[i].1 = id_j;
                observed[j].1 = id_i;
                let m = plan.verify(&observed).unwrap_err();
                prop_assert_eq!(m.len(), 2, "{:?}", m);
                for (mismatch, k) in m.iter().zip(if i < j { [i, j] } else { [j, i] }) {
                    let is_wrong_id = matches!(
                        mismatch,
                        Mismatch::WrongDeviceId { volume_id, .. } if *volume_id == observed[k].0
                    );
                    prop_assert!(is_wrong_id, "{:?}", mismatch);
                }
                m
            }
            Perturbation::Remove(a) => {
                let (volume, _, _) = observed.remove(a.index(n));
                let m = plan.verify(&observed).unwrap_err();
                let is_missing = matches!(
                    m.as_slice(),
                    [Mismatch::Missing { volume_id, .. }] if *volume_id == volume
                );
                prop_assert!(is_missing, "{:?}", m);
                m
            }
            Perturbation::Extra { device_id, size } => {
                observed.insert(n / 2, ("not-a-replica".to_string(), device_id, size));
                let m = plan.verify(&observed).unwrap_err();
                prop_assert_eq!(
                    &m,
                    &vec![Mismatch::Unplanned {
                        volume_id: "not-a-replica".into(),
                        device_id,
                        size_bytes: size,
                    }]
                );
                m
            }
            Perturbation::Resize(a, delta) => {
                let i = a.index(n);
                observed[i].2 += delta;
                let m = plan.verify(&observed).unwrap_err();
                let is_wrong_size = matches!(
                    m.as_slice(),
                    [Mismatch::WrongSize { volume_id, observed_size_bytes, .. }]
                        if *volume_id == observed[i].0 && *observed_size_bytes == observed[i].2
                );
                prop_assert!(is_wrong_size, "{:?}", m);
                m
            }
        };
        // Every mismatch is described in words.
        for m in &mismatches {
            prop_assert!(m.to_string().contains("volume "));
        }
    }
}
