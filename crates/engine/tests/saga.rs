//! The saga trio on a store (SQLite, and PostgreSQL for two workers): every step
//! failing in turn unwinds everything; transient errors are retried; an undo that
//! fails leaves the run stuck until retried; a worker that dies mid-step is resumed at
//! that step by another; a worker that lost its lease is fenced off; a cancelled run
//! unwinds. The "resources" are a set the steps ensure into being and undo.

use ::ids::RunId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine::{
    Engine, EngineConfig, Outcome, Saga, Step, StepContext, StepError, abandon, retry_stuck,
};
use serde_json::{Value, json};
use store::testing::TestStore;
use store::{
    Appliance, Controller, Disk, Firmware, GuestOs, GuestPrep, NewVm, Nic, RunState, StepState,
    VmSpec, Workflow,
};

type TestResult = anyhow::Result<()>;

/// What a step should do wrong, by step name.
#[derive(Debug, Clone)]
enum Fault {
    Definitive,
    /// Fail transiently this many times, then work.
    Transient(u32),
    /// Never return (the worker "dies" in the middle).
    Hang,
    UndoFails,
}

#[derive(Default)]
struct World {
    resources: Mutex<BTreeSet<String>>,
    faults: Mutex<BTreeMap<String, Fault>>,
    /// Every action and undo call, in order.
    calls: Mutex<Vec<String>>,
}

impl World {
    fn fault(&self, step: &str, fault: Fault) {
        self.faults.lock().unwrap().insert(step.into(), fault);
    }
    fn heal(&self, step: &str) {
        self.faults.lock().unwrap().remove(step);
    }
    fn resources(&self) -> Vec<String> {
        self.resources.lock().unwrap().iter().cloned().collect()
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    /// Notes an action or undo call.
    fn record(&self, call: impl Into<String>) {
        self.calls.lock().unwrap().push(call.into());
    }
    fn fault_of(&self, step: &str) -> Option<Fault> {
        self.faults.lock().unwrap().get(step).cloned()
    }
}

/// Ensures a resource named after the step exists; the undo ensures it is gone.
struct Make(&'static str);

#[async_trait]
impl Step<World> for Make {
    fn name(&self) -> &str {
        self.0
    }

    async fn run(&self, cx: &StepContext<'_, World>) -> Result<Value, StepError> {
        let w = cx.ctx;
        w.record(format!("run {}", self.0));
        match w.fault_of(self.0) {
            Some(Fault::Definitive) => {
                // A composite step that did part of its work before failing.
                w.resources
                    .lock()
                    .unwrap()
                    .insert(format!("{}-partial", self.0));
                return Err(StepError::Definitive(format!("{} refused", self.0)));
            }
            Some(Fault::Transient(n)) if n > 0 => {
                w.faults
                    .lock()
                    .unwrap()
                    .insert(self.0.into(), Fault::Transient(n - 1));
                return Err(StepError::Transient(format!("{} busy", self.0)));
            }
            Some(Fault::Hang) => {
                w.resources.lock().unwrap().insert(self.0.to_string());
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        w.resources.lock().unwrap().insert(self.0.to_string());
        Ok(json!({ "made": self.0, "after": cx.outputs.keys().collect::<Vec<_>>() }))
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, World>,
        _output: Option<&Value>,
    ) -> Result<(), StepError> {
        let w = cx.ctx;
        w.record(format!("undo {}", self.0));
        if matches!(w.fault_of(self.0), Some(Fault::UndoFails)) {
            return Err(StepError::Definitive(format!("cannot remove {}", self.0)));
        }
        let mut r = w.resources.lock().unwrap();
        r.remove(self.0);
        r.remove(&format!("{}-partial", self.0));
        Ok(())
    }
}

const STEPS: [&str; 4] = ["snapshot", "create-vm", "move-disks", "start"];

fn saga() -> Saga<World> {
    Saga::new(
        STEPS
            .iter()
            .map(|s| Box::new(Make(s)) as Box<dyn Step<World>>)
            .collect(),
    )
}

fn config(owner: &str) -> EngineConfig {
    EngineConfig {
        owner: owner.into(),
        lease: Duration::from_secs(30),
        max_attempts: 3,
        backoff_first: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        outage_tolerance: Duration::from_secs(60),
    }
}

/// A new SQLite store with a run on its protected VM, and a world without faults.
async fn fresh() -> anyhow::Result<(TestStore, RunId, World)> {
    let t = store::testing::sqlite().await?;
    let run = run_on(&t).await?;
    Ok((t, run, World::default()))
}

/// A store with a protected VM and a new run on it.
async fn run_on(t: &TestStore) -> anyhow::Result<RunId> {
    let store = &t.store;
    store
        .upsert_appliance(&Appliance {
            name: "oma".into(),
            vm_id: "vm-oma".into(),
            zone_id: "z".into(),
            volumed_url: None,
            sysfs_root: None,
        })
        .await?;
    let vm = store
        .register_vm(
            &NewVm {
                name: "pgtest1".into(),
                source_id: "s".into(),
                appliance: "oma".into(),
                spec: VmSpec {
                    vcpu: 1,
                    memory_mb: 512,
                    cpu_speed_mhz: 1000,
                    firmware: Firmware::Bios,
                    secure_boot: false,
                    guest_os: GuestOs::Linux,
                    guest_prep: GuestPrep::Skip,
                },
                nics: vec![Nic {
                    position: 0,
                    mac: "00:50:56:00:00:01".into(),
                    source_network: "n".into(),
                    test_network_id: "t".into(),
                    test_ip: None,
                    production_network_id: "p".into(),
                    production_ip: None,
                }],
                disks: vec![Disk {
                    device_key: 2000,
                    controller: Controller::Scsi,
                    bus: 0,
                    unit: 0,
                    capacity_bytes: 1 << 30,
                    label: "d".into(),
                    is_boot: true,
                    boot_order: None,
                    replica_volume_id: "vol".into(),
                }],
            },
            &[],
        )
        .await?;
    Ok(store
        .create_run(&vm.id, Workflow::TestFailover, None)
        .await?
        .id)
}

#[tokio::test]
async fn a_clean_run_is_done_and_each_step_sees_the_outputs_before_it() -> TestResult {
    let (t, run, world) = fresh().await?;
    let engine = Engine::new(t.store.clone(), config("w"));
    assert_eq!(engine.execute(&run, &saga(), &world).await?, Outcome::Done);
    assert_eq!(
        world.resources(),
        vec!["create-vm", "move-disks", "snapshot", "start"]
    );
    let steps = t.store.steps(&run).await?;
    assert!(
        steps
            .iter()
            .all(|s| s.state == StepState::Done && s.attempts == 1)
    );
    let last: Value = serde_json::from_str(steps[3].output.as_deref().unwrap())?;
    assert_eq!(
        last["after"],
        json!(["create-vm", "move-disks", "snapshot"])
    );
    let record = t.store.run(&run).await?.unwrap();
    assert_eq!(record.state, RunState::Done);
    assert!(record.lease_owner.is_none(), "the lease is given back");
    // Executing an ended run changes nothing.
    assert_eq!(engine.execute(&run, &saga(), &world).await?, Outcome::Done);
    assert_eq!(world.calls().len(), 4);
    Ok(())
}

#[tokio::test]
async fn a_definitive_failure_at_any_step_unwinds_everything_in_reverse() -> TestResult {
    for (failing, name) in STEPS.iter().enumerate() {
        let (t, run, world) = fresh().await?;
        world.fault(name, Fault::Definitive);
        let outcome = Engine::new(t.store.clone(), config("w"))
            .execute(&run, &saga(), &world)
            .await?;
        assert_eq!(
            outcome,
            Outcome::Unwound {
                error: format!("step {name} failed: {name} refused")
            }
        );
        assert!(
            world.resources().is_empty(),
            "left behind after failing {name}: {:?}",
            world.resources()
        );
        let undos: Vec<String> = world
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("undo"))
            .collect();
        let expected: Vec<String> = STEPS[..=failing]
            .iter()
            .rev()
            .map(|s| format!("undo {s}"))
            .collect();
        assert_eq!(
            undos, expected,
            "undone in reverse, the failed step included"
        );
        let record = t.store.run(&run).await?.unwrap();
        assert_eq!(record.state, RunState::Unwound);
        assert_eq!(
            record.error.as_deref(),
            Some(format!("step {name} failed: {name} refused").as_str())
        );
        let steps = t.store.steps(&run).await?;
        let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
        assert_eq!(states, vec![StepState::Undone; failing + 1]);
        // Each step keeps its action's own times and has its undo's: the action ended
        // before the next action began, its undo began after the later steps' undos
        // ended (undos run in reverse) and after its own action ended.
        for (i, step) in steps.iter().enumerate() {
            let (Some(started), Some(finished), Some(undo_started), Some(undo_finished)) = (
                step.started_at,
                step.finished_at,
                step.undo_started_at,
                step.undo_finished_at,
            ) else {
                panic!("times missing: {step:?}");
            };
            assert!(
                started <= finished && finished <= undo_started && undo_started <= undo_finished,
                "{step:?}"
            );
            if let Some(next) = steps.get(i + 1) {
                assert!(finished <= next.started_at.unwrap(), "{step:?} / {next:?}");
                assert!(
                    next.undo_finished_at.unwrap() <= undo_started,
                    "{step:?} / {next:?}"
                );
            }
        }
        assert!(
            t.store
                .events(&run)
                .await?
                .iter()
                .any(|e| e.message.starts_with("run unwound")),
            "the log says what happened"
        );
    }
    Ok(())
}

#[tokio::test]
async fn transient_errors_are_retried_and_too_many_unwind() -> TestResult {
    let (t, run, world) = fresh().await?;
    world.fault("move-disks", Fault::Transient(2));
    let engine = Engine::new(t.store.clone(), config("w"));
    assert_eq!(engine.execute(&run, &saga(), &world).await?, Outcome::Done);
    assert_eq!(t.store.steps(&run).await?[2].attempts, 3);

    let (t, run, world) = fresh().await?;
    world.fault("create-vm", Fault::Transient(10));
    let outcome = Engine::new(t.store.clone(), config("w"))
        .execute(&run, &saga(), &world)
        .await?;
    assert_eq!(
        outcome,
        Outcome::Unwound {
            error: "step create-vm failed after 3 attempts: create-vm busy".into()
        }
    );
    assert!(world.resources().is_empty());
    Ok(())
}

#[tokio::test]
async fn an_undo_that_fails_leaves_the_run_stuck_until_retried() -> TestResult {
    let (t, run, world) = fresh().await?;
    world.fault("start", Fault::Definitive);
    world.fault("create-vm", Fault::UndoFails);
    let engine = Engine::new(t.store.clone(), config("w"));
    let Outcome::Stuck { error } = engine.execute(&run, &saga(), &world).await? else {
        panic!("expected a stuck run");
    };
    assert!(
        error.starts_with("undo of step create-vm failed: cannot remove create-vm"),
        "{error}"
    );
    assert!(
        error.contains("step start failed: start refused"),
        "the original error is kept: {error}"
    );
    assert_eq!(
        world.resources(),
        vec!["create-vm", "snapshot"],
        "what is left is what is stuck"
    );
    let record = t.store.run(&run).await?.unwrap();
    assert_eq!(record.state, RunState::Stuck);
    let stuck = &t.store.steps(&run).await?[1];
    assert_eq!(stuck.state, StepState::UndoFailed);
    assert!(
        stuck.undo_started_at.is_some() && stuck.undo_finished_at >= stuck.undo_started_at,
        "the failed undo's own time: {stuck:?}"
    );
    assert!(
        stuck.finished_at <= stuck.undo_started_at,
        "the action's end is kept: {stuck:?}"
    );
    // Still stuck when executed again: nothing runs by itself.
    assert!(matches!(
        engine.execute(&run, &saga(), &world).await?,
        Outcome::Stuck { .. }
    ));
    // The operator fixes the cause and retries.
    world.heal("create-vm");
    retry_stuck(&t.store, &run).await?;
    assert!(matches!(
        engine.execute(&run, &saga(), &world).await?,
        Outcome::Unwound { .. }
    ));
    assert!(world.resources().is_empty());
    assert!(
        retry_stuck(&t.store, &run).await.is_err(),
        "only a stuck run is retried"
    );
    Ok(())
}

/// A step whose action changes something no undo puts back (as an operator's hook
/// powers the source VM off), and says so.
struct PowerOff;

#[async_trait]
impl Step<World> for PowerOff {
    fn name(&self) -> &str {
        "power-off"
    }

    async fn run(&self, cx: &StepContext<'_, World>) -> Result<Value, StepError> {
        cx.ctx.record("run power-off");
        Ok(json!({ "off": true }))
    }

    fn unwind_leaves(&self, output: &Value) -> Option<String> {
        output["off"]
            .as_bool()?
            .then(|| "the source is powered off".to_string())
    }
}

#[tokio::test]
async fn what_no_undo_puts_back_is_in_the_error_however_the_unwind_ends() -> TestResult {
    let (t, run, world) = fresh().await?;
    let saga = Saga::new(vec![
        Box::new(PowerOff) as Box<dyn Step<World>>,
        Box::new(Make("create-vm")),
        Box::new(Make("start")),
    ]);
    world.fault("start", Fault::Definitive);
    world.fault("create-vm", Fault::UndoFails);
    let engine = Engine::new(t.store.clone(), config("w"));
    // Stuck at an undo that comes before power-off's.
    let Outcome::Stuck { error } = engine.execute(&run, &saga, &world).await? else {
        panic!("expected a stuck run");
    };
    assert!(
        error.starts_with("undo of step create-vm failed")
            && error.contains("step start failed: start refused; the source is powered off"),
        "{error}"
    );
    let events = t.store.events(&run).await?;
    assert!(
        events.iter().any(|e| e.level == "warn"
            && e.message == "the unwind will not undo this: the source is powered off"),
        "{events:#?}"
    );
    // Unstuck, it unwinds to the end, and still says it.
    world.heal("create-vm");
    retry_stuck(&t.store, &run).await?;
    let Outcome::Unwound { error } = engine.execute(&run, &saga, &world).await? else {
        panic!("expected an unwound run");
    };
    assert_eq!(
        error,
        "step start failed: start refused; the source is powered off"
    );
    // A run that fails before the step's action finished says nothing of it.
    let (t, run, world) = fresh().await?;
    world.fault("create-vm", Fault::Definitive);
    let saga = Saga::new(vec![
        Box::new(Make("create-vm")) as Box<dyn Step<World>>,
        Box::new(PowerOff),
    ]);
    let engine = Engine::new(t.store.clone(), config("w"));
    let Outcome::Unwound { error } = engine.execute(&run, &saga, &world).await? else {
        panic!("expected an unwound run");
    };
    assert_eq!(error, "step create-vm failed: create-vm refused");
    Ok(())
}

#[tokio::test]
async fn a_cancelled_run_unwinds_before_its_next_step() -> TestResult {
    let (t, run, world) = fresh().await?;
    t.store.request_cancel(&run).await?;
    let outcome = Engine::new(t.store.clone(), config("w"))
        .execute(&run, &saga(), &world)
        .await?;
    assert_eq!(
        outcome,
        Outcome::Unwound {
            error: "cancelled by an operator".into()
        }
    );
    assert!(world.calls().is_empty(), "no step ran");
    Ok(())
}

/// Worker A dies inside `move-disks` (its task is dropped); its lease runs out; worker
/// B resumes the run at `move-disks` — not from the start — and finishes it. Then A's
/// generation is stale: anything it would still write is refused.
async fn a_dead_worker_is_resumed_where_it_was(t: TestStore) -> TestResult {
    let run = run_on(&t).await?;
    let world = Arc::new(World::default());
    world.fault("move-disks", Fault::Hang);
    let mut a_config = config("worker-a");
    a_config.lease = Duration::from_millis(300);
    let a = Engine::new(t.store.clone(), a_config);
    let task = {
        let world = Arc::clone(&world);
        let run = run.clone();
        tokio::spawn(async move { a.execute(&run, &saga(), &world).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !world.calls().contains(&"run move-disks".to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker A never reached move-disks"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    let a_generation = t.store.run(&run).await?.unwrap().generation;
    world.heal("move-disks");

    let b = Engine::new(t.store.clone(), config("worker-b"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        match b.execute(&run, &saga(), &world).await? {
            Outcome::Held => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "A's lease never ran out"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other,
        }
    };
    assert_eq!(outcome, Outcome::Done);
    let runs: Vec<String> = world
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("run"))
        .collect();
    assert_eq!(
        runs,
        vec![
            "run snapshot",
            "run create-vm",
            "run move-disks",
            "run move-disks",
            "run start"
        ],
        "B re-ran only the step A died in"
    );
    assert_eq!(
        world.resources(),
        vec!["create-vm", "move-disks", "snapshot", "start"]
    );
    assert_eq!(t.store.steps(&run).await?[2].attempts, 2);
    let stale = store::StepRecord {
        position: 3,
        name: "start".into(),
        state: StepState::Failed,
        attempts: 9,
        output: None,
        error: Some("from a ghost".into()),
        started_at: None,
        finished_at: None,
        undo_started_at: None,
        undo_finished_at: None,
    };
    assert!(matches!(
        t.store.put_step(&run, a_generation, &stale).await,
        Err(store::StoreError::Fenced { .. })
    ));
    assert_eq!(t.store.steps(&run).await?[3].state, StepState::Done);
    Ok(())
}

#[tokio::test]
async fn a_dead_worker_is_resumed_where_it_was_on_sqlite() -> TestResult {
    a_dead_worker_is_resumed_where_it_was(store::testing::sqlite().await?).await
}

#[tokio::test]
async fn a_dead_worker_is_resumed_where_it_was_on_postgres() -> TestResult {
    a_dead_worker_is_resumed_where_it_was(store::testing::postgres().await?).await
}

#[tokio::test]
async fn a_second_worker_does_not_run_a_held_run() -> TestResult {
    let t = store::testing::postgres().await?;
    let run = run_on(&t).await?;
    let generation = t
        .store
        .acquire_run(&run, "someone-else", 60_000)
        .await?
        .unwrap();
    let world = World::default();
    assert_eq!(
        Engine::new(t.store.clone(), config("w"))
            .execute(&run, &saga(), &world)
            .await?,
        Outcome::Held
    );
    assert!(world.calls().is_empty());
    assert_eq!(t.store.run(&run).await?.unwrap().generation, generation);
    Ok(())
}

#[tokio::test]
async fn a_stuck_run_can_be_abandoned_and_frees_its_vm() -> TestResult {
    let (t, run, world) = fresh().await?;
    let engine = Engine::new(t.store.clone(), config("w"));
    assert!(
        abandon(&t.store, &run).await.is_err(),
        "a pending run is not abandoned"
    );
    world.fault("start", Fault::Definitive);
    world.fault("snapshot", Fault::UndoFails);
    assert!(matches!(
        engine.execute(&run, &saga(), &world).await?,
        Outcome::Stuck { .. }
    ));
    let vm_id = t.store.run(&run).await?.unwrap().vm_id;
    assert!(
        t.store
            .create_run(&vm_id, store::Workflow::Cleanup, None)
            .await
            .is_err(),
        "stuck holds the VM"
    );
    abandon(&t.store, &run).await?;
    let record = t.store.run(&run).await?.unwrap();
    assert_eq!(record.state, RunState::Abandoned);
    assert!(
        record
            .error
            .unwrap()
            .contains("undo of step snapshot failed"),
        "the reason stays"
    );
    assert_eq!(
        engine.execute(&run, &saga(), &world).await?,
        Outcome::Ended(RunState::Abandoned)
    );
    assert_eq!(
        world.resources(),
        vec!["snapshot"],
        "what the failed undo left is still there"
    );
    t.store
        .create_run(&vm_id, store::Workflow::Cleanup, None)
        .await?;
    Ok(())
}

// ---- Typed outputs -------------------------------------------------------------------

/// What `Deploy` records: the shape a later step reads back, typed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Deployed {
    vm_id: String,
    disks: usize,
}

const DEPLOY: engine::Output<Deployed> = engine::Output::new("deploy");
const BOOT: engine::Output<String> = engine::Output::new("boot");

struct Deploy;
struct Boot;

#[async_trait]
impl engine::TypedStep<World> for Deploy {
    type Output = Deployed;

    fn output(&self) -> engine::Output<Deployed> {
        DEPLOY
    }

    async fn run(&self, cx: &StepContext<'_, World>) -> Result<Deployed, StepError> {
        cx.ctx.record("run deploy");
        Ok(Deployed {
            vm_id: "vm-1".into(),
            disks: 2,
        })
    }

    async fn undo(
        &self,
        cx: &StepContext<'_, World>,
        output: Option<Deployed>,
    ) -> Result<(), StepError> {
        cx.ctx
            .record(format!("undo deploy {:?}", output.map(|o| o.vm_id)));
        Ok(())
    }
}

#[async_trait]
impl engine::TypedStep<World> for Boot {
    type Output = String;

    fn output(&self) -> engine::Output<String> {
        BOOT
    }

    async fn run(&self, cx: &StepContext<'_, World>) -> Result<String, StepError> {
        let deployed = cx.lookup(DEPLOY)?;
        assert_eq!(cx.lookup_if_done(BOOT)?, None, "not done yet");
        if cx.ctx.fault_of("boot").is_some() {
            return Err(StepError::Definitive("no boot disk".into()));
        }
        Ok(format!(
            "{} booted from {} disks",
            deployed.vm_id, deployed.disks
        ))
    }
}

#[tokio::test]
async fn a_typed_step_records_json_and_the_next_reads_it_as_its_type() -> TestResult {
    let (t, run, world) = fresh().await?;
    let engine = Engine::new(t.store.clone(), config("w"));
    let saga = Saga::new(vec![Box::new(Deploy), Box::new(Boot)]);
    assert_eq!(saga.steps[0].name(), "deploy");
    assert_eq!(engine.execute(&run, &saga, &world).await?, Outcome::Done);
    let steps = t.store.steps(&run).await?;
    let recorded: Value = serde_json::from_str(steps[0].output.as_deref().unwrap())?;
    assert_eq!(recorded, json!({ "vm_id": "vm-1", "disks": 2 }));
    let booted: Value = serde_json::from_str(steps[1].output.as_deref().unwrap())?;
    assert_eq!(booted, json!("vm-1 booted from 2 disks"));

    // Unwinding hands the undo the action's output, typed.
    let run = run_on_again(&t).await?;
    world.fault("boot", Fault::Definitive);
    let outcome = engine.execute(&run, &saga, &world).await?;
    assert!(matches!(outcome, Outcome::Unwound { .. }), "{outcome:?}");
    assert!(
        world
            .calls()
            .contains(&"undo deploy Some(\"vm-1\")".to_string()),
        "{:?}",
        world.calls()
    );
    Ok(())
}

/// A second run on the VM of [`run_on`], once its first has ended.
async fn run_on_again(t: &TestStore) -> anyhow::Result<RunId> {
    let vm = t.store.vm("pgtest1").await?.expect("registered");
    Ok(t.store
        .create_run(&vm.id, Workflow::TestFailover, None)
        .await?
        .id)
}
