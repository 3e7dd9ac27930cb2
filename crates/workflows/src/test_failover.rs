//! Test failover (DESIGN §5), in one of two [`Mode`]s.
//!
//! Replica mode: the replicas themselves go to a test VM and come back with cleanup,
//! reverted to the snapshots taken first. validate → snapshot every replica → create
//! the target VM stopped with the whole spec → remove its placeholder ROOT → detach the
//! replicas from the appliance → attach boot at 0 and data at the planned ids → verify
//! against listVolumes → start → record `test_failed_over`.
//!
//! Clone mode (the `clone` module): a new volume is made from each snapshot and the clones go
//! to the test VM; the replicas never leave the appliance, so replication goes on
//! during the drill. validate → snapshot → create the clones → create the target VM →
//! remove its placeholder ROOT → attach the clones (boot at 0, data at the planned ids)
//! → verify → start → record.
//!
//! Each step is an ensure that looks before it acts, and has an undo that puts things
//! back — the replicas on the appliance above all, and in clone mode no clone left.

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::{Output, Saga, StepContext, StepError, TypedStep};
use serde::{Deserialize, Serialize};
use store::{VmState, Workflow};
use volumed::Presence;

use crate::common::{
    Network, RunInput, all_to_the_end, appliance_vm_id, destroy_vm_without_replicas,
    ensure_on_appliance, ensure_stopped, find_vm, input, needs, observed_disks, protected_vm,
    revert_detached_replicas, target_vm_id,
};
use crate::env::{Env, call, cloud_error, pending_job, record_job, store_error, volume_error};
use crate::plan::{DevicePlan, KVM_MAX_DATA_DISKS};

pub(crate) mod clone;

/// Why a test failover (or another workflow) could not be started.
pub use crate::common::StartError;

/// How a test failover gives the test VM its disks. Stored in the run's `mode` column
/// (`replica` / `clone`); a cleanup run carries the mode of the test it cleans up after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The replicas themselves go to the test VM (the job sheet's behaviour).
    #[default]
    Replica,
    /// A volume is made from each replica's snapshot and those go to the test VM; the
    /// replicas never leave the appliance.
    Clone,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replica => "replica",
            Mode::Clone => "clone",
        }
    }

    /// The mode of a run, from its `mode` column (none: replica, as runs were before
    /// clone mode existed).
    pub fn of_run(run: &store::Run) -> Result<Mode, String> {
        match run.mode.as_deref() {
            None => Ok(Mode::Replica),
            Some(text) => text.parse(),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "replica" => Ok(Mode::Replica),
            "clone" => Ok(Mode::Clone),
            other => Err(format!(
                "unknown test failover mode `{other}` (replica or clone)"
            )),
        }
    }
}

/// The mode of the run a step belongs to.
pub(crate) fn run_mode(cx: &StepContext<'_, Env>) -> Result<Mode, StepError> {
    Mode::of_run(cx.run).map_err(|e| StepError::Definitive(format!("run {}: {e}", cx.run.id)))
}

/// Creates a test failover run (replica mode) for `vm_name`, with its device plan and
/// target name; the engine then executes it with [`saga`].
pub async fn start(env: &Env, vm_name: &str) -> Result<store::Run, StartError> {
    start_with_mode(env, vm_name, Mode::Replica).await
}

/// Creates a test failover run in `mode` for `vm_name`; the engine then executes it
/// with [`saga_for`] of that mode.
pub async fn start_with_mode(
    env: &Env,
    vm_name: &str,
    mode: Mode,
) -> Result<store::Run, StartError> {
    let vm = env
        .store
        .vm(vm_name)
        .await?
        .ok_or_else(|| StartError::NoVm(vm_name.to_string()))?;
    if vm.state != VmState::ReadyForFailover {
        return Err(StartError::NotReady {
            name: vm.name,
            state: vm.state,
        });
    }
    let plan = DevicePlan::new(&vm.disks, KVM_MAX_DATA_DISKS)?;
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let input = RunInput {
        target_name: format!("{}-test-{stamp}", vm.name),
        plan,
        test_run_id: None,
    };
    crate::common::create_run(
        env,
        &vm,
        Workflow::TestFailover,
        Some(mode.as_str()),
        &input,
    )
    .await
}

/// The test failover saga of `mode`.
pub fn saga_for(mode: Mode) -> Saga<Env> {
    match mode {
        Mode::Replica => saga(),
        Mode::Clone => clone::saga(),
    }
}

/// The saga that executes a test failover `run`, by its recorded mode.
pub fn saga_for_run(run: &store::Run) -> Result<Saga<Env>, String> {
    Mode::of_run(run).map(saga_for)
}

/// The test failover saga (replica mode).
pub fn saga() -> Saga<Env> {
    Saga::new(vec![
        Box::new(Validate(Network::Test)),
        Box::new(Snapshot),
        Box::new(crate::guest_prep::PrepareGuest),
        Box::new(CreateVm(Network::Test)),
        Box::new(RemovePlaceholderRoot),
        Box::new(DetachReplicas),
        Box::new(AttachReplicas),
        Box::new(Verify),
        Box::new(StartVm),
        Box::new(Record(VmState::TestFailedOver)),
    ])
}

// Shared with the live failover, which differs only in the networks its VM goes on
// and the state it records.
pub(crate) struct Validate(pub(crate) Network);
pub(crate) struct Snapshot;
pub(crate) struct CreateVm(pub(crate) Network);
pub(crate) struct RemovePlaceholderRoot;
pub(crate) struct DetachReplicas;
pub(crate) struct AttachReplicas;
pub(crate) struct Verify;
pub(crate) struct StartVm;
pub(crate) struct Record(pub(crate) VmState);

/// What validation found: the appliance the replicas are on, and how many there are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Validated {
    pub appliance_vm_id: String,
    pub disks: usize,
}

pub(crate) const VALIDATE: Output<Validated> = Output::new("validate");

/// The snapshots taken: replica volume id → snapshot id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Snapshots {
    pub snapshots: BTreeMap<String, String>,
}

pub(crate) const SNAPSHOT: Output<Snapshots> = Output::new("snapshot");

/// The target VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CreatedVm {
    pub vm_id: String,
    pub name: String,
}

pub(crate) const CREATE_VM: Output<CreatedVm> = Output::new("create-vm");

/// The placeholder ROOT volumes removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Removed {
    pub removed: Vec<String>,
}

pub(crate) const REMOVE_PLACEHOLDER_ROOT: Output<Removed> = Output::new("remove-placeholder-root");

/// How many replicas left the appliance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DetachedReplicas {
    pub detached: usize,
}

pub(crate) const DETACH_REPLICAS: Output<DetachedReplicas> = Output::new("detach-replicas");

/// How many volumes went onto the target VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Attached {
    pub attached: usize,
}

pub(crate) const ATTACH_REPLICAS: Output<Attached> = Output::new("attach-replicas");

/// The target VM's disks as verified: the plan, each disk with the volume that stands
/// at its device id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Verified {
    pub device_map: Vec<MappedDisk>,
}

/// One disk of a verified device map.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MappedDisk {
    pub device_id: i64,
    /// The volume on the target VM: the replica, or in clone mode its clone.
    pub volume_id: String,
    /// In clone mode, the replica the clone was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_volume_id: Option<String>,
    pub device_key: i64,
    pub size_bytes: i64,
    pub boot: bool,
}

pub(crate) const VERIFY: Output<Verified> = Output::new("verify");

/// The target VM, running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Started {
    pub vm_id: String,
    pub state: String,
}

pub(crate) const START_VM: Output<Started> = Output::new("start-vm");

/// The state a workflow recorded for the protected VM, with its target VM when it has
/// one (and, after a rollback, the after_rollback hook that failed, or null).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Recorded {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_vm_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_rollback_failed: Option<Option<String>>,
}

pub(crate) const RECORD: Output<Recorded> = Output::new("record");

/// The snapshot a test failover takes of one replica.
pub(crate) fn snapshot_name(target: &str, device_key: i64) -> String {
    format!("{target}-disk-{device_key}")
}

#[async_trait]
impl TypedStep<Env> for Validate {
    type Output = Validated;

    fn output(&self) -> Output<Validated> {
        VALIDATE
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let vm = protected_vm(cx).await?;
        let input = input(cx)?;
        if vm.state != VmState::ReadyForFailover {
            return Err(StepError::Definitive(format!(
                "{} is {}, not ready_for_failover",
                vm.name, vm.state
            )));
        }
        let needs_prep = crate::guest_prep::decide(vm.spec.guest_prep, vm.spec.guest_os)
            == crate::guest_prep::Decision::Run;
        if needs_prep && cx.run.mode.as_deref() == Some("clone") {
            // The boot disk of a clone-mode drill is a clone that never sits on the
            // appliance, where preparation runs.
            return Err(StepError::Definitive(format!(
                "{} needs guest preparation, which clone mode cannot do yet: run the drill in replica mode, \
                 or set guest_prep = \"skip\" if the guest already has VirtIO drivers",
                vm.name
            )));
        }
        let appliance = appliance_vm_id(cx, &vm).await?;
        let on_appliance = env
            .volumes
            .list_vm_volumes(&appliance)
            .await
            .map_err(|e| volume_error("listing the appliance's volumes", e))?;
        let mut problems = Vec::new();
        if let Err(problem) = crate::guest_prep::check_guest_prep(env, &vm).await {
            problems.push(problem);
        }
        for d in input.plan.disks() {
            match on_appliance.iter().find(|v| v.id == d.volume_id) {
                None => problems.push(format!(
                    "replica {} of disk {} is not attached to the appliance",
                    d.volume_id, d.device_key
                )),
                Some(v) if v.size_bytes != d.size_bytes => problems.push(format!(
                    "replica {} of disk {} has {} bytes, the disk {}",
                    d.volume_id, d.device_key, v.size_bytes, d.size_bytes
                )),
                Some(_) => {}
            }
        }
        let networks = env
            .cloud
            .list_networks(Some(&env.target.zone_id))
            .await
            .map_err(|e| cloud_error("listing networks", e))?;
        for nic in &vm.nics {
            let network_id = self.0.network_id(nic);
            if !networks.iter().any(|n| n.id == network_id) {
                problems.push(format!(
                    "{} network {} of NIC {} does not exist",
                    self.0.as_str(),
                    network_id,
                    nic.mac
                ));
            }
        }
        if find_vm(env, &input.target_name).await?.is_some() && cx.attempt == 1 {
            problems.push(format!("a VM named {} already exists", input.target_name));
        }
        if run_mode(cx)? == Mode::Clone && cx.attempt == 1 {
            problems.extend(clone::names_taken(env, &input).await?);
        }
        if !problems.is_empty() {
            return Err(StepError::Definitive(problems.join("; ")));
        }
        Ok(Validated {
            appliance_vm_id: appliance,
            disks: input.plan.disks().len(),
        })
    }
}

#[async_trait]
impl TypedStep<Env> for Snapshot {
    type Output = Snapshots;

    fn output(&self) -> Output<Snapshots> {
        SNAPSHOT
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let taken = all_to_the_end(input.plan.disks().iter().map(|d| {
            let name = snapshot_name(&input.target_name, d.device_key);
            async move {
                let snap = env
                    .volumes
                    .snapshot(&call(cx, "snapshot", &d.volume_id), &d.volume_id, &name)
                    .await
                    .map_err(|e| {
                        volume_error(&format!("snapshotting replica {}", d.volume_id), e)
                    })?;
                Ok::<_, StepError>((d.volume_id.clone(), snap.id))
            }
        }))
        .await?;
        Ok(Snapshots {
            snapshots: taken.into_iter().collect(),
        })
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        delete_run_snapshots(cx, "undo-snapshot").await
    }
}

/// Deletes the snapshots a test failover took (found by name, so a snapshot whose step
/// never finished is found too).
pub(crate) async fn delete_run_snapshots(
    cx: &StepContext<'_, Env>,
    step: &str,
) -> Result<(), StepError> {
    let env = cx.ctx;
    let input = input(cx)?;
    // Each snapshot is deleted on its own CloudStack queue: all at once (each to its
    // end).
    all_to_the_end(input.plan.disks().iter().map(|d| {
        let input = &input;
        async move {
            let name = snapshot_name(&input.target_name, d.device_key);
            let snapshots = env
                .cloud
                .list_snapshots(Some(&d.volume_id), None)
                .await
                .map_err(|e| cloud_error("listing snapshots", e))?;
            for s in snapshots.iter().filter(|s| s.name == name) {
                env.volumes
                    .delete_snapshot(&call(cx, step, &s.id), &s.id)
                    .await
                    .map_err(|e| volume_error(&format!("deleting snapshot {}", s.id), e))?;
            }
            Ok::<_, StepError>(())
        }
    }))
    .await?;
    Ok(())
}

#[async_trait]
impl TypedStep<Env> for CreateVm {
    type Output = CreatedVm;

    fn output(&self) -> Output<CreatedVm> {
        CREATE_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
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
                            network_id: self.0.network_id(n).to_string(),
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

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        if let Some(target) = find_vm(env, &input.target_name).await? {
            destroy_vm_without_replicas(cx, &target).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl TypedStep<Env> for RemovePlaceholderRoot {
    type Output = Removed;

    fn output(&self) -> Output<Removed> {
        REMOVE_PLACEHOLDER_ROOT
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let target = target_vm_id(cx)?;
        // The placeholder is whatever non-replica volume sits at device 0 — and, for a
        // run resumed after it was detached but before it was deleted, the volume
        // create-vm recorded as this run's placeholder, wherever it is now.
        let mut placeholders: Vec<(String, bool)> = Vec::new();
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
            if clone::is_run_clone(cx, &v.id) {
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
                env.volumes
                    .detach(
                        &call(cx, "remove-placeholder-root", &format!("detach/{id}")),
                        &id,
                    )
                    .await
                    .map_err(|e| volume_error("detaching the placeholder ROOT", e))?;
            }
            env.volumes
                .delete_volume(
                    &call(cx, "remove-placeholder-root", &format!("delete/{id}")),
                    &id,
                )
                .await
                .map_err(|e| volume_error("deleting the placeholder ROOT", e))?;
            removed.push(id);
        }
        Ok(Removed { removed })
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
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
                    &call(cx, "undo-remove-placeholder-root", &format!("delete/{id}")),
                    &id,
                )
                .await
                .map_err(|e| volume_error("deleting the detached placeholder ROOT", e))?;
        }
        Ok(())
    }
}

/// A clone-mode run executed with the replica-mode saga must not move a replica.
fn refuse_in_clone_mode(cx: &StepContext<'_, Env>, step: &str) -> Result<(), StepError> {
    if run_mode(cx)? == Mode::Clone {
        return Err(StepError::Definitive(format!(
            "run {} is a clone-mode test failover, which never moves a replica, but step {step} \
             belongs to replica mode: execute the run with test_failover::saga_for(Mode::Clone)",
            cx.run.id
        )));
    }
    Ok(())
}

#[async_trait]
impl TypedStep<Env> for DetachReplicas {
    type Output = DetachedReplicas;

    fn output(&self) -> Output<DetachedReplicas> {
        DETACH_REPLICAS
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        refuse_in_clone_mode(cx, self.output().name())?;
        let env = cx.ctx;
        let input = input(cx)?;
        let vm = protected_vm(cx).await?;
        let appliance = appliance_vm_id(cx, &vm).await?;
        all_to_the_end(input.plan.disks().iter().map(|d| {
            let appliance = appliance.clone();
            async move {
                let volume = env
                    .cloud
                    .get_volume(&d.volume_id)
                    .await
                    .map_err(|e| cloud_error("looking up a replica", e))?
                    .ok_or_else(|| {
                        StepError::Definitive(format!("replica {} is gone", d.volume_id))
                    })?;
                if volume.virtualmachineid.as_deref() == Some(appliance.as_str()) {
                    env.volumes
                        .detach(&call(cx, "detach-replicas", &d.volume_id), &d.volume_id)
                        .await
                        .map_err(|e| {
                            volume_error(
                                &format!("detaching replica {} from the appliance", d.volume_id),
                                e,
                            )
                        })?;
                }
                env.volumes
                    .wait_device(
                        &appliance,
                        &d.volume_id,
                        Presence::Disappears,
                        env.device_timeout,
                    )
                    .await
                    .map_err(|e| {
                        volume_error("waiting for the replica's disk to leave the appliance", e)
                    })?;
                env.store
                    .record_attachment(
                        &d.volume_id,
                        &store::Attachment {
                            vm_id: None,
                            device_id: None,
                            device_path: None,
                            seen_at: None,
                        },
                    )
                    .await
                    .map_err(|e| store_error("recording the detach", e))?;
                Ok::<_, StepError>(())
            }
        }))
        .await?;
        Ok(DetachedReplicas {
            detached: input.plan.disks().len(),
        })
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        let input = input(cx)?;
        let vm = protected_vm(cx).await?;
        let appliance = appliance_vm_id(cx, &vm).await?;
        for d in input.plan.disks() {
            ensure_on_appliance(cx, "undo-detach-replicas", &d.volume_id, &appliance).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl TypedStep<Env> for AttachReplicas {
    type Output = Attached;

    fn output(&self) -> Output<Attached> {
        ATTACH_REPLICAS
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        refuse_in_clone_mode(cx, self.output().name())?;
        let env = cx.ctx;
        let input = input(cx)?;
        let target = target_vm_id(cx)?;
        // CloudStack runs one VM's jobs one at a time: attaching in plan order costs
        // nothing, and keeps the guest's probe order that of the plan.
        for d in input.plan.disks() {
            let volume = env
                .cloud
                .get_volume(&d.volume_id)
                .await
                .map_err(|e| cloud_error("looking up a replica", e))?
                .ok_or_else(|| StepError::Definitive(format!("replica {} is gone", d.volume_id)))?;
            // Already there (an earlier attempt attached it, perhaps without getting
            // to record it): record it all the same.
            let device_id = if volume.virtualmachineid.as_deref() == Some(target.as_str())
                && volume.deviceid == Some(d.device_id)
            {
                volume.deviceid
            } else {
                let key = call(cx, "attach-replicas", &d.volume_id);
                if d.is_boot {
                    env.volumes.attach_root(&key, &d.volume_id, &target).await
                } else {
                    env.volumes
                        .attach(&key, &d.volume_id, &target, Some(d.device_id))
                        .await
                }
                .map_err(|e| {
                    volume_error(
                        &format!(
                            "attaching replica {} at device {}",
                            d.volume_id, d.device_id
                        ),
                        e,
                    )
                })?
                .device_id
            };
            env.store
                .record_attachment(
                    &d.volume_id,
                    &store::Attachment {
                        vm_id: Some(target.clone()),
                        device_id,
                        device_path: None,
                        seen_at: None,
                    },
                )
                .await
                .map_err(|e| store_error("recording the attach", e))?;
        }
        Ok(Attached {
            attached: input.plan.disks().len(),
        })
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let Some(target) = find_vm(env, &input.target_name).await? else {
            return Ok(());
        };
        ensure_stopped(cx, &target).await?;
        for v in env
            .volumes
            .list_vm_volumes(&target.id)
            .await
            .map_err(|e| volume_error("listing the target VM's volumes", e))?
        {
            if input.plan.by_volume(&v.id).is_some() {
                env.volumes
                    .detach(
                        &call(
                            cx,
                            "undo-attach-replicas",
                            &format!("{}/{}", v.id, target.id),
                        ),
                        &v.id,
                    )
                    .await
                    .map_err(|e| {
                        volume_error(&format!("detaching replica {} from the target VM", v.id), e)
                    })?;
            }
        }
        // The target VM may have run (and written to the replicas) before the run
        // failed: put their content back before they return to the appliance.
        let reverted = revert_detached_replicas(cx, "undo-attach-replicas", &input).await?;
        if !reverted.missing.is_empty() {
            return Err(StepError::Definitive(format!(
                "cannot revert replicas {}: their snapshots are gone, so they may hold the target VM's writes; resynchronise them from the source, then abandon this run",
                reverted.missing.join(", ")
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl TypedStep<Env> for Verify {
    type Output = Verified;

    fn output(&self) -> Output<Verified> {
        VERIFY
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let target = target_vm_id(cx)?;
        let observed = observed_disks(env, &target).await?;
        input.plan.verify(&observed).map_err(|mismatches| {
            StepError::Definitive(format!(
                "the target VM's disks differ from the plan: {}",
                mismatches
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        Ok(Verified {
            device_map: input
                .plan
                .disks()
                .iter()
                .map(|d| MappedDisk {
                    device_id: d.device_id,
                    volume_id: d.volume_id.clone(),
                    replica_volume_id: None,
                    device_key: d.device_key,
                    size_bytes: d.size_bytes,
                    boot: d.is_boot,
                })
                .collect(),
        })
    }
}

#[async_trait]
impl TypedStep<Env> for StartVm {
    type Output = Started;

    fn output(&self) -> Output<Started> {
        START_VM
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let target = target_vm_id(cx)?;
        let vm = env
            .cloud
            .get_virtual_machine(&target)
            .await
            .map_err(|e| cloud_error("looking up the target VM", e))?
            .ok_or_else(|| StepError::Definitive(format!("target VM {target} is gone")))?;
        if vm.state != "Running" {
            let job = match pending_job(cx, "startVirtualMachine", Some(&target)).await? {
                Some(job) => job,
                // A start this step recorded may have ended since the VM was read.
                None if !needs(env, &target, "Running").await? => {
                    return Ok(Started {
                        vm_id: target,
                        state: "Running".into(),
                    });
                }
                None => {
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

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        if let Some(target) = find_vm(env, &input.target_name).await? {
            ensure_stopped(cx, &target).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl TypedStep<Env> for Record {
    type Output = Recorded;

    fn output(&self) -> Output<Recorded> {
        RECORD
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let target = target_vm_id(cx)?;
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, self.0, Some(&target))
            .await
            .map_err(|e| store_error(&format!("recording {}", self.0), e))?;
        Ok(Recorded {
            state: self.0.as_str().into(),
            target_vm_id: Some(target),
            after_rollback_failed: None,
        })
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        cx.ctx
            .store
            .set_vm_state(&cx.run.vm_id, VmState::ReadyForFailover, None)
            .await
            .map_err(|e| store_error("recording ready_for_failover", e))
    }
}

/// The input of a run, for callers that show it.
pub fn run_input(run: &store::Run) -> Option<RunInput> {
    run.plan
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
}
