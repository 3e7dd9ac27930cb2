//! The drill evidence report (docs/report.md) through the REST API, against cloudsim:
//! a drill's report validates against the checked-in schema, holds every disk's chain
//! with its planned device id verified, draws one bar per CloudStack job the run
//! submitted, carries a digest anyone can recompute (also with the Python one-liner
//! the docs give) and that one changed fact breaks, fetches nothing from outside, and
//! its leak check is clean after the cleanup and names a leftover made by hand; an
//! unwound drill shows its undo; a plan run's report holds its tiers, RTOs and gates;
//! drift, a diverged replica and an outage waited out are said.

mod common;

use std::time::Duration;

use cloudsim::World;
use common::{Server, TOKEN, TestResult};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::config::EngineSection;

const RUN_DEADLINE: Duration = Duration::from_secs(60);

async fn server() -> anyhow::Result<Server> {
    common::server(
        World::default(),
        EngineSection {
            claim_interval_ms: 50,
            max_attempts: 2,
            ..EngineSection::default()
        },
    )
    .await
}

/// The checked-in schema, as a validator.
fn validator() -> anyhow::Result<jsonschema::Validator> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/report.schema.json"
    ))?;
    let schema: Value = serde_json::from_str(&text)?;
    jsonschema::validator_for(&schema).map_err(|e| anyhow::anyhow!("the schema: {e}"))
}

fn assert_valid(report: &Value) -> TestResult {
    let validator = validator()?;
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    anyhow::ensure!(
        errors.is_empty(),
        "the report does not fit its schema: {errors:#?}"
    );
    Ok(())
}

/// Starts a workflow with a requester, and returns the finished run.
async fn run(server: &Server, path: &str, who: &str) -> anyhow::Result<Value> {
    let response = server
        .http
        .post(format!("{}{path}", server.url))
        .bearer_auth(TOKEN)
        .header("X-Ferry-Requested-By", who)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::ACCEPTED,
        "{path}: {}",
        response.status()
    );
    let started: Value = response.json().await?;
    let id = started["id"].as_str().expect("an id").to_string();
    server.finish(&id, RUN_DEADLINE).await
}

/// The report of `id` in `format`, with its response's headers.
async fn report(
    server: &Server,
    id: &str,
    query: &str,
) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, String)> {
    let response = server
        .http
        .get(format!("{}/v1/reports/{id}{query}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    Ok((status, headers, response.text().await?))
}

async fn report_json(server: &Server, id: &str) -> anyhow::Result<Value> {
    let (status, _, body) = report(server, id, "").await?;
    anyhow::ensure!(status == StatusCode::OK, "{status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// The CloudStack job ids a run submitted, as `GET /v1/runs/{id}` lists them.
fn job_ids(run: &Value) -> Vec<String> {
    run["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["job_id"].as_str().map(str::to_string))
        .collect()
}

/// The timeline's job bars: the `data-job` values in `html`, in order.
fn bars(html: &str) -> Vec<String> {
    html.split("data-job=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or_default().to_string())
        .collect()
}

/// The digest recomputed as docs/report.md says, with Python, from the JSON text.
fn python_digest(json_text: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,hashlib,sys; r=json.load(sys.stdin); r.pop('digest'); \
             print('sha256:'+hashlib.sha256(json.dumps(r,sort_keys=True,separators=(',',':'),ensure_ascii=False).encode()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(json_text.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "python3 failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for attr in ["src=", "href=", "url(http", "@import", "<script", "<link"] {
        for (i, _) in lower.match_indices(attr) {
            let rest = &lower[i + attr.len()..];
            let rest = rest.trim_start_matches(['"', '\'', ' ']);
            assert!(
                !rest.starts_with("http:")
                    && !rest.starts_with("https:")
                    && !rest.starts_with("//"),
                "the HTML fetches from outside at `{}`",
                &html[i..(i + 80).min(html.len())]
            );
        }
    }
    assert!(!lower.contains("<script"), "the report runs no script");
    assert!(!lower.contains("<link"), "the report links nothing");
}

#[test]
fn the_checked_in_report_schema_is_the_one_the_code_generates() {
    expectorate::assert_contents(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/report.schema.json"),
        &server::report::schema_json(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_report_proves_the_drill_and_its_cleanup() -> TestResult {
    let s = server().await?;
    s.add_pgtest1().await?;
    let drill = run(&s, "/v1/vms/pgtest1/test-failover", "alice@ops-1").await?;
    assert_eq!(drill["state"], "done", "{drill}");
    let id = drill["id"].as_str().expect("id").to_string();

    // JSON, by default, fitting its checked-in schema.
    let (status, headers, text) = report(&s, &id, "").await?;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["content-type"], "application/json");
    let r: Value = serde_json::from_str(&text)?;
    assert_valid(&r)?;
    assert_eq!(r["format"], "ferry-report/1");
    assert_eq!(r["subject"]["kind"], "run");
    assert_eq!(r["outcome"]["verdict"], "succeeded");
    let sentence = r["outcome"]["sentence"].as_str().unwrap_or_default();
    assert!(sentence.contains("2 of 2 disks verified"), "{sentence}");
    let facts = &r["runs"][0];
    assert_eq!(facts["requested_by"], "alice@ops-1");
    assert!(
        !facts["workers"].as_array().expect("workers").is_empty(),
        "{facts}"
    );
    assert!(facts["rto_ms"].as_i64().is_some_and(|ms| ms > 0), "{facts}");
    assert!(
        facts["target_vm"]["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("pgtest1-test-")
    );

    // Every disk's chain: planned == verified, a snapshot, a serial; no cleanup yet.
    let disks = facts["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 2);
    for d in disks {
        assert!(d["planned_device_id"].is_i64(), "{d}");
        assert_eq!(d["planned_device_id"], d["verified_device_id"], "{d}");
        assert_eq!(d["capacity_bytes"], d["verified_size_bytes"], "{d}");
        assert!(d["snapshot_id"].is_string(), "{d}");
        assert_eq!(d["serial"].as_str().map(str::len), Some(20), "{d}");
        assert!(d["appliance_device_path"].is_null(), "{d}");
    }
    assert_eq!(disks[0]["planned_device_id"], 0);
    assert_eq!(disks[0]["address"], "scsi:0:0");

    // While failed over, the test VM and its snapshots are where ferry says.
    assert_eq!(r["leak_check"]["clean"], true, "{}", r["leak_check"]);
    let kinds: Vec<&str> = r["leak_check"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    for kind in ["vm", "snapshot", "replica"] {
        assert!(
            kinds.contains(&kind),
            "the leak check looked at no {kind}: {kinds:?}"
        );
    }

    // The digest: recomputed from the JSON, here and with the documented Python
    // one-liner; one fact changed, it no longer matches.
    let digest = r["digest"].as_str().expect("digest").to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 7 + 64,
        "{digest}"
    );
    assert_eq!(server::report::digest_of_json(&mut r.clone()), digest);
    assert_eq!(python_digest(&text)?, digest);
    let mut tampered = r.clone();
    tampered["runs"][0]["disks"][1]["verified_device_id"] = json!(4);
    assert_ne!(server::report::digest_of_json(&mut tampered), digest);
    let typed: server::report::Report = serde_json::from_value(r.clone())?;
    assert_eq!(server::report::digest_of(&typed), digest);

    // HTML: one file, nothing fetched, the digest printed, a bar per CloudStack job.
    let (status, headers, html) = report(&s, &id, "?format=html").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(headers.get("content-disposition").is_none());
    assert_self_contained(&html);
    assert!(html.contains("@media print"), "no print styles");
    let (_, run_detail) = s.get(&format!("/v1/runs/{id}")).await?;
    let mut jobs = job_ids(&run_detail);
    assert!(
        jobs.len() >= 8,
        "a 2-disk drill submits at least 8 jobs: {jobs:?}"
    );
    let mut drawn = bars(&html);
    jobs.sort();
    drawn.sort();
    assert_eq!(drawn, jobs, "one bar per CloudStack job of the run");
    let bare = server::report::timeline_svg(&typed);
    assert!(bare.starts_with("<svg") && bare.ends_with("</svg>"));
    assert_eq!(bars(&bare).len(), jobs.len());

    // For the record (and a look in a browser): the drill's report under target/.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join("report-drill.html"), &html)?;
    std::fs::write(dir.join("report-drill.json"), &text)?;

    // A download names its file.
    let (_, headers, _) = report(&s, &id, "?format=html&download=1").await?;
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"ferry-report-{id}.html\"").as_str()
    );
    let (_, headers, _) = report(&s, &id, "?download=1").await?;
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"ferry-report-{id}.json\"").as_str()
    );

    // After the cleanup: the drill's disk chain ends at each replica's by-id path on
    // the appliance, and the leak check is clean.
    let cleanup = run(&s, "/v1/vms/pgtest1/cleanup", "bob@ops-2").await?;
    assert_eq!(cleanup["state"], "done", "{cleanup}");
    let r = report_json(&s, &id).await?;
    assert_valid(&r)?;
    for d in r["runs"][0]["disks"].as_array().expect("disks") {
        let serial = d["serial"].as_str().expect("serial");
        assert_eq!(
            d["appliance_device_path"],
            format!("/dev/disk/by-id/virtio-{serial}").as_str(),
            "{d}"
        );
        assert_eq!(d["appliance_path_run_id"], cleanup["id"]);
    }
    assert_eq!(r["leak_check"]["clean"], true, "{}", r["leak_check"]);
    let c = report_json(&s, cleanup["id"].as_str().expect("id")).await?;
    assert_valid(&c)?;
    assert_eq!(c["runs"][0]["requested_by"], "bob@ops-2");
    assert_eq!(c["leak_check"]["clean"], true, "{}", c["leak_check"]);

    // A snapshot made by hand under the drill's names is a leftover, named.
    let target = r["runs"][0]["target_vm"]["name"].as_str().expect("target");
    let replica = r["runs"][0]["disks"][1]["replica_volume_id"]
        .as_str()
        .expect("replica");
    let name = format!("{target}-disk-2001");
    let client = cloudstack::Client::new(cloudstack::Config::new(
        s.sim.endpoint(),
        cloudsim::world::ids::API_KEY,
        secrecy::SecretString::from(cloudsim::world::ids::SECRET_KEY.to_string()),
    ))?;
    #[allow(
        clippy::disallowed_methods,
        reason = "the test makes a leftover by hand"
    )]
    let job = client.create_snapshot(&replica.into(), Some(&name)).await?;
    let snapshot = client.wait(&job).await?;
    let r = report_json(&s, &id).await?;
    assert_eq!(r["leak_check"]["clean"], false, "{}", r["leak_check"]);
    let summary = r["leak_check"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains(snapshot.id.as_str()) && summary.contains(&name),
        "the leftover is not named: {summary}"
    );
    assert!(
        r["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w["kind"] == "leak"
                && w["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(snapshot.id.as_str())),
        "{}",
        r["warnings"]
    );
    let (_, _, html) = report(&s, &id, "?format=html").await?;
    assert!(html.contains("NOT CLEAN") && html.contains(snapshot.id.as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwound_drill_shows_its_undo_and_its_failure() -> TestResult {
    let s = server().await?;
    s.add_pgtest1().await?;
    // The data disk's attach fails: the drill unwinds every step that ran.
    s.admin_post(
        "faults",
        json!({"command": "attachVolume", "nth": 2,
               "fault": {"kind": "job_error", "errorcode": 530,
                         "errortext": "injected <script>alert('x')</script> & \"failure\""}}),
    )
    .await?;
    let drill = run(&s, "/v1/vms/pgtest1/test-failover", "carol@ops-3").await?;
    assert_eq!(drill["state"], "unwound", "{drill}");
    let id = drill["id"].as_str().expect("id");
    let (_, _, text) = report(&s, id, "").await?;
    let r: Value = serde_json::from_str(&text)?;
    assert_valid(&r)?;
    assert_eq!(r["outcome"]["verdict"], "failed");
    // Its story has text beyond ASCII ("—"): the documented one-liner still agrees.
    assert!(
        !text.is_ascii(),
        "the test wants a report with non-ASCII text"
    );
    assert_eq!(python_digest(&text)?, r["digest"].as_str().expect("digest"));
    let facts = &r["runs"][0];
    let undo: Vec<&Value> = facts["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["undo"] == true)
        .collect();
    assert!(!undo.is_empty(), "no undo job: {}", facts["jobs"]);
    assert!(
        facts["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .any(|j| j["state"] == "failed" && j["kind"] == "attach"),
        "the failed attach is not there: {}",
        facts["jobs"]
    );
    assert!(
        r["warnings"]
            .as_array()
            .expect("w")
            .iter()
            .any(|w| w["kind"] == "failure")
    );
    // Nothing verified, and nothing left behind by the unwind.
    for d in facts["disks"].as_array().expect("disks") {
        assert!(d["verified_device_id"].is_null(), "{d}");
    }
    assert_eq!(r["leak_check"]["clean"], true, "{}", r["leak_check"]);

    let (_, _, html) = report(&s, id, "?format=html").await?;
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-unwound.html"),
        &html,
    )?;
    assert_self_contained(&html);
    // CloudStack's error text is shown, escaped: in the page and in the timeline.
    assert!(
        html.contains("injected &lt;script&gt;alert("),
        "the error is not shown escaped"
    );
    let svg = server::report::timeline_svg(&serde_json::from_value(r.clone())?);
    assert!(
        !svg.contains("<script") && svg.contains("&lt;script&gt;"),
        "{svg}"
    );
    let undo_bars = html.matches("class=\"job undo").count();
    assert_eq!(undo_bars, undo.len(), "one striped bar per undo job");
    assert!(
        html.contains("class=\"job failed\""),
        "the failed job is not marked"
    );
    assert!(html.contains("✕"), "no failure mark");
    let (_, run_detail) = s.get(&format!("/v1/runs/{id}")).await?;
    assert_eq!(bars(&html).len(), job_ids(&run_detail).len());
    assert!(html.contains("✗ FAILED"), "the verdict is not in words");
    Ok(())
}

#[tokio::test]
async fn unknown_ids_and_bad_queries_are_refused_with_what_was_wrong() -> TestResult {
    let s = server().await?;
    let (status, _, body) = report(&s, "no-such-run", "").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no run or plan run no-such-run")
    );
    let (status, _, body) = report(&s, "x", "?format=pdf").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("format must be json or html"), "{body}");
    let (status, _, body) = report(&s, "x", "?download=maybe").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A requester that cannot be kept as text is refused before anything starts.
    s.add_pgtest1().await?;
    let response = s
        .http
        .post(format!("{}/v1/vms/pgtest1/test-failover", s.url))
        .bearer_auth(TOKEN)
        .header("X-Ferry-Requested-By", "x".repeat(201))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (_, runs) = s.get("/v1/runs").await?;
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_run_report_holds_its_tiers_rtos_and_gates() -> TestResult {
    let (world, vms) = common::world(2, 2);
    let s = common::server_of(world, &vms).await?;
    let plan = r#"
name = "shop"
[[hooks]]
when = "before"
scope = "test"
run = { kind = "command", program = "true" }
[[hooks]]
when = "before"
scope = "live"
run = { kind = "command", program = "false" }
[[tiers]]
name = "database"
vms = ["vm000"]
[[tiers]]
name = "web"
vms = ["vm001"]
"#;
    let (status, body) = s
        .post("/v1/plans", Some(json!({ "definition": plan })))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let response = s
        .http
        .post(format!("{}/v1/plans/shop/test-failover", s.url))
        .bearer_auth(TOKEN)
        .header("X-Ferry-Requested-By", "dave@dr-room")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started: Value = response.json().await?;
    let id = started["id"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, p) = s.get(&format!("/v1/plan-runs/{id}")).await?;
        if !matches!(p["state"].as_str(), Some("pending" | "running")) {
            assert_eq!(p["state"], "done", "{p}");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "plan run still going: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = report_json(&s, &id).await?;
    assert_valid(&r)?;
    assert_eq!(r["subject"]["kind"], "plan_run");
    assert_eq!(r["outcome"]["verdict"], "succeeded");
    let p = &r["plan_run"];
    assert_eq!(p["requested_by"], "dave@dr-room");
    assert!(!p["workers"].as_array().expect("workers").is_empty());
    assert!(p["rto_ms"].as_i64().is_some_and(|ms| ms > 0), "{p}");
    let tiers = p["tiers"].as_array().expect("tiers");
    assert_eq!(tiers.len(), 2);
    assert_eq!(tiers[0]["name"], "database");
    assert!(
        tiers
            .iter()
            .all(|t| t["vms_ms"].is_i64() && t["started_at"].is_string())
    );
    for v in p["vms"].as_array().expect("vms") {
        assert_eq!(v["state"], "ready", "{v}");
        assert!(v["rto_ms"].as_i64().is_some_and(|ms| ms > 0), "{v}");
        let gates = v["gates"].as_array().expect("gates");
        assert!(!gates.is_empty(), "{v}");
        assert_eq!(gates[0]["kind"], "running");
        assert_eq!(gates[0]["verdict"], "passed");
        assert!(gates[0]["last_seen"].is_string(), "what the gate saw: {v}");
    }
    // Each VM's run, by tier, with the plan's requester and its RTO in the plan.
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["plan_run_id"], id.as_str());
        assert_eq!(run["tier"], i as i64 + 1);
        assert_eq!(run["requested_by"], "dave@dr-room");
        assert_eq!(run["rto_ms"], p["vms"][i]["rto_ms"]);
        for d in run["disks"].as_array().expect("disks") {
            assert_eq!(d["planned_device_id"], d["verified_device_id"], "{d}");
        }
    }
    assert_eq!(r["leak_check"]["clean"], true, "{}", r["leak_check"]);
    // The drill's hook ran before the first tier; the live failover's is not this
    // run's.
    let hooks = p["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["point"], "plan before");
    assert_eq!(hooks[0]["outcome"], "succeeded");
    let (_, _, html) = report(&s, &id, "?format=html").await?;
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-plan.html"),
        &html,
    )?;
    assert_self_contained(&html);
    assert!(html.contains("Readiness gates") && html.contains("database"));
    let mut all_jobs = Vec::new();
    for run in runs {
        let (_, detail) = s
            .get(&format!("/v1/runs/{}", run["id"].as_str().expect("id")))
            .await?;
        all_jobs.extend(job_ids(&detail));
    }
    assert_eq!(bars(&html).len(), all_jobs.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_drill_report_chains_each_disk_through_its_clone() -> TestResult {
    let s = server().await?;
    s.add_pgtest1().await?;
    let response = s
        .http
        .post(format!("{}/v1/vms/pgtest1/test-failover", s.url))
        .bearer_auth(TOKEN)
        .json(&json!({"mode": "clone"}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started: Value = response.json().await?;
    let id = started["id"].as_str().expect("id").to_string();
    let drill = s.finish(&id, RUN_DEADLINE).await?;
    assert_eq!(drill["state"], "done", "{drill}");
    let r = report_json(&s, &id).await?;
    assert_valid(&r)?;
    for d in r["runs"][0]["disks"].as_array().expect("disks") {
        assert!(d["clone_volume_id"].is_string(), "{d}");
        assert_ne!(d["clone_volume_id"], d["replica_volume_id"]);
        assert_eq!(d["planned_device_id"], d["verified_device_id"], "{d}");
    }
    let kinds: Vec<&str> = r["leak_check"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"volume"),
        "the clones were not looked at: {kinds:?}"
    );
    assert_eq!(r["leak_check"]["clean"], true, "{}", r["leak_check"]);
    let cleanup = run(&s, "/v1/vms/pgtest1/cleanup", "x@y").await?;
    assert_eq!(cleanup["state"], "done", "{cleanup}");
    let r = report_json(&s, &id).await?;
    assert_eq!(
        r["leak_check"]["clean"], true,
        "the clones are gone: {}",
        r["leak_check"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_report_shows_its_hooks_and_its_rollback_puts_the_disks_back() -> TestResult
{
    let hooks = workflows::Hooks {
        before_live: vec![workflows::Hook::Command {
            program: "true".into(),
            args: Vec::new(),
            timeout_secs: 30,
        }],
        after_rollback: Vec::new(),
    };
    let s = common::server_with_hooks(
        World::default(),
        EngineSection {
            claim_interval_ms: 50,
            ..EngineSection::default()
        },
        hooks,
    )
    .await?;
    s.add_pgtest1().await?;
    let live = run(&s, "/v1/vms/pgtest1/live-failover", "gina@ops-5").await?;
    assert_eq!(live["state"], "done", "{live}");
    let id = live["id"].as_str().expect("id");
    let r = report_json(&s, id).await?;
    assert_valid(&r)?;
    let hooks = r["runs"][0]["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["point"], "before_live");
    assert_eq!(hooks[0]["outcome"], "succeeded");
    assert_eq!(r["runs"][0]["target_vm"]["name"], "pgtest1");
    assert_eq!(r["leak_check"]["clean"], true, "{}", r["leak_check"]);
    let rollback = run(&s, "/v1/vms/pgtest1/rollback", "gina@ops-5").await?;
    assert_eq!(rollback["state"], "done", "{rollback}");
    let rb = report_json(&s, rollback["id"].as_str().expect("id")).await?;
    assert_valid(&rb)?;
    // The rollback's chain: the live failover's verified ids, then the appliance.
    for d in rb["runs"][0]["disks"].as_array().expect("disks") {
        assert_eq!(d["planned_device_id"], d["verified_device_id"], "{d}");
        assert!(
            d["appliance_device_path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/dev/disk/by-id/virtio-")),
            "{d}"
        );
    }
    let r = report_json(&s, id).await?;
    assert_eq!(
        r["leak_check"]["clean"], true,
        "after the rollback: {}",
        r["leak_check"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_deleted_behind_ferrys_back_is_a_leak_then_a_diverged_replica() -> TestResult {
    let s = server().await?;
    s.add_pgtest1().await?;
    let drill = run(&s, "/v1/vms/pgtest1/test-failover", "hana@ops-6").await?;
    assert_eq!(drill["state"], "done", "{drill}");
    let id = drill["id"].as_str().expect("id");
    let r = report_json(&s, id).await?;
    let snapshot = r["runs"][0]["disks"][1]["snapshot_id"]
        .as_str()
        .expect("a snapshot")
        .to_string();
    let replica = r["runs"][0]["disks"][1]["replica_volume_id"]
        .as_str()
        .expect("a replica")
        .to_string();
    let client = cloudstack::Client::new(cloudstack::Config::new(
        s.sim.endpoint(),
        cloudsim::world::ids::API_KEY,
        secrecy::SecretString::from(cloudsim::world::ids::SECRET_KEY.to_string()),
    ))?;
    #[allow(
        clippy::disallowed_methods,
        reason = "the test drifts CloudStack by hand"
    )]
    let job = client.delete_snapshot(&snapshot.as_str().into()).await?;
    client.wait(&job).await?;

    // While the drill stands, its snapshot should be there: the report says it is not.
    let r = report_json(&s, id).await?;
    assert_eq!(r["leak_check"]["clean"], false, "{}", r["leak_check"]);
    let missing = r["leak_check"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == snapshot.as_str())
        .expect("the snapshot is looked at");
    assert_eq!(missing["expected"], "present");
    assert_eq!(missing["found"], "absent");

    // The cleanup cannot revert that replica: its report warns of the drift and of the
    // diverged replica, naming it.
    let cleanup = run(&s, "/v1/vms/pgtest1/cleanup", "hana@ops-6").await?;
    assert_eq!(cleanup["state"], "done", "{cleanup}");
    let c = report_json(&s, cleanup["id"].as_str().expect("id")).await?;
    assert_valid(&c)?;
    let warnings = c["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w["kind"] == "diverged"
            && w["message"].as_str().unwrap_or_default().contains(&replica)),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w["kind"] == "drift"),
        "{warnings:?}"
    );
    let (_, _, html) = report(&s, cleanup["id"].as_str().expect("id"), "?format=html").await?;
    assert!(
        html.contains("⚠ diverged"),
        "the warning is not in the HTML"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_waited_out_is_a_wait_of_its_step() -> TestResult {
    let s = server().await?;
    s.add_pgtest1().await?;
    // CloudStack stops answering when the VM is started, for a second and a half.
    s.admin_post(
        "faults",
        json!({"command": "startVirtualMachine", "nth": 1,
               "fault": {"kind": "outage", "seconds": 1.5}}),
    )
    .await?;
    let drill = run(&s, "/v1/vms/pgtest1/test-failover", "ivan@ops-7").await?;
    assert_eq!(drill["state"], "done", "{drill}");
    let r = report_json(&s, drill["id"].as_str().expect("id")).await?;
    assert_valid(&r)?;
    let waits = r["runs"][0]["waits"].as_array().expect("waits");
    let outage = waits
        .iter()
        .find(|w| w["kind"] == "outage")
        .unwrap_or_else(|| panic!("no outage among the waits: {waits:?}"));
    assert_eq!(outage["step"], "start-vm");
    let took = chrono_ms(outage["ended_at"].as_str().expect("end"))?
        - chrono_ms(outage["started_at"].as_str().expect("start"))?;
    assert!(took >= 1_000, "the outage lasted 1.5 s, the wait {took} ms");
    assert!(
        r["warnings"]
            .as_array()
            .expect("w")
            .iter()
            .any(|w| w["kind"] == "outage"),
        "{}",
        r["warnings"]
    );
    Ok(())
}

fn chrono_ms(t: &str) -> anyhow::Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(t)?.timestamp_millis())
}
