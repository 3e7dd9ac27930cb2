//! The HTTP surface: CloudStack's `/client/api`, and cloudsim's own `/sim/` admin
//! endpoints (faults, latency, settings, stats, volume contents, forgetting a job,
//! emulated guests).
//!
//! The files: `endpoint` is `/client/api` as a whole — the command table, signature
//! checks, injected call faults and CloudStack's response and error envelopes;
//! `commands` turns each command's parameters into calls on the state and the job
//! queues; `lists` answers the list commands, whose id parameters `ids` translates
//! as CloudStack's `ParamProcessWorker` does; `params` reads a request's parameters the way CloudStack does; `admin` is
//! the `/sim/` surface, which no CloudStack has. This file only routes.

mod admin;
mod commands;
mod endpoint;
mod ids;
mod lists;
mod params;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::sim::Shared;

pub fn router(inner: Shared) -> Router {
    Router::new()
        .route(
            "/client/api",
            get(endpoint::api_get).post(endpoint::api_post),
        )
        .route("/sim/stats", get(admin::stats))
        .route(
            "/sim/faults",
            get(admin::list_faults)
                .post(admin::add_faults)
                .delete(admin::clear_faults),
        )
        .route(
            "/sim/outage",
            get(admin::get_outage)
                .post(admin::start_outage)
                .delete(admin::end_outage),
        )
        .route("/sim/latency", post(admin::set_latency))
        .route(
            "/sim/settings",
            get(admin::get_settings).post(admin::set_settings),
        )
        .route("/sim/volumes", get(admin::volumes))
        .route("/sim/jobs/{id}", delete(admin::forget_job))
        .route("/sim/guests", get(admin::guests).put(admin::set_guests))
        .with_state(inner)
}
