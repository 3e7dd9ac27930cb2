//! Clone mode's volumes (DESIGN §5; see [`crate::test_failover`]): a volume made from
//! each replica's snapshot, named `<target>-disk-<key>` and recorded by the volume
//! daemon as created by ferry, stands in for its replica on the test VM; cleanup
//! deletes them.
//!
//! A clone stands in for its replica at the replica's device id; the create step's
//! output is that mapping, and [`verify_clones`] translates what CloudStack reports on
//! the target VM back into replica terms before comparing it with the plan — so a
//! wrong id, a missing or extra volume, or a size that differs is caught exactly as in
//! replica mode, and a replica found on the test VM is refused as a volume the plan
//! does not put there.
//!
//! Clones are found by name as well as by the create step's output, so an undo (or a
//! cleanup) finds a clone whose step never finished; only volumes ferry created are
//! ever deleted (the volume daemon refuses anything else), and a volume that merely
//! has a clone's name is reported, not touched.

use ids::VolumeId;
use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::{Output, StepError, TypedStep};
use serde::{Deserialize, Serialize};

use crate::ensure::{all_to_the_end, ensure_stopped, find_vm};
use crate::env::{Cx, Env, call, cloud_error, store_error, volume_error};
use crate::jobs::Queue::Own;
use crate::jobs::Times::PerDisk;
use crate::jobs::{Job, WorkflowStep, job};
use crate::plan::DevicePlan;
use crate::run::{Mode, RunInput, clone_name, input, run_mode};
use crate::steps::snapshots::SNAPSHOT;

/// Creates a volume from each replica's snapshot (clone mode).
pub(crate) struct CreateClones;

/// The clones made: replica volume id → clone volume id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Clones {
    pub clones: BTreeMap<VolumeId, VolumeId>,
}

pub(crate) const CREATE_CLONES: Output<Clones> = Output::new("create-clones");

/// The volumes in the target zone named exactly `name` (CloudStack's `name` filter
/// matches substrings).
async fn named_volumes(env: &Env, name: &str) -> Result<Vec<cloudstack::Volume>, StepError> {
    let filter = cloudstack::VolumeFilter {
        name: Some(name.to_string()),
        zone_id: Some(env.target.zone_id.clone()),
        ..Default::default()
    };
    Ok(env
        .cloud
        .list_volumes(&filter)
        .await
        .map_err(|e| cloud_error("listing volumes", e))?
        .into_iter()
        .filter(|v| v.name == name)
        .collect())
}

async fn created_by_ferry(env: &Env, volume_id: &VolumeId) -> Result<bool, StepError> {
    env.store
        .is_created_volume(volume_id)
        .await
        .map_err(|e| store_error("checking the volumes ferry created", e))
}

/// Validation (clone mode): the clones' names must be free, or a clone of another
/// drill — or anything else of that name — would be taken for this one's.
pub(crate) async fn names_taken(env: &Env, input: &RunInput) -> Result<Vec<String>, StepError> {
    let mut problems = Vec::new();
    for d in input.plan.disks() {
        let name = clone_name(&input.target_name, d.device_key);
        for v in named_volumes(env, &name).await? {
            problems.push(format!(
                "a volume named {name} already exists ({}), the name of the clone of disk {}",
                v.id, d.device_key
            ));
        }
    }
    Ok(problems)
}

/// The clones the create step made: replica volume id → clone volume id.
pub(crate) fn clones(cx: &Cx<'_>) -> Result<BTreeMap<VolumeId, VolumeId>, StepError> {
    Ok(cx.lookup(CREATE_CLONES)?.clones)
}

/// Whether `volume_id` is a clone this run's create step made (false when it has not
/// finished, or in replica mode).
pub(crate) fn is_run_clone(cx: &Cx<'_>, volume_id: &VolumeId) -> bool {
    cx.lookup_if_done(CREATE_CLONES)
        .ok()
        .flatten()
        .is_some_and(|c| c.clones.values().any(|v| v == volume_id))
}

/// Whether `volume` is one of the run's clones, by name and by being ferry's.
pub(crate) async fn is_clone(
    env: &Env,
    input: &RunInput,
    volume_id: &VolumeId,
    volume_name: &str,
) -> Result<bool, StepError> {
    let named = input
        .plan
        .disks()
        .iter()
        .any(|d| clone_name(&input.target_name, d.device_key) == volume_name);
    Ok(named && created_by_ferry(env, volume_id).await?)
}

#[async_trait]
impl TypedStep<Env> for CreateClones {
    type Output = Clones;

    fn output(&self) -> Output<Clones> {
        CREATE_CLONES
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        if run_mode(cx)? != Mode::Clone {
            return Err(StepError::Definitive(format!(
                "run {} is not a clone-mode test failover: execute it with the saga of its mode",
                cx.run.id
            )));
        }
        let env = cx.ctx;
        let input = input(cx)?;
        let snapshots = cx.lookup(SNAPSHOT)?.snapshots;
        let made = all_to_the_end(input.plan.disks().iter().map(|d| {
            let name = clone_name(&input.target_name, d.device_key);
            let snapshot_id = snapshots.get(&d.volume_id).cloned();
            async move {
                // Look first: a clone that exists, is ferry's and is ready is this
                // step's, made by an earlier attempt.
                for v in named_volumes(env, &name).await? {
                    if !created_by_ferry(env, &v.id).await? {
                        return Err(StepError::Definitive(format!(
                            "volume {} is named {name}, the name of the clone of disk {}, but \
                             ferry did not create it; rename or remove it",
                            v.id, d.device_key
                        )));
                    }
                    if v.state == "Ready" {
                        return Ok((d.volume_id.clone(), v.id));
                    }
                    // Still being made: the daemon, asked with the same key, waits
                    // on the job it recorded.
                }
                let snapshot_id = snapshot_id.ok_or_else(|| {
                    StepError::Definitive(format!(
                        "the snapshot step recorded no snapshot of replica {}",
                        d.volume_id
                    ))
                })?;
                let clone = env
                    .volumes
                    .create_volume_from_snapshot(
                        &call(cx, "create-clones", &d.volume_id),
                        &snapshot_id,
                        &name,
                        &env.target.zone_id,
                    )
                    .await
                    .map_err(|e| {
                        volume_error(
                            &format!(
                                "creating a volume from snapshot {snapshot_id} of replica {}",
                                d.volume_id
                            ),
                            e,
                        )
                    })?;
                Ok::<_, StepError>((d.volume_id.clone(), clone.id))
            }
        }))
        .await?;
        Ok(Clones {
            clones: made.into_iter().collect(),
        })
    }

    async fn undo(&self, cx: &Cx<'_>, _output: Option<Self::Output>) -> Result<(), StepError> {
        let input = input(cx)?;
        delete_clones(cx, "undo-create-clones", &input).await?;
        Ok(())
    }
}

impl WorkflowStep for CreateClones {
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        // A volume made from a snapshot is on no VM yet.
        vec![job("createVolume", PerDisk, Own)]
    }
}

/// What [`delete_clones`] did.
pub(crate) struct Deleted {
    pub deleted: Vec<VolumeId>,
    /// Volumes with a clone's name that ferry did not create: left alone.
    pub foreign: Vec<VolumeId>,
}

/// Deletes the run's clones, found by name (so a clone whose create step never
/// finished is found too). A clone still on the test VM is detached first (the VM
/// stopped if it holds it as ROOT); a clone on any other VM is refused. A volume with
/// a clone's name that ferry did not create is reported and left alone.
pub(crate) async fn delete_clones(
    cx: &Cx<'_>,
    step: &str,
    input: &RunInput,
) -> Result<Deleted, StepError> {
    let env = cx.ctx;
    let target = find_vm(env, &input.target_name).await?;
    let mut out = Deleted {
        deleted: Vec::new(),
        foreign: Vec::new(),
    };
    for d in input.plan.disks() {
        let name = clone_name(&input.target_name, d.device_key);
        for v in named_volumes(env, &name).await? {
            if !created_by_ferry(env, &v.id).await? {
                let message = format!(
                    "volume {} is named {name} like the clone of disk {} but ferry did not create it; left alone",
                    v.id, d.device_key
                );
                let _ = env
                    .store
                    .add_event(&cx.run.id, "warn", Some(step), &message, None)
                    .await;
                out.foreign.push(v.id);
                continue;
            }
            if let Some(holder) = v.virtualmachineid.as_ref().map(|id| id.as_str()) {
                match &target {
                    Some(t) if t.id == holder => {
                        if v.deviceid == Some(0) {
                            ensure_stopped(cx, t).await?;
                        }
                        let key = call(cx, step, format!("detach/{}/{holder}", v.id))
                            .seeing(&v.id, Some(&t.id));
                        env.volumes.detach(&key, &v.id).await.map_err(|e| {
                            volume_error(&format!("detaching clone {} from the test VM", v.id), e)
                        })?;
                    }
                    _ => {
                        return Err(StepError::Definitive(format!(
                            "clone {} ({name}) is attached to VM {holder}, which is not the test VM {}; \
                             detach it, then run this again",
                            v.id, input.target_name
                        )));
                    }
                }
            }
            env.volumes
                .delete_volume(&call(cx, step, format!("delete/{}", v.id)), &v.id)
                .await
                .map_err(|e| volume_error(&format!("deleting clone {}", v.id), e))?;
            out.deleted.push(v.id);
        }
    }
    Ok(out)
}

/// Deletes the run's clones (cleanup after a clone-mode test).
pub(crate) struct DeleteClones;

/// A step's output, or why it had nothing to do in the run's mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum OrSkipped<T> {
    Skipped { skipped: String },
    Done(T),
}

/// The clones deleted, and the volumes with a clone's name left alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeletedClones {
    pub deleted: Vec<VolumeId>,
    pub unexpected: Vec<VolumeId>,
}

const DELETE_CLONES: Output<OrSkipped<DeletedClones>> = Output::new("delete-clones");

#[async_trait]
impl TypedStep<Env> for DeleteClones {
    type Output = OrSkipped<DeletedClones>;

    fn output(&self) -> Output<OrSkipped<DeletedClones>> {
        DELETE_CLONES
    }

    async fn run(&self, cx: &Cx<'_>) -> Result<Self::Output, StepError> {
        if run_mode(cx)? != Mode::Clone {
            return Ok(OrSkipped::Skipped {
                skipped: "replica mode: there are no clones".into(),
            });
        }
        let input = input(cx)?;
        // Found by name, so a clone an earlier cleanup did not get to is found too.
        let Deleted { deleted, foreign } = delete_clones(cx, "delete-clones", &input).await?;
        Ok(OrSkipped::Done(DeletedClones {
            deleted,
            unexpected: foreign,
        }))
    }
}

impl WorkflowStep for DeleteClones {}

/// Compares what CloudStack reports on the target VM (volume id, device id, size) with
/// the plan, each clone standing in for its replica (`clones`: replica → clone):
/// CloudStack's view is put in the plan's terms ([`in_replica_terms`]) and checked by
/// [`DevicePlan::verify`]. The mismatches come back in words, about the clones.
pub(crate) fn verify_clones(
    plan: &DevicePlan,
    clones: &BTreeMap<VolumeId, VolumeId>,
    observed: &[(VolumeId, Option<i64>, i64)],
) -> Vec<String> {
    match plan.verify(&in_replica_terms(plan, clones, observed)) {
        Ok(()) => Vec::new(),
        Err(mismatches) => mismatches
            .into_iter()
            .map(|m| in_clone_terms(m, clones).to_string())
            .collect(),
    }
}

/// What CloudStack reports on a clone-mode test VM (volume id, device id, size), in the
/// plan's terms: a clone counts as its replica (`clones`: replica → clone). A replica
/// itself is not what the plan puts on a clone-mode test VM, so it is renamed, and a
/// check reports it as unplanned.
pub(crate) fn in_replica_terms(
    plan: &DevicePlan,
    clones: &BTreeMap<VolumeId, VolumeId>,
    observed: &[(VolumeId, Option<i64>, i64)],
) -> Vec<(String, Option<i64>, i64)> {
    let replica_of: BTreeMap<&str, &str> = clones
        .iter()
        .map(|(replica, clone)| (clone.as_str(), replica.as_str()))
        .collect();
    observed
        .iter()
        .map(|(id, device_id, size)| {
            let id = match replica_of.get(id.as_str()) {
                Some(replica) => replica.to_string(),
                None if plan.by_volume(id).is_some() => {
                    format!("{id} (a replica: clone mode never attaches one)")
                }
                None => id.to_string(),
            };
            (id, *device_id, *size)
        })
        .collect()
}

/// A mismatch about a replica, told about its clone (which is what is on the VM).
fn in_clone_terms(
    mut m: crate::plan::Mismatch,
    clones: &BTreeMap<VolumeId, VolumeId>,
) -> crate::plan::Mismatch {
    // An unplanned volume is reported by its own id, which is what is on the VM.
    if let Some(volume_id) = m.planned_volume_id_mut()
        && let Some(clone) = clones.get(&VolumeId::from(volume_id.as_str()))
    {
        *volume_id = format!("{clone} (the clone of replica {volume_id})");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{GIB, scsi_disk as disk};

    /// Boot replica `r-boot` (100 GiB) at 0 and data replicas `r-a`, `r-b` (10 GiB each)
    /// at 1 and 2, cloned as `c-boot`, `c-a`, `c-b`.
    fn fixture() -> (DevicePlan, BTreeMap<VolumeId, VolumeId>) {
        let plan = DevicePlan::new(
            &[
                disk(2000, 0, 100 * GIB, true, "r-boot"),
                disk(2001, 1, 10 * GIB, false, "r-a"),
                disk(2002, 2, 10 * GIB, false, "r-b"),
            ],
            crate::plan::KVM_MAX_DATA_DISKS,
        )
        .unwrap();
        let clones = [("r-boot", "c-boot"), ("r-a", "c-a"), ("r-b", "c-b")]
            .into_iter()
            .map(|(r, c)| (r.into(), c.into()))
            .collect();
        (plan, clones)
    }

    fn seen(list: &[(&str, i64, i64)]) -> Vec<(VolumeId, Option<i64>, i64)> {
        list.iter()
            .map(|(id, dev, size)| ((*id).into(), Some(*dev), *size))
            .collect()
    }

    #[test]
    fn the_clones_where_the_plan_puts_their_replicas_pass() {
        let (plan, clones) = fixture();
        let observed = seen(&[
            ("c-boot", 0, 100 * GIB),
            ("c-a", 1, 10 * GIB),
            ("c-b", 2, 10 * GIB),
        ]);
        assert_eq!(
            verify_clones(&plan, &clones, &observed),
            Vec::<String>::new()
        );
    }

    #[test]
    fn swapped_clones_of_equal_size_are_caught() {
        let (plan, clones) = fixture();
        let observed = seen(&[
            ("c-boot", 0, 100 * GIB),
            ("c-b", 1, 10 * GIB),
            ("c-a", 2, 10 * GIB),
        ]);
        let problems = verify_clones(&plan, &clones, &observed);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("c-a (the clone of replica r-a)")
                && problems[0].contains("is at device id 2"),
            "{problems:?}"
        );
    }

    #[test]
    fn missing_extra_resized_and_replica_volumes_are_caught() {
        let (plan, clones) = fixture();
        let observed = seen(&[
            ("c-boot", 0, 100 * GIB),
            ("c-a", 1, 20 * GIB),
            ("r-b", 2, 10 * GIB),
            ("stray", 4, GIB),
        ]);
        let problems = verify_clones(&plan, &clones, &observed);
        let all = problems.join("\n");
        assert!(
            all.contains("c-a (the clone of replica r-a)") && all.contains("20 GiB"),
            "{all}"
        );
        assert!(
            all.contains("c-b (the clone of replica r-b)") && all.contains("not attached"),
            "{all}"
        );
        assert!(
            all.contains("r-b (a replica: clone mode never attaches one)"),
            "{all}"
        );
        assert!(all.contains("volume stray"), "{all}");
        assert_eq!(problems.len(), 4, "{all}");
    }

    #[test]
    fn a_replica_at_its_own_planned_place_is_not_taken_for_its_clone() {
        let (plan, clones) = fixture();
        let observed = seen(&[
            ("r-boot", 0, 100 * GIB),
            ("c-a", 1, 10 * GIB),
            ("c-b", 2, 10 * GIB),
        ]);
        let problems = verify_clones(&plan, &clones, &observed);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("c-boot") && problems[0].contains("not attached"));
        assert!(problems[1].contains("r-boot (a replica"));
    }
}
