//! The replicas on their way between the appliance and the target VM — detached from
//! the appliance, attached at their planned device ids, detached from the target VM
//! again, reverted to the run's snapshots, put back on the appliance and found there —
//! and, in clone mode, the clones that stand in for them on the test VM.
//!
//! Where a replica is attached is recorded by the volume daemon, which saw CloudStack's
//! answer (see [`volumed::Journal::record_device`]), as part of the attach, detach or
//! wait for its device; a step never writes it itself. So a step asks the daemon for
//! every disk, also one an earlier attempt already moved: under the same idempotency
//! key the daemon answers with that operation — having recorded where the volume went
//! — and settles it first (looking at CloudStack) if a process that died left it
//! unfinished, without sending anything to CloudStack twice.

use async_trait::async_trait;
use engine::{Output, StepError, TypedStep};
use ids::{SnapshotId, VolumeId};
use serde::{Deserialize, Serialize};

use crate::ensure::{
    Reverted, all_to_the_end, ensure_on_appliance, ensure_seen_on_appliance, ensure_stopped, event,
    find_vm, put_back_detached_replicas, replicas_as_they_are, revert_detached_replicas,
};
use crate::env::{Cx, Env, call, having_read, leave_appliance, volume_error};
use crate::jobs::Queue::{Appliance, Own, Target};
use crate::jobs::Times::PerDisk;
use crate::jobs::{Job, WorkflowStep, job};
use crate::run::{Mode, appliance_vm_id, input, protected_vm, run_mode};
use crate::steps::clones::{OrSkipped, clones, is_clone};
use crate::steps::vm::{TargetVm, target_vm_id};

/// A clone-mode run executed with the replica-mode saga must not move a replica.
fn refuse_in_clone_mode(cx: &Cx<'_>, step: &str) -> Result<(), StepError> {
    if run_mode(cx)? == Mode::Clone {
        return Err(StepError::Definitive(format!(
            "run {} is a clone-mode test failover, which never moves a replica, but step {step} \
             belongs to replica mode: execute the run with test_failover::saga_for(Mode::Clone)",
            cx.run.id
        )));
    }
    Ok(())
}

/// Detaches the replicas from the appliance (replica mode).
pub(crate) struct DetachReplicas;

/// How many replicas left the appliance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DetachedReplicas {
    pub detached: usize,
}

pub(crate) const DETACH_REPLICAS: Output<DetachedReplicas> = Output::new("detach-replicas");

#[async_trait]
impl TypedStep<Env> for DetachReplicas {
    type Output = DetachedReplicas;

    fn output(&self) -> Output<DetachedReplicas> {
        DETACH_REPLICAS
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        refuse_in_clone_mode(cx, self.output().name())?;
        let input = input(cx)?;
        let vm = protected_vm(cx).await?;
        let appliance = appliance_vm_id(cx, &vm).await?;
        // One read of every replica, for the daemon (see `having_read`).
        let seen = &replicas_as_they_are(cx.ctx, &input.plan).await?;
        all_to_the_end(input.plan.disks().iter().map(|d| {
            let appliance = appliance.clone();
            async move {
                let key = having_read(
                    call(cx, "detach-replicas", &d.volume_id),
                    seen.get(&d.volume_id),
                );
                leave_appliance(cx, &key, &d.volume_id, &appliance).await
            }
        }))
        .await?;
        Ok(DetachedReplicas {
            detached: input.plan.disks().len(),
        })
    }

    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        let input = input(cx)?;
        let vm = protected_vm(cx).await?;
        let appliance = appliance_vm_id(cx, &vm).await?;
        for d in input.plan.disks() {
            ensure_on_appliance(cx, "undo-detach-replicas", &d.volume_id, &appliance).await?;
        }
        Ok(())
    }
}

impl WorkflowStep for DetachReplicas {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("detachVolume", PerDisk, Appliance)]
    }
}

/// Attaches to the target VM, boot at 0 (as ROOT) and data at the planned ids, the
/// replicas — or, in clone mode, the clones that stand in for them.
pub(crate) struct Attach(pub(crate) Mode);

/// How many volumes went onto the target VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Attached {
    pub attached: usize,
}

pub(crate) const ATTACH_REPLICAS: Output<Attached> = Output::new("attach-replicas");
pub(crate) const ATTACH_CLONES: Output<Attached> = Output::new("attach-clones");

impl Attach {
    /// What this step attaches, in words.
    fn kind(&self) -> &'static str {
        match self.0 {
            Mode::Replica => "replica",
            Mode::Clone => "clone",
        }
    }
}

#[async_trait]
impl TypedStep<Env> for Attach {
    type Output = Attached;

    fn output(&self) -> Output<Attached> {
        match self.0 {
            Mode::Replica => ATTACH_REPLICAS,
            Mode::Clone => ATTACH_CLONES,
        }
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let step = self.output().name();
        let clones = match self.0 {
            Mode::Replica => {
                refuse_in_clone_mode(cx, step)?;
                None
            }
            Mode::Clone => Some(clones(cx)?),
        };
        let env = cx.ctx;
        let input = input(cx)?;
        let target = target_vm_id(cx)?;
        // CloudStack runs one VM's jobs one at a time: attaching in plan order costs
        // nothing, and keeps the guest's probe order that of the plan.
        for d in input.plan.disks() {
            let (volume_id, what) = match &clones {
                None => (&d.volume_id, format!("replica {}", d.volume_id)),
                Some(clones) => {
                    let clone_id = clones.get(&d.volume_id).ok_or_else(|| {
                        StepError::Definitive(format!(
                            "no clone was made of replica {}",
                            d.volume_id
                        ))
                    })?;
                    (
                        clone_id,
                        format!("clone {clone_id} of replica {}", d.volume_id),
                    )
                }
            };
            // Asked also when an earlier attempt attached it (see the module doc).
            let key = call(cx, step, volume_id);
            if d.is_boot {
                env.volumes.attach_root(&key, volume_id, &target).await
            } else {
                env.volumes
                    .attach(&key, volume_id, &target, Some(d.device_id))
                    .await
            }
            .map_err(|e| volume_error(&format!("attaching {what} at device {}", d.device_id), e))?;
        }
        Ok(Attached {
            attached: input.plan.disks().len(),
        })
    }

    /// Detaches from the target VM (stopped first) what this step attaches. Replicas
    /// are then reverted, while detached: the target VM may have run (and written to
    /// them) before the run failed, and their content goes back before they return to
    /// the appliance. Clones go with create-clones' undo; the replicas never moved.
    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        let env = cx.ctx;
        let step = format!("undo-{}", self.output().name());
        let input = input(cx)?;
        // The target VM gone (expunged behind ferry's back) let go of the data replicas
        // itself; they are still reverted below, and the boot replica went with it (it
        // is marked diverged when it is found gone).
        if let Some(target) = find_vm(env, &input.target_name).await? {
            ensure_stopped(cx, &target).await?;
            for v in env
                .volumes
                .list_vm_volumes(&target.id)
                .await
                .map_err(|e| volume_error("listing the target VM's volumes", e))?
            {
                let ours = match self.0 {
                    Mode::Replica => input.plan.by_volume(&v.id).is_some(),
                    Mode::Clone => is_clone(env, &input, &v.id, &v.name).await?,
                };
                if ours {
                    let key = call(cx, &step, format!("{}/{}", v.id, target.id))
                        .seeing(&v.id, Some(&target.id));
                    env.volumes.detach(&key, &v.id).await.map_err(|e| {
                        volume_error(
                            &format!("detaching {} {} from the target VM", self.kind(), v.id),
                            e,
                        )
                    })?;
                }
            }
        }
        if self.0 == Mode::Clone {
            return Ok(());
        }
        // A replica whose snapshot is gone is marked diverged (see `crate::drift`): the
        // unwind goes on, and puts it back on the appliance.
        revert_detached_replicas(cx, &step, &input).await?;
        Ok(())
    }
}

impl WorkflowStep for Attach {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("attachVolume", PerDisk, Target)]
    }
}

/// Detaches from the test VM (cleanup) or the live failover's VM (rollback) the
/// replicas on it — and, after a clone-mode test, the clones.
pub(crate) struct DetachFrom(pub(crate) TargetVm);

/// What was detached from the VM, and what was found there that no plan put there.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DetachedFrom {
    pub detached: Vec<VolumeId>,
    pub unexpected: Vec<Unexpected>,
}

/// A volume found on the VM that is not part of the plan (left in place).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Unexpected {
    pub volume_id: VolumeId,
    pub device_id: Option<i64>,
}

const DETACH_FROM_TEST_VM: Output<DetachedFrom> = Output::new("detach-from-test-vm");
const DETACH_FROM_VM: Output<DetachedFrom> = Output::new("detach-from-vm");

#[async_trait]
impl TypedStep<Env> for DetachFrom {
    type Output = DetachedFrom;

    fn output(&self) -> Output<DetachedFrom> {
        match self.0 {
            TargetVm::Test => DETACH_FROM_TEST_VM,
            TargetVm::Live => DETACH_FROM_VM,
        }
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let step = self.output().name();
        let input = input(cx)?;
        let Some(vm) = self.0.find(cx).await? else {
            return Ok(DetachedFrom::default());
        };
        // How the VM is named in what this step says, and what it detaches.
        let (the_vm, what) = match self.0 {
            TargetVm::Test => ("the test VM", "volume"),
            TargetVm::Live => ("the VM", "replica"),
        };
        if self.0 == TargetVm::Live {
            // Detaching the boot disk needs the VM stopped; a re-run after someone
            // started it again stops it first. (Cleanup stopped the test VM, forcibly,
            // in its step before.)
            ensure_stopped(cx, &vm).await?;
        }
        let mode = run_mode(cx)?;
        let mut detached = Vec::new();
        let mut unexpected = Vec::new();
        for v in env
            .volumes
            .list_vm_volumes(&vm.id)
            .await
            .map_err(|e| volume_error(&format!("listing {the_vm}'s volumes"), e))?
        {
            // A replica is detached in either mode (in clone mode it should not be
            // there, but it cannot stay: reattach-replicas puts it back). After a live
            // failover (always replica mode) only the replicas are ferry's.
            let ours = input.plan.by_volume(&v.id).is_some()
                || (mode == Mode::Clone && is_clone(env, &input, &v.id, &v.name).await?);
            if !ours {
                // Not ferry's to move or delete (a disk added after the cut-over, say):
                // report it and leave it on the VM, whose destruction then detaches it
                // (and is refused only if it is a replica).
                let on = match self.0 {
                    TargetVm::Test => format!("the test VM {}", vm.name),
                    TargetVm::Live => format!("VM {}", vm.name),
                };
                let message = format!(
                    "unexpected volume {} ({}, {} bytes) at device {:?} on {on}: not part of the plan; left in place",
                    v.id, v.name, v.size_bytes, v.device_id
                );
                event(cx, "warn", step, &message).await;
                unexpected.push(Unexpected {
                    volume_id: v.id,
                    device_id: v.device_id,
                });
                continue;
            }
            let key = call(cx, step, format!("{}/{}", v.id, vm.id)).seeing(&v.id, Some(&vm.id));
            env.volumes.detach(&key, &v.id).await.map_err(|e| {
                volume_error(&format!("detaching {what} {} from {the_vm}", v.id), e)
            })?;
            detached.push(v.id);
        }
        Ok(DetachedFrom {
            detached,
            unexpected,
        })
    }

    /// The workflow failed after this step (or in it): a replica it left attached to
    /// nothing goes back on the VM (stopped), as the run found it, for the next cleanup
    /// or rollback to detach (and after a test, revert) and re-attach. A replica
    /// already back on the appliance stays: after a test it was reverted before it was
    /// re-attached.
    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        let input = input(cx)?;
        let vm = self.0.find(cx).await?;
        put_back_detached_replicas(cx, &input.plan, vm.as_ref()).await?;
        Ok(())
    }
}

impl WorkflowStep for DetachFrom {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("detachVolume", PerDisk, Target)]
    }
}

/// Reverts every replica to its snapshot (cleanup after a replica-mode test).
pub(crate) struct RevertReplicas;

/// The replicas reverted, each with its snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevertedReplicas {
    pub reverted: Vec<RevertedReplica>,
    /// Detached replicas whose snapshot was gone: marked diverged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_reverted: Vec<VolumeId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevertedReplica {
    pub volume_id: VolumeId,
    pub snapshot_id: SnapshotId,
}

const REVERT_REPLICAS: Output<OrSkipped<RevertedReplicas>> = Output::new("revert-replicas");

#[async_trait]
impl TypedStep<Env> for RevertReplicas {
    type Output = OrSkipped<RevertedReplicas>;

    fn output(&self) -> Output<OrSkipped<RevertedReplicas>> {
        REVERT_REPLICAS
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        if run_mode(cx)? == Mode::Clone {
            // The replicas never left the appliance and hold replication's writes
            // since the snapshots: reverting them would throw those away.
            return Ok(OrSkipped::Skipped {
                skipped: "clone mode: the replicas were never on the test VM".into(),
            });
        }
        let input = input(cx)?;
        // A replica already back on the appliance was reverted by an earlier cleanup
        // (or unwind) and is skipped, so a cleanup is run again safely at any point. One
        // whose snapshot was deleted by hand keeps the drill's writes: it is marked
        // diverged and named here, and the cleanup goes on (see `crate::drift`).
        let Reverted { reverted, missing } =
            revert_detached_replicas(cx, "revert-replicas", &input).await?;
        Ok(OrSkipped::Done(RevertedReplicas {
            not_reverted: missing,
            reverted: reverted
                .into_iter()
                .map(|(volume_id, snapshot_id)| RevertedReplica {
                    volume_id,
                    snapshot_id,
                })
                .collect(),
        }))
    }
}

impl WorkflowStep for RevertReplicas {
    /// Each detached replica's revert runs on its own queue; in clone mode there is
    /// nothing to revert.
    fn jobs(&self, mode: Mode) -> Vec<Job> {
        match mode {
            Mode::Replica => vec![job("revertSnapshot", PerDisk, Own)],
            Mode::Clone => Vec::new(),
        }
    }
}

/// Puts the replicas back on the appliance and finds their device paths.
pub(crate) struct ReattachReplicas;

/// Where each replica is on the appliance now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reattached {
    pub replicas: Vec<ReplicaPlace>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplicaPlace {
    pub volume_id: VolumeId,
    pub device_key: i64,
    pub appliance_device_id: Option<i64>,
    pub device_path: Option<String>,
}

pub(crate) const REATTACH_REPLICAS: Output<Reattached> = Output::new("reattach-replicas");

#[async_trait]
impl TypedStep<Env> for ReattachReplicas {
    type Output = Reattached;

    fn output(&self) -> Output<Reattached> {
        REATTACH_REPLICAS
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let input = input(cx)?;
        let vm = protected_vm(cx).await?;
        let appliance = appliance_vm_id(cx, &vm).await?;
        // One look at every replica; each is then attached in turn (the appliance's
        // queue runs one attach at a time anyway).
        let mut seen = replicas_as_they_are(cx.ctx, &input.plan).await?;
        for d in input.plan.disks() {
            let volume = seen.remove(&d.volume_id);
            ensure_seen_on_appliance(cx, "reattach-replicas", &d.volume_id, volume, &appliance)
                .await?;
        }
        let vm = protected_vm(cx).await?;
        Ok(Reattached {
            replicas: vm
                .disks
                .iter()
                .map(|d| ReplicaPlace {
                    volume_id: d.disk.replica_volume_id.clone(),
                    device_key: d.disk.device_key,
                    appliance_device_id: d.attachment.device_id,
                    device_path: d.attachment.device_path.clone(),
                })
                .collect(),
        })
    }
}

impl WorkflowStep for ReattachReplicas {
    /// In clone mode the replicas never left the appliance: nothing to attach.
    fn jobs(&self, mode: Mode) -> Vec<Job> {
        match mode {
            Mode::Replica => vec![job("attachVolume", PerDisk, Appliance)],
            Mode::Clone => Vec::new(),
        }
    }

    fn waits_for_device(&self, mode: Mode) -> bool {
        mode == Mode::Replica
    }
}
