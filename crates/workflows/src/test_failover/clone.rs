//! Test failover, clone mode (DESIGN §5): the test VM gets new volumes made from the
//! replicas' snapshots; the replicas never leave the appliance, so replication goes on
//! during the drill and nothing the test VM writes can reach them.
//!
//! validate → snapshot every replica → create a volume from each snapshot (named
//! `<target>-disk-<key>`, recorded by the volume daemon as created by ferry) → create
//! the target VM stopped with the whole spec → remove its placeholder ROOT → attach the
//! clones (boot at 0 as ROOT, data at the planned ids) → verify → start → record
//! `test_failed_over`.
//!
//! The plan stays the replicas' plan: it is what cleanup, the store and an operator
//! reading the map know; a clone stands in for its replica at the replica's device id
//! (see [`crate::steps::clones`] for how the verification and the undos use that).

use store::VmState;

use crate::jobs::Steps;
use crate::run::Mode;
use crate::steps::checks::{Validate, Verify};
use crate::steps::clones::CreateClones;
use crate::steps::record::Record;
use crate::steps::replicas::Attach;
use crate::steps::snapshots::Snapshot;
use crate::steps::vm::{CreateVm, Network, RemovePlaceholderRoot, StartVm};

/// The steps of a test failover in clone mode, in order.
pub(super) fn steps() -> Steps {
    vec![
        Box::new(Validate(Network::Test)),
        Box::new(Snapshot),
        Box::new(CreateClones),
        Box::new(CreateVm(Network::Test)),
        Box::new(RemovePlaceholderRoot),
        Box::new(Attach(Mode::Clone)),
        Box::new(Verify(Mode::Clone)),
        Box::new(StartVm),
        Box::new(Record::FailedOver(VmState::TestFailedOver)),
    ]
}
