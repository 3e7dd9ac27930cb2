//! A plan run's facts: its tiers and their times, the plan's RTO and each VM's, each
//! VM's readiness gates with what they saw, the plan's hooks, and each VM's run.
//! The hooks are the plan run's view of them: each as the plan run recorded it when it
//! started and ended, `not_run` when it never started.

use serde::Deserialize;
use store::{PlanRun, Run};

use super::facts::{self, Gathered, PlanContext};
use super::model::*;
use crate::error::ApiError;
use crate::state::AppState;
use crate::view::time;

/// What a run takes from the plan run that asked for it, if one did.
pub(crate) async fn context_of_run(state: &AppState, run: &Run) -> Result<PlanContext, ApiError> {
    let store = &state.env.store;
    let Some((id, _)) = store.plan_run_of_run(run.id.as_str()).await? else {
        return Ok(PlanContext::default());
    };
    let Some(plan_run) = store.plan_run(&id).await? else {
        return Ok(PlanContext::default());
    };
    Ok(context(&plan_run, run))
}

fn context(plan_run: &PlanRun, run: &Run) -> PlanContext {
    let vm = plan_run
        .vms
        .iter()
        .find(|v| v.run_id.as_ref() == Some(&run.id));
    PlanContext {
        plan_run_id: Some(plan_run.id.clone()),
        tier: vm.map(|v| v.tier + 1),
        rto_ms: vm.and_then(|v| plan_run.vm_rto_ms(v)),
        requested_by: plan_run.requested_by.clone(),
    }
}

/// The readiness the plans crate records for a VM (the readiness crate's `Readiness`),
/// read for what the report shows; a record that does not read shows no gates.
#[derive(Deserialize)]
struct Readiness {
    #[serde(default)]
    gates: Vec<Gate>,
}

#[derive(Deserialize)]
struct Gate {
    kind: String,
    check: String,
    verdict: String,
    #[serde(default)]
    attempts: i64,
    #[serde(default)]
    elapsed_ms: i64,
    last_seen: Option<String>,
    passed_at: Option<String>,
}

/// The facts of `plan_run` and of each of its VMs' runs.
pub(crate) async fn plan_facts(
    state: &AppState,
    plan_run: &PlanRun,
) -> Result<(PlanRunFacts, Vec<Gathered>), ApiError> {
    let store = &state.env.store;
    let view = crate::plan_runs::view(plan_run);
    let mut gathered = Vec::new();
    for v in &plan_run.vms {
        let Some(run_id) = &v.run_id else { continue };
        let Some(run) = store.run(run_id).await? else {
            continue;
        };
        gathered.push(facts::run_facts(state, &run, context(plan_run, &run)).await?);
    }
    let hooks = view
        .hooks
        .iter()
        .map(|h| HookFacts {
            point: h.place(),
            hook: h.hook.clone(),
            outcome: h.outcome.clone(),
            detail: h.note(),
        })
        .collect();
    let facts = PlanRunFacts {
        id: plan_run.id.clone(),
        plan: plan_run.plan_name.clone(),
        plan_digest: plan_run.digest.clone(),
        workflow: plan_run.workflow.to_string(),
        state: plan_run.state.to_string(),
        error: plan_run.error.clone(),
        requested_by: plan_run.requested_by.clone(),
        workers: plan_run.workers.clone(),
        created_at: time(plan_run.created_at),
        finished_at: plan_run.finished_at.map(time),
        rto_ms: plan_run.rto_ms(),
        tiers: view
            .tier_timings
            .iter()
            .map(|t| TierFacts {
                tier: t.tier,
                name: t.name.clone(),
                started_at: t.started_at.clone(),
                through_at: t.through_at.clone(),
                ended_at: t.ended_at.clone(),
                vms_ms: t.vms_ms,
                ms: t.ms,
            })
            .collect(),
        vms: plan_run
            .vms
            .iter()
            .map(|v| PlanVmFacts {
                vm: v.vm_name.clone(),
                tier: v.tier + 1,
                state: v.state.to_string(),
                run_id: v.run_id.as_ref().map(ToString::to_string),
                ready_at: v.ready_at.map(time),
                rto_ms: plan_run.vm_rto_ms(v),
                detail: v.detail.clone(),
                gates: v
                    .readiness
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<Readiness>(r).ok())
                    .map(|r| {
                        r.gates
                            .into_iter()
                            .map(|g| GateFacts {
                                kind: g.kind,
                                check: g.check,
                                verdict: g.verdict,
                                attempts: g.attempts,
                                elapsed_ms: g.elapsed_ms,
                                last_seen: g.last_seen,
                                passed_at: g.passed_at,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        hooks,
    };
    Ok((facts, gathered))
}

/// How a plan run went, in one sentence.
pub(crate) fn outcome(p: &PlanRunFacts) -> Outcome {
    let ready = p.vms.iter().filter(|v| v.state == "ready").count();
    let seconds = |ms: i64| format!("{:.1} s", ms as f64 / 1000.0);
    let what = format!("The {} of plan {}", p.workflow.replace('_', " "), p.plan);
    let (verdict, sentence) = match p.state.as_str() {
        "done" => (
            "succeeded",
            match p.rto_ms {
                Some(rto) => format!(
                    "{what} succeeded: {ready} of {} VMs ready across {} tier(s), plan RTO {}.",
                    p.vms.len(),
                    p.tiers.len(),
                    seconds(rto)
                ),
                None => format!(
                    "{what} succeeded: all {} VMs through across {} tier(s).",
                    p.vms.len(),
                    p.tiers.len()
                ),
            },
        ),
        "pending" | "running" => (
            "in_progress",
            format!("{what} was still {} when this report was built.", p.state),
        ),
        state => (
            "failed",
            format!(
                "{what} ended {state}: {ready} of {} VMs ready — {}.",
                p.vms.len(),
                p.error.as_deref().unwrap_or("no reason recorded")
            ),
        ),
    };
    // A hook that failed without stopping the plan run (under `continue`, or the
    // plan's `after` hooks) is said after the verdict, never hidden behind it.
    let failed: Vec<&str> = p
        .hooks
        .iter()
        .filter(|h| h.outcome == "failed")
        .map(|h| h.point.as_str())
        .collect();
    let sentence = if failed.is_empty() || verdict == "failed" {
        sentence
    } else {
        format!(
            "{sentence} {} hook(s) failed: {}.",
            failed.len(),
            failed.join(", ")
        )
    };
    Outcome {
        verdict: verdict.into(),
        sentence,
    }
}
