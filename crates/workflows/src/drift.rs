//! Drift: what someone changed in CloudStack behind ferry's back while a VM was failed
//! over — a replica's snapshot deleted, a replica detached, or attached to the
//! appliance or another VM, the target VM stopped, destroyed or expunged, a clone
//! deleted, a volume added to the target VM, two disks on the appliance with one
//! serial. A cleanup or a rollback reaches an end whatever it finds (DESIGN §5): it does
//! everything it can, and what it cannot put back as the source had it is *marked*,
//! never hidden and never a reason to stop.
//!
//! The mark is [`store::Divergence`]: a replica that could not be reverted to the
//! drill's snapshot (it still holds the test VM's writes), that is gone from CloudStack,
//! or that a VM ferry does not own held, can no longer be trusted to hold what its
//! source holds. Replication must resynchronise it from the source side; until an
//! operator records that (`ferry vm resynced NAME`), a failover of its VM is refused.
//! Each mark is a `warn` event of the run that found it, and the run's last step lists
//! every replica of the VM that is diverged.
//!
//! What drift does to each workflow, case by case, is in docs/operating.md ("Drift").

use ids::{VmId, VolumeId};

use engine::StepError;

use crate::env::{Cx, call, cloud_error, event, leave_appliance, store_error, volume_error};
use crate::run::RunInput;

/// Marks replica `volume_id` as diverged from its source for `reason` (the first mark
/// of a replica stands), and says so in the run's events.
pub(crate) async fn diverged(
    cx: &Cx<'_>,
    step: &str,
    volume_id: &VolumeId,
    reason: &str,
) -> Result<(), StepError> {
    let newly = cx
        .ctx
        .store
        .mark_diverged(volume_id, Some(&cx.run.id), reason)
        .await
        .map_err(|e| store_error("marking a replica diverged", e))?;
    if newly {
        let message = format!(
            "replica {volume_id} diverged from its source: {reason}. Replication must \
             resynchronise it from the source; the VM's next failover is refused until \
             that is recorded (`ferry vm resynced`)"
        );
        event(cx, "warn", step, &message).await;
    }
    Ok(())
}

/// Why a replica that was deleted from CloudStack is diverged.
pub(crate) const GONE: &str = "the volume no longer exists in CloudStack: it was deleted behind \
     ferry's back (expunging a VM that holds a volume as its ROOT disk deletes the volume)";

/// Whether the VM named `name` is the run's own target (the test VM, or the live
/// failover's VM): the one VM holding a replica that ferry stops to take it back.
pub(crate) fn is_run_target(input: &RunInput, vm: &cloudstack::VirtualMachine) -> bool {
    vm.name == input.target_name
}

/// Whether replica `volume` (as CloudStack has it now) is attached to no VM and so can
/// be reverted to the drill's snapshot (a cleanup, or a test failover's unwind) —
/// after it is detached, if drift moved it:
/// - on the appliance, but not put back there by ferry (its record says otherwise):
///   someone attached it by hand, and the drill's writes are still on it;
/// - on a VM that is neither the appliance nor the run's target, as a data disk or as
///   the ROOT of a stopped VM.
///
/// `false` for a replica ferry put back on the appliance (reverted before), one on the
/// run's target (its detach step's business), and one that is the ROOT disk of a
/// running VM ferry does not own: ferry does not stop what it did not create, and it
/// is marked diverged.
pub(crate) async fn detached_for_revert(
    cx: &Cx<'_>,
    step: &str,
    input: &RunInput,
    volume: &cloudstack::Volume,
    appliance: &VmId,
) -> Result<bool, StepError> {
    let env = cx.ctx;
    let Some(holder) = &volume.virtualmachineid else {
        return Ok(true);
    };
    if holder == appliance {
        let recorded = env
            .store
            .replica(&volume.id)
            .await
            .map_err(|e| store_error("reading a replica's record", e))?
            .and_then(|(_, r)| r.attachment.vm_id);
        if recorded.as_ref() == Some(appliance) {
            // Put back by ferry, after its revert.
            return Ok(false);
        }
        event(
            cx,
            "warn",
            step,
            &format!(
                "replica {} was attached to the appliance behind ferry's back, with the \
                 drill's writes on it: detaching it to revert it",
                volume.id
            ),
        )
        .await;
        let key = call(cx, step, format!("drift-detach/{}/{holder}", volume.id))
            .seeing(&volume.id, Some(holder));
        leave_appliance(cx, &key, &volume.id, appliance).await?;
        return Ok(true);
    }
    let Some(vm) = env
        .cloud
        .get_virtual_machine(holder)
        .await
        .map_err(|e| cloud_error("looking up the VM holding a replica", e))?
    else {
        return Ok(false);
    };
    if is_run_target(input, &vm) {
        return Ok(false);
    }
    take_from_foreign(cx, step, &volume.id, volume, &vm).await
}

/// Takes replica `volume_id` (as `volume`) off `vm`, a VM that ferry did not create
/// for this run, unless it is that VM's ROOT disk and the VM is not stopped: then it is
/// left there and marked diverged. Returns whether it was taken. Either way it is
/// diverged unless a revert follows: another VM may have written to it.
pub(crate) async fn take_from_foreign(
    cx: &Cx<'_>,
    step: &str,
    volume_id: &VolumeId,
    volume: &cloudstack::Volume,
    vm: &cloudstack::VirtualMachine,
) -> Result<bool, StepError> {
    if volume.deviceid == Some(0) && vm.state != "Stopped" {
        diverged(
            cx,
            step,
            volume_id,
            &format!(
                "it is the ROOT disk of VM {} ({}, {}), which ferry did not create and does \
                 not stop; it was left there: stop that VM and detach it, then attach it to \
                 the appliance",
                vm.name, vm.id, vm.state
            ),
        )
        .await?;
        // The record says where it is now, so `vm show` points at it.
        let seen = store::Attachment {
            vm_id: Some(vm.id.clone()),
            device_id: volume.deviceid,
            device_path: None,
            seen_at: None,
        };
        cx.ctx
            .store
            .record_attachment(volume_id, &seen)
            .await
            .map_err(|e| store_error("recording where a replica is", e))?;
        return Ok(false);
    }
    event(
        cx,
        "warn",
        step,
        &format!(
            "replica {volume_id} was attached to VM {} ({}) behind ferry's back: detaching it \
             from there",
            vm.name, vm.id
        ),
    )
    .await;
    detach_from(cx, step, volume_id, &vm.id).await?;
    Ok(true)
}

/// Detaches replica `volume_id` from `holder` through the volume daemon.
async fn detach_from(
    cx: &Cx<'_>,
    step: &str,
    volume_id: &VolumeId,
    holder: &VmId,
) -> Result<(), StepError> {
    cx.ctx
        .volumes
        .detach(
            // The caller has just seen it there.
            &call(cx, step, format!("drift-detach/{volume_id}/{holder}"))
                .seeing(volume_id, Some(holder)),
            volume_id,
        )
        .await
        .map_err(|e| volume_error(&format!("detaching replica {volume_id} from {holder}"), e))?;
    Ok(())
}

/// The run's target VM destroyed behind ferry's back but not expunged still holds the
/// replicas, and CloudStack does not detach the ROOT of a Destroyed VM: it is recovered
/// (Stopped again) so the workflow can take them back and then destroy it as usual.
/// Only the VM named as the run's target, and for a live failover's VM only the one it
/// recorded, is recovered. Returns it, or `None` when there is none to recover.
pub(crate) async fn recover_destroyed_target(
    cx: &Cx<'_>,
    step: &str,
    input: &RunInput,
    recorded: Option<&VmId>,
) -> Result<Option<cloudstack::VirtualMachine>, StepError> {
    let env = cx.ctx;
    let filter = cloudstack::VmFilter {
        name: Some(input.target_name.clone()),
        ..Default::default()
    };
    let destroyed = env
        .cloud
        .list_virtual_machines(&filter)
        .await
        .map_err(|e| cloud_error("listing VMs", e))?
        .into_iter()
        .find(|v| {
            v.name == input.target_name
                && v.state == "Destroyed"
                && recorded.is_none_or(|id| &v.id == id)
        });
    let Some(vm) = destroyed else {
        return Ok(None);
    };
    event(
        cx,
        "warn",
        step,
        &format!(
            "VM {} ({}) was destroyed behind ferry's back but not expunged, with the replicas \
             on it: recovering it to take them back",
            vm.name, vm.id
        ),
    )
    .await;
    if let Err(e) = env.cloud.recover_virtual_machine(&vm.id).await {
        // An answer lost after CloudStack recovered it: look before failing.
        let now = env
            .cloud
            .get_virtual_machine(&vm.id)
            .await
            .map_err(|e| cloud_error("looking up the recovered VM", e))?;
        if now.as_ref().is_none_or(|v| v.state == "Destroyed") {
            return Err(cloud_error("recovering the destroyed target VM", e));
        }
    }
    env.cloud
        .get_virtual_machine(&vm.id)
        .await
        .map_err(|e| cloud_error("looking up the recovered VM", e))
}
