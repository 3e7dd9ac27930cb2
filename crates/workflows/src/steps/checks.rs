//! The steps that only read: validation before a test or live failover (and, for a
//! live failover with hooks, before the hooks too), the verification of the target
//! VM's disks against the plan, and commit's check of the live failover's VM.

use ids::{VmId, VolumeId};
use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::{Output, StepError, TypedStep};
use serde::{Deserialize, Serialize};
use store::VmState;

use crate::ensure::{find_vm, live_vm, observed_disks};
use crate::env::{Cx, Env, cloud_error, volume_error};
use crate::jobs::WorkflowStep;
use crate::plan::DevicePlan;
use crate::run::{Mode, appliance_vm_id, input, protected_vm, run_mode};
use crate::steps::clones::{OrSkipped, clones, names_taken, verify_clones};
use crate::steps::vm::{Network, target_vm_id};
use volumed::VolumeInfo;

/// Checks, before anything changes, that the failover can be done: the VM ready, the
/// replicas on the appliance at their disks' sizes, the networks there, the target
/// name free, guest preparation possible.
pub(crate) struct Validate(pub(crate) Network);

/// What validation found: the appliance the replicas are on, and how many there are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Validated {
    pub appliance_vm_id: VmId,
    pub disks: usize,
}

pub(crate) const VALIDATE: Output<Validated> = Output::new("validate");

#[async_trait]
impl TypedStep<Env> for Validate {
    type Output = Validated;

    fn output(&self) -> Output<Validated> {
        VALIDATE
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
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
        if needs_prep && run_mode(cx)? == Mode::Clone {
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
        problems.extend(replica_problems(&input.plan, &on_appliance));
        let networks = env
            .cloud
            .list_networks(Some(&env.target.zone_id))
            .await
            .map_err(|e| cloud_error("listing networks", e))?;
        problems.extend(network_problems(&vm, self.0, &networks));
        if find_vm(env, &input.target_name).await?.is_some() && cx.attempt == 1 {
            problems.push(format!("a VM named {} already exists", input.target_name));
        }
        if run_mode(cx)? == Mode::Clone && cx.attempt == 1 {
            problems.extend(names_taken(env, &input).await?);
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

impl WorkflowStep for Validate {}

/// What is wrong with the replicas of `plan` among the volumes on the appliance:
/// one not attached to it, one of another size than its disk.
pub(crate) fn replica_problems(plan: &DevicePlan, on_appliance: &[VolumeInfo]) -> Vec<String> {
    let mut problems = Vec::new();
    for d in plan.disks() {
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
    problems
}

/// The NICs of `vm` whose `network` is not among `networks` (those of the zone).
pub(crate) fn network_problems(
    vm: &store::ProtectedVm,
    network: Network,
    networks: &[cloudstack::Network],
) -> Vec<String> {
    vm.nics
        .iter()
        .filter(|nic| !networks.iter().any(|n| n.id == *network.network_id(nic)))
        .map(|nic| {
            format!(
                "{} network {} of NIC {} does not exist",
                network.as_str(),
                network.network_id(nic),
                nic.mac
            )
        })
        .collect()
}

/// Validation before the hooks run (only when there are hooks).
pub(crate) struct Check;

pub(crate) const CHECK: Output<OrSkipped<Validated>> = Output::new("check");

#[async_trait]
impl TypedStep<Env> for Check {
    type Output = OrSkipped<Validated>;

    fn output(&self) -> Output<OrSkipped<Validated>> {
        CHECK
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        if cx.ctx.hooks.before_live.is_empty() {
            return Ok(OrSkipped::Skipped {
                skipped: "no before_live hooks".into(),
            });
        }
        TypedStep::run(&Validate(Network::Production), cx)
            .await
            .map(OrSkipped::Done)
            .map_err(|e| match e {
                StepError::Definitive(why) => {
                    StepError::Definitive(format!("{why}; the before_live hooks were not run"))
                }
                transient => transient,
            })
    }
}

impl WorkflowStep for Check {}

/// Verifies the target VM's disks against the plan (CloudStack's listVolumes), in
/// clone mode each clone standing in for its replica — and then also that the
/// replicas are still on the appliance, the point of clone mode.
pub(crate) struct Verify(pub(crate) Mode);

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
    pub volume_id: VolumeId,
    /// In clone mode, the replica the clone was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_volume_id: Option<VolumeId>,
    pub device_key: i64,
    pub size_bytes: i64,
    pub boot: bool,
}

pub(crate) const VERIFY: Output<Verified> = Output::new("verify");

/// What CloudStack reports on the target VM (volume id, device id, size) compared with
/// the plan, `clones` (replica → clone) standing in for their replicas in clone mode:
/// the mismatches, in words ([`DevicePlan::verify`]).
pub(crate) fn disks_differ(
    plan: &DevicePlan,
    clones: Option<&BTreeMap<VolumeId, VolumeId>>,
    observed: &[(VolumeId, Option<i64>, i64)],
) -> Vec<String> {
    match clones {
        Some(clones) => verify_clones(plan, clones, observed),
        None => match plan.verify(observed) {
            Ok(()) => Vec::new(),
            Err(mismatches) => mismatches.iter().map(|m| m.to_string()).collect(),
        },
    }
}

#[async_trait]
impl TypedStep<Env> for Verify {
    type Output = Verified;

    fn output(&self) -> Output<Verified> {
        VERIFY
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let clones = match self.0 {
            Mode::Replica => None,
            Mode::Clone => Some(clones(cx)?),
        };
        let target = target_vm_id(cx)?;
        let observed = observed_disks(env, &target).await?;
        let mut problems = disks_differ(&input.plan, clones.as_ref(), &observed);
        if self.0 == Mode::Clone {
            // And the point of clone mode: the replicas are where they were.
            let vm = protected_vm(cx).await?;
            let appliance = appliance_vm_id(cx, &vm).await?;
            let on_appliance = env
                .volumes
                .list_vm_volumes(&appliance)
                .await
                .map_err(|e| volume_error("listing the appliance's volumes", e))?;
            for d in input.plan.disks() {
                if !on_appliance.iter().any(|v| v.id == d.volume_id) {
                    problems.push(format!(
                        "replica {} of disk {} is no longer attached to the appliance",
                        d.volume_id, d.device_key
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(StepError::Definitive(format!(
                "the target VM's disks differ from the plan: {}",
                problems.join("; ")
            )));
        }
        Ok(Verified {
            device_map: input
                .plan
                .disks()
                .iter()
                .map(|d| MappedDisk {
                    device_id: d.device_id,
                    // In clone mode, every planned disk's clone was found in place.
                    volume_id: match &clones {
                        Some(clones) => clones.get(&d.volume_id).cloned().unwrap_or_default(),
                        None => d.volume_id.clone(),
                    },
                    replica_volume_id: clones.as_ref().map(|_| d.volume_id.clone()),
                    device_key: d.device_key,
                    size_bytes: d.size_bytes,
                    boot: d.is_boot,
                })
                .collect(),
        })
    }
}

impl WorkflowStep for Verify {}

/// Checks that the live failover's VM still holds every replica where it put it.
pub(crate) struct CheckVm;

/// The VM the live failover created, holding every replica where it put it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckedVm {
    pub vm_id: VmId,
    pub state: String,
}

pub(crate) const CHECK_VM: Output<CheckedVm> = Output::new("check-vm");

#[async_trait]
impl TypedStep<Env> for CheckVm {
    type Output = CheckedVm;

    fn output(&self) -> Output<CheckedVm> {
        CHECK_VM
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let input = input(cx)?;
        let vm = live_vm(cx).await?.ok_or_else(|| {
            StepError::Definitive(format!(
                "VM {} does not exist: there is no failover to commit",
                input.target_name
            ))
        })?;
        let observed = observed_disks(env, &vm.id).await?;
        // Volumes added after the cut-over are the VM's own business; every replica
        // must be where the failover put it.
        let missing: Vec<String> = input
            .plan
            .disks()
            .iter()
            .filter(|d| {
                !observed
                    .iter()
                    .any(|(id, device, _)| *id == d.volume_id && *device == Some(d.device_id))
            })
            .map(|d| format!("replica {} at device {}", d.volume_id, d.device_id))
            .collect();
        if !missing.is_empty() {
            return Err(StepError::Definitive(format!(
                "VM {} ({}) no longer holds {}: not committing; look, then roll back or fix it",
                vm.name,
                vm.id,
                missing.join(", ")
            )));
        }
        Ok(CheckedVm {
            vm_id: vm.id,
            state: vm.state,
        })
    }
}

impl WorkflowStep for CheckVm {}
