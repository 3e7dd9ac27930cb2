//! The operator console in a real browser (headless Chromium through WebDriver,
//! `browser/`), against `server::start` on port 0 with cloudsim — as an operator
//! uses it: sign in with the API token, see pgtest1, start a drill and confirm it,
//! watch its run page progress to done without a reload, clean up, sign out; a wrong
//! token refused; live failover only with the VM's name typed; a stuck run retried
//! and abandoned with its advice shown; cross-site forms refused without changing
//! anything; every page readable in a narrow window and usable with a keyboard.
//! Screenshots of each page go to `target/console-screenshots/`.

mod browser;
mod common;

use browser::{Browser, ONE_AT_A_TIME};
use common::{Server, TestResult};
use serde_json::Value;
use server::config::EngineSection;

/// cloudsim's pace for the drill that is watched: a drill of pgtest1 takes seconds,
/// long enough to see it in progress.
const WATCHED: f64 = 0.1;

async fn pgtest1(time_scale: f64) -> anyhow::Result<Server> {
    let server = common::server_paced(
        cloudsim::world::World::default(),
        EngineSection {
            claim_interval_ms: 50,
            ..EngineSection::default()
        },
        workflows::Hooks::default(),
        time_scale,
    )
    .await?;
    server.add_pgtest1().await?;
    Ok(server)
}

/// Signs the browser in with `token` by keyboard: the token field has the focus, the
/// token is typed, Tab goes to the name field, and Enter sends the form.
async fn sign_in(b: &Browser, server: &Server, token: &str) -> anyhow::Result<()> {
    sign_in_as(b, server, token, "").await
}

async fn sign_in_as(b: &Browser, server: &Server, token: &str, name: &str) -> anyhow::Result<()> {
    b.goto(&format!("{}/sign-in", server.url)).await?;
    let field = b.find("#token").await?;
    let focused = b.eval("return document.activeElement.id;").await?;
    anyhow::ensure!(
        focused == "token",
        "the token field has the focus: {focused}"
    );
    field.send_keys(&format!("{token}\u{E004}")).await?;
    let focused = b.eval("return document.activeElement.id;").await?;
    anyhow::ensure!(focused == "name", "Tab goes on to the name: {focused}");
    b.find("#name")
        .await?
        .send_keys(&format!("{name}\u{E007}"))
        .await?;
    Ok(())
}

/// Whether the report's text shows a digest: `sha256:` and 64 hex digits (perhaps
/// broken over lines).
fn shows_a_digest(text: &str) -> bool {
    let flat: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    flat.split("sha256:")
        .skip(1)
        .any(|rest| rest.len() >= 64 && rest[..64].chars().all(|c| c.is_ascii_hexdigit()))
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

/// The timeline bars (their `data-job`) the browser shows under `css`.
async fn bars(b: &Browser, css: &str) -> anyhow::Result<Vec<String>> {
    let found = b
        .eval(&format!(
            "return [...document.querySelectorAll('{css} [data-job]')].map(e => e.getAttribute('data-job'));"
        ))
        .await?;
    Ok(found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// `report` reads against the report's checked-in JSON Schema (docs/report.schema.json).
fn assert_valid(report: &Value) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/report.schema.json"
    ))?;
    let schema: Value = serde_json::from_str(&text)?;
    let validator =
        jsonschema::validator_for(&schema).map_err(|e| anyhow::anyhow!("the schema: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| e.to_string())
        .collect();
    anyhow::ensure!(
        errors.is_empty(),
        "the report does not read against its schema: {errors:?}"
    );
    Ok(())
}

/// The runs the API lists for pgtest1.
async fn runs(server: &Server) -> anyhow::Result<Vec<Value>> {
    let (_, runs) = server.get("/v1/runs?vm=pgtest1").await?;
    Ok(runs.as_array().cloned().unwrap_or_default())
}

async fn vm_state(server: &Server) -> anyhow::Result<String> {
    let (_, vm) = server.get("/v1/vms/pgtest1").await?;
    Ok(vm["state"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_from_sign_in_to_sign_out() -> TestResult {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = pgtest1(WATCHED).await?;
    let b = Browser::start(1280, 800).await?;

    // Nothing but the sign-in page without a session: the VM list sends there.
    b.goto(&format!("{}/", server.url)).await?;
    b.wait_for("h1", "ferry").await?;
    assert!(
        b.url().await?.contains("/sign-in?next=%2F"),
        "{}",
        b.url().await?
    );
    b.shot("01-sign-in").await?;
    assert_eq!(b.unlabelled().await?, Vec::<String>::new());

    // A wrong token is refused, and says so.
    sign_in(&b, &server, "not-the-token").await?;
    b.wait_for("#sign-in-error", "not this server's API token")
        .await?;
    b.shot("01b-sign-in-refused").await?;

    // The right one signs in, with who signs in, and lands on the VM list: pgtest1,
    // ready, 2 disks.
    sign_in_as(&b, &server, common::TOKEN, "ada@ops").await?;
    let row = b.wait_for("tr[data-vm=pgtest1]", "pgtest1").await?;
    let text = row.text().await?;
    for expected in ["ready for failover", "2 (117 GiB)", "oma", "never"] {
        assert!(text.contains(expected), "`{expected}` in {text}");
    }
    b.shot("02-vms").await?;
    assert_eq!(b.unlabelled().await?, Vec::<String>::new());

    // The VM's page, and its test failover behind a confirmation.
    b.click("tr[data-vm=pgtest1] a").await?;
    b.wait_for("h1", "pgtest1").await?;
    b.wait_for("#disks", "Hard disk 2").await?;
    b.shot("03-vm").await?;
    b.click("a[href='/vms/pgtest1/test-failover']").await?;
    b.wait_for("h1", "Start a test failover of pgtest1?")
        .await?;
    assert!(
        runs(&server).await?.is_empty(),
        "nothing starts before the confirmation"
    );
    b.shot("04-confirm-test-failover").await?;
    assert_eq!(b.unlabelled().await?, Vec::<String>::new());
    b.click("#confirm").await?;

    // The run page follows the run live: a mark set on the page stays (no reload)
    // while the steps go from running to done.
    b.wait_for(".run-status", "steps done").await?;
    let run_url = b.url().await?;
    let run_id = run_url.rsplit('/').next().unwrap_or_default().to_string();
    assert_eq!(runs(&server).await?.len(), 1);
    b.eval("window.ferryMark = 'not reloaded'; return null;")
        .await?;
    b.wait_for("li.step[data-step=snapshot][data-state=done]", "")
        .await?;
    b.wait_for(".run-status[data-run-state=running]", "")
        .await?;
    b.wait_for("li.job", "Hard disk 1 (boot)").await?;
    b.shot("05-run-in-progress").await?;
    b.wait_for("#live[data-ended] .run-status[data-run-state=done]", "")
        .await?;
    assert_eq!(
        b.eval("return window.ferryMark || null;").await?,
        "not reloaded",
        "the run page updated in place"
    );
    assert_eq!(b.url().await?, run_url);
    let steps = b.count("li.step[data-state=done]").await?;
    assert_eq!(steps, b.count("li.step").await?, "every step done");
    b.wait_for(".story", "It finished").await?;
    b.full_shot("06-run-done").await?;
    let api_run = server.get(&format!("/v1/runs/{run_id}")).await?.1;
    assert_eq!(api_run["state"], "done");
    assert_eq!(vm_state(&server).await?, "test_failed_over");

    // The timeline, under the ended run: a bar for every CloudStack job it submitted.
    b.wait_for("#timeline svg.timeline", "").await?;
    let mut jobs = job_ids(&api_run);
    let mut drawn = bars(&b, "#timeline").await?;
    jobs.sort();
    drawn.sort();
    assert!(
        jobs.len() >= 8,
        "a drill of two disks submits jobs: {jobs:?}"
    );
    assert_eq!(drawn, jobs, "one bar per job");
    b.eval("document.getElementById('evidence').scrollIntoView(); return null;")
        .await?;
    b.shot("07-timeline").await?;

    // The evidence report: its HTML renders in the browser with the same timeline…
    b.click("#report-html").await?;
    b.wait_for("svg.timeline", "").await?;
    assert!(
        b.url()
            .await?
            .ends_with(&format!("/reports/{run_id}?format=html"))
    );
    let mut report_bars = bars(&b, "body").await?;
    report_bars.sort();
    assert_eq!(report_bars, jobs);
    let report_text = b.text("body").await?;
    assert!(report_text.contains("pgtest1"), "{report_text}");
    b.shot("08-report").await?;
    b.full_shot("08b-report-whole").await?;
    // …and its JSON, fetched with the browser's session, holds the same facts and
    // reads against the checked-in schema.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = format!("ferry_session={}", b.session_cookie().await?);
    let json: Value = http
        .get(format!("{}/reports/{run_id}?format=json", server.url))
        .header("cookie", &cookie)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_valid(&json)?;
    assert_eq!(json["subject"]["id"], run_id.as_str());
    let digest = json["digest"].as_str().unwrap_or_default().to_string();
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    assert!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
    // (Each build has its own time, so its own digest: the page shows one like it.)
    assert!(shows_a_digest(&report_text), "the HTML prints its digest");
    assert_eq!(
        json["runs"][0]["requested_by"], "ada@ops (web console)",
        "on whose request: the name given at sign-in"
    );
    let mut reported: Vec<String> = json["runs"][0]["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["job_id"].as_str().map(str::to_string))
        .collect();
    reported.sort();
    assert_eq!(reported, jobs);
    // Downloaded by the browser, as a file.
    b.goto(&run_url).await?;
    b.click("#report-download").await?;
    let file = b
        .downloads
        .path()
        .join(format!("ferry-report-{run_id}.html"));
    let deadline = tokio::time::Instant::now() + browser::PATIENCE;
    while !file.exists() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the report was not downloaded to {}",
            file.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let saved = std::fs::read_to_string(&file)?;
    assert!(
        saved.contains("data-job=") && saved.contains("SHA-256"),
        "the saved report"
    );
    for external in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(
            !saved.contains(external),
            "the report is self-contained: {external}"
        );
    }

    // The VM shows its test VM, verified; the cleanup is confirmed and followed.
    b.goto(&format!("{}/vms/pgtest1", server.url)).await?;
    b.wait_for("#target-disks", "Hard disk 1").await?;
    b.wait_for("p", "verified").await?;
    b.shot("09-vm-test-failed-over").await?;
    b.click("a[href='/vms/pgtest1/cleanup']").await?;
    b.wait_for("h1", "Clean up the test failover of pgtest1?")
        .await?;
    b.click("#confirm").await?;
    b.wait_for("#live[data-ended] .run-status[data-run-state=done]", "")
        .await?;
    assert_eq!(vm_state(&server).await?, "ready_for_failover");

    // The VM list shows the drill, done, with its age.
    b.click("a[href='/']").await?;
    let row = b
        .wait_for("tr[data-vm=pgtest1]", "ready for failover")
        .await?;
    let text = row.text().await?;
    assert!(text.contains("done") && text.contains("just now"), "{text}");

    // The runs, filtered by workflow.
    b.goto(&format!("{}/runs", server.url)).await?;
    b.wait_for("table.runs", "test failover").await?;
    assert_eq!(b.count("table.runs tbody tr").await?, 2);
    b.find("#filter-workflow")
        .await?
        .select_by_value("cleanup")
        .await?;
    b.click(".filters button").await?;
    b.wait_for("table.runs", "cleanup").await?;
    assert_eq!(b.count("table.runs tbody tr").await?, 1);
    assert!(b.url().await?.contains("workflow=cleanup"));
    b.shot("10-runs").await?;

    b.goto(&format!("{}/appliances", server.url)).await?;
    b.wait_for("tr[data-appliance=oma]", "reachable").await?;
    b.shot("11-appliances").await?;

    // A narrow window: nothing needs a sideways scroll.
    b.resize(400, 800).await?;
    for (path, name) in [
        ("/", "12-narrow-vms"),
        (&format!("/runs/{run_id}")[..], "13-narrow-run"),
    ] {
        b.goto(&format!("{}{path}", server.url)).await?;
        b.wait_for("h1", "").await?;
        assert_eq!(b.overflow().await?, None, "{path} at 400 px");
        b.full_shot(name).await?;
    }
    b.resize(1280, 800).await?;

    // Signing out ends the session: the old cookie opens nothing any more.
    let cookie = b.session_cookie().await?;
    b.goto(&format!("{}/", server.url)).await?;
    b.click(".sign-out button").await?;
    b.wait_for(".note", "You signed out.").await?;
    b.goto(&format!("{}/runs", server.url)).await?;
    b.wait_for("#token", "").await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let stale = http
        .get(format!("{}/runs", server.url))
        .header("cookie", format!("ferry_session={cookie}"))
        .send()
        .await?;
    assert_eq!(stale.status(), reqwest::StatusCode::SEE_OTHER);
    b.close().await?;
    Ok(())
}

/// A page of another origin that posts a form to the console as soon as it loads:
/// what a forger would put on a site the operator visits while signed in.
async fn forger(console: &str) -> anyhow::Result<(u16, tokio_util::sync::CancellationToken)> {
    let page = format!(
        "<!doctype html><html><body><form id=\"f\" method=\"post\" \
         action=\"{console}/vms/pgtest1/test-failover\">\
         <input name=\"confirm\" value=\"yes\"><input name=\"mode\" value=\"replica\">\
         </form><script>document.getElementById('f').submit();</script></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let stop = tokio_util::sync::CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(until.cancelled_owned())
            .await;
    });
    Ok((port, stop))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_posted_from_another_site_is_refused_and_changes_nothing() -> TestResult {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = pgtest1(0.001).await?;
    let b = Browser::start(1280, 800).await?;
    sign_in(&b, &server, common::TOKEN).await?;
    b.wait_for("tr[data-vm=pgtest1]", "pgtest1").await?;
    let (port, stop) = forger(&server.url).await?;

    // Another site (localhost is not 127.0.0.1's site): the browser does not even
    // send the session cookie.
    b.goto(&format!("http://localhost:{port}/")).await?;
    b.wait_for("body", "Refused, and nothing was done").await?;
    assert!(b.text("body").await?.contains("not signed in"));
    b.shot("14-forged-cross-site").await?;
    assert!(runs(&server).await?.is_empty());

    // Another origin of the same site (another port of 127.0.0.1): the cookie goes
    // along, and the browser says where the form came from.
    b.goto(&format!("http://127.0.0.1:{port}/")).await?;
    b.wait_for("body", "Refused, and nothing was done").await?;
    let body = b.text("body").await?;
    assert!(body.contains("Sec-Fetch-Site: same-site"), "{body}");
    assert!(runs(&server).await?.is_empty());
    assert_eq!(vm_state(&server).await?, "ready_for_failover");
    stop.cancel();

    // The session is still good for the console's own pages.
    b.goto(&format!("{}/", server.url)).await?;
    b.wait_for("tr[data-vm=pgtest1]", "never").await?;
    b.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_and_its_rollback_are_confirmed_by_the_vms_name() -> TestResult {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = pgtest1(0.001).await?;
    let b = Browser::start(1280, 800).await?;
    sign_in(&b, &server, common::TOKEN).await?;
    b.wait_for("tr[data-vm=pgtest1]", "pgtest1").await?;

    b.goto(&format!("{}/vms/pgtest1", server.url)).await?;
    b.click("a[href='/vms/pgtest1/live-failover']").await?;
    b.wait_for("h1", "Fail pgtest1 over for real?").await?;
    // A name that is not the VM's: refused on the server, nothing started.
    b.find("#vm-name").await?.send_keys("pgtest").await?;
    b.click("#confirm").await?;
    b.wait_for("#confirm-error", "not pgtest1: nothing was started")
        .await?;
    b.shot("15-confirm-live-refused").await?;
    assert!(runs(&server).await?.is_empty());
    assert_eq!(b.unlabelled().await?, Vec::<String>::new());

    b.find("#vm-name").await?.send_keys("pgtest1").await?;
    b.click("#confirm").await?;
    b.wait_for("#live[data-ended] .run-status[data-run-state=done]", "")
        .await?;
    assert_eq!(vm_state(&server).await?, "failed_over");

    b.goto(&format!("{}/vms/pgtest1", server.url)).await?;
    b.wait_for("h1 .badge", "failed over").await?;
    b.click("a[href='/vms/pgtest1/rollback']").await?;
    b.wait_for("h1", "Roll back the live failover of pgtest1?")
        .await?;
    b.find("#vm-name").await?.send_keys("pgtest1").await?;
    b.click("#confirm").await?;
    b.wait_for("#live[data-ended] .run-status[data-run-state=done]", "")
        .await?;
    assert_eq!(vm_state(&server).await?, "ready_for_failover");
    b.close().await?;
    Ok(())
}

/// cloudsim fails the drill's third detach (a data disk), then every re-attach of its
/// undo: the run ends stuck.
async fn arm_a_stuck_drill(server: &Server) -> anyhow::Result<()> {
    server
        .admin_post(
            "faults",
            serde_json::json!([
                {"command": "detachVolume", "nth": 3,
                 "fault": {"kind": "job_error", "errorcode": 530, "errortext": "host is in maintenance"}},
                {"command": "attachVolume", "nth": 1, "times": 1000,
                 "fault": {"kind": "job_error", "errorcode": 530, "errortext": "appliance agent is down"}}
            ]),
        )
        .await
}

async fn disarm(server: &Server) -> anyhow::Result<()> {
    server
        .http
        .delete(format!("{}/faults", server.sim.announcement.admin))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Starts a drill of pgtest1 from its page, confirmed; returns the run's page URL.
async fn start_drill(b: &Browser, server: &Server) -> anyhow::Result<String> {
    b.goto(&format!("{}/vms/pgtest1/test-failover", server.url))
        .await?;
    b.click("#confirm").await?;
    b.wait_for(".run-status", "steps done").await?;
    b.url().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_cancelled_and_a_stuck_run_retried_and_abandoned() -> TestResult {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = pgtest1(WATCHED).await?;
    let b = Browser::start(1280, 800).await?;
    sign_in(&b, &server, common::TOKEN).await?;
    b.wait_for("tr[data-vm=pgtest1]", "pgtest1").await?;

    // Cancel, from the run's page while it runs: it unwinds.
    start_drill(&b, &server).await?;
    b.wait_for("#cancel-run", "Cancel the run").await?;
    b.click("#cancel-run").await?;
    b.wait_for("#live[data-ended] .run-status[data-run-state=unwound]", "")
        .await?;
    b.wait_for(".story", "An operator cancelled it.").await?;
    assert_eq!(vm_state(&server).await?, "ready_for_failover");

    // Stuck: the page says what is stuck and what to do, and offers retry and abandon.
    arm_a_stuck_drill(&server).await?;
    start_drill(&b, &server).await?;
    b.wait_for("#live[data-ended] .run-status[data-run-state=stuck]", "")
        .await?;
    let advice = b.text(".advice").await?;
    assert!(
        advice.contains("What to do") && advice.contains("ferry run retry"),
        "{advice}"
    );
    b.wait_for(".story", "Not yet undone").await?;
    b.full_shot("16-run-stuck").await?;
    assert_eq!(b.unlabelled().await?, Vec::<String>::new());
    // Once the cause is gone, the undo is retried and the run unwinds.
    disarm(&server).await?;
    b.click("#retry-run").await?;
    b.wait_for("#live[data-ended] .run-status[data-run-state=unwound]", "")
        .await?;
    assert_eq!(vm_state(&server).await?, "ready_for_failover");

    // Stuck again, and abandoned after a confirmation that shows the advice.
    arm_a_stuck_drill(&server).await?;
    let stuck = start_drill(&b, &server).await?;
    b.wait_for("#live[data-ended] .run-status[data-run-state=stuck]", "")
        .await?;
    b.click("#abandon-run").await?;
    b.wait_for("h1", "Abandon the stuck run").await?;
    b.wait_for(".advice", "ferry run abandon").await?;
    b.shot("17-confirm-abandon").await?;
    b.click("#confirm").await?;
    b.wait_for(".run-status[data-run-state=abandoned]", "")
        .await?;
    assert_eq!(b.url().await?, stuck);
    let id = stuck.rsplit('/').next().unwrap_or_default();
    assert_eq!(
        server.get(&format!("/v1/runs/{id}")).await?.1["state"],
        "abandoned"
    );
    disarm(&server).await?;
    b.close().await?;
    Ok(())
}

const PLAN: &str = r#"
name = "shop"
description = "The web shop: the database, then its front end"

[[hooks]]
when = "before"
scope = "test"
run = { kind = "command", program = "/bin/sh", args = ["-c", "echo change window open"], timeout_secs = 10 }

[[tiers]]
name = "database"
vms = ["vm000"]

[[tiers]]
name = "web"
vms = ["vm001"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_and_a_plan_run_are_shown_with_their_tiers_and_rto() -> TestResult {
    let _one = ONE_AT_A_TIME.lock().await;
    let (world, vms) = common::world(2, 2);
    let server = common::server_of(world, &vms).await?;
    let (status, _) = server
        .post("/v1/plans", Some(serde_json::json!({ "definition": PLAN })))
        .await?;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let b = Browser::start(1280, 800).await?;
    sign_in(&b, &server, common::TOKEN).await?;
    b.wait_for("tr[data-vm=vm000]", "vm000").await?;
    // The navigation shows Plans once there is one; it has not been drilled.
    b.click("a[href='/plans']").await?;
    b.wait_for("tr[data-plan=shop]", "needs a drill").await?;

    // Drilled from the plan's page, behind its confirmation, which says the tiers.
    b.click("tr[data-plan=shop] a").await?;
    b.click("a[href='/plans/shop/test-failover']").await?;
    b.wait_for("h1", "Drill recovery plan shop?").await?;
    b.wait_for("main", "database (vm000), then web (vm001)")
        .await?;
    assert_eq!(b.unlabelled().await?, Vec::<String>::new());
    b.shot("18a-confirm-plan-drill").await?;
    b.click("#confirm").await?;
    // The plan run's page follows it to its end, its hook with what it said.
    b.wait_for("h1", "test failover of plan shop").await?;
    let url = b.url().await?;
    let id = url
        .rsplit_once("/plan-runs/")
        .map(|(_, id)| id.to_string())
        .ok_or_else(|| anyhow::anyhow!("not a plan run's page: {url}"))?;
    b.wait_for("#live .run-status[data-run-state=done]", "RTO")
        .await?;
    b.wait_for("tr[data-vm=vm001]", "ready").await?;
    b.wait_for("#hooks", "change window open").await?;
    let (_, run) = server.get(&format!("/v1/plan-runs/{id}")).await?;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["hooks"][0]["outcome"], "succeeded", "{run}");
    b.wait_for("#timeline svg.timeline", "").await?;
    assert!(
        !bars(&b, "#timeline").await?.is_empty(),
        "the plan run's timeline has its jobs"
    );
    b.full_shot("18-plan-run").await?;
    b.click("#report-html").await?;
    b.wait_for("body", "shop").await?;
    b.wait_for("svg.timeline", "").await?;

    b.goto(&format!("{}/plans", server.url)).await?;
    let row = b.wait_for("tr[data-plan=shop]", "drilled").await?;
    let text = row.text().await?;
    assert!(text.contains("just now") && text.contains(" s"), "{text}");
    b.shot("19-plans").await?;
    b.click("tr[data-plan=shop] a").await?;
    b.wait_for("h1", "shop").await?;
    b.wait_for(".tiers", "database").await?;
    b.wait_for("table", "test failover").await?;
    b.shot("20-plan").await?;
    assert_eq!(b.unlabelled().await?, Vec::<String>::new());

    // After the drill the page offers its cleanup, last tier first.
    b.click("a[href='/plans/shop/cleanup']").await?;
    b.wait_for("main", "web (vm001), then database (vm000)")
        .await?;
    b.shot("21-confirm-plan-cleanup").await?;
    b.click("#confirm").await?;
    b.wait_for("h1", "cleanup of plan shop").await?;
    b.wait_for("#live .run-status[data-run-state=done]", "done")
        .await?;
    for vm in ["vm000", "vm001"] {
        let (_, v) = server.get(&format!("/v1/vms/{vm}")).await?;
        assert_eq!(v["state"], "ready_for_failover", "{v}");
    }
    b.close().await?;
    Ok(())
}
