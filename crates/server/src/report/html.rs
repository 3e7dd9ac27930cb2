//! The report as one self-contained HTML file: its style inline, its timeline an
//! inline SVG, no script, no font, no image and no link to fetch — it opens offline and
//! prints to PDF from a browser (print styles: white background, tables that do not
//! break inside a row, each run on a new page).
//!
//! The page is an askama template (`templates/report/report.html`), which escapes
//! every value it prints; the one value printed unescaped is the timeline, which
//! `svg` builds with every text escaped. The template prints strings only: the facts
//! are turned into words here, so that what is shown is decided in one place.

use askama::Template;

use super::model::*;
use super::svg::timeline_svg;

/// The page's style: plain, printable, colour always doubled by a word or a symbol.
const CSS: &str = include_str!("../../templates/report/report.css");

#[derive(Template)]
#[template(path = "report/report.html")]
struct Page<'a> {
    css: &'a str,
    title: String,
    verdict: String,
    verdict_label: String,
    sentence: String,
    digest: &'a str,
    facts: Vec<(&'static str, String)>,
    plan: Option<PlanPage>,
    runs: Vec<RunPage>,
    leak_clean: bool,
    leak_summary: String,
    leak_rows: Vec<Vec<String>>,
    warnings: Vec<(String, String)>,
    timeline: String,
    format: &'a str,
}

struct PlanPage {
    facts: Vec<(&'static str, String)>,
    tiers: Vec<Vec<String>>,
    vms: Vec<Vec<String>>,
    gates: Vec<Vec<String>>,
    hooks: Vec<Vec<String>>,
}

struct RunPage {
    heading: String,
    facts: Vec<(&'static str, String)>,
    story: Vec<String>,
    steps: Vec<Vec<String>>,
    disks: Vec<Vec<String>>,
    jobs: Vec<Vec<String>>,
    hooks: Vec<Vec<String>>,
}

fn or_dash(v: Option<&str>) -> String {
    v.map_or_else(|| "—".to_string(), str::to_string)
}

fn num(v: Option<i64>) -> String {
    v.map_or_else(|| "—".to_string(), |n| n.to_string())
}

fn secs(v: Option<i64>) -> String {
    v.map_or_else(
        || "—".to_string(),
        |ms| format!("{:.1} s", ms as f64 / 1000.0),
    )
}

fn bytes(n: i64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    format!("{:.1} GiB", n as f64 / GIB)
}

/// `ok` shown as a word and a symbol, never as a colour alone.
fn mark(ok: bool, yes: &str, no: &str) -> String {
    if ok {
        format!("✓ {yes}")
    } else {
        format!("✗ {no}")
    }
}

fn run_page(run: &RunFacts) -> RunPage {
    RunPage {
        heading: format!("{} of {} — {}", run.workflow, run.vm, run.state),
        facts: vec![
            ("Run", run.id.clone()),
            (
                "Workflow",
                match &run.mode {
                    Some(mode) => format!("{} ({mode} mode)", run.workflow),
                    None => run.workflow.clone(),
                },
            ),
            ("State", run.state.clone()),
            ("Requested by", or_dash(run.requested_by.as_deref())),
            (
                "Plan run",
                match (&run.plan_run_id, run.tier) {
                    (Some(id), Some(t)) => format!("{id} (tier {t})"),
                    (Some(id), None) => id.clone(),
                    _ => "—".into(),
                },
            ),
            (
                "Worker(s)",
                if run.workers.is_empty() {
                    "not recorded".into()
                } else {
                    run.workers.join(" → ")
                },
            ),
            ("Created", run.created_at.clone()),
            ("Finished", or_dash(run.finished_at.as_deref())),
            ("Duration", secs(Some(run.duration_ms))),
            ("RTO", secs(run.rto_ms)),
            (
                "Target VM",
                run.target_vm
                    .as_ref()
                    .map_or("—".into(), |t| format!("{} ({})", t.name, t.id)),
            ),
            ("Error", or_dash(run.error.as_deref())),
        ],
        story: run.story.clone(),
        steps: run
            .steps
            .iter()
            .map(|s| {
                vec![
                    (s.position + 1).to_string(),
                    s.name.clone(),
                    s.state.clone(),
                    s.attempts.to_string(),
                    or_dash(s.started_at.as_deref()),
                    or_dash(s.finished_at.as_deref()),
                    match (&s.undo_started_at, &s.undo_finished_at) {
                        (Some(a), Some(b)) => format!("{a} → {b}"),
                        (Some(a), None) => format!("{a} → …"),
                        _ => "—".into(),
                    },
                    or_dash(s.error.as_deref()),
                ]
            })
            .collect(),
        disks: run
            .disks
            .iter()
            .map(|d| {
                let verified = match d.verified_device_id {
                    Some(id) => mark(
                        Some(id) == d.planned_device_id,
                        &format!("{id} · {}", d.verified_size_bytes.map_or("—".into(), bytes)),
                        &format!(
                            "{id} (planned {}) · {}",
                            num(d.planned_device_id),
                            d.verified_size_bytes.map_or("—".into(), bytes)
                        ),
                    ),
                    None => "— not verified by this run".into(),
                };
                vec![
                    format!("{}{}", d.device_key, if d.boot { " (boot)" } else { "" }),
                    d.address.clone(),
                    d.label.clone(),
                    bytes(d.capacity_bytes),
                    d.replica_volume_id.clone(),
                    match (&d.snapshot_id, &d.clone_volume_id) {
                        (Some(s), Some(c)) => format!("snapshot {s} → clone {c}"),
                        (Some(s), None) => format!("snapshot {s}"),
                        (None, Some(c)) => format!("clone {c}"),
                        (None, None) => "—".into(),
                    },
                    num(d.planned_device_id),
                    verified,
                    d.serial.clone(),
                    match (&d.appliance_device_path, &d.appliance_path_run_id) {
                        (Some(p), Some(r)) => format!("{p} (run {r})"),
                        (Some(p), None) => p.clone(),
                        _ => "— not put back yet".into(),
                    },
                ]
            })
            .collect(),
        jobs: run
            .jobs
            .iter()
            .map(|j| {
                vec![
                    or_dash(j.job_id.as_deref()),
                    format!(
                        "{}{}",
                        if j.undo { "UNDO " } else { "" },
                        or_dash(j.step.as_deref())
                    ),
                    j.kind.clone(),
                    j.disk_key.map_or("—".into(), |k| k.to_string()),
                    or_dash(j.volume_id.as_deref().or(j.vm_id.as_deref())),
                    match j.state.as_str() {
                        "failed" | "ended" => format!("✗ {}", j.state),
                        other => other.to_string(),
                    },
                    j.started_at.clone(),
                    or_dash(j.ended_at.as_deref()),
                    or_dash(j.error.as_deref()),
                ]
            })
            .collect(),
        hooks: hooks(&run.hooks),
    }
}

fn hooks(list: &[HookFacts]) -> Vec<Vec<String>> {
    list.iter()
        .map(|h| {
            vec![
                h.point.clone(),
                h.hook.clone(),
                match h.outcome.as_str() {
                    "succeeded" => "✓ succeeded".into(),
                    "failed" => "✗ failed".into(),
                    other => format!("– {other}"),
                },
                or_dash(h.detail.as_deref()),
            ]
        })
        .collect()
}

fn plan_page(p: &PlanRunFacts) -> PlanPage {
    PlanPage {
        facts: vec![
            ("Plan run", p.id.clone()),
            ("Plan", format!("{} (digest {})", p.plan, p.plan_digest)),
            ("Workflow", p.workflow.clone()),
            ("State", p.state.clone()),
            ("Requested by", or_dash(p.requested_by.as_deref())),
            (
                "Worker(s)",
                if p.workers.is_empty() {
                    "not recorded".into()
                } else {
                    p.workers.join(" → ")
                },
            ),
            ("Created", p.created_at.clone()),
            ("Finished", or_dash(p.finished_at.as_deref())),
            ("Plan RTO", secs(p.rto_ms)),
            ("Error", or_dash(p.error.as_deref())),
        ],
        tiers: p
            .tiers
            .iter()
            .map(|t| {
                vec![
                    t.tier.to_string(),
                    t.name.clone(),
                    or_dash(t.started_at.as_deref()),
                    or_dash(t.through_at.as_deref()),
                    or_dash(t.ended_at.as_deref()),
                    secs(t.vms_ms),
                    secs(t.ms),
                ]
            })
            .collect(),
        vms: p
            .vms
            .iter()
            .map(|v| {
                vec![
                    v.tier.to_string(),
                    v.vm.clone(),
                    match v.state.as_str() {
                        "ready" => "✓ ready".into(),
                        "failed" => "✗ failed".into(),
                        other => other.to_string(),
                    },
                    or_dash(v.run_id.as_deref()),
                    or_dash(v.ready_at.as_deref()),
                    secs(v.rto_ms),
                    or_dash(v.detail.as_deref()),
                ]
            })
            .collect(),
        gates: p
            .vms
            .iter()
            .flat_map(|v| {
                v.gates.iter().map(move |g| {
                    vec![
                        v.vm.clone(),
                        g.kind.clone(),
                        g.check.clone(),
                        match g.verdict.as_str() {
                            "passed" => "✓ passed".into(),
                            "failed" => "✗ failed".into(),
                            other => format!("– {other}"),
                        },
                        g.attempts.to_string(),
                        secs(Some(g.elapsed_ms)),
                        or_dash(g.last_seen.as_deref()),
                    ]
                })
            })
            .collect(),
        hooks: hooks(&p.hooks),
    }
}

/// The report as one self-contained HTML document.
pub fn to_html(report: &Report) -> String {
    let s = &report.subject;
    let page = Page {
        css: CSS,
        title: format!("ferry report: {} of {} ({})", s.workflow, s.name, s.id),
        verdict: report.outcome.verdict.clone(),
        verdict_label: match report.outcome.verdict.as_str() {
            "succeeded" => "✓ SUCCEEDED".into(),
            "failed" => "✗ FAILED".into(),
            _ => "… IN PROGRESS".into(),
        },
        sentence: report.outcome.sentence.clone(),
        digest: &report.digest,
        facts: vec![
            ("Subject", format!("{} {}", s.kind.replace('_', " "), s.id)),
            ("What", format!("{} of {}", s.workflow, s.name)),
            ("Report built", report.generated_at.clone()),
            ("Built by", report.generated_by.clone()),
        ],
        plan: report.plan_run.as_ref().map(plan_page),
        runs: report.runs.iter().map(run_page).collect(),
        leak_clean: report.leak_check.clean,
        leak_summary: report.leak_check.summary.clone(),
        leak_rows: report
            .leak_check
            .items
            .iter()
            .map(|i| {
                vec![
                    mark(i.ok, "where ferry says", "LEFT OVER / MISPLACED"),
                    i.kind.clone(),
                    i.id.clone(),
                    or_dash(i.name.as_deref()),
                    i.expected.clone(),
                    i.found.clone(),
                ]
            })
            .collect(),
        warnings: report
            .warnings
            .iter()
            .map(|w| (w.kind.clone(), w.message.clone()))
            .collect(),
        timeline: timeline_svg(report),
        format: &report.format,
    };
    page.render()
        .expect("the report template renders: it prints only strings")
}
