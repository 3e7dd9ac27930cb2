//! Drift as an operator meets it (docs/operating.md §7.5): a drill's snapshot is
//! deleted through CloudStack's API while pgtest1 is test-failed-over. The cleanup still
//! ends done and says which replica diverged; `vm list`, `vm show` and `/metrics` show
//! it; the next drill is refused with what to do; `ferry vm resynced` records the
//! resync, and the drill goes ahead.

// The snapshot is deleted with CloudStack's own command, as a person would.
#![allow(clippy::disallowed_methods)]

mod cli_harness;

use cli_harness::{Server, pgtest1};

const DATA: &str = "c02e3d1b-4b54-499e-ae29-03785d73dd9b";

fn metric(server: &Server, name: &str) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let text = runtime.block_on(async {
        reqwest::get(format!("{}/metrics", server.url))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("a body")
    });
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Deletes the drill's snapshot of `volume` through CloudStack's API.
fn delete_snapshot_by_hand(server: &Server, volume: &str) {
    let cloud = server.cloud();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let snapshots = cloud
            .list_snapshots(Some(&volume.into()), None)
            .await
            .expect("snapshots listed");
        assert_eq!(snapshots.len(), 1, "{snapshots:?}");
        let job = cloud
            .delete_snapshot(&snapshots[0].id)
            .await
            .expect("deleteSnapshot accepted");
        cloud.wait(&job).await.expect("the snapshot deleted");
    });
}

#[test]
fn a_snapshot_deleted_by_hand_is_a_diverged_replica_until_a_resync_is_recorded() {
    let server = Server::start();
    let file = server.write("pgtest1.toml", &pgtest1());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .run()
        .ok();
    delete_snapshot_by_hand(&server, DATA);

    // The cleanup reaches its end, and says what it could not put back.
    let cleanup = server
        .ferry()
        .args(["failover", "cleanup", "pgtest1", "--wait"])
        .run();
    cleanup.ok();
    let said = cleanup.transcript();
    assert!(
        said.contains("diverged") && said.contains(DATA),
        "the cleanup names the diverged replica:\n{said}"
    );

    let list = server.ferry().args(["vm", "list"]).run();
    assert!(
        list.ok()
            .stdout
            .contains("ready_for_failover (DIVERGED: 1)"),
        "{}",
        list.transcript()
    );
    let show = server.ferry().args(["vm", "show", "pgtest1"]).run();
    let shown = &show.ok().stdout;
    assert!(
        shown.contains("DIVERGED") && shown.contains(DATA) && shown.contains("snapshot"),
        "{shown}"
    );
    assert_eq!(metric(&server, "ferry_replicas_diverged"), 1.0);

    // The next drill is refused with what to do, and nothing starts.
    let refused = server
        .ferry()
        .args(["failover", "test", "pgtest1", "--output", "json"])
        .run();
    refused.code(2);
    assert_eq!(refused.json()["error"]["code"], "replica_diverged");
    assert!(
        refused.stderr.contains("ferry vm resynced pgtest1"),
        "{}",
        refused.transcript()
    );
    let runs = server.json(["run", "list", "--vm", "pgtest1"]);
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(2),
        "no run started: {runs}"
    );

    // A replica that is not a diverged one of the VM is refused, and nothing recorded.
    let wrong = server
        .ferry()
        .args(["vm", "resynced", "pgtest1", "--replica", "not-a-replica"])
        .run();
    assert_ne!(wrong.code, 0, "{}", wrong.transcript());
    assert!(
        wrong.stderr.contains("not a replica of pgtest1"),
        "{}",
        wrong.transcript()
    );
    assert_eq!(metric(&server, "ferry_replicas_diverged"), 1.0);

    let recorded = server.json(["vm", "resynced", "pgtest1"]);
    let disk = recorded["disks"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["replica_volume_id"] == DATA))
        .expect("the data disk");
    assert!(disk.get("diverged").is_none(), "{disk}");
    assert!(
        disk["resynced_at"].is_string(),
        "the resync is kept: {disk}"
    );
    assert_eq!(metric(&server, "ferry_replicas_diverged"), 0.0);
    let again = server.ferry().args(["vm", "resynced", "pgtest1"]).run();
    assert_ne!(again.code, 0, "nothing left to record");

    server
        .ferry()
        .args(["failover", "test", "pgtest1", "--wait"])
        .run()
        .ok();
}
