//! The transient soak: drills run again and again while CloudStack answers about one
//! call in ten — any command, reads, polls and mutations alike — with HTTP 530 (5%)
//! or a dropped connection (5%), from seeded cloudsim rules. Every run must still end
//! done, DESIGN §5's invariants must hold after each, and no operation may be done
//! twice: the async jobs that succeeded in each cycle, per command, must be exactly
//! those of a clean cycle of the same kind.
//!
//! A cycle is a test failover and its cleanup (replica mode, then clone mode), or a
//! live failover and its rollback, in turn. Several lanes, each its own rig (cloudsim,
//! store, volume daemon), run their cycles at once. The faults are disarmed while a
//! cycle's end state is checked, so that the checks' own reads are not hit, and armed
//! again with the next seed for the next workflow.
//!
//! `FERRY_SOAK_CYCLES` (per lane, default 3) and `FERRY_SOAK_LANES` (default 3) size
//! it; `FERRY_SOAK_SEED` (default 1) picks the draws. `scripts/reliability` runs the
//! large soak recorded in docs/reliability.md.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::flows::{Census, Flow, census};
use common::{RigOptions, TestResult, rig_with};
use engine::Outcome;
use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The engine retries a step that failed transiently up to `max_attempts` times (five
/// by default in `ferry serve`); a step makes a dozen calls or more, each hit one
/// time in ten, so a soak needs a few more attempts than a clean rig.
fn options() -> RigOptions {
    RigOptions {
        max_attempts: 10,
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// The kinds of cycle: a workflow and the one that undoes it.
const CYCLES: [(Flow, Flow); 3] = [
    (Flow::TestReplica, Flow::CleanupReplica),
    (Flow::TestClone, Flow::CleanupClone),
    (Flow::Live, Flow::Rollback),
];

/// Arms the soak's two rules with draws picked by `seed`: one call in ten hit, half
/// with a 530, half with a dropped connection.
async fn arm(rig: &common::Rig, seed: u64) -> TestResult {
    rig.arm(json!([
        {"command": "*", "probability": 0.05, "seed": seed * 2,
         "fault": {"kind": "transient_530"}},
        // Asked only of the calls the first rule spared: 0.05 + 0.95 × 0.0527 ≈ 0.10.
        {"command": "*", "probability": 0.0527, "seed": seed * 2 + 1,
         "fault": {"kind": "drop_connection"}},
    ]))
    .await
}

/// What a lane saw.
#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    calls: u64,
    /// Calls the faults hit.
    hit: u64,
}

/// Runs `cycles` cycles on one rig under the faults; fails at the first run that is
/// not done, the first broken invariant, or the first duplicated job.
async fn lane(
    lane: u64,
    cycles: u64,
    seed: u64,
    clean: BTreeMap<Flow, Census>,
) -> anyhow::Result<Tally> {
    let rig = rig_with(options()).await?;
    let mut tally = Tally::default();
    for cycle in 0..cycles {
        let (first, second) = CYCLES[((lane + cycle) % CYCLES.len() as u64) as usize];
        let origin = first.prepare(&rig).await?;
        for (k, flow) in [first, second].into_iter().enumerate() {
            let base = origin.now(&rig).await?;
            let seed = seed + lane * 10_000 + cycle * 2 + k as u64;
            let before = rig.census_now().await?;
            arm(&rig, seed).await?;
            let (run, outcome) = flow.run(&rig).await?;
            let armed = rig.admin("faults").await?;
            rig.http_delete_faults().await?;
            let fired: u64 = armed
                .as_array()
                .map(|a| a.iter().filter_map(|r| r["fired"].as_u64()).sum())
                .unwrap_or(0);
            let got = rig.census_now().await?.since(&before);
            let calls: u64 = got.calls.values().sum();
            tally.runs += 1;
            tally.calls += calls;
            tally.hit += fired;
            let label = format!("lane {lane} cycle {cycle} {} (seed {seed})", flow.name());
            anyhow::ensure!(
                outcome == Outcome::Done,
                "{label}: ended {outcome:?} with {fired} of {calls} calls hit: {}",
                common::trio::events(&rig, &run.id).await
            );
            flow.assert_done(&rig, &base)
                .await
                .map_err(|e| e.context(label.clone()))?;
            anyhow::ensure!(
                got.jobs == clean[&flow].jobs,
                "{label}: a duplicated (or missing) operation: jobs {:?}, a clean run's {:?}",
                got.jobs,
                clean[&flow].jobs
            );
        }
    }
    Ok(tally)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_under_one_call_in_ten_failing_transiently_all_finish_without_duplicates()
-> TestResult {
    let started = Instant::now();
    let cycles = env_or("FERRY_SOAK_CYCLES", 3);
    let lanes = env_or("FERRY_SOAK_LANES", 3);
    let seed = env_or("FERRY_SOAK_SEED", 1);
    let mut clean = BTreeMap::new();
    for (first, second) in CYCLES {
        for flow in [first, second] {
            clean.insert(flow, census(flow, options()).await?);
        }
    }
    let handles: Vec<_> = (0..lanes)
        .map(|l| tokio::spawn(lane(l, cycles, seed, clean.clone())))
        .collect();
    let mut total = Tally::default();
    let mut failed = Vec::new();
    for (l, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(Ok(t)) => {
                total.runs += t.runs;
                total.calls += t.calls;
                total.hit += t.hit;
            }
            Ok(Err(e)) => failed.push(format!("- lane {l}: {e:#}")),
            Err(e) => failed.push(format!("- lane {l}: panicked: {e}")),
        }
    }
    eprintln!(
        "RELIABILITY soak lanes={lanes} cycles={cycles} seed={seed} runs_done={} calls={} hit={} \
         ({:.1}%) lanes_failed={} secs={:.1}",
        total.runs,
        total.calls,
        total.hit,
        100.0 * total.hit as f64 / total.calls.max(1) as f64,
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "the soak failed:\n{}", failed.join("\n"));
    assert!(
        total.hit * 20 > total.calls,
        "fewer than 5% of {} calls were hit ({}): the soak did not soak",
        total.calls,
        total.hit
    );
    Ok(())
}
