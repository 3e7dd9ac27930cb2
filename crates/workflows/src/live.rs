//! Live failover (DESIGN §5): the replicas themselves become the production VM
//! `<name>`, on the production networks.
//!
//! check → run the `before_live` hooks → validate → snapshot every replica → create
//! `<name>` stopped with the whole spec on the production networks (production IPs, the
//! source's MACs) → remove its placeholder ROOT → detach the replicas from the
//! appliance → attach boot at 0 and data at the planned ids → verify against
//! listVolumes → start → record `failed_over` (with the target VM).
//!
//! Every step after the hooks is the test failover's own (replica mode), given the
//! production networks and the state to record: one implementation of the hard part,
//! unwinding included.
//!
//! The hooks come first, so a failing hook (the source would not power off, the final
//! sync failed) stops the run before anything changed in CloudStack. When there are
//! hooks, they are preceded by the read-only validation (`check`) that follows them
//! again, so an obvious problem (a replica missing, a production network gone, a VM
//! already named `<name>`) is found *before* the source is powered off rather than
//! after; validation is repeated after the hooks because they may take long (a final
//! sync) and it is cheap. A failing hook is not retried — its failure is definitive
//! and names the hook, with the tail of its output — and the hooks after it do not
//! run; the operator fixes the cause and starts the failover again. The hooks are not
//! undone: if the run unwinds after they ran, the source stays as they left it
//! (powered off, synced) — ferry does not guess whether it should serve again or the
//! failover be retried — and the unwind says so in the run's events.
//! [`crate::rollback`] runs the `after_rollback` hooks; an operator can run them by
//! hand after an unwound live failover.

use async_trait::async_trait;
use engine::{Output, Saga, StepContext, StepError, TypedStep};
use store::{VmState, Workflow};

use crate::cleanup::OrSkipped;
use crate::common::{Network, RunInput, StartError, create_run, find_vm, input, protected_vm};
use crate::env::Env;
use crate::hooks::{HookContext, HookPoint, HookReport, run_all};
use crate::plan::{DevicePlan, KVM_MAX_DATA_DISKS};
use crate::test_failover::{
    AttachReplicas, CreateVm, DetachReplicas, Record, RemovePlaceholderRoot, Snapshot, StartVm,
    Validate, Validated, Verify,
};

/// Creates a live failover run for `vm_name` (which must be `ready_for_failover`), with
/// its device plan; its target VM is named like the protected VM. The engine then
/// executes it with [`saga`].
pub async fn start(env: &Env, vm_name: &str) -> Result<store::Run, StartError> {
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
    let input = RunInput {
        target_name: vm.name.clone(),
        plan,
        test_run_id: None,
    };
    create_run(env, &vm, Workflow::LiveFailover, Some("replica"), &input).await
}

/// The live failover saga.
pub fn saga() -> Saga<Env> {
    Saga::new(vec![
        Box::new(Check),
        Box::new(BeforeLiveHooks),
        Box::new(Validate(Network::Production)),
        Box::new(Snapshot),
        Box::new(crate::guest_prep::PrepareGuest),
        Box::new(CreateVm(Network::Production)),
        Box::new(RemovePlaceholderRoot),
        Box::new(DetachReplicas),
        Box::new(AttachReplicas),
        Box::new(Verify),
        Box::new(StartVm),
        Box::new(Record(VmState::FailedOver)),
    ])
}

/// Validation before the hooks run (only when there are hooks).
struct Check;

/// Runs the `before_live` hooks.
struct BeforeLiveHooks;

const CHECK: Output<OrSkipped<Validated>> = Output::new("check");
const BEFORE_LIVE_HOOKS: Output<HookReport> = Output::new("run-hooks");

#[async_trait]
impl TypedStep<Env> for Check {
    type Output = OrSkipped<Validated>;

    fn output(&self) -> Output<OrSkipped<Validated>> {
        CHECK
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
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

#[async_trait]
impl TypedStep<Env> for BeforeLiveHooks {
    type Output = HookReport;

    fn output(&self) -> Output<HookReport> {
        BEFORE_LIVE_HOOKS
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let hooks = HookPoint::BeforeLive.of(&cx.ctx.hooks);
        let vm = protected_vm(cx).await?;
        let context = HookContext {
            hook: HookPoint::BeforeLive.as_str(),
            vm: &vm.name,
            run_id: &cx.run.id,
        };
        let report = run_all(hooks, HookPoint::BeforeLive, &context).await;
        for ran in &report.ran {
            event(cx, "info", &format!("hook {ran}")).await;
        }
        if let Some(failed) = report.failed {
            return Err(StepError::Definitive(format!(
                "{failed}; nothing was changed in CloudStack"
            )));
        }
        Ok(report)
    }

    /// Nothing in CloudStack to undo; what the hooks did to the source is left as it is
    /// (see the module doc), and said so.
    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        if !cx.ctx.hooks.before_live.is_empty() {
            event(
                cx,
                "warn",
                "the before_live hooks are not undone: the source VM may be powered off; \
                 power it on (the after_rollback hooks do) if it should serve until the next attempt",
            )
            .await;
        }
        Ok(())
    }
}

async fn event(cx: &StepContext<'_, Env>, level: &str, message: &str) {
    if let Err(e) = cx
        .ctx
        .store
        .add_event(&cx.run.id, level, Some("run-hooks"), message, None)
        .await
    {
        tracing::warn!(run = %cx.run.id, error = %e, "cannot record an event");
    }
}

/// The plan of the live failover that rollback and commit follow up, stored as their
/// run's input (the live run's id alongside, for the record).
pub(crate) async fn follow_up(
    env: &Env,
    vm_name: &str,
    workflow: Workflow,
    hint: &'static str,
) -> Result<store::Run, StartError> {
    let vm = env
        .store
        .vm(vm_name)
        .await?
        .ok_or_else(|| StartError::NoVm(vm_name.to_string()))?;
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
        let input = crate::test_failover::run_input(&r)?;
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
        live_run_id: &'a str,
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

/// The VM a live failover created (`<name>`), if it still exists. A VM of that name
/// that is not the one recorded as the target is refused, never acted on: it could be
/// anything, and rollback destroys what this returns.
pub(crate) async fn live_vm(
    cx: &StepContext<'_, Env>,
) -> Result<Option<cloudstack::VirtualMachine>, StepError> {
    let input = input(cx)?;
    let vm = protected_vm(cx).await?;
    let found = find_vm(cx.ctx, &input.target_name).await?;
    if let (Some(found), Some(recorded)) = (&found, &vm.target_vm_id)
        && &found.id != recorded
    {
        return Err(StepError::Definitive(format!(
            "the VM named {} is {}, not {} which the live failover created; \
             ferry will not touch it — rename or remove it, or fix the record",
            found.name, found.id, recorded
        )));
    }
    Ok(found)
}
