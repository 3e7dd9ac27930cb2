//! What an operator starts from the console, each behind a confirmation.
//!
//! Each workflow has a page that says what it will do to which VM, and a form that
//! posts to the same path. A test failover and its cleanup are confirmed by the
//! button on that page (`confirm=yes`); a live failover, its rollback and its commit
//! only with the VM's name typed (`vm_name`), compared on the server — a form posted
//! without it, or with another name, starts nothing and shows the page again with
//! why. Abandoning a stuck run is confirmed like a cleanup, with the run's advice on
//! the page. Cancelling or retrying a run is one button on the run's page. All of
//! them call what the REST API calls (`commands`), so the refusals are the API's.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::page::{self, Layout, Nav};
use super::session::Session;
use super::state::Console;
use crate::commands::{self, Start};
use crate::error::ApiError;
use crate::model::TestMode;
use crate::view;

/// Which workflow a confirmation page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workflow {
    Test,
    Cleanup,
    Live,
    Rollback,
    Commit,
}

impl Workflow {
    /// The workflow a console path names (`test-failover`, `cleanup`, …).
    pub(super) fn of_path(path: &str) -> Option<Workflow> {
        [
            Workflow::Test,
            Workflow::Cleanup,
            Workflow::Live,
            Workflow::Rollback,
            Workflow::Commit,
        ]
        .into_iter()
        .find(|w| w.path() == path)
    }

    pub(super) fn path(self) -> &'static str {
        match self {
            Workflow::Test => "test-failover",
            Workflow::Cleanup => "cleanup",
            Workflow::Live => "live-failover",
            Workflow::Rollback => "rollback",
            Workflow::Commit => "commit",
        }
    }

    /// The heading: a question.
    fn question(self, vm: &str) -> String {
        match self {
            Workflow::Test => format!("Start a test failover of {vm}?"),
            Workflow::Cleanup => format!("Clean up the test failover of {vm}?"),
            Workflow::Live => format!("Fail {vm} over for real?"),
            Workflow::Rollback => format!("Roll back the live failover of {vm}?"),
            Workflow::Commit => format!("Commit the live failover of {vm}?"),
        }
    }

    pub(super) fn button(self) -> &'static str {
        match self {
            Workflow::Test => "Start the test failover",
            Workflow::Cleanup => "Clean up",
            Workflow::Live => "Start the live failover",
            Workflow::Rollback => "Roll back",
            Workflow::Commit => "Commit",
        }
    }

    /// Whether the VM's (or plan's) name must be typed to confirm.
    pub(super) fn typed(self) -> bool {
        matches!(self, Workflow::Live | Workflow::Rollback | Workflow::Commit)
    }

    /// What it will do, in sentences (docs/operating.md §6.3).
    fn explain(self, vm: &str, disks: usize, appliance: &str) -> Vec<String> {
        match self {
            Workflow::Test => vec![
                format!(
                    "ferry snapshots {vm}'s {disks} replica volume(s), creates a stopped test VM \
                     {vm}-test-<time> on the test networks with {vm}'s CPU, memory, firmware and NICs, \
                     attaches every disk (the boot disk at device 0, the data disks at their planned \
                     device ids), verifies them against CloudStack and starts it."
                ),
                "In replica mode the replicas themselves go to the test VM: replication cannot \
                 write to them until the cleanup puts them back on the appliance. In clone mode \
                 the test VM gets new volumes made from the snapshots, and the replicas stay on \
                 the appliance."
                    .into(),
                "Nothing on the production networks changes. Clean the test failover up when the \
                 drill is over."
                    .into(),
            ],
            Workflow::Cleanup => vec![format!(
                "ferry stops and destroys the test VM, puts every replica back on appliance \
                 {appliance} as it was before the test (in replica mode reverted to its snapshot: \
                 the drill's writes are discarded), deletes the snapshots, and {vm} is ready for \
                 failover again."
            )],
            Workflow::Live => vec![
                format!(
                    "This is the real cut-over. ferry runs the before_live hooks (typically: power \
                     the source VM off, then a final sync), snapshots the replicas, creates the VM \
                     {vm} on the production networks with all {disks} disk(s), verifies them and \
                     starts it."
                ),
                "Undo it with a rollback; make it final with a commit.".into(),
            ],
            Workflow::Rollback => vec![format!(
                "ferry stops and destroys the VM {vm} in CloudStack, puts the replicas back on \
                 appliance {appliance} — not reverted: they hold what production wrote since the \
                 cut-over — deletes the snapshots and runs the after_rollback hooks (typically: \
                 power the source VM on)."
            )],
            Workflow::Commit => vec![format!(
                "ferry checks that {vm} still holds every replica at its planned device id, deletes \
                 the snapshots and lets the VM go: it stays running as it is, and can no longer be \
                 rolled back by ferry."
            )],
        }
    }
}

/// A confirmation: what will happen, and the form that starts it.
#[derive(Template)]
#[template(path = "console/confirm.html")]
pub(super) struct ConfirmPage {
    pub(super) layout: Layout,
    pub(super) heading: String,
    pub(super) paragraphs: Vec<String>,
    pub(super) advice: Option<String>,
    pub(super) action: String,
    pub(super) button: &'static str,
    pub(super) danger: bool,
    /// The name to type, when one must be.
    pub(super) typed: Option<String>,
    pub(super) modes: bool,
    pub(super) error: Option<String>,
    pub(super) back: String,
    pub(super) back_label: String,
}

/// The confirmation page of `workflow` for VM `name`.
async fn confirm_page(
    console: &Console,
    session: &Session,
    workflow: Workflow,
    name: &str,
    error: Option<String>,
) -> Result<ConfirmPage, ApiError> {
    let vm = commands::vm_by_name(&console.app, name).await?;
    Ok(ConfirmPage {
        layout: Layout::new(
            console,
            session,
            workflow.question(&vm.name),
            Some(Nav::Vms),
        )
        .await,
        heading: workflow.question(&vm.name),
        paragraphs: workflow.explain(&vm.name, vm.disks.len(), &vm.appliance),
        advice: None,
        action: format!("/vms/{}/{}", vm.name, workflow.path()),
        button: workflow.button(),
        danger: workflow.typed(),
        typed: workflow.typed().then(|| vm.name.clone()),
        modes: workflow == Workflow::Test,
        error,
        back: format!("/vms/{}", vm.name),
        back_label: format!("No, back to {}", vm.name),
    })
}

/// The confirmation page of a workflow.
pub async fn confirm(
    console: Console,
    session: Session,
    workflow: Workflow,
    name: String,
) -> Response {
    match confirm_page(&console, &session, workflow, &name, None).await {
        Ok(page) => page::ok(&page),
        Err(e) => page::error(&console, &session, e, Some(("/", "All protected VMs"))).await,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StartForm {
    #[serde(default)]
    confirm: Option<String>,
    /// The name typed to confirm: the VM's, or the plan's.
    #[serde(default)]
    vm_name: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

impl StartForm {
    /// Why the form does not confirm `workflow` of `name` (a VM or a plan), if it
    /// does not: the name not typed, or typed wrong; or the button's `confirm` absent.
    pub(super) fn refusal(&self, workflow: Workflow, name: &str) -> Option<String> {
        if workflow.typed() {
            let typed = self.vm_name.as_deref().unwrap_or("").trim();
            (typed != name).then(|| {
                if typed.is_empty() {
                    format!("Type {name} to confirm: nothing was started.")
                } else {
                    format!("You typed “{typed}”, which is not {name}: nothing was started.")
                }
            })
        } else {
            (self.confirm.as_deref() != Some("yes"))
                .then(|| "The form was not confirmed: nothing was started.".to_string())
        }
    }
}

/// Starts `workflow` on VM `name` as confirmed by `form`, and shows its run.
pub async fn start(
    console: Console,
    session: Session,
    workflow: Workflow,
    name: String,
    form: StartForm,
) -> Response {
    let refusal = form.refusal(workflow, &name);
    let mode = match form.mode.as_deref() {
        None | Some("replica") => Ok(TestMode::Replica),
        Some("clone") => Ok(TestMode::Clone),
        Some(other) => Err(format!(
            "There is no test failover mode “{other}” (replica or clone): nothing was started."
        )),
    };
    let refusal = refusal.or_else(|| mode.clone().err());
    if let Some(why) = refusal {
        return match confirm_page(&console, &session, workflow, &name, Some(why)).await {
            Ok(page) => page::render(StatusCode::UNPROCESSABLE_ENTITY, &page),
            Err(e) => page::error(&console, &session, e, Some(("/", "All protected VMs"))).await,
        };
    }
    let what = match workflow {
        Workflow::Test => Start::TestFailover(mode.unwrap_or_default()),
        Workflow::Cleanup => Start::Cleanup,
        Workflow::Live => Start::LiveFailover,
        Workflow::Rollback => Start::Rollback,
        Workflow::Commit => Start::Commit,
    };
    match commands::start(&console.app, &name, what, Some(&session.requested_by())).await {
        Ok(run) => {
            tracing::info!(run = %run.id, vm = %name, "console: a run was started");
            Redirect::to(&format!("/runs/{}", run.id)).into_response()
        }
        Err(e) => {
            let back = format!("/vms/{name}");
            page::error(&console, &session, e, Some((&back, "Back to the VM"))).await
        }
    }
}

macro_rules! workflow_routes {
    ($get:ident, $post:ident, $workflow:expr) => {
        pub async fn $get(
            State(console): State<Console>,
            Extension(session): Extension<Session>,
            Path(name): Path<String>,
        ) -> Response {
            confirm(console, session, $workflow, name).await
        }

        pub async fn $post(
            State(console): State<Console>,
            Extension(session): Extension<Session>,
            Path(name): Path<String>,
            Form(form): Form<StartForm>,
        ) -> Response {
            start(console, session, $workflow, name, form).await
        }
    };
}

workflow_routes!(confirm_test, start_test, Workflow::Test);
workflow_routes!(confirm_cleanup, start_cleanup, Workflow::Cleanup);
workflow_routes!(confirm_live, start_live, Workflow::Live);
workflow_routes!(confirm_rollback, start_rollback, Workflow::Rollback);
workflow_routes!(confirm_commit, start_commit, Workflow::Commit);

/// A run action's answer: back to the run, or the refusal.
async fn after(
    console: &Console,
    session: &Session,
    id: &str,
    done: Result<crate::model::RunSummary, ApiError>,
) -> Response {
    match done {
        Ok(_) => Redirect::to(&format!("/runs/{id}")).into_response(),
        Err(e) => {
            let back = format!("/runs/{id}");
            page::error(console, session, e, Some((&back, "Back to the run"))).await
        }
    }
}

pub async fn cancel(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let done = commands::cancel(&console.app, &id).await;
    after(&console, &session, &id, done).await
}

pub async fn retry(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let done = commands::retry(&console.app, &id).await;
    after(&console, &session, &id, done).await
}

async fn abandon_page(
    console: &Console,
    session: &Session,
    id: &str,
    error: Option<String>,
) -> Result<ConfirmPage, ApiError> {
    let run = commands::run_by_id(&console.app, id).await?;
    let detail = view::run_detail(&console.app, &run).await?;
    let heading = format!("Abandon the stuck run {id}?");
    Ok(ConfirmPage {
        layout: Layout::new(console, session, heading.clone(), Some(Nav::Runs)).await,
        heading,
        paragraphs: vec![
            format!(
                "The run stops holding {}. What its failed undo left in CloudStack is yours to \
                 clean up: ferry forgets the run, not what it left behind.",
                detail.run.vm
            ),
            "Retrying the undo, once its cause is fixed, is usually better.".into(),
        ],
        advice: detail.advice,
        action: format!("/runs/{id}/abandon"),
        button: "Abandon the run",
        danger: true,
        typed: None,
        modes: false,
        error,
        back: format!("/runs/{id}"),
        back_label: "No, back to the run".into(),
    })
}

pub async fn confirm_abandon(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match abandon_page(&console, &session, &id, None).await {
        Ok(page) => page::ok(&page),
        Err(e) => page::error(&console, &session, e, Some(("/runs", "All runs"))).await,
    }
}

pub async fn abandon(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<StartForm>,
) -> Response {
    if form.confirm.as_deref() != Some("yes") {
        let why = Some("The form was not confirmed: nothing was abandoned.".to_string());
        return match abandon_page(&console, &session, &id, why).await {
            Ok(page) => page::render(StatusCode::UNPROCESSABLE_ENTITY, &page),
            Err(e) => page::error(&console, &session, e, Some(("/runs", "All runs"))).await,
        };
    }
    let done = commands::abandon(&console.app, &id).await;
    after(&console, &session, &id, done).await
}
