//! A failed-over VM's readiness, asked of CloudStack: the gates of a plan
//! ([`readiness`]) with the VM's state and its NIC addresses read through ferry's
//! CloudStack client. The one place the plans crate reads CloudStack; it changes
//! nothing there.

use std::net::IpAddr;

use cloudstack::Client;
use ids::{RunId, VmId};
use readiness::{FailoverKind, GateSpec, Readiness, RunningState, Subject, VmState};
use tokio_util::sync::CancellationToken;

/// Why a VM's readiness could not be checked at all (a gate that does not pass is a
/// [`Readiness`] that is not ready, not this).
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("the gates are not valid: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    Gates(Vec<readiness::Problem>),
    #[error("cannot read VM {vm_id} in CloudStack: {source}")]
    CloudStack {
        vm_id: VmId,
        #[source]
        source: cloudstack::Error,
    },
    #[error("CloudStack has no VM {0}")]
    NoVm(VmId),
}

/// The `running` gate's question, over ferry's client; its first answer is the VM as
/// just read to find its addresses (no second read for the same thing).
struct CloudVm<'a> {
    client: &'a Client,
    vm_id: &'a VmId,
    first: std::sync::Mutex<Option<RunningState>>,
}

#[async_trait::async_trait]
impl VmState for CloudVm<'_> {
    async fn is_running(&self) -> Result<RunningState, String> {
        if let Some(first) = self.first.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(first);
        }
        match self.client.get_virtual_machine(self.vm_id).await {
            Ok(Some(vm)) => Ok(RunningState {
                running: vm.state == "Running",
                state: vm.state,
            }),
            Ok(None) => Err(format!("CloudStack has no VM {}", self.vm_id)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The VM's NIC addresses as CloudStack lists them (`listVirtualMachines`
/// `nic[].ipaddress`), in NIC order; ones that are not IP addresses are left out.
pub fn addresses(vm: &cloudstack::VirtualMachine) -> Vec<IpAddr> {
    vm.nic
        .iter()
        .filter_map(|n| n.ipaddress.as_deref())
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// [`check`] of the VM named exactly `name` (a failover's target, as its run recorded
/// it).
pub async fn check_named(
    client: &Client,
    name: &str,
    gates: &[GateSpec],
    run_id: &RunId,
    kind: FailoverKind,
    cancel: &CancellationToken,
) -> Result<Readiness, ReadyError> {
    let vm = client
        .live_virtual_machine_named(name)
        .await
        .map_err(|source| ReadyError::CloudStack {
            vm_id: VmId::from(name),
            source,
        })?
        .ok_or_else(|| ReadyError::NoVm(VmId::from(name)))?;
    check_vm(client, &vm, gates, run_id, kind, cancel).await
}

/// Waits until CloudStack's VM `vm_id` passes `gates` (in order, each to its deadline)
/// or one does not; the outcome says what each gate saw.
pub async fn check(
    client: &Client,
    vm_id: &VmId,
    gates: &[GateSpec],
    run_id: &RunId,
    kind: FailoverKind,
    cancel: &CancellationToken,
) -> Result<Readiness, ReadyError> {
    let vm = client
        .get_virtual_machine(vm_id)
        .await
        .map_err(|source| ReadyError::CloudStack {
            vm_id: vm_id.clone(),
            source,
        })?
        .ok_or_else(|| ReadyError::NoVm(vm_id.clone()))?;
    check_vm(client, &vm, gates, run_id, kind, cancel).await
}

/// [`check`] of `vm` as just read from CloudStack.
async fn check_vm(
    client: &Client,
    vm: &cloudstack::VirtualMachine,
    gates: &[GateSpec],
    run_id: &RunId,
    kind: FailoverKind,
    cancel: &CancellationToken,
) -> Result<Readiness, ReadyError> {
    let gates = readiness::to_gates(gates, "gates").map_err(ReadyError::Gates)?;
    let subject = Subject {
        vm_name: vm.name.clone(),
        addresses: addresses(vm),
        run_id: run_id.clone(),
        kind,
    };
    let state = CloudVm {
        client,
        vm_id: &vm.id,
        first: std::sync::Mutex::new(Some(RunningState {
            running: vm.state == "Running",
            state: vm.state.clone(),
        })),
    };
    Ok(readiness::wait_ready(&gates, &subject, &state, cancel).await)
}
