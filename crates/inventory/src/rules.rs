//! What a VM definition must be by itself, before ferry's store or CloudStack is
//! asked anything: a name that can name CloudStack VMs, a spec CloudStack takes, NICs
//! with well-formed MACs and IPs, and disks that a failover can move whole — exactly
//! one boot disk, each disk on its own controller slot with its own key, its own
//! replica volume and a virtio serial the appliance can tell apart, no more data disks
//! than the hypervisor takes. Registration and updates check the same rules.

use ids::VolumeId;
use std::collections::HashMap;

use store::{GuestOs, GuestPrep};

use crate::definition::{DiskDefinition, VmDefinition};
use crate::problem::{Problem, Problems};

pub(crate) const GIB: i64 = 1 << 30;

/// What registrations and updates check a definition against besides the file, the
/// store and CloudStack: the hypervisor's limits and the server's configuration.
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
pub(crate) fn serial_of(volume_id: &str) -> String {
    cloudstack::volume_serial(&VolumeId::from(volume_id)).to_lowercase()
}

pub(crate) const SERIAL_CLASH: &str = "the appliance finds a replica's device by that serial (the volume id without dashes, \
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

pub(crate) fn capacity(disk: &DiskDefinition) -> Result<i64, &'static str> {
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
    p.into_vec()
}
