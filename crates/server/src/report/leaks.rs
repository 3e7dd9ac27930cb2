//! The final leak check, made against CloudStack when a report is built: is what the
//! report's runs created or touched where ferry says it is, and is anything left over?
//!
//! What ferry says comes from the store as it is now: a failover's target VM and its
//! snapshots exist while the protected VM stands failed over (or committed, for the
//! VM) on that target, and are gone otherwise; a clone exists until the store records
//! it deleted; a replica is attached where the store last saw it. What CloudStack holds
//! is read by id and, for leftovers, by the names a run gives what it makes — the
//! target VM's name and `<target>-disk-<key>` for its snapshots and clones — so a VM,
//! snapshot or volume made under those names by hand, or left behind by a run that
//! lost track of it, is named. Reads only; nothing is changed.

use std::collections::{BTreeMap, BTreeSet};

use ids::{VmId, VolumeId};
use store::{VmState, Workflow};

use super::facts::Gathered;
use super::model::{LeakCheck, LeakItem};
use crate::error::chain;
use crate::state::AppState;
use crate::view::time;

/// Checks CloudStack for what `runs` created or touched.
pub(crate) async fn check(state: &AppState, runs: &[Gathered]) -> LeakCheck {
    let checked_at = time(store::now_ms());
    match items(state, runs).await {
        Ok(items) => {
            let wrong: Vec<&LeakItem> = items.iter().filter(|i| !i.ok).collect();
            let summary = if wrong.is_empty() {
                format!(
                    "Clean: all {} thing(s) the run(s) created or touched are where ferry says, and nothing is left over.",
                    items.len()
                )
            } else {
                format!(
                    "Not clean: {} of {} thing(s) are not where ferry says — {}.",
                    wrong.len(),
                    items.len(),
                    wrong
                        .iter()
                        .map(|i| format!(
                            "{} {}{} (ferry: {}; CloudStack: {})",
                            i.kind,
                            i.id,
                            i.name
                                .as_deref()
                                .map(|n| format!(" \"{n}\""))
                                .unwrap_or_default(),
                            i.expected,
                            i.found
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            LeakCheck {
                checked_at,
                clean: wrong.is_empty(),
                summary,
                error: None,
                items,
            }
        }
        Err(e) => LeakCheck {
            checked_at,
            clean: false,
            summary: format!("Not checked: {e}, so nothing is known to be clean."),
            error: Some(chain(&e)),
            items: Vec::new(),
        },
    }
}

fn present(p: bool) -> String {
    if p { "present" } else { "absent" }.to_string()
}

/// What CloudStack says of a VM, snapshot or volume: `present (<its state>)`, or what
/// its absence was read as.
fn found(exists: bool, state: String) -> String {
    if exists {
        format!("present ({state})")
    } else {
        state
    }
}

/// Why the leak check could not be made: a check that skipped what it could not read
/// would say "clean" of what it never looked at.
#[derive(Debug, thiserror::Error)]
enum Unchecked {
    #[error("CloudStack could not be asked")]
    Cloud(#[from] cloudstack::Error),
    #[error("ferry's store could not be read")]
    Store(#[from] store::StoreError),
}

async fn items(state: &AppState, runs: &[Gathered]) -> Result<Vec<LeakItem>, Unchecked> {
    let cloud = &state.env.cloud;
    let store = &state.env.store;
    let mut out = Vec::new();
    let mut replicas_done: BTreeSet<String> = BTreeSet::new();
    for g in runs {
        let run_id = g.run.id.to_string();
        let vm = store.vm_by_id(&g.run.vm_id).await?;
        let failover = matches!(
            g.run.workflow,
            Workflow::TestFailover | Workflow::LiveFailover
        );
        // A failover's target VM and snapshots stand while the VM is failed over onto
        // that target.
        let target_id: Option<VmId> = g.evidence.target_vm.as_ref().map(|(id, _)| id.clone());
        let in_place = vm.as_ref().is_some_and(|v| {
            target_id.is_some()
                && v.target_vm_id == target_id
                && matches!(v.state, VmState::TestFailedOver | VmState::FailedOver)
        });
        let kept = vm.as_ref().is_some_and(|v| {
            v.state == VmState::Committed && target_id.is_some() && v.target_vm_id == target_id
        });
        if failover && let Some(name) = &g.target_name {
            out.extend(
                failover_items(state, g, name, &target_id, in_place || kept, in_place).await?,
            );
        }
        // The replicas: attached where the store last saw them (once per VM).
        let Some(vm) = vm else { continue };
        if !replicas_done.insert(vm.id.to_string()) || vm.removed_at.is_some() {
            continue;
        }
        let ids: Vec<VolumeId> = vm
            .disks
            .iter()
            .map(|d| d.disk.replica_volume_id.clone())
            .collect();
        let found = cloud.get_volumes(&ids).await?;
        for d in &vm.disks {
            let id = &d.disk.replica_volume_id;
            let place = |vm: Option<String>, device: Option<i64>| match vm {
                Some(vm) => format!(
                    "attached to {vm} at device {}",
                    device.map_or("?".into(), |d| d.to_string())
                ),
                None => "attached to nothing".into(),
            };
            let expected = place(
                d.attachment.vm_id.as_ref().map(ToString::to_string),
                d.attachment.device_id,
            );
            let (found_text, ok) = match found.get(id) {
                None => ("absent".to_string(), false),
                Some(v) => {
                    let text = place(
                        v.virtualmachineid.as_ref().map(ToString::to_string),
                        v.deviceid,
                    );
                    let ok = v.virtualmachineid == d.attachment.vm_id
                        && (d.attachment.vm_id.is_none() || v.deviceid == d.attachment.device_id);
                    (text, ok)
                }
            };
            out.push(LeakItem {
                kind: "replica".into(),
                id: id.to_string(),
                name: Some(d.disk.label.clone()),
                run_id: run_id.clone(),
                expected,
                found: found_text,
                ok,
            });
        }
    }
    Ok(out)
}

/// What a failover run made: its target VM (and any VM of its name), the snapshots
/// and clones named as it names them. `vm_expected`: the target VM should exist;
/// `in_place`: the failover stands, so its snapshots should too.
async fn failover_items(
    state: &AppState,
    g: &Gathered,
    name: &str,
    target_id: &Option<VmId>,
    vm_expected: bool,
    in_place: bool,
) -> Result<Vec<LeakItem>, Unchecked> {
    let cloud = &state.env.cloud;
    let store = &state.env.store;
    let run_id = g.run.id.to_string();
    let name = name.to_string();
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    if let Some(id) = &target_id
        && let Some(vm) = cloud.get_virtual_machine(id).await?
    {
        seen.insert(vm.id.to_string(), vm.state.clone());
    }
    // Any VM of that exact name, under any id: a leftover the run lost.
    for vm in cloud
        .list_virtual_machines(&cloudstack::VmFilter {
            name: Some(name.clone()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|v| v.name == name)
    {
        seen.insert(vm.id.to_string(), vm.state.clone());
    }
    if let Some(id) = &target_id {
        seen.entry(id.to_string())
            .or_insert_with(|| "absent".into());
    }
    for (id, cloud_state) in seen {
        let is_target = target_id.as_ref().is_some_and(|t| t.as_str() == id);
        let expected = is_target && vm_expected;
        let exists = !matches!(cloud_state.as_str(), "absent" | "Destroyed" | "Expunging");
        out.push(LeakItem {
            kind: "vm".into(),
            id,
            name: Some(name.clone()),
            run_id: run_id.clone(),
            expected: present(expected),
            found: if exists {
                format!("present ({cloud_state})")
            } else if cloud_state == "absent" {
                "absent".into()
            } else {
                format!("absent ({cloud_state})")
            },
            ok: expected == exists,
        });
    }
    // Snapshots (and, in clone mode, volumes) named as the run names them.
    let prefix = workflows::evidence::created_name_prefix(&name);
    let taken: BTreeSet<String> = g
        .evidence
        .snapshots
        .values()
        .map(|s| s.to_string())
        .collect();
    let mut snapshots: BTreeMap<String, (String, String)> = BTreeMap::new();
    for s in cloud.list_snapshots_named(&prefix).await? {
        if s.name.starts_with(&prefix) {
            let st = s.state.clone().unwrap_or_else(|| "present".into());
            snapshots.insert(s.id.to_string(), (s.name, st));
        }
    }
    for id in &taken {
        snapshots
            .entry(id.clone())
            .or_insert_with(|| (String::new(), "absent".into()));
    }
    for (id, (sname, state)) in snapshots {
        let expected = taken.contains(&id) && in_place;
        let exists = state != "absent";
        out.push(LeakItem {
            kind: "snapshot".into(),
            id,
            name: (!sname.is_empty()).then_some(sname),
            run_id: run_id.clone(),
            expected: present(expected),
            found: found(exists, state),
            ok: expected == exists,
        });
    }
    let clones: BTreeSet<String> = g.evidence.clones.values().map(|c| c.to_string()).collect();
    let alive: BTreeSet<String> = store
        .run_created_volumes(&g.run.id, "clone")
        .await?
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    let mut volumes: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Only clone mode makes volumes under the run's names; a replica is never a
    // leftover, whatever its name (a live failover's target is the VM's own name, which
    // replicas are often named after).
    let replicas: BTreeSet<String> = store
        .vm_by_id(&g.run.vm_id)
        .await?
        .map(|vm| {
            vm.disks
                .iter()
                .map(|d| d.disk.replica_volume_id.to_string())
                .collect()
        })
        .unwrap_or_default();
    if g.run.mode.as_deref() == Some("clone") {
        for v in cloud
            .list_volumes(&cloudstack::VolumeFilter {
                name: Some(prefix.clone()),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|v| v.name.starts_with(&prefix) && !replicas.contains(v.id.as_str()))
        {
            volumes.insert(v.id.to_string(), (v.name, v.state));
        }
    }
    for id in clones.iter().chain(&alive) {
        if !volumes.contains_key(id) {
            let found = cloud.get_volume(&VolumeId::from(id.as_str())).await?;
            volumes.insert(
                id.clone(),
                match found {
                    Some(v) => (v.name, v.state),
                    None => (String::new(), "absent".into()),
                },
            );
        }
    }
    for (id, (vname, state)) in volumes {
        let expected = alive.contains(&id);
        let exists = state != "absent";
        out.push(LeakItem {
            kind: "volume".into(),
            id,
            name: (!vname.is_empty()).then_some(vname),
            run_id: run_id.clone(),
            expected: present(expected),
            found: found(exists, state),
            ok: expected == exists,
        });
    }
    Ok(out)
}
