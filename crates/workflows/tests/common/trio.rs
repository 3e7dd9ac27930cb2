//! The fault wrapper and case runner the saga-trio tests share: any step of a real
//! saga can be made to fail before or after its action, run its action or undo
//! twice, or hang (a worker dying mid-step). And the cases they run alike for each
//! workflow: a failure at a step, every undo twice, a worker dying inside a step.

use ::ids::RunId;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine::{Engine, Outcome, Saga, Step, StepContext, StepError};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use store::{RunState, StepState};
use tokio::sync::Notify;
use workflows::test_failover::Mode;
use workflows::{Env, cleanup, test_failover};

use super::flows::{Baseline, Flow};
use super::{Rig, TestResult, engine_config, rig};

// ---- The fault wrapper (as in saga_trio.rs) ----------------------------------------------

/// What a wrapped step's action does.
#[derive(Clone)]
pub enum Action {
    /// The real action, once.
    Once,
    /// Fail definitively without running the real action.
    FailBefore,
    /// Run the real action, then fail definitively anyway.
    FailAfter,
    /// Run the real action twice and return the second output.
    Twice,
    /// On the first attempt, tell the test, then never return: a worker that dies
    /// with the step recorded as started and its action not begun.
    HangBefore(Arc<Notify>),
    /// On the first attempt, run the real action, tell the test, then never return:
    /// a worker that dies after the action took effect and before its output was
    /// recorded.
    HangAfter(Arc<Notify>),
}

/// What a wrapped step's undo does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    Once,
    /// Run the real undo twice.
    Twice,
}

/// A real step with a fault around it.
pub struct Faulty {
    pub inner: Box<dyn Step<Env>>,
    pub action: Action,
    pub undo: Undo,
}

#[async_trait]
impl Step<Env> for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        match &self.action {
            Action::Once => self.inner.run(cx).await,
            Action::FailBefore => Err(StepError::Definitive(format!(
                "injected failure before the action of {}",
                self.name()
            ))),
            Action::FailAfter => {
                self.inner.run(cx).await?;
                Err(StepError::Definitive(format!(
                    "injected failure after the action of {} ran",
                    self.name()
                )))
            }
            Action::Twice => {
                self.inner.run(cx).await?;
                self.inner.run(cx).await
            }
            Action::HangBefore(_) | Action::HangAfter(_) if cx.attempt > 1 => {
                self.inner.run(cx).await
            }
            Action::HangBefore(reached) => {
                reached.notify_one();
                std::future::pending().await
            }
            Action::HangAfter(reached) => {
                self.inner.run(cx).await?;
                reached.notify_one();
                std::future::pending().await
            }
        }
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        output: Option<&Value>,
    ) -> Result<(), StepError> {
        self.inner.undo(cx, output).await?;
        if self.undo == Undo::Twice {
            self.inner.undo(cx, output).await?;
        }
        Ok(())
    }
}

/// `saga` with each step wrapped as `fault` says for its position.
pub fn faulty(saga: Saga<Env>, fault: impl Fn(usize) -> (Action, Undo)) -> Saga<Env> {
    Saga::new(
        saga.steps
            .into_iter()
            .enumerate()
            .map(|(k, inner)| {
                let (action, undo) = fault(k);
                Box::new(Faulty {
                    inner,
                    action,
                    undo,
                }) as Box<dyn Step<Env>>
            })
            .collect(),
    )
}

/// `saga` with `action` at step `k` and every other step untouched.
pub fn fault_at(saga: Saga<Env>, k: usize, action: Action) -> Saga<Env> {
    faulty(saga, |i| {
        (
            if i == k { action.clone() } else { Action::Once },
            Undo::Once,
        )
    })
}

/// `saga` with every action run twice.
pub fn twice(saga: Saga<Env>) -> Saga<Env> {
    faulty(saga, |_| (Action::Twice, Undo::Once))
}

pub fn step_names(saga: &Saga<Env>) -> Vec<String> {
    saga.steps.iter().map(|s| s.name().to_string()).collect()
}

/// The failures injected at each step: before, then after its action.
pub fn failures() -> [(&'static str, Action); 2] {
    [
        ("failing before", Action::FailBefore),
        ("failing after", Action::FailAfter),
    ]
}

// ---- Running cases and checking outcomes -------------------------------------------------

pub type Cases = Vec<(String, BoxFuture<'static, TestResult>)>;

/// A case for each step `k` of `saga`, labelled with it: `case(k)`.
pub fn per_step<F>(saga: &Saga<Env>, case: impl Fn(usize) -> F) -> Cases
where
    F: Future<Output = TestResult> + Send + 'static,
{
    step_names(saga)
        .into_iter()
        .enumerate()
        .map(|(k, name)| (format!("{k} {name}"), case(k).boxed()))
        .collect()
}

/// A case for each of the [`failures`] at each step `k` of `saga`, labelled with
/// both: `case(k, failure)`.
pub fn per_step_failing<F>(saga: &Saga<Env>, case: impl Fn(usize, Action) -> F) -> Cases
where
    F: Future<Output = TestResult> + Send + 'static,
{
    per_step_failing_where(saga, |_, _| true, case)
}

/// [`per_step_failing`], only where `keep(k, &failure)`.
pub fn per_step_failing_where<F>(
    saga: &Saga<Env>,
    keep: impl Fn(usize, &Action) -> bool,
    case: impl Fn(usize, Action) -> F,
) -> Cases
where
    F: Future<Output = TestResult> + Send + 'static,
{
    let names = step_names(saga);
    let mut cases: Cases = Vec::new();
    for (label, action) in failures() {
        for (k, name) in names.iter().enumerate() {
            if keep(k, &action) {
                cases.push((
                    format!("{k} {name}, {label}"),
                    case(k, action.clone()).boxed(),
                ));
            }
        }
    }
    cases
}

/// Runs the cases one after another, each in its own task, and fails with the list
/// of the cases that failed (an error or a panic), not only the first.
pub async fn run_cases(cases: Cases) -> TestResult {
    assert!(!cases.is_empty());
    let total = cases.len();
    let mut failed = Vec::new();
    for (label, case) in cases {
        let started = Instant::now();
        let problem = match tokio::spawn(case).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                Some(
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".to_string()),
                )
            }
            Err(e) => Some(e.to_string()),
        };
        eprintln!(
            "case {label}: {} ({:?})",
            if problem.is_some() { "FAILED" } else { "ok" },
            started.elapsed()
        );
        if let Some(problem) = problem {
            failed.push(format!("- {label}: {problem}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    Ok(())
}

/// The run's events, for a failure message.
pub async fn events(rig: &Rig, run_id: &RunId) -> String {
    match rig.env.store.events(&RunId::from(run_id)).await {
        Ok(events) => format!("{events:?}"),
        Err(e) => format!("(no events: {e})"),
    }
}

pub async fn expect_done(rig: &Rig, run_id: &RunId, outcome: Outcome) -> TestResult {
    anyhow::ensure!(
        outcome == Outcome::Done,
        "expected the run to be done, got {outcome:?}; events: {}",
        events(rig, run_id).await
    );
    Ok(())
}

/// Checks that the run unwound because of the injected failure at `step`, that
/// nothing ran after it, and that every step that ran (the failed one included) was
/// undone.
pub async fn expect_unwound_by(
    rig: &Rig,
    run_id: &RunId,
    outcome: Outcome,
    step: &str,
) -> TestResult {
    let Outcome::Unwound { error } = &outcome else {
        anyhow::bail!(
            "expected the run to unwind, got {outcome:?}; events: {}",
            events(rig, run_id).await
        );
    };
    anyhow::ensure!(
        error.contains("injected") && error.contains(step),
        "the run unwound for another reason than the failure injected at {step}: {error}"
    );
    let run = rig.env.store.run(run_id).await?.expect("a run");
    assert_eq!(run.state, RunState::Unwound);
    let steps = rig.env.store.steps(&RunId::from(run_id)).await?;
    assert_eq!(
        steps.last().map(|s| s.name.as_str()),
        Some(step),
        "nothing ran after the failed step"
    );
    for s in &steps {
        assert_eq!(s.state, StepState::Undone, "step {} was not undone", s.name);
    }
    Ok(())
}

/// Runs `run` with the faulty `saga` and checks that it unwound because of the
/// failure injected at its step `k` ([`expect_unwound_by`]).
pub async fn expect_unwound_at(
    rig: &Rig,
    run: &store::Run,
    saga: Saga<Env>,
    k: usize,
) -> TestResult {
    let step = saga.steps[k].name().to_string();
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_unwound_by(rig, &run.id, outcome, &step).await
}

/// A fresh rig on which `flow` ran with its steps wrapped as `fault` says and unwound
/// because of the failure injected at step `k`; and what the rig was before the run.
pub async fn unwound(
    flow: Flow,
    k: usize,
    fault: impl Fn(usize) -> (Action, Undo),
) -> anyhow::Result<(Rig, Baseline)> {
    let rig = rig().await?;
    let base = flow.prepare(&rig).await?;
    let run = flow.start(&rig.env).await?;
    expect_unwound_at(&rig, &run, faulty(flow.saga(), fault), k).await?;
    Ok((rig, base))
}

/// [`unwound`] with `action` (a failure) at step `k`, every other step untouched.
pub async fn unwound_at(flow: Flow, k: usize, action: Action) -> anyhow::Result<(Rig, Baseline)> {
    unwound(flow, k, |i| {
        (
            if i == k { action.clone() } else { Action::Once },
            Undo::Once,
        )
    })
    .await
}

/// [`unwound`] by a failure at the last step, after its action ran, so that every
/// step is undone — each undo run twice in a row.
pub async fn unwound_with_every_undo_twice(flow: Flow) -> anyhow::Result<(Rig, Baseline)> {
    let last = flow.saga().steps.len() - 1;
    unwound(flow, last, |k| {
        (
            if k == last {
                Action::FailAfter
            } else {
                Action::Once
            },
            Undo::Twice,
        )
    })
    .await
}

/// A worker runs `flow` on a fresh rig until the action of step `k` has taken effect,
/// then dies (its task aborted) before recording it. A second worker, with a new
/// volume daemon on the same store, takes the run over once the first one's lease has
/// expired, and finishes it without doing anything twice: every step done, step `k`
/// attempted twice and every other once. Returns the rig, for the end state's checks.
pub async fn resumed_after_a_crash_in(flow: Flow, k: usize) -> anyhow::Result<Rig> {
    let rig = rig().await?;
    let run = flow.start(&rig.env).await?;
    let reached = Arc::new(Notify::new());
    let first = Engine::new(
        rig.env.store.clone(),
        engine_config("worker-1", Duration::from_millis(300)),
    );
    let saga = fault_at(flow.saga(), k, Action::HangAfter(reached.clone()));
    let env = rig.env.clone();
    let run_id = run.id.clone();
    let worker = tokio::spawn(async move { first.execute(&run_id, &saga, &env).await });
    tokio::time::timeout(Duration::from_secs(20), reached.notified())
        .await
        .map_err(|_| anyhow::anyhow!("step {k}'s action never finished"))?;
    worker.abort();
    assert!(worker.await.expect_err("aborted").is_cancelled());

    let second = Engine::new(
        rig.env.store.clone(),
        engine_config("worker-2", Duration::from_secs(30)),
    );
    let env = rig.restarted_env();
    let deadline = Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        match second.execute(&run.id, &flow.saga(), &env).await? {
            Outcome::Held if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            outcome => break outcome,
        }
    };
    expect_done(&rig, &run.id, outcome).await?;
    let steps = rig.env.store.steps(&RunId::from(&run.id)).await?;
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s.state, StepState::Done);
        assert_eq!(
            s.attempts,
            if i == k { 2 } else { 1 },
            "the run resumed at step {k}, and only there"
        );
    }
    Ok(rig)
}

/// Checks cloudsim's call counts: the target VM deployed once, the two replicas
/// attached once each (a test or live failover attaches nothing to the appliance, so
/// every attachVolume went to the target VM), and none of those calls failed.
pub async fn assert_one_deploy_and_two_attaches(rig: &Rig) -> TestResult {
    let stats = rig.stats().await?;
    let calls = |c: &str| stats.calls.get(c).copied().unwrap_or(0);
    assert_eq!(
        calls("deployVirtualMachine"),
        1,
        "deployVirtualMachine calls: {:?}",
        stats.calls
    );
    assert_eq!(
        calls("attachVolume"),
        2,
        "attachVolume calls: {:?}",
        stats.calls
    );
    for c in ["deployVirtualMachine", "attachVolume"] {
        assert_eq!(stats.errors.get(c), None, "failed {c} calls");
    }
    Ok(())
}

/// After a drill in `mode`, a cleanup that fails with `action` at step `k` ends
/// unwound (its undos do nothing: it is a forward workflow); a fresh cleanup then
/// finishes what it left, and pgtest1 is at rest with its replicas' content as before
/// the drill. Returns the rig and the second cleanup's run, for more checks.
pub async fn cleanup_finishes_after(
    mode: Mode,
    k: usize,
    action: Action,
) -> anyhow::Result<(Rig, store::Run)> {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", mode).await?;
    rig.done(&run, test_failover::saga_for(mode)).await?;

    let first = cleanup::start(&rig.env, "pgtest1").await?;
    expect_unwound_at(&rig, &first, fault_at(cleanup::saga(), k, action), k).await?;

    let second = cleanup::start(&rig.env, "pgtest1").await?;
    rig.done(&second, cleanup::saga()).await?;
    rig.assert_at_rest_as(&before).await?;
    Ok((rig, second))
}
