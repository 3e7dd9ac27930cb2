//! The gates against real sockets, servers and processes: listeners on port 0 of
//! loopback addresses, an axum server, `sh` scripts. Deadlines and intervals are
//! short, but the assertions are about outcomes (passed or not, what was seen), never
//! about how long something took, so a slow machine makes a test slower, not red.

mod command;
mod definition;
mod http;
mod running;
mod tcp;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use readiness::{
    Check, FailoverKind, Gate, GateOutcome, Readiness, RunningState, Subject, VmState,
};
use tokio_util::sync::CancellationToken;

/// The VM the gates are about, at `addresses`.
pub fn subject(addresses: &[&str]) -> Subject {
    Subject {
        vm_name: "pgtest1".to_string(),
        addresses: addresses
            .iter()
            .map(|a| a.parse::<IpAddr>().expect("an IP address"))
            .collect(),
        run_id: "run-7".into(),
        kind: FailoverKind::Test,
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn gate(check: Check, deadline: Duration, interval: Duration) -> Gate {
    Gate {
        check,
        deadline,
        interval,
    }
}

/// A VM that CloudStack shows `Starting` for its first `starting` looks, then
/// `Running`; or whose state cannot be read, when `unreadable`.
#[derive(Default)]
pub struct FakeVm {
    pub starting: u32,
    pub unreadable: bool,
    pub looks: AtomicU32,
}

#[async_trait::async_trait]
impl VmState for FakeVm {
    async fn is_running(&self) -> Result<RunningState, String> {
        let look = self.looks.fetch_add(1, Ordering::SeqCst);
        if self.unreadable {
            return Err("listVirtualMachines: HTTP 530".to_string());
        }
        let running = look >= self.starting;
        Ok(RunningState {
            running,
            state: if running { "Running" } else { "Starting" }.to_string(),
        })
    }
}

/// Waits for `gates` of `subject`, with a VM that runs at once.
pub async fn wait(gates: &[Gate], subject: &Subject) -> Readiness {
    readiness::wait_ready(
        gates,
        subject,
        &FakeVm::default(),
        &CancellationToken::new(),
    )
    .await
}

/// The only gate's outcome.
pub fn only(readiness: &Readiness) -> &GateOutcome {
    assert_eq!(readiness.gates.len(), 1, "{readiness:#?}");
    &readiness.gates[0]
}

/// What the gate saw last.
pub fn last_seen(outcome: &GateOutcome) -> &str {
    outcome
        .last_seen
        .as_deref()
        .expect("a gate that ran saw something")
}
