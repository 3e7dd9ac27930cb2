//! What a run carries and how one is started: the stored input (target name and device
//! plan), the test failover's [`Mode`], the refusals of a start ([`StartError`]), the
//! protected VM and appliance a run's steps work on, and the names of what a run
//! creates in CloudStack (its snapshots and clones).
//!
//! Every workflow's `start` and every step uses these; they use no workflow and no
//! step, so any of them can.

use engine::StepError;
use ids::{RunId, VmId};
use serde::{Deserialize, Serialize};
use store::{VmState, Workflow};

use crate::env::{Cx, Env, store_error};
use crate::plan::{DevicePlan, KVM_MAX_DATA_DISKS};

/// What must happen before VM `name`, in `state`, is ready for a failover again, in
/// words that fit that state: a test failover is cleaned up, a live one rolled back (or
/// committed, after which the VM is no longer failed over from its source at all).
pub fn what_first(name: &str, state: VmState) -> String {
    match state {
        VmState::TestFailedOver => {
            format!("clean its test failover up first (`ferry failover cleanup {name}`)")
        }
        VmState::FailedOver => format!(
            "it runs in CloudStack since its live failover: roll it back first (`ferry failover rollback {name}`), or commit it (`ferry failover commit {name}`) to keep it there"
        ),
        VmState::Committed => "its live failover was committed: it runs in CloudStack for good and is not failed over again; remove it (`ferry vm remove`) and register it anew to protect it again".to_string(),
        VmState::ReadyForFailover => "it is ready; try again".to_string(),
    }
}

/// Why a workflow could not be started (shared by every workflow's `start`).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no protected VM named {0}")]
    NoVm(String),
    #[error("{name} is {state}, not ready_for_failover: {}", what_first(name, *state))]
    NotReady { name: String, state: VmState },
    /// The VM is not in the state the workflow starts from.
    #[error("{name} is {state}, not {wanted}: {hint}")]
    WrongState {
        name: String,
        state: VmState,
        wanted: VmState,
        hint: &'static str,
    },
    /// The workflow follows up a run (a rollback or commit, a live failover) and there
    /// is none recorded with a usable plan.
    #[error("{name} has no recorded {workflow} run to follow up")]
    NoPriorRun { name: String, workflow: Workflow },
    #[error("{0}")]
    Plan(#[from] crate::plan::PlanError),
    #[error(
        "{name} already has an active run ({run_id}); wait for it, cancel it, or resolve it if it is stuck"
    )]
    Busy { name: String, run_id: String },
    /// The VM changed between the read its run was planned from and the run's start
    /// (updated, removed, or another run of it started and ended): the plan would not be
    /// the VM's.
    #[error(
        "{name} changed while its run was being planned (it was updated or removed, or \
         another run of it came and went); nothing was started: look at it (`ferry vm show \
         {name}`) and start again"
    )]
    Changed { name: String },
    /// Replicas of the VM are diverged from their source (see `crate::drift`).
    #[error(
        "{name} cannot fail over: {} diverged from the source and may not hold what it holds — {}. \
         Have replication resynchronise {} from the source, then record it with `ferry vm resynced {name}`",
        plural(replicas.len()), replicas.join("; "), if replicas.len() == 1 { "it" } else { "them" }
    )]
    Diverged { name: String, replicas: Vec<String> },
    /// The appliance's volume agent does not answer, or answers that it cannot serve:
    /// nothing was started.
    #[error(
        "{name} cannot fail over now: the volume agent of appliance {appliance} {problem}. \
         Nothing was changed. Check that `ferry volumed` runs on the appliance and that this \
         engine reaches it (`ferry appliance show {appliance}`), then start the failover again"
    )]
    AgentDown {
        name: String,
        appliance: String,
        problem: String,
    },
    #[error("the store failed")]
    Store(#[from] store::StoreError),
}

/// How long the check of an appliance's agent before a failover waits for its answer.
const AGENT_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses a failover of `vm` when its appliance's remote volume agent does not answer,
/// speaks another API revision, serves another appliance, or cannot see the
/// appliance's disks. An appliance served in-process has nothing to check.
pub(crate) async fn check_agent(env: &Env, vm: &store::ProtectedVm) -> Result<(), StartError> {
    let Some(agent) = env.agents.get(&vm.appliance) else {
        return Ok(());
    };
    let down = |problem: String| StartError::AgentDown {
        name: vm.name.clone(),
        appliance: vm.appliance.clone(),
        problem,
    };
    let status = match tokio::time::timeout(AGENT_CHECK_TIMEOUT, agent.status()).await {
        Err(_) => {
            return Err(down(format!(
                "did not answer within {} s",
                AGENT_CHECK_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => {
            return Err(down(format!(
                "refused or failed: {}",
                e.without_api_advice()
            )));
        }
        Ok(Ok(status)) => status,
    };
    match status.appliances.first() {
        Some(seen) if seen.devices.is_some() => Ok(()),
        Some(_) => Err(down(
            "cannot read the appliance's /sys/block (its --sysfs-root)".into(),
        )),
        None => Err(down(
            "serves no appliance (start it with --appliance-vm-id)".into(),
        )),
    }
}

/// "replica" or "N replicas".
fn plural(n: usize) -> String {
    match n {
        1 => "a replica".into(),
        n => format!("{n} replicas"),
    }
}

/// The protected VM named `vm_name`, for a workflow's start.
pub(crate) async fn registered_vm(
    env: &Env,
    vm_name: &str,
) -> Result<store::ProtectedVm, StartError> {
    env.store
        .vm(vm_name)
        .await?
        .ok_or_else(|| StartError::NoVm(vm_name.to_string()))
}

/// Creates a failover run (a test or live failover) of `vm_name`, which must be
/// `ready_for_failover`, with its device plan and its target VM's name (made from the
/// protected VM's name by `target_name`).
pub(crate) async fn start_failover(
    env: &Env,
    vm_name: &str,
    workflow: Workflow,
    mode: Mode,
    target_name: impl FnOnce(&str) -> String,
) -> Result<store::Run, StartError> {
    let vm = registered_vm(env, vm_name).await?;
    if vm.state != VmState::ReadyForFailover {
        return Err(StartError::NotReady {
            name: vm.name,
            state: vm.state,
        });
    }
    let diverged: Vec<String> = vm
        .disks
        .iter()
        .filter_map(|d| {
            d.diverged
                .as_ref()
                .map(|m| format!("{} ({})", d.disk.replica_volume_id, m.reason))
        })
        .collect();
    if !diverged.is_empty() {
        return Err(StartError::Diverged {
            name: vm.name,
            replicas: diverged,
        });
    }
    let plan = DevicePlan::new(&vm.disks, KVM_MAX_DATA_DISKS)?;
    check_agent(env, &vm).await?;
    let input = RunInput {
        target_name: target_name(&vm.name),
        plan,
        test_run_id: None,
    };
    create_run(env, &vm, workflow, Some(mode.as_str()), &input).await
}

/// Creates a run for `vm` with `input` as its stored plan; another active run of the
/// VM is refused as [`StartError::Busy`] (the store enforces one at a time).
pub(crate) async fn create_run<I: Serialize>(
    env: &Env,
    vm: &store::ProtectedVm,
    workflow: Workflow,
    mode: Option<&str>,
    input: &I,
) -> Result<store::Run, StartError> {
    let plan = serde_json::to_string(input).expect("serializable");
    let run = match env
        .store
        .create_run_with_plan(&vm.id, Some(vm.version), workflow, mode, Some(&plan))
        .await
    {
        Ok(run) => run,
        // The VM's version moved since it was read: another run of it started (named,
        // as the one-active-run constraint would), or it was updated or removed.
        Err(store::StoreError::Refused(_)) => {
            return Err(match env.store.active_run(&vm.id).await? {
                Some(run) => StartError::Busy {
                    name: vm.name.clone(),
                    run_id: run.id.into_string(),
                },
                None => StartError::Changed {
                    name: vm.name.clone(),
                },
            });
        }
        Err(store::StoreError::Constraint { constraint, .. })
            if constraint == "runs_one_active_per_vm" =>
        {
            let run_id = env
                .store
                .active_run(&vm.id)
                .await?
                .map(|r| r.id.into_string())
                .unwrap_or_default();
            return Err(StartError::Busy {
                name: vm.name.clone(),
                run_id,
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(run)
}

/// The plan of the live failover that rollback and commit follow up, stored as their
/// run's input (the live run's id alongside, for the record).
pub(crate) async fn follow_up(
    env: &Env,
    vm_name: &str,
    workflow: Workflow,
    hint: &'static str,
) -> Result<store::Run, StartError> {
    let vm = registered_vm(env, vm_name).await?;
    if vm.state != VmState::FailedOver {
        return Err(StartError::WrongState {
            name: vm.name,
            state: vm.state,
            wanted: VmState::FailedOver,
            hint,
        });
    }
    let live_run = env.store.last_run(&vm.id, Workflow::LiveFailover).await?;
    let Some((live_run, live_input)) = live_run.and_then(|r| {
        let input = run_input(&r)?;
        Some((r, input))
    }) else {
        return Err(StartError::NoPriorRun {
            name: vm.name,
            workflow: Workflow::LiveFailover,
        });
    };
    #[derive(serde::Serialize)]
    struct FollowUp<'a> {
        #[serde(flatten)]
        input: &'a RunInput,
        live_run_id: &'a RunId,
    }
    create_run(
        env,
        &vm,
        workflow,
        None,
        &FollowUp {
            input: &live_input,
            live_run_id: &live_run.id,
        },
    )
    .await
}

/// What a test failover run carries (stored as the run's plan).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInput {
    /// The target VM's name (`<name>-test-<timestamp>`).
    pub target_name: String,
    pub plan: DevicePlan,
    /// For a cleanup: the test failover run it cleans up after.
    #[serde(default)]
    pub test_run_id: Option<RunId>,
}

pub(crate) fn input(cx: &Cx<'_>) -> Result<RunInput, StepError> {
    let text = cx
        .run
        .plan
        .as_deref()
        .ok_or_else(|| StepError::Definitive("the run has no stored plan".into()))?;
    serde_json::from_str(text)
        .map_err(|e| StepError::Definitive(format!("the run's stored plan: {e}")))
}

/// The input of a run, for callers that show it.
pub fn run_input(run: &store::Run) -> Option<RunInput> {
    run.plan
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
}

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
pub(crate) fn run_mode(cx: &Cx<'_>) -> Result<Mode, StepError> {
    Mode::of_run(cx.run).map_err(|e| StepError::Definitive(format!("run {}: {e}", cx.run.id)))
}

pub(crate) async fn protected_vm(cx: &Cx<'_>) -> Result<store::ProtectedVm, StepError> {
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
    cx: &Cx<'_>,
    vm: &store::ProtectedVm,
) -> Result<VmId, StepError> {
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

/// The snapshot a test failover takes of one replica.
pub(crate) fn snapshot_name(target: &str, device_key: i64) -> String {
    format!("{}{device_key}", snapshot_prefix(target))
}

/// What the names of every snapshot of a run whose target is `target` begin with.
pub(crate) fn snapshot_prefix(target: &str) -> String {
    format!("{target}-disk-")
}

/// The volume a clone-mode test failover makes from one replica's snapshot. Volume
/// and snapshot names live apart in CloudStack, so it is the snapshot's name too.
pub(crate) fn clone_name(target: &str, device_key: i64) -> String {
    snapshot_name(target, device_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_to_do_first_fits_the_state() {
        let test = what_first("pg", VmState::TestFailedOver);
        assert!(
            test.contains("ferry failover cleanup pg") && !test.contains("roll"),
            "{test}"
        );
        let live = what_first("pg", VmState::FailedOver);
        assert!(
            live.contains("ferry failover rollback pg")
                && live.contains("ferry failover commit pg"),
            "{live}"
        );
        let committed = what_first("pg", VmState::Committed);
        assert!(
            !committed.contains("roll") && !committed.contains("clean"),
            "{committed}"
        );
    }
}
