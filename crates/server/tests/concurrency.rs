//! Concurrency through the REST API of `server::start` (in this process, port 0, a
//! SQLite file) against cloudsim:
//!
//! - 50 concurrent requests to start a test failover of one VM make exactly one run:
//!   one 202, and 49 × 409 whose message names that run;
//! - many VMs (`FERRY_CONCURRENCY_VMS`, 40 by default; 200 in `scripts/reliability`)
//!   of two disks each, spread over the appliances they need (32 replicas at most on
//!   one), are test-failed-over at once, the engine running all their runs together:
//!   every run is done, every VM has its test VM with both disks; then all are cleaned
//!   up at once: every run done, every replica back on its own appliance and seen by
//!   it, no VM, snapshot or volume left over. Nothing is lost.

use ::ids::VolumeId;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Server, TestResult, server, world};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::config::EngineSection;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_starts_of_one_vm_make_exactly_one_run() -> TestResult {
    let server =
        std::sync::Arc::new(server(cloudsim::World::default(), EngineSection::default()).await?);
    server.add_pgtest1().await?;
    // Slow snapshots (400 ms at the time scale) keep the run active while all fifty
    // requests arrive, so that every refusal is "busy", none "already failed over".
    server
        .admin_post("latency", json!({"createSnapshot": 400_000}))
        .await?;
    let mut requests = JoinSet::new();
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    for _ in 0..50 {
        let server = server.clone();
        let gate = gate.clone();
        requests.spawn(async move {
            gate.wait().await;
            server.post("/v1/vms/pgtest1/test-failover", None).await
        });
    }
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    while let Some(answer) = requests.join_next().await {
        let (status, body) = answer??;
        match status {
            StatusCode::ACCEPTED => accepted.push(body),
            StatusCode::CONFLICT => refused.push(body),
            other => anyhow::bail!("an answer that is neither 202 nor 409: {other} {body}"),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one run: {accepted:?}");
    assert_eq!(refused.len(), 49);
    let run_id = accepted[0]["id"].as_str().expect("a run id").to_string();
    for body in &refused {
        assert_eq!(body["error"]["code"], "conflict", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&run_id) && message.contains("active run"),
            "a refusal should name the active run {run_id}: {message}"
        );
    }
    let (_, runs) = server.get("/v1/runs?vm=pgtest1").await?;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    let run = server.finish(&run_id, Duration::from_secs(60)).await?;
    assert_eq!(run["state"], "done", "{run}");
    eprintln!("RELIABILITY concurrency one-vm requests=50 accepted=1 refused=49");
    Ok(())
}

/// Starts `workflow` for every VM at once; returns the run ids by VM.
async fn start_all(
    server: &std::sync::Arc<Server>,
    vms: &[String],
    workflow: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut requests = JoinSet::new();
    for name in vms {
        let server = server.clone();
        let path = format!("/v1/vms/{name}/{workflow}");
        let name = name.clone();
        requests.spawn(async move { (name, server.post(&path, None).await) });
    }
    let mut runs = BTreeMap::new();
    while let Some(answer) = requests.join_next().await {
        let (name, answer) = answer?;
        let (status, body) = answer?;
        anyhow::ensure!(
            status == StatusCode::ACCEPTED,
            "{workflow} of {name}: {status} {body}"
        );
        runs.insert(name, body["id"].as_str().expect("an id").to_string());
    }
    Ok(runs)
}

/// Waits until none of `runs` is active, reading them all in one list per look;
/// returns each one's final state (and error).
async fn all_finished(
    server: &Server,
    runs: &BTreeMap<String, String>,
    within: Duration,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let deadline = Instant::now() + within;
    loop {
        let (status, list) = server.get("/v1/runs?limit=1000").await?;
        anyhow::ensure!(status == StatusCode::OK, "{list}");
        let by_id: BTreeMap<&str, &Value> = list
            .as_array()
            .expect("a list")
            .iter()
            .map(|r| (r["id"].as_str().unwrap_or_default(), r))
            .collect();
        let mut out = BTreeMap::new();
        let mut active = 0;
        for (vm, id) in runs {
            let run = by_id
                .get(id.as_str())
                .ok_or_else(|| anyhow::anyhow!("run {id} of {vm} is lost"))?;
            if matches!(
                run["state"].as_str(),
                Some("pending" | "running" | "unwinding")
            ) {
                active += 1;
            }
            out.insert(vm.clone(), (*run).clone());
        }
        if active == 0 {
            return Ok(out);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{active} of {} runs still active after {within:?}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn not_done(runs: &BTreeMap<String, Value>) -> Vec<String> {
    runs.iter()
        .filter(|(_, r)| r["state"] != "done")
        .map(|(vm, r)| format!("{vm}: {} {}", r["state"], r["error"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_vms_failed_over_and_cleaned_up_at_once_all_finish_and_nothing_is_lost() -> TestResult
{
    let count: usize = std::env::var("FERRY_CONCURRENCY_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let (world, vms) = world(count, 2);
    let appliances = world.appliances.len();
    // Every run executes at once: the engine's concurrency is the VM count.
    let server = std::sync::Arc::new(
        server(
            world,
            EngineSection {
                concurrency: count,
                claim_interval_ms: 200,
                ..EngineSection::default()
            },
        )
        .await?,
    );
    let started = Instant::now();
    for vm in &vms {
        server.add(&vm.definition()).await?;
    }
    let registered = started.elapsed();
    let names: Vec<String> = vms.iter().map(|v| v.name.clone()).collect();

    let t = Instant::now();
    let tests = start_all(&server, &names, "test-failover").await?;
    let finished = all_finished(&server, &tests, Duration::from_secs(600)).await?;
    let failover_secs = t.elapsed().as_secs_f64();
    let bad = not_done(&finished);
    assert!(
        bad.is_empty(),
        "{} test failovers not done:\n{}",
        bad.len(),
        bad.join("\n")
    );
    // Every VM failed over, each test VM with its two disks (boot at 0, data at 1).
    let (_, list) = server.get("/v1/vms").await?;
    let states: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states.len(), count, "VMs lost: {list}");
    assert!(
        states.iter().all(|s| *s == "test_failed_over"),
        "{states:?}"
    );
    let volumes = server.admin("volumes").await?;
    let volumes = volumes.as_array().expect("a list");
    for vm in &vms {
        let on: Vec<(Option<&str>, Option<i64>)> = vm
            .replicas
            .iter()
            .map(|id| {
                let v = volumes
                    .iter()
                    .find(|v| v["id"] == id.as_str())
                    .unwrap_or_else(|| panic!("replica {id} of {} is gone", vm.name));
                (v["virtualmachineid"].as_str(), v["deviceid"].as_i64())
            })
            .collect();
        assert!(
            on[0].0.is_some() && on[0].0 == on[1].0 && on[0].0 != Some(vm.appliance_id.as_str()),
            "{}'s replicas are not on one test VM: {on:?}",
            vm.name
        );
        assert_eq!(
            (on[0].1, on[1].1),
            (Some(0), Some(1)),
            "{}: {on:?}",
            vm.name
        );
    }

    let t = Instant::now();
    let cleanups = start_all(&server, &names, "cleanup").await?;
    let finished = all_finished(&server, &cleanups, Duration::from_secs(600)).await?;
    let cleanup_secs = t.elapsed().as_secs_f64();
    let bad = not_done(&finished);
    assert!(
        bad.is_empty(),
        "{} cleanups not done:\n{}",
        bad.len(),
        bad.join("\n")
    );

    // Nothing lost: every replica back on its own appliance, seen there; every VM
    // ready again; no test VM, snapshot or other volume left.
    let (_, list) = server.get("/v1/vms").await?;
    assert!(
        list.as_array()
            .expect("a list")
            .iter()
            .all(|v| v["state"] == "ready_for_failover"),
        "{list}"
    );
    let volumes = server.admin("volumes").await?;
    let volumes = volumes.as_array().expect("a list");
    let replicas = count * 2;
    assert_eq!(
        volumes.len(),
        replicas + appliances,
        "replicas and the appliances' roots only"
    );
    let roots = &server.sim.announcement.sysfs_roots;
    for vm in &vms {
        for id in &vm.replicas {
            let v = volumes
                .iter()
                .find(|v| v["id"] == id.as_str())
                .unwrap_or_else(|| panic!("replica {id} is gone"));
            assert_eq!(
                v["virtualmachineid"].as_str(),
                Some(vm.appliance_id.as_str()),
                "replica {id} of {} is not back on {}",
                vm.name,
                vm.appliance
            );
            let by_id = roots[&vm.appliance].join("dev/disk/by-id").join(format!(
                "virtio-{}",
                cloudstack::volume_serial(&VolumeId::from(id))
            ));
            assert!(by_id.exists(), "{} does not see {id}", vm.appliance);
        }
    }
    let (_, runs_total) = server
        .get("/v1/runs?limit=1000")
        .await
        .map(|(s, v)| (s, v.as_array().map(Vec::len).unwrap_or(0)))?;
    assert_eq!(
        runs_total,
        count * 2,
        "one test failover and one cleanup per VM"
    );
    let stats = server.admin("stats").await?;
    assert_eq!(
        stats["max_concurrency_per_queue"], 1,
        "CloudStack's per-VM queues stayed serial"
    );
    let snapshots: u64 = stats["calls"]["createSnapshot"].as_u64().unwrap_or(0);
    assert_eq!(
        snapshots as usize, replicas,
        "one snapshot per replica, no more"
    );
    let deploys = stats["calls"]["deployVirtualMachine"].as_u64().unwrap_or(0);
    assert_eq!(deploys as usize, count, "one test VM per VM, no more");
    eprintln!(
        "RELIABILITY concurrency vms={count} appliances={appliances} registered_secs={:.1} \
         test_failover_secs={failover_secs:.1} cleanup_secs={cleanup_secs:.1} runs_done={} \
         api_calls={}",
        registered.as_secs_f64(),
        count * 2,
        stats["calls"]
            .as_object()
            .map(|c| c.values().filter_map(Value::as_u64).sum::<u64>())
            .unwrap_or(0)
    );
    Ok(())
}
