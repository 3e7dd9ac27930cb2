//! The drill evidence report (docs/report.md): what a run or a plan run did, proved —
//! for the auditors and managers a drill is reported to, and for the operator who must
//! show later what was done.
//!
//! [`build`] gathers the facts of a run, or of a plan run and each of its VMs' runs,
//! from the store (`facts`: steps, CloudStack jobs, waits, the disk chain, hooks,
//! warnings; `plan`: tiers, RTOs, readiness gates), makes a final leak check against
//! CloudStack (`leaks`, reads only) and seals the whole with a SHA-256 digest over its
//! canonical JSON (`digest`), so a stored report can be checked later without ferry.
//! [`to_html`] writes it as one self-contained HTML file that prints to PDF (`html`,
//! with its template in `templates/report/`), and [`timeline_svg`] draws its timeline
//! (`svg`): one row per step and per disk, a bar per CloudStack job.
//!
//! The report is built when asked for, from what is recorded: building it twice gives
//! the same facts except the time it was built and what the leak check saw then, and so
//! another digest. The digest says the report was not changed since it was built, not
//! that it was built at a given time.

mod digest;
mod facts;
mod html;
mod leaks;
pub mod model;
mod plan;
pub(crate) mod route;
mod svg;

use ids::RunId;
use store::RunState;

pub use digest::of_value as digest_of_json;
pub use html::to_html;
pub use model::*;
pub use svg::timeline_svg;

use crate::error::ApiError;
use crate::state::AppState;
use crate::view::time;

/// The report of run or plan run `id`: 404 when neither exists.
pub async fn build(state: &AppState, id: &str) -> Result<Report, ApiError> {
    let store = &state.env.store;
    if let Some(run) = store.run(&RunId::from(id)).await? {
        let context = plan::context_of_run(state, &run).await?;
        let gathered = facts::run_facts(state, &run, context).await?;
        let leak_check = leaks::check(state, std::slice::from_ref(&gathered)).await;
        let outcome = run_outcome(&gathered.facts);
        let subject = Subject {
            kind: "run".into(),
            id: run.id.to_string(),
            workflow: run.workflow.to_string(),
            name: gathered.facts.vm.clone(),
        };
        return Ok(seal(subject, outcome, None, vec![gathered], leak_check));
    }
    if let Some(plan_run) = store.plan_run(id).await? {
        let (facts, gathered) = plan::plan_facts(state, &plan_run).await?;
        let leak_check = leaks::check(state, &gathered).await;
        let outcome = plan::outcome(&facts);
        let subject = Subject {
            kind: "plan_run".into(),
            id: plan_run.id.clone(),
            workflow: plan_run.workflow.to_string(),
            name: plan_run.plan_name.clone(),
        };
        return Ok(seal(subject, outcome, Some(facts), gathered, leak_check));
    }
    Err(ApiError::NotFound(format!(
        "no run or plan run {id}: `ferry run list` and `ferry plan runs PLAN` show them"
    )))
}

/// The report with its warnings gathered and its digest computed.
fn seal(
    subject: Subject,
    outcome: Outcome,
    plan_run: Option<PlanRunFacts>,
    gathered: Vec<facts::Gathered>,
    leak_check: LeakCheck,
) -> Report {
    let mut warnings: Vec<Warning> = gathered.iter().flat_map(|g| g.warnings.clone()).collect();
    for item in leak_check.items.iter().filter(|i| !i.ok) {
        warnings.push(Warning {
            kind: "leak".into(),
            run_id: Some(item.run_id.clone()),
            message: format!(
                "{} {} is not where ferry says: ferry says {}, CloudStack has it {}",
                item.kind, item.id, item.expected, item.found
            ),
        });
    }
    if let Some(e) = &leak_check.error {
        warnings.push(Warning {
            kind: "leak".into(),
            run_id: None,
            message: format!("the leak check could not ask CloudStack: {e}"),
        });
    }
    for g in &gathered {
        for d in &g.facts.disks {
            let verified = d.verified_device_id.is_some();
            if verified && d.verified_device_id != d.planned_device_id {
                warnings.push(Warning {
                    kind: "unverified".into(),
                    run_id: Some(g.facts.id.clone()),
                    message: format!(
                        "disk {} was verified at device {:?}, planned at {:?}",
                        d.device_key, d.verified_device_id, d.planned_device_id
                    ),
                });
            }
        }
    }
    let mut report = Report {
        format: FORMAT.into(),
        subject,
        generated_at: time(store::now_ms()),
        generated_by: format!("ferry {}", env!("CARGO_PKG_VERSION")),
        outcome,
        plan_run,
        runs: gathered.into_iter().map(|g| g.facts).collect(),
        leak_check,
        warnings,
        digest: String::new(),
    };
    report.digest = digest::of(&report);
    report
}

/// The digest `report` should carry, computed again from its facts: equal to its
/// `digest` unless a fact was changed after it was built.
pub fn digest_of(report: &Report) -> String {
    digest::of(report)
}

/// How one run went, in one sentence.
fn run_outcome(run: &RunFacts) -> Outcome {
    let what = match &run.mode {
        Some(mode) => format!("The {} ({mode} mode) of {}", words(&run.workflow), run.vm),
        None => format!("The {} of {}", words(&run.workflow), run.vm),
    };
    let seconds = |ms: i64| format!("{:.1} s", ms as f64 / 1000.0);
    let state: RunState = run.state.parse().unwrap_or(RunState::Running);
    let verified = run
        .disks
        .iter()
        .filter(|d| d.verified_device_id.is_some())
        .count();
    let (verdict, sentence) = match state {
        RunState::Done => (
            "succeeded",
            match run.rto_ms {
                Some(rto) if verified > 0 => format!(
                    "{what} succeeded in {}: {verified} of {} disks verified at their planned device ids, RTO {}.",
                    seconds(run.duration_ms),
                    run.disks.len(),
                    seconds(rto)
                ),
                _ => format!("{what} succeeded in {}.", seconds(run.duration_ms)),
            },
        ),
        RunState::Unwound => (
            "failed",
            format!(
                "{what} failed and was undone after {}: {}.",
                seconds(run.duration_ms),
                run.error.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        RunState::Stuck => (
            "failed",
            format!(
                "{what} failed and is stuck: an undo could not complete ({}).",
                run.error.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        RunState::Abandoned => (
            "failed",
            format!(
                "{what} failed and was abandoned by an operator: {}.",
                run.error.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        _ => (
            "in_progress",
            format!("{what} was still {} when this report was built.", run.state),
        ),
    };
    Outcome {
        verdict: verdict.into(),
        sentence,
    }
}

/// `test_failover` → `test failover`.
fn words(workflow: &str) -> String {
    workflow.replace('_', " ")
}

/// The JSON Schema of [`Report`], as checked in at `docs/report.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Report);
    let mut text = serde_json::to_string_pretty(&schema).expect("a JSON Schema serializes");
    text.push('\n');
    text
}
