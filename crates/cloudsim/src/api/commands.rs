//! What each `/client/api` command does: its parameters resolved as CloudStack's
//! `ParamProcessWorker` does (an id that does not resolve is refused before anything
//! runs), then a list answered from the state, a synchronous command carried out, or
//! an async one's synchronous part (`*_create`) done and its job queued.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::lists;
use crate::api::params::Params;
use crate::error::CsError;
use crate::jobs::op::{JobFault, Op};
use crate::sim::Shared;
use crate::state::entities::{DeployRequest, State};

/// `ParamProcessWorker`: the id in parameter `name`, refused before anything runs when
/// it names no entity (`exists` says whether one has it).
fn resolve(
    p: &Params,
    command: &str,
    name: &str,
    exists: impl FnOnce(&str) -> bool,
) -> Result<String, CsError> {
    let id = p.require(command, name)?;
    if exists(id) {
        Ok(id.to_string())
    } else {
        Err(CsError::bad_id(command, name, id))
    }
}

pub fn dispatch(
    inner: &Shared,
    command: &str,
    class: &str,
    p: &Params,
    fault: Option<JobFault>,
) -> Result<Value, CsError> {
    let mut s = inner.state.lock().expect("poisoned");
    if lists::is_list(command) {
        return lists::answer(&s, command, p);
    }
    // ParamProcessWorker: ids that do not resolve are refused before anything runs.
    let vm_param = |s: &State, name: &str| resolve(p, command, name, |id| s.vms.contains_key(id));
    let volume_param =
        |s: &State, name: &str| resolve(p, command, name, |id| s.volumes.contains_key(id));
    let snapshot_param =
        |s: &State, name: &str| resolve(p, command, name, |id| s.snapshots.contains_key(id));
    let zone_param =
        |s: &State, name: &str| resolve(p, command, name, |id| s.zones.iter().any(|z| z.id == id));
    let async_job = |s: std::sync::MutexGuard<'_, State>,
                     instance: (&str, &str),
                     queue: String,
                     op: Op,
                     id: Option<&str>| {
        drop(s);
        let job_id = inner.submit(class, instance, queue, op, fault.clone());
        match id {
            Some(id) => json!({"id": id, "jobid": job_id}),
            None => json!({"jobid": job_id}),
        }
    };

    match command {
        "queryAsyncJobResult" => {
            let id = p.require(command, "jobid")?.to_string();
            let job = s
                .jobs
                .get_mut(&id)
                .ok_or_else(|| CsError::bad_id(command, "jobid", &id))?;
            job.polls += 1;
            Ok(s.job_json(&id))
        }
        "deployVirtualMachine" => {
            let zone_id = zone_param(&s, "zoneid")?;
            let offering_id = resolve(p, command, "serviceofferingid", |id| {
                s.offerings.iter().any(|o| o.id == id)
            })?;
            let template_id = resolve(p, command, "templateid", |id| {
                s.templates.iter().any(|t| t.id == id)
            })?;
            let ip_map = p.map("iptonetworklist");
            if !ip_map.is_empty() && (p.get("networkids").is_some() || p.get("ipaddress").is_some())
            {
                return Err(CsError::param(
                    "ipToNetworkMap can't be specified along with networkIds or ipAddress",
                ));
            }
            let mut nics = Vec::new();
            for entry in ip_map.values() {
                let get = |k: &str| {
                    entry
                        .iter()
                        .find(|(key, _)| key.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                let network = get("networkid")
                    .ok_or_else(|| CsError::param("iptonetworklist entry without networkid"))?;
                nics.push((network, get("ip"), get("mac")));
            }
            if let Some(ids) = p.get("networkids") {
                for (i, id) in ids.split(',').enumerate() {
                    let ip = if i == 0 {
                        p.get("ipaddress").map(str::to_string)
                    } else {
                        None
                    };
                    let mac = if i == 0 {
                        p.get("macaddress").map(str::to_string)
                    } else {
                        None
                    };
                    nics.push((id.trim().to_string(), ip, mac));
                }
            }
            let details: BTreeMap<String, String> =
                p.map("details").into_values().flatten().collect();
            let request = DeployRequest {
                zone_id,
                offering_id,
                template_id,
                name: p.get("name").map(str::to_string),
                display_name: p.get("displayname").map(str::to_string),
                details,
                boot_type: p.get("boottype").map(str::to_string),
                boot_mode: p.get("bootmode").map(str::to_string),
                nics,
            };
            let vm_id = s.deploy_create(&request)?;
            let start = p.bool("startvm", true);
            let queue = format!("vm:{vm_id}");
            Ok(async_job(
                s,
                ("VirtualMachine", &vm_id),
                queue,
                Op::Deploy {
                    vm_id: vm_id.clone(),
                    start,
                },
                Some(&vm_id),
            ))
        }
        "startVirtualMachine" => {
            let vm_id = vm_param(&s, "id")?;
            Ok(async_job(
                s,
                ("VirtualMachine", &vm_id),
                format!("vm:{vm_id}"),
                Op::Start {
                    vm_id: vm_id.clone(),
                },
                None,
            ))
        }
        "stopVirtualMachine" => {
            let vm_id = vm_param(&s, "id")?;
            Ok(async_job(
                s,
                ("VirtualMachine", &vm_id),
                format!("vm:{vm_id}"),
                Op::Stop {
                    vm_id: vm_id.clone(),
                },
                None,
            ))
        }
        "rebootVirtualMachine" => {
            let vm_id = vm_param(&s, "id")?;
            Ok(async_job(
                s,
                ("VirtualMachine", &vm_id),
                format!("vm:{vm_id}"),
                Op::Reboot {
                    vm_id: vm_id.clone(),
                },
                None,
            ))
        }
        "destroyVirtualMachine" => {
            let vm_id = vm_param(&s, "id")?;
            let expunge = p.bool("expunge", false);
            Ok(async_job(
                s,
                ("VirtualMachine", &vm_id),
                format!("vm:{vm_id}"),
                Op::Destroy {
                    vm_id: vm_id.clone(),
                    expunge,
                },
                None,
            ))
        }
        "recoverVirtualMachine" => {
            let vm_id = vm_param(&s, "id")?;
            s.recover_vm(&vm_id)
        }
        "attachVolume" => {
            let volume_id = volume_param(&s, "id")?;
            let vm_id = vm_param(&s, "virtualmachineid")?;
            let device_id = p.long(command, "deviceid")?;
            let op = Op::Attach {
                volume_id: volume_id.clone(),
                vm_id: vm_id.clone(),
                device_id,
            };
            Ok(async_job(
                s,
                ("Volume", &volume_id),
                format!("vm:{vm_id}"),
                op,
                None,
            ))
        }
        "detachVolume" => {
            let by_id = p.get("id").is_some();
            let by_vm = p.get("virtualmachineid").is_some() || p.get("deviceid").is_some();
            if by_id == by_vm
                || (!by_id && (p.get("virtualmachineid").is_none() || p.get("deviceid").is_none()))
            {
                return Err(CsError::param(
                    "Please provide either a volume id, or a tuple(device id, instance id)",
                ));
            }
            let volume_id = if by_id {
                volume_param(&s, "id")?
            } else {
                let vm_id = vm_param(&s, "virtualmachineid")?;
                let device = p.long(command, "deviceid")?;
                s.volumes
                    .values()
                    .find(|v| v.vm_id.as_deref() == Some(vm_id.as_str()) && v.device_id == device)
                    .map(|v| v.id.clone())
                    .ok_or_else(|| CsError::internal("Index 0 out of bounds for length 0"))?
            };
            let queue = s.volume_queue(&volume_id);
            Ok(async_job(
                s,
                ("Volume", &volume_id),
                queue,
                Op::Detach {
                    volume_id: volume_id.clone(),
                },
                None,
            ))
        }
        "deleteVolume" => {
            let volume_id = volume_param(&s, "id")?;
            s.delete_volume(&volume_id)?;
            Ok(json!({"success": true}))
        }
        "createVolume" => {
            let name = p.get("name").map(str::to_string);
            let snapshot_id = match p.get("snapshotid") {
                Some(_) => Some(snapshot_param(&s, "snapshotid")?),
                None => None,
            };
            let disk_offering_id = match p.get("diskofferingid") {
                Some(_) => Some(resolve(p, command, "diskofferingid", |id| {
                    s.disk_offerings.iter().any(|o| o.id == id)
                })?),
                None => None,
            };
            let zone_id = match (p.get("zoneid"), &snapshot_id) {
                (Some(_), _) => zone_param(&s, "zoneid")?,
                (None, Some(snap)) => s.snapshots[snap].zone_id.clone(),
                (None, None) => return Err(CsError::missing(command, "zoneid")),
            };
            let size = p.long(command, "size")?;
            let name = name.unwrap_or_else(|| format!("volume-{}", s.volumes.len() + 1));
            let volume_id = s.volume_create(
                &name,
                &zone_id,
                snapshot_id.as_deref(),
                disk_offering_id.as_deref(),
                size,
            )?;
            let op = Op::CreateVolume {
                volume_id: volume_id.clone(),
                from_snapshot: snapshot_id.is_some(),
            };
            Ok(async_job(
                s,
                ("Volume", &volume_id),
                format!("volume:{volume_id}"),
                op,
                Some(&volume_id),
            ))
        }
        "createSnapshot" => {
            let volume_id = volume_param(&s, "volumeid")?;
            let snapshot_id = s.snapshot_create(&volume_id, p.get("name"))?;
            let queue = s.volume_queue(&volume_id);
            let op = Op::CreateSnapshot {
                snapshot_id: snapshot_id.clone(),
            };
            Ok(async_job(
                s,
                ("Snapshot", &snapshot_id),
                queue,
                op,
                Some(&snapshot_id),
            ))
        }
        "revertSnapshot" => {
            let snapshot_id = snapshot_param(&s, "id")?;
            let volume_id = s.snapshots[&snapshot_id].volume_id.clone();
            let queue = s.volume_queue(&volume_id);
            let op = Op::RevertSnapshot {
                snapshot_id: snapshot_id.clone(),
            };
            Ok(async_job(s, ("Snapshot", &snapshot_id), queue, op, None))
        }
        "deleteSnapshot" => {
            let snapshot_id = snapshot_param(&s, "id")?;
            let op = Op::DeleteSnapshot {
                snapshot_id: snapshot_id.clone(),
            };
            Ok(async_job(
                s,
                ("Snapshot", &snapshot_id),
                format!("snapshot:{snapshot_id}"),
                op,
                None,
            ))
        }
        other => unreachable!("command table and dispatch disagree on {other}"),
    }
}
