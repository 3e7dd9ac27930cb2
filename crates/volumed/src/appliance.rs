//! The appliances this daemon serves: which of their disks is which volume, checked
//! against CloudStack, and guest preparation run against one of those disks.
//!
//! Guest preparation goes through the operation pipeline like a CloudStack command —
//! journaled under the caller's key, serialized per volume, its end recorded — but
//! what it does differs from every command: it runs on the appliance, nothing in
//! CloudStack shows whether it happened, and so it is never looked up and never run
//! twice for one key (see [`crate::guest_prep`], which runs the command itself).
//! Before it starts, CloudStack must show the volume on the appliance with no other
//! volume there sharing its serial, and the appliance must show the disk; it is
//! recorded as started before the command starts.
//!
//! Why its own module: this is the part of the daemon that knows the appliances'
//! `/sys` and `/dev` (through [`crate::device`]) as well as CloudStack and the
//! journal; the pipeline ([`crate::Local`]) hands it an operation and records what
//! it returns. [`Appliances`] borrows what it needs from the daemon, so it keeps no
//! state of its own.

use ids::{JobId, VmId, VolumeId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloudstack::Client;
use serde_json::Value;

use crate::device::{self, Device, PollSteps, Presence};
use crate::error::{Error, GuestPrepFailure, Result, chain};
use crate::guest_prep;
use crate::journal::{Journal, OpRecord};
use crate::look::{Origin, volumes_of};
use crate::types::{GuestPrep, GuestPrepOutcome, VolumeInfo, to_json};

/// How long guest preparation waits for a disk CloudStack has on the appliance to be
/// visible there (normally it is already: the caller waited for it after attaching).
const GUEST_PREP_DEVICE_WAIT: Duration = Duration::from_secs(30);

/// The appliances of this daemon, as one operation or read sees them.
#[derive(Clone, Copy)]
pub(crate) struct Appliances<'a> {
    /// CloudStack, asked which volumes are on an appliance.
    pub(crate) client: &'a Client,
    /// Appliance VM id → root of its `/sys` and `/dev` ([`crate::LocalConfig::appliances`]).
    pub(crate) roots: &'a BTreeMap<String, PathBuf>,
    /// Steps of the device-path poll.
    pub(crate) poll: PollSteps,
}

impl<'a> Appliances<'a> {
    /// The root of `vm_id`'s `/sys` and `/dev`; not found when it is not an appliance
    /// of this daemon.
    pub(crate) fn root(&self, vm_id: &VmId) -> Result<&'a PathBuf> {
        self.roots.get(vm_id.as_str()).ok_or_else(|| {
            Error::not_found(format!(
                "VM {vm_id} is not an appliance of this volume daemon (it knows {})",
                if self.roots.is_empty() {
                    "none".to_string()
                } else {
                    self.roots.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })
    }

    /// Whether `program` is an executable on this daemon's `PATH` (or an absolute path
    /// to one), for the appliance `appliance_vm_id`: evaluated here, because this
    /// daemon runs on the appliance.
    pub(crate) async fn tool_available(
        &self,
        appliance_vm_id: &VmId,
        program: &str,
    ) -> Result<bool> {
        self.root(appliance_vm_id)?;
        let program = program.to_string();
        let found = tokio::task::spawn_blocking(move || {
            guest_prep::find_executable(&program, std::env::var_os("PATH").as_deref())
        })
        .await
        .map_err(|e| Error::internal(format!("tool lookup task: {e}")))??;
        Ok(found.is_some())
    }

    /// When `vm_id` is an appliance of this daemon, gives each of its volumes the
    /// [`Device`] it shows there (if it is visible); any other VM's are left as they are.
    pub(crate) async fn fill_devices(&self, vm_id: &VmId, infos: &mut [VolumeInfo]) -> Result<()> {
        if let Some(root) = self.roots.get(vm_id.as_str()).cloned() {
            let devices = tokio::task::spawn_blocking(move || device::scan_all(&root))
                .await
                .map_err(|e| Error::internal(format!("device scan task: {e}")))?;
            for info in infos {
                let serial = cloudstack::volume_serial(&info.id);
                info.device = devices.iter().find(|d| d.serial == serial).map(|d| Device {
                    device_id: info.device_id,
                    ..d.clone()
                });
            }
        }
        Ok(())
    }

    /// Checks with CloudStack that `volume_id` is attached to the appliance and that no
    /// other volume there shares its serial; returns its device id.
    pub(crate) async fn attached(
        &self,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        otherwise: &str,
    ) -> Result<Option<i64>> {
        let serial = cloudstack::volume_serial(volume_id);
        let attached = volumes_of(self.client, appliance_vm_id).await?;
        // A serial is only the first 20 hex digits of the volume's UUID: two
        // volumes can share one, and then one path would name two disks.
        if let Some(other) = attached
            .iter()
            .find(|v| v.id != *volume_id && cloudstack::volume_serial(&v.id) == serial)
        {
            return Err(Error::DeviceConflict {
                detail: format!(
                    "volumes {volume_id} and {} on appliance {appliance_vm_id} share the serial {serial}, so one path would name both",
                    other.id
                ),
            });
        }
        match attached.iter().find(|v| v.id == *volume_id) {
            Some(ours) => Ok(ours.deviceid),
            None => Err(Error::conflict(format!(
                "volume {volume_id} is not attached to appliance {appliance_vm_id}; {otherwise}"
            ))),
        }
    }

    /// Runs a guest preparation: see [`crate::guest_prep`] for why it is never run
    /// twice for one key.
    pub(crate) async fn guest_prep(
        &self,
        journal: &dyn Journal,
        op: &OpRecord,
        origin: Origin,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        prep: &GuestPrep,
    ) -> Result<Value> {
        let root = self.root(appliance_vm_id)?.clone();
        let serial = cloudstack::volume_serial(volume_id);
        let expected_path = root
            .join(
                Device::path_of(&serial)
                    .strip_prefix("/")
                    .unwrap_or(Path::new("")),
            )
            .to_string_lossy()
            .into_owned();
        let failed = |device: &str, command: String, reason: String| -> Error {
            GuestPrepFailure {
                volume_id: volume_id.to_string(),
                device: device.to_string(),
                command,
                reason,
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            }
            .into()
        };
        if let Some(started) = &op.job_id {
            // Started by a daemon that is gone: it may have done any part of its work,
            // and may still be at it. What of it still runs here is killed first.
            let left = match guest_prep::kill_leftovers(&op.id).await {
                Ok(killed) if killed.is_empty() => "nothing of it was left running".to_string(),
                Ok(killed) => {
                    tracing::warn!(
                        ?killed,
                        "killed what an interrupted guest preparation left running"
                    );
                    format!("what of it was left running was killed (process ids {killed:?})")
                }
                Err(why) => format!("what of it may be left running was not looked for: {why}"),
            };
            return Err(failed(
                &expected_path,
                guest_prep::command_line(&prep.program, &prep.args_for(&expected_path)),
                format!(
                    "was interrupted: the volume daemon stopped while it ran ({started}); {left}. It is never run twice \
                     for one request: the disk may be partly changed, and is to be reverted to its snapshot"
                ),
            ));
        }
        if origin == Origin::Resumed {
            return Err(failed(
                &expected_path,
                guest_prep::command_line(&prep.program, &prep.args_for(&expected_path)),
                "was not run: the volume daemon restarted before it started, and it does not start a \
                 command that changes a disk when nobody is waiting for it"
                    .to_string(),
            ));
        }
        self.attached(
            appliance_vm_id,
            volume_id,
            "guest preparation runs only on a disk attached there",
        )
        .await?;
        let device = device::wait(
            &root,
            volume_id,
            &serial,
            Presence::Appears,
            GUEST_PREP_DEVICE_WAIT,
            self.poll,
        )
        .await?
        .ok_or_else(|| Error::internal("an appearing device was not returned"))?;
        let device_path = device.under(&root).to_string_lossy().into_owned();
        let args = prep.args_for(&device_path);
        let command = guest_prep::command_line(&prep.program, &args);
        // Recorded as started before it starts: from here on, it is never run again.
        journal
            .set_job(&op.id, &JobId::from("guest-prep:starting"), None)
            .await
            .map_err(Error::journal)?;
        let started = guest_prep::start(&prep.program, &args, &op.id)
            .map_err(|reason| failed(&device_path, command.clone(), reason))?;
        if let Some(pid) = started.pid() {
            let job = format!("guest-prep:pid:{pid}");
            tracing::Span::current().record("job_id", job.as_str());
            if let Err(e) = journal.set_job(&op.id, &JobId::from(&job), None).await {
                // It is recorded as started already; the pid is only for the operator.
                tracing::warn!(error = %chain(&e), "could not record the guest preparation's pid");
            }
        }
        tracing::info!(command, kernel_name = %device.kernel_name, timeout_secs = prep.timeout_secs, "guest preparation started");
        match started.finish(Duration::from_secs(prep.timeout_secs)).await {
            Ok(ran) => {
                tracing::info!(
                    command,
                    duration_ms = ran.duration.as_millis() as u64,
                    "guest preparation succeeded"
                );
                Ok(to_json(&GuestPrepOutcome {
                    appliance_vm_id: appliance_vm_id.clone(),
                    volume_id: volume_id.clone(),
                    device_path,
                    kernel_name: device.kernel_name,
                    command: std::iter::once(prep.program.clone()).chain(args).collect(),
                    exit_code: 0,
                    duration_ms: ran.duration.as_millis() as u64,
                    stdout_tail: ran.stdout_tail,
                    stderr_tail: ran.stderr_tail,
                }))
            }
            Err(f) => Err(GuestPrepFailure {
                volume_id: volume_id.to_string(),
                device: device_path,
                command,
                reason: f.reason,
                stdout_tail: f.stdout_tail,
                stderr_tail: f.stderr_tail,
            }
            .into()),
        }
    }
}
