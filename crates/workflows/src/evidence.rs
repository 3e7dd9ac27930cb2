//! What a run's recorded steps prove, as plain data, for the drill evidence report
//! (docs/report.md): the target VM it made, the snapshots and clones it took, the
//! device map its verify step read back from CloudStack, where a cleanup or rollback
//! put each replica on the appliance (device id and by-id path), the hooks it ran and
//! what it left diverged.
//!
//! The steps' outputs are this crate's business (their names and types live with the
//! steps); this module reads them so that whoever shows a run — the server's report —
//! never digs in a step's JSON itself. A step that did not finish, or whose output
//! does not read, contributes nothing: evidence is what was recorded, not guessed.

use std::collections::BTreeMap;

use ids::{SnapshotId, VmId, VolumeId};
use store::{StepRecord, StepState};

use crate::steps::checks::VERIFY;
use crate::steps::clones::CREATE_CLONES;
use crate::steps::replicas::REATTACH_REPLICAS;
use crate::steps::snapshots::SNAPSHOT;
use crate::steps::vm::CREATE_VM;

/// What a run's recorded steps say it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEvidence {
    /// The target VM its create-vm step made (id, name).
    pub target_vm: Option<(VmId, String)>,
    /// Replica → the snapshot its snapshot step took of it.
    pub snapshots: BTreeMap<VolumeId, SnapshotId>,
    /// Replica → the clone its create-clones step made of it (clone mode).
    pub clones: BTreeMap<VolumeId, VolumeId>,
    /// The device map its verify step read back from CloudStack (`listVolumes`) and
    /// found as planned; `None` when the step did not finish.
    pub verified: Option<Vec<VerifiedDisk>>,
    /// Where its reattach-replicas step (cleanup) put each replica on the appliance.
    pub on_appliance: Vec<ApplianceDisk>,
    /// The operator hooks it ran: `"<hook>: <summary>"` for each that succeeded, and
    /// the one that failed with why.
    pub hooks_ran: Vec<String>,
    pub hook_failed: Option<String>,
    /// Replicas it left diverged from their source: (volume id, why).
    pub diverged: Vec<(String, String)>,
}

/// One disk of a verified device map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDisk {
    pub device_key: i64,
    /// The volume on the target VM: the replica, or in clone mode its clone.
    pub volume_id: VolumeId,
    /// The replica it carries (the volume itself in replica mode).
    pub replica_volume_id: VolumeId,
    pub device_id: i64,
    pub size_bytes: i64,
    pub boot: bool,
}

/// Where a replica was put on the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceDisk {
    pub volume_id: VolumeId,
    pub device_key: i64,
    pub device_id: Option<i64>,
    pub device_path: Option<String>,
}

/// The output of the step named `name` if it finished (done; or undone, which it was
/// first), as JSON.
fn output_of<'a>(steps: &'a [StepRecord], name: &str) -> Option<serde_json::Value> {
    steps
        .iter()
        .filter(|s| s.name == name && matches!(s.state, StepState::Done | StepState::Undone))
        .find_map(|s: &'a StepRecord| serde_json::from_str(s.output.as_deref()?).ok())
}

/// What the recorded `steps` of one run say it did.
pub fn of_steps(steps: &[StepRecord]) -> RunEvidence {
    let mut evidence = RunEvidence::default();
    if let Some(vm) = output_of(steps, CREATE_VM.name()).and_then(|o| CREATE_VM.read(&o).ok()) {
        evidence.target_vm = Some((vm.vm_id, vm.name));
    }
    if let Some(s) = output_of(steps, SNAPSHOT.name()).and_then(|o| SNAPSHOT.read(&o).ok()) {
        evidence.snapshots = s.snapshots;
    }
    if let Some(c) =
        output_of(steps, CREATE_CLONES.name()).and_then(|o| CREATE_CLONES.read(&o).ok())
    {
        evidence.clones = c.clones;
    }
    if let Some(v) = output_of(steps, VERIFY.name()).and_then(|o| VERIFY.read(&o).ok()) {
        evidence.verified = Some(
            v.device_map
                .into_iter()
                .map(|d| VerifiedDisk {
                    device_key: d.device_key,
                    replica_volume_id: d
                        .replica_volume_id
                        .clone()
                        .unwrap_or_else(|| d.volume_id.clone()),
                    volume_id: d.volume_id,
                    device_id: d.device_id,
                    size_bytes: d.size_bytes,
                    boot: d.boot,
                })
                .collect(),
        );
    }
    if let Some(r) =
        output_of(steps, REATTACH_REPLICAS.name()).and_then(|o| REATTACH_REPLICAS.read(&o).ok())
    {
        evidence.on_appliance = r
            .replicas
            .into_iter()
            .map(|p| ApplianceDisk {
                volume_id: p.volume_id,
                device_key: p.device_key,
                device_id: p.appliance_device_id,
                device_path: p.device_path,
            })
            .collect();
    }
    // The live failover's before_live hooks and the rollback's after_rollback hooks are
    // both the step `run-hooks`, of one output type; a run has one or the other.
    if let Some(report) = steps
        .iter()
        .find(|s| s.name == "run-hooks")
        .and_then(|s| s.output.as_deref())
        .and_then(|o| serde_json::from_str::<crate::hooks::HookReport>(o).ok())
    {
        evidence.hooks_ran = report.ran;
        evidence.hook_failed = report.failed;
    }
    evidence.diverged = crate::steps::record::diverged_at_end(steps);
    evidence
}

/// The names a run whose target VM is `target` gives the snapshots and clones it makes
/// begin with (`<target>-disk-`), so that a check can find them in CloudStack by name.
pub fn created_name_prefix(target: &str) -> String {
    crate::run::snapshot_prefix(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, state: StepState, output: &str) -> StepRecord {
        StepRecord {
            position: 0,
            name: name.into(),
            state,
            attempts: 1,
            output: Some(output.into()),
            error: None,
            started_at: Some(1),
            finished_at: Some(2),
            undo_started_at: None,
            undo_finished_at: None,
        }
    }

    #[test]
    fn what_finished_steps_recorded_is_read_and_nothing_else() {
        let steps = [
            step(
                "create-vm",
                StepState::Done,
                r#"{"vm_id":"vm-1","name":"pg-test-1"}"#,
            ),
            step(
                "snapshot",
                StepState::Undone,
                r#"{"snapshots":{"r-1":"s-1"}}"#,
            ),
            step(
                "verify",
                StepState::Done,
                r#"{"device_map":[{"device_id":0,"volume_id":"c-1","replica_volume_id":"r-1","device_key":2000,"size_bytes":5,"boot":true}]}"#,
            ),
            // A failed step's output is not evidence.
            step(
                "create-clones",
                StepState::Failed,
                r#"{"clones":{"r-1":"c-1"}}"#,
            ),
        ];
        let e = of_steps(&steps);
        assert_eq!(e.target_vm, Some(("vm-1".into(), "pg-test-1".into())));
        assert_eq!(e.snapshots.get(&VolumeId::from("r-1")), Some(&"s-1".into()));
        assert!(e.clones.is_empty());
        let verified = e.verified.expect("verified");
        assert_eq!(verified[0].replica_volume_id, VolumeId::from("r-1"));
        assert_eq!(verified[0].volume_id, VolumeId::from("c-1"));
        assert!(e.on_appliance.is_empty());
        assert_eq!(created_name_prefix("pg-test-1"), "pg-test-1-disk-");
    }
}
