//! The API's views of ferry's records: what a VM and a run look like to an operator,
//! and a run's story told in sentences.

use ids::ProtectedVmId;
use std::collections::BTreeMap;

use serde_json::Value;
use store::{ProtectedVm, Run, RunState, StepState, Workflow};

use crate::error::{ApiError, chain};
use crate::model::*;
use crate::overdue;
use crate::state::AppState;
use crate::words::in_words;

/// Unix milliseconds as RFC 3339 in UTC with milliseconds.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

pub fn vm_summary(vm: &ProtectedVm, active: Option<&Run>) -> VmSummary {
    VmSummary {
        name: vm.name.clone(),
        state: vm.state.to_string(),
        appliance: vm.appliance.clone(),
        disks: vm.disks.len(),
        capacity_bytes: vm.disks.iter().map(|d| d.disk.capacity_bytes).sum(),
        active_run_id: active.map(|r| r.id.to_string()),
        diverged: vm.disks.iter().filter(|d| d.diverged.is_some()).count(),
    }
}

pub async fn vm_detail(state: &AppState, vm: &ProtectedVm) -> Result<VmDetail, ApiError> {
    let active = state.env.store.active_run(&vm.id).await?;
    let target = match vm.state {
        store::VmState::TestFailedOver | store::VmState::FailedOver => target_vm(state, vm).await?,
        _ => None,
    };
    Ok(VmDetail {
        name: vm.name.clone(),
        id: vm.id.to_string(),
        source_id: vm.source_id.clone(),
        appliance: vm.appliance.clone(),
        state: vm.state.to_string(),
        vcpu: vm.spec.vcpu,
        memory_mb: vm.spec.memory_mb,
        firmware: vm.spec.firmware.to_string(),
        secure_boot: vm.spec.secure_boot,
        guest_os: vm.spec.guest_os.to_string(),
        guest_prep: vm.spec.guest_prep.to_string(),
        created_at: time(vm.created_at),
        nics: vm
            .nics
            .iter()
            .map(|n| NicView {
                position: n.position,
                mac: n.mac.clone(),
                source_network: n.source_network.clone(),
                test_network_id: n.test_network_id.to_string(),
                production_network_id: n.production_network_id.to_string(),
            })
            .collect(),
        disks: vm
            .disks
            .iter()
            .map(|d| DiskView {
                label: d.disk.label.clone(),
                device_key: d.disk.device_key,
                controller: d.disk.controller.to_string(),
                bus: d.disk.bus,
                unit: d.disk.unit,
                capacity_bytes: d.disk.capacity_bytes,
                boot: d.disk.is_boot,
                replica_volume_id: d.disk.replica_volume_id.to_string(),
                attached_vm_id: d.attachment.vm_id.as_ref().map(ToString::to_string),
                device_id: d.attachment.device_id,
                device_path: d.attachment.device_path.clone(),
                diverged: d.diverged.as_ref().map(|m| Divergence {
                    since: time(m.at),
                    reason: m.reason.clone(),
                    run_id: m.run_id.as_ref().map(ToString::to_string),
                }),
                resynced_at: d.resynced_at.map(time),
            })
            .collect(),
        active_run: active.as_ref().map(|r| run_summary(r, &vm.name)),
        target,
        updates: updates(state, vm).await?,
    })
}

/// One change as the API shows it.
pub fn change(c: inventory::Change) -> Change {
    Change {
        field: c.field,
        change: c.change.as_str().to_string(),
        from: c.from,
        to: c.to,
    }
}

/// The VM's recorded updates, oldest first. The inventory wrote each one's changes as
/// JSON of the same shape as [`Change`]; a record that does not read so is shown
/// without its changes rather than failing the whole view.
async fn updates(state: &AppState, vm: &ProtectedVm) -> Result<Vec<UpdateRecord>, ApiError> {
    Ok(state
        .env
        .store
        .vm_updates(&vm.id)
        .await?
        .into_iter()
        .map(|u| UpdateRecord {
            at: time(u.at),
            changes: serde_json::from_str(&u.changes).unwrap_or_else(|e| {
                tracing::warn!(vm = %vm.name, update = u.id, error = %e, "an update's record of its changes cannot be read");
                Vec::new()
            }),
        })
        .collect())
}

/// The target VM as CloudStack has it now, checked against the failover's plan.
async fn target_vm(state: &AppState, vm: &ProtectedVm) -> Result<Option<TargetVm>, ApiError> {
    let Some(target_id) = vm.target_vm_id.clone() else {
        return Ok(None);
    };
    let workflow = match vm.state {
        store::VmState::FailedOver => Workflow::LiveFailover,
        _ => Workflow::TestFailover,
    };
    let Some(run) = state.env.store.last_run(&vm.id, workflow).await? else {
        return Ok(None);
    };
    let Some(plan) = workflows::target::TargetPlan::of_run(&state.env.store, &run).await? else {
        return Ok(None);
    };
    let cloud_unreachable = |e: &(dyn std::error::Error + 'static)| {
        ApiError::Unavailable(format!(
            "cannot read the target VM {target_id} from CloudStack: {}",
            chain(e)
        ))
    };
    let found = state
        .env
        .cloud
        .list_virtual_machines(&cloudstack::VmFilter {
            id: Some(target_id.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| cloud_unreachable(&e))?;
    let Some(cloud_vm) = found.into_iter().next() else {
        return Ok(Some(TargetVm {
            id: target_id.to_string(),
            name: plan.target_name.clone(),
            state: "missing".into(),
            disks: Vec::new(),
            verified: false,
            verification: format!("CloudStack has no VM {target_id}: it was removed outside ferry"),
        }));
    };
    let volumes = state
        .env
        .volumes
        .list_vm_volumes(&target_id)
        .await
        .map_err(|e| cloud_unreachable(&e))?;
    let labels: BTreeMap<&str, &str> = vm
        .disks
        .iter()
        .map(|d| (d.disk.replica_volume_id.as_str(), d.disk.label.as_str()))
        .collect();
    let check = plan.check(volumes);
    let mut disks: Vec<TargetDisk> = check
        .disks
        .into_iter()
        .map(|d| TargetDisk {
            device_id: d.volume.device_id,
            role: match &d.planned {
                Some(p) if p.is_boot => "boot",
                Some(_) => "data",
                None => "unexpected",
            }
            .to_string(),
            label: d
                .planned
                .as_ref()
                .and_then(|p| labels.get(p.volume_id.as_str()))
                .map(|l| l.to_string()),
            planned_device_id: d.planned.as_ref().map(|p| p.device_id),
            volume_id: d.volume.id.into_string(),
            volume_name: d.volume.name,
            size_bytes: d.volume.size_bytes,
        })
        .collect();
    disks.sort_by_key(|d| (d.device_id.unwrap_or(i64::MAX), d.volume_id.clone()));
    Ok(Some(TargetVm {
        id: cloud_vm.id.into_string(),
        name: cloud_vm.name,
        state: cloud_vm.state,
        disks,
        verified: check.verified,
        verification: check.verification,
    }))
}

pub fn run_summary(run: &Run, vm_name: &str) -> RunSummary {
    let end = run.finished_at.unwrap_or_else(store::now_ms);
    RunSummary {
        id: run.id.to_string(),
        vm: vm_name.to_string(),
        workflow: run.workflow.to_string(),
        mode: run.mode.clone(),
        state: run.state.to_string(),
        error: run.error.clone(),
        cancel_requested: run.cancel_requested,
        created_at: time(run.created_at),
        updated_at: time(run.updated_at),
        finished_at: run.finished_at.map(time),
        duration_ms: (end - run.created_at).max(0),
        waiting: waiting(run),
    }
}

/// The outage the run is waiting out, if any.
fn waiting(run: &Run) -> Option<Waiting> {
    let (since, what) = (run.waiting_since?, run.waiting_for.clone()?);
    Some(Waiting {
        for_: what,
        since: time(since),
        seconds: (store::now_ms() - since).max(0) as f64 / 1000.0,
    })
}

/// [`run_summary`] with the name of the run's VM looked up.
pub async fn run_summary_of(store: &store::Store, run: &Run) -> Result<RunSummary, ApiError> {
    Ok(run_summary(run, &vm_name(store, &run.vm_id).await?))
}

/// The name of a protected VM by its id, as its runs show it.
async fn vm_name(store: &store::Store, vm_id: &ProtectedVmId) -> Result<String, ApiError> {
    Ok(match store.vm_by_id(vm_id).await? {
        Some(vm) => run_vm_name(&vm.name, vm.removed_at),
        // Cannot happen (a run references its VM's row, which removal keeps); said
        // plainly rather than failing the whole answer.
        None => "(removed)".to_string(),
    })
}

/// How a run names its VM: by its name, with ` (removed)` once it was removed from
/// ferry (its runs are kept; the name may belong to a newer VM by now).
pub fn run_vm_name(name: &str, removed_at: Option<i64>) -> String {
    match removed_at {
        Some(_) => format!("{name} (removed)"),
        None => name.to_string(),
    }
}

/// The plan run that started `run`, with the VM's tier and RTO in it.
async fn plan_run_of(
    store: &store::Store,
    run: &Run,
) -> Result<Option<crate::model::PlanRunRef>, ApiError> {
    let Some((id, _)) = store.plan_run_of_run(run.id.as_str()).await? else {
        return Ok(None);
    };
    let Some(plan_run) = store.plan_run(&id).await? else {
        return Ok(None);
    };
    let vm = plan_run
        .vms
        .iter()
        .find(|v| v.run_id.as_ref() == Some(&run.id));
    Ok(Some(crate::model::PlanRunRef {
        tier: vm.map_or(0, |v| v.tier + 1),
        rto_ms: vm.and_then(|v| plan_run.vm_rto_ms(v)),
        plan: plan_run.plan_name.clone(),
        id,
    }))
}

pub async fn run_detail(state: &AppState, run: &Run) -> Result<RunDetail, ApiError> {
    let store = &state.env.store;
    let vm_name = vm_name(store, &run.vm_id).await?;
    let vm_name = vm_name.as_str();
    let recorded = store.steps(&run.id).await?;
    let names: Vec<String> = match workflows::saga_for(run) {
        Ok(saga) => saga.steps.iter().map(|s| s.name().to_string()).collect(),
        Err(_) => recorded.iter().map(|s| s.name.clone()).collect(),
    };
    let mut steps: Vec<StepView> = names
        .iter()
        .enumerate()
        .map(|(i, name)| StepView {
            position: i as i64,
            name: name.clone(),
            state: "waiting".into(),
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            undo_started_at: None,
            undo_finished_at: None,
            undo_duration_ms: None,
            error: None,
            overdue: None,
        })
        .collect();
    let now = store::now_ms();
    for s in &recorded {
        let (duration_ms, undo_duration_ms) = own_times(s, now);
        let view = StepView {
            position: s.position,
            name: s.name.clone(),
            state: s.state.to_string(),
            attempts: s.attempts,
            started_at: s.started_at.map(time),
            finished_at: s.finished_at.map(time),
            duration_ms,
            undo_started_at: s.undo_started_at.map(time),
            undo_finished_at: s.undo_finished_at.map(time),
            undo_duration_ms,
            error: s.error.clone(),
            overdue: None,
        };
        match steps.get_mut(s.position as usize) {
            Some(slot) => *slot = view,
            None => steps.push(view),
        }
    }

    // A running step far past its usual duration is flagged, unless the run says why
    // (it waits out an outage).
    if run.waiting_since.is_none() {
        for step in steps.iter_mut().filter(|s| s.state == "running") {
            // Nothing under a minute is overdue: spare every poll of a run (`--wait`
            // reads it five times a second) the look at its history.
            let Some(ran) = step.duration_ms.filter(|ran| *ran > overdue::MARGIN_MS) else {
                continue;
            };
            let usual = store
                .recent_step_durations(run.workflow, &step.name, overdue::USUAL_SAMPLE)
                .await?;
            step.overdue = overdue::step(ran, &usual);
        }
    }

    let events = store.events(&run.id).await?;
    // Each job with when it was listed, and — while CloudStack runs it — its command
    // and since when (a volume operation's record was last written when its job was
    // submitted; a VM command's event, when CloudStack accepted it).
    let mut jobs: Vec<(i64, Option<Running>, JobView)> = store
        .ops_for_run(&run.id)
        .await?
        .into_iter()
        .map(|op| {
            let step = op.idempotency_key.split('/').nth(1).map(str::to_string);
            let running = (op.state == store::OpState::Submitted)
                .then(|| volumed::OpKind::parse(&op.kind))
                .flatten()
                .map(|kind| (kind.command(), op.updated_at));
            (
                op.created_at,
                running,
                JobView {
                    step,
                    kind: op.kind,
                    volume_id: op.volume_id.map(String::from),
                    vm_id: op.vm_id.map(String::from),
                    job_id: op.job_id.map(String::from),
                    state: op.state.to_string(),
                    error: op.error.map(|e| in_words(&e)),
                    at: time(op.created_at),
                    overdue: None,
                },
            )
        })
        .collect();
    for job in command_jobs(&events, &recorded) {
        let running = (job.state == "submitted")
            .then(|| job.command.as_deref().and_then(vm_command))
            .flatten()
            .map(|command| (command, job.at));
        jobs.push((
            job.at,
            running,
            JobView {
                step: job.step,
                kind: job.command.unwrap_or_else(|| "job".into()),
                volume_id: job.volume_id,
                vm_id: job.vm_id,
                job_id: Some(job.job_id),
                state: job.state.into(),
                error: None,
                at: time(job.at),
                overdue: None,
            },
        ));
    }
    jobs.sort_by_key(|(at, _, _)| *at);
    // A job far past what its command usually takes is flagged, unless the run says
    // why (it waits out an outage).
    if run.waiting_since.is_none() {
        let now = store::now_ms();
        for (_, running, job) in &mut jobs {
            if let Some((command, since)) = *running {
                job.overdue = overdue::job_since(command, since, now, |c| {
                    state.env.cloud.expected_job_duration(c)
                });
            }
        }
    }
    let jobs: Vec<JobView> = jobs.into_iter().map(|(_, _, job)| job).collect();

    let (mut story, advice) = story(run, vm_name, &recorded);
    for s in steps.iter().filter(|s| s.overdue.is_some()) {
        story.push(format!(
            "Step {} ({}) is {}.",
            s.position + 1,
            s.name,
            s.overdue.as_deref().unwrap_or_default()
        ));
    }
    for j in jobs.iter().filter(|j| j.overdue.is_some()) {
        story.push(format!(
            "CloudStack job {} ({}{}) is {}.",
            j.job_id.as_deref().unwrap_or("-"),
            j.kind,
            j.step
                .as_deref()
                .map(|s| format!(", step {s}"))
                .unwrap_or_default(),
            j.overdue.as_deref().unwrap_or_default()
        ));
    }
    Ok(RunDetail {
        run: run_summary(run, vm_name),
        lease_owner: run
            .lease_expires_at
            .filter(|&t| t > store::now_ms() && run.state.is_active())
            .and(run.lease_owner.clone()),
        generation: run.generation,
        plan_run: plan_run_of(&state.env.store, run).await?,
        steps,
        jobs,
        events: events
            .into_iter()
            .map(|e| EventView {
                at: time(e.at),
                level: e.level,
                step: e.step,
                message: e.message,
            })
            .collect(),
        story,
        advice,
    })
}

/// A step's own times at `now`: its action's (from its start to its end, or to now
/// while it runs) and its undo's (likewise), each measured from its own start — not
/// from anything else that happened in between.
fn own_times(s: &store::StepRecord, now: i64) -> (Option<i64>, Option<i64>) {
    let span = |from: Option<i64>, to: Option<i64>, running: bool| match (from, to) {
        (Some(a), Some(b)) => Some((b - a).max(0)),
        (Some(a), None) if running => Some((now - a).max(0)),
        _ => None,
    };
    (
        span(s.started_at, s.finished_at, s.state == StepState::Running),
        span(
            s.undo_started_at,
            s.undo_finished_at,
            s.state == StepState::Undoing,
        ),
    )
}

/// A job CloudStack runs: its command and since when (Unix ms).
type Running = (&'static str, i64);

/// The VM commands whose jobs a run's log records, as the client names them (for
/// what it learned of their durations).
fn vm_command(command: &str) -> Option<&'static str> {
    [
        "deployVirtualMachine",
        "startVirtualMachine",
        "stopVirtualMachine",
        "destroyVirtualMachine",
    ]
    .into_iter()
    .find(|c| *c == command)
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// What happened to a run, in sentences, and what an operator should do now.
fn story(run: &Run, vm: &str, steps: &[store::StepRecord]) -> (Vec<String>, Option<String>) {
    let mut story = Vec::new();
    let what = match run.mode.as_deref() {
        Some(mode) => format!("{} ({mode} mode)", run.workflow),
        None => run.workflow.to_string(),
    };
    story.push(format!("{what} of {vm}, created {}.", time(run.created_at)));
    let failed = steps.iter().find(|s| s.state == StepState::Failed);
    let undo_failed = steps.iter().find(|s| s.state == StepState::UndoFailed);
    let done = steps.iter().filter(|s| s.state == StepState::Done).count();
    let undone = steps
        .iter()
        .filter(|s| s.state == StepState::Undone)
        .count();
    let elapsed = seconds(run.finished_at.unwrap_or_else(store::now_ms) - run.created_at);
    let mut advice = None;
    if let Some(w) = waiting(run) {
        story.push(format!(
            "It is waiting for {} since {} ({} so far) and keeps trying; it carries on where it was when the answer comes.",
            w.for_,
            w.since,
            seconds((w.seconds * 1000.0) as i64)
        ));
    }
    match run.state {
        RunState::Pending => story.push("It is waiting for a worker to take it.".into()),
        RunState::Running => {
            let current = steps.iter().rev().find(|s| s.state == StepState::Running);
            story.push(match current {
                Some(s) => format!(
                    "It is running step {} ({}) after {elapsed}; {done} step(s) done.",
                    s.position + 1,
                    s.name
                ),
                None => format!("It is running; {done} step(s) done after {elapsed}."),
            });
            if run.cancel_requested {
                story.push("A cancel was requested: it unwinds before its next step.".into());
            }
        }
        RunState::Done => {
            story.push(format!("It finished: all {done} steps done in {elapsed}."));
            // Drift it met and could not put right: the VM cannot fail over until a
            // resync is recorded.
            let diverged = workflows::cleanup::diverged_at_end(steps);
            if !diverged.is_empty() {
                story.push(format!(
                    "But {} of {vm}'s replicas diverged from the source: {}.",
                    diverged.len(),
                    diverged
                        .iter()
                        .map(|(id, why)| format!("{id} — {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                advice = Some(format!(
                    "Have replication resynchronise the diverged replicas from the source (a \
                     full or delta resync in the replication product), then record it with \
                     `ferry vm resynced {vm}`: until then {vm}'s failovers are refused. If a \
                     replica no longer exists in CloudStack, replace it in {vm}'s definition \
                     first (`ferry vm update FILE`)."
                ));
            }
        }
        RunState::Unwinding | RunState::Unwound | RunState::Stuck | RunState::Abandoned => {
            if run.cancel_requested && failed.is_none() {
                story.push("An operator cancelled it.".into());
            }
            if let Some(f) = failed {
                story.push(format!(
                    "Step {} ({}) failed: {}.",
                    f.position + 1,
                    f.name,
                    f.error
                        .as_deref()
                        .or(run.error.as_deref())
                        .unwrap_or("no reason recorded")
                ));
            } else if let Some(e) = &run.error {
                story.push(format!("It failed: {e}."));
            }
            match run.state {
                RunState::Unwinding => story.push(format!("It is undoing the steps that ran, in reverse; {undone} undone so far.")),
                RunState::Unwound if forward_only(run.workflow) => story.push(format!(
                    "A {} goes forward: what its steps did stays done — except that a replica it had detached and not yet put on the appliance was put back on the VM it came from — and running it again picks up from what it finds. Ended after {elapsed}.",
                    run.workflow
                )),
                RunState::Unwound => story.push(format!(
                    "Every step that had run was undone, in reverse ({undone} undone) — {vm} is as it was before the run. Ended after {elapsed}."
                )),
                _ => {}
            }
        }
    }
    if matches!(run.state, RunState::Stuck | RunState::Abandoned) {
        match undo_failed {
            Some(s) => story.push(format!(
                "While unwinding, the undo of step {} ({}) could not complete: {}.",
                s.position + 1,
                s.name,
                s.error.as_deref().unwrap_or("no reason recorded")
            )),
            None => story.push("While unwinding, an undo could not complete.".into()),
        }
        let pending: Vec<&str> = steps
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    StepState::Done | StepState::UndoFailed | StepState::Undoing
                )
            })
            .map(|s| s.name.as_str())
            .collect();
        if !pending.is_empty() {
            story.push(format!("Not yet undone: {}.", pending.join(", ")));
        }
    }
    // A live failover that fails after its before_live hooks ran leaves the source as
    // they left it: most likely powered off, serving nothing.
    let source_off = if run.workflow == Workflow::LiveFailover
        && matches!(
            run.state,
            RunState::Unwinding | RunState::Unwound | RunState::Stuck | RunState::Abandoned
        ) {
        workflows::live::before_live_hooks_ran(steps)
    } else {
        Vec::new()
    };
    if !source_off.is_empty() {
        story.push(format!(
            "Its before_live hooks had run ({}): the source VM may be powered off and serving nothing — the unwind does not undo them.",
            source_off.join("; ")
        ));
    }
    match run.state {
        RunState::Stuck => {
            advice = Some(format!(
                "The run holds {vm} until it is resolved. Fix what made the undo fail (above), then `ferry run retry {id}` to try the undo again. \
                 If it cannot be fixed, undo the steps listed as not yet undone by hand in CloudStack and `ferry run abandon {id}`; ferry then forgets the run, not what it left behind.",
                id = run.id
            ));
        }
        RunState::Abandoned => story.push("An operator abandoned it; whatever its failed undo left behind was theirs to clean up.".into()),
        RunState::Unwound if forward_only(run.workflow) => {
            let command = match run.workflow {
                Workflow::Rollback => "rollback",
                Workflow::Commit => "commit",
                _ => "cleanup",
            };
            advice = Some(format!(
                "Fix the cause and run `ferry failover {command} {vm}` again: it picks up from what it finds."
            ));
        }
        // An operator's cancel is no fault to fix.
        RunState::Unwound if run.cancel_requested && failed.is_none() => {
            advice = Some(format!(
                "It was cancelled as asked and {vm} is as it was; start the workflow again when it is wanted."
            ));
        }
        RunState::Unwound => {
            advice = Some("Fix the cause above and start the workflow again.".into());
        }
        _ => {}
    }
    if !source_off.is_empty() {
        let first = advice.map(|a| format!("{a} ")).unwrap_or_default();
        advice = Some(format!(
            "{first}The source VM may be powered off by the before_live hooks: if it must serve until the failover is tried again, power it on now (the after_rollback hooks do); otherwise start the live failover again as soon as the cause is fixed."
        ));
    }
    (story, advice)
}

/// Workflows whose steps have no undo: a failure stops them where they are, and the
/// next run of the same workflow finishes the job.
fn forward_only(workflow: Workflow) -> bool {
    matches!(
        workflow,
        Workflow::Cleanup | Workflow::Rollback | Workflow::Commit
    )
}

/// A VM command's CloudStack job (`deployVirtualMachine`, `startVirtualMachine`, …),
/// as the run's log records it: an event with a `job_id` field. Its step waits on
/// it, so its outcome is the step's.
pub(crate) struct CommandJob {
    /// When CloudStack accepted the command.
    pub at: i64,
    pub step: Option<String>,
    /// Submitted while its step was being undone.
    pub undo: bool,
    pub job_id: String,
    pub command: Option<String>,
    pub volume_id: Option<String>,
    pub vm_id: Option<String>,
    /// `submitted` while its step runs, `succeeded` once the step is done (or
    /// undone), `ended` if it failed (the step's error says why).
    pub state: &'static str,
}

/// The VM commands' jobs of a run, from its log, in the log's order.
pub(crate) fn command_jobs(
    events: &[store::Event],
    steps: &[store::StepRecord],
) -> Vec<CommandJob> {
    let mut jobs = Vec::new();
    for e in events {
        let Some(fields) = e
            .fields
            .as_deref()
            .and_then(|f| serde_json::from_str::<Value>(f).ok())
        else {
            continue;
        };
        let Some(job_id) = fields.get("job_id").and_then(Value::as_str) else {
            continue;
        };
        let field = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_string);
        let record = e
            .step
            .as_deref()
            .and_then(|name| steps.iter().find(|s| s.name == name));
        jobs.push(CommandJob {
            at: e.at,
            step: e.step.clone(),
            undo: record
                .and_then(|s| s.undo_started_at)
                .is_some_and(|at| e.at >= at),
            job_id: job_id.to_string(),
            command: field("command"),
            volume_id: field("volume_id"),
            vm_id: field("vm_id"),
            state: match record.map(|s| s.state) {
                Some(StepState::Done | StepState::Undone) => "succeeded",
                Some(StepState::Failed | StepState::UndoFailed) => "ended",
                _ => "submitted",
            },
        });
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: StepState, times: [Option<i64>; 4]) -> store::StepRecord {
        store::StepRecord {
            position: 0,
            name: "create-vm".into(),
            state,
            attempts: 1,
            output: None,
            error: None,
            started_at: times[0],
            finished_at: times[1],
            undo_started_at: times[2],
            undo_finished_at: times[3],
        }
    }

    #[test]
    fn a_step_shows_its_action_and_its_undo_each_from_its_own_start() {
        let now = 100_000;
        // Done at 2 s after 1.5 s; undone from 60 s to 61 s: not 59.5 s of anything.
        let undone = record(
            StepState::Undone,
            [Some(500), Some(2_000), Some(60_000), Some(61_000)],
        );
        assert_eq!(own_times(&undone, now), (Some(1_500), Some(1_000)));
        // Stuck: the failed undo's own time.
        let stuck = record(
            StepState::UndoFailed,
            [Some(500), Some(2_000), Some(60_000), Some(90_000)],
        );
        assert_eq!(own_times(&stuck, now), (Some(1_500), Some(30_000)));
        // Undoing: the undo runs to now; the action's time stands.
        let undoing = record(
            StepState::Undoing,
            [Some(500), Some(2_000), Some(95_000), None],
        );
        assert_eq!(own_times(&undoing, now), (Some(1_500), Some(5_000)));
        // Running: to now; no undo yet.
        let running = record(StepState::Running, [Some(99_000), None, None, None]);
        assert_eq!(own_times(&running, now), (Some(1_000), None));
        // An action that never ended (its process died) has no time of its own.
        let cut = record(
            StepState::Undone,
            [Some(500), None, Some(60_000), Some(61_000)],
        );
        assert_eq!(own_times(&cut, now), (None, Some(1_000)));
    }
}
