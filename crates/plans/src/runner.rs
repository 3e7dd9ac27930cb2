//! Running a recovery plan (docs/decisions/0002-plan-runs.md): a plan run drives the
//! VMs' own runs tier by tier, from what the store holds, so that it resumes wherever
//! a crash left it.
//!
//! [`Driver::start`] checks the whole plan before anything changes (every VM
//! registered, in the state the workflow starts from, in no other run) and creates the
//! plan run. [`Driver::drive`] then repeats [`Driver::advance`] until it ends; each
//! advance reads the plan run and makes the next moves, every one a compare-and-set
//! on what it read:
//!
//! - a tier starts with its `before` hooks, then each VM's run is asked for (the VM
//!   marked `starting` first, so that a driver resumed after a crash in between adopts
//!   the run rather than asking twice — the store refuses a second active run of a VM
//!   anyway);
//! - a VM whose run ends `done` is `checking` after a failover (its readiness gates,
//!   against the target VM CloudStack has) or `ready` after a cleanup, rollback or
//!   commit; one whose run unwinds, sticks or is abandoned, or whose gates do not pass,
//!   is `failed`;
//! - when every VM of the tier is ready or failed: with a failure and the plan's
//!   policy `stop` (for a test or live failover), the later tiers are `skipped` and the
//!   plan run `stopped`; otherwise the tier's `after` hooks run, its delay passes, and
//!   the next tier starts. A cleanup or rollback takes the tiers in reverse order and
//!   always goes on to the end, VM by VM.
//! - a hook that fails stops the plan run under `stop` (the policy of a test or live
//!   failover; before its tier starts, or after it); under `continue` — always for a
//!   cleanup, rollback or commit — the plan run goes on. Either way its outcome is
//!   recorded on the plan run.
//!
//! A VM's gates run in a task of their own (one VM's slow gates never hold back
//! another's readiness); the rest of an advance is quick.
//!
//! A driver drives a plan run under a lease (the engine's kind, with its owner name
//! and time to live): it takes the lease before the first advance and renews it a
//! third of the way through; each taking raises the plan run's generation, and every
//! write carries the generation the driver read, so a driver whose lease was taken
//! over (its process frozen past the lease, then thawed) moves nothing and stops. A
//! plan run whose driver died is taken up by another worker's sweep once the lease
//! has run out — at once by a restarted process of the same worker name.
//!
//! Hooks are idempotent (see `workflows::hooks`): one that was running when its
//! worker died runs again when the plan run resumes; one that ended does not.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use ids::ProtectedVmId;

use inventory::Problem;
use store::{
    NewPlanRun, PlanRun, PlanRunState, PlanRunVm, PlanVmState, RunState, Store, StoreError,
    VmState, Workflow, now_ms,
};
use tokio_util::sync::CancellationToken;
use workflows::{Env, StartError, Worker};

use crate::definition::{PlanDefinition, Policy, When};
use crate::order::{failover_kind, policy, reversed, tier_of_order, wanted};

/// Why a plan run was not started.
#[derive(Debug, thiserror::Error)]
pub enum PlanStartError {
    #[error("no recovery plan named `{0}`: `ferry plan list` shows them")]
    NoPlan(String),
    /// The plan cannot run now: every reason, by VM.
    #[error("the plan cannot run now: {} problem(s)", .0.len())]
    Preflight(Vec<Problem>),
    #[error("plan {plan} is already running ({run_id}); wait for it to end")]
    Busy { plan: String, run_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a driver drives plan runs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The worker name its leases are taken under (the engine's).
    pub owner: String,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
    /// How often a plan run under way is looked at again.
    pub step: Duration,
}

/// Runs plans: starts them and drives them to their end.
#[derive(Clone)]
pub struct Driver {
    env: Env,
    worker: Worker,
    config: DriverConfig,
    /// The VMs (plan run, VM) whose gates a task of this driver is trying: each VM's
    /// gates run on their own, so that one VM's slow or failing gates never hold back
    /// another's (its `ready_at`, its RTO).
    checking: Arc<Mutex<HashSet<(String, ProtectedVmId)>>>,
    /// How many VMs' gates this driver tries at once: a tier of hundreds of VMs does
    /// not open hundreds of probes (sockets, processes) together.
    probes: Arc<Semaphore>,
    /// Changes each time a gate task of this driver has recorded a VM's readiness.
    checked: watch::Sender<u64>,
}

/// The VMs whose gates one driver tries at once.
const PROBING_VMS: usize = 64;

impl Driver {
    pub fn new(env: Env, worker: Worker, config: DriverConfig) -> Driver {
        Driver {
            env,
            worker,
            config,
            checking: Arc::default(),
            probes: Arc::new(Semaphore::new(PROBING_VMS)),
            checked: watch::Sender::new(0),
        }
    }

    fn store(&self) -> &Store {
        &self.env.store
    }

    /// The worker name its leases are taken under.
    pub fn owner(&self) -> &str {
        &self.config.owner
    }

    /// Checks the whole plan — every VM registered, in the state `workflow` starts
    /// from, in no other run — and creates its run, pending; nothing changes unless
    /// every VM passes.
    pub async fn start(&self, plan: &str, workflow: Workflow) -> Result<PlanRun, PlanStartError> {
        let stored = crate::catalog::get(self.store(), plan)
            .await?
            .ok_or_else(|| PlanStartError::NoPlan(plan.to_string()))?;
        let definition = &stored.definition;
        let mut problems = Vec::new();
        let mut vms = Vec::new();
        // A cleanup or rollback skips a VM that never failed over (its tier was not
        // reached): there is nothing of it to take back.
        let mut untouched = Vec::new();
        // The VMs that passed so far, by field, for the failover's own checks.
        let mut passed = Vec::new();
        for (t, tier) in definition.tiers.iter().enumerate() {
            // The order is its own inverse: the tier taken `t`th is the file's `order`th.
            let order = tier_of_order(definition, workflow, t as i64).unwrap_or(t);
            for (v, name) in tier.vms.iter().enumerate() {
                let field = format!("tiers[{t}].vms[{v}]");
                let Some(vm) = self.store().vm(name).await? else {
                    problems.push(Problem {
                        field,
                        message: format!("{name} is not a registered protected VM"),
                    });
                    continue;
                };
                if let Some(run) = self.store().active_run(&vm.id).await? {
                    problems.push(Problem {
                        field,
                        message: format!(
                            "{name} is in run {} ({}, {}); wait for it to end, or resolve it",
                            run.id, run.workflow, run.state
                        ),
                    });
                } else if reversed(workflow) && vm.state == VmState::ReadyForFailover {
                    untouched.push((vm.id.clone(), vm.name.clone()));
                } else if vm.state != wanted(workflow) {
                    problems.push(Problem {
                        field,
                        message: format!(
                            "{name} is {}, not {}: {}",
                            vm.state,
                            wanted(workflow),
                            workflows::what_first(name, vm.state)
                        ),
                    });
                } else {
                    passed.push((field, vm.clone()));
                }
                vms.push((vm.id, order as i64));
            }
        }
        // Every VM's failover checks (replicas on their appliance, agents, networks, …),
        // read-only and all at once: a VM of the last tier that cannot fail over stops
        // the plan before its first tier changes anything.
        let checked: Vec<store::ProtectedVm> = passed.iter().map(|(_, vm)| vm.clone()).collect();
        for (name, message) in
            workflows::preflight::failover_problems(&self.env, &checked, workflow).await
        {
            let field = passed
                .iter()
                .find(|(_, vm)| vm.name == name)
                .map_or_else(|| "tiers".to_string(), |(field, _)| field.clone());
            problems.push(Problem { field, message });
        }
        if problems.is_empty() && !vms.is_empty() && untouched.len() == vms.len() {
            problems.push(Problem {
                field: "tiers".into(),
                message: format!(
                    "no VM of plan {plan} is {}: there is nothing to take back",
                    wanted(workflow)
                ),
            });
        }
        if !problems.is_empty() {
            return Err(PlanStartError::Preflight(problems));
        }
        let new = NewPlanRun {
            plan_id: stored.plan.id.clone(),
            workflow,
            definition: stored.plan.definition.clone(),
            digest: stored.plan.digest.clone(),
            skipped: untouched
                .into_iter()
                .map(|(id, name)| {
                    (
                        id,
                        format!("{name} never failed over: nothing to take back"),
                    )
                })
                .collect(),
            vms,
        };
        match self.store().create_plan_run(&new).await {
            Err(StoreError::Constraint { constraint, .. })
                if constraint == "plan_runs_one_active_per_plan" =>
            {
                let run_id = self
                    .store()
                    .active_plan_runs()
                    .await?
                    .into_iter()
                    .find(|r| r.plan_id == stored.plan.id)
                    .map(|r| r.id)
                    .unwrap_or_default();
                Err(PlanStartError::Busy {
                    plan: plan.to_string(),
                    run_id,
                })
            }
            Ok(created) => Ok(created),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes plan run `id`'s lease and advances the plan run until it ends, or until
    /// `cancel`; its last state. `None` when another worker holds it, or took it over
    /// meanwhile: that worker drives it.
    pub async fn drive(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<PlanRun>, StoreError> {
        let lease = self.config.lease;
        let ttl = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let owner = &self.config.owner;
        let Some(generation) = self.store().acquire_plan_run(id, owner, ttl).await? else {
            return Ok(None);
        };
        tracing::info!(plan_run = %id, worker = %owner, generation, "driving a plan run");
        // The gate tasks of this drive stop with it.
        let mine = cancel.child_token();
        let _gates = mine.clone().drop_guard();
        let mut renewed = Instant::now();
        // A VM's run ending in this process, or its gates recorded, is looked at at
        // once; the step is for what other processes do.
        let mut ended = self.worker.executions_ended();
        let mut checked = self.checked.subscribe();
        loop {
            if renewed.elapsed() >= lease / 3 {
                match self
                    .store()
                    .renew_plan_run(id, owner, generation, ttl)
                    .await
                {
                    Ok(()) => renewed = Instant::now(),
                    Err(StoreError::Fenced { .. }) => {
                        tracing::warn!(plan_run = %id, generation, "the plan run was taken over; another worker drives it");
                        return Ok(None);
                    }
                    Err(e) if renewed.elapsed() >= lease => {
                        tracing::warn!(plan_run = %id, error = %e, "the plan run's lease could not be renewed in time; leaving it to whoever takes it");
                        return Ok(None);
                    }
                    Err(e) => {
                        tracing::warn!(plan_run = %id, error = %e, "the plan run's lease could not be renewed; trying again")
                    }
                }
            }
            let run = self
                .store()
                .plan_run(id)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: "plan run",
                    key: id.to_string(),
                })?;
            if run.generation != generation {
                tracing::warn!(plan_run = %id, generation, now = run.generation, "the plan run was taken over; another worker drives it");
                return Ok(None);
            }
            if !run.state.is_active() || cancel.is_cancelled() {
                self.store().release_plan_run(id, generation).await?;
                return Ok(Some(run));
            }
            let moved = match self.advance(&run, &mine).await {
                Ok(moved) => moved,
                Err(e) => {
                    tracing::warn!(plan_run = %id, error = %e, "a plan run could not advance; trying again");
                    false
                }
            };
            if !moved {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.step) => {}
                    _ = ended.changed() => {}
                    _ = checked.changed() => {}
                    _ = cancel.cancelled() => {}
                }
            }
        }
    }

    /// Makes the next moves of `run` from what it says; whether anything moved.
    pub async fn advance(
        &self,
        run: &PlanRun,
        cancel: &CancellationToken,
    ) -> Result<bool, StoreError> {
        let plan = PlanDefinition::from_stored(&run.definition)
            .map_err(|e| StoreError::Corrupt(format!("plan run {}'s plan: {e}", run.id)))?;
        match run.state {
            PlanRunState::Pending => {
                let failure =
                    crate::hooks::run_hooks(self.store(), run, &plan, None, When::Before).await?;
                if let Some(failure) = failure
                    && policy(&plan, run.workflow) == Policy::Stop
                {
                    return self.stop(run, &failure).await;
                }
                self.store()
                    .move_plan_run(
                        &run.id,
                        run.generation,
                        (PlanRunState::Pending, 0),
                        (PlanRunState::Running, 0),
                        None,
                    )
                    .await
            }
            PlanRunState::Running => self.advance_tier(run, &plan, cancel).await,
            _ => Ok(false),
        }
    }

    async fn advance_tier(
        &self,
        run: &PlanRun,
        plan: &PlanDefinition,
        cancel: &CancellationToken,
    ) -> Result<bool, StoreError> {
        let t = run.tier;
        let tier: Vec<&PlanRunVm> = run.vms.iter().filter(|v| v.tier == t).collect();
        let mut moved = false;
        if tier.iter().all(|v| v.state == PlanVmState::Waiting)
            && let Some(failure) =
                crate::hooks::run_hooks(self.store(), run, plan, Some(t), When::Before).await?
            && policy(plan, run.workflow) == Policy::Stop
        {
            return self.stop(run, &failure).await;
        }
        for vm in &tier {
            moved |= match vm.state {
                PlanVmState::Waiting => self.start_vm(run, vm).await?,
                PlanVmState::Starting => self.adopt_or_retry(run, vm).await?,
                PlanVmState::Running => self.follow(run, vm).await?,
                PlanVmState::Checking => {
                    self.spawn_check(run, plan, vm, cancel);
                    false
                }
                _ => false,
            };
        }
        if moved {
            return Ok(true);
        }
        // Nothing moved: is the tier through?
        if !tier.iter().all(|v| {
            matches!(
                v.state,
                PlanVmState::Ready | PlanVmState::Failed | PlanVmState::Skipped
            )
        }) {
            return Ok(false);
        }
        let failed: Vec<&&PlanRunVm> = tier
            .iter()
            .filter(|v| v.state == PlanVmState::Failed)
            .collect();
        if !failed.is_empty() && policy(plan, run.workflow) == Policy::Stop {
            let why = failed
                .iter()
                .map(|v| format!("{}: {}", v.vm_name, v.detail.as_deref().unwrap_or("failed")))
                .collect::<Vec<_>>()
                .join("; ");
            return self.stop(run, &why).await;
        }
        // A hook's failure is recorded on the plan run; under `continue` it goes on.
        if let Some(failure) =
            crate::hooks::run_hooks(self.store(), run, plan, Some(t), When::After).await?
            && policy(plan, run.workflow) == Policy::Stop
        {
            return self.stop(run, &failure).await;
        }
        let last = run.vms.iter().map(|v| v.tier).max().unwrap_or(0);
        if t == last {
            // Every VM is through: the plan's after hooks cannot hold anything back.
            crate::hooks::run_hooks(self.store(), run, plan, None, When::After).await?;
            let failed_all: Vec<&str> = run
                .vms
                .iter()
                .filter(|v| v.state == PlanVmState::Failed)
                .map(|v| v.vm_name.as_str())
                .collect();
            let (state, error) = if failed_all.is_empty() {
                (PlanRunState::Done, None)
            } else {
                (
                    PlanRunState::Failed,
                    Some(format!(
                        "not every VM came through: {}",
                        failed_all.join(", ")
                    )),
                )
            };
            return self
                .store()
                .move_plan_run(
                    &run.id,
                    run.generation,
                    (PlanRunState::Running, t),
                    (state, t),
                    error.as_deref(),
                )
                .await;
        }
        // The tier's delay, from when its last VM was through.
        let delay =
            tier_of_order(plan, run.workflow, t).map_or(0, |i| plan.tiers[i].delay_after_secs);
        let through = tier
            .iter()
            .filter_map(|v| v.ready_at.or(v.ended_at))
            .max()
            .unwrap_or(0);
        if now_ms() < through + (delay as i64) * 1000 {
            return Ok(false);
        }
        self.store()
            .move_plan_run(
                &run.id,
                run.generation,
                (PlanRunState::Running, t),
                (PlanRunState::Running, t + 1),
                None,
            )
            .await
    }

    /// Stops the plan run at its tier with `why`; the VMs not started are skipped —
    /// those of later tiers, and those of its own when a hook stopped it before they
    /// started.
    async fn stop(&self, run: &PlanRun, why: &str) -> Result<bool, StoreError> {
        for vm in run
            .vms
            .iter()
            .filter(|v| v.tier >= run.tier && v.state == PlanVmState::Waiting)
        {
            let mut skipped = vm.clone();
            skipped.state = PlanVmState::Skipped;
            skipped.detail = Some(if vm.tier == run.tier {
                "the plan run stopped before its tier started".into()
            } else {
                "its tier was not reached".into()
            });
            self.store()
                .set_plan_run_vm(&run.id, run.generation, &skipped, PlanVmState::Waiting)
                .await?;
        }
        self.store()
            .move_plan_run(
                &run.id,
                run.generation,
                (run.state, run.tier),
                (PlanRunState::Stopped, run.tier),
                Some(why),
            )
            .await
    }

    /// Asks for the VM's run: marked `starting` first, then `running` with the run.
    async fn start_vm(&self, run: &PlanRun, vm: &PlanRunVm) -> Result<bool, StoreError> {
        let mut starting = vm.clone();
        starting.state = PlanVmState::Starting;
        starting.started_at = Some(now_ms());
        if !self
            .store()
            .set_plan_run_vm(&run.id, run.generation, &starting, PlanVmState::Waiting)
            .await?
        {
            return Ok(false);
        }
        match start_workflow(&self.env, run.workflow, &vm.vm_name).await {
            Ok(started) => {
                self.worker.wake();
                let mut running = starting.clone();
                running.state = PlanVmState::Running;
                running.run_id = Some(started.id);
                self.store()
                    .set_plan_run_vm(&run.id, run.generation, &running, PlanVmState::Starting)
                    .await
            }
            Err(StartError::Store(e)) => Err(e),
            Err(e) => {
                // Another run of the VM may be ours, asked for just before a crash.
                if self.adopt(run, &starting).await? {
                    return Ok(true);
                }
                let mut failed = starting.clone();
                failed.state = PlanVmState::Failed;
                failed.detail = Some(format!("its {} could not start: {e}", run.workflow));
                self.store()
                    .set_plan_run_vm(&run.id, run.generation, &failed, PlanVmState::Starting)
                    .await
            }
        }
    }

    /// A VM found `starting` (a driver stopped between marking it and recording its
    /// run): its run if there is one since, else it is asked for again.
    async fn adopt_or_retry(&self, run: &PlanRun, vm: &PlanRunVm) -> Result<bool, StoreError> {
        if self.adopt(run, vm).await? {
            return Ok(true);
        }
        let mut waiting = vm.clone();
        waiting.state = PlanVmState::Waiting;
        self.store()
            .set_plan_run_vm(&run.id, run.generation, &waiting, PlanVmState::Starting)
            .await
    }

    /// Records as the VM's run its newest run of the plan run's workflow created since
    /// the VM was marked `starting`; whether there was one.
    async fn adopt(&self, run: &PlanRun, vm: &PlanRunVm) -> Result<bool, StoreError> {
        let since = vm.started_at.unwrap_or(i64::MAX);
        let newest = self
            .store()
            .runs(Some(&vm.vm_id), 1)
            .await?
            .into_iter()
            .next();
        match newest {
            Some(r) if r.workflow == run.workflow && r.created_at >= since => {
                let mut running = vm.clone();
                running.state = PlanVmState::Running;
                running.run_id = Some(r.id);
                self.store()
                    .set_plan_run_vm(&run.id, run.generation, &running, PlanVmState::Starting)
                    .await
            }
            _ => Ok(false),
        }
    }

    /// A VM whose run is under way: when it ends, `checking` (or `ready`) or `failed`.
    async fn follow(&self, run: &PlanRun, vm: &PlanRunVm) -> Result<bool, StoreError> {
        let Some(run_id) = &vm.run_id else {
            return Ok(false);
        };
        let Some(its) = self.store().run(run_id).await? else {
            return Ok(false);
        };
        let mut next = vm.clone();
        match its.state {
            RunState::Done => {
                next.ended_at = Some(its.finished_at.unwrap_or_else(now_ms));
                if failover_kind(run.workflow).is_some() {
                    next.state = PlanVmState::Checking;
                } else {
                    next.state = PlanVmState::Ready;
                    next.ready_at = next.ended_at;
                }
            }
            RunState::Unwound | RunState::Abandoned | RunState::Stuck => {
                next.ended_at = Some(its.finished_at.unwrap_or_else(now_ms));
                next.state = PlanVmState::Failed;
                let advice = if its.state == RunState::Stuck {
                    " (`ferry run show` says what to do)"
                } else {
                    ""
                };
                next.detail = Some(format!(
                    "its run {} is {}{advice}: {}",
                    its.id,
                    its.state,
                    its.error.as_deref().unwrap_or("no error recorded")
                ));
            }
            _ => return Ok(false),
        }
        self.store()
            .set_plan_run_vm(&run.id, run.generation, &next, PlanVmState::Running)
            .await
    }

    /// Tries the VM's gates in a task of its own, unless one of this driver already
    /// does; the task records `ready` or `failed`, which a later advance sees.
    fn spawn_check(
        &self,
        run: &PlanRun,
        plan: &PlanDefinition,
        vm: &PlanRunVm,
        cancel: &CancellationToken,
    ) {
        let key = (run.id.clone(), vm.vm_id.clone());
        if !self
            .checking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let (this, run, plan, vm, cancel) = (
            self.clone(),
            run.clone(),
            plan.clone(),
            vm.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            // Closed never: the semaphore lives as long as the driver.
            let _permit = this.probes.clone().acquire_owned().await;
            if let Err(e) = this.check(&run, &plan, &vm, &cancel).await {
                tracing::warn!(plan_run = %run.id, vm = %vm.vm_name, error = %e, "a VM's readiness could not be recorded; it is tried again");
            }
            this.checked.send_modify(|n| *n += 1);
            this.checking
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
    }

    /// Tries the VM's readiness gates against its target VM; `ready` or `failed`.
    async fn check(
        &self,
        run: &PlanRun,
        plan: &PlanDefinition,
        vm: &PlanRunVm,
        cancel: &CancellationToken,
    ) -> Result<bool, StoreError> {
        let mut next = vm.clone();
        let verdict = self.readiness(run, plan, vm, cancel).await;
        match verdict {
            Ok(readiness) => {
                next.readiness = serde_json::to_string(&readiness).ok();
                if readiness.ready {
                    next.state = PlanVmState::Ready;
                    next.ready_at = Some(now_ms());
                } else {
                    next.state = PlanVmState::Failed;
                    next.detail = Some(match readiness.first_unready() {
                        Some(g) => format!(
                            "not ready: gate {} did not pass ({})",
                            g.check,
                            g.last_seen.as_deref().unwrap_or("nothing seen")
                        ),
                        None => "not ready".into(),
                    });
                }
            }
            Err(why) => {
                next.state = PlanVmState::Failed;
                next.detail = Some(format!("its readiness could not be checked: {why}"));
            }
        }
        if cancel.is_cancelled() {
            return Ok(false);
        }
        self.store()
            .set_plan_run_vm(&run.id, run.generation, &next, PlanVmState::Checking)
            .await
    }

    async fn readiness(
        &self,
        run: &PlanRun,
        plan: &PlanDefinition,
        vm: &PlanRunVm,
        cancel: &CancellationToken,
    ) -> Result<readiness::Readiness, String> {
        let kind = failover_kind(run.workflow).ok_or("no failover to check")?;
        let gates = plan.gates_of(&vm.vm_name).unwrap_or_default();
        let run_id = vm.run_id.clone().ok_or("no run recorded")?;
        let its = self
            .store()
            .run(&run_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("its run is gone")?;
        let target = workflows::target::TargetPlan::of_run(self.store(), &its)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("its run recorded no target VM")?
            .target_name;
        crate::ready::check_named(&self.env.cloud, &target, &gates, &run_id, kind, cancel)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Asks for `workflow`'s run of VM `name` (a test failover in replica mode).
async fn start_workflow(
    env: &Env,
    workflow: Workflow,
    name: &str,
) -> Result<store::Run, StartError> {
    match workflow {
        Workflow::TestFailover => workflows::test_failover::start(env, name).await,
        Workflow::Cleanup => workflows::cleanup::start(env, name).await,
        Workflow::LiveFailover => workflows::live::start(env, name).await,
        Workflow::Rollback => workflows::rollback::start(env, name).await,
        Workflow::Commit => workflows::commit::start(env, name).await,
    }
}
