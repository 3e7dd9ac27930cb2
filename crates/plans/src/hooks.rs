//! The hooks of a plan and of its tiers, run by a plan run (docs/recovery-plans.md):
//! each only in the workflows its scope names, told what it runs for, and recorded on
//! the plan run — when it starts and how it ended — so that `ferry plan run`, the
//! console and the evidence report say what each did, and so that a hook that ended
//! is not run again as the driver goes over its tier once more (while the tier's
//! delay passes, or after a crash). A hook that had started and not ended when its
//! worker died runs again.

use store::{HookOutcome, HookPoint, PlanRun, Store, StoreError};
use workflows::hooks::HookContext;

use crate::definition::{PlanDefinition, PlanHook, When};
use crate::order::tier_of_order;

/// Runs the hooks of the plan (`tier` None) or of the tier `tier` (in the
/// workflow's order) that are for `when` and this plan run's workflow (their scope),
/// in order, each recorded; the first failure, in words — one recorded by an earlier
/// pass (its worker may have died before it could act on it) or one now. A hook that
/// ended is not run again.
pub(crate) async fn run_hooks(
    store: &Store,
    run: &PlanRun,
    plan: &PlanDefinition,
    tier: Option<i64>,
    when: When,
) -> Result<Option<String>, StoreError> {
    let (hooks, name, vms): (&[PlanHook], String, String) = match tier {
        None => (
            &plan.hooks,
            format!("plan {}", run.plan_name),
            run.plan_name.clone(),
        ),
        Some(order) => {
            let Some(i) = tier_of_order(plan, run.workflow, order) else {
                return Ok(None);
            };
            let t = &plan.tiers[i];
            (&t.hooks, format!("tier {}", t.name), t.vms.join(","))
        }
    };
    let point = match when {
        When::Before => HookPoint::Before,
        When::After => HookPoint::After,
    };
    // What the hook is told it runs for: `plan_before_test_failover`,
    // `tier_after_cleanup`, …
    let label = format!(
        "{}_{point}_{}",
        if tier.is_some() { "tier" } else { "plan" },
        run.workflow
    );
    let run_id = ids::RunId::from(run.id.as_str());
    // Its place in the plan file's list names a hook on the plan run.
    for (position, hook) in hooks
        .iter()
        .enumerate()
        .filter(|(_, h)| h.when == when && h.scope.covers(run.workflow))
    {
        let position = position as i64;
        let recorded = run
            .hooks
            .iter()
            .find(|h| h.tier == tier && h.point == point && h.position == position);
        let what = hook.run.to_string();
        let failed = |why: &str| format!("the {point} hook of {name} ({what}) failed: {why}");
        match recorded.map(|h| (h.outcome, h.detail.as_deref())) {
            Some((HookOutcome::Succeeded, _)) => continue,
            Some((HookOutcome::Failed, why)) => return Ok(Some(failed(why.unwrap_or("?")))),
            Some((HookOutcome::Running, _)) | None => {}
        }
        store
            .start_plan_run_hook(&run.id, tier, point, position, &what)
            .await?;
        let context = HookContext {
            hook: &label,
            vm: &vms,
            run_id: &run_id,
        };
        // What it said (its exit and output, or an HTTP status), or why it failed: kept
        // either way.
        let (outcome, said) = match hook.run.run(&context).await {
            Ok(said) => (HookOutcome::Succeeded, said),
            Err(e) => (HookOutcome::Failed, e.to_string()),
        };
        store
            .end_plan_run_hook(&run.id, tier, point, position, outcome, Some(&said))
            .await?;
        if outcome == HookOutcome::Failed {
            let failure = failed(&said);
            tracing::warn!(plan_run = %run.id, %failure, "a hook of a plan run failed");
            return Ok(Some(failure));
        }
    }
    Ok(None)
}
