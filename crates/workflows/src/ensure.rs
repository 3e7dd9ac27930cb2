//! Ensures that several steps share: each looks at CloudStack first and acts only if
//! the world is not already as wanted.

use engine::StepError;
use ids::{SnapshotId, VmId, VolumeId};
use volumed::Presence;

use crate::drift::{GONE, detached_for_revert, diverged, is_run_target, take_from_foreign};
pub(crate) use crate::env::event;
use crate::env::{
    Cx, Env, InFlight, call, cloud_error, job_in_flight, pending_or_done_job, record_job,
    store_error, volume_error,
};
use crate::plan::{DevicePlan, PlannedDisk};
use crate::run::{RunInput, appliance_vm_id, input, protected_vm, snapshot_name, snapshot_prefix};

/// Runs every one of `operations` to its end and returns their outputs, or the first
/// error. Unlike `try_join_all`, a failure does not stop waiting for the others: the
/// volume daemon carries an operation on whether or not its caller waits, so a step
/// that returned at the first failure would have its undo race operations it started
/// — deleting a snapshot CloudStack is still creating (refused), or missing one that
/// appears after the undo looked, or re-attaching a replica whose detach is still
/// queued.
pub(crate) async fn all_to_the_end<T>(
    operations: impl IntoIterator<Item = impl std::future::Future<Output = Result<T, StepError>>>,
) -> Result<Vec<T>, StepError> {
    futures::future::join_all(operations)
        .await
        .into_iter()
        .collect()
}

/// The target VM with exactly this name, if CloudStack has it (its `name` filter
/// matches substrings).
pub(crate) async fn find_vm(
    env: &Env,
    name: &str,
) -> Result<Option<cloudstack::VirtualMachine>, StepError> {
    env.cloud
        .live_virtual_machine_named(name)
        .await
        .map_err(|e| cloud_error("listing VMs", e))
}

/// The run's target VM (named as the run's input says), if CloudStack has it.
pub(crate) async fn find_target(
    cx: &Cx<'_>,
) -> Result<Option<cloudstack::VirtualMachine>, StepError> {
    find_vm(cx.ctx, &input(cx)?.target_name).await
}

/// The VM a live failover created (`<name>`), if it still exists. A VM of that name
/// that is not the one recorded as the target is refused, never acted on: it could be
/// anything, and rollback destroys what this returns.
pub(crate) async fn live_vm(cx: &Cx<'_>) -> Result<Option<cloudstack::VirtualMachine>, StepError> {
    let input = input(cx)?;
    let vm = protected_vm(cx).await?;
    let found = find_vm(cx.ctx, &input.target_name).await?;
    if let (Some(found), Some(recorded)) = (&found, &vm.target_vm_id)
        && &found.id != recorded
    {
        return Err(StepError::Definitive(format!(
            "the VM named {} is {}, not {} which the live failover created; \
             ferry will not touch it — rename or remove it, or fix the record",
            found.name, found.id, recorded
        )));
    }
    Ok(found)
}

/// What CloudStack has attached to the target VM: (volume id, device id, size), the
/// form [`DevicePlan::verify`] checks.
pub(crate) async fn observed_disks(
    env: &Env,
    target: &VmId,
) -> Result<Vec<(VolumeId, Option<i64>, i64)>, StepError> {
    let volumes = env
        .volumes
        .list_vm_volumes(target)
        .await
        .map_err(|e| volume_error("listing the target VM's volumes", e))?;
    Ok(as_observed(&volumes))
}

/// Volumes as [`DevicePlan::verify`] reads them: (volume id, device id, size).
pub(crate) fn as_observed(volumes: &[volumed::VolumeInfo]) -> Vec<(VolumeId, Option<i64>, i64)> {
    volumes
        .iter()
        .map(|v| (v.id.clone(), v.device_id, v.size_bytes))
        .collect()
}

/// Ensures the VM is stopped (forced: a test VM's guest state is thrown away).
pub(crate) async fn ensure_stopped(
    cx: &Cx<'_>,
    vm: &cloudstack::VirtualMachine,
) -> Result<(), StepError> {
    let env = cx.ctx;
    if vm.state == "Stopped" {
        return Ok(());
    }
    let job = match job_in_flight(cx, "stopVirtualMachine", Some(&vm.id)).await? {
        InFlight::Pending(job) => job,
        // A stop this step sent may have ended since `vm` was read: look again, after
        // the job, before sending another.
        InFlight::Ended if !needs(env, &vm.id, "Stopped").await? => return Ok(()),
        InFlight::Ended | InFlight::NoneSent => {
            let job = env
                .cloud
                .stop_virtual_machine(&vm.id, true)
                .await
                .map_err(|e| cloud_error("stopping the target VM", e))?;
            record_job(cx, &job, Some(&vm.id)).await;
            job
        }
    };
    env.cloud
        .wait(&job)
        .await
        .map_err(|e| cloud_error("stopping the target VM", e))?;
    Ok(())
}

/// Whether VM `vm_id` is, as CloudStack has it now, not yet in `state` (a VM that is
/// gone is in no state to change).
pub(crate) async fn needs(env: &Env, vm_id: &VmId, state: &str) -> Result<bool, StepError> {
    Ok(env
        .cloud
        .get_virtual_machine(vm_id)
        .await
        .map_err(|e| cloud_error("looking up the target VM", e))?
        .is_some_and(|vm| vm.state != state))
}

/// Ensures a replica volume is attached to its appliance and seen there: detached from
/// wherever else it is (the run's target VM, stopped first if it holds it as ROOT),
/// attached to the appliance, its device path found. The volume daemon records where
/// it is (the attach, then the device path it found).
///
/// Drift does not stop it (see [`crate::drift`]): a replica gone from CloudStack, or
/// held as ROOT by a running VM ferry does not own, is marked diverged and left; one
/// taken from such a VM is marked diverged too (that VM may have written to it); one
/// whose disk on the appliance cannot be told apart from another's (their serials
/// collide) is put back with no device path, and said so. Returns whether the replica
/// is on the appliance now.
pub(crate) async fn ensure_on_appliance(
    cx: &Cx<'_>,
    step: &str,
    volume_id: &VolumeId,
    appliance_vm_id: &VmId,
) -> Result<bool, StepError> {
    let volume = cx
        .ctx
        .cloud
        .get_volume(volume_id)
        .await
        .map_err(|e| cloud_error("looking up a replica volume", e))?;
    ensure_seen_on_appliance(cx, step, volume_id, volume, appliance_vm_id).await
}

/// [`ensure_on_appliance`] for a replica the step has just looked at (`volume`, `None`
/// when CloudStack no longer has it): a step that handles every replica reads them
/// all in one call.
pub(crate) async fn ensure_seen_on_appliance(
    cx: &Cx<'_>,
    step: &str,
    volume_id: &VolumeId,
    volume: Option<cloudstack::Volume>,
    appliance_vm_id: &VmId,
) -> Result<bool, StepError> {
    let env = cx.ctx;
    let Some(volume) = volume else {
        diverged(cx, step, volume_id, GONE).await?;
        return Ok(false);
    };
    match volume.virtualmachineid.as_ref() {
        Some(vm) if vm == appliance_vm_id => {}
        other => {
            if let Some(holder) = other {
                let vm = env
                    .cloud
                    .get_virtual_machine(holder)
                    .await
                    .map_err(|e| cloud_error("looking up the VM holding a replica", e))?;
                match vm {
                    Some(vm) if !is_run_target(&input(cx)?, &vm) => {
                        if !take_from_foreign(cx, step, volume_id, &volume, &vm).await? {
                            return Ok(false);
                        }
                        let reason = format!(
                            "it was attached to VM {} ({}) behind ferry's back, which may have \
                             written to it",
                            vm.name, vm.id
                        );
                        diverged(cx, step, volume_id, &reason).await?;
                    }
                    holder_vm => {
                        if volume.deviceid == Some(0)
                            && let Some(vm) = holder_vm
                        {
                            ensure_stopped(cx, &vm).await?;
                        }
                        // Just read: the volume is on `holder`.
                        let key = call(cx, step, format!("detach/{volume_id}/{holder}"))
                            .seeing(volume_id, Some(holder));
                        env.volumes
                            .detach(&key, volume_id)
                            .await
                            .map_err(|e| volume_error("detaching a replica", e))?;
                    }
                }
            }
            env.volumes
                .attach(
                    &call(cx, step, format!("attach/{volume_id}/{appliance_vm_id}")),
                    volume_id,
                    appliance_vm_id,
                    None,
                )
                .await
                .map_err(|e| volume_error("attaching a replica to the appliance", e))?;
        }
    }
    match env
        .volumes
        .wait_device(
            appliance_vm_id,
            volume_id,
            Presence::Appears,
            env.device_timeout,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(volumed::Error::DeviceConflict { detail }) => {
            let message = format!(
                "replica {volume_id} is back on the appliance, but its disk there cannot be \
                 told apart from another with the same serial ({detail}): its device path is \
                 not recorded, and a failover of the VM is refused until only one disk on the \
                 appliance has that serial — detach the other"
            );
            event(cx, "warn", step, &message).await;
            Ok(true)
        }
        Err(e) => Err(volume_error(
            "waiting for the replica's disk in the appliance",
            e,
        )),
    }
}

/// Puts every replica of `plan` that is attached to nothing back on `vm` — the VM the
/// run took it from — at its planned device id (the boot disk as ROOT); the volume
/// daemon records where it is. This is the undo of a forward workflow's detach: a cleanup or rollback
/// that fails after detaching must not end with a replica attached to nothing (DESIGN
/// §5); the next run of the workflow detaches it again and finishes. A replica on any
/// VM is left where it is. `vm` is `None` when the VM is gone: a replica attached to
/// nothing then cannot be put back, and the undo fails (the run is stuck, for an
/// operator) rather than guess where it belongs.
pub(crate) async fn put_back_detached_replicas(
    cx: &Cx<'_>,
    plan: &DevicePlan,
    vm: Option<&cloudstack::VirtualMachine>,
) -> Result<Vec<VolumeId>, StepError> {
    let env = cx.ctx;
    let seen = replicas_as_they_are(env, plan).await?;
    let mut adrift = Vec::new();
    for d in plan.disks() {
        let Some(volume) = seen.get(&d.volume_id) else {
            diverged(cx, cx.step, &d.volume_id, GONE).await?;
            continue;
        };
        if volume.virtualmachineid.is_none() {
            adrift.push(d);
        }
    }
    if adrift.is_empty() {
        return Ok(Vec::new());
    }
    let Some(vm) = vm else {
        return Err(StepError::Definitive(format!(
            "replica(s) {} are attached to nothing and the VM they came from is gone: \
             attach each to the appliance (after reverting it to the run's snapshot if \
             it was a test VM's), then abandon the run",
            adrift
                .iter()
                .map(|d| d.volume_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    // The boot disk goes back as ROOT, which CloudStack allows on a stopped VM only.
    ensure_stopped(cx, vm).await?;
    let mut put_back = Vec::new();
    for d in adrift {
        let key = call(
            cx,
            &format!("undo-{}", cx.step),
            format!("{}/{}", d.volume_id, vm.id),
        );
        if d.is_boot {
            env.volumes.attach_root(&key, &d.volume_id, &vm.id).await
        } else {
            env.volumes
                .attach(&key, &d.volume_id, &vm.id, Some(d.device_id))
                .await
        }
        .map_err(|e| {
            volume_error(
                &format!("putting replica {} back on VM {}", d.volume_id, vm.id),
                e,
            )
        })?;
        put_back.push(d.volume_id.clone());
    }
    Ok(put_back)
}

/// Refuses to destroy a VM that still holds a replica volume: expunging a VM deletes
/// whatever volume is its ROOT.
pub(crate) async fn destroy_vm_without_replicas(
    cx: &Cx<'_>,
    vm: &cloudstack::VirtualMachine,
) -> Result<(), StepError> {
    let env = cx.ctx;
    let on_vm = env
        .volumes
        .list_vm_volumes(&vm.id)
        .await
        .map_err(|e| volume_error("listing the target VM's volumes", e))?;
    let mut expunged_with_it = Vec::new();
    for v in &on_vm {
        if env
            .store
            .is_replica(&v.id)
            .await
            .map_err(|e| store_error("checking for replica volumes", e))?
        {
            return Err(StepError::Definitive(format!(
                "refusing to destroy VM {} ({}): replica volume {} is still attached at device {:?} and would be deleted with it",
                vm.name, vm.id, v.id, v.device_id
            )));
        }
        if v.device_id == Some(0) {
            expunged_with_it.push(v.id.clone());
        }
    }
    let job = match pending_or_done_job(cx, "destroyVirtualMachine", Some(&vm.id)).await? {
        Some(job) => job,
        None => {
            let job = env
                .cloud
                .destroy_virtual_machine(&vm.id, true)
                .await
                .map_err(|e| cloud_error("destroying the target VM", e))?;
            record_job(cx, &job, Some(&vm.id)).await;
            job
        }
    };
    env.cloud
        .wait(&job)
        .await
        .map_err(|e| cloud_error("destroying the target VM", e))?;
    // Expunging deleted the VM's ROOT (a placeholder ferry recorded as its own): the
    // store must not keep believing it exists.
    for id in expunged_with_it {
        env.store
            .mark_created_volume_deleted(&id)
            .await
            .map_err(|e| store_error("recording the expunged ROOT volume", e))?;
    }
    Ok(())
}

/// Every replica of `plan` as CloudStack has it now, in one call (a replica CloudStack
/// no longer has is missing).
pub(crate) async fn replicas_as_they_are(
    env: &Env,
    plan: &DevicePlan,
) -> Result<std::collections::HashMap<VolumeId, cloudstack::Volume>, StepError> {
    let ids: Vec<VolumeId> = plan.disks().iter().map(|d| d.volume_id.clone()).collect();
    env.cloud
        .get_volumes(&ids)
        .await
        .map_err(|e| cloud_error("looking up the replicas", e))
}

/// The run's snapshots, found by name (`<target>-disk-<key>`) in one call: whatever a
/// step recorded, and whether or not the step that took them finished. See
/// [`RunSnapshots::of`] for one disk's.
pub(crate) async fn run_snapshots(env: &Env, input: &RunInput) -> Result<RunSnapshots, StepError> {
    Ok(RunSnapshots(
        env.cloud
            .list_snapshots_named(&snapshot_prefix(&input.target_name))
            .await
            .map_err(|e| cloud_error("listing snapshots", e))?,
    ))
}

/// Every snapshot whose name contains the run's snapshot prefix.
pub(crate) struct RunSnapshots(Vec<cloudstack::Snapshot>);

impl RunSnapshots {
    /// The run's snapshots of disk `disk`'s replica: named exactly for the disk, of its
    /// replica. There is one, unless a snapshot step was interrupted and CloudStack
    /// made another.
    pub(crate) fn of(&self, input: &RunInput, disk: &PlannedDisk) -> Vec<cloudstack::Snapshot> {
        let name = snapshot_name(&input.target_name, disk.device_key);
        self.0
            .iter()
            .filter(|s| s.name == name && s.volumeid.as_ref() == Some(&disk.volume_id))
            .cloned()
            .collect()
    }
}

/// What [`revert_detached_replicas`] did.
pub(crate) struct Reverted {
    pub reverted: Vec<(VolumeId, SnapshotId)>,
    /// Replicas that are detached (so may hold a test VM's writes) but whose snapshot
    /// is gone: marked diverged, not reverted.
    pub missing: Vec<VolumeId>,
}

/// Reverts, to the run's snapshot, every planned replica that is attached to no VM —
/// the state a replica is in after a target VM let go of it and before it goes back to
/// the appliance. A replica back on the appliance was reverted before ferry put it
/// there (by an earlier cleanup, or by an unwind), and its snapshot may be gone: it is
/// skipped. One that drift moved (to the appliance by hand, or to another VM) is
/// detached first, so it is reverted too ([`detached_for_revert`]). CloudStack reverts
/// only detached volumes or those of stopped VMs, so this is also the one moment a
/// revert can happen without stopping the appliance.
///
/// Drift does not stop it: a replica whose snapshot is gone keeps the drill's writes
/// and is marked diverged, as is one gone from CloudStack (see [`crate::drift`]).
pub(crate) async fn revert_detached_replicas(
    cx: &Cx<'_>,
    step: &str,
    input: &RunInput,
) -> Result<Reverted, StepError> {
    let env = cx.ctx;
    let vm = protected_vm(cx).await?;
    let appliance = appliance_vm_id(cx, &vm).await?;
    let appliance = &appliance;
    let seen = &replicas_as_they_are(env, &input.plan).await?;
    let snapshots = &run_snapshots(env, input).await?;
    // A detached replica's revert runs on its own CloudStack queue: all at once (each to
    // its end), since one after another would add a revert per disk that CloudStack
    // does not impose.
    let each = all_to_the_end(input.plan.disks().iter().map(|d| async move {
        let Some(volume) = seen.get(&d.volume_id).cloned() else {
            diverged(cx, step, &d.volume_id, GONE).await?;
            return Ok(None);
        };
        if !detached_for_revert(cx, step, input, &volume, appliance).await? {
            return Ok(None);
        }
        match snapshots.of(input, d).into_iter().next() {
            Some(s) => {
                // Listed by the replica's id, and detached now.
                let key = call(cx, step, format!("revert/{}", s.id)).seeing(&d.volume_id, None);
                env.volumes.revert(&key, &s.id).await.map_err(|e| {
                    volume_error(&format!("reverting replica {} to {}", d.volume_id, s.id), e)
                })?;
                Ok(Some(Ok((d.volume_id.clone(), s.id))))
            }
            None => {
                let reason = format!(
                    "its snapshot {} was deleted behind ferry's back, so the test VM's writes \
                     could not be reverted and are still on it",
                    snapshot_name(&input.target_name, d.device_key)
                );
                diverged(cx, step, &d.volume_id, &reason).await?;
                Ok(Some(Err(d.volume_id.clone())))
            }
        }
    }))
    .await?;
    let mut out = Reverted {
        reverted: Vec::new(),
        missing: Vec::new(),
    };
    for outcome in each.into_iter().flatten() {
        match outcome {
            Ok(pair) => out.reverted.push(pair),
            Err(volume) => out.missing.push(volume),
        }
    }
    Ok(out)
}
