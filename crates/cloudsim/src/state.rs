//! The simulated cloud: VMs, volumes, snapshots, offerings and jobs, and CloudStack's
//! rules for changing them.
//!
//! Each async command is split into the parts CloudStack runs at different times:
//! `*_create` (async-create commands only) runs synchronously inside the API call, as
//! CloudStack's `create()` does, and allocates the entity; `begin_*` runs when the
//! job reaches the head of its VM's queue and performs CloudStack's business
//! validation — so business errors arrive through `queryAsyncJobResult`, as in
//! CloudStack — and moves entities to their transitional state (`Attaching`,
//! `Starting`, …); `finish_*` runs after the job's latency and applies the result.
//! A job that is failed by an injected fault calls `abort_*` instead of `finish_*`.
//!
//! Error texts and codes are CloudStack's (see `shared/reference/cloudstack.md`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::CsError;
use crate::world::{ServiceOfferingDef, Settings, World};

const GIB: i64 = 1024 * 1024 * 1024;
pub const ACCOUNT_ID: &str = "5a0e9a5c-0d1a-4f0b-9e7c-3c1d2e3f4a50";
pub const USER_ID: &str = "5a0e9a5c-0d1a-4f0b-9e7c-3c1d2e3f4a51";
pub const DOMAIN_ID: &str = "5a0e9a5c-0d1a-4f0b-9e7c-3c1d2e3f4a52";

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Debug, Clone)]
pub struct Zone {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Offering {
    pub id: String,
    pub def: ServiceOfferingDef,
}

#[derive(Debug, Clone)]
pub struct DiskOffering {
    pub id: String,
    pub name: String,
    pub size_gb: i64,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub size: i64,
    pub os: String,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub zone_id: String,
    pub kind: String,
    pub cidr: String,
    next_host: u32,
}

#[derive(Debug, Clone)]
pub struct Nic {
    pub id: String,
    pub network_id: String,
    pub ip: String,
    pub mac: String,
    pub default: bool,
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
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
    prior_state: Option<String>,
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub seq: u64,
    pub cmd: String,
    /// The command, lower case (`attachvolume`), for accounting.
    pub command: &'static str,
    pub status: i64,
    pub result_code: i64,
    pub result: Option<Value>,
    pub instance_type: Option<String>,
    pub instance_id: Option<String>,
    pub created: String,
    pub completed: Option<String>,
    pub polls: u64,
}

/// Everything in the simulated cloud.
#[derive(Debug)]
pub struct State {
    seq: u64,
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
    next_mac: u32,
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
    /// Builds the cloud a world file describes.
    pub fn from_world(world: &World) -> Result<State, String> {
        let mut s = State {
            seq: 0,
            settings: world.settings.clone(),
            zones: vec![],
            offerings: vec![],
            disk_offerings: vec![],
            templates: vec![],
            networks: vec![],
            vms: BTreeMap::new(),
            volumes: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_mac: 1,
        };
        if world.zones.is_empty() {
            return Err("the world needs at least one zone".into());
        }
        for z in &world.zones {
            s.zones.push(Zone {
                id: z.id.clone().unwrap_or_else(new_id),
                name: z.name.clone(),
            });
        }
        let zone_of = |s: &State, name: &Option<String>| -> Result<String, String> {
            match name {
                None => Ok(s.zones[0].id.clone()),
                Some(n) => s
                    .zones
                    .iter()
                    .find(|z| &z.name == n)
                    .map(|z| z.id.clone())
                    .ok_or_else(|| format!("unknown zone `{n}`")),
            }
        };
        for o in &world.service_offerings {
            s.offerings.push(Offering {
                id: o.id.clone().unwrap_or_else(new_id),
                def: o.clone(),
            });
        }
        for o in &world.disk_offerings {
            s.disk_offerings.push(DiskOffering {
                id: o.id.clone().unwrap_or_else(new_id),
                name: o.name.clone(),
                size_gb: o.size_gb,
            });
        }
        for t in &world.templates {
            s.templates.push(Template {
                id: t.id.clone().unwrap_or_else(new_id),
                name: t.name.clone(),
                size: t.size_gb * GIB,
                os: t.os.clone(),
            });
        }
        for n in &world.networks {
            let zone_id = zone_of(&s, &n.zone)?;
            s.networks.push(Network {
                id: n.id.clone().unwrap_or_else(new_id),
                name: n.name.clone(),
                zone_id,
                kind: n.kind.clone(),
                cidr: n.cidr.clone(),
                next_host: 10,
            });
        }
        for a in &world.appliances {
            let zone_id = zone_of(&s, &a.zone)?;
            let vm_id = a.id.clone().unwrap_or_else(new_id);
            let seq = s.next_seq();
            s.vms.insert(
                vm_id.clone(),
                Vm {
                    id: vm_id.clone(),
                    seq,
                    name: a.name.clone(),
                    display_name: a.name.clone(),
                    state: "Running".into(),
                    zone_id: zone_id.clone(),
                    template_id: s
                        .templates
                        .first()
                        .map(|t| t.id.clone())
                        .unwrap_or_default(),
                    offering_id: s
                        .offerings
                        .first()
                        .map(|o| o.id.clone())
                        .unwrap_or_default(),
                    cpu_number: 4,
                    cpu_speed: 2000,
                    memory: 8192,
                    boot_type: "BIOS".into(),
                    boot_mode: "LEGACY".into(),
                    nics: vec![],
                    created: now(),
                    appliance: true,
                },
            );
            let root_id = a.root_volume_id.clone().unwrap_or_else(new_id);
            s.add_volume(
                &root_id,
                &format!("ROOT-{seq}"),
                &zone_id,
                20 * GIB,
                Some((&vm_id, 0)),
            );
            let mut device = 1;
            for v in &a.volumes {
                let id = v.id.clone().unwrap_or_else(new_id);
                s.add_volume(
                    &id,
                    &v.name,
                    &zone_id,
                    v.size_gb * GIB,
                    Some((&vm_id, device)),
                );
                device += if device == 2 { 2 } else { 1 };
            }
        }
        for v in &world.volumes {
            let zone_id = zone_of(&s, &v.zone)?;
            let id = v.id.clone().unwrap_or_else(new_id);
            s.add_volume(&id, &v.name, &zone_id, v.size_gb * GIB, None);
        }
        Ok(s)
    }

    fn add_volume(
        &mut self,
        id: &str,
        name: &str,
        zone_id: &str,
        size: i64,
        on: Option<(&str, i64)>,
    ) {
        let seq = self.next_seq();
        let kind = if on.map(|(_, d)| d) == Some(0) {
            "ROOT"
        } else {
            "DATADISK"
        };
        self.volumes.insert(
            id.to_string(),
            Volume {
                id: id.to_string(),
                seq,
                name: name.to_string(),
                zone_id: zone_id.to_string(),
                kind: kind.into(),
                size,
                state: "Ready".into(),
                vm_id: on.map(|(vm, _)| vm.to_string()),
                device_id: on.map(|(_, d)| d),
                disk_offering_id: None,
                template_id: None,
                created: now(),
                attached: on.map(|_| now()),
                generation: 1,
                prior_state: None,
            },
        );
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn max_device_id(&self) -> i64 {
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

    fn volumes_of(&self, vm_id: &str) -> impl Iterator<Item = &Volume> {
        self.volumes
            .values()
            .filter(move |v| v.vm_id.as_deref() == Some(vm_id))
    }

    // ---- deployVirtualMachine ------------------------------------------------------

    /// `DeployVMCmd.create()`: validation and allocation, synchronously. The VM is
    /// Stopped, with a ROOT volume from the template in state Allocated.
    pub fn deploy_create(&mut self, req: &DeployRequest) -> Result<String, CsError> {
        let offering = self
            .offerings
            .iter()
            .find(|o| o.id == req.offering_id)
            .cloned()
            .expect("offering resolved by the caller");
        let template = self
            .templates
            .iter()
            .find(|t| t.id == req.template_id)
            .cloned()
            .expect("template resolved by the caller");
        let (cpu_number, cpu_speed, memory) = validate_custom(&offering, &req.details)?;
        let name = match &req.name {
            Some(n) => {
                validate_hostname(n)?;
                n.clone()
            }
            None => String::new(),
        };
        let (boot_type, boot_mode) =
            validate_boot(req.boot_type.as_deref(), req.boot_mode.as_deref())?;
        if req.nics.is_empty() {
            return Err(CsError::param(
                "Can't deploy a VM without a network: specify networkids or iptonetworklist",
            ));
        }
        let mut seen_networks = Vec::new();
        for (network_id, ip, mac) in &req.nics {
            let network = self
                .networks
                .iter()
                .find(|n| &n.id == network_id)
                .ok_or_else(|| {
                    CsError::param(format!("Unable to find network by id {network_id}"))
                })?;
            if network.zone_id != req.zone_id {
                return Err(CsError::param(format!(
                    "Network id={} doesn't belong to zone {}",
                    network.id, req.zone_id
                )));
            }
            if seen_networks.contains(network_id) {
                return Err(CsError::param(format!(
                    "Network id={network_id} is specified more than once"
                )));
            }
            seen_networks.push(network_id.clone());
            if let Some(mac) = mac {
                if !valid_mac(mac) {
                    return Err(CsError::param(format!("Mac address is not valid: {mac}")));
                }
                if self
                    .vms
                    .values()
                    .flat_map(|v| &v.nics)
                    .any(|n| n.mac.eq_ignore_ascii_case(mac))
                {
                    return Err(CsError::param(format!(
                        "The mac address {mac} is already in use in network {network_id}"
                    )));
                }
            }
            if let Some(ip) = ip {
                if ip.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(CsError::param(format!(
                        "Invalid format for IPv4 address: {ip}"
                    )));
                }
                let used = self
                    .vms
                    .values()
                    .flat_map(|v| &v.nics)
                    .any(|n| &n.network_id == network_id && &n.ip == ip);
                if used {
                    return Err(CsError::internal(format!(
                        "Unable to allocate ip address {ip} in network {network_id}: it is in use"
                    )));
                }
            }
        }
        if !name.is_empty()
            && let Some(other) = self
                .vms
                .values()
                .find(|v| v.name.eq_ignore_ascii_case(&name))
        {
            let network = self.network_name(&req.nics[0].0);
            return Err(CsError::param(format!(
                "The vm with hostName {} already exists in the network domain: cs1cloud.internal; network={network}",
                other.name
            )));
        }
        let vm_id = new_id();
        let seq = self.next_seq();
        let name = if name.is_empty() {
            format!("VM-{vm_id}")
        } else {
            name
        };
        let mut nics = Vec::new();
        for (i, (network_id, ip, mac)) in req.nics.iter().enumerate() {
            let ip = match ip {
                Some(ip) => ip.clone(),
                None => self.allocate_ip(network_id),
            };
            let mac = match mac {
                Some(m) => m.to_lowercase(),
                None => self.allocate_mac(),
            };
            nics.push(Nic {
                id: new_id(),
                network_id: network_id.clone(),
                ip,
                mac,
                default: i == 0,
            });
        }
        self.vms.insert(
            vm_id.clone(),
            Vm {
                id: vm_id.clone(),
                seq,
                display_name: req.display_name.clone().unwrap_or_else(|| name.clone()),
                name,
                state: "Stopped".into(),
                zone_id: req.zone_id.clone(),
                template_id: template.id.clone(),
                offering_id: offering.id.clone(),
                cpu_number,
                cpu_speed,
                memory,
                boot_type,
                boot_mode,
                nics,
                created: now(),
                appliance: false,
            },
        );
        let root_id = new_id();
        let root_seq = self.next_seq();
        self.volumes.insert(
            root_id.clone(),
            Volume {
                id: root_id,
                seq: root_seq,
                name: format!("ROOT-{seq}"),
                zone_id: req.zone_id.clone(),
                kind: "ROOT".into(),
                size: template.size,
                state: "Allocated".into(),
                vm_id: Some(vm_id.clone()),
                device_id: Some(0),
                disk_offering_id: None,
                template_id: Some(template.id.clone()),
                created: now(),
                attached: Some(now()),
                generation: 1,
                prior_state: None,
            },
        );
        Ok(vm_id)
    }

    fn network_name(&self, id: &str) -> String {
        self.networks
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    fn allocate_ip(&mut self, network_id: &str) -> String {
        let network = self
            .networks
            .iter_mut()
            .find(|n| n.id == network_id)
            .expect("network checked");
        let base: Vec<&str> = network
            .cidr
            .split('/')
            .next()
            .unwrap_or("10.0.0.0")
            .split('.')
            .collect();
        let host = network.next_host;
        network.next_host += 1;
        format!(
            "{}.{}.{}.{}",
            base[0],
            base[1],
            (host / 250) % 256,
            10 + host % 240
        )
    }

    fn allocate_mac(&mut self) -> String {
        let n = self.next_mac;
        self.next_mac += 1;
        format!(
            "02:00:4c:{:02x}:{:02x}:{:02x}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    }

    // ---- start / stop / destroy ----------------------------------------------------

    pub fn begin_start(&mut self, vm_id: &str) -> Result<(), CsError> {
        let vm = self.vm(vm_id)?;
        match vm.state.as_str() {
            "Stopped" => {}
            "Running" => {
                return Err(CsError::param(format!(
                    "The virtual machine {} ({}) is already running",
                    vm.id, vm.display_name
                )));
            }
            other => {
                return Err(CsError::internal(format!(
                    "Unable to start VM instance {} as it is in state {other}",
                    vm.name
                )));
            }
        }
        if !self.volumes_of(vm_id).any(|v| v.device_id == Some(0)) {
            return Err(CsError::internal(format!(
                "Unable to start VM instance {}: it has no ROOT volume (device 0)",
                vm.name
            )));
        }
        self.vms.get_mut(vm_id).expect("checked").state = "Starting".into();
        Ok(())
    }

    pub fn finish_start(&mut self, vm_id: &str) -> Value {
        let was_starting = self
            .vms
            .get(vm_id)
            .map(|v| v.state == "Starting")
            .unwrap_or(false);
        if let Some(vm) = self.vms.get_mut(vm_id) {
            vm.state = "Running".into();
        }
        if was_starting {
            for v in self
                .volumes
                .values_mut()
                .filter(|v| v.vm_id.as_deref() == Some(vm_id))
            {
                if v.state == "Allocated" {
                    v.state = "Ready".into();
                }
                // A running guest writes to its disks.
                v.generation += 1;
            }
        }
        json!({ "virtualmachine": self.vm_json(vm_id) })
    }

    pub fn abort_vm(&mut self, vm_id: &str, back_to: &str) {
        if let Some(vm) = self.vms.get_mut(vm_id) {
            vm.state = back_to.into();
        }
    }

    pub fn begin_stop(&mut self, vm_id: &str) -> Result<(), CsError> {
        let vm = self.vm(vm_id)?;
        match vm.state.as_str() {
            "Running" => {}
            "Stopped" => return Ok(()),
            other => {
                return Err(CsError::internal(format!(
                    "Unable to stop VM instance {} as it is in state {other}",
                    vm.name
                )));
            }
        }
        self.vms.get_mut(vm_id).expect("checked").state = "Stopping".into();
        Ok(())
    }

    pub fn finish_stop(&mut self, vm_id: &str) -> Value {
        if let Some(vm) = self.vms.get_mut(vm_id) {
            vm.state = "Stopped".into();
        }
        json!({ "virtualmachine": self.vm_json(vm_id) })
    }

    pub fn begin_destroy(&mut self, vm_id: &str) -> Result<String, CsError> {
        let vm = self.vm(vm_id)?;
        let prior = vm.state.clone();
        match prior.as_str() {
            "Running" | "Stopped" | "Error" | "Destroyed" => {}
            other => {
                return Err(CsError::param(format!(
                    "Unable to destroy VM instance {} as it is in state {other}",
                    vm.name
                )));
            }
        }
        if vm.appliance {
            // Nothing in ferry should ever do this; make it loud if it does.
            tracing::warn!(vm = %vm.name, "destroying an appliance VM");
        }
        Ok(prior)
    }

    /// Destroys the VM. With `expunge`, the VM and its ROOT volume are removed and
    /// every DATADISK volume is detached (not deleted); without, the VM is Destroyed
    /// and its ROOT volume goes to the Destroy state.
    pub fn finish_destroy(&mut self, vm_id: &str, expunge: bool) -> Value {
        let mut response = self.vm_json(vm_id);
        if expunge {
            let attached: Vec<String> = self.volumes_of(vm_id).map(|v| v.id.clone()).collect();
            for id in attached {
                let v = self.volumes.get_mut(&id).expect("listed");
                if v.kind == "ROOT" {
                    self.volumes.remove(&id);
                } else {
                    v.vm_id = None;
                    v.device_id = None;
                    v.attached = None;
                }
            }
            self.vms.remove(vm_id);
            response["state"] = json!("Expunging");
        } else {
            if let Some(vm) = self.vms.get_mut(vm_id) {
                vm.state = "Destroyed".into();
            }
            for v in self
                .volumes
                .values_mut()
                .filter(|v| v.vm_id.as_deref() == Some(vm_id) && v.kind == "ROOT")
            {
                v.state = "Destroy".into();
            }
            response["state"] = json!("Destroyed");
        }
        json!({ "virtualmachine": response })
    }

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
        let running = self
            .vms
            .get(vm_id)
            .map(|v| v.state == "Running")
            .unwrap_or(false);
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

    // ---- snapshots -----------------------------------------------------------------

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
        self.snapshots.remove(snapshot_id);
        json!({ "success": true })
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
        self.volumes.remove(volume_id);
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
        self.volumes.remove(volume_id);
        Ok(())
    }

    // ---- JSON ----------------------------------------------------------------------

    fn zone_name(&self, id: &str) -> String {
        self.zones
            .iter()
            .find(|z| z.id == id)
            .map(|z| z.name.clone())
            .unwrap_or_default()
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

fn validate_custom(
    offering: &Offering,
    details: &BTreeMap<String, String>,
) -> Result<(i64, i64, i64), CsError> {
    let def = &offering.def;
    let get = |key: &str| -> Option<&String> {
        details
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    let custom_cpu = def.cpu_number.is_none();
    let custom_speed = def.cpu_speed.is_none();
    let custom_memory = def.memory_mb.is_none();
    if (custom_cpu || custom_speed || custom_memory)
        && get("cpuNumber").is_none()
        && get("cpuSpeed").is_none()
        && get("memory").is_none()
    {
        return Err(CsError::param(
            "Need to specify custom parameter values cpu, cpu speed and memory when using custom offering",
        ));
    }
    let number = |key: &str| -> Result<Option<i64>, CsError> {
        match get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| CsError::param(format!("Invalid value for {key}: {v}"))),
        }
    };
    let fixed = |what: &str| {
        CsError::param(format!(
            "The {what} of this offering id:{} is not customizable. This is predefined in the template.",
            offering.id
        ))
    };
    let cpu = match (def.cpu_number, number("cpuNumber")?) {
        (Some(_), Some(_)) => return Err(fixed("cpu cores")),
        (Some(fixed_value), None) => fixed_value,
        (None, v) => {
            let v = v.unwrap_or(0);
            if v < def.min_cpu_number || v > def.max_cpu_number {
                return Err(CsError::param(format!(
                    "Invalid cpu cores value, specify a value between {} and {}",
                    def.min_cpu_number, def.max_cpu_number
                )));
            }
            v
        }
    };
    let speed = match (def.cpu_speed, number("cpuSpeed")?) {
        (Some(_), Some(_)) => return Err(fixed("cpu speed")),
        (Some(fixed_value), None) => fixed_value,
        (None, v) => {
            let v = v.unwrap_or(0);
            if v <= 0 {
                return Err(CsError::param(
                    "Invalid cpu speed value, specify a value between 1 and 2147483647",
                ));
            }
            v
        }
    };
    let memory = match (def.memory_mb, number("memory")?) {
        (Some(_), Some(_)) => return Err(fixed("memory")),
        (Some(fixed_value), None) => fixed_value,
        (None, v) => {
            let v = v.unwrap_or(0);
            if v < def.min_memory_mb || v > def.max_memory_mb {
                return Err(CsError::param(format!(
                    "Invalid memory value, specify a value between {} and {}",
                    def.min_memory_mb, def.max_memory_mb
                )));
            }
            v
        }
    };
    Ok((cpu, speed, memory))
}

fn validate_hostname(name: &str) -> Result<(), CsError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(CsError::param(
            "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', and the hyphen ('-'), must be between 1 and 63 characters long, and can't start or end with \"-\" and can't start with digit",
        ))
    }
}

fn validate_boot(
    boot_type: Option<&str>,
    boot_mode: Option<&str>,
) -> Result<(String, String), CsError> {
    let boot_type = boot_type.unwrap_or("BIOS").to_uppercase();
    let boot_mode = boot_mode.unwrap_or("LEGACY").to_uppercase();
    match (boot_type.as_str(), boot_mode.as_str()) {
        ("BIOS", "LEGACY") | ("UEFI", "LEGACY") | ("UEFI", "SECURE") => Ok((boot_type, boot_mode)),
        ("BIOS", _) => Err(CsError::param(
            "Boot Mode other than LEGACY is not supported for BIOS boot type",
        )),
        ("UEFI", other) => Err(CsError::param(format!(
            "Invalid boot mode {other}; use LEGACY or SECURE"
        ))),
        (other, _) => Err(CsError::param(format!(
            "Invalid boot type {other}; use BIOS or UEFI"
        ))),
    }
}

/// `NetUtils.isValidMac`: six pairs of hex digits separated by `:` or `-`.
fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_validation() {
        assert!(valid_mac("00:50:56:aa:bb:cc"));
        assert!(!valid_mac("00:50:56:aa:bb"));
        assert!(!valid_mac("00:50:56:aa:bb:zz"));
    }

    #[test]
    fn default_world_puts_replicas_on_the_appliance_at_1_and_2() {
        let s = State::from_world(&World::default()).unwrap();
        let oma = crate::world::ids::APPLIANCE_OMA;
        let mut devices: Vec<(i64, i64)> = s
            .volumes
            .values()
            .filter(|v| v.vm_id.as_deref() == Some(oma))
            .map(|v| (v.device_id.unwrap(), v.size / GIB))
            .collect();
        devices.sort();
        assert_eq!(devices, vec![(0, 20), (1, 107), (2, 10)]);
    }
}
