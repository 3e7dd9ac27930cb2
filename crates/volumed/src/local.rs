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
//!    *Unknown* (timeout, lost response): look at CloudStack first (see
//!    `Inner::look`); submit again — once — only if looking shows that nothing
//!    happened and no job for it is pending.
//!
//! An operation whose outcome is still unknown, or whose submission kept failing
//! transiently, stays *unfinished* in the journal and the caller gets an error of
//! class unknown or transient. Asking again with the same key, or
//! [`Local::resume_unfinished`] after a restart, picks it up: with a job id, by
//! waiting on that job (never a second submission); without one, by looking first.
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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloudstack::{Client, ErrorClass, Job, JobStatus, Snapshot, Success, Volume, VolumeFilter};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::device::{self, PollSteps};
use crate::error::{Error, GuestPrepFailure};
use crate::guest_prep;
use crate::journal::{
    Begun, DeviceRecord, Journal, JournalError, NewOp, OpKind, OpRecord, Outcome,
};
use crate::types::{Call, GuestPrep, GuestPrepOutcome, OpRequest, SnapshotInfo, VolumeInfo};
use crate::{Device, Presence, Result, VolumeService};

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

/// How long guest preparation waits for a disk CloudStack has on the appliance to be
/// visible there (normally it is already: the caller waited for it after attaching).
const GUEST_PREP_DEVICE_WAIT: Duration = Duration::from_secs(30);

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
    /// Serialization key (`vm:<id>`, `volume:<id>`, `snapshot:<id>`) → its lock.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    concurrency: std::sync::Mutex<Concurrency>,
}

#[derive(Default)]
struct Concurrency {
    running: HashMap<String, u32>,
    max: u32,
}

/// Whether an operation is new (submit it) or was found unfinished (look first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    New,
    /// Found unfinished by a request that asked again with its key.
    Recovered,
    /// Found unfinished by [`Local::resume_unfinished`]: nobody is asking.
    Resumed,
}

/// What looking at CloudStack said about an operation of unknown outcome.
enum Look {
    /// It happened; here is its result.
    Done(Value),
    /// A job for it is pending: wait on that one.
    Pending {
        job_id: String,
        entity_id: Option<String>,
    },
    /// Nothing happened and nothing is happening: submitting is safe.
    NotDone,
    /// It cannot succeed any more (the volume is gone, or is on another VM).
    Failed(Error),
    /// Looking did not settle it.
    Unresolved(String),
}

/// What a submission returned.
enum Submitted {
    Job {
        job_id: String,
        entity_id: Option<String>,
    },
    /// A synchronous command (deleteVolume) that is already done.
    Done(Value),
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

fn journal_error(e: JournalError) -> Error {
    match e {
        JournalError::Fenced {
            run_id,
            generation,
            highest,
        } => Error::Fenced {
            run_id,
            generation,
            highest,
        },
        JournalError::DevicePathTaken {
            path,
            other_volume_id,
        } => Error::DeviceConflict {
            detail: format!("{path} is already recorded for volume {other_volume_id}"),
        },
        other => Error::Journal {
            detail: crate::error::chain(&other),
        },
    }
}

fn kind_of(request: &OpRequest) -> OpKind {
    match request {
        OpRequest::Attach { .. } => OpKind::Attach,
        OpRequest::AttachRoot { .. } => OpKind::AttachRoot,
        OpRequest::Detach { .. } => OpKind::Detach,
        OpRequest::Snapshot { .. } => OpKind::Snapshot,
        OpRequest::Revert { .. } => OpKind::Revert,
        OpRequest::DeleteSnapshot { .. } => OpKind::DeleteSnapshot,
        OpRequest::CreateVolume { .. } => OpKind::CreateVolume,
        OpRequest::DeleteVolume { .. } => OpKind::DeleteVolume,
        OpRequest::GuestPrep { .. } => OpKind::GuestPrep,
    }
}

/// The CloudStack command of an operation (for job resumption and messages).
fn command_of(kind: OpKind) -> &'static str {
    match kind {
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

/// The serialization key of an operation: its VM, else its volume, else its snapshot.
///
/// Guest preparation is serialized per volume, not per appliance: it can run for an
/// hour, and the appliance's other disks (other VMs' failovers) must not wait for it.
/// Nothing else is done to that volume meanwhile, because its one caller — the
/// failover that owns the VM — does one thing at a time.
fn lock_key(op: &OpRecord) -> String {
    if op.kind == OpKind::GuestPrep
        && let Some(v) = &op.volume_id
    {
        format!("volume:{v}")
    } else if let Some(vm) = &op.vm_id {
        format!("vm:{vm}")
    } else if let Some(v) = &op.volume_id {
        format!("volume:{v}")
    } else if let Some(s) = &op.snapshot_id {
        format!("snapshot:{s}")
    } else {
        format!("op:{}", op.id)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
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
                locks: std::sync::Mutex::new(HashMap::new()),
                concurrency: std::sync::Mutex::new(Concurrency::default()),
            }),
        }
    }

    /// The most operations this daemon ever had under way at once for one VM (or
    /// volume, or snapshot). Serialization keeps it at 1.
    pub fn max_in_flight_per_vm(&self) -> u32 {
        lock(&self.inner.concurrency).max
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
            .map_err(journal_error)?
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
                .map_err(journal_error)?;
        }
        let (vm_id, volume_id, snapshot_id) = self.inner.subjects(&request).await?;
        let new = NewOp {
            id: uuid::Uuid::new_v4().to_string(),
            idempotency_key: call.idempotency_key.clone(),
            kind: kind_of(&request),
            vm_id,
            volume_id,
            snapshot_id,
            request: to_json(&request),
            run_id: call.fence.as_ref().map(|f| f.run_id.clone()),
        };
        let future = {
            let mut inflight = self.inner.inflight.lock().await;
            match journal.begin(new.clone()).await.map_err(journal_error)? {
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
            vm_id = op.vm_id.as_deref().unwrap_or(""),
            volume_id = op.volume_id.as_deref().unwrap_or(""),
            run_id = op.run_id.as_deref().unwrap_or(""),
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

/// A read whose definitive failure (CloudStack refusing an id that does not exist)
/// means "nothing there"; only transient and unknown failures are errors.
fn settled<T>(read: Result<T, cloudstack::Error>) -> Result<Option<T>> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.class() == ErrorClass::Definitive => Ok(None),
        Err(e) => Err(Error::cloudstack(&e)),
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

/// Counts an operation as running under its serialization key while alive.
struct Running<'a> {
    inner: &'a Inner,
    key: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut c = lock(&self.inner.concurrency);
        if let Some(n) = c.running.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Inner {
    fn enter(&self, key: &str) -> Running<'_> {
        let mut c = lock(&self.concurrency);
        let n = c.running.entry(key.to_string()).or_default();
        *n += 1;
        let now = *n;
        c.max = c.max.max(now);
        Running {
            inner: self,
            key: key.to_string(),
        }
    }

    fn serialization_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        // TODO-robustness: entries are never removed; one small mutex per VM, volume
        // and snapshot ever touched by this process.
        lock(&self.locks)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// The VM, volume and snapshot an operation concerns, as recorded with it.
    ///
    /// This runs before the journal is asked about the key, so it must not fail on a
    /// volume or snapshot that is gone: a repeated request for an operation that
    /// succeeded (a detach, and the clone has since been deleted) must still get its
    /// recorded answer. What cannot be found is left out; CloudStack itself refuses a
    /// new operation on it, definitively.
    async fn subjects(
        &self,
        request: &OpRequest,
    ) -> Result<(Option<String>, Option<String>, Option<String>)> {
        Ok(match request {
            OpRequest::Attach {
                volume_id, vm_id, ..
            }
            | OpRequest::AttachRoot { volume_id, vm_id } => {
                (Some(vm_id.clone()), Some(volume_id.clone()), None)
            }
            OpRequest::Detach { volume_id } | OpRequest::Snapshot { volume_id, .. } => {
                (self.vm_of(volume_id).await?, Some(volume_id.clone()), None)
            }
            OpRequest::Revert { snapshot_id } => {
                let snapshot = settled(self.client.list_snapshots(None, Some(snapshot_id)).await)?
                    .and_then(|list| list.into_iter().next());
                let volume_id = snapshot.and_then(|s| s.volumeid);
                let vm = match &volume_id {
                    Some(v) => self.vm_of(v).await?,
                    None => None,
                };
                (vm, volume_id, Some(snapshot_id.clone()))
            }
            OpRequest::DeleteSnapshot { snapshot_id }
            | OpRequest::CreateVolume { snapshot_id, .. } => {
                (None, None, Some(snapshot_id.clone()))
            }
            OpRequest::DeleteVolume { volume_id } => (None, Some(volume_id.clone()), None),
            OpRequest::GuestPrep {
                appliance_vm_id,
                volume_id,
                ..
            } => (Some(appliance_vm_id.clone()), Some(volume_id.clone()), None),
        })
    }

    /// The VM a volume is attached to; `None` when detached or not found.
    async fn vm_of(&self, volume_id: &str) -> Result<Option<String>> {
        Ok(settled(self.client.get_volume(volume_id).await)?
            .flatten()
            .and_then(|v| v.virtualmachineid))
    }

    /// Drives one operation to its end (or to an error that leaves it unfinished).
    async fn drive(self: &Arc<Self>, op: OpRecord, origin: Origin) -> Result<Value> {
        let request: OpRequest = serde_json::from_value(op.request.clone()).map_err(|e| {
            Error::internal(format!(
                "operation {} has an unreadable request {}: {e}",
                op.id, op.request
            ))
        })?;
        let key = lock_key(&op);
        let serial = self.serialization_lock(&key);
        let _serialized = serial.lock().await;
        let _running = self.enter(&key);
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
                self.guest_prep(&op, origin, appliance_vm_id, volume_id, prep)
                    .await
            }
            (_, Some(job_id)) => self.wait_job(&op, job_id, op.entity_id.clone()).await,
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
            tracing::error!(error = %crate::error::chain(&e), "could not record the end of an operation");
            return Err(journal_error(e));
        }
        outcome
    }

    async fn submit_and_wait(
        &self,
        op: &OpRecord,
        request: &OpRequest,
        origin: Origin,
    ) -> Result<Value> {
        // One resubmission is allowed after looking showed that an unknown outcome was
        // "nothing happened"; a recovered operation spends it on its first submission.
        let mut may_resubmit = true;
        if origin != Origin::New {
            match self.look_settled(op, request).await? {
                Some(done) => return done,
                None => may_resubmit = false,
            }
        }
        self.may_submit(request).await?;
        let mut transient_failures = 0;
        let mut backoff = self.config.submit_backoff;
        loop {
            let error = match self.submit(request).await {
                Ok(Submitted::Done(value)) => return Ok(value),
                Ok(Submitted::Job { job_id, entity_id }) => {
                    tracing::Span::current().record("job_id", job_id.as_str());
                    tracing::debug!(job_id, entity_id, "submitted");
                    self.journal
                        .set_job(&op.id, &job_id, entity_id.as_deref())
                        .await
                        .map_err(journal_error)?;
                    self.note_entity(op, request, entity_id.as_deref()).await?;
                    return self.wait_job(op, &job_id, entity_id).await;
                }
                Err(e) => e,
            };
            match error.class() {
                ErrorClass::Definitive => return Err(Error::cloudstack(&error)),
                ErrorClass::Transient => {
                    transient_failures += 1;
                    if transient_failures >= self.config.submit_attempts.max(1) {
                        return Err(Error::cloudstack(&error));
                    }
                    tracing::info!(error = %error, attempt = transient_failures, "submission failed transiently; resubmitting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                ErrorClass::Unknown => {
                    tracing::warn!(error = %error, "submission of unknown outcome; looking at CloudStack");
                    match self.look_settled(op, request).await? {
                        Some(done) => return done,
                        None if may_resubmit => {
                            tracing::info!(
                                "nothing happened and nothing is pending; resubmitting once"
                            );
                            may_resubmit = false;
                        }
                        None => {
                            return Err(Error::OutcomeUnknown {
                                op_id: op.id.clone(),
                                detail: format!(
                                    "{} was sent again after an unknown outcome and again got no answer ({}); CloudStack shows nothing yet",
                                    command_of(op.kind),
                                    crate::error::chain(&error)
                                ),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Looks, and settles the operation if looking can: `Some(outcome)` when it is done,
    /// failed, or pending (then waited on); `None` when nothing happened.
    async fn look_settled(
        &self,
        op: &OpRecord,
        request: &OpRequest,
    ) -> Result<Option<Result<Value>>> {
        let look = self
            .look(op, request)
            .await
            .map_err(|e| Error::OutcomeUnknown {
                op_id: op.id.clone(),
                detail: format!("looking at CloudStack failed: {}", crate::error::chain(&e)),
            })?;
        Ok(match look {
            Look::Done(value) => {
                tracing::info!("looking showed the operation done");
                Some(Ok(value))
            }
            Look::Pending { job_id, entity_id } => {
                tracing::info!(
                    job_id,
                    "looking found the operation's job pending; adopting it"
                );
                tracing::Span::current().record("job_id", job_id.as_str());
                self.journal
                    .set_job(&op.id, &job_id, entity_id.as_deref())
                    .await
                    .map_err(journal_error)?;
                self.note_entity(op, request, entity_id.as_deref()).await?;
                Some(self.wait_job(op, &job_id, entity_id).await)
            }
            Look::Failed(e) => Some(Err(e)),
            Look::Unresolved(detail) => Some(Err(Error::OutcomeUnknown {
                op_id: op.id.clone(),
                detail,
            })),
            Look::NotDone => None,
        })
    }

    /// The checks made before anything is sent: ferry deletes only volumes it created,
    /// and never a replica. They run inside the operation, so the refusal is recorded
    /// and is the answer to every request with the key.
    async fn may_submit(&self, request: &OpRequest) -> Result<()> {
        if let OpRequest::DeleteVolume { volume_id } = request {
            let journal = &self.journal;
            if journal.is_replica(volume_id).await.map_err(journal_error)? {
                return Err(Error::ReplicaVolume {
                    volume_id: volume_id.clone(),
                });
            }
            if !journal
                .is_created_volume(volume_id)
                .await
                .map_err(journal_error)?
            {
                return Err(Error::NotCreatedByFerry {
                    volume_id: volume_id.clone(),
                });
            }
        }
        Ok(())
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
                .record_created_volume(volume_id, Some(snapshot_id), op.run_id.as_deref())
                .await
                .map_err(journal_error)?;
        }
        Ok(())
    }

    async fn submit(&self, request: &OpRequest) -> Result<Submitted, cloudstack::Error> {
        let c = &self.client;
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
            OpRequest::DeleteSnapshot { snapshot_id } => {
                job(c.delete_snapshot(snapshot_id).await?)
            }
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

    /// Waits on a recorded job. Only a failed job ends the operation as failed; any
    /// other error leaves it unfinished, with its job id, to be waited on again.
    async fn wait_job(
        &self,
        op: &OpRecord,
        job_id: &str,
        entity_id: Option<String>,
    ) -> Result<Value> {
        let command = command_of(op.kind);
        let c = &self.client;
        let waited: Result<Value, cloudstack::Error> = match op.kind {
            OpKind::Attach | OpKind::AttachRoot | OpKind::Detach | OpKind::CreateVolume => c
                .wait(&Job::<Volume>::resume(command, job_id, entity_id))
                .await
                .map(|v| to_json(&VolumeInfo::from(&v))),
            OpKind::Snapshot | OpKind::Revert => c
                .wait(&Job::<Snapshot>::resume(command, job_id, entity_id))
                .await
                .map(|s| to_json(&SnapshotInfo::from(&s))),
            OpKind::DeleteSnapshot => c
                .wait(&Job::<Success>::resume(command, job_id, entity_id))
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
            cloudstack::Error::JobFailed { .. } => Error::cloudstack(&e),
            other => Error::OutcomeUnknown {
                op_id: op.id.clone(),
                detail: format!(
                    "waiting on job {job_id} ({command}) failed: {}",
                    crate::error::chain(&other)
                ),
            },
        })
    }

    /// A job of `command` (a fragment of CloudStack's command class name, such as
    /// `AttachVolume`) on `instance_id` that has not finished.
    async fn pending_job(
        &self,
        instance_id: &str,
        command: &str,
    ) -> Result<Option<String>, cloudstack::Error> {
        let jobs = self.client.list_async_jobs().await?;
        Ok(jobs
            .into_iter()
            .find(|j| {
                j.jobstatus == JobStatus::Pending
                    && j.jobinstanceid.as_deref() == Some(instance_id)
                    && j.cmd.as_deref().is_some_and(|c| c.contains(command))
            })
            .map(|j| j.jobid))
    }

    /// Looks at CloudStack to learn whether an operation of unknown outcome happened.
    async fn look(&self, op: &OpRecord, request: &OpRequest) -> Result<Look, cloudstack::Error> {
        let c = &self.client;
        Ok(match request {
            OpRequest::Attach {
                volume_id, vm_id, ..
            }
            | OpRequest::AttachRoot { volume_id, vm_id } => {
                let expected = match request {
                    OpRequest::Attach { device_id, .. } => *device_id,
                    _ => Some(0),
                };
                let Some(v) = c.get_volume(volume_id).await? else {
                    return Ok(Look::Failed(Error::not_found(format!(
                        "volume {volume_id} no longer exists"
                    ))));
                };
                match v.virtualmachineid.as_deref() {
                    Some(on) if on == vm_id && v.state != "Attaching" => match expected {
                        Some(d) if v.deviceid != Some(d) => Look::Failed(Error::conflict(format!(
                            "volume {volume_id} is on VM {vm_id} at device {:?}, not at the requested device {d}",
                            v.deviceid
                        ))),
                        _ => Look::Done(to_json(&VolumeInfo::from(&v))),
                    },
                    Some(on) if on != vm_id => Look::Failed(Error::conflict(format!(
                        "volume {volume_id} is attached to VM {on}, not to {vm_id}"
                    ))),
                    _ => match self.pending_job(volume_id, "AttachVolume").await? {
                        Some(job_id) => Look::Pending {
                            job_id,
                            entity_id: None,
                        },
                        None if v.state == "Attaching" => Look::Unresolved(format!(
                            "volume {volume_id} is Attaching but no attach job is pending"
                        )),
                        None => Look::NotDone,
                    },
                }
            }
            OpRequest::Detach { volume_id } => {
                let Some(v) = c.get_volume(volume_id).await? else {
                    return Ok(Look::Failed(Error::not_found(format!(
                        "volume {volume_id} no longer exists"
                    ))));
                };
                if v.virtualmachineid.is_none() || v.virtualmachineid != op.vm_id {
                    Look::Done(to_json(&VolumeInfo::from(&v)))
                } else {
                    match self.pending_job(volume_id, "DetachVolume").await? {
                        Some(job_id) => Look::Pending {
                            job_id,
                            entity_id: None,
                        },
                        None => Look::NotDone,
                    }
                }
            }
            OpRequest::Snapshot { volume_id, name } => {
                let named: Vec<Snapshot> = c
                    .list_snapshots(Some(volume_id), None)
                    .await?
                    .into_iter()
                    .filter(|s| &s.name == name)
                    .collect();
                match named.as_slice() {
                    [] => Look::NotDone,
                    [s] => match s.state.as_deref() {
                        Some("BackedUp") => Look::Done(to_json(&SnapshotInfo::from(s))),
                        Some("Error") => Look::Failed(Error::CloudStack {
                            class: crate::Class::Definitive,
                            command: "createSnapshot".into(),
                            errorcode: None,
                            job_id: None,
                            detail: format!("snapshot {} ({name}) ended in state Error", s.id),
                        }),
                        state => match self.pending_job(&s.id, "CreateSnapshot").await? {
                            Some(job_id) => Look::Pending {
                                job_id,
                                entity_id: Some(s.id.clone()),
                            },
                            None => Look::Unresolved(format!(
                                "snapshot {} ({name}) is in state {state:?} without a pending job",
                                s.id
                            )),
                        },
                    },
                    several => Look::Unresolved(format!(
                        "{} snapshots of volume {volume_id} are named {name}",
                        several.len()
                    )),
                }
            }
            OpRequest::Revert { snapshot_id } => {
                // A revert leaves nothing to see in the API, but doing it again is
                // harmless: the volume's VM is stopped (or the volume detached) and
                // this daemon holds the VM's lock, so nothing wrote in between.
                match self.pending_job(snapshot_id, "RevertSnapshot").await? {
                    Some(job_id) => Look::Pending {
                        job_id,
                        entity_id: None,
                    },
                    None => Look::NotDone,
                }
            }
            OpRequest::DeleteSnapshot { snapshot_id } => {
                if c.list_snapshots(None, Some(snapshot_id)).await?.is_empty() {
                    Look::Done(Value::Null)
                } else {
                    match self.pending_job(snapshot_id, "DeleteSnapshot").await? {
                        Some(job_id) => Look::Pending {
                            job_id,
                            entity_id: None,
                        },
                        None => Look::NotDone,
                    }
                }
            }
            OpRequest::CreateVolume { name, zone_id, .. } => {
                let filter = VolumeFilter {
                    name: Some(name.clone()),
                    zone_id: Some(zone_id.clone()),
                    ..Default::default()
                };
                // CloudStack matches `name` as a substring: compare exactly.
                let named: Vec<Volume> = c
                    .list_volumes(&filter)
                    .await?
                    .into_iter()
                    .filter(|v| &v.name == name)
                    .collect();
                match named.as_slice() {
                    [] => Look::NotDone,
                    [v] if v.state == "Ready" => Look::Done(to_json(&VolumeInfo::from(v))),
                    [v] => match self.pending_job(&v.id, "CreateVolume").await? {
                        Some(job_id) => Look::Pending {
                            job_id,
                            entity_id: Some(v.id.clone()),
                        },
                        None => Look::Unresolved(format!(
                            "volume {} ({name}) is {} without a pending job",
                            v.id, v.state
                        )),
                    },
                    several => Look::Unresolved(format!(
                        "{} volumes in zone {zone_id} are named {name}",
                        several.len()
                    )),
                }
            }
            OpRequest::DeleteVolume { volume_id } => match c.get_volume(volume_id).await? {
                None => Look::Done(Value::Null),
                Some(_) => Look::NotDone,
            },
            // A command's effect on a disk cannot be looked up; `guest_prep` never
            // asks.
            OpRequest::GuestPrep { .. } => Look::Unresolved(
                "the effect of a guest preparation cannot be looked up in CloudStack".into(),
            ),
        })
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
                            .record_created_volume(id, Some(snapshot_id), op.run_id.as_deref())
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
            tracing::warn!(error = %crate::error::chain(&e), "could not record a created or deleted volume");
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

    /// Checks with CloudStack that `volume_id` is attached to the appliance and that no
    /// other volume there shares its serial; returns its device id.
    async fn attached_to_appliance(
        &self,
        appliance_vm_id: &str,
        volume_id: &str,
        otherwise: &str,
    ) -> Result<Option<i64>> {
        let serial = cloudstack::volume_serial(volume_id);
        let attached = self.volumes_of(appliance_vm_id).await?;
        // A serial is only the first 20 hex digits of the volume's UUID: two
        // volumes can share one, and then one path would name two disks.
        if let Some(other) = attached
            .iter()
            .find(|v| v.id != volume_id && cloudstack::volume_serial(&v.id) == serial)
        {
            return Err(Error::DeviceConflict {
                detail: format!(
                    "volumes {volume_id} and {} on appliance {appliance_vm_id} share the serial {serial}, so one path would name both",
                    other.id
                ),
            });
        }
        match attached.iter().find(|v| v.id == volume_id) {
            Some(ours) => Ok(ours.deviceid),
            None => Err(Error::conflict(format!(
                "volume {volume_id} is not attached to appliance {appliance_vm_id}; {otherwise}"
            ))),
        }
    }

    /// Runs a guest preparation: see [`crate::guest_prep`] for why it is never run
    /// twice for one key.
    async fn guest_prep(
        &self,
        op: &OpRecord,
        origin: Origin,
        appliance_vm_id: &str,
        volume_id: &str,
        prep: &GuestPrep,
    ) -> Result<Value> {
        let root = self.appliance_root(appliance_vm_id)?.clone();
        let serial = cloudstack::volume_serial(volume_id);
        let expected_path = root
            .join(
                Device::path_of(&serial)
                    .strip_prefix("/")
                    .unwrap_or(Path::new("")),
            )
            .to_string_lossy()
            .into_owned();
        let failed = |device: &str, command: String, reason: String| -> Error {
            GuestPrepFailure {
                volume_id: volume_id.to_string(),
                device: device.to_string(),
                command,
                reason,
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            }
            .into()
        };
        if let Some(started) = &op.job_id {
            // Started by a daemon that is gone: it may have done any part of its work.
            return Err(failed(
                &expected_path,
                guest_prep::command_line(&prep.program, &prep.args_for(&expected_path)),
                format!(
                    "was interrupted: the volume daemon stopped while it ran ({started}), and it is never run twice for one request; \
                     revert the disk to its snapshot and ask again with a new idempotency key"
                ),
            ));
        }
        if origin == Origin::Resumed {
            return Err(failed(
                &expected_path,
                guest_prep::command_line(&prep.program, &prep.args_for(&expected_path)),
                "was not run: the volume daemon restarted before it started, and it does not start a \
                 command that changes a disk when nobody is waiting for it; ask again with a new idempotency key"
                    .to_string(),
            ));
        }
        self.attached_to_appliance(
            appliance_vm_id,
            volume_id,
            "guest preparation runs only on a disk attached there",
        )
        .await?;
        let device = device::wait(
            &root,
            volume_id,
            &serial,
            Presence::Appears,
            GUEST_PREP_DEVICE_WAIT,
            self.config.device_poll,
        )
        .await?
        .ok_or_else(|| Error::internal("an appearing device was not returned"))?;
        let device_path = device.under(&root).to_string_lossy().into_owned();
        let args = prep.args_for(&device_path);
        let command = guest_prep::command_line(&prep.program, &args);
        // Recorded as started before it starts: from here on, it is never run again.
        self.journal
            .set_job(&op.id, "guest-prep:starting", None)
            .await
            .map_err(journal_error)?;
        let started = guest_prep::start(&prep.program, &args)
            .map_err(|reason| failed(&device_path, command.clone(), reason))?;
        if let Some(pid) = started.pid() {
            let job = format!("guest-prep:pid:{pid}");
            tracing::Span::current().record("job_id", job.as_str());
            if let Err(e) = self.journal.set_job(&op.id, &job, None).await {
                // It is recorded as started already; the pid is only for the operator.
                tracing::warn!(error = %crate::error::chain(&e), "could not record the guest preparation's pid");
            }
        }
        tracing::info!(command, kernel_name = %device.kernel_name, timeout_secs = prep.timeout_secs, "guest preparation started");
        match started.finish(Duration::from_secs(prep.timeout_secs)).await {
            Ok(ran) => {
                tracing::info!(
                    command,
                    duration_ms = ran.duration.as_millis() as u64,
                    "guest preparation succeeded"
                );
                Ok(to_json(&GuestPrepOutcome {
                    appliance_vm_id: appliance_vm_id.to_string(),
                    volume_id: volume_id.to_string(),
                    device_path,
                    kernel_name: device.kernel_name,
                    command: std::iter::once(prep.program.clone()).chain(args).collect(),
                    exit_code: 0,
                    duration_ms: ran.duration.as_millis() as u64,
                    stdout_tail: ran.stdout_tail,
                    stderr_tail: ran.stderr_tail,
                }))
            }
            Err(f) => Err(GuestPrepFailure {
                volume_id: volume_id.to_string(),
                device: device_path,
                command,
                reason: f.reason,
                stdout_tail: f.stdout_tail,
                stderr_tail: f.stderr_tail,
            }
            .into()),
        }
    }

    fn appliance_root(&self, vm_id: &str) -> Result<&PathBuf> {
        self.config.appliances.get(vm_id).ok_or_else(|| {
            Error::not_found(format!(
                "VM {vm_id} is not an appliance of this volume daemon (it knows {})",
                if self.config.appliances.is_empty() {
                    "none".to_string()
                } else {
                    self.config
                        .appliances
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })
    }

    async fn volumes_of(&self, vm_id: &str) -> Result<Vec<Volume>> {
        let mut volumes = self
            .client
            .list_volumes(&VolumeFilter {
                virtual_machine_id: Some(vm_id.to_string()),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::cloudstack(&e))?;
        volumes.sort_by_key(|v| v.deviceid);
        Ok(volumes)
    }
}

#[async_trait::async_trait]
impl VolumeService for Local {
    async fn attach(
        &self,
        call: &Call,
        volume_id: &str,
        vm_id: &str,
        device_id: Option<i64>,
    ) -> Result<VolumeInfo> {
        self.execute(
            call,
            OpRequest::Attach {
                volume_id: volume_id.into(),
                vm_id: vm_id.into(),
                device_id,
            },
        )
        .await
    }

    async fn attach_root(&self, call: &Call, volume_id: &str, vm_id: &str) -> Result<VolumeInfo> {
        self.execute(
            call,
            OpRequest::AttachRoot {
                volume_id: volume_id.into(),
                vm_id: vm_id.into(),
            },
        )
        .await
    }

    async fn detach(&self, call: &Call, volume_id: &str) -> Result<VolumeInfo> {
        self.execute(
            call,
            OpRequest::Detach {
                volume_id: volume_id.into(),
            },
        )
        .await
    }

    async fn snapshot(&self, call: &Call, volume_id: &str, name: &str) -> Result<SnapshotInfo> {
        self.execute(
            call,
            OpRequest::Snapshot {
                volume_id: volume_id.into(),
                name: name.into(),
            },
        )
        .await
    }

    async fn revert(&self, call: &Call, snapshot_id: &str) -> Result<SnapshotInfo> {
        self.execute(
            call,
            OpRequest::Revert {
                snapshot_id: snapshot_id.into(),
            },
        )
        .await
    }

    async fn delete_snapshot(&self, call: &Call, snapshot_id: &str) -> Result<()> {
        self.execute_value(
            call,
            OpRequest::DeleteSnapshot {
                snapshot_id: snapshot_id.into(),
            },
        )
        .await
        .map(|_| ())
    }

    async fn create_volume_from_snapshot(
        &self,
        call: &Call,
        snapshot_id: &str,
        name: &str,
        zone_id: &str,
    ) -> Result<VolumeInfo> {
        self.execute(
            call,
            OpRequest::CreateVolume {
                snapshot_id: snapshot_id.into(),
                name: name.into(),
                zone_id: zone_id.into(),
            },
        )
        .await
    }

    async fn delete_volume(&self, call: &Call, volume_id: &str) -> Result<()> {
        self.execute_value(
            call,
            OpRequest::DeleteVolume {
                volume_id: volume_id.into(),
            },
        )
        .await
        .map(|_| ())
    }

    async fn tool_available(&self, appliance_vm_id: &str, program: &str) -> Result<bool> {
        crate::types::non_empty("appliance_vm_id", appliance_vm_id)?;
        // Evaluated here: this daemon runs on the appliance.
        self.inner.appliance_root(appliance_vm_id)?;
        let program = program.to_string();
        let found = tokio::task::spawn_blocking(move || {
            guest_prep::find_executable(&program, std::env::var_os("PATH").as_deref())
        })
        .await
        .map_err(|e| Error::internal(format!("tool lookup task: {e}")))??;
        Ok(found.is_some())
    }

    async fn prepare_guest(
        &self,
        call: &Call,
        appliance_vm_id: &str,
        volume_id: &str,
        prep: &GuestPrep,
    ) -> Result<GuestPrepOutcome> {
        // Refused before anything is recorded: not an appliance of this daemon.
        self.inner.appliance_root(appliance_vm_id)?;
        self.execute(
            call,
            OpRequest::GuestPrep {
                appliance_vm_id: appliance_vm_id.into(),
                volume_id: volume_id.into(),
                prep: prep.clone(),
            },
        )
        .await
    }

    async fn list_vm_volumes(&self, vm_id: &str) -> Result<Vec<VolumeInfo>> {
        crate::types::non_empty("vm_id", vm_id)?;
        let volumes = self.inner.volumes_of(vm_id).await?;
        let mut infos: Vec<VolumeInfo> = volumes.iter().map(VolumeInfo::from).collect();
        if let Some(root) = self.inner.config.appliances.get(vm_id).cloned() {
            let devices = tokio::task::spawn_blocking(move || device::scan_all(&root))
                .await
                .map_err(|e| Error::internal(format!("device scan task: {e}")))?;
            for info in &mut infos {
                let serial = cloudstack::volume_serial(&info.id);
                info.device = devices.iter().find(|d| d.serial == serial).cloned();
            }
        }
        Ok(infos)
    }

    async fn wait_device(
        &self,
        appliance_vm_id: &str,
        volume_id: &str,
        presence: Presence,
        timeout: Duration,
    ) -> Result<Option<Device>> {
        crate::types::non_empty("volume_id", volume_id)?;
        let inner = &self.inner;
        let root = inner.appliance_root(appliance_vm_id)?.clone();
        let serial = cloudstack::volume_serial(volume_id);
        let mut device_id = None;
        if presence == Presence::Appears {
            device_id = inner
                .attached_to_appliance(appliance_vm_id, volume_id, "its disk will not appear there")
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
        if let Some(device) = &found {
            inner
                .journal
                .record_device(DeviceRecord {
                    volume_id: volume_id.to_string(),
                    vm_id: Some(appliance_vm_id.to_string()),
                    device_id,
                    device_path: Some(device.path.to_string_lossy().into_owned()),
                })
                .await
                .map_err(journal_error)?;
        }
        Ok(found)
    }
}
