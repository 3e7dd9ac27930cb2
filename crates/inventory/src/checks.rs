//! A definition against ferry's store and CloudStack: what registration and updates
//! both check, after the file's own rules ([`crate::rules`]).
//!
//! Each refusal here is a failover that would otherwise fail later, at 3 a.m., with
//! half the disks moved: a replica volume that does not exist, sits on another VM, has
//! a different size than its disk or already belongs to another disk, networks
//! CloudStack does not have, two NICs on one network, a MAC another VM has, replicas
//! the appliance could not tell apart by their virtio serial. The checks against
//! CloudStack read its current state (`listVolumes`, `listNetworks`); the store's
//! constraints are the last line behind them.
//!
//! An update is checked as a registration of the VM it updates would be, with one
//! difference: what that VM holds itself — its name, its MACs, its replicas and their
//! serials — is not "taken by another VM". Its name must stay its own.

use ids::{NetworkId, VolumeId};
use std::collections::{BTreeMap, HashMap};

use cloudstack::{Client, VolumeFilter};
use store::{
    Appliance, Attachment, Disk, NewVm, Nic, ProtectedVm, Store, StoreError, VmSpec, VmState,
};

use crate::definition::VmDefinition;
use crate::problem::{Problem, Problems};
use crate::rules::{GIB, Limits, SERIAL_CLASH, boot_disk, capacity, check_definition, serial_of};

/// Why a definition cannot be written.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// It is wrong: every problem, by field.
    Invalid(Vec<Problem>),
    /// CloudStack could not be asked.
    CloudStack(cloudstack::Error),
    /// ferry's store could not be read.
    Store(StoreError),
}

impl From<cloudstack::Error> for Refusal {
    fn from(e: cloudstack::Error) -> Self {
        Refusal::CloudStack(e)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// A definition that passed every check, as the store takes it: the VM, and where
/// CloudStack shows each of its replica volumes now.
#[derive(Debug)]
pub(crate) struct Checked {
    pub vm: NewVm,
    pub seen: Vec<(VolumeId, Attachment)>,
}

/// Checks `def` by its own rules, against ferry's store and against CloudStack: for a
/// registration when `this` is `None`, else for an update of the registered VM `this`.
/// Every problem is reported at once.
pub(crate) async fn check(
    store: &Store,
    cloud: &Client,
    def: &VmDefinition,
    limits: Limits,
    this: Option<&ProtectedVm>,
) -> Result<Checked, Refusal> {
    let mut p = Problems::default();
    p.extend(check_definition(def, limits));
    held_by_others(store, def, this, limits, &mut p).await?;
    identity(store, def, this, &mut p).await?;
    let Some(appliance) = appliance(store, def, &mut p).await? else {
        return Err(Refusal::Invalid(p.into_vec()));
    };
    let resolved = networks(cloud, def, &appliance, &mut p).await?;
    let seen = replicas(store, cloud, def, &appliance, this, &mut p).await?;
    if !p.is_empty() {
        return Err(Refusal::Invalid(p.into_vec()));
    }
    Ok(Checked {
        vm: new_vm(def, &appliance.name, resolved),
        seen,
    })
}

/// What other registered VMs hold: MACs anywhere, replica serials and data-volume
/// slots on this appliance.
async fn held_by_others(
    store: &Store,
    def: &VmDefinition,
    this: Option<&ProtectedVm>,
    limits: Limits,
    p: &mut Problems,
) -> Result<(), Refusal> {
    let others: Vec<ProtectedVm> = store
        .vms()
        .await?
        .into_iter()
        .filter(|vm| this.is_none_or(|this| this.id != vm.id))
        .collect();
    let mut taken_macs: HashMap<String, &str> = HashMap::new();
    let mut taken_serials: HashMap<String, (&str, &VolumeId, i64)> = HashMap::new();
    for vm in &others {
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
    // At rest every replica of every VM of an appliance is attached to it, and
    // CloudStack attaches at most `max_data_disks` data volumes to one VM. A committed
    // VM's replicas are its new VM's disks for good: they hold no slot here. An update
    // is refused only when it would hold more slots than the VM holds now.
    let held: usize = others
        .iter()
        .filter(|vm| vm.appliance == def.appliance && vm.state != VmState::Committed)
        .map(|vm| vm.disks.len())
        .sum();
    let holds_now = this
        .filter(|vm| vm.appliance == def.appliance && vm.state != VmState::Committed)
        .map_or(0, |vm| vm.disks.len());
    if held + def.disks.len() > limits.max_data_disks && def.disks.len() > holds_now {
        p.add(
            "appliance",
            format!(
                "appliance {} already holds {held} replica volumes of other protected VMs and \
                 {} needs {} more, but CloudStack attaches at most {} data volumes to one VM \
                 (the appliance too): replicate it to an appliance with room (`ferry appliance \
                 list` shows each one's free slots), or remove a VM from this one",
                def.appliance,
                def.name,
                def.disks.len(),
                limits.max_data_disks
            ),
        );
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
        // The same volume is reported by `replicas` as already registered.
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
    Ok(())
}

/// The name: a registration's must be free; an update's must be the VM's own, since a
/// protected VM's name is its identity (its target VMs and its runs carry it).
async fn identity(
    store: &Store,
    def: &VmDefinition,
    this: Option<&ProtectedVm>,
    p: &mut Problems,
) -> Result<(), Refusal> {
    match this {
        None => {
            if store.vm(&def.name).await?.is_some() {
                p.add(
                    "name",
                    format!(
                        "a protected VM named {} is already registered; `ferry vm update` changes it, \
                         or pick another name",
                        def.name
                    ),
                );
            }
        }
        Some(vm) if vm.name != def.name => p.add(
            "name",
            format!(
                "the definition names `{}`, but it updates {}: a protected VM's name is its identity \
                 (its target VMs and its runs carry it) and an update cannot change it. Give the name \
                 {}; to protect the VM under another name, `ferry vm add` it as a new VM (without the \
                 old one's history)",
                def.name, vm.name, vm.name
            ),
        ),
        Some(_) => {}
    }
    Ok(())
}

/// The appliance the definition names, if ferry has it configured.
async fn appliance(
    store: &Store,
    def: &VmDefinition,
    p: &mut Problems,
) -> Result<Option<Appliance>, Refusal> {
    if let Some(appliance) = store.appliance(&def.appliance).await? {
        return Ok(Some(appliance));
    }
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
    Ok(None)
}

/// Each NIC's test and production network, by id or by name, in the appliance's
/// zone; a network not found is left empty, with its problem.
async fn networks(
    cloud: &Client,
    def: &VmDefinition,
    appliance: &Appliance,
    p: &mut Problems,
) -> Result<Vec<(NetworkId, NetworkId)>, Refusal> {
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
    Ok(resolved)
}

/// The replica volumes: each exists, sits on the appliance, has its disk's size and
/// belongs to no other disk (of another VM: for an update, the VM's own replicas may
/// move between its disks). Returns where CloudStack shows each.
async fn replicas(
    store: &Store,
    cloud: &Client,
    def: &VmDefinition,
    appliance: &Appliance,
    this: Option<&ProtectedVm>,
    p: &mut Problems,
) -> Result<Vec<(VolumeId, Attachment)>, Refusal> {
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
        if let Some((owner, disk)) = store.replica(id).await?
            && !this.is_some_and(|vm| vm.disks.iter().any(|own| own.id == disk.id))
        {
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
    Ok(seen)
}

/// The VM as the store writes it, from a definition that passed every check.
fn new_vm(def: &VmDefinition, appliance: &str, resolved: Vec<(NetworkId, NetworkId)>) -> NewVm {
    let boot = boot_disk(&def.disks).expect("checked");
    NewVm {
        name: def.name.clone(),
        source_id: def.source_id.clone(),
        appliance: appliance.to_string(),
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
    }
}

/// The problem a write refused by a database constraint stands for: a race with
/// another registration or update that took the same name, MAC or replica between the
/// checks and the write.
pub(crate) fn raced(constraint: &str, message: &str) -> Problem {
    let field = match constraint {
        "protected_vms_name_key" => "name",
        "nics_mac_key" => "nics",
        c if c.starts_with("replica_volumes") => "disks",
        c if c.starts_with("disks") => "disks",
        _ => "definition",
    };
    Problem {
        field: field.to_string(),
        message: format!(
            "refused by the database ({constraint}): {message}; another registration or update may have taken it"
        ),
    }
}
