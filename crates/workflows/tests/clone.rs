//! Test failover in clone mode, and its cleanup, end to end against cloudsim: the test
//! VM gets new volumes made from the replicas' snapshots, while the replicas stay on
//! the appliance — attached, seen in its sysfs tree, their content untouched — the
//! whole time; cleanup deletes the clones (not only detaches them) and leaves pgtest1
//! at rest. Then the saga trio for clone mode: a definitive failure before and after
//! each step (the steps wrapped in [`Faulty`], as in `saga_trio.rs`), every action
//! twice, every undo twice, and a clone-mode cleanup interrupted at each step and run
//! again. After each, DESIGN §5's invariants are checked against cloudsim's state, and
//! no clone is left.

use ::ids::{RunId, VolumeId};
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloudsim::world::ids;
use common::{REPLICAS, Rig, TestResult, rig};
use engine::{Outcome, Saga, Step, StepContext, StepError};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use store::{RunState, StepState, VmState};
use workflows::test_failover::Mode;
use workflows::{Env, cleanup, test_failover};

// ---- The fault wrapper (as in saga_trio.rs) ------------------------------------------

/// What a wrapped step's action does.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// The real action, once.
    Once,
    /// Fail definitively without running the real action.
    FailBefore,
    /// Run the real action, then fail definitively anyway.
    FailAfter,
    /// Run the real action twice and return the second output.
    Twice,
}

/// A real step with a fault around it; `undo_twice` runs the real undo twice.
struct Faulty {
    inner: Box<dyn Step<Env>>,
    action: Action,
    undo_twice: bool,
}

#[async_trait]
impl Step<Env> for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Value, StepError> {
        match self.action {
            Action::Once => self.inner.run(cx).await,
            Action::FailBefore => Err(StepError::Definitive(format!(
                "injected failure before the action of {}",
                self.name()
            ))),
            Action::FailAfter => {
                self.inner.run(cx).await?;
                Err(StepError::Definitive(format!(
                    "injected failure after the action of {} ran",
                    self.name()
                )))
            }
            Action::Twice => {
                self.inner.run(cx).await?;
                self.inner.run(cx).await
            }
        }
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        output: Option<&Value>,
    ) -> Result<(), StepError> {
        self.inner.undo(cx, output).await?;
        if self.undo_twice {
            self.inner.undo(cx, output).await?;
        }
        Ok(())
    }
}

/// `saga` with each step wrapped as `fault` says for its position.
fn faulty(saga: Saga<Env>, fault: impl Fn(usize) -> (Action, bool)) -> Saga<Env> {
    Saga::new(
        saga.steps
            .into_iter()
            .enumerate()
            .map(|(k, inner)| {
                let (action, undo_twice) = fault(k);
                Box::new(Faulty {
                    inner,
                    action,
                    undo_twice,
                }) as Box<dyn Step<Env>>
            })
            .collect(),
    )
}

/// `saga` with `action` at step `k` and every other step untouched.
fn fault_at(saga: Saga<Env>, k: usize, action: Action) -> Saga<Env> {
    faulty(saga, |i| {
        (if i == k { action } else { Action::Once }, false)
    })
}

fn step_names(saga: &Saga<Env>) -> Vec<String> {
    saga.steps.iter().map(|s| s.name().to_string()).collect()
}

fn clone_saga() -> Saga<Env> {
    test_failover::saga_for(Mode::Clone)
}

/// Runs the cases one after another, each in its own task, and fails with the list of
/// the cases that failed, not only the first.
async fn run_cases(cases: Vec<(String, BoxFuture<'static, TestResult>)>) -> TestResult {
    let total = cases.len();
    let mut failed = Vec::new();
    for (label, case) in cases {
        let started = Instant::now();
        let problem = match tokio::spawn(case).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                Some(
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".to_string()),
                )
            }
            Err(e) => Some(e.to_string()),
        };
        eprintln!(
            "case {label}: {} ({:?})",
            if problem.is_some() { "FAILED" } else { "ok" },
            started.elapsed()
        );
        if let Some(problem) = problem {
            failed.push(format!("- {label}: {problem}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    Ok(())
}

async fn events(rig: &Rig, run_id: &RunId) -> String {
    match rig.env.store.events(&RunId::from(run_id)).await {
        Ok(events) => format!("{events:?}"),
        Err(e) => format!("(no events: {e})"),
    }
}

async fn expect_done(rig: &Rig, run_id: &RunId, outcome: Outcome) -> TestResult {
    anyhow::ensure!(
        outcome == Outcome::Done,
        "expected the run to be done, got {outcome:?}; events: {}",
        events(rig, run_id).await
    );
    Ok(())
}

/// The run unwound because of the failure injected at `step`, and every step that ran
/// was undone.
async fn expect_unwound_by(rig: &Rig, run_id: &RunId, outcome: Outcome, step: &str) -> TestResult {
    let Outcome::Unwound { error } = &outcome else {
        anyhow::bail!(
            "expected the run to unwind, got {outcome:?}; events: {}",
            events(rig, run_id).await
        );
    };
    anyhow::ensure!(
        error.contains("injected") && error.contains(step),
        "the run unwound for another reason than the failure injected at {step}: {error}"
    );
    assert_eq!(
        rig.env.store.run(run_id).await?.expect("a run").state,
        RunState::Unwound
    );
    let steps = rig.env.store.steps(&RunId::from(run_id)).await?;
    assert_eq!(steps.last().map(|s| s.name.as_str()), Some(step));
    for s in &steps {
        assert_eq!(s.state, StepState::Undone, "step {} was not undone", s.name);
    }
    Ok(())
}

// ---- What clone mode promises ----------------------------------------------------------

/// The volumes CloudStack has whose name is that of a clone of a pgtest1 drill.
async fn clones_alive(rig: &Rig) -> anyhow::Result<Vec<String>> {
    Ok(rig
        .env
        .cloud
        .list_volumes(&cloudstack::VolumeFilter::default())
        .await?
        .into_iter()
        .filter(|v| v.name.starts_with("pgtest1-test-") && v.name.contains("-disk-"))
        .map(|v| format!("{} ({}, {})", v.id, v.name, v.state))
        .collect())
}

/// Rest, as `assert_at_rest_since(registered)` checks it, and no clone anywhere.
async fn assert_at_rest_without_clones(rig: &Rig, registered: &store::ProtectedVm) -> TestResult {
    rig.assert_at_rest_since(Some(registered)).await?;
    let alive = clones_alive(rig).await?;
    assert!(alive.is_empty(), "clones left: {alive:?}");
    Ok(())
}

/// Watches the replicas while `work` runs: every few milliseconds each must be attached
/// to the appliance, seen in its sysfs tree, and at the content generation it had in
/// `before`. Returns the work's result and what the watch saw go wrong.
async fn watching_replicas<T>(
    rig: &Rig,
    before: &BTreeMap<String, u64>,
    work: impl std::future::Future<Output = T>,
) -> anyhow::Result<(T, Vec<String>)> {
    let finished = AtomicBool::new(false);
    let work = async {
        let out = work.await;
        finished.store(true, Ordering::SeqCst);
        out
    };
    let watch = async {
        let mut problems = Vec::new();
        let mut looks = 0;
        loop {
            let last = finished.load(Ordering::SeqCst);
            looks += 1;
            let volumes = rig.admin("volumes").await?;
            for id in REPLICAS {
                let Some(v) = volumes
                    .as_array()
                    .expect("a list")
                    .iter()
                    .find(|v| v["id"] == id)
                else {
                    problems.push(format!("replica {id} is gone"));
                    continue;
                };
                if v["virtualmachineid"] != ids::APPLIANCE_OMA {
                    problems.push(format!(
                        "look {looks}: replica {id} is on {}",
                        v["virtualmachineid"]
                    ));
                }
                if v["generation"].as_u64() != Some(before[id]) {
                    problems.push(format!(
                        "look {looks}: replica {id} is at generation {}",
                        v["generation"]
                    ));
                }
                if !rig.guest_sees(id) {
                    problems.push(format!("look {looks}: the appliance does not see {id}"));
                }
            }
            if last {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        anyhow::ensure!(looks > 1, "the watch never looked while the run went on");
        Ok::<_, anyhow::Error>(problems)
    };
    let (out, problems) = tokio::join!(work, watch);
    Ok((out, problems?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_mode_drill_gives_the_test_vm_new_volumes_and_leaves_the_replicas_alone()
-> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let mut sizes = BTreeMap::new();
    for id in REPLICAS {
        sizes.insert(
            id,
            rig.env
                .cloud
                .get_volume(&VolumeId::from(id))
                .await?
                .expect("a replica")
                .size,
        );
    }

    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    assert_eq!(run.mode.as_deref(), Some("clone"));
    let (outcome, problems) = watching_replicas(&rig, &before, async {
        rig.engine.execute(&run.id, &clone_saga(), &rig.env).await
    })
    .await?;
    expect_done(&rig, &run.id, outcome?).await?;
    assert_eq!(
        problems,
        Vec::<String>::new(),
        "the replicas moved or changed"
    );

    let vms = rig.test_vms().await?;
    assert_eq!(vms.len(), 1);
    let target = &vms[0];
    assert_eq!(target.state, "Running");
    assert_eq!(
        target.nic[0].macaddress.as_deref(),
        Some("00:50:56:8a:11:01")
    );
    assert_eq!(target.nic[0].networkid, ids::NETWORK_TEST);
    let mut on_target: Vec<cloudstack::Volume> = rig
        .env
        .cloud
        .list_volumes(&cloudstack::VolumeFilter {
            virtual_machine_id: Some(target.id.clone()),
            ..Default::default()
        })
        .await?;
    on_target.sort_by_key(|v| v.deviceid);
    assert_eq!(on_target.len(), 2, "two volumes and nothing else");
    let clone_ids: Vec<String> = on_target.iter().map(|v| v.id.to_string()).collect();
    for (v, (replica, device, kind, key)) in on_target.iter().zip([
        (ids::PGTEST1_DISK_2000, 0, "ROOT", 2000),
        (ids::PGTEST1_DISK_2001, 1, "DATADISK", 2001),
    ]) {
        assert!(!REPLICAS.contains(&v.id.as_str()), "{} is a replica", v.id);
        assert_eq!(v.deviceid, Some(device));
        assert_eq!(v.volume_type, kind);
        assert_eq!(
            v.size, sizes[replica],
            "the clone of {replica} has its size"
        );
        assert_eq!(v.name, format!("{}-disk-{key}", target.name));
        assert!(
            rig.env
                .store
                .is_created_volume(&VolumeId::from(&v.id))
                .await?,
            "clone {} is recorded as ferry's",
            v.id
        );
    }
    let vm = rig.env.store.vm("pgtest1").await?.expect("registered");
    assert_eq!(vm.state, VmState::TestFailedOver);
    assert_eq!(
        vm.target_vm_id.as_ref().map(|id| id.as_str()),
        Some(target.id.as_str())
    );
    for d in &vm.disks {
        assert_eq!(
            d.attachment.vm_id.as_ref().map(|id| id.as_str()),
            Some(ids::APPLIANCE_OMA),
            "the store still has {} on the appliance",
            d.disk.replica_volume_id
        );
    }
    let verify = &rig.env.store.steps(&RunId::from(&run.id)).await?[6];
    assert_eq!(verify.name, "verify");
    let map: Value = serde_json::from_str(verify.output.as_deref().expect("an output"))?;
    assert_eq!(map["device_map"][0]["volume_id"], clone_ids[0].as_str());
    assert_eq!(
        map["device_map"][0]["replica_volume_id"],
        ids::PGTEST1_DISK_2000
    );
    assert_eq!(map["device_map"][1]["device_id"], 1);
    // The test VM wrote to its clones, not to the replicas.
    let sim = rig.admin("volumes").await?;
    for (clone, replica) in clone_ids.iter().zip(REPLICAS) {
        let generation = sim
            .as_array()
            .expect("a list")
            .iter()
            .find(|v| v["id"] == clone.as_str())
            .and_then(|v| v["generation"].as_u64())
            .expect("the clone");
        assert!(
            generation > before[replica],
            "the test VM wrote to clone {clone} of {replica}"
        );
    }
    let stats = rig.stats().await?;
    let calls = |c: &str| stats.calls.get(c).copied().unwrap_or(0);
    assert_eq!(calls("createVolume"), 2, "{:?}", stats.calls);
    assert_eq!(calls("attachVolume"), 2, "{:?}", stats.calls);
    assert_eq!(
        calls("detachVolume"),
        1,
        "only the placeholder ROOT was detached: {:?}",
        stats.calls
    );

    let cleanup_run = cleanup::start(&rig.env, "pgtest1").await?;
    assert_eq!(cleanup_run.mode.as_deref(), Some("clone"));
    let (outcome, problems) = watching_replicas(&rig, &before, async {
        rig.engine
            .execute(&cleanup_run.id, &cleanup::saga(), &rig.env)
            .await
    })
    .await?;
    expect_done(&rig, &cleanup_run.id, outcome?).await?;
    assert_eq!(
        problems,
        Vec::<String>::new(),
        "the replicas moved or changed"
    );
    rig.assert_at_rest().await?;
    for id in &clone_ids {
        assert!(
            rig.env
                .cloud
                .get_volume(&VolumeId::from(id))
                .await?
                .is_none(),
            "clone {id} was deleted, not only detached"
        );
        assert!(!rig.env.store.is_created_volume(&VolumeId::from(id)).await?);
    }
    assert!(clones_alive(&rig).await?.is_empty());
    assert_eq!(rig.generations().await?, before);
    let stats = rig.stats().await?;
    assert_eq!(
        stats.calls.get("revertSnapshot"),
        None,
        "nothing is reverted in clone mode"
    );
    assert_eq!(
        stats.calls.get("deleteVolume").copied(),
        Some(3),
        "the placeholder and the clones"
    );

    // Ready for another drill.
    test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    Ok(())
}

/// The data clone's attach fails inside CloudStack's job: the run unwinds — boot clone
/// off the test VM, test VM destroyed, both clones deleted, snapshots deleted — and the
/// replicas never noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_attach_unwinds_to_rest_with_no_clone_left() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    // attachVolume calls of a clone-mode drill: the boot clone (1st), the data clone (2nd).
    rig.arm(json!({"command": "attachVolume", "nth": 2,
        "fault": {"kind": "job_error", "errorcode": 530, "errortext": "Failed to attach volume DATA to VM: agent error"}}))
        .await?;
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    let (outcome, problems) = watching_replicas(&rig, &before, async {
        rig.engine.execute(&run.id, &clone_saga(), &rig.env).await
    })
    .await?;
    let outcome = outcome?;
    let Outcome::Unwound { error } = &outcome else {
        panic!("expected an unwound run, got {outcome:?}");
    };
    assert!(error.contains("attach-clones"), "{error}");
    assert!(error.contains("agent error"), "{error}");
    assert_eq!(
        problems,
        Vec::<String>::new(),
        "the replicas moved or changed"
    );
    assert_at_rest_without_clones(&rig, &registered).await?;
    assert_eq!(rig.generations().await?, before);
    Ok(())
}

/// A clone-mode run executed with the replica-mode saga stops before a replica moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_mode_run_is_never_executed_as_a_replica_mode_one() -> TestResult {
    let rig = rig().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    let outcome = rig
        .engine
        .execute(&run.id, &test_failover::saga(), &rig.env)
        .await?;
    let Outcome::Unwound { error } = &outcome else {
        panic!("expected an unwound run, got {outcome:?}");
    };
    assert!(error.contains("clone-mode"), "{error}");
    assert_at_rest_without_clones(&rig, &registered).await?;
    assert_eq!(
        rig.stats().await?.calls.get("detachVolume").copied(),
        Some(1),
        "only the placeholder ROOT was detached"
    );
    // And the run's own saga is what a worker picks for it.
    let run = rig.env.store.run(&run.id).await?.expect("a run");
    assert_eq!(
        step_names(&test_failover::saga_for_run(&run).map_err(anyhow::Error::msg)?),
        step_names(&clone_saga())
    );
    Ok(())
}

// ---- The saga trio, clone mode ---------------------------------------------------------

/// A clone-mode drill with `action` at step `k` unwinds to rest, with no clone left and
/// the replicas' content as it was — whether or not the test VM ran: it ran on clones.
async fn unwinds_to_rest(k: usize, action: Action) -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    let saga = fault_at(clone_saga(), k, action);
    let step = saga.steps[k].name().to_string();
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &run.id, outcome, &step).await?;
    assert_at_rest_without_clones(&rig, &registered).await?;
    assert_eq!(
        rig.generations().await?,
        before,
        "the replicas' content changed"
    );
    Ok(())
}

fn each_step(action: Action) -> Vec<(String, BoxFuture<'static, TestResult>)> {
    step_names(&clone_saga())
        .into_iter()
        .enumerate()
        .map(|(k, name)| (format!("{k} {name}"), unwinds_to_rest(k, action).boxed()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_any_step_unwinds_the_clone_mode_drill_to_rest() -> TestResult {
    run_cases(each_step(Action::FailBefore)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_any_step_ran_unwinds_the_clone_mode_drill_to_rest() -> TestResult {
    run_cases(each_step(Action::FailAfter)).await
}

/// Every action of the clone-mode drill and of its cleanup run twice in a row ends
/// where one run does: one VM, two clones, two attaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clone_mode_action_twice_ends_where_one_run_does() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    let saga = faulty(clone_saga(), |_| (Action::Twice, false));
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_done(&rig, &run.id, outcome).await?;
    let stats = rig.stats().await?;
    let calls = |c: &str| stats.calls.get(c).copied().unwrap_or(0);
    assert_eq!(
        (
            calls("deployVirtualMachine"),
            calls("createVolume"),
            calls("attachVolume")
        ),
        (1, 2, 2),
        "{:?}",
        stats.calls
    );
    assert_eq!(rig.test_vms().await?.len(), 1);
    assert_eq!(clones_alive(&rig).await?.len(), 2);

    let run = cleanup::start(&rig.env, "pgtest1").await?;
    let saga = faulty(cleanup::saga(), |_| (Action::Twice, false));
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_done(&rig, &run.id, outcome).await?;
    rig.assert_at_rest().await?;
    assert!(clones_alive(&rig).await?.is_empty());
    assert_eq!(rig.generations().await?, before);
    Ok(())
}

/// A failure at the last step, after its action ran, unwinds every step; each undo run
/// twice still leaves the VM at rest with no clone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clone_mode_undo_twice_still_unwinds_to_rest() -> TestResult {
    let rig = rig().await?;
    let registered = rig.env.store.vm("pgtest1").await?.expect("registered");
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    let last = clone_saga().steps.len() - 1;
    let saga = faulty(clone_saga(), |k| {
        (
            if k == last {
                Action::FailAfter
            } else {
                Action::Once
            },
            true,
        )
    });
    let step = saga.steps[last].name().to_string();
    let outcome = rig.engine.execute(&run.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &run.id, outcome, &step).await?;
    assert_at_rest_without_clones(&rig, &registered).await?;
    Ok(())
}

/// After a clone-mode drill, a cleanup that fails with `action` at step `k` ends
/// unwound (a forward workflow: nothing undone); a second cleanup finishes the work.
async fn clone_cleanup_finishes_after(k: usize, action: Action) -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let run = test_failover::start_with_mode(&rig.env, "pgtest1", Mode::Clone).await?;
    let outcome = rig.engine.execute(&run.id, &clone_saga(), &rig.env).await?;
    expect_done(&rig, &run.id, outcome).await?;

    let first = cleanup::start(&rig.env, "pgtest1").await?;
    let saga = fault_at(cleanup::saga(), k, action);
    let step = saga.steps[k].name().to_string();
    let outcome = rig.engine.execute(&first.id, &saga, &rig.env).await?;
    expect_unwound_by(&rig, &first.id, outcome, &step).await?;

    let second = cleanup::start(&rig.env, "pgtest1").await?;
    assert_eq!(second.mode.as_deref(), Some("clone"));
    let outcome = rig
        .engine
        .execute(&second.id, &cleanup::saga(), &rig.env)
        .await?;
    expect_done(&rig, &second.id, outcome).await?;
    rig.assert_at_rest().await?;
    assert!(clones_alive(&rig).await?.is_empty());
    assert_eq!(rig.generations().await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_mode_cleanup_run_again_finishes_what_an_interrupted_one_left() -> TestResult {
    let mut cases = Vec::new();
    for (label, action) in [
        ("failing before", Action::FailBefore),
        ("failing after", Action::FailAfter),
    ] {
        for (k, name) in step_names(&cleanup::saga()).into_iter().enumerate() {
            cases.push((
                format!("{k} {name}, {label}"),
                clone_cleanup_finishes_after(k, action).boxed(),
            ));
        }
    }
    run_cases(cases).await
}
