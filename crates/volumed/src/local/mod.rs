//! [`Local`]: the volume daemon in-process — the only code in ferry that sends
//! CloudStack's volume commands.
//!
//! # The life of an operation
//!
//! 1. The request is validated, its fencing token checked, a replica volume refused
//!    for deletion, and the VM it concerns looked up (a detach or a snapshot works on
//!    whatever VM the volume is on).
//! 2. [`Journal::begin`] records it under its idempotency key — *before* CloudStack
//!    hears of it. If the key was seen, the first operation answers: its stored
//!    result, or (still running in this process) a wait for it, or (left unfinished
//!    by a process that died) its resumption.
//! 3. A task, not the caller, drives the operation to its end, so a caller that goes
//!    away (an HTTP client that hangs up) does not abandon an attach halfway. The task
//!    takes the per-VM lock, submits, records the job id with [`Journal::set_job`] the
//!    moment CloudStack returns it, and waits on the job.
//! 4. Errors are handled by class. *Definitive*: the operation failed; that is
//!    recorded and returned to every later request with the key. *Transient* on
//!    submission: nothing happened; resubmit a bounded number of times with backoff.
//!    *Unknown* (timeout, lost response, or a job CloudStack cannot tell the end of:
//!    cut short by a management-server restart, or no longer known to it): look at
//!    CloudStack first (see [`crate::look`]); submit again — once — only if looking
//!    shows that nothing happened and no job for it is pending.
//!
//! An operation whose outcome is still unknown, or whose submission kept failing
//! transiently, stays *unfinished* in the journal and the caller gets an error of
//! class unknown or transient. Asking again with the same key, or
//! [`Local::resume_unfinished`] after a restart, picks it up: with a job id, by
//! waiting on that job (never a second submission while CloudStack can say how it
//! ends); without one, or when CloudStack answers that it does not know the job, by
//! looking first.
//!
//! # Races this module is written against
//!
//! - Two requests with one key at once: the in-flight map is locked across
//!   `Journal::begin`, so exactly one task drives the operation and the other request
//!   waits on it.
//! - The process dies between submission and `set_job`: the record is `pending`
//!   without a job id; resumption looks (the volume is on the VM, or a pending job
//!   for it exists, whose id is then adopted) before it would submit.
//! - Another of our own operations changes the VM while we look: impossible, the
//!   look happens under the VM's lock.
//!
//! Several processes sharing one journal (PostgreSQL): at start each resumes only the
//! unfinished operations of runs no other live process holds
//! ([`Local::resume_unfinished_where`]); the run's lease decides who drives an
//! operation. TODO-correctness: standalone `ferry volumed` daemons sharing one journal
//! have no run leases to go by and should not share it.
//!
//! # What lives elsewhere
//!
//! This file is the pipeline and the [`VolumeService`] calls that feed it. What it
//! consults lives beside it, in modules that do not know it: [`crate::look`] (what
//! CloudStack shows about an operation), [`crate::commands`] (each operation's
//! CloudStack command and job), [`crate::appliance`] (the appliances' disks, and
//! guest preparation run on one of them) and [`crate::serialization`] (one operation
//! at a time per VM).

use ids::{SnapshotId, VmId, VolumeId, ZoneId};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudstack::{Client, ErrorClass};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::appliance::Appliances;
use crate::commands::{self, Submitted, command_of};
use crate::deletion;
use crate::device::{self, Device, PollSteps, Presence};
use crate::error::{Error, Result, chain};
use crate::journal::{
    Begun, DeviceRecord, Journal, JournalError, NewOp, OpKind, OpRecord, Outcome,
};
use crate::look::{self, Look, Origin};
use crate::serialization::Serialization;
use crate::service::VolumeService;
mod submit;

use crate::types::{
    API_REVISION, AgentStatus, ApplianceSeen, Call, GuestPrep, GuestPrepOutcome, OpRequest,
    SnapshotInfo, VERSION, VolumeInfo, non_empty, to_json,
};

/// How a [`Local`] daemon behaves.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Appliance VM id → root of its `/sys` and `/dev` (`/` when the daemon runs on
    /// the appliance; cloudsim's `--sysfs-root` in tests).
    pub appliances: BTreeMap<String, PathBuf>,
    /// Submissions of one operation when each fails transiently (the first included).
    pub submit_attempts: u32,
    /// Delay before the first resubmission after a transient error; doubles, capped
    /// at five seconds.
    pub submit_backoff: Duration,
    /// Steps of the device-path poll.
    pub device_poll: PollSteps,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            appliances: BTreeMap::new(),
            submit_attempts: 4,
            submit_backoff: Duration::from_millis(200),
            device_poll: PollSteps::default(),
        }
    }
}

impl LocalConfig {
    /// A configuration with one appliance.
    pub fn with_appliance(vm_id: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        let mut config = LocalConfig::default();
        config.appliances.insert(vm_id.into(), root.into());
        config
    }
}

/// What [`Local::resume_unfinished`] did with one operation.
#[derive(Debug)]
pub struct Resumed {
    pub op_id: String,
    pub idempotency_key: String,
    pub kind: OpKind,
    /// Whether it was resumed by waiting on a recorded job (else it was resolved by
    /// looking at CloudStack).
    pub had_job_id: bool,
    pub outcome: Result<Value>,
}

type OpFuture = Shared<BoxFuture<'static, Result<Value>>>;

/// The in-process volume daemon. Dropping it stops its operations where they are,
/// as a crash would; their records stay in the journal for [`Local::resume_unfinished`].
pub struct Local {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    journal: Arc<dyn Journal>,
    config: LocalConfig,
    /// Idempotency key → the operation being driven in this process. Locked across
    /// `Journal::begin` so that one key is never driven twice.
    inflight: tokio::sync::Mutex<HashMap<String, OpFuture>>,
    /// Op id → its task, aborted when the `Local` is dropped.
    tasks: std::sync::Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// One operation at a time per VM (or volume, or snapshot).
    serialization: Serialization,
}

impl Drop for Local {
    fn drop(&mut self) {
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for (_, task) in tasks {
            task.abort();
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Local {
    /// A daemon that talks to CloudStack through `client` and records in `journal`.
    pub fn new(client: Client, journal: Arc<dyn Journal>, config: LocalConfig) -> Self {
        Local {
            inner: Arc::new(Inner {
                client,
                journal,
                config,
                inflight: tokio::sync::Mutex::new(HashMap::new()),
                tasks: std::sync::Mutex::new(HashMap::new()),
                serialization: Serialization::default(),
            }),
        }
    }

    /// The most operations this daemon ever had under way at once for one VM (or
    /// volume, or snapshot). Serialization keeps it at 1.
    pub fn max_in_flight_per_vm(&self) -> u32 {
        self.inner.serialization.max_running()
    }

    /// Finishes every operation the journal has as unfinished — after a restart, the
    /// ones a dead process left. An operation with a job id is finished by waiting on
    /// that job, never by submitting again; one without is resolved by looking at
    /// CloudStack first. Returns when all have ended (or failed to).
    pub async fn resume_unfinished(&self) -> Result<Vec<Resumed>> {
        self.resume_unfinished_where(|_| true).await
    }

    /// [`Local::resume_unfinished`] for the operations `keep` accepts. A process that
    /// shares its journal with others (PostgreSQL) leaves alone the operations of runs
    /// another live process holds: that process is driving them, and a step it resumes
    /// finds its operation here under the same key.
    pub async fn resume_unfinished_where(
        &self,
        keep: impl Fn(&OpRecord) -> bool,
    ) -> Result<Vec<Resumed>> {
        let ops: Vec<OpRecord> = self
            .inner
            .journal
            .unfinished()
            .await
            .map_err(Error::journal)?
            .into_iter()
            .filter(|op| keep(op))
            .collect();
        let mut waits = Vec::with_capacity(ops.len());
        {
            let mut inflight = self.inner.inflight.lock().await;
            for op in ops {
                let future = match inflight.get(&op.idempotency_key) {
                    Some(f) => f.clone(),
                    None => self.spawn(&mut inflight, op.clone(), Origin::Resumed),
                };
                waits.push((op, future));
            }
        }
        if !waits.is_empty() {
            tracing::info!(count = waits.len(), "resuming unfinished volume operations");
        }
        let mut resumed = Vec::with_capacity(waits.len());
        for (op, future) in waits {
            resumed.push(Resumed {
                had_job_id: op.job_id.is_some(),
                op_id: op.id,
                idempotency_key: op.idempotency_key,
                kind: op.kind,
                outcome: future.await,
            });
        }
        Ok(resumed)
    }

    /// Runs one mutating operation: see the module documentation.
    async fn execute<T: DeserializeOwned>(&self, call: &Call, request: OpRequest) -> Result<T> {
        let value = self.execute_value(call, request).await?;
        serde_json::from_value(value.clone()).map_err(|e| {
            Error::internal(format!(
                "the recorded result {value} does not have the expected shape: {e}"
            ))
        })
    }

    async fn execute_value(&self, call: &Call, request: OpRequest) -> Result<Value> {
        call.validate()?;
        request.validate()?;
        let journal = &self.inner.journal;
        if let Some(fence) = &call.fence {
            journal
                .check_fence(&fence.run_id, fence.generation)
                .await
                .map_err(Error::journal)?;
        }
        let (vm_id, volume_id, snapshot_id) =
            look::subjects(&self.inner.client, &request, call.seen.as_ref()).await?;
        let new = NewOp {
            id: uuid::Uuid::new_v4().to_string(),
            idempotency_key: call.idempotency_key.clone(),
            kind: request.kind(),
            vm_id,
            volume_id,
            snapshot_id,
            request: to_json(&request),
            run_id: call.fence.as_ref().map(|f| f.run_id.clone()),
        };
        let future = {
            let mut inflight = self.inner.inflight.lock().await;
            match journal.begin(new.clone()).await.map_err(Error::journal)? {
                Begun::New(op) => self.spawn(&mut inflight, op, Origin::New),
                Begun::Existing(op) => {
                    if op.request != new.request {
                        return Err(Error::IdempotencyConflict {
                            key: call.idempotency_key.clone(),
                            first: format!("{} {}", op.kind.as_str(), op.request),
                        });
                    }
                    if op.state.is_finished() {
                        tracing::debug!(op_id = %op.id, key = %op.idempotency_key, "answered from the journal");
                        return stored_outcome(&op);
                    }
                    match inflight.get(&op.idempotency_key) {
                        Some(f) => f.clone(),
                        None => self.spawn(&mut inflight, op, Origin::Recovered),
                    }
                }
            }
        };
        future.await
    }

    /// Starts the task that drives `op` and registers it as in flight.
    fn spawn(
        &self,
        inflight: &mut HashMap<String, OpFuture>,
        op: OpRecord,
        origin: Origin,
    ) -> OpFuture {
        let inner = Arc::clone(&self.inner);
        let key = op.idempotency_key.clone();
        let op_id = op.id.clone();
        let span = tracing::info_span!(
            "volume_op",
            op_id = %op.id,
            kind = op.kind.as_str(),
            key = %op.idempotency_key,
            vm_id = op.vm_id.as_ref().map(|id| id.as_str()).unwrap_or(""),
            volume_id = op.volume_id.as_ref().map(|id| id.as_str()).unwrap_or(""),
            run_id = op.run_id.as_ref().map(|id| id.as_str()).unwrap_or(""),
            job_id = tracing::field::Empty,
        );
        let task = {
            let key = key.clone();
            let op_id = op_id.clone();
            tokio::spawn(
                async move {
                    let result = inner.drive(op, origin).await;
                    inner.inflight.lock().await.remove(&key);
                    lock(&inner.tasks).remove(&op_id);
                    result
                }
                .instrument(span),
            )
        };
        lock(&self.inner.tasks).insert(op_id, task.abort_handle());
        let future = async move {
            match task.await {
                Ok(result) => result,
                Err(e) => Err(Error::internal(format!(
                    "the volume daemon stopped while the operation ran ({e}); it stays recorded and resumes on restart"
                ))),
            }
        }
        .boxed()
        .shared();
        inflight.insert(key, future.clone());
        future
    }
}

fn stored_outcome(op: &OpRecord) -> Result<Value> {
    match (&op.result, &op.error) {
        (_, Some(error)) => Err(serde_json::from_value(error.clone())
            .unwrap_or_else(|_| Error::internal(format!("operation {} failed: {error}", op.id)))),
        (Some(result), None) => Ok(result.clone()),
        (None, None) => Ok(Value::Null),
    }
}

impl Inner {
    /// This daemon's appliances, as guest preparation and the device reads see them.
    fn appliances(&self) -> Appliances<'_> {
        Appliances {
            client: &self.client,
            roots: &self.config.appliances,
            poll: self.config.device_poll,
        }
    }

    /// Drives one operation to its end (or to an error that leaves it unfinished).
    async fn drive(self: &Arc<Self>, op: OpRecord, origin: Origin) -> Result<Value> {
        let request: OpRequest = serde_json::from_value(op.request.clone()).map_err(|e| {
            Error::internal(format!(
                "operation {} has an unreadable request {}: {e}",
                op.id, op.request
            ))
        })?;
        let _turn = self.serialization.turn(&op).await;
        if let Some(job_id) = &op.job_id {
            tracing::Span::current().record("job_id", job_id.as_str());
        }
        tracing::debug!(?origin, "operation starts");
        let outcome = match (&request, &op.job_id) {
            (
                OpRequest::GuestPrep {
                    appliance_vm_id,
                    volume_id,
                    prep,
                },
                _,
            ) => {
                self.appliances()
                    .guest_prep(
                        &*self.journal,
                        &op,
                        origin,
                        appliance_vm_id,
                        volume_id,
                        prep,
                    )
                    .await
            }
            (_, Some(job_id)) => {
                match commands::wait_job(&self.client, &op, job_id, op.entity_id.clone()).await {
                    // CloudStack cannot tell what the job did — it was cut short by a
                    // management-server restart, or CloudStack no longer knows it (its
                    // record purged, a database restored from before it): look at
                    // CloudStack, and send again only what looking shows not done.
                    Err(e) if commands::lost_job(&e, job_id).is_some() => {
                        tracing::info!(%job_id, error = %e, "CloudStack cannot tell what the recorded job did; looking before sending it again");
                        self.submit_and_wait(&op, &request, Origin::Recovered).await
                    }
                    other => other,
                }
            }
            (_, None) => self.submit_and_wait(&op, &request, origin).await,
        };
        let recorded = match &outcome {
            // Where the volume now is belongs to the operation: until it is recorded
            // the operation stays unfinished, and a repeated request (or a resume)
            // settles it again and records it.
            Ok(value) => match self.after_success(&op, &request, value).await {
                Ok(()) => {
                    self.journal
                        .finish(&op.id, Outcome::Succeeded(value.clone()))
                        .await
                }
                Err(e) => Err(e),
            },
            Err(e) if e.is_final() => {
                tracing::info!(error = %e, "operation failed");
                self.journal
                    .finish(&op.id, Outcome::Failed(to_json(e)))
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, class = ?e.class(), "operation left unfinished");
                Ok(())
            }
        };
        if let Err(e) = recorded {
            tracing::error!(error = %chain(&e), "could not record the end of an operation");
            return Err(Error::journal(e));
        }
        outcome
    }

    /// Records the volume a createVolume makes as soon as its id is known, so that a
    /// crash before the job ends leaves it tracked (and deletable) rather than leaked.
    async fn note_entity(
        &self,
        op: &OpRecord,
        request: &OpRequest,
        entity_id: Option<&str>,
    ) -> Result<()> {
        if let (OpRequest::CreateVolume { snapshot_id, .. }, Some(volume_id)) = (request, entity_id)
        {
            self.journal
                .record_created_volume(
                    &VolumeId::from(volume_id),
                    Some(snapshot_id),
                    op.run_id.as_ref(),
                )
                .await
                .map_err(Error::journal)?;
        }
        Ok(())
    }

    /// Records a volume ferry created or deleted (a failure is logged: the operation
    /// already happened) and where an attached or detached volume now is (a failure is
    /// returned: the caller must not see the operation done before the record).
    async fn after_success(
        &self,
        op: &OpRecord,
        request: &OpRequest,
        value: &Value,
    ) -> Result<(), JournalError> {
        let noted = match request {
            OpRequest::CreateVolume { snapshot_id, .. } => {
                match value.get("id").and_then(Value::as_str) {
                    Some(id) => {
                        self.journal
                            .record_created_volume(
                                &VolumeId::from(id),
                                Some(snapshot_id),
                                op.run_id.as_ref(),
                            )
                            .await
                    }
                    None => Ok(()),
                }
            }
            OpRequest::DeleteVolume { volume_id } => {
                self.journal.mark_created_volume_deleted(volume_id).await
            }
            _ => Ok(()),
        };
        if let Err(e) = noted {
            tracing::warn!(error = %chain(&e), "could not record a created or deleted volume");
        }
        let record = match request {
            OpRequest::Attach { .. } | OpRequest::AttachRoot { .. } | OpRequest::Detach { .. } => {
                match serde_json::from_value::<VolumeInfo>(value.clone()) {
                    Ok(v) => DeviceRecord {
                        volume_id: v.id,
                        vm_id: v.vm_id,
                        device_id: v.device_id,
                        device_path: None,
                    },
                    Err(_) => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        self.journal.record_device(record).await
    }
}

#[async_trait::async_trait]
impl VolumeService for Local {
    async fn attach(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        vm_id: &VmId,
        device_id: Option<i64>,
    ) -> Result<VolumeInfo> {
        let (volume_id, vm_id) = (volume_id.into(), vm_id.into());
        let request = OpRequest::Attach {
            volume_id,
            vm_id,
            device_id,
        };
        self.execute(call, request).await
    }

    async fn attach_root(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        vm_id: &VmId,
    ) -> Result<VolumeInfo> {
        let (volume_id, vm_id) = (volume_id.into(), vm_id.into());
        self.execute(call, OpRequest::AttachRoot { volume_id, vm_id })
            .await
    }

    async fn detach(&self, call: &Call, volume_id: &VolumeId) -> Result<VolumeInfo> {
        let volume_id = volume_id.into();
        self.execute(call, OpRequest::Detach { volume_id }).await
    }

    async fn snapshot(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        name: &str,
    ) -> Result<SnapshotInfo> {
        let (volume_id, name) = (volume_id.into(), name.into());
        self.execute(call, OpRequest::Snapshot { volume_id, name })
            .await
    }

    async fn revert(&self, call: &Call, snapshot_id: &SnapshotId) -> Result<SnapshotInfo> {
        let snapshot_id = snapshot_id.into();
        self.execute(call, OpRequest::Revert { snapshot_id }).await
    }

    async fn delete_snapshot(&self, call: &Call, snapshot_id: &SnapshotId) -> Result<()> {
        let snapshot_id = snapshot_id.into();
        let request = OpRequest::DeleteSnapshot { snapshot_id };
        self.execute_value(call, request).await.map(|_| ())
    }

    async fn create_volume_from_snapshot(
        &self,
        call: &Call,
        snapshot_id: &SnapshotId,
        name: &str,
        zone_id: &ZoneId,
    ) -> Result<VolumeInfo> {
        let (snapshot_id, name, zone_id) = (snapshot_id.into(), name.into(), zone_id.into());
        let request = OpRequest::CreateVolume {
            snapshot_id,
            name,
            zone_id,
        };
        self.execute(call, request).await
    }

    async fn delete_volume(&self, call: &Call, volume_id: &VolumeId) -> Result<()> {
        let volume_id = volume_id.into();
        let request = OpRequest::DeleteVolume { volume_id };
        self.execute_value(call, request).await.map(|_| ())
    }

    async fn vouch_created(&self, call: &Call, volume_id: &VolumeId) -> Result<()> {
        call.validate()?;
        non_empty("volume_id", volume_id)?;
        let journal = &self.inner.journal;
        deletion::refuse_replica(journal.as_ref(), volume_id).await?;
        let run_id = call.fence.as_ref().map(|f| &f.run_id);
        journal
            .record_created_volume(volume_id, None, run_id)
            .await
            .map_err(Error::journal)
    }

    async fn status(&self) -> Result<AgentStatus> {
        let backlog = self
            .inner
            .journal
            .unfinished()
            .await
            .map_err(Error::journal)?
            .len() as u64;
        let mut appliances = Vec::new();
        for (vm_id, root) in &self.inner.config.appliances {
            let root = root.clone();
            let devices = tokio::task::spawn_blocking(move || {
                root.join("sys/block")
                    .is_dir()
                    .then(|| device::scan_all(&root).len() as u64)
            })
            .await
            .map_err(|e| Error::internal(format!("counting the appliance's disks: {e}")))?;
            appliances.push(ApplianceSeen {
                vm_id: VmId::from(vm_id),
                devices,
            });
        }
        Ok(AgentStatus {
            version: VERSION.to_string(),
            api_revision: API_REVISION,
            appliances,
            backlog,
        })
    }

    async fn tool_available(&self, appliance_vm_id: &VmId, program: &str) -> Result<bool> {
        non_empty("appliance_vm_id", appliance_vm_id)?;
        self.inner
            .appliances()
            .tool_available(appliance_vm_id, program)
            .await
    }

    async fn prepare_guest(
        &self,
        call: &Call,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        prep: &GuestPrep,
    ) -> Result<GuestPrepOutcome> {
        // Refused before anything is recorded: not an appliance of this daemon.
        self.inner.appliances().root(appliance_vm_id)?;
        let request = OpRequest::GuestPrep {
            appliance_vm_id: appliance_vm_id.into(),
            volume_id: volume_id.into(),
            prep: prep.clone(),
        };
        self.execute(call, request).await
    }

    async fn list_vm_volumes(&self, vm_id: &VmId) -> Result<Vec<VolumeInfo>> {
        non_empty("vm_id", vm_id)?;
        let volumes = look::volumes_of(&self.inner.client, vm_id).await?;
        let mut infos: Vec<VolumeInfo> = volumes.iter().map(VolumeInfo::from).collect();
        self.inner
            .appliances()
            .fill_devices(vm_id, &mut infos)
            .await?;
        Ok(infos)
    }

    async fn wait_device(
        &self,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        presence: Presence,
        timeout: Duration,
    ) -> Result<Option<Device>> {
        non_empty("volume_id", volume_id)?;
        let inner = &self.inner;
        let root = inner.appliances().root(appliance_vm_id)?.clone();
        let serial = cloudstack::volume_serial(volume_id);
        let mut device_id = None;
        if presence == Presence::Appears {
            device_id = inner
                .appliances()
                .attached(appliance_vm_id, volume_id, "its disk will not appear there")
                .await?;
        }
        let found = device::wait(
            &root,
            volume_id,
            &serial,
            presence,
            timeout,
            inner.config.device_poll,
        )
        .await?;
        let found = found.map(|d| Device { device_id, ..d });
        if let Some(device) = &found {
            inner
                .journal
                .record_device(DeviceRecord {
                    volume_id: volume_id.clone(),
                    vm_id: Some(appliance_vm_id.clone()),
                    device_id,
                    device_path: Some(device.path.to_string_lossy().into_owned()),
                })
                .await
                .map_err(Error::journal)?;
        }
        Ok(found)
    }
}
