//! The volume daemon: the only part of ferry that calls CloudStack's volume APIs
//! (attach, detach, createSnapshot, revertSnapshot, deleteSnapshot, createVolume from
//! a snapshot, deleteVolume), and the part that knows where an attached volume shows
//! up inside an appliance.
//!
//! # Why one component owns the volume calls
//!
//! A multi-disk failover is a long series of attach and detach jobs, and each of them
//! can end in three ways: CloudStack did it, CloudStack refused (and did nothing), or
//! nobody knows — the response was lost, the connection dropped, the job was still
//! running when we stopped waiting, or the process died. The predecessor of ferry
//! treated "nobody knows" as "failed" and "retried", and attached volumes twice or left
//! volumes on VMs that cleanup could not see. Putting every volume call behind one
//! door lets that door keep three promises:
//!
//! 1. **Recorded before acted on.** Every operation is written to the [`Journal`]
//!    before CloudStack is asked, and its async job id is written as soon as
//!    CloudStack hands it out — before anyone waits on the job. A process that dies
//!    at any point leaves a record that says what may be happening.
//! 2. **Look before you retry.** An error whose class is *unknown* (see
//!    [`cloudstack::ErrorClass`]) is resolved by looking at CloudStack — is the volume
//!    on the VM at the expected device? is there a pending job for it? is there a
//!    snapshot of that name? — and only when the answer is "nothing happened and
//!    nothing is happening" is the call sent again, once. A *transient* error (the
//!    request had no effect) is resubmitted a bounded number of times with backoff.
//!    A *definitive* one ends the operation. After a restart,
//!    [`Local::resume_unfinished`] waits on the recorded job ids ([`cloudstack::Job::resume`])
//!    and never submits a recorded job a second time.
//! 3. **Asked twice, done once.** Every mutating request carries an idempotency key.
//!    A request whose key was seen returns the first result; if the first is still in
//!    flight, the second waits for it instead of acting. This is what makes it safe for
//!    the engine (or an HTTP client whose connection broke) to simply ask again.
//!
//! # Per-VM serialization
//!
//! CloudStack runs the jobs of one VM one at a time anyway, so the daemon serializes
//! the operations it sends for one VM (an async mutex per VM; operations on a detached
//! volume or a snapshot are serialized per volume or snapshot). It costs a poll
//! interval between consecutive jobs of one VM and buys three things: auto-assigned
//! device ids follow request order; an operation whose outcome is unknown can be
//! resolved by looking at the VM without another of our own jobs changing it
//! underneath; and hot-plugged disks appear in the appliance one at a time, so the
//! device-path correlation is never racing two appearances.
//! (TODO-performance: pipelining submissions to one VM would save that poll interval
//! per job; it needs the unknown-outcome resolution to account for our own queued
//! jobs first.)
//!
//! # Device paths
//!
//! Inside a KVM guest the kernel names of disks (`vdb`, `vdc`, …) follow probe order
//! and change when disks come and go; the stable name is the virtio serial
//! ([`cloudstack::volume_serial`]). [`device`] finds a volume under
//! `<root>/sys/block/*/serial` and `<root>/dev/disk/by-id/virtio-<serial>` and only
//! calls it present when both agree; two disks with one serial, or two volumes with one
//! path, are an error, never a guess.
//!
//! # Map
//!
//! - [`VolumeService`]: the one trait callers use; [`Local`] (in-process, talks to
//!   CloudStack) and [`HttpClient`] (talks to a `ferry volumed` server) implement it,
//!   and so does [`Agent`]: the engine's side of an appliance's remote volume agent,
//!   an [`HttpClient`] that checks the agent's API revision and appliance first and
//!   keeps the engine's registry (replicas, created volumes, attachments) from its
//!   answers.
//! - [`Journal`]: the persistence the daemon needs, kept small and free of SQL so that
//!   `crates/store` can implement it; [`MemoryJournal`] for tests.
//! - [`server::serve`]: the REST API (axum) in front of any [`VolumeService`].
//! - [`device`]: the appliance's sysfs scan.
//! - [`guest_prep`]: running the operator's guest-preparation command (VirtIO driver
//!   injection for Windows) against a disk on the appliance, journaled like the
//!   CloudStack operations and never run twice for one key.
//!
//! Inside [`Local`] (private modules, each with its reason at its top): `local` is the
//! operation pipeline (journal → submit → record the job → wait → record the
//! result); `look` resolves an unknown outcome by looking at CloudStack; `commands`
//! maps each operation to its CloudStack command and job; `appliance` knows the
//! appliances' disks and runs guest preparation on one; `serialization` holds the
//! per-VM locks. None of them uses `local`, and no module uses `lib.rs`: the files'
//! imports form no circle.
//!
//! Architecture invariant: this crate knows nothing of workflows, runs or SQL. It knows
//! CloudStack (through the `cloudstack` client) and the appliance's `/sys` and `/dev`.

mod agent;
mod appliance;
mod commands;
mod deletion;
pub mod device;
mod error;
pub mod guest_prep;
mod http_client;
mod journal;
mod local;
mod look;
mod presence;
mod serialization;
pub mod server;
mod service;
mod store_journal;
mod types;

pub use agent::Agent;
pub use device::Device;
pub use error::{Class, Error, GuestPrepFailure, Result, Unreachable};
pub use http_client::{HttpClient, HttpClientConfig};
pub use journal::{
    Begun, DeviceRecord, Journal, JournalError, MemoryJournal, NewOp, OpKind, OpRecord, OpState,
    Outcome,
};
pub use local::{Local, LocalConfig, Resumed};
pub use presence::Presence;
pub use service::VolumeService;
pub use store_journal::StoreJournal;
pub use types::{
    API_REVISION, AgentStatus, ApplianceSeen, Call, DEVICE_PLACEHOLDER, Fence, GuestPrep,
    GuestPrepOutcome, MAX_GUEST_PREP_SECS, OpRequest, Seen, SnapshotInfo, VERSION, VolumeInfo,
};
