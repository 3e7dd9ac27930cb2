//! The protected VM's state at the end of a workflow: `test_failed_over` or
//! `failed_over` with the target VM (undone back to `ready_for_failover`),
//! `ready_for_failover` after a cleanup or rollback, `committed`.

use async_trait::async_trait;
use engine::{Output, StepError, TypedStep};
use ids::{VmId, VolumeId};
use serde::{Deserialize, Serialize};
use store::VmState;

use crate::env::{Cx, Env, event, store_error};
use crate::jobs::WorkflowStep;
use crate::run::protected_vm;
use crate::steps::checks::CHECK_VM;
use crate::steps::hooks::AFTER_ROLLBACK_HOOKS;
use crate::steps::vm::target_vm_id;

/// Records the protected VM's state once a workflow has done everything else: the
/// last step of each.
pub(crate) enum Record {
    /// A test or live failover: its state (`test_failed_over`, `failed_over`), with the
    /// target VM create-vm made. The one record with an undo: the VM back to
    /// `ready_for_failover`, with no target.
    FailedOver(VmState),
    /// A cleanup: `ready_for_failover`. Forward, like the cleanup: no undo.
    CleanedUp,
    /// A rollback: `ready_for_failover`, with the after_rollback hook that failed (null
    /// when none did). No undo.
    RolledBack,
    /// A commit: `committed`, with the VM check-vm found. No undo.
    Committed,
}

/// The state a workflow recorded for the protected VM, with its target VM when it has
/// one (and, after a rollback, the after_rollback hook that failed, or null).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Recorded {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_vm_id: Option<VmId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_rollback_failed: Option<Option<String>>,
    /// After a cleanup or rollback: the VM's replicas diverged from their source (see
    /// [`crate::drift`]), for replication to resynchronise before the next failover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diverged: Vec<DivergedReplica>,
}

/// A replica diverged from its source, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DivergedReplica {
    pub volume_id: VolumeId,
    pub reason: String,
}

pub(crate) const RECORD: Output<Recorded> = Output::new("record");

impl Record {
    fn state(&self) -> VmState {
        match self {
            Record::FailedOver(state) => *state,
            Record::CleanedUp | Record::RolledBack => VmState::ReadyForFailover,
            Record::Committed => VmState::Committed,
        }
    }
}

#[async_trait]
impl TypedStep<Env> for Record {
    type Output = Recorded;

    fn output(&self) -> Output<Recorded> {
        RECORD
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let state = self.state();
        let target = match self {
            Record::FailedOver(_) => Some(target_vm_id(cx)?),
            Record::Committed => Some(cx.lookup(CHECK_VM)?.vm_id),
            Record::CleanedUp | Record::RolledBack => None,
        };
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, state, target.as_ref())
            .await
            .map_err(|e| store_error(&format!("recording {state}"), e))?;
        let after_rollback_failed = match self {
            Record::RolledBack => Some(
                cx.lookup_if_done(AFTER_ROLLBACK_HOOKS)?
                    .and_then(|report| report.failed),
            ),
            _ => None,
        };
        let diverged = match self {
            Record::CleanedUp | Record::RolledBack => diverged_replicas(cx).await?,
            _ => Vec::new(),
        };
        Ok(Recorded {
            state: state.as_str().into(),
            target_vm_id: target,
            after_rollback_failed,
            diverged,
        })
    }

    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        if !matches!(self, Record::FailedOver(_)) {
            return Ok(());
        }
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::ReadyForFailover, None)
            .await
            .map_err(|e| store_error("recording ready_for_failover", e))
    }
}

impl WorkflowStep for Record {}

/// The replicas a cleanup's or rollback's recorded steps show to have been left
/// diverged from their source when it ended, with why: (volume id, reason).
pub(crate) fn diverged_at_end(steps: &[store::StepRecord]) -> Vec<(String, String)> {
    steps
        .iter()
        .find(|s| s.name == RECORD.name() && s.state == store::StepState::Done)
        .and_then(|s| s.output.as_deref())
        .and_then(|o| serde_json::from_str::<Recorded>(o).ok())
        .map(|r| {
            r.diverged
                .into_iter()
                .map(|d| (d.volume_id.to_string(), d.reason))
                .collect()
        })
        .unwrap_or_default()
}

/// The VM's diverged replicas, said in one `warn` event: the run reached its end, and
/// this is what it could not put back as the source had it.
async fn diverged_replicas(cx: &Cx<'_>) -> Result<Vec<DivergedReplica>, StepError> {
    let vm = protected_vm(cx).await?;
    let diverged: Vec<DivergedReplica> = vm
        .disks
        .iter()
        .filter_map(|d| {
            d.diverged.as_ref().map(|m| DivergedReplica {
                volume_id: d.disk.replica_volume_id.clone(),
                reason: m.reason.clone(),
            })
        })
        .collect();
    if !diverged.is_empty() {
        let message = format!(
            "{} is back at rest, but {} of its replicas diverged from the source and must be \
             resynchronised from it before the next failover, which is refused until that is \
             recorded with `ferry vm resynced {}`: {}",
            vm.name,
            diverged.len(),
            vm.name,
            diverged
                .iter()
                .map(|d| format!("{} ({})", d.volume_id, d.reason))
                .collect::<Vec<_>>()
                .join("; ")
        );
        event(cx, "warn", RECORD.name(), &message).await;
    }
    Ok(diverged)
}
