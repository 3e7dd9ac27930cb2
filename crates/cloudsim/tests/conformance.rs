//! Black-box tests of how cloudsim's list commands treat ids, as CloudStack's
//! `ParamProcessWorker` does: an id that never named anything is refused with 431, one
//! of a removed entity gives an empty list (`findByUuidIncludingRemoved`), also after a
//! restart from a state file.

// These tests drive cloudsim with ferry's real client.
#![allow(clippy::disallowed_methods)]

use cloudsim::World;
use cloudsim::world::{VolumeDef, ids};
use cloudstack::{Client, Error, Kind, VmId, VolumeId};
use serde_json::{Value, json};

mod common;

type TestResult = anyhow::Result<()>;

/// An id no simulated cloud ever has.
const NEVER: &str = "0badc0de-0000-4000-8000-000000000000";
/// A detached volume the test world adds.
const SPARE: &str = "00000000-0000-4000-8000-0000000000aa";

fn world() -> World {
    let mut world = World::default();
    world.volumes.push(VolumeDef {
        id: Some(SPARE.into()),
        name: "spare".into(),
        size_gb: 1,
        zone: None,
    });
    world
}

async fn start(
    state_file: Option<std::path::PathBuf>,
) -> anyhow::Result<(cloudsim::Running, Client)> {
    common::start_world(world(), state_file).await
}

/// A list call's answer (the object inside `<command>response`).
async fn list(client: &Client, command: &str, params: &[(&str, &str)]) -> Result<Value, Error> {
    let mut all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if command == "listTemplates" {
        all.push(("templatefilter".into(), "all".into()));
    }
    client.call(command, Kind::Read, &all).await
}

#[track_caller]
fn assert_bad_id(err: &Error, command: &str, name: &str, value: &str) {
    assert!(matches!(err, Error::Api { .. }), "not synchronous: {err:?}");
    assert_eq!(err.errorcode(), Some(431), "{command} {name}: {err}");
    assert_eq!(
        err.errortext(),
        Some(
            format!(
                "Unable to execute API command {} due to invalid value. Invalid parameter {name} \
                 value={value} due to incorrect long value format, or entity does not exist or \
                 due to incorrect parameter annotation for the field in api cmd class.",
                command.to_lowercase()
            )
            .as_str()
        ),
        "{command} {name}"
    );
}

/// Every list command cloudsim serves, with each id parameter it translates (read from
/// the commands' `*Cmd.java` in apache/cloudstack).
const LIST_ID_PARAMS: &[(&str, &[&str])] = &[
    ("listZones", &["id", "ids"]),
    (
        "listServiceOfferings",
        &["id", "virtualmachineid", "zoneid", "templateid"],
    ),
    (
        "listDiskOfferings",
        &["id", "zoneid", "volumeid", "storageid"],
    ),
    (
        "listTemplates",
        &["id", "ids", "zoneid", "parenttemplateid"],
    ),
    (
        "listNetworks",
        &[
            "id",
            "zoneid",
            "physicalnetworkid",
            "vpcid",
            "networkofferingid",
            "associatednetworkid",
        ],
    ),
    (
        "listVirtualMachines",
        &[
            "id",
            "ids",
            "zoneid",
            "networkid",
            "templateid",
            "serviceofferingid",
            "groupid",
            "isoid",
            "vpcid",
            "affinitygroupid",
        ],
    ),
    (
        "listVolumes",
        &[
            "id",
            "ids",
            "virtualmachineid",
            "zoneid",
            "diskofferingid",
            "serviceofferingid",
            "hostid",
            "podid",
            "clusterid",
        ],
    ),
    ("listSnapshots", &["id", "ids", "volumeid", "zoneid"]),
    ("listAsyncJobs", &["managementserverid"]),
    (
        "listPublicIpAddresses",
        &[
            "id",
            "vlanid",
            "zoneid",
            "physicalnetworkid",
            "associatednetworkid",
            "networkid",
            "vpcid",
        ],
    ),
    (
        "listPortForwardingRules",
        &["id", "ipaddressid", "networkid"],
    ),
    (
        "listIpForwardingRules",
        &["ipaddressid", "id", "virtualmachineid"],
    ),
];

#[tokio::test]
async fn every_list_command_refuses_an_id_that_never_named_anything_with_431() -> TestResult {
    let (_sim, client) = start(None).await?;
    for (command, params) in LIST_ID_PARAMS {
        for name in *params {
            let err = list(&client, command, &[(name, NEVER)])
                .await
                .expect_err(&format!("{command} {name}={NEVER} was answered"));
            assert_bad_id(&err, command, name, NEVER);
        }
    }
    // In a list of ids, each one is translated.
    let err = list(
        &client,
        "listVolumes",
        &[("ids", &format!("{SPARE},{NEVER}"))],
    )
    .await
    .unwrap_err();
    assert_bad_id(&err, "listVolumes", "ids", NEVER);
    Ok(())
}

#[tokio::test]
async fn the_ids_of_existing_entities_filter_the_lists() -> TestResult {
    let (_sim, client) = start(None).await?;
    let one = |v: &Value, key: &str| v[key].as_array().map(Vec::len);
    let volume = list(&client, "listVolumes", &[("id", SPARE)]).await?;
    assert_eq!(one(&volume, "volume"), Some(1), "{volume}");
    let on_oma = list(
        &client,
        "listVolumes",
        &[("virtualmachineid", ids::APPLIANCE_OMA)],
    )
    .await?;
    assert_eq!(on_oma["count"], json!(3), "{on_oma}");
    let by_ids = list(
        &client,
        "listVolumes",
        &[("ids", &format!("{SPARE},{}", ids::OMA_ROOT))],
    )
    .await?;
    assert_eq!(by_ids["count"], json!(2), "{by_ids}");
    for (command, key, id) in [
        ("listZones", "zone", ids::ZONE),
        (
            "listServiceOfferings",
            "serviceoffering",
            ids::OFFERING_SMALL,
        ),
        (
            "listDiskOfferings",
            "diskoffering",
            ids::DISK_OFFERING_CUSTOM,
        ),
        ("listTemplates", "template", ids::TEMPLATE),
        ("listNetworks", "network", ids::NETWORK_TEST),
        ("listVirtualMachines", "virtualmachine", ids::APPLIANCE_OMA),
    ] {
        let answer = list(&client, command, &[("id", id)]).await?;
        assert_eq!(one(&answer, key), Some(1), "{command}: {answer}");
        assert_eq!(answer[key][0]["id"], json!(id), "{command}");
    }
    let networks = list(&client, "listNetworks", &[("zoneid", ids::ZONE)]).await?;
    assert_eq!(networks["count"], json!(2), "{networks}");
    Ok(())
}

#[tokio::test]
async fn values_that_are_not_uuids_are_translated_as_cloudstack_translates_them() -> TestResult {
    let (_sim, client) = start(None).await?;
    // -1 passes (a legacy special case) and names nothing.
    assert_eq!(
        list(&client, "listVolumes", &[("id", "-1")]).await?,
        json!({})
    );
    // A parameter from before 3.x takes an internal numeric id, unchecked.
    assert_eq!(
        list(&client, "listVolumes", &[("id", "12345")]).await?,
        json!({})
    );
    // ... but not zero: validateNaturalNumber's refusal becomes an internal error.
    let err = list(&client, "listVolumes", &[("id", "0")])
        .await
        .unwrap_err();
    assert_eq!(err.errorcode(), Some(530), "{err}");
    assert_eq!(
        err.errortext(),
        Some("Internal error executing API command listvolumes")
    );
    // Any other string names nothing.
    let err = list(&client, "listVolumes", &[("id", "no-such-volume")])
        .await
        .unwrap_err();
    assert_bad_id(&err, "listVolumes", "id", "no-such-volume");
    // A parameter with a `since` ignores a value that is not a UUID.
    let all = list(&client, "listVirtualMachines", &[]).await?;
    let ignored = list(
        &client,
        "listVirtualMachines",
        &[("serviceofferingid", "not-a-uuid")],
    )
    .await?;
    assert_eq!(ignored, all);
    Ok(())
}

/// Deletes the spare volume, takes and deletes a snapshot of a replica, deploys a VM
/// and expunges it; returns (snapshot id, VM id, the VM's ROOT volume id).
async fn remove_some(client: &Client) -> anyhow::Result<(String, String, String)> {
    client.delete_volume(&VolumeId::from(SPARE)).await?;
    let snapshot = client
        .wait(
            &client
                .create_snapshot(&VolumeId::from(ids::PGTEST1_DISK_2001), None)
                .await?,
        )
        .await?;
    client
        .wait(&client.delete_snapshot(&snapshot.id).await?)
        .await?;
    let vm = client
        .wait(
            &client
                .deploy_virtual_machine(&common::deploy_request("gone", false))
                .await?,
        )
        .await?;
    let root = list(
        client,
        "listVolumes",
        &[("virtualmachineid", vm.id.as_str())],
    )
    .await?["volume"][0]["id"]
        .as_str()
        .expect("a ROOT volume")
        .to_string();
    client
        .wait(
            &client
                .destroy_virtual_machine(&VmId::from(vm.id.as_str()), true)
                .await?,
        )
        .await?;
    Ok((snapshot.id.to_string(), vm.id.to_string(), root))
}

async fn assert_removed_lists_are_empty(
    client: &Client,
    snapshot: &str,
    vm: &str,
    root: &str,
) -> TestResult {
    for (command, name, id) in [
        ("listVolumes", "id", SPARE),
        ("listVolumes", "id", root),
        ("listVolumes", "ids", root),
        ("listVolumes", "virtualmachineid", vm),
        ("listSnapshots", "id", snapshot),
        ("listVirtualMachines", "id", vm),
        ("listIpForwardingRules", "virtualmachineid", vm),
        ("listDiskOfferings", "volumeid", SPARE),
        ("listSnapshots", "volumeid", SPARE),
    ] {
        let answer = list(client, command, &[(name, id)]).await;
        match command {
            // These filter nothing by the removed entity: the list is as without it.
            "listDiskOfferings" => assert_eq!(answer?["count"], json!(1), "{command} {name}"),
            _ => assert_eq!(answer?, json!({}), "{command} {name}={id}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_id_of_a_removed_entity_gives_an_empty_list_not_431() -> TestResult {
    let (_sim, client) = start(None).await?;
    let (snapshot, vm, root) = remove_some(&client).await?;
    assert_removed_lists_are_empty(&client, &snapshot, &vm, &root).await
}

#[tokio::test]
async fn removed_ids_are_kept_across_a_restart_from_the_state_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cloud.json");
    let (sim, client) = start(Some(path.clone())).await?;
    let (snapshot, vm, root) = remove_some(&client).await?;
    sim.stop().await?;

    let (_sim, client) = start(Some(path)).await?;
    assert_removed_lists_are_empty(&client, &snapshot, &vm, &root).await?;
    let err = list(&client, "listVolumes", &[("id", NEVER)])
        .await
        .unwrap_err();
    assert_bad_id(&err, "listVolumes", "id", NEVER);
    Ok(())
}
