//! Cleanup after a test failover (DESIGN §5): a *forward* workflow. Each step looks at
//! what CloudStack has now and does only what is left, so a cleanup that failed or was
//! interrupted is simply run again. Nothing is undone: a failed cleanup ends with its
//! error and the world as far as it got, for the next cleanup to finish.
//!
//! stop the test VM → detach its volumes → revert every replica to its snapshot →
//! re-attach the replicas to the appliance and find their device paths → delete the
//! snapshots → destroy the test VM → `ready_for_failover`. What it finds that it did
//! not expect (a volume on the test VM that no plan put there, a missing snapshot) is
//! reported in the step's output and the run's log, never hidden.
//!
//! After a clone-mode test (the cleanup run carries the test run's mode) the replicas
//! never left the appliance and kept receiving replication, so they are *not*
//! reverted: the test VM's volumes — the clones — are detached and deleted instead
//! (only volumes ferry created; the volume daemon refuses anything else). One saga
//! serves both modes: a step that has nothing to do in a mode says so in its output.
//! `reattach-replicas` runs in both: in clone mode it finds the replicas where they
//! are and re-correlates their device paths, and puts back one that is not.

use async_trait::async_trait;
use engine::{Output, Saga, StepContext, StepError, TypedStep};
use serde::{Deserialize, Serialize};
use store::{VmState, Workflow};

use crate::common::{
    Reverted, RunInput, appliance_vm_id, destroy_vm_without_replicas, ensure_on_appliance,
    ensure_stopped, find_vm, input, protected_vm, put_back_detached_replicas,
    revert_detached_replicas,
};
use crate::env::{Env, call, store_error, volume_error};
use crate::test_failover::clone::{Deleted, delete_clones, is_clone};
use crate::test_failover::{Mode, RECORD, Recorded, StartError, delete_run_snapshots, run_mode};

/// Creates a cleanup run for `vm_name`, after its last test failover.
pub async fn start(env: &Env, vm_name: &str) -> Result<store::Run, StartError> {
    let vm = env
        .store
        .vm(vm_name)
        .await?
        .ok_or_else(|| StartError::NoVm(vm_name.to_string()))?;
    // A cleanup undoes a test failover. On a live-failed-over (or committed) VM it would
    // stop the production VM and take its disks away: never.
    if matches!(vm.state, VmState::FailedOver | VmState::Committed) {
        return Err(StartError::WrongState {
            name: vm.name.clone(),
            state: vm.state,
            wanted: VmState::TestFailedOver,
            hint: "a cleanup undoes a test failover; a live failover is rolled back or committed",
        });
    }
    // In test_failed_over it finishes the drill; in ready_for_failover it reconciles
    // whatever an abandoned test failover left behind (or finds nothing to do).
    let test_run = env.store.last_run(&vm.id, Workflow::TestFailover).await?;
    let test_input = test_run
        .as_ref()
        .and_then(crate::test_failover::run_input)
        .ok_or_else(|| StartError::NoPriorRun {
            name: vm.name.clone(),
            workflow: Workflow::TestFailover,
        })?;
    // The cleanup follows the test's mode (its own `mode` column says which).
    let mode = match &test_run {
        Some(r) => Mode::of_run(r).map_err(|e| StartError::Store(store::StoreError::Corrupt(e)))?,
        None => Mode::Replica,
    };
    let input = RunInput {
        target_name: test_input.target_name,
        plan: test_input.plan,
        test_run_id: test_run.map(|r| r.id),
    };
    crate::common::create_run(env, &vm, Workflow::Cleanup, Some(mode.as_str()), &input).await
}

/// The cleanup saga. Only `detach-from-test-vm` has an undo; the others leave the default,
/// which does nothing: a forward workflow, the next cleanup finishes what this one left.
pub fn saga() -> Saga<Env> {
    Saga::new(vec![
        Box::new(StopTestVm),
        Box::new(DetachFromTestVm),
        Box::new(RevertReplicas),
        Box::new(DeleteClones),
        Box::new(ReattachReplicas),
        Box::new(DeleteSnapshots),
        Box::new(DestroyTestVm),
        Box::new(Record),
    ])
}

struct StopTestVm;
struct DetachFromTestVm;
struct RevertReplicas;
struct DeleteClones;
// Shared with rollback and commit, which put the replicas back and delete the
// snapshots of a live failover the same way.
pub(crate) struct ReattachReplicas;
pub(crate) struct DeleteSnapshots;
struct DestroyTestVm;
struct Record;

/// Whether the VM was found, and stopped (forcibly or not, where the step says).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stopped {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    pub found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<bool>,
}

const STOP_TEST_VM: Output<Stopped> = Output::new("stop-test-vm");

/// What was detached from the VM, and what was found there that no plan put there.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DetachedFrom {
    pub detached: Vec<String>,
    pub unexpected: Vec<Unexpected>,
}

/// A volume found on the VM that is not part of the plan (left in place).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Unexpected {
    pub volume_id: String,
    pub device_id: Option<i64>,
}

const DETACH_FROM_TEST_VM: Output<DetachedFrom> = Output::new("detach-from-test-vm");

/// A step's output, or why it had nothing to do in the run's mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum OrSkipped<T> {
    Skipped { skipped: String },
    Done(T),
}

/// The replicas reverted, each with its snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevertedReplicas {
    pub reverted: Vec<RevertedReplica>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevertedReplica {
    pub volume_id: String,
    pub snapshot_id: String,
}

const REVERT_REPLICAS: Output<OrSkipped<RevertedReplicas>> = Output::new("revert-replicas");

/// The clones deleted, and the volumes with a clone's name left alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeletedClones {
    pub deleted: Vec<String>,
    pub unexpected: Vec<String>,
}

const DELETE_CLONES: Output<OrSkipped<DeletedClones>> = Output::new("delete-clones");

/// Where each replica is on the appliance now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reattached {
    pub replicas: Vec<ReplicaPlace>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplicaPlace {
    pub volume_id: String,
    pub device_key: i64,
    pub appliance_device_id: Option<i64>,
    pub device_path: Option<String>,
}

const REATTACH_REPLICAS: Output<Reattached> = Output::new("reattach-replicas");

/// An output that says nothing (`{}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Nothing {}

const DELETE_SNAPSHOTS: Output<Nothing> = Output::new("delete-snapshots");

/// The VM destroyed, if there was one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Destroyed {
    pub destroyed: Option<String>,
}

const DESTROY_TEST_VM: Output<Destroyed> = Output::new("destroy-test-vm");

#[async_trait]
impl TypedStep<Env> for StopTestVm {
    type Output = Stopped;

    fn output(&self) -> Output<Stopped> {
        STOP_TEST_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let input = input(cx)?;
        match find_vm(cx.ctx, &input.target_name).await? {
            Some(vm) => {
                ensure_stopped(cx, &vm).await?;
                Ok(Stopped {
                    vm_id: Some(vm.id),
                    found: true,
                    forced: None,
                })
            }
            None => Ok(Stopped {
                vm_id: None,
                found: false,
                forced: None,
            }),
        }
    }
}

#[async_trait]
impl TypedStep<Env> for DetachFromTestVm {
    type Output = DetachedFrom;

    fn output(&self) -> Output<DetachedFrom> {
        DETACH_FROM_TEST_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let Some(vm) = find_vm(env, &input.target_name).await? else {
            return Ok(DetachedFrom::default());
        };
        let mode = run_mode(cx)?;
        let mut detached = Vec::new();
        let mut unexpected = Vec::new();
        for v in env
            .volumes
            .list_vm_volumes(&vm.id)
            .await
            .map_err(|e| volume_error("listing the test VM's volumes", e))?
        {
            // A replica is detached in either mode (in clone mode it should not be
            // there, but it cannot stay: reattach-replicas puts it back).
            let ours = input.plan.by_volume(&v.id).is_some()
                || (mode == Mode::Clone && is_clone(env, &input, &v.id, &v.name).await?);
            if !ours {
                // Not ferry's to move or delete: report it and leave it on the VM, whose
                // destruction will then be refused only if it is a replica.
                let message = format!(
                    "unexpected volume {} ({}, {} bytes) at device {:?} on the test VM {}: not part of the plan; left in place",
                    v.id, v.name, v.size_bytes, v.device_id, vm.name
                );
                let _ = env
                    .store
                    .add_event(
                        &cx.run.id,
                        "warn",
                        Some("detach-from-test-vm"),
                        &message,
                        None,
                    )
                    .await;
                unexpected.push(Unexpected {
                    volume_id: v.id,
                    device_id: v.device_id,
                });
                continue;
            }
            env.volumes
                .detach(
                    &call(cx, "detach-from-test-vm", &format!("{}/{}", v.id, vm.id)),
                    &v.id,
                )
                .await
                .map_err(|e| {
                    volume_error(&format!("detaching volume {} from the test VM", v.id), e)
                })?;
            detached.push(v.id);
        }
        Ok(DetachedFrom {
            detached,
            unexpected,
        })
    }

    /// The cleanup failed after this step (or in it): a replica it left attached to
    /// nothing goes back on the test VM, as the run found it, for the next cleanup to
    /// detach, revert and re-attach. A replica already back on the appliance stays:
    /// it was reverted before it was re-attached.
    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        let input = input(cx)?;
        let vm = find_vm(cx.ctx, &input.target_name).await?;
        put_back_detached_replicas(cx, &input.plan, vm.as_ref()).await?;
        Ok(())
    }
}

#[async_trait]
impl TypedStep<Env> for RevertReplicas {
    type Output = OrSkipped<RevertedReplicas>;

    fn output(&self) -> Output<OrSkipped<RevertedReplicas>> {
        REVERT_REPLICAS
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        if run_mode(cx)? == Mode::Clone {
            // The replicas never left the appliance and hold replication's writes
            // since the snapshots: reverting them would throw those away.
            return Ok(OrSkipped::Skipped {
                skipped: "clone mode: the replicas were never on the test VM".into(),
            });
        }
        let input = input(cx)?;
        // A replica already back on the appliance was reverted by an earlier cleanup
        // (or unwind) and is skipped, so a cleanup is run again safely at any point.
        let Reverted { reverted, missing } =
            revert_detached_replicas(cx, "revert-replicas", &input).await?;
        if !missing.is_empty() {
            // The drill's writes stay on these replicas; an operator must decide.
            return Err(StepError::Definitive(format!(
                "the snapshots of replicas {} are missing, so they cannot be reverted and still hold the test \
                 VM's writes; resynchronise them from the source before the next failover",
                missing.join(", ")
            )));
        }
        Ok(OrSkipped::Done(RevertedReplicas {
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

#[async_trait]
impl TypedStep<Env> for DeleteClones {
    type Output = OrSkipped<DeletedClones>;

    fn output(&self) -> Output<OrSkipped<DeletedClones>> {
        DELETE_CLONES
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        if run_mode(cx)? != Mode::Clone {
            return Ok(OrSkipped::Skipped {
                skipped: "replica mode: there are no clones".into(),
            });
        }
        let input = input(cx)?;
        // Found by name, so a clone an earlier cleanup did not get to is found too.
        let Deleted { deleted, foreign } = delete_clones(cx, "delete-clones", &input).await?;
        Ok(OrSkipped::Done(DeletedClones {
            deleted,
            unexpected: foreign,
        }))
    }
}

#[async_trait]
impl TypedStep<Env> for ReattachReplicas {
    type Output = Reattached;

    fn output(&self) -> Output<Reattached> {
        REATTACH_REPLICAS
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let input = input(cx)?;
        let vm = protected_vm(cx).await?;
        let appliance = appliance_vm_id(cx, &vm).await?;
        for d in input.plan.disks() {
            ensure_on_appliance(cx, "reattach-replicas", &d.volume_id, &appliance).await?;
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

#[async_trait]
impl TypedStep<Env> for DeleteSnapshots {
    type Output = Nothing;

    fn output(&self) -> Output<Nothing> {
        DELETE_SNAPSHOTS
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        delete_run_snapshots(cx, "delete-snapshots").await?;
        Ok(Nothing {})
    }
}

#[async_trait]
impl TypedStep<Env> for DestroyTestVm {
    type Output = Destroyed;

    fn output(&self) -> Output<Destroyed> {
        DESTROY_TEST_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let input = input(cx)?;
        match find_vm(cx.ctx, &input.target_name).await? {
            Some(vm) => {
                destroy_vm_without_replicas(cx, &vm).await?;
                Ok(Destroyed {
                    destroyed: Some(vm.id),
                })
            }
            None => Ok(Destroyed { destroyed: None }),
        }
    }
}

#[async_trait]
impl TypedStep<Env> for Record {
    type Output = Recorded;

    fn output(&self) -> Output<Recorded> {
        RECORD
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::ReadyForFailover, None)
            .await
            .map_err(|e| store_error("recording ready_for_failover", e))?;
        Ok(Recorded {
            state: VmState::ReadyForFailover.as_str().into(),
            target_vm_id: None,
            after_rollback_failed: None,
        })
    }
}
