//! Commit of a live failover (DESIGN §5): it becomes final. The snapshots taken at
//! cut-over — the way back — are deleted and the VM is recorded `committed`: from then
//! on `<name>` is an ordinary CloudStack VM that ferry no longer manages (no workflow
//! starts from `committed`). The VM itself is left exactly as it is, running.
//!
//! check the VM → delete the live failover's snapshots → record `committed`.
//!
//! The check only reads: a VM `<name>` that is not the one the live failover created,
//! or that no longer holds every replica at its planned device id, is refused before
//! anything is deleted — the snapshots are then the only way back, and an operator
//! must look (a rollback is still possible). A *forward* workflow like cleanup and
//! rollback: nothing is undone, a failed commit is started again.

use async_trait::async_trait;
use engine::{Output, Saga, StepContext, StepError, TypedStep};
use serde::{Deserialize, Serialize};
use store::{VmState, Workflow};

use crate::cleanup::DeleteSnapshots;
use crate::common::{StartError, input};
use crate::env::{Env, store_error, volume_error};
use crate::live::{follow_up, live_vm};
use crate::test_failover::{RECORD, Recorded};

/// Creates a commit run for `vm_name` (which must be `failed_over`), following up its
/// last live failover.
pub async fn start(env: &Env, vm_name: &str) -> Result<store::Run, StartError> {
    follow_up(
        env,
        vm_name,
        Workflow::Commit,
        "only a live failover can be committed",
    )
    .await
}

/// The commit saga. Its steps leave the default undo, which does nothing: a forward
/// workflow, the next commit finishes what this one left.
pub fn saga() -> Saga<Env> {
    Saga::new(vec![
        Box::new(CheckVm),
        Box::new(DeleteSnapshots),
        Box::new(Record),
    ])
}

struct CheckVm;
struct Record;

/// The VM the live failover created, holding every replica where it put it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckedVm {
    vm_id: String,
    state: String,
}

const CHECK_VM: Output<CheckedVm> = Output::new("check-vm");

#[async_trait]
impl TypedStep<Env> for CheckVm {
    type Output = CheckedVm;

    fn output(&self) -> Output<CheckedVm> {
        CHECK_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let vm = live_vm(cx).await?.ok_or_else(|| {
            StepError::Definitive(format!(
                "VM {} does not exist: there is no failover to commit",
                input.target_name
            ))
        })?;
        let observed: Vec<(String, Option<i64>, i64)> = env
            .volumes
            .list_vm_volumes(&vm.id)
            .await
            .map_err(|e| volume_error("listing the VM's volumes", e))?
            .into_iter()
            .map(|v| (v.id, v.device_id, v.size_bytes))
            .collect();
        // Volumes added after the cut-over are the VM's own business; every replica
        // must be where the failover put it.
        let missing: Vec<String> = input
            .plan
            .disks()
            .iter()
            .filter(|d| {
                !observed
                    .iter()
                    .any(|(id, device, _)| *id == d.volume_id && *device == Some(d.device_id))
            })
            .map(|d| format!("replica {} at device {}", d.volume_id, d.device_id))
            .collect();
        if !missing.is_empty() {
            return Err(StepError::Definitive(format!(
                "VM {} ({}) no longer holds {}: not committing; look, then roll back or fix it",
                vm.name,
                vm.id,
                missing.join(", ")
            )));
        }
        Ok(CheckedVm {
            vm_id: vm.id,
            state: vm.state,
        })
    }
}

#[async_trait]
impl TypedStep<Env> for Record {
    type Output = Recorded;

    fn output(&self) -> Output<Recorded> {
        RECORD
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let target = cx.lookup(CHECK_VM)?.vm_id;
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::Committed, Some(&target))
            .await
            .map_err(|e| store_error("recording committed", e))?;
        Ok(Recorded {
            state: VmState::Committed.as_str().into(),
            target_vm_id: Some(target),
            after_rollback_failed: None,
        })
    }
}
