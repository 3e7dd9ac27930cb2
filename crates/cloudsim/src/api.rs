//! The HTTP surface: CloudStack's `/client/api`, and cloudsim's own `/sim/` admin
//! endpoints (faults, latency, settings, stats, volume contents).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Inner;
use crate::error::CsError;
use crate::faults::{FaultKind, FaultRule};
use crate::jobs::Op;
use crate::state::DeployRequest;

type Shared = Arc<Inner>;

pub fn router(inner: Shared) -> Router {
    Router::new()
        .route("/client/api", get(api_get).post(api_post))
        .route("/sim/stats", get(stats))
        .route(
            "/sim/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/sim/latency", post(set_latency))
        .route("/sim/settings", get(get_settings).post(set_settings))
        .route("/sim/volumes", get(volumes))
        .with_state(inner)
}

/// The commands cloudsim implements: lower-case name → (canonical name, Java class).
const COMMANDS: &[(&str, &str)] = &[
    (
        "listZones",
        "org.apache.cloudstack.api.command.user.zone.ListZonesCmd",
    ),
    (
        "listServiceOfferings",
        "org.apache.cloudstack.api.command.user.offering.ListServiceOfferingsCmd",
    ),
    (
        "listDiskOfferings",
        "org.apache.cloudstack.api.command.user.offering.ListDiskOfferingsCmd",
    ),
    (
        "listTemplates",
        "org.apache.cloudstack.api.command.user.template.ListTemplatesCmd",
    ),
    (
        "listNetworks",
        "org.apache.cloudstack.api.command.user.network.ListNetworksCmd",
    ),
    (
        "listVirtualMachines",
        "org.apache.cloudstack.api.command.user.vm.ListVMsCmd",
    ),
    (
        "deployVirtualMachine",
        "org.apache.cloudstack.api.command.admin.vm.DeployVMCmdByAdmin",
    ),
    (
        "startVirtualMachine",
        "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin",
    ),
    (
        "stopVirtualMachine",
        "org.apache.cloudstack.api.command.admin.vm.StopVMCmdByAdmin",
    ),
    (
        "destroyVirtualMachine",
        "org.apache.cloudstack.api.command.admin.vm.DestroyVMCmdByAdmin",
    ),
    (
        "listVolumes",
        "org.apache.cloudstack.api.command.user.volume.ListVolumesCmd",
    ),
    (
        "createVolume",
        "org.apache.cloudstack.api.command.admin.volume.CreateVolumeCmdByAdmin",
    ),
    (
        "attachVolume",
        "org.apache.cloudstack.api.command.admin.volume.AttachVolumeCmdByAdmin",
    ),
    (
        "detachVolume",
        "org.apache.cloudstack.api.command.admin.volume.DetachVolumeCmdByAdmin",
    ),
    (
        "deleteVolume",
        "org.apache.cloudstack.api.command.user.volume.DeleteVolumeCmd",
    ),
    (
        "createSnapshot",
        "org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd",
    ),
    (
        "listSnapshots",
        "org.apache.cloudstack.api.command.user.snapshot.ListSnapshotsCmd",
    ),
    (
        "revertSnapshot",
        "org.apache.cloudstack.api.command.user.snapshot.RevertSnapshotCmd",
    ),
    (
        "deleteSnapshot",
        "org.apache.cloudstack.api.command.user.snapshot.DeleteSnapshotCmd",
    ),
    (
        "queryAsyncJobResult",
        "org.apache.cloudstack.api.command.user.job.QueryAsyncJobResultCmd",
    ),
    (
        "listAsyncJobs",
        "org.apache.cloudstack.api.command.user.job.ListAsyncJobsCmd",
    ),
];

/// A request's decoded parameters, in order, with names as sent.
struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        pairs.extend(form_urlencoded::parse(body).into_owned());
        Params { pairs }
    }

    /// The value of `name`, matched case-insensitively as CloudStack does.
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, command: &str, name: &str) -> Result<&str, CsError> {
        self.get(name)
            .ok_or_else(|| CsError::missing(command, name))
    }

    fn bool(&self, name: &str, default: bool) -> bool {
        self.get(name)
            .map(|v| v.eq_ignore_ascii_case("true"))
            .unwrap_or(default)
    }

    /// A numeric parameter: a bad value is CloudStack's "invalid value" refusal.
    fn long(&self, command: &str, name: &str) -> Result<Option<i64>, CsError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| CsError::bad_id(command, name, v)),
        }
    }

    /// `map[i].key=value` parameters grouped by index: `details`, `iptonetworklist`.
    fn map(&self, prefix: &str) -> BTreeMap<u32, BTreeMap<String, String>> {
        let mut out: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let lower = k.to_lowercase();
            let Some(rest) = lower.strip_prefix(&format!("{prefix}[")) else {
                continue;
            };
            let Some((index, key)) = rest.split_once("].") else {
                continue;
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            // Keep the original spelling of the key (cpuNumber) for the details map.
            let original_key = &k[k.len() - key.len()..];
            out.entry(index)
                .or_default()
                .insert(original_key.to_string(), v.clone());
        }
        out
    }
}

/// Builds a CloudStack JSON response with CloudStack's content type.
fn respond(status: u16, body: Value) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=UTF-8"),
    );
    response
}

fn error_response(command_key: &str, e: &CsError, with_cs_code: bool) -> Response {
    let mut inner = json!({"uuidList": [], "errorcode": e.code, "errortext": e.text});
    if with_cs_code {
        inner["cserrorcode"] = json!(e.cs_code);
    }
    let mut body = serde_json::Map::new();
    body.insert(command_key.to_string(), inner);
    let mut response = respond(e.code, Value::Object(body));
    if let Ok(v) = HeaderValue::from_str(
        &e.text
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .collect::<String>(),
    ) {
        response.headers_mut().insert("X-Description", v);
    }
    response
}

async fn api_get(State(inner): State<Shared>, RawQuery(query): RawQuery) -> Response {
    handle(inner, Params::parse(query.as_deref(), b"")).await
}

async fn api_post(State(inner): State<Shared>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    handle(inner, Params::parse(query.as_deref(), &body)).await
}

/// Marker carried by the unwind that drops a connection (see [`FaultKind::DropConnection`]).
struct DropConnection;

async fn handle(inner: Shared, params: Params) -> Response {
    let given = params.get("command").unwrap_or_default().to_string();
    let known = COMMANDS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&given))
        .copied();
    let key = match known {
        Some((name, _)) => format!("{}response", name.to_lowercase()),
        None => "errorresponse".to_string(),
    };
    let counted = known
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| given.clone());
    *inner
        .stats
        .lock()
        .expect("poisoned")
        .calls
        .entry(counted.clone())
        .or_default() += 1;

    let fail = |e: CsError, with_cs_code: bool| {
        *inner
            .stats
            .lock()
            .expect("poisoned")
            .errors
            .entry(counted.clone())
            .or_default() += 1;
        error_response(&key, &e, with_cs_code)
    };
    if let Err(e) = crate::auth::verify(&params.pairs, &inner.world.credentials) {
        return fail(e, false);
    }
    let Some((command, class)) = known else {
        let e = CsError {
            code: 432,
            cs_code: 9999,
            text: format!("Unknown API command: {given}"),
        };
        return fail(e, true);
    };

    let fault = inner.faults.lock().expect("poisoned").on_call(command);
    let mut job_fault = None;
    let mut lose = false;
    match fault {
        Some(FaultKind::Transient530) => {
            return fail(
                CsError::internal(
                    "Internal error executing command, please contact your system administrator",
                ),
                true,
            );
        }
        Some(FaultKind::DropConnection) => {
            // Unwinding out of the handler ends hyper's connection task without a
            // response: the client sees the connection closed. `resume_unwind` does
            // not run the panic hook, so nothing is printed.
            std::panic::resume_unwind(Box::new(DropConnection));
        }
        Some(FaultKind::LoseResponse) => lose = true,
        Some(FaultKind::ApiError {
            errorcode,
            errortext,
        }) => {
            return fail(
                CsError {
                    code: errorcode,
                    cs_code: 9999,
                    text: errortext,
                },
                true,
            );
        }
        Some(FaultKind::JobError {
            errorcode,
            errortext,
        }) => {
            job_fault = Some(CsError {
                code: errorcode,
                cs_code: 4250,
                text: errortext,
            })
        }
        None => {}
    }

    let result = dispatch(&inner, command, class, &params, job_fault);
    let response = match result {
        Ok(body) => {
            let mut wrapper = serde_json::Map::new();
            wrapper.insert(key.clone(), body);
            respond(200, Value::Object(wrapper))
        }
        Err(e) => fail(e, true),
    };
    if lose {
        // The operation happened; the answer never comes.
        inner.shutdown.cancelled().await;
    }
    response
}

fn list_body(key: &str, items: Vec<Value>, params: &Params) -> Value {
    if items.is_empty() {
        return json!({});
    }
    let count = items.len();
    let page = params
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let size = params
        .get("pagesize")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(500)
        .max(1);
    let page_items: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    json!({ "count": count, key: page_items })
}

fn matches(filter: Option<&str>, value: &str) -> bool {
    filter.is_none_or(|f| f == value)
}

fn dispatch(
    inner: &Shared,
    command: &str,
    class: &str,
    p: &Params,
    fault: Option<CsError>,
) -> Result<Value, CsError> {
    let mut s = inner.state.lock().expect("poisoned");
    // ParamProcessWorker: ids that do not resolve are refused before anything runs.
    let vm_param = |s: &crate::state::State, name: &str| -> Result<String, CsError> {
        let id = p.require(command, name)?;
        s.vms
            .get(id)
            .map(|v| v.id.clone())
            .ok_or_else(|| CsError::bad_id(command, name, id))
    };
    let volume_param = |s: &crate::state::State, name: &str| -> Result<String, CsError> {
        let id = p.require(command, name)?;
        s.volumes
            .get(id)
            .map(|v| v.id.clone())
            .ok_or_else(|| CsError::bad_id(command, name, id))
    };
    let snapshot_param = |s: &crate::state::State, name: &str| -> Result<String, CsError> {
        let id = p.require(command, name)?;
        s.snapshots
            .get(id)
            .map(|v| v.id.clone())
            .ok_or_else(|| CsError::bad_id(command, name, id))
    };
    let zone_param = |s: &crate::state::State, name: &str| -> Result<String, CsError> {
        let id = p.require(command, name)?;
        s.zones
            .iter()
            .find(|z| z.id == id)
            .map(|z| z.id.clone())
            .ok_or_else(|| CsError::bad_id(command, name, id))
    };
    let async_job = |s: std::sync::MutexGuard<'_, crate::state::State>,
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
        "listZones" => {
            let items = s
                .zones
                .iter()
                .filter(|z| matches(p.get("id"), &z.id) && matches(p.get("name"), &z.name))
                .map(|z| json!({"id": z.id, "name": z.name, "networktype": "Advanced", "allocationstate": "Enabled", "securitygroupsenabled": false, "localstorageenabled": false, "tags": []}))
                .collect();
            Ok(list_body("zone", items, p))
        }
        "listServiceOfferings" => {
            let items = s
                .offerings
                .iter()
                .filter(|o| matches(p.get("id"), &o.id) && matches(p.get("name"), &o.def.name))
                .map(|o| s.offering_json(o))
                .collect();
            Ok(list_body("serviceoffering", items, p))
        }
        "listDiskOfferings" => {
            let items = s
                .disk_offerings
                .iter()
                .filter(|o| matches(p.get("id"), &o.id) && matches(p.get("name"), &o.name))
                .map(|o| json!({"id": o.id, "name": o.name, "displaytext": o.name, "disksize": o.size_gb, "iscustomized": o.size_gb == 0, "storagetype": "shared", "provisioningtype": "thin", "created": "2026-01-01T00:00:00+0000", "displayoffering": true}))
                .collect();
            Ok(list_body("diskoffering", items, p))
        }
        "listTemplates" => {
            p.require(command, "templatefilter")?;
            let zone = s.zones[0].clone();
            let items = s
                .templates
                .iter()
                .filter(|t| matches(p.get("id"), &t.id) && matches(p.get("zoneid"), &zone.id))
                .map(|t| json!({"id": t.id, "name": t.name, "displaytext": t.name, "isready": true, "ispublic": true, "isfeatured": true, "format": "QCOW2", "hypervisor": "KVM", "ostypename": t.os, "size": t.size, "zoneid": zone.id, "zonename": zone.name, "status": "Download Complete", "templatetype": "USER", "created": "2026-01-01T00:00:00+0000", "tags": []}))
                .collect();
            Ok(list_body("template", items, p))
        }
        "listNetworks" => {
            let items = s
                .networks
                .iter()
                .filter(|n| matches(p.get("id"), &n.id) && matches(p.get("zoneid"), &n.zone_id))
                .map(|n| s.network_json(n))
                .collect();
            Ok(list_body("network", items, p))
        }
        "listVirtualMachines" => {
            let mut vms: Vec<&crate::state::Vm> = s
                .vms
                .values()
                .filter(|v| {
                    matches(p.get("id"), &v.id)
                        && matches(p.get("zoneid"), &v.zone_id)
                        && p.get("name").is_none_or(|n| v.name.contains(n))
                        && p.get("state")
                            .is_none_or(|st| v.state.eq_ignore_ascii_case(st))
                })
                .collect();
            vms.sort_by_key(|v| v.seq);
            let items = vms.iter().map(|v| s.vm_json(&v.id)).collect();
            Ok(list_body("virtualmachine", items, p))
        }
        "listVolumes" => {
            let mut vols: Vec<&crate::state::Volume> = s
                .volumes
                .values()
                .filter(|v| {
                    matches(p.get("id"), &v.id)
                        && matches(p.get("zoneid"), &v.zone_id)
                        && p.get("virtualmachineid")
                            .is_none_or(|vm| v.vm_id.as_deref() == Some(vm))
                        && p.get("type").is_none_or(|t| v.kind.eq_ignore_ascii_case(t))
                        && p.get("name").is_none_or(|n| v.name.contains(n))
                })
                .collect();
            vols.sort_by_key(|v| v.seq);
            let items = vols.iter().map(|v| s.volume_json(&v.id)).collect();
            Ok(list_body("volume", items, p))
        }
        "listSnapshots" => {
            let mut snaps: Vec<&crate::state::Snapshot> = s
                .snapshots
                .values()
                .filter(|x| matches(p.get("id"), &x.id) && matches(p.get("volumeid"), &x.volume_id))
                .collect();
            snaps.sort_by_key(|x| x.seq);
            let items = snaps.iter().map(|x| s.snapshot_json(&x.id)).collect();
            Ok(list_body("snapshot", items, p))
        }
        "queryAsyncJobResult" => {
            let id = p.require(command, "jobid")?.to_string();
            let job = s
                .jobs
                .get_mut(&id)
                .ok_or_else(|| CsError::bad_id(command, "jobid", &id))?;
            job.polls += 1;
            Ok(s.job_json(&id))
        }
        "listAsyncJobs" => {
            let mut jobs: Vec<&crate::state::Job> = s.jobs.values().collect();
            jobs.sort_by_key(|j| j.seq);
            let items = jobs.iter().map(|j| s.job_json(&j.id)).collect();
            Ok(list_body("asyncjobs", items, p))
        }
        "deployVirtualMachine" => {
            let zone_id = zone_param(&s, "zoneid")?;
            let offering_id = p.require(command, "serviceofferingid")?;
            if !s.offerings.iter().any(|o| o.id == offering_id) {
                return Err(CsError::bad_id(command, "serviceofferingid", offering_id));
            }
            let template_id = p.require(command, "templateid")?;
            if !s.templates.iter().any(|t| t.id == template_id) {
                return Err(CsError::bad_id(command, "templateid", template_id));
            }
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
                offering_id: offering_id.to_string(),
                template_id: template_id.to_string(),
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
                Some(id) => Some(
                    s.disk_offerings
                        .iter()
                        .find(|o| o.id == id)
                        .map(|o| o.id.clone())
                        .ok_or_else(|| CsError::bad_id(command, "diskofferingid", id))?,
                ),
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

// ---- /sim admin endpoints ---------------------------------------------------------

async fn stats(State(inner): State<Shared>) -> Json<crate::jobs::Stats> {
    Json(inner.stats())
}

async fn list_faults(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.faults.lock().expect("poisoned").list()))
}

/// Takes one rule or a list of rules.
async fn add_faults(State(inner): State<Shared>, body: Bytes) -> Response {
    let rules: Result<Vec<FaultRule>, _> = serde_json::from_slice::<Vec<FaultRule>>(&body)
        .or_else(|_| serde_json::from_slice::<FaultRule>(&body).map(|r| vec![r]));
    let rules = rules
        .map_err(|e| format!("not a fault rule: {e}"))
        .and_then(|rules| match rules.iter().find_map(|r| r.check().err()) {
            Some(problem) => Err(format!("a fault rule that cannot fire: {problem}")),
            None => Ok(rules),
        });
    match rules {
        Ok(rules) => {
            let mut faults = inner.faults.lock().expect("poisoned");
            let n = rules.len();
            for rule in rules {
                faults.arm(rule);
            }
            (StatusCode::OK, Json(json!({"armed": n}))).into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": e })),
        )
            .into_response(),
    }
}

async fn clear_faults(State(inner): State<Shared>) -> StatusCode {
    inner.faults.lock().expect("poisoned").clear();
    StatusCode::NO_CONTENT
}

/// `{"attachVolume": 100, …}`: milliseconds before the time scale.
async fn set_latency(
    State(inner): State<Shared>,
    Json(body): Json<BTreeMap<String, u64>>,
) -> StatusCode {
    let mut latency = inner.latency_ms.lock().expect("poisoned");
    for (command, ms) in body {
        latency.insert(command.to_lowercase(), ms);
    }
    StatusCode::NO_CONTENT
}

async fn get_settings(State(inner): State<Shared>) -> Json<crate::world::Settings> {
    Json(inner.state.lock().expect("poisoned").settings.clone())
}

async fn set_settings(
    State(inner): State<Shared>,
    Json(settings): Json<crate::world::Settings>,
) -> StatusCode {
    inner.state.lock().expect("poisoned").settings = settings;
    StatusCode::NO_CONTENT
}

/// Every volume with its simulated content generation.
async fn volumes(State(inner): State<Shared>) -> Json<Value> {
    let s = inner.state.lock().expect("poisoned");
    let mut vols: Vec<&crate::state::Volume> = s.volumes.values().collect();
    vols.sort_by_key(|v| v.seq);
    Json(json!(
        vols.iter()
            .map(|v| json!({
                "id": v.id,
                "name": v.name,
                "type": v.kind,
                "state": v.state,
                "size": v.size,
                "virtualmachineid": v.vm_id,
                "deviceid": v.device_id,
                "generation": v.generation,
            }))
            .collect::<Vec<_>>()
    ))
}
