//! A management-server restart in the middle of a test failover, as an operator meets
//! it: `ferry serve` and a cloudsim keeping its cloud in a state file; cloudsim is killed
//! while the replicas' attach jobs run, stays down until ferry says it is waiting for
//! CloudStack, and comes back on the same port. The attach jobs it was running end
//! failed ("job cancelled because of management server restart"), which says nothing
//! of what the hypervisor did: ferry looks, attaches what is not attached, and the run
//! ends done with every disk at its planned device id.

mod cli_harness;

use std::time::{Duration, Instant};

use cli_harness::{Options, Server, pgtest1};
use serde_json::{Value, json};

fn run(server: &Server, id: &str) -> Value {
    server.json(["run", "show", id])
}

/// Reads the run until `done` says so, for at most a minute.
fn until(server: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let detail = run(server, id);
        if done(&detail) {
            return detail;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} never came: {detail}\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn step_state<'a>(detail: &'a Value, name: &str) -> &'a str {
    detail["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .and_then(|s| s["state"].as_str())
        .unwrap_or_default()
}

#[test]
fn a_test_failover_rides_out_a_management_server_restart() {
    let mut server = Server::start_with(Options {
        time_scale: 0.05,
        restartable_cloudsim: true,
        ..Options::default()
    });
    let file = server.write("pgtest1.toml", &pgtest1());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    // The attaches take 3 s: long enough to be cut short.
    server.latency(json!({"attachVolume": 60_000}));
    let started = server.json(["failover", "test", "pgtest1"]);
    let id = started["id"].as_str().expect("a run id").to_string();
    until(&server, &id, "the attach", |d| {
        step_state(d, "attach-replicas") == "running"
            && d["jobs"].as_array().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j["kind"] == "attach" && j["job_id"].is_string())
            })
    });

    let mut waited = Value::Null;
    server.restart_cloudsim(|server| {
        waited = until(server, &id, "ferry saying it waits", |d| {
            d["waiting"].is_object()
        });
    });
    let waiting = &waited["waiting"];
    assert!(
        waiting["for"]
            .as_str()
            .is_some_and(|w| w.starts_with("CloudStack: ")),
        "{waited}"
    );
    let shown = server
        .ferry()
        .args(["run", "show", &id])
        .run()
        .ok()
        .stdout
        .clone();
    // It may have answered again by now; the events keep the wait either way.
    assert!(shown.contains("waiting for CloudStack"), "{shown}");

    let ended = until(&server, &id, "the end of the run", |d| {
        !matches!(
            d["state"].as_str(),
            Some("pending" | "running" | "unwinding")
        )
    });
    assert_eq!(ended["state"], "done", "{ended}\n{}", server.logs());
    assert!(ended.get("waiting").is_none(), "{ended}");
    let events = ended["events"].to_string();
    assert!(events.contains("CloudStack answers again"), "{events}");
    let vm = server.json(["vm", "show", "pgtest1"]);
    assert_eq!(vm["state"], "test_failed_over", "{vm}");
    assert_eq!(vm["target"]["verified"], true, "{vm}");
}
