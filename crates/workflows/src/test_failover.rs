//! Test failover (DESIGN §5), in one of two [`Mode`]s.
//!
//! Replica mode: the replicas themselves go to a test VM and come back with cleanup,
//! reverted to the snapshots taken first. validate → snapshot every replica → create
//! the target VM stopped with the whole spec → remove its placeholder ROOT → detach the
//! replicas from the appliance → attach boot at 0 and data at the planned ids → verify
//! against listVolumes → start → record `test_failed_over`.
//!
//! Clone mode (the `clone` module): a new volume is made from each snapshot and the clones go
//! to the test VM; the replicas never leave the appliance, so replication goes on
//! during the drill. validate → snapshot → create the clones → create the target VM →
//! remove its placeholder ROOT → attach the clones (boot at 0, data at the planned ids)
//! → verify → start → record.
//!
//! Each step is an ensure that looks before it acts, and has an undo that puts things
//! back — the replicas on the appliance above all, and in clone mode no clone left.

use engine::Saga;
use store::{VmState, Workflow};

use crate::env::Env;
use crate::jobs::{Steps, saga_of};
use crate::run::{StartError, start_failover};
use crate::steps::checks::{Validate, Verify};
use crate::steps::guest::PrepareGuest;
use crate::steps::record::Record;
use crate::steps::replicas::{Attach, DetachReplicas};
use crate::steps::snapshots::Snapshot;
use crate::steps::vm::{CreateVm, Network, RemovePlaceholderRoot, StartVm};

mod clone;

pub use crate::run::{Mode, run_input};

/// Creates a test failover run (replica mode) for `vm_name`, with its device plan and
/// target name; the engine then executes it with [`saga`].
pub async fn start(env: &Env, vm_name: &str) -> Result<store::Run, StartError> {
    start_with_mode(env, vm_name, Mode::Replica).await
}

/// Creates a test failover run in `mode` for `vm_name`; the engine then executes it
/// with [`saga_for`] of that mode.
pub async fn start_with_mode(
    env: &Env,
    vm_name: &str,
    mode: Mode,
) -> Result<store::Run, StartError> {
    start_failover(env, vm_name, Workflow::TestFailover, mode, |name| {
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
        format!("{name}-test-{stamp}")
    })
    .await
}

/// The test failover saga of `mode`.
pub fn saga_for(mode: Mode) -> Saga<Env> {
    saga_of(steps_for(mode))
}

/// The steps of a test failover in `mode`, in order.
pub(crate) fn steps_for(mode: Mode) -> Steps {
    match mode {
        Mode::Replica => steps(),
        Mode::Clone => clone::steps(),
    }
}

/// The saga that executes a test failover `run`, by its recorded mode.
pub fn saga_for_run(run: &store::Run) -> Result<Saga<Env>, String> {
    Mode::of_run(run).map(saga_for)
}

/// The test failover saga (replica mode).
pub fn saga() -> Saga<Env> {
    saga_for(Mode::Replica)
}

/// The steps of a test failover in replica mode, in order.
fn steps() -> Steps {
    vec![
        Box::new(Validate(Network::Test)),
        Box::new(Snapshot),
        Box::new(PrepareGuest),
        Box::new(CreateVm(Network::Test)),
        Box::new(RemovePlaceholderRoot),
        Box::new(DetachReplicas),
        Box::new(Attach(Mode::Replica)),
        Box::new(Verify(Mode::Replica)),
        Box::new(StartVm),
        Box::new(Record::FailedOver(VmState::TestFailedOver)),
    ]
}
