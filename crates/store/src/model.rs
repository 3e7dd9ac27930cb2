//! The inventory as ferry's code sees it. Enums map to the CHECK-constrained text
//! columns of the schema; their `as_str` is the stored form.

use ids::{JobId, NetworkId, ProtectedVmId, RunId, SnapshotId, VmId, VolumeId, ZoneId};
use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The form stored in the database and written in files.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Every accepted spelling, for error messages.
            pub const ALL: &'static [&'static str] = &[$($text),+];
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "`{other}` is not one of {}",
                        $name::ALL.join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Firmware of the source VM, carried to the target VM.
    Firmware { Bios = "bios", Uefi = "uefi" }
);
text_enum!(
    /// Guest OS family: decides the default guest preparation.
    GuestOs { Linux = "linux", Windows = "windows", Other = "other" }
);
text_enum!(
    /// Guest preparation policy: `auto` prepares Windows guests (VirtIO drivers with
    /// `virt-v2v-in-place`) and skips others.
    GuestPrep { Auto = "auto", Skip = "skip", VirtV2vInPlace = "virt-v2v-in-place" }
);
text_enum!(
    /// VMware disk controller type. A disk's identity is (controller, bus, unit, key).
    Controller { Scsi = "scsi", Sata = "sata", Ide = "ide", Nvme = "nvme" }
);
text_enum!(
    /// Where a protected VM stands.
    VmState {
        ReadyForFailover = "ready_for_failover",
        TestFailedOver = "test_failed_over",
        FailedOver = "failed_over",
        Committed = "committed",
    }
);
text_enum!(
    Workflow {
        TestFailover = "test_failover",
        Cleanup = "cleanup",
        LiveFailover = "live_failover",
        Rollback = "rollback",
        Commit = "commit",
    }
);
text_enum!(
    /// A run ends `done`, `unwound` or `stuck` (then `abandoned` if an operator gives
    /// up on it); `pending`, `running`, `unwinding` and `stuck` are active.
    RunState {
        Pending = "pending",
        Running = "running",
        Unwinding = "unwinding",
        Stuck = "stuck",
        Done = "done",
        Unwound = "unwound",
        Abandoned = "abandoned",
    }
);
text_enum!(
    OpState { Pending = "pending", Submitted = "submitted", Succeeded = "succeeded", Failed = "failed" }
);

impl RunState {
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Pending | RunState::Running | RunState::Unwinding | RunState::Stuck
        )
    }
}

/// An appliance VM (OMA) holding replica volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appliance {
    pub name: String,
    /// Its CloudStack VM id.
    pub vm_id: VmId,
    pub zone_id: ZoneId,
    /// Where its volume daemon listens; `None` means the in-process daemon.
    pub volumed_url: Option<String>,
    /// Root of its `/sys/block` and `/dev/disk/by-id` (`/` in production).
    pub sysfs_root: Option<String>,
}

/// CPU, memory, firmware and guest facts of a protected VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub vcpu: i64,
    pub memory_mb: i64,
    pub cpu_speed_mhz: i64,
    pub firmware: Firmware,
    pub secure_boot: bool,
    pub guest_os: GuestOs,
    pub guest_prep: GuestPrep,
}

/// One NIC: its MAC and source network, and where it goes on failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub position: i64,
    pub mac: String,
    pub source_network: String,
    pub test_network_id: NetworkId,
    pub test_ip: Option<String>,
    pub production_network_id: NetworkId,
    pub production_ip: Option<String>,
}

/// One VMware disk and its replica volume, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub device_key: i64,
    pub controller: Controller,
    pub bus: i64,
    pub unit: i64,
    pub capacity_bytes: i64,
    pub label: String,
    pub is_boot: bool,
    pub boot_order: Option<i64>,
    pub replica_volume_id: VolumeId,
}

/// Where ferry last saw a replica volume (all `None`: nowhere yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The CloudStack VM the volume is attached to.
    pub vm_id: Option<VmId>,
    pub device_id: Option<i64>,
    pub device_path: Option<String>,
    /// Unix milliseconds.
    pub seen_at: Option<i64>,
}

/// A registered disk with its store id and the replica's last known attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    pub id: String,
    #[serde(flatten)]
    pub disk: Disk,
    pub attachment: Attachment,
    /// Set while the replica is diverged from its source (see [`Divergence`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<Divergence>,
    /// When an operator last recorded that replication resynchronised it (ms since the
    /// epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resynced_at: Option<i64>,
}

/// Why a replica can no longer be trusted to hold what its source holds: drift kept a
/// cleanup or rollback from putting it back as it was (its snapshot deleted by hand, so
/// a drill's writes could not be reverted; the volume gone; held by a VM ferry does not
/// touch). Replication must resynchronise it from the source side, and an operator
/// record that, before its VM fails over again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// When it was found (ms since the epoch).
    pub at: i64,
    /// What happened, in words.
    pub reason: String,
    /// The run that found it.
    pub run_id: Option<RunId>,
}

/// What registration writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVm {
    pub name: String,
    pub source_id: String,
    pub appliance: String,
    pub spec: VmSpec,
    pub nics: Vec<Nic>,
    pub disks: Vec<Disk>,
}

/// A protected VM with everything the engine needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedVm {
    pub id: ProtectedVmId,
    pub name: String,
    pub source_id: String,
    pub appliance: String,
    pub spec: VmSpec,
    pub state: VmState,
    /// The CloudStack VM it runs as after a failover.
    pub target_vm_id: Option<VmId>,
    pub created_at: i64,
    /// When it was removed from ferry (ms since the epoch); `None` while registered.
    /// A removed VM is kept only so its runs can name it: it has no NICs or disks, its
    /// `name` is the one it had, and no lookup by name finds it.
    pub removed_at: Option<i64>,
    /// Raised by every run start, update and removal; each of those is refused when the
    /// VM's version is no longer the one it read (migration 0014).
    pub version: i64,
    pub nics: Vec<Nic>,
    /// Ordered by (controller, bus, unit).
    pub disks: Vec<DiskRecord>,
}

impl ProtectedVm {
    pub fn boot_disk(&self) -> Option<&DiskRecord> {
        self.disks.iter().find(|d| d.disk.is_boot)
    }
}

/// A protected VM's name by its id, registered or removed: what a run is listed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmName {
    pub id: ProtectedVmId,
    /// The name it has, or had when it was removed.
    pub name: String,
    /// When it was removed (ms since the epoch); `None` while registered.
    pub removed_at: Option<i64>,
}

/// A change of a protected VM's definition at rest, as recorded in its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmUpdate {
    /// Increases with each update recorded.
    pub id: i64,
    /// When it was written (unix ms).
    pub at: i64,
    /// What changed, in the form the caller gave it (the inventory writes JSON).
    pub changes: String,
}

/// A run of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    /// The protected VM the run acts on: ferry's id, not a CloudStack VM's.
    pub vm_id: ProtectedVmId,
    pub workflow: Workflow,
    pub mode: Option<String>,
    pub state: RunState,
    pub error: Option<String>,
    /// The fencing generation: raised each time a worker takes the run's lease.
    pub generation: i64,
    /// The error that started the unwind, kept while `error` later says what got
    /// stuck.
    pub cause: Option<String>,
    /// How many times an operator retried the run after it got stuck.
    pub retries: i64,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// The run's input (JSON), e.g. the device plan.
    pub plan: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// While the run waits out an outage: since when (unix ms).
    pub waiting_since: Option<i64>,
    /// While the run waits out an outage: what it waits for and why
    /// (`CloudStack: cannot connect: connection refused`).
    pub waiting_for: Option<String>,
    /// Who asked for the run, as the client said (`X-Ferry-Requested-By`); `None` when
    /// it said nothing, or for a run of a plan run (the plan run's requester asked).
    pub requested_by: Option<String>,
    /// Every worker that took the run's lease, in the order they took it.
    pub workers: Vec<String>,
}

text_enum!(
    /// Where one step of a run stands.
    StepState {
        Running = "running",
        Done = "done",
        Failed = "failed",
        Undoing = "undoing",
        Undone = "undone",
        UndoFailed = "undo_failed",
    }
);

/// One step of a run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub position: i64,
    pub name: String,
    pub state: StepState,
    /// Attempts of the action (and then of the undo) so far.
    pub attempts: i64,
    /// The action's output (JSON), kept for the undo and for later steps.
    pub output: Option<String>,
    pub error: Option<String>,
    /// When the action began and ended (failed, or done): the action's own time.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When the undo began and ended (undone, or failed: the run stuck): the undo's own
    /// time. `None` until the run unwinds through the step.
    #[serde(default)]
    pub undo_started_at: Option<i64>,
    #[serde(default)]
    pub undo_finished_at: Option<i64>,
}

/// A `ferry serve` process as it recorded itself under its worker name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerProcess {
    pub name: String,
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// A line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub level: String,
    pub step: Option<String>,
    pub message: String,
    pub fields: Option<String>,
}

/// A volume-daemon operation as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOp {
    pub id: String,
    pub idempotency_key: String,
    pub kind: String,
    pub vm_id: Option<VmId>,
    pub volume_id: Option<VolumeId>,
    pub snapshot_id: Option<SnapshotId>,
    /// The request, as JSON.
    pub request: String,
    pub state: OpState,
    pub job_id: Option<JobId>,
    /// The id of the entity a create-style command made: a volume's or a snapshot's,
    /// by the operation's `kind`.
    pub entity_id: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub run_id: Option<RunId>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new volume-daemon operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewVolumeOp {
    pub idempotency_key: String,
    pub kind: String,
    pub vm_id: Option<VmId>,
    pub volume_id: Option<VolumeId>,
    pub snapshot_id: Option<SnapshotId>,
    pub request: String,
    pub run_id: Option<RunId>,
}

/// A recovery plan as stored (see the `plans` table family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// The definition as the plans crate checked it (JSON).
    pub definition: String,
    /// SHA-256 of the definition: another digest is another version of the plan.
    pub digest: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The VMs it names, by tier then name.
    pub members: Vec<PlanMember>,
}

/// A protected VM a plan names, and in which tier (0 = the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanMember {
    pub vm_id: ProtectedVmId,
    pub vm_name: String,
    pub tier: i64,
}

/// A plan to add, or the new version of one to update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPlan {
    pub name: String,
    pub definition: String,
    pub digest: String,
    /// Each VM it names, with its tier.
    pub members: Vec<(ProtectedVmId, i64)>,
}

text_enum!(
    /// A plan run is `pending` until its driver takes it, `running` while tiers go,
    /// and ends `done` (every tier's VMs ready, or for a cleanup or rollback every VM
    /// through), `stopped` (a VM failed and the plan's policy stopped it before the next
    /// tier; what came up stays) or `failed` (it could not go on: the reason in `error`).
    PlanRunState {
        Pending = "pending",
        Running = "running",
        Stopped = "stopped",
        Done = "done",
        Failed = "failed",
    }
);
text_enum!(
    /// Where a VM of a plan run is: `waiting` for its tier, `starting` (its run is being
    /// asked for), `running` (its run under way), `checking` (its run done, its
    /// readiness gates being tried), `ready`, `failed` (its run did not end done, or a
    /// gate did not pass), `skipped` (its tier was never reached).
    PlanVmState {
        Waiting = "waiting",
        Starting = "starting",
        Running = "running",
        Checking = "checking",
        Ready = "ready",
        Failed = "failed",
        Skipped = "skipped",
    }
);

text_enum!(
    /// Where a hook of a plan run runs: `before` its tier's VMs start (the plan's:
    /// before the first tier), or `after` they are through (the plan's: after the last).
    HookPoint {
        Before = "before",
        After = "after",
    }
);
text_enum!(
    /// How a hook of a plan run went: `running` (started, not ended — or its worker
    /// died while it ran), `succeeded` or `failed`.
    HookOutcome {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
    }
);

impl PlanRunState {
    pub fn is_active(self) -> bool {
        matches!(self, PlanRunState::Pending | PlanRunState::Running)
    }
}

/// A run of a recovery plan, with its VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRun {
    pub id: String,
    pub plan_id: String,
    pub plan_name: String,
    /// The workflow each VM's run is.
    pub workflow: Workflow,
    pub state: PlanRunState,
    /// The plan as it was run, and its digest.
    pub definition: String,
    pub digest: String,
    /// The tier under way (0 = the first in the order the workflow takes them).
    pub tier: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// The worker driving it, and until when (ms since the epoch), while it does.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// The fencing generation: raised each time a worker takes the plan run's lease.
    pub generation: i64,
    /// Who asked for the plan run, as the client said (`X-Ferry-Requested-By`).
    pub requested_by: Option<String>,
    /// Every worker that took the plan run's lease, in the order they took it.
    pub workers: Vec<String>,
    /// Its VMs, by tier then name.
    pub vms: Vec<PlanRunVm>,
    /// The tiers it reached, in the order it took them.
    pub tiers: Vec<PlanRunTier>,
    /// The hooks it ran, the plan's first, then by tier, point and position.
    pub hooks: Vec<PlanRunHook>,
}

impl PlanRun {
    /// Whether its VMs fail over (and so are made ready), rather than come back.
    pub fn is_failover(&self) -> bool {
        matches!(
            self.workflow,
            Workflow::TestFailover | Workflow::LiveFailover
        )
    }

    /// A VM's recovery time: the plan run's request → the VM ready, in ms (failovers).
    pub fn vm_rto_ms(&self, vm: &PlanRunVm) -> Option<i64> {
        self.is_failover()
            .then_some(vm.ready_at)
            .flatten()
            .map(|at| at - self.created_at)
    }

    /// The plan's recovery time: the request → its last VM ready, in ms, once every
    /// VM of a failover is ready.
    pub fn rto_ms(&self) -> Option<i64> {
        let all_ready =
            !self.vms.is_empty() && self.vms.iter().all(|v| v.state == PlanVmState::Ready);
        if !all_ready {
            return None;
        }
        self.vms.iter().filter_map(|v| self.vm_rto_ms(v)).max()
    }
}

/// When a tier of a plan run began (the plan run moved to it) and ended (it moved
/// past it, or stopped or ended at it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRunTier {
    /// 0 = the first in the order the workflow takes them.
    pub tier: i64,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

/// A hook a plan run ran, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRunHook {
    /// The tier it belongs to, by its place in the order the workflow takes them (0 =
    /// the first); `None` for the plan's own hooks.
    pub tier: Option<i64>,
    pub point: HookPoint,
    /// Its place among the hooks of its tier (or the plan) for its point, 0 first.
    pub position: i64,
    /// What it is, as the plan file's hook reads (`command /usr/local/bin/smoke`).
    pub hook: String,
    pub outcome: HookOutcome,
    /// What it said once it ended: its exit and output (or HTTP status), or why it
    /// failed.
    pub detail: Option<String>,
    /// How many times it was started (more than once when a plan run resumed after a
    /// crash while, or just after, it ran).
    pub attempts: i64,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

/// One VM of a plan run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRunVm {
    pub vm_id: ProtectedVmId,
    pub vm_name: String,
    pub tier: i64,
    pub state: PlanVmState,
    pub run_id: Option<RunId>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub ready_at: Option<i64>,
    /// What its readiness gates saw (JSON, as the readiness crate writes it).
    pub readiness: Option<String>,
    pub detail: Option<String>,
}

/// A plan run to create: the plan (as it is now), the workflow, each VM's tier, and
/// the VMs it skips from the start, each with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPlanRun {
    pub plan_id: String,
    pub workflow: Workflow,
    pub definition: String,
    pub digest: String,
    pub vms: Vec<(ProtectedVmId, i64)>,
    pub skipped: Vec<(ProtectedVmId, String)>,
}
