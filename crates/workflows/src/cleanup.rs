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
use engine::{Saga, Step, StepContext, StepError};
use serde_json::{Value, json};
use store::{VmState, Workflow};

use crate::common::{
    Reverted, RunInput, appliance_vm_id, destroy_vm_without_replicas, ensure_on_appliance,
    ensure_stopped, find_vm, input, protected_vm, put_back_detached_replicas,
    revert_detached_replicas,
};
use crate::env::{Env, call, store_error, volume_error};
use crate::test_failover::clone::{Deleted, delete_clones, is_clone};
use crate::test_failover::{Mode, StartError, delete_run_snapshots, run_mode};

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

#[async_trait]
impl Step<Env> for StopTestVm {
    fn name(&self) -> &str {
        "stop-test-vm"
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        let input = input(cx)?;
        match find_vm(cx.ctx, &input.target_name).await? {
            Some(vm) => {
                ensure_stopped(cx, &vm).await?;
                Ok(json!({ "vm_id": vm.id, "found": true }))
            }
            None => Ok(json!({ "found": false })),
        }
    }
}

#[async_trait]
impl Step<Env> for DetachFromTestVm {
    fn name(&self) -> &str {
        "detach-from-test-vm"
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let Some(vm) = find_vm(env, &input.target_name).await? else {
            return Ok(json!({ "detached": [], "unexpected": [] }));
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
                unexpected.push(json!({ "volume_id": v.id, "device_id": v.device_id }));
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
        Ok(json!({ "detached": detached, "unexpected": unexpected }))
    }

    /// The cleanup failed after this step (or in it): a replica it left attached to
    /// nothing goes back on the test VM, as the run found it, for the next cleanup to
    /// detach, revert and re-attach. A replica already back on the appliance stays:
    /// it was reverted before it was re-attached.
    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<&Value>,
    ) -> Result<(), StepError> {
        let input = input(cx)?;
        let vm = find_vm(cx.ctx, &input.target_name).await?;
        put_back_detached_replicas(cx, &input.plan, vm.as_ref()).await?;
        Ok(())
    }
}

#[async_trait]
impl Step<Env> for RevertReplicas {
    fn name(&self) -> &str {
        "revert-replicas"
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        if run_mode(cx)? == Mode::Clone {
            // The replicas never left the appliance and hold replication's writes
            // since the snapshots: reverting them would throw those away.
            return Ok(json!({ "skipped": "clone mode: the replicas were never on the test VM" }));
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
        let reverted: Vec<Value> = reverted
            .into_iter()
            .map(|(volume_id, snapshot_id)| json!({ "volume_id": volume_id, "snapshot_id": snapshot_id }))
            .collect();
        Ok(json!({ "reverted": reverted }))
    }
}

#[async_trait]
impl Step<Env> for DeleteClones {
    fn name(&self) -> &str {
        "delete-clones"
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        if run_mode(cx)? != Mode::Clone {
            return Ok(json!({ "skipped": "replica mode: there are no clones" }));
        }
        let input = input(cx)?;
        // Found by name, so a clone an earlier cleanup did not get to is found too.
        let Deleted { deleted, foreign } = delete_clones(cx, "delete-clones", &input).await?;
        Ok(json!({ "deleted": deleted, "unexpected": foreign }))
    }
}

#[async_trait]
impl Step<Env> for ReattachReplicas {
    fn name(&self) -> &str {
        "reattach-replicas"
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        let input = input(cx)?;
        let vm = protected_vm(cx).await?;
        let appliance = appliance_vm_id(cx, &vm).await?;
        for d in input.plan.disks() {
            ensure_on_appliance(cx, "reattach-replicas", &d.volume_id, &appliance).await?;
        }
        let vm = protected_vm(cx).await?;
        Ok(json!({
            "replicas": vm.disks.iter().map(|d| json!({
                "volume_id": d.disk.replica_volume_id,
                "device_key": d.disk.device_key,
                "appliance_device_id": d.attachment.device_id,
                "device_path": d.attachment.device_path,
            })).collect::<Vec<_>>()
        }))
    }
}

#[async_trait]
impl Step<Env> for DeleteSnapshots {
    fn name(&self) -> &str {
        "delete-snapshots"
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        delete_run_snapshots(cx, "delete-snapshots").await?;
        Ok(json!({}))
    }
}

#[async_trait]
impl Step<Env> for DestroyTestVm {
    fn name(&self) -> &str {
        "destroy-test-vm"
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        let input = input(cx)?;
        match find_vm(cx.ctx, &input.target_name).await? {
            Some(vm) => {
                destroy_vm_without_replicas(cx, &vm).await?;
                Ok(json!({ "destroyed": vm.id }))
            }
            None => Ok(json!({ "destroyed": null })),
        }
    }
}

#[async_trait]
impl Step<Env> for Record {
    fn name(&self) -> &str {
        "record"
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::ReadyForFailover, None)
            .await
            .map_err(|e| store_error("recording ready_for_failover", e))?;
        Ok(json!({ "state": "ready_for_failover" }))
    }
}
