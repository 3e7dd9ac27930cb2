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
/// token is typed and Enter pressed.
async fn sign_in(b: &Browser, server: &Server, token: &str) -> anyhow::Result<()> {
    b.goto(&format!("{}/sign-in", server.url)).await?;
    let field = b.find("#token").await?;
    let focused = b.eval("return document.activeElement.id;").await?;
    anyhow::ensure!(
        focused == "token",
        "the token field has the focus: {focused}"
    );
    field.send_keys(&format!("{token}\u{E007}")).await?;
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

    // The right one signs in and lands on the VM list: pgtest1, ready, 2 disks.
    sign_in(&b, &server, common::TOKEN).await?;
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
    b.wait_for("li.step[data-state=done]", "").await?;
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

    // The VM shows its test VM, verified; the cleanup is confirmed and followed.
    b.goto(&format!("{}/vms/pgtest1", server.url)).await?;
    b.wait_for("#target-disks", "Hard disk 1").await?;
    b.wait_for("p", "verified").await?;
    b.shot("07-vm-test-failed-over").await?;
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
    b.shot("08-runs").await?;

    b.goto(&format!("{}/appliances", server.url)).await?;
    b.wait_for("tr[data-appliance=oma]", "reachable").await?;
    b.shot("09-appliances").await?;

    // A narrow window: nothing needs a sideways scroll.
    b.resize(400, 800).await?;
    for (path, name) in [
        ("/", "10-narrow-vms"),
        (&format!("/runs/{run_id}")[..], "11-narrow-run"),
    ] {
        b.goto(&format!("{}{path}", server.url)).await?;
        b.wait_for("h1", "").await?;
        assert_eq!(b.overflow().await?, None, "{path} at 400 px");
        b.shot(name).await?;
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
