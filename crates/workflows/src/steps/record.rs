//! The protected VM's state at the end of a workflow: `test_failed_over` or
//! `failed_over` with the target VM (undone back to `ready_for_failover`),
//! `ready_for_failover` after a cleanup or rollback, `committed`.

use async_trait::async_trait;
use engine::{Output, StepContext, StepError, TypedStep};
use serde::{Deserialize, Serialize};
use store::VmState;

use crate::env::{Env, store_error};
use crate::steps::checks::CHECK_VM;
use crate::steps::hooks::AFTER_ROLLBACK_HOOKS;
use crate::steps::vm::target_vm_id;

/// Records a failover's state with its target VM.
pub(crate) struct Record(pub(crate) VmState);

/// The state a workflow recorded for the protected VM, with its target VM when it has
/// one (and, after a rollback, the after_rollback hook that failed, or null).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Recorded {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_vm_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_rollback_failed: Option<Option<String>>,
}

pub(crate) const RECORD: Output<Recorded> = Output::new("record");

#[async_trait]
impl TypedStep<Env> for Record {
    type Output = Recorded;

    fn output(&self) -> Output<Recorded> {
        RECORD
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let target = target_vm_id(cx)?;
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, self.0, Some(&target))
            .await
            .map_err(|e| store_error(&format!("recording {}", self.0), e))?;
        Ok(Recorded {
            state: self.0.as_str().into(),
            target_vm_id: Some(target),
            after_rollback_failed: None,
        })
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::ReadyForFailover, None)
            .await
            .map_err(|e| store_error("recording ready_for_failover", e))
    }
}

/// Records `ready_for_failover` after a cleanup.
pub(crate) struct RecordReady;

#[async_trait]
impl TypedStep<Env> for RecordReady {
    type Output = Recorded;

    fn output(&self) -> Output<Recorded> {
        RECORD
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::ReadyForFailover, None)
            .await
            .map_err(|e| store_error("recording ready_for_failover", e))?;
        Ok(Recorded {
            state: VmState::ReadyForFailover.as_str().into(),
            target_vm_id: None,
            after_rollback_failed: None,
        })
    }
}

/// Records `ready_for_failover` after a rollback, with the after_rollback hook that
/// failed.
pub(crate) struct RecordRolledBack;

#[async_trait]
impl TypedStep<Env> for RecordRolledBack {
    type Output = Recorded;

    fn output(&self) -> Output<Recorded> {
        RECORD
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::ReadyForFailover, None)
            .await
            .map_err(|e| store_error("recording ready_for_failover", e))?;
        let hooks_failed = cx
            .lookup_if_done(AFTER_ROLLBACK_HOOKS)?
            .and_then(|report| report.failed);
        Ok(Recorded {
            state: VmState::ReadyForFailover.as_str().into(),
            target_vm_id: None,
            after_rollback_failed: Some(hooks_failed),
        })
    }
}

/// Records `committed`.
pub(crate) struct RecordCommitted;

#[async_trait]
impl TypedStep<Env> for RecordCommitted {
    type Output = Recorded;

    fn output(&self) -> Output<Recorded> {
        RECORD
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let target = cx.lookup(CHECK_VM)?.vm_id;
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::Committed, Some(&target))
            .await
            .map_err(|e| store_error("recording committed", e))?;
        Ok(Recorded {
            state: VmState::Committed.as_str().into(),
            target_vm_id: Some(target),
            after_rollback_failed: None,
        })
    }
}
