//! The rules of snapshot commands: `createSnapshot` (`snapshot_create` in the call,
//! then its job), `revertSnapshot` and `deleteSnapshot`. A snapshot keeps its volume's
//! simulated content generation, and a revert brings it back.

use serde_json::{Value, json};

use crate::error::CsError;
use crate::state::entities::{Snapshot, State, new_id, now};

impl State {
    /// `allocSnapshot`, synchronously: the volume must be Ready and on a pool.
    pub fn snapshot_create(
        &mut self,
        volume_id: &str,
        name: Option<&str>,
    ) -> Result<String, CsError> {
        let vol = self.volume(volume_id)?.clone();
        if vol.state != "Ready" {
            return Err(CsError::param(format!(
                "VolumeId: {} is not in Ready state but {}. Cannot take snapshot.",
                vol.seq, vol.state
            )));
        }
        if let Some(vm) = vol.vm_id.as_ref().and_then(|id| self.vms.get(id))
            && vm.state == "Running"
            && !self.settings.kvm_snapshot_enabled
        {
            return Err(CsError::internal(
                "KVM Snapshot is not supported for Running VMs. It is disabled by default due to a possible volume corruption in certain cases. To enable it set global settings kvm.snapshot.enabled to True. See the documentation for more details.",
            ));
        }
        let id = new_id();
        let seq = self.next_seq();
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
        self.snapshots.insert(
            id.clone(),
            Snapshot {
                id: id.clone(),
                seq,
                name: name
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}_{stamp}", vol.name)),
                volume_id: vol.id.clone(),
                volume_name: vol.name.clone(),
                volume_kind: vol.kind.clone(),
                zone_id: vol.zone_id.clone(),
                size: vol.size,
                state: "Allocated".into(),
                created: now(),
                generation: vol.generation,
            },
        );
        Ok(id)
    }

    pub fn begin_snapshot(&mut self, snapshot_id: &str) -> Result<(), CsError> {
        let snap = self.snapshots.get(snapshot_id).ok_or_else(|| {
            CsError::internal(format!(
                "Failed to create snapshot: snapshot {snapshot_id} is gone"
            ))
        })?;
        let vol = self.volume(&snap.volume_id)?;
        if vol.state != "Ready" {
            return Err(CsError::internal(format!(
                "VolumeId: {} is not in Ready state but {}. Cannot take snapshot.",
                vol.seq, vol.state
            )));
        }
        if let Some(vm) = vol.vm_id.as_ref().and_then(|id| self.vms.get(id))
            && vm.state != "Running"
            && vm.state != "Stopped"
        {
            return Err(CsError::internal(format!(
                "VM {} is in state {}, cannot take a snapshot of its volume",
                vm.name, vm.state
            )));
        }
        let volume_id = snap.volume_id.clone();
        let vol = self.volumes.get_mut(&volume_id).expect("checked");
        vol.prior_state = Some(vol.state.clone());
        vol.state = "Snapshotting".into();
        self.snapshots.get_mut(snapshot_id).expect("checked").state = "Creating".into();
        Ok(())
    }

    pub fn finish_snapshot(&mut self, snapshot_id: &str) -> Value {
        let volume_id = self.snapshots.get(snapshot_id).map(|s| s.volume_id.clone());
        if let Some(volume_id) = volume_id {
            self.abort_volume(&volume_id);
            let generation = self
                .volumes
                .get(&volume_id)
                .map(|v| v.generation)
                .unwrap_or(0);
            let snap = self.snapshots.get_mut(snapshot_id).expect("present");
            snap.state = "BackedUp".into();
            snap.generation = generation;
        }
        json!({ "snapshot": self.snapshot_json(snapshot_id) })
    }

    /// A snapshot job that failed leaves the snapshot in Error.
    pub fn abort_snapshot(&mut self, snapshot_id: &str) {
        if let Some(volume_id) = self.snapshots.get(snapshot_id).map(|s| s.volume_id.clone()) {
            self.abort_volume(&volume_id);
        }
        if let Some(s) = self.snapshots.get_mut(snapshot_id) {
            s.state = "Error".into();
        }
    }

    pub fn begin_revert(&mut self, snapshot_id: &str) -> Result<String, CsError> {
        let snap = self.snapshots.get(snapshot_id).ok_or_else(|| {
            CsError::param(format!("Unable to find snapshot with id {snapshot_id}"))
        })?;
        if snap.state != "BackedUp" {
            return Err(CsError::param(
                "Snapshot state is not ready to revert, it should be BackedUp",
            ));
        }
        let vol = self.volume(&snap.volume_id)?;
        if vol.state != "Ready" {
            return Err(CsError::param("The volume is not in Ready state."));
        }
        if let Some(vm) = vol.vm_id.as_ref().and_then(|id| self.vms.get(id))
            && vm.state != "Stopped"
            && vm.state != "Shutdown"
        {
            return Err(CsError::param(
                "The VM the specified disk is attached to is not in the shutdown state.",
            ));
        }
        let volume_id = snap.volume_id.clone();
        let vol = self.volumes.get_mut(&volume_id).expect("checked");
        vol.prior_state = Some(vol.state.clone());
        vol.state = "RevertSnapshotting".into();
        Ok(volume_id)
    }

    pub fn finish_revert(&mut self, snapshot_id: &str) -> Value {
        let snap = self.snapshots.get(snapshot_id).cloned();
        if let Some(snap) = snap {
            self.abort_volume(&snap.volume_id);
            if let Some(vol) = self.volumes.get_mut(&snap.volume_id) {
                vol.size = snap.size;
                vol.generation = snap.generation;
            }
        }
        json!({ "snapshot": self.snapshot_json(snapshot_id) })
    }

    pub fn begin_delete_snapshot(&mut self, snapshot_id: &str) -> Result<(), CsError> {
        let snap = self.snapshots.get(snapshot_id).ok_or_else(|| {
            CsError::param(format!("unable to find a snapshot with id {snapshot_id}"))
        })?;
        if !["BackedUp", "Error", "Allocated", "Destroyed"].contains(&snap.state.as_str()) {
            return Err(CsError::internal(format!(
                "Failed to delete snapshot:com.cloud.utils.exception.CloudRuntimeException: Can't delete snapshot SnapshotVO[{}-{}] due to it is in {} Status",
                snap.seq, snap.name, snap.state
            )));
        }
        Ok(())
    }

    pub fn finish_delete_snapshot(&mut self, snapshot_id: &str) -> Value {
        self.remove_snapshot(snapshot_id);
        json!({ "success": true })
    }
}
