//! The workflows as values, for the reliability tests that run each of them the same
//! way (the fault matrix, the soak, the crash matrix): how to bring pgtest1 to where a
//! workflow starts, how to start it and with which saga, and what its end states must
//! look like in cloudsim — done, or (for the test and live failovers, which unwind)
//! unwound to rest. And DESIGN §5's invariants, which hold whatever happened.

use ::ids::VmId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudsim::world::ids;
use engine::{Outcome, Saga};
use futures::StreamExt;
use futures::future::BoxFuture;
use store::VmState;
use workflows::test_failover::Mode;
use workflows::{Env, StartError, cleanup, commit, live, rollback, test_failover};

use super::{REPLICAS, Rig, RigOptions, TestResult, rig_with};

/// A workflow (the test failover and its cleanup in each mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flow {
    TestReplica,
    TestClone,
    CleanupReplica,
    CleanupClone,
    Live,
    Rollback,
    Commit,
}

/// What a flow's checks compare with: pgtest1 as registered, and the replicas'
/// content before anything ran and when the flow started.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub registered: store::ProtectedVm,
    pub before: BTreeMap<String, u64>,
    pub at_start: BTreeMap<String, u64>,
    /// The target VM when the flow started (the live VM for rollback and commit).
    pub target: Option<VmId>,
}

impl Baseline {
    /// The baseline of a flow that starts now, after the flows run since `self` was
    /// taken: the same registration and original content, the content and target now.
    pub async fn now(&self, rig: &Rig) -> anyhow::Result<Baseline> {
        Ok(Baseline {
            registered: self.registered.clone(),
            before: self.before.clone(),
            at_start: rig.generations().await?,
            target: rig
                .env
                .store
                .vm("pgtest1")
                .await?
                .and_then(|v| v.target_vm_id),
        })
    }
}

impl Flow {
    pub const ALL: [Flow; 7] = [
        Flow::TestReplica,
        Flow::TestClone,
        Flow::CleanupReplica,
        Flow::CleanupClone,
        Flow::Live,
        Flow::Rollback,
        Flow::Commit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flow::TestReplica => "test failover (replica)",
            Flow::TestClone => "test failover (clone)",
            Flow::CleanupReplica => "cleanup (replica)",
            Flow::CleanupClone => "cleanup (clone)",
            Flow::Live => "live failover",
            Flow::Rollback => "rollback",
            Flow::Commit => "commit",
        }
    }

    /// A forward workflow finishes what it started when run again; the others unwind.
    pub fn is_forward(self) -> bool {
        matches!(
            self,
            Flow::CleanupReplica | Flow::CleanupClone | Flow::Rollback | Flow::Commit
        )
    }

    /// The flow that must have run (done) before this one can start.
    pub fn before(self) -> Option<Flow> {
        match self {
            Flow::CleanupReplica => Some(Flow::TestReplica),
            Flow::CleanupClone => Some(Flow::TestClone),
            Flow::Rollback | Flow::Commit => Some(Flow::Live),
            _ => None,
        }
    }

    /// The state pgtest1 is in once the flow is done.
    pub fn done_state(self) -> VmState {
        match self {
            Flow::TestReplica | Flow::TestClone => VmState::TestFailedOver,
            Flow::CleanupReplica | Flow::CleanupClone | Flow::Rollback => VmState::ReadyForFailover,
            Flow::Live => VmState::FailedOver,
            Flow::Commit => VmState::Committed,
        }
    }

    pub async fn start(self, env: &Env) -> Result<store::Run, StartError> {
        match self {
            Flow::TestReplica => {
                test_failover::start_with_mode(env, "pgtest1", Mode::Replica).await
            }
            Flow::TestClone => test_failover::start_with_mode(env, "pgtest1", Mode::Clone).await,
            Flow::CleanupReplica | Flow::CleanupClone => cleanup::start(env, "pgtest1").await,
            Flow::Live => live::start(env, "pgtest1").await,
            Flow::Rollback => rollback::start(env, "pgtest1").await,
            Flow::Commit => commit::start(env, "pgtest1").await,
        }
    }

    pub fn saga(self) -> Saga<Env> {
        match self {
            Flow::TestReplica => test_failover::saga_for(Mode::Replica),
            Flow::TestClone => test_failover::saga_for(Mode::Clone),
            Flow::CleanupReplica | Flow::CleanupClone => cleanup::saga(),
            Flow::Live => live::saga(),
            Flow::Rollback => rollback::saga(),
            Flow::Commit => commit::saga(),
        }
    }

    /// Brings a fresh rig's pgtest1 to where the flow starts (running the flow before
    /// it), and returns what the checks compare with.
    pub async fn prepare(self, rig: &Rig) -> anyhow::Result<Baseline> {
        let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
        let before = rig.generations().await?;
        if let Some(first) = self.before() {
            let run = first.start(&rig.env).await?;
            let outcome = rig.engine.execute(&run.id, &first.saga(), &rig.env).await?;
            anyhow::ensure!(
                outcome == Outcome::Done,
                "preparing {}: {} ended {outcome:?}",
                self.name(),
                first.name()
            );
        }
        let target = rig
            .env
            .store
            .vm("pgtest1")
            .await?
            .and_then(|v| v.target_vm_id);
        Ok(Baseline {
            registered,
            before,
            at_start: rig.generations().await?,
            target,
        })
    }

    /// Runs the flow once to its end with `rig.engine`: the run and its outcome.
    pub async fn run(self, rig: &Rig) -> anyhow::Result<(store::Run, Outcome)> {
        let run = self.start(&rig.env).await?;
        let outcome = rig.engine.execute(&run.id, &self.saga(), &rig.env).await?;
        Ok((run, outcome))
    }

    /// The checks of the flow's end state once it is done.
    pub async fn assert_done(self, rig: &Rig, base: &Baseline) -> TestResult {
        assert_invariants(rig).await?;
        let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
        anyhow::ensure!(
            vm.state == self.done_state(),
            "{} done, yet pgtest1 is {}",
            self.name(),
            vm.state
        );
        match self {
            Flow::TestReplica => {
                let target = assert_target_with(rig, TargetKind::Test, Disks::Replicas).await?;
                anyhow::ensure!(
                    vm.target_vm_id.as_ref().map(|id| id.as_str()) == Some(target.as_str())
                );
            }
            Flow::TestClone => {
                let target = assert_target_with(rig, TargetKind::Test, Disks::Clones).await?;
                anyhow::ensure!(
                    vm.target_vm_id.as_ref().map(|id| id.as_str()) == Some(target.as_str())
                );
                anyhow::ensure!(
                    rig.generations().await? == base.at_start,
                    "a clone-mode drill changed the replicas' content"
                );
                for id in REPLICAS {
                    anyhow::ensure!(rig.guest_sees(id), "the appliance lost {id}");
                }
            }
            Flow::Live => {
                let target = assert_target_with(rig, TargetKind::Live, Disks::Replicas).await?;
                anyhow::ensure!(
                    vm.target_vm_id.as_ref().map(|id| id.as_str()) == Some(target.as_str())
                );
                anyhow::ensure!(rig.snapshots().await? == 2, "the way back is kept");
            }
            Flow::CleanupReplica | Flow::CleanupClone => {
                rig.assert_at_rest().await?;
                assert_no_clones(rig).await?;
                anyhow::ensure!(
                    rig.generations().await? == base.before,
                    "the replicas' content is not what it was before the drill"
                );
            }
            Flow::Rollback => {
                rig.assert_at_rest().await?;
                assert_no_live_vm(rig).await?;
                anyhow::ensure!(rig.snapshots().await? == 0, "snapshots left");
                anyhow::ensure!(
                    rig.generations().await? == base.at_start,
                    "a rollback must keep production's writes"
                );
            }
            Flow::Commit => {
                anyhow::ensure!(rig.snapshots().await? == 0, "snapshots left");
                anyhow::ensure!(vm.target_vm_id == base.target, "the committed VM changed");
                let target = assert_target_with(rig, TargetKind::Live, Disks::Replicas).await?;
                anyhow::ensure!(Some(VmId::from(target)) == base.target);
            }
        }
        Ok(())
    }

    /// The checks of an unwound test or live failover: pgtest1 at rest, as it was.
    pub async fn assert_unwound(self, rig: &Rig, base: &Baseline) -> TestResult {
        assert!(!self.is_forward());
        assert_invariants(rig).await?;
        rig.assert_at_rest_since(Some(&base.registered)).await?;
        assert_no_clones(rig).await?;
        assert_no_live_vm(rig).await?;
        anyhow::ensure!(
            rig.generations().await? == base.before,
            "the replicas' content changed (generations)"
        );
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Test,
    Live,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Disks {
    Replicas,
    Clones,
}

/// The one target VM, running on the right network with pgtest1's MAC, boot disk at
/// 0 and data disk at 1 and nothing else; returns its id.
async fn assert_target_with(rig: &Rig, kind: TargetKind, disks: Disks) -> anyhow::Result<String> {
    let vms: Vec<_> = rig
        .all_vms()
        .await?
        .into_iter()
        .filter(|v| v.id != ids::APPLIANCE_OMA)
        .collect();
    anyhow::ensure!(
        vms.len() == 1,
        "exactly one target VM, found {:?}",
        vms.iter().map(|v| (&v.name, &v.state)).collect::<Vec<_>>()
    );
    let target = &vms[0];
    match kind {
        TargetKind::Test => anyhow::ensure!(target.name.starts_with("pgtest1-test-")),
        TargetKind::Live => anyhow::ensure!(target.name == "pgtest1"),
    }
    anyhow::ensure!(target.state == "Running", "the target is {}", target.state);
    anyhow::ensure!(target.nic.len() == 1);
    anyhow::ensure!(target.nic[0].macaddress.as_deref() == Some("00:50:56:8a:11:01"));
    let network = match kind {
        TargetKind::Test => ids::NETWORK_TEST,
        TargetKind::Live => ids::NETWORK_PRODUCTION,
    };
    anyhow::ensure!(target.nic[0].networkid == network);
    let mut on_target = rig.volumes_on(&target.id).await?;
    on_target.sort_by_key(|v| v.deviceid);
    let ids_types: Vec<(Option<i64>, &str)> = on_target
        .iter()
        .map(|v| (v.deviceid, v.volume_type.as_str()))
        .collect();
    anyhow::ensure!(
        ids_types == vec![(Some(0), "ROOT"), (Some(1), "DATADISK")],
        "boot at 0 and data at 1 and nothing else: {ids_types:?}"
    );
    match disks {
        Disks::Replicas => {
            anyhow::ensure!(
                on_target[0].id == ids::PGTEST1_DISK_2000
                    && on_target[1].id == ids::PGTEST1_DISK_2001,
                "the replicas at their planned ids"
            );
            for id in REPLICAS {
                anyhow::ensure!(!rig.guest_sees(id), "the appliance still sees {id}");
            }
        }
        Disks::Clones => {
            for v in &on_target {
                anyhow::ensure!(
                    rig.created(&v.id).await?,
                    "{} on the test VM is not a clone ferry recorded",
                    v.id
                );
            }
        }
    }
    Ok(target.id.to_string())
}

/// The volumes CloudStack has whose name is that of a clone of a pgtest1 drill.
pub async fn clones_alive(rig: &Rig) -> anyhow::Result<Vec<String>> {
    Ok(rig
        .all_volumes()
        .await?
        .into_iter()
        .filter(|v| v.name.starts_with("pgtest1-test-") && v.name.contains("-disk-"))
        .map(|v| format!("{} ({}, {})", v.id, v.name, v.state))
        .collect())
}

pub async fn assert_no_clones(rig: &Rig) -> TestResult {
    let alive = clones_alive(rig).await?;
    anyhow::ensure!(alive.is_empty(), "clones left: {alive:?}");
    Ok(())
}

async fn assert_no_live_vm(rig: &Rig) -> TestResult {
    if let Some(vm) = rig
        .all_vms()
        .await?
        .into_iter()
        .find(|v| v.name == "pgtest1")
    {
        anyhow::bail!("VM pgtest1 ({}, {}) was left", vm.id, vm.state);
    }
    Ok(())
}

/// DESIGN §5's invariants, whatever happened: each replica volume is attached to
/// exactly one of {appliance, target VM} and the store says so; no VM but the
/// appliance and the store's target exists; every volume is the appliance's ROOT, a
/// replica, or one ferry created and still tracks.
pub async fn assert_invariants(rig: &Rig) -> TestResult {
    invariants(rig).await
}

async fn invariants(rig: &Rig) -> TestResult {
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    let allowed: Vec<&str> = std::iter::once(ids::APPLIANCE_OMA)
        .chain(vm.target_vm_id.as_ref().map(|id| id.as_str()))
        .collect();
    for d in &vm.disks {
        let id = &d.disk.replica_volume_id;
        let v = rig.replica(id).await?;
        let on = v.virtualmachineid.as_ref().map(|id| id.as_str());
        anyhow::ensure!(
            on.is_some_and(|on| allowed.contains(&on)),
            "replica {id} is on {on:?}, not on one of {allowed:?}"
        );
        anyhow::ensure!(
            d.attachment.vm_id.as_ref().map(|id| id.as_str()) == on
                && d.attachment.device_id == v.deviceid,
            "the store has replica {id} on {:?} at {:?}, CloudStack on {on:?} at {:?}",
            d.attachment.vm_id,
            d.attachment.device_id,
            v.deviceid
        );
    }
    for v in rig.all_vms().await? {
        anyhow::ensure!(
            allowed.contains(&v.id.as_str()),
            "VM {} ({}, {}) is not tracked",
            v.name,
            v.id,
            v.state
        );
    }
    for v in rig.all_volumes().await? {
        let known = v.id == ids::OMA_ROOT
            || REPLICAS.contains(&v.id.as_str())
            || rig.created(&v.id).await?;
        anyhow::ensure!(
            known,
            "volume {} ({}, on {:?}) is neither a replica nor one ferry tracks",
            v.id,
            v.name,
            v.virtualmachineid
        );
    }
    Ok(())
}

/// The async jobs CloudStack ran to success, per command (`listAsyncJobs`): what the
/// soak and the lost-response tests compare with a clean run's to find a duplicated
/// operation.
pub async fn succeeded_jobs(rig: &Rig) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for job in rig.env.cloud.list_async_jobs().await? {
        if job.jobstatus == cloudstack::JobStatus::Succeeded {
            let cmd = job.cmd.unwrap_or_default();
            let short = cmd.rsplit('.').next().unwrap_or_default().to_string();
            *out.entry(short).or_default() += 1;
        }
    }
    Ok(out)
}

/// What one clean run of a flow asked of CloudStack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// API calls per command (reads and polls included).
    pub calls: BTreeMap<String, u64>,
    /// Async jobs that succeeded, per command class (`AttachVolumeCmd` …).
    pub jobs: BTreeMap<String, u64>,
}

/// The calls and jobs between `before` and `after`.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(c, n)| {
            (
                c.clone(),
                n.saturating_sub(before.get(c).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

impl Rig {
    /// The calls and succeeded jobs so far.
    pub async fn census_now(&self) -> anyhow::Result<Census> {
        Ok(Census {
            calls: self.stats().await?.calls,
            jobs: succeeded_jobs(self).await?,
        })
    }
}

impl Census {
    /// What happened between `before` and `self`, less the one listAsyncJobs call
    /// `before` made itself after reading the calls.
    pub fn since(&self, before: &Census) -> Census {
        let mut calls = before.calls.clone();
        *calls.entry("listAsyncJobs".into()).or_default() += 1;
        Census {
            calls: delta(&calls, &self.calls),
            jobs: delta(&before.jobs, &self.jobs),
        }
    }
}

/// One clean run of `flow` on a fresh rig made with `options`, checked done: what it
/// asked of CloudStack (the flow before it excluded).
pub async fn census(flow: Flow, options: RigOptions) -> anyhow::Result<Census> {
    let rig = rig_with(options).await?;
    let base = flow.prepare(&rig).await?;
    let before = rig.census_now().await?;
    let (run, outcome) = flow.run(&rig).await?;
    anyhow::ensure!(
        outcome == Outcome::Done,
        "the clean run of {} ended {outcome:?}: {}",
        flow.name(),
        super::trio::events(&rig, &run.id).await
    );
    flow.assert_done(&rig, &base).await?;
    Ok(rig.census_now().await?.since(&before))
}

/// The commands CloudStack runs as async jobs among those the workflows call: every
/// mutation but deleteVolume, which is synchronous. Their failures and their loss
/// happen inside a job.
pub const ASYNC_COMMANDS: [&str; 10] = [
    "deployVirtualMachine",
    "startVirtualMachine",
    "stopVirtualMachine",
    "destroyVirtualMachine",
    "attachVolume",
    "detachVolume",
    "createVolume",
    "createSnapshot",
    "revertSnapshot",
    "deleteSnapshot",
];

/// One case per call of `commands` that a clean run of `flow` (on a rig made with
/// `options`) made — `case(flow, clean census, command, nth)` — run four at a time as
/// the matrix `suite`; `what` says what went wrong when a case fails.
pub async fn each_call_of<Fut>(
    flow: Flow,
    suite: &str,
    options: RigOptions,
    commands: &[&str],
    case: impl Fn(Flow, Census, String, u64) -> Fut,
    what: &str,
) -> TestResult
where
    Fut: std::future::Future<Output = TestResult> + Send + 'static,
{
    use futures::FutureExt;
    let started = Instant::now();
    let clean = census(flow, options).await?;
    let mut cases = Vec::new();
    for (command, n) in &clean.calls {
        if commands.contains(&command.as_str()) {
            for nth in 1..=*n {
                cases.push((
                    format!("{command} #{nth}"),
                    case(flow, clean.clone(), command.clone(), nth).boxed(),
                ));
            }
        }
    }
    run_matrix(
        suite,
        flow,
        started,
        cases,
        4,
        |_| format!("jobs={:?}", clean.jobs),
        &format!("{what} in {} went wrong", flow.name()),
    )
    .await
}

/// CloudStack's mutating commands among those the workflows call: each changes the
/// cloud, so a suite that disturbs a call tries every occurrence of these.
pub const MUTATIONS: [&str; 11] = [
    "deployVirtualMachine",
    "startVirtualMachine",
    "stopVirtualMachine",
    "destroyVirtualMachine",
    "attachVolume",
    "detachVolume",
    "createVolume",
    "deleteVolume",
    "createSnapshot",
    "revertSnapshot",
    "deleteSnapshot",
];

/// Runs `cases` at most `parallel` at a time, each in its own task: each case's label
/// with its result (a panic as an error) and how long it took, in the order they ended.
pub async fn run_parallel<T: Send + 'static>(
    cases: Vec<(String, BoxFuture<'static, anyhow::Result<T>>)>,
    parallel: usize,
) -> Vec<(String, anyhow::Result<T>, Duration)> {
    futures::stream::iter(cases)
        .map(|(label, case)| async move {
            let started = Instant::now();
            let result = match tokio::spawn(case).await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("the case panicked: {e}")),
            };
            (label, result, started.elapsed())
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Runs the cases of a reliability matrix of `flow`, started at `started`, at most
/// `parallel` at a time ([`run_parallel`]); prints the line `RELIABILITY {suite}
/// {flow:?} tried=… passed=… {figures} secs=…` that `scripts/reliability` collects
/// (`figures` made from the results); and fails with every case that failed, after
/// "{how many} of {total} {what}".
pub async fn run_matrix<T: Send + 'static>(
    suite: &str,
    flow: Flow,
    started: Instant,
    cases: Vec<(String, BoxFuture<'static, anyhow::Result<T>>)>,
    parallel: usize,
    figures: impl FnOnce(&[(String, anyhow::Result<T>, Duration)]) -> String,
    what: &str,
) -> TestResult {
    let total = cases.len();
    let results = run_parallel(cases, parallel).await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(label, result, took)| {
            result
                .as_ref()
                .err()
                .map(|e| format!("- {label} ({took:?}): {e:#}"))
        })
        .collect();
    eprintln!(
        "RELIABILITY {suite} {flow:?} tried={total} passed={} {} secs={:.1}",
        total - failed.len(),
        figures(&results),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of {total} {what}:\n{}",
        failed.len(),
        failed.join("\n")
    );
    Ok(())
}
