//! The [`Journal`] on ferry's store (SQLite or PostgreSQL), so that a restarted
//! daemon finds the operations it had in flight and resumes them by job id.
//!
//! A thin adapter: the store's `volume_ops`, `fences`, `replica_volumes` and
//! `created_volumes` tables were shaped for the journal's rules (an insert-or-select on
//! the unique idempotency key, a compare-and-raise fence, a unique device path per VM).
//! Attachments are kept for replica volumes, which ferry must always be able to find;
//! for any other volume, `record_device` has nothing to keep and succeeds.

use async_trait::async_trait;
use ids::{JobId, RunId, SnapshotId, VolumeId};
use serde_json::Value;
use store::{Attachment, NewVolumeOp, Store, StoreError, VolumeOp};

use crate::journal::{
    Begun, DeviceRecord, Journal, JournalError, NewOp, OpKind, OpRecord, OpState, Outcome,
};

/// A [`Journal`] backed by [`Store`].
#[derive(Debug, Clone)]
pub struct StoreJournal {
    store: Store,
}

impl StoreJournal {
    pub fn new(store: Store) -> Self {
        StoreJournal { store }
    }
}

fn backend(e: StoreError) -> JournalError {
    JournalError::Backend(Box::new(e))
}

fn op_error(op_id: &str, e: StoreError) -> JournalError {
    match e {
        StoreError::NotFound { .. } => JournalError::NoSuchOp {
            op_id: op_id.to_string(),
        },
        other => backend(other),
    }
}

fn json(column: &str, text: Option<&str>) -> Result<Option<Value>, JournalError> {
    text.map(|t| {
        serde_json::from_str(t).map_err(|e| {
            backend(StoreError::Corrupt(format!(
                "volume_ops.{column} is not JSON: {e}"
            )))
        })
    })
    .transpose()
}

fn record(op: VolumeOp) -> Result<OpRecord, JournalError> {
    let corrupt = |what: String| backend(StoreError::Corrupt(what));
    Ok(OpRecord {
        kind: OpKind::parse(&op.kind)
            .ok_or_else(|| corrupt(format!("unknown operation kind `{}`", op.kind)))?,
        state: OpState::parse(op.state.as_str())
            .ok_or_else(|| corrupt(format!("unknown operation state `{}`", op.state)))?,
        request: json("request", Some(&op.request))?.unwrap_or(Value::Null),
        result: json("result", op.result.as_deref())?,
        error: json("error", op.error.as_deref())?,
        id: op.id,
        idempotency_key: op.idempotency_key,
        vm_id: op.vm_id,
        volume_id: op.volume_id,
        snapshot_id: op.snapshot_id,
        job_id: op.job_id,
        entity_id: op.entity_id,
        run_id: op.run_id,
        created_at: op.created_at,
        updated_at: op.updated_at,
    })
}

#[async_trait]
impl Journal for StoreJournal {
    async fn begin(&self, op: NewOp) -> Result<Begun, JournalError> {
        let (stored, created) = self
            .store
            .begin_op(&NewVolumeOp {
                idempotency_key: op.idempotency_key,
                kind: op.kind.as_str().to_string(),
                vm_id: op.vm_id,
                volume_id: op.volume_id,
                snapshot_id: op.snapshot_id,
                request: op.request.to_string(),
                run_id: op.run_id,
            })
            .await
            .map_err(backend)?;
        let stored = record(stored)?;
        Ok(if created {
            Begun::New(stored)
        } else {
            Begun::Existing(stored)
        })
    }

    async fn set_job(
        &self,
        op_id: &str,
        job_id: &JobId,
        entity_id: Option<&str>,
    ) -> Result<(), JournalError> {
        self.store
            .op_submitted(op_id, job_id, entity_id)
            .await
            .map_err(|e| op_error(op_id, e))
    }

    async fn finish(&self, op_id: &str, outcome: Outcome) -> Result<(), JournalError> {
        let result = match outcome {
            Outcome::Succeeded(value) => {
                self.store
                    .op_succeeded(op_id, &value.to_string(), None)
                    .await
            }
            Outcome::Failed(value) => self.store.op_failed(op_id, &value.to_string()).await,
        };
        result.map_err(|e| op_error(op_id, e))
    }

    async fn unfinished(&self) -> Result<Vec<OpRecord>, JournalError> {
        self.store
            .unfinished_ops()
            .await
            .map_err(backend)?
            .into_iter()
            .map(record)
            .collect()
    }

    async fn is_replica(&self, volume_id: &VolumeId) -> Result<bool, JournalError> {
        self.store.is_replica(volume_id).await.map_err(backend)
    }

    async fn record_device(&self, device: DeviceRecord) -> Result<(), JournalError> {
        let attachment = Attachment {
            vm_id: device.vm_id.clone(),
            device_id: device.device_id,
            device_path: device.device_path.clone(),
            seen_at: None,
        };
        match self
            .store
            .record_attachment(&device.volume_id, &attachment)
            .await
        {
            Ok(()) => Ok(()),
            // Not a replica volume: the store keeps no attachment for it.
            Err(StoreError::NotFound { .. }) => Ok(()),
            Err(StoreError::Constraint { constraint, .. })
                if constraint == "replica_volumes_one_path" =>
            {
                let path = device.device_path.unwrap_or_default();
                let other = match &device.vm_id {
                    Some(vm) => self
                        .store
                        .replica_at_path(vm, &path)
                        .await
                        .map_err(backend)?,
                    None => None,
                };
                Err(JournalError::DevicePathTaken {
                    path,
                    other_volume_id: other
                        .map_or_else(|| "another volume".to_string(), String::from),
                })
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn check_fence(&self, run_id: &RunId, generation: i64) -> Result<(), JournalError> {
        match self.store.check_fence(run_id, generation).await {
            Ok(()) => Ok(()),
            Err(StoreError::StaleFence {
                run_id,
                generation,
                current,
            }) => Err(JournalError::Fenced {
                run_id,
                generation,
                highest: current,
            }),
            Err(e) => Err(backend(e)),
        }
    }

    async fn record_created_volume(
        &self,
        volume_id: &VolumeId,
        source_snapshot_id: Option<&SnapshotId>,
        run_id: Option<&RunId>,
    ) -> Result<(), JournalError> {
        let purpose = if source_snapshot_id.is_some() {
            "clone"
        } else {
            "created"
        };
        self.store
            .record_created_volume(volume_id, purpose, source_snapshot_id, run_id)
            .await
            .map_err(backend)
    }

    async fn is_created_volume(&self, volume_id: &VolumeId) -> Result<bool, JournalError> {
        self.store
            .is_created_volume(volume_id)
            .await
            .map_err(backend)
    }

    async fn mark_created_volume_deleted(&self, volume_id: &VolumeId) -> Result<(), JournalError> {
        self.store
            .mark_created_volume_deleted(volume_id)
            .await
            .map_err(backend)
    }
}
