//! The REST API: protected VMs (registered, updated at rest, removed), failover runs,
//! recovery plans (their routes are in `plans`), health and metrics.
//!
//! Every route but `/health` and `/metrics` needs the bearer token. Request bodies are
//! read as bytes and parsed here, so a body that is not valid JSON, or not the right
//! shape, gets a 422 that says why — never axum's plain-text rejection or a 500.
//! Starting a workflow answers 202 with the new run as soon as it is stored; the
//! worker in this process is woken to execute it at once.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use store::{ProtectedVm, Run};
use utoipa::OpenApi;

use crate::body::{parse_body, read_body};
use crate::error::{ApiError, chain};
use crate::model::*;
use crate::requester::RequestedBy;
pub use crate::state::AppState;
use crate::{commands, view};

type ApiResult<T> = Result<T, ApiError>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry",
        description = "Fails over VMware VMs with all of their disks into Apache CloudStack. \
                       Every path but /health and /metrics needs `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0")
    ),
    paths(
        health,
        crate::ops::metrics,
        list_vms,
        add_vm,
        show_vm,
        update_vm,
        remove_vm,
        record_resync,
        start_test_failover,
        start_cleanup,
        start_live_failover,
        start_rollback,
        start_commit,
        list_runs,
        show_run,
        cancel_run,
        retry_run,
        abandon_run,
        list_appliances,
        show_appliance,
        crate::plans::list_plans,
        crate::plans::add_plan,
        crate::plans::show_plan,
        crate::plans::update_plan,
        crate::plans::remove_plan,
        crate::plan_runs::start_plan_test,
        crate::plan_runs::start_plan_cleanup,
        crate::plan_runs::start_plan_live,
        crate::plan_runs::start_plan_rollback,
        crate::plan_runs::start_plan_commit,
        crate::plan_runs::show_plan_run,
        crate::plan_runs::list_plan_runs,
        crate::report::route::show_report,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "vms", description = "Protected VMs"),
        (name = "failover", description = "Starting workflows"),
        (name = "runs", description = "Runs of workflows"),
        (name = "appliances", description = "Appliances and their volume agents"),
        (name = "plans", description = "Recovery plans: applications as boot tiers of protected VMs"),
        (name = "ops", description = "Health and metrics")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, as checked in at `docs/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/v1/vms", get(list_vms).post(add_vm))
        .route(
            "/v1/vms/{name}",
            get(show_vm).put(update_vm).delete(remove_vm),
        )
        .route("/v1/vms/{name}/resynced", post(record_resync))
        .route("/v1/vms/{name}/test-failover", post(start_test_failover))
        .route("/v1/vms/{name}/cleanup", post(start_cleanup))
        .route("/v1/vms/{name}/live-failover", post(start_live_failover))
        .route("/v1/vms/{name}/rollback", post(start_rollback))
        .route("/v1/vms/{name}/commit", post(start_commit))
        .route("/v1/appliances", get(list_appliances))
        .route("/v1/appliances/{name}", get(show_appliance))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(show_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/retry", post(retry_run))
        .route("/v1/runs/{id}/abandon", post(abandon_run))
        .route(
            "/v1/plans",
            get(crate::plans::list_plans).post(crate::plans::add_plan),
        )
        .route(
            "/v1/plans/{name}",
            get(crate::plans::show_plan)
                .put(crate::plans::update_plan)
                .delete(crate::plans::remove_plan),
        )
        .route(
            "/v1/plans/{name}/test-failover",
            post(crate::plan_runs::start_plan_test),
        )
        .route(
            "/v1/plans/{name}/cleanup",
            post(crate::plan_runs::start_plan_cleanup),
        )
        .route(
            "/v1/plans/{name}/live-failover",
            post(crate::plan_runs::start_plan_live),
        )
        .route(
            "/v1/plans/{name}/rollback",
            post(crate::plan_runs::start_plan_rollback),
        )
        .route(
            "/v1/plans/{name}/commit",
            post(crate::plan_runs::start_plan_commit),
        )
        .route(
            "/v1/plans/{name}/runs",
            get(crate::plan_runs::list_plan_runs),
        )
        .route("/v1/plan-runs/{id}", get(crate::plan_runs::show_plan_run))
        .route("/v1/reports/{id}", get(crate::report::route::show_report))
        .route("/v1/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(crate::ops::metrics))
        .merge(authed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if state.token_matches(token) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such path: the API is under /v1 (see docs/openapi.json)".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[utoipa::path(get, path = "/health", tag = "ops", security(()),
    responses((status = 200, description = "The server is up", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

#[utoipa::path(get, path = "/v1/appliances", tag = "appliances",
    responses((status = 200, description = "Every appliance with its volume agent, replicas and free slots, by name", body = Vec<crate::appliances::ApplianceView>),
              (status = 401, body = ErrorBody)))]
async fn list_appliances(
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<crate::appliances::ApplianceView>>> {
    Ok(Json(crate::appliances::list(&state).await?))
}

#[utoipa::path(get, path = "/v1/appliances/{name}", tag = "appliances",
    params(("name" = String, Path, description = "The appliance's name")),
    responses((status = 200, body = crate::appliances::ApplianceView),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_appliance(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<crate::appliances::ApplianceView>> {
    Ok(Json(crate::appliances::show(&state, &name).await?))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

async fn vm_by_name(state: &AppState, name: &str) -> ApiResult<ProtectedVm> {
    commands::vm_by_name(state, name).await
}

#[utoipa::path(get, path = "/v1/vms", tag = "vms",
    responses((status = 200, description = "Every protected VM, by name", body = Vec<VmSummary>),
              (status = 401, body = ErrorBody)))]
async fn list_vms(State(state): State<AppState>) -> ApiResult<Json<Vec<VmSummary>>> {
    Ok(Json(commands::vm_summaries(&state).await?))
}

/// A definition file's text, parsed; refused with every problem the parser found,
/// saying that nothing was `done` (`registered`, `changed`).
fn parse_definition(
    text: &str,
    format: DefinitionFormat,
    done: &str,
) -> ApiResult<inventory::VmDefinition> {
    let format = match format {
        DefinitionFormat::Toml => inventory::Format::Toml,
        DefinitionFormat::Json => inventory::Format::Json,
    };
    inventory::VmDefinition::parse(text, format).map_err(|e| ApiError::Invalid {
        message: format!("the VM definition was refused and nothing was {done}: {e}"),
        problems: e
            .problems()
            .into_iter()
            .map(|p| Problem {
                field: p.field,
                message: p.message,
            })
            .collect(),
    })
}

#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = AddVm,
    responses((status = 201, description = "Registered", body = VmDetail),
              (status = 409, description = "Another registration of the same name or replicas won a race", body = ErrorBody),
              (status = 422, description = "The definition was refused (including a name or replica already registered); `problems` lists every reason", body = ErrorBody),
              (status = 503, description = "CloudStack could not be asked", body = ErrorBody)))]
async fn add_vm(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<VmDetail>)> {
    let request: AddVm = parse_body(&read_body(body)?, None)?;
    let definition = parse_definition(&request.definition, request.format, "registered")?;
    let vm = match inventory::register(
        &state.env.store,
        &state.env.cloud,
        &definition,
        state.limits,
    )
    .await
    {
        Ok(vm) => vm,
        Err(inventory::RegisterError::Invalid(problems)) => {
            return Err(ApiError::Invalid {
                message: format!(
                    "the VM definition was refused and nothing was registered: {} problem(s)",
                    problems.len()
                ),
                problems: problems
                    .into_iter()
                    .map(|p| Problem {
                        field: p.field.to_string(),
                        message: p.message.to_string(),
                    })
                    .collect(),
            });
        }
        Err(inventory::RegisterError::CloudStack(e)) => {
            return Err(ApiError::Unavailable(format!(
                "cannot check the definition against CloudStack, so nothing was registered: {}",
                chain(&e)
            )));
        }
        Err(inventory::RegisterError::Store(e)) => return Err(e.into()),
    };
    tracing::info!(vm = %vm.name, disks = vm.disks.len(), "registered a protected VM");
    Ok((
        StatusCode::CREATED,
        Json(view::vm_detail(&state, &vm).await?),
    ))
}

#[utoipa::path(get, path = "/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path, description = "The protected VM's name")),
    responses((status = 200, body = VmDetail), (status = 404, body = ErrorBody)))]
async fn show_vm(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<VmDetail>> {
    let vm = vm_by_name(&state, &name).await?;
    Ok(Json(view::vm_detail(&state, &vm).await?))
}

#[utoipa::path(put, path = "/v1/vms/{name}", tag = "vms", request_body = UpdateVm,
    params(("name" = String, Path, description = "The protected VM's name; the definition must give the same one")),
    responses((status = 200, description = "Checked, and written unless it was a dry run or changed nothing; `changes` says what changed (or would), `updated` whether it was written", body = VmUpdated),
              (status = 404, description = "No protected VM of that name is registered (POST /v1/vms registers one)", body = ErrorBody),
              (status = 409, description = "The VM is not at rest: a run of it is active (stuck included), or it is not ready_for_failover; the message says what to do first", body = ErrorBody),
              (status = 422, description = "The definition was refused (including another name, or a MAC, replica or serial of another VM); `problems` lists every reason", body = ErrorBody),
              (status = 503, description = "CloudStack could not be asked", body = ErrorBody)))]
async fn update_vm(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<VmUpdated>> {
    let request: UpdateVm = parse_body(&read_body(body)?, None)?;
    let definition = parse_definition(&request.definition, request.format, "changed")?;
    let updated = inventory::update(
        &state.env.store,
        &state.env.cloud,
        &name,
        &definition,
        state.limits,
        request.dry_run,
    )
    .await?;
    Ok(Json(VmUpdated {
        vm: view::vm_detail(&state, &updated.vm).await?,
        changes: updated.changes.into_iter().map(view::change).collect(),
        dry_run: request.dry_run,
        updated: updated.written,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// `true` confirms the removal of a VM with run history (its runs are kept, listed
    /// as `NAME (removed)`); without it such a removal is refused with 409
    /// `confirmation_required`. A VM without runs needs no confirmation.
    pub confirm: Option<bool>,
}

#[utoipa::path(delete, path = "/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path, description = "The protected VM's name"), RemoveQuery),
    responses((status = 204, description = "Removed from ferry (nothing in CloudStack changes); its runs are kept"),
              (status = 404, body = ErrorBody),
              (status = 409, description = "`conflict`: a run is active, or the VM is failed over; `confirmation_required`: the VM has run history and `confirm=true` was not given", body = ErrorBody),
              (status = 422, description = "A bad query parameter", body = ErrorBody)))]
async fn remove_vm(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))?;
    let vm = vm_by_name(&state, &name).await?;
    if !matches!(
        vm.state,
        store::VmState::ReadyForFailover | store::VmState::Committed
    ) {
        return Err(ApiError::Conflict(format!(
            "{name} is {}: its replicas are not back on the appliance; {}",
            vm.state,
            workflows::what_first(&name, vm.state)
        )));
    }
    let runs = state.env.store.vm_run_count(&vm.id).await?;
    if runs > 0 && query.confirm != Some(true) {
        return Err(ApiError::ConfirmationRequired(format!(
            "{name} has run history ({runs} run{}): removing it keeps the runs, listed as \
             `{name} (removed)`, but ferry forgets the VM and cannot fail it over or roll it \
             back any more; nothing was removed. To remove it, repeat the request with \
             `?confirm=true`",
            if runs == 1 { "" } else { "s" }
        )));
    }
    state.env.store.remove_vm(&name).await?;
    tracing::info!(vm = %name, runs, "removed a protected VM; its runs are kept");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/vms/{name}/resynced", tag = "vms",
    request_body(content = Option<RecordResync>, description = "Optional; every diverged replica of the VM when omitted"),
    params(("name" = String, Path, description = "The protected VM's name")),
    responses((status = 200, description = "Recorded: the replicas named are trusted again, and the VM may fail over", body = VmDetail),
              (status = 404, body = ErrorBody),
              (status = 409, description = "No replica of the VM is diverged: nothing to record", body = ErrorBody),
              (status = 422, description = "A replica named is not the VM's, or is not diverged; nothing was recorded", body = ErrorBody)))]
async fn record_resync(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<VmDetail>> {
    let request: RecordResync = parse_body(&read_body(body)?, Some(RecordResync::default()))?;
    let vm = vm_by_name(&state, &name).await?;
    let diverged: Vec<&store::DiskRecord> =
        vm.disks.iter().filter(|d| d.diverged.is_some()).collect();
    if diverged.is_empty() {
        return Err(ApiError::Conflict(format!(
            "no replica of {name} is diverged from its source: there is no resync to record"
        )));
    }
    let mut problems = Vec::new();
    for id in &request.replicas {
        match vm
            .disks
            .iter()
            .find(|d| d.disk.replica_volume_id.as_str() == id)
        {
            None => problems.push(format!("{id} is not a replica of {name}")),
            Some(d) if d.diverged.is_none() => {
                problems.push(format!("replica {id} of {name} is not diverged"))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(format!(
            "nothing was recorded: {}; `ferry vm show {name}` lists its diverged replicas",
            problems.join("; ")
        )));
    }
    let replicas: Vec<ids::VolumeId> = if request.replicas.is_empty() {
        diverged
            .iter()
            .map(|d| d.disk.replica_volume_id.clone())
            .collect()
    } else {
        request
            .replicas
            .iter()
            .map(|id| id.as_str().into())
            .collect()
    };
    let cleared = state.env.store.record_resync(&vm.id, &replicas).await?;
    tracing::info!(vm = %name, replicas = ?cleared, "an operator recorded a resync of diverged replicas");
    let vm = vm_by_name(&state, &name).await?;
    Ok(Json(view::vm_detail(&state, &vm).await?))
}

/// Starts `what` on VM `name` and answers 202 with the new run.
async fn started(
    state: &AppState,
    who: RequestedBy,
    name: &str,
    what: commands::Start,
) -> ApiResult<(StatusCode, Json<RunSummary>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(commands::start(state, name, what, who.0.as_deref()).await?),
    ))
}

#[utoipa::path(post, path = "/v1/vms/{name}/test-failover", tag = "failover", request_body(content = Option<StartTest>, description = "Optional; the mode is `replica` when omitted"),
    params(("name" = String, Path, description = "The protected VM's name")),
    responses((status = 202, description = "The run was created and is being executed", body = RunSummary),
              (status = 404, body = ErrorBody),
              (status = 409, description = "The VM is not ready_for_failover, or another run is active", body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn start_test_failover(
    State(state): State<AppState>,
    who: RequestedBy,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<RunSummary>)> {
    let request: StartTest = parse_body(&read_body(body)?, Some(StartTest::default()))?;
    started(
        &state,
        who,
        &name,
        commands::Start::TestFailover(request.mode),
    )
    .await
}

#[utoipa::path(post, path = "/v1/vms/{name}/cleanup", tag = "failover",
    params(("name" = String, Path, description = "The protected VM's name")),
    responses((status = 202, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn start_cleanup(
    State(state): State<AppState>,
    who: RequestedBy,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<RunSummary>)> {
    started(&state, who, &name, commands::Start::Cleanup).await
}

#[utoipa::path(post, path = "/v1/vms/{name}/live-failover", tag = "failover",
    params(("name" = String, Path, description = "The protected VM's name")),
    responses((status = 202, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn start_live_failover(
    State(state): State<AppState>,
    who: RequestedBy,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<RunSummary>)> {
    started(&state, who, &name, commands::Start::LiveFailover).await
}

#[utoipa::path(post, path = "/v1/vms/{name}/rollback", tag = "failover",
    params(("name" = String, Path, description = "The protected VM's name")),
    responses((status = 202, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn start_rollback(
    State(state): State<AppState>,
    who: RequestedBy,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<RunSummary>)> {
    started(&state, who, &name, commands::Start::Rollback).await
}

#[utoipa::path(post, path = "/v1/vms/{name}/commit", tag = "failover",
    params(("name" = String, Path, description = "The protected VM's name")),
    responses((status = 202, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn start_commit(
    State(state): State<AppState>,
    who: RequestedBy,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<RunSummary>)> {
    started(&state, who, &name, commands::Start::Commit).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Only the runs of this protected VM.
    pub vm: Option<String>,
    /// Only the runs whose id starts with this (any case; 1 to 36 characters), among
    /// all runs however old — how a run is named by the start of its id. Not with `vm`.
    pub id_prefix: Option<String>,
    /// At most this many, newest first (default 50, at most 1000).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunQuery),
    responses((status = 200, description = "Runs, newest first", body = Vec<RunSummary>),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_runs(
    State(state): State<AppState>,
    query: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<RunSummary>>> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))?;
    let filter = commands::RunFilter {
        vm: query.vm.as_deref(),
        id_prefix: query.id_prefix.as_deref(),
        limit: query.limit.unwrap_or(50),
    };
    Ok(Json(commands::runs(&state, filter).await?))
}

async fn run_by_id(state: &AppState, id: &str) -> ApiResult<Run> {
    commands::run_by_id(state, id).await
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = RunDetail), (status = 404, body = ErrorBody)))]
async fn show_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let run = run_by_id(&state, &id).await?;
    Ok(Json(view::run_detail(&state, &run).await?))
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 202, description = "Cancel requested: the run unwinds before its next step", body = RunSummary),
              (status = 404, body = ErrorBody),
              (status = 409, description = "The run has ended, or is stuck (retry or abandon it)", body = ErrorBody)))]
async fn cancel_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<RunSummary>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(commands::cancel(&state, &id).await?),
    ))
}

#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 202, description = "The failed undo will be tried again", body = RunSummary),
              (status = 404, body = ErrorBody),
              (status = 409, description = "The run is not stuck", body = ErrorBody)))]
async fn retry_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<RunSummary>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(commands::retry(&state, &id).await?),
    ))
}

#[utoipa::path(post, path = "/v1/runs/{id}/abandon", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, description = "The run is abandoned and no longer holds its VM", body = RunSummary),
              (status = 404, body = ErrorBody),
              (status = 409, description = "The run is not stuck", body = ErrorBody)))]
async fn abandon_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunSummary>> {
    Ok(Json(commands::abandon(&state, &id).await?))
}
