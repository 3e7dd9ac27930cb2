//! Rollback of a live failover (DESIGN §5): from `failed_over` back to
//! `ready_for_failover`, the replicas on the appliance again and the VM `<name>` gone.
//!
//! stop `<name>` → detach its volumes → re-attach the replicas to the appliance and
//! find their device paths → delete the live failover's snapshots → destroy `<name>`
//! → run the `after_rollback` hooks (power the source on) → `ready_for_failover`.
//!
//! Like cleanup, a *forward* workflow: each step looks at what CloudStack has now and
//! does only what is left, nothing is undone, and a rollback that failed or was
//! interrupted is simply started again (the VM stays `failed_over` until the last
//! step). A volume on the VM that the plan did not put there is reported and left in
//! place, and a VM named `<name>` that is not the one the live failover created is
//! refused, never stopped or destroyed.
//!
//! # The replicas are not reverted
//!
//! Unlike cleanup after a test, a rollback does **not** revert the replicas to the
//! snapshots taken at cut-over. After a live failover the VM `<name>` *is* production:
//! from the moment it started, the replicas hold production's writes, and nothing else
//! does. Reverting them would silently throw those writes away, and the choice of what
//! to keep (resynchronise the source from them, or discard them with a resync the
//! other way) belongs to the operator and the replication product, not to ferry. The
//! snapshots served as the way back until a decision was made (commit or rollback);
//! with the rollback made they are deleted, like commit deletes them. The VM is stopped
//! gracefully first (forced only if the guest does not shut down) so what it wrote is
//! consistent on disk.
//!
//! # The after_rollback hooks
//!
//! They run once CloudStack is rolled back (the replicas are on the appliance, the VM
//! is gone). A failing hook does not fail the rollback: undoing it would mean
//! re-failing over, and the CloudStack side — what ferry manages — *is* rolled back.
//! The failure is reported instead: in the step's output (and the `record` step's,
//! `after_rollback_failed`) and as a `warn` event of the run, for the operator to power
//! the source on by hand. The run ends `done`.

use async_trait::async_trait;
use engine::{Output, Saga, StepContext, StepError, TypedStep};
use store::{VmState, Workflow};

use crate::cleanup::{
    DeleteSnapshots, Destroyed, DetachedFrom, ReattachReplicas, Stopped, Unexpected,
};
use crate::common::{
    StartError, destroy_vm_without_replicas, ensure_stopped, input, needs,
    put_back_detached_replicas,
};
use crate::env::{Env, call, cloud_error, pending_job, record_job, store_error, volume_error};
use crate::hooks::{HookContext, HookPoint, HookReport, run_all};
use crate::live::{follow_up, live_vm};
use crate::test_failover::{RECORD, Recorded};

/// Creates a rollback run for `vm_name` (which must be `failed_over`), following up its
/// last live failover.
pub async fn start(env: &Env, vm_name: &str) -> Result<store::Run, StartError> {
    follow_up(
        env,
        vm_name,
        Workflow::Rollback,
        "only a live failover can be rolled back (a test failover is cleaned up)",
    )
    .await
}

/// The rollback saga. Only `detach-from-vm` has an undo; the others leave the default,
/// which does nothing: a forward workflow, the next rollback finishes what this one left.
pub fn saga() -> Saga<Env> {
    Saga::new(vec![
        Box::new(StopVm),
        Box::new(DetachFromVm),
        Box::new(ReattachReplicas),
        Box::new(DeleteSnapshots),
        Box::new(DestroyVm),
        Box::new(AfterRollbackHooks),
        Box::new(Record),
    ])
}

struct StopVm;
struct DetachFromVm;
struct DestroyVm;
struct AfterRollbackHooks;
struct Record;

const STOP_VM: Output<Stopped> = Output::new("stop-vm");
const DETACH_FROM_VM: Output<DetachedFrom> = Output::new("detach-from-vm");
const DESTROY_VM: Output<Destroyed> = Output::new("destroy-vm");
const AFTER_ROLLBACK_HOOKS: Output<HookReport> = Output::new("run-hooks");

/// The VM `vm_id`, found and stopped (`forced` if it had to be).
fn stopped(vm_id: &str, forced: bool) -> Stopped {
    Stopped {
        vm_id: Some(vm_id.to_string()),
        found: true,
        forced: Some(forced),
    }
}

async fn event(cx: &StepContext<'_, Env>, level: &str, step: &str, message: &str) {
    if let Err(e) = cx
        .ctx
        .store
        .add_event(&cx.run.id, level, Some(step), message, None)
        .await
    {
        tracing::warn!(run = %cx.run.id, error = %e, "cannot record an event");
    }
}

#[async_trait]
impl TypedStep<Env> for StopVm {
    type Output = Stopped;

    fn output(&self) -> Output<Stopped> {
        STOP_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let Some(vm) = live_vm(cx).await? else {
            return Ok(Stopped {
                vm_id: None,
                found: false,
                forced: None,
            });
        };
        if vm.state == "Stopped" {
            return Ok(stopped(&vm.id, false));
        }
        // Gracefully: the guest's writes are kept (see the module doc).
        let pending = pending_job(cx, "stopVirtualMachine", Some(&vm.id)).await?;
        // A stop this step recorded may have ended since the VM was read.
        if pending.is_none() && !needs(env, &vm.id, "Stopped").await? {
            return Ok(stopped(&vm.id, false));
        }
        let graceful = async {
            let job = match pending {
                Some(job) => job,
                None => {
                    let job = env.cloud.stop_virtual_machine(&vm.id, false).await?;
                    record_job(cx, &job, Some(&vm.id)).await;
                    job
                }
            };
            env.cloud.wait(&job).await
        }
        .await;
        match graceful {
            Ok(_) => Ok(stopped(&vm.id, false)),
            Err(e) if e.class() == cloudstack::ErrorClass::Definitive => {
                event(
                    cx,
                    "warn",
                    "stop-vm",
                    &format!(
                        "VM {} did not stop gracefully ({e}); stopping it forcibly",
                        vm.name
                    ),
                )
                .await;
                let vm = live_vm(cx).await?.unwrap_or(vm);
                ensure_stopped(cx, &vm).await?;
                Ok(stopped(&vm.id, true))
            }
            Err(e) => Err(cloud_error("stopping the VM", e)),
        }
    }
}

#[async_trait]
impl TypedStep<Env> for DetachFromVm {
    type Output = DetachedFrom;

    fn output(&self) -> Output<DetachedFrom> {
        DETACH_FROM_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let Some(vm) = live_vm(cx).await? else {
            return Ok(DetachedFrom::default());
        };
        // Detaching the boot disk needs the VM stopped; a re-run after someone started
        // it again stops it first.
        ensure_stopped(cx, &vm).await?;
        let mut detached = Vec::new();
        let mut unexpected = Vec::new();
        for v in env
            .volumes
            .list_vm_volumes(&vm.id)
            .await
            .map_err(|e| volume_error("listing the VM's volumes", e))?
        {
            if input.plan.by_volume(&v.id).is_none() {
                // Not ferry's to move or delete (a disk added after the cut-over, say):
                // report it and leave it on the VM. Destroying the VM detaches it.
                let message = format!(
                    "unexpected volume {} ({}, {} bytes) at device {:?} on VM {}: not part of the plan; left in place",
                    v.id, v.name, v.size_bytes, v.device_id, vm.name
                );
                event(cx, "warn", "detach-from-vm", &message).await;
                unexpected.push(Unexpected {
                    volume_id: v.id,
                    device_id: v.device_id,
                });
                continue;
            }
            env.volumes
                .detach(
                    &call(cx, "detach-from-vm", &format!("{}/{}", v.id, vm.id)),
                    &v.id,
                )
                .await
                .map_err(|e| volume_error(&format!("detaching replica {} from the VM", v.id), e))?;
            detached.push(v.id);
        }
        Ok(DetachedFrom {
            detached,
            unexpected,
        })
    }

    /// The rollback failed after this step (or in it): a replica it left attached to
    /// nothing goes back on the live VM (stopped), as the run found it, for the next
    /// rollback to finish.
    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        let input = input(cx)?;
        let vm = live_vm(cx).await?;
        put_back_detached_replicas(cx, &input.plan, vm.as_ref()).await?;
        Ok(())
    }
}

#[async_trait]
impl TypedStep<Env> for DestroyVm {
    type Output = Destroyed;

    fn output(&self) -> Output<Destroyed> {
        DESTROY_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        match live_vm(cx).await? {
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
impl TypedStep<Env> for AfterRollbackHooks {
    type Output = HookReport;

    fn output(&self) -> Output<HookReport> {
        AFTER_ROLLBACK_HOOKS
    }

    /// Never fails on a hook's account (see the module doc): the failure is reported.
    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let hooks = HookPoint::AfterRollback.of(&cx.ctx.hooks);
        if hooks.is_empty() {
            return Ok(HookReport::default());
        }
        let vm = crate::common::protected_vm(cx).await?;
        let context = HookContext {
            hook: HookPoint::AfterRollback.as_str(),
            vm: &vm.name,
            run_id: &cx.run.id,
        };
        let report = run_all(hooks, HookPoint::AfterRollback, &context).await;
        for ran in &report.ran {
            event(cx, "info", "run-hooks", &format!("hook {ran}")).await;
        }
        if let Some(failed) = &report.failed {
            event(
                cx,
                "warn",
                "run-hooks",
                &format!(
                    "{failed}; CloudStack is rolled back all the same — power the source on by hand if it should serve"
                ),
            )
            .await;
        }
        Ok(report)
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
        let hooks_failed = cx
            .lookup_if_done(AFTER_ROLLBACK_HOOKS)?
            .and_then(|report| report.failed);
        Ok(Recorded {
            state: VmState::ReadyForFailover.as_str().into(),
            target_vm_id: None,
            after_rollback_failed: Some(hooks_failed),
        })
    }
}
