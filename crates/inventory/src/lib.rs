//! The inventory of protected VMs: the VM definition file ([`definition`]) and
//! registration ([`register()`]), which validates a definition against itself, ferry's
//! store and CloudStack, and writes nothing unless all of it holds.
//!
//! Architecture invariant: this crate reads CloudStack (lists only) and never changes
//! it; all writes go to the store, in one transaction.

pub mod definition;
mod problem;
mod register;

pub use definition::{
    DiskDefinition, Format, NicDefinition, ParseError, SpecDefinition, VmDefinition,
};
pub use problem::Problem;
pub use register::{Limits, MAX_NAME_LEN, RegisterError, boot_disk, check_definition, register};
