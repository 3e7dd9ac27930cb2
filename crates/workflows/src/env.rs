//! What every workflow step works with, and the small helpers they share.

use ids::{JobId, ServiceOfferingId, TemplateId, VmId, VolumeId, ZoneId};
use std::sync::Arc;
use std::time::Duration;

use engine::{StepContext, StepError};
use store::Store;
use volumed::{Call, Fence, VolumeService};

use crate::hooks::Hooks;

/// The CloudStack objects a target VM is made from.
#[derive(Debug, Clone)]
pub struct Target {
    pub zone_id: ZoneId,
    /// A custom (CPU/memory) service offering: the VM's spec goes in its details.
    pub service_offering_id: ServiceOfferingId,
    /// Any template: the VM is deployed stopped and its placeholder ROOT removed.
    pub template_id: TemplateId,
}

/// The world a workflow acts on.
#[derive(Clone)]
pub struct Env {
    pub store: Store,
    /// For VM commands (deploy, start, stop, destroy) and reads.
    pub cloud: cloudstack::Client,
    /// For every volume command: the volume daemon. In the [`Env`] a run's steps see
    /// ([`Env::for_vm`]) it is the daemon of the run's appliance — its remote agent
    /// when it has one; elsewhere it is the in-process daemon.
    pub volumes: Arc<dyn VolumeService>,
    /// The remote volume agents, by appliance name (appliances with a `volumed_url`);
    /// an appliance without one is served by [`Env::volumes`] in-process.
    pub agents: Agents,
    pub target: Target,
    /// How long to wait for a disk to appear in, or leave, the appliance.
    pub device_timeout: Duration,
    /// The operator's hooks around live failover and rollback (none by default).
    pub hooks: Hooks,
    /// The guest-preparation command the volume daemon runs on the appliance against
    /// the boot replica, for the VMs whose policy asks for it (see
    /// [`crate::guest_prep`]). `None` (the default): not configured, and a VM that
    /// needs preparation is refused by validation.
    pub guest_prep: Option<volumed::GuestPrep>,
}

/// The remote volume agents of the appliances that have one, by appliance name.
#[derive(Clone, Default)]
pub struct Agents(Arc<std::collections::BTreeMap<String, Arc<dyn VolumeService>>>);

impl Agents {
    pub fn new(agents: impl IntoIterator<Item = (String, Arc<dyn VolumeService>)>) -> Self {
        Agents(Arc::new(agents.into_iter().collect()))
    }

    /// The agent of `appliance`, if it has one.
    pub fn get(&self, appliance: &str) -> Option<&Arc<dyn VolumeService>> {
        self.0.get(appliance)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<dyn VolumeService>)> {
        self.0.iter()
    }
}

impl Env {
    /// The volume daemon of `appliance`: its agent, or the in-process daemon.
    pub fn volumes_of(&self, appliance: &str) -> Arc<dyn VolumeService> {
        self.agents
            .get(appliance)
            .cloned()
            .unwrap_or_else(|| self.volumes.clone())
    }

    /// The world of a run of protected VM `vm_id`: every volume call goes to the
    /// daemon of the VM's appliance. (A VM no longer registered keeps the in-process
    /// daemon; its steps stop on their own reading of the VM.) A store that cannot be
    /// read is an error, never a silent fallback to the in-process daemon.
    pub async fn for_vm(&self, vm_id: &ids::ProtectedVmId) -> Result<Env, store::StoreError> {
        let mut env = self.clone();
        if let Some(vm) = self.store.vm_by_id(vm_id).await? {
            env.volumes = self.volumes_of(&vm.appliance);
        }
        Ok(env)
    }
}

/// What a workflow step sees: the engine's context over [`Env`].
pub(crate) type Cx<'a> = StepContext<'a, Env>;

/// A volume-daemon call for this run and step: its key is deterministic (run, step,
/// what), so a repeated attempt — after a crash too — gets the first result instead
/// of acting twice; it carries the run's fencing generation.
pub(crate) fn call(cx: &Cx<'_>, step: &str, what: impl std::fmt::Display) -> Call {
    // After an operator retried a stuck run, its undos act under new keys: the call that
    // failed definitively (CloudStack did nothing) is then sent again rather than
    // answered with its recorded failure. A resumed run keeps its keys.
    let idempotency_key = match cx.run.retries {
        0 => format!("{}/{step}/{what}", cx.run.id),
        n => format!("{}/{step}/{what}/retry-{n}", cx.run.id),
    };
    Call {
        idempotency_key,
        fence: Some(Fence {
            run_id: cx.run.id.clone(),
            generation: cx.generation,
        }),
        seen: None,
    }
}

/// `key`, telling the daemon what the step has just read of the operation's volume
/// (where it is attached), so that the daemon does not read it again; unchanged when
/// the step found no such volume (the daemon then reads, and CloudStack refuses).
pub(crate) fn having_read(key: Call, volume: Option<&cloudstack::Volume>) -> Call {
    match volume {
        Some(v) => key.seeing(&v.id, v.virtualmachineid.as_ref()),
        None => key,
    }
}

/// A volume-daemon error, by what it allows: unwind, try again (after looking), or
/// wait out an outage.
/// The words are the run's (`ferry run show` prints them), not the daemon API caller's:
/// the step asks again with the key itself.
pub(crate) fn volume_error(what: &str, e: volumed::Error) -> StepError {
    let error = format!("{what}: {}", e.without_api_advice());
    if let Some(down) = e.unreachable() {
        return StepError::Unreachable {
            of: down.of.to_string(),
            reason: down.reason,
            error,
        };
    }
    match e.class() {
        volumed::Class::Definitive => StepError::Definitive(error),
        _ => StepError::Transient(error),
    }
}

/// A CloudStack error, likewise.
pub(crate) fn cloud_error(what: &str, e: cloudstack::Error) -> StepError {
    if let Some(reason) = e.unreachable() {
        return StepError::Unreachable {
            of: "CloudStack".to_string(),
            reason,
            error: format!("{what}: {e}"),
        };
    }
    match e.class() {
        cloudstack::ErrorClass::Definitive => StepError::Definitive(format!("{what}: {e}")),
        _ => StepError::Transient(format!("{what}: {e}")),
    }
}

pub(crate) fn store_error(what: &str, e: store::StoreError) -> StepError {
    StepError::Transient(format!("{what}: {e}"))
}

/// Records a CloudStack job of a VM command (deploy, start, stop, destroy) in the run's
/// log as soon as CloudStack accepted it, so `ferry run show` lists its id. Volume
/// commands are journaled by the volume daemon instead. A failure to record is logged,
/// not fatal: the job itself is what matters, and the step that waits on it looks at
/// CloudStack again when it is resumed.
pub(crate) async fn record_job<T>(cx: &Cx<'_>, job: &cloudstack::Job<T>, vm_id: Option<&VmId>) {
    let fields = serde_json::json!({
        "job_id": job.job_id,
        "command": job.command,
        "vm_id": vm_id.map(VmId::as_str).or(job.id.as_deref()),
    });
    let message = format!("{} submitted as CloudStack job {}", job.command, job.job_id);
    if let Err(e) = cx
        .ctx
        .store
        .add_event(
            &cx.run.id,
            "info",
            Some(cx.step),
            &message,
            Some(&fields.to_string()),
        )
        .await
    {
        tracing::warn!(run = %cx.run.id, job_id = %job.job_id, error = %e, "cannot record a CloudStack job id");
    }
}

/// A job of `command` that this run's step submitted (see [`record_job`]) and that
/// CloudStack is still running, if any. A step resumed after a crash waits on it rather
/// than sending the command again: CloudStack would queue a second start, stop or
/// destroy behind the first, and fail it once the first had done the work. A job that
/// has ended is not returned — the VM's state then says what it did.
pub(crate) async fn pending_job<T>(
    cx: &Cx<'_>,
    command: &str,
    vm_id: Option<&VmId>,
) -> Result<Option<cloudstack::Job<T>>, StepError> {
    Ok(match recorded_job(cx, command, vm_id).await? {
        Some((job, cloudstack::JobStatus::Pending)) => Some(job),
        _ => None,
    })
}

/// Where the last job of `command` this step sent stands, for a step that looked at
/// the VM before asking: a job still running is waited on; one that ended may have
/// changed the VM since it was looked at, so it is looked at again; and when nothing
/// can have been sent (a first attempt that recorded none), what was seen stands —
/// no second look, no extra call.
pub(crate) enum InFlight<T> {
    Pending(cloudstack::Job<T>),
    Ended,
    NoneSent,
}

pub(crate) async fn job_in_flight<T>(
    cx: &Cx<'_>,
    command: &str,
    vm_id: Option<&VmId>,
) -> Result<InFlight<T>, StepError> {
    let recorded = recorded_job_id(cx, command).await?;
    if cx.attempt <= 1 && recorded.is_none() {
        return Ok(InFlight::NoneSent);
    }
    Ok(match job_state(cx, command, vm_id, recorded).await? {
        Some((job, cloudstack::JobStatus::Pending)) => InFlight::Pending(job),
        // Ended, forgotten by CloudStack, or perhaps sent by an earlier attempt that
        // did not get to record it: the VM tells.
        _ => InFlight::Ended,
    })
}

/// Like [`pending_job`], but also a job that has succeeded: for a command whose effect
/// cannot be seen once done (a destroy: the VM is gone, and a second destroy fails).
/// A VM found before such a job ended must not be destroyed again.
pub(crate) async fn pending_or_done_job<T>(
    cx: &Cx<'_>,
    command: &str,
    vm_id: Option<&VmId>,
) -> Result<Option<cloudstack::Job<T>>, StepError> {
    Ok(match recorded_job(cx, command, vm_id).await? {
        Some((job, cloudstack::JobStatus::Pending | cloudstack::JobStatus::Succeeded)) => Some(job),
        _ => None,
    })
}

/// The last job of `command` this run's step recorded, with its state in CloudStack now
/// — or, when none is recorded (a process killed after CloudStack accepted the command
/// and before the run log had its id), a pending job of that command on `vm_id` that
/// CloudStack lists. A recorded job CloudStack no longer knows counts as none.
async fn recorded_job<T>(
    cx: &Cx<'_>,
    command: &str,
    vm_id: Option<&VmId>,
) -> Result<Option<(cloudstack::Job<T>, cloudstack::JobStatus)>, StepError> {
    let recorded = recorded_job_id(cx, command).await?;
    job_state(cx, command, vm_id, recorded).await
}

/// [`recorded_job`] for the job the run's log names (`recorded`, as
/// [`recorded_job_id`] found it).
async fn job_state<T>(
    cx: &Cx<'_>,
    command: &str,
    vm_id: Option<&VmId>,
    recorded: Option<(String, Option<String>)>,
) -> Result<Option<(cloudstack::Job<T>, cloudstack::JobStatus)>, StepError> {
    let Some((job_id, vm_id)) = recorded else {
        // Only a step tried before (a crash, a retry) can have sent a command it did
        // not get to record; a first attempt has nothing to look for.
        if cx.attempt <= 1 {
            return Ok(None);
        }
        return unrecorded_job(cx, command, vm_id).await;
    };
    let state = match cx
        .ctx
        .cloud
        .query_async_job_result(&JobId::from(&job_id))
        .await
    {
        Ok(state) => state,
        // CloudStack no longer knows the job (its record purged, or its database
        // restored from before it): it is pending no more, and what it did is what
        // the VM shows — which the step looks at, as after a job that ended.
        Err(e @ cloudstack::Error::JobUnknown { .. }) => {
            tracing::warn!(run = %cx.run.id, step = cx.step, job_id, command, error = %e, "CloudStack no longer knows the recorded job; the VM's state tells what it did");
            return Ok(None);
        }
        Err(e) => {
            return Err(cloud_error(
                &format!("looking up CloudStack job {job_id}"),
                e,
            ));
        }
    };
    if state.jobstatus == cloudstack::JobStatus::Pending {
        tracing::info!(run = %cx.run.id, step = cx.step, job_id, command, "resuming a CloudStack job in flight");
    }
    Ok(Some((
        cloudstack::Job::resume(command, job_id, vm_id),
        state.jobstatus,
    )))
}

/// The id (and VM) of the last job of `command` this run's step recorded.
async fn recorded_job_id(
    cx: &Cx<'_>,
    command: &str,
) -> Result<Option<(String, Option<String>)>, StepError> {
    let events = cx
        .ctx
        .store
        .events(&cx.run.id)
        .await
        .map_err(|e| store_error("reading the run's log", e))?;
    Ok(events.iter().rev().find_map(|e| {
        if e.step.as_deref() != Some(cx.step) {
            return None;
        }
        let fields: serde_json::Value = serde_json::from_str(e.fields.as_deref()?).ok()?;
        if fields.get("command")?.as_str()? != command {
            return None;
        }
        let job_id = fields.get("job_id")?.as_str()?.to_string();
        let vm_id = fields
            .get("vm_id")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        Some((job_id, vm_id))
    }))
}

/// A pending job of `command` on VM `vm_id` that CloudStack lists (`listAsyncJobs`).
async fn unrecorded_job<T>(
    cx: &Cx<'_>,
    command: &str,
    vm_id: Option<&VmId>,
) -> Result<Option<(cloudstack::Job<T>, cloudstack::JobStatus)>, StepError> {
    let class = match command {
        "startVirtualMachine" => "StartVMCmd",
        "stopVirtualMachine" => "StopVMCmd",
        "destroyVirtualMachine" => "DestroyVMCmd",
        _ => return Ok(None),
    };
    let Some(vm_id) = vm_id else {
        return Ok(None);
    };
    let jobs = cx
        .ctx
        .cloud
        .list_async_jobs()
        .await
        .map_err(|e| cloud_error("listing CloudStack's jobs", e))?;
    Ok(jobs
        .into_iter()
        .find(|j| {
            j.jobstatus == cloudstack::JobStatus::Pending
                && j.jobinstanceid.as_deref() == Some(vm_id.as_str())
                && j.cmd.as_deref().is_some_and(|c| c.contains(class))
        })
        .map(|j| {
            tracing::info!(run = %cx.run.id, step = cx.step, job_id = %j.jobid, command, "adopting a CloudStack job in flight that the run log had not recorded");
            (
                cloudstack::Job::resume(command, j.jobid, Some(vm_id.to_string())),
                cloudstack::JobStatus::Pending,
            )
        }))
}

/// Detaches replica `volume_id` from the appliance `appliance` with the volume-daemon
/// call `key`, and waits for its disk to leave the appliance.
pub(crate) async fn leave_appliance(
    cx: &Cx<'_>,
    key: &Call,
    volume_id: &VolumeId,
    appliance: &VmId,
) -> Result<(), StepError> {
    let env = cx.ctx;
    env.volumes.detach(key, volume_id).await.map_err(|e| {
        volume_error(
            &format!("detaching replica {volume_id} from the appliance"),
            e,
        )
    })?;
    env.volumes
        .wait_device(
            appliance,
            volume_id,
            volumed::Presence::Disappears,
            env.device_timeout,
        )
        .await
        .map_err(|e| volume_error("waiting for the replica's disk to leave the appliance", e))?;
    Ok(())
}

/// Records an event in the run's log; a failure to record is logged, not fatal.
pub(crate) async fn event(cx: &Cx<'_>, level: &str, step: &str, message: &str) {
    if let Err(e) = cx
        .ctx
        .store
        .add_event(&cx.run.id, level, Some(step), message, None)
        .await
    {
        tracing::warn!(run = %cx.run.id, error = %e, "cannot record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_error_in_a_run_says_no_idempotency_key_to_send() {
        let e = volumed::Error::OutcomeUnknown {
            op_id: "op-1".into(),
            detail: "attachVolume was sent again and again got no answer".into(),
            unreachable: None,
        };
        let StepError::Transient(error) = volume_error("attaching the boot disk", e) else {
            panic!("an unknown outcome is tried again");
        };
        assert_eq!(
            error,
            "attaching the boot disk: the outcome of operation op-1 is not known yet: attachVolume was sent again and again got no answer"
        );
    }
}
