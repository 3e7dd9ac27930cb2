//! How the console writes sizes, durations, times and states: as the CLI does
//! (`crates/ferry/src/client/render.rs`), so an operator reads the same words on
//! both. A state is always shown as a word with a symbol; its colour only repeats
//! what they say.

pub use crate::words::{duration, gib};

/// Unix milliseconds of an RFC 3339 time, when it reads as one.
pub fn ms_of(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `2025-03-14 03:02:11 UTC`, or the text itself when it is no RFC 3339 time.
pub fn when(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// How long ago `rfc3339` was, at `now_ms`: `just now`, `5 min ago`, `3 h ago`,
/// `12 days ago`.
pub fn age(rfc3339: &str, now_ms: i64) -> String {
    let Some(at) = ms_of(rfc3339) else {
        return rfc3339.to_string();
    };
    let s = (now_ms - at).max(0) / 1000;
    match s {
        0..60 => "just now".into(),
        60..3_600 => format!("{} min ago", s / 60),
        3_600..86_400 => format!("{} h ago", s / 3_600),
        _ => {
            let days = s / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
    }
}

/// A state as the console shows it: the word (underscores as spaces), a symbol, and
/// the class that colours it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badge {
    pub word: String,
    pub symbol: &'static str,
    pub class: &'static str,
}

impl Badge {
    /// The badge of a run's, a step's, a job's, a VM's or a plan run's state.
    pub fn of(state: &str) -> Badge {
        let (symbol, class) = match state {
            "done" | "succeeded" | "ready" | "ready_for_failover" | "reachable" => ("✔", "ok"),
            "running" | "undoing" | "unwinding" | "submitted" | "starting" | "checking" => {
                ("⟳", "busy")
            }
            "pending" | "waiting" => ("·", "idle"),
            "undone" | "unwound" => ("↺", "undone"),
            "failed" | "undo_failed" | "stuck" | "ended" | "unreachable" => ("✘", "bad"),
            "abandoned" | "stopped" | "skipped" => ("⊘", "warn"),
            "test_failed_over" => ("⇄", "busy"),
            "failed_over" => ("➜", "warn"),
            "committed" => ("■", "idle"),
            _ => ("•", "idle"),
        };
        Badge {
            word: state.replace('_', " "),
            symbol,
            class,
        }
    }
}

/// Whether a run's state will change no more without an operator: a final state, or
/// `stuck`.
pub fn settled(state: &str) -> bool {
    matches!(state, "done" | "unwound" | "abandoned" | "stuck")
}

/// `test_failover (replica mode)` → `test failover (replica mode)`.
pub fn workflow(workflow: &str, mode: Option<&str>) -> String {
    let word = workflow.replace('_', " ");
    match mode {
        Some(mode) => format!("{word} ({mode} mode)"),
        None => word,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_ages_read_as_the_cli_writes_them() {
        assert_eq!(gib(107 << 30), "107 GiB");
        assert_eq!(gib(1 << 29), "0.5 GiB");
        assert_eq!(duration(400), "0.4 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(7_380_000), "2 h 03 min");
        let t = "2025-03-14T03:02:11.412Z";
        let at = ms_of(t).expect("a time");
        assert_eq!(when(t), "2025-03-14 03:02:11 UTC");
        assert_eq!(age(t, at + 5_000), "just now");
        assert_eq!(age(t, at + 300_000), "5 min ago");
        assert_eq!(age(t, at + 3 * 3_600_000), "3 h ago");
        assert_eq!(age(t, at + 86_400_000), "1 day ago");
        assert_eq!(age(t, at + 12 * 86_400_000), "12 days ago");
    }

    #[test]
    fn every_state_has_a_word_and_a_symbol() {
        for state in [
            "done",
            "running",
            "pending",
            "undone",
            "failed",
            "stuck",
            "abandoned",
            "test_failed_over",
            "anything",
        ] {
            let badge = Badge::of(state);
            assert!(!badge.word.is_empty() && !badge.symbol.is_empty());
        }
        assert_eq!(Badge::of("undo_failed").word, "undo failed");
        assert_eq!(
            workflow("test_failover", Some("replica")),
            "test failover (replica mode)"
        );
    }
}
