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
//! The client's files, one idea each: `config` (endpoint, keys, timeouts, the poll
//! policy), `client` (the transport: signing, GET or POST, the envelope, reads retried,
//! metrics), `jobs` (submit, wait, resume), `polling` (when to poll, learned per
//! command), `api` (the typed calls) and `error` (classification).
//!
//! Architecture invariant: this crate knows nothing of ferry's database, workflows or
//! the simulator. It talks HTTP to whatever endpoint it is given.

mod api;
mod client;
mod config;
mod error;
mod jobs;
mod polling;
pub mod signing;
pub mod types;

pub use api::{DeployVm, Firmware, NicRequest, VmFilter, VolumeFilter, VolumeSource};
pub use client::{Client, Kind};
pub use config::{Config, RateLimit};
pub use error::{Error, ErrorClass};
pub use jobs::{Expected, Job, JobOutput, Success};
pub use polling::{JobPriors, PollPolicy, TYPICAL_JOB_DURATIONS_MS};
pub use types::*;

/// The ids the client's calls and types speak, re-exported so that a caller of the
/// client alone (cloudsim's tests) need not name the `ids` crate.
pub use ids::{
    JobId, NetworkId, ServiceOfferingId, SnapshotId, TemplateId, VmId, VolumeId, ZoneId,
};
