//! One run's facts, from what the store recorded of it: its steps, the CloudStack jobs
//! it submitted (the volume daemon's journal and the run log's VM commands), the time
//! its steps spent with no job in flight, its disks from VMware to the appliance, its
//! hooks and what it warned of.
//!
//! What the steps' outputs prove (snapshots, clones, the verified device map, where a
//! cleanup put each replica) is read through `workflows::evidence`, never from the
//! steps' JSON here. A cleanup, rollback or commit follows up a failover: its disk
//! chain takes the snapshots and verified ids from that failover's run, and a
//! failover's takes the appliance's by-id path from the cleanup or rollback that
//! followed it, once there is one.

use std::collections::BTreeMap;

use ids::{ProtectedVmId, RunId};
use serde_json::Value;
use store::{Run, RunState, StepRecord, Workflow};
use workflows::evidence::{self, RunEvidence};

use super::model::*;
use crate::error::ApiError;
use crate::state::AppState;
use crate::view::{command_jobs, time};
use crate::words::in_words;

/// What a run of a plan run takes from the plan run.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanContext {
    pub plan_run_id: Option<String>,
    pub tier: Option<i64>,
    pub rto_ms: Option<i64>,
    pub requested_by: Option<String>,
}

/// A run's facts and what the leak check needs of it.
pub(crate) struct Gathered {
    pub facts: RunFacts,
    pub evidence: RunEvidence,
    pub run: Run,
    pub target_name: Option<String>,
    pub warnings: Vec<Warning>,
}

/// The facts of `run`.
pub(crate) async fn run_facts(
    state: &AppState,
    run: &Run,
    plan: PlanContext,
) -> Result<Gathered, ApiError> {
    let store = &state.env.store;
    let detail = crate::view::run_detail(state, run).await?;
    let steps = store.steps(&run.id).await?;
    let own = evidence::of_steps(&steps);
    let input = workflows::run_input(run);
    let vm = store.vm_by_id(&run.vm_id).await?;

    // The failover this run follows up (cleanup, rollback, commit), and the run that
    // followed this failover and put the replicas back on the appliance.
    let followed = followed_run(state, run).await?;
    let followed_evidence = match &followed {
        Some(f) => Some(evidence::of_steps(&store.steps(&f.id).await?)),
        None => None,
    };
    let put_back = put_back_by(state, run).await?;
    let put_back_evidence = match &put_back {
        Some(r) => Some((r.id.clone(), evidence::of_steps(&store.steps(&r.id).await?))),
        None => None,
    };
    let failover = followed_evidence.as_ref().unwrap_or(&own);
    let appliance: Option<(RunId, &RunEvidence)> = if !own.on_appliance.is_empty() {
        Some((run.id.clone(), &own))
    } else {
        put_back_evidence.as_ref().map(|(id, e)| (id.clone(), e))
    };

    let labels: BTreeMap<i64, String> = vm
        .iter()
        .flat_map(|v| &v.disks)
        .map(|d| (d.disk.device_key, d.disk.label.clone()))
        .collect();
    let disks: Vec<DiskChain> = input
        .as_ref()
        .map(|i| {
            i.plan
                .disks()
                .iter()
                .map(|d| {
                    let verified = failover
                        .verified
                        .as_ref()
                        .and_then(|v| v.iter().find(|m| m.replica_volume_id == d.volume_id));
                    let on_appliance = appliance.as_ref().and_then(|(id, e)| {
                        e.on_appliance
                            .iter()
                            .find(|p| p.volume_id == d.volume_id)
                            .map(|p| (id.to_string(), p.device_path.clone()))
                    });
                    DiskChain {
                        device_key: d.device_key,
                        address: format!("{}:{}:{}", d.controller, d.bus, d.unit),
                        label: labels.get(&d.device_key).cloned().unwrap_or_default(),
                        boot: d.is_boot,
                        capacity_bytes: d.size_bytes,
                        replica_volume_id: d.volume_id.to_string(),
                        snapshot_id: failover.snapshots.get(&d.volume_id).map(|s| s.to_string()),
                        clone_volume_id: failover.clones.get(&d.volume_id).map(|c| c.to_string()),
                        planned_device_id: Some(d.device_id),
                        verified_device_id: verified.map(|m| m.device_id),
                        verified_size_bytes: verified.map(|m| m.size_bytes),
                        serial: cloudstack::volume_serial(&d.volume_id),
                        appliance_device_path: on_appliance.as_ref().and_then(|(_, p)| p.clone()),
                        appliance_path_run_id: on_appliance.map(|(id, _)| id),
                    }
                })
                .collect()
        })
        .unwrap_or_default();

    // Which disk (device key) each volume, snapshot and clone stands for.
    let mut disk_of: BTreeMap<String, i64> = BTreeMap::new();
    for d in &disks {
        disk_of.insert(d.replica_volume_id.clone(), d.device_key);
        for id in [&d.snapshot_id, &d.clone_volume_id].into_iter().flatten() {
            disk_of.insert(id.clone(), d.device_key);
        }
    }
    let events = store.events(&run.id).await?;
    let jobs = jobs(store, run, &steps, &events, &disk_of).await?;
    let waits = waits(run, &steps, &jobs, &events);

    let hooks_point = match run.workflow {
        Workflow::LiveFailover => "before_live",
        _ => "after_rollback",
    };
    let mut hooks: Vec<HookFacts> = own
        .hooks_ran
        .iter()
        .map(|ran| HookFacts {
            point: hooks_point.into(),
            hook: ran.clone(),
            outcome: "succeeded".into(),
            detail: None,
        })
        .collect();
    if let Some(failed) = &own.hook_failed {
        hooks.push(HookFacts {
            point: hooks_point.into(),
            hook: failed.clone(),
            outcome: "failed".into(),
            detail: Some(failed.clone()),
        });
    }

    let mut warnings = Vec::new();
    let run_id = Some(run.id.to_string());
    if matches!(
        run.state,
        RunState::Unwound | RunState::Stuck | RunState::Abandoned
    ) {
        warnings.push(Warning {
            kind: "failure".into(),
            run_id: run_id.clone(),
            message: format!(
                "{} of {} ended {}: {}",
                run.workflow,
                detail.run.vm,
                run.state,
                run.error.as_deref().unwrap_or("no reason recorded")
            ),
        });
    }
    for e in &events {
        if e.level == "warn" {
            let kind = match &e.step {
                _ if e.message.starts_with(OUTAGE_BEGINS) => "outage",
                Some(_) => "drift",
                None => "run",
            };
            warnings.push(Warning {
                kind: kind.into(),
                run_id: run_id.clone(),
                message: match &e.step {
                    Some(step) => format!("{step}: {}", e.message),
                    None => e.message.clone(),
                },
            });
        }
    }
    for (volume, why) in &own.diverged {
        warnings.push(Warning {
            kind: "diverged".into(),
            run_id: run_id.clone(),
            message: format!("replica {volume} diverged from its source: {why}"),
        });
    }

    let target = own
        .target_vm
        .clone()
        .or_else(|| followed_evidence.as_ref().and_then(|e| e.target_vm.clone()));
    let failover = matches!(
        run.workflow,
        Workflow::TestFailover | Workflow::LiveFailover
    );
    let rto_ms = plan.rto_ms.or_else(|| {
        (failover && run.state == RunState::Done)
            .then_some(run.finished_at)
            .flatten()
            .map(|end| end - run.created_at)
    });
    let facts = RunFacts {
        id: run.id.to_string(),
        vm: detail.run.vm.clone(),
        workflow: run.workflow.to_string(),
        mode: run.mode.clone(),
        state: run.state.to_string(),
        error: run.error.clone(),
        requested_by: run.requested_by.clone().or(plan.requested_by),
        plan_run_id: plan.plan_run_id,
        tier: plan.tier,
        workers: run.workers.clone(),
        created_at: time(run.created_at),
        finished_at: run.finished_at.map(time),
        duration_ms: detail.run.duration_ms,
        rto_ms,
        target_vm: target.as_ref().map(|(id, name)| TargetVmFacts {
            id: id.to_string(),
            name: name.clone(),
        }),
        steps: detail
            .steps
            .iter()
            .map(|s| StepFacts {
                position: s.position,
                name: s.name.clone(),
                state: s.state.clone(),
                attempts: s.attempts,
                started_at: s.started_at.clone(),
                finished_at: s.finished_at.clone(),
                undo_started_at: s.undo_started_at.clone(),
                undo_finished_at: s.undo_finished_at.clone(),
                error: s.error.clone(),
            })
            .collect(),
        jobs,
        waits,
        disks,
        hooks,
        story: detail.story.clone(),
    };
    Ok(Gathered {
        facts,
        evidence: own,
        run: run.clone(),
        target_name: input.map(|i| i.target_name),
        warnings,
    })
}

/// The failover run a cleanup, rollback or commit follows up.
async fn followed_run(state: &AppState, run: &Run) -> Result<Option<Run>, ApiError> {
    let text = run.plan.as_deref().unwrap_or("null");
    let input: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let id = match run.workflow {
        Workflow::Cleanup => input.get("test_run_id"),
        Workflow::Rollback | Workflow::Commit => input.get("live_run_id"),
        _ => None,
    }
    .and_then(Value::as_str);
    match id {
        Some(id) => Ok(state.env.store.run(&RunId::from(id)).await?),
        None => Ok(None),
    }
}

/// The cleanup (after a test failover) or rollback (after a live failover) that
/// followed `run` up, the newest done one first, else the newest.
async fn put_back_by(state: &AppState, run: &Run) -> Result<Option<Run>, ApiError> {
    let (workflow, field) = match run.workflow {
        Workflow::TestFailover => (Workflow::Cleanup, "test_run_id"),
        Workflow::LiveFailover => (Workflow::Rollback, "live_run_id"),
        _ => return Ok(None),
    };
    let later = runs_after(&state.env.store, &run.vm_id, run.created_at).await?;
    let mut following: Vec<Run> = later
        .into_iter()
        .filter(|r| r.workflow == workflow)
        .filter(|r| {
            serde_json::from_str::<Value>(r.plan.as_deref().unwrap_or("null"))
                .ok()
                .and_then(|v| v.get(field).and_then(Value::as_str).map(str::to_string))
                .is_some_and(|id| id == run.id.as_str())
        })
        .collect();
    following.sort_by_key(|r| (r.state == RunState::Done, r.created_at));
    Ok(following.pop())
}

/// The runs of a VM created at or after `since` (at most the last 1000 runs).
async fn runs_after(
    store: &store::Store,
    vm: &ProtectedVmId,
    since: i64,
) -> Result<Vec<Run>, ApiError> {
    Ok(store
        .runs(Some(vm), 1000)
        .await?
        .into_iter()
        .filter(|r| r.created_at >= since)
        .collect())
}

/// `undo-<step>` → (`<step>`, true).
fn split_undo(label: &str) -> (String, bool) {
    match label.strip_prefix("undo-") {
        Some(step) => (step.to_string(), true),
        None => (label.to_string(), false),
    }
}

/// Every CloudStack job the run submitted, oldest first.
async fn jobs(
    store: &store::Store,
    run: &Run,
    steps: &[StepRecord],
    events: &[store::Event],
    disk_of: &BTreeMap<String, i64>,
) -> Result<Vec<JobFacts>, ApiError> {
    let disk = |ids: &[Option<&str>]| {
        ids.iter()
            .flatten()
            .find_map(|id| disk_of.get(*id).copied())
    };
    let mut out: Vec<(i64, Option<i64>, JobFacts)> = Vec::new();
    for op in store.ops_for_run(&run.id).await? {
        let Some(job_id) = op.job_id.as_ref() else {
            continue;
        };
        let (step, undo) = op
            .idempotency_key
            .split('/')
            .nth(1)
            .map(split_undo)
            .map_or((None, false), |(s, u)| (Some(s), u));
        let ended = matches!(op.state, store::OpState::Succeeded | store::OpState::Failed)
            .then_some(op.updated_at);
        out.push((
            op.created_at,
            ended,
            JobFacts {
                job_id: Some(job_id.to_string()),
                step,
                undo,
                kind: op.kind.clone(),
                disk_key: disk(&[
                    op.volume_id.as_ref().map(|v| v.as_str()),
                    op.snapshot_id.as_ref().map(|s| s.as_str()),
                    op.entity_id.as_deref(),
                ]),
                volume_id: op.volume_id.map(String::from),
                vm_id: op.vm_id.map(String::from),
                state: op.state.to_string(),
                error: op.error.map(|e| in_words(&e)),
                started_at: time(op.created_at),
                ended_at: None,
            },
        ));
    }
    // The VM commands' jobs, recorded in the run's log: each ends when its step (or
    // undo) submitted its next job or ended, the step having waited on it.
    let vm_jobs: Vec<(i64, JobFacts)> = command_jobs(events, steps)
        .into_iter()
        .map(|job| {
            let facts = JobFacts {
                job_id: Some(job.job_id),
                step: job.step,
                undo: job.undo,
                kind: job.command.unwrap_or_else(|| "job".into()),
                volume_id: job.volume_id,
                vm_id: job.vm_id,
                disk_key: None,
                state: job.state.into(),
                error: None,
                started_at: time(job.at),
                ended_at: None,
            };
            (job.at, facts)
        })
        .collect();
    for (at, job) in &vm_jobs {
        let record = job
            .step
            .as_deref()
            .and_then(|name| steps.iter().find(|s| s.name == name));
        let span_end = record.and_then(|s| {
            if job.undo {
                s.undo_finished_at
            } else {
                s.finished_at
            }
        });
        let next = out
            .iter()
            .map(|(start, _, j)| (*start, j))
            .chain(vm_jobs.iter().map(|(start, j)| (*start, j)))
            .filter(|(start, j)| *start > *at && j.step == job.step && j.undo == job.undo)
            .map(|(start, _)| start)
            .min();
        out.push((*at, next.or(span_end), job.clone()));
    }
    out.sort_by_key(|(at, _, _)| *at);
    Ok(out
        .into_iter()
        .map(|(_, ended, mut job)| {
            job.ended_at = ended.map(time);
            job
        })
        .collect())
}

/// Unix ms of an RFC 3339 time this module wrote.
pub(crate) fn ms(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// How the engine's log says a step began to wait out an outage (`waiting for
/// CloudStack (…); ferry keeps trying …`); the step's next line ends it.
const OUTAGE_BEGINS: &str = "waiting for ";

/// The time within each step's action and undo during which none of its jobs was in
/// flight; and the outages the run waited out, from its log (the one it waits out now
/// to now).
fn waits(
    run: &Run,
    steps: &[StepRecord],
    jobs: &[JobFacts],
    events: &[store::Event],
) -> Vec<WaitFacts> {
    let mut out = Vec::new();
    let now = store::now_ms();
    for s in steps {
        let spans = [
            (false, s.started_at, s.finished_at),
            (true, s.undo_started_at, s.undo_finished_at),
        ];
        for (undo, from, to) in spans {
            let Some(from) = from else { continue };
            let to = to.unwrap_or(if run.state.is_active() { now } else { from });
            let mut busy: Vec<(i64, i64)> = jobs
                .iter()
                .filter(|j| j.step.as_deref() == Some(s.name.as_str()) && j.undo == undo)
                .filter_map(|j| {
                    let start = ms(&j.started_at)?;
                    let end = j.ended_at.as_deref().and_then(ms).unwrap_or(to);
                    Some((start.max(from), end.min(to)))
                })
                .filter(|(a, b)| a < b)
                .collect();
            busy.sort();
            let mut cursor = from;
            let mut gaps = Vec::new();
            for (a, b) in busy {
                if a > cursor {
                    gaps.push((cursor, a));
                }
                cursor = cursor.max(b);
            }
            if to > cursor {
                gaps.push((cursor, to));
            }
            for (a, b) in gaps {
                out.push(WaitFacts {
                    step: Some(s.name.clone()),
                    kind: "no_job_in_flight".into(),
                    undo,
                    started_at: time(a),
                    ended_at: time(b),
                    detail: None,
                });
            }
        }
    }
    let mut open = false;
    for (i, e) in events.iter().enumerate() {
        if e.level != "warn" || !e.message.starts_with(OUTAGE_BEGINS) {
            continue;
        }
        let undo = steps
            .iter()
            .find(|s| Some(&s.name) == e.step.as_ref())
            .and_then(|s| s.undo_started_at)
            .is_some_and(|at| e.at >= at);
        let end = events[i + 1..]
            .iter()
            .find(|next| next.step == e.step)
            .map(|next| next.at);
        open = end.is_none();
        let end = match end {
            Some(at) => at,
            None if run.waiting_since.is_some() => now,
            // Its end was not logged (the process died while waiting).
            None => continue,
        };
        out.push(WaitFacts {
            step: e.step.clone(),
            kind: "outage".into(),
            undo,
            started_at: time(e.at),
            ended_at: time(end),
            detail: Some(e.message.clone()),
        });
    }
    // An outage waited out now whose beginning the log does not have.
    if let (false, Some(since), Some(what)) = (open, run.waiting_since, &run.waiting_for) {
        out.push(WaitFacts {
            step: None,
            kind: "outage".into(),
            undo: run.state == RunState::Unwinding,
            started_at: time(since),
            ended_at: time(now),
            detail: Some(what.clone()),
        });
    }
    out.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undo_step_label_names_its_step() {
        assert_eq!(
            split_undo("undo-attach-replicas"),
            ("attach-replicas".into(), true)
        );
        assert_eq!(split_undo("snapshot"), ("snapshot".into(), false));
    }
}
