//! What a step is: an action and its undo over a context the workflow supplies
//! ([`Step`], or [`TypedStep`] with a declared output type), what it sees while it runs
//! ([`StepContext`]: the outputs of the steps before it, read typed through their
//! [`Output`]), how it fails ([`StepError`]), and the ordered list a workflow is
//! ([`Saga`]). The executor (`executor`) runs them.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use store::Run;

/// How a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Nothing more can be done by retrying: unwind.
    #[error("{0}")]
    Definitive(String),
    /// Try again (after a pause): nothing happened, or it is not known yet whether
    /// anything did — the next attempt looks first.
    #[error("{0}")]
    Transient(String),
    /// A party the step needs did not answer at all (`of`: `CloudStack`, `the volume
    /// daemon`): refused, reset, timed out, a proxy's 5xx. The executor waits such an
    /// outage out — up to [`crate::EngineConfig::outage_tolerance`], attempts not
    /// counted — and then runs the step again, which looks before it acts.
    #[error("{error}")]
    Unreachable {
        of: String,
        reason: String,
        error: String,
    },
}

/// What a step sees: the workflow's context, the run, and the outputs of the steps
/// before it (by name).
pub struct StepContext<'a, C> {
    pub ctx: &'a C,
    pub run: &'a Run,
    pub generation: i64,
    pub outputs: &'a BTreeMap<String, Value>,
    /// 1 for the first attempt of this action (or undo).
    pub attempt: i64,
    /// The step's name.
    pub step: &'a str,
}

impl<C> StepContext<'_, C> {
    /// The output of an earlier step, as the type it declared. A step that has not
    /// finished (or is not in this saga), or whose recorded output does not have that
    /// type's shape, is a definitive error: the workflow cannot go on without it.
    pub fn lookup<T: DeserializeOwned>(&self, step: Output<T>) -> Result<T, StepError> {
        self.lookup_if_done(step)?.ok_or_else(|| {
            StepError::Definitive(format!("step `{}` has no recorded output", step.name))
        })
    }

    /// Like [`StepContext::lookup`], but `None` when the step has no recorded output
    /// (it has not finished, or this saga does not have it).
    pub fn lookup_if_done<T: DeserializeOwned>(
        &self,
        step: Output<T>,
    ) -> Result<Option<T>, StepError> {
        self.outputs
            .get(step.name)
            .map(|value| step.read(value))
            .transpose()
    }
}

/// A step's name and the type of its output, declared once: the step runs under the
/// name (a [`TypedStep`] returns it from [`TypedStep::output`]), and the steps after it
/// read what it recorded as `T` ([`StepContext::lookup`]).
pub struct Output<T> {
    name: &'static str,
    output: PhantomData<fn() -> T>,
}

impl<T> Output<T> {
    pub const fn new(name: &'static str) -> Self {
        Output {
            name,
            output: PhantomData,
        }
    }

    /// The step's name, as recorded with the run.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<T: DeserializeOwned> Output<T> {
    /// Reads a recorded output of this step (as stored by the executor, or as a reader
    /// outside the engine finds it in the store) as `T`.
    pub fn read(&self, value: &Value) -> Result<T, StepError> {
        T::deserialize(value).map_err(|e| {
            StepError::Definitive(format!(
                "the recorded output of step `{}` cannot be read: {e}",
                self.name
            ))
        })
    }
}

impl<T> Clone for Output<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Output<T> {}

impl<T> fmt::Debug for Output<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Output").field(&self.name).finish()
    }
}

/// One step of a saga.
#[async_trait]
pub trait Step<C: Send + Sync>: Send + Sync {
    /// A stable name: recorded with the run and used to find outputs.
    fn name(&self) -> &str;
    /// The action: an idempotent ensure. Its output is recorded.
    async fn run(&self, cx: &StepContext<'_, C>) -> Result<Value, StepError>;
    /// The undo: also idempotent, and correct whether the action did nothing, part of
    /// its work or all of it. `output` is the action's output if it finished.
    ///
    /// By default there is nothing to undo: a step that only reads (a validation), or
    /// one of a forward workflow (whose next run finishes what this one left).
    async fn undo(
        &self,
        _cx: &StepContext<'_, C>,
        _output: Option<&Value>,
    ) -> Result<(), StepError> {
        Ok(())
    }

    /// What an unwind leaves as it is after this step's action finished with `output`:
    /// something outside the saga's reach that the undo cannot put back (an operator's
    /// hook powered a VM off), in words for the run's error and log. `None`, the
    /// default, when the undo puts back all the action did.
    fn unwind_leaves(&self, _output: &Value) -> Option<String> {
        None
    }
}

/// A step whose output has a declared type: what a workflow implements. Every
/// `TypedStep` is a [`Step`], which records the output as JSON.
#[async_trait]
pub trait TypedStep<C: Send + Sync>: Send + Sync {
    /// What the action returns, recorded as JSON.
    type Output: Serialize + DeserializeOwned + Send + Sync;

    /// The step's name and output type ([`Output`]), declared once where the steps that
    /// read it can name it too.
    fn output(&self) -> Output<Self::Output>;

    /// The action: an idempotent ensure (see [`Step::run`]).
    async fn run(&self, cx: &StepContext<'_, C>) -> Result<Self::Output, StepError>;

    /// The undo (see [`Step::undo`]); `output` is the action's output if it finished
    /// (and reads as `Self::Output`). Nothing to undo by default.
    async fn undo(
        &self,
        _cx: &StepContext<'_, C>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        Ok(())
    }

    /// What an unwind leaves as it is after the action returned `output` (see
    /// [`Step::unwind_leaves`]); `None` by default.
    fn unwind_leaves(&self, _output: &Self::Output) -> Option<String> {
        None
    }
}

#[async_trait]
impl<C: Send + Sync, S: TypedStep<C>> Step<C> for S {
    fn name(&self) -> &str {
        self.output().name()
    }

    async fn run(&self, cx: &StepContext<'_, C>) -> Result<Value, StepError> {
        let output = TypedStep::run(self, cx).await?;
        serde_json::to_value(output).map_err(|e| {
            StepError::Definitive(format!(
                "the output of step `{}` cannot be recorded: {e}",
                self.output().name()
            ))
        })
    }

    async fn undo(&self, cx: &StepContext<'_, C>, output: Option<&Value>) -> Result<(), StepError> {
        // An output that does not read as the step's type is as good as none: the
        // undo is correct whatever the action did.
        let output = output.and_then(|value| match self.output().read(value) {
            Ok(output) => Some(output),
            Err(e) => {
                tracing::warn!(step = self.output().name(), error = %e, "undoing without the action's output");
                None
            }
        });
        TypedStep::undo(self, cx, output).await
    }

    fn unwind_leaves(&self, output: &Value) -> Option<String> {
        let output = self.output().read(output).ok()?;
        TypedStep::unwind_leaves(self, &output)
    }
}

/// An ordered list of steps.
pub struct Saga<C> {
    pub steps: Vec<Box<dyn Step<C>>>,
}

impl<C> Saga<C> {
    pub fn new(steps: Vec<Box<dyn Step<C>>>) -> Self {
        Saga { steps }
    }
}
