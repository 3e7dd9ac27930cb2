//! The values that cross the [`crate::VolumeService`] boundary: what a caller asks for
//! and what it gets back. They are the JSON bodies of the REST API as well, so they
//! are plain serde structs; the ids are typed (`ids`) and travel as their strings.

use ids::{RunId, SnapshotId, VmId, VolumeId, ZoneId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::device::Device;
use crate::error::Error;
use crate::journal::OpKind;

/// The longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 200;

/// A lease's fencing token: a worker of run `run_id` that holds generation
/// `generation`. A request carrying a generation lower than the highest the daemon has
/// seen for that run comes from a worker whose lease was taken over, and is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fence {
    pub run_id: RunId,
    pub generation: i64,
}

/// What the caller read in CloudStack moments before asking: the volume an operation
/// concerns (for a revert, the snapshot's volume) and the VM it was attached to
/// (`None`: attached to none). A detach, snapshot or revert records that VM as the
/// operation's — the key of its serialization and what a look after an unknown outcome
/// compares with — instead of reading the volume again. Only a caller that has just
/// looked may say so (ferry's steps look before they act); without it the daemon reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub volume_id: VolumeId,
    #[serde(default)]
    pub vm_id: Option<VmId>,
}

/// What every mutating request carries besides its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Chosen by the caller, deterministic per intended action (e.g. run id + step +
    /// volume): asking again with the same key returns the first result.
    pub idempotency_key: String,
    #[serde(default)]
    pub fence: Option<Fence>,
    /// What the caller has just seen of the operation's volume; not part of what is
    /// asked (a repeated request may see otherwise and is still the same request).
    #[serde(default)]
    pub seen: Option<Seen>,
}

impl Call {
    pub fn new(idempotency_key: impl Into<String>) -> Self {
        Call {
            idempotency_key: idempotency_key.into(),
            fence: None,
            seen: None,
        }
    }

    pub fn fenced(idempotency_key: impl Into<String>, fence: Fence) -> Self {
        Call {
            idempotency_key: idempotency_key.into(),
            fence: Some(fence),
            seen: None,
        }
    }

    /// The same call, telling the daemon that `volume_id` was just seen attached to
    /// `vm_id` (`None`: to no VM).
    pub fn seeing(mut self, volume_id: &VolumeId, vm_id: Option<&VmId>) -> Self {
        self.seen = Some(Seen {
            volume_id: volume_id.clone(),
            vm_id: vm_id.cloned(),
        });
        self
    }

    /// Refuses keys that are empty, too long, or not printable ASCII (they travel in an
    /// HTTP header).
    pub fn validate(&self) -> Result<(), Error> {
        validate_key(&self.idempotency_key)?;
        if let Some(f) = &self.fence {
            non_empty("fence.run_id", &f.run_id)?;
        }
        Ok(())
    }
}

pub(crate) fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::bad_request("the idempotency key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::bad_request(format!(
            "the idempotency key is {} bytes long; at most {MAX_KEY_LEN} are accepted",
            key.len()
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::bad_request(
            "the idempotency key must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

pub(crate) fn non_empty(field: &str, value: impl AsRef<str>) -> Result<(), Error> {
    if value.as_ref().trim().is_empty() {
        Err(Error::bad_request(format!("`{field}` must not be empty")))
    } else {
        Ok(())
    }
}

/// One mutating operation and its arguments, as recorded in the journal (`request`)
/// and compared when an idempotency key is used again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpRequest {
    /// Attach a data volume; `device_id` `None` lets CloudStack choose (1, 2, 4, …).
    Attach {
        volume_id: VolumeId,
        vm_id: VmId,
        #[serde(default)]
        device_id: Option<i64>,
    },
    /// Attach as ROOT (device 0): the VM must be Stopped and have no device 0.
    AttachRoot {
        volume_id: VolumeId,
        vm_id: VmId,
    },
    Detach {
        volume_id: VolumeId,
    },
    Snapshot {
        volume_id: VolumeId,
        name: String,
    },
    Revert {
        snapshot_id: SnapshotId,
    },
    DeleteSnapshot {
        snapshot_id: SnapshotId,
    },
    CreateVolume {
        snapshot_id: SnapshotId,
        name: String,
        zone_id: ZoneId,
    },
    /// Delete a volume ferry created; a replica volume is refused.
    DeleteVolume {
        volume_id: VolumeId,
    },
    /// Run the guest-preparation command against a volume's disk on an appliance of
    /// this daemon (no CloudStack command: see [`crate::guest_prep`]).
    GuestPrep {
        appliance_vm_id: VmId,
        volume_id: VolumeId,
        prep: GuestPrep,
    },
}

impl OpRequest {
    /// The kind the journal records it as.
    pub(crate) fn kind(&self) -> OpKind {
        match self {
            OpRequest::Attach { .. } => OpKind::Attach,
            OpRequest::AttachRoot { .. } => OpKind::AttachRoot,
            OpRequest::Detach { .. } => OpKind::Detach,
            OpRequest::Snapshot { .. } => OpKind::Snapshot,
            OpRequest::Revert { .. } => OpKind::Revert,
            OpRequest::DeleteSnapshot { .. } => OpKind::DeleteSnapshot,
            OpRequest::CreateVolume { .. } => OpKind::CreateVolume,
            OpRequest::DeleteVolume { .. } => OpKind::DeleteVolume,
            OpRequest::GuestPrep { .. } => OpKind::GuestPrep,
        }
    }

    /// Checks the arguments that can be checked without CloudStack.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            OpRequest::Attach {
                volume_id,
                vm_id,
                device_id,
            } => {
                non_empty("volume_id", volume_id)?;
                non_empty("vm_id", vm_id)?;
                match device_id {
                    Some(0) => Err(Error::bad_request(
                        "device id 0 is the ROOT slot: use attach-root to attach a boot disk",
                    )),
                    Some(3) => Err(Error::bad_request(
                        "device id 3 is reserved for the CD-ROM; use 1, 2 or 4 and above",
                    )),
                    Some(d) if *d < 0 => {
                        Err(Error::bad_request(format!("device id {d} is negative")))
                    }
                    _ => Ok(()),
                }
            }
            OpRequest::AttachRoot { volume_id, vm_id } => {
                non_empty("volume_id", volume_id)?;
                non_empty("vm_id", vm_id)
            }
            OpRequest::Detach { volume_id } | OpRequest::DeleteVolume { volume_id } => {
                non_empty("volume_id", volume_id)
            }
            OpRequest::Snapshot { volume_id, name } => {
                non_empty("volume_id", volume_id)?;
                non_empty("name", name)
            }
            OpRequest::Revert { snapshot_id } | OpRequest::DeleteSnapshot { snapshot_id } => {
                non_empty("snapshot_id", snapshot_id)
            }
            OpRequest::CreateVolume {
                snapshot_id,
                name,
                zone_id,
            } => {
                non_empty("snapshot_id", snapshot_id)?;
                non_empty("name", name)?;
                non_empty("zone_id", zone_id)
            }
            OpRequest::GuestPrep {
                appliance_vm_id,
                volume_id,
                prep,
            } => {
                non_empty("appliance_vm_id", appliance_vm_id)?;
                non_empty("volume_id", volume_id)?;
                prep.validate()
            }
        }
    }
}

/// What stands for the disk's device path in [`GuestPrep::args`].
pub const DEVICE_PLACEHOLDER: &str = "{device}";

/// The longest guest preparation a request may ask for (a day).
pub const MAX_GUEST_PREP_SECS: u64 = 24 * 3600;

fn default_guest_prep_timeout() -> u64 {
    3600
}

/// Guest preparation: a command the daemon runs on the appliance against the device
/// path of a disk attached there — in a failover, the boot replica, after its snapshot
/// and before it leaves the appliance for the target VM.
///
/// The command is run directly (no shell) with `args`, in which every occurrence of
/// `{device}` is replaced by the disk's path (`/dev/disk/by-id/virtio-<serial>` on a
/// real appliance). Nothing about the command is built in. The documented example,
/// and what an operator configures for Windows guests, injects the VirtIO drivers:
///
/// ```toml
/// [guest_prep]
/// program = "virt-v2v-in-place"
/// args = ["-i", "disk", "{device}", "--inject-virtio-win", "/usr/share/virtio-win/virtio-win.iso"]
/// timeout_secs = 3600
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestPrep {
    /// A program name looked up on the daemon's `PATH`, or an absolute path.
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// After this long the command and everything it started are killed (and the
    /// preparation has failed). Default one hour.
    #[serde(default = "default_guest_prep_timeout")]
    pub timeout_secs: u64,
}

impl GuestPrep {
    /// A preparation with the default timeout.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        GuestPrep {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout_secs: default_guest_prep_timeout(),
        }
    }

    /// The arguments with `{device}` replaced by `device`.
    pub fn args_for(&self, device: &str) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.replace(DEVICE_PLACEHOLDER, device))
            .collect()
    }

    /// Refuses an empty program and a timeout of zero or of more than
    /// [`MAX_GUEST_PREP_SECS`].
    pub fn validate(&self) -> Result<(), Error> {
        non_empty("prep.program", &self.program)?;
        if self.timeout_secs == 0 || self.timeout_secs > MAX_GUEST_PREP_SECS {
            return Err(Error::bad_request(format!(
                "prep.timeout_secs is {}; it must be between 1 and {MAX_GUEST_PREP_SECS}",
                self.timeout_secs
            )));
        }
        Ok(())
    }
}

/// How a guest preparation that succeeded went (a failed one is
/// [`Error::GuestPrepFailed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestPrepOutcome {
    pub appliance_vm_id: VmId,
    pub volume_id: VolumeId,
    /// The path the command was given for `{device}`: the disk's stable path as the
    /// daemon resolved it (under its scan root, which is `/` on a real appliance).
    pub device_path: String,
    /// The kernel's name of the disk when the command ran (for humans).
    pub kernel_name: String,
    /// The program and its arguments, `{device}` replaced.
    pub command: Vec<String>,
    pub exit_code: i32,
    pub duration_ms: u64,
    /// The last few KiB of what the command printed, as text.
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// A CloudStack volume as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub id: VolumeId,
    pub name: String,
    /// `ROOT` or `DATADISK`.
    pub volume_type: String,
    /// Allocated, Ready, Attaching, …
    pub state: String,
    pub size_bytes: i64,
    #[serde(default)]
    pub zone_id: Option<ZoneId>,
    /// The VM it is attached to, if any.
    #[serde(default)]
    pub vm_id: Option<VmId>,
    /// CloudStack's slot on that VM: 0 ROOT, 1, 2, 4, … data.
    #[serde(default)]
    pub device_id: Option<i64>,
    /// Where it shows inside an appliance, when the VM is an appliance of this daemon
    /// and the disk is visible (filled by `list_vm_volumes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

impl From<&cloudstack::Volume> for VolumeInfo {
    fn from(v: &cloudstack::Volume) -> Self {
        VolumeInfo {
            id: v.id.clone(),
            name: v.name.clone(),
            volume_type: v.volume_type.clone(),
            state: v.state.clone(),
            size_bytes: v.size,
            zone_id: v.zoneid.clone(),
            vm_id: v.virtualmachineid.clone(),
            device_id: v.deviceid,
            device: None,
        }
    }
}

/// A CloudStack volume snapshot as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: SnapshotId,
    pub name: String,
    #[serde(default)]
    pub volume_id: Option<VolumeId>,
    /// BackedUp, Creating, Error, …
    #[serde(default)]
    pub state: Option<String>,
}

impl From<&cloudstack::Snapshot> for SnapshotInfo {
    fn from(s: &cloudstack::Snapshot) -> Self {
        SnapshotInfo {
            id: s.id.clone(),
            name: s.name.clone(),
            volume_id: s.volumeid.clone(),
            state: s.state.clone(),
        }
    }
}

/// `value` as JSON, for the journal and the wire; a value that cannot be written as
/// JSON (none of the types here) is `null`.
/// The revision of the agent API this build speaks. The engine and an agent must
/// speak the same one: each refuses the other's requests or answers otherwise (see
/// [`crate::server`]). Raise it with every change to a route, a body or an answer.
pub const API_REVISION: u32 = 2;

/// This build's ferry version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a volume daemon says about itself (`GET /v1/hello`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    pub api_revision: u32,
    /// The appliances it serves, with the disks it sees on each.
    pub appliances: Vec<ApplianceSeen>,
    /// Operations in its journal that are not finished.
    pub backlog: u64,
}

/// The appliance VMs a daemon serves, for a message: "a, b", or "no appliance".
pub(crate) fn appliances_named<'a>(vm_ids: impl IntoIterator<Item = &'a VmId>) -> String {
    let names: Vec<&str> = vm_ids.into_iter().map(VmId::as_str).collect();
    if names.is_empty() {
        "no appliance".into()
    } else {
        names.join(", ")
    }
}

/// One appliance as its daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplianceSeen {
    pub vm_id: VmId,
    /// Disks with a virtio serial under its `/sys/block`; `None` when they cannot be
    /// counted (the root is not readable).
    pub devices: Option<u64>,
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_short_printable_and_present() {
        assert!(Call::new("run-1/step-7/attach/vol-a").validate().is_ok());
        assert!(Call::new("").validate().is_err());
        assert!(Call::new("with space").validate().is_err());
        assert!(Call::new("é").validate().is_err());
        assert!(Call::new("k".repeat(MAX_KEY_LEN + 1)).validate().is_err());
    }

    #[test]
    fn device_ids_0_and_3_are_refused_for_data_attach() {
        let attach = |d| OpRequest::Attach {
            volume_id: "v".into(),
            vm_id: "m".into(),
            device_id: d,
        };
        assert!(attach(None).validate().is_ok());
        assert!(attach(Some(4)).validate().is_ok());
        assert!(attach(Some(0)).validate().is_err());
        assert!(attach(Some(3)).validate().is_err());
        assert!(attach(Some(-1)).validate().is_err());
    }

    #[test]
    fn guest_prep_reads_with_defaults_and_replaces_the_device() {
        let prep: GuestPrep = serde_json::from_value(serde_json::json!({
            "program": "virt-v2v-in-place",
            "args": ["-i", "disk", "{device}", "--inject-virtio-win", "/usr/share/virtio-win/virtio-win.iso"]
        }))
        .unwrap();
        assert_eq!(prep.timeout_secs, 3600);
        assert_eq!(
            prep.args_for("/dev/disk/by-id/virtio-abc"),
            [
                "-i",
                "disk",
                "/dev/disk/by-id/virtio-abc",
                "--inject-virtio-win",
                "/usr/share/virtio-win/virtio-win.iso"
            ]
        );
        assert_eq!(
            GuestPrep::new("p", ["x={device},y={device}"]).args_for("/d"),
            ["x=/d,y=/d"]
        );
        assert!(prep.validate().is_ok());
        assert!(
            GuestPrep::new(" ", Vec::<String>::new())
                .validate()
                .is_err()
        );
        let mut zero = prep.clone();
        zero.timeout_secs = 0;
        assert!(zero.validate().is_err());
        assert!(
            serde_json::from_value::<GuestPrep>(serde_json::json!({"program": "p", "timeout": 3}))
                .is_err(),
            "a misspelt field is refused"
        );
    }

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let r = OpRequest::CreateVolume {
            snapshot_id: "s".into(),
            name: "n".into(),
            zone_id: "z".into(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kind"], "create_volume");
        assert_eq!(serde_json::from_value::<OpRequest>(v).unwrap(), r);
    }
}
