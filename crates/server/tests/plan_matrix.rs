//! Issue #15's plan matrix, through the API against cloudsim's emulated guests on
//! loopback networks: a 3-tier plan of 8 VMs with 1 to 6 disks — through a drill and
//! its cleanup, a live failover and its rollback, a live failover and its commit — and
//! a VM of tier 2 failing (its run unwinds) under the policy `stop` and under
//! `continue`. After every plan run, DESIGN §5's invariants for every VM: each replica
//! attached to exactly one of {its appliance, its target VM}, where ferry records it
//! (at the planned device id on a target: boot at 0, data at 1, 2, 4, 5, … in unit
//! order); no VM in CloudStack but the appliances and the targets ferry records; no
//! volume but the appliances' ROOTs and the replicas; snapshots only while a drill is
//! up; a drill's replicas back to their content after its cleanup. The plan's and the
//! tiers' hooks run in order, each only for its kind of failover.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cloudsim::guests::rules::{GuestRule, GuestRules};
use cloudsim::world::ids;
use common::{GenVm, Server, TestResult, free_port};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

const PLAN_DEADLINE: Duration = Duration::from_secs(120);

/// The VMs' disk counts: vm000 … vm007.
const DISKS: [usize; 8] = [6, 1, 2, 3, 4, 5, 2, 3];
/// The tiers, in order: data, services, web.
const TIERS: [&[&str]; 3] = [
    &["vm000", "vm001"],
    &["vm002", "vm003", "vm004"],
    &["vm005", "vm006", "vm007"],
];

struct Site {
    server: Server,
    vms: Vec<GenVm>,
    cloud: cloudstack::Client,
    /// The appliances' ids and their ROOT volumes' ids.
    appliances: Vec<(String, String)>,
    hooks: tempfile::TempDir,
}

/// The 8 VMs on loopback networks (test `127.80.<net>.0/24`, production
/// `127.81.<net>.0/24`); every guest listens on `port` 0.2 s after its VM runs.
async fn site(net: u8, port: u16) -> anyhow::Result<Site> {
    let (mut world, vms) = common::world_of(&DISKS);
    for n in &mut world.networks {
        match n.id.as_deref() {
            Some(ids::NETWORK_TEST) => n.cidr = format!("127.80.{net}.0/24"),
            Some(ids::NETWORK_PRODUCTION) => n.cidr = format!("127.81.{net}.0/24"),
            _ => {}
        }
    }
    world.guests = GuestRules::new(vec![GuestRule {
        vm: "vm*".into(),
        boot_ms: 200_000,
        tcp_ports: vec![port],
        http_ports: vec![],
        never: false,
    }])?;
    let appliances = world
        .appliances
        .iter()
        .map(|a| {
            (
                a.id.clone().expect("set"),
                a.root_volume_id.clone().expect("set"),
            )
        })
        .collect();
    let server = common::server_of(world, &vms).await?;
    let cloud = cloudstack::Client::new(cloudstack::Config::new(
        server.sim.endpoint(),
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    ))?;
    Ok(Site {
        server,
        vms,
        cloud,
        appliances,
        hooks: tempfile::tempdir()?,
    })
}

/// A hook that appends `FERRY_HOOK FERRY_VM` and `tag` to the site's hook log.
fn hook(log: &Path, when: &str, scope: &str, tag: &str) -> String {
    format!(
        r#"
when = "{when}"
scope = "{scope}"
run = {{ kind = "command", program = "/bin/sh", args = ["-c", "echo \"{tag} $FERRY_HOOK $FERRY_VM\" >> {log}"], timeout_secs = 10 }}
"#,
        log = log.display()
    )
}

/// The plan: three tiers, each VM's guest port as a gate; hooks of the plan (before a
/// drill, after a live failover, after a cleanup) and of the services tier (before,
/// both kinds of failover).
fn plan(site: &Site, port: u16, policy: &str) -> String {
    let log = site.hooks.path().join("hooks.log");
    let mut text = format!(
        r#"
name = "shop"
[on_failure]
test = "{policy}"
live = "{policy}"

[[hooks]]{}
[[hooks]]{}
[[hooks]]{}
"#,
        hook(&log, "before", "test", "drill"),
        hook(&log, "after", "live", "live"),
        hook(&log, "after", "cleanup", "cleaned"),
    );
    for (t, (name, vms)) in ["data", "services", "web"].iter().zip(TIERS).enumerate() {
        text.push_str(&format!(
            r#"
[[tiers]]
name = "{name}"
vms = {vms:?}
[[tiers.gates]]
kind = "tcp"
port = {port}
deadline_secs = 20
interval_secs = 1
"#
        ));
        if t == 1 {
            text.push_str(&format!(
                "[[tiers.hooks]]{}",
                hook(&log, "before", "both", "services")
            ));
        }
    }
    text
}

fn hook_log(site: &Site) -> Vec<String> {
    std::fs::read_to_string(site.hooks.path().join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Starts `workflow` of the plan and waits for its end.
async fn run_plan(site: &Site, workflow: &str) -> anyhow::Result<Value> {
    let (status, started) = site
        .server
        .post(&format!("/v1/plans/shop/{workflow}"), None)
        .await?;
    anyhow::ensure!(
        status == StatusCode::ACCEPTED,
        "{workflow}: {status} {started}"
    );
    let id = started["id"].as_str().unwrap_or_default();
    site.server.finish_plan_run(id, PLAN_DEADLINE).await
}

fn plan_vm<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["vms"]
        .as_array()
        .and_then(|vms| vms.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {run}"))
}

fn states(run: &Value) -> BTreeMap<String, String> {
    run["vms"]
        .as_array()
        .map(|vms| {
            vms.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_string(),
                        v["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The device ids a target VM's disks get, in unit order: boot at 0, data disks at
/// 1, 2, 4, 5, … (3 is the CD-ROM's).
fn planned_device_ids(disks: usize) -> Vec<i64> {
    let mut ids = vec![0];
    let mut next = 1;
    while ids.len() < disks {
        if next == 3 {
            next += 1;
        }
        ids.push(next);
        next += 1;
    }
    ids
}

/// Each replica's content generation (cloudsim's), by volume id.
async fn generations(site: &Site) -> anyhow::Result<BTreeMap<String, u64>> {
    let volumes = site.server.admin("volumes").await?;
    Ok(volumes
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["generation"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect())
}

/// DESIGN §5's invariants for every VM, each in `expected` state (by name).
async fn invariants(site: &Site, expected: &BTreeMap<&str, &str>) -> TestResult {
    let mut targets = Vec::new();
    for vm in &site.vms {
        let (_, detail) = site.server.get(&format!("/v1/vms/{}", vm.name)).await?;
        let state = detail["state"].as_str().unwrap_or_default();
        let want = expected.get(vm.name.as_str()).copied().unwrap_or("?");
        anyhow::ensure!(state == want, "{} is {state}, expected {want}", vm.name);
        anyhow::ensure!(
            detail["active_run"].is_null(),
            "{} is still in a run: {}",
            vm.name,
            detail["active_run"]
        );
        // A committed VM is no longer ferry's to fail over: it shows no target, and its
        // disks are recorded on the VM it became.
        let target = if state == "committed" {
            detail["disks"][0]["attached_vm_id"]
                .as_str()
                .map(str::to_string)
        } else {
            detail["target"]["id"].as_str().map(str::to_string)
        };
        let holder = match state {
            "ready_for_failover" => {
                anyhow::ensure!(target.is_none(), "{} keeps a target: {detail}", vm.name);
                vm.appliance_id.clone()
            }
            _ => {
                let target =
                    target.ok_or_else(|| anyhow::anyhow!("{} has no target: {detail}", vm.name))?;
                let live = site
                    .cloud
                    .list_virtual_machines(&cloudstack::VmFilter {
                        id: Some(ids_of(&target)),
                        ..Default::default()
                    })
                    .await?;
                anyhow::ensure!(
                    live.first().is_some_and(|v| v.state == "Running"),
                    "{}'s target {target} is not running: {live:?}",
                    vm.name
                );
                targets.push(target.clone());
                target
            }
        };
        let planned = planned_device_ids(vm.replicas.len());
        for (d, replica) in vm.replicas.iter().enumerate() {
            let volume = site
                .cloud
                .get_volume(&::ids::VolumeId::from(replica.as_str()))
                .await?
                .ok_or_else(|| anyhow::anyhow!("replica {replica} of {} is gone", vm.name))?;
            let on = volume.virtualmachineid.as_ref().map(|v| v.to_string());
            anyhow::ensure!(
                on.as_deref() == Some(holder.as_str()),
                "{}'s replica {replica} is on {on:?}, not {holder}",
                vm.name
            );
            let recorded = detail["disks"]
                .as_array()
                .and_then(|disks| disks.iter().find(|x| x["replica_volume_id"] == *replica))
                .ok_or_else(|| anyhow::anyhow!("{replica} not in {detail}"))?;
            anyhow::ensure!(
                recorded["attached_vm_id"].as_str() == on.as_deref()
                    && recorded["device_id"].as_i64() == volume.deviceid,
                "ferry records {replica} on {} at {}, CloudStack on {on:?} at {:?}",
                recorded["attached_vm_id"],
                recorded["device_id"],
                volume.deviceid
            );
            if holder == vm.appliance_id {
                anyhow::ensure!(volume.volume_type == "DATADISK", "{replica}: {volume:?}");
            } else {
                anyhow::ensure!(
                    volume.deviceid == Some(planned[d]),
                    "{}'s disk {d} ({replica}) is at device {:?}, planned {}",
                    vm.name,
                    volume.deviceid,
                    planned[d]
                );
                let kind = if d == 0 { "ROOT" } else { "DATADISK" };
                anyhow::ensure!(volume.volume_type == kind, "{replica}: {volume:?}");
            }
            let snapshots = site
                .cloud
                .list_snapshots(Some(&::ids::VolumeId::from(replica.as_str())), None)
                .await?;
            let allowed = match state {
                "test_failed_over" => 1..=1,
                "failed_over" => 0..=1,
                _ => 0..=0,
            };
            anyhow::ensure!(
                allowed.contains(&snapshots.len()),
                "{} ({state}): replica {replica} has {} snapshots",
                vm.name,
                snapshots.len()
            );
        }
    }
    // Nothing in CloudStack that ferry does not track.
    let live: Vec<_> = site
        .cloud
        .list_virtual_machines(&cloudstack::VmFilter::default())
        .await?
        .into_iter()
        .filter(|v| v.state != "Destroyed" && v.state != "Expunging")
        .collect();
    for v in &live {
        anyhow::ensure!(
            site.appliances.iter().any(|(a, _)| *a == v.id.as_str())
                || targets.iter().any(|t| t == v.id.as_str()),
            "VM {} ({}, {}) is not tracked",
            v.name,
            v.id,
            v.state
        );
    }
    anyhow::ensure!(
        live.len() == site.appliances.len() + targets.len(),
        "{} VMs live, {} appliances and {} targets",
        live.len(),
        site.appliances.len(),
        targets.len()
    );
    let volumes = site.server.admin("volumes").await?;
    for v in volumes.as_array().into_iter().flatten() {
        let id = v["id"].as_str().unwrap_or_default();
        if v["state"] == "Destroy" || v["state"] == "Expunged" {
            continue;
        }
        anyhow::ensure!(
            site.appliances.iter().any(|(_, root)| root == id)
                || site
                    .vms
                    .iter()
                    .any(|vm| vm.replicas.iter().any(|r| r == id)),
            "volume {id} ({}, on {}) is neither an appliance's ROOT nor a replica",
            v["name"],
            v["virtualmachineid"]
        );
    }
    Ok(())
}

fn ids_of(id: &str) -> ::ids::VmId {
    ::ids::VmId::from(id)
}

fn all(state: &'static str) -> BTreeMap<&'static str, &'static str> {
    TIERS
        .iter()
        .flat_map(|t| t.iter())
        .map(|n| (*n, state))
        .collect()
}

/// Every VM's run was asked for only once every VM of the tier before was through.
async fn tier_by_tier(site: &Site, run: &Value) -> TestResult {
    let mut tiers: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for v in run["vms"].as_array().into_iter().flatten() {
        let Some(id) = v["run_id"].as_str() else {
            continue;
        };
        let (_, vm_run) = site.server.get(&format!("/v1/runs/{id}")).await?;
        tiers
            .entry(v["tier"].as_i64().unwrap_or(0))
            .or_default()
            .push(vm_run);
    }
    let tiers: Vec<Vec<Value>> = tiers.into_values().collect();
    for pair in tiers.windows(2) {
        let through = pair[0]
            .iter()
            .filter_map(|r| r["finished_at"].as_str())
            .max()
            .unwrap_or_default();
        for later in &pair[1] {
            let created = later["created_at"].as_str().unwrap_or_default();
            anyhow::ensure!(
                created > through,
                "{} was asked for at {created}, before the tier before it was through ({through})",
                later["vm"]
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_vms_in_three_tiers_drill_clean_up_fail_over_roll_back_and_commit() -> TestResult {
    let port = free_port();
    let site = site(1, port).await?;
    let (status, added) = site
        .server
        .post(
            "/v1/plans",
            Some(json!({ "definition": plan(&site, port, "stop") })),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    invariants(&site, &all("ready_for_failover")).await?;
    let before = generations(&site).await?;

    // The drill.
    let drill = run_plan(&site, "test-failover").await?;
    assert_eq!(drill["state"], "done", "{drill}");
    assert!(states(&drill).values().all(|s| s == "ready"), "{drill}");
    for (t, names) in TIERS.iter().enumerate() {
        for name in *names {
            let v = plan_vm(&drill, name);
            assert_eq!(v["tier"], t as i64 + 1, "{v}");
            assert_eq!(v["readiness"]["ready"], true, "{v}");
            assert!(v["rto_ms"].as_i64().unwrap() > 0, "{v}");
        }
    }
    let vm_rtos: Vec<i64> = drill["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rto_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(drill["rto_ms"].as_i64(), vm_rtos.iter().max().copied());
    let timings = drill["tier_timings"].as_array().unwrap();
    assert_eq!(timings.len(), 3, "{drill}");
    for t in timings {
        assert!(
            t["vms_ms"].as_i64().unwrap() >= 200,
            "a guest boots in 0.2 s: {t}"
        );
    }
    tier_by_tier(&site, &drill).await?;
    invariants(&site, &all("test_failed_over")).await?;
    assert_eq!(
        hook_log(&site),
        [
            "drill plan_before_test_failover shop",
            "services tier_before_test_failover vm002,vm003,vm004"
        ],
        "the drill's hooks, in order; the others not run"
    );
    let recorded: Vec<(&str, &str, &str)> = drill["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["tier_name"].as_str().unwrap_or("plan"),
                h["point"].as_str().unwrap(),
                h["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        recorded,
        [
            ("plan", "before", "succeeded"),
            ("services", "before", "succeeded")
        ],
        "the drill's hooks as its plan run recorded them: {drill}"
    );

    // Its cleanup: every replica back on its appliance, as it was.
    let cleanup = run_plan(&site, "cleanup").await?;
    assert_eq!(cleanup["state"], "done", "{cleanup}");
    assert_eq!(plan_vm(&cleanup, "vm005")["tier"], 1, "the web tier first");
    tier_by_tier(&site, &cleanup).await?;
    invariants(&site, &all("ready_for_failover")).await?;
    assert_eq!(generations(&site).await?, before, "the replicas' content");
    assert_eq!(
        hook_log(&site)[2..],
        ["cleaned plan_after_cleanup shop"],
        "only the cleanup's hook: the drill's and the services' are not the cleanup's"
    );

    // A live failover and its rollback.
    let live = run_plan(&site, "live-failover").await?;
    assert_eq!(live["state"], "done", "{live}");
    tier_by_tier(&site, &live).await?;
    invariants(&site, &all("failed_over")).await?;
    let rollback = run_plan(&site, "rollback").await?;
    assert_eq!(rollback["state"], "done", "{rollback}");
    invariants(&site, &all("ready_for_failover")).await?;

    // A live failover and its commit.
    let live = run_plan(&site, "live-failover").await?;
    assert_eq!(live["state"], "done", "{live}");
    let commit = run_plan(&site, "commit").await?;
    assert_eq!(commit["state"], "done", "{commit}");
    assert_eq!(
        plan_vm(&commit, "vm000")["tier"],
        1,
        "a commit goes in order"
    );
    invariants(&site, &all("committed")).await?;
    assert_eq!(
        hook_log(&site)[3..],
        [
            "services tier_before_live_failover vm002,vm003,vm004",
            "live plan_after_live_failover shop",
            "services tier_before_live_failover vm002,vm003,vm004",
            "live plan_after_live_failover shop",
        ],
        "each live failover's hooks, and none of its rollback's or commit's"
    );
    Ok(())
}

/// A VM of tier 2 fails (its deploy's job fails; its run unwinds) under `policy`: what
/// came up stays, and the plan's cleanup takes back all of it.
async fn a_tier_two_failure(net: u8, policy: &str) -> anyhow::Result<(Value, Value)> {
    let port = free_port();
    let site = site(net, port).await?;
    site.server
        .post(
            "/v1/plans",
            Some(json!({ "definition": plan(&site, port, policy) })),
        )
        .await?;
    // Tier 1 deploys two VMs; the third deploy is tier 2's first.
    site.server
        .admin_post(
            "faults",
            json!({"command": "deployVirtualMachine", "nth": 3, "times": 1,
                   "fault": {"kind": "job_error", "errorcode": 530,
                             "errortext": "Insufficient capacity on the cluster"}}),
        )
        .await?;
    let drill = run_plan(&site, "test-failover").await?;
    let failed: Vec<String> = states(&drill)
        .into_iter()
        .filter(|(_, s)| s == "failed")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(failed.len(), 1, "one VM failed: {drill}");
    let failed = failed[0].as_str();
    assert!(TIERS[1].contains(&failed), "{failed} is of tier 2: {drill}");
    let detail = plan_vm(&drill, failed)["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("unwound"), "{detail}");
    let mut expected = all("test_failed_over");
    expected.insert(failed, "ready_for_failover");
    if policy == "stop" {
        for name in TIERS[2] {
            expected.insert(name, "ready_for_failover");
        }
    }
    invariants(&site, &expected).await?;

    let cleanup = run_plan(&site, "cleanup").await?;
    assert_eq!(cleanup["state"], "done", "{cleanup}");
    assert_eq!(plan_vm(&cleanup, failed)["state"], "skipped", "{cleanup}");
    invariants(&site, &all("ready_for_failover")).await?;
    Ok((drill, cleanup))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_failing_in_tier_two_stops_a_drill_before_tier_three() -> TestResult {
    let (drill, cleanup) = a_tier_two_failure(2, "stop").await?;
    assert_eq!(drill["state"], "stopped", "{drill}");
    for name in TIERS[2] {
        assert_eq!(plan_vm(&drill, name)["state"], "skipped", "{drill}");
        assert_eq!(plan_vm(&cleanup, name)["state"], "skipped", "{cleanup}");
    }
    // The tier's other VMs came up and stay for inspection.
    let ready = TIERS[1]
        .iter()
        .filter(|n| plan_vm(&drill, n)["state"] == "ready")
        .count();
    assert_eq!(ready, 2, "{drill}");
    assert_eq!(drill["tier_timings"][2]["started_at"], Value::Null);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_failing_in_tier_two_lets_a_drill_go_on_under_continue() -> TestResult {
    let (drill, cleanup) = a_tier_two_failure(3, "continue").await?;
    assert_eq!(drill["state"], "failed", "{drill}");
    let error = drill["error"].as_str().unwrap_or_default();
    let failed: Vec<&str> = TIERS[1]
        .iter()
        .copied()
        .filter(|n| plan_vm(&drill, n)["state"] == "failed")
        .collect();
    assert!(error.contains(failed[0]), "{error}");
    for name in TIERS[2] {
        assert_eq!(plan_vm(&drill, name)["state"], "ready", "{drill}");
        assert_eq!(plan_vm(&cleanup, name)["state"], "ready", "{cleanup}");
    }
    assert_eq!(
        drill["rto_ms"],
        Value::Null,
        "no plan RTO with a VM not ready"
    );
    Ok(())
}

/// A replica of the last tier's last VM detached from its appliance by hand: the
/// drill is refused before anything changes — the problem named by VM and field, no
/// plan run, no VM run, nothing new in CloudStack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_of_the_last_tier_that_cannot_fail_over_stops_the_plan_before_anything_changes()
-> TestResult {
    let port = free_port();
    let site = site(4, port).await?;
    site.server
        .post(
            "/v1/plans",
            Some(json!({ "definition": plan(&site, port, "stop") })),
        )
        .await?;
    let vm007 = site.vms.iter().find(|v| v.name == "vm007").expect("vm007");
    let replica = ::ids::VolumeId::from(vm007.replicas[2].as_str());
    // An operator's hand, not ferry's: straight to CloudStack.
    #[allow(clippy::disallowed_methods)]
    let job = site.cloud.detach_volume(&replica).await?;
    site.cloud.wait(&job).await?;
    let calls = site.server.admin("stats").await?["calls"].clone();

    let (status, refused) = site
        .server
        .post("/v1/plans/shop/test-failover", None)
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let problems = refused["error"]["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{refused}");
    assert_eq!(problems[0]["field"], "tiers[2].vms[2]", "{refused}");
    let message = problems[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(replica.as_str()) && message.contains("not attached to the appliance"),
        "{message}"
    );
    let (_, runs) = site.server.get("/v1/plans/shop/runs").await?;
    assert_eq!(runs, json!([]), "no plan run");
    let (_, runs) = site.server.get("/v1/runs").await?;
    assert_eq!(runs, json!([]), "no VM run");
    // Only reads reached CloudStack.
    let after = site.server.admin("stats").await?["calls"].clone();
    let changed: Vec<&String> = after
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(command, n)| calls[command.as_str()] != **n)
        .map(|(command, _)| command)
        .collect();
    assert!(
        !changed.is_empty() && changed.iter().all(|c| c.starts_with("list")),
        "CloudStack was asked more than reads: {changed:?}"
    );
    Ok(())
}
