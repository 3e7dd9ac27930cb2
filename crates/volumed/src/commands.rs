//! The CloudStack volume commands, one per kind of operation: how each is sent, and
//! how its job is waited on and read back.
//!
//! Why its own module: this is a table (an [`OpRequest`] to a client call, an
//! [`OpKind`] to the type its job returns), and the operation pipeline
//! ([`crate::Local`]) reads as journal → submit → record job → wait without it. It is
//! also the one place where ferry sends attachVolume, detachVolume, createSnapshot,
//! revertSnapshot, deleteSnapshot, createVolume and deleteVolume; nothing here records
//! anything, which is the pipeline's part.

// The one module allowed to send CloudStack's volume commands: `clippy.toml` disallows
// them everywhere else, so that every such call is journaled and looked at before a retry.
#![allow(clippy::disallowed_methods)]

use cloudstack::{Client, Job, Snapshot, Success, Volume};
use ids::JobId;
use serde_json::Value;

use crate::error::{Class, Error, Result};
use crate::journal::{OpKind, OpRecord};
use crate::types::{OpRequest, SnapshotInfo, VolumeInfo, to_json};

/// What a submission returned.
pub(crate) enum Submitted {
    Job {
        job_id: JobId,
        entity_id: Option<String>,
    },
    /// A synchronous command (deleteVolume) that is already done.
    Done(Value),
}

/// The CloudStack command of an operation (for job resumption and messages).
pub(crate) fn command_of(kind: OpKind) -> &'static str {
    kind.command()
}

/// Sends the CloudStack command of `request`. An error is CloudStack's, unclassified
/// here: the pipeline decides by its class whether to resubmit or look.
pub(crate) async fn submit(
    c: &Client,
    request: &OpRequest,
) -> Result<Submitted, cloudstack::Error> {
    fn job<T>(j: Job<T>) -> Submitted {
        Submitted::Job {
            job_id: j.job_id,
            entity_id: j.id,
        }
    }
    Ok(match request {
        OpRequest::Attach {
            volume_id,
            vm_id,
            device_id,
        } => job(c.attach_volume(volume_id, vm_id, *device_id).await?),
        OpRequest::AttachRoot { volume_id, vm_id } => {
            job(c.attach_volume(volume_id, vm_id, Some(0)).await?)
        }
        OpRequest::Detach { volume_id } => job(c.detach_volume(volume_id).await?),
        OpRequest::Snapshot { volume_id, name } => {
            job(c.create_snapshot(volume_id, Some(name)).await?)
        }
        OpRequest::Revert { snapshot_id } => job(c.revert_snapshot(snapshot_id).await?),
        OpRequest::DeleteSnapshot { snapshot_id } => job(c.delete_snapshot(snapshot_id).await?),
        OpRequest::CreateVolume {
            snapshot_id,
            name,
            zone_id,
        } => job(c
            .create_volume(
                name,
                zone_id,
                &cloudstack::VolumeSource::Snapshot {
                    snapshot_id: snapshot_id.clone(),
                },
            )
            .await?),
        OpRequest::DeleteVolume { volume_id } => {
            c.delete_volume(volume_id).await?;
            Submitted::Done(Value::Null)
        }
        // Never submitted: `drive` runs it (see `guest_prep`).
        OpRequest::GuestPrep { .. } => {
            return Err(cloudstack::Error::Decode {
                command: command_of(OpKind::GuestPrep).into(),
                mutation: true,
                detail: "guest preparation is not a CloudStack command".into(),
            });
        }
    })
}

/// Waits on the job of `op` and reads its result. A failed job is CloudStack's
/// answer, with its class; any other error leaves it unfinished, with its job id, to
/// be waited on again.
pub(crate) async fn wait_job(
    c: &Client,
    op: &OpRecord,
    job_id: &JobId,
    entity_id: Option<String>,
) -> Result<Value> {
    let command = command_of(op.kind);
    let waited: Result<Value, cloudstack::Error> = match op.kind {
        OpKind::Attach | OpKind::AttachRoot | OpKind::Detach | OpKind::CreateVolume => c
            .wait(&Job::<Volume>::resume(command, job_id.clone(), entity_id))
            .await
            .map(|v| to_json(&VolumeInfo::from(&v))),
        OpKind::Snapshot | OpKind::Revert => c
            .wait(&Job::<Snapshot>::resume(command, job_id.clone(), entity_id))
            .await
            .map(|s| to_json(&SnapshotInfo::from(&s))),
        OpKind::DeleteSnapshot => c
            .wait(&Job::<Success>::resume(command, job_id.clone(), entity_id))
            .await
            .map(|_| Value::Null),
        OpKind::DeleteVolume | OpKind::GuestPrep => {
            return Err(Error::internal(format!(
                "operation {}: {command} is no CloudStack job; there is no job {job_id} to wait on",
                op.id
            )));
        }
    };
    waited.map_err(|e| match e {
        // A failed job, or one CloudStack no longer knows: CloudStack's answer, with
        // its class (a job cut short by a restart, or unknown, is `Unknown` with the
        // job id — the pipeline then looks at what it did; see [`lost_job`]).
        cloudstack::Error::JobFailed { .. } | cloudstack::Error::JobUnknown { .. } => {
            Error::cloudstack(&e)
        }
        other => Error::OutcomeUnknown {
            op_id: op.id.clone(),
            detail: format!(
                "waiting on job {job_id} ({command}) failed: {}",
                crate::error::chain(&other)
            ),
            unreachable: other.unreachable(),
        },
    })
}

/// The job `job_id` if `error` says CloudStack cannot tell what that job did: it was
/// cut short by a management-server restart, or CloudStack no longer knows it (its
/// record purged, or a database restored from before it). Its outcome is then found
/// by looking at CloudStack, never by waiting on it again.
pub(crate) fn lost_job<'e>(error: &'e Error, job_id: &JobId) -> Option<&'e str> {
    match error {
        Error::CloudStack {
            class: Class::Unknown,
            job_id: Some(lost),
            ..
        } if lost == job_id.as_str() => Some(lost),
        _ => None,
    }
}
