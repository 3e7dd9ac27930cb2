//! The inventory of protected VMs: the VM definition file ([`definition`]) and
//! registration ([`register()`]), which validates a definition against itself, ferry's
//! store and CloudStack, and writes nothing unless all of it holds.
//!
//! `rules` checks a definition by itself and `checks` against the store and
//! CloudStack; `problem` is the report they all add to.
//!
//! Architecture invariant: this crate reads CloudStack (lists only) and never changes
//! it; all writes go to the store, in one transaction.

mod checks;
pub mod definition;
mod problem;
mod register;
mod rules;

pub use definition::{
    DiskDefinition, Format, NicDefinition, ParseError, SpecDefinition, VmDefinition,
};
pub use problem::Problem;
pub use register::{RegisterError, register};
pub use rules::{Limits, MAX_NAME_LEN, boot_disk, check_definition};
