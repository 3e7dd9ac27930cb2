//! `ferry demo`, run as the README tells a new user to run it.

mod cli_harness;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

// The user's environment must not steer the demo: every `ferry` here is bare.
use cli_harness::Ferry;
use serde_json::Value;

#[test]
fn the_demo_fails_pgtest1_over_shows_the_device_map_cleans_up_and_exits_0() {
    let started = Instant::now();
    let output = Ferry::bare().args(["demo"]).run();
    let elapsed = started.elapsed();
    output.code(0);
    let stdout = &output.stdout;
    println!("ferry demo took {:.1} s", elapsed.as_secs_f64());

    for expected in [
        "1. Registered pgtest1: 2 disks (boot 107 GiB, data 10 GiB), replicated to appliance oma.",
        "2. Test failover of pgtest1 (replica mode)",
        "attach-replicas ... done",
        "3. pgtest1 is test_failed_over on its test VM:",
        "Verified: 2 of 2 disks at their planned device ids (CloudStack listVolumes)",
        "4. Cleanup of pgtest1",
        "revert-replicas ... done",
        "5. pgtest1 is ready_for_failover; its replicas are back on the appliance oma:",
        "Checked in cloudsim: no test VM, no snapshot, no volume ferry created is left.",
    ] {
        assert!(
            stdout.contains(expected),
            "the demo prints `{expected}`:\n{stdout}"
        );
    }
    // The device map: the 107 GiB boot disk at 0, the 10 GiB data disk at 1.
    let map: Vec<(&str, &str, &str)> = stdout
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 5 && (cols[4] == "boot" || cols[4] == "data"))
                .then(|| (cols[0], cols[2], cols[4]))
        })
        .collect();
    assert_eq!(map, [("0", "107", "boot"), ("1", "10", "data")], "{stdout}");
    // Both replicas back on the appliance, each at its stable device path.
    let back: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" at /dev/disk/by-id/virtio-"))
        .collect();
    assert_eq!(back.len(), 2, "{stdout}");
    assert!(
        back[0].contains("Hard disk 1") && back[1].contains("Hard disk 2"),
        "{stdout}"
    );
}

#[test]
fn the_demo_in_json_is_one_document_with_both_runs_and_no_leftovers() {
    let output = Ferry::bare().args(["demo", "--output", "json"]).run();
    output.code(0);
    let stdout = &output.stdout;
    let report: Value = serde_json::from_str(stdout).expect("stdout is one JSON document");
    assert_eq!(report["vm"], "pgtest1");
    assert_eq!(report["test_failover"]["state"], "done");
    assert_eq!(report["test_failover"]["workflow"], "test_failover");
    assert_eq!(report["failed_over"]["target"]["verified"], true);
    assert_eq!(report["cleanup"]["state"], "done");
    assert_eq!(report["cleaned_up"]["state"], "ready_for_failover");
    assert_eq!(report["leftovers"], serde_json::json!([]));
    let jobs = report["test_failover"]["jobs"].as_array().expect("jobs");
    assert!(
        jobs.iter()
            .any(|j| j["kind"] == "deployVirtualMachine" && j["job_id"].is_string()),
        "{stdout}"
    );
}

#[test]
fn the_demo_keeps_the_api_up_for_the_other_commands_until_sigterm() {
    let mut child = Ferry::bare()
        .args([
            "demo",
            "--keep-running",
            "--listen",
            "127.0.0.1:0",
            "--output",
            "json",
        ])
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry demo starts");
    // In JSON mode the explorer's instructions are on stderr.
    let mut server = None;
    let mut token = None;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    for line in lines.by_ref() {
        let line = line.expect("reads stderr");
        if let Some(exports) = line.trim().strip_prefix("export ") {
            for pair in exports.split_whitespace() {
                match pair.split_once('=') {
                    Some(("FERRY_SERVER", v)) => server = Some(v.to_string()),
                    Some(("FERRY_TOKEN", v)) => token = Some(v.to_string()),
                    _ => {}
                }
            }
            break;
        }
    }
    // Keep reading what it writes, as a terminal would.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let (server, token) = (server.expect("the server URL"), token.expect("the token"));
    let listed = Ferry::bare()
        .args(["vm", "list", "--output", "json"])
        .env("FERRY_SERVER", &server)
        .env("FERRY_TOKEN", &token)
        .run();
    listed.code(0);
    let vms: Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert_eq!(vms[0]["name"], "pgtest1");
    assert_eq!(vms[0]["state"], "ready_for_failover");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let status = child.wait().expect("the demo exits");
    assert!(status.success(), "{status:?}");
    drain.join().expect("the stderr reader ends with the demo");
}
