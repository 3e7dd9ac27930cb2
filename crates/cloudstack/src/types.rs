//! CloudStack's response objects, as far as ferry reads them.
//!
//! Field names are CloudStack's own (all lower case). Unknown fields are ignored and
//! every field CloudStack may omit is an `Option` (serde reads a missing `Option` as
//! `None`) or says its default, so responses from any 4.x release parse; `deviceid`,
//! for example, is absent on a detached volume.

use ids::{JobId, NetworkId, ServiceOfferingId, SnapshotId, TemplateId, VmId, VolumeId, ZoneId};
use serde::{Deserialize, Serialize};

/// `listZones` → `zone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub id: ZoneId,
    pub name: String,
    pub allocationstate: Option<String>,
    pub networktype: Option<String>,
}

/// `listServiceOfferings` → `serviceoffering`. A custom offering has no fixed
/// `cpunumber`/`cpuspeed`/`memory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceOffering {
    pub id: ServiceOfferingId,
    pub name: String,
    pub displaytext: Option<String>,
    pub cpunumber: Option<i64>,
    pub cpuspeed: Option<i64>,
    pub memory: Option<i64>,
    #[serde(default)]
    pub iscustomized: bool,
    pub storagetype: Option<String>,
}

/// `listDiskOfferings` → `diskoffering`; `disksize` is in GiB (0 when custom).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskOffering {
    pub id: String,
    pub name: String,
    pub displaytext: Option<String>,
    #[serde(default)]
    pub disksize: i64,
    #[serde(default)]
    pub iscustomized: bool,
    pub storagetype: Option<String>,
}

/// `listTemplates` → `template`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub id: TemplateId,
    pub name: String,
    pub zoneid: Option<ZoneId>,
    #[serde(default)]
    pub isready: bool,
    pub ostypename: Option<String>,
    pub hypervisor: Option<String>,
    pub size: Option<i64>,
    pub format: Option<String>,
}

/// `listNetworks` → `network`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    pub name: String,
    pub zoneid: Option<ZoneId>,
    #[serde(rename = "type")]
    pub network_type: Option<String>,
    pub state: Option<String>,
    pub cidr: Option<String>,
    pub traffictype: Option<String>,
}

/// One NIC of a [`VirtualMachine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub id: String,
    pub networkid: NetworkId,
    pub networkname: Option<String>,
    pub ipaddress: Option<String>,
    pub macaddress: Option<String>,
    #[serde(default)]
    pub isdefault: bool,
    pub deviceid: Option<String>,
}

/// `listVirtualMachines` → `virtualmachine`, and the job result of VM commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualMachine {
    pub id: VmId,
    #[serde(default)]
    pub name: String,
    pub displayname: Option<String>,
    /// Running, Stopped, Starting, Stopping, Destroyed, Expunging, Error, …
    pub state: String,
    pub zoneid: Option<ZoneId>,
    pub templateid: Option<TemplateId>,
    pub serviceofferingid: Option<ServiceOfferingId>,
    pub cpunumber: Option<i64>,
    pub cpuspeed: Option<i64>,
    pub memory: Option<i64>,
    pub rootdeviceid: Option<i64>,
    pub rootdevicetype: Option<String>,
    pub hypervisor: Option<String>,
    pub bootmode: Option<String>,
    pub boottype: Option<String>,
    #[serde(default)]
    pub nic: Vec<Nic>,
    pub created: Option<String>,
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `listVolumes` → `volume`, and the job result of volume commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: VolumeId,
    #[serde(default)]
    pub name: String,
    pub zoneid: Option<ZoneId>,
    /// "ROOT" or "DATADISK".
    #[serde(rename = "type")]
    pub volume_type: String,
    /// Absent when the volume is not attached.
    pub deviceid: Option<i64>,
    pub virtualmachineid: Option<VmId>,
    pub vmname: Option<String>,
    pub vmstate: Option<String>,
    /// Virtual size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Allocated, Ready, Attaching, Snapshotting, Destroy, …
    pub state: String,
    pub diskofferingid: Option<String>,
    pub created: Option<String>,
    pub attached: Option<String>,
    pub storage: Option<String>,
    pub path: Option<String>,
}

impl Volume {
    /// The serial KVM gives this volume's virtio disk: the UUID without dashes, first 20
    /// characters (`LibvirtComputingResource.diskUuidToSerial`).
    pub fn serial(&self) -> String {
        volume_serial(&self.id)
    }
}

/// The virtio serial of a volume id: the UUID without dashes, first 20 characters.
pub fn volume_serial(volume_id: &VolumeId) -> String {
    volume_id
        .as_str()
        .replace('-', "")
        .chars()
        .take(20)
        .collect()
}

/// `listSnapshots` → `snapshot`, and the job result of snapshot commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    #[serde(default)]
    pub name: String,
    pub volumeid: Option<VolumeId>,
    pub volumename: Option<String>,
    pub volumetype: Option<String>,
    /// BackingUp, BackedUp, Allocated, Error, …
    pub state: Option<String>,
    pub snapshottype: Option<String>,
    pub intervaltype: Option<String>,
    pub virtualsize: Option<i64>,
    pub zoneid: Option<ZoneId>,
    pub created: Option<String>,
}

/// `jobstatus`: 0 pending, 1 succeeded, 2 failed, 3 cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "i64", into = "i64")]
pub enum JobStatus {
    Pending,
    Succeeded,
    Failed,
    Cancelled,
    Other(i64),
}

impl From<i64> for JobStatus {
    fn from(v: i64) -> Self {
        match v {
            0 => JobStatus::Pending,
            1 => JobStatus::Succeeded,
            2 => JobStatus::Failed,
            3 => JobStatus::Cancelled,
            other => JobStatus::Other(other),
        }
    }
}

impl From<JobStatus> for i64 {
    fn from(s: JobStatus) -> i64 {
        match s {
            JobStatus::Pending => 0,
            JobStatus::Succeeded => 1,
            JobStatus::Failed => 2,
            JobStatus::Cancelled => 3,
            JobStatus::Other(v) => v,
        }
    }
}

/// `queryAsyncJobResult`, and each entry of `listAsyncJobs` → `asyncjobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsyncJob {
    pub jobid: JobId,
    pub cmd: Option<String>,
    /// Absent in some `listAsyncJobs` entries; treat a missing status as pending.
    #[serde(default = "pending")]
    pub jobstatus: JobStatus,
    pub jobprocstatus: Option<i64>,
    pub jobresultcode: Option<i64>,
    pub jobresulttype: Option<String>,
    pub jobresult: Option<serde_json::Value>,
    pub jobinstancetype: Option<String>,
    pub jobinstanceid: Option<String>,
    pub created: Option<String>,
    pub completed: Option<String>,
}

fn pending() -> JobStatus {
    JobStatus::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_the_uuid_without_dashes_cut_to_20() {
        assert_eq!(
            volume_serial(&VolumeId::from("6d2f3a1c-9b7e-4c1d-8a2b-0f1e2d3c4b5a")),
            "6d2f3a1c9b7e4c1d8a2b"
        );
    }

    #[test]
    fn a_detached_volume_has_no_device_id() {
        let v: Volume = serde_json::from_str(
            r#"{"id":"a","name":"n","type":"DATADISK","size":1073741824,"state":"Ready","unknownfield":7}"#,
        )
        .unwrap();
        assert_eq!(v.deviceid, None);
        assert_eq!(v.virtualmachineid, None);
    }
}
