//! Adding, changing and removing plans: a plan file is checked by itself and against
//! the store (every VM it names registered), and nothing is written unless all of it
//! holds. An update says what it changes, and can stop there (`dry_run`).

use inventory::Problem;
use store::{NewPlan, Plan, Store, StoreError};

use crate::definition::PlanDefinition;
use crate::rules::check_plan;

/// Why a plan was not added or changed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The plan was refused: every reason, by field.
    #[error("the recovery plan was refused: {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A plan as stored, with its definition read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub plan: Plan,
    pub definition: PlanDefinition,
}

impl Stored {
    fn of(plan: Plan) -> Result<Stored, StoreError> {
        let definition = PlanDefinition::from_stored(&plan.definition).map_err(|e| {
            StoreError::Corrupt(format!(
                "plan {}'s definition does not read back: {e}",
                plan.name
            ))
        })?;
        Ok(Stored { plan, definition })
    }
}

/// Checks `plan` and adds it.
pub async fn add(store: &Store, plan: &PlanDefinition) -> Result<Stored, PlanError> {
    let new = checked(store, plan).await?;
    if store.plan(&plan.name).await?.is_some() {
        return Err(PlanError::Invalid(vec![Problem {
            field: "name".into(),
            message: format!(
                "a plan named {} exists; change it with `ferry plan update FILE`, or choose another name",
                plan.name
            ),
        }]));
    }
    Ok(Stored::of(store.add_plan(&new).await?)?)
}

/// What an update did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq)]
pub struct Updated {
    pub stored: Stored,
    /// What changed, one line each; empty when the file is the plan as stored.
    pub changes: Vec<String>,
    pub written: bool,
}

/// Checks `plan` and replaces the stored plan of its name with it (unless `dry_run`,
/// or nothing changed).
pub async fn update(
    store: &Store,
    plan: &PlanDefinition,
    dry_run: bool,
) -> Result<Updated, PlanError> {
    let new = checked(store, plan).await?;
    let Some(old) = store.plan(&plan.name).await? else {
        return Err(PlanError::Store(StoreError::NotFound {
            what: "recovery plan",
            key: plan.name.clone(),
        }));
    };
    let old = Stored::of(old)?;
    let changes = changes(&old.definition, plan);
    if dry_run || changes.is_empty() {
        return Ok(Updated {
            stored: old,
            changes,
            written: false,
        });
    }
    let stored = Stored::of(store.update_plan(&new).await?)?;
    Ok(Updated {
        stored,
        changes,
        written: true,
    })
}

/// The plan of this name, read back.
pub async fn get(store: &Store, name: &str) -> Result<Option<Stored>, StoreError> {
    store.plan(name).await?.map(Stored::of).transpose()
}

/// Every plan, read back.
pub async fn list(store: &Store) -> Result<Vec<Stored>, StoreError> {
    store.plans().await?.into_iter().map(Stored::of).collect()
}

/// The plan checked by itself and against the store, as it is written.
async fn checked(store: &Store, plan: &PlanDefinition) -> Result<NewPlan, PlanError> {
    let mut problems = check_plan(plan);
    let mut members = Vec::new();
    for (t, tier) in plan.tiers.iter().enumerate() {
        for (v, name) in tier.vms.iter().enumerate() {
            if name.trim().is_empty() || plan.tier_of(name) != Some(t) {
                continue; // Reported by the rules.
            }
            match store.vm(name).await? {
                Some(vm) => members.push((vm.id, t as i64)),
                None => problems.push(Problem {
                    field: format!("tiers[{t}].vms[{v}]"),
                    message: format!(
                        "{name} is not a registered protected VM; register it first (`ferry vm add FILE`), or check the name (`ferry vm list`)"
                    ),
                }),
            }
        }
    }
    if !problems.is_empty() {
        return Err(PlanError::Invalid(problems));
    }
    Ok(NewPlan {
        name: plan.name.clone(),
        definition: plan.to_stored(),
        digest: plan.digest(),
        members,
    })
}

/// What changes from `old` to `new`, one line each.
pub fn changes(old: &PlanDefinition, new: &PlanDefinition) -> Vec<String> {
    let mut out = Vec::new();
    if old.description != new.description {
        out.push("description changed".into());
    }
    if old.drill_interval_days != new.drill_interval_days {
        out.push(format!(
            "drill interval: {} → {}",
            days(old.drill_interval_days),
            days(new.drill_interval_days)
        ));
    }
    if old.on_failure != new.on_failure {
        out.push(format!(
            "on failure: test {:?}, live {:?} → test {:?}, live {:?}",
            old.on_failure.test, old.on_failure.live, new.on_failure.test, new.on_failure.live
        ));
    }
    if old.hooks != new.hooks {
        out.push(format!(
            "plan hooks: {} → {}",
            old.hooks.len(),
            new.hooks.len()
        ));
    }
    let names = |p: &PlanDefinition| p.tiers.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if names(old) != names(new) {
        out.push(format!(
            "tiers: {} → {}",
            names(old).join(", "),
            names(new).join(", ")
        ));
    }
    for tier in &new.tiers {
        let before = old.tiers.iter().find(|t| t.name == tier.name);
        if let Some(before) = before {
            if before.delay_after_secs != tier.delay_after_secs {
                out.push(format!(
                    "tier {}: delay after {} s → {} s",
                    tier.name, before.delay_after_secs, tier.delay_after_secs
                ));
            }
            if before.hooks != tier.hooks {
                out.push(format!("tier {}: hooks changed", tier.name));
            }
            if before.gates != tier.gates {
                out.push(format!("tier {}: gates changed", tier.name));
            }
        }
    }
    for tier in &new.tiers {
        for vm in &tier.vms {
            match old.tier_of(vm).map(|i| &old.tiers[i].name) {
                None => out.push(format!("+ {vm} in tier {}", tier.name)),
                Some(was) if *was != tier.name => {
                    out.push(format!("{vm}: tier {was} → {}", tier.name))
                }
                Some(_) => {}
            }
        }
    }
    for tier in &new.tiers {
        for vm in &tier.vms {
            let before = old.tier_of(vm).and_then(|i| old.tiers[i].vm_gates.get(vm));
            if before != tier.vm_gates.get(vm) {
                out.push(format!("{vm}: own gates changed"));
            }
        }
    }
    for tier in &old.tiers {
        for vm in &tier.vms {
            if new.tier_of(vm).is_none() {
                out.push(format!("- {vm} (was in tier {})", tier.name));
            }
        }
    }
    out
}

fn days(d: Option<u32>) -> String {
    d.map_or_else(|| "none".into(), |d| format!("{d} days"))
}

/// Whether a plan needs a drill, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillStatus {
    /// When its last drill that ended `done` finished (unix ms).
    pub last_drill_at: Option<i64>,
    /// Every reason it needs one; empty: it does not.
    pub reasons: Vec<String>,
    /// The plan's recovery time in that drill (request → last VM ready), in ms.
    pub last_drill_rto_ms: Option<i64>,
    /// That drill's plan run, and each VM's recovery time in it (request → the VM
    /// ready), in ms, by VM name.
    pub last_drill_run: Option<String>,
    pub last_drill_vm_rto_ms: Vec<(String, i64)>,
}

impl DrillStatus {
    pub fn needs_drill(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// A plan needs a drill when it was never drilled, when the plan or one of its VMs'
/// definitions changed since its last drill that ended `done`, or when that drill is
/// older than the plan's `drill_interval_days`. `now` is unix ms.
pub async fn drill_status(store: &Store, s: &Stored, now: i64) -> Result<DrillStatus, StoreError> {
    const DAY_MS: i64 = 86_400_000;
    let last = store
        .last_done_plan_run(&s.plan.id, store::Workflow::TestFailover)
        .await?;
    let Some(last) = last else {
        return Ok(DrillStatus {
            last_drill_at: None,
            reasons: vec!["it was never drilled".into()],
            last_drill_rto_ms: None,
            last_drill_run: None,
            last_drill_vm_rto_ms: Vec::new(),
        });
    };
    let at = last.finished_at.unwrap_or(last.created_at);
    let mut reasons = Vec::new();
    if last.digest != s.plan.digest {
        reasons.push("the plan changed since its last drill".to_string());
    }
    for member in &s.plan.members {
        let changed = store
            .vm_updates(&member.vm_id)
            .await?
            .iter()
            .any(|u| u.at > last.created_at);
        if changed {
            reasons.push(format!(
                "{}'s definition changed since the last drill",
                member.vm_name
            ));
        }
    }
    if let Some(days) = s.definition.drill_interval_days {
        let age = (now - at) / DAY_MS;
        if now - at > i64::from(days) * DAY_MS {
            reasons.push(format!(
                "its last drill is {age} days old, more than its interval of {days} days"
            ));
        }
    }
    Ok(DrillStatus {
        last_drill_at: Some(at),
        reasons,
        last_drill_rto_ms: last.rto_ms(),
        last_drill_vm_rto_ms: last
            .vms
            .iter()
            .filter_map(|v| Some((v.vm_name.clone(), last.vm_rto_ms(v)?)))
            .collect(),
        last_drill_run: Some(last.id),
    })
}
