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

use engine::Saga;
use store::Workflow;

use crate::env::Env;
use crate::jobs::{Steps, saga_of};
use crate::run::{StartError, follow_up};
use crate::steps::hooks::AfterRollbackHooks;
use crate::steps::record::Record;
use crate::steps::replicas::{DetachFrom, ReattachReplicas};
use crate::steps::snapshots::DeleteSnapshots;
use crate::steps::vm::{Destroy, StopVm, TargetVm};

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
    saga_of(steps())
}

/// The steps of a rollback, in order.
pub(crate) fn steps() -> Steps {
    vec![
        Box::new(StopVm),
        Box::new(DetachFrom(TargetVm::Live)),
        Box::new(ReattachReplicas),
        Box::new(DeleteSnapshots),
        Box::new(Destroy(TargetVm::Live)),
        Box::new(AfterRollbackHooks),
        Box::new(Record::RolledBack),
    ]
}
