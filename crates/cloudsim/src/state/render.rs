//! The JSON objects CloudStack returns for each entity: what `list*` calls and job
//! results carry. Field names, types and omissions follow CloudStack's responses
//! (`shared/reference/cloudstack-fixtures/`): a field CloudStack leaves out (a
//! detached volume's `deviceid`, a pending job's `jobresult`) is left out here too.

use serde_json::{Value, json};

use crate::state::entities::{
    ACCOUNT_ID, DOMAIN_ID, DiskOffering, Network, Offering, State, Template, USER_ID, Zone,
};

impl State {
    pub fn zone_json(&self, z: &Zone) -> Value {
        json!({"id": z.id, "name": z.name, "networktype": "Advanced", "allocationstate": "Enabled", "securitygroupsenabled": false, "localstorageenabled": false, "tags": []})
    }

    pub fn disk_offering_json(&self, o: &DiskOffering) -> Value {
        json!({"id": o.id, "name": o.name, "displaytext": o.name, "disksize": o.size_gb, "iscustomized": o.size_gb == 0, "storagetype": "shared", "provisioningtype": "thin", "created": "2026-01-01T00:00:00+0000", "displayoffering": true})
    }

    /// A template, as listed in `zone` (cloudsim has its templates in every zone).
    pub fn template_json(&self, t: &Template, zone: &Zone) -> Value {
        json!({"id": t.id, "name": t.name, "displaytext": t.name, "isready": true, "ispublic": true, "isfeatured": true, "format": "QCOW2", "hypervisor": "KVM", "ostypename": t.os, "size": t.size, "zoneid": zone.id, "zonename": zone.name, "status": "Download Complete", "templatetype": "USER", "created": "2026-01-01T00:00:00+0000", "tags": []})
    }

    pub fn vm_json(&self, vm_id: &str) -> Value {
        let Some(vm) = self.vms.get(vm_id) else {
            return Value::Null;
        };
        let offering = self.offerings.iter().find(|o| o.id == vm.offering_id);
        let template = self.templates.iter().find(|t| t.id == vm.template_id);
        let root = self.volumes_of(vm_id).find(|v| v.device_id == Some(0));
        let nics: Vec<Value> = vm
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let network = self.networks.iter().find(|x| x.id == n.network_id);
                json!({
                    "id": n.id,
                    "networkid": n.network_id,
                    "networkname": network.map(|x| x.name.clone()),
                    "ipaddress": n.ip,
                    "macaddress": n.mac,
                    "isdefault": n.default,
                    "deviceid": i.to_string(),
                    "traffictype": "Guest",
                    "type": network.map(|x| x.kind.clone()),
                    "netmask": "255.255.255.0",
                    "secondaryip": [],
                    "extradhcpoption": [],
                })
            })
            .collect();
        let mut v = json!({
            "id": vm.id,
            "name": vm.name,
            "displayname": vm.display_name,
            "account": "admin",
            "accountid": ACCOUNT_ID,
            "userid": USER_ID,
            "username": "admin",
            "domainid": DOMAIN_ID,
            "domain": "ROOT",
            "created": vm.created,
            "state": vm.state,
            "haenable": false,
            "zoneid": vm.zone_id,
            "zonename": self.zone_name(&vm.zone_id),
            "templateid": vm.template_id,
            "templatename": template.map(|t| t.name.clone()),
            "templatedisplaytext": template.map(|t| t.name.clone()),
            "passwordenabled": false,
            "serviceofferingid": vm.offering_id,
            "serviceofferingname": offering.map(|o| o.def.name.clone()),
            "cpunumber": vm.cpu_number,
            "cpuspeed": vm.cpu_speed,
            "memory": vm.memory,
            "guestosid": template.map(|t| t.id.clone()),
            "osdisplayname": template.map(|t| t.os.clone()),
            "hypervisor": "KVM",
            "instancename": format!("i-2-{}-VM", vm.seq),
            "nic": nics,
            "securitygroup": [],
            "affinitygroup": [],
            "tags": [],
            "details": {},
            "displayvm": true,
            "isdynamicallyscalable": false,
            "boottype": vm.boot_type,
            "bootmode": vm.boot_mode,
        });
        if let Some(root) = root {
            v["rootdeviceid"] = json!(0);
            v["rootdevicetype"] = json!(root.kind);
        }
        strip_nulls(&mut v);
        v
    }

    pub fn volume_json(&self, volume_id: &str) -> Value {
        let Some(vol) = self.volumes.get(volume_id) else {
            return Value::Null;
        };
        let mut v = json!({
            "id": vol.id,
            "name": vol.name,
            "zoneid": vol.zone_id,
            "zonename": self.zone_name(&vol.zone_id),
            "type": vol.kind,
            "size": vol.size,
            "state": vol.state,
            "created": vol.created,
            "account": "admin",
            "domainid": DOMAIN_ID,
            "domain": "ROOT",
            "hypervisor": "KVM",
            "provisioningtype": "thin",
            "storagetype": "shared",
            "storage": if vol.state == "Allocated" { "none".to_string() } else { "primary-nfs-1".to_string() },
            "path": if vol.state == "Allocated" { Value::Null } else { json!(vol.id) },
            "isextractable": false,
            "displayvolume": true,
            "destroyed": vol.state == "Destroy",
            "templateid": vol.template_id,
            "diskofferingid": vol.disk_offering_id,
            "quiescevm": false,
        });
        if let Some(vm) = vol.vm_id.as_ref().and_then(|id| self.vms.get(id)) {
            if vol.state != "Destroy" {
                v["virtualmachineid"] = json!(vm.id);
                v["vmname"] = json!(vm.name);
                v["vmdisplayname"] = json!(vm.display_name);
                v["vmstate"] = json!(vm.state);
            }
            v["deviceid"] = json!(vol.device_id);
            v["attached"] = json!(vol.attached);
        }
        if vol.kind == "ROOT"
            && let Some(vm) = vol.vm_id.as_ref().and_then(|id| self.vms.get(id))
        {
            v["serviceofferingid"] = json!(vm.offering_id);
        }
        strip_nulls(&mut v);
        v
    }

    pub fn snapshot_json(&self, snapshot_id: &str) -> Value {
        let Some(s) = self.snapshots.get(snapshot_id) else {
            return Value::Null;
        };
        json!({
            "id": s.id,
            "name": s.name,
            "volumeid": s.volume_id,
            "volumename": s.volume_name,
            "volumetype": s.volume_kind,
            "snapshottype": "MANUAL",
            "intervaltype": "MANUAL",
            "state": s.state,
            "virtualsize": s.size,
            "physicalsize": s.size,
            "zoneid": s.zone_id,
            "created": s.created,
            "account": "admin",
            "domainid": DOMAIN_ID,
            "domain": "ROOT",
            "revertable": true,
            "locationtype": "PRIMARY",
            "tags": [],
        })
    }

    pub fn job_json(&self, job_id: &str) -> Value {
        let Some(j) = self.jobs.get(job_id) else {
            return Value::Null;
        };
        let mut v = json!({
            "accountid": ACCOUNT_ID,
            "account": "admin",
            "domainid": DOMAIN_ID,
            "domainpath": "/",
            "userid": USER_ID,
            "cmd": j.cmd,
            "jobid": j.id,
            "jobstatus": j.status,
            "jobprocstatus": 0,
            "jobresultcode": j.result_code,
            "jobinstancetype": j.instance_type,
            "jobinstanceid": j.instance_id,
            "created": j.created,
            "completed": j.completed,
        });
        if let Some(result) = &j.result {
            v["jobresulttype"] = json!("object");
            v["jobresult"] = result.clone();
        }
        strip_nulls(&mut v);
        v
    }

    pub fn offering_json(&self, o: &Offering) -> Value {
        let custom = o.def.cpu_number.is_none();
        let mut v = json!({
            "id": o.id,
            "name": o.def.name,
            "displaytext": o.def.name,
            "cpunumber": o.def.cpu_number,
            "cpuspeed": o.def.cpu_speed,
            "memory": o.def.memory_mb,
            "created": "2026-01-01T00:00:00+0000",
            "storagetype": "shared",
            "provisioningtype": "thin",
            "offerha": false,
            "limitcpuuse": false,
            "isvolatile": false,
            "issystem": false,
            "defaultuse": false,
            "iscustomized": custom,
            "cacheMode": "none",
            "rootdisksize": 0,
        });
        if custom {
            v["serviceofferingdetails"] = json!({
                "mincpunumber": o.def.min_cpu_number.to_string(),
                "maxcpunumber": o.def.max_cpu_number.to_string(),
                "minmemory": o.def.min_memory_mb.to_string(),
                "maxmemory": o.def.max_memory_mb.to_string(),
            });
        }
        strip_nulls(&mut v);
        v
    }

    pub fn network_json(&self, n: &Network) -> Value {
        json!({
            "id": n.id,
            "name": n.name,
            "displaytext": n.name,
            "broadcastdomaintype": "Vlan",
            "traffictype": "Guest",
            "cidr": n.cidr,
            "zoneid": n.zone_id,
            "zonename": self.zone_name(&n.zone_id),
            "type": n.kind,
            "state": "Implemented",
            "issystem": false,
            "acltype": "Account",
            "account": "admin",
            "domainid": DOMAIN_ID,
            "domain": "ROOT",
            "service": [],
            "tags": [],
        })
    }
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(map) = v {
        map.retain(|_, value| !value.is_null());
    }
}
