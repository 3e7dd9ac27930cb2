//! The order a plan run takes a plan's tiers in, and what each workflow asks of its
//! VMs: pure functions of the plan and the workflow, shared by the driver, its hooks
//! and the server's views.

use readiness::FailoverKind;
use store::{VmState, Workflow};

use crate::definition::{PlanDefinition, Policy};

/// The state a VM must be in for `workflow` to start on it.
pub(crate) fn wanted(workflow: Workflow) -> VmState {
    match workflow {
        Workflow::TestFailover | Workflow::LiveFailover => VmState::ReadyForFailover,
        Workflow::Cleanup => VmState::TestFailedOver,
        Workflow::Rollback | Workflow::Commit => VmState::FailedOver,
    }
}

/// Whether `workflow` takes the tiers last first: undoing, the web tier goes before
/// the database it needs.
pub(crate) fn reversed(workflow: Workflow) -> bool {
    matches!(workflow, Workflow::Cleanup | Workflow::Rollback)
}

/// The index in the plan file of the tier that comes `order`th in `workflow`.
pub fn tier_of_order(plan: &PlanDefinition, workflow: Workflow, order: i64) -> Option<usize> {
    let count = plan.tiers.len();
    let order = usize::try_from(order).ok().filter(|o| *o < count)?;
    Some(if reversed(workflow) {
        count - 1 - order
    } else {
        order
    })
}

/// The kind of failover whose VMs are checked by their gates; none for the workflows
/// that take a failover back or make it final.
pub(crate) fn failover_kind(workflow: Workflow) -> Option<FailoverKind> {
    match workflow {
        Workflow::TestFailover => Some(FailoverKind::Test),
        Workflow::LiveFailover => Some(FailoverKind::Live),
        _ => None,
    }
}

/// The plan's policy for a VM that fails in `workflow`: a cleanup, rollback or commit
/// always goes on.
pub(crate) fn policy(plan: &PlanDefinition, workflow: Workflow) -> Policy {
    match workflow {
        Workflow::TestFailover => plan.on_failure.test,
        Workflow::LiveFailover => plan.on_failure.live,
        _ => Policy::Continue,
    }
}
