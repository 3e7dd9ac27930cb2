//! What a gate is and what it is checked against: the gates (already validated, in
//! the units the code uses), the VM they are about, and the one thing the crate
//! needs from CloudStack, behind a trait.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ids::RunId;
use serde::{Deserialize, Serialize};

/// One readiness gate: a check tried every `interval` until it passes or `deadline`
/// (counted from when the gate starts) has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub check: Check,
    pub deadline: Duration,
    /// The pause after an attempt that did not pass, before the next one.
    pub interval: Duration,
}

/// What a gate checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The VM is `Running` in CloudStack ([`VmState`]).
    Running,
    /// A TCP connection to `port` succeeds on one of the VM's addresses.
    Tcp {
        port: u16,
        /// How long one connection may take to be accepted.
        connect_timeout: Duration,
    },
    /// A GET answers one of the expected statuses on one of the VM's addresses.
    Http(HttpCheck),
    /// A program run on ferry's host exits 0.
    Command(CommandCheck),
}

/// A GET of `path` on `port` of one of the VM's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
    pub https: bool,
    /// Accept whatever certificate the guest shows (most guests made their own): the
    /// gate then checks that the service answers, not who it is.
    pub tls_skip_verify: bool,
    /// The statuses that pass; a redirect is not followed, it is a status like any.
    pub expect: Vec<u16>,
    /// How long one request (connection, answer) may take.
    pub timeout: Duration,
}

/// A program run directly (no shell) with its arguments and an environment naming
/// the VM ([`Subject`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCheck {
    pub program: String,
    pub args: Vec<String>,
    /// How long one run may take before it is killed with everything it started.
    pub timeout: Duration,
}

impl Check {
    /// The kind as the definition file spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Running => "running",
            Check::Tcp { .. } => "tcp",
            Check::Http(_) => "http",
            Check::Command(_) => "command",
        }
    }
}

impl fmt::Display for Check {
    /// A short description for reports: `tcp port 5432`, `http GET /health on port
    /// 8080`, `command /usr/local/bin/check-db pgtest1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Running => f.write_str("running"),
            Check::Tcp { port, .. } => write!(f, "tcp port {port}"),
            Check::Http(http) => {
                let scheme = if http.https { "https" } else { "http" };
                write!(f, "{scheme} GET {} on port {}", http.path, http.port)
            }
            Check::Command(command) => {
                write!(f, "command {}", command.program)?;
                for arg in &command.args {
                    write!(f, " {arg}")?;
                }
                Ok(())
            }
        }
    }
}

/// The VM whose readiness is checked, as the gates see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub vm_name: String,
    /// Where the VM can be reached; the network gates try each.
    pub addresses: Vec<IpAddr>,
    pub run_id: RunId,
    pub kind: FailoverKind,
}

/// Which failover put the VM where it is: a command gate may check less of a test
/// copy, whose network is usually isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverKind {
    Test,
    Live,
}

impl FailoverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverKind::Test => "test",
            FailoverKind::Live => "live",
        }
    }
}

impl fmt::Display for FailoverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What CloudStack says of the VM: whether it runs, and the state it showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningState {
    pub running: bool,
    /// CloudStack's state (`Starting`, `Running`, `Stopped`…), for the report.
    pub state: String,
}

/// How the `running` gate learns the VM's state. The caller implements it over its
/// CloudStack client, so this crate knows nothing of CloudStack.
#[async_trait::async_trait]
pub trait VmState: Send + Sync {
    /// The VM's state now; `Err` says why it could not be read (the gate tries again).
    async fn is_running(&self) -> Result<RunningState, String>;
}
