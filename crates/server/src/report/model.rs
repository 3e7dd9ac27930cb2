//! The evidence report's facts: what it holds, as JSON (serde) and as a JSON Schema
//! (schemars), checked in as `docs/report.schema.json`.
//!
//! These types are a contract like the API's: fields are only added. Times are RFC 3339
//! in UTC with milliseconds, durations integers in milliseconds, absent values `null`
//! (every field is always present), as in the REST API (docs/api.md).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What `format` says: the report's layout and how its digest is computed.
pub const FORMAT: &str = "ferry-report/1";

/// The drill evidence report of one run or one plan run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// `ferry-report/1`: this layout, and the digest computed as docs/report.md says.
    pub format: String,
    /// What the report is about.
    pub subject: Subject,
    /// When the report was built (its leak check was made then).
    pub generated_at: String,
    /// The ferry that built it: `ferry <version>`.
    pub generated_by: String,
    /// How it went, in one sentence, with a verdict.
    pub outcome: Outcome,
    /// The plan run, when the subject is one (its VMs' runs are in `runs`).
    pub plan_run: Option<PlanRunFacts>,
    /// The runs the report covers: the run itself, or each VM's run of the plan run,
    /// by tier then VM.
    pub runs: Vec<RunFacts>,
    /// What CloudStack holds now of what these runs created or touched.
    pub leak_check: LeakCheck,
    /// What a reader must not miss: drift met, replicas diverged, leftovers, failures.
    pub warnings: Vec<Warning>,
    /// `sha256:<64 hex digits>` over every other field (docs/report.md says how to
    /// recompute it).
    pub digest: String,
}

/// What a report is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// `run` or `plan_run`.
    pub kind: String,
    pub id: String,
    /// `test_failover`, `cleanup`, `live_failover`, `rollback` or `commit`.
    pub workflow: String,
    /// The protected VM's name (a run) or the plan's (a plan run).
    pub name: String,
}

/// The outcome in one sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// `succeeded` (done), `failed` (unwound, stuck, abandoned, stopped, failed) or
    /// `in_progress` (still active when the report was built).
    pub verdict: String,
    pub sentence: String,
}

/// One run (of one protected VM): who asked, who ran it, its steps, its CloudStack
/// jobs, its disks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFacts {
    pub id: String,
    /// The protected VM's name (`NAME (removed)` once removed from ferry).
    pub vm: String,
    pub workflow: String,
    /// `replica` or `clone` (test failover and cleanup), `replica` (live failover).
    pub mode: Option<String>,
    /// `done`, `unwound`, `stuck`, `abandoned`, or an active state.
    pub state: String,
    pub error: Option<String>,
    /// Who asked for it, as the client said (the CLI sends `user@host`); for a run of a
    /// plan run, who asked for the plan run.
    pub requested_by: Option<String>,
    /// The plan run that asked for it, if one did.
    pub plan_run_id: Option<String>,
    /// The tier (from 1) it ran in, for a run of a plan run.
    pub tier: Option<i64>,
    /// Every worker (`engine.worker_name`) that took its lease, in order: more than one
    /// when a worker died and another took it over.
    pub workers: Vec<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: i64,
    /// The recovery time: for a failover that ended done, its request → the target VM
    /// started and verified; in a plan run, the plan run's request → the VM ready.
    pub rto_ms: Option<i64>,
    /// The CloudStack VM the run made or acted on, if it made one.
    pub target_vm: Option<TargetVmFacts>,
    pub steps: Vec<StepFacts>,
    /// Every CloudStack job the run submitted, oldest first.
    pub jobs: Vec<JobFacts>,
    /// Time within steps when none of the run's CloudStack jobs was in flight (device
    /// paths awaited, VM states polled, reads) and outages waited out.
    pub waits: Vec<WaitFacts>,
    /// Each disk from VMware to the appliance, in (controller, bus, unit) order.
    pub disks: Vec<DiskChain>,
    pub hooks: Vec<HookFacts>,
    /// What happened, in sentences (as `ferry run show` tells it).
    pub story: Vec<String>,
}

/// The target VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetVmFacts {
    pub id: String,
    pub name: String,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepFacts {
    /// From 0.
    pub position: i64,
    pub name: String,
    /// `waiting` (not reached), `running`, `done`, `failed`, `undoing`, `undone`,
    /// `undo_failed`.
    pub state: String,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub undo_started_at: Option<String>,
    pub undo_finished_at: Option<String>,
    pub error: Option<String>,
}

/// One CloudStack job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFacts {
    /// CloudStack's async job id; `null` for an operation CloudStack never accepted.
    pub job_id: Option<String>,
    /// The step that asked (its name, without `undo-`).
    pub step: Option<String>,
    /// Submitted by the step's undo.
    pub undo: bool,
    /// A volume operation (`attach`, `detach`, `snapshot`, …) or a VM command
    /// (`deployVirtualMachine`, …).
    pub kind: String,
    pub volume_id: Option<String>,
    pub vm_id: Option<String>,
    /// The VMware disk (device key) the job concerns, when it concerns one.
    pub disk_key: Option<i64>,
    /// `pending`, `submitted`, `succeeded`, `failed` (volume operations); `submitted`,
    /// `succeeded`, `ended` (VM commands, which take their step's outcome).
    pub state: String,
    pub error: Option<String>,
    /// When it was recorded (before CloudStack heard of it, for a volume operation).
    pub started_at: String,
    /// When it ended: a volume operation's last record; a VM command's, when the step
    /// (or undo) that waited on it went on to its next job or ended. `null` while it
    /// runs.
    pub ended_at: Option<String>,
}

/// A wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitFacts {
    pub step: Option<String>,
    /// `no_job_in_flight` (the step worked or waited without a CloudStack job: device
    /// paths, VM states, reads) or `outage` (CloudStack or a volume agent did not
    /// answer).
    pub kind: String,
    pub undo: bool,
    pub started_at: String,
    pub ended_at: String,
    pub detail: Option<String>,
}

/// One disk, from VMware to where it is now: the disk chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskChain {
    /// VMware's device key (2000, 2001, …).
    pub device_key: i64,
    /// `controller:bus:unit`, e.g. `scsi:0:1`.
    pub address: String,
    pub label: String,
    pub boot: bool,
    pub capacity_bytes: i64,
    pub replica_volume_id: String,
    /// The snapshot the run took of the replica.
    pub snapshot_id: Option<String>,
    /// In clone mode, the volume made from the snapshot that went to the target VM.
    pub clone_volume_id: Option<String>,
    /// The device id the plan gave it on the target VM.
    pub planned_device_id: Option<i64>,
    /// The device id and size CloudStack listed on the target VM when the run verified
    /// it (`listVolumes`); `null` when the run did not reach its verify step.
    pub verified_device_id: Option<i64>,
    pub verified_size_bytes: Option<i64>,
    /// The virtio serial of the replica (its id without dashes, 20 characters).
    pub serial: String,
    /// Where the replica is on the appliance after the cleanup (or rollback) that
    /// followed: its by-id path, and which run put it there.
    pub appliance_device_path: Option<String>,
    pub appliance_path_run_id: Option<String>,
}

/// A hook and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookFacts {
    /// Where it runs: `before_live`, `after_rollback`, `plan before`, `tier web after`.
    pub point: String,
    /// What it is (`command /usr/local/bin/smoke`, `POST https://…`), or its summary.
    pub hook: String,
    /// `succeeded`, `failed`, `running` (started, not ended) or `not_run`.
    pub outcome: String,
    pub detail: Option<String>,
}

/// A plan run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRunFacts {
    pub id: String,
    pub plan: String,
    /// The digest of the plan as it was run (SHA-256 of the stored definition).
    pub plan_digest: String,
    pub workflow: String,
    /// `done`, `stopped`, `failed`, or active (`pending`, `running`).
    pub state: String,
    pub error: Option<String>,
    pub requested_by: Option<String>,
    pub workers: Vec<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// The plan's recovery time: the request → its last VM ready (failovers, every VM
    /// ready).
    pub rto_ms: Option<i64>,
    pub tiers: Vec<TierFacts>,
    pub vms: Vec<PlanVmFacts>,
    pub hooks: Vec<HookFacts>,
}

/// One tier of a plan run, in the order the workflow took them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TierFacts {
    /// From 1.
    pub tier: i64,
    pub name: String,
    pub started_at: Option<String>,
    /// When its VMs were through (ready, failed or skipped).
    pub through_at: Option<String>,
    pub ended_at: Option<String>,
    /// From its start to its VMs through.
    pub vms_ms: Option<i64>,
    /// From its start to its end (its after hooks and delay included).
    pub ms: Option<i64>,
}

/// One VM of a plan run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanVmFacts {
    pub vm: String,
    pub tier: i64,
    /// `ready`, `failed`, `skipped`, or on its way.
    pub state: String,
    pub run_id: Option<String>,
    pub ready_at: Option<String>,
    /// The plan run's request → this VM ready.
    pub rto_ms: Option<i64>,
    pub detail: Option<String>,
    /// Its readiness gates, in order, with what each saw.
    pub gates: Vec<GateFacts>,
}

/// A readiness gate and what it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateFacts {
    /// `running`, `tcp`, `http`, `command`.
    pub kind: String,
    /// What it checks: `tcp port 5432`.
    pub check: String,
    /// `passed`, `failed`, `cancelled`, `not_run`.
    pub verdict: String,
    pub attempts: i64,
    pub elapsed_ms: i64,
    /// What its last attempt saw.
    pub last_seen: Option<String>,
    pub passed_at: Option<String>,
}

/// The final leak check: what CloudStack holds, when the report was built, of what the
/// runs created or touched, against where ferry says it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakCheck {
    pub checked_at: String,
    /// True when everything is where ferry says and nothing is left over. False also
    /// when the check could not be made (`error`).
    pub clean: bool,
    /// The check in one sentence.
    pub summary: String,
    /// Why the check could not be made: CloudStack could not be asked, or ferry's store
    /// could not be read.
    pub error: Option<String>,
    /// Everything looked at.
    pub items: Vec<LeakItem>,
}

/// One thing the leak check looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakItem {
    /// `vm`, `volume` (a clone), `snapshot`, `replica`.
    pub kind: String,
    pub id: String,
    pub name: Option<String>,
    /// The run that created or touched it.
    pub run_id: String,
    /// Where ferry says it is: `absent` (deleted, destroyed), `present`,
    /// `attached to <vm id> at <device id>`.
    pub expected: String,
    /// What CloudStack lists.
    pub found: String,
    /// True when it is where ferry says; false names a leftover or a misplaced volume.
    pub ok: bool,
}

/// Something a reader must not miss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Warning {
    /// `failure`, `drift`, `diverged`, `outage` (CloudStack or a volume agent did not
    /// answer for a while), `run` (the engine's own: an operator's retry or abandon, what
    /// an unwind will not undo), `leak`, `unverified`.
    pub kind: String,
    pub run_id: Option<String>,
    pub message: String,
}
