//! Crash tests at the process level (issue #4): `ferry serve` is SIGKILLed at many
//! points of a test failover of pgtest1 and of its cleanup — at every step, and while
//! a CloudStack job is in flight — and restarted on the same database; the run must
//! finish, DESIGN §5's invariants must hold in cloudsim's state, and no CloudStack
//! operation may have been done twice. And two `ferry serve` processes on one
//! PostgreSQL schema: the one holding a run is killed mid-step, the other takes the
//! run over once the lease has run out and finishes it.
//!
//! cloudsim runs in the test process at a time scale of 0.01 (attach 30 ms, snapshot
//! 120 ms, deploy 60 ms, start 150 ms), so that a job is in flight long enough to be
//! seen through the API (polled every few milliseconds) and killed. Where a kill
//! landed is read from what the dead process left: the step its database records as
//! running, and whether CloudStack still works on the job.
//!
//! `cargo test -p ferry --test crash -- --nocapture` prints every kill and where it
//! landed. `FERRY_CRASH_SEED=<n>` replays the schedule of the random test (its seed
//! is printed, and named in its failure). The `a_kill_while_*` tests each
//! pin one point where a kill once broke a run (a leaked placeholder ROOT, a start,
//! stop or destroy sent twice): the command is slowed so that the kill always lands
//! while its job is in flight.

use ::ids::RunId;
mod crash_harness;

use std::time::Duration;

use crash_harness::*;
use store::StepState;
use tokio::time::Instant;

/// The in-flight job points of a replica-mode test failover: (step, job kind as the
/// API shows it).
const TEST_FAILOVER_JOBS: [(&str, &str); 7] = [
    ("snapshot", "snapshot"),
    ("create-vm", "deployVirtualMachine"),
    ("remove-placeholder-root", "detach"),
    ("detach-replicas", "detach"),
    ("attach-replicas", "attach_root"),
    ("attach-replicas", "attach"),
    ("start-vm", "startVirtualMachine"),
];

/// Those of its cleanup.
const CLEANUP_JOBS: [(&str, &str); 6] = [
    ("stop-test-vm", "stopVirtualMachine"),
    ("detach-from-test-vm", "detach"),
    ("revert-replicas", "revert"),
    ("reattach-replicas", "attach"),
    ("delete-snapshots", "delete_snapshot"),
    ("destroy-test-vm", "destroyVirtualMachine"),
];

/// How long a run may take, kills and restarts included.
const RUN_WITHIN: Duration = Duration::from_secs(60);

/// One `ferry serve` on a SQLite file, restarted under the same worker name after
/// each kill (so it takes its runs back at once), with cloudsim and pgtest1.
struct Drill {
    sim: Sim,
    site: Site,
    /// The database, read directly only to see what a killed process left.
    db: store::Store,
    serve: Serve,
    worker: String,
    kills: Vec<Kill>,
}

impl Drill {
    async fn new(worker: &str) -> anyhow::Result<Drill> {
        let sim = sim(0.01).await?;
        let site = Site::sqlite()?;
        let serve = site.serve(&sim, worker).await?;
        serve.api.add_pgtest1().await?;
        let db = store::Store::connect(&site.database).await?;
        Ok(Drill {
            sim,
            site,
            db,
            serve,
            worker: worker.to_string(),
            kills: Vec::new(),
        })
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        self.serve = self.site.serve(&self.sim, &self.worker).await?;
        Ok(())
    }

    /// Kills the process at `point` of run `id` (of `workflow`) if the run gets there,
    /// and restarts it. Returns whether the kill landed at the point.
    async fn kill_at(&mut self, id: &str, point: &Point) -> anyhow::Result<bool> {
        let avoid = |_: &str| false;
        let killed = kill_at(
            &self.sim,
            &self.db,
            &mut self.serve,
            id,
            point,
            &avoid,
            RUN_WITHIN,
        )
        .await?;
        let Some(kill) = killed else {
            println!("  {point}: not killed (passed before it was seen)");
            return Ok(false);
        };
        self.restart().await?;
        let landed = kill.landed();
        println!(
            "  {point}: killed{} (step running: {:?}, job in flight: {:?})",
            if landed { "" } else { ", but not there" },
            kill.step_running,
            kill.job_in_flight
        );
        self.kills.push(kill);
        Ok(landed)
    }

    /// Kills the process at each of `pending`'s points in turn while run `id` goes on,
    /// removing those the kill landed at. `None`: the run is the first of its
    /// workflow — it is also killed right after it was created, and its steps then give
    /// the points (`jobs` adds the in-flight ones).
    async fn kill_through(
        &mut self,
        id: &str,
        pending: &mut Option<Vec<Point>>,
        jobs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        if pending.is_none() {
            self.kill_at(id, &Point::Created).await?;
            let run = self.serve.api.run(id).await?;
            *pending = Some(
                points(&run, jobs)
                    .into_iter()
                    .filter(|p| !matches!(p, Point::Created))
                    .collect(),
            );
        }
        let pending = pending.as_mut().expect("set above");
        let mut i = 0;
        while i < pending.len() {
            let point = pending[i].clone();
            if self.kill_at(id, &point).await? {
                pending.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Waits for run `id` to end and requires it `done`; for one that did not, says
    /// also whether it left pgtest1 at rest.
    async fn expect_done(&self, id: &str, before: &Generations) -> anyhow::Result<()> {
        let end = self.serve.api.wait_end(id, RUN_WITHIN).await?;
        if end.run.state != "done" {
            let rest = check_at_rest(&self.sim, &self.serve.api, before, false).await;
            anyhow::bail!(
                "run {id} ended {}, not done: {}\n{}\nat rest afterwards: {}",
                end.run.state,
                describe(&end),
                end.story.join("\n"),
                match rest {
                    Ok(()) => "yes".to_string(),
                    Err(e) => format!("no: {e:#}"),
                }
            );
        }
        Ok(())
    }

    /// A test failover and its cleanup, the process killed at the pending points of
    /// each; everything checked after each run.
    async fn round(
        &mut self,
        test_points: &mut Option<Vec<Point>>,
        cleanup_points: &mut Option<Vec<Point>>,
    ) -> TestResult {
        let before = self.sim.generations().await?;
        let stats = self.sim.stats().await?;
        let run = self.serve.api.start_test_failover().await?;
        println!("test failover {}:", run.id);
        self.kill_through(&run.id, test_points, &TEST_FAILOVER_JOBS)
            .await?;
        self.expect_done(&run.id, &before).await?;
        check_failed_over(&self.sim, &self.serve.api).await?;
        let after = self.sim.stats().await?;
        check_calls("the test failover", &stats, &after, &TEST_FAILOVER_CALLS)?;

        let run = self.serve.api.start_cleanup().await?;
        println!("cleanup {}:", run.id);
        self.kill_through(&run.id, cleanup_points, &CLEANUP_JOBS)
            .await?;
        self.expect_done(&run.id, &before).await?;
        check_at_rest(&self.sim, &self.serve.api, &before, true).await?;
        check_calls(
            "the cleanup",
            &after,
            &self.sim.stats().await?,
            &CLEANUP_CALLS,
        )?;
        Ok(())
    }
}

/// `result`, with the tails of ferry's logs when it is a failure.
fn with_logs(site: &Site, result: TestResult) -> TestResult {
    result.map_err(|e| {
        e.context(format!(
            "ferry serve's logs (last lines):\n{}",
            site.logs(25)
        ))
    })
}

/// Issue #4: the engine process SIGKILLed at every step of a test failover and of its
/// cleanup, and while each kind of CloudStack job they submit is in flight, then
/// restarted on the same SQLite database. Every run finishes `done` with DESIGN §5's
/// invariants and each CloudStack operation done once.
///
/// One run takes one kill per point, in order; a point the run went past before it
/// was seen is tried again in the next drill, until every point has had a kill that
/// landed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_step_and_in_flight_job_of_a_test_failover_and_its_cleanup() -> TestResult
{
    let mut drill = Drill::new("crash-steps").await?;
    let result = every_point(&mut drill).await;
    with_logs(&drill.site, result)
}

async fn every_point(drill: &mut Drill) -> TestResult {
    const MAX_DRILLS: usize = 6;
    let mut test_points = None;
    let mut cleanup_points = None;
    let mut drills = 0;
    let remaining = |p: &Option<Vec<Point>>| p.as_ref().map_or(usize::MAX, Vec::len);
    while drills < MAX_DRILLS && (remaining(&test_points) > 0 || remaining(&cleanup_points) > 0) {
        drills += 1;
        println!("-- drill {drills}");
        drill.round(&mut test_points, &mut cleanup_points).await?;
    }
    let uncovered: Vec<String> = [&test_points, &cleanup_points]
        .into_iter()
        .flat_map(|p| p.iter().flatten().map(|p| p.to_string()))
        .collect();
    let landed = drill.kills.iter().filter(|k| k.landed()).count();
    println!(
        "{} kills in {drills} drills, {landed} where they were aimed; uncovered: {uncovered:?}",
        drill.kills.len()
    );
    anyhow::ensure!(
        uncovered.is_empty(),
        "after {drills} drills, no kill landed at: {uncovered:?}"
    );
    Ok(())
}

/// A seeded random kill schedule: after each (re)start, the process lives a random
/// 0–400 ms and is killed, up to four times per run, through two drills (a test
/// failover and its cleanup each). Kills land anywhere, between a volume operation's
/// journal entry and its submission too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_through_test_failovers_and_cleanups() -> TestResult {
    let seed = std::env::var("FERRY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("FERRY_CRASH_SEED={seed}");
    let mut drill = Drill::new("crash-random").await?;
    let result = random_schedule(&mut drill, seed).await;
    with_logs(&drill.site, result)
        .map_err(|e| e.context(format!("replay with FERRY_CRASH_SEED={seed}")))
}

async fn random_schedule(drill: &mut Drill, seed: u64) -> TestResult {
    let mut rng = Rng::new(seed);
    for round in 1..=2 {
        let before = drill.sim.generations().await?;
        let stats = drill.sim.stats().await?;
        let run = drill.serve.api.start_test_failover().await?;
        println!("-- drill {round}: test failover {}", run.id);
        random_kills(drill, &run.id, &mut rng).await?;
        drill.expect_done(&run.id, &before).await?;
        check_failed_over(&drill.sim, &drill.serve.api).await?;
        let after = drill.sim.stats().await?;
        check_calls("the test failover", &stats, &after, &TEST_FAILOVER_CALLS)?;

        let run = drill.serve.api.start_cleanup().await?;
        println!("-- drill {round}: cleanup {}", run.id);
        random_kills(drill, &run.id, &mut rng).await?;
        drill.expect_done(&run.id, &before).await?;
        check_at_rest(&drill.sim, &drill.serve.api, &before, true).await?;
        check_calls(
            "the cleanup",
            &after,
            &drill.sim.stats().await?,
            &CLEANUP_CALLS,
        )?;
    }
    println!("{} kills", drill.kills.len());
    Ok(())
}

/// Up to four kills of the process running `id`, each a random 0–400 ms after the
/// (re)start, while the run is still active.
async fn random_kills(drill: &mut Drill, id: &str, rng: &mut Rng) -> TestResult {
    let avoid = |_: &str| false;
    let kills = 1 + rng.below(4);
    for _ in 0..kills {
        let after = Duration::from_millis(rng.below(400));
        let at = Instant::now() + after;
        let deadline = Instant::now() + RUN_WITHIN;
        let kill = loop {
            let run = drill.serve.api.run(id).await?;
            if !matches!(run.run.state.as_str(), "pending" | "running" | "unwinding") {
                return Ok(());
            }
            if Instant::now() >= at
                && let Some(kill) = freeze_and_kill(
                    &drill.sim,
                    &drill.db,
                    &mut drill.serve,
                    id,
                    &Point::Created,
                    None,
                    &avoid,
                )
                .await?
            {
                break kill;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "run {id} did not end within {RUN_WITHIN:?}: {}",
                describe(&run)
            );
            tokio::time::sleep(POLL).await;
        };
        println!(
            "  killed {} ms after the start, step running: {:?}",
            after.as_millis(),
            kill.step_running
        );
        drill.kills.push(kill);
        drill.restart().await?;
    }
    Ok(())
}

/// Issue #4: two `ferry serve` processes on one PostgreSQL schema. The one holding the
/// test failover is SIGKILLed while it snapshots (the CloudStack job in flight); the
/// other takes the run over once the lease (2 s) has run out — not before —, with a
/// higher generation, and finishes it: one deploy, two attaches, every operation
/// once, the invariants holding. It then cleans up, back to rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_postgresql_takes_over_the_run_of_a_killed_one() -> TestResult {
    let pg = store::testing::postgres().await?;
    let sim = sim(0.01).await?;
    let site = Site::with_database(pg.url.clone())?;
    let mut a = site.serve(&sim, "worker-a").await?;
    let mut b = site.serve(&sim, "worker-b").await?;
    let result = takeover(&sim, &pg.store, &mut a, &mut b).await;
    with_logs(&site, result)
}

async fn takeover(sim: &Sim, db: &store::Store, a: &mut Serve, b: &mut Serve) -> TestResult {
    // The snapshot takes 0.5 s, so that the kill surely lands while its job is in
    // flight, however loaded the machine.
    sim.set_latency("createSnapshot", 50_000).await?;
    a.api.add_pgtest1().await?;
    let before = sim.generations().await?;
    let stats = sim.stats().await?;
    let run = a.api.start_test_failover().await?;
    let point = Point::Job {
        step: "snapshot".into(),
        kind: "snapshot".into(),
    };
    let deadline = Instant::now() + RUN_WITHIN;
    let (held, job) = loop {
        let detail = a.api.run(&run.id).await?;
        match assess(&point, &detail) {
            Seen::Hit(job) if detail.lease_owner.is_some() => break (detail, job),
            Seen::Passed => anyhow::bail!(
                "the run went past `{point}` before it was seen: {}",
                describe(&detail)
            ),
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "run {} did not reach `{point}`: {}",
            run.id,
            describe(&detail)
        );
        tokio::time::sleep(POLL).await;
    };
    let holder = held.lease_owner.clone().expect("checked");
    let (dead, survivor) = match holder.as_str() {
        "worker-a" => (a, b),
        "worker-b" => (b, a),
        other => anyhow::bail!("the run is held by {other}, neither process"),
    };
    dead.kill()?;
    let killed_at = Instant::now();
    let kill = inspect_kill(sim, db, &run.id, &point, job).await?;
    println!(
        "killed {holder} (generation {}): step running {:?}, job in flight {:?}",
        held.generation, kill.step_running, kill.job_in_flight
    );
    anyhow::ensure!(
        kill.landed(),
        "the kill did not land at `{point}`: {kill:?}"
    );
    anyhow::ensure!(survivor.alive(), "{} died too", survivor.name);

    let name = survivor.name.clone();
    let api = survivor.api.clone();
    let taken = eventually(
        &format!("{name} to take run {} over", run.id),
        Duration::from_secs(20),
        || {
            let (api, id, name) = (api.clone(), run.id.clone(), name.clone());
            async move {
                let detail = api.run(&id).await?;
                Ok((detail.lease_owner.as_deref() == Some(name.as_str())
                    && detail.generation > held.generation)
                    .then_some(detail))
            }
        },
    )
    .await?;
    let waited = killed_at.elapsed();
    println!(
        "{name} took the run over {} ms after the kill, generation {} -> {}",
        waited.as_millis(),
        held.generation,
        taken.generation
    );
    // The lease (2 s) is renewed every third of it: at least 1.3 s of it was left.
    anyhow::ensure!(
        waited >= Duration::from_secs(1),
        "{name} took the run over {waited:?} after the kill, before the lease could have run out"
    );
    let end = survivor.api.wait_end(&run.id, RUN_WITHIN).await?;
    anyhow::ensure!(
        end.run.state == "done",
        "the run ended {}: {}\n{}",
        end.run.state,
        describe(&end),
        end.story.join("\n")
    );
    let snapshot = end
        .steps
        .iter()
        .find(|s| s.name == "snapshot")
        .ok_or_else(|| anyhow::anyhow!("no snapshot step: {}", describe(&end)))?;
    anyhow::ensure!(
        snapshot.attempts >= 2,
        "the snapshot step was not resumed by {name}: {snapshot:?}"
    );
    check_failed_over(sim, &survivor.api).await?;
    let after = sim.stats().await?;
    check_calls("the test failover", &stats, &after, &TEST_FAILOVER_CALLS)?;
    let steps = db.steps(&RunId::from(&run.id)).await?;
    anyhow::ensure!(
        steps.iter().all(|s| s.state == StepState::Done),
        "steps not done: {steps:?}"
    );

    let cleanup = survivor.api.start_cleanup().await?;
    let end = survivor.api.wait_end(&cleanup.id, RUN_WITHIN).await?;
    anyhow::ensure!(end.run.state == "done", "cleanup: {}", describe(&end));
    check_at_rest(sim, &survivor.api, &before, true).await?;
    check_calls("the cleanup", &after, &sim.stats().await?, &CLEANUP_CALLS)?;
    Ok(())
}

// ---- The bugs these tests found ----------------------------------------------------------

/// Kills the process once while the `kind` job of `step` is in flight in a `workflow`
/// run (a cleanup after a test failover that went through untouched), restarts it,
/// and requires what the other tests require: the run done, the invariants, every
/// CloudStack operation once. The job's `command` is made to take 0.5 s, so that the
/// restarted process finds it still in flight.
async fn one_kill_in_flight(workflow: &str, step: &str, kind: &str, command: &str) -> TestResult {
    let mut drill = Drill::new("crash-bug").await?;
    let result = async {
        let drill = &mut drill;
        drill.sim.set_latency(command, 50_000).await?;
        let point = Point::Job {
            step: step.into(),
            kind: kind.into(),
        };
        let before = drill.sim.generations().await?;
        let stats = drill.sim.stats().await?;
        let run = drill.serve.api.start_test_failover().await?;
        if workflow == "test_failover" {
            anyhow::ensure!(
                drill.kill_at(&run.id, &point).await?,
                "the kill did not land at `{point}`"
            );
        }
        drill.expect_done(&run.id, &before).await?;
        check_failed_over(&drill.sim, &drill.serve.api).await?;
        let after = drill.sim.stats().await?;
        check_calls("the test failover", &stats, &after, &TEST_FAILOVER_CALLS)?;
        let run = drill.serve.api.start_cleanup().await?;
        if workflow == "cleanup" {
            anyhow::ensure!(
                drill.kill_at(&run.id, &point).await?,
                "the kill did not land at `{point}`"
            );
        }
        drill.expect_done(&run.id, &before).await?;
        check_at_rest(&drill.sim, &drill.serve.api, &before, true).await?;
        check_calls(
            "the cleanup",
            &after,
            &drill.sim.stats().await?,
            &CLEANUP_CALLS,
        )?;
        Ok(())
    }
    .await;
    with_logs(&drill.site, result)
}

/// remove-placeholder-root detaches the placeholder at device 0, then deletes it; a
/// process killed between the two restarts into a VM without device 0 — the step then
/// finds the placeholder by the run's record of it (it once leaked it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_the_placeholder_root_is_detached_still_deletes_it() -> TestResult {
    one_kill_in_flight(
        "test_failover",
        "remove-placeholder-root",
        "detach",
        "detachVolume",
    )
    .await
}

/// start-vm restarted while the job a killed process submitted runs (the VM is
/// `Starting`) waits on that job; it once sent startVirtualMachine again, which
/// CloudStack queued and failed ("is already running", 431), unwinding the drill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_the_test_vm_starts_waits_on_the_same_start_job() -> TestResult {
    one_kill_in_flight(
        "test_failover",
        "start-vm",
        "startVirtualMachine",
        "startVirtualMachine",
    )
    .await
}

/// stop-test-vm restarted while the VM is `Stopping` waits on the recorded job (it once
/// sent stopVirtualMachine again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_the_test_vm_stops_waits_on_the_same_stop_job() -> TestResult {
    one_kill_in_flight(
        "cleanup",
        "stop-test-vm",
        "stopVirtualMachine",
        "stopVirtualMachine",
    )
    .await
}

/// destroy-test-vm restarted while the destroy job runs (the VM still `Stopped`) waits
/// on that job; it once sent destroyVirtualMachine again, which failed after the first
/// expunged the VM (431), leaving pgtest1 `test_failed_over` with no target VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_the_test_vm_is_destroyed_waits_on_the_same_destroy_job() -> TestResult {
    one_kill_in_flight(
        "cleanup",
        "destroy-test-vm",
        "destroyVirtualMachine",
        "destroyVirtualMachine",
    )
    .await
}
