//! The `/sim/` admin endpoints, which no CloudStack has: the accounting
//! (`/sim/stats`), fault rules (`/sim/faults`), latencies (`/sim/latency`), settings
//! (`/sim/settings`), every volume with its simulated content (`/sim/volumes`),
//! forgetting an async job (`/sim/jobs/{id}`), and the emulated guests
//! (`/sim/guests`).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::faults::{FaultRule, Outage, OutageAnswer};
use crate::guests::rules::GuestRules;
use crate::jobs::stats::Stats;
use crate::sim::Shared;
use crate::state::entities::Volume;
use crate::world::Settings;

pub async fn stats(State(inner): State<Shared>) -> Json<Stats> {
    Json(inner.stats())
}

pub async fn list_faults(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.faults.lock().expect("poisoned").list()))
}

/// Takes one rule or a list of rules.
pub async fn add_faults(State(inner): State<Shared>, body: Bytes) -> Response {
    let rules: Result<Vec<FaultRule>, _> = serde_json::from_slice::<Vec<FaultRule>>(&body)
        .or_else(|_| serde_json::from_slice::<FaultRule>(&body).map(|r| vec![r]));
    let rules = rules
        .map_err(|e| format!("not a fault rule: {e}"))
        .and_then(|rules| match rules.iter().find_map(|r| r.check().err()) {
            Some(problem) => Err(format!("a fault rule that cannot fire: {problem}")),
            None => Ok(rules),
        });
    match rules {
        Ok(rules) => {
            let mut faults = inner.faults.lock().expect("poisoned");
            let n = rules.len();
            for rule in rules {
                faults.arm(rule);
            }
            (StatusCode::OK, Json(json!({"armed": n}))).into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": e })),
        )
            .into_response(),
    }
}

pub async fn clear_faults(State(inner): State<Shared>) -> StatusCode {
    inner.faults.lock().expect("poisoned").clear();
    StatusCode::NO_CONTENT
}

/// `{"seconds": 120, "answer": "reset" | "http_503"}`: the management server stops
/// answering `/client/api` for that long (wall-clock) from now; jobs already accepted
/// run on.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageRequest {
    seconds: f64,
    #[serde(default)]
    answer: OutageAnswer,
}

pub async fn start_outage(State(inner): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<OutageRequest>(&body) {
        Ok(r) if (0.0..=86_400.0).contains(&r.seconds) => {
            inner
                .faults
                .lock()
                .expect("poisoned")
                .set_outage(Some(Outage::lasting(r.seconds, r.answer)));
            (StatusCode::OK, Json(json!({"seconds": r.seconds, "answer": r.answer}))).into_response()
        }
        Ok(r) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": format!("an outage lasts between 0 and 86400 seconds (got {})", r.seconds)})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": format!("not an outage: {e} (send {{\"seconds\": N, \"answer\": \"reset\" | \"http_503\"}})")})),
        )
            .into_response(),
    }
}

/// Ends the outage under way, if any.
pub async fn end_outage(State(inner): State<Shared>) -> StatusCode {
    inner.faults.lock().expect("poisoned").set_outage(None);
    StatusCode::NO_CONTENT
}

/// `{"outage": null}` or `{"outage": {"seconds_left": …, "answer": …}}`.
pub async fn get_outage(State(inner): State<Shared>) -> Json<Value> {
    let outage = inner.faults.lock().expect("poisoned").outage();
    Json(json!({
        "outage": outage.map(|o| json!({
            "seconds_left": o.until.saturating_duration_since(std::time::Instant::now()).as_secs_f64(),
            "answer": o.answer,
        }))
    }))
}

/// `{"attachVolume": 100, …}`: milliseconds before the time scale.
pub async fn set_latency(
    State(inner): State<Shared>,
    Json(body): Json<BTreeMap<String, u64>>,
) -> StatusCode {
    let mut latency = inner.latency_ms.lock().expect("poisoned");
    for (command, ms) in body {
        latency.insert(command.to_lowercase(), ms);
    }
    StatusCode::NO_CONTENT
}

pub async fn get_settings(State(inner): State<Shared>) -> Json<Settings> {
    Json(inner.state.lock().expect("poisoned").settings.clone())
}

pub async fn set_settings(
    State(inner): State<Shared>,
    Json(settings): Json<Settings>,
) -> StatusCode {
    inner.state.lock().expect("poisoned").settings = settings;
    StatusCode::NO_CONTENT
}

/// Every volume with its simulated content generation.
pub async fn volumes(State(inner): State<Shared>) -> Json<Value> {
    let s = inner.state.lock().expect("poisoned");
    let mut vols: Vec<&Volume> = s.volumes.values().collect();
    vols.sort_by_key(|v| v.seq);
    Json(json!(
        vols.iter()
            .map(|v| json!({
                "id": v.id,
                "name": v.name,
                "type": v.kind,
                "state": v.state,
                "size": v.size,
                "virtualmachineid": v.vm_id,
                "deviceid": v.device_id,
                "generation": v.generation,
            }))
            .collect::<Vec<_>>()
    ))
}

/// `DELETE /sim/jobs/{id}`: CloudStack forgets the async job, as when its `async_job`
/// row is purged or the database is restored from before it. `queryAsyncJobResult`
/// then refuses its id (431, as `ParamProcessWorker` does) and `listAsyncJobs` leaves
/// it out. A job that has not reached the head of its queue never runs; one that is
/// running runs on to its end, unseen. 204, or 404 for an id cloudsim does not know.
pub async fn forget_job(State(inner): State<Shared>, Path(job_id): Path<String>) -> StatusCode {
    if inner.forget_job(&job_id) {
        crate::persist::save_now(&inner);
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// `GET /sim/guests`: the rules, and each VM's guest with its state (`booting`, `up`,
/// `down`, `never`), its addresses, the ports listening and the ports that could not
/// be bound, with the reason.
pub async fn guests(State(inner): State<Shared>) -> Json<Value> {
    Json(inner.guests.report())
}

/// `PUT /sim/guests` with a list of rules (the world file's `[[guests]]` as JSON):
/// they replace the rules, for the guests that boot from now on (a guest booting or
/// up keeps its rule). 422 with the reason for a list that is not sound.
pub async fn set_guests(State(inner): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<GuestRules>(&body) {
        Ok(rules) => {
            inner.guests.set_rules(rules.clone());
            (StatusCode::OK, Json(json!({ "rules": rules }))).into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": format!("not a list of guest rules: {e}") })),
        )
            .into_response(),
    }
}
