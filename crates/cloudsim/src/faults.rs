//! Fault injection: make CloudStack misbehave on purpose, the ways a real one does.
//!
//! A [`FaultRule`] names a command and which of its calls to hit (`nth`: 1 is the
//! next call after the rule is armed) and what happens then:
//! - `job_error`: the call is accepted, and its async job fails with the given
//!   errorcode/errortext after its usual latency, changing nothing;
//! - `transient_530`: the call itself is answered with HTTP 530 and nothing happens;
//! - `drop_connection`: the connection is closed without a response; nothing happens;
//! - `lose_response`: the call is carried out, but the response never arrives (the
//!   client's request times out);
//! - `api_error`: the call itself is refused with the given errorcode/errortext (the
//!   HTTP status is the errorcode, as CloudStack answers a call it refuses before
//!   accepting a job: a bad parameter, a permission) and nothing happens.
//!
//! - `outage`: the management server stops answering for `seconds` (wall-clock, not
//!   time-scaled), beginning with this call: see [`Outage`].
//! - `forget_job`: the call is accepted and answered with its job id, and CloudStack
//!   forgets the job at once — `queryAsyncJobResult` refuses its id (431) and it never
//!   runs — as if its database had been restored from before it (see
//!   `DELETE /sim/jobs/{id}` in docs/cloudsim.md). A call that makes no job is
//!   answered as usual.
//!
//! A rule fires `times` times on consecutive calls (default once) and is then spent.
//!
//! A rule with a `probability` is different: from its `nth` call on it hits each call
//! of its command with that probability, drawn from a generator seeded with `seed`, and
//! stays armed until the faults are cleared (`times` is not used). The draws are a
//! fixed sequence per rule, one per call it sees; which call gets which draw depends
//! on the order the calls arrive in, which concurrent clients do not fix. `command`
//! `*` matches every command, for a soak of random failures.

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
    ApiError {
        errorcode: u16,
        errortext: String,
    },
    Outage {
        seconds: f64,
        #[serde(default)]
        answer: OutageAnswer,
    },
    ForgetJob,
}

/// How `/client/api` answers during an outage: as a management server that is down
/// (the connection closed without a response) or as the load balancer in front of it
/// (HTTP 503 without CloudStack's error body).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageAnswer {
    #[default]
    Reset,
    Http503,
}

/// The management server not answering, as during a restart or an upgrade: until
/// `until`, every `/client/api` call is answered the outage's way and does nothing,
/// while the async jobs already accepted run on (CloudStack's jobs run in the
/// management server, but cloudsim's jobs stand for work the hypervisors finish; a
/// restart's effect on jobs in flight is `--state-file`'s, see docs/cloudsim.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub until: std::time::Instant,
    pub answer: OutageAnswer,
}

impl Outage {
    pub fn lasting(seconds: f64, answer: OutageAnswer) -> Outage {
        Outage {
            until: std::time::Instant::now() + std::time::Duration::from_secs_f64(seconds),
            answer,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The CloudStack command, any case (`attachVolume`); `*` for every command.
    pub command: String,
    /// Which call, counting from 1 for the next call after the rule is armed.
    #[serde(default = "one")]
    pub nth: u64,
    /// How many consecutive calls, starting at the `nth`, it hits.
    #[serde(default = "one")]
    pub times: u64,
    /// Hit each call from the `nth` on with this probability (0 to 1) instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// The seed of a probabilistic rule's draws.
    #[serde(default)]
    pub seed: u64,
    pub fault: FaultKind,
}

fn one() -> u64 {
    1
}

impl FaultRule {
    /// Why the rule cannot be armed, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.command.is_empty() {
            return Err("command is empty".into());
        }
        if self.nth == 0 {
            return Err("nth counts from 1".into());
        }
        match self.probability {
            Some(p) if !(0.0..=1.0).contains(&p) => {
                Err(format!("probability {p} is not between 0 and 1"))
            }
            _ if matches!(self.fault, FaultKind::Outage { seconds, .. } if !(0.0..=86_400.0).contains(&seconds)) => {
                Err("an outage lasts between 0 and 86400 seconds".into())
            }
            _ => Ok(()),
        }
    }

    fn matches(&self, command: &str) -> bool {
        self.command == "*" || self.command.eq_ignore_ascii_case(command)
    }
}

/// SplitMix64: a small, well-mixed generator whose sequence is fixed by its seed.
#[derive(Debug, Clone)]
struct Draws(u64);

impl Draws {
    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An armed rule and how many calls of its command it has seen.
#[derive(Debug, Clone, Serialize)]
pub struct ArmedFault {
    pub rule: FaultRule,
    pub seen: u64,
    pub fired: u64,
    #[serde(skip)]
    draws: Draws,
}

/// All armed rules.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Vec<ArmedFault>,
    outage: Option<Outage>,
}

impl Faults {
    pub fn arm(&mut self, rule: FaultRule) {
        let draws = Draws(rule.seed);
        self.armed.push(ArmedFault {
            rule,
            seen: 0,
            fired: 0,
            draws,
        });
    }

    /// Clears every rule and ends an outage.
    pub fn clear(&mut self) {
        self.armed.clear();
        self.outage = None;
    }

    /// Begins (or replaces) an outage; `None` ends it.
    pub fn set_outage(&mut self, outage: Option<Outage>) {
        self.outage = outage;
    }

    /// The outage under way, if any (one that has run its time is over).
    pub fn outage(&mut self) -> Option<Outage> {
        if self
            .outage
            .is_some_and(|o| o.until <= std::time::Instant::now())
        {
            self.outage = None;
        }
        self.outage
    }

    pub fn list(&self) -> Vec<ArmedFault> {
        self.armed.clone()
    }

    /// Counts one call of `command` against every rule for it and returns the fault
    /// to apply, if any. Spent rules are dropped.
    pub fn on_call(&mut self, command: &str) -> Option<FaultKind> {
        let mut hit = None;
        for armed in self.armed.iter_mut().filter(|a| a.rule.matches(command)) {
            armed.seen += 1;
            let first = armed.rule.nth;
            let fires = match armed.rule.probability {
                // One draw per call seen from the nth on, hit or not, so that the
                // sequence depends on the seed and the calls only.
                Some(p) => armed.seen >= first && armed.draws.next() < p,
                None => (first..=first + armed.rule.times.max(1) - 1).contains(&armed.seen),
            };
            if hit.is_none() && fires {
                armed.fired += 1;
                hit = Some(armed.rule.fault.clone());
            }
        }
        self.armed.retain(|a| {
            a.rule.probability.is_some() || a.seen < a.rule.nth + a.rule.times.max(1) - 1
        });
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
            probability: None,
            seed: 0,
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
            probability: None,
            seed: 0,
            fault: FaultKind::DropConnection,
        });
        assert!(f.on_call("listVolumes").is_some());
        assert!(f.on_call("listVolumes").is_some());
        assert!(f.on_call("listVolumes").is_none());
    }

    fn random(command: &str, p: f64, seed: u64) -> FaultRule {
        FaultRule {
            command: command.into(),
            nth: 1,
            times: 1,
            probability: Some(p),
            seed,
            fault: FaultKind::Transient530,
        }
    }

    /// Which of `calls` calls of `command` a rule hits.
    fn hits(rule: FaultRule, command: &str, calls: usize) -> Vec<usize> {
        let mut f = Faults::default();
        f.arm(rule);
        (0..calls)
            .filter(|_| f.on_call(command).is_some())
            .collect()
    }

    #[test]
    fn a_probabilistic_rule_hits_about_its_share_of_every_command_and_stays_armed() {
        let hit = hits(random("*", 0.1, 42), "attachVolume", 10_000);
        assert!(
            (900..=1100).contains(&hit.len()),
            "{} of 10000 calls hit at 10%",
            hit.len()
        );
        let mut f = Faults::default();
        f.arm(random("*", 1.0, 1));
        for c in ["listVolumes", "queryAsyncJobResult", "deployVirtualMachine"] {
            assert_eq!(f.on_call(c), Some(FaultKind::Transient530), "{c}");
        }
        assert_eq!(f.list().len(), 1, "never spent");
        assert_eq!(f.list()[0].fired, 3);
        assert!(hits(random("*", 0.0, 1), "listVolumes", 1000).is_empty());
    }

    #[test]
    fn the_same_seed_hits_the_same_calls_and_another_seed_others() {
        let a = hits(random("listVolumes", 0.1, 7), "listVolumes", 2000);
        assert_eq!(a, hits(random("listVolumes", 0.1, 7), "listVolumes", 2000));
        assert_ne!(a, hits(random("listVolumes", 0.1, 8), "listVolumes", 2000));
        assert!(hits(random("listVolumes", 1.0, 7), "attachVolume", 100).is_empty());
    }

    #[test]
    fn a_probabilistic_rule_starts_at_its_nth_call() {
        let rule = FaultRule {
            nth: 5,
            ..random("listZones", 1.0, 3)
        };
        assert_eq!(hits(rule, "listZones", 8), vec![4, 5, 6, 7]);
    }

    #[test]
    fn rules_that_cannot_fire_are_refused() {
        assert!(random("*", 1.5, 0).check().unwrap_err().contains("1.5"));
        assert!(random("*", -0.1, 0).check().is_err());
        assert!(random("*", 0.1, 0).check().is_ok());
        let zeroth = FaultRule {
            nth: 0,
            ..random("listZones", 0.5, 0)
        };
        assert!(zeroth.check().unwrap_err().contains("nth"));
    }

    #[test]
    fn rules_read_as_documented() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"command":"*","probability":0.1,"seed":9,"fault":{"kind":"drop_connection"}}"#,
        )
        .unwrap();
        assert_eq!(rule.probability, Some(0.1));
        assert_eq!(rule.seed, 9);
        let rule: FaultRule = serde_json::from_str(
            r#"{"command":"deleteVolume","fault":{"kind":"api_error","errorcode":431,"errortext":"no"}}"#,
        )
        .unwrap();
        assert_eq!(
            rule.fault,
            FaultKind::ApiError {
                errorcode: 431,
                errortext: "no".into()
            }
        );
        assert!(rule.probability.is_none());
    }
}
