//! Running recovery plans through the API: starting a plan run (driven at once by this
//! process, `plan_driving`) and showing it (docs/decisions/0002-plan-runs.md).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plans::runner::PlanStartError;
use store::{PlanRun, Workflow};

use crate::error::ApiError;
use crate::model::{ErrorBody, Problem};
use crate::plan_model::{PlanRunView, PlanRunVmView};
use crate::state::AppState;
use crate::view::time;

type ApiResult<T> = Result<T, ApiError>;

async fn start(
    state: &AppState,
    name: &str,
    workflow: Workflow,
) -> ApiResult<(StatusCode, Json<PlanRunView>)> {
    let run = state
        .plans
        .driver()
        .start(name, workflow)
        .await
        .map_err(|e| match e {
            PlanStartError::NoPlan(_) => ApiError::NotFound(e.to_string()),
            PlanStartError::Busy { .. } => ApiError::Conflict(e.to_string()),
            PlanStartError::Preflight(problems) => ApiError::Invalid {
                message: format!(
                    "plan {name} was not started, and nothing changed: {} problem(s)",
                    problems.len()
                ),
                problems: problems
                    .into_iter()
                    .map(|p| Problem {
                        field: p.field,
                        message: p.message,
                    })
                    .collect(),
            },
            PlanStartError::Store(e) => e.into(),
        })?;
    tracing::info!(plan = %name, plan_run = %run.id, %workflow, "plan run started");
    state.plans.drive(run.id.clone());
    Ok((StatusCode::ACCEPTED, Json(view(&run))))
}

macro_rules! start_route {
    ($fn:ident, $path:literal, $workflow:expr, $what:literal) => {
        #[utoipa::path(post, path = $path, tag = "plans",
            params(("name" = String, Path, description = "The plan's name")),
            responses((status = 202, description = $what, body = PlanRunView),
                      (status = 404, body = ErrorBody),
                      (status = 409, description = "A run of the plan is under way", body = ErrorBody),
                      (status = 422, description = "Pre-flight: a VM is not where the workflow starts from, or in another run; `problems` names every one, and nothing changed", body = ErrorBody)))]
        pub(crate) async fn $fn(
            State(state): State<AppState>,
            Path(name): Path<String>,
        ) -> ApiResult<(StatusCode, Json<PlanRunView>)> {
            start(&state, &name, $workflow).await
        }
    };
}

start_route!(
    start_plan_test,
    "/v1/plans/{name}/test-failover",
    Workflow::TestFailover,
    "A drill of the plan: test failovers tier by tier, each VM's gates checked"
);
start_route!(
    start_plan_cleanup,
    "/v1/plans/{name}/cleanup",
    Workflow::Cleanup,
    "The cleanup of the plan's drill, last tier first"
);
start_route!(
    start_plan_live,
    "/v1/plans/{name}/live-failover",
    Workflow::LiveFailover,
    "A live failover of the plan, tier by tier, each VM's gates checked"
);
start_route!(
    start_plan_rollback,
    "/v1/plans/{name}/rollback",
    Workflow::Rollback,
    "The rollback of the plan's live failover, last tier first"
);
start_route!(
    start_plan_commit,
    "/v1/plans/{name}/commit",
    Workflow::Commit,
    "The commit of the plan's live failover"
);

#[utoipa::path(get, path = "/v1/plan-runs/{id}", tag = "plans",
    params(("id" = String, Path, description = "The plan run's id")),
    responses((status = 200, body = PlanRunView), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_plan_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PlanRunView>> {
    let run = state
        .env
        .store
        .plan_run(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no plan run {id}")))?;
    Ok(Json(view(&run)))
}

fn view(run: &PlanRun) -> PlanRunView {
    let tiers = run.vms.iter().map(|v| v.tier).max().map_or(0, |t| t + 1);
    PlanRunView {
        id: run.id.clone(),
        plan: run.plan_name.clone(),
        workflow: run.workflow.to_string(),
        state: run.state.to_string(),
        tier: run.tier + 1,
        tiers,
        error: run.error.clone(),
        created_at: time(run.created_at),
        finished_at: run.finished_at.map(time),
        rto_ms: run.rto_ms(),
        vms: run
            .vms
            .iter()
            .map(|v| PlanRunVmView {
                name: v.vm_name.clone(),
                tier: v.tier + 1,
                state: v.state.to_string(),
                run_id: v.run_id.as_ref().map(|r| r.to_string()),
                rto_ms: run.vm_rto_ms(v),
                detail: v.detail.clone(),
                readiness: v
                    .readiness
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok()),
            })
            .collect(),
    }
}
