//! What a plan file must be by itself: a usable name, tiers that each name VMs, a VM in
//! one tier only, hooks that can run, bounds on waits. Every problem is reported with
//! its field, not only the first.

use inventory::Problem;
use workflows::Hook;

use crate::definition::{PlanDefinition, PlanHook};

/// The longest plan name (it is a path segment of the API and a CLI argument).
pub const MAX_PLAN_NAME_LEN: usize = 63;
/// The longest wait after a tier: a day.
pub const MAX_DELAY_SECS: u64 = 86_400;
/// The longest drill interval: ten years.
pub const MAX_DRILL_INTERVAL_DAYS: u32 = 3_650;
/// The longest hook timeout: a day.
pub const MAX_HOOK_TIMEOUT_SECS: u64 = 86_400;

/// Every problem of `plan` by itself (the VMs it names are checked against the store
/// elsewhere).
pub fn check_plan(plan: &PlanDefinition) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut add = |field: String, message: String| problems.push(Problem { field, message });
    if let Some(why) = bad_name(&plan.name) {
        add("name".into(), why);
    }
    if plan.description.chars().count() > 1000 {
        add(
            "description".into(),
            "is longer than 1000 characters; shorten it".into(),
        );
    }
    if let Some(days) = plan.drill_interval_days
        && !(1..=MAX_DRILL_INTERVAL_DAYS).contains(&days)
    {
        add(
            "drill_interval_days".into(),
            format!(
                "must be 1–{MAX_DRILL_INTERVAL_DAYS} days (leave it out to make only changes call for a drill)"
            ),
        );
    }
    check_hooks("hooks", &plan.hooks, &mut add);
    if plan.tiers.is_empty() {
        add(
            "tiers".into(),
            "the plan has no tier; add at least one `[[tiers]]` with the VMs to fail over".into(),
        );
    }
    let mut seen_vms: Vec<(&str, usize, usize)> = Vec::new();
    for (t, tier) in plan.tiers.iter().enumerate() {
        let at = format!("tiers[{t}]");
        let name = tier.name.trim();
        if name.is_empty() || tier.name.chars().count() > MAX_PLAN_NAME_LEN {
            add(
                format!("{at}.name"),
                format!("give the tier a name of 1–{MAX_PLAN_NAME_LEN} characters"),
            );
        } else if tier.name.chars().any(char::is_control) {
            add(
                format!("{at}.name"),
                "has a control character; use printable characters".into(),
            );
        } else if let Some(first) = plan.tiers[..t].iter().position(|o| o.name == tier.name) {
            add(
                format!("{at}.name"),
                format!(
                    "`{}` is also the name of tiers[{first}]; tier names are unique",
                    tier.name
                ),
            );
        }
        if tier.vms.is_empty() {
            add(
                format!("{at}.vms"),
                "the tier names no VM; list its protected VMs, or remove the tier".into(),
            );
        }
        for (v, vm) in tier.vms.iter().enumerate() {
            let field = format!("{at}.vms[{v}]");
            if vm.trim().is_empty() {
                add(field, "is empty; give a protected VM's name".into());
                continue;
            }
            match seen_vms.iter().find(|(name, ..)| *name == vm) {
                Some((_, ft, fv)) => add(
                    field,
                    format!(
                        "{vm} is already at tiers[{ft}].vms[{fv}]; a VM fails over in one tier only"
                    ),
                ),
                None => seen_vms.push((vm, t, v)),
            }
        }
        if tier.delay_after_secs > MAX_DELAY_SECS {
            add(
                format!("{at}.delay_after_secs"),
                format!("must be at most {MAX_DELAY_SECS} (a day)"),
            );
        }
        check_hooks(&format!("{at}.hooks"), &tier.hooks, &mut add);
        for p in readiness::validate(&tier.gates, &format!("{at}.gates")) {
            add(p.field, p.message);
        }
        for (vm, gates) in &tier.vm_gates {
            let field = format!("{at}.vm_gates.{vm}");
            if !tier.vms.contains(vm) {
                add(
                    field.clone(),
                    format!(
                        "{vm} is not a VM of this tier; give a VM its gates in the tier that names it"
                    ),
                );
            }
            for p in readiness::validate(gates, &field) {
                add(p.field, p.message);
            }
        }
    }
    problems
}

/// Why `name` cannot name a plan, if it cannot.
fn bad_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PLAN_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (!ok).then(|| {
        format!(
            "`{name}` cannot name a plan: use 1–{MAX_PLAN_NAME_LEN} letters, digits and hyphens, starting with a letter"
        )
    })
}

fn check_hooks(at: &str, hooks: &[PlanHook], add: &mut impl FnMut(String, String)) {
    for (i, hook) in hooks.iter().enumerate() {
        let field = format!("{at}[{i}].run");
        match &hook.run {
            Hook::Command {
                program,
                timeout_secs,
                ..
            } => {
                if program.trim().is_empty() {
                    add(
                        format!("{field}.program"),
                        "is empty; give the program to run (it runs without a shell)".into(),
                    );
                }
                check_timeout(&field, *timeout_secs, add);
            }
            Hook::Http {
                url,
                method,
                timeout_secs,
            } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    add(
                        format!("{field}.url"),
                        format!("`{url}` is not an http:// or https:// URL"),
                    );
                }
                if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                    .contains(&method.to_ascii_uppercase().as_str())
                {
                    add(
                        format!("{field}.method"),
                        format!("`{method}` is not GET, HEAD, POST, PUT, PATCH or DELETE"),
                    );
                }
                check_timeout(&field, *timeout_secs, add);
            }
        }
    }
}

fn check_timeout(field: &str, secs: u64, add: &mut impl FnMut(String, String)) {
    if secs == 0 || secs > MAX_HOOK_TIMEOUT_SECS {
        add(
            format!("{field}.timeout_secs"),
            format!("must be 1–{MAX_HOOK_TIMEOUT_SECS} seconds"),
        );
    }
}
