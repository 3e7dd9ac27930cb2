//! What waiting for readiness found: one [`GateOutcome`] per gate, in the gates'
//! order. These are stored with the run and shown later (`run show`, reports,
//! metrics), so they are plain serializable data: durations in milliseconds, times in
//! UTC, and what the gate saw as text.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The readiness of one VM: ready when every gate passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub started_at: DateTime<Utc>,
    /// From the start of the first gate to the end of the last one that ran.
    pub elapsed_ms: u64,
    pub gates: Vec<GateOutcome>,
}

impl Readiness {
    /// The first gate that did not pass, if any.
    pub fn first_unready(&self) -> Option<&GateOutcome> {
        self.gates.iter().find(|g| g.verdict != Verdict::Passed)
    }
}

/// What became of one gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateOutcome {
    /// The gate's kind (`running`, `tcp`, `http`, `command`).
    pub kind: String,
    /// What it checks, for a reader: `tcp port 5432`, `http GET /health on port 8080`.
    pub check: String,
    pub verdict: Verdict,
    /// How many attempts were started (the last may have been cut short).
    pub attempts: u32,
    /// From the gate's start to its end.
    pub elapsed_ms: u64,
    /// What the last attempt saw, passing or not: `connected to 127.0.0.1:5432`,
    /// `connection refused on 127.77.0.5:5432 and 127.77.1.5:5432`, `HTTP 503 from
    /// http://127.77.0.5:8080/health`, `exit 3: <the end of its output>`, `state
    /// Starting`. `None` for a gate that was not run, or was cancelled before an
    /// attempt ended.
    pub last_seen: Option<String>,
    /// When the gate passed.
    pub passed_at: Option<DateTime<Utc>>,
}

impl GateOutcome {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Passed
    }
}

/// How a gate ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// An attempt passed before the deadline.
    Passed,
    /// The deadline passed (or no further attempt could start before it) without a
    /// passing attempt.
    Failed,
    /// The wait was cancelled while this gate ran.
    Cancelled,
    /// Not run: an earlier gate did not pass.
    NotRun,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Cancelled => "cancelled",
            Verdict::NotRun => "not_run",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
