//! The operator's hooks as steps: `before_live` before a live failover changes
//! anything (a failing hook stops it), `after_rollback` once a rollback is done in
//! CloudStack (a failing hook is reported, not undone). See [`crate::live`] and
//! [`crate::rollback`].

use async_trait::async_trait;
use engine::{Output, StepError, TypedStep};

use crate::ensure::event;
use crate::env::{Cx, Env};
use crate::hooks::{HookContext, HookPoint, HookReport, run_all};
use crate::jobs::WorkflowStep;
use crate::run::protected_vm;

/// Runs the `before_live` hooks.
pub(crate) struct BeforeLiveHooks;

const BEFORE_LIVE_HOOKS: Output<HookReport> = Output::new("run-hooks");

/// The `before_live` hooks a live failover's recorded steps show to have run (they
/// may have powered the source off), in order; none when the step did not run or had
/// no hooks.
pub(crate) fn before_live_hooks_ran(steps: &[store::StepRecord]) -> Vec<String> {
    steps
        .iter()
        .find(|s| s.name == BEFORE_LIVE_HOOKS.name())
        .filter(|s| s.state != store::StepState::Running || s.output.is_some())
        .and_then(|s| s.output.as_deref())
        .and_then(|o| serde_json::from_str::<HookReport>(o).ok())
        .map(|report| report.ran)
        .unwrap_or_default()
}

#[async_trait]
impl TypedStep<Env> for BeforeLiveHooks {
    type Output = HookReport;

    fn output(&self) -> Output<HookReport> {
        BEFORE_LIVE_HOOKS
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let hooks = HookPoint::BeforeLive.of(&cx.ctx.hooks);
        let vm = protected_vm(cx).await?;
        let context = HookContext {
            hook: HookPoint::BeforeLive.as_str(),
            vm: &vm.name,
            run_id: &cx.run.id,
        };
        let report = run_all(hooks, HookPoint::BeforeLive, &context).await;
        for ran in &report.ran {
            event(cx, "info", BEFORE_LIVE_HOOKS.name(), &format!("hook {ran}")).await;
        }
        if let Some(failed) = report.failed {
            return Err(StepError::Definitive(format!(
                "{failed}; nothing was changed in CloudStack"
            )));
        }
        Ok(report)
    }

    /// The hooks that ran may have powered the source off; no undo powers it on.
    fn unwind_leaves(&self, report: &HookReport) -> Option<String> {
        (!report.ran.is_empty()).then(|| {
            format!(
                "its before_live hooks had run ({}): the source VM may be powered off and serving nothing — power it on (the after_rollback hooks do) if it must serve until the failover is tried again",
                report.ran.join("; ")
            )
        })
    }

    /// Nothing in CloudStack to undo; what the hooks did to the source is left as it is
    /// (see the module doc), and said so.
    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        if !cx.ctx.hooks.before_live.is_empty() {
            event(
                cx,
                "warn",
                BEFORE_LIVE_HOOKS.name(),
                "the before_live hooks are not undone: the source VM may be powered off; \
                 power it on (the after_rollback hooks do) if it should serve until the next attempt",
            )
            .await;
        }
        Ok(())
    }
}

impl WorkflowStep for BeforeLiveHooks {}

/// Runs the `after_rollback` hooks.
pub(crate) struct AfterRollbackHooks;

pub(crate) const AFTER_ROLLBACK_HOOKS: Output<HookReport> = Output::new("run-hooks");

#[async_trait]
impl TypedStep<Env> for AfterRollbackHooks {
    type Output = HookReport;

    fn output(&self) -> Output<HookReport> {
        AFTER_ROLLBACK_HOOKS
    }

    /// Never fails on a hook's account (see the module doc): the failure is reported.
    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let hooks = HookPoint::AfterRollback.of(&cx.ctx.hooks);
        if hooks.is_empty() {
            return Ok(HookReport::default());
        }
        let vm = protected_vm(cx).await?;
        let context = HookContext {
            hook: HookPoint::AfterRollback.as_str(),
            vm: &vm.name,
            run_id: &cx.run.id,
        };
        let report = run_all(hooks, HookPoint::AfterRollback, &context).await;
        for ran in &report.ran {
            event(cx, "info", "run-hooks", &format!("hook {ran}")).await;
        }
        if let Some(failed) = &report.failed {
            event(
                cx,
                "warn",
                "run-hooks",
                &format!(
                    "{failed}; CloudStack is rolled back all the same — power the source on by hand if it should serve"
                ),
            )
            .await;
        }
        Ok(report)
    }
}

impl WorkflowStep for AfterRollbackHooks {}
