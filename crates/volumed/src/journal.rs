//! What the daemon writes down, and the trait a database implements to hold it.
//!
//! The journal is the daemon's memory across crashes. Its rules, which an
//! implementation must keep (the `store` crate's `volume_ops`, `fences` and replica
//! tables are shaped for them):
//!
//! - [`Journal::begin`] is atomic on the idempotency key: of two concurrent calls with
//!   one key, exactly one gets [`Begun::New`]; the other gets [`Begun::Existing`]
//!   with the first record (a unique index on `idempotency_key` and an
//!   insert-or-select do it).
//! - An operation moves `pending` → `submitted` (job id known) → `succeeded` |
//!   `failed`, and never back. A `pending` record says "CloudStack may or may not
//!   have been asked"; a `submitted` one names the job to wait on (for guest
//!   preparation, which is no CloudStack job: the command has been started, see
//!   [`crate::guest_prep`]).
//! - [`Journal::check_fence`] remembers the highest generation per run and refuses a
//!   lower one, atomically (compare and raise in one statement).
//! - [`Journal::record_device`] keeps "the current attachment and device path of each
//!   volume as ferry last saw it", and refuses a device path already held by another
//!   volume.
//!
//! The trait is deliberately small and knows nothing of SQL; its methods take and
//! return plain values so a store can implement it with a handful of statements.

use ids::{JobId, RunId, SnapshotId, VmId, VolumeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kind of an operation (`volume_ops.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Attach,
    AttachRoot,
    Detach,
    Snapshot,
    Revert,
    DeleteSnapshot,
    CreateVolume,
    DeleteVolume,
    /// Guest preparation: a command run on the appliance, not a CloudStack job.
    GuestPrep,
}

impl OpKind {
    /// The CloudStack command the operation sends (`guest-prep`, the one that is no
    /// CloudStack command, runs on the appliance).
    pub fn command(self) -> &'static str {
        match self {
            OpKind::Attach | OpKind::AttachRoot => "attachVolume",
            OpKind::Detach => "detachVolume",
            OpKind::Snapshot => "createSnapshot",
            OpKind::Revert => "revertSnapshot",
            OpKind::DeleteSnapshot => "deleteSnapshot",
            OpKind::CreateVolume => "createVolume",
            OpKind::DeleteVolume => "deleteVolume",
            OpKind::GuestPrep => "guest-prep",
        }
    }

    /// The name stored in `volume_ops.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Attach => "attach",
            OpKind::AttachRoot => "attach_root",
            OpKind::Detach => "detach",
            OpKind::Snapshot => "snapshot",
            OpKind::Revert => "revert",
            OpKind::DeleteSnapshot => "delete_snapshot",
            OpKind::CreateVolume => "create_volume",
            OpKind::DeleteVolume => "delete_volume",
            OpKind::GuestPrep => "guest_prep",
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        [
            OpKind::Attach,
            OpKind::AttachRoot,
            OpKind::Detach,
            OpKind::Snapshot,
            OpKind::Revert,
            OpKind::DeleteSnapshot,
            OpKind::CreateVolume,
            OpKind::DeleteVolume,
            OpKind::GuestPrep,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// `volume_ops.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Recorded; CloudStack may or may not have been asked.
    Pending,
    /// CloudStack accepted it; `job_id` is known.
    Submitted,
    Succeeded,
    Failed,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::Submitted => "submitted",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<OpState> {
        [
            OpState::Pending,
            OpState::Submitted,
            OpState::Succeeded,
            OpState::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, OpState::Succeeded | OpState::Failed)
    }
}

/// An operation about to be recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOp {
    /// A fresh UUID chosen by the daemon; an implementation may assign its own id
    /// instead (the daemon uses the id of the record [`Journal::begin`] returns).
    pub id: String,
    pub idempotency_key: String,
    pub kind: OpKind,
    /// The VM it works on (for a detach or a snapshot, the volume's VM when recorded).
    pub vm_id: Option<VmId>,
    pub volume_id: Option<VolumeId>,
    pub snapshot_id: Option<SnapshotId>,
    /// The request as JSON ([`crate::OpRequest`]).
    pub request: Value,
    /// The run of the fencing token the request carried.
    pub run_id: Option<RunId>,
}

/// One row of `volume_ops`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpRecord {
    pub id: String,
    pub idempotency_key: String,
    pub kind: OpKind,
    pub vm_id: Option<VmId>,
    pub volume_id: Option<VolumeId>,
    pub snapshot_id: Option<SnapshotId>,
    pub request: Value,
    pub state: OpState,
    pub job_id: Option<JobId>,
    /// The entity a create-style job makes (snapshot or volume id), known at submission.
    pub entity_id: Option<String>,
    /// The result JSON when succeeded.
    pub result: Option<Value>,
    /// The error JSON ([`crate::Error`]) when failed.
    pub error: Option<Value>,
    pub run_id: Option<RunId>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// What [`Journal::begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// The key is new; this record was just written (state `pending`).
    New(OpRecord),
    /// The key was seen: the record written for it then, in whatever state it is now.
    Existing(OpRecord),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed(Value),
}

/// Where ferry last saw a volume (the `volumes`' attachment columns of the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub volume_id: VolumeId,
    /// `None`: detached.
    pub vm_id: Option<VmId>,
    pub device_id: Option<i64>,
    /// `/dev/disk/by-id/virtio-<serial>` inside an appliance, once correlated.
    pub device_path: Option<String>,
}

/// Why the journal refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A fencing token older than the newest seen for the run.
    #[error("run {run_id}: generation {generation} is older than {highest}")]
    Fenced {
        run_id: String,
        generation: i64,
        highest: i64,
    },
    /// Another volume already holds this device path.
    #[error("device path {path} is already recorded for volume {other_volume_id}")]
    DevicePathTaken {
        path: String,
        other_volume_id: String,
    },
    /// The operation id is unknown.
    #[error("no operation {op_id} in the journal")]
    NoSuchOp { op_id: String },
    /// The database failed.
    #[error("journal backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The daemon's persistence. See the module documentation for the rules an
/// implementation must keep.
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// Records a new operation under its idempotency key, or returns the record that
    /// already has that key.
    async fn begin(&self, op: NewOp) -> Result<Begun, JournalError>;

    /// Records the CloudStack job id (and the new entity's id for create-style
    /// commands); the state becomes `submitted`.
    async fn set_job(
        &self,
        op_id: &str,
        job_id: &JobId,
        entity_id: Option<&str>,
    ) -> Result<(), JournalError>;

    /// Records the end of an operation.
    async fn finish(&self, op_id: &str, outcome: Outcome) -> Result<(), JournalError>;

    /// Every operation that is `pending` or `submitted`, oldest first.
    async fn unfinished(&self) -> Result<Vec<OpRecord>, JournalError>;

    /// Whether `volume_id` is a registered replica volume (never to be deleted).
    async fn is_replica(&self, volume_id: &VolumeId) -> Result<bool, JournalError>;

    /// Records where a volume is now; refuses a device path held by another volume
    /// on the same VM ([`JournalError::DevicePathTaken`]). A volume the journal does
    /// not track (the store tracks replica volumes) may be ignored.
    async fn record_device(&self, record: DeviceRecord) -> Result<(), JournalError>;

    /// Records a volume ferry created (a clone from a snapshot), as soon as its id is
    /// known — before its creation job ends. Recording one twice is not an error.
    async fn record_created_volume(
        &self,
        volume_id: &VolumeId,
        source_snapshot_id: Option<&SnapshotId>,
        run_id: Option<&RunId>,
    ) -> Result<(), JournalError>;

    /// Whether ferry created `volume_id` (by the daemon, or the engine's placeholder
    /// ROOT volumes) and has not deleted it: only such a volume may be deleted.
    async fn is_created_volume(&self, volume_id: &VolumeId) -> Result<bool, JournalError>;

    /// Records that a volume ferry created is deleted.
    async fn mark_created_volume_deleted(&self, volume_id: &VolumeId) -> Result<(), JournalError>;

    /// Refuses a generation lower than the highest seen for the run, and remembers the
    /// highest.
    async fn check_fence(&self, run_id: &RunId, generation: i64) -> Result<(), JournalError>;
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A [`Journal`] in memory, for tests and for a daemon that may forget on restart.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    inner: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    ops: BTreeMap<String, OpRecord>,
    by_key: HashMap<String, String>,
    /// Insertion order of op ids, for "oldest first".
    order: Vec<String>,
    replicas: HashSet<VolumeId>,
    /// Volume id → deleted.
    created: HashMap<VolumeId, bool>,
    devices: BTreeMap<VolumeId, DeviceRecord>,
    fences: HashMap<RunId, i64>,
}

impl MemoryJournal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a replica volume (in production, VM registration does it).
    pub fn register_replica(&self, volume_id: &VolumeId) {
        self.lock().replicas.insert(volume_id.clone());
    }

    /// The operation recorded under `key`.
    pub fn op_by_key(&self, key: &str) -> Option<OpRecord> {
        let m = self.lock();
        m.by_key.get(key).and_then(|id| m.ops.get(id)).cloned()
    }

    /// Every operation, oldest first.
    pub fn ops(&self) -> Vec<OpRecord> {
        let m = self.lock();
        m.order
            .iter()
            .filter_map(|id| m.ops.get(id))
            .cloned()
            .collect()
    }

    /// Records a volume as created by ferry (in production the engine does it for the
    /// placeholder ROOT volumes it deletes).
    pub fn register_created_volume(&self, volume_id: &VolumeId) {
        self.lock()
            .created
            .entry(volume_id.clone())
            .or_insert(false);
    }

    /// Where ferry last saw `volume_id`.
    pub fn device(&self, volume_id: &VolumeId) -> Option<DeviceRecord> {
        self.lock().devices.get(volume_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, op_id: &str, f: impl FnOnce(&mut OpRecord)) -> Result<(), JournalError> {
        let mut m = self.lock();
        let op = m.ops.get_mut(op_id).ok_or_else(|| JournalError::NoSuchOp {
            op_id: op_id.to_string(),
        })?;
        f(op);
        op.updated_at = now_ms();
        Ok(())
    }
}

#[async_trait::async_trait]
impl Journal for MemoryJournal {
    async fn begin(&self, op: NewOp) -> Result<Begun, JournalError> {
        let mut m = self.lock();
        if let Some(existing) = m
            .by_key
            .get(&op.idempotency_key)
            .and_then(|id| m.ops.get(id))
        {
            return Ok(Begun::Existing(existing.clone()));
        }
        let now = now_ms();
        let record = OpRecord {
            id: op.id.clone(),
            idempotency_key: op.idempotency_key.clone(),
            kind: op.kind,
            vm_id: op.vm_id,
            volume_id: op.volume_id,
            snapshot_id: op.snapshot_id,
            request: op.request,
            state: OpState::Pending,
            job_id: None,
            entity_id: None,
            result: None,
            error: None,
            run_id: op.run_id,
            created_at: now,
            updated_at: now,
        };
        m.by_key.insert(op.idempotency_key, op.id.clone());
        m.order.push(op.id.clone());
        m.ops.insert(op.id, record.clone());
        Ok(Begun::New(record))
    }

    async fn set_job(
        &self,
        op_id: &str,
        job_id: &JobId,
        entity_id: Option<&str>,
    ) -> Result<(), JournalError> {
        self.update(op_id, |op| {
            op.job_id = Some(job_id.clone());
            if entity_id.is_some() {
                op.entity_id = entity_id.map(str::to_string);
            }
            if !op.state.is_finished() {
                op.state = OpState::Submitted;
            }
        })
    }

    async fn finish(&self, op_id: &str, outcome: Outcome) -> Result<(), JournalError> {
        self.update(op_id, |op| match outcome {
            Outcome::Succeeded(v) => {
                op.state = OpState::Succeeded;
                op.result = Some(v);
            }
            Outcome::Failed(e) => {
                op.state = OpState::Failed;
                op.error = Some(e);
            }
        })
    }

    async fn unfinished(&self) -> Result<Vec<OpRecord>, JournalError> {
        let m = self.lock();
        Ok(m.order
            .iter()
            .filter_map(|id| m.ops.get(id))
            .filter(|op| !op.state.is_finished())
            .cloned()
            .collect())
    }

    async fn is_replica(&self, volume_id: &VolumeId) -> Result<bool, JournalError> {
        Ok(self.lock().replicas.contains(volume_id))
    }

    async fn record_device(&self, record: DeviceRecord) -> Result<(), JournalError> {
        let mut m = self.lock();
        if let Some(path) = &record.device_path
            && let Some(other) = m
                .devices
                .values()
                .find(|d| d.volume_id != record.volume_id && d.device_path.as_deref() == Some(path))
        {
            return Err(JournalError::DevicePathTaken {
                path: path.clone(),
                other_volume_id: other.volume_id.to_string(),
            });
        }
        m.devices.insert(record.volume_id.clone(), record);
        Ok(())
    }

    async fn record_created_volume(
        &self,
        volume_id: &VolumeId,
        _source_snapshot_id: Option<&SnapshotId>,
        _run_id: Option<&RunId>,
    ) -> Result<(), JournalError> {
        self.lock()
            .created
            .entry(volume_id.clone())
            .or_insert(false);
        Ok(())
    }

    async fn is_created_volume(&self, volume_id: &VolumeId) -> Result<bool, JournalError> {
        Ok(self.lock().created.get(volume_id) == Some(&false))
    }

    async fn mark_created_volume_deleted(&self, volume_id: &VolumeId) -> Result<(), JournalError> {
        if let Some(deleted) = self.lock().created.get_mut(volume_id) {
            *deleted = true;
        }
        Ok(())
    }

    async fn check_fence(&self, run_id: &RunId, generation: i64) -> Result<(), JournalError> {
        let mut m = self.lock();
        let highest = m.fences.entry(run_id.clone()).or_insert(generation);
        if generation < *highest {
            return Err(JournalError::Fenced {
                run_id: run_id.to_string(),
                generation,
                highest: *highest,
            });
        }
        *highest = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_op(id: &str, key: &str) -> NewOp {
        NewOp {
            id: id.into(),
            idempotency_key: key.into(),
            kind: OpKind::Attach,
            vm_id: Some("vm".into()),
            volume_id: Some("vol".into()),
            snapshot_id: None,
            request: serde_json::json!({"kind": "attach"}),
            run_id: None,
        }
    }

    #[tokio::test]
    async fn a_key_is_begun_once() {
        let j = MemoryJournal::new();
        let Begun::New(first) = j.begin(new_op("1", "k")).await.unwrap() else {
            panic!("first begin is new");
        };
        assert_eq!(first.state, OpState::Pending);
        let Begun::Existing(again) = j.begin(new_op("2", "k")).await.unwrap() else {
            panic!("second begin finds the first");
        };
        assert_eq!(again.id, "1");
        j.set_job("1", &"job".into(), Some("entity")).await.unwrap();
        assert_eq!(j.unfinished().await.unwrap()[0].state, OpState::Submitted);
        j.finish("1", Outcome::Succeeded(serde_json::json!({"ok": true})))
            .await
            .unwrap();
        assert!(j.unfinished().await.unwrap().is_empty());
        let done = j.op_by_key("k").unwrap();
        assert_eq!(done.state, OpState::Succeeded);
        assert_eq!(done.job_id.as_ref().map(|id| id.as_str()), Some("job"));
        assert_eq!(done.entity_id.as_deref(), Some("entity"));
    }

    #[tokio::test]
    async fn fences_only_go_up() {
        let j = MemoryJournal::new();
        j.check_fence(&RunId::from("run"), 2).await.unwrap();
        j.check_fence(&RunId::from("run"), 2).await.unwrap();
        j.check_fence(&RunId::from("run"), 3).await.unwrap();
        let err = j.check_fence(&RunId::from("run"), 2).await.unwrap_err();
        assert!(
            matches!(err, JournalError::Fenced { highest: 3, .. }),
            "{err}"
        );
        j.check_fence(&RunId::from("other"), 1).await.unwrap();
    }

    #[tokio::test]
    async fn two_volumes_never_share_a_device_path() {
        let j = MemoryJournal::new();
        let rec = |v: &str, p: Option<&str>| DeviceRecord {
            volume_id: v.into(),
            vm_id: Some("oma".into()),
            device_id: Some(1),
            device_path: p.map(str::to_string),
        };
        j.record_device(rec("a", Some("/dev/disk/by-id/virtio-x")))
            .await
            .unwrap();
        let err = j
            .record_device(rec("b", Some("/dev/disk/by-id/virtio-x")))
            .await
            .unwrap_err();
        assert!(matches!(err, JournalError::DevicePathTaken { .. }), "{err}");
        // Once a is detached, the path is free.
        j.record_device(rec("a", None)).await.unwrap();
        j.record_device(rec("b", Some("/dev/disk/by-id/virtio-x")))
            .await
            .unwrap();
    }

    #[test]
    fn kinds_and_states_have_stable_names() {
        for k in [
            "attach",
            "attach_root",
            "detach",
            "snapshot",
            "revert",
            "delete_snapshot",
            "create_volume",
            "delete_volume",
            "guest_prep",
        ] {
            assert_eq!(OpKind::parse(k).unwrap().as_str(), k);
            assert_eq!(
                serde_json::to_value(OpKind::parse(k).unwrap()).unwrap(),
                serde_json::json!(k)
            );
        }
        for s in ["pending", "submitted", "succeeded", "failed"] {
            assert_eq!(OpState::parse(s).unwrap().as_str(), s);
        }
    }
}
