//! The inventory of protected VMs: the VM definition file ([`definition`]),
//! registration ([`register()`]) and updates at rest ([`update()`]), which validate a
//! definition against itself, ferry's store and CloudStack, and write nothing unless
//! all of it holds.
//!
//! `rules` checks a definition by itself and `checks` against the store and
//! CloudStack, for registrations and updates alike; `problem` is the report they all
//! add to, and `changes` what an update tells and records.
//!
//! Architecture invariant: this crate reads CloudStack (lists only) and never changes
//! it; all writes go to the store, in one transaction.

mod changes;
mod checks;
pub mod definition;
mod problem;
mod register;
mod rules;
mod update;

pub use changes::{Change, ChangeKind};
pub use definition::{
    DiskDefinition, Format, NicDefinition, ParseError, SpecDefinition, VmDefinition,
};
pub use problem::Problem;
pub use register::{RegisterError, register};
pub use rules::{Limits, MAX_NAME_LEN, boot_disk, check_definition};
pub use update::{UpdateError, Updated, update};
