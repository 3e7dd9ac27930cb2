//! Ensures that several workflows share: each looks at CloudStack first and acts only
//! if the world is not already as wanted.

use engine::{StepContext, StepError};
use serde::{Deserialize, Serialize};
use volumed::Presence;

use crate::env::{Env, call, cloud_error, store_error, volume_error};
use crate::plan::DevicePlan;

/// What a test failover run carries (stored as the run's plan).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInput {
    /// The target VM's name (`<name>-test-<timestamp>`).
    pub target_name: String,
    pub plan: DevicePlan,
    /// For a cleanup: the test failover run it cleans up after.
    #[serde(default)]
    pub test_run_id: Option<String>,
}

pub(crate) fn input(cx: &StepContext<'_, Env>) -> Result<RunInput, StepError> {
    let text = cx
        .run
        .plan
        .as_deref()
        .ok_or_else(|| StepError::Definitive("the run has no stored plan".into()))?;
    serde_json::from_str(text)
        .map_err(|e| StepError::Definitive(format!("the run's stored plan: {e}")))
}

pub(crate) async fn protected_vm(
    cx: &StepContext<'_, Env>,
) -> Result<store::ProtectedVm, StepError> {
    cx.ctx
        .store
        .vm_by_id(&cx.run.vm_id)
        .await
        .map_err(|e| store_error("reading the protected VM", e))?
        .ok_or_else(|| {
            StepError::Definitive(format!(
                "protected VM {} is no longer registered",
                cx.run.vm_id
            ))
        })
}

pub(crate) async fn appliance_vm_id(
    cx: &StepContext<'_, Env>,
    vm: &store::ProtectedVm,
) -> Result<String, StepError> {
    Ok(cx
        .ctx
        .store
        .appliance(&vm.appliance)
        .await
        .map_err(|e| store_error("reading the appliance", e))?
        .ok_or_else(|| {
            StepError::Definitive(format!("appliance {} is not configured", vm.appliance))
        })?
        .vm_id)
}

/// The target VM with exactly this name, if CloudStack has it (its `name` filter
/// matches substrings).
pub(crate) async fn find_vm(
    env: &Env,
    name: &str,
) -> Result<Option<cloudstack::VirtualMachine>, StepError> {
    let filter = cloudstack::VmFilter {
        name: Some(name.to_string()),
        ..Default::default()
    };
    Ok(env
        .cloud
        .list_virtual_machines(&filter)
        .await
        .map_err(|e| cloud_error("listing VMs", e))?
        .into_iter()
        .find(|v| v.name == name && v.state != "Destroyed" && v.state != "Expunging"))
}

/// Ensures the VM is stopped (forced: a test VM's guest state is thrown away).
pub(crate) async fn ensure_stopped(
    env: &Env,
    vm: &cloudstack::VirtualMachine,
) -> Result<(), StepError> {
    if vm.state == "Stopped" {
        return Ok(());
    }
    let job = env
        .cloud
        .stop_virtual_machine(&vm.id, true)
        .await
        .map_err(|e| cloud_error("stopping the target VM", e))?;
    env.cloud
        .wait(&job)
        .await
        .map_err(|e| cloud_error("stopping the target VM", e))?;
    Ok(())
}

/// Ensures a replica volume is attached to its appliance and seen there: detached from
/// wherever else it is (the target VM, stopped first if it holds it as ROOT), attached
/// to the appliance, its device path found and recorded.
pub(crate) async fn ensure_on_appliance(
    cx: &StepContext<'_, Env>,
    step: &str,
    volume_id: &str,
    appliance_vm_id: &str,
) -> Result<(), StepError> {
    let env = cx.ctx;
    let volume = env
        .cloud
        .get_volume(volume_id)
        .await
        .map_err(|e| cloud_error("looking up a replica volume", e))?
        .ok_or_else(|| {
            StepError::Definitive(format!(
                "replica volume {volume_id} no longer exists in CloudStack"
            ))
        })?;
    let device_id = match volume.virtualmachineid.as_deref() {
        Some(vm) if vm == appliance_vm_id => volume.deviceid,
        other => {
            if let Some(holder) = other {
                if volume.deviceid == Some(0)
                    && let Some(vm) = env
                        .cloud
                        .get_virtual_machine(holder)
                        .await
                        .map_err(|e| cloud_error("looking up the VM holding a replica", e))?
                {
                    ensure_stopped(env, &vm).await?;
                }
                env.volumes
                    .detach(
                        &call(cx, step, &format!("detach/{volume_id}/{holder}")),
                        volume_id,
                    )
                    .await
                    .map_err(|e| volume_error("detaching a replica", e))?;
            }
            let attached = env
                .volumes
                .attach(
                    &call(cx, step, &format!("attach/{volume_id}/{appliance_vm_id}")),
                    volume_id,
                    appliance_vm_id,
                    None,
                )
                .await
                .map_err(|e| volume_error("attaching a replica to the appliance", e))?;
            attached.device_id
        }
    };
    let device = env
        .volumes
        .wait_device(
            appliance_vm_id,
            volume_id,
            Presence::Appears,
            env.device_timeout,
        )
        .await
        .map_err(|e| volume_error("waiting for the replica's disk in the appliance", e))?;
    env.store
        .record_attachment(
            volume_id,
            &store::Attachment {
                vm_id: Some(appliance_vm_id.to_string()),
                device_id,
                device_path: device.map(|d| d.path.display().to_string()),
                seen_at: None,
            },
        )
        .await
        .map_err(|e| store_error("recording the replica's attachment", e))?;
    Ok(())
}

/// Refuses to destroy a VM that still holds a replica volume: expunging a VM deletes
/// whatever volume is its ROOT.
pub(crate) async fn destroy_vm_without_replicas(
    env: &Env,
    vm: &cloudstack::VirtualMachine,
) -> Result<(), StepError> {
    let on_vm = env
        .volumes
        .list_vm_volumes(&vm.id)
        .await
        .map_err(|e| volume_error("listing the target VM's volumes", e))?;
    for v in &on_vm {
        if env
            .store
            .is_replica(&v.id)
            .await
            .map_err(|e| store_error("checking for replica volumes", e))?
        {
            return Err(StepError::Definitive(format!(
                "refusing to destroy VM {} ({}): replica volume {} is still attached at device {:?} and would be deleted with it",
                vm.name, vm.id, v.id, v.device_id
            )));
        }
    }
    let job = env
        .cloud
        .destroy_virtual_machine(&vm.id, true)
        .await
        .map_err(|e| cloud_error("destroying the target VM", e))?;
    env.cloud
        .wait(&job)
        .await
        .map_err(|e| cloud_error("destroying the target VM", e))?;
    Ok(())
}
