//! The client commands (`ferry vm|failover|run …`) against a real server: each test
//! starts its own `ferry cloudsim` and `ferry serve` on port 0 (tests/cli_harness), runs
//! `ferry` as an operator would, and checks exit codes, messages and — for the outputs
//! an operator or a program reads — golden files in tests/golden (README there says
//! how to regenerate them).

mod cli_harness;

use cli_harness::{Ferry, Options, Server, closed_port, golden, pgtest1};
use serde_json::json;
use std::time::Duration;

/// A server with pgtest1 registered.
fn with_pgtest1() -> Server {
    let server = Server::start();
    let file = server.write("pgtest1.toml", &pgtest1());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    server
}

/// The id of the newest run.
fn newest_run(server: &Server) -> String {
    let runs = server.json(["run", "list", "--limit", "1"]);
    runs[0]["id"].as_str().expect("a run id").to_string()
}

/// Plain progress lines for steps seen running depend on when the polls fell; the
/// lines that stay are the ones every run prints.
fn without_running_lines(text: &str) -> String {
    text.lines()
        .filter(|l| !(l.starts_with("  [") && l.ends_with("... running")))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn vm_add_list_show_and_remove_in_both_formats() {
    let server = Server::start();
    let empty = server.ferry().args(["vm", "list"]).run();
    empty.ok();
    assert_eq!(
        empty.stdout,
        "No protected VMs. Register one with `ferry vm add FILE`.\n"
    );
    assert_eq!(server.json(["vm", "list"]), json!([]));

    let file = server.write("pgtest1.toml", &pgtest1());
    let added = server.ferry().args(["vm", "add"]).args([&file]).run();
    added.ok();
    golden("vm_add.txt", &added.stdout);

    let list = server.ferry().args(["vm", "list"]).run();
    golden("vm_list.txt", &list.ok().stdout);
    let list = server
        .ferry()
        .args(["vm", "list", "--output", "json"])
        .run();
    golden("vm_list.json", &list.ok().stdout);
    assert_eq!(list.json()[0]["state"], "ready_for_failover");

    let show = server.ferry().args(["vm", "show", "pgtest1"]).run();
    golden("vm_show.txt", &show.ok().stdout);
    let show = server
        .ferry()
        .args(["vm", "show", "pgtest1", "--output", "json"])
        .run();
    golden("vm_show.json", &show.ok().stdout);
    assert_eq!(show.json()["disks"].as_array().map(Vec::len), Some(2));
    // `-o` is `--output`, anywhere on the line.
    for args in [
        ["vm", "show", "pgtest1", "-o", "json"],
        ["-o", "json", "vm", "show", "pgtest1"],
    ] {
        let short = server.ferry().args(args).run();
        assert_eq!(short.ok().stdout, show.stdout);
    }
    let short = server.ferry().args(["run", "list", "-o", "json"]).run();
    assert_eq!(short.ok().json(), json!([]));

    // Registered twice: refused, and the message says why.
    let again = server.ferry().args(["vm", "add"]).args([&file]).run();
    again.code(2);
    assert!(again.stderr.starts_with("error: "), "{}", again.stderr);
    assert!(again.stderr.contains("pgtest1"), "{}", again.stderr);

    let removed = server.ferry().args(["vm", "remove", "pgtest1"]).run();
    assert_eq!(
        removed.ok().stdout,
        "Removed pgtest1 from ferry. Nothing in CloudStack changed: its replica volumes stay where they are.\n"
    );
    let gone = server.ferry().args(["vm", "show", "pgtest1"]).run();
    gone.code(2);

    // A JSON definition is read as JSON (by its extension); `vm remove` in JSON says
    // what it removed.
    let toml_text = pgtest1();
    let definition: toml::Value = toml::from_str(&toml_text).expect("pgtest1.toml parses");
    let file = server.write(
        "pgtest1.json",
        &serde_json::to_string_pretty(&definition).expect("JSON"),
    );
    let added = server
        .ferry()
        .args(["vm", "add", "--output", "json"])
        .args([&file])
        .run();
    assert_eq!(added.ok().json()["name"], "pgtest1");
    let removed = server
        .ferry()
        .args(["vm", "remove", "pgtest1", "--output", "json"])
        .run();
    assert_eq!(removed.ok().json(), json!({ "removed": "pgtest1" }));
}

#[test]
fn a_refused_definition_lists_every_problem() {
    let server = Server::start();
    let bad = pgtest1()
        .replace(
            "c02e3d1b-4b54-499e-ae29-03785d73dd9b",
            "00000000-0000-4000-8000-000000000000",
        )
        .replace("test_network = \"test\"", "test_network = \"nowhere\"")
        .replace("capacity_gib = 107", "capacity_gib = 100");
    let file = server.write("bad.toml", &bad);
    let table = server.ferry().args(["vm", "add"]).args([&file]).run();
    table.code(2);
    assert!(table.stdout.is_empty(), "{}", table.stdout);
    assert!(
        table
            .stderr
            .lines()
            .filter(|l| l.starts_with("  - "))
            .count()
            >= 3,
        "every problem on its own line: {}",
        table.stderr
    );
    golden("vm_add_refused.txt", &table.transcript());
    let json = server
        .ferry()
        .args(["vm", "add", "--output", "json"])
        .args([&file])
        .run();
    json.code(2);
    assert_eq!(json.json()["error"]["code"], "invalid");
    golden("vm_add_refused.json", &json.stdout);

    // Nothing was registered.
    let list = server
        .ferry()
        .args(["vm", "list", "--output", "json"])
        .run();
    assert_eq!(list.ok().json(), json!([]));

    // Not TOML at all: refused with the parser's words.
    let file = server.write("garbage.toml", "name = [unclosed\n");
    let garbage = server.ferry().args(["vm", "add"]).args([&file]).run();
    garbage.code(2);
    assert!(
        garbage
            .stderr
            .starts_with("error: the VM definition was refused and nothing was registered"),
        "{}",
        garbage.stderr
    );

    // A file that cannot be read never reaches the server.
    let missing = server
        .ferry()
        .args(["vm", "add", "no-such-file.toml"])
        .run();
    missing.code(2);
    assert!(
        missing
            .stderr
            .starts_with("error: cannot read the VM definition file no-such-file.toml: "),
        "{}",
        missing.stderr
    );
    let missing = server
        .ferry()
        .args(["vm", "add", "no-such-file.toml", "--output", "json"])
        .run();
    missing.code(2);
    assert_eq!(missing.json()["error"]["code"], "unreadable_file");
}

/// pgtest1 with its boot disk only: docs/examples/pgtest1.toml without its last disk.
fn pgtest1_boot_disk_only() -> String {
    let text = pgtest1();
    let last_disk = text.rfind("[[disks]]").expect("pgtest1 has disks");
    text[..last_disk].to_string()
}

/// A server with pgtest1 registered on its boot disk only.
fn with_pgtest1_boot_disk_only() -> Server {
    let server = Server::start();
    let file = server.write("pgtest1.toml", &pgtest1_boot_disk_only());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    server
}

/// `vm update` adds a disk and changes a NIC of a VM with run history: the dry run
/// says what would change and writes nothing; the update keeps the VM, its runs and
/// its boot replica's device path; the same file again changes nothing; and the
/// updated VM fails over with both disks.
#[test]
fn vm_update_adds_a_disk_and_changes_a_nic_keeping_the_history() {
    let server = with_pgtest1_boot_disk_only();
    for command in ["test", "cleanup"] {
        server
            .ferry()
            .args(["failover", command, "pgtest1", "--wait"])
            .run()
            .ok();
    }
    let before = server.json(["vm", "show", "pgtest1"]);
    let runs_before = server.json(["run", "list", "--vm", "pgtest1"]);
    assert_eq!(runs_before.as_array().map(Vec::len), Some(2));
    let boot_path = before["disks"][0]["device_path"].clone();
    assert!(
        boot_path.is_string(),
        "cleanup found the boot replica: {before:#}"
    );

    let updated_text = pgtest1()
        .replace("00:50:56:8a:11:01", "00:50:56:8a:11:02")
        .replace("10.20.0.21", "10.20.0.22");
    let file = server.write("pgtest1-new.toml", &updated_text);
    let dry = server
        .ferry()
        .args(["vm", "update", "--dry-run"])
        .args([&file])
        .run();
    golden("vm_update_dry_run.txt", &dry.ok().stdout);
    assert_eq!(
        server.json(["vm", "show", "pgtest1"]),
        before,
        "a dry run writes nothing"
    );

    let update = server.ferry().args(["vm", "update"]).args([&file]).run();
    golden("vm_update.txt", &update.ok().stdout);
    let after = server.json(["vm", "show", "pgtest1"]);
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["state"], "ready_for_failover");
    assert_eq!(after["created_at"], before["created_at"]);
    assert_eq!(after["nics"][0]["mac"], "00:50:56:8a:11:02");
    assert_eq!(after["disks"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        after["disks"][0]["device_path"], boot_path,
        "kept: {after:#}"
    );
    assert_eq!(
        after["disks"][1]["attached_vm_id"],
        cloudsim::world::ids::APPLIANCE_OMA
    );
    let updates = after["updates"].as_array().expect("updates");
    assert_eq!(updates.len(), 1);
    let fields: Vec<&str> = updates[0]["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["nics[0].mac", "nics[0].production_ip", "disks[key=2001]"]
    );
    assert_eq!(server.json(["run", "list", "--vm", "pgtest1"]), runs_before);
    let shown = server.ferry().args(["vm", "show", "pgtest1"]).run();
    golden("vm_show_updated.txt", &shown.ok().stdout);

    // The same file again: nothing to change, nothing written.
    let again = server.ferry().args(["vm", "update"]).args([&file]).run();
    assert_eq!(
        again.ok().stdout,
        "pgtest1 is unchanged: the file is its registered definition. Nothing was written.\n"
    );
    let again = server.json(["vm", "update", file.to_str().expect("UTF-8")]);
    assert_eq!(again["changes"], json!([]));
    assert_eq!(again["updated"], false);
    assert_eq!(
        server.json(["vm", "show", "pgtest1"])["updates"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // The VM as updated fails over whole.
    server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .run()
        .ok();
    let vm = server.json(["vm", "show", "pgtest1"]);
    assert_eq!(vm["target"]["verified"], true, "{vm:#}");
    assert_eq!(vm["target"]["disks"].as_array().map(Vec::len), Some(2));
}

/// `vm update` refuses, exit 2 with nothing changed: an invalid file (every problem at
/// once), another VM's MAC (naming it), a VM that is not registered, a file that names
/// no VM, and a VM that is not at rest (saying what to do first).
#[test]
fn vm_update_refuses_what_it_cannot_do_and_changes_nothing() {
    let server = with_pgtest1_boot_disk_only();
    let other = server.write(
        "other.toml",
        &format!(
            r#"name = "other"
source_id = "other-source"
appliance = "oma"

[spec]
vcpu = 1
memory_mb = 1024
firmware = "bios"
guest_os = "linux"

[[nics]]
mac = "00:50:56:8a:22:01"
source_network = "VM Network"
test_network = "test"
production_network = "production"

[[disks]]
key = 2000
controller = "scsi"
bus = 0
unit = 0
capacity_gib = 10
boot = true
replica_volume_id = "{}"
"#,
            cloudsim::world::ids::PGTEST1_DISK_2001
        ),
    );
    server.ferry().args(["vm", "add"]).args([&other]).run().ok();
    let before = server.json(["vm", "show", "pgtest1"]);

    let bad = pgtest1_boot_disk_only()
        .replace("00:50:56:8a:11:01", "00:50:56:8a:22:01")
        .replace("test_network = \"test\"", "test_network = \"nowhere\"")
        .replace("capacity_gib = 107", "capacity_gib = 100");
    let file = server.write("bad.toml", &bad);
    let refused = server.ferry().args(["vm", "update"]).args([&file]).run();
    golden("vm_update_refused.txt", &refused.transcript());
    refused.code(2);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains(
            "  - nics[0].mac: 00:50:56:8a:22:01 is already the MAC of a NIC of the protected VM other"
        ),
        "{}",
        refused.stderr
    );
    let refused = server
        .ferry()
        .args(["vm", "update", "--output", "json"])
        .args([&file])
        .run();
    assert_eq!(refused.code(2).json()["error"]["code"], "invalid");
    assert_eq!(
        refused.json()["error"]["problems"].as_array().map(Vec::len),
        Some(3),
        "{}",
        refused.stdout
    );

    let unknown = server.write(
        "pgtest9.toml",
        &pgtest1_boot_disk_only().replace("name = \"pgtest1\"", "name = \"pgtest9\""),
    );
    let unknown = server.ferry().args(["vm", "update"]).args([&unknown]).run();
    unknown.code(2);
    assert!(
        unknown
            .stderr
            .starts_with("error: no protected VM named `pgtest9` is registered")
            && unknown.stderr.contains("`ferry vm add FILE` registers it"),
        "{}",
        unknown.stderr
    );
    let nameless = server.write("nameless.toml", "source_id = \"x\"\n");
    let nameless = server
        .ferry()
        .args(["vm", "update", "-o", "json"])
        .args([&nameless])
        .run();
    assert_eq!(nameless.code(2).json()["error"]["code"], "invalid");
    assert!(
        nameless.stderr.contains("has no `name`"),
        "{}",
        nameless.stderr
    );
    assert_eq!(server.json(["vm", "show", "pgtest1"]), before);

    // Not at rest: after a test failover, the cleanup comes first.
    server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .run()
        .ok();
    let test_failed_over = server.json(["vm", "show", "pgtest1"]);
    let file = server.write(
        "more-memory.toml",
        &pgtest1_boot_disk_only().replace("memory_mb = 8192", "memory_mb = 16384"),
    );
    let busy = server
        .ferry()
        .args(["vm", "update", "--dry-run"])
        .args([&file])
        .run();
    golden("vm_update_not_at_rest.txt", &busy.transcript());
    busy.code(2);
    let busy = server
        .ferry()
        .args(["vm", "update", "-o", "json"])
        .args([&file])
        .run();
    assert_eq!(busy.code(2).json()["error"]["code"], "conflict");
    assert_eq!(server.json(["vm", "show", "pgtest1"]), test_failed_over);
}

#[test]
fn a_test_failover_waited_on_then_shown_then_cleaned_up() {
    let server = with_pgtest1();
    let test = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .run();
    test.ok();
    golden(
        "failover_test_wait.txt",
        &without_running_lines(&test.stdout),
    );

    let show = server.ferry().args(["vm", "show", "pgtest1"]).run();
    golden("vm_show_test_failed_over.txt", &show.ok().stdout);
    assert!(
        show.stdout.contains("Verified: 2 of 2 disks"),
        "{}",
        show.stdout
    );
    let show = server
        .ferry()
        .args(["vm", "show", "pgtest1", "--output", "json"])
        .run();
    golden("vm_show_test_failed_over.json", &show.ok().stdout);
    assert_eq!(show.json()["target"]["verified"], true);

    let runs = server.ferry().args(["run", "list"]).run();
    golden("run_list.txt", &runs.ok().stdout);
    let runs = server
        .ferry()
        .args(["run", "list", "--vm", "pgtest1", "--output", "json"])
        .run();
    golden("run_list.json", &runs.ok().stdout);
    let id = runs.json()[0]["id"].as_str().expect("an id").to_string();

    let detail = server.ferry().args(["run", "show", &id]).run();
    detail.ok();
    golden("run_show_done.txt", &detail.stdout);
    // Every CloudStack job id the run submitted is named.
    let detail_json = server
        .ferry()
        .args(["run", "show", &id, "--output", "json"])
        .run();
    golden("run_show_done.json", &detail_json.ok().stdout);
    for job in detail_json.json()["jobs"].as_array().expect("jobs") {
        if let Some(job_id) = job["job_id"].as_str() {
            assert!(
                detail.stdout.contains(job_id),
                "{job_id} in\n{}",
                detail.stdout
            );
        }
    }

    // A second test failover is refused while the first stands: 409, exit 2.
    let busy = server.ferry().args(["failover", "test", "pgtest1"]).run();
    golden("error_conflict.txt", &busy.transcript());
    busy.code(2);
    let busy = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--output", "json"])
        .run();
    golden("error_conflict_json.txt", &busy.transcript());
    assert_eq!(busy.code(2).json()["error"]["code"], "conflict");
    // …and so is removing the VM.
    let remove = server.ferry().args(["vm", "remove", "pgtest1"]).run();
    remove.code(2);
    assert!(
        remove
            .stderr
            .contains("clean its test failover up first (`ferry failover cleanup pgtest1`)")
            && !remove.stderr.contains("roll"),
        "{}",
        remove.stderr
    );

    let cleanup = server
        .ferry()
        .args(["failover", "cleanup", "pgtest1", "--wait"])
        .run();
    cleanup.ok();
    assert!(cleanup.stdout.contains("done after"), "{}", cleanup.stdout);
    let show = server
        .ferry()
        .args(["vm", "show", "pgtest1", "--output", "json"])
        .run();
    let vm = show.ok().json();
    assert_eq!(vm["state"], "ready_for_failover");
    assert_eq!(vm["target"], serde_json::Value::Null);
}

#[test]
fn a_clone_mode_test_failover_with_json_output_prints_only_the_final_run() {
    let server = with_pgtest1();
    let test = server
        .ferry()
        .args([
            "failover", "test", "pgtest1", "--mode", "clone", "--wait", "--output", "json",
        ])
        .run();
    let run = test.ok().json();
    assert_eq!(run["state"], "done");
    assert_eq!(run["mode"], "clone");
    assert_eq!(run["workflow"], "test_failover");
    assert!(run["steps"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(run["story"].as_array().is_some_and(|s| !s.is_empty()));

    // The clones are on the test VM; the replicas never left the appliance.
    let vm = server.json(["vm", "show", "pgtest1"]);
    for disk in vm["disks"].as_array().expect("disks") {
        assert_eq!(disk["attached_vm_id"], cloudsim::world::ids::APPLIANCE_OMA);
    }
    assert_eq!(vm["target"]["verified"], true);

    let cleanup = server
        .ferry()
        .args([
            "failover", "cleanup", "pgtest1", "--wait", "--output", "json",
        ])
        .run();
    assert_eq!(cleanup.ok().json()["state"], "done");
}

#[test]
fn live_failover_rollback_and_commit() {
    let server = with_pgtest1();
    for (command, state) in [
        ("live", "failed_over"),
        ("rollback", "ready_for_failover"),
        ("live", "failed_over"),
        ("commit", "committed"),
    ] {
        let run = server
            .ferry()
            .args(["failover", command, "pgtest1", "--wait"])
            .run();
        run.ok();
        assert!(run.stdout.contains(" done after "), "{}", run.stdout);
        let vm = server.json(["vm", "show", "pgtest1"]);
        assert_eq!(vm["state"], state, "after {command}");
        if state == "failed_over" {
            assert_eq!(vm["target"]["name"], "pgtest1");
            let table = server.ferry().args(["vm", "show", "pgtest1"]).run();
            assert!(
                table.ok().stdout.contains("Target VM pgtest1 ("),
                "{}",
                table.stdout
            );
        }
    }
    // A rollback has nothing to roll back now: refused.
    let rollback = server
        .ferry()
        .args(["failover", "rollback", "pgtest1"])
        .run();
    rollback.code(2);
    assert!(
        rollback.stderr.starts_with("error: "),
        "{}",
        rollback.stderr
    );
    // A committed VM can be removed; it has run history, so only with --yes.
    server
        .ferry()
        .args(["vm", "remove", "pgtest1", "--yes"])
        .run()
        .ok();
}

#[test]
fn removing_a_vm_with_history_needs_yes_and_keeps_its_runs() {
    let server = with_pgtest1();
    for command in ["live", "rollback"] {
        server
            .ferry()
            .args(["failover", command, "pgtest1", "--wait"])
            .run()
            .ok();
    }
    let runs_before = server.json(["run", "list"]);
    assert_eq!(runs_before.as_array().map(Vec::len), Some(2));

    // No terminal to ask on (the tests pipe stdin and stderr) and no --yes: refused,
    // exit 2, saying to pass --yes; nothing changed.
    let refused = server.ferry().args(["vm", "remove", "pgtest1"]).run();
    golden("vm_remove_needs_yes.txt", &refused.transcript());
    refused.code(2);
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);
    let refused = server
        .ferry()
        .args(["vm", "remove", "pgtest1", "--output", "json"])
        .run();
    refused.code(2);
    assert_eq!(refused.json()["error"]["code"], "confirmation_required");
    let vm = server.json(["vm", "show", "pgtest1"]);
    assert_eq!(vm["state"], "ready_for_failover");
    assert_eq!(server.json(["run", "list"]), runs_before);

    // With --yes: removed, and the runs are still listed and shown, naming the VM.
    let removed = server
        .ferry()
        .args(["vm", "remove", "pgtest1", "--yes"])
        .run();
    assert_eq!(
        removed.ok().stdout,
        "Removed pgtest1 from ferry. Nothing in CloudStack changed: its replica volumes stay where they are.\n"
    );
    server.ferry().args(["vm", "show", "pgtest1"]).run().code(2);
    let listed = server.ferry().args(["run", "list"]).run();
    golden("run_list_removed_vm.txt", &listed.ok().stdout);
    let listed = server.json(["run", "list"]);
    let runs = listed.as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for (run, before) in runs.iter().zip(runs_before.as_array().expect("runs")) {
        assert_eq!(run["id"], before["id"]);
        assert_eq!(run["vm"], "pgtest1 (removed)");
    }
    let live = runs[1]["id"].as_str().expect("an id");
    let shown = server.ferry().args(["run", "show", live]).run();
    assert!(
        shown.ok().stdout.contains("pgtest1 (removed)"),
        "{}",
        shown.stdout
    );
    let shown = server.json(["run", "show", live]);
    assert_eq!(shown["workflow"], "live_failover");
    assert_eq!(shown["state"], "done");

    // The name is free again: a new VM, without history, removed without a question.
    let file = server.write("pgtest1.toml", &pgtest1());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    server.ferry().args(["vm", "remove", "pgtest1"]).run().ok();
}

#[test]
fn without_wait_a_failover_prints_its_run_and_watch_follows_it() {
    let server = with_pgtest1();
    let started = server.ferry().args(["failover", "test", "pgtest1"]).run();
    started.ok();
    let id = newest_run(&server);
    assert_eq!(
        started.stdout,
        format!(
            "Started run {id}: test_failover (replica mode) of pgtest1, pending.\n\
             Follow it with `ferry run watch {id}`; `ferry run show {id}` tells what happened.\n"
        )
    );
    let watch = server.ferry().args(["run", "watch", &id]).run();
    watch.ok();
    assert!(
        watch.stdout.contains(&format!("Run {id} done after")),
        "{}",
        watch.stdout
    );
    assert!(
        watch.stdout.contains("[10/10] record ... done"),
        "{}",
        watch.stdout
    );

    let cleanup = server
        .ferry()
        .args(["failover", "cleanup", "pgtest1", "--output", "json"])
        .run();
    let summary = cleanup.ok().json();
    assert_eq!(summary["workflow"], "cleanup");
    assert_eq!(summary["state"], "pending");
    let id = summary["id"].as_str().expect("an id");
    let watched = server
        .ferry()
        .args(["run", "watch", id, "--output", "json"])
        .run();
    assert_eq!(watched.ok().json()["state"], "done");

    // A done run is not stuck: retry and abandon are refused (409, exit 2).
    for action in ["retry", "abandon"] {
        let refused = server.ferry().args(["run", action, id]).run();
        refused.code(2);
        assert!(
            refused.stderr.contains("not stuck"),
            "{action}: {}",
            refused.stderr
        );
    }
}

#[test]
fn errors_say_what_is_wrong_and_exit_2() {
    let server = with_pgtest1();

    let missing = server.ferry().args(["vm", "show", "nope"]).run();
    golden("error_not_found.txt", &missing.transcript());
    missing.code(2);
    let missing = server
        .ferry()
        .args(["vm", "show", "nope", "--output", "json"])
        .run();
    golden("error_not_found_json.txt", &missing.transcript());
    assert_eq!(missing.code(2).json()["error"]["code"], "not_found");
    let missing = server.ferry().args(["failover", "test", "nope"]).run();
    missing.code(2);
    assert!(missing.stderr.contains("nope"), "{}", missing.stderr);
    let missing = server.ferry().args(["run", "show", "no-such-run"]).run();
    missing.code(2);
    assert!(
        missing.stderr.starts_with("error: no run no-such-run"),
        "{}",
        missing.stderr
    );

    let wrong_token = server
        .ferry()
        .env("FERRY_TOKEN", "not-the-token")
        .args(["vm", "list"])
        .run();
    golden("error_unauthorized.txt", &wrong_token.transcript());
    wrong_token.code(2);
    // Told what to set, not what HTTP header to send.
    assert!(
        wrong_token.stderr.contains("FERRY_TOKEN")
            && !wrong_token.stderr.contains("Authorization")
            && !wrong_token.stderr.contains("header"),
        "{}",
        wrong_token.stderr
    );
    let wrong_token = server
        .ferry()
        .env("FERRY_TOKEN", "not-the-token")
        .args(["vm", "list", "--output", "json"])
        .run();
    golden("error_unauthorized_json.txt", &wrong_token.transcript());
    assert_eq!(wrong_token.code(2).json()["error"]["code"], "unauthorized");

    let no_token = server
        .ferry()
        .env_remove("FERRY_TOKEN")
        .args(["vm", "list"])
        .run();
    no_token.code(2);
    assert_eq!(
        no_token.stderr,
        "error: no API token: set FERRY_TOKEN to the server's token, or pass --token-file FILE\n"
    );

    // The token from a file (a trailing newline is not part of it).
    let token_file = server.write("token", &format!("{}\n", cli_harness::TOKEN));
    let from_file = server
        .ferry()
        .env_remove("FERRY_TOKEN")
        .args(["vm", "list", "--token-file"])
        .args([&token_file])
        .run();
    assert!(from_file.ok().stdout.contains("pgtest1"));
    let empty_file = server.write("empty-token", "");
    let empty = server
        .ferry()
        .args(["vm", "list", "--token-file"])
        .args([&empty_file])
        .run();
    empty.code(2);
    assert!(empty.stderr.contains("is empty"), "{}", empty.stderr);

    let url = format!("http://127.0.0.1:{}", closed_port());
    let unreachable = Ferry::bare()
        .env("FERRY_TOKEN", cli_harness::TOKEN)
        .args(["vm", "list", "--server", &url])
        .run();
    golden("error_unreachable.txt", &unreachable.transcript());
    unreachable.code(2);
    assert!(
        unreachable.stderr.contains(&url) && unreachable.stderr.contains("FERRY_SERVER"),
        "{}",
        unreachable.stderr
    );
    let unreachable = Ferry::bare()
        .env("FERRY_TOKEN", cli_harness::TOKEN)
        .env("FERRY_SERVER", &url)
        .args(["run", "list", "--output", "json"])
        .run();
    golden("error_unreachable_json.txt", &unreachable.transcript());
    assert_eq!(unreachable.code(2).json()["error"]["code"], "unreachable");

    let not_a_url = server
        .ferry()
        .args(["vm", "list", "--server", "localhost:8470"])
        .run();
    not_a_url.code(2);
    assert!(
        not_a_url
            .stderr
            .contains("is not an http:// or https:// URL"),
        "{}",
        not_a_url.stderr
    );

    let bad_limit = server.ferry().args(["run", "list", "--limit", "0"]).run();
    bad_limit.code(2);
    assert!(
        bad_limit
            .stderr
            .contains("limit must be between 1 and 1000"),
        "{}",
        bad_limit.stderr
    );

    // Usage errors are clap's: exit 2 with what is missing or wrong.
    let usage = server.ferry().args(["failover", "test"]).run();
    usage.code(2);
    assert!(usage.stderr.contains("<NAME>"), "{}", usage.stderr);
    let usage = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--mode", "mirror"])
        .run();
    usage.code(2);
    assert!(usage.stderr.contains("replica, clone"), "{}", usage.stderr);
    let usage = server
        .ferry()
        .args(["vm", "list", "--output", "yaml"])
        .run();
    usage.code(2);
}

/// A data-disk detach fails and then every re-attach of the undo: the run is stuck,
/// `run show` says what is stuck and what to do, and `run abandon` lets go of it.
#[test]
fn a_stuck_run_is_explained_and_abandoned() {
    let server = with_pgtest1();
    // The test failover's detaches: the template's ROOT (1st), then the two replicas.
    server.arm(json!([
        {"command": "detachVolume", "nth": 3,
         "fault": {"kind": "job_error", "errorcode": 530, "errortext": "host is in maintenance"}},
        {"command": "attachVolume", "nth": 1, "times": 1000,
         "fault": {"kind": "job_error", "errorcode": 530, "errortext": "appliance agent is down"}}
    ]));
    let test = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .run();
    test.code(1);
    let id = newest_run(&server);
    assert!(
        test.stdout.contains(&format!("Run {id} stuck after")),
        "{}",
        test.stdout
    );
    assert!(test.stdout.contains("WHAT TO DO"), "{}", test.stdout);
    assert!(
        test.stdout.contains(&format!("`ferry run retry {id}`")),
        "{}",
        test.stdout
    );

    // `run show` succeeds (exit 0) and tells the story: the step whose undo failed,
    // the CloudStack job that failed, what is not undone, what to do.
    let show = server.ferry().args(["run", "show", &id]).run();
    show.ok();
    for expected in [
        "test_failover (replica mode) of pgtest1, stuck",
        "detach-replicas          undo_failed",
        "error: attaching a replica to the appliance",
        "appliance agent is down",
        "host is in maintenance",
        "Not yet undone:",
        "WHAT TO DO",
        &format!("ferry run abandon {id}"),
    ] {
        assert!(
            show.stdout.contains(expected),
            "{expected:?} in\n{}",
            show.stdout
        );
    }
    let detail = server.json(["run", "show", &id]);
    let failed: Vec<&str> = detail["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["state"] == "failed")
        .filter_map(|j| j["job_id"].as_str())
        .collect();
    assert_eq!(failed.len(), 2, "the detach and the re-attach: {detail:#}");
    for job_id in failed {
        assert!(show.stdout.contains(job_id), "{job_id} in\n{}", show.stdout);
    }

    // The stuck run holds the VM; a cancel is refused and says what to do instead.
    let cancel = server.ferry().args(["run", "cancel", &id]).run();
    cancel.code(2);
    assert!(cancel.stderr.contains("is stuck"), "{}", cancel.stderr);
    let another = server.ferry().args(["failover", "test", "pgtest1"]).run();
    another.code(2);

    let vm = server.ferry().args(["vm", "show", "pgtest1"]).run();
    assert!(
        vm.ok().stdout.contains(&format!(
            "Active run: {id} (test_failover (replica mode), stuck)"
        )),
        "{}",
        vm.stdout
    );

    // `watch` of a stuck run ends at once, exit 1.
    let watch = server.ferry().args(["run", "watch", &id]).run();
    watch.code(1);

    let abandon = server.ferry().args(["run", "abandon", &id]).run();
    abandon.ok();
    assert!(
        abandon.stdout.starts_with(&format!("Abandoned run {id}")),
        "{}",
        abandon.stdout
    );
    let shown = server.json(["run", "show", &id]);
    assert_eq!(shown["state"], "abandoned");
    let again = server.ferry().args(["run", "abandon", &id]).run();
    again.code(2);
    assert!(again.stderr.contains("not stuck"), "{}", again.stderr);
}

/// An undo that fails (transiently until its attempts are spent, or definitively:
/// CloudStack refused it) leaves the run stuck; once the cause is gone, `run retry
/// --wait` sends the undo to CloudStack again and finishes the unwind (exit 1: the run
/// ended unwound, not done), the run's error is again what made it unwind, and the VM
/// can be failed over again.
#[test]
fn a_stuck_run_is_retried_once_the_cause_is_fixed() {
    retried_once_the_cause_is_fixed(json!({"kind": "transient_530"}));
}

#[test]
fn a_run_stuck_on_a_definitive_undo_failure_is_retried_once_the_cause_is_fixed() {
    retried_once_the_cause_is_fixed(
        json!({"kind": "job_error", "errorcode": 530, "errortext": "appliance agent is down"}),
    );
}

fn retried_once_the_cause_is_fixed(undo_fault: serde_json::Value) {
    let server = Server::start_with(Options {
        max_attempts: 2,
        ..Options::default()
    });
    let file = server.write("pgtest1.toml", &pgtest1());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    server.arm(json!([
        {"command": "detachVolume", "nth": 3,
         "fault": {"kind": "job_error", "errorcode": 530, "errortext": "host is in maintenance"}},
        {"command": "attachVolume", "nth": 1, "times": 1000, "fault": undo_fault}
    ]));
    let test = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait", "--output", "json"])
        .run();
    assert_eq!(test.code(1).json()["state"], "stuck");
    let id = newest_run(&server);

    server.disarm();
    let retry = server.ferry().args(["run", "retry", &id, "--wait"]).run();
    retry.code(1);
    assert!(
        retry
            .stdout
            .starts_with(&format!("Retrying the failed undo of run {id}")),
        "{}",
        retry.stdout
    );
    assert!(
        retry.stdout.contains(&format!("Run {id} unwound after")),
        "{}",
        retry.stdout
    );
    assert!(
        retry.stdout.contains("detach-replicas ... undone"),
        "{}",
        retry.stdout
    );
    let shown = server.json(["run", "show", &id]);
    assert_eq!(shown["state"], "unwound");
    let error = shown["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("host is in maintenance") && !error.contains("undo of step"),
        "the run's error is what made it unwind, not the undo that was fixed: {error}"
    );

    let test = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .run();
    test.ok();
}

/// A cancel stops a running run before its next step; it then unwinds.
#[test]
fn a_running_run_is_cancelled_and_unwinds() {
    let server = with_pgtest1();
    // Snapshots take two seconds: time to cancel while the run is in that step.
    server.latency(json!({"createSnapshot": 2_000_000}));
    let started = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--output", "json"])
        .run();
    let id = started.ok().json()["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let cancel = server.ferry().args(["run", "cancel", &id]).run();
    cancel.ok();
    assert!(
        cancel
            .stdout
            .starts_with(&format!("Cancel requested for run {id}")),
        "{}",
        cancel.stdout
    );
    let watch = server.ferry().args(["run", "watch", &id]).run();
    watch.code(1);
    assert!(
        watch.stdout.contains(&format!("Run {id} unwound after")),
        "{}",
        watch.stdout
    );
    assert!(
        watch.stdout.contains("An operator cancelled it."),
        "{}",
        watch.stdout
    );
    // What to do fits a cancel: nothing to fix.
    assert!(
        watch.stdout.contains("It was cancelled as asked")
            && !watch.stdout.contains("Fix the cause"),
        "{}",
        watch.stdout
    );

    // An ended run has nothing to cancel: 409, exit 2, in both formats.
    let again = server.ferry().args(["run", "cancel", &id]).run();
    again.code(2);
    assert!(
        again.stderr.contains("nothing to cancel"),
        "{}",
        again.stderr
    );
    let again = server
        .ferry()
        .args(["run", "cancel", &id, "--output", "json"])
        .run();
    assert_eq!(again.code(2).json()["error"]["code"], "conflict");

    let runs = server.json(["run", "list"]);
    assert_eq!(runs[0]["state"], "unwound");
    assert_eq!(runs[0]["cancel_requested"], true);
}

/// The server's log, written to a file (not a terminal), is plain text, and a run's
/// outcome is in words.
#[test]
fn logs_to_a_file_are_plain_text_with_outcomes_in_words() {
    let server = Server::start_with(Options {
        log: "info",
        ..Options::default()
    });
    let file = server.write("pgtest1.toml", &pgtest1());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .run()
        .ok();
    // The run is logged as executed just after the client saw it done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = server.serve_log();
    while !log.contains("run executed") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = server.serve_log();
    }
    assert!(!log.contains('\u{1b}'), "no ANSI escape codes:\n{log}");
    let executed = log
        .lines()
        .find(|l| l.contains("run executed"))
        .unwrap_or_else(|| panic!("the run's outcome is logged:\n{log}"));
    assert!(executed.contains("outcome=done"), "{executed}");
}

/// Wherever a run id goes, the start of it does if it names one run, and `--vm NAME`
/// names that VM's latest run.
#[test]
fn a_run_is_named_by_a_prefix_of_its_id_or_as_a_vms_latest() {
    let server = with_pgtest1();
    let none = server
        .ferry()
        .args(["run", "show", "--vm", "pgtest1"])
        .run();
    none.code(2);
    assert!(
        none.stderr.contains("pgtest1 has no runs yet"),
        "{}",
        none.stderr
    );

    for command in ["test", "cleanup"] {
        server
            .ferry()
            .args(["failover", command, "pgtest1", "--wait"])
            .run()
            .ok();
    }
    let runs = server
        .ferry()
        .args(["run", "list", "-o", "json"])
        .run()
        .ok()
        .json();
    let cleanup = runs[0]["id"].as_str().expect("an id").to_string();
    let test = runs[1]["id"].as_str().expect("an id").to_string();
    // Run ids start with their creation time: these two share a start.
    let shared: String = cleanup
        .chars()
        .zip(test.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    assert!(!shared.is_empty(), "{cleanup} and {test}");
    let unique = &test[..shared.len() + 1];

    let full = server.ferry().args(["run", "show", &test]).run();
    let by_prefix = server.ferry().args(["run", "show", unique]).run();
    assert_eq!(by_prefix.ok().stdout, full.ok().stdout);
    let upper = server
        .ferry()
        .args(["run", "show", &unique.to_uppercase(), "-o", "json"])
        .run();
    assert_eq!(upper.ok().json()["id"], test.as_str());
    // Every command that takes a run takes a prefix: this cancel reaches the server,
    // which refuses it because the run is done.
    let cancel = server.ferry().args(["run", "cancel", unique]).run();
    cancel.code(2);
    assert!(
        cancel.stderr.contains("nothing to cancel"),
        "{}",
        cancel.stderr
    );

    let ambiguous = server.ferry().args(["run", "show", &shared]).run();
    ambiguous.code(2);
    assert!(
        ambiguous
            .stderr
            .starts_with(&format!("error: `{shared}` is the start of 2 runs' ids")),
        "{}",
        ambiguous.stderr
    );
    for id in [&cleanup, &test] {
        assert!(
            ambiguous.stderr.contains(id.as_str()),
            "{}",
            ambiguous.stderr
        );
    }
    let ambiguous = server
        .ferry()
        .args(["run", "watch", &shared, "-o", "json"])
        .run();
    assert_eq!(ambiguous.code(2).json()["error"]["code"], "ambiguous");

    let unknown = server.ferry().args(["run", "abandon", "ffff"]).run();
    unknown.code(2);
    assert!(
        unknown
            .stderr
            .starts_with("error: no run ffff: no run's id starts with `ffff`"),
        "{}",
        unknown.stderr
    );

    // The latest run of a VM, without its id.
    let latest = server
        .ferry()
        .args(["run", "show", "--vm", "pgtest1", "-o", "json"])
        .run();
    assert_eq!(latest.ok().json()["id"], cleanup.as_str());
    let watch = server
        .ferry()
        .args(["run", "watch", "--vm", "pgtest1"])
        .run();
    assert!(
        watch
            .ok()
            .stdout
            .contains(&format!("Run {cleanup} done after")),
        "{}",
        watch.stdout
    );
    let unknown_vm = server.ferry().args(["run", "show", "--vm", "nope"]).run();
    unknown_vm.code(2);
    assert!(unknown_vm.stderr.contains("nope"), "{}", unknown_vm.stderr);

    // An id or --vm, not both, not neither: usage errors.
    server.ferry().args(["run", "show"]).run().code(2);
    server
        .ferry()
        .args(["run", "show", &test, "--vm", "pgtest1"])
        .run()
        .code(2);
}

/// Ctrl-C while `--wait` follows a run stops the following, not the run: it says so and
/// how to cancel the run, and exits 130.
#[test]
fn ctrl_c_while_waiting_leaves_the_run_going_and_says_how_to_cancel_it() {
    let server = with_pgtest1();
    // Snapshots take two seconds: the run is still going when Ctrl-C comes.
    server.latency(json!({"createSnapshot": 2_000_000}));
    let waiting = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .spawn();
    waiting.wait_for("Following run", Duration::from_secs(10));
    waiting.interrupt();
    let stopped = waiting.finish();
    stopped.code(130);
    let id = newest_run(&server);
    assert!(
        stopped.stderr.contains(&format!(
            "Stopped following run {id}; the run goes on in the server."
        )) && stopped.stderr.contains(&format!("`ferry run cancel {id}`")),
        "{}",
        stopped.stderr
    );
    // The run did go on.
    server.ferry().args(["run", "watch", &id]).run().ok();
}

/// While the server cannot be reached `--wait` says so once and keeps trying.
#[test]
fn waiting_on_an_unreachable_server_says_so_once_and_keeps_trying() {
    let mut server = with_pgtest1();
    server.latency(json!({"createSnapshot": 2_000_000}));
    let waiting = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .spawn();
    waiting.wait_for("Following run", Duration::from_secs(10));
    server.stop_serve();
    waiting.wait_for("cannot be reached", Duration::from_secs(10));
    // Polls every 200 ms: several failed by now, the warning is printed once.
    std::thread::sleep(Duration::from_secs(1));
    let (_, stderr) = waiting.so_far();
    assert_eq!(
        stderr.matches("cannot be reached").count(),
        1,
        "once:\n{stderr}"
    );
    assert!(
        stderr.contains("ferry keeps trying for up to 30 s"),
        "{stderr}"
    );
    waiting.interrupt();
    waiting.finish().code(130);
}
