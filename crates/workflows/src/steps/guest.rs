//! Guest preparation as a step (DESIGN §5, test and live failover step 3): the volume
//! daemon on the appliance runs the configured command against the boot replica's
//! device path; the undo reverts the boot replica to the run's snapshot. The policy
//! and validation's check are [`crate::guest_prep`]'s.

use async_trait::async_trait;
use engine::{Output, StepError, TypedStep};
use ids::{VmId, VolumeId};
use serde::{Deserialize, Serialize};
use volumed::Presence;

use crate::ensure::{ensure_on_appliance, run_snapshots};
use crate::env::{Cx, Env, call, cloud_error, store_error, volume_error};
use crate::guest_prep::{Decision, decide, not_configured, why};
use crate::jobs::WorkflowStep;
use crate::run::{RunInput, appliance_vm_id, input, protected_vm, snapshot_name};

/// Runs the configured guest preparation on the boot replica, on the appliance, when
/// the VM's policy asks for it.
pub(crate) struct PrepareGuest;

/// Whether the preparation ran (and the policy that decided), with what it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Prepared {
    pub ran: bool,
    pub policy: String,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub run: Option<PreparationRun>,
}

/// What the command did, when it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreparationRun {
    pub volume_id: VolumeId,
    pub device_path: String,
    pub command: Vec<String>,
    pub duration_ms: u64,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

const GUEST_PREP: Output<Prepared> = Output::new("guest-prep");

const STEP: &str = GUEST_PREP.name();

#[async_trait]
impl TypedStep<Env> for PrepareGuest {
    type Output = Prepared;

    fn output(&self) -> Output<Prepared> {
        GUEST_PREP
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let vm = protected_vm(cx).await?;
        if decide(vm.spec.guest_prep, vm.spec.guest_os) == Decision::Skip {
            return Ok(Prepared {
                ran: false,
                policy: why(&vm),
                run: None,
            });
        }
        let prep = env
            .guest_prep
            .as_ref()
            .ok_or_else(|| StepError::Definitive(not_configured(&vm)))?;
        let input = input(cx)?;
        let boot = input.plan.boot();
        let appliance = appliance_vm_id(cx, &vm).await?;
        let outcome = env
            .volumes
            .prepare_guest(
                &call(cx, STEP, &boot.volume_id),
                &appliance,
                &boot.volume_id,
                prep,
            )
            .await
            .map_err(|e| volume_error(&format!("on appliance {appliance}"), e))?;
        let message = format!(
            "guest preparation of boot replica {} ({}): `{}` succeeded in {} ms",
            boot.volume_id,
            outcome.device_path,
            outcome.command.join(" "),
            outcome.duration_ms
        );
        if let Err(e) = env
            .store
            .add_event(&cx.run.id, "info", Some(STEP), &message, None)
            .await
        {
            tracing::warn!(run = %cx.run.id, error = %e, "cannot record an event");
        }
        Ok(Prepared {
            ran: true,
            policy: why(&vm),
            run: Some(PreparationRun {
                volume_id: outcome.volume_id,
                device_path: outcome.device_path,
                command: outcome.command,
                duration_ms: outcome.duration_ms,
                stdout_tail: outcome.stdout_tail,
                stderr_tail: outcome.stderr_tail,
            }),
        })
    }

    /// Puts the boot replica's content back: the command rewrote it (in part, if it
    /// failed), and the steps around this one do not undo that. The snapshot step's
    /// undo only *deletes* the snapshots, and the reverts that do exist — cleanup's
    /// and the attach step's undo — run only on the replicas' way back from a target
    /// VM, which an unwind from here (a failed preparation, a failed create-vm) never
    /// takes. So this undo reverts the boot replica to the run's snapshot itself, while
    /// that snapshot still exists (the snapshot step's undo runs after this one).
    /// CloudStack reverts only a detached volume (or one of a stopped VM, and the
    /// appliance keeps running), so the replica leaves the appliance for the revert
    /// and comes back, its device path found again.
    ///
    /// Run twice, it reverts once: the revert is recorded as a run event, and a second
    /// run that finds it only makes sure the replica is back on the appliance (the
    /// replica is on the appliance both before and after, so CloudStack's state alone
    /// cannot tell a done revert from one still to do).
    ///
    /// Nothing is done when the policy skips the VM, or when no command is configured
    /// and the action recorded nothing (then it cannot have run).
    async fn undo(&self, cx: &Cx<'_>, output: Option<Self::Output>) -> Result<(), StepError> {
        let env = cx.ctx;
        let vm = protected_vm(cx).await?;
        let ran = match output {
            Some(out) => out.ran,
            None => {
                decide(vm.spec.guest_prep, vm.spec.guest_os) == Decision::Run
                    && env.guest_prep.is_some()
            }
        };
        if !ran {
            return Ok(());
        }
        let input = input(cx)?;
        let boot = input.plan.boot();
        let appliance = appliance_vm_id(cx, &vm).await?;
        if !reverted_already(cx).await? {
            revert_boot_replica(cx, &input, &appliance).await?;
        }
        ensure_on_appliance(cx, UNDO, &boot.volume_id, &appliance)
            .await
            .map(|_| ())
    }
}

impl WorkflowStep for PrepareGuest {}

const UNDO: &str = "undo-guest-prep";

/// The start of the event that records the undo's revert.
const REVERTED: &str = "reverted the boot replica after guest preparation:";

async fn reverted_already(cx: &Cx<'_>) -> Result<bool, StepError> {
    Ok(cx
        .ctx
        .store
        .events(&cx.run.id)
        .await
        .map_err(|e| store_error("reading the run's events", e))?
        .iter()
        .any(|e| e.step.as_deref() == Some(UNDO) && e.message.starts_with(REVERTED)))
}

/// Detaches the boot replica from the appliance (if it is there), reverts it to the
/// run's snapshot and records that it did.
async fn revert_boot_replica(
    cx: &Cx<'_>,
    input: &RunInput,
    appliance: &VmId,
) -> Result<(), StepError> {
    let env = cx.ctx;
    let boot = input.plan.boot();
    let name = snapshot_name(&input.target_name, boot.device_key);
    let snapshot = run_snapshots(env, input)
        .await?
        .of(input, boot)
        .into_iter()
        .next()
        .ok_or_else(|| {
            StepError::Definitive(format!(
                "cannot revert boot replica {} after guest preparation: its snapshot {name} is gone, so it may hold \
                 the preparation's changes; resynchronise it from the source, then abandon this run",
                boot.volume_id
            ))
        })?;
    let volume = env
        .cloud
        .get_volume(&boot.volume_id)
        .await
        .map_err(|e| cloud_error("looking up the boot replica", e))?
        .ok_or_else(|| {
            StepError::Definitive(format!(
                "boot replica {} no longer exists in CloudStack",
                boot.volume_id
            ))
        })?;
    match volume.virtualmachineid.as_ref().map(|id| id.as_str()) {
        None => {}
        Some(on) if on == appliance => {
            // Until the revert is recorded, nothing puts the replica back on the
            // appliance, so this key is never asked for a second detach.
            env.volumes
                .detach(
                    &call(cx, UNDO, format!("detach/{}", boot.volume_id))
                        .seeing(&boot.volume_id, Some(appliance)),
                    &boot.volume_id,
                )
                .await
                .map_err(|e| volume_error("detaching the boot replica to revert it", e))?;
            env.volumes
                .wait_device(
                    appliance,
                    &boot.volume_id,
                    Presence::Disappears,
                    env.device_timeout,
                )
                .await
                .map_err(|e| {
                    volume_error("waiting for the boot replica to leave the appliance", e)
                })?;
        }
        Some(other) => {
            // The later steps' undos bring it back to the appliance before this one
            // runs; anywhere else, someone else has it.
            return Err(StepError::Definitive(format!(
                "boot replica {} is attached to VM {other}, neither the appliance nor detached: \
                 cannot revert the guest preparation",
                boot.volume_id
            )));
        }
    }
    env.volumes
        .revert(
            // Its snapshot was listed by the replica's id, and the replica is detached.
            &call(cx, UNDO, format!("revert/{}", snapshot.id)).seeing(&boot.volume_id, None),
            &snapshot.id,
        )
        .await
        .map_err(|e| {
            volume_error(
                &format!(
                    "reverting boot replica {} to {}",
                    boot.volume_id, snapshot.id
                ),
                e,
            )
        })?;
    env.store
        .add_event(
            &cx.run.id,
            "info",
            Some(UNDO),
            &format!(
                "{REVERTED} {} to snapshot {} ({name})",
                boot.volume_id, snapshot.id
            ),
            None,
        )
        .await
        .map_err(|e| store_error("recording the revert", e))
}
