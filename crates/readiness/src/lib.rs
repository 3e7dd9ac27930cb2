//! Readiness gates: after ferry fails a VM over, is the *service* back?
//!
//! "The VM is Running" says that CloudStack started it, not that its database accepts
//! connections or its web service answers. A recovery plan therefore lists, per VM,
//! the gates that say so (`docs/readiness.md`):
//!
//! - `running`: CloudStack shows the VM `Running` (through [`VmState`], which the
//!   caller implements over its CloudStack client);
//! - `tcp`: a connection to a port is accepted on one of the VM's addresses;
//! - `http`: a GET of a path answers an expected status on one of them;
//! - `command`: an operator's program, told which VM it checks, exits 0.
//!
//! [`wait_ready`] tries them in order. Each gate is tried every `interval` until it
//! passes or its `deadline`, counted from its own start, passes; the first gate that
//! does not pass ends the wait, and the gates after it are reported as not run.
//!
//! **Why in order, not all at once.** Gates are written from the coarse to the fine —
//! running, then the port, then the application — and each presupposes the ones
//! before: an HTTP check of a VM that is not running can only fail, and would fill the
//! report with failures that say nothing new. In order, each gate's deadline is its
//! own budget once what it needs holds, and the report's first failure is the one to
//! look at. It costs little time: a gate ends the moment it passes, and the later
//! gates mostly could not have passed sooner anyway. Several VMs are checked at once
//! by their callers (one `wait_ready` each).
//!
//! What each gate saw last — passing or not — is in its [`GateOutcome`]
//! (`connection refused on 127.77.0.5:5432 and 127.77.1.5:5432`, `HTTP 503 from
//! http://127.77.0.5:8080/health`, `exit 3: <the end of its output>`, `state
//! Starting`), which ferry stores with the run and shows (`run show`, reports,
//! metrics).
//!
//! **Architecture invariant:** this crate knows nothing of CloudStack, the store or
//! the workflows. The VM's state comes through [`VmState`]; the VM's name, addresses
//! and run through [`Subject`]; the outcome is plain serializable data that the caller
//! keeps.

mod attempt;
mod command;
mod definition;
mod gate;
mod http;
mod outcome;
mod problem;
mod seen;
mod tcp;
mod wait;

pub use definition::{
    DEFAULT_COMMAND_TIMEOUT_SECS, DEFAULT_DEADLINE_SECS, DEFAULT_HTTP_TIMEOUT_SECS,
    DEFAULT_INTERVAL_SECS, DEFAULT_TCP_TIMEOUT_SECS, DefinitionError, GateSpec, GatesFile, parse,
    to_gates, validate,
};
pub use gate::{
    Check, CommandCheck, FailoverKind, Gate, HttpCheck, RunningState, Subject, VmState,
};
pub use outcome::{GateOutcome, Readiness, Verdict};
pub use problem::Problem;
pub use wait::wait_ready;
