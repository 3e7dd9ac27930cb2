//! Appliance hot-plug emulation: what a Linux guest shows when CloudStack hot-plugs a
//! virtio disk into it.
//!
//! When a volume is attached to a running appliance VM, after a short delay a disk
//! appears as `<root>/sys/block/vdX/serial` (the volume UUID without dashes, first 20
//! characters) and `<root>/dev/disk/by-id/virtio-<serial>` → `../../vdX`. X is the
//! *lowest free* letter, as virtio_blk allocates its index — not derived from the
//! CloudStack device id — so names shift as disks come and go, and the appliance's own
//! root disk is `vda`. Detach removes both at once.
//!
//! The serial is derived here, from CloudStack's rule, and not taken from the client
//! (`cloudstack::volume_serial`): a simulator that shared the client's code would agree
//! with it even when both are wrong. The tests compare the two.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The serial KVM gives a volume's virtio disk, as
/// `LibvirtComputingResource.diskUuidToSerial` computes it: the volume's UUID with the
/// hyphens removed, cut to its first 20 characters (all of it when shorter).
pub fn volume_serial(volume_id: &str) -> String {
    let without_hyphens: String = volume_id.chars().filter(|c| *c != '-').collect();
    without_hyphens.chars().take(20).collect()
}

/// `vd` + the Linux disk suffix of `index`: a…z, aa…az, ba…
pub fn disk_name(index: usize) -> String {
    let mut suffix = Vec::new();
    let mut i = index;
    loop {
        suffix.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    suffix.reverse();
    format!("vd{}", String::from_utf8(suffix).expect("ascii"))
}

/// The sysfs trees of the appliances, and which attaches are still to appear.
#[derive(Debug, Default)]
pub struct Hotplug {
    roots: HashMap<String, PathBuf>,
    /// serial → token of the attach whose disk is about to appear; a detach or a newer
    /// attach replaces it, so a late appearance of a detached disk never happens.
    pending: Mutex<Pending>,
    fs: Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    last_token: u64,
    by_serial: HashMap<String, u64>,
}

impl Hotplug {
    pub fn new(roots: HashMap<String, PathBuf>) -> Self {
        Hotplug {
            roots,
            ..Default::default()
        }
    }

    pub fn root_of(&self, vm_id: &str) -> Option<&Path> {
        self.roots.get(vm_id).map(PathBuf::as_path)
    }

    /// Registers an attach whose disk will appear later; returns its token.
    pub fn expect(&self, serial: &str) -> u64 {
        let mut pending = self.pending.lock().expect("poisoned");
        pending.last_token += 1;
        let token = pending.last_token;
        pending.by_serial.insert(serial.to_string(), token);
        token
    }

    /// Makes the disk appear, unless it was detached (or re-attached) meanwhile.
    pub fn appear(&self, vm_id: &str, serial: &str, token: u64) -> std::io::Result<Option<String>> {
        let Some(root) = self.root_of(vm_id) else {
            return Ok(None);
        };
        let _fs = self.fs.lock().expect("poisoned");
        {
            let mut pending = self.pending.lock().expect("poisoned");
            if pending.by_serial.get(serial) != Some(&token) {
                return Ok(None);
            }
            pending.by_serial.remove(serial);
        }
        plug(root, serial).map(Some)
    }

    /// Removes the disk with `serial` (and cancels its appearance if still pending).
    pub fn remove(&self, vm_id: &str, serial: &str) -> std::io::Result<()> {
        self.pending
            .lock()
            .expect("poisoned")
            .by_serial
            .remove(serial);
        let Some(root) = self.root_of(vm_id) else {
            return Ok(());
        };
        let _fs = self.fs.lock().expect("poisoned");
        unplug(root, serial)
    }

    /// Lays out the disks an appliance has at start, in device-id order.
    pub fn seed(&self, vm_id: &str, serials: &[String]) -> std::io::Result<()> {
        let Some(root) = self.root_of(vm_id) else {
            return Ok(());
        };
        let _fs = self.fs.lock().expect("poisoned");
        std::fs::create_dir_all(root.join("sys/block"))?;
        std::fs::create_dir_all(root.join("dev/disk/by-id"))?;
        for serial in serials {
            // A guest that kept running while cloudsim restarted still sees its disks.
            if root
                .join("dev/disk/by-id")
                .join(format!("virtio-{serial}"))
                .exists()
            {
                continue;
            }
            plug(root, serial)?;
        }
        Ok(())
    }
}

fn plug(root: &Path, serial: &str) -> std::io::Result<String> {
    let block = root.join("sys/block");
    let by_id = root.join("dev/disk/by-id");
    std::fs::create_dir_all(&block)?;
    std::fs::create_dir_all(&by_id)?;
    let name = (0..)
        .map(disk_name)
        .find(|n| !block.join(n).exists())
        .expect("an unbounded range has a free name");
    std::fs::create_dir_all(block.join(&name))?;
    std::fs::write(block.join(&name).join("serial"), format!("{serial}\n"))?;
    // The device node the by-id link points at (an empty file stands for it), so the
    // link resolves as it does in a real guest.
    std::fs::write(root.join("dev").join(&name), b"")?;
    let link = by_id.join(format!("virtio-{serial}"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("../../{name}"), &link)?;
    tracing::debug!(disk = %name, serial, "hot-plugged");
    Ok(name)
}

fn unplug(root: &Path, serial: &str) -> std::io::Result<()> {
    let block = root.join("sys/block");
    if let Ok(entries) = std::fs::read_dir(&block) {
        for entry in entries.flatten() {
            let path = entry.path().join("serial");
            if std::fs::read_to_string(&path)
                .map(|s| s.trim() == serial)
                .unwrap_or(false)
            {
                std::fs::remove_dir_all(entry.path())?;
                let _ = std::fs::remove_file(root.join("dev").join(entry.file_name()));
                tracing::debug!(disk = ?entry.file_name(), serial, "unplugged");
            }
        }
    }
    let link = root.join("dev/disk/by-id").join(format!("virtio-{serial}"));
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serial_is_the_uuid_without_hyphens_cut_to_20_characters() {
        // `shared/reference/cloudstack.md` §3.3: `uuid.replace("-", "")`, then
        // `substring(0, Math.min(length, 20))`.
        assert_eq!(
            volume_serial("6d2f3a1c-9b7e-4c1d-8a2b-0f1e2d3c4b5a"),
            "6d2f3a1c9b7e4c1d8a2b"
        );
        assert_eq!(
            volume_serial("233463a7-6161-47e9-9238-14e51ceae620"),
            "233463a7616147e99238"
        );
        // `Math.min(length, 20)`: a shorter id is kept whole.
        assert_eq!(volume_serial("ab-cd-ef"), "abcdef");
    }

    #[test]
    fn linux_disk_names() {
        assert_eq!(disk_name(0), "vda");
        assert_eq!(disk_name(1), "vdb");
        assert_eq!(disk_name(25), "vdz");
        assert_eq!(disk_name(26), "vdaa");
        assert_eq!(disk_name(27), "vdab");
        assert_eq!(disk_name(52), "vdba");
    }
}
