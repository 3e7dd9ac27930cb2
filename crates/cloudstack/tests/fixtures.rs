//! The response types in `cloudstack::types` against real CloudStack responses.
//!
//! The fixtures are JSON captured from a CloudStack simulator (apache/cloudstack-go,
//! `test/testdata`, Apache-2.0). They live outside the repository, in
//! `../shared/reference/cloudstack-fixtures/` beside the repository root, and are read
//! from there rather than copied in. A missing directory is a test failure, not a skip:
//! a silently skipped test would prove nothing.

use std::path::{Path, PathBuf};

use cloudstack::types::{
    AsyncJob, DiskOffering, JobStatus, Network, ServiceOffering, Template, VirtualMachine, Volume,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

const FIXTURE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/reference/cloudstack-fixtures"
);

/// Reads and parses one fixture file, failing loudly if the directory or file is absent.
fn fixture(file: &str) -> Value {
    let dir = Path::new(FIXTURE_DIR);
    assert!(
        dir.is_dir(),
        "CloudStack fixture directory not found at {} — it must sit beside the repository \
         as ../shared/reference/cloudstack-fixtures (it is deliberately not copied into \
         the repo)",
        dir.display()
    );
    let path: PathBuf = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} is not valid JSON: {e}", path.display()))
}

/// Walks `keys` down from `v`; array elements are addressed by their decimal index.
fn at<'a>(v: &'a Value, keys: &[&str]) -> &'a Value {
    let mut cur = v;
    for (i, k) in keys.iter().enumerate() {
        let next = match cur {
            Value::Array(items) => k.parse::<usize>().ok().and_then(|n| items.get(n)),
            _ => cur.get(*k),
        };
        cur = next.unwrap_or_else(|| panic!("fixture has no {}", keys[..=i].join(".")));
    }
    cur
}

/// Deserializes the value at `keys` as `T`, naming the path on failure.
fn parse<T: DeserializeOwned>(v: &Value, keys: &[&str]) -> T {
    serde_json::from_value(at(v, keys).clone()).unwrap_or_else(|e| {
        panic!(
            "{} does not parse as {}: {e}",
            keys.join("."),
            std::any::type_name::<T>()
        )
    })
}

#[test]
fn fixture_directory_is_present() {
    let dir = Path::new(FIXTURE_DIR);
    assert!(
        dir.is_dir(),
        "CloudStack fixture directory not found at {}",
        dir.display()
    );
    for f in [
        "AsyncJobService.json",
        "DiskOfferingService.json",
        "NetworkService.json",
        "ServiceOfferingService.json",
        "TemplateService.json",
        "VirtualMachineService.json",
    ] {
        assert!(
            dir.join(f).is_file(),
            "fixture {f} missing from {}",
            dir.display()
        );
    }
}

#[test]
fn list_disk_offerings_parses() {
    let f = fixture("DiskOfferingService.json");
    let resp = at(&f, &["listDiskOfferings", "listdiskofferingsresponse"]);
    assert_eq!(resp["count"], 1);
    let offerings: Vec<DiskOffering> = parse(resp, &["diskoffering"]);
    assert_eq!(offerings.len(), 1);
    let d = &offerings[0];
    assert_eq!(d.id, "7662b6ae-f00b-4268-973f-f3f87eaf82c5");
    assert_eq!(d.name, "test");
    assert_eq!(d.displaytext.as_deref(), Some("test"));
    assert!(d.iscustomized);
    assert_eq!(d.disksize, 0);
    assert_eq!(d.storagetype.as_deref(), Some("shared"));

    // createDiskOffering returns the same object, unwrapped.
    let created: DiskOffering = parse(
        &f,
        &[
            "createDiskOffering",
            "creatediskofferingresponse",
            "diskoffering",
        ],
    );
    assert_eq!(&created, d);
}

#[test]
fn service_offerings_parse() {
    let f = fixture("ServiceOfferingService.json");
    // The fixture has create/update responses but no listServiceOfferings.
    let created: ServiceOffering = parse(
        &f,
        &[
            "createServiceOffering",
            "createserviceofferingresponse",
            "serviceoffering",
        ],
    );
    assert_eq!(created.id, "efaeeab0-4b09-4729-8b6f-62645db41b37");
    assert_eq!(created.name, "testServiceOffering");
    assert_eq!(created.cpunumber, Some(2));
    assert_eq!(created.cpuspeed, Some(1000));
    assert_eq!(created.memory, Some(2048));
    assert!(!created.iscustomized);
    assert_eq!(created.storagetype.as_deref(), Some("shared"));

    let updated: ServiceOffering = parse(
        &f,
        &[
            "updateServiceOffering",
            "updateserviceofferingresponse",
            "serviceoffering",
        ],
    );
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, "testServiceOfferingUpdated");
    assert_eq!(updated.cpunumber, Some(2));
    assert_eq!(updated.memory, Some(2048));
}

#[test]
fn list_networks_parses() {
    let f = fixture("NetworkService.json");
    let networks: Vec<Network> = parse(&f, &["listNetworks", "listnetworksresponse", "network"]);
    assert_eq!(networks.len(), 1);
    let n = &networks[0];
    assert_eq!(n.id, "eb9c270d-dd66-443b-9524-ada1eff4442a");
    assert_eq!(n.name, "testIsolatedNet");
    assert_eq!(n.network_type.as_deref(), Some("Isolated"));
    assert_eq!(
        n.zoneid.as_ref().map(|id| id.as_str()),
        Some("04ccc336-d730-42fe-8ff6-5ae36e141e81")
    );
    assert_eq!(n.state.as_deref(), Some("Allocated"));
    assert_eq!(n.cidr.as_deref(), Some("10.1.1.0/24"));
    assert_eq!(n.traffictype.as_deref(), Some("Guest"));

    let created: Network = parse(&f, &["createNetwork", "createnetworkresponse", "network"]);
    assert_eq!(&created, n);
}

#[test]
fn register_template_parses() {
    let f = fixture("TemplateService.json");
    let resp = at(&f, &["registerTemplate", "registertemplateresponse"]);
    let templates: Vec<Template> = parse(resp, &["template"]);
    assert_eq!(templates.len(), 1);
    let t = &templates[0];
    assert_eq!(t.id, "5ce8f0b1-a910-4631-a8de-1e332bf3a6b7");
    assert_eq!(t.name, "testTemplate");
    assert!(t.isready);
    assert_eq!(
        t.zoneid.as_ref().map(|id| id.as_str()),
        Some("1d8d87d4-1425-459c-8d81-c6f57dca2bd2")
    );
    assert_eq!(t.ostypename.as_deref(), Some("Amazon Linux 3 (64 bit)"));
    assert_eq!(t.hypervisor.as_deref(), Some("Simulator"));
    assert_eq!(t.size, Some(5_242_880));
    assert_eq!(t.format.as_deref(), Some("VHD"));
}

#[test]
fn create_template_job_result_parses() {
    let f = fixture("TemplateService.json");
    let job: AsyncJob = parse(&f, &["createTemplate", "createtemplateresponse"]);
    assert_eq!(job.jobid, "13cc57e2-f388-49d5-95f3-de5ba43835fb");
    assert_eq!(job.jobstatus, JobStatus::Succeeded);
    assert_eq!(job.jobinstancetype.as_deref(), Some("Template"));
    let result = job.jobresult.expect("createTemplate job has a jobresult");
    let t: Template = parse(&result, &["template"]);
    assert_eq!(t.id, "b07dd9e4-1720-4122-b840-1e57a79e0dd9");
    assert!(t.isready);
    assert_eq!(t.size, Some(21_474_836_480));
    assert_eq!(t.format.as_deref(), Some("RAW"));
}

#[test]
fn deploy_virtual_machine_job_and_vm_parse() {
    let f = fixture("VirtualMachineService.json");
    let job: AsyncJob = parse(
        &f,
        &["deployVirtualMachine", "deployvirtualmachineresponse"],
    );
    assert_eq!(job.jobid, "74bbb422-fb74-47ac-a22a-ad86a7831d3f");
    assert_eq!(
        job.cmd.as_deref(),
        Some("org.apache.cloudstack.api.command.admin.vm.DeployVMCmdByAdmin")
    );
    assert_eq!(job.jobstatus, JobStatus::Succeeded);
    assert_eq!(job.jobprocstatus, Some(0));
    assert_eq!(job.jobresultcode, Some(0));
    assert_eq!(job.jobresulttype.as_deref(), Some("object"));
    assert_eq!(job.jobinstancetype.as_deref(), Some("VirtualMachine"));
    assert_eq!(
        job.jobinstanceid.as_deref(),
        Some("915653c4-298b-4d74-bdee-4ced282114f1")
    );
    assert_eq!(job.created.as_deref(), Some("2021-10-04T09:24:38+0000"));
    assert_eq!(job.completed.as_deref(), Some("2021-10-04T09:24:42+0000"));

    let result = job.jobresult.expect("deploy job has a jobresult");
    let vm: VirtualMachine = parse(&result, &["virtualmachine"]);
    assert_eq!(vm.id, "915653c4-298b-4d74-bdee-4ced282114f1");
    assert_eq!(vm.name, "testDummyVM");
    assert_eq!(vm.displayname.as_deref(), Some("testDummyVM"));
    assert_eq!(vm.state, "Running");
    assert_eq!(
        vm.zoneid.as_ref().map(|id| id.as_str()),
        Some("1d8d87d4-1425-459c-8d81-c6f57dca2bd2")
    );
    assert_eq!(
        vm.templateid.as_ref().map(|id| id.as_str()),
        Some("50459b99-5fe0-11ea-9a56-1e006800018c")
    );
    assert_eq!(
        vm.serviceofferingid.as_ref().map(|id| id.as_str()),
        Some("498ce071-a077-4237-9492-e55c42553327")
    );
    assert_eq!(vm.cpunumber, Some(1));
    assert_eq!(vm.cpuspeed, Some(100));
    assert_eq!(vm.memory, Some(256));
    assert_eq!(vm.rootdeviceid, Some(0));
    assert_eq!(vm.rootdevicetype.as_deref(), Some("ROOT"));
    assert_eq!(vm.hypervisor.as_deref(), Some("Simulator"));
    assert_eq!(vm.bootmode.as_deref(), Some("legacy"));
    assert_eq!(vm.boottype.as_deref(), Some("Bios"));
    assert_eq!(vm.created.as_deref(), Some("2021-10-04T09:24:38+0000"));
    assert_eq!(vm.details, Some(serde_json::Map::new()));

    assert_eq!(vm.nic.len(), 1);
    let nic = &vm.nic[0];
    assert_eq!(nic.id, "47d79da1-2fe1-4a44-a503-523055714a72");
    assert_eq!(nic.networkid, "87503ba2-d59d-4a5e-8f7f-b3f486cedbd8");
    assert_eq!(nic.networkname.as_deref(), Some("test"));
    assert_eq!(nic.ipaddress.as_deref(), Some("10.1.1.62"));
    assert_eq!(nic.macaddress.as_deref(), Some("02:00:34:fb:00:01"));
    assert!(nic.isdefault);
    assert_eq!(nic.deviceid, None);
}

#[test]
fn list_virtual_machines_parses() {
    let f = fixture("VirtualMachineService.json");
    // This capture nests the list under "listVirtualMachines" twice (not the usual
    // lower-case "listvirtualmachinesresponse").
    let resp = at(&f, &["listVirtualMachines", "listVirtualMachines"]);
    assert_eq!(resp["count"], 1);
    let vms: Vec<VirtualMachine> = parse(resp, &["virtualmachine"]);
    assert_eq!(vms.len(), 1);
    let vm = &vms[0];
    assert_eq!(vm.id, "915653c4-298b-4d74-bdee-4ced282114f1");
    assert_eq!(vm.name, "testDummyVM");
    assert_eq!(vm.state, "Running");
    assert_eq!(vm.rootdeviceid, Some(0));
    assert_eq!(vm.rootdevicetype.as_deref(), Some("ROOT"));
    assert_eq!(vm.memory, Some(256));
    // No boot mode in this capture.
    assert_eq!(vm.boottype, None);
    assert_eq!(vm.bootmode, None);
    let details = vm.details.as_ref().expect("details present");
    assert_eq!(
        details.get("Message.ReservedCapacityFreed.Flag"),
        Some(&Value::from("false"))
    );
    assert_eq!(vm.nic.len(), 1);
    assert_eq!(vm.nic[0].macaddress.as_deref(), Some("02:00:34:fb:00:01"));
    assert_eq!(vm.nic[0].ipaddress.as_deref(), Some("10.1.1.62"));
}

#[test]
fn other_vm_job_results_parse() {
    let f = fixture("VirtualMachineService.json");
    let cases = [
        (
            "stopVirtualMachine",
            "stopvirtualmachineresponse",
            "Stopped",
            1,
        ),
        (
            "startVirtualMachine",
            "startvirtualmachineresponse",
            "Running",
            1,
        ),
        (
            "addNicToVirtualMachine",
            "addnictovirtualmachineresponse",
            "Running",
            2,
        ),
        (
            "scaleVirtualMachine",
            "scalevirtualmachineresponse",
            "Stopped",
            2,
        ),
    ];
    for (cmd, response, state, nics) in cases {
        let job: AsyncJob = parse(&f, &[cmd, response]);
        assert_eq!(job.jobstatus, JobStatus::Succeeded, "{cmd}");
        assert_eq!(job.jobresulttype.as_deref(), Some("object"), "{cmd}");
        let result = job
            .jobresult
            .unwrap_or_else(|| panic!("{cmd} has no jobresult"));
        let vm: VirtualMachine = parse(&result, &["virtualmachine"]);
        assert_eq!(vm.state, state, "{cmd}");
        assert_eq!(vm.nic.len(), nics, "{cmd}");
    }

    // addNicToVirtualMachine's VM carries no template, offering or root device fields.
    let added: VirtualMachine = parse(
        &f,
        &[
            "addNicToVirtualMachine",
            "addnictovirtualmachineresponse",
            "jobresult",
            "virtualmachine",
        ],
    );
    assert_eq!(added.templateid, None);
    assert_eq!(added.rootdeviceid, None);
    let second = added
        .nic
        .iter()
        .find(|n| !n.isdefault)
        .expect("a non-default nic");
    assert_eq!(second.macaddress.as_deref(), Some("02:00:13:a4:00:21"));
    assert_eq!(second.networkname.as_deref(), Some("test-network-2"));
}

#[test]
fn network_jobs_parse() {
    let f = fixture("NetworkService.json");
    let job: AsyncJob = parse(&f, &["deleteNetwork", "deletenetworkresponse"]);
    assert_eq!(job.jobid, "8fe59207-90f5-4382-af17-e8b413bda517");
    assert_eq!(job.jobstatus, JobStatus::Succeeded);
    assert_eq!(job.jobinstancetype.as_deref(), Some("Network"));
    // deleteNetwork's job has no jobinstanceid.
    assert_eq!(job.jobinstanceid, None);
    assert_eq!(job.jobresult, Some(serde_json::json!({ "success": true })));

    let job: AsyncJob = parse(
        &f,
        &["createPhysicalNetwork", "createphysicalnetworkresponse"],
    );
    assert_eq!(job.jobstatus, JobStatus::Succeeded);
    assert_eq!(
        job.jobinstanceid.as_deref(),
        Some("256b3b3f-4a31-48f3-a939-79b01357fb87")
    );
}

#[test]
fn list_async_jobs_defaults_missing_status_to_pending() {
    let f = fixture("AsyncJobService.json");
    let resp = at(&f, &["listAsyncJobs", "listasyncjobsresponse"]);
    assert_eq!(resp["count"], 1);
    // Precondition: the real entry really has no jobstatus.
    assert!(at(resp, &["asyncjobs", "0"]).get("jobstatus").is_none());

    let jobs: Vec<AsyncJob> = parse(resp, &["asyncjobs"]);
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j.jobid, "6679e6b9-4bf2-4d83-b9f0-235fc1609227");
    assert_eq!(j.jobstatus, JobStatus::Pending);
    assert_eq!(j.jobprocstatus, Some(0));
    assert_eq!(j.jobresultcode, Some(0));
    assert_eq!(j.created.as_deref(), Some("2021-09-29T17:50:11+0530"));
    assert_eq!(j.cmd, None);
    assert_eq!(j.jobresult, None);
    assert_eq!(j.jobresulttype, None);
}

/// A `listVolumes` response as CloudStack 4.x returns it to a root admin (fields per
/// `VolumeJoinDaoImpl.newVolumeResponse`), with one attached and one detached volume.
const LIST_VOLUMES: &str = r#"{
  "listvolumesresponse": {
    "count": 2,
    "volume": [
      {
        "id": "6d2f3a1c-9b7e-4c1d-8a2b-0f1e2d3c4b5a",
        "name": "ferry-data-1",
        "zoneid": "1d8d87d4-1425-459c-8d81-c6f57dca2bd2",
        "zonename": "shouldwork",
        "type": "DATADISK",
        "deviceid": 1,
        "virtualmachineid": "915653c4-298b-4d74-bdee-4ced282114f1",
        "vmname": "testDummyVM",
        "vmdisplayname": "testDummyVM",
        "vmstate": "Running",
        "provisioningtype": "thin",
        "size": 21474836480,
        "created": "2021-10-04T09:30:12+0000",
        "attached": "2021-10-04T09:31:40+0000",
        "state": "Ready",
        "account": "admin",
        "domainid": "e4874e10-5fdf-11ea-9a56-1e006800018c",
        "domain": "ROOT",
        "storagetype": "shared",
        "hypervisor": "KVM",
        "diskofferingid": "7662b6ae-f00b-4268-973f-f3f87eaf82c5",
        "diskofferingname": "test",
        "storageid": "a7b3c9d0-1111-4222-8333-944455556666",
        "storage": "primary-nfs",
        "path": "6d2f3a1c-9b7e-4c1d-8a2b-0f1e2d3c4b5a",
        "chaininfo": "{\"diskDeviceBusName\":\"virtio1\"}",
        "destroyed": false,
        "isextractable": true,
        "displayvolume": true,
        "tags": [],
        "hasannotations": false,
        "some_field_from_a_future_release": { "nested": [1, 2, 3] }
      },
      {
        "id": "0b9e8d7c-6f5a-4e3d-9c2b-1a0f9e8d7c6b",
        "name": "ferry-data-2",
        "zoneid": "1d8d87d4-1425-459c-8d81-c6f57dca2bd2",
        "zonename": "shouldwork",
        "type": "DATADISK",
        "provisioningtype": "thin",
        "size": 10737418240,
        "created": "2021-10-04T09:35:00+0000",
        "state": "Ready",
        "account": "admin",
        "domainid": "e4874e10-5fdf-11ea-9a56-1e006800018c",
        "domain": "ROOT",
        "storagetype": "shared",
        "diskofferingid": "7662b6ae-f00b-4268-973f-f3f87eaf82c5",
        "storage": "primary-nfs",
        "destroyed": false,
        "isextractable": true,
        "displayvolume": true,
        "tags": []
      }
    ]
  }
}"#;

#[test]
fn volumes_parse_attached_and_detached_ignoring_unknown_fields() {
    let v: Value = serde_json::from_str(LIST_VOLUMES).expect("inline JSON is valid");
    let volumes: Vec<Volume> = parse(&v, &["listvolumesresponse", "volume"]);
    assert_eq!(volumes.len(), 2);

    let attached = &volumes[0];
    assert_eq!(attached.id, "6d2f3a1c-9b7e-4c1d-8a2b-0f1e2d3c4b5a");
    assert_eq!(attached.name, "ferry-data-1");
    assert_eq!(attached.volume_type, "DATADISK");
    assert_eq!(attached.deviceid, Some(1));
    assert_eq!(
        attached.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some("915653c4-298b-4d74-bdee-4ced282114f1")
    );
    assert_eq!(attached.vmname.as_deref(), Some("testDummyVM"));
    assert_eq!(attached.vmstate.as_deref(), Some("Running"));
    assert_eq!(attached.size, 21_474_836_480);
    assert_eq!(attached.state, "Ready");
    assert_eq!(
        attached.diskofferingid.as_deref(),
        Some("7662b6ae-f00b-4268-973f-f3f87eaf82c5")
    );
    assert_eq!(
        attached.attached.as_deref(),
        Some("2021-10-04T09:31:40+0000")
    );
    assert_eq!(attached.storage.as_deref(), Some("primary-nfs"));
    assert_eq!(
        attached.path.as_deref(),
        Some("6d2f3a1c-9b7e-4c1d-8a2b-0f1e2d3c4b5a")
    );
    assert_eq!(attached.serial(), "6d2f3a1c9b7e4c1d8a2b");

    let detached = &volumes[1];
    assert_eq!(detached.id, "0b9e8d7c-6f5a-4e3d-9c2b-1a0f9e8d7c6b");
    assert_eq!(detached.deviceid, None);
    assert_eq!(detached.virtualmachineid, None);
    assert_eq!(detached.vmname, None);
    assert_eq!(detached.vmstate, None);
    assert_eq!(detached.attached, None);
    assert_eq!(detached.path, None);
    assert_eq!(detached.size, 10_737_418_240);
    assert_eq!(detached.state, "Ready");
}
