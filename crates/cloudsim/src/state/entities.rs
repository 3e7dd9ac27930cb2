//! The simulated cloud's records and the lookups every rule shares.
//!
//! These are plain data: what CloudStack keeps in its database for each zone,
//! offering, template, network, VM, volume, snapshot and async job, with CloudStack's
//! own state names as strings (`Running`, `Ready`, `BackedUp`, …). The rules that
//! change them live beside this file, one per resource (`vms`, `volumes`,
//! `snapshots`); what the API returns for them is in `render`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CsError;
use crate::world::{ServiceOfferingDef, Settings};

pub const GIB: i64 = 1024 * 1024 * 1024;
pub const ACCOUNT_ID: &str = "5a0e9a5c-0d1a-4f0b-9e7c-3c1d2e3f4a50";
pub const USER_ID: &str = "5a0e9a5c-0d1a-4f0b-9e7c-3c1d2e3f4a51";
pub const DOMAIN_ID: &str = "5a0e9a5c-0d1a-4f0b-9e7c-3c1d2e3f4a52";

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Zone {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offering {
    pub id: String,
    pub def: ServiceOfferingDef,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskOffering {
    pub id: String,
    pub name: String,
    pub size_gb: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub size: i64,
    pub os: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub zone_id: String,
    pub kind: String,
    pub cidr: String,
    pub(crate) next_host: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nic {
    pub id: String,
    pub network_id: String,
    pub ip: String,
    pub mac: String,
    pub default: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    pub id: String,
    /// CloudStack's internal numeric id, which some error texts show.
    pub seq: u64,
    pub name: String,
    pub display_name: String,
    pub state: String,
    pub zone_id: String,
    pub template_id: String,
    pub offering_id: String,
    pub cpu_number: i64,
    pub cpu_speed: i64,
    pub memory: i64,
    pub boot_type: String,
    pub boot_mode: String,
    pub nics: Vec<Nic>,
    pub created: String,
    /// An appliance: hot-plugged disks appear in its sysfs tree.
    pub appliance: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub seq: u64,
    pub name: String,
    pub zone_id: String,
    /// "ROOT" or "DATADISK".
    pub kind: String,
    pub size: i64,
    pub state: String,
    pub vm_id: Option<String>,
    pub device_id: Option<i64>,
    pub disk_offering_id: Option<String>,
    pub template_id: Option<String>,
    pub created: String,
    pub attached: Option<String>,
    /// Simulated content: bumped whenever a running guest could have written to the
    /// volume (a VM start), saved by snapshots and restored by revert. Lets tests
    /// prove that a revert really brought a replica back.
    pub generation: u64,
    /// The state before a job moved it to a transitional one.
    pub(crate) prior_state: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub seq: u64,
    pub name: String,
    pub volume_id: String,
    pub volume_name: String,
    pub volume_kind: String,
    pub zone_id: String,
    pub size: i64,
    pub state: String,
    pub created: String,
    pub generation: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub seq: u64,
    pub cmd: String,
    /// The command, lower case (`attachvolume`), for accounting.
    pub command: crate::jobs::op::CommandName,
    pub status: i64,
    pub result_code: i64,
    pub result: Option<Value>,
    pub instance_type: Option<String>,
    pub instance_id: Option<String>,
    pub created: String,
    pub completed: Option<String>,
    pub polls: u64,
    /// Whether its queue's worker has taken it up (a job refused when it was
    /// submitted never is).
    #[serde(default)]
    pub begun: bool,
}

/// Everything in the simulated cloud.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub(crate) seq: u64,
    pub settings: Settings,
    pub zones: Vec<Zone>,
    pub offerings: Vec<Offering>,
    pub disk_offerings: Vec<DiskOffering>,
    pub templates: Vec<Template>,
    pub networks: Vec<Network>,
    pub vms: BTreeMap<String, Vm>,
    pub volumes: BTreeMap<String, Volume>,
    pub snapshots: BTreeMap<String, Snapshot>,
    pub jobs: BTreeMap<String, Job>,
    pub(crate) next_mac: u32,
    /// The ids of the entities that are gone (an expunged VM, a deleted volume or
    /// snapshot), which CloudStack's database still has as removed rows.
    #[serde(default)]
    pub removed: Removed,
}

/// The ids of removed entities, by kind. CloudStack marks a row removed rather than
/// deleting it, and `ParamProcessWorker` resolves an id with
/// `findByUuidIncludingRemoved`: a removed entity's id still resolves, so a list
/// filtered by it is empty instead of refused (see `api::ids`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Removed {
    pub vms: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub snapshots: BTreeSet<String>,
}

/// Parameters of a `deployVirtualMachine` call, already resolved.
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    pub zone_id: String,
    pub offering_id: String,
    pub template_id: String,
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub details: BTreeMap<String, String>,
    pub boot_type: Option<String>,
    pub boot_mode: Option<String>,
    /// (network id, ip, mac)
    pub nics: Vec<(String, Option<String>, Option<String>)>,
}

impl State {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn max_device_id(&self) -> i64 {
        self.settings.max_data_volumes as i64 + 1
    }

    pub fn vm(&self, id: &str) -> Result<&Vm, CsError> {
        self.vms
            .get(id)
            .ok_or_else(|| CsError::param(format!("Unable to find virtual machine with id {id}")))
    }

    pub fn volume(&self, id: &str) -> Result<&Volume, CsError> {
        self.volumes
            .get(id)
            .ok_or_else(|| CsError::param(format!("Unable to find volume with ID: {id}")))
    }

    /// The job queue a command on this volume runs in: its VM's, or its own.
    pub fn volume_queue(&self, volume_id: &str) -> String {
        match self.volumes.get(volume_id).and_then(|v| v.vm_id.clone()) {
            Some(vm) => format!("vm:{vm}"),
            None => format!("volume:{volume_id}"),
        }
    }

    /// The name of the zone with `id` (empty when there is none).
    pub fn zone_name(&self, id: &str) -> String {
        self.zones
            .iter()
            .find(|z| z.id == id)
            .map(|z| z.name.clone())
            .unwrap_or_default()
    }

    /// The name of the network with `id` (empty when there is none).
    pub fn network_name(&self, id: &str) -> String {
        self.networks
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    /// Whether the VM `vm_id` exists and is in `state`.
    pub fn vm_in(&self, vm_id: &str, state: &str) -> bool {
        self.vms.get(vm_id).is_some_and(|v| v.state == state)
    }

    /// Moves the VM `vm_id`, if it exists, to `state`.
    pub fn set_vm_state(&mut self, vm_id: &str, state: &str) {
        if let Some(vm) = self.vms.get_mut(vm_id) {
            vm.state = state.into();
        }
    }

    /// Removes the VM `vm_id`, keeping its id among the removed ones.
    pub fn remove_vm(&mut self, vm_id: &str) {
        if self.vms.remove(vm_id).is_some() {
            self.removed.vms.insert(vm_id.to_string());
        }
    }

    /// Removes the volume `volume_id`, keeping its id among the removed ones.
    pub fn remove_volume(&mut self, volume_id: &str) {
        if self.volumes.remove(volume_id).is_some() {
            self.removed.volumes.insert(volume_id.to_string());
        }
    }

    /// Removes the snapshot `snapshot_id`, keeping its id among the removed ones.
    pub fn remove_snapshot(&mut self, snapshot_id: &str) {
        if self.snapshots.remove(snapshot_id).is_some() {
            self.removed.snapshots.insert(snapshot_id.to_string());
        }
    }

    pub fn volumes_of(&self, vm_id: &str) -> impl Iterator<Item = &Volume> {
        self.volumes
            .values()
            .filter(move |v| v.vm_id.as_deref() == Some(vm_id))
    }
}
