//! ferry's failover workflows: test failover (replica and clone modes), cleanup, live
//! failover, rollback and commit, as DESIGN §5 lists their steps.
//!
//! Architecture invariant: this crate is the only place that composes the store, the
//! engine and the volume daemon. The store keeps state and knows nothing of
//! CloudStack; the engine runs sagas and knows nothing of CloudStack or SQL; the
//! volume daemon is the only caller of CloudStack's volume APIs. A workflow is where
//! those meet: it decides *what* to do to which volume and VM, and in which order.
//!
//! [`plan`] (the device-id planner), [`test_failover`] (replica and clone modes),
//! [`cleanup`], [`live`] failover, [`rollback`] and [`commit`], with [`guest_prep`]
//! (run on the appliance by the volume daemon) and the operator [`hooks`] around
//! them, and the [`worker`] loop that executes runs.
//!
//! Each workflow module is its doc, its `start` and the ordered list of its steps;
//! every step lives once, in the library of steps (`steps`, grouped by what a step
//! touches), built on the ensures several steps share (`ensure`) and on what a run
//! carries (`run`: its input, mode and start errors). Each step declares the
//! CloudStack jobs it submits (`jobs`), and [`cost`] reads them from the same list of
//! steps that builds the saga; [`target`] checks a failed-over VM's target against its
//! plan for those who show it.

pub mod cleanup;
pub mod commit;
pub mod cost;
mod drift;
mod ensure;
mod env;
pub mod evidence;
pub mod guest_prep;
pub mod hooks;
mod jobs;
pub mod live;
pub mod plan;
pub mod preflight;
pub mod rollback;
mod run;
mod steps;
pub mod target;
pub mod test_failover;
pub mod worker;

pub use env::{Agents, Env, Target};
pub use hooks::{Hook, Hooks};
pub use run::{RunInput, StartError, run_input, what_first};
pub use worker::{Worker, WorkerConfig, saga_for};
