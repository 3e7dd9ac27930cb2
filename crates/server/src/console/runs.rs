//! The runs, newest first, filtered by VM, workflow and state.
//!
//! The VM filter is the API's (`GET /v1/runs?vm=`); the workflow and state filters
//! are applied here to the newest [`SCAN`] runs (of that VM, when one is chosen), and
//! the page says so when there may be older ones it did not look at.

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::page::{self, Layout, Nav};
use super::session::Session;
use super::state::Console;
use super::vms::RunRow;
use crate::commands;
use crate::error::ApiError;

/// How many of the newest runs the filters look at.
const SCAN: i64 = 1000;
/// How many runs the page shows at most.
const SHOWN: usize = 100;

const WORKFLOWS: &[&str] = &[
    "test_failover",
    "cleanup",
    "live_failover",
    "rollback",
    "commit",
];
const STATES: &[&str] = &[
    "pending",
    "running",
    "unwinding",
    "stuck",
    "done",
    "unwound",
    "abandoned",
];

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    #[serde(default)]
    vm: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    state: String,
}

/// An option of a filter: its value, its label, whether it is chosen.
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

fn choices(all: &[&str], chosen: &str) -> Vec<Choice> {
    all.iter()
        .map(|v| Choice {
            value: v.to_string(),
            label: v.replace('_', " "),
            selected: *v == chosen,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/runs.html")]
struct RunsPage {
    layout: Layout,
    vms: Vec<Choice>,
    workflows: Vec<Choice>,
    states: Vec<Choice>,
    runs: Vec<RunRow>,
    filtered: bool,
    /// Whether a VM was chosen.
    vm_chosen: bool,
    /// Whether older runs than those looked at may exist.
    truncated: bool,
    more: bool,
}

pub async fn list(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            let e = ApiError::invalid(format!("bad filter: {}", e.body_text()));
            return page::error(&console, &session, e, Some(("/runs", "All runs"))).await;
        }
    };
    match runs_page(&console, &session, &query).await {
        Ok(page) => page::ok(&page),
        Err(e) => page::error(&console, &session, e, Some(("/runs", "All runs"))).await,
    }
}

async fn runs_page(
    console: &Console,
    session: &Session,
    query: &RunsQuery,
) -> Result<RunsPage, ApiError> {
    let app = &console.app;
    for (value, all, what) in [
        (&query.workflow, WORKFLOWS, "workflow"),
        (&query.state, STATES, "state"),
    ] {
        if !value.is_empty() && !all.contains(&value.as_str()) {
            return Err(ApiError::invalid(format!(
                "no {what} `{value}`: choose one of {}",
                all.join(", ")
            )));
        }
    }
    let vm = (!query.vm.is_empty()).then_some(query.vm.as_str());
    let all = commands::runs(
        app,
        commands::RunFilter {
            vm,
            id_prefix: None,
            limit: SCAN,
        },
    )
    .await?;
    let truncated = all.len() as i64 == SCAN;
    let now = store::now_ms();
    let mut matching = all.iter().filter(|r| {
        (query.workflow.is_empty() || r.workflow == query.workflow)
            && (query.state.is_empty() || r.state == query.state)
    });
    let runs: Vec<RunRow> = matching
        .by_ref()
        .take(SHOWN)
        .map(|r| RunRow::of(r, now))
        .collect();
    let more = matching.next().is_some();
    let names: Vec<String> = app
        .env
        .store
        .vms()
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    Ok(RunsPage {
        layout: Layout::new(console, session, "Runs", Some(Nav::Runs)).await,
        vms: names
            .iter()
            .map(|n| Choice {
                value: n.to_string(),
                label: n.to_string(),
                selected: *n == query.vm,
            })
            .collect(),
        workflows: choices(WORKFLOWS, &query.workflow),
        states: choices(STATES, &query.state),
        runs,
        filtered: vm.is_some() || !query.workflow.is_empty() || !query.state.is_empty(),
        vm_chosen: vm.is_some(),
        truncated,
        more,
    })
}
