//! Lost responses: CloudStack carries a mutating call out and its answer never
//! arrives (cloudsim's `lose_response`; the client's request times out). Whatever
//! ferry does next, it must not do the operation twice.
//!
//! For each workflow, a clean run is counted first (its succeeded async jobs per
//! command, and its calls of the synchronous `deleteVolume`). Then for every mutating
//! command it calls and each occurrence of it, a fresh rig loses that one response,
//! and the run must end done — the operation happened, so nothing is to unwind —,
//! with its end state checked in full and exactly the clean run's jobs: one deploy,
//! the expected attaches, one snapshot per replica, and so on. The one exception is
//! revertSnapshot, which the volume daemon sends again by design (see `case`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::flows::{Census, Flow, MUTATIONS, each_call_of};
use common::{RigOptions, TestResult, rig_with};
use engine::Outcome;
use serde_json::json;

/// A lost response costs the client its whole request timeout: short here, long
/// enough for any answer cloudsim gives at its time scale.
fn options() -> RigOptions {
    RigOptions {
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

/// What must match the clean run: succeeded jobs, and deleteVolume calls (a
/// synchronous command, which leaves no job to count).
fn operations(c: &Census) -> (BTreeMap<String, u64>, u64) {
    (
        c.jobs.clone(),
        c.calls.get("deleteVolume").copied().unwrap_or(0),
    )
}

async fn case(flow: Flow, clean: Census, command: String, nth: u64) -> TestResult {
    let rig = rig_with(options()).await?;
    let base = flow.prepare(&rig).await?;
    let before = rig.census_now().await?;
    rig.arm(json!({"command": command, "nth": nth, "fault": {"kind": "lose_response"}}))
        .await?;
    let (run, outcome) = flow.run(&rig).await?;
    let spent = rig
        .admin("faults")
        .await?
        .as_array()
        .is_some_and(|a| a.is_empty());
    anyhow::ensure!(spent, "the {nth}th {command} never came");
    anyhow::ensure!(
        outcome == Outcome::Done,
        "a lost response of {command} #{nth}: the run ended {outcome:?}: {}",
        common::trio::events(&rig, &run.id).await
    );
    flow.assert_done(&rig, &base).await?;
    let got = rig.census_now().await?.since(&before);
    let mut expected = operations(&clean);
    if command == "revertSnapshot" {
        // By design the one exception (volumed's `look`): a revert leaves nothing to
        // see in CloudStack's API, so after a lost answer the daemon reverts again,
        // which is harmless — the volume is detached (or its VM stopped) under the
        // daemon's per-VM lock, so nothing wrote in between; the content checks of
        // `assert_done` show the result is the snapshot's.
        *expected.0.entry("RevertSnapshotCmd".into()).or_default() += 1;
    }
    anyhow::ensure!(
        operations(&got) == expected,
        "a duplicated (or missing) operation: jobs and deleteVolume calls {:?}, a clean run {:?}",
        operations(&got),
        expected
    );
    Ok(())
}

async fn lose_each_response_of(flow: Flow) -> TestResult {
    each_call_of(
        flow,
        "lost-responses",
        options(),
        &MUTATIONS,
        case,
        "lost responses",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_in_a_test_failover_does_nothing_twice() -> TestResult {
    lose_each_response_of(Flow::TestReplica).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_in_a_clone_mode_test_failover_does_nothing_twice() -> TestResult {
    lose_each_response_of(Flow::TestClone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_in_a_cleanup_does_nothing_twice() -> TestResult {
    lose_each_response_of(Flow::CleanupReplica).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_in_a_clone_mode_cleanup_does_nothing_twice() -> TestResult {
    lose_each_response_of(Flow::CleanupClone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_in_a_live_failover_does_nothing_twice() -> TestResult {
    lose_each_response_of(Flow::Live).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_in_a_rollback_does_nothing_twice() -> TestResult {
    lose_each_response_of(Flow::Rollback).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_in_a_commit_does_nothing_twice() -> TestResult {
    lose_each_response_of(Flow::Commit).await
}
