//! The `command` gate with `sh` scripts: passing, failing with its output, told which
//! VM it checks, killed with what it started when it overruns its timeout or the
//! gate's deadline.

use std::path::Path;
use std::time::Duration;

use readiness::{Check, CommandCheck, Verdict};

use crate::{gate, last_seen, ms, only, subject, wait};

fn sh(script: &str, timeout: Duration) -> Check {
    Check::Command(CommandCheck {
        program: "sh".to_string(),
        args: vec!["-c".to_string(), script.to_string()],
        timeout,
    })
}

#[tokio::test]
async fn a_program_that_exits_0_passes() {
    let readiness = wait(
        &[gate(sh("exit 0", ms(10_000)), ms(20_000), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:#?}");
    assert_eq!(outcome.attempts, 1);
    assert_eq!(last_seen(outcome), "exit 0");
}

#[tokio::test]
async fn the_program_is_told_which_vm_it_checks() {
    let script = r#"
        [ "$FERRY_VM_NAME" = pgtest1 ] || { echo "FERRY_VM_NAME=$FERRY_VM_NAME" >&2; exit 9; }
        [ "$FERRY_VM_ADDRESSES" = "127.77.0.5,::1" ] || { echo "FERRY_VM_ADDRESSES=$FERRY_VM_ADDRESSES" >&2; exit 9; }
        [ "$FERRY_RUN_ID" = run-7 ] || { echo "FERRY_RUN_ID=$FERRY_RUN_ID" >&2; exit 9; }
        [ "$FERRY_FAILOVER_KIND" = test ] || { echo "FERRY_FAILOVER_KIND=$FERRY_FAILOVER_KIND" >&2; exit 9; }
        echo "checked $FERRY_VM_NAME"
    "#;
    let readiness = wait(
        &[gate(sh(script, ms(10_000)), ms(20_000), ms(50))],
        &subject(&["127.77.0.5", "::1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:#?}");
    assert_eq!(last_seen(outcome), "exit 0: checked pgtest1");
}

#[tokio::test]
async fn a_failing_program_is_reported_with_its_status_and_stderr() {
    let script =
        "echo 'some progress'; echo 'FATAL: the database system is starting up' >&2; exit 3";
    let readiness = wait(
        &[gate(sh(script, ms(10_000)), ms(300), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    assert!(
        last_seen(outcome).starts_with("exit 3: FATAL: the database system is starting up"),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn a_long_output_is_reported_by_its_last_lines() {
    let script = "seq 1 100000; exit 1";
    let readiness = wait(
        &[gate(sh(script, ms(10_000)), ms(20_000), ms(20_000))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    assert_eq!(
        outcome.attempts, 1,
        "the next attempt would start after the deadline"
    );
    assert_eq!(
        last_seen(outcome),
        "exit 1: …99996\n99997\n99998\n99999\n100000"
    );
}

/// The process ids a script wrote into `file`, one a line.
fn pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect()
}

/// Whether process `pid` is still alive (neither gone nor a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
    }
}

/// Waits (up to a generous bound) for the processes to be gone; the ones still alive.
async fn still_alive(pids: &[u32]) -> Vec<u32> {
    for _ in 0..100 {
        if pids.iter().all(|pid| !alive(*pid)) {
            return Vec::new();
        }
        tokio::time::sleep(ms(50)).await;
    }
    pids.iter().copied().filter(|pid| alive(*pid)).collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_program_past_its_timeout_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("pids");
    let script = format!("sleep 30 & echo $! >> {}; wait", file.display());
    let readiness = wait(
        &[gate(sh(&script, ms(500)), ms(1_200), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    assert!(
        last_seen(outcome).starts_with("timed out after 500ms and was killed"),
        "{outcome:#?}"
    );
    let started = pids(&file);
    assert!(!started.is_empty(), "the script ran");
    assert_eq!(still_alive(&started).await, Vec::<u32>::new());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_program_running_at_the_deadline_is_cut_short_and_killed() {
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("pids");
    let script = format!("sleep 30 & echo $! >> {}; wait", file.display());
    let readiness = wait(
        &[gate(sh(&script, ms(60_000)), ms(1_000), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    assert_eq!(outcome.attempts, 1);
    assert_eq!(
        last_seen(outcome),
        "no attempt ended: attempt 1 was cut short by the deadline of 1s"
    );
    let started = pids(&file);
    assert!(!started.is_empty(), "the script ran");
    assert_eq!(still_alive(&started).await, Vec::<u32>::new());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn what_a_passing_program_left_running_neither_holds_the_gate_nor_survives() {
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("pids");
    // The background sleep holds the program's stdout open after it exits: were its
    // output read to the end, the attempt would last until the deadline cut it short.
    let script = format!("sleep 30 & echo $! >> {}; echo started", file.display());
    let readiness = wait(
        &[gate(sh(&script, ms(60_000)), ms(5_000), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:#?}");
    assert_eq!(last_seen(outcome), "exit 0: started");
    let started = pids(&file);
    assert!(!started.is_empty(), "the script ran");
    assert_eq!(still_alive(&started).await, Vec::<u32>::new());
}

#[tokio::test]
async fn a_program_that_cannot_start_says_why() {
    let check = Check::Command(CommandCheck {
        program: "/nonexistent/ferry-check".to_string(),
        args: vec![],
        timeout: ms(1000),
    });
    let readiness = wait(&[gate(check, ms(200), ms(50))], &subject(&["127.0.0.1"])).await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed);
    assert!(
        last_seen(outcome).starts_with("cannot start `/nonexistent/ferry-check`"),
        "{outcome:#?}"
    );
}
