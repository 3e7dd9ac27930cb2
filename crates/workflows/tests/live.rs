//! Live failover, rollback and commit of the job sheet's pgtest1, end to end against
//! cloudsim, with the operator hooks (commands, and HTTP calls to a server in the test)
//! — each run checked against cloudsim's state, not only ferry's records.

use ::ids::{RunId, VmId};
mod common;

use common::flows::Flow;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cloudsim::world::ids;
use common::{REPLICAS, Rig, TestResult, rig};
use serde_json::{Value, json};
use store::{RunState, VmState};
use workflows::{Hook, StartError, commit, live, rollback, test_failover};

const MAC: &str = "00:50:56:8a:11:01";
const PRODUCTION_IP: &str = "10.20.0.21";

/// Commands of cloudsim that change something, with how often each was called.
async fn mutations(rig: &Rig) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(rig
        .stats()
        .await?
        .calls
        .into_iter()
        .filter(|(command, _)| !command.starts_with("list") && command != "queryAsyncJobResult")
        .collect())
}

/// pgtest1 failed over: `pgtest1` running on the production network with the source's
/// MAC and its production IP, boot at 0 and data at 1, nothing else; the store agrees.
async fn assert_failed_over(rig: &Rig) -> anyhow::Result<cloudstack::VirtualMachine> {
    let target = rig.live_vm().await?.expect("a VM named pgtest1");
    assert_eq!(target.state, "Running");
    assert_eq!((target.cpunumber, target.memory), (Some(4), Some(8192)));
    assert_eq!(target.nic.len(), 1);
    assert_eq!(target.nic[0].networkid, ids::NETWORK_PRODUCTION);
    assert_eq!(target.nic[0].macaddress.as_deref(), Some(MAC));
    assert_eq!(target.nic[0].ipaddress.as_deref(), Some(PRODUCTION_IP));
    rig.assert_replicas_on(&target, VmState::FailedOver).await?;
    Ok(target)
}

/// A live failover of pgtest1 that goes through ([`assert_failed_over`]).
async fn fail_over(rig: &Rig) -> anyhow::Result<cloudstack::VirtualMachine> {
    let run = live::start(&rig.env, "pgtest1").await?;
    rig.done(&run, live::saga()).await?;
    assert_failed_over(rig).await
}

/// What a run that stopped before changing anything must leave: cloudsim saw no
/// mutating call, the store's record of pgtest1 is as it was, the replicas are on the
/// appliance and seen there, and there is no snapshot and no VM `pgtest1`.
struct Untouched {
    vm: store::ProtectedVm,
    mutations: BTreeMap<String, u64>,
    generations: BTreeMap<String, u64>,
}

impl Untouched {
    async fn now(rig: &Rig) -> anyhow::Result<Self> {
        Ok(Untouched {
            vm: rig.env.store.vm("pgtest1").await?.unwrap(),
            mutations: mutations(rig).await?,
            generations: rig.generations().await?,
        })
    }

    async fn check(&self, rig: &Rig) -> TestResult {
        assert_eq!(
            mutations(rig).await?,
            self.mutations,
            "no createSnapshot, deployVirtualMachine, attach or detach"
        );
        // The VM's record is as it was; only its version moved, by the run's start.
        let mut vm = rig.env.store.vm("pgtest1").await?.unwrap();
        assert!(vm.version > self.vm.version, "the run's start is counted");
        vm.version = self.vm.version;
        assert_eq!(vm, self.vm);
        assert_eq!(self.vm.state, VmState::ReadyForFailover);
        for id in REPLICAS {
            let v = rig.replica(id).await?;
            assert_eq!(
                v.virtualmachineid.as_ref().map(|id| id.as_str()),
                Some(ids::APPLIANCE_OMA)
            );
            assert!(rig.guest_sees(id));
        }
        assert_eq!(rig.snapshots().await?, 0);
        assert!(rig.live_vm().await?.is_none());
        assert_eq!(rig.generations().await?, self.generations);
        Ok(())
    }
}

/// A command hook: `program` with `args`, killed after `timeout_secs`.
fn command(program: &str, args: &[&str], timeout_secs: u64) -> Hook {
    Hook::Command {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        timeout_secs,
    }
}

fn sh(script: String) -> Hook {
    command("sh", &["-c", &script], 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgtest1_fails_over_live_rolls_back_fails_over_again_and_commits() -> TestResult {
    let mut rig = rig().await?;
    let log = tempfile::NamedTempFile::new()?;
    let record = |what: &str| {
        sh(format!(
            "echo \"{what} $FERRY_HOOK $FERRY_VM\" >> {}",
            log.path().display()
        ))
    };
    rig.env.hooks.before_live = vec![record("power-off"), record("final-sync")];
    rig.env.hooks.after_rollback = vec![record("power-on")];
    let before = rig.generations().await?;

    // Live failover.
    let run = live::start(&rig.env, "pgtest1").await?;
    rig.done(&run, live::saga()).await?;
    let target = assert_failed_over(&rig).await?;
    assert_eq!(rig.snapshots().await?, 2, "the way back is kept");
    // A cleanup would stop the production VM and take its disks: refused.
    let refused = workflows::cleanup::start(&rig.env, "pgtest1")
        .await
        .expect_err("no cleanup of a live failover");
    assert_eq!(
        refused.to_string(),
        "pgtest1 is failed_over, not test_failed_over: a cleanup undoes a test failover; a live failover is rolled back or committed"
    );
    assert_eq!(
        std::fs::read_to_string(log.path())?,
        "power-off before_live pgtest1\nfinal-sync before_live pgtest1\n"
    );
    let during = rig.generations().await?;
    assert!(
        REPLICAS.iter().all(|id| during[*id] > before[*id]),
        "production writes to its disks"
    );
    let steps = rig.env.store.steps(&RunId::from(&run.id)).await?;
    assert_eq!(
        steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        [
            "check",
            "run-hooks",
            "validate",
            "snapshot",
            "guest-prep",
            "create-vm",
            "remove-placeholder-root",
            "detach-replicas",
            "attach-replicas",
            "verify",
            "start-vm",
            "record"
        ]
    );
    // Nothing else starts from failed_over but rollback and commit.
    for refused in [
        live::start(&rig.env, "pgtest1").await,
        test_failover::start(&rig.env, "pgtest1").await,
    ] {
        assert!(matches!(refused, Err(StartError::NotReady { .. })));
    }

    // Rollback: everything back on the appliance, production's writes kept.
    let run = rollback::start(&rig.env, "pgtest1").await?;
    rig.done(&run, rollback::saga()).await?;
    rig.assert_at_rest().await?;
    assert!(rig.live_vm().await?.is_none(), "VM pgtest1 is gone");
    assert!(
        rig.env
            .cloud
            .get_virtual_machine(&VmId::from(&target.id))
            .await?
            .is_none()
            || rig
                .env
                .cloud
                .get_virtual_machine(&VmId::from(&target.id))
                .await?
                .is_some_and(|v| v.state == "Destroyed" || v.state == "Expunging"),
        "VM {} destroyed",
        target.id
    );
    assert_eq!(
        rig.generations().await?,
        during,
        "the replicas were not reverted: production's writes are kept"
    );
    assert!(
        std::fs::read_to_string(log.path())?.ends_with("power-on after_rollback pgtest1\n"),
        "the source was powered on"
    );
    let steps = rig.env.store.steps(&RunId::from(&run.id)).await?;
    let record: Value = serde_json::from_str(steps.last().unwrap().output.as_deref().unwrap())?;
    assert_eq!(
        record,
        json!({"state": "ready_for_failover", "after_rollback_failed": null})
    );

    // Again, then commit: the snapshots go, the VM stays.
    let target = fail_over(&rig).await?;
    let run = commit::start(&rig.env, "pgtest1").await?;
    rig.done(&run, commit::saga()).await?;
    rig.assert_committed(&target).await?;
    // No longer managed: nothing starts from committed.
    for refused in [
        live::start(&rig.env, "pgtest1").await.map(|_| ()),
        rollback::start(&rig.env, "pgtest1").await.map(|_| ()),
        commit::start(&rig.env, "pgtest1").await.map(|_| ()),
        workflows::cleanup::start(&rig.env, "pgtest1")
            .await
            .map(|_| ()),
    ] {
        assert!(refused.is_err());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_and_commit_refuse_a_vm_that_is_not_failed_over() -> TestResult {
    let rig = rig().await?;
    for (what, result) in [
        ("rollback", rollback::start(&rig.env, "pgtest1").await),
        ("commit", commit::start(&rig.env, "pgtest1").await),
    ] {
        let e = result.expect_err(what);
        assert!(
            matches!(
                e,
                StartError::WrongState {
                    state: VmState::ReadyForFailover,
                    wanted: VmState::FailedOver,
                    ..
                }
            ),
            "{what}: {e:?}"
        );
        assert!(
            e.to_string().starts_with(
                "pgtest1 is ready_for_failover, not failed_over: only a live failover can be"
            ),
            "{e}"
        );
    }
    // With no test failover ever run, there is nothing for a cleanup to follow.
    let e = workflows::cleanup::start(&rig.env, "pgtest1")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "pgtest1 has no recorded test_failover run to follow up"
    );
    // After a test failover, live failover and rollback are refused too.
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    rig.done(&run, test_failover::saga()).await?;
    let e = rollback::start(&rig.env, "pgtest1").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "pgtest1 is test_failed_over, not failed_over: only a live failover can be rolled back (a test failover is cleaned up)"
    );
    assert!(matches!(
        live::start(&rig.env, "pgtest1").await,
        Err(StartError::NotReady { .. })
    ));
    assert!(matches!(
        live::start(&rig.env, "nosuchvm").await,
        Err(StartError::NoVm(_))
    ));
    Ok(())
}

/// A hook that fails stops the run with nothing changed in CloudStack: the run unwinds,
/// its error names the hook, and cloudsim saw no mutating call at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_before_live_hook_changes_nothing_in_cloudstack() -> TestResult {
    let mut rig = rig().await?;
    rig.env.hooks.before_live = vec![command("false", &[], 10)];
    let untouched = Untouched::now(&rig).await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    let error = rig.unwound(&run, live::saga()).await?;
    assert!(error.contains("run-hooks"), "{error}");
    assert!(
        error.contains("before_live hook 1 of 1 (command `false`) failed: exited with status 1"),
        "{error}"
    );
    assert!(
        error.contains("nothing was changed in CloudStack"),
        "{error}"
    );
    untouched.check(&rig).await?;
    let stats = rig.stats().await?;
    for command in [
        "createSnapshot",
        "deployVirtualMachine",
        "detachVolume",
        "attachVolume",
    ] {
        assert_eq!(stats.calls.get(command), None, "{command} was called");
    }
    assert_eq!(
        rig.env.store.run(&run.id).await?.unwrap().state,
        RunState::Unwound
    );
    let events = rig.env.store.events(&RunId::from(&run.id)).await?;
    assert!(
        events
            .iter()
            .any(|e| e.level == "warn" && e.message.contains("before_live hooks are not undone")),
        "the operator is told the source may be off: {events:#?}"
    );
    // A failing hook is not a lasting state: with the hook fixed, it goes through.
    rig.env.hooks.before_live.clear();
    fail_over(&rig).await?;
    Ok(())
}

/// A problem validation finds stops the run before any hook runs: the source is not
/// powered off for a failover that cannot happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_runs_before_the_hooks() -> TestResult {
    let mut rig = rig().await?;
    let log = tempfile::NamedTempFile::new()?;
    rig.env.hooks.before_live = vec![sh(format!("echo ran >> {}", log.path().display()))];
    // A VM already named pgtest1, that ferry did not create.
    rig.env
        .cloud
        .wait(
            &rig.env
                .cloud
                .deploy_virtual_machine(&cloudstack::DeployVm {
                    zone_id: ids::ZONE.into(),
                    service_offering_id: ids::OFFERING_SMALL.into(),
                    template_id: ids::TEMPLATE.into(),
                    name: Some("pgtest1".into()),
                    display_name: None,
                    cpu_number: None,
                    cpu_speed: None,
                    memory_mb: None,
                    firmware: None,
                    nics: vec![cloudstack::NicRequest {
                        network_id: ids::NETWORK_TEST.into(),
                        ip: None,
                        mac: None,
                    }],
                    start: false,
                })
                .await?,
        )
        .await?;
    let mutations_before = mutations(&rig).await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    let error = rig.unwound(&run, live::saga()).await?;
    assert!(error.contains("step check failed"), "{error}");
    assert!(
        error.contains("a VM named pgtest1 already exists"),
        "{error}"
    );
    assert!(
        error.contains("the before_live hooks were not run"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(log.path())?, "", "no hook ran");
    assert_eq!(mutations(&rig).await?, mutations_before);
    Ok(())
}

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A webhook receiver: `/ok/...` answers 200, `/fail/...` 500 with a reason; every
/// request is recorded (method, path, JSON body).
async fn webhook_server() -> anyhow::Result<(String, Seen)> {
    use axum::extract::{Request, State};
    use axum::http::StatusCode;

    let seen: Seen = Arc::default();
    async fn handle(State(seen): State<Seen>, request: Request) -> (StatusCode, String) {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let body = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock().unwrap().push((method, path.clone(), body));
        if path.starts_with("/fail") {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "vCenter says: the source would not power off".into(),
            )
        } else {
            (StatusCode::OK, "powered off".into())
        }
    }
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, seen))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_hook_fails_the_run_on_500_and_passes_on_200() -> TestResult {
    let mut rig = rig().await?;
    let (url, seen) = webhook_server().await?;

    rig.env.hooks.before_live = vec![Hook::Http {
        url: format!("{url}/fail/power-off"),
        method: "POST".into(),
        timeout_secs: 5,
    }];
    let untouched = Untouched::now(&rig).await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    let error = rig.unwound(&run, live::saga()).await?;
    assert!(
        error.contains(&format!("(http POST {url}/fail/power-off) failed: answered 500 Internal Server Error; body: vCenter says: the source would not power off")),
        "{error}"
    );
    untouched.check(&rig).await?;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            1,
            "called once: a failed hook is definitive, not retried"
        );
        assert_eq!(seen[0].0, "POST");
        assert_eq!(
            seen[0].2,
            json!({"hook": "before_live", "vm": "pgtest1", "run_id": run.id})
        );
    }

    rig.env.hooks.before_live = vec![Hook::Http {
        url: format!("{url}/ok/power-off"),
        method: "put".into(),
        timeout_secs: 5,
    }];
    let run = live::start(&rig.env, "pgtest1").await?;
    rig.done(&run, live::saga()).await?;
    assert_failed_over(&rig).await?;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[1].0.as_str(), seen[1].1.as_str()),
            ("PUT", "/ok/power-off")
        );
    }
    let hooks = &rig.env.store.steps(&RunId::from(&run.id)).await?[1];
    assert_eq!(hooks.name, "run-hooks");
    let output: Value = serde_json::from_str(hooks.output.as_deref().unwrap())?;
    assert_eq!(
        output["ran"][0],
        format!("http PUT {url}/ok/power-off: answered 200 OK; body: powered off")
    );
    Ok(())
}

/// A hook that answers too late fails like one that answers 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_times_out_fails_the_run() -> TestResult {
    let mut rig = rig().await?;
    rig.env.hooks.before_live = vec![command("sleep", &["30"], 1)];
    let untouched = Untouched::now(&rig).await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    let error = rig.unwound(&run, live::saga()).await?;
    assert!(
        error.contains("(command `sleep 30`) failed: timed out after 1s and was killed"),
        "{error}"
    );
    untouched.check(&rig).await?;
    Ok(())
}

/// A failing after_rollback hook does not undo the rollback: the run is done, the
/// failure is in the output and the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_after_rollback_hook_is_reported_and_the_rollback_is_done() -> TestResult {
    let mut rig = rig().await?;
    rig.env.hooks.after_rollback = vec![sh("echo no route to vCenter >&2; exit 2".into())];
    let run = live::start(&rig.env, "pgtest1").await?;
    rig.done(&run, live::saga()).await?;
    let run = rollback::start(&rig.env, "pgtest1").await?;
    rig.done(&run, rollback::saga()).await?;
    rig.assert_at_rest().await?;
    let expected = "after_rollback hook 1 of 1 (command `sh -c echo no route to vCenter >&2; exit 2`) failed: exited with status 2; stderr: no route to vCenter";
    let steps = rig.env.store.steps(&RunId::from(&run.id)).await?;
    let record: Value = serde_json::from_str(steps.last().unwrap().output.as_deref().unwrap())?;
    assert_eq!(record["after_rollback_failed"], expected);
    let events = rig.env.store.events(&RunId::from(&run.id)).await?;
    assert!(
        events
            .iter()
            .any(|e| e.level == "warn" && e.message.starts_with(expected)),
        "{events:#?}"
    );
    Ok(())
}

/// A live failover whose data-disk attach fails inside CloudStack unwinds like a test
/// failover: `pgtest1` destroyed, the replicas back on the appliance, the snapshots
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attach_unwinds_the_live_failover() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let (_, error) = rig.unwound_by_a_failed_data_attach(Flow::Live).await?;
    assert!(error.contains("attach-replicas"), "{error}");
    rig.assert_at_rest().await?;
    assert!(rig.live_vm().await?.is_none(), "pgtest1 was destroyed");
    assert_eq!(rig.generations().await?, before);
    // And the failover can be tried again.
    fail_over(&rig).await?;
    Ok(())
}

/// A live failover that fails after its before_live hooks ran says in the run's error,
/// and in its log as the unwind begins, that the source may be powered off — also when
/// the unwind sticks at an undo that comes before the hooks step's (undos run in
/// reverse), so that step's own warning is never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_stuck_after_its_hooks_says_the_source_may_be_off() -> TestResult {
    let mut rig = rig().await?;
    rig.env.hooks.before_live = vec![command("true", &["power-off"], 10)];
    rig.fail_data_attach().await?;
    // Destroying pgtest1 (create-vm's undo) fails: the unwind sticks there.
    rig.arm(
        json!({"command": "destroyVirtualMachine", "nth": 1, "times": 100,
        "fault": {"kind": "job_error", "errorcode": 530, "errortext": "host unreachable"}}),
    )
    .await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    let error = match rig.execute(&run, live::saga()).await? {
        engine::Outcome::Stuck { error } => error,
        outcome => panic!("expected a stuck run, got {outcome:?}"),
    };
    let says_off = |text: &str| {
        text.contains("before_live hooks had run (command `true power-off`")
            && text.contains("the source VM may be powered off")
    };
    assert!(error.contains("undo of step create-vm failed"), "{error}");
    assert!(says_off(&error), "{error}");
    let stored = rig.env.store.run(&run.id).await?.unwrap();
    assert_eq!(stored.state, RunState::Stuck);
    assert_eq!(stored.error.as_deref(), Some(error.as_str()));
    let steps = rig.env.store.steps(&run.id).await?;
    let hooks = steps.iter().find(|s| s.name == "run-hooks").unwrap();
    assert_eq!(
        hooks.state,
        store::StepState::Done,
        "the hooks step's undo was not reached"
    );
    let events = rig.env.store.events(&RunId::from(&run.id)).await?;
    assert!(
        events
            .iter()
            .any(|e| e.level == "warn" && e.step.is_none() && says_off(&e.message)),
        "the log says it as the unwind begins: {events:#?}"
    );
    Ok(())
}

/// An unwind that completes says it too, in the run's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_unwound_after_its_hooks_says_the_source_may_be_off() -> TestResult {
    let mut rig = rig().await?;
    rig.env.hooks.before_live = vec![command("true", &[], 10)];
    let (run, error) = rig.unwound_by_a_failed_data_attach(Flow::Live).await?;
    assert!(
        error.contains("attach-replicas") && error.contains("the source VM may be powered off"),
        "{error}"
    );
    let stored = rig.env.store.run(&run.id).await?.unwrap();
    assert_eq!(stored.error.as_deref(), Some(error.as_str()));
    rig.assert_at_rest().await?;
    // Without hooks nothing is said.
    rig.env.hooks.before_live.clear();
    let (_, error) = rig.unwound_by_a_failed_data_attach(Flow::Live).await?;
    assert!(!error.contains("powered off"), "{error}");
    Ok(())
}

/// A rollback is forward: interrupted by a failure (here destroying the VM), it is
/// started again and finishes what the first left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollback_is_finished_by_the_next() -> TestResult {
    let rig = rig().await?;
    let run = live::start(&rig.env, "pgtest1").await?;
    rig.done(&run, live::saga()).await?;
    let during = rig.generations().await?;
    rig.arm(json!({"command": "destroyVirtualMachine", "nth": 1,
        "fault": {"kind": "job_error", "errorcode": 530, "errortext": "host unreachable"}}))
        .await?;
    let run = rollback::start(&rig.env, "pgtest1").await?;
    let error = rig.unwound(&run, rollback::saga()).await?;
    assert!(
        error.contains("destroy-vm") && error.contains("host unreachable"),
        "{error}"
    );
    assert_eq!(
        rig.env.store.vm("pgtest1").await?.unwrap().state,
        VmState::FailedOver,
        "not rolled back until it is"
    );
    let run = rollback::start(&rig.env, "pgtest1").await?;
    rig.done(&run, rollback::saga()).await?;
    rig.assert_at_rest().await?;
    assert!(rig.live_vm().await?.is_none());
    assert_eq!(rig.generations().await?, during);
    Ok(())
}
