//! A run's progress as the run page draws it, and redraws it live: what `ferry
//! failover … --wait` shows on a terminal (crates/ferry/src/client/progress.rs) —
//! each step with its state and time, under each step one line per CloudStack job
//! it submitted (per disk: the disk, the volume, the job id, its state; an undo's
//! jobs marked `undo`), warnings for what runs far past its usual time, an outage
//! the run waits out — then the run's story and what to do, and the buttons that
//! apply to its state.

use std::collections::HashMap;

use askama::Template;

use super::format::{self, Badge};
use crate::model::RunDetail;

struct JobRow {
    what: String,
    disk: Option<String>,
    target: Option<String>,
    job: String,
    state: Badge,
    error: Option<String>,
    overdue: Option<String>,
}

struct StepRow {
    place: String,
    name: String,
    state: Badge,
    time: Option<String>,
    error: Option<String>,
    overdue: Option<String>,
    active: bool,
    jobs: Vec<JobRow>,
}

/// The part of the run page that changes while the run goes on.
#[derive(Template)]
#[template(path = "console/run_live.html")]
pub struct Live {
    run_id: String,
    state: Badge,
    pub settled: bool,
    done: usize,
    total: usize,
    took: String,
    finished: Option<String>,
    worker: Option<String>,
    cancel_requested: bool,
    waiting: Option<String>,
    steps: Vec<StepRow>,
    story: Vec<String>,
    advice: Option<String>,
    can_cancel: bool,
    stuck: bool,
    csrf: String,
    /// Once the run has ended: its timeline (the evidence report's SVG, escaped where
    /// it is made), or why it cannot be drawn.
    timeline: Option<String>,
    timeline_error: Option<String>,
}

/// A step's own times: `1.2 s`, `1.2 s, undo 0.8 s`, `undo 0.8 s`.
fn step_time(action: Option<i64>, undo: Option<i64>) -> Option<String> {
    match (action, undo) {
        (Some(a), Some(u)) => Some(format!(
            "{}, undo {}",
            format::duration(a),
            format::duration(u)
        )),
        (Some(a), None) => Some(format::duration(a)),
        (None, Some(u)) => Some(format!("undo {}", format::duration(u))),
        (None, None) => None,
    }
}

impl Live {
    /// The progress of `detail`; `disks` names the VM's disks by their replica volume
    /// id (`Hard disk 2`), `csrf` goes into the buttons' forms.
    pub fn of(detail: &RunDetail, disks: &HashMap<String, String>, csrf: &str) -> Live {
        let run = &detail.run;
        let total = detail.steps.len();
        let mut steps: Vec<StepRow> = detail
            .steps
            .iter()
            .map(|s| StepRow {
                place: format!("{}/{total}", s.position + 1),
                name: s.name.clone(),
                state: Badge::of(&s.state),
                time: step_time(s.duration_ms, s.undo_duration_ms),
                error: s.error.clone(),
                overdue: s.overdue.clone(),
                active: matches!(s.state.as_str(), "running" | "undoing"),
                jobs: Vec::new(),
            })
            .collect();
        for job in &detail.jobs {
            let Some(i) = detail.step_of(job) else {
                continue;
            };
            let undo = job.step.as_deref().is_some_and(|s| s.starts_with("undo-"));
            // A job still listed as submitted under a step that has ended is not
            // waited on any more.
            let state = match job.state.as_str() {
                "pending" | "submitted" if !steps[i].active => Badge {
                    symbol: "·",
                    class: "idle",
                    ..Badge::of(&job.state)
                },
                other => Badge::of(other),
            };
            steps[i].jobs.push(JobRow {
                what: if undo {
                    format!("undo {}", job.kind)
                } else {
                    job.kind.clone()
                },
                disk: job.volume_id.as_ref().and_then(|v| disks.get(v)).cloned(),
                target: job
                    .volume_id
                    .as_ref()
                    .map(|v| format!("volume {v}"))
                    .or_else(|| job.vm_id.as_ref().map(|v| format!("vm {v}"))),
                job: match (&job.job_id, job.state.as_str()) {
                    (Some(id), _) => format!("job {id}"),
                    (None, "pending") => "not yet accepted".into(),
                    (None, _) => "no async job".into(),
                },
                state,
                error: job.error.clone(),
                overdue: job.overdue.clone(),
            });
        }
        let state = run.state.as_str();
        Live {
            run_id: run.id.clone(),
            state: Badge::of(state),
            settled: format::settled(state),
            done: detail.steps.iter().filter(|s| s.state == "done").count(),
            total,
            took: format::duration(run.duration_ms),
            finished: run.finished_at.as_deref().map(format::when),
            worker: detail
                .lease_owner
                .as_ref()
                .map(|w| format!("{w} (generation {})", detail.generation)),
            cancel_requested: run.cancel_requested,
            waiting: run.waiting.as_ref().map(|w| {
                format!(
                    "Waiting for {} since {} ({} so far); ferry keeps trying.",
                    w.for_,
                    format::when(&w.since),
                    format::duration((w.seconds * 1000.0) as i64)
                )
            }),
            steps,
            story: detail.story.clone(),
            advice: detail.advice.clone(),
            can_cancel: matches!(state, "pending" | "running") && !run.cancel_requested,
            stuck: state == "stuck",
            csrf: csrf.to_string(),
            timeline: None,
            timeline_error: None,
        }
    }

    /// Shows `timeline` (or why there is none) under the progress of an ended run.
    pub fn with_timeline(&mut self, timeline: Result<String, String>) {
        match timeline {
            Ok(svg) => self.timeline = Some(svg),
            Err(why) => self.timeline_error = Some(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobView, RunSummary, StepView};

    fn step(position: i64, name: &str, state: &str) -> StepView {
        StepView {
            position,
            name: name.into(),
            state: state.into(),
            attempts: 1,
            started_at: None,
            finished_at: None,
            duration_ms: Some(1200),
            undo_started_at: None,
            undo_finished_at: None,
            undo_duration_ms: None,
            error: None,
            overdue: None,
        }
    }

    fn job(step: &str, kind: &str, volume: &str, state: &str) -> JobView {
        JobView {
            step: Some(step.into()),
            kind: kind.into(),
            volume_id: Some(volume.into()),
            vm_id: None,
            job_id: Some(format!("job-{volume}")),
            state: state.into(),
            error: None,
            at: "2026-01-01T00:00:00.000Z".into(),
            overdue: None,
        }
    }

    #[test]
    fn each_disk_job_is_drawn_under_its_step_with_the_disk_named() {
        let detail = RunDetail {
            run: RunSummary {
                id: "r1".into(),
                vm: "pgtest1".into(),
                workflow: "test_failover".into(),
                mode: Some("replica".into()),
                state: "running".into(),
                error: None,
                cancel_requested: false,
                created_at: "2026-01-01T00:00:00.000Z".into(),
                updated_at: "2026-01-01T00:00:00.000Z".into(),
                finished_at: None,
                duration_ms: 5000,
                waiting: None,
            },
            lease_owner: Some("w1".into()),
            generation: 1,
            plan_run: None,
            steps: vec![
                step(0, "snapshot", "done"),
                step(1, "detach-replicas", "running"),
            ],
            jobs: vec![
                job("snapshot", "snapshot", "vol-a", "succeeded"),
                job("snapshot", "snapshot", "vol-b", "succeeded"),
                job("detach-replicas", "detach", "vol-a", "submitted"),
                job("undo-snapshot", "delete_snapshot", "vol-b", "succeeded"),
            ],
            events: Vec::new(),
            story: vec!["It is running.".into()],
            advice: None,
        };
        let disks = HashMap::from([("vol-a".to_string(), "Hard disk 1".to_string())]);
        let live = Live::of(&detail, &disks, "t");
        assert_eq!(live.done, 1);
        assert!(!live.settled && live.can_cancel && !live.stuck);
        assert_eq!(live.steps[0].jobs.len(), 3, "two snapshots and an undo");
        assert_eq!(live.steps[0].jobs[0].disk.as_deref(), Some("Hard disk 1"));
        assert_eq!(live.steps[0].jobs[1].disk, None);
        assert_eq!(live.steps[0].jobs[2].what, "undo delete_snapshot");
        assert_eq!(live.steps[1].jobs[0].state.word, "submitted");
        let html = live.render().expect("renders");
        assert!(html.contains("Hard disk 1"), "{html}");
        assert!(html.contains("job job-vol-a"), "{html}");
        assert!(html.contains("1 of 2 steps done"), "{html}");
    }
}
