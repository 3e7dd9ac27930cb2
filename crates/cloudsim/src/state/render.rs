//! The JSON objects CloudStack returns for each entity: what `list*` calls and job
//! results carry. Field names, types and omissions follow CloudStack's responses
//! (`shared/reference/cloudstack-fixtures/`): a field CloudStack leaves out (a
//! detached volume's `deviceid`, a pending job's `jobresult`) is left out here too.

use serde_json::{Value, json};

use crate::state::entities::{
    ACCOUNT_ID, DOMAIN_ID, DiskOffering, Network, Offering, State, Template, USER_ID, Zone,
};
use crate::state::fixed;

impl State {
    /// `ZoneResponse`: an Advanced core zone with the fields CloudStack fills for one.
    pub fn zone_json(&self, z: &Zone) -> Value {
        json!({
            "id": z.id,
            "name": z.name,
            "dns1": fixed::DNS1,
            "internaldns1": fixed::INTERNAL_DNS1,
            "guestcidraddress": "10.1.1.0/24",
            "networktype": "Advanced",
            "securitygroupsenabled": false,
            "allocationstate": "Enabled",
            "zonetoken": fixed::zone_token(&z.id),
            "dhcpprovider": "VirtualRouter",
            "localstorageenabled": false,
            "tags": [],
            "allowuserspecifyvrmtu": false,
            "routerprivateinterfacemaxmtu": 1500,
            "routerpublicinterfacemaxmtu": 1500,
            "type": "Core",
            "nsxenabled": false,
            "multiarch": false,
            "routedmodeenabled": false,
            "hasannotations": false,
        })
    }

    pub fn disk_offering_json(&self, o: &DiskOffering) -> Value {
        json!({"id": o.id, "name": o.name, "displaytext": o.name, "disksize": o.size_gb, "iscustomized": o.size_gb == 0, "storagetype": "shared", "provisioningtype": "thin", "cacheMode": "none", "created": "2026-01-01T00:00:00+0000", "displayoffering": true})
    }

    /// A template, as listed in `zone` (cloudsim has its templates in every zone):
    /// `TemplateResponse`, with the fields of the `registerTemplate` fixture.
    pub fn template_json(&self, t: &Template, zone: &Zone) -> Value {
        json!({
            "id": t.id,
            "name": t.name,
            "displaytext": t.name,
            "ispublic": true,
            "created": "2026-01-01T00:00:00+0000",
            "isready": true,
            "passwordenabled": false,
            "format": "QCOW2",
            "isfeatured": true,
            "crossZones": false,
            "ostypeid": fixed::os_type_id(&t.os),
            "ostypename": t.os,
            "account": "admin",
            "zoneid": zone.id,
            "zonename": zone.name,
            "status": "Download Complete",
            "size": t.size,
            "physicalsize": t.size,
            "templatetype": "USER",
            "hypervisor": "KVM",
            "domain": "ROOT",
            "domainid": DOMAIN_ID,
            "isextractable": false,
            "details": {},
            "downloaddetails": [{
                "downloadState": "DOWNLOADED",
                "datastore": "secondary-nfs-1",
                "downloadPercent": "100",
            }],
            "bits": 64,
            "sshkeyenabled": false,
            "isdynamicallyscalable": false,
            "directdownload": false,
            "deployasis": false,
            "requireshvm": true,
            "url": format!("http://images.cloudsim.invalid/{}.qcow2", t.name),
            "tags": [],
        })
    }

    pub fn vm_json(&self, vm_id: &str) -> Value {
        let Some(vm) = self.vms.get(vm_id) else {
            return Value::Null;
        };
        let offering = self.offerings.iter().find(|o| o.id == vm.offering_id);
        let template = self.templates.iter().find(|t| t.id == vm.template_id);
        let root = self.volumes_of(vm_id).find(|v| v.device_id == Some(0));
        let running = vm.state == "Running";
        let nics: Vec<Value> = vm
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let index = self.networks.iter().position(|x| x.id == n.network_id);
                let network = index.map(|i| &self.networks[i]);
                let mut nic = json!({
                    "id": n.id,
                    "networkid": n.network_id,
                    "networkname": network.map(|x| x.name.clone()),
                    "ipaddress": n.ip,
                    "macaddress": n.mac,
                    "isdefault": n.default,
                    "deviceid": i.to_string(),
                    "traffictype": "Guest",
                    "type": network.map(|x| x.kind.clone()),
                    "netmask": network.map(|x| netmask(&x.cidr)),
                    "gateway": network.map(|x| gateway(&x.cidr)),
                    "secondaryip": [],
                    "extradhcpoption": [],
                });
                // An implemented NIC (its VM running) carries its VLAN.
                if running && let Some(i) = index {
                    let vlan = format!("vlan://{}", 1000 + i);
                    nic["broadcasturi"] = json!(vlan);
                    nic["isolationuri"] = json!(vlan);
                }
                strip_nulls(&mut nic);
                nic
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
            "guestosid": template.map(|t| fixed::os_type_id(&t.os)),
            "ostypeid": template.map(|t| fixed::os_type_id(&t.os)),
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
        // The statistics `listVirtualMachines` returns by default (`details=all`).
        v["cpuused"] = json!("0%");
        for stat in [
            "diskioread",
            "diskiowrite",
            "diskkbsread",
            "diskkbswrite",
            "memoryintfreekbs",
            "memorykbs",
            "memorytargetkbs",
            "networkkbsread",
            "networkkbswrite",
        ] {
            v[stat] = json!(0);
        }
        if running || vm.state == "Stopping" {
            v["hostid"] = json!(fixed::HOST_ID);
            v["hostname"] = json!(fixed::HOST_NAME);
        }
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
            "storage": if vol.state == "Allocated" { "none" } else { fixed::STORAGE_POOL_NAME },
            "path": if vol.state == "Allocated" { Value::Null } else { json!(vol.id) },
            "isextractable": false,
            "displayvolume": true,
            "destroyed": vol.state == "Destroy",
            "templateid": vol.template_id,
            "diskofferingid": vol.disk_offering_id,
            "quiescevm": false,
            "supportsstoragesnapshot": false,
            "domainpath": "/",
            "tags": [],
        });
        if vol.state != "Allocated" {
            // On the primary storage pool: where it is, and how big.
            v["storageid"] = json!(fixed::STORAGE_POOL_ID);
            v["podid"] = json!(fixed::POD_ID);
            v["podname"] = json!(fixed::POD_NAME);
            v["clusterid"] = json!(fixed::CLUSTER_ID);
            v["clustername"] = json!(fixed::CLUSTER_NAME);
            v["physicalsize"] = json!(vol.size);
            v["virtualsize"] = json!(vol.size);
        }
        if let Some(o) = vol
            .disk_offering_id
            .as_ref()
            .and_then(|id| self.disk_offerings.iter().find(|o| &o.id == id))
        {
            v["diskofferingname"] = json!(o.name);
            v["diskofferingdisplaytext"] = json!(o.name);
        }
        if let Some(t) = vol
            .template_id
            .as_ref()
            .and_then(|id| self.templates.iter().find(|t| &t.id == id))
        {
            v["templatename"] = json!(t.name);
            v["templatedisplaytext"] = json!(t.name);
        }
        if let Some(vm) = vol.vm_id.as_ref().and_then(|id| self.vms.get(id)) {
            if vol.state != "Destroy" {
                v["virtualmachineid"] = json!(vm.id);
                v["vmname"] = json!(vm.name);
                v["vmdisplayname"] = json!(vm.display_name);
                v["vmstate"] = json!(vm.state);
                v["vmtype"] = json!("User");
            }
            v["deviceid"] = json!(vol.device_id);
            v["attached"] = json!(vol.attached);
        }
        if vol.kind == "ROOT"
            && let Some(vm) = vol.vm_id.as_ref().and_then(|id| self.vms.get(id))
        {
            v["serviceofferingid"] = json!(vm.offering_id);
            if let Some(o) = self.offerings.iter().find(|o| o.id == vm.offering_id) {
                v["serviceofferingname"] = json!(o.def.name);
                v["serviceofferingdisplaytext"] = json!(o.def.name);
            }
        }
        strip_nulls(&mut v);
        v
    }

    /// `SnapshotResponse`; the OS of a ROOT volume's template, if the volume is still
    /// there to tell it.
    pub fn snapshot_json(&self, snapshot_id: &str) -> Value {
        let Some(s) = self.snapshots.get(snapshot_id) else {
            return Value::Null;
        };
        let mut v = json!({
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
            "zonename": self.zone_name(&s.zone_id),
            "created": s.created,
            "account": "admin",
            "domainid": DOMAIN_ID,
            "domain": "ROOT",
            "revertable": true,
            "locationtype": "PRIMARY",
            "datastoretype": "Primary",
            "tags": [],
        });
        if let Some(t) = self
            .volumes
            .get(&s.volume_id)
            .filter(|vol| vol.kind == "ROOT")
            .and_then(|vol| vol.template_id.as_ref())
            .and_then(|id| self.templates.iter().find(|t| &t.id == id))
        {
            v["ostypeid"] = json!(fixed::os_type_id(&t.os));
            v["osdisplayname"] = json!(t.os);
        }
        v
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

    /// `NetworkResponse`, with the fields of the `listNetworks` fixture: the offering
    /// it was created from (`fixed::network_offering`), its gateway and mask from its
    /// CIDR, the zone's DNS and physical network.
    pub fn network_json(&self, n: &Network) -> Value {
        let offering = fixed::network_offering(&n.kind);
        json!({
            "id": n.id,
            "name": n.name,
            "displaytext": n.name,
            "broadcastdomaintype": "Vlan",
            "traffictype": "Guest",
            "gateway": gateway(&n.cidr),
            "netmask": netmask(&n.cidr),
            "cidr": n.cidr,
            "zoneid": n.zone_id,
            "zonename": self.zone_name(&n.zone_id),
            "networkofferingid": offering.id,
            "networkofferingname": offering.name,
            "networkofferingdisplaytext": offering.display_text,
            "networkofferingconservemode": offering.conserve_mode,
            "networkofferingavailability": offering.availability,
            "issystem": false,
            "state": "Implemented",
            "related": n.id,
            "dns1": fixed::DNS1,
            "type": n.kind,
            "acltype": "Account",
            "account": "admin",
            "domainid": DOMAIN_ID,
            "domain": "ROOT",
            "service": [],
            "networkdomain": fixed::NETWORK_DOMAIN,
            "physicalnetworkid": fixed::PHYSICAL_NETWORK_ID,
            "restartrequired": false,
            "specifyipranges": n.kind.eq_ignore_ascii_case("shared"),
            "canusefordeploy": true,
            "ispersistent": false,
            "tags": [],
            "details": {},
            "displaynetwork": true,
            "strechedl2subnet": false,
            "redundantrouter": false,
        })
    }
}

/// The first host address of `cidr` (`10.1.1.0/24` → `10.1.1.1`), a network's gateway.
fn gateway(cidr: &str) -> String {
    let base = cidr.split('/').next().unwrap_or(cidr);
    match base.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => std::net::Ipv4Addr::from(u32::from(ip).wrapping_add(1)).to_string(),
        Err(_) => base.to_string(),
    }
}

/// The netmask of `cidr` (`/24` → `255.255.255.0`).
fn netmask(cidr: &str) -> String {
    let bits = cidr
        .split_once('/')
        .and_then(|(_, b)| b.parse::<u32>().ok())
        .unwrap_or(24)
        .min(32);
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    std::net::Ipv4Addr::from(mask).to_string()
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(map) = v {
        map.retain(|_, value| !value.is_null());
    }
}
