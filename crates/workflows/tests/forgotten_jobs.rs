//! Forgotten jobs: CloudStack accepts an async command, answers with its job id, and
//! then no longer knows the job — `queryAsyncJobResult` refuses the id (431), as after
//! its database was restored from before the job (cloudsim's `forget_job` fault: the
//! job never runs). Waiting on it would never end and taking the refusal for a failure
//! would unwind a run that can go on; ferry must look at CloudStack, see the work not
//! done, and send it once more.
//!
//! For each workflow a clean run is counted first (its succeeded async jobs and calls
//! per command). Then for every async command it calls — the volume daemon's and the
//! VM commands alike — at each occurrence, a fresh rig has cloudsim forget that job,
//! and the run must end done, with its end state checked in full and exactly the clean
//! run's succeeded jobs: the forgotten job did nothing, and what replaced it was done
//! once. The one exception is deployVirtualMachine (see `case`).

mod common;

use common::flows::{ASYNC_COMMANDS, Census, Flow, each_call_of};
use common::{RigOptions, TestResult, rig_with};
use engine::Outcome;
use serde_json::json;

async fn case(flow: Flow, clean: Census, command: String, nth: u64) -> TestResult {
    let rig = rig_with(RigOptions::default()).await?;
    let base = flow.prepare(&rig).await?;
    let before = rig.census_now().await?;
    rig.arm(json!({"command": command, "nth": nth, "fault": {"kind": "forget_job"}}))
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
        "{command} #{nth} forgotten: the run ended {outcome:?}: {}",
        common::trio::events(&rig, &run.id).await
    );
    flow.assert_done(&rig, &base).await?;
    let got = rig.census_now().await?.since(&before);
    let mut expected = clean.jobs.clone();
    if command == "deployVirtualMachine" {
        // CloudStack makes the VM in the call itself (`create()`), before its job: the
        // create step finds it by name and goes on with it, so no deploy job succeeds
        // and none is sent again.
        expected.remove("DeployVMCmdByAdmin");
        anyhow::ensure!(
            got.calls.get(&command) == clean.calls.get(&command),
            "deployVirtualMachine sent again: {:?}",
            got.calls
        );
    }
    anyhow::ensure!(
        got.jobs == expected,
        "a duplicated (or missing) operation: succeeded jobs {:?}, a clean run {:?}",
        got.jobs,
        expected
    );
    Ok(())
}

async fn forget_each_job_of(flow: Flow) -> TestResult {
    each_call_of(
        flow,
        "forgotten-jobs",
        RigOptions::default(),
        &ASYNC_COMMANDS,
        case,
        "forgotten jobs",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_job_in_a_test_failover_is_done_once() -> TestResult {
    forget_each_job_of(Flow::TestReplica).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_job_in_a_clone_mode_test_failover_is_done_once() -> TestResult {
    forget_each_job_of(Flow::TestClone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_job_in_a_cleanup_is_done_once() -> TestResult {
    forget_each_job_of(Flow::CleanupReplica).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_job_in_a_clone_mode_cleanup_is_done_once() -> TestResult {
    forget_each_job_of(Flow::CleanupClone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_job_in_a_live_failover_is_done_once() -> TestResult {
    forget_each_job_of(Flow::Live).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_job_in_a_rollback_is_done_once() -> TestResult {
    forget_each_job_of(Flow::Rollback).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_job_in_a_commit_is_done_once() -> TestResult {
    forget_each_job_of(Flow::Commit).await
}
