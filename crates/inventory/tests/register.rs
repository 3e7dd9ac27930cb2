//! Registration against cloudsim (port 0) and a SQLite store: the job sheet's
//! pgtest1, a six-disk VM whose boot disk is on a second controller, and every
//! refusal with the field it names — and proof that a refusal wrote nothing.

mod common;

use std::path::PathBuf;

use cloudsim::World;
use cloudsim::world::{ApplianceDef, VolumeDef, ids};
use common::{Env, GIB, TestResult, assert_problem, env, example};
use inventory::{Format, Limits, Problem, RegisterError, VmDefinition, register};
use store::Controller;

impl Env {
    /// Registration must fail; returns its problems after checking nothing was written.
    async fn refused(&self, def: &VmDefinition) -> anyhow::Result<Vec<Problem>> {
        let before = self.store.vms().await?;
        match register(&self.store, &self.cloud, def, Limits::default()).await {
            Err(RegisterError::Invalid(problems)) => {
                // Disks and replica volumes cannot exist without their VM row (foreign
                // keys), so an unchanged list of VMs means nothing was written.
                assert_eq!(
                    self.store.vms().await?,
                    before,
                    "a refused registration wrote something"
                );
                Ok(problems)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_documented_example_registers_pgtest1() -> TestResult {
    let env = env(World::default()).await?;
    let vm = register(&env.store, &env.cloud, &example()?, Limits::default()).await?;
    assert_eq!(vm.name, "pgtest1");
    let disks: Vec<(i64, bool, i64, &str)> = vm
        .disks
        .iter()
        .map(|d| {
            (
                d.disk.device_key,
                d.disk.is_boot,
                d.disk.capacity_bytes / GIB,
                d.disk.replica_volume_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        disks,
        vec![
            (2000, true, 107, ids::PGTEST1_DISK_2000),
            (2001, false, 10, ids::PGTEST1_DISK_2001)
        ]
    );
    // Where CloudStack had them at registration.
    assert_eq!(
        vm.disks[0].attachment.vm_id.as_ref().map(|id| id.as_str()),
        Some(ids::APPLIANCE_OMA)
    );
    assert_eq!(vm.disks[0].attachment.device_id, Some(1));
    assert_eq!(vm.disks[1].attachment.device_id, Some(2));
    // Network names resolved to CloudStack ids.
    assert_eq!(vm.nics[0].test_network_id, ids::NETWORK_TEST);
    assert_eq!(vm.nics[0].production_network_id, ids::NETWORK_PRODUCTION);
    assert_eq!(vm.nics[0].production_ip.as_deref(), Some("10.20.0.21"));
    assert_eq!(env.store.vm("pgtest1").await?, Some(vm));
    Ok(())
}

#[test]
fn json_and_toml_definitions_are_the_same_format() -> TestResult {
    let toml = example()?;
    let json = serde_json::json!({
        "name": "pgtest1",
        "source_id": "5029a4d2-8b1e-4c1a-9f3e-2d7c6b5a4e01",
        "appliance": "oma",
        "spec": {"vcpu": 4, "memory_mb": 8192, "cpu_speed_mhz": 2000, "firmware": "bios",
                 "secure_boot": false, "guest_os": "linux", "guest_prep": "auto"},
        "nics": [{"mac": "00:50:56:8a:11:01", "source_network": "VM Network", "test_network": "test",
                  "production_network": "production", "production_ip": "10.20.0.21"}],
        "disks": [
            {"key": 2000, "controller": "scsi", "bus": 0, "unit": 0, "capacity_gib": 107,
             "label": "Hard disk 1", "boot": true, "replica_volume_id": ids::PGTEST1_DISK_2000},
            {"key": 2001, "controller": "scsi", "bus": 0, "unit": 1, "capacity_gib": 10,
             "label": "Hard disk 2", "replica_volume_id": ids::PGTEST1_DISK_2001}
        ]
    });
    let parsed = VmDefinition::parse(&json.to_string(), Format::of_path("vm.json".as_ref()))?;
    assert_eq!(parsed, toml);
    Ok(())
}

#[test]
fn unknown_fields_and_bad_values_are_parse_errors_that_name_them() {
    let typo = "name = \"x\"\nsource_id = \"s\"\nappliance = \"oma\"\nbogus = 1\n[spec]\nvcpu = 1\nmemory_mb = 512\nfirmware = \"bios\"\nguest_os = \"linux\"\n";
    let err = VmDefinition::parse(typo, Format::Toml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus"), "{err}");
    let bad_firmware = typo
        .replace("bogus = 1\n", "")
        .replace("\"bios\"", "\"efi\"");
    let err = VmDefinition::parse(&bad_firmware, Format::Toml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("efi") && err.contains("uefi"), "{err}");
}

/// Six disks: the boot disk is scsi1:0 (key 2016, found by boot order, not marked),
/// and two 20 GiB data disks sit on different controllers. The replicas are attached
/// to the appliance in an order unrelated to the disks'.
#[tokio::test]
async fn a_six_disk_vm_with_its_boot_disk_on_a_second_controller() -> TestResult {
    let volumes = [
        ("a6f0c1d2-0001-4e00-8000-000000000001", "data-2002", 30),
        ("b6f0c1d2-0002-4e00-8000-000000000002", "data-16000", 20),
        ("c6f0c1d2-0003-4e00-8000-000000000003", "boot-2016", 80),
        ("d6f0c1d2-0004-4e00-8000-000000000004", "data-2001", 20),
        ("e6f0c1d2-0005-4e00-8000-000000000005", "data-3000", 40),
        ("f6f0c1d2-0006-4e00-8000-000000000006", "data-2000", 50),
    ];
    let world = World {
        appliances: vec![ApplianceDef {
            id: Some(ids::APPLIANCE_OMA.into()),
            name: "oma".into(),
            zone: None,
            root_volume_id: None,
            volumes: volumes
                .iter()
                .map(|(id, name, gib)| VolumeDef {
                    id: Some(id.to_string()),
                    name: name.to_string(),
                    size_gb: *gib,
                    zone: None,
                })
                .collect(),
        }],
        ..World::default()
    };
    let env = env(world).await?;
    let volume = |name: &str| volumes.iter().find(|v| v.1 == name).expect("volume").0;
    let disk = |key: i64,
                controller: &str,
                bus: i64,
                unit: i64,
                gib: i64,
                boot_order: Option<i64>,
                vol: &str| {
        format!(
            "[[disks]]\nkey = {key}\ncontroller = \"{controller}\"\nbus = {bus}\nunit = {unit}\ncapacity_gib = {gib}\n{}replica_volume_id = \"{}\"\n",
            boot_order
                .map(|o| format!("boot_order = {o}\n"))
                .unwrap_or_default(),
            volume(vol)
        )
    };
    let text = [
        "name = \"sql01\"\nsource_id = \"vm-42\"\nappliance = \"oma\"\n[spec]\nvcpu = 8\nmemory_mb = 32768\nfirmware = \"uefi\"\nsecure_boot = true\nguest_os = \"windows\"\n".to_string(),
        "[[nics]]\nmac = \"00:50:56:8a:22:01\"\nsource_network = \"DB\"\ntest_network = \"test\"\nproduction_network = \"production\"\n".to_string(),
        disk(2000, "scsi", 0, 0, 50, Some(3), "data-2000"),
        disk(2001, "scsi", 0, 1, 20, None, "data-2001"),
        disk(2002, "scsi", 0, 2, 30, None, "data-2002"),
        disk(2016, "scsi", 1, 0, 80, Some(1), "boot-2016"),
        disk(16000, "sata", 0, 0, 20, None, "data-16000"),
        disk(3000, "ide", 0, 0, 40, Some(2), "data-3000"),
    ]
    .concat();
    let def = VmDefinition::parse(&text, Format::Toml)?;
    let vm = register(&env.store, &env.cloud, &def, Limits::default()).await?;
    let boot = vm.boot_disk().expect("a boot disk");
    assert_eq!(
        boot.disk.device_key, 2016,
        "the first in the boot order, not key 2000"
    );
    assert_eq!(boot.disk.replica_volume_id, volume("boot-2016"));
    // Equal sizes, different controllers: each keeps its own replica.
    let by_key = |key: i64| {
        vm.disks
            .iter()
            .find(|d| d.disk.device_key == key)
            .expect("disk")
    };
    assert_eq!(by_key(2001).disk.replica_volume_id, volume("data-2001"));
    assert_eq!(by_key(2001).disk.controller, Controller::Scsi);
    assert_eq!(by_key(16000).disk.replica_volume_id, volume("data-16000"));
    assert_eq!(by_key(16000).disk.controller, Controller::Sata);
    assert_eq!(vm.disks.iter().filter(|d| d.disk.is_boot).count(), 1);
    assert_eq!(vm.disks.len(), 6);
    assert!(vm.spec.secure_boot);
    Ok(())
}

#[tokio::test]
async fn a_definition_without_a_boot_disk_is_refused() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.disks[0].boot = false;
    assert_problem(
        &env.refused(&def).await?,
        "disks",
        "no boot disk: mark the boot disk with boot = true",
    );
    Ok(())
}

#[tokio::test]
async fn two_boot_disks_are_refused() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.disks[1].boot = true;
    assert_problem(
        &env.refused(&def).await?,
        "disks",
        "disks 2000, 2001 are all marked boot = true",
    );
    let mut tied = example()?;
    tied.disks[0].boot = false;
    tied.disks[0].boot_order = Some(1);
    tied.disks[1].boot_order = Some(1);
    assert_problem(&env.refused(&tied).await?, "disks", "share boot_order 1");
    Ok(())
}

#[tokio::test]
async fn a_duplicate_disk_identity_is_refused() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.disks[1].unit = 0;
    assert_problem(
        &env.refused(&def).await?,
        "disks[1]",
        "scsi bus 0 unit 0 is also the slot of disks[0] (key 2000)",
    );
    let mut keys = example()?;
    keys.disks[1].key = 2000;
    assert_problem(
        &env.refused(&keys).await?,
        "disks[1].key",
        "device key 2000 is also the key of disks[0]",
    );
    Ok(())
}

#[tokio::test]
async fn a_replica_volume_that_does_not_exist_is_refused() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.disks[1].replica_volume_id = "00000000-dead-4000-8000-000000000000".into();
    assert_problem(
        &env.refused(&def).await?,
        "disks[1].replica_volume_id",
        "CloudStack has no volume 00000000-dead-4000-8000-000000000000",
    );
    Ok(())
}

#[tokio::test]
async fn a_replica_volume_not_on_the_appliance_is_refused() -> TestResult {
    let mut world = World::default();
    world.volumes.push(VolumeDef {
        id: Some("0d0d0d0d-1111-4000-8000-000000000001".into()),
        name: "loose".into(),
        size_gb: 10,
        zone: None,
    });
    let env = env(world).await?;
    let mut def = example()?;
    def.disks[1].replica_volume_id = "0d0d0d0d-1111-4000-8000-000000000001".into();
    assert_problem(
        &env.refused(&def).await?,
        "disks[1].replica_volume_id",
        "is not attached to any VM, not to the appliance oma",
    );
    // The appliance's own root disk is not a replica.
    let mut root = example()?;
    let oma_root = env
        .cloud
        .list_volumes(&cloudstack::VolumeFilter {
            virtual_machine_id: Some(ids::APPLIANCE_OMA.into()),
            volume_type: Some("ROOT".into()),
            ..Default::default()
        })
        .await?;
    root.disks[1].replica_volume_id = oma_root[0].id.to_string();
    assert_problem(
        &env.refused(&root).await?,
        "disks[1].replica_volume_id",
        "the appliance's own ROOT disk",
    );
    Ok(())
}

#[tokio::test]
async fn a_replica_volume_of_another_size_is_refused() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.disks[1].capacity_gib = Some(11);
    assert_problem(
        &env.refused(&def).await?,
        "disks[1].replica_volume_id",
        "has 10737418240 bytes (10.00 GiB) but disk 2001 has 11811160064 bytes",
    );
    Ok(())
}

#[tokio::test]
async fn a_replica_volume_already_registered_to_another_disk_is_refused() -> TestResult {
    let env = env(World::default()).await?;
    register(&env.store, &env.cloud, &example()?, Limits::default()).await?;
    let mut second = example()?;
    second.name = "pgtest2".into();
    second.nics[0].mac = "00:50:56:8a:11:02".into();
    assert_problem(
        &env.refused(&second).await?,
        "disks[1].replica_volume_id",
        "is already registered as the replica of disk 2001 of pgtest1",
    );
    assert_problem(
        &env.refused(&example()?).await?,
        "name",
        "already registered",
    );
    Ok(())
}

#[tokio::test]
async fn more_data_disks_than_kvm_takes_are_refused() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    for i in 0..32 {
        let mut extra = def.disks[1].clone();
        extra.key = 2100 + i;
        extra.controller = Controller::Nvme;
        extra.bus = i / 15;
        extra.unit = i % 15;
        extra.replica_volume_id = format!("00000000-0000-4000-8000-{i:012}");
        def.disks.push(extra);
    }
    assert_eq!(def.disks.len(), 34);
    assert_problem(
        &env.refused(&def).await?,
        "disks",
        "33 data disks, but the hypervisor takes at most 32 (device ids 1, 2, 4–33)",
    );
    Ok(())
}

#[tokio::test]
async fn unknown_networks_are_refused() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.nics[0].test_network = "drill-lan".into();
    let problems = env.refused(&def).await?;
    assert_problem(
        &problems,
        "nics[0].test_network",
        "CloudStack has no network `drill-lan`",
    );
    assert_problem(&problems, "nics[0].test_network", "test, production");
    Ok(())
}

#[tokio::test]
async fn malformed_macs_are_refused() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.nics[0].mac = "00:50:56:8a:11".into();
    assert_problem(
        &env.refused(&def).await?,
        "nics[0].mac",
        "`00:50:56:8a:11` is not a MAC address",
    );
    Ok(())
}

#[tokio::test]
async fn every_problem_is_reported_at_once() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.name = "9lives".into();
    def.spec.secure_boot = true;
    def.nics[0].mac = "zz".into();
    def.disks[1].capacity_gib = Some(11);
    def.appliance = "oma".into();
    let problems = env.refused(&def).await?;
    assert_problem(&problems, "name", "cannot name CloudStack VMs");
    assert_problem(&problems, "spec.secure_boot", "needs firmware = \"uefi\"");
    assert_problem(&problems, "nics[0].mac", "is not a MAC address");
    assert_problem(
        &problems,
        "disks[1].replica_volume_id",
        "has 10737418240 bytes",
    );
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let err = RegisterError::Invalid(problems).to_string();
    assert!(
        err.starts_with("the VM definition was refused and nothing was registered:"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_appliance_is_refused_with_the_known_ones() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    def.appliance = "oma-9".into();
    assert_problem(
        &env.refused(&def).await?,
        "appliance",
        "no appliance named `oma-9` is configured in ferry (known: oma)",
    );
    Ok(())
}

#[tokio::test]
async fn two_nics_on_one_network_are_refused_naming_both() -> TestResult {
    let env = env(World::default()).await?;
    let mut def = example()?;
    let mut second = def.nics[0].clone();
    second.mac = "00:50:56:8a:11:02".into();
    // The same network by id rather than by name is still the same network.
    second.test_network = ids::NETWORK_TEST.into();
    def.nics.push(second);
    let problems = env.refused(&def).await?;
    for field in ["test_network", "production_network"] {
        assert_problem(
            &problems,
            &format!("nics[1].{field}"),
            "nics[0] and nics[1] are both on network",
        );
        assert_problem(
            &problems,
            &format!("nics[1].{field}"),
            "specified more than once",
        );
    }
    assert_eq!(problems.len(), 2, "{problems:#?}");
    Ok(())
}

/// Four 10 GiB volumes on the appliance: 1111…01 and 1111…02 share their first 20
/// hex digits, and so do 2222…01 and 2222…02.
fn serial_world() -> World {
    let volume = |id: &str| VolumeDef {
        id: Some(id.into()),
        name: id.into(),
        size_gb: 10,
        zone: None,
    };
    World {
        appliances: vec![ApplianceDef {
            id: Some(ids::APPLIANCE_OMA.into()),
            name: "oma".into(),
            zone: None,
            root_volume_id: None,
            volumes: [
                "11110000-0000-4000-8000-000000000001",
                "11110000-0000-4000-8000-000000000002",
                "22220000-0000-4000-8000-000000000001",
                "22220000-0000-4000-8000-000000000002",
            ]
            .into_iter()
            .map(volume)
            .collect(),
        }],
        ..World::default()
    }
}

fn on_volumes(name: &str, mac: &str, volumes: &[&str]) -> anyhow::Result<VmDefinition> {
    let mut def = example()?;
    def.name = name.into();
    def.nics[0].mac = mac.into();
    let template = def.disks[1].clone();
    def.disks = volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut d = template.clone();
            d.key = 2000 + i as i64;
            d.unit = i as i64;
            d.capacity_gib = Some(10);
            d.boot = i == 0;
            d.replica_volume_id = v.to_string();
            d
        })
        .collect();
    Ok(def)
}

#[tokio::test]
async fn replicas_whose_virtio_serials_collide_are_refused() -> TestResult {
    let env = env(serial_world()).await?;
    // Within one VM.
    let def = on_volumes(
        "serial1",
        "00:50:56:8a:33:01",
        &[
            "11110000-0000-4000-8000-000000000001",
            "11110000-0000-4000-8000-000000000002",
        ],
    )?;
    let problems = env.refused(&def).await?;
    assert_problem(
        &problems,
        "disks[1].replica_volume_id",
        "volume 11110000-0000-4000-8000-000000000002 and volume 11110000-0000-4000-8000-000000000001 \
         (the replica of disks[0]) share the virtio serial 11110000000040008000",
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");

    // Across VMs on one appliance.
    let first = on_volumes(
        "serial1",
        "00:50:56:8a:33:01",
        &[
            "11110000-0000-4000-8000-000000000001",
            "22220000-0000-4000-8000-000000000001",
        ],
    )?;
    register(&env.store, &env.cloud, &first, Limits::default()).await?;
    let second = on_volumes(
        "serial2",
        "00:50:56:8a:33:02",
        &["22220000-0000-4000-8000-000000000002"],
    )?;
    let problems = env.refused(&second).await?;
    assert_problem(
        &problems,
        "disks[0].replica_volume_id",
        "volume 22220000-0000-4000-8000-000000000002 and volume 22220000-0000-4000-8000-000000000001 \
         (the replica of disk 2001 of serial1, on the same appliance) share the virtio serial 22220000000040008000",
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");
    Ok(())
}

#[tokio::test]
async fn a_mac_already_registered_names_its_vm_in_the_same_report() -> TestResult {
    let env = env(World::default()).await?;
    register(&env.store, &env.cloud, &example()?, Limits::default()).await?;
    let mut second = example()?;
    second.name = "pgtest2".into();
    second.nics[0].mac = "00:50:56:8A:11:01".into();
    let problems = env.refused(&second).await?;
    assert_problem(
        &problems,
        "nics[0].mac",
        "00:50:56:8A:11:01 is already the MAC of a NIC of the protected VM pgtest1",
    );
    // Alongside every other problem, not after them.
    assert_problem(
        &problems,
        "disks[1].replica_volume_id",
        "is already registered as the replica of disk 2001 of pgtest1",
    );
    // Fixing the replicas alone still leaves the MAC, reported before anything is written.
    second.nics[0].mac = "00:50:56:8a:11:02".into();
    assert!(
        !env.refused(&second)
            .await?
            .iter()
            .any(|p| p.field == "nics[0].mac")
    );
    Ok(())
}

#[test]
fn every_missing_field_is_reported_at_once() -> TestResult {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml");
    let mut tree: toml::Table = std::fs::read_to_string(&path)?.parse()?;
    tree.remove("source_id");
    let spec = tree["spec"].as_table_mut().expect("spec");
    spec.remove("memory_mb");
    spec.remove("guest_os");
    tree["nics"][0]
        .as_table_mut()
        .expect("nic")
        .remove("production_network");
    tree["disks"][1]
        .as_table_mut()
        .expect("disk")
        .remove("replica_volume_id");
    let want = [
        "source_id",
        "spec.memory_mb",
        "spec.guest_os",
        "nics[0].production_network",
        "disks[1].replica_volume_id",
    ];
    for (text, format) in [
        (toml::to_string(&tree)?, Format::Toml),
        (serde_json::to_string(&tree)?, Format::Json),
    ] {
        let err = VmDefinition::parse(&text, format).expect_err("incomplete");
        let problems = err.problems();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, want, "{format:?}: {problems:#?}");
        assert_problem(&problems, "spec.guest_os", "missing field `guest_os`");
        assert!(
            err.to_string().contains("disks[1].replica_volume_id"),
            "{err}"
        );
    }
    // A missing field next to an unknown one: both are named.
    tree.insert("colour".into(), "blue".into());
    let problems = VmDefinition::parse(&toml::to_string(&tree)?, Format::Toml)
        .expect_err("incomplete")
        .problems();
    assert_problem(&problems, "source_id", "missing field");
    assert!(
        problems.iter().any(|p| p.message.contains("colour")),
        "{problems:#?}"
    );
    Ok(())
}

#[test]
fn a_guest_needing_preparation_without_a_command_is_refused() -> TestResult {
    use inventory::check_definition;
    use store::{GuestOs, GuestPrep};
    let without = Limits {
        guest_prep_configured: Some(false),
        ..Limits::default()
    };
    let with = Limits {
        guest_prep_configured: Some(true),
        ..Limits::default()
    };
    let mut windows = example()?;
    windows.spec.guest_os = GuestOs::Windows;
    let problems = check_definition(&windows, without);
    assert_problem(
        &problems,
        "spec.guest_prep",
        "guest_prep = \"auto\" with guest_os = \"windows\" needs guest preparation, but this ferry server has no \
         guest-preparation command",
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(check_definition(&windows, with), []);
    // Unknown configuration (a library caller): not checked.
    assert_eq!(check_definition(&windows, Limits::default()), []);
    // A Windows guest that already has VirtIO drivers.
    windows.spec.guest_prep = GuestPrep::Skip;
    assert_eq!(check_definition(&windows, without), []);
    // Forced preparation of a Linux guest needs the command too; auto does not.
    let mut linux = example()?;
    assert_eq!(check_definition(&linux, without), []);
    linux.spec.guest_prep = GuestPrep::VirtV2vInPlace;
    assert_problem(
        &check_definition(&linux, without),
        "spec.guest_prep",
        "guest_prep = \"virt-v2v-in-place\" with guest_os = \"linux\"",
    );
    Ok(())
}

#[tokio::test]
async fn a_vm_whose_replicas_would_not_fit_its_appliance_is_refused_with_the_counts() -> TestResult
{
    // pgtest1's two replicas, and two more volumes of the same sizes on the same appliance.
    let mut world = World::default();
    let oma = &mut world.appliances[0];
    let copies: Vec<VolumeDef> = oma
        .volumes
        .iter()
        .zip([
            "a7a7a7a7-0001-4e00-8000-000000000001",
            "b7b7b7b7-0002-4e00-8000-000000000002",
        ])
        .map(|(v, id)| VolumeDef {
            id: Some(id.to_string()),
            name: format!("{}-copy", v.name),
            ..v.clone()
        })
        .collect();
    oma.volumes.extend(copies.clone());
    let env = env(world).await?;
    // An appliance that takes three data volumes: pgtest1's two fit, two more do not.
    let limits = Limits {
        max_data_disks: 3,
        ..Limits::default()
    };
    let first = register(&env.store, &env.cloud, &example()?, limits).await?;
    let mut second = example()?;
    second.name = "pgtest2".into();
    second.source_id = "vm-second".into();
    second.nics[0].mac = "00:50:56:8a:11:02".into();
    for (disk, copy) in second.disks.iter_mut().zip(&copies) {
        disk.replica_volume_id = copy.id.clone().expect("an id");
    }
    let before = env.store.vms().await?;
    let Err(RegisterError::Invalid(problems)) =
        register(&env.store, &env.cloud, &second, limits).await
    else {
        panic!("expected a refusal");
    };
    assert_problem(
        &problems,
        "appliance",
        "appliance oma already holds 2 replica volumes of other protected VMs and pgtest2 needs 2 more, but CloudStack attaches at most 3 data volumes",
    );
    assert_eq!(env.store.vms().await?, before, "nothing was registered");
    // A committed VM's replicas are its new VM's disks for good: they hold no slot.
    env.store
        .set_vm_state(&first.id, store::VmState::Committed, None)
        .await?;
    register(&env.store, &env.cloud, &second, limits).await?;
    Ok(())
}
