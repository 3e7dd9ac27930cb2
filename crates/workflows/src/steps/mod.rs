//! The library of steps: every step of every workflow lives here once, grouped by what
//! it touches, and a workflow is the ordered list of some of them (see the workflow
//! modules). A step is an [`engine::TypedStep`]: an idempotent ensure with an undo,
//! whose output has a declared name and type that the steps after it read.
//!
//! - [`checks`]: what only reads — validation before a failover (and before its
//!   hooks), the verification of the target VM's disks, commit's check of the VM.
//! - [`vm`]: the target VM — create, remove its placeholder ROOT, start, stop, destroy.
//! - [`snapshots`]: the replicas' snapshots — take, delete.
//! - [`replicas`]: the replicas (and, in clone mode, the clones that stand in for them)
//!   moving between the appliance and the target VM, and their revert.
//! - [`clones`]: clone mode's volumes — create from the snapshots, delete.
//! - [`guest`]: guest preparation on the appliance.
//! - [`hooks`]: the operator's hooks around live failover and rollback.
//! - [`record`]: the protected VM's state at the end of a workflow.

pub(crate) mod checks;
pub(crate) mod clones;
pub(crate) mod guest;
pub(crate) mod hooks;
pub(crate) mod record;
pub(crate) mod replicas;
pub(crate) mod snapshots;
pub(crate) mod vm;
