//! `ferry demo`, run as the README tells a new user to run it: pgtest1 through a drill
//! and its cleanup, then a recovery plan of two tiers, its first gated on a TCP port of
//! cloudsim's emulated guest, through a drill and its cleanup.

mod cli_harness;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

// The user's environment must not steer the demo: every `ferry` here is bare.
use cli_harness::Ferry;
use serde_json::Value;

#[test]
fn the_demo_fails_pgtest1_over_shows_the_device_map_drills_a_plan_cleans_up_and_exits_0() {
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
        "6. Recovery plan demo: registered web1 (1 disk, 20 GiB, on oma), and the plan of 2 tiers:",
        "tier 1 (database): pgtest1, ready when: tcp port ",
        "tier 2 (web): web1, ready when: running",
        "7. Drill of plan demo: tier by tier",
        "Plan RTO (request → last VM ready): ",
        "8. Cleanup of plan demo, last tier first",
        "1. web1 (web) cleaned up",
        "2. pgtest1 (database) cleaned up",
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

    // The drill, tier by tier: every line about the database tier before the first
    // about the web tier, and both VMs ready — pgtest1 once its guest's port answered
    // on its test VM's loopback address.
    let drill = section(stdout, "7. Drill of plan demo", "8. Cleanup of plan demo");
    let first_web = drill.find("(web): ").expect("the web tier's progress");
    let last_database = drill.rfind("(database): ").expect("the database tier's");
    assert!(last_database < first_web, "{drill}");
    let row = |vm: &str| -> Vec<&str> {
        drill
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(vm))
            .unwrap_or_else(|| panic!("a row of {vm}:\n{drill}"))
            .split_whitespace()
            .collect()
    };
    let pgtest1 = row("pgtest1");
    assert_eq!(
        pgtest1[..4],
        ["1", "database", "pgtest1", "ready"],
        "{drill}"
    );
    let seen = pgtest1.join(" ");
    assert!(seen.contains("tcp port "), "{seen}");
    assert!(seen.contains(" passed ("), "{seen}");
    assert!(seen.contains("connected to 127."), "{seen}");
    let web1 = row("web1");
    assert_eq!(web1[..4], ["2", "web", "web1", "ready"], "{drill}");
    assert!(web1.join(" ").contains("running passed"), "{drill}");
}

/// The text of `text` from `from` to `to`.
fn section<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("`{from}` in:\n{text}"));
    let end = text[start..].find(to).map_or(text.len(), |end| start + end);
    &text[start..end]
}

#[test]
fn the_demo_in_json_is_one_document_with_both_runs_the_plan_and_no_leftovers() {
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

    // The plan: its drill done with both VMs ready, the database's TCP gate passed on a
    // loopback address, the web server once the database was ready; its cleanup done,
    // the web tier first.
    let plan = &report["plan"];
    assert_eq!(plan["plan"]["name"], "demo", "{stdout}");
    let drill = &plan["drill"];
    assert_eq!(drill["state"], "done", "{stdout}");
    assert_eq!(drill["workflow"], "test_failover", "{stdout}");
    let vms = drill["vms"].as_array().expect("the drill's VMs");
    let vm = |name: &str| -> &Value {
        vms.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the drill: {stdout}"))
    };
    let (pgtest1, web1) = (vm("pgtest1"), vm("web1"));
    assert_eq!((&pgtest1["tier"], &web1["tier"]), (&1.into(), &2.into()));
    for v in [pgtest1, web1] {
        assert_eq!(v["state"], "ready", "{stdout}");
        assert_eq!(v["readiness"]["ready"], true, "{stdout}");
    }
    let gate = &pgtest1["readiness"]["gates"][0];
    assert_eq!(gate["kind"], "tcp", "{stdout}");
    assert_eq!(gate["verdict"], "passed", "{stdout}");
    assert!(
        gate["last_seen"]
            .as_str()
            .is_some_and(|seen| seen.starts_with("connected to 127.")),
        "{stdout}"
    );
    assert_eq!(web1["readiness"]["gates"][0]["kind"], "running", "{stdout}");
    let rto = |v: &Value| v["rto_ms"].as_i64().expect("an RTO");
    assert!(rto(pgtest1) > 0 && rto(pgtest1) < rto(web1), "{stdout}");
    assert_eq!(
        rto(drill),
        rto(web1),
        "the plan's RTO is its last VM's: {stdout}"
    );
    let cleanup = &plan["cleanup"];
    assert_eq!(cleanup["state"], "done", "{stdout}");
    assert_eq!(cleanup["workflow"], "cleanup", "{stdout}");
    let order: Vec<(&str, i64, &str)> = cleanup["vms"]
        .as_array()
        .expect("the cleanup's VMs")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or("?"),
                v["tier"].as_i64().unwrap_or(0),
                v["state"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert!(order.contains(&("web1", 1, "ready")), "{stdout}");
    assert!(order.contains(&("pgtest1", 2, "ready")), "{stdout}");
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
    let mut console = None;
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
        }
        if let Some(rest) = line.strip_prefix("The web console is at ") {
            console = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    // Keep reading what it writes, as a terminal would.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let (server, token) = (server.expect("the server URL"), token.expect("the token"));
    // The console it names is served there, asking who signs in first.
    let console = console.expect("the console's URL is printed");
    assert_eq!(console, format!("{server}/"));
    let answer = http_get(&console);
    assert!(
        answer.starts_with("HTTP/1.1 303") && answer.contains("location: /sign-in"),
        "{answer}"
    );
    let listed = Ferry::bare()
        .args(["vm", "list", "--output", "json"])
        .env("FERRY_SERVER", &server)
        .env("FERRY_TOKEN", &token)
        .run();
    listed.code(0);
    let vms: Value = serde_json::from_str(&listed.stdout).expect("JSON");
    let states: Vec<(&str, &str)> = vms
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or("?"),
                v["state"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("pgtest1", "ready_for_failover"),
            ("web1", "ready_for_failover")
        ]
    );
    // The plan the demo drilled is there, and its drill counts: it needs none.
    let plans = Ferry::bare()
        .args(["plan", "list", "--output", "json"])
        .env("FERRY_SERVER", &server)
        .env("FERRY_TOKEN", &token)
        .run();
    plans.code(0);
    let plans: Value = serde_json::from_str(&plans.stdout).expect("JSON");
    assert_eq!(plans[0]["name"], "demo", "{plans}");
    assert_eq!(plans[0]["needs_drill"], false, "{plans}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let status = child.wait().expect("the demo exits");
    assert!(status.success(), "{status:?}");
    drain.join().expect("the stderr reader ends with the demo");
}

/// A bare HTTP/1.1 GET of `url` (http://host:port/path): the response head, lower-cased
/// header names as the server sends them.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut stream = std::net::TcpStream::connect(host).expect("connects");
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("writes");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads");
    answer
}
