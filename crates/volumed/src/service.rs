//! The one trait through which ferry uses the volume daemon.
//!
//! Callers (the engine's steps, `ferry demo`, the REST server itself) hold an
//! `Arc<dyn VolumeService>` and cannot tell an in-process [`crate::Local`] from an
//! [`crate::HttpClient`] talking to `ferry volumed` on an appliance. Both give the same
//! results and the same [`crate::Error`]s, because the server sends errors as their
//! serde form and the client decodes them back.
//!
//! **Why `async-trait` and not `-> impl Future` (RPITIT):** the trait must be object
//! safe. A server with several appliances keeps one service per appliance in a map,
//! chosen at run time from configuration (in-process for one, HTTP for another), and
//! the engine's tests substitute fakes; both want `dyn VolumeService`. RPITIT methods
//! make a trait not dyn-compatible, and an enum of the two implementations would shut
//! out fakes. The price of `async-trait` — one boxed future per call — is nothing next
//! to a CloudStack job that takes seconds.
//!
//! Every mutating method takes a [`Call`]: an idempotency key (asking again with the
//! same key returns the first result, waiting for it if it is still under way) and an
//! optional fencing token. Reads take none.

use ids::{SnapshotId, VmId, VolumeId, ZoneId};
use std::time::Duration;

use crate::device::Device;
use crate::error::Result;
use crate::presence::Presence;
use crate::types::{AgentStatus, Call, GuestPrep, GuestPrepOutcome, SnapshotInfo, VolumeInfo};

#[async_trait::async_trait]
pub trait VolumeService: Send + Sync {
    /// Attaches a data volume to a VM; `device_id` `None` lets CloudStack choose the
    /// lowest free id (1, 2, 4, …). Returns the volume as attached.
    async fn attach(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        vm_id: &VmId,
        device_id: Option<i64>,
    ) -> Result<VolumeInfo>;

    /// Attaches a volume as ROOT (device 0). The VM must be Stopped without a device 0.
    async fn attach_root(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        vm_id: &VmId,
    ) -> Result<VolumeInfo>;

    /// Detaches a volume from whatever VM it is on. Returns the volume as detached.
    async fn detach(&self, call: &Call, volume_id: &VolumeId) -> Result<VolumeInfo>;

    /// Takes a volume snapshot named `name` (names should be unique per volume: an
    /// unknown outcome is resolved by looking for a snapshot of that name).
    async fn snapshot(&self, call: &Call, volume_id: &VolumeId, name: &str)
    -> Result<SnapshotInfo>;

    /// Reverts a volume to a snapshot (its VM Stopped, or the volume detached).
    async fn revert(&self, call: &Call, snapshot_id: &SnapshotId) -> Result<SnapshotInfo>;

    async fn delete_snapshot(&self, call: &Call, snapshot_id: &SnapshotId) -> Result<()>;

    /// Creates a new volume from a snapshot (a clone for a drill).
    async fn create_volume_from_snapshot(
        &self,
        call: &Call,
        snapshot_id: &SnapshotId,
        name: &str,
        zone_id: &ZoneId,
    ) -> Result<VolumeInfo>;

    /// Deletes a detached volume ferry created. A registered replica volume is refused
    /// with [`crate::Error::ReplicaVolume`], whatever its state.
    async fn delete_volume(&self, call: &Call, volume_id: &VolumeId) -> Result<()>;

    /// Records that ferry created `volume_id` outside this daemon (the placeholder ROOT
    /// volume the engine's `deployVirtualMachine` made), so that [`Self::delete_volume`]
    /// may delete it. The engine, which keeps the registry of what ferry created,
    /// vouches for it before it asks a remote agent to delete it; a volume the daemon
    /// knows as a replica is refused with [`crate::Error::ReplicaVolume`].
    async fn vouch_created(&self, call: &Call, volume_id: &VolumeId) -> Result<()>;

    /// The daemon's version, API revision, appliances (with the disks it sees) and
    /// journal backlog.
    async fn status(&self) -> Result<AgentStatus>;

    /// The volumes attached to a VM, by device id; for an appliance of this daemon each
    /// visible disk carries its [`Device`].
    async fn list_vm_volumes(&self, vm_id: &VmId) -> Result<Vec<VolumeInfo>>;

    /// Waits until `volume_id`'s disk appears in (returns it) or disappears from
    /// (returns `None`) the appliance `appliance_vm_id`, for at most `timeout`.
    async fn wait_device(
        &self,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        presence: Presence,
        timeout: Duration,
    ) -> Result<Option<Device>>;

    /// Whether `program` is an executable file on the daemon's `PATH`, or an absolute
    /// path to one — evaluated where the daemon runs, which is the appliance
    /// `appliance_vm_id` (an appliance this daemon does not serve is
    /// [`crate::Error::NotFound`]).
    async fn tool_available(&self, appliance_vm_id: &VmId, program: &str) -> Result<bool>;

    /// Runs the guest-preparation command `prep` against `volume_id`'s disk, which must
    /// be attached to the appliance `appliance_vm_id` and visible there; `{device}` in
    /// its arguments becomes the disk's device path. Journaled under the call's key:
    /// asking again returns the first outcome (waiting for it if it is still running)
    /// and never runs the command a second time. A command that fails, is killed or
    /// times out is [`crate::Error::GuestPrepFailed`] (definitive) with the tail of
    /// its output; the disk may then be partly changed.
    async fn prepare_guest(
        &self,
        call: &Call,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        prep: &GuestPrep,
    ) -> Result<GuestPrepOutcome>;
}
