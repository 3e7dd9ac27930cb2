//! CloudStack outages: the management server stops answering (a restart, an upgrade)
//! and ferry waits it out instead of failing — in every step, forward and undo.
//!
//! For each workflow a clean run is counted first (its calls per command and its
//! succeeded async jobs). Then for every command it calls, at its first call (and at
//! every call of a mutating command), a fresh rig has cloudsim begin an outage: that
//! call and every call after it for [`OUTAGE`] are answered by closing the connection,
//! while the jobs already accepted run on. The rig's patience outside the outage wait
//! is cut to the bone — one attempt a read, three a step, backoff in milliseconds — so
//! that without the wait every case would fail in well under [`OUTAGE`]. Every case must
//! end done, with the end state checked in full, the wait on the run's record (an
//! event saying what it waited for, and one saying CloudStack answered again), nothing
//! left of the wait on the run, and exactly the clean run's succeeded jobs: nothing done
//! twice.
//!
//! Then an outage longer than the tolerance: the step fails after the tolerance, and
//! the unwind — which meets the rest of the outage and waits it out the same way —
//! leaves pgtest1 as it was.

mod common;

use std::time::{Duration, Instant};

use common::flows::{Census, Flow, MUTATIONS, census, run_matrix};
use common::{RigOptions, TestResult, rig_with};
use engine::Outcome;
use futures::FutureExt;
use serde_json::json;

/// How long each outage lasts: far longer than the rig's retries without the wait.
const OUTAGE: Duration = Duration::from_millis(1200);

/// A rig that gives up at once on anything but an outage it waits out.
fn options(tolerance: Duration) -> RigOptions {
    RigOptions {
        request_timeout: Duration::from_millis(500),
        max_attempts: 3,
        read_attempts: 1,
        unreachable_grace: Duration::from_millis(100),
        outage_tolerance: tolerance,
        ..Default::default()
    }
}

fn outage_at(command: &str, nth: u64, length: Duration) -> serde_json::Value {
    json!({
        "command": command,
        "nth": nth,
        "fault": {"kind": "outage", "seconds": length.as_secs_f64()},
    })
}

/// Whether a case's outage began: the n-th call of a command may not come in every
/// run (a look that only some timings make), as in the fault matrix.
#[derive(Debug, PartialEq)]
enum Fired {
    Yes,
    No,
}

async fn case(flow: Flow, clean: Census, command: String, nth: u64) -> anyhow::Result<Fired> {
    let rig = rig_with(options(Duration::from_secs(60))).await?;
    let base = flow.prepare(&rig).await?;
    let before = rig.census_now().await?;
    rig.arm(outage_at(&command, nth, OUTAGE)).await?;
    let started = Instant::now();
    let (run, outcome) = flow.run(&rig).await?;
    let took = started.elapsed();
    let fired = rig
        .admin("faults")
        .await?
        .as_array()
        .is_some_and(|a| a.is_empty());
    if !fired {
        return Ok(Fired::No);
    }
    let events = common::trio::events(&rig, &run.id).await;
    anyhow::ensure!(
        outcome == Outcome::Done,
        "an outage from {command} #{nth} on: the run ended {outcome:?}: {events}"
    );
    anyhow::ensure!(
        took >= OUTAGE,
        "the run ended {took:?} after it began, before the outage of {OUTAGE:?} was over"
    );
    anyhow::ensure!(
        events.contains("waiting for CloudStack") && events.contains("CloudStack answers again"),
        "the run's events do not tell the wait: {events}"
    );
    let after = rig.env.store.run(&run.id).await?.expect("the run");
    anyhow::ensure!(
        after.waiting_since.is_none() && after.waiting_for.is_none(),
        "the run still says it waits: {after:?}"
    );
    flow.assert_done(&rig, &base).await?;
    let got = rig.census_now().await?.since(&before);
    anyhow::ensure!(
        got.jobs == clean.jobs,
        "a duplicated (or missing) operation: succeeded jobs {:?}, a clean run {:?}",
        got.jobs,
        clean.jobs
    );
    Ok(Fired::Yes)
}

async fn wait_out_an_outage_in_each_step_of(flow: Flow) -> TestResult {
    let started = Instant::now();
    let clean = census(flow, options(Duration::from_secs(60))).await?;
    let mut cases = Vec::new();
    for (command, n) in &clean.calls {
        let last = if MUTATIONS.contains(&command.as_str()) {
            *n
        } else {
            1
        };
        for nth in 1..=last {
            cases.push((
                format!("{command} #{nth}"),
                case(flow, clean.clone(), command.clone(), nth).boxed(),
            ));
        }
    }
    let total = cases.len();
    let mut not_fired = 0;
    run_matrix(
        "outages",
        flow,
        started,
        cases,
        6,
        |results| {
            not_fired = results
                .iter()
                .filter(|(_, r, _)| matches!(r, Ok(Fired::No)))
                .count();
            format!("not_fired={not_fired} outage_s={:.1}", OUTAGE.as_secs_f64())
        },
        &format!("outages in {} went wrong", flow.name()),
    )
    .await?;
    assert!(
        not_fired * 4 < total,
        "{not_fired} of {total} outages never began: the cases no longer match the workflow"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_in_any_step_of_a_test_failover_is_waited_out() -> TestResult {
    wait_out_an_outage_in_each_step_of(Flow::TestReplica).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_in_any_step_of_a_cleanup_is_waited_out() -> TestResult {
    wait_out_an_outage_in_each_step_of(Flow::CleanupReplica).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_in_any_step_of_a_live_failover_is_waited_out() -> TestResult {
    wait_out_an_outage_in_each_step_of(Flow::Live).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_in_any_step_of_a_rollback_is_waited_out() -> TestResult {
    wait_out_an_outage_in_each_step_of(Flow::Rollback).await
}

/// An outage past the tolerance fails the step it met; the unwind meets the rest of
/// it, waits that out, and leaves pgtest1 as it was.
async fn unwind_after_an_outage_past_the_tolerance(flow: Flow, command: &str) -> TestResult {
    let tolerance = Duration::from_millis(700);
    let rig = rig_with(options(tolerance)).await?;
    let base = flow.prepare(&rig).await?;
    rig.arm(outage_at(command, 1, tolerance + tolerance / 2))
        .await?;
    let (run, outcome) = flow.run(&rig).await?;
    let events = common::trio::events(&rig, &run.id).await;
    let Outcome::Unwound { error } = &outcome else {
        anyhow::bail!("the run ended {outcome:?}, not unwound: {events}");
    };
    anyhow::ensure!(
        error.contains("CloudStack did not answer for") && error.contains("outage tolerance"),
        "the error does not say the outage outlasted the tolerance: {error}"
    );
    anyhow::ensure!(
        events.contains("CloudStack answers again"),
        "the unwind did not wait the outage out: {events}"
    );
    flow.assert_unwound(&rig, &base).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_failover_meeting_an_outage_past_the_tolerance_unwinds_cleanly() -> TestResult {
    unwind_after_an_outage_past_the_tolerance(Flow::TestReplica, "attachVolume").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_failover_meeting_an_outage_past_the_tolerance_unwinds_cleanly() -> TestResult {
    unwind_after_an_outage_past_the_tolerance(Flow::Live, "startVirtualMachine").await
}
