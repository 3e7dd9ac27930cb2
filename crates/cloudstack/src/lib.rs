//! A client for the Apache CloudStack API, as ferry needs it.
//!
//! - [`signing`]: CloudStack's request signature (HMAC-SHA1 over the sorted, Java-
//!   URL-encoded, lowercased parameters), shared by nothing else: the simulator checks
//!   signatures with its own implementation so that the two can disagree in a test.
//! - [`Client`]: signed GET for reads and POST for mutations, `response=json`,
//!   async jobs split into [`Client::submit`] and [`Client::wait`] so that job ids can
//!   be recorded before waiting, and errors classified by what is safe to do next
//!   ([`ErrorClass`]).
//! - [`types`]: the response objects.
//!
//! Architecture invariant: this crate knows nothing of ferry's database, workflows or
//! the simulator. It talks HTTP to whatever endpoint it is given.

mod api;
mod client;
mod error;
pub mod signing;
pub mod types;

pub use api::{DeployVm, Firmware, NicRequest, VmFilter, VolumeFilter, VolumeSource};
pub use client::{Client, Config, Job, JobOutput, Kind, PollPolicy, Success};
pub use error::{Error, ErrorClass};
pub use types::*;
