//! The REST API against a server on port 0 (in this process) and cloudsim: auth, the
//! error contract, a test failover and cleanup through the API, `/metrics`, and the
//! checked-in OpenAPI document.

mod common;

use std::time::Duration;

use cloudsim::World;
use cloudsim::world::ids;
use common::{Server, TOKEN, TestResult, pgtest1_definition};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::config::EngineSection;

/// cloudsim's built-in world and a server that claims runs every 100 ms.
async fn server() -> anyhow::Result<Server> {
    common::server(
        World::default(),
        EngineSection {
            claim_interval_ms: 100,
            ..EngineSection::default()
        },
    )
    .await
}

/// How long a run may take before the test calls it broken (prompt polling; the
/// deadline only bounds a broken run).
const RUN_DEADLINE: Duration = Duration::from_secs(60);

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str, says: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(says),
        "the message `{message}` should say `{says}`"
    );
}

#[tokio::test]
async fn every_route_but_health_and_metrics_needs_the_token() -> TestResult {
    let server = server().await?;
    let health = server
        .http
        .get(format!("{}/health", server.url))
        .send()
        .await?;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await?["status"], "ok");
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await?;
    assert_eq!(metrics.status(), StatusCode::OK);

    let routes = [
        ("GET", "/v1/vms"),
        ("POST", "/v1/vms"),
        ("GET", "/v1/vms/pgtest1"),
        ("PUT", "/v1/vms/pgtest1"),
        ("DELETE", "/v1/vms/pgtest1"),
        ("POST", "/v1/vms/pgtest1/test-failover"),
        ("POST", "/v1/vms/pgtest1/cleanup"),
        ("POST", "/v1/vms/pgtest1/live-failover"),
        ("POST", "/v1/vms/pgtest1/rollback"),
        ("POST", "/v1/vms/pgtest1/commit"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/some-id"),
        ("POST", "/v1/vms/pgtest1/resynced"),
        ("POST", "/v1/runs/some-id/cancel"),
        ("POST", "/v1/runs/some-id/retry"),
        ("POST", "/v1/runs/some-id/abandon"),
        ("GET", "/v1/openapi.json"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong"), Some("")] {
            let mut request = server
                .http
                .request(method.parse()?, format!("{}{path}", server.url));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            let status = response.status();
            let body: Value = response.json().await?;
            assert_error(
                status,
                &body,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "bearer token",
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_json_error_that_says_what_was_wrong() -> TestResult {
    let server = server().await?;
    let (status, body) = server.get("/v1/vms/nope").await?;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not_found",
        "no protected VM named `nope`",
    );
    let (status, body) = server.get("/v1/runs/nope").await?;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not_found",
        "no run nope",
    );
    let (status, body) = server.get("/v2/elsewhere").await?;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not_found",
        "under /v1",
    );
    let (status, body) = server.call(reqwest::Method::PUT, "/v1/vms", None).await?;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "not allowed",
    );

    // Bodies that are not JSON, or not the right shape.
    let response = server
        .http
        .post(format!("{}/v1/vms", server.url))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await?;
    let status = response.status();
    assert_error(
        status,
        &response.json().await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "not acceptable JSON",
    );
    // A body of the wrong shape: an array where an object belongs.
    let (status, body) = server
        .post("/v1/vms/pgtest1/test-failover", Some(json!([])))
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "must be a JSON object",
    );
    // A body too large for the server: the same JSON error as every other.
    let response = server
        .http
        .post(format!("{}/v1/vms", server.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!("{{\"definition\": \"{}\"}}", "x".repeat(3 << 20)))
        .send()
        .await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_error(
        status,
        &response.json().await?,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "larger than the server reads (2 MiB)",
    );
    let (status, body) = server
        .post("/v1/vms", Some(json!({ "definition": "x", "colour": 1 })))
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "unknown field `colour`",
    );
    let (status, body) = server
        .post("/v1/vms", Some(json!({ "definition": "name = [" })))
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "nothing was registered",
    );

    // A definition that parses but is wrong: every problem, by field; nothing written.
    let definition =
        pgtest1_definition()?.replace("appliance = \"oma\"", "appliance = \"nowhere\"");
    let (status, body) = server
        .post("/v1/vms", Some(json!({ "definition": definition })))
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "nothing was registered",
    );
    let problems = body["error"]["problems"]
        .as_array()
        .expect("problems listed");
    assert!(
        problems.iter().any(|p| p["field"] == "appliance"
            && p["message"].as_str().unwrap_or("").contains("nowhere")),
        "{body}"
    );
    assert_eq!(server.get("/v1/vms").await?.1, json!([]));

    // Every missing field at once, by field, not only the first the parser met.
    let definition = pgtest1_definition()?
        .replace("source_id = ", "# source_id = ")
        .replace("vcpu = 4", "")
        .replace("mac = \"00:50:56:8a:11:01\"", "");
    let (status, body) = server
        .post("/v1/vms", Some(json!({ "definition": definition })))
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "nothing was registered",
    );
    let fields: Vec<&str> = body["error"]["problems"]
        .as_array()
        .expect("problems listed")
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert_eq!(fields, ["source_id", "spec.vcpu", "nics[0].mac"], "{body}");

    // Two NICs on one network: refused with the other problems, naming both NICs.
    let definition = format!(
        "{}\n[[nics]]\nmac = \"00:50:56:8a:11:02\"\nsource_network = \"VM Network\"\n\
         test_network = \"test\"\nproduction_network = \"production\"\n",
        pgtest1_definition()?
    );
    let (status, body) = server
        .post("/v1/vms", Some(json!({ "definition": definition })))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problems = body["error"]["problems"]
        .as_array()
        .expect("problems listed");
    for field in ["nics[1].test_network", "nics[1].production_network"] {
        assert!(
            problems.iter().any(|p| p["field"] == field
                && p["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("nics[0] and nics[1] are both on network")),
            "{body}"
        );
    }
    assert_eq!(server.get("/v1/vms").await?.1, json!([]));

    // A Windows guest whose policy needs guest preparation, on a server without a
    // [guest_prep] command: every failover of it would be refused, so it is now.
    let definition =
        pgtest1_definition()?.replace("guest_os = \"linux\"", "guest_os = \"windows\"");
    let (status, body) = server
        .post("/v1/vms", Some(json!({ "definition": definition })))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["problems"]
            .as_array()
            .expect("problems listed")
            .iter()
            .any(|p| p["field"] == "spec.guest_prep"
                && p["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no guest-preparation command")),
        "{body}"
    );
    assert_eq!(server.get("/v1/vms").await?.1, json!([]));

    let (status, body) = server.get("/v1/runs?limit=0").await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "limit must be between 1 and 1000",
    );
    let (status, body) = server.get("/v1/runs?limit=ten").await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "bad query",
    );
    let (status, body) = server.get("/v1/runs?vm=nope").await?;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not_found",
        "no protected VM named `nope`",
    );
    let (status, body) = server.get("/v1/runs?id_prefix=").await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "id_prefix must be 1 to 36 characters",
    );
    let (status, body) = server.get("/v1/runs?vm=pgtest1&id_prefix=01").await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "give vm or id_prefix, not both",
    );

    server.add_pgtest1().await?;
    let (status, body) = server
        .post(
            "/v1/vms/pgtest1/test-failover",
            Some(json!({ "mode": "mirror" })),
        )
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "unknown variant `mirror`",
    );
    let (status, body) = server.post("/v1/vms/pgtest1/cleanup", None).await?;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "conflict",
        "pgtest1 has no recorded test_failover run to follow up",
    );
    let (status, body) = server.post("/v1/vms/pgtest1/commit", None).await?;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict", "pgtest1");
    let (status, body) = server
        .post(
            "/v1/vms",
            Some(json!({ "definition": pgtest1_definition()? })),
        )
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "nothing was registered",
    );
    Ok(())
}

#[tokio::test]
async fn a_test_failover_and_cleanup_through_the_api_show_the_device_map_and_are_scraped()
-> TestResult {
    let server = server().await?;
    let added = server.add_pgtest1().await?;
    assert_eq!(added["state"], "ready_for_failover");
    assert_eq!(added["disks"].as_array().map(Vec::len), Some(2));

    let (status, run) = server.post("/v1/vms/pgtest1/test-failover", None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(run["workflow"], "test_failover");
    assert_eq!(run["mode"], "replica");
    let run_id = run["id"].as_str().expect("id").to_string();

    // One active run per VM: a second request is refused with the first run's id.
    let (status, body) = server.post("/v1/vms/pgtest1/test-failover", None).await?;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict", "");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&run_id) || message.contains("test_failed_over"),
        "{message}"
    );
    let (status, body) = server
        .call(reqwest::Method::DELETE, "/v1/vms/pgtest1", None)
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let done = server.finish(&run_id, RUN_DEADLINE).await?;
    assert_eq!(done["state"], "done", "{done}");
    let steps = done["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|s| s["state"] == "done"), "{done}");
    assert!(steps.iter().all(|s| s["duration_ms"].is_i64()), "{done}");
    let jobs = done["jobs"].as_array().expect("jobs");
    for kind in ["snapshot", "attach", "detach"] {
        assert!(
            jobs.iter().any(|j| j["kind"].as_str().unwrap_or("").contains(kind) && j["job_id"].is_string()),
            "a {kind} job with its CloudStack job id: {done}"
        );
    }
    assert!(
        jobs.iter()
            .any(|j| j["kind"] == "deployVirtualMachine" && j["job_id"].is_string()),
        "the deploy's job id: {done}"
    );
    assert!(
        done["story"][1].as_str().unwrap_or("").contains("all"),
        "{done}"
    );

    let (_, vm) = server.get("/v1/vms/pgtest1").await?;
    assert_eq!(vm["state"], "test_failed_over");
    let target = &vm["target"];
    assert_eq!(target["verified"], true, "{vm}");
    assert_eq!(target["state"], "Running");
    let map: Vec<(i64, String, String)> = target["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .map(|d| {
            (
                d["device_id"].as_i64().unwrap_or(-1),
                d["volume_id"].as_str().unwrap_or("").to_string(),
                d["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        map,
        [
            (0, ids::PGTEST1_DISK_2000.to_string(), "boot".to_string()),
            (1, ids::PGTEST1_DISK_2001.to_string(), "data".to_string())
        ]
    );

    let (status, cleanup) = server.post("/v1/vms/pgtest1/cleanup", None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{cleanup}");
    let cleaned = server
        .finish(cleanup["id"].as_str().expect("id"), RUN_DEADLINE)
        .await?;
    assert_eq!(cleaned["state"], "done", "{cleaned}");
    let (_, vm) = server.get("/v1/vms/pgtest1").await?;
    assert_eq!(vm["state"], "ready_for_failover");
    assert!(vm["target"].is_null());
    for disk in vm["disks"].as_array().expect("disks") {
        assert_eq!(disk["attached_vm_id"], ids::APPLIANCE_OMA, "{vm}");
        assert!(
            disk["device_path"].as_str().unwrap_or("").contains("/dev/"),
            "{vm}"
        );
    }

    let (_, runs) = server.get("/v1/runs?vm=pgtest1").await?;
    let workflows: Vec<&str> = runs
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["workflow"].as_str())
        .collect();
    assert_eq!(workflows, ["cleanup", "test_failover"], "newest first");

    // Ended runs refuse cancel, retry and abandon, saying why.
    let (status, body) = server
        .post(&format!("/v1/runs/{run_id}/cancel"), None)
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "conflict",
        "has ended (done)",
    );
    let (status, body) = server
        .post(&format!("/v1/runs/{run_id}/retry"), None)
        .await?;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict", "not stuck");
    let (status, body) = server
        .post(&format!("/v1/runs/{run_id}/abandon"), None)
        .await?;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict", "not stuck");

    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await?
        .text()
        .await?;
    for family in [
        "ferry_runs_total",
        "ferry_step_duration_seconds",
        "ferry_cloudstack_calls_total",
        "ferry_cloudstack_job_wait_seconds",
        "ferry_runs{state=\"stuck\"} 0",
        "ferry_runs{state=\"done\"} 2",
        "# HELP ferry_runs_total ",
        "# HELP ferry_step_duration_seconds ",
        "# HELP ferry_cloudstack_calls_total ",
        "# HELP ferry_runs ",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics has {family}:\n{metrics}"
        );
    }
    assert!(
        metrics.lines().any(|l| l.starts_with("ferry_runs_total")
            && l.contains("workflow=\"test_failover\"")
            && l.contains("outcome=\"done\"")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_cloudstack_calls_total")
                && l.contains("command=\"attachVolume\"")),
        "{metrics}"
    );

    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            "/v1/vms/pgtest1?confirm=true",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(server.get("/v1/vms").await?.1, json!([]));
    Ok(())
}

/// Removing a VM that has run history — a live cut-over included — needs `confirm=true`,
/// and keeps the runs: still listed and shown, naming the VM `pgtest1 (removed)`. The
/// name (and the replicas) can be registered again, as a new VM.
#[tokio::test]
async fn removing_a_vm_with_history_needs_a_confirmation_and_keeps_its_runs() -> TestResult {
    let server = server().await?;
    let added = server.add_pgtest1().await?;
    let mut runs = Vec::new();
    for workflow in ["live-failover", "rollback"] {
        let (status, run) = server
            .post(&format!("/v1/vms/pgtest1/{workflow}"), None)
            .await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{run}");
        let id = run["id"].as_str().expect("id").to_string();
        let done = server.finish(&id, RUN_DEADLINE).await?;
        assert_eq!(done["state"], "done", "{done}");
        runs.push(id);
    }

    // Without the confirmation: refused, saying how to give it, and nothing changed.
    let (status, body) = server
        .call(reqwest::Method::DELETE, "/v1/vms/pgtest1", None)
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "confirmation_required",
        "?confirm=true",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("2 runs")),
        "{body}"
    );
    for refused in ["confirm=false", "confirm=yes", "sure=true"] {
        let (status, body) = server
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/vms/pgtest1?{refused}"),
                None,
            )
            .await?;
        assert!(
            status == StatusCode::CONFLICT || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{refused}: {status} {body}"
        );
    }
    let (status, vm) = server.get("/v1/vms/pgtest1").await?;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["state"], "ready_for_failover");
    let (_, listed) = server.get("/v1/runs?vm=pgtest1").await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // Confirmed: removed, and the record is kept.
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            "/v1/vms/pgtest1?confirm=true",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(server.get("/v1/vms").await?.1, json!([]));
    assert_eq!(
        server.get("/v1/vms/pgtest1").await?.0,
        StatusCode::NOT_FOUND
    );
    let (status, listed) = server.get("/v1/runs").await?;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed: Vec<(&str, &str)> = listed
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default(),
                r["vm"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (runs[1].as_str(), "pgtest1 (removed)"),
            (runs[0].as_str(), "pgtest1 (removed)")
        ],
        "newest first"
    );
    // The older run, by the start of its id (in any case), though a page of one
    // holds only the newer.
    let prefix = runs[0][..30].to_uppercase();
    let (status, found) = server
        .get(&format!("/v1/runs?id_prefix={prefix}&limit=1"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found[0]["id"], runs[0].as_str());
    assert_eq!(found[0]["vm"], "pgtest1 (removed)");
    let (status, live) = server.get(&format!("/v1/runs/{}", runs[0])).await?;
    assert_eq!(status, StatusCode::OK, "{live}");
    assert_eq!(live["vm"], "pgtest1 (removed)");
    assert_eq!(live["workflow"], "live_failover");
    assert_eq!(live["state"], "done");
    let steps = live["steps"].as_array().expect("steps");
    assert!(
        !steps.is_empty() && steps.iter().all(|s| s["state"] == "done"),
        "{live}"
    );
    assert!(
        live["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{live}"
    );

    // The name and the replicas are free: registered again, it is a new VM without runs.
    let again = server.add_pgtest1().await?;
    assert_ne!(again["id"], added["id"]);
    let (_, listed) = server.get("/v1/runs?vm=pgtest1").await?;
    assert_eq!(listed, json!([]));
    let (_, listed) = server.get("/v1/runs").await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    // Without history, no confirmation is needed.
    let (status, body) = server
        .call(reqwest::Method::DELETE, "/v1/vms/pgtest1", None)
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    Ok(())
}

/// `PUT /v1/vms/{name}`: what a definition changes, written only at rest and only when
/// it changes something; every refusal is the API's JSON error with what to do.
#[tokio::test]
async fn a_vm_is_updated_at_rest_and_says_what_changed() -> TestResult {
    let server = server().await?;
    let added = server.add_pgtest1().await?;
    let definition = pgtest1_definition()?;
    let put = |definition: &str, dry_run: bool| json!({"definition": definition, "format": "toml", "dry_run": dry_run});
    let more_memory = definition.replace("memory_mb = 8192", "memory_mb = 16384");
    let memory_change = json!([{
        "field": "spec.memory_mb", "change": "changed", "from": "8192", "to": "16384"
    }]);

    // The same definition: nothing to write.
    let (status, same) = server
        .call(
            reqwest::Method::PUT,
            "/v1/vms/pgtest1",
            Some(put(&definition, false)),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same["changes"], json!([]));
    assert_eq!(same["updated"], false);
    assert_eq!(same["id"], added["id"]);
    // A dry run says what would change and writes nothing.
    let (status, dry) = server
        .call(
            reqwest::Method::PUT,
            "/v1/vms/pgtest1",
            Some(put(&more_memory, true)),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["changes"], memory_change);
    assert_eq!(
        (&dry["dry_run"], &dry["updated"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(dry["memory_mb"], 8192);
    // Written: the detail is the updated VM, with the update in its history.
    let (status, done) = server
        .call(
            reqwest::Method::PUT,
            "/v1/vms/pgtest1",
            Some(put(&more_memory, false)),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["updated"], true);
    assert_eq!(done["memory_mb"], 16384);
    assert_eq!(done["id"], added["id"]);
    assert_eq!(done["updates"].as_array().map(Vec::len), Some(1), "{done}");
    assert_eq!(done["updates"][0]["changes"], memory_change);
    let (_, shown) = server.get("/v1/vms/pgtest1").await?;
    assert_eq!(shown["updates"], done["updates"]);

    // Another name in the file: the name is the VM's identity.
    let renamed = more_memory.replace("name = \"pgtest1\"", "name = \"pgtest2\"");
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            "/v1/vms/pgtest1",
            Some(put(&renamed, false)),
        )
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "nothing was changed",
    );
    assert_eq!(body["error"]["problems"][0]["field"], "name", "{body}");
    // No such VM: register it instead.
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            "/v1/vms/pgtest2",
            Some(put(&renamed, false)),
        )
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not_found",
        "`ferry vm add FILE`",
    );
    // Not at rest: refused with what to do first.
    let (status, run) = server.post("/v1/vms/pgtest1/test-failover", None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().expect("id").to_string();
    let done = server.finish(&id, RUN_DEADLINE).await?;
    assert_eq!(done["state"], "done", "{done}");
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            "/v1/vms/pgtest1",
            Some(put(&definition, true)),
        )
        .await?;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "conflict",
        "pgtest1 is test_failed_over, and a definition changes only at rest",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`ferry failover cleanup pgtest1`")),
        "{body}"
    );
    let (_, shown) = server.get("/v1/vms/pgtest1").await?;
    assert_eq!(shown["memory_mb"], 16384);
    assert_eq!(shown["updates"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[test]
fn the_checked_in_openapi_document_is_the_one_the_code_generates() {
    expectorate::assert_contents(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json"),
        &server::openapi_json(),
    );
}

/// A live failover that fails after its before_live hooks ran — the source may be off —
/// says so in its story and in what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_failing_after_its_hooks_says_the_source_may_be_off() -> TestResult {
    let hooks = workflows::Hooks {
        before_live: vec![workflows::Hook::Command {
            program: "true".into(),
            args: Vec::new(),
            timeout_secs: 30,
        }],
        after_rollback: Vec::new(),
    };
    let engine = EngineSection {
        claim_interval_ms: 100,
        max_attempts: 2,
        ..EngineSection::default()
    };
    let s = common::server_with_hooks(World::default(), engine, hooks).await?;
    s.add_pgtest1().await?;
    // The first attach's job fails: the run unwinds after the hooks ran.
    s.admin_post(
        "faults",
        json!({"command": "attachVolume", "nth": 1,
               "fault": {"kind": "job_error", "errorcode": 530, "errortext": "injected"}}),
    )
    .await?;
    let (status, started) = s.post("/v1/vms/pgtest1/live-failover", None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let run_id = started["id"].as_str().expect("an id").to_string();
    let run = s.finish(&run_id, Duration::from_secs(60)).await?;
    assert_eq!(run["state"], "unwound", "{run}");
    let story = run["story"].to_string();
    assert!(
        story.contains("before_live hooks had run") && story.contains("may be powered off"),
        "the story does not say the source may be off: {story}"
    );
    let advice = run["advice"].as_str().unwrap_or_default();
    assert!(
        advice.contains("power it on"),
        "what to do does not say to power the source on: {advice}"
    );

    Ok(())
}
