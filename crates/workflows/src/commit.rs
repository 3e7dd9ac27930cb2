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

use engine::Saga;
use store::Workflow;

use crate::env::Env;
use crate::jobs::{Steps, saga_of};
use crate::run::{StartError, follow_up};
use crate::steps::checks::CheckVm;
use crate::steps::record::Record;
use crate::steps::snapshots::DeleteSnapshots;

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
    saga_of(steps())
}

/// The steps of a commit, in order.
pub(crate) fn steps() -> Steps {
    vec![
        Box::new(CheckVm),
        Box::new(DeleteSnapshots),
        Box::new(Record::Committed),
    ]
}
