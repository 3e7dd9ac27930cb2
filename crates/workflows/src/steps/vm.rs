//! The target VM: created stopped with the whole spec (and found again by name, so a
//! resumed run never deploys twice), its placeholder ROOT removed, started, stopped,
//! destroyed — never while it holds a replica.

use async_trait::async_trait;
use engine::{Output, StepError, TypedStep};
use ids::VolumeId;
use ids::{NetworkId, VmId};
use serde::{Deserialize, Serialize};

use crate::drift::recover_destroyed_target;
use crate::ensure::{
    destroy_vm_without_replicas, ensure_stopped, event, find_target, find_vm, live_vm, needs,
};
use crate::env::{
    Cx, Env, InFlight, call, cloud_error, job_in_flight, pending_job, record_job, store_error,
    volume_error,
};
use crate::jobs::Queue::Target;
use crate::jobs::Times::Once;
use crate::jobs::{Job, WorkflowStep, job};
use crate::run::{Mode, input, protected_vm};
use crate::steps::clones::is_run_clone;

/// Which of its NICs' networks a failover puts the target VM on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Network {
    /// A test failover: the isolated test networks.
    Test,
    /// A live failover: the production networks (and production IPs).
    Production,
}

impl Network {
    pub(crate) fn network_id(self, nic: &store::Nic) -> &NetworkId {
        match self {
            Network::Test => &nic.test_network_id,
            Network::Production => &nic.production_network_id,
        }
    }

    pub(crate) fn ip(self, nic: &store::Nic) -> Option<String> {
        match self {
            Network::Test => nic.test_ip.clone(),
            Network::Production => nic.production_ip.clone(),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Network::Test => "test",
            Network::Production => "production",
        }
    }

    /// The kind of failover, as the target VM's display name tells it.
    pub(crate) fn failover(self) -> &'static str {
        match self {
            Network::Test => "test failover",
            Network::Production => "live failover",
        }
    }
}

/// Creates the target VM stopped, with the whole spec, on the networks of its kind of
/// failover.
pub(crate) struct CreateVm(pub(crate) Network);

/// The target VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CreatedVm {
    pub vm_id: VmId,
    pub name: String,
}

pub(crate) const CREATE_VM: Output<CreatedVm> = Output::new("create-vm");

/// The target VM's id, as the run's create-vm step recorded it.
pub(crate) fn target_vm_id(cx: &Cx<'_>) -> Result<VmId, StepError> {
    Ok(cx.lookup(CREATE_VM)?.vm_id)
}

#[async_trait]
impl TypedStep<Env> for CreateVm {
    type Output = CreatedVm;

    fn output(&self) -> Output<CreatedVm> {
        CREATE_VM
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let vm = protected_vm(cx).await?;
        // A deploy this step submitted before a crash: wait for it to finish first.
        if let Some(job) =
            pending_job::<cloudstack::VirtualMachine>(cx, "deployVirtualMachine", None).await?
        {
            env.cloud
                .wait(&job)
                .await
                .map_err(|e| cloud_error("deploying the target VM", e))?;
        }
        let target = match find_vm(env, &input.target_name).await? {
            Some(existing) => existing,
            None => {
                let request = cloudstack::DeployVm {
                    zone_id: env.target.zone_id.clone(),
                    service_offering_id: env.target.service_offering_id.clone(),
                    template_id: env.target.template_id.clone(),
                    name: Some(input.target_name.clone()),
                    display_name: Some(format!("{} (ferry {})", vm.name, self.0.failover())),
                    cpu_number: Some(vm.spec.vcpu),
                    cpu_speed: Some(vm.spec.cpu_speed_mhz),
                    memory_mb: Some(vm.spec.memory_mb),
                    firmware: Some(match vm.spec.firmware {
                        store::Firmware::Bios => cloudstack::Firmware::Bios,
                        store::Firmware::Uefi => cloudstack::Firmware::Uefi {
                            secure: vm.spec.secure_boot,
                        },
                    }),
                    nics: vm
                        .nics
                        .iter()
                        .map(|n| cloudstack::NicRequest {
                            network_id: self.0.network_id(n).clone(),
                            ip: self.0.ip(n),
                            mac: Some(n.mac.clone()),
                        })
                        .collect(),
                    start: false,
                };
                let job = env
                    .cloud
                    .deploy_virtual_machine(&request)
                    .await
                    .map_err(|e| cloud_error("deploying the target VM", e))?;
                record_job(cx, &job, None).await;
                env.cloud
                    .wait(&job)
                    .await
                    .map_err(|e| cloud_error("deploying the target VM", e))?
            }
        };
        // The template's placeholder ROOT is ferry's to delete.
        for v in env
            .volumes
            .list_vm_volumes(&target.id)
            .await
            .map_err(|e| volume_error("listing the target VM's volumes", e))?
        {
            let replica = env
                .store
                .is_replica(&v.id)
                .await
                .map_err(|e| store_error("checking", e))?;
            if v.device_id == Some(0) && !replica {
                env.store
                    .record_created_volume(&v.id, "placeholder-root", None, Some(&cx.run.id))
                    .await
                    .map_err(|e| store_error("recording the placeholder ROOT", e))?;
            }
        }
        Ok(CreatedVm {
            vm_id: target.id,
            name: target.name,
        })
    }

    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        if let Some(target) = find_target(cx).await? {
            destroy_vm_without_replicas(cx, &target).await?;
        }
        Ok(())
    }
}

impl WorkflowStep for CreateVm {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("deployVirtualMachine", Once, Target)]
    }
}

/// Removes the placeholder ROOT volume the template gave the target VM.
pub(crate) struct RemovePlaceholderRoot;

/// The placeholder ROOT volumes removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Removed {
    pub removed: Vec<VolumeId>,
}

pub(crate) const REMOVE_PLACEHOLDER_ROOT: Output<Removed> = Output::new("remove-placeholder-root");

#[async_trait]
impl TypedStep<Env> for RemovePlaceholderRoot {
    type Output = Removed;

    fn output(&self) -> Output<Removed> {
        REMOVE_PLACEHOLDER_ROOT
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let target = target_vm_id(cx)?;
        // The placeholder is whatever non-replica volume sits at device 0 — and, for a
        // run resumed after it was detached but before it was deleted, the volume
        // create-vm recorded as this run's placeholder, wherever it is now.
        let mut placeholders: Vec<(VolumeId, bool)> = Vec::new();
        for v in env
            .volumes
            .list_vm_volumes(&target)
            .await
            .map_err(|e| volume_error("listing the target VM's volumes", e))?
        {
            if v.device_id != Some(0) {
                continue;
            }
            if env
                .store
                .is_replica(&v.id)
                .await
                .map_err(|e| store_error("checking", e))?
            {
                continue; // Already the boot replica (a resumed run).
            }
            if is_run_clone(cx, &v.id) {
                continue; // Already the boot clone (clone mode, a resumed run).
            }
            placeholders.push((v.id, true));
        }
        for id in env
            .store
            .run_created_volumes(&cx.run.id, "placeholder-root")
            .await
            .map_err(|e| store_error("listing the run's placeholder ROOT", e))?
        {
            if !placeholders.iter().any(|(p, _)| *p == id) {
                placeholders.push((id, false));
            }
        }
        let mut removed = Vec::new();
        for (id, attached) in placeholders {
            if attached {
                // Just listed on the target VM.
                let key = call(cx, "remove-placeholder-root", format!("detach/{id}"))
                    .seeing(&id, Some(&target));
                env.volumes
                    .detach(&key, &id)
                    .await
                    .map_err(|e| volume_error("detaching the placeholder ROOT", e))?;
            }
            env.volumes
                .delete_volume(
                    &call(cx, "remove-placeholder-root", format!("delete/{id}")),
                    &id,
                )
                .await
                .map_err(|e| volume_error("deleting the placeholder ROOT", e))?;
            removed.push(id);
        }
        Ok(Removed { removed })
    }

    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        // A placeholder still on the VM goes with it (create-vm's undo destroys the VM
        // and its ROOT). One this step detached and did not get to delete — its delete
        // failed, or the run stopped in between — is no longer the VM's: delete it.
        let env = cx.ctx;
        for id in env
            .store
            .run_created_volumes(&cx.run.id, "placeholder-root")
            .await
            .map_err(|e| store_error("listing the run's placeholder ROOT", e))?
        {
            let Some(volume) = env
                .cloud
                .get_volume(&id)
                .await
                .map_err(|e| cloud_error("looking up the placeholder ROOT", e))?
            else {
                continue;
            };
            if volume.virtualmachineid.is_some() {
                continue;
            }
            env.volumes
                .delete_volume(
                    &call(cx, "undo-remove-placeholder-root", format!("delete/{id}")),
                    &id,
                )
                .await
                .map_err(|e| volume_error("deleting the detached placeholder ROOT", e))?;
        }
        Ok(())
    }
}

impl WorkflowStep for RemovePlaceholderRoot {
    /// The placeholder's detach; its delete is synchronous (no job).
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("detachVolume", Once, Target)]
    }
}

/// Starts the target VM.
pub(crate) struct StartVm;

/// The target VM, running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Started {
    pub vm_id: VmId,
    pub state: String,
}

pub(crate) const START_VM: Output<Started> = Output::new("start-vm");

#[async_trait]
impl TypedStep<Env> for StartVm {
    type Output = Started;

    fn output(&self) -> Output<Started> {
        START_VM
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let target = target_vm_id(cx)?;
        let vm = env
            .cloud
            .get_virtual_machine(&target)
            .await
            .map_err(|e| cloud_error("looking up the target VM", e))?
            .ok_or_else(|| StepError::Definitive(format!("target VM {target} is gone")))?;
        if vm.state != "Running" {
            let job = match job_in_flight(cx, "startVirtualMachine", Some(&target)).await? {
                InFlight::Pending(job) => job,
                // A start this step sent may have ended since the VM was read.
                InFlight::Ended if !needs(env, &target, "Running").await? => {
                    return Ok(Started {
                        vm_id: target,
                        state: "Running".into(),
                    });
                }
                InFlight::Ended | InFlight::NoneSent => {
                    let job = env
                        .cloud
                        .start_virtual_machine(&target)
                        .await
                        .map_err(|e| cloud_error("starting the target VM", e))?;
                    record_job(cx, &job, Some(&target)).await;
                    job
                }
            };
            env.cloud
                .wait(&job)
                .await
                .map_err(|e| cloud_error("starting the target VM", e))?;
        }
        Ok(Started {
            vm_id: target,
            state: "Running".into(),
        })
    }

    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        if let Some(target) = find_target(cx).await? {
            ensure_stopped(cx, &target).await?;
        }
        Ok(())
    }
}

impl WorkflowStep for StartVm {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("startVirtualMachine", Once, Target)]
    }
}

/// Stops the test VM (forced: its guest state is thrown away).
pub(crate) struct StopTestVm;

/// Whether the VM was found, and stopped (forcibly or not, where the step says).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stopped {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<VmId>,
    pub found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<bool>,
}

const STOP_TEST_VM: Output<Stopped> = Output::new("stop-test-vm");

#[async_trait]
impl TypedStep<Env> for StopTestVm {
    type Output = Stopped;

    fn output(&self) -> Output<Stopped> {
        STOP_TEST_VM
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        // A test VM destroyed by hand (not expunged) still holds the replicas: it is
        // recovered to give them back. Its name is the drill's own (it has a stamp).
        let found = match find_target(cx).await? {
            Some(vm) => Some(vm),
            None => recover_destroyed_target(cx, STOP_TEST_VM.name(), &input(cx)?, None).await?,
        };
        let stopped = match found {
            Some(vm) => {
                ensure_stopped(cx, &vm).await?;
                Some(vm.id)
            }
            None => None,
        };
        Ok(Stopped {
            found: stopped.is_some(),
            vm_id: stopped,
            forced: None,
        })
    }
}

impl WorkflowStep for StopTestVm {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("stopVirtualMachine", Once, Target)]
    }
}

/// Stops the live failover's VM, gracefully (see [`crate::rollback`]).
pub(crate) struct StopVm;

const STOP_VM: Output<Stopped> = Output::new("stop-vm");

/// The VM `vm_id`, found and stopped (`forced` if it had to be).
fn stopped(vm_id: &VmId, forced: bool) -> Stopped {
    Stopped {
        vm_id: Some(vm_id.clone()),
        found: true,
        forced: Some(forced),
    }
}

#[async_trait]
impl TypedStep<Env> for StopVm {
    type Output = Stopped;

    fn output(&self) -> Output<Stopped> {
        STOP_VM
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let found = match live_vm(cx).await? {
            Some(vm) => Some(vm),
            // Destroyed by hand (not expunged) with the replicas on it: recovered, if it
            // is the very VM the live failover recorded.
            None => match protected_vm(cx).await?.target_vm_id {
                Some(recorded) => {
                    recover_destroyed_target(cx, STOP_VM.name(), &input(cx)?, Some(&recorded))
                        .await?
                }
                None => None,
            },
        };
        let Some(vm) = found else {
            return Ok(Stopped {
                vm_id: None,
                found: false,
                forced: None,
            });
        };
        if vm.state == "Stopped" {
            return Ok(stopped(&vm.id, false));
        }
        // Gracefully: the guest's writes are kept (see the module doc).
        let pending = match job_in_flight(cx, "stopVirtualMachine", Some(&vm.id)).await? {
            InFlight::Pending(job) => Some(job),
            // A stop this step sent may have ended since the VM was read.
            InFlight::Ended if !needs(env, &vm.id, "Stopped").await? => {
                return Ok(stopped(&vm.id, false));
            }
            InFlight::Ended | InFlight::NoneSent => None,
        };
        let graceful = async {
            let job = match pending {
                Some(job) => job,
                None => {
                    let job = env.cloud.stop_virtual_machine(&vm.id, false).await?;
                    record_job(cx, &job, Some(&vm.id)).await;
                    job
                }
            };
            env.cloud.wait(&job).await
        }
        .await;
        match graceful {
            Ok(_) => Ok(stopped(&vm.id, false)),
            Err(e) if e.class() == cloudstack::ErrorClass::Definitive => {
                event(
                    cx,
                    "warn",
                    "stop-vm",
                    &format!(
                        "VM {} did not stop gracefully ({e}); stopping it forcibly",
                        vm.name
                    ),
                )
                .await;
                let vm = live_vm(cx).await?.unwrap_or(vm);
                ensure_stopped(cx, &vm).await?;
                Ok(stopped(&vm.id, true))
            }
            Err(e) => Err(cloud_error("stopping the VM", e)),
        }
    }
}

impl WorkflowStep for StopVm {
    /// The graceful stop (a forced one follows only if the guest does not shut down).
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("stopVirtualMachine", Once, Target)]
    }
}

/// The VM a step of a forward workflow acts on: the test VM (cleanup) or the live
/// failover's VM (rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetVm {
    /// A test failover's VM (`<name>-test-<stamp>`), found by name.
    Test,
    /// A live failover's VM (`<name>`): one of that name that is not the one recorded
    /// as the target is refused, never acted on (see [`live_vm`]).
    Live,
}

impl TargetVm {
    /// The VM, if it still exists.
    pub(crate) async fn find(
        self,
        cx: &Cx<'_>,
    ) -> Result<Option<cloudstack::VirtualMachine>, StepError> {
        match self {
            TargetVm::Test => find_target(cx).await,
            TargetVm::Live => live_vm(cx).await,
        }
    }
}

/// Destroys the test VM or the live failover's VM (never while it holds a replica).
pub(crate) struct Destroy(pub(crate) TargetVm);

/// The VM destroyed, if there was one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Destroyed {
    pub destroyed: Option<VmId>,
}

const DESTROY_TEST_VM: Output<Destroyed> = Output::new("destroy-test-vm");
const DESTROY_VM: Output<Destroyed> = Output::new("destroy-vm");

#[async_trait]
impl TypedStep<Env> for Destroy {
    type Output = Destroyed;

    fn output(&self) -> Output<Destroyed> {
        match self.0 {
            TargetVm::Test => DESTROY_TEST_VM,
            TargetVm::Live => DESTROY_VM,
        }
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let destroyed = match self.0.find(cx).await? {
            Some(vm) => {
                destroy_vm_without_replicas(cx, &vm).await?;
                Some(vm.id)
            }
            None => None,
        };
        Ok(Destroyed { destroyed })
    }
}

impl WorkflowStep for Destroy {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        vec![job("destroyVirtualMachine", Once, Target)]
    }
}
