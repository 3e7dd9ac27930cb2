//! The evidence report from the console (docs/report.md): `/reports/{id}` answers as
//! `GET /v1/reports/{id}` does — the same handler, `format=html|json`, `download=1` —
//! under the console's session instead of the bearer token, so a browser can open it,
//! print it or save it. A run's or plan run's page shows the report's timeline once
//! it has ended (`timeline`).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::page;
use super::session::Session;
use super::state::Console;
use crate::report::route::{ReportQuery, show_report};
use crate::state::AppState;

pub async fn show(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match show_report(State(console.app.clone()), Path(id), query).await {
        Ok(response) => response,
        Err(e) => page::error(&console, &session, e, Some(("/runs", "All runs"))).await,
    }
}

/// The timeline of run or plan run `id`, drawn from its evidence report, or why it
/// cannot be.
pub async fn timeline(app: &AppState, id: &str) -> Result<String, String> {
    match crate::report::build(app, id).await {
        Ok(report) => Ok(crate::report::timeline_svg(&report)),
        Err(e) => Err(e.message()),
    }
}
