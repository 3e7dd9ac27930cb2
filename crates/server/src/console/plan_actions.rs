//! Running a recovery plan from the console, behind the same confirmations as a VM's
//! workflows (`actions`): a drill and its cleanup confirmed by the page's button; a
//! live failover, its rollback and its commit only with the plan's name typed. The
//! plan's page offers what its latest plan run leaves to do; the start is what the
//! REST API's `POST /v1/plans/{name}/…` calls (`plan_runs::start`), so its pre-flight
//! refuses here as there, with every problem listed, and nothing changes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use super::actions::{ConfirmPage, StartForm, Workflow};
use super::page::{self, Layout, Nav};
use super::session::Session;
use super::state::Console;
use super::vms::Action;
use crate::error::ApiError;
use crate::plan_model::{PlanDetail, PlanRunView};
use crate::requester::RequestedBy;
use crate::{plan_runs, plans as api_plans};

/// The store's workflow of a console action.
fn stored(workflow: Workflow) -> store::Workflow {
    match workflow {
        Workflow::Test => store::Workflow::TestFailover,
        Workflow::Cleanup => store::Workflow::Cleanup,
        Workflow::Live => store::Workflow::LiveFailover,
        Workflow::Rollback => store::Workflow::Rollback,
        Workflow::Commit => store::Workflow::Commit,
    }
}

fn question(workflow: Workflow, plan: &str) -> String {
    match workflow {
        Workflow::Test => format!("Drill recovery plan {plan}?"),
        Workflow::Cleanup => format!("Clean up the drill of plan {plan}?"),
        Workflow::Live => format!("Fail plan {plan} over for real?"),
        Workflow::Rollback => format!("Roll back the live failover of plan {plan}?"),
        Workflow::Commit => format!("Commit the live failover of plan {plan}?"),
    }
}

/// The tiers in the order `workflow` takes them: `database (db1), then web (web1, web2)`.
fn tiers_in_order(plan: &PlanDetail, workflow: Workflow) -> String {
    let mut tiers: Vec<String> = plan
        .tiers
        .iter()
        .map(|t| format!("{} ({})", t.name, t.vms.join(", ")))
        .collect();
    if matches!(workflow, Workflow::Cleanup | Workflow::Rollback) {
        tiers.reverse();
    }
    tiers.join(", then ")
}

/// What a failover's policy does when a VM fails (or a hook), in words.
fn on_failure(kind: &str, policy: &str) -> String {
    match policy {
        "continue" => format!(
            "If a VM or a hook fails, the plan's policy for {kind} is to continue: the later \
             tiers go on, and the plan run ends failed, naming what did not come through."
        ),
        _ => format!(
            "If a VM or a hook fails, the plan's policy for {kind} is to stop: what came up \
             stays for inspection, and the later tiers are skipped."
        ),
    }
}

/// What the plan run will do, in sentences (docs/recovery-plans.md).
fn explain(workflow: Workflow, plan: &PlanDetail) -> Vec<String> {
    let vms: usize = plan.tiers.iter().map(|t| t.vms.len()).sum();
    let order = tiers_in_order(plan, workflow);
    let checked = "Before anything changes, ferry checks the whole plan — every VM registered, \
                   in the state this needs and in no other run, its appliance's agent and its \
                   networks — and starts nothing if any of it fails, listing every problem.";
    match workflow {
        Workflow::Test => vec![
            format!(
                "ferry fails the plan's {vms} VM(s) over onto the test networks, tier by tier: \
                 {order}. A tier starts only once every VM of the one before passes its \
                 readiness gates. Clean the drill up with the plan's cleanup."
            ),
            on_failure("drills", &plan.on_failure.test),
            checked.into(),
        ],
        Workflow::Cleanup => vec![format!(
            "ferry cleans up the drill of every VM of the plan that was test-failed-over, last \
             tier first: {order}. It always goes on to the end, VM by VM; a VM whose cleanup \
             fails is reported and the others go on."
        )],
        Workflow::Live => vec![
            format!(
                "This is the real cut-over of the whole application: ferry fails the plan's \
                 {vms} VM(s) over onto the production networks tier by tier: {order}, each \
                 VM's before_live hooks first. A tier starts only once every VM of the one \
                 before passes its readiness gates."
            ),
            on_failure("live failovers", &plan.on_failure.live),
            "Undo it with the plan's rollback; make it final with its commit.".into(),
            checked.into(),
        ],
        Workflow::Rollback => vec![format!(
            "ferry rolls back the live failover of every VM of the plan, last tier first: \
             {order}. Each VM is destroyed in CloudStack and its replicas go back on its \
             appliance, not reverted: they hold what production wrote since the cut-over."
        )],
        Workflow::Commit => vec![format!(
            "ferry commits the live failover of every VM of the plan ({order}): each keeps \
             running as it is, its snapshots are deleted, and ferry can no longer roll it back."
        )],
    }
}

async fn confirm_page(
    console: &Console,
    session: &Session,
    workflow: Workflow,
    name: &str,
    error: Option<String>,
) -> Result<ConfirmPage, ApiError> {
    let plan = api_plans::detail_named(&console.app, name).await?;
    let heading = question(workflow, &plan.name);
    Ok(ConfirmPage {
        layout: Layout::new(console, session, heading.clone(), Some(Nav::Plans)).await,
        heading,
        paragraphs: explain(workflow, &plan),
        advice: None,
        action: format!("/plans/{}/{}", plan.name, workflow.path()),
        button: workflow.button(),
        danger: workflow.typed(),
        typed: workflow.typed().then(|| plan.name.clone()),
        modes: false,
        error,
        back: format!("/plans/{}", plan.name),
        back_label: format!("No, back to plan {}", plan.name),
    })
}

fn no_such_action(action: &str) -> ApiError {
    ApiError::NotFound(format!(
        "a plan has no action `{action}`: test-failover, cleanup, live-failover, rollback or commit"
    ))
}

/// The confirmation page of a plan's workflow.
pub async fn confirm(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let page = match Workflow::of_path(&action) {
        Some(workflow) => confirm_page(&console, &session, workflow, &name, None).await,
        None => Err(no_such_action(&action)),
    };
    match page {
        Ok(page) => page::ok(&page),
        Err(e) => page::error(&console, &session, e, Some(("/plans", "All plans"))).await,
    }
}

/// Starts the plan's workflow as confirmed by `form`, and shows its plan run.
pub async fn start(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<StartForm>,
) -> Response {
    let back = format!("/plans/{name}");
    let Some(workflow) = Workflow::of_path(&action) else {
        let e = no_such_action(&action);
        return page::error(&console, &session, e, Some((&back, "Back to the plan"))).await;
    };
    if let Some(why) = form.refusal(workflow, &name) {
        return match confirm_page(&console, &session, workflow, &name, Some(why)).await {
            Ok(page) => page::render(StatusCode::UNPROCESSABLE_ENTITY, &page),
            Err(e) => page::error(&console, &session, e, Some(("/plans", "All plans"))).await,
        };
    }
    let who = RequestedBy(Some(session.requested_by()));
    match plan_runs::start(&console.app, who, &name, stored(workflow)).await {
        Ok(run) => {
            tracing::info!(plan_run = %run.id, plan = %name, "console: a plan run was started");
            Redirect::to(&format!("/plan-runs/{}", run.id)).into_response()
        }
        Err(e) => page::error(&console, &session, e, Some((&back, "Back to the plan"))).await,
    }
}

/// What a plan's page offers, from its latest plan run (`runs`, newest first): none
/// while one is under way; after a drill that started any VM, its cleanup; after a
/// live failover that did, its rollback and its commit; after a cleanup, rollback or
/// commit that did not end `done`, the same again; otherwise a drill or a live
/// failover. The pre-flight has the last word: a VM moved on its own since is named
/// there.
pub fn offered(plan: &str, runs: &[PlanRunView]) -> Vec<Action> {
    let action = |workflow: Workflow, label, class| Action {
        href: format!("/plans/{plan}/{}", workflow.path()),
        label,
        class,
    };
    let fresh = vec![
        action(Workflow::Test, "Drill (test failover)…", "primary"),
        action(Workflow::Live, "Live failover…", "danger"),
    ];
    let Some(latest) = runs.first() else {
        return fresh;
    };
    let started_any = latest.vms.iter().any(|v| v.run_id.is_some());
    let done = latest.state == "done";
    match (latest.workflow.as_str(), latest.state.as_str()) {
        (_, "pending" | "running") => Vec::new(),
        ("test_failover", _) if started_any => {
            vec![action(Workflow::Cleanup, "Clean up the drill…", "primary")]
        }
        ("live_failover", _) if started_any => vec![
            action(Workflow::Rollback, "Roll back…", "danger"),
            action(Workflow::Commit, "Commit…", "danger"),
        ],
        ("cleanup", _) if !done => {
            vec![action(
                Workflow::Cleanup,
                "Clean up the drill again…",
                "primary",
            )]
        }
        ("rollback", _) if !done => vec![action(Workflow::Rollback, "Roll back again…", "danger")],
        ("commit", _) if !done => vec![action(Workflow::Commit, "Commit again…", "danger")],
        _ => fresh,
    }
}
