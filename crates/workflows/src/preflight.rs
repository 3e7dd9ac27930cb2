//! The checks a failover's first step makes, made read-only for many VMs at once
//! before any of them starts: what a recovery plan's pre-flight runs (issue #15), so
//! that a VM of its last tier whose replica is missing stops the plan before its first
//! tier changes anything, not after.
//!
//! For a test or live failover, each VM: no diverged replica, a disk layout CloudStack
//! can take, its appliance's volume agent answering, guest preparation possible, every
//! replica attached to the appliance at its disk's size, its networks present, and for
//! a live failover its target's name free. Each appliance's volumes and the zone's
//! networks are read once for all the VMs. The failover's own validation step checks
//! the same again when it runs.

use std::collections::BTreeMap;

use ids::VmId;
use store::{ProtectedVm, Workflow};
use volumed::VolumeInfo;

use crate::env::Env;
use crate::plan::{DevicePlan, KVM_MAX_DATA_DISKS};
use crate::steps::checks::{network_problems, replica_problems};
use crate::steps::vm::Network;

/// What would stop `workflow` on each of `vms` now, by VM name: empty when all can
/// start. Only a test or live failover is checked here (the workflows that take one
/// back reconcile with CloudStack as they go); the VMs' states are the caller's.
pub async fn failover_problems(
    env: &Env,
    vms: &[ProtectedVm],
    workflow: Workflow,
) -> Vec<(String, String)> {
    let network = match workflow {
        Workflow::TestFailover => Network::Test,
        Workflow::LiveFailover => Network::Production,
        _ => return Vec::new(),
    };
    let mut problems = Vec::new();
    let networks = match env.cloud.list_networks(Some(&env.target.zone_id)).await {
        Ok(networks) => Some(networks),
        Err(e) => {
            problems.push((
                "-".to_string(),
                format!("CloudStack's networks could not be listed: {e}"),
            ));
            None
        }
    };
    let mut appliances: BTreeMap<String, Result<Vec<VolumeInfo>, String>> = BTreeMap::new();
    for vm in vms {
        let mut said = |problem: String| problems.push((vm.name.clone(), problem));
        for d in vm.disks.iter().filter(|d| d.diverged.is_some()) {
            said(format!(
                "replica {} has diverged from its source ({}): resync it first",
                d.disk.replica_volume_id,
                d.diverged.as_ref().map_or("", |m| m.reason.as_str())
            ));
        }
        let plan = match DevicePlan::new(&vm.disks, KVM_MAX_DATA_DISKS) {
            Ok(plan) => Some(plan),
            Err(e) => {
                said(e.to_string());
                None
            }
        };
        if let Err(e) = crate::run::check_agent(env, vm).await {
            said(e.to_string());
        }
        if let Err(problem) = crate::guest_prep::check_guest_prep(env, vm).await {
            said(problem);
        }
        if let Some(networks) = &networks {
            network_problems(vm, network, networks)
                .into_iter()
                .for_each(&mut said);
        }
        if workflow == Workflow::LiveFailover {
            match crate::ensure::find_vm(env, &vm.name).await {
                Ok(Some(_)) => said(format!("a VM named {} already exists", vm.name)),
                Ok(None) => {}
                Err(e) => said(format!(
                    "CloudStack could not be asked for VM {}: {e}",
                    vm.name
                )),
            }
        }
        if !appliances.contains_key(&vm.appliance) {
            let volumes = on_appliance(env, &vm.appliance).await;
            appliances.insert(vm.appliance.clone(), volumes);
        }
        match (&plan, &appliances[&vm.appliance]) {
            (Some(plan), Ok(volumes)) => replica_problems(plan, volumes)
                .into_iter()
                .for_each(&mut said),
            (_, Err(e)) => said(e.clone()),
            (None, _) => {}
        }
    }
    problems
}

/// The volumes on appliance `name`, through its volume daemon.
async fn on_appliance(env: &Env, name: &str) -> Result<Vec<VolumeInfo>, String> {
    let appliance = env
        .store
        .appliance(name)
        .await
        .map_err(|e| format!("appliance {name} could not be read: {e}"))?
        .ok_or_else(|| format!("appliance {name} is not configured"))?;
    let vm_id: VmId = appliance.vm_id;
    env.volumes_of(name)
        .list_vm_volumes(&vm_id)
        .await
        .map_err(|e| format!("the volumes on appliance {name} could not be listed: {e}"))
}
