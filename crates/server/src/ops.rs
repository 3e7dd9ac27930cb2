//! `GET /metrics`: Prometheus metrics, with the gauges read from the store at each
//! scrape (runs by state, diverged replicas, plans needing a drill, appliances).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

#[utoipa::path(get, path = "/metrics", tag = "ops", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    // Runs by state, read at scrape time: a stuck run is visible even if it got stuck
    // before this process started.
    match state.env.store.run_counts().await {
        Ok(counts) => {
            for s in store::RunState::ALL {
                let n = counts
                    .iter()
                    .find(|(state, _)| state.as_str() == *s)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("ferry_runs", "state" => *s).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count runs for /metrics"),
    }
    match state.env.store.diverged_counts().await {
        Ok(counts) => {
            let n: i64 = counts.iter().map(|(_, n)| n).sum();
            metrics::gauge!("ferry_replicas_diverged").set(n as f64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count diverged replicas for /metrics"),
    }
    crate::plans::gauges(&state).await;
    match crate::appliances::list(&state).await {
        Ok(views) => crate::appliances::gauges(&views),
        Err(e) => tracing::warn!(error = ?e, "cannot read the appliances for /metrics"),
    }
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
