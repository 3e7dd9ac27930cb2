//! What the REST API sends and receives. These types *are* the JSON contract: the CLI's
//! `--output json` prints them as they are, and `docs/openapi.json` is generated from
//! them. Fields are only ever added; a rename or removal is a breaking change.
//!
//! Times are RFC 3339 strings in UTC with milliseconds; durations are milliseconds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error the API answers with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `unauthorized` (401), `not_found` (404),
    /// `method_not_allowed` (405), `conflict` (409), `confirmation_required` (409: repeat
    /// the request confirmed, as the message says), `invalid` (422), `unavailable` (503)
    /// or `internal` (500).
    pub code: String,
    /// What was wrong and what to do, in words.
    pub message: String,
    /// For a refused VM definition: every problem, with the field it concerns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub version: String,
}

/// The format of a VM definition file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefinitionFormat {
    #[default]
    Toml,
    Json,
}

/// Registers a protected VM from its definition (docs/vm-definition.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddVm {
    /// The definition file's text.
    pub definition: String,
    #[serde(default)]
    pub format: DefinitionFormat,
}

/// Changes a registered protected VM's definition at rest (docs/vm-definition.md): the
/// same file as for registering it, naming the same VM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVm {
    /// The definition file's text.
    pub definition: String,
    #[serde(default)]
    pub format: DefinitionFormat,
    /// `true`: check the definition and say what it would change, writing nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One change of a protected VM's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// What changed, named as in the definition file: `source_id`, `spec.memory_mb`,
    /// `nics[0].mac`, `disks[key=2001].replica_volume_id`; a whole NIC (`nics[1]`) or
    /// disk (`disks[key=2002]`) when it was added or removed. Disks are told apart by
    /// their VMware device key, NICs by their position in the file.
    pub field: String,
    /// `changed`, `added` or `removed`.
    pub change: String,
    /// The value before, as stored (capacities in bytes, networks by CloudStack id); a
    /// removed NIC or disk in words; null when added or when it was not set.
    pub from: Option<String>,
    /// The value after, likewise; null when removed or when it is no longer set.
    pub to: Option<String>,
}

/// A change of a protected VM's definition at rest, as its history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpdateRecord {
    /// When it was written.
    pub at: String,
    pub changes: Vec<Change>,
}

/// What `PUT /v1/vms/{name}` did: the VM as it is now (every field of VmDetail), and
/// what the definition changed — or, with `dry_run`, would change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmUpdated {
    #[serde(flatten)]
    pub vm: VmDetail,
    /// What changed, in the order of the definition file; empty when the definition is
    /// the one registered.
    pub changes: Vec<Change>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether the changes were written: there were some and it was no dry run.
    pub updated: bool,
}

/// A protected VM in a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmSummary {
    pub name: String,
    /// `ready_for_failover`, `test_failed_over`, `failed_over` or `committed`.
    pub state: String,
    pub appliance: String,
    pub disks: usize,
    /// The disks' capacity, summed.
    pub capacity_bytes: i64,
    /// The run that holds the VM now, if any.
    pub active_run_id: Option<String>,
    /// How many of its replicas are diverged from their source (its next failover is
    /// refused until a resync is recorded).
    #[serde(default)]
    pub diverged: usize,
}

/// A protected VM with its disks, NICs, active run and — while it is failed over —
/// its target VM as CloudStack has it now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmDetail {
    pub name: String,
    pub id: String,
    pub source_id: String,
    pub appliance: String,
    pub state: String,
    pub vcpu: i64,
    pub memory_mb: i64,
    /// `bios` or `uefi`.
    pub firmware: String,
    pub secure_boot: bool,
    pub guest_os: String,
    pub guest_prep: String,
    pub created_at: String,
    pub nics: Vec<NicView>,
    /// In (controller, bus, unit) order.
    pub disks: Vec<DiskView>,
    pub active_run: Option<RunSummary>,
    pub target: Option<TargetVm>,
    /// Every change of its definition since it was registered (`PUT /v1/vms/{name}`),
    /// oldest first. With its runs, this is its history.
    pub updates: Vec<UpdateRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NicView {
    pub position: i64,
    pub mac: String,
    pub source_network: String,
    pub test_network_id: String,
    pub production_network_id: String,
}

/// A VMware disk and its replica volume.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiskView {
    pub label: String,
    pub device_key: i64,
    /// `scsi`, `sata`, `nvme` or `ide`.
    pub controller: String,
    pub bus: i64,
    pub unit: i64,
    pub capacity_bytes: i64,
    pub boot: bool,
    pub replica_volume_id: String,
    /// Where ferry last saw the replica: the VM it is attached to…
    pub attached_vm_id: Option<String>,
    /// …at which device id…
    pub device_id: Option<i64>,
    /// …and, on the appliance, at which device path.
    pub device_path: Option<String>,
    /// Set while the replica is diverged from its source: drift kept a cleanup or
    /// rollback from putting it back as the source had it, and the VM's next failover
    /// is refused until a resync is recorded (`POST /v1/vms/{name}/resynced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<Divergence>,
    /// When an operator last recorded that replication resynchronised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resynced_at: Option<String>,
}

/// Why a replica is diverged from its source, since when, found by which run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Divergence {
    pub since: String,
    pub reason: String,
    pub run_id: Option<String>,
}

/// A recorded resync: which diverged replicas replication resynchronised from the
/// source. With no `replicas` (or an empty list), every diverged replica of the VM.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordResync {
    #[serde(default)]
    pub replicas: Vec<String>,
}

/// The target VM of a failed-over VM, read from CloudStack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetVm {
    pub id: String,
    pub name: String,
    /// CloudStack's state of the VM (`Running`, `Stopped`, …).
    pub state: String,
    /// By device id.
    pub disks: Vec<TargetDisk>,
    /// True when every planned disk is attached at its planned device id with its
    /// planned size, and nothing else is attached.
    pub verified: bool,
    /// The verification, in words.
    pub verification: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetDisk {
    pub device_id: Option<i64>,
    pub volume_id: String,
    pub volume_name: String,
    pub size_bytes: i64,
    /// `boot`, `data`, or `unexpected` (attached, but not in the plan).
    pub role: String,
    /// The VMware disk it carries.
    pub label: Option<String>,
    pub planned_device_id: Option<i64>,
}

/// The test failover's mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TestMode {
    /// The replicas themselves go to the test VM.
    #[default]
    Replica,
    /// New volumes from the snapshots go to the test VM; the replicas stay.
    Clone,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTest {
    #[serde(default)]
    pub mode: TestMode,
}

/// A run in a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: String,
    /// The protected VM's name; `NAME (removed)` once it was removed from ferry (its
    /// runs are kept).
    pub vm: String,
    /// `test_failover`, `cleanup`, `live_failover`, `rollback` or `commit`.
    pub workflow: String,
    /// A test failover's mode (`replica` or `clone`). A live failover carries
    /// `replica` (it always moves the replicas), a cleanup the mode of the test
    /// failover it undoes; rollback and commit carry none.
    pub mode: Option<String>,
    /// `pending`, `running`, `unwinding` and `stuck` are active; `done`, `unwound` and
    /// `abandoned` are final.
    pub state: String,
    /// What made the run fail (unwound or stuck).
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// From creation to the end, or to now for an active run.
    pub duration_ms: i64,
    /// Set while the run waits out an outage: CloudStack (or the volume daemon) not
    /// answering. The run carries on where it was when it answers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// An outage a run is waiting out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Waiting {
    /// Who does not answer, and why: `CloudStack: cannot connect: connection refused`.
    #[serde(rename = "for")]
    pub for_: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// How long so far, in seconds.
    pub seconds: f64,
}

/// A run with everything that happened in it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    /// The worker holding its lease, while one does.
    pub lease_owner: Option<String>,
    /// Raised each time a worker takes the run over.
    pub generation: i64,
    /// The plan run that started it, when one did (`ferry plan run ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_run: Option<PlanRunRef>,
    /// Every step of the workflow, in order; steps not reached have state `waiting`.
    pub steps: Vec<StepView>,
    /// The CloudStack jobs the run submitted, oldest first.
    pub jobs: Vec<JobView>,
    pub events: Vec<EventView>,
    /// What happened, in sentences.
    pub story: Vec<String>,
    /// What an operator should do now, when anything.
    pub advice: Option<String>,
}

impl RunDetail {
    /// The step a job belongs under: the step it names (an undo's call is named
    /// `undo-<step>`), else the step running or undoing now, else the last one
    /// reached. The CLI and the console place a run's jobs the same way.
    pub fn step_of(&self, job: &JobView) -> Option<usize> {
        if let Some(name) = job.step.as_deref() {
            let bare = name.strip_prefix("undo-").unwrap_or(name);
            if let Some(i) = self
                .steps
                .iter()
                .position(|s| s.name == name || s.name == bare)
            {
                return Some(i);
            }
        }
        self.steps
            .iter()
            .rposition(|s| matches!(s.state.as_str(), "running" | "undoing"))
            .or_else(|| self.steps.iter().rposition(|s| s.state != "waiting"))
    }
}

/// A plan run, named from one of its VMs' runs: the VM's tier in it (1 = the first
/// the workflow takes) and its RTO there (the plan run's request → the VM ready, in
/// milliseconds; failovers, once ready).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanRunRef {
    pub id: String,
    pub plan: String,
    pub tier: i64,
    pub rto_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    pub position: i64,
    pub name: String,
    /// `waiting`, `running`, `done`, `failed`, `undoing`, `undone` or `undo_failed`.
    pub state: String,
    pub attempts: i64,
    /// When the action began and ended.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The action's own time (to now while it runs).
    pub duration_ms: Option<i64>,
    /// When the undo began and ended (undone, or failed), once the run unwound
    /// through the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_finished_at: Option<String>,
    /// The undo's own time (to now while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_duration_ms: Option<i64>,
    pub error: Option<String>,
    /// Set while the step runs far past its usual duration (a freeze?): how long it has
    /// run and what is usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue: Option<String>,
}

/// A CloudStack job of a run (volume operations through the volume daemon, and the VM
/// commands).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub step: Option<String>,
    /// What was asked: `attach`, `detach`, `snapshot`, `deployVirtualMachine`, …
    pub kind: String,
    pub volume_id: Option<String>,
    pub vm_id: Option<String>,
    /// CloudStack's async job id, once CloudStack accepted the command.
    pub job_id: Option<String>,
    /// `pending`, `submitted`, `succeeded` or `failed`. A VM command's job is waited on
    /// by its step, and takes the step's outcome: `submitted` while the step runs,
    /// `succeeded` once it is done, `ended` if the step failed (its error says why).
    pub state: String,
    pub error: Option<String>,
    pub at: String,
    /// Set while the job runs far past what jobs of its command have lately taken (a
    /// freeze?): how long it has run and what is usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub at: String,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub step: Option<String>,
    pub message: String,
}
