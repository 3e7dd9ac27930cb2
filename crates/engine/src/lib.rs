//! ferry's saga executor: a workflow is an ordered list of steps, each an idempotent
//! "ensure" action paired with an undo, executed durably on the store.
//!
//! # Semantics
//!
//! - Before a step's action runs, the step is recorded `running` (with its attempt
//!   count); its output is recorded when it returns. A run therefore always knows
//!   which step was in progress when a process died, and resumes *there*: the action
//!   runs again, which is safe because actions are ensures (they look before they
//!   act, and the volume daemon answers a repeated idempotency key with the first
//!   result instead of acting twice).
//! - A [`StepError::Transient`] is retried with capped backoff, up to
//!   [`EngineConfig::max_attempts`]; an action whose outcome is unknown reports it as
//!   transient, and its next attempt looks before acting. A [`StepError::Definitive`]
//!   (or running out of attempts) fails the run: the executor *unwinds*, running the
//!   undo of every step that ran — the failed one included, since a composite step may
//!   have done part of its work, so undos must tolerate an action that did nothing,
//!   some or all — in reverse order.
//! - A [`StepError::Unreachable`] — CloudStack (or the volume daemon) not answering
//!   at all, as during a management-server restart — is waited out instead: capped
//!   backoff, attempts not counted, for up to [`EngineConfig::outage_tolerance`], for
//!   actions and undos alike. While it waits, the run records what it waits for and
//!   since when (`waiting_since`, `waiting_for`), an event says so, and the gauge
//!   `ferry_runs_waiting{for}` counts it; when the party answers, the step runs again
//!   (it looks before it acts) and an event says after how long. Only a spent
//!   tolerance fails the step.
//! - An undo that still fails after its attempts leaves the run `stuck`, with the
//!   step and the reason, for an operator to [`retry_stuck`] (after fixing the cause)
//!   or to abandon. A run ends `done`, `unwound` (with the error that caused it) or
//!   `stuck` — never "done" when something failed.
//! - A step whose action changes something no undo puts back (an operator's hook that
//!   powered a VM off) says so ([`Step::unwind_leaves`]). When a run begins to unwind
//!   after such a step finished, what it says is added to the run's error — the cause,
//!   which the error keeps however the unwind ends, `stuck` at any undo included — and
//!   to the log as a `warn` event.
//! - Cancellation is a flag read before each step; a cancelled run unwinds.
//! - A worker holds the run's lease while it executes, renewed in the background.
//!   Taking a lease raises the run's generation, and every write the executor makes
//!   carries the generation it holds: once another worker has taken the run over
//!   (after this one stalled past its lease), the store refuses the stale worker's
//!   next write and the executor stops ([`Outcome::Fenced`]) without running anything
//!   further.
//!
//! # Typed outputs
//!
//! A step's output is recorded as JSON and read by the steps after it. A workflow
//! declares each step's name and the type of its output once, as an [`Output`]; a
//! [`TypedStep`] returns that type, and a later step reads it back as that type with
//! [`StepContext::lookup`] (as Omicron's sagas do with `lookup::<T>(name)`), never by
//! picking a field out of JSON by name. Every `TypedStep` is a [`Step`]; the executor
//! itself only sees JSON, so a run recorded before a step's output had a type resumes
//! as long as the JSON has the type's shape.
//!
//! Every attempt of an action or undo is measured through the `metrics` facade, as
//! `ferry_step_duration_seconds{workflow, step, phase, result}` (`phase` is `action`
//! or `undo`, `result` is `ok` or `error`).
//!
//! Why not `steno`: see `docs/decisions/0001-saga-executor.md`.
//!
//! Architecture invariant: the engine knows nothing of CloudStack, volumes or SQL; a
//! step is an opaque action and undo over a context the workflow supplies.

mod executor;
mod step;

pub use executor::{Engine, EngineConfig, EngineError, Outcome, abandon, retry_stuck};
pub use step::{Output, Saga, Step, StepContext, StepError, TypedStep};
