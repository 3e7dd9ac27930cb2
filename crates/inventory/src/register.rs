//! Registration: turn a [`VmDefinition`] into a protected VM in the store — or refuse
//! it, with every problem named by its field, *before* anything is written.
//!
//! Each refusal here is a failover that would otherwise fail later, at 3 a.m., with
//! half the disks moved: a missing or doubled boot disk, two disks claiming one
//! controller slot, a replica volume that does not exist, sits on another VM, has a
//! different size than its disk or already belongs to another disk, more data disks
//! than KVM takes, networks CloudStack does not have, two NICs on one network,
//! malformed MACs or MACs another VM has, replicas the appliance could not tell apart
//! by their virtio serial. The checks
//! against CloudStack read its current state (`listVolumes`, `listNetworks`,
//! `listVirtualMachines`); the store's constraints are the last line behind them.

use ids::{NetworkId, VolumeId};
use std::collections::{BTreeMap, HashMap};

use cloudstack::{Client, VolumeFilter};
use store::{
    Attachment, Disk, GuestOs, GuestPrep, NewVm, Nic, ProtectedVm, Store, StoreError, VmSpec,
};

use crate::definition::{DiskDefinition, VmDefinition};
use crate::problem::{Problem, list};

const GIB: i64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the VM definition was refused and nothing was registered:\n{}", list(.0))]
    Invalid(Vec<Problem>),
    #[error("cannot check the definition against CloudStack")]
    CloudStack(#[from] cloudstack::Error),
    #[error("cannot read or write ferry's store")]
    Store(#[from] StoreError),
}

impl RegisterError {
    /// The problems, if the definition itself was refused.
    pub fn problems(&self) -> &[Problem] {
        match self {
            RegisterError::Invalid(p) => p,
            _ => &[],
        }
    }
}

/// What registration checks a definition against besides the file, the store and
/// CloudStack: the hypervisor's limits and the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `max_data_volumes_limit` of the hypervisor (32 on KVM).
    pub max_data_disks: usize,
    /// Whether the server has a guest-preparation command (`[guest_prep]`):
    /// `Some(false)` refuses a VM whose policy needs one (a Windows guest with
    /// `guest_prep = "auto"`, or `"virt-v2v-in-place"`), since its failover's
    /// validation would refuse it; `None` (the default) does not check.
    pub guest_prep_configured: Option<bool>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_data_disks: 32,
            guest_prep_configured: None,
        }
    }
}

/// Whether a VM's policy runs guest preparation: `skip` never, `virt-v2v-in-place`
/// always, `auto` for Windows guests only. The same rule as the workflows'
/// `guest_prep::decide`, which runs it.
fn needs_guest_prep(policy: GuestPrep, os: GuestOs) -> bool {
    match (policy, os) {
        (GuestPrep::Skip, _) => false,
        (GuestPrep::VirtV2vInPlace, _) => true,
        (GuestPrep::Auto, GuestOs::Windows) => true,
        (GuestPrep::Auto, GuestOs::Linux | GuestOs::Other) => false,
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// The longest name whose test VM name (`<name>-test-YYYYMMDDhhmmss`) still fits the
/// 63 characters of a host name.
pub const MAX_NAME_LEN: usize = 63 - "-test-20261125203000".len();

/// Which disk boots: the one marked, else the first in the VMware boot order, else
/// none. Never "key 2000", never "the first disk".
pub fn boot_disk(disks: &[DiskDefinition]) -> Result<usize, String> {
    let marked: Vec<usize> = (0..disks.len()).filter(|i| disks[*i].boot).collect();
    match marked.as_slice() {
        [one] => return Ok(*one),
        [] => {}
        many => {
            let keys: Vec<String> = many.iter().map(|i| disks[*i].key.to_string()).collect();
            return Err(format!(
                "disks {} are all marked boot = true; mark exactly one",
                keys.join(", ")
            ));
        }
    }
    let mut ordered: Vec<(i64, usize)> = disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.boot_order.map(|o| (o, i)))
        .collect();
    ordered.sort();
    match ordered.as_slice() {
        [] => Err(
            "no boot disk: mark the boot disk with boot = true, or give the disks their VMware boot_order"
                .into(),
        ),
        [(a, i), (b, j), ..] if a == b => Err(format!(
            "disks {} and {} share boot_order {a}; the boot disk is ambiguous — mark it with boot = true",
            disks[*i].key, disks[*j].key
        )),
        [(_, i), ..] => Ok(*i),
    }
}

/// The virtio serial a replica volume shows on the appliance (the volume id without
/// dashes, first 20 characters): how volumed finds its device. Two replicas with one
/// serial cannot be told apart there.
fn serial_of(volume_id: &str) -> String {
    cloudstack::volume_serial(&VolumeId::from(volume_id)).to_lowercase()
}

const SERIAL_CLASH: &str = "the appliance finds a replica's device by that serial (the volume id without dashes, \
     first 20 characters) and could not tell the two apart — use replica volumes whose ids differ there";

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

fn capacity(disk: &DiskDefinition) -> Result<i64, &'static str> {
    match (disk.capacity_bytes, disk.capacity_gib) {
        (Some(b), None) if b > 0 => Ok(b),
        (None, Some(g)) if g > 0 => g
            .checked_mul(GIB)
            .ok_or("too large: more GiB than a disk can have"),
        (Some(_), Some(_)) => Err("give capacity_bytes or capacity_gib, not both"),
        (None, None) => Err("missing: give capacity_bytes (as VMware reports it) or capacity_gib"),
        _ => Err("must be greater than zero"),
    }
}

/// The checks that need nothing but the file.
pub fn check_definition(def: &VmDefinition, limits: Limits) -> Vec<Problem> {
    let mut p = Problems::default();
    if !valid_host_name(&def.name) || def.name.len() > MAX_NAME_LEN {
        p.add(
            "name",
            format!(
                "`{}` cannot name CloudStack VMs: use 1–{MAX_NAME_LEN} ASCII letters, digits and hyphens, \
                 starting with a letter and not ending with a hyphen",
                def.name
            ),
        );
    }
    if def.source_id.trim().is_empty() {
        p.add(
            "source_id",
            "empty: give the VM's vCenter instance UUID or moref",
        );
    }
    let s = &def.spec;
    if s.vcpu < 1 {
        p.add("spec.vcpu", format!("{} vCPUs: give at least 1", s.vcpu));
    }
    if s.memory_mb < 32 {
        p.add(
            "spec.memory_mb",
            format!("{} MB: CloudStack needs at least 32", s.memory_mb),
        );
    }
    if s.cpu_speed_mhz < 1 {
        p.add("spec.cpu_speed_mhz", "must be at least 1 MHz");
    }
    if s.secure_boot && s.firmware != store::Firmware::Uefi {
        p.add("spec.secure_boot", "secure boot needs firmware = \"uefi\"");
    }
    if limits.guest_prep_configured == Some(false) && needs_guest_prep(s.guest_prep, s.guest_os) {
        p.add(
            "spec.guest_prep",
            format!(
                "guest_prep = \"{}\" with guest_os = \"{}\" needs guest preparation, but this ferry server has no \
                 guest-preparation command ([guest_prep] in its configuration), so every failover of this VM would \
                 be refused: configure [guest_prep] (for Windows guests, virt-v2v-in-place with the virtio-win \
                 drivers) and restart the server, or set guest_prep = \"skip\" if the guest already has VirtIO drivers",
                s.guest_prep.as_str(),
                s.guest_os.as_str()
            ),
        );
    }
    if def.nics.is_empty() {
        p.add(
            "nics",
            "no NIC: a failed-over VM needs at least one network",
        );
    }
    let mut macs: HashMap<String, usize> = HashMap::new();
    for (i, nic) in def.nics.iter().enumerate() {
        if !valid_mac(&nic.mac) {
            p.add(
                format!("nics[{i}].mac"),
                format!(
                    "`{}` is not a MAC address: write six hex pairs, like 00:50:56:ab:cd:ef",
                    nic.mac
                ),
            );
        } else if let Some(first) = macs.insert(nic.mac.to_lowercase(), i) {
            p.add(
                format!("nics[{i}].mac"),
                format!(
                    "{} is also the MAC of nics[{first}]: every NIC needs its own",
                    nic.mac
                ),
            );
        }
        for (field, ip) in [
            ("test_ip", &nic.test_ip),
            ("production_ip", &nic.production_ip),
        ] {
            if let Some(ip) = ip
                && ip.parse::<std::net::Ipv4Addr>().is_err()
            {
                p.add(
                    format!("nics[{i}].{field}"),
                    format!("`{ip}` is not an IPv4 address"),
                );
            }
        }
    }
    if def.disks.is_empty() {
        p.add(
            "disks",
            "no disk: list every VMware disk with its replica volume",
        );
    }
    if let Err(message) = boot_disk(&def.disks) {
        p.add("disks", message);
    }
    let mut slots: HashMap<(store::Controller, i64, i64), usize> = HashMap::new();
    let mut keys: HashMap<i64, usize> = HashMap::new();
    let mut volumes: HashMap<&str, usize> = HashMap::new();
    let mut serials: HashMap<String, usize> = HashMap::new();
    for (i, d) in def.disks.iter().enumerate() {
        if let Err(message) = capacity(d) {
            p.add(format!("disks[{i}].capacity"), message);
        }
        if d.bus < 0 || d.unit < 0 {
            p.add(format!("disks[{i}]"), "bus and unit must not be negative");
        }
        if let Some(first) = slots.insert((d.controller, d.bus, d.unit), i) {
            p.add(
                format!("disks[{i}]"),
                format!(
                    "{} bus {} unit {} is also the slot of disks[{first}] (key {}): each disk has its own \
                     controller slot — check the VMware inventory",
                    d.controller, d.bus, d.unit, def.disks[first].key
                ),
            );
        }
        if let Some(first) = keys.insert(d.key, i) {
            p.add(
                format!("disks[{i}].key"),
                format!("device key {} is also the key of disks[{first}]", d.key),
            );
        }
        if d.replica_volume_id.trim().is_empty() {
            p.add(
                format!("disks[{i}].replica_volume_id"),
                "empty: give the CloudStack volume id",
            );
        } else if let Some(first) = volumes.insert(d.replica_volume_id.as_str(), i) {
            p.add(
                format!("disks[{i}].replica_volume_id"),
                format!(
                    "volume {} is also the replica of disks[{first}]: each disk has its own replica volume",
                    d.replica_volume_id
                ),
            );
        } else {
            let serial = serial_of(&d.replica_volume_id);
            if let Some(first) = serials.insert(serial.clone(), i) {
                p.add(
                    format!("disks[{i}].replica_volume_id"),
                    format!(
                        "volume {} and volume {} (the replica of disks[{first}]) share the virtio serial {serial}: {}",
                        d.replica_volume_id, def.disks[first].replica_volume_id, SERIAL_CLASH
                    ),
                );
            }
        }
    }
    let data_disks = def.disks.len().saturating_sub(1);
    if data_disks > limits.max_data_disks {
        p.add(
            "disks",
            format!(
                "{} data disks, but the hypervisor takes at most {} (device ids 1, 2, 4–{}); \
                 such a VM cannot be failed over whole",
                data_disks,
                limits.max_data_disks,
                limits.max_data_disks + 1
            ),
        );
    }
    p.0
}

/// Validates `def` against the file's own rules, ferry's store and CloudStack, and
/// registers it if — and only if — nothing is wrong.
pub async fn register(
    store: &Store,
    cloud: &Client,
    def: &VmDefinition,
    limits: Limits,
) -> Result<ProtectedVm, RegisterError> {
    let mut p = Problems(check_definition(def, limits));

    // What other registered VMs hold: MACs anywhere, replica serials on this appliance.
    let registered = store.vms().await?;
    let mut taken_macs: HashMap<String, &str> = HashMap::new();
    let mut taken_serials: HashMap<String, (&str, &VolumeId, i64)> = HashMap::new();
    for vm in &registered {
        for nic in &vm.nics {
            taken_macs.insert(nic.mac.to_lowercase(), &vm.name);
        }
        if vm.appliance == def.appliance {
            for d in &vm.disks {
                let id = &d.disk.replica_volume_id;
                taken_serials.insert(serial_of(id.as_str()), (&vm.name, id, d.disk.device_key));
            }
        }
    }
    for (i, nic) in def.nics.iter().enumerate() {
        if let Some(owner) = taken_macs.get(&nic.mac.to_lowercase()) {
            p.add(
                format!("nics[{i}].mac"),
                format!(
                    "{} is already the MAC of a NIC of the protected VM {owner}: every NIC needs its own",
                    nic.mac
                ),
            );
        }
    }
    for (i, d) in def.disks.iter().enumerate() {
        if d.replica_volume_id.trim().is_empty() {
            continue;
        }
        // The same volume is reported below as already registered.
        if let Some((owner, id, key)) = taken_serials.get(&serial_of(&d.replica_volume_id))
            && id.as_str() != d.replica_volume_id
        {
            p.add(
                format!("disks[{i}].replica_volume_id"),
                format!(
                    "volume {} and volume {id} (the replica of disk {key} of {owner}, on the same appliance) \
                     share the virtio serial {}: {SERIAL_CLASH}",
                    d.replica_volume_id,
                    serial_of(&d.replica_volume_id)
                ),
            );
        }
    }

    if store.vm(&def.name).await?.is_some() {
        p.add(
            "name",
            format!("a protected VM named {} is already registered; remove it first or pick another name", def.name),
        );
    }
    let appliance = store.appliance(&def.appliance).await?;
    let Some(appliance) = appliance else {
        let known: Vec<String> = store
            .appliances()
            .await?
            .into_iter()
            .map(|a| a.name)
            .collect();
        p.add(
            "appliance",
            format!(
                "no appliance named `{}` is configured in ferry (known: {})",
                def.appliance,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
        return Err(RegisterError::Invalid(p.0));
    };

    // Networks: by id or by name, in the appliance's zone.
    let networks = cloud.list_networks(Some(&appliance.zone_id)).await?;
    let mut resolved: Vec<(NetworkId, NetworkId)> = Vec::new();
    for (i, nic) in def.nics.iter().enumerate() {
        let mut ids = [NetworkId::default(), NetworkId::default()];
        for (slot, (field, wanted)) in [
            ("test_network", &nic.test_network),
            ("production_network", &nic.production_network),
        ]
        .into_iter()
        .enumerate()
        {
            let matches: Vec<&cloudstack::Network> = networks
                .iter()
                .filter(|n| n.id == **wanted || &n.name == wanted)
                .collect();
            match matches.as_slice() {
                [one] => ids[slot] = one.id.clone(),
                [] => p.add(
                    format!("nics[{i}].{field}"),
                    format!(
                        "CloudStack has no network `{wanted}` in zone {}: use the id or name of one of: {}",
                        appliance.zone_id,
                        networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ),
                many => p.add(
                    format!("nics[{i}].{field}"),
                    format!(
                        "{} networks are named `{wanted}`; give the id ({})",
                        many.len(),
                        many.iter().map(|n| n.id.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ),
            }
        }
        let [test, production] = ids;
        resolved.push((test, production));
    }
    // CloudStack refuses a deploy that names one network twice ("specified more than
    // once"), so two NICs of a failover cannot share one.
    for (slot, field) in ["test_network", "production_network"]
        .into_iter()
        .enumerate()
    {
        let mut first_on: HashMap<&NetworkId, usize> = HashMap::new();
        for (i, (test, production)) in resolved.iter().enumerate() {
            let id = if slot == 0 { test } else { production };
            if id.as_str().is_empty() {
                continue;
            }
            if let Some(first) = first_on.insert(id, i) {
                let wanted = |n: usize| {
                    if slot == 0 {
                        &def.nics[n].test_network
                    } else {
                        &def.nics[n].production_network
                    }
                };
                p.add(
                    format!("nics[{i}].{field}"),
                    format!(
                        "nics[{first}] and nics[{i}] are both on network {id} (`{}`, `{}`): CloudStack refuses \
                         to deploy a VM with a network specified more than once — give each NIC its own {field}",
                        wanted(first),
                        wanted(i)
                    ),
                );
            }
        }
    }

    // Replica volumes: exist, sit on the appliance, have the disk's size, belong to no
    // other disk.
    let on_appliance: BTreeMap<VolumeId, cloudstack::Volume> = cloud
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(appliance.vm_id.clone()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|v| (v.id.clone(), v))
        .collect();
    let mut seen = Vec::new();
    for (i, d) in def.disks.iter().enumerate() {
        let field = format!("disks[{i}].replica_volume_id");
        if d.replica_volume_id.trim().is_empty() {
            continue;
        }
        let id = &VolumeId::from(&d.replica_volume_id);
        if let Some((owner, disk)) = store.replica(id).await? {
            p.add(
                &field,
                format!(
                    "volume {id} is already registered as the replica of disk {} of {owner}",
                    disk.disk.device_key
                ),
            );
        }
        let volume = match on_appliance.get(id) {
            Some(v) => v.clone(),
            None => match cloud.get_volume(id).await? {
                None => {
                    p.add(&field, format!("CloudStack has no volume {id}: check the id replication reports for disk {}", d.key));
                    continue;
                }
                Some(v) => {
                    let place = match (&v.vmname, &v.virtualmachineid) {
                        (Some(name), Some(vm)) => format!("is attached to VM {name} ({vm})"),
                        _ => "is not attached to any VM".to_string(),
                    };
                    p.add(
                        &field,
                        format!(
                            "volume {id} {place}, not to the appliance {} ({}): replica volumes must sit on the appliance",
                            appliance.name, appliance.vm_id
                        ),
                    );
                    continue;
                }
            },
        };
        if volume.deviceid == Some(0) || volume.volume_type == "ROOT" {
            p.add(
                &field,
                format!("volume {id} is the appliance's own ROOT disk, not a replica"),
            );
            continue;
        }
        if let Ok(expected) = capacity(d)
            && volume.size != expected
        {
            p.add(
                &field,
                format!(
                    "volume {id} has {} bytes ({:.2} GiB) but disk {} has {expected} bytes ({:.2} GiB): \
                     this is not that disk's replica, or the capacity is wrong",
                    volume.size,
                    volume.size as f64 / GIB as f64,
                    d.key,
                    expected as f64 / GIB as f64
                ),
            );
        }
        seen.push((
            id.clone(),
            Attachment {
                vm_id: volume.virtualmachineid.clone(),
                device_id: volume.deviceid,
                device_path: None,
                seen_at: Some(store::now_ms()),
            },
        ));
    }
    if !p.0.is_empty() {
        return Err(RegisterError::Invalid(p.0));
    }

    let boot = boot_disk(&def.disks).expect("checked");
    let new = NewVm {
        name: def.name.clone(),
        source_id: def.source_id.clone(),
        appliance: appliance.name.clone(),
        spec: VmSpec {
            vcpu: def.spec.vcpu,
            memory_mb: def.spec.memory_mb,
            cpu_speed_mhz: def.spec.cpu_speed_mhz,
            firmware: def.spec.firmware,
            secure_boot: def.spec.secure_boot,
            guest_os: def.spec.guest_os,
            guest_prep: def.spec.guest_prep,
        },
        nics: def
            .nics
            .iter()
            .zip(resolved)
            .enumerate()
            .map(|(i, (n, (test, production)))| Nic {
                position: i as i64,
                mac: n.mac.to_lowercase(),
                source_network: n.source_network.clone(),
                test_network_id: test,
                test_ip: n.test_ip.clone(),
                production_network_id: production,
                production_ip: n.production_ip.clone(),
            })
            .collect(),
        disks: def
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| Disk {
                device_key: d.key,
                controller: d.controller,
                bus: d.bus,
                unit: d.unit,
                capacity_bytes: capacity(d).expect("checked"),
                label: d.label.clone().unwrap_or_else(|| format!("disk-{}", d.key)),
                is_boot: i == boot,
                boot_order: d.boot_order,
                replica_volume_id: VolumeId::from(&d.replica_volume_id),
            })
            .collect(),
    };
    match store.register_vm(&new, &seen).await {
        Ok(vm) => {
            tracing::info!(vm = %vm.name, disks = vm.disks.len(), "registered");
            Ok(vm)
        }
        // A race with another registration, caught by the database.
        Err(StoreError::Constraint {
            constraint,
            message,
        }) => Err(RegisterError::Invalid(vec![Problem {
            field: constraint_field(&constraint).to_string(),
            message: format!(
                "refused by the database ({constraint}): {message}; another registration may have taken it"
            ),
        }])),
        Err(e) => Err(e.into()),
    }
}

fn constraint_field(constraint: &str) -> &'static str {
    match constraint {
        "protected_vms_name_key" => "name",
        "nics_mac_key" => "nics",
        c if c.starts_with("replica_volumes") => "disks",
        c if c.starts_with("disks") => "disks",
        _ => "definition",
    }
}
