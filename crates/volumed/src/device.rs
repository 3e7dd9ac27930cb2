//! Where an attached volume shows up inside an appliance.
//!
//! CloudStack's device id says nothing about the name a Linux guest gives a
//! hot-plugged virtio disk: virtio_blk takes the lowest free index, so after a detach
//! and a re-attach the same volume may be `vdb` where it was `vdd`, and another volume
//! may now be `vdd`. What is stable is the serial KVM gives the disk — the volume UUID
//! without dashes, first 20 characters — which the guest shows twice:
//! `/sys/block/vdX/serial` and the udev link `/dev/disk/by-id/virtio-<serial>` →
//! `../../vdX`.
//!
//! A disk is called *present* only when both agree: the link exists, points at a
//! kernel name, and that name's `serial` file holds the serial. Hot-plug writes the
//! two at slightly different moments, so one without the other is "not yet" (or "not
//! quite gone"), never an answer. Two kernel disks with one serial make the answer
//! ambiguous, and that is an error: handing the wrong disk to guest preparation would
//! rewrite the wrong VM's boot disk.
//!
//! Waiting is a poll with short, growing steps under a deadline: sysfs does not notify
//! reliably (inotify does not fire for sysfs attribute files), and udev creates the
//! by-id link after the block device, so a poll of both is the simplest correct wait.

use ids::VolumeId;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::Error;
pub use crate::presence::Presence;

/// An attached volume as the appliance sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The stable path inside the appliance: `/dev/disk/by-id/virtio-<serial>`
    /// (independent of the scan root, which only tests change).
    pub path: PathBuf,
    /// The kernel's current name, `vdX`: for logs and for humans, never for identity.
    pub kernel_name: String,
    /// The virtio serial.
    pub serial: String,
    /// CloudStack's device id of the disk on the appliance, when the daemon read it
    /// while waiting for the disk to appear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<i64>,
}

impl Device {
    /// The stable path of the disk with `serial`.
    pub fn path_of(serial: &str) -> PathBuf {
        PathBuf::from(format!("/dev/disk/by-id/virtio-{serial}"))
    }

    /// Where `path` is under a scan root (`/` in production).
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(self.path.strip_prefix("/").unwrap_or(&self.path))
    }
}

/// What one look at the tree found for a serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The link and the block device agree.
    Present(Device),
    /// Nothing mentions the serial.
    Absent,
    /// One of the two is there without the other, or they disagree: hot-plug or
    /// unplug is under way.
    Partial(String),
    /// More than one kernel disk holds the serial.
    Conflict(String),
}

/// Looks once at `<root>/sys/block/*/serial` and `<root>/dev/disk/by-id/virtio-<serial>`.
pub fn scan(root: &Path, serial: &str) -> Scan {
    let mut holders: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("sys/block")) {
        for entry in entries.flatten() {
            let content = std::fs::read_to_string(entry.path().join("serial"));
            if content.is_ok_and(|c| c.trim() == serial) {
                holders.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    holders.sort();
    if holders.len() > 1 {
        return Scan::Conflict(format!(
            "the disks {} all report serial {serial}",
            holders.join(", ")
        ));
    }
    let link = root.join("dev/disk/by-id").join(format!("virtio-{serial}"));
    let target = std::fs::read_link(&link).ok();
    let target_name = target
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    match (holders.pop(), target_name) {
        (None, None) if target.is_none() => Scan::Absent,
        (Some(kernel_name), Some(linked)) if linked == kernel_name => Scan::Present(Device {
            path: Device::path_of(serial),
            kernel_name,
            serial: serial.to_string(),
            device_id: None,
        }),
        (block, linked) => Scan::Partial(format!(
            "sys/block has {}, by-id link points at {}",
            block.as_deref().unwrap_or("no disk with this serial"),
            linked.as_deref().unwrap_or("nothing")
        )),
    }
}

/// Every present disk under `root`, by serial (used to fill `list_vm_volumes`).
pub fn scan_all(root: &Path) -> Vec<Device> {
    let mut serials: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("sys/block")) {
        for entry in entries.flatten() {
            if let Ok(s) = std::fs::read_to_string(entry.path().join("serial")) {
                let s = s.trim();
                if !s.is_empty() {
                    serials.push(s.to_string());
                }
            }
        }
    }
    serials.sort();
    serials.dedup();
    serials
        .into_iter()
        .filter_map(|s| match scan(root, &s) {
            Scan::Present(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// How often to look while waiting: a prompt first look, then growing steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSteps {
    pub first: Duration,
    pub max: Duration,
}

impl Default for PollSteps {
    fn default() -> Self {
        PollSteps {
            first: Duration::from_millis(5),
            max: Duration::from_millis(100),
        }
    }
}

/// Waits until the disk with `serial` is present (returns it) or gone (returns
/// `None`), looking every few milliseconds until `timeout`.
pub async fn wait(
    root: &Path,
    volume_id: &VolumeId,
    serial: &str,
    presence: Presence,
    timeout: Duration,
    steps: PollSteps,
) -> Result<Option<Device>, Error> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut step = steps.first;
    loop {
        let root_owned = root.to_path_buf();
        let serial_owned = serial.to_string();
        let found = tokio::task::spawn_blocking(move || scan(&root_owned, &serial_owned))
            .await
            .map_err(|e| Error::internal(format!("device scan task: {e}")))?;
        let last = match (presence, found) {
            (_, Scan::Conflict(detail)) => {
                return Err(Error::DeviceConflict {
                    detail: format!("volume {volume_id}: {detail}"),
                });
            }
            (Presence::Appears, Scan::Present(d)) => return Ok(Some(d)),
            (Presence::Disappears, Scan::Absent) => return Ok(None),
            (_, Scan::Partial(detail)) => detail,
            (_, Scan::Present(d)) => format!("still present as {}", d.kernel_name),
            (_, Scan::Absent) => "absent".to_string(),
        };
        let now = Instant::now();
        if now >= deadline {
            tracing::debug!(%volume_id, serial, last, "device wait timed out");
            return Err(Error::DeviceTimeout {
                volume_id: volume_id.to_string(),
                presence,
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        tokio::time::sleep(step.min(deadline - now)).await;
        step = (step * 2).min(steps.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plug(root: &Path, name: &str, serial: &str, link: bool) {
        std::fs::create_dir_all(root.join("sys/block").join(name)).unwrap();
        std::fs::write(
            root.join("sys/block").join(name).join("serial"),
            format!("{serial}\n"),
        )
        .unwrap();
        if link {
            std::fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
            std::os::unix::fs::symlink(
                format!("../../{name}"),
                root.join("dev/disk/by-id").join(format!("virtio-{serial}")),
            )
            .unwrap();
        }
    }

    #[test]
    fn present_only_when_link_and_block_agree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(scan(root, "aaaa"), Scan::Absent);
        plug(root, "vdb", "aaaa", false);
        assert!(matches!(scan(root, "aaaa"), Scan::Partial(_)));
        std::fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
        std::os::unix::fs::symlink("../../vdb", root.join("dev/disk/by-id/virtio-aaaa")).unwrap();
        assert_eq!(
            scan(root, "aaaa"),
            Scan::Present(Device {
                path: PathBuf::from("/dev/disk/by-id/virtio-aaaa"),
                kernel_name: "vdb".into(),
                serial: "aaaa".into(),
                device_id: None,
            })
        );
        assert_eq!(scan_all(root).len(), 1);
    }

    #[test]
    fn a_link_to_another_disk_is_not_present() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        plug(root, "vdb", "bbbb", true);
        plug(root, "vdc", "cccc", false);
        std::os::unix::fs::symlink("../../vdb", root.join("dev/disk/by-id/virtio-cccc")).unwrap();
        assert!(matches!(scan(root, "cccc"), Scan::Partial(_)));
    }

    #[test]
    fn two_disks_with_one_serial_are_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        plug(root, "vdb", "dddd", true);
        plug(root, "vdc", "dddd", false);
        assert!(matches!(scan(root, "dddd"), Scan::Conflict(_)));
    }

    #[tokio::test]
    async fn waiting_for_a_disk_that_never_comes_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let err = wait(
            dir.path(),
            &"vol".into(),
            "eeee",
            Presence::Appears,
            Duration::from_millis(30),
            PollSteps::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::DeviceTimeout { .. }), "{err:?}");
        // Waiting for it to be gone returns at once.
        let gone = wait(
            dir.path(),
            &"vol".into(),
            "eeee",
            Presence::Disappears,
            Duration::from_millis(30),
            PollSteps::default(),
        )
        .await
        .unwrap();
        assert_eq!(gone, None);
    }
}
