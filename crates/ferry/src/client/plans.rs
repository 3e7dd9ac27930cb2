//! `ferry plan …`: recovery plans (docs/recovery-plans.md) — add, update, list, show,
//! remove — against the server's REST API, printed as tables or as the API's JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use server::plan_model::{
    AddPlan, PlanDetail, PlanHookView, PlanRunView, PlanSummary, PlanUpdated, UpdatePlan,
};

use super::api::{Api, ClientError, Raw, Request};
use super::output::outln;
use super::{ConnectionArgs, Outcome, Output, main_of, named_definition, print, read_definition};

#[derive(Debug, clap::Subcommand)]
pub enum PlanCommand {
    /// Add a recovery plan from its file (docs/recovery-plans.md; JSON when the name ends
    /// in .json, else TOML): boot tiers of registered protected VMs. Every problem is
    /// reported; nothing is added unless all checks pass.
    Add {
        /// The plan file.
        file: PathBuf,
    },
    /// Change a plan from its whole file (the file's `name` says which plan). The same
    /// checks as `add`; what changes is printed. A file that changes nothing writes nothing.
    Update {
        /// The plan file.
        file: PathBuf,
        /// Check the file and print what it would change, writing nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the recovery plans.
    List,
    /// Show a recovery plan: its tiers, their VMs, delays and hooks, and its policy.
    Show {
        /// The plan's name.
        name: String,
    },
    /// Remove a recovery plan from ferry (its VMs stay registered; nothing in
    /// CloudStack changes).
    Remove {
        /// The plan's name.
        name: String,
    },
    /// Drill the plan: test failovers tier by tier, the next tier once every VM of the
    /// one before is ready (its gates pass). Every VM is checked first; nothing changes
    /// unless all can start.
    Test(PlanStart),
    /// Clean up the plan's drill, last tier first; VMs that never failed over are skipped.
    Cleanup(PlanStart),
    /// Fail the plan over for real, tier by tier, each VM's gates checked.
    Live(PlanStart),
    /// Roll the plan's live failover back, last tier first.
    Rollback(PlanStart),
    /// Make the plan's live failover final.
    Commit(PlanStart),
    /// Show a run of a plan: its tiers and their times, each VM's state, run,
    /// readiness and RTO.
    Run {
        /// The plan run's id.
        id: String,
    },
    /// List a plan's runs, newest first.
    Runs {
        /// The plan's name.
        name: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, clap::Args)]
pub struct PlanStart {
    /// The plan's name.
    name: String,
    /// Follow the plan run until it ends, then print it; exit 0 if it is done, 1 if not.
    #[arg(long)]
    wait: bool,
}

/// `ferry plan …`.
pub async fn plan(command: PlanCommand, connection: &ConnectionArgs) -> ExitCode {
    let output = connection.output;
    main_of(connection, |api| async move {
        match command {
            PlanCommand::Add { file } => add(&api, &file, output).await,
            PlanCommand::Update { file, dry_run } => update(&api, &file, dry_run, output).await,
            PlanCommand::List => {
                let (plans, raw) = api.typed::<Vec<PlanSummary>>(Request::list_plans()).await?;
                print(output, &raw, || list(&plans));
                Ok(ExitCode::SUCCESS)
            }
            PlanCommand::Show { name } => {
                let (plan, raw) = api.typed::<PlanDetail>(Request::show_plan(&name)).await?;
                print(output, &raw, || table(&plan));
                Ok(ExitCode::SUCCESS)
            }
            PlanCommand::Test(s) => start(&api, s, "test-failover", output).await,
            PlanCommand::Cleanup(s) => start(&api, s, "cleanup", output).await,
            PlanCommand::Live(s) => start(&api, s, "live-failover", output).await,
            PlanCommand::Rollback(s) => start(&api, s, "rollback", output).await,
            PlanCommand::Commit(s) => start(&api, s, "commit", output).await,
            PlanCommand::Run { id } => {
                let (run, raw) = api.typed::<PlanRunView>(Request::show_plan_run(&id)).await?;
                print(output, &raw, || run_table(&run));
                Ok(ExitCode::SUCCESS)
            }
            PlanCommand::Runs { name, limit } => {
                let (runs, raw) = api
                    .typed::<Vec<PlanRunView>>(Request::list_plan_runs(&name, limit))
                    .await?;
                print(output, &raw, || runs_table(&name, &runs));
                Ok(ExitCode::SUCCESS)
            }
            PlanCommand::Remove { name } => {
                api.send(Request::remove_plan(&name)).await?;
                match output {
                    // The API answers 204 without a body; this is the CLI's own document.
                    Output::Json => outln!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({ "removed": name }))
                            .expect("JSON prints")
                    ),
                    Output::Table => outln!(
                        "Removed plan {name}. Its VMs stay registered; nothing in CloudStack changed."
                    ),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
    .await
}

/// Starts a plan run; with `--wait`, follows it (a look every half second) until it ends.
async fn start(api: &Api, s: PlanStart, workflow: &str, output: Output) -> Outcome {
    let (run, raw) = api
        .typed::<PlanRunView>(Request::start_plan(&s.name, workflow))
        .await?;
    if !s.wait {
        print(output, &raw, || {
            format!(
                "Started plan run {} ({} of {}). Follow it with `ferry plan run {}`.\n",
                run.id, run.workflow, run.plan, run.id
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    let mut shown = String::new();
    let (run, raw) = follow(api, run, Duration::from_millis(500), |run| {
        if output == Output::Table && under_way(&run.state) {
            let line = progress(run);
            if line != shown {
                outln!("{line}");
                shown = line;
            }
        }
    })
    .await?;
    print(output, &raw, || run_table(&run));
    Ok(if run.state == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Whether a plan run in `state` may still move (`pending` or `running`).
pub fn under_way(state: &str) -> bool {
    matches!(state, "pending" | "running")
}

/// Follows the plan run `run` (as its start answered) until it ends, looking at it
/// every `every` and handing each view to `seen` (the first one included); its last
/// view, and that body as the server sent it.
pub(crate) async fn follow(
    api: &Api,
    mut run: PlanRunView,
    every: Duration,
    mut seen: impl FnMut(&PlanRunView),
) -> Result<(PlanRunView, Raw), ClientError> {
    loop {
        seen(&run);
        tokio::time::sleep(every).await;
        let (next, raw) = api
            .typed::<PlanRunView>(Request::show_plan_run(&run.id))
            .await?;
        run = next;
        if !under_way(&run.state) {
            seen(&run);
            return Ok((run, raw));
        }
    }
}

/// One line of a plan run under way: its tier and each VM's state.
fn progress(run: &PlanRunView) -> String {
    let vms: Vec<String> = run
        .vms
        .iter()
        .filter(|v| v.tier == run.tier)
        .map(|v| format!("{} {}", v.name, v.state))
        .collect();
    format!("  tier {}/{}: {}", run.tier, run.tiers, vms.join(", "))
}

fn run_table(run: &PlanRunView) -> String {
    let mut out = format!(
        "Plan run {} — {} of plan {}: {}\n",
        run.id, run.workflow, run.plan, run.state
    );
    if let Some(error) = &run.error {
        out.push_str(&format!("  {error}\n"));
    }
    // A hook that failed without stopping the plan run (a stopped one names its cause
    // in its error) is said up here too.
    let failed: Vec<String> = run
        .hooks
        .iter()
        .filter(|h| h.outcome == "failed")
        .map(|h| h.place())
        .collect();
    if !failed.is_empty() && run.state != "stopped" {
        out.push_str(&format!(
            "  ⚠ {} hook(s) failed, and the plan run went on: {}\n",
            failed.len(),
            failed.join(", ")
        ));
    }
    if let Some(rto) = run.rto_ms {
        out.push_str(&format!(
            "  RTO (request → last VM ready): {:.1} s\n",
            rto as f64 / 1000.0
        ));
    }
    if let Some(worker) = &run.worker {
        out.push_str(&format!(
            "  driven by {worker} (generation {})\n",
            run.generation
        ));
    }
    // VMS THROUGH: the tier's start → its last VM ready (runs and gates); TOTAL: its
    // start → the next tier's (hooks and delay too).
    out.push_str(&format!(
        "\n{:<5} {:<16} {:<9} {:>12} {:>9}\n",
        "TIER", "NAME", "STARTED", "VMS THROUGH", "TOTAL"
    ));
    for t in &run.tier_timings {
        out.push_str(&format!(
            "{:<5} {:<16} {:<9} {:>12} {:>9}\n",
            t.tier,
            t.name,
            t.started_at.as_deref().map_or("-", clock),
            seconds(t.vms_ms),
            seconds(t.ms.filter(|_| t.ended_at.is_some()))
        ));
    }
    out.push_str(&format!(
        "\n{:<5} {:<20} {:<9} {:>8}  {:<38} {}\n",
        "TIER", "VM", "STATE", "RTO", "RUN", "DETAIL"
    ));
    for v in &run.vms {
        let rto = seconds(v.rto_ms);
        out.push_str(&format!(
            "{:<5} {:<20} {:<9} {:>8}  {:<38} {}\n",
            v.tier,
            v.name,
            v.state,
            rto,
            v.run_id.as_deref().unwrap_or("-"),
            v.detail.as_deref().unwrap_or("")
        ));
    }
    if !run.hooks.is_empty() {
        // Every hook the workflow runs, in the order they come: a failed one says why,
        // one started more than once (a resumed plan run) says how often.
        out.push_str(&format!(
            "
{:<24} {:<9} {:>8}  {}
",
            "HOOK", "OUTCOME", "TIME", "WHAT"
        ));
        for h in &run.hooks {
            let mut what = h.hook.clone();
            if let Some(note) = h.note() {
                what.push_str(&format!(" — {note}"));
            }
            out.push_str(&format!(
                "{:<24} {:<9} {:>8}  {what}
",
                h.place(),
                h.outcome,
                seconds(h.ms)
            ));
        }
    }
    out
}

/// Milliseconds as seconds with a tenth, or `-`.
pub(crate) fn seconds(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
}

/// The time of day of an RFC 3339 time (`…T12:34:56.789Z` → `12:34:56`).
fn clock(at: &str) -> &str {
    at.split_once('T')
        .map_or(at, |(_, t)| t.get(..8).unwrap_or(t))
}

fn runs_table(plan: &str, runs: &[PlanRunView]) -> String {
    if runs.is_empty() {
        return format!("Plan {plan} has not run yet. Drill it with `ferry plan test {plan}`.\n");
    }
    let mut out = format!(
        "{:<38} {:<14} {:<8} {:<22} {:>8}\n",
        "PLAN RUN", "WORKFLOW", "STATE", "CREATED", "RTO"
    );
    for r in runs {
        out.push_str(&format!(
            "{:<38} {:<14} {:<8} {:<22} {:>8}\n",
            r.id,
            r.workflow,
            r.state,
            r.created_at.get(..19).unwrap_or(&r.created_at),
            seconds(r.rto_ms)
        ));
    }
    out
}

async fn add(api: &Api, file: &Path, output: Output) -> Outcome {
    let (definition, format) = read_definition(file)?;
    let (plan, raw) = api
        .typed::<PlanDetail>(Request::add_plan(&AddPlan { definition, format }))
        .await?;
    print(output, &raw, || {
        format!(
            "Added plan {} with {} tier(s).\n\n{}",
            plan.name,
            plan.tiers.len(),
            table(&plan)
        )
    });
    Ok(ExitCode::SUCCESS)
}

async fn update(api: &Api, file: &Path, dry_run: bool, output: Output) -> Outcome {
    let (definition, format, name) =
        named_definition(file, "the recovery plan", "plan", "docs/recovery-plans.md")?;
    let request = UpdatePlan {
        definition,
        format,
        dry_run,
    };
    let (updated, raw) = api
        .typed::<PlanUpdated>(Request::update_plan(&name, &request))
        .await?;
    print(output, &raw, || updated_text(&updated));
    Ok(ExitCode::SUCCESS)
}

fn updated_text(u: &PlanUpdated) -> String {
    let name = &u.plan.name;
    let head = match (u.changes.is_empty(), u.dry_run) {
        (true, _) => format!("Plan {name} is already as the file says: nothing to change.\n"),
        (false, true) => format!("Dry run: plan {name} would change (nothing was written):\n"),
        (false, false) => format!("Updated plan {name}:\n"),
    };
    let changes: String = u.changes.iter().map(|c| format!("  {c}\n")).collect();
    format!("{head}{changes}\n{}", table(&u.plan))
}

fn list(plans: &[PlanSummary]) -> String {
    if plans.is_empty() {
        return "No recovery plans. Add one with `ferry plan add FILE` (docs/recovery-plans.md).\n"
            .into();
    }
    let mut out = format!(
        "{:<24} {:>5} {:>4}  {:<14} {:<11} {}\n",
        "NAME", "TIERS", "VMS", "DRILL EVERY", "NEEDS DRILL", "DESCRIPTION"
    );
    for p in plans {
        let every = p
            .drill_interval_days
            .map_or_else(|| "-".to_string(), |d| format!("{d} days"));
        let needs = if p.needs_drill { "YES" } else { "no" };
        out.push_str(&format!(
            "{:<24} {:>5} {:>4}  {:<14} {:<11} {}\n",
            p.name, p.tiers, p.vms, every, needs, p.description
        ));
    }
    out
}

fn table(p: &PlanDetail) -> String {
    let mut out = format!("Plan:         {}\n", p.name);
    if !p.description.is_empty() {
        out.push_str(&format!("Description:  {}\n", p.description));
    }
    out.push_str(&format!(
        "Drill every:  {}\n",
        p.drill_interval_days.map_or_else(
            || "- (only changes call for a drill)".to_string(),
            |d| format!("{d} days")
        )
    ));
    out.push_str(&format!(
        "On failure:   test: {}, live: {} (of a VM of a tier)\n",
        p.on_failure.test, p.on_failure.live
    ));
    out.push_str(&format!(
        "Last drill:   {}\n",
        match (&p.last_drill_at, &p.last_drill_run) {
            (Some(at), Some(run)) => format!(
                "{at}, RTO {} (`ferry plan run {run}`)",
                seconds(p.last_drill_rto_ms)
            ),
            (Some(at), None) => at.clone(),
            _ => "never".into(),
        }
    ));
    if p.needs_drill {
        out.push_str(&format!("NEEDS A DRILL: {}\n", p.drill_reasons.join("; ")));
    }
    out.push_str(&format!("Digest:       {}\n", p.digest));
    out.push_str(&format!("Updated:      {}\n", p.updated_at));
    for h in &p.hooks {
        out.push_str(&format!("Plan hook:    {}\n", hook(h)));
    }
    out.push('\n');
    for (i, t) in p.tiers.iter().enumerate() {
        out.push_str(&format!(
            "Tier {} — {}: {}\n",
            i + 1,
            t.name,
            t.vms.join(", ")
        ));
        if t.delay_after_secs > 0 {
            out.push_str(&format!("  then wait {} s\n", t.delay_after_secs));
        }
        for vm in &t.vms {
            let rto = p
                .last_drill_vm_rto_ms
                .get(vm)
                .map(|ms| format!(" (last drill: ready in {})", seconds(Some(*ms))))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {vm} is ready when: {}{rto}\n",
                gates(t.gates.get(vm))
            ));
        }
        for h in &t.hooks {
            out.push_str(&format!("  hook: {}\n", hook(h)));
        }
    }
    out
}

/// A VM's gates in words: `running, tcp 5432, http 8080 /health`.
fn gates(list: Option<&serde_json::Value>) -> String {
    let Some(list) = list.and_then(|l| l.as_array()) else {
        return "?".into();
    };
    let field = |g: &serde_json::Value, k: &str| {
        g.get(k)
            .map(|v| v.to_string().trim_matches('"').to_string())
    };
    list.iter()
        .map(|g| {
            let kind = field(g, "kind").unwrap_or_else(|| "?".into());
            match kind.as_str() {
                "tcp" => format!("tcp {}", field(g, "port").unwrap_or_default()),
                "http" => format!(
                    "{} {} {}",
                    if g.get("https").and_then(|v| v.as_bool()) == Some(true) {
                        "https"
                    } else {
                        "http"
                    },
                    field(g, "port").unwrap_or_default(),
                    field(g, "path").unwrap_or_else(|| "/".into())
                ),
                "command" => format!("command {}", field(g, "program").unwrap_or_default()),
                other => other.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn hook(h: &PlanHookView) -> String {
    let what = match h.run.get("kind").and_then(|k| k.as_str()) {
        Some("command") => {
            let program = h.run.get("program").and_then(|v| v.as_str()).unwrap_or("?");
            let args: Vec<&str> = h
                .run
                .get("args")
                .and_then(|a| a.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            format!("run {program} {}", args.join(" "))
                .trim_end()
                .to_string()
        }
        Some("http") => format!(
            "{} {}",
            h.run
                .get("method")
                .and_then(|v| v.as_str())
                .unwrap_or("POST"),
            h.run.get("url").and_then(|v| v.as_str()).unwrap_or("?")
        ),
        _ => h.run.to_string(),
    };
    format!("{} ({}): {what}", h.when, h.scope)
}

#[cfg(test)]
mod tests {
    use server::plan_model::PlanRunHookView;

    use super::*;

    fn hook(
        tier: Option<(i64, &str)>,
        point: &str,
        outcome: &str,
        detail: Option<&str>,
        attempts: i64,
    ) -> PlanRunHookView {
        PlanRunHookView {
            tier: tier.map(|(t, _)| t),
            tier_name: tier.map(|(_, n)| n.to_string()),
            point: point.into(),
            hook: "command `/bin/smoke`".into(),
            outcome: outcome.into(),
            detail: detail.map(str::to_string),
            attempts,
            started_at: None,
            ended_at: None,
            ms: (attempts > 0).then_some(1_200),
        }
    }

    #[test]
    fn a_plan_run_lists_each_hook_with_its_outcome_time_and_what_it_said() {
        let run = PlanRunView {
            id: "pr-1".into(),
            plan: "shop".into(),
            workflow: "cleanup".into(),
            state: "done".into(),
            tier: 2,
            tiers: 2,
            error: None,
            created_at: "2026-12-05T00:00:00Z".into(),
            finished_at: None,
            rto_ms: None,
            worker: None,
            generation: 1,
            tier_timings: vec![],
            vms: vec![],
            hooks: vec![
                hook(None, "before", "succeeded", Some("exited 0"), 1),
                hook(
                    Some((2, "database")),
                    "before",
                    "failed",
                    Some("exited with status 3; stderr: dns api down"),
                    2,
                ),
                hook(None, "after", "not_run", None, 0),
            ],
        };
        let table = run_table(&run);
        assert!(
            table.contains("⚠ 1 hook(s) failed, and the plan run went on: tier database before"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("HOOK"))
            .expect("a hooks table");
        let rows = &lines[header + 1..];
        assert!(
            rows[0].starts_with("plan before") && rows[0].contains("succeeded"),
            "{table}"
        );
        assert!(rows[0].contains("1.2 s") && rows[0].ends_with("— exited 0"));
        assert!(
            rows[1].starts_with("tier database before")
                && rows[1].contains("failed")
                && rows[1].ends_with("dns api down (started 2 times)"),
            "{table}"
        );
        assert!(
            rows[2].starts_with("plan after") && rows[2].contains("not_run"),
            "{table}"
        );
        assert!(
            rows[2].contains(" - "),
            "no time for a hook never run: {table}"
        );
    }
}
