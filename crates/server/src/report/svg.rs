//! The report's timeline as an inline SVG: one row per step and per disk of each run,
//! a bar for every CloudStack job (`class="job"`, `data-job="<job id>"`), bars for the
//! time a step spent with no job in flight (`class="wait"`), undo in its own colour
//! *and* a stripe pattern and the word "undo" in its tooltip, failures marked with a
//! red outline and a ✕ — so that colour is never the only signal, on screen or printed
//! in black and white. In a plan run's report each VM's readiness gates get a row too.
//!
//! Every text that comes from a record (names, ids, errors) is escaped by [`esc`].

use std::fmt::Write as _;

use super::facts::ms;
use super::model::{JobFacts, Report, RunFacts};

/// Left column (labels) and drawing widths, row height, in px.
const LABEL: f64 = 250.0;
const WIDTH: f64 = 900.0;
const ROW: f64 = 20.0;
const TOP: f64 = 44.0;

/// `text` escaped for SVG (XML) text and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One row of the timeline: its label and what is drawn in it.
struct Row<'a> {
    label: String,
    heading: bool,
    marks: Vec<Mark<'a>>,
}

enum Mark<'a> {
    /// A step's action or undo span (a thin outline behind its bars).
    Span { from: i64, to: i64, undo: bool },
    Job {
        from: i64,
        to: i64,
        job: &'a JobFacts,
    },
    Wait {
        from: i64,
        to: i64,
        undo: bool,
        what: String,
    },
    /// A failure at a moment.
    Failure { at: i64, what: String },
}

fn seconds(ms: i64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}

/// The rows of one run.
fn rows_of<'a>(run: &'a RunFacts, rows: &mut Vec<Row<'a>>, now: i64) {
    rows.push(Row {
        label: format!("{} · {} · {}", run.vm, run.workflow, run.state),
        heading: true,
        marks: Vec::new(),
    });
    for s in &run.steps {
        let Some(from) = s.started_at.as_deref().and_then(ms) else {
            continue;
        };
        let mut marks = Vec::new();
        let to = s.finished_at.as_deref().and_then(ms).unwrap_or(now);
        marks.push(Mark::Span {
            from,
            to,
            undo: false,
        });
        if let Some(undo_from) = s.undo_started_at.as_deref().and_then(ms) {
            let undo_to = s.undo_finished_at.as_deref().and_then(ms).unwrap_or(now);
            marks.push(Mark::Span {
                from: undo_from,
                to: undo_to,
                undo: true,
            });
        }
        for w in run
            .waits
            .iter()
            .filter(|w| w.step.as_deref() == Some(&s.name))
        {
            if let (Some(a), Some(b)) = (ms(&w.started_at), ms(&w.ended_at)) {
                marks.push(Mark::Wait {
                    from: a,
                    to: b,
                    undo: w.undo,
                    what: match w.kind.as_str() {
                        "outage" => format!(
                            "{}outage waited out in {} ({}): {}",
                            if w.undo { "undo: " } else { "" },
                            s.name,
                            seconds(b - a),
                            w.detail.as_deref().unwrap_or("")
                        ),
                        _ => format!(
                            "{}no CloudStack job in flight in {} ({})",
                            if w.undo { "undo: " } else { "" },
                            s.name,
                            seconds(b - a)
                        ),
                    },
                });
            }
        }
        for j in run
            .jobs
            .iter()
            .filter(|j| j.disk_key.is_none() && j.step.as_deref() == Some(&s.name))
        {
            marks.push(job_mark(j, now));
        }
        match s.state.as_str() {
            // A step that failed is marked where it failed, also once it was undone.
            "failed" | "undone" | "undoing" if s.error.is_some() && s.finished_at.is_some() => {
                marks.push(Mark::Failure {
                    at: to,
                    what: format!("{} failed: {}", s.name, s.error.as_deref().unwrap_or("")),
                })
            }
            "undo_failed" => marks.push(Mark::Failure {
                at: s.undo_finished_at.as_deref().and_then(ms).unwrap_or(now),
                what: format!(
                    "undo of {} failed: {}",
                    s.name,
                    s.error.as_deref().unwrap_or("")
                ),
            }),
            _ => {}
        }
        rows.push(Row {
            label: format!("{}. {}", s.position + 1, s.name),
            heading: false,
            marks,
        });
    }
    // Jobs of no known step and no disk still get their bar.
    let orphans: Vec<Mark<'a>> = run
        .jobs
        .iter()
        .filter(|j| {
            j.disk_key.is_none()
                && !run
                    .steps
                    .iter()
                    .any(|s| s.started_at.is_some() && j.step.as_deref() == Some(&s.name))
        })
        .map(|j| job_mark(j, now))
        .collect();
    if !orphans.is_empty() {
        rows.push(Row {
            label: "other jobs".into(),
            heading: false,
            marks: orphans,
        });
    }
    for d in &run.disks {
        rows.push(Row {
            label: format!(
                "disk {} ({}){}",
                d.device_key,
                d.address,
                if d.boot { " boot" } else { "" }
            ),
            heading: false,
            marks: run
                .jobs
                .iter()
                .filter(|j| j.disk_key == Some(d.device_key))
                .map(|j| job_mark(j, now))
                .collect(),
        });
    }
}

fn job_mark(j: &JobFacts, now: i64) -> Mark<'_> {
    let from = ms(&j.started_at).unwrap_or(now);
    let to = j.ended_at.as_deref().and_then(ms).unwrap_or(now);
    Mark::Job { from, to, job: j }
}

/// The timeline of `report` as one `<svg>` element (inline, no external reference).
pub fn timeline_svg(report: &Report) -> String {
    let now = ms(&report.generated_at).unwrap_or_else(store::now_ms);
    let mut rows = Vec::new();
    if let Some(plan) = &report.plan_run {
        rows.push(Row {
            label: format!("plan {} · {} · {}", plan.plan, plan.workflow, plan.state),
            heading: true,
            marks: Vec::new(),
        });
        for t in &plan.tiers {
            let Some(from) = t.started_at.as_deref().and_then(ms) else {
                continue;
            };
            let to = t.ended_at.as_deref().and_then(ms).unwrap_or(now);
            rows.push(Row {
                label: format!("tier {} {}", t.tier, t.name),
                heading: false,
                marks: vec![Mark::Span {
                    from,
                    to,
                    undo: false,
                }],
            });
        }
    }
    for run in &report.runs {
        rows_of(run, &mut rows, now);
        if let Some(plan) = &report.plan_run
            && let Some(vm) = plan
                .vms
                .iter()
                .find(|v| v.run_id.as_deref() == Some(&run.id))
            && let (Some(from), Some(to)) = (
                run.finished_at.as_deref().and_then(ms),
                vm.ready_at.as_deref().and_then(ms),
            )
        {
            rows.push(Row {
                label: format!("{} readiness gates", vm.vm),
                heading: false,
                marks: vec![Mark::Wait {
                    from,
                    to,
                    undo: false,
                    what: format!(
                        "{}: readiness gates until ready ({})",
                        vm.vm,
                        seconds(to - from)
                    ),
                }],
            });
        }
    }
    // The time span drawn: every mark's.
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for m in rows.iter().flat_map(|r| &r.marks) {
        let (a, b) = match m {
            Mark::Span { from, to, .. }
            | Mark::Job { from, to, .. }
            | Mark::Wait { from, to, .. } => (*from, *to),
            Mark::Failure { at, .. } => (*at, *at),
        };
        lo = lo.min(a);
        hi = hi.max(b);
    }
    if lo > hi {
        lo = now;
        hi = now;
    }
    let span = (hi - lo).max(1) as f64;
    let x = |t: i64| LABEL + (t - lo) as f64 / span * WIDTH;
    let height = TOP + rows.len() as f64 * ROW + 60.0;
    let total = LABEL + WIDTH + 20.0;
    let jobs: usize = report.runs.iter().map(|r| r.jobs.len()).sum();
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" viewBox="0 0 {total} {height}" width="{total}" height="{height}" aria-label="{}"><title>{}</title>"##,
        esc(&format!(
            "Timeline: {} rows, {jobs} CloudStack jobs, {} in all",
            rows.len(),
            seconds(hi - lo)
        )),
        esc(&format!(
            "Timeline of {} {}",
            report.subject.kind, report.subject.id
        )),
    );
    s.push_str(concat!(
        r##"<defs><pattern id="undo-stripes" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"##,
        r##"<rect width="6" height="6" fill="#f6c58f"/><line x1="0" y1="0" x2="0" y2="6" stroke="#b35c00" stroke-width="2"/></pattern>"##,
        r##"<pattern id="wait-dots" width="4" height="4" patternUnits="userSpaceOnUse"><rect width="4" height="4" fill="#ececec"/><circle cx="2" cy="2" r="0.8" fill="#777"/></pattern></defs>"##,
        // Scoped to this SVG: inline in a page, an SVG's style applies to the whole page.
        r##"<style>svg.timeline text{font:11px sans-serif;fill:#111}svg.timeline .heading{font-weight:bold}"##,
        r##"svg.timeline .axis{stroke:#999;stroke-width:1}svg.timeline .grid{stroke:#ddd;stroke-width:1}"##,
        r##"svg.timeline .span{fill:none;stroke:#888;stroke-width:1}svg.timeline .span.undo{stroke:#b35c00;stroke-dasharray:3 2}"##,
        r##"svg.timeline .job{fill:#2f6db5;stroke:#1b3f6b;stroke-width:.5}svg.timeline .job.undo{fill:url(#undo-stripes);stroke:#b35c00}"##,
        r##"svg.timeline .job.failed{stroke:#c00000;stroke-width:2}svg.timeline .wait{fill:url(#wait-dots);stroke:#999;stroke-width:.5}"##,
        r##"svg.timeline .failure{fill:#c00000;font-weight:bold;font-size:13px}</style>"##,
    ));
    // Axis with ticks at round seconds.
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LABEL}" y1="{}" x2="{}" y2="{}"/>"#,
        TOP - 6.0,
        LABEL + WIDTH,
        TOP - 6.0
    );
    let step_ms = tick(hi - lo);
    let mut t = 0;
    while t <= hi - lo {
        let tx = x(lo + t);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}"/><text x="{tx:.1}" y="{}" text-anchor="middle">{}</text>"#,
            TOP - 6.0,
            TOP + rows.len() as f64 * ROW,
            TOP - 10.0,
            esc(&format!("{}s", t as f64 / 1000.0))
        );
        t += step_ms;
    }
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW;
        let _ = write!(
            s,
            r#"<text x="4" y="{:.1}"{}>{}</text>"#,
            y + 14.0,
            if row.heading {
                r#" class="heading""#
            } else {
                ""
            },
            esc(&row.label)
        );
        for m in &row.marks {
            match m {
                Mark::Span { from, to, undo } => {
                    let _ = write!(
                        s,
                        r#"<rect class="span{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
                        if *undo { " undo" } else { "" },
                        x(*from),
                        y + 2.0,
                        (x(*to) - x(*from)).max(1.0),
                        ROW - 4.0,
                        esc(&format!(
                            "{}{}",
                            if *undo { "undo: " } else { "step: " },
                            seconds(to - from)
                        ))
                    );
                }
                Mark::Wait {
                    from,
                    to,
                    undo,
                    what,
                } => {
                    let _ = write!(
                        s,
                        r#"<rect class="wait{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
                        if *undo { " undo" } else { "" },
                        x(*from),
                        y + 7.0,
                        (x(*to) - x(*from)).max(1.0),
                        6.0,
                        esc(what)
                    );
                }
                Mark::Job { from, to, job } => {
                    let failed = matches!(job.state.as_str(), "failed" | "ended");
                    let class = format!(
                        "job{}{}",
                        if job.undo { " undo" } else { "" },
                        if failed { " failed" } else { "" }
                    );
                    let title = format!(
                        "{}CloudStack job {} — {}{} ({}), {}: {}{}",
                        if job.undo { "UNDO · " } else { "" },
                        job.job_id.as_deref().unwrap_or("-"),
                        job.kind,
                        job.step
                            .as_deref()
                            .map(|s| format!(", step {s}"))
                            .unwrap_or_default(),
                        seconds(to - from),
                        job.state,
                        job.volume_id
                            .as_deref()
                            .or(job.vm_id.as_deref())
                            .unwrap_or(""),
                        job.error
                            .as_deref()
                            .map(|e| format!(" — {e}"))
                            .unwrap_or_default()
                    );
                    let bx = x(*from);
                    let _ = write!(
                        s,
                        r#"<rect class="{class}" data-job="{}" data-kind="{}" x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
                        esc(job.job_id.as_deref().unwrap_or("")),
                        esc(&job.kind),
                        y + 4.0,
                        (x(*to) - bx).max(2.0),
                        ROW - 8.0,
                        esc(&title)
                    );
                    if failed {
                        let _ = write!(
                            s,
                            r#"<text class="failure" x="{:.1}" y="{:.1}">✕</text>"#,
                            x(*to) + 2.0,
                            y + 15.0
                        );
                    }
                }
                Mark::Failure { at, what } => {
                    let _ = write!(
                        s,
                        r#"<text class="failure" x="{:.1}" y="{:.1}">✕ failed<title>{}</title></text>"#,
                        x(*at) + 2.0,
                        y + 15.0,
                        esc(what)
                    );
                }
            }
        }
    }
    // Legend: each kind of mark with its name in words.
    let ly = TOP + rows.len() as f64 * ROW + 24.0;
    let _ = write!(
        s,
        concat!(
            r##"<g class="legend">"##,
            r##"<rect class="legend-job" x="{a}" y="{y}" width="18" height="10" fill="#2f6db5"/><text x="{at}" y="{ty}">CloudStack job</text>"##,
            r##"<rect x="{b}" y="{y}" width="18" height="10" fill="url(#undo-stripes)" stroke="#b35c00"/><text x="{bt}" y="{ty}">undo (striped)</text>"##,
            r##"<rect x="{c}" y="{y}" width="18" height="10" fill="url(#wait-dots)" stroke="#999"/><text x="{ct}" y="{ty}">no job in flight / gates (dotted)</text>"##,
            r##"<text class="failure" x="{d}" y="{ty}">✕</text><text x="{dt}" y="{ty}">failed (red outline)</text>"##,
            r##"<rect x="{e}" y="{y}" width="18" height="10" fill="none" stroke="#888"/><text x="{et}" y="{ty}">step span (undo: dashed)</text>"##,
            r##"</g>"##
        ),
        a = LABEL,
        at = LABEL + 22.0,
        b = LABEL + 130.0,
        bt = LABEL + 152.0,
        c = LABEL + 260.0,
        ct = LABEL + 282.0,
        d = LABEL + 480.0,
        dt = LABEL + 496.0,
        e = LABEL + 620.0,
        et = LABEL + 642.0,
        y = ly,
        ty = ly + 9.0,
    );
    s.push_str("</svg>");
    s
}

/// A round tick interval for a span of `ms`: about 10 ticks.
fn tick(ms: i64) -> i64 {
    let target = (ms / 10).max(1);
    for step in [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000,
        300_000, 600_000,
    ] {
        if step >= target {
            return step;
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_that_can_be_markup_is_escaped() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("a\u{1}b"), "a b");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick(95), 10);
        assert_eq!(tick(9_000), 1_000);
        assert_eq!(tick(0), 1);
    }
}
