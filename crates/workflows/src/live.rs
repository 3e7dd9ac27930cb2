//! Live failover (DESIGN §5): the replicas themselves become the production VM
//! `<name>`, on the production networks.
//!
//! check → run the `before_live` hooks → validate → snapshot every replica → create
//! `<name>` stopped with the whole spec on the production networks (production IPs, the
//! source's MACs) → remove its placeholder ROOT → detach the replicas from the
//! appliance → attach boot at 0 and data at the planned ids → verify against
//! listVolumes → start → record `failed_over` (with the target VM).
//!
//! Every step after the hooks is the test failover's own (replica mode), given the
//! production networks and the state to record: one implementation of the hard part,
//! unwinding included.
//!
//! The hooks come first, so a failing hook (the source would not power off, the final
//! sync failed) stops the run before anything changed in CloudStack. When there are
//! hooks, they are preceded by the read-only validation (`check`) that follows them
//! again, so an obvious problem (a replica missing, a production network gone, a VM
//! already named `<name>`) is found *before* the source is powered off rather than
//! after; validation is repeated after the hooks because they may take long (a final
//! sync) and it is cheap. A failing hook is not retried — its failure is definitive
//! and names the hook, with the tail of its output — and the hooks after it do not
//! run; the operator fixes the cause and starts the failover again. The hooks are not
//! undone: if the run unwinds after they ran, the source stays as they left it
//! (powered off, synced) — ferry does not guess whether it should serve again or the
//! failover be retried — and the unwind says so in the run's events.
//! [`crate::rollback`] runs the `after_rollback` hooks; an operator can run them by
//! hand after an unwound live failover.

use engine::Saga;
use store::{VmState, Workflow};

use crate::env::Env;
use crate::jobs::{Steps, saga_of};
use crate::run::{Mode, StartError, start_failover};
use crate::steps::checks::{Check, Validate, Verify};
use crate::steps::guest::PrepareGuest;
use crate::steps::hooks::BeforeLiveHooks;
use crate::steps::record::Record;
use crate::steps::replicas::{Attach, DetachReplicas};
use crate::steps::snapshots::Snapshot;
use crate::steps::vm::{CreateVm, Network, RemovePlaceholderRoot, StartVm};

/// Creates a live failover run for `vm_name` (which must be `ready_for_failover`), with
/// its device plan; its target VM is named like the protected VM. The engine then
/// executes it with [`saga`].
pub async fn start(env: &Env, vm_name: &str) -> Result<store::Run, StartError> {
    start_failover(
        env,
        vm_name,
        Workflow::LiveFailover,
        Mode::Replica,
        str::to_string,
    )
    .await
}

/// The `before_live` hooks a live failover's recorded steps show to have run, in
/// order: when the run fails after them, the source may be powered off and no longer
/// serving, and an operator must be told.
pub fn before_live_hooks_ran(steps: &[store::StepRecord]) -> Vec<String> {
    crate::steps::hooks::before_live_hooks_ran(steps)
}

/// The live failover saga.
pub fn saga() -> Saga<Env> {
    saga_of(steps())
}

/// The steps of a live failover, in order.
pub(crate) fn steps() -> Steps {
    vec![
        Box::new(Check),
        Box::new(BeforeLiveHooks),
        Box::new(Validate(Network::Production)),
        Box::new(Snapshot),
        Box::new(PrepareGuest),
        Box::new(CreateVm(Network::Production)),
        Box::new(RemovePlaceholderRoot),
        Box::new(DetachReplicas),
        Box::new(Attach(Mode::Replica)),
        Box::new(Verify(Mode::Replica)),
        Box::new(StartVm),
        Box::new(Record::FailedOver(VmState::FailedOver)),
    ]
}
