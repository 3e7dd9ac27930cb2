//! Running a recovery plan from the console over plain HTTP: the plan's page offers
//! what its latest plan run leaves to do; a drill and its cleanup start only with the
//! page's confirmation and the session's CSRF token, a live failover only with the
//! plan's name typed; a pre-flight refusal is shown with its problems and starts
//! nothing; the plan run's page shows its hooks with their outcomes.

mod common;

use std::time::Duration;

use common::{Server, TOKEN, TestResult};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::json;
use server::config::EngineSection;

const PLAN: &str = r#"
name = "app"

[[hooks]]
when = "before"
scope = "test"
run = { kind = "command", program = "/bin/sh", args = ["-c", "echo change window open"], timeout_secs = 10 }

[[tiers]]
name = "database"
vms = ["pgtest1"]
[[tiers.gates]]
kind = "running"
"#;

async fn server() -> anyhow::Result<Server> {
    let server = common::server(
        cloudsim::world::World::default(),
        EngineSection {
            claim_interval_ms: 50,
            ..EngineSection::default()
        },
    )
    .await?;
    server.add_pgtest1().await?;
    server
        .post("/v1/plans", Some(json!({ "definition": PLAN })))
        .await?;
    Ok(server)
}

/// A signed-in console client: its cookie and CSRF token.
struct Console {
    http: reqwest::Client,
    url: String,
    cookie: String,
    csrf: String,
}

impl Console {
    async fn sign_in(server: &Server) -> anyhow::Result<Console> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let response = http
            .post(format!("{}/sign-in", server.url))
            .form(&[("token", TOKEN), ("next", "/plans")])
            .send()
            .await?;
        anyhow::ensure!(response.status() == StatusCode::SEE_OTHER, "signed in");
        let cookie = response.headers()[SET_COOKIE]
            .to_str()?
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut console = Console {
            http,
            url: server.url.clone(),
            cookie,
            csrf: String::new(),
        };
        let (_, page) = console.get("/plans/app").await?;
        let field = r#"name="csrf" value=""#;
        let start = page
            .find(field)
            .ok_or_else(|| anyhow::anyhow!("no csrf field in {page}"))?
            + field.len();
        console.csrf = page[start..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_string();
        Ok(console)
    }

    async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
            .send()
            .await?;
        Ok((response.status(), response.text().await?))
    }

    /// Posts `form` (with the CSRF token unless `csrf` is false): the status and
    /// where it sends the browser, or the page.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        csrf: bool,
    ) -> anyhow::Result<(StatusCode, String)> {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        if csrf {
            form.push(("csrf", &self.csrf));
        }
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await?;
        let status = response.status();
        let body = match response.headers().get(LOCATION) {
            Some(to) => to.to_str()?.to_string(),
            None => response.text().await?,
        };
        Ok((status, body))
    }
}

async fn plan_runs(server: &Server) -> anyhow::Result<usize> {
    let (_, runs) = server.get("/v1/plans/app/runs").await?;
    Ok(runs.as_array().map_or(0, Vec::len))
}

/// Starts `action` of plan `app`, confirmed as `form` says; the plan run, once ended.
async fn run(
    server: &Server,
    console: &Console,
    action: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<serde_json::Value> {
    let (status, to) = console
        .post(&format!("/plans/app/{action}"), form, true)
        .await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{action}: {to}");
    let id = to
        .strip_prefix("/plan-runs/")
        .ok_or_else(|| anyhow::anyhow!("{action} went to {to}"))?;
    server.finish_plan_run(id, Duration::from_secs(90)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_drilled_and_cleaned_up_from_the_console_behind_its_confirmations() -> TestResult
{
    let server = server().await?;
    let console = Console::sign_in(&server).await?;

    // Never run: a drill or a live failover is offered.
    let (status, page) = console.get("/plans/app").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(r#"href="/plans/app/test-failover""#),
        "{page}"
    );
    assert!(
        page.contains(r#"href="/plans/app/live-failover""#),
        "{page}"
    );
    assert!(!page.contains(r#"href="/plans/app/cleanup""#), "{page}");
    let (status, confirm) = console.get("/plans/app/test-failover").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(confirm.contains("Drill recovery plan app?"), "{confirm}");
    assert!(
        confirm.contains("database (pgtest1)"),
        "the tiers: {confirm}"
    );

    // Not confirmed, or without the CSRF token: nothing starts.
    let (status, page) = console.post("/plans/app/test-failover", &[], true).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("nothing was started"), "{page}");
    let (status, _) = console
        .post("/plans/app/test-failover", &[("confirm", "yes")], false)
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An action a plan does not have.
    let (status, page) = console
        .post("/plans/app/explode", &[("confirm", "yes")], true)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    assert!(page.contains("test-failover, cleanup"), "{page}");
    assert_eq!(plan_runs(&server).await?, 0);

    // Confirmed: the drill runs, and its page shows the plan's hook as it went.
    let drill = run(&server, &console, "test-failover", &[("confirm", "yes")]).await?;
    assert_eq!(drill["state"], "done", "{drill}");
    let id = drill["id"].as_str().unwrap_or_default();
    let (_, page) = console.get(&format!("/plan-runs/{id}")).await?;
    assert!(page.contains(r#"id="hooks""#), "{page}");
    assert!(page.contains("plan before"), "{page}");
    assert!(page.contains("change window open"), "what it said: {page}");
    let (_, shown) = server.get(&format!("/v1/plan-runs/{id}")).await?;
    assert_eq!(shown["hooks"][0]["outcome"], "succeeded", "{shown}");

    // After the drill, its cleanup is what is offered.
    let (_, page) = console.get("/plans/app").await?;
    assert!(page.contains(r#"href="/plans/app/cleanup""#), "{page}");
    assert!(
        !page.contains(r#"href="/plans/app/test-failover""#),
        "{page}"
    );
    // A live failover now: its name typed wrong starts nothing; typed right, the
    // pre-flight refuses it (pgtest1 is test-failed-over), naming the VM.
    let (status, page) = console
        .post("/plans/app/live-failover", &[("vm_name", "ap")], true)
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("which is not app"), "{page}");
    let (status, page) = console
        .post("/plans/app/live-failover", &[("vm_name", "app")], true)
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(
        page.contains("plan app was not started") && page.contains("pgtest1"),
        "{page}"
    );
    assert_eq!(plan_runs(&server).await?, 1, "nothing more started");

    let cleanup = run(&server, &console, "cleanup", &[("confirm", "yes")]).await?;
    assert_eq!(cleanup["state"], "done", "{cleanup}");
    let (_, vm) = server.get("/v1/vms/pgtest1").await?;
    assert_eq!(vm["state"], "ready_for_failover", "{vm}");
    let (_, page) = console.get("/plans/app").await?;
    assert!(
        page.contains(r#"href="/plans/app/test-failover""#),
        "{page}"
    );
    Ok(())
}
