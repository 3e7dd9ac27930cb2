//! Looking at CloudStack before acting: what an operation concerns, and whether one
//! whose outcome is unknown happened.
//!
//! An attach whose response was lost may have attached the volume, may still be
//! running, or may never have reached CloudStack; sending it again in the first two
//! cases attaches twice or fails confusingly. So an operation whose outcome is
//! unknown — a submission that got no answer, or a record found unfinished without a
//! job id — is resolved here by reading what CloudStack shows (is the volume on the
//! VM at the expected device? is a job for it pending? is there a snapshot or volume
//! of that name?), and [`Look::NotDone`] is the only answer on which the operation
//! pipeline ([`crate::Local`]) sends the command again.
//!
//! Why its own module: these are reads, one per kind of operation, with the rules of
//! what counts as "done" for each; the pipeline only acts on the verdict. Everything
//! here takes the CloudStack client and keeps no state. The look at an unknown outcome
//! happens under the VM's serialization lock (the pipeline holds it), so none of our
//! own jobs changes the VM while it is read; [`subjects`] runs earlier, before the
//! journal is asked about the key, to record which VM an operation concerns.

use cloudstack::{Client, ErrorClass, JobStatus, Snapshot, Volume, VolumeFilter};
use ids::{JobId, SnapshotId, VmId, VolumeId};
use serde_json::Value;

use crate::error::{Class, Error, Result};
use crate::journal::OpRecord;
use crate::types::{OpRequest, Seen, SnapshotInfo, VolumeInfo, to_json};

/// Whether an operation is new (submit it) or was found unfinished (look first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    New,
    /// Found unfinished by a request that asked again with its key.
    Recovered,
    /// Found unfinished by [`crate::Local::resume_unfinished`]: nobody is asking.
    Resumed,
}

/// What looking at CloudStack said about an operation of unknown outcome.
pub(crate) enum Look {
    /// It happened; here is its result.
    Done(Value),
    /// A job for it is pending: wait on that one.
    Pending {
        job_id: JobId,
        entity_id: Option<String>,
    },
    /// Nothing happened and nothing is happening: submitting is safe.
    NotDone,
    /// It cannot succeed any more (the volume is gone, or is on another VM).
    Failed(Error),
    /// Looking did not settle it.
    Unresolved(String),
}

/// A read whose definitive failure (CloudStack refusing an id that does not exist)
/// means "nothing there"; only transient and unknown failures are errors.
fn settled<T>(read: Result<T, cloudstack::Error>) -> Result<Option<T>> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.class() == ErrorClass::Definitive => Ok(None),
        Err(e) => Err(Error::cloudstack(&e)),
    }
}

/// The VM, volume and snapshot an operation concerns, as recorded with it.
///
/// This runs before the journal is asked about the key, so it must not fail on a
/// volume or snapshot that is gone: a repeated request for an operation that
/// succeeded (a detach, and the clone has since been deleted) must still get its
/// recorded answer. What cannot be found is left out; CloudStack itself refuses a
/// new operation on it, definitively.
///
/// What the caller saw moments before ([`Seen`]) stands for the read: the VM of the
/// volume a detach or snapshot concerns, and for a revert the snapshot's volume and
/// its VM. (A caller's claim about another volume than the request's is ignored.)
pub(crate) async fn subjects(
    c: &Client,
    request: &OpRequest,
    seen: Option<&Seen>,
) -> Result<(Option<VmId>, Option<VolumeId>, Option<SnapshotId>)> {
    Ok(match request {
        OpRequest::Detach { volume_id } | OpRequest::Snapshot { volume_id, .. }
            if seen.is_some_and(|s| &s.volume_id == volume_id) =>
        {
            (
                seen.and_then(|s| s.vm_id.clone()),
                Some(volume_id.clone()),
                None,
            )
        }
        OpRequest::Revert { snapshot_id } if let Some(s) = seen => (
            s.vm_id.clone(),
            Some(s.volume_id.clone()),
            Some(snapshot_id.clone()),
        ),
        OpRequest::Attach {
            volume_id, vm_id, ..
        }
        | OpRequest::AttachRoot { volume_id, vm_id } => {
            (Some(vm_id.clone()), Some(volume_id.clone()), None)
        }
        OpRequest::Detach { volume_id } | OpRequest::Snapshot { volume_id, .. } => {
            (vm_of(c, volume_id).await?, Some(volume_id.clone()), None)
        }
        OpRequest::Revert { snapshot_id } => {
            let snapshot = settled(c.list_snapshots(None, Some(snapshot_id)).await)?
                .and_then(|list| list.into_iter().next());
            let volume_id = snapshot.and_then(|s| s.volumeid);
            let vm = match &volume_id {
                Some(v) => vm_of(c, v).await?,
                None => None,
            };
            (vm, volume_id, Some(snapshot_id.clone()))
        }
        OpRequest::DeleteSnapshot { snapshot_id } | OpRequest::CreateVolume { snapshot_id, .. } => {
            (None, None, Some(snapshot_id.clone()))
        }
        OpRequest::DeleteVolume { volume_id } => (None, Some(volume_id.clone()), None),
        OpRequest::GuestPrep {
            appliance_vm_id,
            volume_id,
            ..
        } => (Some(appliance_vm_id.clone()), Some(volume_id.clone()), None),
    })
}

/// The VM a volume is attached to; `None` when detached or not found.
async fn vm_of(c: &Client, volume_id: &VolumeId) -> Result<Option<VmId>> {
    Ok(settled(c.get_volume(volume_id).await)?
        .flatten()
        .and_then(|v| v.virtualmachineid))
}

/// The volumes attached to a VM, by device id.
pub(crate) async fn volumes_of(c: &Client, vm_id: &VmId) -> Result<Vec<Volume>> {
    let mut volumes = c
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(vm_id.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| Error::cloudstack(&e))?;
    volumes.sort_by_key(|v| v.deviceid);
    Ok(volumes)
}

/// A job of `command` (a fragment of CloudStack's command class name, such as
/// `AttachVolume`) on `instance_id` that has not finished.
async fn pending_job(
    c: &Client,
    instance_id: &str,
    command: &str,
) -> Result<Option<JobId>, cloudstack::Error> {
    let jobs = c.list_async_jobs().await?;
    Ok(jobs
        .into_iter()
        .find(|j| {
            j.jobstatus == JobStatus::Pending
                && j.jobinstanceid.as_deref() == Some(instance_id)
                && j.cmd.as_deref().is_some_and(|c| c.contains(command))
        })
        .map(|j| j.jobid))
}

/// The pending job of `command` on `instance_id`, to be waited on (with `entity_id`, the
/// snapshot or volume it is making); `otherwise` when there is none.
async fn pending_or(
    c: &Client,
    instance_id: &str,
    command: &str,
    entity_id: Option<&str>,
    otherwise: Look,
) -> Result<Look, cloudstack::Error> {
    Ok(match pending_job(c, instance_id, command).await? {
        Some(job_id) => Look::Pending {
            job_id,
            entity_id: entity_id.map(str::to_string),
        },
        None => otherwise,
    })
}

/// The ones of `listed` named exactly `name`.
fn named<T>(listed: Vec<T>, name: &str, name_of: impl Fn(&T) -> &String) -> Vec<T> {
    listed.into_iter().filter(|x| name_of(x) == name).collect()
}

/// The verdict on an operation whose volume no longer exists: it cannot succeed.
fn gone(volume_id: &VolumeId) -> Look {
    Look::Failed(Error::not_found(format!(
        "volume {volume_id} no longer exists"
    )))
}

/// Looks at CloudStack to learn whether an operation of unknown outcome happened.
pub(crate) async fn look(
    c: &Client,
    op: &OpRecord,
    request: &OpRequest,
) -> Result<Look, cloudstack::Error> {
    Ok(match request {
        OpRequest::Attach {
            volume_id, vm_id, ..
        }
        | OpRequest::AttachRoot { volume_id, vm_id } => {
            let expected = match request {
                OpRequest::Attach { device_id, .. } => *device_id,
                _ => Some(0),
            };
            let Some(v) = c.get_volume(volume_id).await? else {
                return Ok(gone(volume_id));
            };
            match &v.virtualmachineid {
                Some(on) if on == vm_id && v.state != "Attaching" => match expected {
                    Some(d) if v.deviceid != Some(d) => Look::Failed(Error::conflict(format!(
                        "volume {volume_id} is on VM {vm_id} at device {:?}, not at the requested device {d}",
                        v.deviceid
                    ))),
                    _ => Look::Done(to_json(&VolumeInfo::from(&v))),
                },
                Some(on) if on != vm_id => Look::Failed(Error::conflict(format!(
                    "volume {volume_id} is attached to VM {on}, not to {vm_id}"
                ))),
                _ => {
                    let otherwise = if v.state == "Attaching" {
                        Look::Unresolved(format!(
                            "volume {volume_id} is Attaching but no attach job is pending"
                        ))
                    } else {
                        Look::NotDone
                    };
                    pending_or(c, volume_id.as_str(), "AttachVolume", None, otherwise).await?
                }
            }
        }
        OpRequest::Detach { volume_id } => {
            let Some(v) = c.get_volume(volume_id).await? else {
                return Ok(gone(volume_id));
            };
            if v.virtualmachineid.is_none() || v.virtualmachineid != op.vm_id {
                Look::Done(to_json(&VolumeInfo::from(&v)))
            } else {
                pending_or(c, volume_id.as_str(), "DetachVolume", None, Look::NotDone).await?
            }
        }
        OpRequest::Snapshot { volume_id, name } => {
            let listed = c.list_snapshots(Some(volume_id), None).await?;
            let named = named(listed, name, |s: &Snapshot| &s.name);
            match named.as_slice() {
                [] => Look::NotDone,
                [s] => match s.state.as_deref() {
                    Some("BackedUp") => Look::Done(to_json(&SnapshotInfo::from(s))),
                    Some("Error") => Look::Failed(Error::CloudStack {
                        class: Class::Definitive,
                        command: "createSnapshot".into(),
                        errorcode: None,
                        job_id: None,
                        detail: format!("snapshot {} ({name}) ended in state Error", s.id),
                        unreachable: None,
                    }),
                    state => {
                        let otherwise = Look::Unresolved(format!(
                            "snapshot {} ({name}) is in state {state:?} without a pending job",
                            s.id
                        ));
                        pending_or(
                            c,
                            s.id.as_str(),
                            "CreateSnapshot",
                            Some(s.id.as_str()),
                            otherwise,
                        )
                        .await?
                    }
                },
                several => Look::Unresolved(format!(
                    "{} snapshots of volume {volume_id} are named {name}",
                    several.len()
                )),
            }
        }
        OpRequest::Revert { snapshot_id } => {
            // A revert leaves nothing to see in the API, but doing it again is
            // harmless: the volume's VM is stopped (or the volume detached) and
            // this daemon holds the VM's lock, so nothing wrote in between.
            pending_or(
                c,
                snapshot_id.as_str(),
                "RevertSnapshot",
                None,
                Look::NotDone,
            )
            .await?
        }
        OpRequest::DeleteSnapshot { snapshot_id } => {
            if c.list_snapshots(None, Some(snapshot_id)).await?.is_empty() {
                Look::Done(Value::Null)
            } else {
                pending_or(
                    c,
                    snapshot_id.as_str(),
                    "DeleteSnapshot",
                    None,
                    Look::NotDone,
                )
                .await?
            }
        }
        OpRequest::CreateVolume { name, zone_id, .. } => {
            let filter = VolumeFilter {
                name: Some(name.clone()),
                zone_id: Some(zone_id.clone()),
                ..Default::default()
            };
            // CloudStack matches `name` as a substring: compare exactly.
            let named = named(c.list_volumes(&filter).await?, name, |v: &Volume| &v.name);
            match named.as_slice() {
                [] => Look::NotDone,
                [v] if v.state == "Ready" => Look::Done(to_json(&VolumeInfo::from(v))),
                [v] => {
                    let otherwise = Look::Unresolved(format!(
                        "volume {} ({name}) is {} without a pending job",
                        v.id, v.state
                    ));
                    pending_or(
                        c,
                        v.id.as_str(),
                        "CreateVolume",
                        Some(v.id.as_str()),
                        otherwise,
                    )
                    .await?
                }
                several => Look::Unresolved(format!(
                    "{} volumes in zone {zone_id} are named {name}",
                    several.len()
                )),
            }
        }
        OpRequest::DeleteVolume { volume_id } => match c.get_volume(volume_id).await? {
            None => Look::Done(Value::Null),
            Some(_) => Look::NotDone,
        },
        // A command's effect on a disk cannot be looked up; `guest_prep` never
        // asks.
        OpRequest::GuestPrep { .. } => Look::Unresolved(
            "the effect of a guest preparation cannot be looked up in CloudStack".into(),
        ),
    })
}
