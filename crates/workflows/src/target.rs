//! A failed-over VM's target as CloudStack has it now, checked against the plan of the
//! failover that made it — for whoever shows it (the server's view of a VM), so that
//! the plan's verification and clone mode's stand-ins stay this crate's business.
//!
//! The check is the one the verify step makes ([`DevicePlan::verify`], through the
//! clones in clone mode): every planned disk attached at its planned device id and at
//! its planned size, and nothing else attached.

use ids::VolumeId;
use std::collections::BTreeMap;

use store::{Run, Store, StoreError};

use crate::ensure::as_observed;
use crate::plan::{DevicePlan, Mismatch, PlannedDisk};
use crate::run::{Mode, run_input};
use crate::steps::clones::{CREATE_CLONES, in_replica_terms};

/// The plan a failover run (test or live) put its target VM's disks by.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    /// The target VM's name.
    pub target_name: String,
    pub plan: DevicePlan,
    /// In clone mode, the clone that stands in for each replica (replica → clone), as
    /// the run's create-clones step recorded them (none if it did not finish).
    clones: Option<BTreeMap<VolumeId, VolumeId>>,
}

/// One volume on the target VM, and the planned disk it stands for (none: a volume the
/// plan does not put there).
#[derive(Debug, Clone)]
pub struct ObservedDisk {
    pub volume: volumed::VolumeInfo,
    pub planned: Option<PlannedDisk>,
}

/// The target VM's volumes checked against the plan.
#[derive(Debug, Clone)]
pub struct TargetCheck {
    /// Each volume CloudStack lists on the target VM, in its order.
    pub disks: Vec<ObservedDisk>,
    /// True when every planned disk is attached at its planned device id and size, and
    /// nothing else is attached.
    pub verified: bool,
    /// The check, in words.
    pub verification: String,
}

impl TargetPlan {
    /// The plan of failover run `run`, with its clones in clone mode; `None` when the
    /// run has no readable plan.
    pub async fn of_run(store: &Store, run: &Run) -> Result<Option<TargetPlan>, StoreError> {
        let Some(input) = run_input(run) else {
            return Ok(None);
        };
        let clones = match Mode::of_run(run) {
            Ok(Mode::Clone) => Some(
                store
                    .steps(&run.id)
                    .await?
                    .into_iter()
                    .filter(|s| s.name == CREATE_CLONES.name())
                    .filter_map(|s| serde_json::from_str(s.output.as_deref()?).ok())
                    .filter_map(|output| CREATE_CLONES.read(&output).ok())
                    .flat_map(|c| c.clones)
                    .collect(),
            ),
            _ => None,
        };
        Ok(Some(TargetPlan {
            target_name: input.target_name,
            plan: input.plan,
            clones,
        }))
    }

    /// Checks what CloudStack lists on the target VM (`observed`) against the plan.
    pub fn check(&self, observed: Vec<volumed::VolumeInfo>) -> TargetCheck {
        let seen = as_observed(&observed);
        // In the plan's terms: in clone mode a clone counts as its replica.
        let as_planned = match &self.clones {
            Some(clones) => in_replica_terms(&self.plan, clones, &seen),
            None => seen
                .iter()
                .map(|(id, device_id, size)| (id.to_string(), *device_id, *size))
                .collect(),
        };
        let mismatches = self.plan.verify(&as_planned).err().unwrap_or_default();
        let disks: Vec<ObservedDisk> = observed
            .into_iter()
            .zip(&as_planned)
            .map(|(volume, (planned_id, _, _))| ObservedDisk {
                planned: self.plan.by_volume(&VolumeId::from(planned_id)).cloned(),
                volume,
            })
            .collect();
        let verification = in_words(&self.plan, &disks, &mismatches);
        TargetCheck {
            disks,
            verified: mismatches.is_empty(),
            verification,
        }
    }
}

/// "N of M disks at their planned device ids (CloudStack listVolumes)", and what else
/// is wrong.
fn in_words(plan: &DevicePlan, disks: &[ObservedDisk], mismatches: &[Mismatch]) -> String {
    let planned = plan.disks().len();
    let in_place = disks
        .iter()
        .filter(|d| {
            d.planned
                .as_ref()
                .is_some_and(|p| Some(p.device_id) == d.volume.device_id)
        })
        .count();
    let unexpected = disks.iter().filter(|d| d.planned.is_none()).count();
    let resized = mismatches
        .iter()
        .filter(|m| matches!(m, Mismatch::WrongSize { .. }))
        .count();
    let mut words = format!(
        "{in_place} of {planned} disks at their planned device ids (CloudStack listVolumes)"
    );
    if unexpected > 0 {
        words.push_str(&format!(
            "; {unexpected} volume(s) attached that are not in the plan"
        ));
    }
    if resized > 0 {
        words.push_str(&format!("; {resized} disk(s) of another size than planned"));
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{GIB, scsi_disk};

    fn target(clones: Option<&[(&str, &str)]>) -> TargetPlan {
        TargetPlan {
            target_name: "pgtest1-test".into(),
            plan: DevicePlan::new(
                &[
                    scsi_disk(2000, 0, 10 * GIB, true, "r-boot"),
                    scsi_disk(2001, 1, 10 * GIB, false, "r-a"),
                ],
                crate::plan::KVM_MAX_DATA_DISKS,
            )
            .unwrap(),
            clones: clones.map(|c| c.iter().map(|(r, c)| ((*r).into(), (*c).into())).collect()),
        }
    }

    fn volume(id: &str, device_id: i64, size_bytes: i64) -> volumed::VolumeInfo {
        volumed::VolumeInfo {
            id: id.into(),
            name: id.into(),
            volume_type: "DATADISK".into(),
            state: "Ready".into(),
            size_bytes,
            zone_id: None,
            vm_id: Some("target".into()),
            device_id: Some(device_id),
            device: None,
        }
    }

    #[test]
    fn the_replicas_where_the_plan_puts_them_are_verified() {
        let check = target(None).check(vec![
            volume("r-boot", 0, 10 * GIB),
            volume("r-a", 1, 10 * GIB),
        ]);
        assert!(check.verified);
        assert_eq!(
            check.verification,
            "2 of 2 disks at their planned device ids (CloudStack listVolumes)"
        );
        assert!(check.disks[0].planned.as_ref().is_some_and(|p| p.is_boot));
    }

    #[test]
    fn a_disk_of_another_size_or_an_extra_volume_is_not_verified() {
        let check = target(None).check(vec![
            volume("r-boot", 0, 10 * GIB),
            volume("r-a", 1, 20 * GIB),
            volume("stray", 2, GIB),
        ]);
        assert!(!check.verified);
        assert_eq!(
            check.verification,
            "2 of 2 disks at their planned device ids (CloudStack listVolumes); 1 volume(s) \
             attached that are not in the plan; 1 disk(s) of another size than planned"
        );
        assert!(check.disks[2].planned.is_none());
    }

    #[test]
    fn in_clone_mode_a_clone_stands_for_its_replica_and_a_replica_is_unexpected() {
        let clones = [("r-boot", "c-boot"), ("r-a", "c-a")];
        let check = target(Some(&clones)).check(vec![
            volume("c-boot", 0, 10 * GIB),
            volume("c-a", 1, 10 * GIB),
        ]);
        assert!(check.verified, "{}", check.verification);
        assert_eq!(
            check.disks[1]
                .planned
                .as_ref()
                .map(|p| p.volume_id.as_str()),
            Some("r-a")
        );
        let check = target(Some(&clones)).check(vec![
            volume("r-boot", 0, 10 * GIB),
            volume("c-a", 1, 10 * GIB),
        ]);
        assert!(!check.verified);
        assert!(check.disks[0].planned.is_none());
    }
}
