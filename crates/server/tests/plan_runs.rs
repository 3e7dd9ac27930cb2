//! Recovery plans run through the API against cloudsim's emulated guests on loopback
//! networks: a two-tier drill whose second tier starts only once the first tier's VM is
//! ready (its port accepts), each VM's readiness and RTO recorded, then the plan's
//! cleanup, last tier first; a cleanup with nothing failed over refused; a live
//! failover and its rollback the same way; and a drill whose first-tier guest never
//! comes up: stopped before the second tier, which is skipped, and a cleanup that takes
//! back what came up and skips the rest.

mod common;

use std::time::Duration;

use cloudsim::guests::rules::{GuestRule, GuestRules};
use cloudsim::world::ids;
use common::{Server, TestResult, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PLAN_DEADLINE: Duration = Duration::from_secs(90);

/// Three VMs of 2 disks (vm000 … vm002) on loopback networks (test `127.78.<net>.0/24`,
/// production `127.79.<net>.0/24`); vm000's guest listens on `tcp` (never, if `db_never`), the others answer HTTP on
/// `http`, 0.3 s after they run.
async fn server(net: u8, tcp: u16, http: u16, db_never: bool) -> anyhow::Result<Server> {
    let (mut world, vms) = common::world(3, 2);
    let test = world
        .networks
        .iter_mut()
        .find(|n| n.id.as_deref() == Some(ids::NETWORK_TEST))
        .expect("a test network");
    test.cidr = format!("127.78.{net}.0/24");
    let production = world
        .networks
        .iter_mut()
        .find(|n| n.id.as_deref() == Some(ids::NETWORK_PRODUCTION))
        .expect("a production network");
    production.cidr = format!("127.79.{net}.0/24");
    world.guests = GuestRules::new(vec![
        GuestRule {
            vm: "vm000*".into(),
            boot_ms: 300_000,
            tcp_ports: vec![tcp],
            http_ports: vec![],
            never: db_never,
        },
        GuestRule {
            vm: "vm*".into(),
            boot_ms: 300_000,
            tcp_ports: vec![],
            http_ports: vec![http],
            never: false,
        },
    ])?;
    let server = common::server_of(world, &vms).await?;
    Ok(server)
}

fn plan(tcp: u16, http: u16) -> String {
    format!(
        r#"
name = "shop"
[[tiers]]
name = "database"
vms = ["vm000"]
[[tiers.gates]]
kind = "running"
[[tiers.gates]]
kind = "tcp"
port = {tcp}
deadline_secs = 4
interval_secs = 1

[[tiers]]
name = "web"
vms = ["vm001", "vm002"]
[[tiers.gates]]
kind = "http"
port = {http}
path = "/health"
deadline_secs = 10
interval_secs = 1
"#
    )
}

/// Polls the plan run until it is no longer pending or running.
async fn finish(server: &Server, id: &str) -> anyhow::Result<Value> {
    server.finish_plan_run(id, PLAN_DEADLINE).await
}

fn vm<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["vms"]
        .as_array()
        .and_then(|vms| vms.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {run}"))
}

async fn run_of(server: &Server, id: &Value) -> anyhow::Result<Value> {
    let (_, run) = server
        .get(&format!("/v1/runs/{}", id.as_str().unwrap_or_default()))
        .await?;
    Ok(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_and_a_live_failover_go_tier_by_tier_and_come_back_last_tier_first() -> TestResult {
    let (tcp, http) = (free_port(), free_port());
    let server = server(1, tcp, http, false).await?;
    let (status, _) = server
        .post("/v1/plans", Some(json!({ "definition": plan(tcp, http) })))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let (_, shown) = server.get("/v1/plans/shop").await?;
    assert_eq!(shown["needs_drill"], true, "{shown}");
    assert_eq!(shown["drill_reasons"], json!(["it was never drilled"]));

    let (status, started) = server.post("/v1/plans/shop/test-failover", None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    // One plan run at a time.
    let (status, busy) = server.post("/v1/plans/shop/test-failover", None).await?;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status} {busy}"
    );

    let done = finish(&server, &id).await?;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["tiers"], 2);
    for name in ["vm000", "vm001", "vm002"] {
        let v = vm(&done, name);
        assert_eq!(v["state"], "ready", "{v}");
        assert!(v["rto_ms"].as_i64().unwrap() > 0, "{v}");
        assert_eq!(v["readiness"]["ready"], true, "{v}");
    }
    assert_eq!(vm(&done, "vm000")["tier"], 1);
    assert_eq!(vm(&done, "vm001")["tier"], 2);
    let tcp_gate = &vm(&done, "vm000")["readiness"]["gates"][1];
    assert_eq!(tcp_gate["verdict"], "passed", "{tcp_gate}");
    assert!(
        tcp_gate["last_seen"]
            .as_str()
            .unwrap()
            .contains("127.78.1."),
        "{tcp_gate}"
    );
    // The web tier was asked for only once the database was ready.
    let db = run_of(&server, &vm(&done, "vm000")["run_id"]).await?;
    let web = run_of(&server, &vm(&done, "vm001")["run_id"]).await?;
    assert_eq!(db["state"], "done");
    assert_eq!(web["workflow"], "test_failover");
    assert!(
        web["created_at"].as_str().unwrap() > db["finished_at"].as_str().unwrap(),
        "web {} before the database ended {}",
        web["created_at"],
        db["finished_at"]
    );
    // Each VM's run names the plan run that started it.
    assert_eq!(
        db["plan_run"],
        json!({ "id": id, "plan": "shop", "tier": 1, "rto_ms": vm(&done, "vm000")["rto_ms"] }),
        "{db}"
    );
    // Per-tier times: in order, the second begun once the first ended, each tier's VMs
    // through within the tier.
    let timings = done["tier_timings"].as_array().expect("tier timings");
    let names: Vec<&str> = timings
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["database", "web"], "{done}");
    for t in timings {
        let (vms, whole) = (t["vms_ms"].as_i64().unwrap(), t["ms"].as_i64().unwrap());
        assert!(vms > 0 && vms <= whole, "{t}");
        assert!(t["through_at"].as_str() <= t["ended_at"].as_str(), "{t}");
    }
    assert!(
        timings[1]["started_at"].as_str() >= timings[0]["ended_at"].as_str(),
        "{done}"
    );
    // The web tier waited for the database's gate: the database's port opens 0.3 s
    // after it runs, so its tier took at least that.
    assert!(timings[0]["vms_ms"].as_i64().unwrap() >= 300, "{done}");
    assert_eq!(
        done["worker"],
        Value::Null,
        "an ended plan run is driven by no one"
    );
    assert!(done["generation"].as_i64().unwrap() >= 1, "{done}");
    let plan_rto = done["rto_ms"]
        .as_i64()
        .expect("an RTO once every VM is ready");
    assert!(plan_rto >= vm(&done, "vm001")["rto_ms"].as_i64().unwrap());
    // Drilled: no drill needed, and /metrics says so with the drill's RTO.
    let (_, listed) = server.get("/v1/plans").await?;
    assert_eq!(listed[0]["needs_drill"], false, "{listed}");
    assert!(listed[0]["last_drill_at"].is_string(), "{listed}");
    let (_, shown) = server.get("/v1/plans/shop").await?;
    assert_eq!(shown["last_drill_run"], id.as_str(), "{shown}");
    assert_eq!(shown["last_drill_rto_ms"], plan_rto, "{shown}");
    assert_eq!(
        shown["last_drill_vm_rto_ms"]["vm001"],
        vm(&done, "vm001")["rto_ms"],
        "{shown}"
    );
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("ferry_plan_needs_drill{plan=\"shop\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_plan_rto_seconds{plan=\"shop\"}"),
        "{metrics}"
    );
    // A change to the plan calls for a drill again.
    let changed = plan(tcp, http).replace("name = \"web\"", "name = \"front\"");
    let (status, updated) = server
        .call(
            reqwest::Method::PUT,
            "/v1/plans/shop",
            Some(json!({ "definition": changed })),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["needs_drill"], true, "{updated}");
    assert_eq!(
        updated["drill_reasons"],
        json!(["the plan changed since its last drill"])
    );

    // The cleanup: the web tier first, then the database.
    let (status, started) = server.post("/v1/plans/shop/cleanup", None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let cleaned = finish(&server, started["id"].as_str().unwrap()).await?;
    assert_eq!(cleaned["state"], "done", "{cleaned}");
    assert_eq!(vm(&cleaned, "vm001")["tier"], 1, "the web tier goes first");
    assert_eq!(vm(&cleaned, "vm000")["tier"], 2);
    let web_clean = run_of(&server, &vm(&cleaned, "vm001")["run_id"]).await?;
    let db_clean = run_of(&server, &vm(&cleaned, "vm000")["run_id"]).await?;
    assert!(db_clean["created_at"].as_str() > web_clean["finished_at"].as_str());
    assert_eq!(cleaned["rto_ms"], Value::Null, "an RTO is a failover's");
    for name in ["vm000", "vm001", "vm002"] {
        let (_, v) = server.get(&format!("/v1/vms/{name}")).await?;
        assert_eq!(v["state"], "ready_for_failover", "{v}");
    }
    // Nothing is failed over now: a cleanup is refused, naming why, and starts nothing.
    let (status, refused) = server.post("/v1/plans/shop/cleanup", None).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused["error"]["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to take back"),
        "{refused}"
    );
    // A live failover and its rollback go the same way, tier by tier and back.
    let (status, started) = server.post("/v1/plans/shop/live-failover", None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let live = finish(&server, started["id"].as_str().unwrap()).await?;
    assert_eq!(live["state"], "done", "{live}");
    let (_, v) = server.get("/v1/vms/vm002").await?;
    assert_eq!(v["state"], "failed_over", "{v}");
    let (_, started) = server.post("/v1/plans/shop/rollback", None).await?;
    let rolled = finish(&server, started["id"].as_str().unwrap()).await?;
    assert_eq!(rolled["state"], "done", "{rolled}");
    assert_eq!(vm(&rolled, "vm001")["tier"], 1, "the web tier first");
    for name in ["vm000", "vm001", "vm002"] {
        let (_, v) = server.get(&format!("/v1/vms/{name}")).await?;
        assert_eq!(v["state"], "ready_for_failover", "{v}");
    }
    // The plan's runs, newest first.
    let (status, runs) = server.get("/v1/plans/shop/runs").await?;
    assert_eq!(status, StatusCode::OK, "{runs}");
    let workflows: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["workflow"].as_str().unwrap())
        .collect();
    assert_eq!(
        workflows,
        ["rollback", "live_failover", "cleanup", "test_failover"]
    );
    let (status, _) = server.get("/v1/plans/shop/runs?limit=1").await?;
    assert_eq!(status, StatusCode::OK);
    let (status, bad) = server.get("/v1/plans/shop/runs?limit=0").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (status, none) = server.get("/v1/plans/nope/runs").await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{none}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_never_passes_stops_the_drill_before_the_next_tier() -> TestResult {
    let (tcp, http) = (free_port(), free_port());
    let server = server(2, tcp, http, true).await?;
    server
        .post("/v1/plans", Some(json!({ "definition": plan(tcp, http) })))
        .await?;
    let (_, started) = server.post("/v1/plans/shop/test-failover", None).await?;
    let stopped = finish(&server, started["id"].as_str().unwrap()).await?;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let db = vm(&stopped, "vm000");
    assert_eq!(db["state"], "failed", "{db}");
    assert!(db["detail"].as_str().unwrap().contains("tcp"), "{db}");
    assert!(
        stopped["error"].as_str().unwrap().contains("vm000"),
        "{stopped}"
    );
    for name in ["vm001", "vm002"] {
        assert_eq!(vm(&stopped, name)["state"], "skipped", "{stopped}");
        assert_eq!(vm(&stopped, name)["run_id"], Value::Null);
    }
    // The tier it stopped at ended with the stop; the web tier never began.
    let timings = &stopped["tier_timings"];
    assert!(timings[0]["ended_at"].is_string(), "{stopped}");
    assert_eq!(timings[1]["started_at"], Value::Null, "{stopped}");
    assert_eq!(stopped["rto_ms"], Value::Null);
    // What came up stays for inspection: the database's test VM.
    let (_, v) = server.get("/v1/vms/vm000").await?;
    assert_eq!(v["state"], "test_failed_over", "{v}");

    // The plan's cleanup takes back the database and skips the web tier.
    let (status, started) = server.post("/v1/plans/shop/cleanup", None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let cleaned = finish(&server, started["id"].as_str().unwrap()).await?;
    assert_eq!(cleaned["state"], "done", "{cleaned}");
    assert_eq!(vm(&cleaned, "vm000")["state"], "ready");
    assert_eq!(vm(&cleaned, "vm001")["state"], "skipped");
    let (_, v) = server.get("/v1/vms/vm000").await?;
    assert_eq!(v["state"], "ready_for_failover", "{v}");
    Ok(())
}
