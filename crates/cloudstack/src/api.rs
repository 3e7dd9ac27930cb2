//! Typed CloudStack calls. Each is a thin layer over [`Client::call`] or
//! [`Client::submit`]; parameter names are CloudStack's.

use serde::de::DeserializeOwned;
use serde_json::Value;

use ids::{NetworkId, ServiceOfferingId, SnapshotId, TemplateId, VmId, VolumeId, ZoneId};

use crate::client::{Client, Kind};
use crate::error::Error;
use crate::jobs::{Job, Success};
use crate::types::*;

/// Page size used to read every page of a list call.
const PAGE_SIZE: usize = 500;

type Params = Vec<(String, String)>;

fn param(name: &str, value: impl ToString) -> (String, String) {
    (name.to_string(), value.to_string())
}

/// Firmware of a deployed VM: `boottype` and `bootmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi { secure: bool },
}

/// One entry of `iptonetworklist`: a NIC on a network, optionally with a fixed IP/MAC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NicRequest {
    pub network_id: NetworkId,
    pub ip: Option<String>,
    pub mac: Option<String>,
}

/// `deployVirtualMachine` parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeployVm {
    pub zone_id: ZoneId,
    pub service_offering_id: ServiceOfferingId,
    pub template_id: TemplateId,
    pub name: Option<String>,
    pub display_name: Option<String>,
    /// Custom offering values: `details[0].cpuNumber`, `cpuSpeed`, `memory` (MB).
    pub cpu_number: Option<i64>,
    pub cpu_speed: Option<i64>,
    pub memory_mb: Option<i64>,
    pub firmware: Option<Firmware>,
    pub nics: Vec<NicRequest>,
    pub start: bool,
}

impl DeployVm {
    fn params(&self) -> Params {
        let mut p = vec![
            param("zoneid", &self.zone_id),
            param("serviceofferingid", &self.service_offering_id),
            param("templateid", &self.template_id),
            param("startvm", self.start),
        ];
        if let Some(name) = &self.name {
            p.push(param("name", name));
        }
        if let Some(name) = &self.display_name {
            p.push(param("displayname", name));
        }
        if let Some(v) = self.cpu_number {
            p.push(param("details[0].cpuNumber", v));
        }
        if let Some(v) = self.cpu_speed {
            p.push(param("details[0].cpuSpeed", v));
        }
        if let Some(v) = self.memory_mb {
            p.push(param("details[0].memory", v));
        }
        match self.firmware {
            Some(Firmware::Bios) => {
                p.push(param("boottype", "BIOS"));
                p.push(param("bootmode", "LEGACY"));
            }
            Some(Firmware::Uefi { secure }) => {
                p.push(param("boottype", "UEFI"));
                p.push(param("bootmode", if secure { "SECURE" } else { "LEGACY" }));
            }
            None => {}
        }
        for (i, nic) in self.nics.iter().enumerate() {
            p.push(param(
                &format!("iptonetworklist[{i}].networkid"),
                &nic.network_id,
            ));
            if let Some(ip) = &nic.ip {
                p.push(param(&format!("iptonetworklist[{i}].ip"), ip));
            }
            if let Some(mac) = &nic.mac {
                p.push(param(&format!("iptonetworklist[{i}].mac"), mac));
            }
        }
        p
    }
}

/// `createVolume` source: a snapshot, or a disk offering (with a size for custom ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    Snapshot {
        snapshot_id: SnapshotId,
    },
    Offering {
        disk_offering_id: String,
        size_gb: Option<i64>,
    },
}

/// Filters for `listVolumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeFilter {
    pub id: Option<VolumeId>,
    pub virtual_machine_id: Option<VmId>,
    pub volume_type: Option<String>,
    pub zone_id: Option<ZoneId>,
    pub name: Option<String>,
}

/// Filters for `listVirtualMachines`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFilter {
    pub id: Option<VmId>,
    /// CloudStack matches `name` as a substring (SQL `LIKE %name%`): callers that
    /// look for one VM by name must compare the names of the results exactly.
    pub name: Option<String>,
    pub zone_id: Option<ZoneId>,
    pub state: Option<String>,
}

fn push_opt<T: std::fmt::Display>(p: &mut Params, name: &str, value: &Option<T>) {
    if let Some(v) = value {
        p.push(param(name, v));
    }
}

impl Client {
    /// Reads every page of a list command; `key` is the plural key (`volume`, …).
    pub async fn list<T: DeserializeOwned>(
        &self,
        command: &str,
        key: &str,
        params: Params,
    ) -> Result<Vec<T>, Error> {
        let mut out: Vec<T> = Vec::new();
        for page in 1.. {
            let mut p = params.clone();
            p.push(param("listall", true));
            p.push(param("page", page));
            p.push(param("pagesize", PAGE_SIZE));
            let inner = self.call(command, Kind::Read, &p).await?;
            let count = inner.get("count").and_then(Value::as_u64).unwrap_or(0) as usize;
            let items = match inner.get(key) {
                None => Vec::new(),
                Some(v) => {
                    serde_json::from_value::<Vec<T>>(v.clone()).map_err(|e| Error::Decode {
                        command: command.to_string(),
                        mutation: false,
                        detail: format!("`{key}`: {e}"),
                    })?
                }
            };
            let got = items.len();
            out.extend(items);
            if got < PAGE_SIZE || out.len() >= count {
                break;
            }
        }
        Ok(out)
    }

    pub async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        self.list("listZones", "zone", vec![]).await
    }

    pub async fn list_service_offerings(&self) -> Result<Vec<ServiceOffering>, Error> {
        self.list("listServiceOfferings", "serviceoffering", vec![])
            .await
    }

    pub async fn list_disk_offerings(&self) -> Result<Vec<DiskOffering>, Error> {
        self.list("listDiskOfferings", "diskoffering", vec![]).await
    }

    /// `templatefilter` is `executable`, `featured`, `self`, `all`, …
    pub async fn list_templates(
        &self,
        templatefilter: &str,
        zone_id: Option<&ZoneId>,
    ) -> Result<Vec<Template>, Error> {
        let mut p = vec![param("templatefilter", templatefilter)];
        if let Some(z) = zone_id {
            p.push(param("zoneid", z));
        }
        self.list("listTemplates", "template", p).await
    }

    pub async fn list_networks(&self, zone_id: Option<&ZoneId>) -> Result<Vec<Network>, Error> {
        let mut p = vec![];
        if let Some(z) = zone_id {
            p.push(param("zoneid", z));
        }
        self.list("listNetworks", "network", p).await
    }

    pub async fn list_virtual_machines(
        &self,
        filter: &VmFilter,
    ) -> Result<Vec<VirtualMachine>, Error> {
        let mut p = vec![];
        push_opt(&mut p, "id", &filter.id);
        push_opt(&mut p, "name", &filter.name);
        push_opt(&mut p, "zoneid", &filter.zone_id);
        push_opt(&mut p, "state", &filter.state);
        self.list("listVirtualMachines", "virtualmachine", p).await
    }

    /// The VMs named exactly `name` that are not being destroyed (CloudStack's `name`
    /// filter matches substrings; a Destroyed or Expunging VM keeps its name a while).
    pub async fn live_virtual_machine_named(
        &self,
        name: &str,
    ) -> Result<Option<VirtualMachine>, Error> {
        let filter = VmFilter {
            name: Some(name.to_string()),
            ..Default::default()
        };
        Ok(self
            .list_virtual_machines(&filter)
            .await?
            .into_iter()
            .find(|v| v.name == name && v.state != "Destroyed" && v.state != "Expunging"))
    }

    /// The VM with `id`, or `None` if CloudStack does not know it (any more).
    pub async fn get_virtual_machine(&self, id: &VmId) -> Result<Option<VirtualMachine>, Error> {
        let filter = VmFilter {
            id: Some(id.clone()),
            ..Default::default()
        };
        first_known(self.list_virtual_machines(&filter).await)
    }

    pub async fn list_volumes(&self, filter: &VolumeFilter) -> Result<Vec<Volume>, Error> {
        let mut p = vec![];
        push_opt(&mut p, "id", &filter.id);
        push_opt(&mut p, "virtualmachineid", &filter.virtual_machine_id);
        push_opt(&mut p, "type", &filter.volume_type);
        push_opt(&mut p, "zoneid", &filter.zone_id);
        push_opt(&mut p, "name", &filter.name);
        self.list("listVolumes", "volume", p).await
    }

    /// The volume with `id`, or `None` if CloudStack does not know it (any more).
    pub async fn get_volume(&self, id: &VolumeId) -> Result<Option<Volume>, Error> {
        let filter = VolumeFilter {
            id: Some(id.clone()),
            ..Default::default()
        };
        first_known(self.list_volumes(&filter).await)
    }

    /// The volumes of `ids` CloudStack has, in one `listVolumes ids=…` (CloudStack 4.9
    /// and later): a volume deleted since is left out. An id CloudStack never knew
    /// makes it refuse the whole list (431); ferry asks only about volumes it saw.
    pub async fn get_volumes(
        &self,
        ids: &[VolumeId],
    ) -> Result<std::collections::HashMap<VolumeId, Volume>, Error> {
        if ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let joined = ids
            .iter()
            .map(VolumeId::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let volumes: Vec<Volume> = self
            .list("listVolumes", "volume", vec![("ids".into(), joined)])
            .await?;
        Ok(volumes.into_iter().map(|v| (v.id.clone(), v)).collect())
    }

    pub async fn list_snapshots(
        &self,
        volume_id: Option<&VolumeId>,
        id: Option<&SnapshotId>,
    ) -> Result<Vec<Snapshot>, Error> {
        let mut p = vec![];
        if let Some(v) = volume_id {
            p.push(param("volumeid", v));
        }
        if let Some(i) = id {
            p.push(param("id", i));
        }
        self.list("listSnapshots", "snapshot", p).await
    }

    /// The snapshots whose name contains `name`: CloudStack filters `name` as SQL's
    /// `LIKE '%name%'` (`_` matching any character too), so the caller compares names
    /// exactly. One call for what `volumeid` would need one call per volume for.
    pub async fn list_snapshots_named(&self, name: &str) -> Result<Vec<Snapshot>, Error> {
        self.list("listSnapshots", "snapshot", vec![param("name", name)])
            .await
    }

    pub async fn list_async_jobs(&self) -> Result<Vec<AsyncJob>, Error> {
        self.list("listAsyncJobs", "asyncjobs", vec![]).await
    }

    pub async fn deploy_virtual_machine(
        &self,
        request: &DeployVm,
    ) -> Result<Job<VirtualMachine>, Error> {
        self.submit("deployVirtualMachine", &request.params()).await
    }

    pub async fn start_virtual_machine(&self, id: &VmId) -> Result<Job<VirtualMachine>, Error> {
        self.submit("startVirtualMachine", &[param("id", id)]).await
    }

    pub async fn stop_virtual_machine(
        &self,
        id: &VmId,
        forced: bool,
    ) -> Result<Job<VirtualMachine>, Error> {
        self.submit(
            "stopVirtualMachine",
            &[param("id", id), param("forced", forced)],
        )
        .await
    }

    pub async fn destroy_virtual_machine(
        &self,
        id: &VmId,
        expunge: bool,
    ) -> Result<Job<VirtualMachine>, Error> {
        self.submit(
            "destroyVirtualMachine",
            &[param("id", id), param("expunge", expunge)],
        )
        .await
    }

    /// `recoverVirtualMachine` is synchronous: a Destroyed VM not yet expunged becomes
    /// Stopped, its ROOT volume with it.
    pub async fn recover_virtual_machine(&self, id: &VmId) -> Result<VirtualMachine, Error> {
        let inner = self
            .call("recoverVirtualMachine", Kind::Mutation, &[param("id", id)])
            .await?;
        let vm = inner.get("virtualmachine").cloned().unwrap_or(Value::Null);
        serde_json::from_value(vm).map_err(|e| Error::Decode {
            command: "recoverVirtualMachine".into(),
            mutation: true,
            detail: format!("{e}: {inner}"),
        })
    }

    pub async fn create_volume(
        &self,
        name: &str,
        zone_id: &ZoneId,
        source: &VolumeSource,
    ) -> Result<Job<Volume>, Error> {
        let mut p = vec![param("name", name), param("zoneid", zone_id)];
        match source {
            VolumeSource::Snapshot { snapshot_id } => p.push(param("snapshotid", snapshot_id)),
            VolumeSource::Offering {
                disk_offering_id,
                size_gb,
            } => {
                p.push(param("diskofferingid", disk_offering_id));
                if let Some(size) = size_gb {
                    p.push(param("size", size));
                }
            }
        }
        self.submit("createVolume", &p).await
    }

    /// `deviceid` `None` lets CloudStack pick the lowest free id (≥1, never 3);
    /// `Some(0)` attaches as ROOT (VM Stopped, no device 0).
    pub async fn attach_volume(
        &self,
        id: &VolumeId,
        vm_id: &VmId,
        device_id: Option<i64>,
    ) -> Result<Job<Volume>, Error> {
        let mut p = vec![param("id", id), param("virtualmachineid", vm_id)];
        if let Some(d) = device_id {
            p.push(param("deviceid", d));
        }
        self.submit("attachVolume", &p).await
    }

    pub async fn detach_volume(&self, id: &VolumeId) -> Result<Job<Volume>, Error> {
        self.submit("detachVolume", &[param("id", id)]).await
    }

    /// `deleteVolume` is synchronous.
    pub async fn delete_volume(&self, id: &VolumeId) -> Result<(), Error> {
        let inner = self
            .call("deleteVolume", Kind::Mutation, &[param("id", id)])
            .await?;
        match inner.get("success") {
            Some(Value::Bool(true)) => Ok(()),
            Some(Value::String(s)) if s == "true" => Ok(()),
            _ => Err(Error::Decode {
                command: "deleteVolume".into(),
                mutation: true,
                detail: format!("no success in {inner}"),
            }),
        }
    }

    pub async fn create_snapshot(
        &self,
        volume_id: &VolumeId,
        name: Option<&str>,
    ) -> Result<Job<Snapshot>, Error> {
        let mut p = vec![param("volumeid", volume_id)];
        if let Some(n) = name {
            p.push(param("name", n));
        }
        self.submit("createSnapshot", &p).await
    }

    pub async fn revert_snapshot(&self, id: &SnapshotId) -> Result<Job<Snapshot>, Error> {
        self.submit("revertSnapshot", &[param("id", id)]).await
    }

    pub async fn delete_snapshot(&self, id: &SnapshotId) -> Result<Job<Success>, Error> {
        self.submit("deleteSnapshot", &[param("id", id)]).await
    }
}

/// The entity a list filtered by `id` found, or `None` — also when CloudStack refused
/// the `id` because no such entity ever existed: its API layer translates an id
/// parameter to the entity (removed ones included, so an entity deleted since answers
/// an empty list) and refuses an id it cannot find with 431 "… Invalid parameter id
/// value=… entity does not exist …".
fn first_known<T>(listed: Result<Vec<T>, Error>) -> Result<Option<T>, Error> {
    match listed {
        Ok(found) => Ok(found.into_iter().next()),
        Err(Error::Api {
            errorcode: 431,
            errortext,
            ..
        }) if errortext.contains("Invalid parameter id value=") => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_parameters_carry_the_whole_spec() {
        let request = DeployVm {
            zone_id: "z".into(),
            service_offering_id: "so".into(),
            template_id: "t".into(),
            name: Some("pgtest1".into()),
            cpu_number: Some(4),
            cpu_speed: Some(2000),
            memory_mb: Some(8192),
            firmware: Some(Firmware::Uefi { secure: true }),
            nics: vec![
                NicRequest {
                    network_id: "n1".into(),
                    ip: Some("10.0.0.5".into()),
                    mac: Some("00:50:56:aa:bb:cc".into()),
                },
                NicRequest {
                    network_id: "n2".into(),
                    ..Default::default()
                },
            ],
            start: false,
            ..Default::default()
        };
        let p = request.params();
        let has = |k: &str, v: &str| p.iter().any(|(a, b)| a == k && b == v);
        assert!(has("startvm", "false"));
        assert!(has("details[0].cpuNumber", "4"));
        assert!(has("details[0].cpuSpeed", "2000"));
        assert!(has("details[0].memory", "8192"));
        assert!(has("boottype", "UEFI"));
        assert!(has("bootmode", "SECURE"));
        assert!(has("iptonetworklist[0].networkid", "n1"));
        assert!(has("iptonetworklist[0].ip", "10.0.0.5"));
        assert!(has("iptonetworklist[0].mac", "00:50:56:aa:bb:cc"));
        assert!(has("iptonetworklist[1].networkid", "n2"));
        assert!(!p.iter().any(|(a, _)| a == "iptonetworklist[1].mac"));
    }
}
