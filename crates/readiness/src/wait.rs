//! Waiting for one VM's gates: in order, each until it passes or its deadline
//! passes, the first that does not pass ending the wait.
//!
//! The timing promises, and how they are kept:
//!
//! - **Prompt.** An attempt that passes ends its gate at once; the next gate starts
//!   right away. The only pause is the gate's `interval`, after an attempt that did
//!   not pass (a tokio timer, no other sleep).
//! - **The deadline is exact.** Each attempt runs under `timeout_at(deadline)`: one
//!   still in flight when the deadline comes is dropped there, which closes its
//!   sockets and kills its program's process group (`command`). No attempt starts
//!   when the next start would be at or past the deadline: the gate fails then,
//!   without waiting for a deadline it cannot use.
//! - **Cancellable.** The caller's token is watched during attempts and pauses
//!   alike; a cancelled wait drops the attempt in flight the same way.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::attempt::Probe;
use crate::gate::{Gate, Subject, VmState};
use crate::outcome::{GateOutcome, Readiness, Verdict};
use crate::seen;

/// Thirty years: the deadline of a gate whose own is too far to count.
const FOREVER: Duration = Duration::from_secs(30 * 365 * 86_400);

/// Checks `gates` for the VM `subject`, in order, and says what each saw.
///
/// Each gate is tried until it passes or its deadline, counted from its own start,
/// passes. The first gate that does not pass ends the wait: the gates after it are
/// `not_run` (they presuppose it — no HTTP answer from a VM that is not running —
/// and would only each wait out their own deadlines to say so). The VM is ready when
/// every gate passed; no gates at all is ready.
///
/// `vm` is asked only by a `running` gate. When `cancel` is cancelled, the gate in
/// flight ends `cancelled` at once and the wait returns.
pub async fn wait_ready(
    gates: &[Gate],
    subject: &Subject,
    vm: &dyn VmState,
    cancel: &CancellationToken,
) -> Readiness {
    let started_at = Utc::now();
    let started = Instant::now();
    let mut outcomes: Vec<GateOutcome> = Vec::with_capacity(gates.len());
    for (i, gate) in gates.iter().enumerate() {
        let blocked = outcomes.last().is_some_and(|last| !last.passed());
        let outcome = if blocked {
            blank(gate, Verdict::NotRun)
        } else {
            let span = tracing::info_span!(
                "readiness_gate",
                vm = %subject.vm_name,
                run = %subject.run_id,
                gate = i,
                check = %gate.check,
            );
            run_gate(gate, subject, vm, cancel).instrument(span).await
        };
        outcomes.push(outcome);
    }
    Readiness {
        ready: outcomes.iter().all(GateOutcome::passed),
        started_at,
        elapsed_ms: millis(started.elapsed()),
        gates: outcomes,
    }
}

/// A gate's outcome before (or without) any attempt.
fn blank(gate: &Gate, verdict: Verdict) -> GateOutcome {
    GateOutcome {
        kind: gate.check.kind().to_string(),
        check: gate.check.to_string(),
        verdict,
        attempts: 0,
        elapsed_ms: 0,
        last_seen: None,
        passed_at: None,
    }
}

/// Tries one gate until it passes, its deadline passes or the wait is cancelled.
async fn run_gate(
    gate: &Gate,
    subject: &Subject,
    vm: &dyn VmState,
    cancel: &CancellationToken,
) -> GateOutcome {
    let started = Instant::now();
    // A deadline past what the clock can count is as good as none.
    let deadline = started
        .checked_add(gate.deadline)
        .unwrap_or_else(|| started + FOREVER);
    let mut outcome = blank(gate, Verdict::Failed);
    match Probe::new(&gate.check, subject) {
        Ok(probe) => try_until(&probe, gate, deadline, subject, vm, cancel, &mut outcome).await,
        Err(why) => outcome.last_seen = Some(why),
    }
    outcome.elapsed_ms = millis(started.elapsed());
    match outcome.verdict {
        Verdict::Passed => tracing::info!(
            attempts = outcome.attempts,
            elapsed_ms = outcome.elapsed_ms,
            seen = outcome.last_seen.as_deref().unwrap_or_default(),
            "readiness gate passed"
        ),
        verdict => tracing::warn!(
            %verdict,
            attempts = outcome.attempts,
            elapsed_ms = outcome.elapsed_ms,
            seen = outcome.last_seen.as_deref().unwrap_or_default(),
            "readiness gate did not pass"
        ),
    }
    outcome
}

/// The attempts of one gate, written into `outcome` (its verdict is `Failed` until
/// one passes).
async fn try_until(
    probe: &Probe<'_>,
    gate: &Gate,
    deadline: Instant,
    subject: &Subject,
    vm: &dyn VmState,
    cancel: &CancellationToken,
    outcome: &mut GateOutcome,
) {
    loop {
        if cancel.is_cancelled() {
            outcome.verdict = Verdict::Cancelled;
            return;
        }
        outcome.attempts += 1;
        let attempt = tokio::time::timeout_at(deadline, probe.attempt(subject, vm));
        let seen = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                outcome.verdict = Verdict::Cancelled;
                return;
            }
            seen = attempt => seen,
        };
        match seen {
            Ok(seen) if seen.passed => {
                outcome.verdict = Verdict::Passed;
                outcome.passed_at = Some(Utc::now());
                outcome.last_seen = Some(seen.what);
                return;
            }
            Ok(seen) => {
                tracing::debug!(attempt = outcome.attempts, seen = %seen.what, "not yet");
                outcome.last_seen = Some(seen.what);
            }
            Err(_) => {
                let cut = format!(
                    "attempt {} was cut short by the deadline of {}",
                    outcome.attempts,
                    seen::duration(gate.deadline)
                );
                outcome.last_seen = Some(match outcome.last_seen.take() {
                    Some(before) => format!("{before}; then {cut}"),
                    None => format!("no attempt ended: {cut}"),
                });
                return;
            }
        }
        let next = match Instant::now().checked_add(gate.interval) {
            Some(next) if next < deadline => next,
            _ => return,
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                outcome.verdict = Verdict::Cancelled;
                return;
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
