//! What each workflow asks of CloudStack, step by step: the async jobs a step submits,
//! how many (once, or once per disk) and on which CloudStack queue they run.
//!
//! CloudStack runs one VM's jobs one at a time, and a volume's or snapshot's own jobs
//! on their own queue. `ferry bench` computes a workflow's lower bound — the chain of
//! jobs one VM needs, and the part of it spent on the appliance's queue — from these
//! declarations, so the bound cannot drift from what the workflows do: each step
//! declares its own jobs, and [`declared`] walks the same list of steps that builds
//! the workflow's saga.

use store::Workflow;

pub use crate::jobs::{Job, Queue, StepCost, Times};
use crate::run::Mode;

/// The steps of `workflow` (in `mode`, for a test failover or its cleanup) that submit
/// CloudStack jobs, in order. The other workflows have one mode (their runs are replica
/// mode), whatever `mode` says.
pub fn declared(workflow: Workflow, mode: Mode) -> Vec<StepCost> {
    let mode = match workflow {
        Workflow::TestFailover | Workflow::Cleanup => mode,
        Workflow::LiveFailover | Workflow::Rollback | Workflow::Commit => Mode::Replica,
    };
    crate::worker::steps_of(workflow, mode)
        .iter()
        .filter_map(|step| step.cost(mode))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::job;

    const WORKFLOWS: [Workflow; 5] = [
        Workflow::TestFailover,
        Workflow::Cleanup,
        Workflow::LiveFailover,
        Workflow::Rollback,
        Workflow::Commit,
    ];
    const MODES: [Mode; 2] = [Mode::Replica, Mode::Clone];

    #[test]
    fn every_declared_step_is_a_step_of_its_saga_in_the_saga_s_order() {
        for workflow in WORKFLOWS {
            for mode in MODES {
                let saga: Vec<String> = crate::worker::saga_of_workflow(workflow, mode)
                    .steps
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect();
                let mut after = 0;
                for cost in declared(workflow, mode) {
                    let at = saga
                        .iter()
                        .position(|name| name == cost.step)
                        .unwrap_or_else(|| {
                            panic!("{workflow} ({mode}): {} is not in {saga:?}", cost.step)
                        });
                    assert!(
                        at >= after,
                        "{workflow} ({mode}): {} out of order",
                        cost.step
                    );
                    after = at + 1;
                    assert!(!cost.jobs.is_empty(), "{workflow} ({mode}): {}", cost.step);
                }
            }
        }
    }

    fn step(step: &'static str, jobs: &[Job], waits_for_device: bool) -> StepCost {
        StepCost {
            step,
            jobs: jobs.to_vec(),
            waits_for_device,
        }
    }

    /// The declarations `ferry bench` was built on, when they were listed here by hand:
    /// the steps' own must say the same.
    #[test]
    fn the_replica_mode_test_failover_and_cleanup_declare_what_they_always_did() {
        use Queue::*;
        use Times::*;
        assert_eq!(
            declared(Workflow::TestFailover, Mode::Replica),
            vec![
                step(
                    "snapshot",
                    &[job("createSnapshot", PerDisk, Appliance)],
                    false
                ),
                step(
                    "create-vm",
                    &[job("deployVirtualMachine", Once, Target)],
                    false
                ),
                step(
                    "remove-placeholder-root",
                    &[job("detachVolume", Once, Target)],
                    false
                ),
                step(
                    "detach-replicas",
                    &[job("detachVolume", PerDisk, Appliance)],
                    false
                ),
                step(
                    "attach-replicas",
                    &[job("attachVolume", PerDisk, Target)],
                    false
                ),
                step(
                    "start-vm",
                    &[job("startVirtualMachine", Once, Target)],
                    false
                ),
            ]
        );
        assert_eq!(
            declared(Workflow::Cleanup, Mode::Replica),
            vec![
                step(
                    "stop-test-vm",
                    &[job("stopVirtualMachine", Once, Target)],
                    false
                ),
                step(
                    "detach-from-test-vm",
                    &[job("detachVolume", PerDisk, Target)],
                    false
                ),
                step(
                    "revert-replicas",
                    &[job("revertSnapshot", PerDisk, Own)],
                    false
                ),
                step(
                    "reattach-replicas",
                    &[job("attachVolume", PerDisk, Appliance)],
                    true
                ),
                step(
                    "delete-snapshots",
                    &[job("deleteSnapshot", PerDisk, Own)],
                    false
                ),
                step(
                    "destroy-test-vm",
                    &[job("destroyVirtualMachine", Once, Target)],
                    false
                ),
            ]
        );
    }

    #[test]
    fn clone_mode_makes_clones_instead_of_moving_the_replicas() {
        let names = |workflow, mode| -> Vec<&'static str> {
            declared(workflow, mode).iter().map(|c| c.step).collect()
        };
        assert_eq!(
            names(Workflow::TestFailover, Mode::Clone),
            [
                "snapshot",
                "create-clones",
                "create-vm",
                "remove-placeholder-root",
                "attach-clones",
                "start-vm"
            ]
        );
        assert_eq!(
            names(Workflow::Cleanup, Mode::Clone),
            [
                "stop-test-vm",
                "detach-from-test-vm",
                "delete-snapshots",
                "destroy-test-vm"
            ]
        );
        assert_eq!(
            names(Workflow::LiveFailover, Mode::Clone),
            names(Workflow::TestFailover, Mode::Replica)
        );
        assert_eq!(
            names(Workflow::Rollback, Mode::Replica),
            [
                "stop-vm",
                "detach-from-vm",
                "reattach-replicas",
                "delete-snapshots",
                "destroy-vm"
            ]
        );
        assert_eq!(names(Workflow::Commit, Mode::Replica), ["delete-snapshots"]);
    }
}
