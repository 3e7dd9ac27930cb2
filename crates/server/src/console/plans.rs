//! Recovery plans: the list (tiers, VMs, whether a drill is due, the last drill's
//! RTO), a plan's page (its tiers in order, why it needs a drill, its runs), and a
//! plan run's page (each tier's times, each VM's state, run and RTO), which follows
//! the plan run live until it ends.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::format::{self, Badge};
use super::live;
use super::page::{self, Layout, Nav};
use super::plan_actions;
use super::report;
use super::session::Session;
use super::state::Console;
use super::vms::Action;
use crate::error::ApiError;
use crate::plan_model::{PlanDetail, PlanRunView};
use crate::{plan_runs, plans as api_plans};

struct PlanRow {
    name: String,
    description: String,
    tiers: usize,
    vms: usize,
    needs_drill: bool,
    last_drill: Option<String>,
    rto: Option<String>,
}

#[derive(Template)]
#[template(path = "console/plans.html")]
struct PlansPage {
    layout: Layout,
    plans: Vec<PlanRow>,
}

pub async fn list(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Response {
    let rows = async {
        let now = store::now_ms();
        let mut rows = Vec::new();
        for s in api_plans::summaries(&console.app).await? {
            let detail = api_plans::detail_named(&console.app, &s.name).await?;
            rows.push(PlanRow {
                last_drill: s.last_drill_at.as_deref().map(|t| format::age(t, now)),
                rto: detail.last_drill_rto_ms.map(format::duration),
                name: s.name,
                description: s.description,
                tiers: s.tiers,
                vms: s.vms,
                needs_drill: s.needs_drill,
            });
        }
        Ok::<_, ApiError>(rows)
    };
    match rows.await {
        Ok(plans) => page::ok(&PlansPage {
            layout: Layout::new(&console, &session, "Recovery plans", Some(Nav::Plans)).await,
            plans,
        }),
        Err(e) => page::error(&console, &session, e, None).await,
    }
}

struct PlanRunRow {
    id: String,
    workflow: String,
    state: Badge,
    age: String,
    rto: Option<String>,
}

#[derive(Template)]
#[template(path = "console/plan.html")]
struct PlanPage {
    layout: Layout,
    plan: PlanDetail,
    last_drill: Option<String>,
    rto: Option<String>,
    vm_rtos: Vec<(String, String)>,
    /// What the plan's latest run leaves to do.
    actions: Vec<Action>,
    runs: Vec<PlanRunRow>,
}

pub async fn show(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    let found = async {
        let plan = api_plans::detail_named(&console.app, &name).await?;
        let runs = plan_runs::runs_of(&console.app, &name, 10).await?;
        Ok::<_, ApiError>((plan, runs))
    };
    let (plan, runs) = match found.await {
        Ok(found) => found,
        Err(e) => return page::error(&console, &session, e, Some(("/plans", "All plans"))).await,
    };
    let now = store::now_ms();
    let page = PlanPage {
        layout: Layout::new(&console, &session, plan.name.clone(), Some(Nav::Plans)).await,
        last_drill: plan.last_drill_at.as_deref().map(|t| format::age(t, now)),
        rto: plan.last_drill_rto_ms.map(format::duration),
        vm_rtos: plan
            .last_drill_vm_rto_ms
            .iter()
            .map(|(vm, ms)| (vm.clone(), format::duration(*ms)))
            .collect(),
        actions: plan_actions::offered(&plan.name, &runs),
        runs: runs
            .iter()
            .map(|r| PlanRunRow {
                id: r.id.clone(),
                workflow: r.workflow.replace('_', " "),
                state: Badge::of(&r.state),
                age: format::age(&r.created_at, now),
                rto: r.rto_ms.map(format::duration),
            })
            .collect(),
        plan,
    };
    page::ok(&page)
}

struct TierRow {
    tier: i64,
    name: String,
    started: Option<String>,
    vms_took: Option<String>,
    took: Option<String>,
}

struct VmRow {
    name: String,
    tier: i64,
    state: Badge,
    /// Its own run's id.
    run: Option<String>,
    rto: Option<String>,
    detail: Option<String>,
}

struct HookRow {
    /// `plan before`, `tier web after`.
    place: String,
    outcome: Badge,
    hook: String,
    took: Option<String>,
    /// Why it failed; how many times it was started, when more than once.
    detail: Option<String>,
}

/// The part of the plan run's page that changes while it goes on.
#[derive(Template)]
#[template(path = "console/plan_run_live.html")]
struct PlanRunLive {
    id: String,
    state: Badge,
    settled: bool,
    tier: i64,
    tiers: i64,
    rto: Option<String>,
    worker: Option<String>,
    finished: Option<String>,
    error: Option<String>,
    tier_rows: Vec<TierRow>,
    vms: Vec<VmRow>,
    hooks: Vec<HookRow>,
    /// Once the plan run has ended: its timeline, or why it cannot be drawn.
    timeline: Option<String>,
    timeline_error: Option<String>,
}

impl PlanRunLive {
    /// The plan run's progress; once it has ended, with its report's timeline.
    async fn of(console: &Console, run: &PlanRunView) -> PlanRunLive {
        let mut live = PlanRunLive::now(run);
        if live.settled {
            match report::timeline(&console.app, &run.id).await {
                Ok(svg) => live.timeline = Some(svg),
                Err(why) => live.timeline_error = Some(why),
            }
        }
        live
    }

    fn now(run: &PlanRunView) -> PlanRunLive {
        PlanRunLive {
            id: run.id.clone(),
            state: Badge::of(&run.state),
            settled: matches!(run.state.as_str(), "done" | "failed" | "stopped"),
            tier: run.tier,
            tiers: run.tiers,
            rto: run.rto_ms.map(format::duration),
            worker: run
                .worker
                .as_ref()
                .map(|w| format!("{w} (generation {})", run.generation)),
            finished: run.finished_at.as_deref().map(format::when),
            error: run.error.clone(),
            tier_rows: run
                .tier_timings
                .iter()
                .map(|t| TierRow {
                    tier: t.tier,
                    name: t.name.clone(),
                    started: t.started_at.as_deref().map(format::when),
                    vms_took: t.vms_ms.map(format::duration),
                    took: t.ms.map(format::duration),
                })
                .collect(),
            vms: run
                .vms
                .iter()
                .map(|v| VmRow {
                    name: v.name.clone(),
                    tier: v.tier,
                    state: Badge::of(&v.state),
                    run: v.run_id.clone(),
                    rto: v.rto_ms.map(format::duration),
                    detail: v.detail.clone(),
                })
                .collect(),
            hooks: run
                .hooks
                .iter()
                .map(|h| HookRow {
                    place: h.place(),
                    outcome: Badge::of(&h.outcome),
                    hook: h.hook.clone(),
                    took: h.ms.map(format::duration),
                    detail: h.note(),
                })
                .collect(),
            timeline: None,
            timeline_error: None,
        }
    }
}

#[derive(Template)]
#[template(path = "console/plan_run.html")]
struct PlanRunPage {
    layout: Layout,
    id: String,
    plan: String,
    workflow: String,
    created: String,
    settled: bool,
    live: String,
}

pub async fn run(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let run = match plan_runs::plan_run(&console.app, &id).await {
        Ok(run) => run,
        Err(e) => return page::error(&console, &session, e, Some(("/plans", "All plans"))).await,
    };
    let live = PlanRunLive::of(&console, &run).await;
    let heading = format!("{} of plan {}", run.workflow.replace('_', " "), run.plan);
    let page = PlanRunPage {
        layout: Layout::new(&console, &session, heading, Some(Nav::Plans)).await,
        id: run.id.clone(),
        plan: run.plan.clone(),
        workflow: run.workflow.replace('_', " "),
        created: format::when(&run.created_at),
        settled: live.settled,
        live: live.render().unwrap_or_else(|e| {
            tracing::error!(error = %e, "a console template failed to render");
            String::new()
        }),
    };
    page::ok(&page)
}

/// The plan run's progress as server-sent events, until it ends.
pub async fn run_events(State(console): State<Console>, Path(id): Path<String>) -> Response {
    if let Err(e) = plan_runs::plan_run(&console.app, &id).await {
        return (e.status(), e.message()).into_response();
    }
    let shutdown = console.shutdown.clone();
    live::stream(shutdown, move || {
        let (console, id) = (console.clone(), id.clone());
        async move {
            let run = plan_runs::plan_run(&console.app, &id).await?;
            let live = PlanRunLive::of(&console, &run).await;
            let html = live
                .render()
                .map_err(|e| ApiError::Internal(format!("the plan run cannot be drawn: {e}")))?;
            Ok((html, live.settled))
        }
    })
}
