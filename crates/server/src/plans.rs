//! The REST API of recovery plans: add, show, list, update (with a dry run) and remove
//! (docs/recovery-plans.md). A plan file is parsed and checked by the `plans` crate;
//! every problem comes back in `problems`, and nothing is written unless all hold.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plans::{PlanDefinition, PlanError, PlanHook, Stored};

use crate::body::{parse_body, read_body};
use crate::error::ApiError;
use crate::model::{DefinitionFormat, ErrorBody, Problem};
use crate::plan_model::*;
use crate::state::AppState;
use crate::view::time;

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(get, path = "/v1/plans", tag = "plans",
    responses((status = 200, description = "Every recovery plan, by name", body = Vec<PlanSummary>)))]
pub(crate) async fn list_plans(State(state): State<AppState>) -> ApiResult<Json<Vec<PlanSummary>>> {
    Ok(Json(summaries(&state).await?))
}

/// Every recovery plan, by name, with whether it needs a drill.
pub(crate) async fn summaries(state: &AppState) -> ApiResult<Vec<PlanSummary>> {
    let plans = plans::catalog::list(&state.env.store).await?;
    let mut out = Vec::with_capacity(plans.len());
    for s in &plans {
        out.push(summary(state, s).await?);
    }
    Ok(out)
}

#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = AddPlan,
    responses((status = 201, description = "Added", body = PlanDetail),
              (status = 409, description = "Another plan of that name was added at the same time", body = ErrorBody),
              (status = 422, description = "The plan was refused (including a name in use, or a VM that is not registered); `problems` lists every reason", body = ErrorBody)))]
pub(crate) async fn add_plan(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<PlanDetail>)> {
    let request: AddPlan = parse_body(&read_body(body)?, None)?;
    let plan = parse(&request.definition, request.format, "added")?;
    let stored = plans::catalog::add(&state.env.store, &plan)
        .await
        .map_err(|e| refused(e, "added"))?;
    tracing::info!(plan = %stored.plan.name, tiers = stored.definition.tiers.len(), "added a recovery plan");
    Ok((StatusCode::CREATED, Json(detail(&state, &stored).await?)))
}

#[utoipa::path(get, path = "/v1/plans/{name}", tag = "plans",
    params(("name" = String, Path, description = "The plan's name")),
    responses((status = 200, body = PlanDetail), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_plan(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<PlanDetail>> {
    Ok(Json(detail_named(&state, &name).await?))
}

/// The recovery plan `name`, or 404.
pub(crate) async fn detail_named(state: &AppState, name: &str) -> ApiResult<PlanDetail> {
    let stored = plans::catalog::get(&state.env.store, name)
        .await?
        .ok_or_else(|| not_found(name))?;
    detail(state, &stored).await
}

#[utoipa::path(put, path = "/v1/plans/{name}", tag = "plans", request_body = UpdatePlan,
    params(("name" = String, Path, description = "The plan's name; the file must give the same one")),
    responses((status = 200, description = "Checked, and written unless it was a dry run or changed nothing", body = PlanUpdated),
              (status = 404, body = ErrorBody),
              (status = 422, description = "The plan was refused (including another name); `problems` lists every reason", body = ErrorBody)))]
pub(crate) async fn update_plan(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PlanUpdated>> {
    let request: UpdatePlan = parse_body(&read_body(body)?, None)?;
    let plan = parse(&request.definition, request.format, "changed")?;
    if plan.name != name {
        return Err(ApiError::Invalid {
            message: format!(
                "the file names plan {}, not {name}: a plan's name is its identity; to rename it, add the plan under the new name and remove {name}",
                plan.name
            ),
            problems: vec![Problem {
                field: "name".into(),
                message: format!("must be {name}"),
            }],
        });
    }
    let updated = plans::catalog::update(&state.env.store, &plan, request.dry_run)
        .await
        .map_err(|e| refused(e, "changed"))?;
    if updated.written {
        tracing::info!(plan = %name, changes = updated.changes.len(), "updated a recovery plan");
    }
    Ok(Json(PlanUpdated {
        plan: detail(&state, &updated.stored).await?,
        changes: updated.changes,
        dry_run: request.dry_run,
        updated: updated.written,
    }))
}

#[utoipa::path(delete, path = "/v1/plans/{name}", tag = "plans",
    params(("name" = String, Path, description = "The plan's name")),
    responses((status = 204, description = "Removed (its VMs are not touched)"),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn remove_plan(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .env
        .store
        .remove_plan(&name)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound { .. } => not_found(&name),
            other => other.into(),
        })?;
    tracing::info!(plan = %name, "removed a recovery plan");
    Ok(StatusCode::NO_CONTENT)
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no recovery plan named `{name}`: `ferry plan list` shows them"
    ))
}

fn parse(text: &str, format: DefinitionFormat, done: &str) -> ApiResult<PlanDefinition> {
    let format = match format {
        DefinitionFormat::Toml => inventory::Format::Toml,
        DefinitionFormat::Json => inventory::Format::Json,
    };
    PlanDefinition::parse(text, format).map_err(|e| ApiError::Invalid {
        message: format!("the recovery plan was refused and nothing was {done}: {e}"),
        problems: problems(e.problems()),
    })
}

fn refused(e: PlanError, done: &str) -> ApiError {
    match e {
        PlanError::Invalid(list) => ApiError::Invalid {
            message: format!(
                "the recovery plan was refused and nothing was {done}: {} problem(s)",
                list.len()
            ),
            problems: problems(list),
        },
        PlanError::Store(e) => e.into(),
    }
}

fn problems(list: Vec<inventory::Problem>) -> Vec<Problem> {
    list.into_iter()
        .map(|p| Problem {
            field: p.field,
            message: p.message,
        })
        .collect()
}

async fn drill(state: &AppState, s: &Stored) -> ApiResult<plans::DrillStatus> {
    Ok(plans::catalog::drill_status(&state.env.store, s, store::now_ms()).await?)
}

async fn summary(state: &AppState, s: &Stored) -> ApiResult<PlanSummary> {
    let drill = drill(state, s).await?;
    Ok(PlanSummary {
        name: s.plan.name.clone(),
        description: s.definition.description.clone(),
        tiers: s.definition.tiers.len(),
        vms: s.definition.tiers.iter().map(|t| t.vms.len()).sum(),
        drill_interval_days: s.definition.drill_interval_days,
        updated_at: time(s.plan.updated_at),
        needs_drill: drill.needs_drill(),
        last_drill_at: drill.last_drill_at.map(time),
    })
}

async fn detail(state: &AppState, s: &Stored) -> ApiResult<PlanDetail> {
    let drill = drill(state, s).await?;
    let d = &s.definition;
    Ok(PlanDetail {
        name: s.plan.name.clone(),
        description: d.description.clone(),
        digest: s.plan.digest.clone(),
        drill_interval_days: d.drill_interval_days,
        on_failure: PlanPolicyView {
            test: d.on_failure.test.as_str().into(),
            live: d.on_failure.live.as_str().into(),
        },
        hooks: d.hooks.iter().map(hook).collect(),
        tiers: d
            .tiers
            .iter()
            .map(|t| TierView {
                name: t.name.clone(),
                vms: t.vms.clone(),
                delay_after_secs: t.delay_after_secs,
                hooks: t.hooks.iter().map(hook).collect(),
                gates: t
                    .vms
                    .iter()
                    .map(|vm| {
                        let gates = d.gates_of(vm).unwrap_or_default();
                        (vm.clone(), serde_json::to_value(gates).unwrap_or_default())
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            })
            .collect(),
        created_at: time(s.plan.created_at),
        updated_at: time(s.plan.updated_at),
        needs_drill: drill.needs_drill(),
        last_drill_at: drill.last_drill_at.map(time),
        last_drill_run: drill.last_drill_run,
        last_drill_rto_ms: drill.last_drill_rto_ms,
        last_drill_vm_rto_ms: drill.last_drill_vm_rto_ms.into_iter().collect(),
        drill_reasons: drill.reasons,
    })
}

fn hook(h: &PlanHook) -> PlanHookView {
    PlanHookView {
        when: h.when.as_str().into(),
        scope: h.scope.as_str().into(),
        run: serde_json::to_value(&h.run).unwrap_or_default(),
    }
}

/// `ferry_plan_needs_drill{plan}` (1 or 0) and `ferry_plan_rto_seconds{plan}` (of its
/// last drill that ended done), read at scrape time.
pub(crate) async fn gauges(state: &AppState) {
    let plans = match plans::catalog::list(&state.env.store).await {
        Ok(plans) => plans,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the plans for /metrics");
            return;
        }
    };
    for s in &plans {
        let name = s.plan.name.clone();
        match plans::catalog::drill_status(&state.env.store, s, store::now_ms()).await {
            Ok(drill) => {
                metrics::gauge!("ferry_plan_needs_drill", "plan" => name.clone())
                    .set(if drill.needs_drill() { 1.0 } else { 0.0 });
                if let Some(rto) = drill.last_drill_rto_ms {
                    metrics::gauge!("ferry_plan_rto_seconds", "plan" => name)
                        .set(rto as f64 / 1000.0);
                }
            }
            Err(e) => {
                tracing::warn!(plan = %name, error = %e, "cannot tell whether a plan needs a drill")
            }
        }
    }
}
