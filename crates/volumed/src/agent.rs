//! [`Agent`]: the engine's side of one appliance's volume agent — a `ferry volumed`
//! on the appliance, reached over HTTPS.
//!
//! # Who keeps which record
//!
//! The agent keeps its **operation journal** (what it asked CloudStack, under which
//! idempotency key, and how it ended) and its fencing generations, in its own
//! database on the appliance: that is what lets it finish or report an operation
//! after a restart, and answer a repeated request with the first result.
//!
//! The engine keeps the **registry**: which volumes are replicas (never deleted),
//! which ones ferry created (the only ones it deletes), and where each replica is
//! attached and at which device path. Drift handling, cleanup and `vm show` read it,
//! whichever agent moved the volume. So an [`Agent`] writes the registry from the
//! agent's answers, as [`crate::Local`] does from CloudStack's: an attach, detach or
//! device wait records where the volume now is, a clone is recorded as created, and a
//! delete is refused here, before anything is sent, for a replica or a volume ferry
//! did not create. A crash between the agent's answer and the registry write is
//! repaired by the step's repeated request: under the same key the agent answers the
//! same, and the record is written then.
//!
//! # First contact
//!
//! Before its first request the agent is asked who it is ([`HttpClient::hello`]): a
//! different API revision, or an agent that does not serve this appliance, is a
//! definitive refusal, not a strange failure in the middle of a run. (Every request
//! also carries the revision and the appliance, which the agent checks, so a
//! restarted agent of another release is refused too.)

use ids::{SnapshotId, VmId, VolumeId, ZoneId};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::deletion;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::http_client::{HttpClient, HttpClientConfig};
use crate::journal::{DeviceRecord, Journal};
use crate::presence::Presence;
use crate::service::VolumeService;
use crate::types::{AgentStatus, Call, GuestPrep, GuestPrepOutcome, SnapshotInfo, VolumeInfo};

/// One appliance's remote volume agent, with the engine's registry beside it.
pub struct Agent {
    appliance: String,
    vm_id: VmId,
    http: HttpClient,
    registry: Arc<dyn Journal>,
    greeted: OnceCell<()>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("appliance", &self.appliance)
            .field("vm_id", &self.vm_id)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// The agent of appliance `name` (VM `vm_id`) as `config` reaches it; `registry`
    /// is the engine's (a [`crate::StoreJournal`] on the engine's store).
    pub fn new(
        name: impl Into<String>,
        vm_id: VmId,
        mut config: HttpClientConfig,
        registry: Arc<dyn Journal>,
    ) -> Result<Self> {
        let appliance = name.into();
        config.appliance = Some((appliance.clone(), vm_id.clone()));
        Ok(Agent {
            appliance,
            vm_id,
            http: HttpClient::new(config)?,
            registry,
            greeted: OnceCell::new(),
        })
    }

    /// The appliance's name.
    pub fn appliance(&self) -> &str {
        &self.appliance
    }

    /// Says hello once: an agent of another API revision, or of another appliance, is
    /// refused before it is asked to do anything.
    async fn greet(&self) -> Result<()> {
        self.greeted
            .get_or_try_init(|| async {
                let status = self.http.hello().await?;
                tracing::info!(
                    appliance = %self.appliance,
                    version = %status.version,
                    backlog = status.backlog,
                    "the volume agent answered"
                );
                Ok::<(), Error>(())
            })
            .await
            .map(|_| ())
    }

    async fn record(&self, volume: &VolumeInfo, device_path: Option<String>) -> Result<()> {
        self.registry
            .record_device(DeviceRecord {
                volume_id: volume.id.clone(),
                vm_id: volume.vm_id.clone(),
                device_id: volume.device_id,
                device_path,
            })
            .await
            .map_err(Error::journal)
    }

    async fn moved(&self, answer: Result<VolumeInfo>) -> Result<VolumeInfo> {
        let volume = answer?;
        self.record(&volume, None).await?;
        Ok(volume)
    }
}

#[async_trait::async_trait]
impl VolumeService for Agent {
    async fn attach(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        vm_id: &VmId,
        device_id: Option<i64>,
    ) -> Result<VolumeInfo> {
        self.greet().await?;
        self.moved(self.http.attach(call, volume_id, vm_id, device_id).await)
            .await
    }

    async fn attach_root(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        vm_id: &VmId,
    ) -> Result<VolumeInfo> {
        self.greet().await?;
        self.moved(self.http.attach_root(call, volume_id, vm_id).await)
            .await
    }

    async fn detach(&self, call: &Call, volume_id: &VolumeId) -> Result<VolumeInfo> {
        self.greet().await?;
        self.moved(self.http.detach(call, volume_id).await).await
    }

    async fn snapshot(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        name: &str,
    ) -> Result<SnapshotInfo> {
        self.greet().await?;
        self.http.snapshot(call, volume_id, name).await
    }

    async fn revert(&self, call: &Call, snapshot_id: &SnapshotId) -> Result<SnapshotInfo> {
        self.greet().await?;
        self.http.revert(call, snapshot_id).await
    }

    async fn delete_snapshot(&self, call: &Call, snapshot_id: &SnapshotId) -> Result<()> {
        self.greet().await?;
        self.http.delete_snapshot(call, snapshot_id).await
    }

    async fn create_volume_from_snapshot(
        &self,
        call: &Call,
        snapshot_id: &SnapshotId,
        name: &str,
        zone_id: &ZoneId,
    ) -> Result<VolumeInfo> {
        self.greet().await?;
        let volume = self
            .http
            .create_volume_from_snapshot(call, snapshot_id, name, zone_id)
            .await?;
        let run_id = call.fence.as_ref().map(|f| &f.run_id);
        self.registry
            .record_created_volume(&volume.id, Some(snapshot_id), run_id)
            .await
            .map_err(Error::journal)?;
        Ok(volume)
    }

    async fn delete_volume(&self, call: &Call, volume_id: &VolumeId) -> Result<()> {
        call.validate()?;
        deletion::may_delete(self.registry.as_ref(), volume_id).await?;
        self.greet().await?;
        let vouch = Call {
            idempotency_key: format!("{}/vouch", call.idempotency_key),
            fence: call.fence.clone(),
            seen: None,
        };
        self.http.vouch_created(&vouch, volume_id).await?;
        self.http.delete_volume(call, volume_id).await?;
        self.registry
            .mark_created_volume_deleted(volume_id)
            .await
            .map_err(Error::journal)
    }

    async fn vouch_created(&self, call: &Call, volume_id: &VolumeId) -> Result<()> {
        self.greet().await?;
        self.http.vouch_created(call, volume_id).await
    }

    async fn status(&self) -> Result<AgentStatus> {
        self.http.hello().await
    }

    async fn list_vm_volumes(&self, vm_id: &VmId) -> Result<Vec<VolumeInfo>> {
        self.greet().await?;
        self.http.list_vm_volumes(vm_id).await
    }

    async fn wait_device(
        &self,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        presence: Presence,
        timeout: Duration,
    ) -> Result<Option<Device>> {
        self.greet().await?;
        let found = self
            .http
            .wait_device(appliance_vm_id, volume_id, presence, timeout)
            .await?;
        if let Some(device) = &found {
            self.registry
                .record_device(DeviceRecord {
                    volume_id: volume_id.clone(),
                    vm_id: Some(appliance_vm_id.clone()),
                    device_id: device.device_id,
                    device_path: Some(device.path.to_string_lossy().into_owned()),
                })
                .await
                .map_err(Error::journal)?;
        }
        Ok(found)
    }

    async fn tool_available(&self, appliance_vm_id: &VmId, program: &str) -> Result<bool> {
        self.greet().await?;
        self.http.tool_available(appliance_vm_id, program).await
    }

    async fn prepare_guest(
        &self,
        call: &Call,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        prep: &GuestPrep,
    ) -> Result<GuestPrepOutcome> {
        self.greet().await?;
        self.http
            .prepare_guest(call, appliance_vm_id, volume_id, prep)
            .await
    }
}
