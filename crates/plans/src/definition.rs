//! The recovery plan file: what an operator writes to fail over an application — its
//! VMs in boot tiers, what to do when one fails, the hooks around tiers. TOML or
//! JSON, with the same fields; unknown fields are refused so that a typo cannot
//! silently drop a setting. `docs/recovery-plans.md` documents it, and
//! `docs/examples/shop.toml` is parsed by a test.

use std::collections::BTreeMap;

use inventory::{Format, Problem};
use readiness::GateSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::Workflow;
use workflows::Hook;

/// A whole plan file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDefinition {
    /// The plan's name: 1–63 letters, digits and hyphens, starting with a letter.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A plan whose last successful drill is older than this many days needs a drill
    /// (as does one changed since it, always). None: only changes make it need one.
    #[serde(default)]
    pub drill_interval_days: Option<u32>,
    /// What a plan run does when a VM of a tier fails (its failover, or its readiness).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Hooks of the whole plan: `before` runs before the first tier, `after` after the
    /// last one is ready.
    #[serde(default)]
    pub hooks: Vec<PlanHook>,
    /// The boot tiers, in order: a tier starts when every VM of the one before is ready.
    #[serde(default)]
    pub tiers: Vec<Tier>,
}

/// One boot tier: VMs failed over at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    /// Protected VMs (registered names).
    pub vms: Vec<String>,
    /// Seconds to wait after this tier is ready before the next starts.
    #[serde(default)]
    pub delay_after_secs: u64,
    /// Hooks of this tier: `before` runs before its VMs start, `after` once all are ready.
    #[serde(default)]
    pub hooks: Vec<PlanHook>,
    /// The readiness gates of the tier's VMs (docs/readiness.md); none: the VM Running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateSpec>,
    /// A VM's own gates instead of the tier's, by VM name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vm_gates: BTreeMap<String, Vec<GateSpec>>,
}

/// What a plan run does when a VM of a tier fails, per kind of failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnFailure {
    /// A drill (`plan test`).
    #[serde(default)]
    pub test: Policy,
    /// A live failover (`plan live`).
    #[serde(default)]
    pub live: Policy,
}

/// When a VM of a tier fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Let the rest of the tier end, then stop before the next tier; what came up stays
    /// for inspection (the plan's cleanup or rollback undoes all of it). The default:
    /// the next tier would start against a dependency that is not there.
    #[default]
    Stop,
    /// Go on with the next tier anyway (for tiers that do not depend on each other).
    Continue,
}

/// A hook of a plan or tier, scoped to the workflows it runs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanHook {
    pub when: When,
    #[serde(default)]
    pub scope: Scope,
    /// What to run: a command or an HTTP call, as ferry's other hooks.
    pub run: Hook,
}

/// Before or after the plan or tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Before,
    After,
}

/// Which of a plan's workflows a hook runs for: the failovers by default, never the
/// workflows that take one back or make it final unless it says so (a hook told to
/// run "before the drill" must not run again before its cleanup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The test failover (a drill).
    Test,
    /// The live failover.
    Live,
    /// Both failovers.
    #[default]
    Both,
    /// The cleanup of a drill.
    Cleanup,
    /// The rollback of a live failover.
    Rollback,
    /// The commit of a live failover.
    Commit,
    /// Every workflow of the plan.
    Any,
}

impl Policy {
    /// The word the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Stop => "stop",
            Policy::Continue => "continue",
        }
    }
}

impl When {
    /// The word the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            When::Before => "before",
            When::After => "after",
        }
    }
}

impl Scope {
    /// The word the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Test => "test",
            Scope::Live => "live",
            Scope::Both => "both",
            Scope::Cleanup => "cleanup",
            Scope::Rollback => "rollback",
            Scope::Commit => "commit",
            Scope::Any => "any",
        }
    }

    /// Whether a hook of this scope runs in a plan run of `workflow`.
    pub fn covers(self, workflow: Workflow) -> bool {
        match self {
            Scope::Test => workflow == Workflow::TestFailover,
            Scope::Live => workflow == Workflow::LiveFailover,
            Scope::Both => matches!(workflow, Workflow::TestFailover | Workflow::LiveFailover),
            Scope::Cleanup => workflow == Workflow::Cleanup,
            Scope::Rollback => workflow == Workflow::Rollback,
            Scope::Commit => workflow == Workflow::Commit,
            Scope::Any => true,
        }
    }
}

/// Why a plan file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not valid TOML for a recovery plan: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("not valid JSON for a recovery plan: {0}")]
    Json(#[from] serde_json::Error),
}

impl ParseError {
    /// The error as the problems of a refused definition.
    pub fn problems(&self) -> Vec<Problem> {
        vec![Problem {
            field: "definition".into(),
            message: self.to_string(),
        }]
    }
}

impl PlanDefinition {
    /// Reads a plan file's text.
    pub fn parse(text: &str, format: Format) -> Result<PlanDefinition, ParseError> {
        Ok(match format {
            Format::Toml => toml::from_str(text)?,
            Format::Json => serde_json::from_str(text)?,
        })
    }

    /// The definition as the store keeps it: JSON, fields in a fixed order.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("a plan definition is always JSON")
    }

    /// A stored definition read back.
    pub fn from_stored(text: &str) -> Result<PlanDefinition, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// SHA-256 of the stored form, in hex: another digest is another version of the plan.
    pub fn digest(&self) -> String {
        Sha256::digest(self.to_stored().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The gates `vm` must pass to be ready: its own, else its tier's, else the VM
    /// Running in CloudStack. `None` for a VM the plan does not name.
    pub fn gates_of(&self, vm: &str) -> Option<Vec<GateSpec>> {
        let tier = &self.tiers[self.tier_of(vm)?];
        Some(match tier.vm_gates.get(vm) {
            Some(own) => own.clone(),
            None if !tier.gates.is_empty() => tier.gates.clone(),
            None => vec![GateSpec {
                kind: Some("running".into()),
                ..GateSpec::default()
            }],
        })
    }

    /// The tier (its index) that names `vm`.
    pub fn tier_of(&self, vm: &str) -> Option<usize> {
        self.tiers
            .iter()
            .position(|t| t.vms.iter().any(|v| v == vm))
    }
}
