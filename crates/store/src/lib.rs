//! ferry's store: the inventory (appliances, protected VMs, disks, replica volumes),
//! the volume daemon's operation journal, and the engine's runs, steps, events,
//! leases and fences — one schema on SQLite (the default: a file created on first
//! start) and on PostgreSQL (for several engine processes sharing work).
//!
//! The rules that keep failovers honest are constraints in the database, not only in
//! code, so that no bug or race in a caller can break them: one replica volume per
//! disk and one disk per replica volume, one boot disk per VM, a disk's identity
//! (controller, bus, unit, key) unique within its VM, unique VM names and MACs, and
//! at most one active run per protected VM (a partial unique index). A violated
//! constraint comes back as [`StoreError::Constraint`] with the same constraint name
//! on both databases.
//!
//! Both databases are reached through sqlx's `Any` driver with the same SQL (`$1`
//! placeholders, `ON CONFLICT`, partial indexes — all of which both support), so the
//! one conformance suite in `tests/` proves the same code on both. Integers are
//! 64-bit, booleans 0/1, times unix milliseconds: the types `Any` carries alike.
//! The driver stays inside: callers see [`StoreError`]'s kinds (a database that is
//! [unavailable](StoreError::Unavailable) or [busy](StoreError::Busy) among them),
//! never sqlx's errors.
//!
//! Architecture invariant: the store knows nothing of CloudStack or of workflows; it
//! keeps what it is told and refuses what would break a constraint.
//!
//! # Map
//!
//! One file per table family, each adding its methods to [`Store`]: `inventory`
//! (appliances, protected VMs, replica volumes), `runs` (runs and their leases,
//! steps, events), `journal` (the volume daemon's operations, fences, the volumes
//! ferry created), `plans` (recovery plans and the VMs they name) and `plan_runs` (runs of
//! plans and where each of their VMs is). Under them, `pool` opens the database, `rows` reads rows into the
//! `model` types, `error` says what went wrong and `backend` which database a URL
//! names. This file only declares them and names the public API, so no module needs
//! to import from it (and none does: no circle of imports).

mod backend;
mod error;
mod inventory;
mod journal;
mod model;
mod plan_runs;
mod plans;
mod pool;
mod rows;
mod runs;
pub mod testing;

pub use backend::{Backend, redact_url};
pub use error::{Result, StoreError};
pub use model::*;
pub use pool::Store;
pub use rows::now_ms;
