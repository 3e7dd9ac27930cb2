//! One run's page: what it is (workflow, VM, plan run), then its progress
//! (`progress`), which the page follows live (`live`) until the run settles.

use std::collections::HashMap;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::format;
use super::live;
use super::page::{self, Layout, Nav};
use super::progress::Live;
use super::report;
use super::session::Session;
use super::state::Console;
use crate::error::ApiError;
use crate::model::{PlanRunRef, RunDetail};
use crate::{commands, view};

#[derive(Template)]
#[template(path = "console/run.html")]
struct RunPage {
    layout: Layout,
    id: String,
    heading: String,
    vm: String,
    /// The VM's page, unless it was removed from ferry.
    vm_link: bool,
    created: String,
    plan_run: Option<PlanRunRef>,
    settled: bool,
    /// The progress, rendered by its own template (escaped there).
    live: String,
}

/// The run, its detail as the API gives it, and its progress drawn.
async fn progress(console: &Console, id: &str, csrf: &str) -> Result<(RunDetail, Live), ApiError> {
    let app = &console.app;
    let run = commands::run_by_id(app, id).await?;
    let detail = view::run_detail(app, &run).await?;
    let disks: HashMap<String, String> = match app.env.store.vm_by_id(&run.vm_id).await? {
        Some(vm) => vm
            .disks
            .iter()
            .map(|d| {
                let label = if d.disk.is_boot {
                    format!("{} (boot)", d.disk.label)
                } else {
                    d.disk.label.clone()
                };
                (d.disk.replica_volume_id.to_string(), label)
            })
            .collect(),
        None => HashMap::new(),
    };
    let mut live = Live::of(&detail, &disks, csrf);
    if live.settled {
        live.with_timeline(report::timeline(app, id).await);
    }
    Ok((detail, live))
}

pub async fn show(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let (detail, live) = match progress(&console, &id, &session.csrf).await {
        Ok(found) => found,
        Err(e) => return page::error(&console, &session, e, Some(("/runs", "All runs"))).await,
    };
    let rendered = match live.render() {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            String::from("<p>The progress cannot be drawn; the server's log says why.</p>")
        }
    };
    let run = &detail.run;
    let heading = format!(
        "{} of {}",
        format::workflow(&run.workflow, run.mode.as_deref()),
        run.vm
    );
    let page = RunPage {
        layout: Layout::new(&console, &session, heading.clone(), Some(Nav::Runs)).await,
        id: run.id.clone(),
        heading,
        vm_link: !run.vm.ends_with(" (removed)"),
        vm: run.vm.clone(),
        created: format::when(&run.created_at),
        plan_run: detail.plan_run.clone(),
        settled: live.settled,
        live: rendered,
    };
    page::ok(&page)
}

/// The run's progress as server-sent events, until it settles.
pub async fn events(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = commands::run_by_id(&console.app, &id).await {
        return (e.status(), e.message()).into_response();
    }
    let shutdown = console.shutdown.clone();
    live::stream(shutdown, move || {
        let (console, id, csrf) = (console.clone(), id.clone(), session.csrf.clone());
        async move {
            let (_, live) = progress(&console, &id, &csrf).await?;
            let html = live
                .render()
                .map_err(|e| ApiError::Internal(format!("the progress cannot be drawn: {e}")))?;
            Ok((html, live.settled))
        }
    })
}

impl RunPage {
    fn seconds(&self, ms: &i64) -> String {
        format::duration(*ms)
    }
}
