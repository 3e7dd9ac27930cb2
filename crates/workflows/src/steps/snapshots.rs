//! The replicas' snapshots: taken first by a test or live failover (named after the
//! run's target, so they are found by name whatever a step recorded), deleted by
//! cleanup, rollback and commit — and by the snapshot step's own undo.

use ids::{SnapshotId, VolumeId};
use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::{Output, StepError, TypedStep};
use serde::{Deserialize, Serialize};

use crate::ensure::{all_to_the_end, replicas_as_they_are, run_snapshots};
use crate::env::{Cx, Env, call, having_read, volume_error};
use crate::jobs::Queue::{Appliance, Own};
use crate::jobs::Times::PerDisk;
use crate::jobs::{Job, WorkflowStep, job};
use crate::run::{Mode, input, snapshot_name};

/// Snapshots every replica (`<target>-disk-<key>`).
pub(crate) struct Snapshot;

/// The snapshots taken: replica volume id → snapshot id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Snapshots {
    pub snapshots: BTreeMap<VolumeId, SnapshotId>,
}

pub(crate) const SNAPSHOT: Output<Snapshots> = Output::new("snapshot");

#[async_trait]
impl TypedStep<Env> for Snapshot {
    type Output = Snapshots;

    fn output(&self) -> Output<Snapshots> {
        SNAPSHOT
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        // One read of every replica tells the daemon which VM each snapshot's job
        // queues on (instead of a read per replica there).
        let seen = &replicas_as_they_are(env, &input.plan).await?;
        let taken = all_to_the_end(input.plan.disks().iter().map(|d| {
            let name = snapshot_name(&input.target_name, d.device_key);
            let key = having_read(call(cx, "snapshot", &d.volume_id), seen.get(&d.volume_id));
            async move {
                let snap = env
                    .volumes
                    .snapshot(&key, &d.volume_id, &name)
                    .await
                    .map_err(|e| {
                        volume_error(&format!("snapshotting replica {}", d.volume_id), e)
                    })?;
                Ok::<_, StepError>((d.volume_id.clone(), snap.id))
            }
        }))
        .await?;
        Ok(Snapshots {
            snapshots: taken.into_iter().collect(),
        })
    }

    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        delete_run_snapshots(cx, "undo-snapshot").await
    }
}

impl WorkflowStep for Snapshot {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        // A replica's snapshot runs on the queue of the VM it is attached to.
        vec![job("createSnapshot", PerDisk, Appliance)]
    }
}

/// Deletes the snapshots a test failover took (found by name, so a snapshot whose step
/// never finished is found too).
pub(crate) async fn delete_run_snapshots(cx: &Cx<'_>, step: &str) -> Result<(), StepError> {
    let env = cx.ctx;
    let input = input(cx)?;
    let snapshots = &run_snapshots(env, &input).await?;
    // Each snapshot is deleted on its own CloudStack queue: all at once (each to its
    // end).
    all_to_the_end(input.plan.disks().iter().map(|d| {
        let input = &input;
        async move {
            for s in snapshots.of(input, d) {
                env.volumes
                    .delete_snapshot(&call(cx, step, s.id.as_str()), &s.id)
                    .await
                    .map_err(|e| volume_error(&format!("deleting snapshot {}", s.id), e))?;
            }
            Ok::<_, StepError>(())
        }
    }))
    .await?;
    Ok(())
}

/// Deletes the run's snapshots (cleanup, rollback, commit).
pub(crate) struct DeleteSnapshots;

/// An output that says nothing (`{}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Nothing {}

const DELETE_SNAPSHOTS: Output<Nothing> = Output::new("delete-snapshots");

#[async_trait]
impl TypedStep<Env> for DeleteSnapshots {
    type Output = Nothing;

    fn output(&self) -> Output<Nothing> {
        DELETE_SNAPSHOTS
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        delete_run_snapshots(cx, "delete-snapshots").await?;
        Ok(Nothing {})
    }
}

impl WorkflowStep for DeleteSnapshots {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("deleteSnapshot", PerDisk, Own)]
    }
}
