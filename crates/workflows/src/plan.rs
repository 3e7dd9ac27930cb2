//! The device plan: which replica volume goes to which CloudStack device id on the
//! target VM. It is decided before anything is attached, stored with the run, used by
//! every attach, and checked against CloudStack's `listVolumes` before the VM starts.
//!
//! Why plan at all. CloudStack hands out device ids in the order attaches happen, and
//! inside a KVM guest the disk names (`vdb`, `vdc`) follow probe order. The
//! predecessor of ferry attached data disks in whatever order its map iterated, let
//! CloudStack pick the ids and never looked at the result, so nobody could say which
//! VMware disk had become which device. ferry instead fixes the whole map up front, asks
//! CloudStack for exactly those ids, and refuses to start a VM whose volumes are not
//! where the plan says.
//!
//! The rules:
//! - the boot disk goes to device id 0, as ROOT: the disk marked as boot, never "key
//!   2000" and never "the first disk";
//! - the data disks are ordered by (controller type, bus, unit) and given 1, 2, 4, 5, …
//!   — device id 3 is CloudStack's CD-ROM slot and asking for it is an error — up to
//!   the hypervisor's limit of data disks (32 on KVM, so ids up to 33).
//!
//! Why this controller order: SCSI, SATA, NVMe, IDE. The order only has to be stable
//! (a first run, a resumed run and the verification must agree) and explainable to an
//! operator reading the map. SCSI comes first because it is VMware's usual bus for data
//! disks, so on most VMs the device ids simply follow the VMware SCSI order; SATA next
//! (the default of newer guest types); NVMe next; IDE, the legacy bus that mostly holds
//! CD-ROMs and old boot disks, last. Nothing inside the guest depends on it: the stable
//! name of a disk in a KVM guest is its serial (`/dev/disk/by-id/virtio-<serial>`), not
//! its position. The store lists disks in its own (alphabetical) order; the plan does
//! not rely on that.
//!
//! Identity is never size. A disk is known by (controller, bus, unit, key) and a volume
//! by its id. Sizes are compared, never used to decide which volume is which — two
//! disks of equal size keep their own volumes, and swapping them is a mismatch.
//!
//! Architecture invariant: this module does not talk to CloudStack or to the store. It
//! is handed the disks to plan and the volumes CloudStack reports, and only computes.

use ids::VolumeId;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use serde::{Deserialize, Serialize};
use store::{Controller, DiskRecord};

/// The device id of the ROOT volume.
pub const ROOT_DEVICE_ID: i64 = 0;

/// The device id CloudStack keeps for the CD-ROM; never planned for a disk.
pub const CDROM_DEVICE_ID: i64 = 3;

/// The number of data disks KVM takes (`max_data_volumes_limit`), ids 1, 2, 4–33.
pub const KVM_MAX_DATA_DISKS: usize = 32;

/// Where a controller type sorts among data disks: SCSI, SATA, NVMe, IDE (see the
/// module documentation for why). Exhaustive on purpose, so a new controller type
/// forces a decision here.
pub fn controller_rank(controller: Controller) -> u8 {
    match controller {
        Controller::Scsi => 0,
        Controller::Sata => 1,
        Controller::Nvme => 2,
        Controller::Ide => 3,
    }
}

/// The device id of the data disk at `index` (0-based) in the plan's order: 1, 2, 4,
/// 5, … — 3 skipped.
pub fn data_device_id(index: usize) -> i64 {
    // An index is bounded by a disk count, far below i64::MAX.
    let id = index as i64 + 1;
    if id >= CDROM_DEVICE_ID { id + 1 } else { id }
}

/// One disk in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDisk {
    /// The disk's id in ferry's store.
    pub disk_id: String,
    /// The VMware device key (2000, 2001, 16000, …).
    pub device_key: i64,
    pub controller: Controller,
    pub bus: i64,
    pub unit: i64,
    /// The replica volume that carries this disk.
    pub volume_id: VolumeId,
    /// The CloudStack device id the volume gets on the target VM.
    pub device_id: i64,
    /// The disk's capacity, which the replica volume has (registration checks it).
    pub size_bytes: i64,
    pub is_boot: bool,
}

impl PlannedDisk {
    fn from_record(record: &DiskRecord) -> Self {
        let d = &record.disk;
        PlannedDisk {
            disk_id: record.id.clone(),
            device_key: d.device_key,
            controller: d.controller,
            bus: d.bus,
            unit: d.unit,
            volume_id: d.replica_volume_id.clone(),
            // Assigned by `assign`.
            device_id: -1,
            size_bytes: d.capacity_bytes,
            is_boot: d.is_boot,
        }
    }

    /// The key data disks are ordered by; unique within a valid VM.
    fn sort_key(&self) -> (u8, i64, i64) {
        (controller_rank(self.controller), self.bus, self.unit)
    }
}

/// Why disks cannot be planned. Registration refuses all of these already; the
/// planner checks again because a plan built on them would attach the wrong volumes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "none of the VM's {disks} disks is marked as the boot disk, so no volume can be \
         ROOT at device id 0; mark exactly one disk as the boot disk in the VM definition \
         and register it again"
    )]
    NoBootDisk { disks: usize },

    #[error(
        "disks {keys} are all marked as the boot disk, but only one volume can be ROOT at \
         device id 0; mark exactly one disk as the boot disk in the VM definition and \
         register it again",
        keys = join(.device_keys)
    )]
    SeveralBootDisks { device_keys: Vec<i64> },

    #[error(
        "the VM has {count} data disks, but the hypervisor takes at most {limit} \
         (device ids {ids}; 3 is the CD-ROM's); leave {excess} data disk(s) out of the VM \
         definition, or fail over to a hypervisor that takes more",
        ids = data_ids(*.limit),
        excess = .count - .limit
    )]
    TooManyDataDisks { count: usize, limit: usize },

    #[error(
        "disks {first_key} and {second_key} both claim {controller} bus {bus} unit {unit}, \
         so their order and device ids would be ambiguous; correct the controller, bus and \
         unit (as vCenter shows them) in the VM definition and register it again"
    )]
    DuplicateSlot {
        controller: Controller,
        bus: i64,
        unit: i64,
        first_key: i64,
        second_key: i64,
    },

    #[error(
        "disks {first_key} and {second_key} both name replica volume {volume_id}, but each \
         disk needs its own replica volume; correct replica_volume_id (from the replication \
         records) in the VM definition and register it again"
    )]
    DuplicateVolume {
        volume_id: VolumeId,
        first_key: i64,
        second_key: i64,
    },
}

fn join(keys: &[i64]) -> String {
    keys.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The device ids `limit` data disks may use, in words: "1, 2, 4–33".
fn data_ids(limit: usize) -> String {
    match limit {
        0 => "none".to_string(),
        1..=3 => (0..limit)
            .map(|i| data_device_id(i).to_string())
            .collect::<Vec<_>>()
            .join(", "),
        _ => format!("1, 2, 4–{}", data_device_id(limit - 1)),
    }
}

/// Orders `disks` (boot first, then data by [`PlannedDisk::sort_key`]) and gives each
/// its device id. Every check happens before any id is given, and the result does not
/// depend on the order of `disks`.
fn assign(
    mut disks: Vec<PlannedDisk>,
    max_data_disks: usize,
) -> Result<Vec<PlannedDisk>, PlanError> {
    let boot_keys: Vec<i64> = disks
        .iter()
        .filter(|d| d.is_boot)
        .map(|d| d.device_key)
        .collect();
    match boot_keys.len() {
        0 => return Err(PlanError::NoBootDisk { disks: disks.len() }),
        1 => {}
        _ => {
            let mut device_keys = boot_keys;
            device_keys.sort_unstable();
            return Err(PlanError::SeveralBootDisks { device_keys });
        }
    }

    // Boot first, then by slot; the key breaks ties only so that a duplicate slot is
    // reported the same way whatever the input order.
    disks.sort_by_key(|d| (!d.is_boot, d.sort_key(), d.device_key));

    for pair in disks.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.sort_key() == b.sort_key() {
            return Err(PlanError::DuplicateSlot {
                controller: a.controller,
                bus: a.bus,
                unit: a.unit,
                first_key: a.device_key,
                second_key: b.device_key,
            });
        }
    }

    let mut volumes: HashMap<&str, i64> = HashMap::new();
    for d in &disks {
        if let Some(first_key) = volumes.insert(d.volume_id.as_str(), d.device_key) {
            return Err(PlanError::DuplicateVolume {
                volume_id: d.volume_id.clone(),
                first_key,
                second_key: d.device_key,
            });
        }
    }

    let data = disks.len() - 1;
    if data > max_data_disks {
        return Err(PlanError::TooManyDataDisks {
            count: data,
            limit: max_data_disks,
        });
    }

    disks[0].device_id = ROOT_DEVICE_ID;
    for (index, d) in disks[1..].iter_mut().enumerate() {
        d.device_id = data_device_id(index);
    }
    Ok(disks)
}

/// The planned map of a protected VM's disks to device ids on its target VM: the boot
/// disk at 0, then the data disks at 1, 2, 4, 5, … in (controller, bus, unit) order.
///
/// Stored with the run as JSON. Loading it checks it again: a stored plan that does not
/// follow the rules (edited, or written by another version) is refused rather than
/// attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredPlan")]
pub struct DevicePlan {
    /// The data-disk limit the plan was made for.
    max_data_disks: usize,
    /// The boot disk first, then the data disks in device-id order.
    disks: Vec<PlannedDisk>,
}

/// A plan as read, before it is checked.
#[derive(Deserialize)]
struct StoredPlan {
    max_data_disks: usize,
    disks: Vec<PlannedDisk>,
}

impl TryFrom<StoredPlan> for DevicePlan {
    type Error = String;

    fn try_from(stored: StoredPlan) -> Result<Self, String> {
        let replanned = assign(stored.disks.clone(), stored.max_data_disks)
            .map_err(|e| format!("the stored device plan is not valid: {e}"))?;
        if replanned != stored.disks {
            return Err(
                "the stored device plan does not follow the planning rules (boot at 0, data \
                 disks at 1, 2, 4, … in controller, bus, unit order); plan the VM again"
                    .to_string(),
            );
        }
        Ok(DevicePlan {
            max_data_disks: stored.max_data_disks,
            disks: stored.disks,
        })
    }
}

impl DevicePlan {
    /// Plans `disks` (a protected VM's disks, in any order) for a hypervisor that takes
    /// `max_data_disks` data disks ([`KVM_MAX_DATA_DISKS`] on KVM).
    pub fn new(disks: &[DiskRecord], max_data_disks: usize) -> Result<Self, PlanError> {
        let disks = assign(
            disks.iter().map(PlannedDisk::from_record).collect(),
            max_data_disks,
        )?;
        Ok(DevicePlan {
            max_data_disks,
            disks,
        })
    }

    /// Every disk: the boot disk first, then the data disks in device-id order.
    pub fn disks(&self) -> &[PlannedDisk] {
        &self.disks
    }

    /// The boot disk, at device id 0.
    pub fn boot(&self) -> &PlannedDisk {
        &self.disks[0]
    }

    /// The data disks, in device-id order.
    pub fn data(&self) -> &[PlannedDisk] {
        &self.disks[1..]
    }

    /// The data-disk limit the plan was made for.
    pub fn max_data_disks(&self) -> usize {
        self.max_data_disks
    }

    /// The planned entry of a replica volume.
    pub fn by_volume(&self, volume_id: &VolumeId) -> Option<&PlannedDisk> {
        self.disks.iter().find(|d| d.volume_id == *volume_id)
    }

    /// Compares the volumes CloudStack reports on the target VM (`listVolumes` with its
    /// `virtualmachineid`: volume id, device id, size in bytes) with the plan. Every
    /// planned volume must be there, at its planned device id, with its planned size —
    /// the boot volume at 0 — and nothing else may be attached: the template's
    /// placeholder ROOT must be gone. Volumes are matched by id only, never by size.
    ///
    /// Returns every mismatch, planned volumes first (in plan order), then what was
    /// observed but not planned (in observation order).
    pub fn verify<S: AsRef<str>>(
        &self,
        observed: &[(S, Option<i64>, i64)],
    ) -> Result<(), Vec<Mismatch>> {
        let mut mismatches = Vec::new();
        let mut strays = Vec::new();
        let mut seen: HashMap<&str, (Option<i64>, i64)> = HashMap::new();
        for (volume_id, device_id, size_bytes) in observed {
            let volume_id = volume_id.as_ref();
            match seen.entry(volume_id) {
                Entry::Vacant(e) => {
                    e.insert((*device_id, *size_bytes));
                    if self.by_volume(&VolumeId::from(volume_id)).is_none() {
                        strays.push(Mismatch::Unplanned {
                            volume_id: volume_id.to_string(),
                            device_id: *device_id,
                            size_bytes: *size_bytes,
                        });
                    }
                }
                Entry::Occupied(_) => strays.push(Mismatch::ListedTwice {
                    volume_id: volume_id.to_string(),
                }),
            }
        }

        for planned in &self.disks {
            let Some(&(device_id, size_bytes)) = seen.get(planned.volume_id.as_str()) else {
                mismatches.push(Mismatch::Missing {
                    volume_id: planned.volume_id.to_string(),
                    device_key: planned.device_key,
                    is_boot: planned.is_boot,
                    planned_device_id: planned.device_id,
                });
                continue;
            };
            if device_id != Some(planned.device_id) {
                mismatches.push(Mismatch::WrongDeviceId {
                    volume_id: planned.volume_id.to_string(),
                    device_key: planned.device_key,
                    is_boot: planned.is_boot,
                    planned_device_id: planned.device_id,
                    observed_device_id: device_id,
                });
            }
            if size_bytes != planned.size_bytes {
                mismatches.push(Mismatch::WrongSize {
                    volume_id: planned.volume_id.to_string(),
                    device_key: planned.device_key,
                    is_boot: planned.is_boot,
                    planned_size_bytes: planned.size_bytes,
                    observed_size_bytes: size_bytes,
                });
            }
        }

        mismatches.extend(strays);
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(mismatches)
        }
    }
}

/// The map, one line per disk, for operators: `0  <volume>  disk 2000 scsi 0:0  100 GiB  boot`.
impl fmt::Display for DevicePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.disks {
            writeln!(
                f,
                "{:>2}  {}  disk {} {} {}:{}  {}{}",
                d.device_id,
                d.volume_id,
                d.device_key,
                d.controller,
                d.bus,
                d.unit,
                Size(d.size_bytes),
                if d.is_boot { "  boot" } else { "" }
            )?;
        }
        Ok(())
    }
}

/// One way the target VM differs from the plan. Its volume ids are words for a report
/// (a clone is told as "<clone> (the clone of replica <replica>)"), so they are text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// A planned volume is not attached to the target VM.
    Missing {
        volume_id: String,
        device_key: i64,
        is_boot: bool,
        planned_device_id: i64,
    },
    /// A planned volume is attached at another device id (or none).
    WrongDeviceId {
        volume_id: String,
        device_key: i64,
        is_boot: bool,
        planned_device_id: i64,
        observed_device_id: Option<i64>,
    },
    /// A planned volume has another size than its disk.
    WrongSize {
        volume_id: String,
        device_key: i64,
        is_boot: bool,
        planned_size_bytes: i64,
        observed_size_bytes: i64,
    },
    /// A volume is attached that the plan does not have (at device id 0: most likely
    /// the template's placeholder ROOT).
    Unplanned {
        volume_id: String,
        device_id: Option<i64>,
        size_bytes: i64,
    },
    /// The observation names one volume more than once.
    ListedTwice { volume_id: String },
}

impl Mismatch {
    /// The id of the volume a mismatch names, for a caller that names that volume
    /// otherwise (clone mode names a replica by its clone) — none for an unplanned
    /// volume, which is named as it was observed.
    pub fn planned_volume_id_mut(&mut self) -> Option<&mut String> {
        match self {
            Mismatch::Missing { volume_id, .. }
            | Mismatch::WrongDeviceId { volume_id, .. }
            | Mismatch::WrongSize { volume_id, .. }
            | Mismatch::ListedTwice { volume_id } => Some(volume_id),
            Mismatch::Unplanned { .. } => None,
        }
    }
}

fn role(is_boot: bool) -> &'static str {
    if is_boot { "boot" } else { "data" }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Missing {
                volume_id,
                device_key,
                is_boot,
                planned_device_id,
            } => write!(
                f,
                "{} volume {volume_id} (disk {device_key}) is not attached to the target VM; \
                 the plan puts it at device id {planned_device_id}{}",
                role(*is_boot),
                if *is_boot { " (ROOT)" } else { "" }
            ),
            Mismatch::WrongDeviceId {
                volume_id,
                device_key,
                is_boot,
                planned_device_id,
                observed_device_id,
            } => {
                let at = match observed_device_id {
                    Some(id) => format!("is at device id {id}"),
                    None => "is attached without a device id".to_string(),
                };
                if *is_boot {
                    write!(
                        f,
                        "boot volume {volume_id} (disk {device_key}) {at}, not at \
                         {planned_device_id} (ROOT): the VM would not boot from it"
                    )
                } else {
                    write!(
                        f,
                        "data volume {volume_id} (disk {device_key}) {at}, not at its planned \
                         device id {planned_device_id}"
                    )
                }
            }
            Mismatch::WrongSize {
                volume_id,
                device_key,
                is_boot,
                planned_size_bytes,
                observed_size_bytes,
            } => write!(
                f,
                "{} volume {volume_id} (disk {device_key}) has {}, but the disk has {}: it \
                 is not the disk's replica, or it was resized",
                role(*is_boot),
                Size(*observed_size_bytes),
                Size(*planned_size_bytes)
            ),
            Mismatch::Unplanned {
                volume_id,
                device_id,
                size_bytes,
            } => match device_id {
                Some(ROOT_DEVICE_ID) => write!(
                    f,
                    "volume {volume_id} ({}) is ROOT at device id 0 but is not in the plan: \
                     most likely the template's placeholder ROOT, which must be removed so \
                     the boot replica can be ROOT",
                    Size(*size_bytes)
                ),
                Some(id) => write!(
                    f,
                    "volume {volume_id} ({}) is attached at device id {id} but is not in the \
                     plan: only the planned replica volumes may be attached",
                    Size(*size_bytes)
                ),
                None => write!(
                    f,
                    "volume {volume_id} ({}) is attached without a device id and is not in \
                     the plan: only the planned replica volumes may be attached",
                    Size(*size_bytes)
                ),
            },
            Mismatch::ListedTwice { volume_id } => write!(
                f,
                "volume {volume_id} is listed more than once for the target VM; the \
                 observation is not a plain listVolumes answer, look again"
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// A size in words: "100 GiB (107374182400 bytes)", or bytes alone when not whole GiB.
struct Size(i64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const GIB: i64 = 1 << 30;
        if self.0 > 0 && self.0 % GIB == 0 {
            write!(f, "{} GiB ({} bytes)", self.0 / GIB, self.0)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
