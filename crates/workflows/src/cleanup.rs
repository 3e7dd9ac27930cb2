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

use engine::Saga;
use store::{VmState, Workflow};

use crate::env::Env;
use crate::jobs::{Steps, saga_of};
use crate::run::{Mode, RunInput, StartError, create_run, registered_vm, run_input};
use crate::steps::clones::DeleteClones;
use crate::steps::record::Record;
use crate::steps::replicas::{DetachFrom, ReattachReplicas, RevertReplicas};
use crate::steps::snapshots::DeleteSnapshots;
use crate::steps::vm::{Destroy, StopTestVm, TargetVm};

/// Creates a cleanup run for `vm_name`, after its last test failover.
pub async fn start(env: &Env, vm_name: &str) -> Result<store::Run, StartError> {
    let vm = registered_vm(env, vm_name).await?;
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
    let test_input =
        test_run
            .as_ref()
            .and_then(run_input)
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
    create_run(env, &vm, Workflow::Cleanup, Some(mode.as_str()), &input).await
}

/// The replicas a finished cleanup or rollback left diverged from their source (see
/// docs/operating.md §7.5), from its recorded steps: (volume id, why). Empty for any
/// other run.
pub fn diverged_at_end(steps: &[store::StepRecord]) -> Vec<(String, String)> {
    crate::steps::record::diverged_at_end(steps)
}

/// The cleanup saga. Only `detach-from-test-vm` has an undo; the others leave the default,
/// which does nothing: a forward workflow, the next cleanup finishes what this one left.
pub fn saga() -> Saga<Env> {
    saga_of(steps())
}

/// The steps of a cleanup, in order.
pub(crate) fn steps() -> Steps {
    vec![
        Box::new(StopTestVm),
        Box::new(DetachFrom(TargetVm::Test)),
        Box::new(RevertReplicas),
        Box::new(DeleteClones),
        Box::new(ReattachReplicas),
        Box::new(DeleteSnapshots),
        Box::new(Destroy(TargetVm::Test)),
        Box::new(Record::CleanedUp),
    ]
}
