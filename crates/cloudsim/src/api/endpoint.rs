//! `/client/api`: the command table, signature checks, the faults injected into calls,
//! and CloudStack's envelopes — `<command>response` around an answer, and around a
//! refusal its error code as the HTTP status with `errorcode`, `cserrorcode` and
//! `errortext` (the text also in `X-Description`). What each command does is in
//! `commands`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::commands::dispatch;
use crate::api::params::Params;
use crate::error::CsError;
use crate::faults::{FaultKind, Outage, OutageAnswer};
use crate::jobs::op::JobFault;
use crate::sim::Shared;

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
        "listPublicIpAddresses",
        "org.apache.cloudstack.api.command.user.address.ListPublicIpAddressesCmd",
    ),
    (
        "listPortForwardingRules",
        "org.apache.cloudstack.api.command.user.firewall.ListPortForwardingRulesCmd",
    ),
    (
        "listIpForwardingRules",
        "org.apache.cloudstack.api.command.user.nat.ListIpForwardingRulesCmd",
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
        "rebootVirtualMachine",
        "org.apache.cloudstack.api.command.admin.vm.RebootVMCmdByAdmin",
    ),
    (
        "destroyVirtualMachine",
        "org.apache.cloudstack.api.command.admin.vm.DestroyVMCmdByAdmin",
    ),
    (
        "recoverVirtualMachine",
        "org.apache.cloudstack.api.command.admin.vm.RecoverVMCmd",
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

pub async fn api_get(State(inner): State<Shared>, RawQuery(query): RawQuery) -> Response {
    handle(inner, Params::parse(query.as_deref(), b"")).await
}

pub async fn api_post(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    handle(inner, Params::parse(query.as_deref(), &body)).await
}

/// Marker carried by the unwind that drops a connection (see [`FaultKind::DropConnection`]).
struct DropConnection;

/// A call during an outage: the connection closed without an answer, or the load
/// balancer's 503.
fn unanswered(answer: OutageAnswer) -> Response {
    match answer {
        OutageAnswer::Reset => std::panic::resume_unwind(Box::new(DropConnection)),
        OutageAnswer::Http503 => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>503 Service Unavailable</h1>No server is available to handle this request.</body></html>",
        )
            .into_response(),
    }
}

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
    // A management server that is down neither counts nor checks a call.
    let outage = inner.faults.lock().expect("poisoned").outage();
    if let Some(outage) = outage {
        inner.stats.lock().expect("poisoned").count_unanswered();
        return unanswered(outage.answer);
    }
    inner.stats.lock().expect("poisoned").count_call(&counted);

    let fail = |e: CsError, with_cs_code: bool| {
        inner.stats.lock().expect("poisoned").count_error(&counted);
        error_response(&key, &e, with_cs_code)
    };
    if let Err(e) = crate::auth::verify(&params.pairs, &inner.world.credentials) {
        return fail(e, false);
    }
    // The account's API rate limit, checked before the command is looked at.
    if let Some(throttle) = &inner.throttle {
        let account = params.get("apikey").unwrap_or_default().to_string();
        let counted = throttle
            .lock()
            .expect("poisoned")
            .count(&account, std::time::Instant::now());
        if let Err(e) = counted {
            inner.stats.lock().expect("poisoned").count_throttled();
            return fail(e, true);
        }
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
        Some(FaultKind::Outage { seconds, answer }) => {
            inner
                .faults
                .lock()
                .expect("poisoned")
                .set_outage(Some(Outage::lasting(seconds, answer)));
            return unanswered(answer);
        }
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
            job_fault = Some(JobFault::Fail(CsError {
                code: errorcode,
                cs_code: 4250,
                text: errortext,
            }))
        }
        Some(FaultKind::ForgetJob) => job_fault = Some(JobFault::Forget),
        None => {}
    }

    let result = dispatch(&inner, command, class, &params, job_fault);
    // What the answer promises (a job id, a deleted volume) is kept before it is sent.
    if !(command.starts_with("list") || command.starts_with("query")) {
        crate::persist::save_now(&inner);
    }
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
