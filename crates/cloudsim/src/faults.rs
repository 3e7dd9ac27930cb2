//! Fault injection: make CloudStack misbehave on purpose, the ways a real one does.
//!
//! A [`FaultRule`] names a command and which of its calls to hit (`nth`: 1 is the
//! next call after the rule is armed) and what happens then:
//! - `job_error`: the call is accepted, and its async job fails with the given
//!   errorcode/errortext after its usual latency, changing nothing;
//! - `transient_530`: the call itself is answered with HTTP 530 and nothing happens;
//! - `drop_connection`: the connection is closed without a response; nothing happens;
//! - `lose_response`: the call is carried out, but the response never arrives (the
//!   client's request times out).
//!
//! A rule fires `times` times on consecutive calls (default once) and is then spent.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultKind {
    JobError {
        errorcode: u16,
        errortext: String,
    },
    // `snake_case` alone would spell it `transient530`, not the documented name.
    #[serde(rename = "transient_530", alias = "transient530")]
    Transient530,
    DropConnection,
    LoseResponse,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The CloudStack command, any case (`attachVolume`).
    pub command: String,
    /// Which call, counting from 1 for the next call after the rule is armed.
    #[serde(default = "one")]
    pub nth: u64,
    /// How many consecutive calls, starting at the `nth`, it hits.
    #[serde(default = "one")]
    pub times: u64,
    pub fault: FaultKind,
}

fn one() -> u64 {
    1
}

/// An armed rule and how many calls of its command it has seen.
#[derive(Debug, Clone, Serialize)]
pub struct ArmedFault {
    pub rule: FaultRule,
    pub seen: u64,
    pub fired: u64,
}

/// All armed rules.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Vec<ArmedFault>,
}

impl Faults {
    pub fn arm(&mut self, rule: FaultRule) {
        self.armed.push(ArmedFault {
            rule,
            seen: 0,
            fired: 0,
        });
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }

    pub fn list(&self) -> Vec<ArmedFault> {
        self.armed.clone()
    }

    /// Counts one call of `command` against every rule for it and returns the fault
    /// to apply, if any. Spent rules are dropped.
    pub fn on_call(&mut self, command: &str) -> Option<FaultKind> {
        let mut hit = None;
        for armed in self
            .armed
            .iter_mut()
            .filter(|a| a.rule.command.eq_ignore_ascii_case(command))
        {
            armed.seen += 1;
            let first = armed.rule.nth;
            let last = first + armed.rule.times.max(1) - 1;
            if hit.is_none() && (first..=last).contains(&armed.seen) {
                armed.fired += 1;
                hit = Some(armed.rule.fault.clone());
            }
        }
        self.armed
            .retain(|a| a.seen < a.rule.nth + a.rule.times.max(1) - 1);
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_call_is_hit_once() {
        let mut f = Faults::default();
        f.arm(FaultRule {
            command: "attachVolume".into(),
            nth: 2,
            times: 1,
            fault: FaultKind::Transient530,
        });
        assert_eq!(f.on_call("detachVolume"), None);
        assert_eq!(f.on_call("attachvolume"), None);
        assert_eq!(f.on_call("ATTACHVOLUME"), Some(FaultKind::Transient530));
        assert_eq!(f.on_call("attachVolume"), None);
        assert!(f.list().is_empty());
    }

    #[test]
    fn times_hits_consecutive_calls() {
        let mut f = Faults::default();
        f.arm(FaultRule {
            command: "listVolumes".into(),
            nth: 1,
            times: 2,
            fault: FaultKind::DropConnection,
        });
        assert!(f.on_call("listVolumes").is_some());
        assert!(f.on_call("listVolumes").is_some());
        assert!(f.on_call("listVolumes").is_none());
    }
}
