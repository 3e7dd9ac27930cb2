//! The operator console: `ferry serve`'s web pages at `/` (docs/console.md).
//!
//! Server-rendered HTML (askama templates in `crates/server/templates/console/`,
//! compiled into the binary and escaped by default) with one small script
//! (`assets/console.js`) that swaps a run's progress in as it changes. Every page reads and acts through what the REST
//! API's handlers call (`crate::commands`, `crate::view`, `crate::plans`,
//! `crate::plan_runs`, `crate::appliances`), never through HTTP to itself, so the
//! console shows what the API answers and refuses what it refuses.
//!
//! Architecture invariant: the console adds no workflow logic and no second way to
//! change anything. A button is a form that posts to a console path; the handler
//! checks its confirmation and calls the operation the matching `/v1` route calls.
//!
//! Who may do what: the sign-in page and its assets are the only things served
//! without a session (`guard`); a session is started by the API's token and kept in
//! memory (`session`); every POST must come from the console's own pages with the
//! session's CSRF token (`guard`'s module docs say how forgery is refused).

mod actions;
mod appliances;
mod assets;
mod format;
mod guard;
mod live;
mod page;
mod plan_actions;
mod plans;
mod progress;
mod report;
mod run_page;
mod runs;
mod session;
mod sign_in;
mod state;
mod vms;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::config::ConsoleSection;
use crate::state::AppState;

/// The console's routes, for `ferry serve`'s router to merge with the API's.
pub fn router(app: AppState, config: &ConsoleSection, shutdown: CancellationToken) -> Router {
    let console = state::Console {
        app,
        sessions: Arc::new(session::Sessions::new(config.session_lifetime())),
        shutdown,
    };
    let pages = Router::new()
        .route("/", get(vms::list))
        .route("/vms/{name}", get(vms::show))
        .route(
            "/vms/{name}/test-failover",
            get(actions::confirm_test).post(actions::start_test),
        )
        .route(
            "/vms/{name}/cleanup",
            get(actions::confirm_cleanup).post(actions::start_cleanup),
        )
        .route(
            "/vms/{name}/live-failover",
            get(actions::confirm_live).post(actions::start_live),
        )
        .route(
            "/vms/{name}/rollback",
            get(actions::confirm_rollback).post(actions::start_rollback),
        )
        .route(
            "/vms/{name}/commit",
            get(actions::confirm_commit).post(actions::start_commit),
        )
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(run_page::show))
        .route("/runs/{id}/events", get(run_page::events))
        .route("/runs/{id}/cancel", post(actions::cancel))
        .route("/runs/{id}/retry", post(actions::retry))
        .route(
            "/runs/{id}/abandon",
            get(actions::confirm_abandon).post(actions::abandon),
        )
        .route("/appliances", get(appliances::list))
        .route("/plans", get(plans::list))
        .route("/plans/{name}", get(plans::show))
        .route(
            "/plans/{name}/{action}",
            get(plan_actions::confirm).post(plan_actions::start),
        )
        .route("/plan-runs/{id}", get(plans::run))
        .route("/plan-runs/{id}/events", get(plans::run_events))
        .route("/reports/{id}", get(report::show))
        .route("/sign-out", post(sign_in::sign_out))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            guard::require_session,
        ));
    Router::new()
        .route("/sign-in", get(sign_in::form).post(sign_in::sign_in))
        .route("/assets/{name}", get(assets::serve))
        .merge(pages)
        .layer(middleware::map_response(page::headers))
        .with_state(console)
}
