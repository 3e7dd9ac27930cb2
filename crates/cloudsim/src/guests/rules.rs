//! Guest rules: which VMs have an emulated guest, how long it takes to boot and which
//! ports it serves — the world file's `[[guests]]` and the body of `PUT /sim/guests`.
//!
//! A list of rules is checked as a whole when it is read ([`GuestRules`] can only be
//! made valid), so a world file and a `PUT` are refused with the same reasons: a name
//! pattern that is not a VM name or a prefix of one with a trailing `*`, a port 0, a
//! port listed twice or in both lists, a rule without ports, a boot time over a day,
//! and a rule that can never apply because an earlier one matches every VM it matches
//! (the first matching rule applies).

use serde::{Deserialize, Serialize};

/// The longest boot a rule may ask for (before the time scale): a day, as the longest
/// outage `/sim/outage` takes.
pub const MAX_BOOT_MS: u64 = 86_400_000;

/// The most ports one rule may list (both lists together): each is bound on each of
/// the VM's loopback addresses.
pub const MAX_PORTS: usize = 32;

/// One `[[guests]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRule {
    /// A VM name (`pgtest1`) or a name prefix with a trailing `*` (`pgtest1*`, which
    /// matches ferry's drill VMs `pgtest1-test-<timestamp>`); `*` alone matches every
    /// VM. Matched without regard to ASCII case, as CloudStack compares host names.
    pub vm: String,
    /// How long after the VM reaches Running its guest comes up, in milliseconds
    /// before the time scale.
    pub boot_ms: u64,
    /// Ports that accept TCP connections (and close each at once).
    #[serde(default)]
    pub tcp_ports: Vec<u16>,
    /// Ports that answer any HTTP/1.x request with `200 OK` and a short body.
    #[serde(default)]
    pub http_ports: Vec<u16>,
    /// The guest never comes up: a VM that boots but whose service never starts.
    #[serde(default)]
    pub never: bool,
}

impl GuestRule {
    /// Whether the rule applies to the VM named `name`.
    pub fn matches(&self, name: &str) -> bool {
        match self.vm.strip_suffix('*') {
            Some(prefix) => name
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
            None => name.eq_ignore_ascii_case(&self.vm),
        }
    }

    /// Whether every VM this rule matches is matched by `earlier` too.
    fn shadowed_by(&self, earlier: &GuestRule) -> bool {
        match earlier.vm.strip_suffix('*') {
            // A prefix covers every name and every prefix that starts with it.
            Some(prefix) => self
                .vm
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
            None => self.vm.eq_ignore_ascii_case(&earlier.vm),
        }
    }

    fn check(&self) -> Result<(), Problem> {
        let name = self.vm.strip_suffix('*').unwrap_or(&self.vm);
        let pattern_ok = !self.vm.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !pattern_ok {
            return Err(Problem::Pattern);
        }
        if self.boot_ms > MAX_BOOT_MS {
            return Err(Problem::BootTooLong(self.boot_ms));
        }
        let all: Vec<u16> = self
            .tcp_ports
            .iter()
            .chain(&self.http_ports)
            .copied()
            .collect();
        if all.is_empty() {
            return Err(Problem::NoPorts);
        }
        if all.len() > MAX_PORTS {
            return Err(Problem::TooManyPorts(all.len()));
        }
        if all.contains(&0) {
            return Err(Problem::PortZero);
        }
        if let Some(port) = self.tcp_ports.iter().find(|p| self.http_ports.contains(p)) {
            return Err(Problem::PortInBoth(*port));
        }
        for (i, port) in all.iter().enumerate() {
            if all[..i].contains(port) {
                return Err(Problem::PortTwice(*port));
            }
        }
        Ok(())
    }
}

/// What is wrong with one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(
        "`vm` must be a VM name (letters, digits and '-', at most 63) or a prefix of one followed by '*'"
    )]
    Pattern,
    #[error("boot_ms {0} is more than a day (86400000)")]
    BootTooLong(u64),
    #[error("it lists no port: give tcp_ports, http_ports or both")]
    NoPorts,
    #[error("it lists {0} ports; at most 32")]
    TooManyPorts(usize),
    #[error("port 0 cannot be listened on")]
    PortZero,
    #[error("port {0} is in both tcp_ports and http_ports")]
    PortInBoth(u16),
    #[error("port {0} is listed twice")]
    PortTwice(u16),
    #[error("it can never apply: rule {earlier} (`{pattern}`) matches every VM it matches")]
    Shadowed { earlier: usize, pattern: String },
}

/// Why a list of guest rules was refused: the first rule (counted from 1) that is
/// wrong, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest rule {index} (vm = `{pattern}`): {problem}")]
pub struct GuestRulesError {
    pub index: usize,
    pub pattern: String,
    pub problem: Problem,
}

/// A checked list of guest rules; the first that matches a VM's name applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<GuestRule>", into = "Vec<GuestRule>")]
pub struct GuestRules(Vec<GuestRule>);

impl GuestRules {
    /// The rules, if each is sound and each can apply.
    pub fn new(rules: Vec<GuestRule>) -> Result<GuestRules, GuestRulesError> {
        for (i, rule) in rules.iter().enumerate() {
            let refuse = |problem| GuestRulesError {
                index: i + 1,
                pattern: rule.vm.clone(),
                problem,
            };
            rule.check().map_err(refuse)?;
            if let Some(earlier) = rules[..i].iter().position(|e| rule.shadowed_by(e)) {
                return Err(refuse(Problem::Shadowed {
                    earlier: earlier + 1,
                    pattern: rules[earlier].vm.clone(),
                }));
            }
        }
        Ok(GuestRules(rules))
    }

    pub fn rules(&self) -> &[GuestRule] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rule for the VM named `name`: the first that matches.
    pub fn for_vm(&self, name: &str) -> Option<&GuestRule> {
        self.0.iter().find(|r| r.matches(name))
    }
}

impl TryFrom<Vec<GuestRule>> for GuestRules {
    type Error = GuestRulesError;

    fn try_from(rules: Vec<GuestRule>) -> Result<Self, Self::Error> {
        GuestRules::new(rules)
    }
}

impl From<GuestRules> for Vec<GuestRule> {
    fn from(rules: GuestRules) -> Self {
        rules.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(vm: &str) -> GuestRule {
        GuestRule {
            vm: vm.into(),
            boot_ms: 1000,
            tcp_ports: vec![5432],
            http_ports: vec![8080],
            never: false,
        }
    }

    #[test]
    fn a_name_matches_exactly_and_a_pattern_by_prefix_regardless_of_case() {
        assert!(rule("pgtest1").matches("PGtest1"));
        assert!(!rule("pgtest1").matches("pgtest1-test-1"));
        assert!(rule("pgtest1*").matches("pgtest1-test-20261204T1830"));
        assert!(rule("pgtest1*").matches("pgtest1"));
        assert!(!rule("pgtest1*").matches("pgtest"));
        assert!(rule("*").matches("anything"));
    }

    #[test]
    fn the_first_matching_rule_applies() {
        let rules = GuestRules::new(vec![rule("pgtest1*"), rule("pg*")]).expect("valid");
        assert_eq!(
            rules.for_vm("pgtest1-test-1").map(|r| &*r.vm),
            Some("pgtest1*")
        );
        assert_eq!(rules.for_vm("pgtest2").map(|r| &*r.vm), Some("pg*"));
        assert_eq!(rules.for_vm("web01"), None);
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_and_the_reason() {
        let refused = |rules: Vec<GuestRule>| GuestRules::new(rules).unwrap_err();
        let with = |f: fn(&mut GuestRule)| {
            let mut r = rule("pgtest1*");
            f(&mut r);
            r
        };
        for pattern in ["", "pg*test", "pg test", "pg?", "**"] {
            assert_eq!(
                refused(vec![rule(pattern)]).problem,
                Problem::Pattern,
                "{pattern}"
            );
        }
        assert_eq!(
            refused(vec![with(|r| r.tcp_ports = vec![0])]).problem,
            Problem::PortZero
        );
        assert_eq!(
            refused(vec![with(|r| r.http_ports = vec![5432])]).problem,
            Problem::PortInBoth(5432)
        );
        assert_eq!(
            refused(vec![with(|r| r.tcp_ports = vec![22, 22])]).problem,
            Problem::PortTwice(22)
        );
        assert_eq!(
            refused(vec![with(|r| {
                r.tcp_ports.clear();
                r.http_ports.clear();
            })])
            .problem,
            Problem::NoPorts
        );
        assert_eq!(
            refused(vec![with(|r| r.tcp_ports = (1..=40).collect())]).problem,
            Problem::TooManyPorts(41)
        );
        assert_eq!(
            refused(vec![with(|r| r.boot_ms = MAX_BOOT_MS + 1)]).problem,
            Problem::BootTooLong(MAX_BOOT_MS + 1)
        );
        let shadowed = refused(vec![rule("web01"), rule("pg*"), rule("PGtest1*")]);
        assert_eq!(shadowed.index, 3);
        assert_eq!(
            shadowed.to_string(),
            "guest rule 3 (vm = `PGtest1*`): it can never apply: rule 2 (`pg*`) matches every VM it matches"
        );
        assert!(GuestRules::new(vec![rule("pgtest1"), rule("pgtest1*")]).is_ok());
        assert_eq!(refused(vec![rule("pgtest1*"), rule("pgtest1")]).index, 2);
    }
}
