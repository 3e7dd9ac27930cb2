//! A plan run's hooks, through the API: each recorded on the plan run with what it
//! said, shown by `GET /v1/plan-runs/{id}` and the evidence report; a hook runs once
//! even while its tier's delay passes; a hook that fails stops a drill under `stop`
//! (the VMs of its tier never start), and never stops a cleanup, which reaches its end
//! with the failure said.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, TestResult};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PLAN_DEADLINE: Duration = Duration::from_secs(90);

/// Two VMs of 2 disks (vm000, vm001).
async fn server() -> anyhow::Result<Server> {
    let (world, vms) = common::world(2, 2);
    let server = common::server_of(world, &vms).await?;
    Ok(server)
}

/// A hook running `script` in `sh`, for `when` and `scope`.
fn hook(when: &str, scope: &str, script: &str) -> String {
    format!(
        r#"
when = "{when}"
scope = "{scope}"
run = {{ kind = "command", program = "/bin/sh", args = ["-c", {script:?}], timeout_secs = 10 }}
"#
    )
}

/// vm000 (tier `database`, then a second's delay), vm001 (tier `web`); the database
/// tier's `after` hook of a drill appends to `log` and says so; its `before` hook of a
/// cleanup fails; the plan's `before` hook of a drill fails when `fail_drill`.
fn plan(log: &Path, fail_drill: bool) -> String {
    let log = log.display();
    let drill_before = if fail_drill {
        "echo 'no change window' >&2; exit 4"
    } else {
        "true"
    };
    format!(
        r#"
name = "shop"

[[hooks]]{}

[[tiers]]
name = "database"
vms = ["vm000"]
delay_after_secs = 1
[[tiers.gates]]
kind = "running"
[[tiers.hooks]]{}
[[tiers.hooks]]{}

[[tiers]]
name = "web"
vms = ["vm001"]
[[tiers.gates]]
kind = "running"
"#,
        hook("before", "test", drill_before),
        hook(
            "after",
            "test",
            &format!("echo \"$FERRY_HOOK\" >> {log}; echo smoke ok")
        ),
        hook("before", "cleanup", "echo 'dns api down' >&2; exit 3"),
    )
}

async fn run_plan(server: &Server, workflow: &str) -> anyhow::Result<Value> {
    let (status, started) = server
        .post(&format!("/v1/plans/shop/{workflow}"), None)
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    server
        .finish_plan_run(started["id"].as_str().unwrap_or_default(), PLAN_DEADLINE)
        .await
}

/// The plan run's hooks as (where, outcome).
fn hooks(run: &Value) -> Vec<(String, String)> {
    run["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|h| {
            let place = match h["tier_name"].as_str() {
                Some(tier) => format!("tier {tier} {}", h["point"].as_str().unwrap_or("?")),
                None => format!("plan {}", h["point"].as_str().unwrap_or("?")),
            };
            (place, h["outcome"].as_str().unwrap_or("?").to_string())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_recorded_run_once_and_a_failing_one_never_stops_a_cleanup() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("hooks.log");
    let server = server().await?;
    server
        .post(
            "/v1/plans",
            Some(json!({ "definition": plan(&log, false) })),
        )
        .await?;

    let drill = run_plan(&server, "test-failover").await?;
    assert_eq!(drill["state"], "done", "{drill}");
    // The drill's hooks, in the order they came; the cleanup's is not the drill's.
    assert_eq!(
        hooks(&drill),
        pairs(&[
            ("plan before", "succeeded"),
            ("tier database after", "succeeded")
        ]),
        "{drill}"
    );
    let smoke = &drill["hooks"][1];
    assert_eq!(smoke["attempts"], 1, "{smoke}");
    assert!(
        smoke["detail"].as_str().unwrap().contains("smoke ok"),
        "what it said is kept: {smoke}"
    );
    assert!(smoke["ms"].as_i64().is_some(), "{smoke}");
    // The tier's after hook ran once, though the driver went over the tier again and
    // again while its second's delay passed.
    let ran = std::fs::read_to_string(&log)?;
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        ["tier_after_test_failover"]
    );

    // The cleanup: the database tier's before hook fails, and the cleanup goes on to
    // its end, every VM back, the failure recorded and said.
    let cleanup = run_plan(&server, "cleanup").await?;
    assert_eq!(cleanup["state"], "done", "{cleanup}");
    for vm in cleanup["vms"].as_array().unwrap() {
        assert_eq!(vm["state"], "ready", "{cleanup}");
    }
    for name in ["vm000", "vm001"] {
        let (_, v) = server.get(&format!("/v1/vms/{name}")).await?;
        assert_eq!(v["state"], "ready_for_failover", "{v}");
    }
    assert_eq!(
        hooks(&cleanup),
        pairs(&[("tier database before", "failed")]),
        "{cleanup}"
    );
    let failed = cleanup["hooks"][0]["detail"].as_str().unwrap();
    assert!(
        failed.contains("exited with status 3") && failed.contains("dns api down"),
        "{failed}"
    );
    // The evidence report says it, after its verdict.
    let (status, report) = server
        .get(&format!(
            "/v1/reports/{}?format=json",
            cleanup["id"].as_str().unwrap()
        ))
        .await?;
    assert_eq!(status, StatusCode::OK, "{report}");
    let plan_run = &report["plan_run"];
    assert_eq!(plan_run["hooks"][0]["point"], "tier database before");
    assert_eq!(plan_run["hooks"][0]["outcome"], "failed");
    let outcome = &report["outcome"];
    assert_eq!(outcome["verdict"], "succeeded", "{outcome}");
    assert!(
        outcome["sentence"]
            .as_str()
            .unwrap()
            .ends_with("1 hook(s) failed: tier database before."),
        "{outcome}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_stops_a_drill_under_stop_before_its_vms_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = server().await?;
    server
        .post(
            "/v1/plans",
            Some(json!({ "definition": plan(&dir.path().join("hooks.log"), true) })),
        )
        .await?;
    let drill = run_plan(&server, "test-failover").await?;
    assert_eq!(drill["state"], "stopped", "{drill}");
    assert!(
        drill["error"]
            .as_str()
            .unwrap()
            .contains("the before hook of plan shop"),
        "{drill}"
    );
    // The hook that failed, and the one never reached.
    assert_eq!(
        hooks(&drill),
        pairs(&[
            ("plan before", "failed"),
            ("tier database after", "not_run")
        ]),
        "{drill}"
    );
    assert!(
        drill["hooks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("no change window"),
        "{drill}"
    );
    // Nothing started: every VM skipped, none with a run, all still ready.
    for vm in drill["vms"].as_array().unwrap() {
        assert_eq!(vm["state"], "skipped", "{drill}");
        assert_eq!(vm["run_id"], Value::Null, "{drill}");
    }
    for name in ["vm000", "vm001"] {
        let (_, v) = server.get(&format!("/v1/vms/{name}")).await?;
        assert_eq!(v["state"], "ready_for_failover", "{v}");
    }
    Ok(())
}
