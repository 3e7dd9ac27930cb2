//! The executor: runs a saga's steps durably on the store, under the run's lease —
//! forward, retrying transient failures, then (after a definitive one) unwinding in
//! reverse; see the crate's doc for the semantics.

use ids::RunId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use store::{Run, RunState, StepRecord, StepState, Store, StoreError, now_ms};

use crate::step::{Saga, StepContext, StepError};

mod outage;

/// How patient the executor is.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This worker's name in leases.
    pub owner: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// Attempts of one action or undo (the first included).
    pub max_attempts: i64,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// How long a step (action or undo) waits out a party that does not answer
    /// ([`StepError::Unreachable`]) before it fails: a management-server restart or
    /// upgrade takes minutes.
    pub outage_tolerance: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            owner: format!("worker-{}", std::process::id()),
            lease: Duration::from_secs(30),
            max_attempts: 5,
            backoff_first: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            outage_tolerance: Duration::from_secs(15 * 60),
        }
    }
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Every step that ran was undone; `error` is what made the run fail.
    Unwound {
        error: String,
    },
    /// An undo could not complete: an operator must look.
    Stuck {
        error: String,
    },
    /// Another worker took the run over; this one stopped.
    Fenced,
    /// Another worker holds a live lease on the run.
    Held,
    /// The run had already ended (abandoned, or in an end state it was found in).
    Ended(RunState),
}

/// In words, for a log line: `done`, `unwound: <error>`, `stuck: <error>`, `fenced`,
/// `held`, `ended: <state>`.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Done => f.write_str("done"),
            Outcome::Unwound { error } => write!(f, "unwound: {error}"),
            Outcome::Stuck { error } => write!(f, "stuck: {error}"),
            Outcome::Fenced => f.write_str("fenced: another worker took the run over"),
            Outcome::Held => f.write_str("held: another worker holds the run's lease"),
            Outcome::Ended(state) => write!(f, "ended: already {}", state.as_str()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no run {0}")]
    NoRun(String),
    #[error(
        "the run has {recorded} recorded steps but the workflow has {known}: was it started by another version of ferry?"
    )]
    Mismatch { recorded: usize, known: usize },
    #[error("the store failed")]
    Store(#[source] StoreError),
}

/// The executor.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    config: EngineConfig,
}

/// Either an outcome that ends the execution, or a store failure.
enum Stop {
    Outcome(Outcome),
    Error(EngineError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced { .. } => Stop::Outcome(Outcome::Fenced),
            other => Stop::Error(EngineError::Store(other)),
        }
    }
}

impl Engine {
    pub fn new(store: Store, config: EngineConfig) -> Self {
        Engine { store, config }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This worker's name in leases.
    pub fn owner(&self) -> &str {
        &self.config.owner
    }

    /// Executes (or resumes) the run under a lease, to its end or until fenced off.
    pub async fn execute<C: Send + Sync>(
        &self,
        run_id: &RunId,
        saga: &Saga<C>,
        ctx: &C,
    ) -> Result<Outcome, EngineError> {
        let run = self
            .store
            .run(run_id)
            .await
            .map_err(EngineError::Store)?
            .ok_or_else(|| EngineError::NoRun(run_id.to_string()))?;
        match run.state {
            RunState::Done => return Ok(Outcome::Done),
            RunState::Unwound => {
                return Ok(Outcome::Unwound {
                    error: run.error.unwrap_or_default(),
                });
            }
            RunState::Stuck => {
                return Ok(Outcome::Stuck {
                    error: run.error.unwrap_or_default(),
                });
            }
            RunState::Abandoned => return Ok(Outcome::Ended(RunState::Abandoned)),
            _ => {}
        }
        let lease_ms = self.config.lease.as_millis() as i64;
        let Some(generation) = self
            .store
            .acquire_run(run_id, &self.config.owner, lease_ms)
            .await
            .map_err(EngineError::Store)?
        else {
            return Ok(Outcome::Held);
        };
        let lost = Arc::new(AtomicBool::new(false));
        // Aborted when dropped: if this execution is itself dropped (its worker task
        // cancelled or dead), the lease must stop being renewed so another worker can
        // take the run over.
        let heartbeat = AbortOnDrop(self.heartbeat(run_id, generation, Arc::clone(&lost)));
        let result = self.drive(run_id, generation, saga, ctx, &lost).await;
        drop(heartbeat);
        let outcome = match result {
            Ok(outcome) | Err(Stop::Outcome(outcome)) => outcome,
            Err(Stop::Error(e)) => return Err(e),
        };
        if outcome != Outcome::Fenced {
            let _ = self.store.release_run(run_id, generation).await;
        }
        Ok(outcome)
    }

    fn heartbeat(
        &self,
        run_id: &RunId,
        generation: i64,
        lost: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let owner = self.config.owner.clone();
        let lease = self.config.lease;
        let run_id = run_id.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match store
                    .renew_run(&run_id, &owner, generation, lease.as_millis() as i64)
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::Fenced { .. }) => {
                        lost.store(true, Ordering::SeqCst);
                        tracing::warn!(run = %run_id, generation, "lease taken over by another worker");
                        return;
                    }
                    Err(e) => tracing::warn!(run = %run_id, error = %e, "cannot renew the lease"),
                }
            }
        })
    }

    async fn drive<C: Send + Sync>(
        &self,
        run_id: &RunId,
        generation: i64,
        saga: &Saga<C>,
        ctx: &C,
        lost: &AtomicBool,
    ) -> Result<Outcome, Stop> {
        let mut records = self.store.steps(run_id).await?;
        if records.len() > saga.steps.len()
            || records.iter().any(|r| {
                saga.steps.get(r.position as usize).map(|s| s.name()) != Some(r.name.as_str())
            })
        {
            return Err(Stop::Error(EngineError::Mismatch {
                recorded: records.len(),
                known: saga.steps.len(),
            }));
        }
        let run = self.load(run_id).await?;
        if run.state == RunState::Pending {
            self.store
                .set_run_state_fenced(run_id, generation, RunState::Running, None)
                .await?;
        }
        let mut outputs = BTreeMap::new();
        for r in &records {
            if let (StepState::Done, Some(out)) = (r.state, &r.output) {
                outputs.insert(
                    r.name.clone(),
                    serde_json::from_str(out).unwrap_or(Value::Null),
                );
            }
        }
        let mut run = self.load(run_id).await?;
        if run.state == RunState::Running {
            match self
                .forward(
                    &run,
                    generation,
                    saga,
                    ctx,
                    &mut records,
                    &mut outputs,
                    lost,
                )
                .await?
            {
                None => {
                    self.store
                        .set_run_state_fenced(run_id, generation, RunState::Done, None)
                        .await?;
                    self.event(run_id, "info", None, "run done").await;
                    return Ok(Outcome::Done);
                }
                Some(error) => {
                    // What no undo will put back is said with the cause, so that the
                    // run's error says it however the unwind ends — stuck at any undo
                    // included — and the log says it once the unwind begins.
                    let leaves = unwind_leaves(saga, &records);
                    let error = match &leaves {
                        Some(leaves) => format!("{error}; {leaves}"),
                        None => error,
                    };
                    self.store
                        .set_run_state_fenced(run_id, generation, RunState::Unwinding, Some(&error))
                        .await?;
                    self.event(run_id, "error", None, &format!("unwinding: {error}"))
                        .await;
                    if let Some(leaves) = &leaves {
                        self.event(
                            run_id,
                            "warn",
                            None,
                            &format!("the unwind will not undo this: {leaves}"),
                        )
                        .await;
                    }
                    run = self.load(run_id).await?;
                }
            }
        }
        self.unwind(&run, generation, saga, ctx, &mut records, &outputs, lost)
            .await
    }

    async fn load(&self, run_id: &RunId) -> Result<Run, Stop> {
        self.store
            .run(run_id)
            .await?
            .ok_or_else(|| Stop::Error(EngineError::NoRun(run_id.to_string())))
    }

    async fn event(&self, run_id: &RunId, level: &str, step: Option<&str>, message: &str) {
        if let Err(e) = self
            .store
            .add_event(run_id, level, step, message, None)
            .await
        {
            tracing::warn!(run = %run_id, error = %e, "cannot record an event");
        }
    }

    fn backoff(&self, attempt: i64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.clamp(1, 16) as u32 - 1);
        (self.config.backoff_first * factor).min(self.config.backoff_max)
    }

    /// Runs the steps not yet done. `Some(error)` when the run must unwind.
    #[allow(clippy::too_many_arguments)]
    async fn forward<C: Send + Sync>(
        &self,
        run: &Run,
        generation: i64,
        saga: &Saga<C>,
        ctx: &C,
        records: &mut Vec<StepRecord>,
        outputs: &mut BTreeMap<String, Value>,
        lost: &AtomicBool,
    ) -> Result<Option<String>, Stop> {
        for (position, step) in saga.steps.iter().enumerate() {
            let recorded = records.get(position).cloned();
            if matches!(recorded.as_ref().map(|r| r.state), Some(StepState::Done)) {
                continue;
            }
            if lost.load(Ordering::SeqCst) {
                return Err(Stop::Outcome(Outcome::Fenced));
            }
            if self.load(&run.id).await?.cancel_requested {
                return Ok(Some("cancelled by an operator".to_string()));
            }
            let mut record = recorded.unwrap_or(StepRecord {
                position: position as i64,
                name: step.name().to_string(),
                state: StepState::Running,
                attempts: 0,
                output: None,
                error: None,
                started_at: Some(now_ms()),
                finished_at: None,
                undo_started_at: None,
                undo_finished_at: None,
            });
            let mut outage = None;
            loop {
                record.state = StepState::Running;
                record.attempts += 1;
                record.error = None;
                self.store.put_step(&run.id, generation, &record).await?;
                if records.len() <= position {
                    records.push(record.clone());
                } else {
                    records[position] = record.clone();
                }
                if outage.is_none() {
                    self.event(
                        &run.id,
                        "info",
                        Some(step.name()),
                        &format!("step {} (attempt {})", step.name(), record.attempts),
                    )
                    .await;
                }
                let cx = StepContext {
                    ctx,
                    run,
                    generation,
                    outputs,
                    attempt: record.attempts,
                    step: step.name(),
                };
                let Some(result) = self
                    .attempt(
                        (run, generation, step.name()),
                        ("action", record.attempts),
                        &mut outage,
                        lost,
                        step.run(&cx),
                    )
                    .await?
                else {
                    // An outage is waited out; its attempts are not counted.
                    record.attempts -= 1;
                    continue;
                };
                match result {
                    Ok(output) => {
                        record.state = StepState::Done;
                        record.output = Some(output.to_string());
                        record.finished_at = Some(now_ms());
                        self.store.put_step(&run.id, generation, &record).await?;
                        records[position] = record.clone();
                        outputs.insert(step.name().to_string(), output);
                        break;
                    }
                    Err(StepError::Transient(e)) if record.attempts < self.config.max_attempts => {
                        self.event(
                            &run.id,
                            "warn",
                            Some(step.name()),
                            &format!("step {} will be retried: {e}", step.name()),
                        )
                        .await;
                        record.error = Some(e);
                        tokio::time::sleep(self.backoff(record.attempts)).await;
                        if lost.load(Ordering::SeqCst) {
                            return Err(Stop::Outcome(Outcome::Fenced));
                        }
                    }
                    Err(e) => {
                        let error = match e {
                            StepError::Transient(e) => format!(
                                "step {} failed after {} attempts: {e}",
                                step.name(),
                                record.attempts
                            ),
                            StepError::Definitive(e) | StepError::Unreachable { error: e, .. } => {
                                format!("step {} failed: {e}", step.name())
                            }
                        };
                        record.state = StepState::Failed;
                        record.error = Some(error.clone());
                        record.finished_at = Some(now_ms());
                        self.store.put_step(&run.id, generation, &record).await?;
                        records[position] = record.clone();
                        self.event(&run.id, "error", Some(step.name()), &error)
                            .await;
                        return Ok(Some(error));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Undoes, in reverse, every step that ran and is not undone yet.
    #[allow(clippy::too_many_arguments)]
    async fn unwind<C: Send + Sync>(
        &self,
        run: &Run,
        generation: i64,
        saga: &Saga<C>,
        ctx: &C,
        records: &mut [StepRecord],
        outputs: &BTreeMap<String, Value>,
        lost: &AtomicBool,
    ) -> Result<Outcome, Stop> {
        // What made the run unwind: kept in `cause`, since `error` says what got stuck
        // once an undo failed.
        let original = run
            .cause
            .clone()
            .or_else(|| run.error.clone())
            .unwrap_or_else(|| "unwinding".to_string());
        for position in (0..records.len()).rev() {
            let step = &saga.steps[position];
            let mut record = records[position].clone();
            if record.state == StepState::Undone {
                continue;
            }
            if lost.load(Ordering::SeqCst) {
                return Err(Stop::Outcome(Outcome::Fenced));
            }
            let output: Option<Value> = record
                .output
                .as_deref()
                .filter(|_| record.state != StepState::Failed)
                .and_then(|o| serde_json::from_str(o).ok());
            // The undo's own time begins now — unless it was under way already (a run
            // resumed mid-undo), and again when an operator retries a stuck one.
            if record.state != StepState::Undoing || record.undo_started_at.is_none() {
                record.undo_started_at = Some(now_ms());
                record.undo_finished_at = None;
            }
            let mut attempt = 0;
            let mut outage = None;
            loop {
                attempt += 1;
                record.state = StepState::Undoing;
                self.store.put_step(&run.id, generation, &record).await?;
                if outage.is_none() {
                    self.event(
                        &run.id,
                        "info",
                        Some(step.name()),
                        &format!("undo {} (attempt {attempt})", step.name()),
                    )
                    .await;
                }
                let cx = StepContext {
                    ctx,
                    run,
                    generation,
                    outputs,
                    attempt,
                    step: step.name(),
                };
                let Some(result) = self
                    .attempt(
                        (run, generation, step.name()),
                        ("undo", attempt),
                        &mut outage,
                        lost,
                        step.undo(&cx, output.as_ref()),
                    )
                    .await?
                else {
                    attempt -= 1;
                    continue;
                };
                match result {
                    Ok(()) => {
                        record.state = StepState::Undone;
                        record.undo_finished_at = Some(now_ms());
                        self.store.put_step(&run.id, generation, &record).await?;
                        records[position] = record;
                        break;
                    }
                    Err(StepError::Transient(e)) if attempt < self.config.max_attempts => {
                        self.event(
                            &run.id,
                            "warn",
                            Some(step.name()),
                            &format!("undo of {} will be retried: {e}", step.name()),
                        )
                        .await;
                        tokio::time::sleep(self.backoff(attempt)).await;
                    }
                    Err(e) => {
                        let error = format!(
                            "undo of step {} failed: {e} (the run was unwinding because: {original}); \
                             fix the cause and retry the run, or abandon it and clean up by hand",
                            step.name()
                        );
                        record.state = StepState::UndoFailed;
                        record.error = Some(e.to_string());
                        record.undo_finished_at = Some(now_ms());
                        self.store.put_step(&run.id, generation, &record).await?;
                        records[position] = record;
                        self.store
                            .set_run_state_fenced(
                                &run.id,
                                generation,
                                RunState::Stuck,
                                Some(&error),
                            )
                            .await?;
                        self.event(&run.id, "error", Some(step.name()), &error)
                            .await;
                        return Ok(Outcome::Stuck { error });
                    }
                }
            }
        }
        self.store
            .set_run_state_fenced(&run.id, generation, RunState::Unwound, Some(&original))
            .await?;
        self.event(&run.id, "info", None, &format!("run unwound: {original}"))
            .await;
        Ok(Outcome::Unwound { error: original })
    }
}

/// What the steps whose actions finished say an unwind leaves as it is
/// ([`crate::step::Step::unwind_leaves`]), in their order, joined; `None` when nothing.
fn unwind_leaves<C: Send + Sync>(saga: &Saga<C>, records: &[StepRecord]) -> Option<String> {
    let said: Vec<String> = records
        .iter()
        .filter(|r| r.state == StepState::Done)
        .filter_map(|r| {
            let output: Value = serde_json::from_str(r.output.as_deref()?).ok()?;
            saga.steps.get(r.position as usize)?.unwind_leaves(&output)
        })
        .collect();
    (!said.is_empty()).then(|| said.join("; "))
}

/// Records in `ferry_step_duration_seconds` one attempt of a step's action or undo
/// (`phase`) that began at `started`.
fn observe_step(run: &Run, step: &str, phase: &'static str, ok: bool, started: Instant) {
    metrics::histogram!(
        "ferry_step_duration_seconds",
        "workflow" => run.workflow.as_str(),
        "step" => step.to_string(),
        "phase" => phase,
        "result" => if ok { "ok" } else { "error" },
    )
    .record(started.elapsed().as_secs_f64());
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Puts a stuck run back to unwinding, so the next execution retries the undo that
/// failed (after an operator fixed its cause).
pub async fn retry_stuck(store: &Store, run_id: &RunId) -> Result<(), EngineError> {
    store
        .run(run_id)
        .await
        .map_err(EngineError::Store)?
        .ok_or_else(|| EngineError::NoRun(run_id.to_string()))?;
    store
        .retry_stuck_run(run_id)
        .await
        .map_err(EngineError::Store)?;
    store
        .add_event(run_id, "warn", None, "retried by an operator", None)
        .await
        .map_err(EngineError::Store)
}

/// Gives up on a stuck run: it ends `abandoned`, keeping its error, and no longer holds
/// its VM. Whatever its failed undo left behind is the operator's to clean up — the
/// run's steps and log say what that is.
pub async fn abandon(store: &Store, run_id: &RunId) -> Result<(), EngineError> {
    let run = store
        .run(run_id)
        .await
        .map_err(EngineError::Store)?
        .ok_or_else(|| EngineError::NoRun(run_id.to_string()))?;
    if run.state != RunState::Stuck {
        return Err(EngineError::Store(StoreError::Refused(format!(
            "run {run_id} is {}, not stuck: only a stuck run can be abandoned (cancel a running one)",
            run.state
        ))));
    }
    store
        .add_event(run_id, "warn", None, "abandoned by an operator", None)
        .await
        .map_err(EngineError::Store)?;
    store
        .set_run_state(run_id, RunState::Abandoned, None)
        .await
        .map_err(EngineError::Store)
}
