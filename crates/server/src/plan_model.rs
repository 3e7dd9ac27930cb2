//! What the REST API sends and receives about recovery plans (docs/recovery-plans.md):
//! like [`crate::model`], the JSON contract of the API and of the CLI's
//! `--output json`. Fields are only ever added.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::DefinitionFormat;

/// Adds a recovery plan from its file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPlan {
    /// The plan file's text.
    pub definition: String,
    #[serde(default)]
    pub format: DefinitionFormat,
}

/// Changes a recovery plan: the same file as for adding it, naming the same plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    /// The plan file's text.
    pub definition: String,
    #[serde(default)]
    pub format: DefinitionFormat,
    /// `true`: check the file and say what it would change, writing nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A recovery plan in a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanSummary {
    pub name: String,
    pub description: String,
    /// How many boot tiers, and VMs in all of them.
    pub tiers: usize,
    pub vms: usize,
    pub drill_interval_days: Option<u32>,
    pub updated_at: String,
    /// Whether the plan needs a drill (see `drill_reasons` in its detail).
    pub needs_drill: bool,
    /// When its last drill that ended done finished.
    pub last_drill_at: Option<String>,
}

/// A recovery plan as ferry keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanDetail {
    pub name: String,
    pub description: String,
    /// SHA-256 of the plan as stored: another digest is another version of it.
    pub digest: String,
    pub drill_interval_days: Option<u32>,
    /// What a plan run does when a VM of a tier fails: `stop` or `continue`.
    pub on_failure: PlanPolicyView,
    /// Hooks of the whole plan (before its first tier, after its last).
    pub hooks: Vec<PlanHookView>,
    /// The boot tiers, in order.
    pub tiers: Vec<TierView>,
    pub created_at: String,
    pub updated_at: String,
    /// Whether the plan needs a drill: never drilled, the plan or one of its VMs
    /// changed since its last drill that ended done, or that drill is older than
    /// `drill_interval_days`.
    pub needs_drill: bool,
    /// Why, one reason each.
    pub drill_reasons: Vec<String>,
    pub last_drill_at: Option<String>,
    /// The plan run of its last drill that ended done (`ferry plan run ID`), the
    /// plan's RTO in it (request → the last VM ready) and each VM's (request → the VM
    /// ready), in milliseconds.
    pub last_drill_run: Option<String>,
    pub last_drill_rto_ms: Option<i64>,
    #[schema(value_type = Object)]
    pub last_drill_vm_rto_ms: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanPolicyView {
    pub test: String,
    pub live: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TierView {
    pub name: String,
    /// Its protected VMs, as the file names them.
    pub vms: Vec<String>,
    pub delay_after_secs: u64,
    pub hooks: Vec<PlanHookView>,
    /// The readiness gates of each VM of the tier (docs/readiness.md), by VM name, as
    /// the file gives them: a VM's own, else the tier's, else `running`.
    #[schema(value_type = Object)]
    pub gates: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanHookView {
    /// `before` or `after`.
    pub when: String,
    /// `test`, `live` or `both`.
    pub scope: String,
    /// The hook as the file gives it (`kind` `command` or `http`, …).
    #[schema(value_type = Object)]
    pub run: serde_json::Value,
}

/// What `PUT /v1/plans/{name}` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanUpdated {
    #[serde(flatten)]
    pub plan: PlanDetail,
    /// What changed, one line each; empty when the file is the plan as stored.
    pub changes: Vec<String>,
    pub dry_run: bool,
    /// Whether the changes were written: there were some and it was no dry run.
    pub updated: bool,
}

/// A run of a recovery plan (`POST /v1/plans/{name}/test-failover`, `cleanup`,
/// `live-failover`, `rollback`, `commit`): where it is, and each VM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanRunView {
    pub id: String,
    pub plan: String,
    /// The workflow each VM's run is: `test_failover`, `cleanup`, `live_failover`,
    /// `rollback` or `commit`.
    pub workflow: String,
    /// `pending`, `running`, `stopped` (a VM failed and the policy stopped the plan
    /// before its next tier), `done` or `failed` (it ended with VMs that did not come
    /// through; `error` names them).
    pub state: String,
    /// The tier under way (1 = the first the workflow takes; a cleanup or rollback
    /// takes the plan's last tier first), and how many there are.
    pub tier: i64,
    pub tiers: i64,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Request → the last VM ready, in milliseconds (the plan's RTO), once every VM of
    /// a test or live failover is.
    pub rto_ms: Option<i64>,
    /// The worker driving it (holding its lease), while one does, and the fencing
    /// generation: raised each time a worker takes the plan run over.
    pub worker: Option<String>,
    pub generation: i64,
    /// Each tier in the order the workflow takes them, with its times.
    pub tier_timings: Vec<PlanRunTierView>,
    pub vms: Vec<PlanRunVmView>,
    /// Every hook of the plan and its tiers for this workflow, in the order they come
    /// (the plan's `before`, each tier's `before` and `after`, the plan's `after`),
    /// with how each went.
    #[serde(default)]
    pub hooks: Vec<PlanRunHookView>,
}

/// A hook of a plan run and how it went.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanRunHookView {
    /// The tier it belongs to (1 = the first the workflow takes), and its name; none
    /// for the plan's own hooks.
    pub tier: Option<i64>,
    pub tier_name: Option<String>,
    /// `before` or `after`.
    pub point: String,
    /// What it is: `command /usr/local/bin/smoke`, `POST https://…`.
    pub hook: String,
    /// `not_run` (not reached, or after one that failed), `running`, `succeeded` or
    /// `failed`.
    pub outcome: String,
    /// What it said once it ended: its exit and output (`exited 0; stdout: …`), or
    /// why it failed.
    pub detail: Option<String>,
    /// How many times it was started (more than once when the plan run resumed after
    /// a crash while it ran).
    pub attempts: i64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// Its time, in milliseconds (to now while it runs).
    pub ms: Option<i64>,
}

impl PlanRunHookView {
    /// Where it runs, in words: `plan before`, `tier web after`.
    pub fn place(&self) -> String {
        match &self.tier_name {
            Some(name) => format!("tier {name} {}", self.point),
            None => format!("plan {}", self.point),
        }
    }

    /// What it said or why it failed, and how many times it was started when more
    /// than once.
    pub fn note(&self) -> Option<String> {
        match (&self.detail, self.attempts) {
            (Some(why), n) if n > 1 => Some(format!("{why} (started {n} times)")),
            (None, n) if n > 1 => Some(format!("started {n} times")),
            (detail, _) => detail.clone(),
        }
    }
}

/// A tier of a plan run and its times; a tier not reached has none.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanRunTierView {
    /// 1 = the first the workflow takes.
    pub tier: i64,
    pub name: String,
    /// The plan run moved to it: its `before` hooks, then its VMs' runs.
    pub started_at: Option<String>,
    /// Every VM of it ready, failed or skipped (its runs and readiness gates through).
    pub through_at: Option<String>,
    /// The plan run moved past it, or stopped or ended at it: its `after` hooks and
    /// its delay done.
    pub ended_at: Option<String>,
    /// started → through, in milliseconds: what its VMs took.
    pub vms_ms: Option<i64>,
    /// started → ended (to now while under way), in milliseconds: the whole tier.
    pub ms: Option<i64>,
}

/// One VM of a plan run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanRunVmView {
    pub name: String,
    /// Its tier, 1 = the first the workflow takes.
    pub tier: i64,
    /// `waiting`, `starting`, `running`, `checking` (its readiness gates), `ready`,
    /// `failed` or `skipped`.
    pub state: String,
    /// Its own run (`ferry run show`).
    pub run_id: Option<String>,
    /// Request of the plan run → this VM ready, in milliseconds (its RTO; failovers only).
    pub rto_ms: Option<i64>,
    pub detail: Option<String>,
    /// What its readiness gates saw (docs/readiness.md), once tried.
    #[schema(value_type = Object)]
    pub readiness: Option<serde_json::Value>,
}
