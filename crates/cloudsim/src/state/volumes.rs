//! The rules of volume commands: `attachVolume` (`check_attach` in the API's job,
//! then `begin_attach` at the head of the VM's queue), `detachVolume`, `createVolume`
//! (`volume_create` in the call, then its job) and the synchronous `deleteVolume`,
//! and `abort_volume`, which puts a volume back in the state it had before a job
//! began with it (snapshot jobs use it too).

use serde_json::{Value, json};

use crate::error::CsError;
use crate::state::entities::{GIB, State, Volume, new_id, now};

impl State {
    // ---- attach / detach -----------------------------------------------------------

    /// The checks `attachVolumeToVM` makes in the API's async job, before the work
    /// joins the VM's queue (steps 1–4 of `reference/cloudstack.md` §1.2).
    pub fn check_attach(
        &self,
        volume_id: &str,
        vm_id: &str,
        device_id: Option<i64>,
    ) -> Result<(), CsError> {
        let vol = self.volume(volume_id)?;
        if vol.kind != "ROOT" && vol.kind != "DATADISK" {
            return Err(CsError::param(
                "Please specify a volume with the valid type: ROOT or DATADISK",
            ));
        }
        if vol.vm_id.is_some() {
            return Err(CsError::param(
                "Please specify a volume that is not attached to any VM.",
            ));
        }
        if vol.state == "Destroy" {
            return Err(CsError::param(
                "Please specify a volume that is not destroyed.",
            ));
        }
        if !["Allocated", "Ready", "Uploaded"].contains(&vol.state.as_str()) {
            return Err(CsError::param(
                "Volume state must be in Allocated, Ready or in Uploaded state",
            ));
        }
        let vm = self
            .vms
            .get(vm_id)
            .ok_or_else(|| CsError::param("Please specify a valid User VM."))?;
        if vm.state != "Running" && vm.state != "Stopped" {
            return Err(CsError::param(
                "Please specify a VM that is either running or stopped.",
            ));
        }
        if vm.zone_id != vol.zone_id {
            return Err(CsError::param(
                "Please specify a VM that is in the same zone as the volume.",
            ));
        }
        if device_id == Some(0) {
            if vm.state != "Stopped" {
                return Err(CsError::param(
                    "Root volume detach can happen only when vm is in states: Stopped or Destroyed",
                ));
            }
            if self.volumes_of(vm_id).any(|v| v.device_id == Some(0)) {
                return Err(CsError::param("Vm already has root volume attached to it"));
            }
        } else {
            let data = self
                .volumes_of(vm_id)
                .filter(|v| v.kind == "DATADISK")
                .count();
            if data >= self.settings.max_data_volumes as usize {
                return Err(CsError::param(format!(
                    "The specified VM already has the maximum number of data disks ({}) attached. Please specify another VM.",
                    self.settings.max_data_volumes
                )));
            }
        }
        Ok(())
    }

    /// The work part of an attach, at the head of the VM's queue: CloudStack's
    /// `orchestrateAttachVolumeToVM`, `checkAndSetAttaching` and `getDeviceId`. The
    /// API-job checks ([`State::check_attach`]) ran at submission; what can have
    /// changed since — another job attached the volume meanwhile — is refused here
    /// with the work job's own texts (530). Returns the device id the volume will get.
    pub fn begin_attach(
        &mut self,
        volume_id: &str,
        vm_id: &str,
        device_id: Option<i64>,
    ) -> Result<i64, CsError> {
        let vol = self.volume(volume_id)?;
        if vol.vm_id.is_some() {
            return Err(CsError::internal(
                "This volume is already attached to a VM.",
            ));
        }
        if vol.state != "Ready" && vol.state != "Allocated" {
            return Err(CsError::internal(format!(
                "Volume: {} is in {}. It should be in Ready or Allocated state",
                vol.name, vol.state
            )));
        }
        let max_device = self.max_device_id();
        let vm = self.vm(vm_id)?;
        let used: Vec<i64> = self.volumes_of(vm_id).filter_map(|v| v.device_id).collect();
        let device = match device_id {
            Some(d) => {
                if d < 0 || d > max_device || d == 3 {
                    return Err(CsError::internal(format!(
                        "deviceId should be 0,1,2,4-{max_device}"
                    )));
                }
                if used.contains(&d) {
                    return Err(CsError::internal(format!(
                        "deviceId {d} is used by vm {}",
                        vm.seq
                    )));
                }
                d
            }
            None => (1..=max_device)
                .find(|d| *d != 3 && !used.contains(d))
                .ok_or_else(|| {
                    CsError::internal(format!("All device Ids are used by vm {}", vm.seq))
                })?,
        };
        let vol = self.volumes.get_mut(volume_id).expect("checked");
        vol.prior_state = Some(vol.state.clone());
        vol.state = "Attaching".into();
        Ok(device)
    }

    pub fn finish_attach(&mut self, volume_id: &str, vm_id: &str, device: i64) -> Value {
        let running = self.vm_in(vm_id, "Running");
        if let Some(vol) = self.volumes.get_mut(volume_id) {
            let prior = vol.prior_state.take().unwrap_or_else(|| "Ready".into());
            vol.state = if prior == "Allocated" && !running {
                prior
            } else {
                "Ready".into()
            };
            vol.vm_id = Some(vm_id.to_string());
            vol.device_id = Some(device);
            vol.attached = Some(now());
            if device == 0 {
                vol.kind = "ROOT".into();
            }
        }
        json!({ "volume": self.volume_json(volume_id) })
    }

    /// Puts a volume back in the state it had before a job began with it.
    pub fn abort_volume(&mut self, volume_id: &str) {
        if let Some(vol) = self.volumes.get_mut(volume_id)
            && let Some(prior) = vol.prior_state.take()
        {
            vol.state = prior;
        }
    }

    /// `detachVolumeFromVM`'s checks, made in the API's async job before the work joins
    /// the VM's queue (and again at its head). Returns the VM the volume is on.
    pub fn begin_detach(&self, volume_id: &str) -> Result<String, CsError> {
        let vol = self.volume(volume_id)?;
        let vm_id = vol
            .vm_id
            .clone()
            .ok_or_else(|| CsError::param("The specified volume is not attached to a VM."))?;
        let vm = self.vm(&vm_id)?;
        if !["Running", "Stopped", "Destroyed"].contains(&vm.state.as_str()) {
            return Err(CsError::param(
                "Please specify a VM that is either running or stopped.",
            ));
        }
        if vol.kind != "ROOT" && vol.kind != "DATADISK" {
            return Err(CsError::param(
                "Please specify volume of type DATADISK or ROOT",
            ));
        }
        if vol.kind == "ROOT" && vm.state != "Stopped" {
            return Err(CsError::param(
                "Root volume detach can happen only when vm is in states: Stopped or Destroyed",
            ));
        }
        Ok(vm_id)
    }

    pub fn finish_detach(&mut self, volume_id: &str) -> Value {
        if let Some(vol) = self.volumes.get_mut(volume_id) {
            vol.vm_id = None;
            vol.device_id = None;
            vol.attached = None;
            if vol.kind == "ROOT" {
                vol.kind = "DATADISK".into();
            }
        }
        json!({ "volume": self.volume_json(volume_id) })
    }

    // ---- volumes -------------------------------------------------------------------

    /// `CreateVolumeCmd.create()` (`allocVolume`), synchronously.
    pub fn volume_create(
        &mut self,
        name: &str,
        zone_id: &str,
        snapshot_id: Option<&str>,
        disk_offering_id: Option<&str>,
        size_gb: Option<i64>,
    ) -> Result<String, CsError> {
        let (size, generation, offering) = match (snapshot_id, disk_offering_id) {
            (Some(snapshot_id), _) => {
                let snap = self
                    .snapshots
                    .get(snapshot_id)
                    .expect("resolved by the caller");
                if snap.state != "BackedUp" {
                    return Err(CsError::param(format!(
                        "Snapshot id={snapshot_id} is not in BackedUp state yet and can't be used for volume creation"
                    )));
                }
                (snap.size, snap.generation, None)
            }
            (None, Some(offering_id)) => {
                let offering = self
                    .disk_offerings
                    .iter()
                    .find(|o| o.id == offering_id)
                    .expect("resolved by the caller");
                let size = if offering.size_gb == 0 {
                    match size_gb {
                        Some(s) if s > 0 => s,
                        _ => {
                            return Err(CsError::param(
                                "This disk offering requires a custom size specified",
                            ));
                        }
                    }
                } else {
                    if size_gb.is_some() {
                        return Err(CsError::param(
                            "This disk offering does not allow custom size",
                        ));
                    }
                    offering.size_gb
                };
                (size * GIB, 0, Some(offering.id.clone()))
            }
            (None, None) => {
                return Err(CsError::param(
                    "Either disk Offering Id or snapshot Id must be passed whilst creating volume",
                ));
            }
        };
        let id = new_id();
        let seq = self.next_seq();
        self.volumes.insert(
            id.clone(),
            Volume {
                id: id.clone(),
                seq,
                name: name.to_string(),
                zone_id: zone_id.to_string(),
                kind: "DATADISK".into(),
                size,
                state: "Allocated".into(),
                vm_id: None,
                device_id: None,
                disk_offering_id: offering,
                template_id: None,
                created: now(),
                attached: None,
                generation,
                prior_state: None,
            },
        );
        Ok(id)
    }

    /// The createVolume job: a volume from a snapshot is created on primary storage
    /// (Ready); one from an offering stays Allocated until it is attached.
    pub fn finish_create_volume(&mut self, volume_id: &str, from_snapshot: bool) -> Value {
        if from_snapshot && let Some(v) = self.volumes.get_mut(volume_id) {
            v.state = "Ready".into();
        }
        json!({ "volume": self.volume_json(volume_id) })
    }

    /// A failed createVolume job leaves nothing behind.
    pub fn abort_create_volume(&mut self, volume_id: &str) {
        self.remove_volume(volume_id);
    }

    /// `deleteVolume` (synchronous).
    pub fn delete_volume(&mut self, volume_id: &str) -> Result<(), CsError> {
        let vol = self.volume(volume_id)?;
        if vol.vm_id.is_some() {
            return Err(CsError::param(
                "Please specify a volume that is not attached to any VM.",
            ));
        }
        if ![
            "Allocated",
            "Ready",
            "Destroy",
            "Error",
            "UploadError",
            "UploadAbandoned",
            "Uploaded",
        ]
        .contains(&vol.state.as_str())
        {
            return Err(CsError::param(format!(
                "Volume {} is in state {}, it can't be deleted",
                vol.name, vol.state
            )));
        }
        self.remove_volume(volume_id);
        Ok(())
    }
}
