//! The figures every bench reports, whatever it measured — VMs at once ([`super::report`])
//! or a recovery plan's tiers ([`super::tiers`]): what it was asked to run, the time to
//! running, CloudStack calls and polls from cloudsim's counters, the peak memory, the
//! runs that ended done, and the machine. Both reports flatten these into their JSON,
//! so a script reads `calls_per_vm` or `runs_done` the same way from either.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use server::model::{RunDetail, RunSummary};

use super::run::{millis, seconds_between};
use super::world::Shape;

/// What the bench was asked to run.
pub(super) struct Setup {
    pub(super) shape: Shape,
    pub(super) time_scale: f64,
    pub(super) engine_concurrency: usize,
    pub(super) warmup: bool,
    pub(super) agents: bool,
    pub(super) throttling: Option<cloudsim::world::ApiThrottling>,
}

impl Setup {
    /// The rate limit's own bound per call: `max` calls per (scaled) interval.
    pub(super) fn rate(&self) -> Option<(u32, f64)> {
        self.throttling
            .map(|t| (t.max, t.interval_s as f64 * self.time_scale))
    }
}

/// The shape and settings of the run, first in the JSON.
#[derive(Debug, Serialize)]
pub(super) struct Settings {
    pub(super) vms: u32,
    pub(super) disks: u32,
    pub(super) appliances: u32,
    time_scale: f64,
    engine_concurrency: usize,
    /// Whether a drill ran first, unmeasured (`--warmup`).
    warmup: bool,
    /// Whether every appliance had its own volume agent process (`--agents`).
    agents: bool,
    /// CloudStack's API rate limit, when on (`--throttle`).
    throttling: Option<Throttling>,
}

#[derive(Debug, Serialize)]
struct Throttling {
    max: u32,
    interval_s: u64,
}

impl Settings {
    pub(super) fn of(setup: &Setup) -> Settings {
        Settings {
            vms: setup.shape.vms,
            disks: setup.shape.disks,
            appliances: setup.shape.appliances,
            time_scale: setup.time_scale,
            engine_concurrency: setup.engine_concurrency,
            warmup: setup.warmup,
            agents: setup.agents,
            throttling: setup.throttling.map(|t| Throttling {
                max: t.max,
                interval_s: t.interval_s,
            }),
        }
    }
}

/// What was measured besides the makespans and bounds, last in the JSON.
#[derive(Debug, Serialize)]
pub(super) struct Figures {
    /// Calls CloudStack refused for the rate limit during the measured phases (each
    /// was sent again).
    throttled_calls: u64,
    time_to_running_s: Percentiles,
    async_jobs: u64,
    polls_per_job: Polls,
    calls_total: u64,
    calls_per_vm: f64,
    /// `calls_total` per async job of the phases: issue #14's goal is ≤ 2.5.
    calls_per_async_job: f64,
    /// Calls per VM other than `queryAsyncJobResult` polls.
    calls_per_vm_without_polls: f64,
    calls_per_command: BTreeMap<String, u64>,
    /// This process's: the engine (and, without `--agents`, the volume daemon).
    peak_rss_mib: f64,
    /// With `--agents`: the agents' peaks, summed.
    agents_peak_rss_mib: Option<f64>,
    runs_done: usize,
    runs_not_done: Vec<NotDone>,
    machine: Machine,
}

#[derive(Debug, Serialize)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p95: f64,
    pub(super) max: f64,
}

#[derive(Debug, Serialize)]
struct Polls {
    median: f64,
    max: u64,
    total: u64,
    /// Per command (lower case): its jobs' median and most polls.
    per_command: BTreeMap<String, CommandPolls>,
}

#[derive(Debug, Serialize)]
struct CommandPolls {
    jobs: u64,
    median: f64,
    max: u64,
}

#[derive(Debug, Serialize)]
struct NotDone {
    run: String,
    vm: String,
    workflow: String,
    state: String,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: Option<String>,
    memory_mib: Option<u64>,
}

impl Figures {
    /// The figures of the VMs' `runs` (test failovers and cleanups; `failovers` are the
    /// test failovers' details, for the time to running), between cloudsim's counters
    /// read before the first phase and after the last.
    pub(super) fn new(
        vms: u32,
        [before, after]: [&cloudsim::Stats; 2],
        runs: &[&RunSummary],
        failovers: &[RunDetail],
        (peak_rss_mib, agents_peak_rss_mib): (f64, Option<f64>),
    ) -> Figures {
        let calls_per_command = diff(&before.calls, &after.calls);
        let polls = polls_between(before, after);
        let calls_total: u64 = calls_per_command.values().sum();
        let polls_total = calls_per_command
            .get("queryAsyncJobResult")
            .copied()
            .unwrap_or(0);
        Figures {
            throttled_calls: after.throttled - before.throttled,
            time_to_running_s: percentiles(failovers.iter().filter_map(time_to_running).collect()),
            async_jobs: polls.jobs,
            polls_per_job: polls.polls,
            calls_total,
            calls_per_vm: calls_total as f64 / f64::from(vms),
            calls_per_async_job: if polls.jobs > 0 {
                calls_total as f64 / polls.jobs as f64
            } else {
                0.0
            },
            calls_per_vm_without_polls: (calls_total - polls_total) as f64 / f64::from(vms),
            calls_per_command,
            peak_rss_mib,
            agents_peak_rss_mib,
            runs_done: runs.iter().filter(|r| r.state == "done").count(),
            runs_not_done: runs
                .iter()
                .filter(|r| r.state != "done")
                .map(|r| NotDone {
                    run: r.id.clone(),
                    vm: r.vm.clone(),
                    workflow: r.workflow.clone(),
                    state: r.state.clone(),
                    error: r.error.clone(),
                })
                .collect(),
            machine: Machine::this(),
        }
    }

    /// The figures' lines of the table, from the time to running to the machine.
    pub(super) fn table(&self, settings: &Settings, out: &mut String) {
        line(
            out,
            "time to running",
            format!(
                "p50 {:.3} s, p95 {:.3} s, max {:.3} s",
                self.time_to_running_s.p50, self.time_to_running_s.p95, self.time_to_running_s.max
            ),
        );
        line(
            out,
            "polls per async job",
            format!(
                "median {}, max {} ({} jobs, {} polls)",
                self.polls_per_job.median,
                self.polls_per_job.max,
                self.async_jobs,
                self.polls_per_job.total
            ),
        );
        for (command, p) in &self.polls_per_job.per_command {
            line(
                out,
                &format!("  {command}"),
                format!("median {}, max {} ({} jobs)", p.median, p.max, p.jobs),
            );
        }
        line(
            out,
            "CloudStack calls",
            format!(
                "{} ({:.1} per VM, {:.1} without polls; {:.2} per async job)",
                self.calls_total,
                self.calls_per_vm,
                self.calls_per_vm_without_polls,
                self.calls_per_async_job
            ),
        );
        for (command, n) in &self.calls_per_command {
            line(out, &format!("  {command}"), n.to_string());
        }
        if let Some(t) = &settings.throttling {
            line(
                out,
                "API rate limit",
                format!(
                    "{} calls per {} s (scaled ×{}); {} calls throttled and sent again",
                    t.max, t.interval_s, settings.time_scale, self.throttled_calls
                ),
            );
        }
        line(
            out,
            "peak memory (VmHWM)",
            match self.agents_peak_rss_mib {
                Some(agents) => format!(
                    "{:.1} MiB engine, {agents:.1} MiB the {} agents together",
                    self.peak_rss_mib, settings.appliances
                ),
                None => format!("{:.1} MiB", self.peak_rss_mib),
            },
        );
        line(
            out,
            "runs done",
            format!("{} of {}", self.runs_done, 2 * settings.vms),
        );
        line(
            out,
            "machine",
            format!(
                "{} CPUs, {}, {} MiB",
                self.machine.cpus,
                self.machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
                self.machine
                    .memory_mib
                    .map_or("?".to_string(), |m| m.to_string())
            ),
        );
    }

    /// Success when every run ended done — a test failover and a cleanup of each of
    /// `vms` — else exit 1, after saying on stderr which runs did not and which VMs
    /// were not cleaned up at all (`cleanups` are the cleanup runs there were).
    pub(super) fn verdict(&self, vms: &[String], cleanups: &[&RunSummary]) -> ExitCode {
        if self.runs_not_done.is_empty() && self.runs_done == 2 * vms.len() {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "error: {} of {} runs did not end done:",
            (2 * vms.len()).saturating_sub(self.runs_done),
            2 * vms.len()
        );
        for r in &self.runs_not_done {
            eprintln!(
                "  - {} {} of {}: {} — {}",
                r.workflow,
                r.run,
                r.vm,
                r.state,
                r.error.as_deref().unwrap_or("no reason recorded")
            );
        }
        let cleaned: std::collections::BTreeSet<&str> =
            cleanups.iter().map(|r| r.vm.as_str()).collect();
        for vm in vms.iter().filter(|n| !cleaned.contains(n.as_str())) {
            eprintln!("  - {vm} was not cleaned up: its test failover did not end done");
        }
        ExitCode::from(1)
    }
}

/// One line of a report's table: a label and its value, aligned.
pub(super) fn line(out: &mut String, label: &str, value: String) {
    out.push_str(&format!("  {label:<28} {value}\n"));
}

/// Polls per job of the jobs that finished between two readings, from cloudsim's
/// per-command histograms.
struct MeasuredPolls {
    jobs: u64,
    polls: Polls,
}

fn polls_between(before: &cloudsim::Stats, after: &cloudsim::Stats) -> MeasuredPolls {
    // Each job's poll count, expanded from the histogram's difference.
    let counts = |command: &str, histogram: &BTreeMap<u64, u64>| -> Vec<u64> {
        let earlier = before.polls_histogram.get(command);
        let mut out = Vec::new();
        for (polls, jobs) in histogram {
            let was = earlier.and_then(|h| h.get(polls)).copied().unwrap_or(0);
            out.extend(std::iter::repeat_n(
                *polls,
                jobs.saturating_sub(was) as usize,
            ));
        }
        out
    };
    let median = |mut v: Vec<u64>| -> f64 {
        v.sort_unstable();
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2] as f64,
            n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0,
        }
    };
    let mut all = Vec::new();
    let mut per_command = BTreeMap::new();
    for (command, histogram) in &after.polls_histogram {
        let polls = counts(command, histogram);
        if polls.is_empty() {
            continue;
        }
        all.extend_from_slice(&polls);
        per_command.insert(
            command.clone(),
            CommandPolls {
                jobs: polls.len() as u64,
                max: polls.iter().copied().max().unwrap_or(0),
                median: median(polls),
            },
        );
    }
    MeasuredPolls {
        jobs: all.len() as u64,
        polls: Polls {
            max: all.iter().copied().max().unwrap_or(0),
            total: all.iter().sum(),
            median: median(all),
            per_command,
        },
    }
}

/// What grew between two readings of a counter per key.
pub(super) fn diff(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Nearest-rank percentiles.
pub(super) fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| -> f64 {
        if values.is_empty() {
            return 0.0;
        }
        let i = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[i - 1]
    };
    Percentiles {
        p50: rank(0.50),
        p95: rank(0.95),
        max: values.last().copied().unwrap_or(0.0),
    }
}

/// From the run's creation to the end of its `start-vm` step.
fn time_to_running(run: &RunDetail) -> Option<f64> {
    let created = millis(&run.run.created_at).ok()?;
    let step = run
        .steps
        .iter()
        .find(|s| s.name == "start-vm" && s.state == "done")?;
    let finished = millis(step.finished_at.as_deref()?).ok()?;
    Some(seconds_between(created, finished))
}

// ---- the machine ---------------------------------------------------------------------

/// This process's peak resident set (`VmHWM`), in MiB.
pub(super) fn peak_rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status for the peak memory")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("/proc/self/status has no VmHWM")?;
    Ok(kib / 1024.0)
}

impl Machine {
    fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string()),
            memory_mib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib / 1024),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_counted_between_two_readings() {
        let stats = |histogram: &[(&str, &[(u64, u64)])]| -> cloudsim::Stats {
            serde_json::from_value(serde_json::json!({
                "calls": {}, "errors": {}, "queues": {}, "max_concurrency_per_queue": 1,
                "polls_per_job": {"jobs": 0, "median": 0.0, "max": 0, "total": 0},
                "polls_histogram": histogram
                    .iter()
                    .map(|(c, h)| (c.to_string(), h.iter().map(|(p, j)| (p.to_string(), *j)).collect::<BTreeMap<_, _>>()))
                    .collect::<BTreeMap<_, _>>(),
            }))
            .expect("stats")
        };
        let before = stats(&[
            ("attachvolume", &[(9, 2)]),
            ("stopvirtualmachine", &[(30, 1)]),
        ]);
        let after = stats(&[
            ("attachvolume", &[(1, 3), (2, 1), (9, 2)]),
            ("stopvirtualmachine", &[(30, 1)]),
        ]);
        let m = polls_between(&before, &after);
        assert_eq!(m.jobs, 4);
        assert_eq!((m.polls.median, m.polls.max, m.polls.total), (1.0, 2, 5));
        assert!(!m.polls.per_command.contains_key("stopvirtualmachine"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.max), (50.0, 95.0, 100.0));
        let p = percentiles(vec![3.0]);
        assert_eq!((p.p50, p.p95, p.max), (3.0, 3.0, 3.0));
    }
}
