//! Recovery plans (issue #15): an application failed over as ordered boot tiers of
//! protected VMs. The plan file ([`definition`]) is checked by itself
//! ([`check_plan`]) and against the store ([`catalog`]: every VM it names
//! registered), and written only when all of it holds.
//!
//! [`ready`] asks CloudStack whether a failed-over VM passes its gates.
//!
//! Architecture invariant: this crate never changes CloudStack; it keeps plans in the
//! store and reads CloudStack only to check a VM's readiness. Running a plan is the
//! engine's, tier by tier, through the workflows each VM already has.

pub mod catalog;
pub mod definition;
mod hooks;
pub mod order;
pub mod ready;
mod rules;
pub mod runner;

pub use catalog::{DrillStatus, PlanError, Stored, Updated};
pub use definition::{OnFailure, ParseError, PlanDefinition, PlanHook, Policy, Scope, Tier, When};
pub use rules::{
    MAX_DELAY_SECS, MAX_DRILL_INTERVAL_DAYS, MAX_HOOK_TIMEOUT_SECS, MAX_PLAN_NAME_LEN, check_plan,
};
