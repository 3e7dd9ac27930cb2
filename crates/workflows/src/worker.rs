//! Engine workers: the loop that finds runs to execute and executes them.
//!
//! A worker claims runs that are active and free (no live lease) — its own new ones,
//! and runs whose worker died — and executes each under the engine's lease, several at
//! once up to a limit. With PostgreSQL, several worker processes share one database:
//! the lease decides who executes a run, the fencing generation stops a worker that
//! lost it. With SQLite there is one worker process.
//!
//! Runs are picked up promptly: whoever creates a run calls [`Worker::wake`]; the
//! periodic claim (default every second) is only for runs created by other processes
//! and for leases that ran out.
//!
//! When a process starts, its volume daemon's unfinished operations are settled before
//! its worker executes anything ([`Worker::resume_and_run`]), so that no run resumes
//! into a volume that is still moving — except those of runs another live worker holds
//! ([`resume_volume_operations`]: the restart policy, here once).
//!
//! A worker reports through the `metrics` facade how each execution ended, as
//! `ferry_runs_total{workflow, outcome}`, and how many runs it is executing now, as
//! the gauge `ferry_runs_executing`.

use ids::RunId;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{Engine, Outcome, Saga};
use store::{Run, Store, Workflow};
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument as _;

use crate::env::Env;
use crate::jobs::{Steps, saga_of};
use crate::run::Mode;

/// The saga that executes `run` (a test failover by its recorded mode).
pub fn saga_for(run: &Run) -> Result<Saga<Env>, String> {
    let mode = match run.workflow {
        Workflow::TestFailover => Mode::of_run(run)?,
        _ => Mode::Replica,
    };
    Ok(saga_of_workflow(run.workflow, mode))
}

/// The saga of `workflow` (in `mode`, for a test failover).
pub(crate) fn saga_of_workflow(workflow: Workflow, mode: Mode) -> Saga<Env> {
    saga_of(steps_of(workflow, mode))
}

/// The steps of `workflow` (in `mode`, for a test failover), in order: what its saga
/// executes, and what [`crate::cost`] reads.
pub(crate) fn steps_of(workflow: Workflow, mode: Mode) -> Steps {
    match workflow {
        Workflow::TestFailover => crate::test_failover::steps_for(mode),
        Workflow::Cleanup => crate::cleanup::steps(),
        Workflow::LiveFailover => crate::live::steps(),
        Workflow::Rollback => crate::rollback::steps(),
        Workflow::Commit => crate::commit::steps(),
    }
}

/// Settles, when a process starts, the volume operations `daemon`'s journal holds
/// unfinished — waited on by their job ids, or resolved by looking at CloudStack — and
/// logs how each ended. The operations of runs that a live worker other than `worker`
/// (this process's) holds are left alone: that worker's own volume daemon is driving
/// them, and a step it resumes finds each under the same key. When it cannot be read
/// which runs others hold, nothing is resumed now (a run this worker resumes asks
/// again for its operations, by their keys).
pub async fn resume_volume_operations(daemon: &volumed::Local, store: &Store, worker: &str) {
    let held: HashSet<RunId> = match store.runs_held_by_others(worker).await {
        Ok(held) => held.into_iter().collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read which runs other workers hold; resuming nothing now");
            return;
        }
    };
    let keep = |op: &volumed::OpRecord| op.run_id.as_ref().is_none_or(|r| !held.contains(r));
    match daemon.resume_unfinished_where(keep).await {
        Ok(resumed) if !resumed.is_empty() => {
            tracing::info!(
                count = resumed.len(),
                "resumed the volume operations left in flight"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot resume the volume operations in flight"),
    }
}

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Runs executed at once by this worker.
    pub concurrency: usize,
    /// How often to look for runs nobody told this worker about.
    pub claim_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 64,
            claim_interval: Duration::from_secs(1),
        }
    }
}

/// A run this worker finished executing, and how.
pub type Finished = (RunId, Result<Outcome, engine::EngineError>);

struct Inner {
    engine: Engine,
    env: Env,
    config: WorkerConfig,
    wake: Notify,
    /// How many executions have ended here: what a plan run's driver watches so that
    /// it moves on as soon as a VM's run ends, not at its next look.
    ended: tokio::sync::watch::Sender<u64>,
    /// Runs this worker is executing now.
    running: Mutex<HashSet<RunId>>,
    slots: Semaphore,
}

impl Inner {
    /// Takes `run_id` for this worker unless it is already executing it here.
    fn take(&self, run_id: &RunId) -> bool {
        self.running
            .lock()
            .expect("poisoned")
            .insert(run_id.clone())
    }

    /// Executes a run this worker took, then lets it go.
    async fn execute(&self, run_id: RunId) -> Finished {
        let _slot = self.slots.acquire().await.expect("never closed");
        let _executing = Executing::start();
        // The workflow is `unknown` only when the run could not be read.
        let (workflow, outcome) = match self.env.store.run(&run_id).await {
            Ok(Some(run)) => (
                run.workflow.as_str(),
                match saga_for(&run) {
                    Ok(saga) => match self.env.for_vm(&run.vm_id).await {
                        Err(e) => Err(engine::EngineError::Store(e)),
                        Ok(env) => {
                            // Every log line of the run carries its id, workflow and VM.
                            let span = tracing::info_span!(
                                "run",
                                run = %run_id,
                                workflow = run.workflow.as_str(),
                                vm = %run.vm_id,
                            );
                            self.engine
                                .execute(&run_id, &saga, &env)
                                .instrument(span)
                                .await
                        }
                    },
                    Err(e) => Err(engine::EngineError::Store(store::StoreError::Corrupt(
                        format!("run {run_id}: {e}"),
                    ))),
                },
            ),
            Ok(None) => (
                "unknown",
                Err(engine::EngineError::NoRun(run_id.to_string())),
            ),
            Err(e) => ("unknown", Err(engine::EngineError::Store(e))),
        };
        metrics::counter!(
            "ferry_runs_total",
            "workflow" => workflow,
            "outcome" => outcome_label(&outcome),
        )
        .increment(1);
        match &outcome {
            Ok(outcome) => tracing::info!(run = %run_id, %outcome, "run executed"),
            Err(e) => tracing::error!(run = %run_id, error = %e, "run failed to execute"),
        }
        self.running.lock().expect("poisoned").remove(&run_id);
        self.ended.send_modify(|n| *n += 1);
        (run_id, outcome)
    }
}

/// The `outcome` label of `ferry_runs_total` for how an execution ended.
fn outcome_label(outcome: &Result<Outcome, engine::EngineError>) -> &'static str {
    match outcome {
        Ok(Outcome::Done) => "done",
        Ok(Outcome::Unwound { .. }) => "unwound",
        Ok(Outcome::Stuck { .. }) => "stuck",
        Ok(Outcome::Fenced) => "fenced",
        Ok(Outcome::Held) => "held",
        Ok(Outcome::Ended(_)) => "ended",
        Err(_) => "error",
    }
}

/// One run counted in the gauge `ferry_runs_executing` for as long as this lives, so
/// that an execution dropped at shutdown stops being counted too.
struct Executing;

impl Executing {
    fn start() -> Self {
        metrics::gauge!("ferry_runs_executing").increment(1.0);
        Executing
    }
}

impl Drop for Executing {
    fn drop(&mut self) {
        metrics::gauge!("ferry_runs_executing").decrement(1.0);
    }
}

/// An engine worker. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl Worker {
    pub fn new(engine: Engine, env: Env, config: WorkerConfig) -> Self {
        let slots = Semaphore::new(config.concurrency.max(1));
        Worker {
            inner: Arc::new(Inner {
                engine,
                env,
                config,
                wake: Notify::new(),
                ended: tokio::sync::watch::Sender::new(0),
                running: Mutex::new(HashSet::new()),
                slots,
            }),
        }
    }

    /// Changes each time an execution of this worker ends (whatever its outcome).
    pub fn executions_ended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.ended.subscribe()
    }

    /// Looks for runs now instead of at the next claim interval.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Claims every run that is free now and executes them (concurrently, up to the
    /// limit) to their end; returns how each ended. Runs another worker holds are left
    /// to it.
    pub async fn run_once(&self) -> Result<Vec<Finished>, store::StoreError> {
        let mut tasks = tokio::task::JoinSet::new();
        for run_id in self
            .inner
            .env
            .store
            .claimable_runs(self.inner.engine.owner())
            .await?
        {
            if self.inner.take(&run_id) {
                let inner = Arc::clone(&self.inner);
                tasks.spawn(async move { inner.execute(run_id).await });
            }
        }
        let mut finished = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(done) => finished.push(done),
                Err(e) => tracing::error!(error = %e, "a run's task panicked"),
            }
        }
        Ok(finished)
    }

    /// Settles the volume operations a previous process left in flight
    /// ([`resume_volume_operations`], with this worker's name), then claims and executes
    /// runs until `shutdown` completes ([`Worker::run`]). A shutdown while it settles
    /// stops it there.
    pub async fn resume_and_run(
        &self,
        daemon: &volumed::Local,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        tokio::select! {
            () = resume_volume_operations(daemon, &self.inner.env.store, self.inner.engine.owner()) => {}
            () = &mut shutdown => return,
        }
        self.run(shutdown).await;
    }

    /// Claims and executes runs until `shutdown` completes. Executions in progress are
    /// dropped at shutdown: their leases run out and another worker (or this one,
    /// restarted) resumes them where they were.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            match self
                .inner
                .env
                .store
                .claimable_runs(self.inner.engine.owner())
                .await
            {
                Ok(ids) => {
                    for run_id in ids {
                        if self.inner.take(&run_id) {
                            let inner = Arc::clone(&self.inner);
                            tasks.spawn(async move { inner.execute(run_id).await });
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for runs"),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.config.claim_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.abort_all();
    }
}
