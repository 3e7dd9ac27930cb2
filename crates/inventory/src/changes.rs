//! What an update changes: the registered VM against the VM a definition makes, field
//! by field, so that an operator sees what a file changes before (a dry run) and after
//! it is written, and the VM's history keeps it.
//!
//! Both sides are compared as the store holds them — capacities in bytes, MACs in
//! lower case, networks as CloudStack ids, a disk without a label as `disk-<key>` — so
//! that `capacity_gib = 107` against the 114890375168 bytes registered, or a network
//! given by name instead of id, is no change. Disks are matched by their VMware device
//! key (a disk's identity, which survives a move to another controller slot), NICs by
//! their position in the file (a NIC has no other identity in it: a new MAC is a
//! change of that NIC, not another NIC).

use serde::{Deserialize, Serialize};
use store::{Disk, DiskRecord, NewVm, Nic, ProtectedVm};

/// One change of a protected VM's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What changed, named as in the definition file: `source_id`, `spec.memory_mb`,
    /// `nics[0].mac`, `disks[key=2001].replica_volume_id`; a whole NIC (`nics[1]`) or
    /// disk (`disks[key=2002]`) when it was added or removed.
    pub field: String,
    pub change: ChangeKind,
    /// The value before (none when added, or when the field was not set).
    pub from: Option<String>,
    /// The value after (none when removed, or when the field is no longer set).
    pub to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

impl ChangeKind {
    /// As it is written in JSON: `added`, `removed` or `changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
        }
    }
}

/// Every change from the registered `old` to `new`, in the order of the definition
/// file: the VM's own fields, its spec, its NICs, then its disks (those it had, in
/// controller order, then the new ones in the file's order).
pub fn between(old: &ProtectedVm, new: &NewVm) -> Vec<Change> {
    let mut out = Changes::default();
    out.field("source_id", &old.source_id, &new.source_id);
    out.field("appliance", &old.appliance, &new.appliance);
    let (a, b) = (&old.spec, &new.spec);
    out.field("spec.vcpu", a.vcpu, b.vcpu);
    out.field("spec.memory_mb", a.memory_mb, b.memory_mb);
    out.field("spec.cpu_speed_mhz", a.cpu_speed_mhz, b.cpu_speed_mhz);
    out.field("spec.firmware", a.firmware, b.firmware);
    out.field("spec.secure_boot", a.secure_boot, b.secure_boot);
    out.field("spec.guest_os", a.guest_os, b.guest_os);
    out.field("spec.guest_prep", a.guest_prep, b.guest_prep);
    nics(&mut out, &old.nics, &new.nics);
    disks(&mut out, &old.disks, &new.disks);
    out.0
}

#[derive(Default)]
struct Changes(Vec<Change>);

impl Changes {
    fn push(
        &mut self,
        field: String,
        change: ChangeKind,
        from: Option<String>,
        to: Option<String>,
    ) {
        self.0.push(Change {
            field,
            change,
            from,
            to,
        });
    }

    /// A field whose value may have changed.
    fn field<T: PartialEq + ToString>(&mut self, field: impl Into<String>, old: T, new: T) {
        if old != new {
            let field = field.into();
            self.push(
                field,
                ChangeKind::Changed,
                Some(old.to_string()),
                Some(new.to_string()),
            );
        }
    }

    /// A field that may be unset on either side.
    fn optional<T: PartialEq + ToString>(
        &mut self,
        field: impl Into<String>,
        old: Option<T>,
        new: Option<T>,
    ) {
        if old != new {
            let field = field.into();
            self.push(
                field,
                ChangeKind::Changed,
                old.map(|v| v.to_string()),
                new.map(|v| v.to_string()),
            );
        }
    }
}

fn nics(out: &mut Changes, old: &[Nic], new: &[Nic]) {
    for position in 0..old.len().max(new.len()) {
        let field = format!("nics[{position}]");
        match (old.get(position), new.get(position)) {
            (Some(a), Some(b)) => {
                out.field(format!("{field}.mac"), &a.mac, &b.mac);
                out.field(
                    format!("{field}.source_network"),
                    &a.source_network,
                    &b.source_network,
                );
                out.field(
                    format!("{field}.test_network"),
                    &a.test_network_id,
                    &b.test_network_id,
                );
                out.optional(
                    format!("{field}.test_ip"),
                    a.test_ip.as_ref(),
                    b.test_ip.as_ref(),
                );
                out.field(
                    format!("{field}.production_network"),
                    &a.production_network_id,
                    &b.production_network_id,
                );
                out.optional(
                    format!("{field}.production_ip"),
                    a.production_ip.as_ref(),
                    b.production_ip.as_ref(),
                );
            }
            (Some(a), None) => out.push(field, ChangeKind::Removed, Some(nic(a)), None),
            (None, Some(b)) => out.push(field, ChangeKind::Added, None, Some(nic(b))),
            (None, None) => {}
        }
    }
}

fn disks(out: &mut Changes, old: &[DiskRecord], new: &[Disk]) {
    for a in old.iter().map(|d| &d.disk) {
        let field = format!("disks[key={}]", a.device_key);
        let Some(b) = new.iter().find(|b| b.device_key == a.device_key) else {
            out.push(field, ChangeKind::Removed, Some(disk(a)), None);
            continue;
        };
        out.field(format!("{field}.controller"), a.controller, b.controller);
        out.field(format!("{field}.bus"), a.bus, b.bus);
        out.field(format!("{field}.unit"), a.unit, b.unit);
        out.field(
            format!("{field}.capacity_bytes"),
            a.capacity_bytes,
            b.capacity_bytes,
        );
        out.field(format!("{field}.label"), &a.label, &b.label);
        out.field(format!("{field}.boot"), a.is_boot, b.is_boot);
        out.optional(format!("{field}.boot_order"), a.boot_order, b.boot_order);
        out.field(
            format!("{field}.replica_volume_id"),
            &a.replica_volume_id,
            &b.replica_volume_id,
        );
    }
    for b in new {
        if !old.iter().any(|a| a.disk.device_key == b.device_key) {
            let field = format!("disks[key={}]", b.device_key);
            out.push(field, ChangeKind::Added, None, Some(disk(b)));
        }
    }
}

/// A NIC in one line: `00:50:56:8a:11:02 on VM Network; test network <id>, production
/// network <id>`.
fn nic(n: &Nic) -> String {
    format!(
        "{} on {}; test network {}, production network {}",
        n.mac, n.source_network, n.test_network_id, n.production_network_id
    )
}

/// A disk in one line: `scsi:0:2, 20 GiB, data disk, replica <id>`.
fn disk(d: &Disk) -> String {
    const GIB: i64 = 1 << 30;
    let size = if d.capacity_bytes % GIB == 0 {
        format!("{} GiB", d.capacity_bytes / GIB)
    } else {
        format!("{} bytes", d.capacity_bytes)
    };
    format!(
        "{}:{}:{}, {size}, {} disk, replica {}",
        d.controller,
        d.bus,
        d.unit,
        if d.is_boot { "boot" } else { "data" },
        d.replica_volume_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{Attachment, Controller, Firmware, GuestOs, GuestPrep, VmSpec, VmState};

    const GIB: i64 = 1 << 30;

    fn data_disk(key: i64, unit: i64, gib: i64, volume: &str) -> Disk {
        Disk {
            device_key: key,
            controller: Controller::Scsi,
            bus: 0,
            unit,
            capacity_bytes: gib * GIB,
            label: format!("disk-{key}"),
            is_boot: false,
            boot_order: None,
            replica_volume_id: volume.into(),
        }
    }

    fn new_vm() -> NewVm {
        let mut boot = data_disk(2000, 0, 107, "vol-a");
        boot.is_boot = true;
        NewVm {
            name: "pgtest1".into(),
            source_id: "src".into(),
            appliance: "oma".into(),
            spec: VmSpec {
                vcpu: 4,
                memory_mb: 8192,
                cpu_speed_mhz: 2000,
                firmware: Firmware::Bios,
                secure_boot: false,
                guest_os: GuestOs::Linux,
                guest_prep: GuestPrep::Auto,
            },
            nics: vec![Nic {
                position: 0,
                mac: "00:50:56:8a:11:01".into(),
                source_network: "VM Network".into(),
                test_network_id: "net-test".into(),
                test_ip: None,
                production_network_id: "net-prod".into(),
                production_ip: Some("10.20.0.21".into()),
            }],
            disks: vec![boot, data_disk(2001, 1, 10, "vol-b")],
        }
    }

    /// `new` as the store would return it once registered.
    fn registered(new: &NewVm) -> ProtectedVm {
        ProtectedVm {
            id: "vm-1".into(),
            name: new.name.clone(),
            source_id: new.source_id.clone(),
            appliance: new.appliance.clone(),
            spec: new.spec.clone(),
            state: VmState::ReadyForFailover,
            target_vm_id: None,
            created_at: 0,
            removed_at: None,
            version: 0,
            nics: new.nics.clone(),
            disks: new
                .disks
                .iter()
                .map(|d| DiskRecord {
                    id: format!("disk-{}", d.device_key),
                    disk: d.clone(),
                    attachment: Attachment::default(),
                    diverged: None,
                    resynced_at: None,
                })
                .collect(),
        }
    }

    fn change(field: &str, kind: ChangeKind, from: Option<&str>, to: Option<&str>) -> Change {
        Change {
            field: field.into(),
            change: kind,
            from: from.map(str::to_string),
            to: to.map(str::to_string),
        }
    }

    #[test]
    fn the_same_definition_changes_nothing() {
        let new = new_vm();
        assert_eq!(between(&registered(&new), &new), []);
    }

    #[test]
    fn fields_nics_and_disks_are_compared_by_their_identity() {
        let old = registered(&new_vm());
        let mut new = new_vm();
        new.spec.memory_mb = 16384;
        new.nics[0].mac = "00:50:56:8a:11:02".into();
        new.nics[0].production_ip = None;
        new.nics.push(Nic {
            position: 1,
            mac: "00:50:56:8a:11:03".into(),
            source_network: "Backup".into(),
            test_network_id: "net-test-2".into(),
            test_ip: None,
            production_network_id: "net-prod-2".into(),
            production_ip: None,
        });
        // Disk 2001 moves to unit 2 on a new replica; 2002 is new; the file lists the
        // disks in another order, which is no change.
        let mut moved = data_disk(2001, 2, 10, "vol-c");
        moved.label = "Hard disk 2".into();
        new.disks = vec![data_disk(2002, 3, 20, "vol-d"), moved, new.disks[0].clone()];
        assert_eq!(
            between(&old, &new),
            [
                change(
                    "spec.memory_mb",
                    ChangeKind::Changed,
                    Some("8192"),
                    Some("16384")
                ),
                change(
                    "nics[0].mac",
                    ChangeKind::Changed,
                    Some("00:50:56:8a:11:01"),
                    Some("00:50:56:8a:11:02")
                ),
                change(
                    "nics[0].production_ip",
                    ChangeKind::Changed,
                    Some("10.20.0.21"),
                    None
                ),
                change(
                    "nics[1]",
                    ChangeKind::Added,
                    None,
                    Some(
                        "00:50:56:8a:11:03 on Backup; test network net-test-2, production network net-prod-2"
                    )
                ),
                change(
                    "disks[key=2001].unit",
                    ChangeKind::Changed,
                    Some("1"),
                    Some("2")
                ),
                change(
                    "disks[key=2001].label",
                    ChangeKind::Changed,
                    Some("disk-2001"),
                    Some("Hard disk 2")
                ),
                change(
                    "disks[key=2001].replica_volume_id",
                    ChangeKind::Changed,
                    Some("vol-b"),
                    Some("vol-c")
                ),
                change(
                    "disks[key=2002]",
                    ChangeKind::Added,
                    None,
                    Some("scsi:0:3, 20 GiB, data disk, replica vol-d")
                ),
            ]
        );
    }

    #[test]
    fn a_removed_disk_and_nic_are_named_with_what_they_were() {
        let mut two_nics = new_vm();
        let mut second = two_nics.nics[0].clone();
        second.position = 1;
        second.mac = "00:50:56:8a:11:09".into();
        two_nics.nics.push(second);
        let old = registered(&two_nics);
        let mut new = new_vm();
        new.disks.pop();
        let changes = between(&old, &new);
        assert_eq!(
            changes,
            [
                change(
                    "nics[1]",
                    ChangeKind::Removed,
                    Some(
                        "00:50:56:8a:11:09 on VM Network; test network net-test, production network net-prod"
                    ),
                    None
                ),
                change(
                    "disks[key=2001]",
                    ChangeKind::Removed,
                    Some("scsi:0:1, 10 GiB, data disk, replica vol-b"),
                    None
                ),
            ]
        );
        assert_eq!(
            serde_json::to_value(&changes[1]).expect("JSON"),
            serde_json::json!({
                "field": "disks[key=2001]",
                "change": "removed",
                "from": "scsi:0:1, 10 GiB, data disk, replica vol-b",
                "to": null
            })
        );
    }
}
