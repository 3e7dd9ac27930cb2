//! The deployed topology (issue 13): a volume agent (`ferry volumed`) on every
//! appliance, engine workers (`ferry serve`) on PostgreSQL that see no disks
//! themselves — all real processes on port 0, CloudStack being cloudsim.
//!
//! Each test checks DESIGN §5 in cloudsim at the end: every replica back on its
//! appliance (or on its committed VM at its planned device), no target VM left, no
//! volume ferry created left behind.

mod agents_harness;
mod cli_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use agents_harness::{Setup, Topology, Vm, block_on, vms};
use cloudstack::{VmFilter, VolumeFilter};
use serde_json::Value;

/// Polls `what` every 20 ms until it is `Some`, for at most `within`.
fn eventually<T>(what: &str, within: Duration, mut look: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = look() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ferry failover WORKFLOW VM --wait --output json` on worker `i`: the run.
fn failover(t: &Topology, i: usize, workflow: &str, vm: &str) -> Value {
    let out = t
        .ferry(i)
        .args(["failover", workflow, vm, "--wait", "--output", "json"])
        .run();
    assert_eq!(
        out.code,
        0,
        "ferry failover {workflow} {vm}: {}\n{}\n{}",
        out.stdout,
        out.stderr,
        t.logs()
    );
    out.json()
}

/// DESIGN §5 at rest, in cloudsim: every replica of every VM on its appliance, no VM
/// but the appliances alive, no volume but the replicas and the appliances' ROOTs.
fn assert_at_rest(t: &Topology, committed: &BTreeMap<String, String>) {
    block_on(async {
        let cloud = t.cloud.client();
        let appliances: BTreeSet<String> = t.cloud.appliances.values().cloned().collect();
        let mut replicas = BTreeSet::new();
        for vm in vms() {
            let home = committed
                .get(&vm.name)
                .cloned()
                .unwrap_or_else(|| t.cloud.appliances[&vm.appliance].clone());
            for id in &vm.replicas {
                replicas.insert(id.clone());
                let volume = cloud
                    .get_volume(&id.as_str().into())
                    .await
                    .expect("listVolumes")
                    .unwrap_or_else(|| panic!("replica {id} of {} was deleted", vm.name));
                assert_eq!(
                    volume.virtualmachineid.as_ref().map(|v| v.to_string()),
                    Some(home.clone()),
                    "replica {id} of {} is not where it belongs",
                    vm.name
                );
            }
        }
        let alive: BTreeSet<String> = cloud
            .list_virtual_machines(&VmFilter::default())
            .await
            .expect("listVirtualMachines")
            .into_iter()
            .filter(|v| !matches!(v.state.as_str(), "Destroyed" | "Expunging"))
            .map(|v| v.id.to_string())
            .collect();
        let expected: BTreeSet<String> = appliances
            .iter()
            .cloned()
            .chain(committed.values().cloned())
            .collect();
        assert_eq!(alive, expected, "VMs alive besides the appliances");
        for volume in cloud
            .list_volumes(&VolumeFilter::default())
            .await
            .expect("listVolumes")
        {
            let id = volume.id.to_string();
            let an_appliance_root = volume.volume_type == "ROOT"
                && volume
                    .virtualmachineid
                    .as_ref()
                    .is_some_and(|vm| appliances.contains(vm.as_str()));
            assert!(
                replicas.contains(&id) || an_appliance_root,
                "volume {id} ({}, {}) was left behind",
                volume.name,
                volume.volume_type
            );
        }
    });
}

/// Run `run_id` once it has ended, as worker `i` shows it.
fn ended(t: &Topology, i: usize, run_id: &str) -> Value {
    eventually("the run to end", Duration::from_secs(120), || {
        let run = t
            .ferry(i)
            .args(["run", "show", run_id, "--output", "json"])
            .run()
            .json();
        matches!(
            run["state"].as_str(),
            Some("done" | "failed" | "stuck" | "unwound")
        )
        .then_some(run)
    })
}

/// The calls cloudsim counted for `command`.
fn calls(t: &Topology, command: &str) -> u64 {
    t.cloud.stats()["calls"][command].as_u64().unwrap_or(0)
}

#[test]
fn every_workflow_runs_through_the_agents_of_three_appliances_and_two_workers() {
    let mut proxies = BTreeMap::new();
    let t = Topology::start(Setup::default(), &mut proxies);
    t.register_all();
    let all = vms();

    // Each appliance as the engine sees it: its agent, reachable, with the replicas
    // registered on it, the disks it sees and the slots CloudStack has left.
    let listed = t
        .ferry(0)
        .args(["appliance", "list", "--output", "json"])
        .run();
    let listed = listed.ok().json();
    for vm in &all {
        let a = listed
            .as_array()
            .expect("a list")
            .iter()
            .find(|a| a["name"] == vm.appliance.as_str())
            .expect("every appliance is listed");
        assert_eq!(a["agent_url"], t.agent_urls[&vm.appliance].as_str(), "{a}");
        assert_eq!(a["reachable"], true, "{a}");
        assert_eq!(a["api_revision"], volumed::API_REVISION, "{a}");
        assert_eq!(a["replicas"], vm.replicas.len(), "{a}");
        assert_eq!(a["data_volumes_attached"], vm.replicas.len(), "{a}");
        assert_eq!(a["free_slots"], 32 - vm.replicas.len(), "{a}");
        // The appliance's own disk and its replicas, seen by its agent only.
        assert_eq!(a["devices"], vm.replicas.len() + 1, "{a}");
        assert_eq!(a["backlog"], 0, "{a}");
    }
    let table = t.ferry(1).args(["appliance", "list"]).run();
    assert!(
        table.ok().stdout.contains("reachable") && table.stdout.contains("of 32"),
        "{}",
        table.stdout
    );

    // Drills on every appliance at once, spread over both workers.
    let drills: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .iter()
            .enumerate()
            .map(|(i, vm)| {
                let t = &t;
                s.spawn(move || failover(t, i % 2, "test", &vm.name))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("joined"))
            .collect()
    });
    for run in &drills {
        assert_eq!(run["state"], "done", "{run}");
    }
    for vm in &all {
        assert_eq!(failover(&t, 1, "cleanup", &vm.name)["state"], "done");
    }
    assert_at_rest(&t, &BTreeMap::new());

    // Live failover and rollback of one VM, live failover and commit of another.
    let (web, db) = (&all[0], &all[1]);
    assert_eq!(failover(&t, 0, "live", &web.name)["state"], "done");
    assert_eq!(failover(&t, 1, "rollback", &web.name)["state"], "done");
    assert_eq!(failover(&t, 1, "live", &db.name)["state"], "done");
    assert_eq!(failover(&t, 0, "commit", &db.name)["state"], "done");
    // The committed VM is the one CloudStack knows by the protected VM's name.
    let target = block_on(t.cloud.client().list_virtual_machines(&VmFilter {
        name: Some(db.name.clone()),
        ..VmFilter::default()
    }))
    .expect("listVirtualMachines")
    .into_iter()
    .find(|v| v.name == db.name && v.state == "Running")
    .expect("the committed VM runs")
    .id
    .to_string();
    assert_at_rest(&t, &BTreeMap::from([(db.name.clone(), target.clone())]));
    // The committed VM has every disk, boot at 0 and data at 1, 2 in disk order.
    block_on(async {
        let on_target = t
            .cloud
            .client()
            .list_volumes(&VolumeFilter {
                virtual_machine_id: Some(target.as_str().into()),
                ..VolumeFilter::default()
            })
            .await
            .expect("listVolumes");
        let by_device: BTreeMap<i64, String> = on_target
            .iter()
            .map(|v| (v.deviceid.expect("a device id"), v.id.to_string()))
            .collect();
        let expected: BTreeMap<i64, String> =
            [0, 1, 2].into_iter().zip(db.replicas.clone()).collect();
        assert_eq!(by_device, expected);
    });

    // The workers saw no disk: every volume operation of a drill was journaled by
    // the agent of the VM's appliance, and by no other.
    for agent in &t.agents {
        let journal = block_on(store::Store::connect(
            agent.journal.to_str().expect("utf-8"),
        ))
        .expect("the agent's journal opens");
        for (vm, run) in all.iter().zip(&drills) {
            let run_id = run["id"].as_str().expect("run id");
            let ops = block_on(journal.ops_for_run(&run_id.into())).expect("ops");
            if vm.appliance == agent.appliance {
                assert!(
                    ops.len() >= 2 * vm.replicas.len(),
                    "{} journaled {} operations of {}'s drill",
                    agent.appliance,
                    ops.len(),
                    vm.name
                );
            } else {
                assert!(
                    ops.is_empty(),
                    "{} acted for {}: {ops:?}",
                    agent.appliance,
                    vm.name
                );
            }
        }
    }
}

#[test]
fn a_failover_is_refused_before_anything_changes_when_the_agent_cannot_serve() {
    for (setup, appliance, expected) in [
        (
            Setup {
                engine_token: "not-the-agents-token",
                workers: 1,
                ..Setup::default()
            },
            "oma-a",
            "missing or wrong bearer token",
        ),
        (
            Setup {
                swapped: vec![("oma-a", "oma-b")],
                workers: 1,
                ..Setup::default()
            },
            "oma-a",
            "this volume agent serves appliance VM",
        ),
        (
            Setup {
                agent_flags: vec![("oma-a", vec!["--api-revision".into(), "99".into()])],
                workers: 1,
                ..Setup::default()
            },
            "oma-a",
            "version mismatch",
        ),
    ] {
        let mut proxies = BTreeMap::new();
        let t = Topology::start(setup, &mut proxies);
        t.register_all();
        let vm = vms()
            .into_iter()
            .find(|v| v.appliance == appliance)
            .expect("a VM");
        let before = (
            calls(&t, "attachVolume"),
            calls(&t, "detachVolume"),
            calls(&t, "deployVirtualMachine"),
        );
        let refused = t.ferry(0).args(["failover", "test", &vm.name]).run();
        assert_ne!(refused.code, 0, "{}", refused.stdout);
        assert!(
            refused.stderr.contains(expected) && refused.stderr.contains("Nothing was changed"),
            "{}",
            refused.stderr
        );
        assert!(
            !refused.stderr.contains("agent-test-token"),
            "{}",
            refused.stderr
        );
        let after = (
            calls(&t, "attachVolume"),
            calls(&t, "detachVolume"),
            calls(&t, "deployVirtualMachine"),
        );
        assert_eq!(before, after, "nothing was sent to CloudStack");
        let shown = t
            .ferry(0)
            .args(["vm", "show", &vm.name, "--output", "json"])
            .run();
        assert_eq!(shown.ok().json()["state"], "ready_for_failover");
        assert_at_rest(&t, &BTreeMap::new());
    }
}

#[test]
fn an_agent_down_is_refused_at_start_and_a_stale_generation_is_fenced() {
    let mut proxies = BTreeMap::new();
    let mut t = Topology::start(
        Setup {
            workers: 1,
            ..Setup::default()
        },
        &mut proxies,
    );
    t.register_all();
    t.agent("oma-b").kill();
    let shown = t
        .ferry(0)
        .args(["appliance", "show", "oma-b", "--output", "json"])
        .run();
    let shown = shown.ok().json();
    assert_eq!(shown["reachable"], false, "{shown}");
    assert!(
        shown["error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1")),
        "{shown}"
    );
    assert_eq!(shown["replicas"], 3, "known from the store: {shown}");
    assert_eq!(shown["free_slots"], 29, "known from CloudStack: {shown}");
    let metrics = block_on(async {
        reqwest::get(format!("{}/metrics", t.workers[0].url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    });
    for line in [
        "ferry_appliance_agent_up{appliance=\"oma-b\"} 0",
        "ferry_appliance_agent_up{appliance=\"oma-a\"} 1",
        "ferry_appliance_replicas{appliance=\"oma-b\"} 3",
        "ferry_appliance_free_slots{appliance=\"oma-a\"} 30",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let unknown = t.ferry(0).args(["appliance", "show", "oma-z"]).run();
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no appliance named `oma-z`"),
        "{}",
        unknown.stderr
    );
    let refused = t.ferry(0).args(["failover", "test", "db"]).run();
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("volume agent of appliance oma-b")
            && refused.stderr.contains("Nothing was changed"),
        "{}",
        refused.stderr
    );
    t.restart_agent("oma-b");

    // An agent remembers the highest generation of a run and refuses an older one.
    let url = t.agent("oma-b").url();
    let detach = |generation: i64| {
        block_on(async {
            reqwest::Client::new()
                .post(format!("{url}/v1/detach"))
                .bearer_auth(agents_harness::AGENT_TOKEN)
                .header("idempotency-key", format!("fence-test/{generation}"))
                .json(&serde_json::json!({
                    "volume_id": "no-such-volume",
                    "fence": {"run_id": "run-fenced", "generation": generation},
                }))
                .send()
                .await
                .expect("answered")
        })
    };
    let _ = detach(5);
    let stale = detach(4);
    assert_eq!(stale.status(), 409);
    let body: Value = block_on(stale.json()).expect("JSON");
    assert_eq!(body["error"]["code"], "fenced", "{body}");
    assert_at_rest(&t, &BTreeMap::new());
}

/// Kills `appliance`'s agent once cloudsim has counted one more `command` than
/// `before`, starts it again, and returns how many were counted when it was killed.
fn kill_agent_during(t: &mut Topology, appliance: &str, command: &str, before: u64) -> u64 {
    let at = until_called(t, command, before);
    t.restart_agent(appliance);
    at
}

/// Waits until cloudsim has counted more `command` calls than `before`: how many.
fn until_called(t: &Topology, command: &str, before: u64) -> u64 {
    eventually(
        &format!("a {command} to reach CloudStack"),
        Duration::from_secs(60),
        || {
            let n = calls(t, command);
            (n > before).then_some(n)
        },
    )
}

#[test]
fn an_agent_killed_in_the_middle_of_an_attach_a_detach_and_a_revert_finishes_them() {
    let mut proxies = BTreeMap::new();
    let mut t = Topology::start(Setup::default(), &mut proxies);
    t.register_all();
    let db: Vm = vms().into_iter().find(|v| v.name == "db").expect("db");
    // Slow jobs (seconds at cloudsim's time scale): time to kill the agent mid-job.
    t.slow(serde_json::json!({
        "attachVolume": 1_500_000,
        "detachVolume": 1_500_000,
        "revertSnapshot": 1_500_000,
    }));
    let ferry = t.ferry(0);
    let drill = std::thread::spawn(move || {
        ferry
            .args(["failover", "test", "db", "--wait", "--output", "json"])
            .run()
    });
    // The drill first detaches the replicas from the appliance, then attaches them.
    kill_agent_during(&mut t, "oma-b", "detachVolume", 0);
    let attaches = calls(&t, "attachVolume");
    kill_agent_during(&mut t, "oma-b", "attachVolume", attaches);
    let drilled = drill.join().expect("joined");
    assert_eq!(drilled.code, 0, "{}\n{}", drilled.stderr, t.logs());
    assert_eq!(drilled.json()["state"], "done");
    assert_eq!(
        calls(&t, "attachVolume"),
        db.replicas.len() as u64,
        "every replica attached to the test VM once: nothing twice"
    );

    // The cleanup reverts the replicas to the drill's snapshots: kill the agent there.
    let ferry = t.ferry(1);
    let cleanup = std::thread::spawn(move || {
        ferry
            .args(["failover", "cleanup", "db", "--wait", "--output", "json"])
            .run()
    });
    kill_agent_during(&mut t, "oma-b", "revertSnapshot", 0);
    let cleaned = cleanup.join().expect("joined");
    assert_eq!(cleaned.code, 0, "{}\n{}", cleaned.stderr, t.logs());
    assert_eq!(cleaned.json()["state"], "done");
    assert_eq!(
        calls(&t, "revertSnapshot"),
        db.replicas.len() as u64,
        "each revert once"
    );
    assert_at_rest(&t, &BTreeMap::new());
}

#[test]
fn a_worker_and_an_agent_killed_together_are_taken_over_and_resumed() {
    let mut proxies = BTreeMap::new();
    let mut t = Topology::start(Setup::default(), &mut proxies);
    t.register_all();
    t.slow(serde_json::json!({"attachVolume": 1_000_000}));
    let run_id = t.start_run(0, "test", "db");
    until_called(&t, "attachVolume", 0);
    t.kill_worker(0);
    t.restart_agent("oma-b");
    let run = ended(&t, 1, &run_id);
    assert_eq!(run["state"], "done", "{run}\n{}", t.logs());
    assert_eq!(calls(&t, "attachVolume"), 3, "nothing attached twice");
    assert_eq!(failover(&t, 1, "cleanup", "db")["state"], "done");
    assert_at_rest(&t, &BTreeMap::new());
}

#[test]
fn a_network_cut_between_the_engine_and_an_agent_is_waited_out() {
    let mut proxies = BTreeMap::new();
    let t = Topology::start(
        Setup {
            workers: 1,
            proxied: vec!["oma-c"],
            ..Setup::default()
        },
        &mut proxies,
    );
    t.register_all();
    let proxy = &proxies["oma-c"];
    t.slow(serde_json::json!({"createSnapshot": 500_000}));
    let run_id = t.start_run(0, "test", "cache");
    until_called(&t, "createSnapshot", 0);
    proxy.cut();
    // Longer than the client's own retries: the run says what it waits for.
    let waiting = eventually(
        "the run to wait for the agent",
        Duration::from_secs(60),
        || {
            let shown = t.ferry(0).args(["run", "show", &run_id]).run();
            shown
                .stdout
                .contains("waiting for the volume agent on oma-c")
                .then_some(shown.stdout)
        },
    );
    eprintln!("{waiting}");
    proxy.restore();
    let run = ended(&t, 0, &run_id);
    assert_eq!(run["state"], "done", "{run}\n{}", t.logs());
    assert_eq!(
        calls(&t, "createSnapshot"),
        1,
        "the snapshot was taken once"
    );
    assert_eq!(failover(&t, 0, "cleanup", "cache")["state"], "done");
    assert_at_rest(&t, &BTreeMap::new());
}

#[test]
fn an_agent_killed_during_guest_preparation_never_runs_it_twice_and_the_run_unwinds_cleanly() {
    let marks = tempfile::tempdir().expect("a directory");
    let started = marks.path().join("started");
    // The preparation notes each start, then works for a while: time to kill the agent.
    let script = format!("echo \"$0\" >> {}; sleep 30", started.display());
    let prep = volumed::GuestPrep::new("/bin/sh", ["-c", script.as_str(), "{device}"]);
    let mut proxies = BTreeMap::new();
    let mut t = Topology::start(
        Setup {
            workers: 1,
            guest_prep: Some((prep, vec!["cache"])),
            ..Setup::default()
        },
        &mut proxies,
    );
    t.register_all();
    let ferry = t.ferry(0);
    let drill = std::thread::spawn(move || {
        ferry
            .args(["failover", "test", "cache", "--wait", "--output", "json"])
            .run()
    });
    eventually(
        "the preparation to start on the appliance",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&started)
                .ok()
                .filter(|s| !s.is_empty())
        },
    );
    t.restart_agent("oma-c");
    let drilled = drill.join().expect("joined");
    let run = drilled.json();
    // The preparation was interrupted: it is not run again, the disk it may have
    // changed is reverted to the drill's snapshot, and everything is put back.
    assert_eq!(run["state"], "unwound", "{run}\n{}", t.logs());
    assert!(
        run["error"].as_str().unwrap_or_default().contains("guest"),
        "{run}"
    );
    let starts = std::fs::read_to_string(&started).expect("the marks");
    assert_eq!(starts.lines().count(), 1, "started once: {starts}");
    assert_at_rest(&t, &BTreeMap::new());
}
