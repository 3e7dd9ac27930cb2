//! Following a run until it ends (`--wait`, `ferry run watch`).
//!
//! The run is polled (`GET /v1/runs/{id}`) every [`POLL`] until its state is final
//! (`done`, `unwound`, `abandoned`) or `stuck` — stuck needs an operator, so waiting
//! longer would only hide it. Polling is the only pacing: no sleeps beyond the
//! interval.
//!
//! What is shown depends on where stdout goes:
//! - a terminal: one line per step with a spinner while it runs, and under a step one
//!   line per CloudStack job it submitted (a disk's snapshot, detach, attach: volume,
//!   job id, state), redrawn in place;
//! - anything else (a log, a pipe, a test): one plain line each time a step changes
//!   state, e.g. `  [2/10] snapshot ... done (1.2 s)`. A step that ran and finished
//!   between two polls shows only its last state;
//! - `--output json`: nothing while following; the caller prints the final detail.
//!
//! At the end the run's story and advice are printed (not for JSON).
//!
//! Following is not the run: Ctrl-C stops the following only (the run goes on in the
//! server; exit 130), and while polls fail (server restarting, network blip) a line on
//! stderr says so once, and polling goes on for up to [`TOLERATED_OUTAGE`].

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use server::model::{JobView, RunDetail, StepView};

use super::api::{Api, ClientError, Raw, Request};
use super::output::{Output, out, outln};
use super::render;

/// How often the run is read.
pub const POLL: Duration = Duration::from_millis(200);

/// How long polls may fail (server restarting, network blip) before following gives
/// up. A refusal (4xx) ends it at once.
const TOLERATED_OUTAGE: Duration = Duration::from_secs(30);

/// True once a run will change no more without an operator: a final state or `stuck`.
pub fn settled(state: &str) -> bool {
    matches!(state, "done" | "unwound" | "abandoned" | "stuck")
}

/// Follows run `run_id` until it is settled, showing its progress as `output` and
/// where stdout goes ask (see the module docs), and returns its last detail. With
/// [`Output::Json`] nothing is printed.
#[allow(dead_code, reason = "public for `ferry demo`")]
pub async fn follow(api: &Api, run_id: &str, output: Output) -> anyhow::Result<RunDetail> {
    match poll(api, run_id, output, std::future::pending()).await? {
        Followed::Settled(detail, _) => Ok(*detail),
        Followed::Interrupted => unreachable!("never interrupted"),
    }
}

/// How following a run ended.
pub(crate) enum Followed {
    /// The run settled: its last detail, and its JSON as the server sent it.
    Settled(Box<RunDetail>, Raw),
    /// The operator pressed Ctrl-C; the run goes on in the server, as said on stderr.
    Interrupted,
}

/// [`follow`] for the client commands: also returns the last detail's JSON as the
/// server sent it, and stops at Ctrl-C (SIGINT) saying that the run goes on and how
/// to follow or cancel it.
pub(crate) async fn follow_raw(
    api: &Api,
    run_id: &str,
    output: Output,
) -> Result<Followed, ClientError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the first poll, so a Ctrl-C from now on is caught.
    let mut sigint = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    let followed = poll(api, run_id, output, async move {
        sigint.recv().await;
    })
    .await?;
    if let Followed::Interrupted = followed {
        eprintln!(
            "\nStopped following run {run_id}; the run goes on in the server.\n\
             Follow it again with `ferry run watch {run_id}`; stop it with \
             `ferry run cancel {run_id}`."
        );
    }
    Ok(followed)
}

/// Polls the run until it settles or `interrupt` resolves.
async fn poll(
    api: &Api,
    run_id: &str,
    output: Output,
    interrupt: impl Future<Output = ()>,
) -> Result<Followed, ClientError> {
    let mut view = match output {
        Output::Json => View::Silent,
        Output::Table
            if std::io::stdout().is_terminal()
                && live_display_fits(console::Term::stdout().size_checked()) =>
        {
            View::Bars(Box::new(Bars::new()))
        }
        Output::Table => View::Plain(Plain::default()),
    };
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing_since: Option<Instant> = None;
    let mut interrupt = std::pin::pin!(interrupt);
    loop {
        let answer = tokio::select! {
            answer = async {
                interval.tick().await;
                api.typed::<RunDetail>(Request::show_run(run_id)).await
            } => answer,
            () = &mut interrupt => {
                view.abort();
                return Ok(Followed::Interrupted);
            }
        };
        let (detail, raw) = match answer {
            Ok(answer) => {
                if failing_since.take().is_some() {
                    view.note("the server answers again: following on");
                }
                answer
            }
            Err(e) if passing(&e) => {
                let since = match failing_since {
                    Some(since) => since,
                    None => {
                        view.note(&format!(
                            "warning: {}; ferry keeps trying for up to {} s (Ctrl-C stops \
                             following, not the run)",
                            outage(&e),
                            TOLERATED_OUTAGE.as_secs()
                        ));
                        *failing_since.insert(Instant::now())
                    }
                };
                if since.elapsed() < TOLERATED_OUTAGE {
                    continue;
                }
                view.abort();
                return Err(e);
            }
            Err(e) => {
                view.abort();
                return Err(e);
            }
        };
        view.update(&detail);
        if settled(&detail.run.state) {
            view.finish(&detail);
            return Ok(Followed::Settled(Box::new(detail), raw));
        }
    }
}

/// What is wrong while polls fail, in a few words.
fn outage(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { url, cause } => {
            format!("the server at {url} cannot be reached ({cause})")
        }
        ClientError::TimedOut { url, after, .. } => format!(
            "the server at {url} did not answer in {} s",
            after.as_secs()
        ),
        other => format!("the server failed: {other}"),
    }
}

/// Whether a terminal of `size` (rows, columns) can hold the live display: one that
/// says it has no size, or is narrower than 40 columns, gets plain lines instead.
fn live_display_fits(size: Option<(u16, u16)>) -> bool {
    size.is_some_and(|(rows, cols)| rows > 0 && cols >= 40)
}

/// A failure that may pass if the next poll is tried: no answer, or a 5xx.
fn passing(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } | ClientError::TimedOut { .. } => true,
        ClientError::Api { status, .. } => *status >= 500,
        ClientError::Unexpected { .. } => false,
    }
}

enum View {
    Silent,
    Plain(Plain),
    Bars(Box<Bars>),
}

impl View {
    fn update(&mut self, detail: &RunDetail) {
        match self {
            View::Silent => {}
            View::Plain(p) => p.update(detail),
            View::Bars(b) => b.update(detail),
        }
    }

    fn finish(&mut self, detail: &RunDetail) {
        match self {
            View::Silent => {}
            View::Plain(p) => p.finish(detail),
            View::Bars(b) => b.finish(detail),
        }
    }

    fn abort(&mut self) {
        if let View::Bars(b) = self {
            b.abort();
        }
    }

    /// A line on stderr about the following itself (not the run), drawn around the
    /// bars when there are some.
    fn note(&self, text: &str) {
        match self {
            View::Bars(b) => b.multi.suspend(|| eprintln!("{text}")),
            _ => eprintln!("{text}"),
        }
    }
}

/// The closing line and the story, for both views.
fn closing(detail: &RunDetail) -> String {
    let run = &detail.run;
    let mut out = format!(
        "\nRun {} {} after {}.\n",
        run.id,
        run.state,
        render::duration(run.duration_ms)
    );
    out.push_str(&render::story(detail));
    out
}

/// The line either view starts with: which run, what it does, to which VM.
fn heading(detail: &RunDetail) {
    let run = &detail.run;
    outln!(
        "Following run {}: {} of {} ({} steps).",
        run.id,
        render::workflow(run),
        run.vm,
        detail.steps.len()
    );
}

fn step_line(step: &StepView, of: usize) -> String {
    let mut line = format!(
        "  {} {} ... {}",
        render::step_place(step, of),
        step.name,
        step.state
    );
    if !matches!(step.state.as_str(), "running" | "undoing")
        && let Some(time) = render::step_time(step)
    {
        line.push_str(&format!(" ({time})"));
    }
    if matches!(step.state.as_str(), "failed" | "undo_failed")
        && let Some(error) = &step.error
    {
        line.push_str(&format!(": {error}"));
    }
    line
}

/// Plain lines, one per change.
#[derive(Default)]
struct Plain {
    started: bool,
    run_state: String,
    cancel_requested: bool,
    /// What the run was waiting for at the last poll.
    waiting: Option<String>,
    /// The steps already said to be overdue.
    overdue: std::collections::HashSet<i64>,
    /// The CloudStack jobs already said to be overdue.
    overdue_jobs: std::collections::HashSet<String>,
    steps: Vec<String>,
}

/// The line for a run waiting out an outage: `waiting for CloudStack: cannot connect:
/// connection refused, since 2026-…Z (42.0 s so far); ferry keeps trying`.
fn waiting_line(waiting: &server::model::Waiting) -> String {
    format!(
        "waiting for {} since {} ({} so far); ferry keeps trying",
        waiting.for_,
        waiting.since,
        render::duration((waiting.seconds * 1000.0) as i64)
    )
}

impl Plain {
    fn update(&mut self, detail: &RunDetail) {
        let run = &detail.run;
        if !self.started {
            self.started = true;
            heading(detail);
        }
        if run.cancel_requested && !self.cancel_requested {
            self.cancel_requested = true;
            outln!("  cancel requested: the run unwinds before its next step");
        }
        let waiting = run.waiting.as_ref().map(|w| w.for_.clone());
        if waiting != self.waiting {
            match &run.waiting {
                Some(w) => outln!("  {}", waiting_line(w)),
                None => outln!(
                    "  {} answers again: carrying on",
                    self.waiting
                        .as_deref()
                        .and_then(|w| w.split(':').next())
                        .unwrap_or("it")
                ),
            }
            self.waiting = waiting;
        }
        self.steps.resize(detail.steps.len(), "waiting".into());
        let changed = |(i, s): (usize, &StepView)| -> Option<(usize, String)> {
            (s.state != self.steps[i] && s.state != "waiting").then(|| (i, s.state.clone()))
        };
        // Forward progress in step order, then undos in the order they run: reverse.
        let forward: Vec<(usize, String)> = detail
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state.as_str(), "running" | "done" | "failed"))
            .filter_map(changed)
            .collect();
        let backward: Vec<(usize, String)> = detail
            .steps
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, s)| matches!(s.state.as_str(), "undoing" | "undone" | "undo_failed"))
            .filter_map(changed)
            .collect();
        for (i, state) in &forward {
            outln!("{}", step_line(&detail.steps[*i], detail.steps.len()));
            self.steps[*i] = state.clone();
        }
        for step in &detail.steps {
            if let Some(warning) = &step.overdue
                && self.overdue.insert(step.position)
            {
                outln!("  warning: {} is {warning}", step.name);
            }
        }
        for job in &detail.jobs {
            if let (Some(warning), Some(id)) = (&job.overdue, &job.job_id)
                && self.overdue_jobs.insert(id.clone())
            {
                outln!("  warning: CloudStack job {id} ({}) is {warning}", job.kind);
            }
        }
        // Before the undos it causes. (Why is in the failed step's line, when a poll saw
        // it, and in the story at the end.)
        if run.state != self.run_state && run.state == "unwinding" {
            outln!("  unwinding: undoing the steps that ran, in reverse");
        }
        for (i, state) in &backward {
            outln!("{}", step_line(&detail.steps[*i], detail.steps.len()));
            self.steps[*i] = state.clone();
        }
        self.run_state = run.state.clone();
    }

    fn finish(&mut self, detail: &RunDetail) {
        out(&closing(detail));
    }
}

/// A live display: a spinner line per step and a line per CloudStack job under its
/// step.
struct Bars {
    multi: MultiProgress,
    steps: Vec<ProgressBar>,
    /// The last line of each step (the step's own or its last job's), where the next
    /// job line goes.
    last: Vec<ProgressBar>,
    jobs: HashMap<String, ProgressBar>,
    /// A line under the steps while the run waits out an outage.
    waiting: Option<ProgressBar>,
    active: ProgressStyle,
    settled: ProgressStyle,
}

impl Bars {
    fn new() -> Bars {
        // `wide_msg` is cut to the terminal's width: a line never wraps.
        let active = ProgressStyle::with_template("{prefix} {spinner:.cyan} {wide_msg}")
            .expect("a valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        let settled =
            ProgressStyle::with_template("{prefix} {wide_msg}").expect("a valid template");
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            steps: Vec::new(),
            last: Vec::new(),
            jobs: HashMap::new(),
            waiting: None,
            active,
            settled,
        }
    }

    fn symbol(state: &str) -> Option<&'static str> {
        match state {
            "waiting" | "pending" => Some("·"),
            "done" | "succeeded" => Some("✔"),
            "undone" => Some("↺"),
            "failed" | "undo_failed" => Some("✘"),
            _ => None,
        }
    }

    /// Draws `bar` with `symbol`, or with a spinner when there is none.
    fn show(&self, bar: &ProgressBar, symbol: Option<&str>, message: String) {
        match symbol {
            Some(symbol) => {
                bar.disable_steady_tick();
                bar.set_style(self.settled.clone());
                bar.set_message(format!("{symbol} {message}"));
                bar.tick();
            }
            None => {
                bar.set_style(self.active.clone());
                bar.set_message(message);
                bar.enable_steady_tick(Duration::from_millis(100));
            }
        }
    }

    fn update(&mut self, detail: &RunDetail) {
        if self.steps.is_empty() {
            heading(detail);
        }
        let of = detail.steps.len();
        while self.steps.len() < of {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_prefix(format!(
                "  {}",
                render::step_place(&detail.steps[self.steps.len()], of)
            ));
            self.last.push(bar.clone());
            self.steps.push(bar);
        }
        let width = detail.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for (step, bar) in detail.steps.iter().zip(&self.steps) {
            let mut message = format!("{:<width$}  {}", step.name, step.state.replace('_', " "));
            if let Some(time) = render::step_time(step) {
                message.push_str(&format!("  {time}"));
            }
            if matches!(step.state.as_str(), "failed" | "undo_failed")
                && let Some(error) = &step.error
            {
                message.push_str(&format!(": {error}"));
            }
            if let Some(warning) = &step.overdue {
                message.push_str(&format!("  ⚠ {warning}"));
            }
            self.show(bar, Self::symbol(&step.state), message);
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for job in &detail.jobs {
            let base = format!(
                "{}|{}|{}|{}",
                job.step.as_deref().unwrap_or(""),
                job.kind,
                job.volume_id.as_deref().unwrap_or(""),
                job.vm_id.as_deref().unwrap_or("")
            );
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            let key = format!("{base}|{n}");
            let bar = match self.jobs.get(&key) {
                Some(bar) => bar.clone(),
                None => {
                    let Some(i) = detail.step_of(job) else {
                        continue;
                    };
                    let bar = self
                        .multi
                        .insert_after(&self.last[i], ProgressBar::new_spinner());
                    bar.set_prefix("        ");
                    self.last[i] = bar.clone();
                    self.jobs.insert(key, bar.clone());
                    bar
                }
            };
            // A job the server still lists as submitted, under a step that has ended,
            // is not waited on any more: no spinner for it.
            let step_active = detail
                .step_of(job)
                .and_then(|i| detail.steps.get(i))
                .is_some_and(|s| matches!(s.state.as_str(), "running" | "undoing"));
            let symbol = match job.state.as_str() {
                "pending" | "submitted" if step_active => None,
                "pending" | "submitted" => Some("·"),
                other => Self::symbol(other).or(Some("·")),
            };
            self.show(&bar, symbol, job_message(job));
        }
        match (&detail.run.waiting, &self.waiting) {
            (Some(w), Some(bar)) => self.show(bar, None, waiting_line(w)),
            (Some(w), None) => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_prefix("  !");
                self.show(&bar, None, waiting_line(w));
                self.waiting = Some(bar);
            }
            (None, Some(bar)) => {
                bar.finish_and_clear();
                self.multi.remove(bar);
                self.waiting = None;
            }
            (None, None) => {}
        }
    }

    fn finish(&mut self, detail: &RunDetail) {
        // Finished bars stay drawn as they are; what follows is printed below them.
        if let Some(bar) = self.waiting.take() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        for bar in self.steps.iter().chain(self.jobs.values()) {
            bar.disable_steady_tick();
            bar.finish();
        }
        // The last bar's line is left without its newline.
        out("\n");
        out(&closing(detail));
    }

    fn abort(&mut self) {
        for bar in self
            .steps
            .iter()
            .chain(self.jobs.values())
            .chain(&self.waiting)
        {
            bar.abandon();
        }
    }
}

/// `attach  volume 2334…  job 8f1e…  succeeded`; an undo's job (its step is
/// `undo-<step>`), drawn under the step it undoes, says so: `undo attach  volume …`.
fn job_message(job: &JobView) -> String {
    let mut message = if job.step.as_deref().is_some_and(|s| s.starts_with("undo-")) {
        format!("undo {}", job.kind)
    } else {
        job.kind.clone()
    };
    if let Some(volume) = &job.volume_id {
        message.push_str(&format!("  volume {volume}"));
    } else if let Some(vm) = &job.vm_id {
        message.push_str(&format!("  vm {vm}"));
    }
    match (&job.job_id, job.state.as_str()) {
        (Some(id), _) => message.push_str(&format!("  job {id}")),
        (None, "pending") => message.push_str("  (not yet accepted)"),
        // Some commands (deleteVolume) are answered at once, without an async job.
        (None, _) => message.push_str("  (no async job)"),
    }
    message.push_str(&format!("  {}", job.state));
    if let Some(error) = &job.error {
        message.push_str(&format!(": {}", render::job_error(error)));
    }
    if let Some(warning) = &job.overdue {
        message.push_str(&format!("  ⚠ {warning}"));
    }
    message
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_terminal_without_a_size_or_too_narrow_gets_plain_lines() {
        assert!(super::live_display_fits(Some((24, 80))));
        assert!(super::live_display_fits(Some((1, 40))));
        assert!(!super::live_display_fits(Some((0, 0))));
        assert!(!super::live_display_fits(Some((24, 0))));
        assert!(!super::live_display_fits(Some((24, 39))));
        assert!(!super::live_display_fits(None));
    }
    use super::*;

    fn job(step: &str, kind: &str) -> JobView {
        JobView {
            step: Some(step.into()),
            kind: kind.into(),
            volume_id: Some("vol-1".into()),
            vm_id: None,
            job_id: Some("job-1".into()),
            state: "succeeded".into(),
            error: None,
            at: "2026-01-01T00:00:00.000Z".into(),
            overdue: None,
        }
    }

    #[test]
    fn an_overdue_job_says_so_on_its_line() {
        let mut frozen = job("attach-replicas", "attach");
        frozen.state = "submitted".into();
        frozen.overdue = Some("running for 5 min 00 s — far past …".into());
        assert_eq!(
            job_message(&frozen),
            "attach  volume vol-1  job job-1  submitted  ⚠ running for 5 min 00 s — far past …"
        );
    }

    #[test]
    fn an_undo_job_is_labelled_as_an_undo() {
        assert_eq!(
            job_message(&job("detach-replicas", "detach")),
            "detach  volume vol-1  job job-1  succeeded"
        );
        assert_eq!(
            job_message(&job("undo-detach-replicas", "attach")),
            "undo attach  volume vol-1  job job-1  succeeded"
        );
    }
}
