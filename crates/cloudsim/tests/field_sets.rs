//! Black-box tests that cloudsim's JSON objects carry the fields CloudStack's do: each
//! entity kind against a real captured response (`shared/reference/cloudstack-fixtures/`,
//! from apache/cloudstack-go) or, where there is none (volumes, snapshots, zones),
//! against the fields its `*Response.java` fills for such an entity; and
//! `rebootVirtualMachine`, an async command whose job result is the VM.

// These tests drive cloudsim with ferry's real client.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cloudsim::World;
use cloudsim::world::ids;
use cloudstack::{Client, Error, Kind, VirtualMachine, VmId, VolumeId};
use serde_json::{Value, json};

mod common;

type TestResult = anyhow::Result<()>;

const FIXTURE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/reference/cloudstack-fixtures"
);

/// The object at `path` in the fixture `file` (array elements by decimal index).
fn fixture(file: &str, path: &[&str]) -> Value {
    let full = Path::new(FIXTURE_DIR).join(file);
    let text = std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", full.display()));
    let mut v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    for key in path {
        v = match key.parse::<usize>() {
            Ok(i) => v[i].clone(),
            Err(_) => v[*key].clone(),
        };
    }
    assert!(v.is_object(), "{file} {path:?} is not an object");
    v
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// Every field of `expected` is in `got`.
#[track_caller]
fn assert_has_fields(what: &str, got: &Value, expected: &BTreeSet<String>) {
    let got_keys = keys(got);
    let missing: Vec<&String> = expected.difference(&got_keys).collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}: {got}");
}

fn fields(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn start() -> anyhow::Result<(cloudsim::Running, Client)> {
    common::start_world(World::default(), None).await
}

async fn call(client: &Client, command: &str, params: &[(&str, &str)]) -> Result<Value, Error> {
    let all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    client.call(command, Kind::Read, &all).await
}

/// The first entry of a list command's answer.
async fn first(client: &Client, command: &str, key: &str, params: &[(&str, &str)]) -> Value {
    let answer = call(client, command, params).await.expect(command);
    answer[key][0].clone()
}

/// The raw `queryAsyncJobResult` answer for `job_id`, once the job has ended.
async fn finished_job(client: &Client, job_id: &str) -> Value {
    for _ in 0..2000 {
        let job = call(client, "queryAsyncJobResult", &[("jobid", job_id)])
            .await
            .expect("queryAsyncJobResult");
        if job["jobstatus"] != json!(0) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {job_id} did not end");
}

/// Submits `command` on the VM `vm` and returns its finished job.
async fn vm_job(client: &Client, command: &str, vm: &str) -> Value {
    let accepted = client
        .call(
            command,
            Kind::Mutation,
            &[("id".to_string(), vm.to_string())],
        )
        .await
        .expect(command);
    let job_id = accepted["jobid"].as_str().expect("a jobid").to_string();
    assert_eq!(keys(&accepted), fields(&["jobid"]), "{command}: {accepted}");
    finished_job(client, &job_id).await
}

#[tokio::test]
async fn list_networks_carries_every_field_of_the_fixture() -> TestResult {
    let (_sim, client) = start().await?;
    let expected = fixture(
        "NetworkService.json",
        &["listNetworks", "listnetworksresponse", "network", "0"],
    );
    let network = first(
        &client,
        "listNetworks",
        "network",
        &[("id", ids::NETWORK_TEST)],
    )
    .await;
    assert_eq!(keys(&network), keys(&expected), "{network}");
    // Its ids name entities the list commands know.
    for (param, value) in [
        ("networkofferingid", &network["networkofferingid"]),
        ("physicalnetworkid", &network["physicalnetworkid"]),
    ] {
        let value = value.as_str().expect("an id");
        let listed = call(&client, "listNetworks", &[(param, value)]).await?;
        assert_eq!(listed["count"], json!(2), "{param}: {listed}");
    }
    assert_eq!(network["related"], json!(ids::NETWORK_TEST));
    assert_eq!(network["gateway"], json!("10.10.0.1"));
    assert_eq!(network["netmask"], json!("255.255.255.0"));
    Ok(())
}

#[tokio::test]
async fn vms_carry_the_fields_of_the_fixtures_in_lists_and_job_results() -> TestResult {
    let (_sim, client) = start().await?;
    let vms = "VirtualMachineService.json";
    let listed = fixture(
        vms,
        &[
            "listVirtualMachines",
            "listVirtualMachines",
            "virtualmachine",
            "0",
        ],
    );
    let deploy = client
        .deploy_virtual_machine(&common::deploy_request("fields", true))
        .await?;
    let deployed = finished_job(&client, deploy.job_id.as_ref()).await;
    let envelope = fixture(
        vms,
        &["deployVirtualMachine", "deployvirtualmachineresponse"],
    );
    assert_has_fields("a finished job", &deployed, &keys(&envelope));
    let vm = &deployed["jobresult"]["virtualmachine"];
    assert_has_fields(
        "a deployed VM",
        vm,
        &keys(&envelope["jobresult"]["virtualmachine"]),
    );
    assert_eq!(vm["jobid"], json!(deploy.job_id.as_ref()));
    assert_eq!(vm["jobstatus"], json!(0));
    let id = vm["id"].as_str().expect("an id").to_string();
    let running = first(
        &client,
        "listVirtualMachines",
        "virtualmachine",
        &[("id", &id)],
    )
    .await;
    assert_has_fields("a listed running VM", &running, &keys(&listed));
    assert_has_fields("its NIC", &running["nic"][0], &keys(&listed["nic"][0]));
    assert_eq!(running["guestosid"], running["ostypeid"]);

    let stopped = vm_job(&client, "stopVirtualMachine", &id).await;
    let stop = fixture(
        vms,
        &[
            "stopVirtualMachine",
            "stopvirtualmachineresponse",
            "jobresult",
            "virtualmachine",
        ],
    );
    let vm = &stopped["jobresult"]["virtualmachine"];
    assert_has_fields("a stopped VM", vm, &keys(&stop));
    // A stopped VM has no host, as in the fixture.
    assert!(vm.get("hostid").is_none(), "{vm}");

    let started = vm_job(&client, "startVirtualMachine", &id).await;
    let start = fixture(
        vms,
        &[
            "startVirtualMachine",
            "startvirtualmachineresponse",
            "jobresult",
            "virtualmachine",
        ],
    );
    assert_has_fields(
        "a started VM",
        &started["jobresult"]["virtualmachine"],
        &keys(&start),
    );
    Ok(())
}

#[tokio::test]
async fn offerings_templates_and_jobs_carry_the_fields_of_the_fixtures() -> TestResult {
    let (_sim, client) = start().await?;
    let offering = first(
        &client,
        "listServiceOfferings",
        "serviceoffering",
        &[("id", ids::OFFERING_SMALL)],
    )
    .await;
    let expected = fixture(
        "ServiceOfferingService.json",
        &[
            "createServiceOffering",
            "createserviceofferingresponse",
            "serviceoffering",
        ],
    );
    assert_has_fields("a service offering", &offering, &keys(&expected));

    let disk = first(&client, "listDiskOfferings", "diskoffering", &[]).await;
    let expected = fixture(
        "DiskOfferingService.json",
        &[
            "listDiskOfferings",
            "listdiskofferingsresponse",
            "diskoffering",
            "0",
        ],
    );
    assert_has_fields("a disk offering", &disk, &keys(&expected));

    let template = first(
        &client,
        "listTemplates",
        "template",
        &[("templatefilter", "all")],
    )
    .await;
    let expected = fixture(
        "TemplateService.json",
        &[
            "registerTemplate",
            "registertemplateresponse",
            "template",
            "0",
        ],
    );
    assert_has_fields("a template", &template, &keys(&expected));
    // Its OS type is the one its VMs report.
    let oma = first(
        &client,
        "listVirtualMachines",
        "virtualmachine",
        &[("id", ids::APPLIANCE_OMA)],
    )
    .await;
    assert_eq!(template["ostypeid"], oma["ostypeid"]);

    client
        .wait(
            &client
                .create_snapshot(&VolumeId::from(ids::PGTEST1_DISK_2001), None)
                .await?,
        )
        .await?;
    let job = first(&client, "listAsyncJobs", "asyncjobs", &[]).await;
    let expected = fixture(
        "AsyncJobService.json",
        &["listAsyncJobs", "listasyncjobsresponse", "asyncjobs", "0"],
    );
    assert_has_fields("a listed job", &job, &keys(&expected));
    Ok(())
}

#[tokio::test]
async fn volumes_snapshots_and_zones_carry_the_fields_of_their_responses() -> TestResult {
    let (_sim, client) = start().await?;
    // VolumeResponse, for a Ready DATADISK attached to a VM.
    let volume = first(
        &client,
        "listVolumes",
        "volume",
        &[("id", ids::PGTEST1_DISK_2000)],
    )
    .await;
    let expected = fields(&[
        "id",
        "name",
        "zoneid",
        "zonename",
        "type",
        "deviceid",
        "virtualmachineid",
        "vmname",
        "vmdisplayname",
        "vmstate",
        "vmtype",
        "provisioningtype",
        "size",
        "created",
        "state",
        "account",
        "domainid",
        "domain",
        "domainpath",
        "storagetype",
        "hypervisor",
        "storage",
        "storageid",
        "attached",
        "destroyed",
        "isextractable",
        "displayvolume",
        "path",
        "quiescevm",
        "supportsstoragesnapshot",
        "physicalsize",
        "virtualsize",
        "clusterid",
        "clustername",
        "podid",
        "podname",
        "tags",
    ]);
    assert_has_fields("an attached volume", &volume, &expected);
    // And a ROOT volume names its template and its VM's service offering.
    let root = first(&client, "listVolumes", "volume", &[("id", ids::OMA_ROOT)]).await;
    let expected = fields(&[
        "templateid",
        "templatename",
        "templatedisplaytext",
        "serviceofferingid",
        "serviceofferingname",
        "serviceofferingdisplaytext",
    ]);
    assert_has_fields("a ROOT volume", &root, &expected);

    // SnapshotResponse.
    let snapshot = client
        .wait(
            &client
                .create_snapshot(&VolumeId::from(ids::OMA_ROOT), None)
                .await?,
        )
        .await?;
    let listed = first(
        &client,
        "listSnapshots",
        "snapshot",
        &[("id", snapshot.id.as_ref())],
    )
    .await;
    let expected = fields(&[
        "id",
        "account",
        "domainid",
        "domain",
        "snapshottype",
        "volumeid",
        "volumename",
        "volumetype",
        "created",
        "name",
        "intervaltype",
        "locationtype",
        "state",
        "physicalsize",
        "zoneid",
        "zonename",
        "revertable",
        "ostypeid",
        "osdisplayname",
        "virtualsize",
        "datastoretype",
        "tags",
    ]);
    assert_has_fields("a snapshot of a ROOT volume", &listed, &expected);

    // ZoneResponse, for an Advanced core zone.
    let zone = first(&client, "listZones", "zone", &[]).await;
    let expected = fields(&[
        "id",
        "name",
        "dns1",
        "internaldns1",
        "guestcidraddress",
        "networktype",
        "securitygroupsenabled",
        "allocationstate",
        "zonetoken",
        "dhcpprovider",
        "localstorageenabled",
        "tags",
        "allowuserspecifyvrmtu",
        "routerprivateinterfacemaxmtu",
        "routerpublicinterfacemaxmtu",
        "type",
        "nsxenabled",
        "multiarch",
        "routedmodeenabled",
        "hasannotations",
    ]);
    assert_has_fields("a zone", &zone, &expected);
    Ok(())
}

#[tokio::test]
async fn reboot_is_an_async_job_whose_result_is_the_running_vm() -> TestResult {
    let (sim, client) = start().await?;
    let job = vm_job(&client, "rebootVirtualMachine", ids::APPLIANCE_OMA).await;
    assert_eq!(job["jobstatus"], json!(1), "{job}");
    assert_eq!(job["jobinstancetype"], json!("VirtualMachine"));
    assert_eq!(job["jobinstanceid"], json!(ids::APPLIANCE_OMA));
    assert_eq!(
        job["cmd"],
        json!("org.apache.cloudstack.api.command.admin.vm.RebootVMCmdByAdmin")
    );
    let vm: VirtualMachine = serde_json::from_value(job["jobresult"]["virtualmachine"].clone())?;
    assert_eq!(vm.id.as_ref(), ids::APPLIANCE_OMA);
    assert_eq!(vm.state, "Running");

    // The job went through the VM's queue and is counted like the other VM jobs.
    let stats: Value = reqwest::get(format!("{}/stats", sim.announcement.admin))
        .await?
        .json()
        .await?;
    assert_eq!(
        stats["commands"]["rebootvirtualmachine"]["jobs"],
        json!(1),
        "{stats}"
    );
    assert_eq!(stats["calls"]["rebootVirtualMachine"], json!(1), "{stats}");
    Ok(())
}

#[tokio::test]
async fn rebooting_a_stopped_vm_fails_in_the_job_as_cloudstack_does() -> TestResult {
    let (_sim, client) = start().await?;
    let vm = client
        .wait(
            &client
                .deploy_virtual_machine(&common::deploy_request("stopped", false))
                .await?,
        )
        .await?;
    assert_eq!(vm.state, "Stopped");
    let job = vm_job(&client, "rebootVirtualMachine", vm.id.as_ref()).await;
    assert_eq!(job["jobstatus"], json!(2), "{job}");
    assert_eq!(job["jobresultcode"], json!(530));
    assert_eq!(
        job["jobresult"],
        json!({"errorcode": 530, "errortext": "Failed to reboot vm instance"})
    );
    // Nothing changed, and an id that names nothing is refused before any job.
    let listed = client
        .get_virtual_machine(&VmId::from(vm.id.as_ref()))
        .await?
        .expect("listed");
    assert_eq!(listed.state, "Stopped");
    let err = client
        .call(
            "rebootVirtualMachine",
            Kind::Mutation,
            &[("id".into(), "0badc0de-0000-4000-8000-000000000000".into())],
        )
        .await
        .unwrap_err();
    assert_eq!(err.errorcode(), Some(431), "{err}");
    Ok(())
}
