//! The appliances as an operator needs to see them: `GET /v1/appliances` and
//! `GET /v1/appliances/{name}`, and the same figures on `/metrics`.
//!
//! For each appliance: its volume agent (or the in-process daemon) — reachable or
//! not, its version, API revision and journal backlog, the disks it sees — the
//! replicas registered on it (from the store), and the data-volume slots CloudStack
//! still has free on it (CloudStack's limit minus the data volumes CloudStack shows
//! attached to the appliance VM now, read by the engine itself so that it is known
//! also when the agent is down). Every agent is asked at once, each for at most
//! [`AGENT_TIMEOUT`], so one dead agent does not slow the list.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// How long one agent is given to say how it is.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// An appliance, its agent and its room.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplianceView {
    pub name: String,
    /// Its CloudStack VM id.
    pub vm_id: String,
    pub zone_id: String,
    /// Its volume agent's URL; `null`: served by the in-process daemon of `ferry serve`.
    pub agent_url: Option<String>,
    /// Whether its volume daemon answered (within 5 s).
    pub reachable: bool,
    /// Why it did not answer, or why CloudStack could not be read, in words (never a
    /// secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The daemon's ferry version and agent API revision.
    pub version: Option<String>,
    pub api_revision: Option<u32>,
    /// Operations in the daemon's journal not finished yet.
    pub backlog: Option<u64>,
    /// Disks the daemon sees on the appliance (`/sys/block/*/serial`).
    pub devices: Option<u64>,
    /// Replica volumes registered on it (the disks of its protected VMs).
    pub replicas: u64,
    /// Protected VMs registered on it.
    pub vms: u64,
    /// CloudStack's limit of data volumes on one (KVM) VM.
    pub data_volume_limit: u64,
    /// Data volumes CloudStack shows attached to the appliance VM now; `null` when
    /// CloudStack could not be read.
    pub data_volumes_attached: Option<u64>,
    /// `data_volume_limit` − `data_volumes_attached`.
    pub free_slots: Option<u64>,
}

/// Every configured appliance, by name.
pub async fn list(state: &AppState) -> Result<Vec<ApplianceView>, ApiError> {
    let appliances = state.env.store.appliances().await?;
    let vms = state.env.store.vms().await?;
    let views = appliances.iter().map(|a| view(state, a, &vms));
    let mut out = futures::future::join_all(views).await;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One appliance, or 404.
pub async fn show(state: &AppState, name: &str) -> Result<ApplianceView, ApiError> {
    let Some(appliance) = state.env.store.appliance(name).await? else {
        return Err(ApiError::NotFound(format!(
            "no appliance named `{name}`: `ferry appliance list` shows them (they come from \
             the [[appliances]] of ferry serve's config)"
        )));
    };
    let vms = state.env.store.vms().await?;
    Ok(view(state, &appliance, &vms).await)
}

async fn view(state: &AppState, a: &store::Appliance, vms: &[store::ProtectedVm]) -> ApplianceView {
    let daemon = state.env.volumes_of(&a.name);
    let on_appliance = cloudstack::VolumeFilter {
        virtual_machine_id: Some(a.vm_id.clone()),
        ..cloudstack::VolumeFilter::default()
    };
    let (status, attached) = tokio::join!(
        tokio::time::timeout(AGENT_TIMEOUT, daemon.status()),
        tokio::time::timeout(AGENT_TIMEOUT, state.env.cloud.list_volumes(&on_appliance)),
    );
    let (status, error) = match status {
        Ok(Ok(status)) => (Some(status), None),
        Ok(Err(e)) => (None, Some(e.without_api_advice())),
        Err(_) => (
            None,
            Some(format!("no answer within {} s", AGENT_TIMEOUT.as_secs())),
        ),
    };
    let seen = status.as_ref().and_then(|s| {
        s.appliances
            .iter()
            .find(|seen| seen.vm_id == a.vm_id)
            .and_then(|seen| seen.devices)
    });
    let on_it: Vec<&store::ProtectedVm> = vms.iter().filter(|v| v.appliance == a.name).collect();
    let limit = workflows::plan::KVM_MAX_DATA_DISKS as u64;
    let (data_volumes_attached, cloudstack_error) = match attached {
        Ok(Ok(volumes)) => (
            Some(volumes.iter().filter(|v| v.volume_type != "ROOT").count() as u64),
            None,
        ),
        Ok(Err(e)) => (None, Some(format!("CloudStack: {e}"))),
        Err(_) => (
            None,
            Some(format!(
                "CloudStack did not answer within {} s",
                AGENT_TIMEOUT.as_secs()
            )),
        ),
    };
    // Both reasons, when both failed.
    let error = match (error, cloudstack_error) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    ApplianceView {
        name: a.name.clone(),
        vm_id: a.vm_id.to_string(),
        zone_id: a.zone_id.to_string(),
        agent_url: a.volumed_url.clone(),
        reachable: status.is_some(),
        error,
        version: status.as_ref().map(|s| s.version.clone()),
        api_revision: status.as_ref().map(|s| s.api_revision),
        backlog: status.as_ref().map(|s| s.backlog),
        devices: seen,
        replicas: on_it.iter().map(|v| v.disks.len() as u64).sum(),
        vms: on_it.len() as u64,
        data_volume_limit: limit,
        data_volumes_attached,
        free_slots: data_volumes_attached.map(|n| limit.saturating_sub(n)),
    }
}

/// Sets the per-appliance gauges of `/metrics` from `views`.
pub fn gauges(views: &[ApplianceView]) {
    for v in views {
        let labels = [("appliance", v.name.clone())];
        metrics::gauge!("ferry_appliance_agent_up", &labels).set(f64::from(u8::from(v.reachable)));
        metrics::gauge!("ferry_appliance_replicas", &labels).set(v.replicas as f64);
        for (name, value) in [
            ("ferry_appliance_agent_backlog", v.backlog),
            ("ferry_appliance_devices", v.devices),
            ("ferry_appliance_free_slots", v.free_slots),
        ] {
            // An unknown figure is NaN, never a stale value or a made-up 0.
            metrics::gauge!(name, &labels).set(value.map_or(f64::NAN, |v| v as f64));
        }
    }
}
