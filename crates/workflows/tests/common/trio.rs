//! The fault wrapper and case runner the saga-trio tests share: any step of a real
//! saga can be made to fail before or after its action, run its action or undo
//! twice, or hang (a worker dying mid-step).

use ::ids::RunId;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use engine::{Outcome, Saga, Step, StepContext, StepError};
use futures::future::BoxFuture;
use serde_json::Value;
use store::{RunState, StepState};
use tokio::sync::Notify;
use workflows::Env;

use super::{Rig, TestResult};

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
    /// Run the real action, tell the test, then never return: a worker that dies
    /// after the action took effect and before its output was recorded.
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
