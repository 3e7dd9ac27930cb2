//! The hooks of a plan and of its tiers, run by a plan run (docs/recovery-plans.md):
//! each only in the workflows its scope names, told what it runs for.

use store::PlanRun;
use workflows::hooks::HookContext;

use crate::definition::{PlanDefinition, PlanHook, When};
use crate::order::tier_of_order;

/// Runs the hooks of the plan (`tier` None) or of the tier `tier` (in the
/// workflow's order) that are for `when` and this plan run's workflow (their scope);
/// the first failure, in words.
pub(crate) async fn run_hooks(
    run: &PlanRun,
    plan: &PlanDefinition,
    tier: Option<i64>,
    when: When,
) -> Option<String> {
    let (hooks, name, vms): (&[PlanHook], String, String) = match tier {
        None => (
            &plan.hooks,
            format!("plan {}", run.plan_name),
            run.plan_name.clone(),
        ),
        Some(order) => {
            let i = tier_of_order(plan, run.workflow, order)?;
            let t = &plan.tiers[i];
            (&t.hooks, format!("tier {}", t.name), t.vms.join(","))
        }
    };
    let point = when.as_str();
    // What the hook is told it runs for: `plan_before_test_failover`,
    // `tier_after_cleanup`, …
    let label = format!(
        "{}_{point}_{}",
        if tier.is_some() { "tier" } else { "plan" },
        run.workflow
    );
    let run_id = ids::RunId::from(run.id.as_str());
    for hook in hooks
        .iter()
        .filter(|h| h.when == when && h.scope.covers(run.workflow))
    {
        let context = HookContext {
            hook: &label,
            vm: &vms,
            run_id: &run_id,
        };
        if let Err(e) = hook.run.run(&context).await {
            return Some(format!(
                "the {point} hook of {name} ({}) failed: {e}",
                hook.run
            ));
        }
    }
    None
}
