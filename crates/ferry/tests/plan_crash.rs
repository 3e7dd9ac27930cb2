//! A recovery plan whose server dies under it (issue #15): two `ferry serve` processes
//! on one PostgreSQL schema, a two-tier plan (pgtest1, then web1) with a TCP gate on
//! each VM's emulated guest. The process driving the drill is SIGKILLed while
//! pgtest1's gates are being tried; the other takes the plan run over once its lease
//! (2 s) has run out — not before —, tries the gates again and finishes the drill. Then
//! the process driving the cleanup is frozen (SIGSTOP) while web1's cleanup runs; a
//! restarted first process takes the plan run and web1's run over, and the frozen one,
//! thawed, writes nothing more. Each VM gets one run per plan run, and DESIGN §5's
//! invariants hold after each.

mod crash_harness;

use std::time::Duration;

use ::ids::VolumeId;
use anyhow::ensure;
use cloudsim::World;
use cloudsim::guests::rules::{GuestRule, GuestRules};
use cloudsim::world::{VolumeDef, ids};
use crash_harness::*;
use reqwest::Method;
use serde_json::{Value, json};

const WEB1_REPLICA: &str = "0000000b-0000-4000-8000-0000000000b1";
const WITHIN: Duration = Duration::from_secs(60);

/// The built-in world with web1's replica on the appliance too, the test network on
/// loopback (127.83.0.0/24), and a guest on every VM listening on `port` 1.5 s after
/// the VM runs.
fn world(port: u16) -> anyhow::Result<World> {
    let mut world = World::default();
    for n in &mut world.networks {
        if n.id.as_deref() == Some(ids::NETWORK_TEST) {
            n.cidr = "127.83.0.0/24".into();
        }
    }
    world.appliances[0].volumes.push(VolumeDef {
        id: Some(WEB1_REPLICA.into()),
        name: "web1-disk-2000".into(),
        size_gb: 20,
        zone: None,
    });
    world.guests = GuestRules::new(vec![GuestRule {
        vm: "*".into(),
        boot_ms: 150_000,
        tcp_ports: vec![port],
        http_ports: vec![],
        never: false,
    }])?;
    Ok(world)
}

const WEB1: &str = r#"
name = "web1"
source_id = "5029a4d2-8b1e-4c1a-9f3e-2d7c6b5a4eb1"
appliance = "oma"
[spec]
vcpu = 2
memory_mb = 2048
cpu_speed_mhz = 2000
firmware = "bios"
guest_os = "linux"
[[nics]]
mac = "00:50:56:8a:11:b1"
source_network = "VM Network"
test_network = "test"
production_network = "production"
[[disks]]
key = 2000
controller = "scsi"
bus = 0
unit = 0
capacity_gib = 20
label = "Hard disk 1"
boot = true
replica_volume_id = "0000000b-0000-4000-8000-0000000000b1"
"#;

fn plan(port: u16) -> String {
    format!(
        r#"
name = "app"
[[tiers]]
name = "database"
vms = ["pgtest1"]
[[tiers.gates]]
kind = "tcp"
port = {port}
deadline_secs = 30
interval_secs = 1
[[tiers]]
name = "web"
vms = ["web1"]
[[tiers.gates]]
kind = "tcp"
port = {port}
deadline_secs = 30
interval_secs = 1
"#
    )
}

/// A port nothing listens on now: the kernel's pick for 127.0.0.1, let go.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn plan_run(api: &Api, id: &str) -> anyhow::Result<Value> {
    api.expect(Method::GET, &format!("/v1/plan-runs/{id}"), None, 200)
        .await
}

fn vm_state<'a>(run: &'a Value, name: &str) -> &'a str {
    run["vms"]
        .as_array()
        .and_then(|vms| vms.iter().find(|v| v["name"] == name))
        .and_then(|v| v["state"].as_str())
        .unwrap_or("?")
}

/// Waits until plan run `id` (read through `api`) satisfies `want`.
async fn until(
    api: &Api,
    id: &str,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    eventually(what, WITHIN, || {
        let (api, id) = (api.clone(), id.to_string());
        let want = &want;
        async move {
            let run = plan_run(&api, &id).await?;
            ensure!(
                !matches!(run["state"].as_str(), Some("stopped" | "failed")),
                "the plan run ended {}: {run}",
                run["state"]
            );
            Ok(want(&run).then_some(run))
        }
    })
    .await
}

/// Which of `serves` drives the plan run `run` (by its `worker`), and the other.
fn driver(run: &Value, serves: &[Serve]) -> anyhow::Result<(usize, usize)> {
    match serves.iter().position(|s| run["worker"] == s.name.as_str()) {
        Some(i) => Ok((i, 1 - i)),
        None => anyhow::bail!("no process drives the plan run: {run}"),
    }
}

/// How many runs of `workflow` VM `name` has had.
async fn runs_of(api: &Api, name: &str, workflow: &str) -> anyhow::Result<usize> {
    let runs = api
        .expect(Method::GET, &format!("/v1/runs?vm={name}"), None, 200)
        .await?;
    Ok(runs.as_array().map_or(0, |r| {
        r.iter().filter(|r| r["workflow"] == workflow).count()
    }))
}

/// DESIGN §5 for both VMs: each replica on the VM ferry records it on (the appliance
/// at rest, the VM's target when failed over) at the device id it records; no VM but
/// the appliance and the targets; no volume but the appliance's ROOT and the replicas;
/// a snapshot of each replica exactly while a drill is up.
async fn invariants(sim: &Sim, api: &Api, state: &str) -> TestResult {
    let mut tracked = vec![ids::APPLIANCE_OMA.to_string()];
    let mut replicas = vec![ids::OMA_ROOT.to_string()];
    for name in ["pgtest1", "web1"] {
        let vm = api
            .expect(Method::GET, &format!("/v1/vms/{name}"), None, 200)
            .await?;
        ensure!(
            vm["state"] == state,
            "{name} is {}, not {state}",
            vm["state"]
        );
        let holder = match vm["target"]["id"].as_str() {
            Some(target) => target.to_string(),
            None => ids::APPLIANCE_OMA.to_string(),
        };
        ensure!(
            (state == "ready_for_failover") == (holder == ids::APPLIANCE_OMA),
            "{name} ({state}) has its disks with {holder}"
        );
        tracked.push(holder.clone());
        for d in vm["disks"].as_array().into_iter().flatten() {
            let id = d["replica_volume_id"].as_str().unwrap_or_default();
            replicas.push(id.to_string());
            let v = sim
                .cloud
                .get_volume(&VolumeId::from(id))
                .await?
                .ok_or_else(|| anyhow::anyhow!("replica {id} was deleted"))?;
            let on = v.virtualmachineid.as_ref().map(|v| v.to_string());
            ensure!(
                on.as_deref() == Some(holder.as_str())
                    && d["attached_vm_id"].as_str() == on.as_deref()
                    && d["device_id"].as_i64() == v.deviceid,
                "replica {id} of {name}: CloudStack has it on {on:?} at {:?}, ferry on {} at {}",
                v.deviceid,
                d["attached_vm_id"],
                d["device_id"]
            );
            let snapshots = sim
                .cloud
                .list_snapshots(Some(&VolumeId::from(id)), None)
                .await?;
            let want = usize::from(state == "test_failed_over");
            ensure!(
                snapshots.len() == want,
                "replica {id} has {} snapshots, expected {want}",
                snapshots.len()
            );
        }
    }
    tracked.sort();
    tracked.dedup();
    let live = sim.live_vms().await?;
    ensure!(
        live.len() == tracked.len() && live.iter().all(|v| tracked.contains(&v.id.to_string())),
        "VMs in CloudStack {:?}, ferry tracks {tracked:?}",
        live.iter().map(|v| (&v.name, &v.id)).collect::<Vec<_>>()
    );
    let stray: Vec<Value> = sim
        .volumes()
        .await?
        .into_iter()
        .filter(|v| !replicas.contains(&v["id"].as_str().unwrap_or_default().to_string()))
        .collect();
    ensure!(stray.is_empty(), "volumes left: {stray:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_run_whose_server_dies_is_taken_over_and_finished_by_another() -> TestResult {
    let pg = store::testing::postgres().await?;
    let port = free_port();
    let sim = sim_with(world(port)?, 0.01).await?;
    let site = Site::with_database(pg.url.clone())?;
    let result = async {
        let mut serves = vec![
            site.serve(&sim, "worker-a").await?,
            site.serve(&sim, "worker-b").await?,
        ];
        let api = serves[0].api.clone();
        api.add_pgtest1().await?;
        api.expect(Method::POST, "/v1/vms", Some(json!({ "definition": WEB1 })), 201)
            .await?;
        api.expect(Method::POST, "/v1/plans", Some(json!({ "definition": plan(port) })), 201)
            .await?;

        // The drill: whichever process drives it (the one it was asked of, or the
        // other's sweep, which may be first) is killed while pgtest1's gates are tried.
        let started = api
            .expect(Method::POST, "/v1/plans/app/test-failover", None, 202)
            .await?;
        let id = started["id"].as_str().unwrap_or_default().to_string();
        let held = until(&api, &id, "pgtest1's gates to be tried", |r| {
            vm_state(r, "pgtest1") == "checking"
        })
        .await?;
        let (dead, survivor) = driver(&held, &serves)?;
        serves[dead].kill()?;
        let killed_at = tokio::time::Instant::now();
        let api = serves[survivor].api.clone();
        let name = serves[survivor].name.clone();
        let taken = until(&api, &id, "the other process to take the drill over", |r| {
            r["worker"] == name.as_str()
        })
        .await?;
        let waited = killed_at.elapsed();
        println!(
            "{name} took the drill over {} ms after {} was killed (generation {} -> {})",
            waited.as_millis(),
            serves[dead].name,
            held["generation"],
            taken["generation"]
        );
        ensure!(
            waited >= Duration::from_secs(1),
            "{name} took the plan run over {waited:?} after the kill: before the lease could have run out"
        );
        ensure!(taken["generation"].as_i64() > held["generation"].as_i64());
        let done = until(&api, &id, "the drill to end", |r| r["state"] == "done").await?;
        ensure!(
            vm_state(&done, "pgtest1") == "ready" && vm_state(&done, "web1") == "ready",
            "{done}"
        );
        for vm in ["pgtest1", "web1"] {
            ensure!(
                runs_of(&api, vm, "test_failover").await? == 1,
                "{vm} was failed over once"
            );
        }
        invariants(&sim, &api, "test_failed_over").await?;

        // The cleanup, driven by the survivor, frozen while web1 (its first tier) is
        // cleaned up; the killed process, restarted, takes it over; the frozen one,
        // thawed, writes nothing more.
        let started = api
            .expect(Method::POST, "/v1/plans/app/cleanup", None, 202)
            .await?;
        let id = started["id"].as_str().unwrap_or_default().to_string();
        let held = until(&api, &id, "web1's cleanup to run", |r| {
            vm_state(r, "web1") == "running"
        })
        .await?;
        ensure!(held["worker"] == name.as_str(), "the only live process drives the cleanup: {held}");
        serves[survivor].freeze()?;
        let restarted = serves[dead].name.clone();
        serves[dead] = site.serve(&sim, &restarted).await?;
        let api = serves[dead].api.clone();
        let taken = until(&api, &id, "the restarted process to take the cleanup over", |r| {
            r["worker"] == restarted.as_str()
        })
        .await?;
        serves[survivor].thaw()?;
        println!(
            "{restarted} took the cleanup over from the frozen {name} (generation {} -> {})",
            held["generation"], taken["generation"]
        );
        ensure!(taken["generation"].as_i64() > held["generation"].as_i64());
        let done = until(&api, &id, "the cleanup to end", |r| r["state"] == "done").await?;
        ensure!(
            done["generation"] == taken["generation"],
            "the thawed process took nothing back: {done}"
        );
        ensure!(serves[survivor].alive(), "{name} died");
        for vm in ["pgtest1", "web1"] {
            ensure!(
                runs_of(&api, vm, "cleanup").await? == 1,
                "{vm} was cleaned up once"
            );
        }
        invariants(&sim, &api, "ready_for_failover").await?;
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", site.logs(60));
    }
    result
}
