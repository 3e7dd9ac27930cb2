//! What a bench measured, as figures: per phase the makespan, the lower bound (the
//! busiest queue's busy time with the chain's head and tail on an appliance's queue,
//! or one VM's chain, whichever is larger) and their ratio; the time to running; calls
//! and polls from cloudsim's counters; the peak memory; the machine. Printed as a
//! table, or with `--output json` as one line that scripts read (docs/benchmarks.md).
//!
//! Every figure comes from records, not from this driver's clock: the runs' own times
//! and cloudsim's counters read between the phases.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use server::model::{RunDetail, RunSummary};

use super::bound::{Chain, Durations};
use super::run::{Observed, millis, seconds_between};
use super::world::{Shape, World};

/// The whole report; `--output json` prints it as one line, last.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    vms: u32,
    disks: u32,
    appliances: u32,
    time_scale: f64,
    engine_concurrency: usize,
    /// Whether a drill ran first, unmeasured (`--warmup`).
    warmup: bool,
    /// Whether every appliance had its own volume agent process (`--agents`).
    agents: bool,
    /// CloudStack's API rate limit, when on (`--throttle`).
    throttling: Option<Throttling>,
    /// Calls CloudStack refused for the rate limit during the two phases (each was
    /// sent again).
    throttled_calls: u64,
    makespan_s: f64,
    lower_bound_s: f64,
    ratio: f64,
    test_failover_makespan_s: f64,
    test_failover_lower_bound_s: f64,
    test_failover_ratio: f64,
    cleanup_makespan_s: f64,
    cleanup_lower_bound_s: f64,
    cleanup_ratio: f64,
    test_failover: Phase,
    cleanup: Phase,
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

/// One phase (all test failovers, or all cleanups).
#[derive(Debug, Serialize)]
struct Phase {
    makespan_s: f64,
    lower_bound_s: f64,
    ratio: f64,
    /// Which side of the bound binds: `queue` or `chain`.
    bound_by: &'static str,
    /// One VM's chain of jobs.
    chain_s: f64,
    busiest_queue: BusiestQueue,
    /// Jobs the phase ran, per command.
    jobs_per_command: BTreeMap<String, u64>,
    /// The most runs that were executing at one time (from a run's first step to its
    /// end).
    max_concurrent_runs: usize,
    /// How long each step of the workflow took across the phase's runs, in order.
    steps: Vec<StepTimes>,
    /// CloudStack API calls in the phase.
    calls: u64,
    /// With the API rate limit on: the least time those calls take at `max` per
    /// interval — a bound beside the queues' and the chain's.
    rate_bound_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct StepTimes {
    step: String,
    p50_s: f64,
    max_s: f64,
}

#[derive(Debug, Serialize)]
struct BusiestQueue {
    /// `vm:<id>` (with the VM's name), `volume:<id>` or `snapshot:<id>`.
    queue: String,
    name: Option<String>,
    busy_s: f64,
    /// The least time before its first job and after its last (an appliance's).
    head_s: f64,
    tail_s: f64,
    bound_s: f64,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p95: f64,
    max: f64,
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

#[derive(Debug, Serialize)]
struct Throttling {
    max: u32,
    interval_s: u64,
}

/// What the bench was asked to run.
pub(super) struct Setup {
    pub(super) shape: Shape,
    pub(super) time_scale: f64,
    pub(super) engine_concurrency: usize,
    pub(super) warmup: bool,
    pub(super) agents: bool,
    pub(super) throttling: Option<cloudsim::world::ApiThrottling>,
}

impl Report {
    /// The figures, from the two phases and cloudsim's counters read before the test
    /// failovers, between the phases and after the cleanups.
    pub(super) fn new(
        setup: Setup,
        world: &World,
        [stats_before, stats_between, stats_after]: [&cloudsim::Stats; 3],
        tf: &Observed,
        cu: &Observed,
        (peak_rss_mib, agents_peak_rss_mib): (f64, Option<f64>),
    ) -> anyhow::Result<Report> {
        let Setup {
            shape,
            time_scale,
            engine_concurrency,
            warmup,
            agents,
            throttling,
        } = setup;
        // The rate limit's own bound: the phase's calls, `max` per (scaled) interval.
        let rate = throttling.map(|t| (t.max, t.interval_s as f64 * time_scale));
        let durations = Durations::new(stats_after, time_scale);
        let test_failover = Phase::of(
            tf,
            stats_before,
            stats_between,
            durations.test_failover(shape.disks),
            world,
            rate,
        )?;
        let cleanup = Phase::of(
            cu,
            stats_between,
            stats_after,
            durations.cleanup(shape.disks),
            world,
            rate,
        )?;
        let running_after: Vec<f64> = tf
            .details
            .iter()
            .filter_map(time_to_running)
            .collect::<Vec<_>>();
        let calls_per_command = diff(&stats_before.calls, &stats_after.calls);
        let polls = polls_between(stats_before, stats_after);
        let calls_total: u64 = calls_per_command.values().sum();
        let mut runs_not_done = Vec::new();
        for r in tf.runs.iter().chain(&cu.runs) {
            if r.state != "done" {
                runs_not_done.push(NotDone {
                    run: r.id.clone(),
                    vm: r.vm.clone(),
                    workflow: r.workflow.clone(),
                    state: r.state.clone(),
                    error: r.error.clone(),
                });
            }
        }
        // A VM whose test failover did not end done was not cleaned up: that is a run
        // missing, not only a run failed.
        let makespan_s = test_failover.makespan_s + cleanup.makespan_s;
        let lower_bound_s = test_failover.lower_bound_s + cleanup.lower_bound_s;
        Ok(Report {
            vms: shape.vms,
            disks: shape.disks,
            appliances: shape.appliances,
            time_scale,
            engine_concurrency,
            warmup,
            agents,
            throttling: throttling.map(|t| Throttling {
                max: t.max,
                interval_s: t.interval_s,
            }),
            throttled_calls: stats_after.throttled - stats_before.throttled,
            makespan_s,
            lower_bound_s,
            ratio: makespan_s / lower_bound_s,
            test_failover_makespan_s: test_failover.makespan_s,
            test_failover_lower_bound_s: test_failover.lower_bound_s,
            test_failover_ratio: test_failover.ratio,
            cleanup_makespan_s: cleanup.makespan_s,
            cleanup_lower_bound_s: cleanup.lower_bound_s,
            cleanup_ratio: cleanup.ratio,
            test_failover,
            cleanup,
            time_to_running_s: percentiles(running_after),
            async_jobs: polls.jobs,
            polls_per_job: polls.polls,
            calls_total,
            calls_per_vm: calls_total as f64 / f64::from(shape.vms),
            calls_per_async_job: if polls.jobs > 0 {
                calls_total as f64 / polls.jobs as f64
            } else {
                0.0
            },
            calls_per_vm_without_polls: (calls_total
                - calls_per_command
                    .get("queryAsyncJobResult")
                    .copied()
                    .unwrap_or(0)) as f64
                / f64::from(shape.vms),
            calls_per_command,
            peak_rss_mib,
            agents_peak_rss_mib,
            runs_done: tf
                .runs
                .iter()
                .chain(&cu.runs)
                .filter(|r| r.state == "done")
                .count(),
            runs_not_done,
            machine: Machine::this(),
        })
    }

    /// The report for people.
    pub(super) fn table(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, label: &str, value: String| {
            out.push_str(&format!("  {label:<28} {value}\n"));
        };
        out.push('\n');
        for (name, p) in [
            ("test failover", &self.test_failover),
            ("cleanup", &self.cleanup),
        ] {
            line(
                &mut out,
                name,
                format!(
                    "{:.3} s, bound {:.3} s ({}), ratio {:.3}{}",
                    p.makespan_s,
                    p.lower_bound_s,
                    p.bound_by,
                    p.ratio,
                    p.rate_bound_s
                        .map(|r| format!("; the rate limit's bound {r:.3} s ({} calls)", p.calls))
                        .unwrap_or_default()
                ),
            );
            let q = &p.busiest_queue;
            line(
                &mut out,
                "  busiest queue",
                format!(
                    "{} busy {:.3} s + head {:.3} s + tail {:.3} s",
                    q.name.as_deref().unwrap_or(&q.queue),
                    q.busy_s,
                    q.head_s,
                    q.tail_s
                ),
            );
            line(&mut out, "  one VM's chain", format!("{:.3} s", p.chain_s));
            line(
                &mut out,
                "  runs at once (most)",
                p.max_concurrent_runs.to_string(),
            );
            for st in &p.steps {
                line(
                    &mut out,
                    &format!("    {}", st.step),
                    format!("p50 {:.3} s, max {:.3} s", st.p50_s, st.max_s),
                );
            }
        }
        line(
            &mut out,
            "total",
            format!(
                "{:.3} s, bound {:.3} s, ratio {:.3}",
                self.makespan_s, self.lower_bound_s, self.ratio
            ),
        );
        line(
            &mut out,
            "time to running",
            format!(
                "p50 {:.3} s, p95 {:.3} s, max {:.3} s",
                self.time_to_running_s.p50, self.time_to_running_s.p95, self.time_to_running_s.max
            ),
        );
        line(
            &mut out,
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
                &mut out,
                &format!("  {command}"),
                format!("median {}, max {} ({} jobs)", p.median, p.max, p.jobs),
            );
        }
        line(
            &mut out,
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
            line(&mut out, &format!("  {command}"), n.to_string());
        }
        if let Some(t) = &self.throttling {
            line(
                &mut out,
                "API rate limit",
                format!(
                    "{} calls per {} s (scaled ×{}); {} calls throttled and sent again",
                    t.max, t.interval_s, self.time_scale, self.throttled_calls
                ),
            );
        }
        line(
            &mut out,
            "peak memory (VmHWM)",
            match self.agents_peak_rss_mib {
                Some(agents) => format!(
                    "{:.1} MiB engine, {agents:.1} MiB the {} agents together",
                    self.peak_rss_mib, self.appliances
                ),
                None => format!("{:.1} MiB", self.peak_rss_mib),
            },
        );
        line(
            &mut out,
            "runs done",
            format!("{} of {}", self.runs_done, 2 * self.vms),
        );
        line(
            &mut out,
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
        out
    }

    /// Success when every run ended done; else exit 1, after saying on stderr which
    /// runs did not and which VMs (of `vms`) were not cleaned up at all.
    pub(super) fn verdict(&self, vms: &[String], cleanups: &[RunSummary]) -> ExitCode {
        if self.runs_not_done.is_empty() && self.runs_done == 2 * vms.len() {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "error: {} of {} runs did not end done:",
            2 * vms.len() - self.runs_done,
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

impl Phase {
    fn of(
        observed: &Observed,
        before: &cloudsim::Stats,
        after: &cloudsim::Stats,
        chain: Chain,
        world: &World,
        rate: Option<(u32, f64)>,
    ) -> anyhow::Result<Phase> {
        let details = &observed.details;
        let makespan_s = if observed.runs.is_empty() {
            0.0
        } else {
            observed.seconds()?
        };
        let appliances: std::collections::BTreeSet<String> = world
            .appliances
            .iter()
            .map(|a| format!("vm:{}", a.id))
            .collect();
        let mut busiest: Option<BusiestQueue> = None;
        for (queue, report) in &after.queues {
            let earlier = before.queues.get(queue);
            let jobs = report.jobs - earlier.map_or(0, |q| q.jobs);
            if jobs == 0 {
                continue;
            }
            let busy_s = report.busy_s - earlier.map_or(0.0, |q| q.busy_s);
            let (head_s, tail_s) = if appliances.contains(queue) {
                (chain.head, chain.tail)
            } else {
                (0.0, 0.0)
            };
            let bound_s = head_s + busy_s + tail_s;
            if busiest.as_ref().is_none_or(|b| bound_s > b.bound_s) {
                busiest = Some(BusiestQueue {
                    queue: queue.clone(),
                    name: report.name.clone(),
                    busy_s,
                    head_s,
                    tail_s,
                    bound_s,
                });
            }
        }
        let busiest = busiest.unwrap_or(BusiestQueue {
            queue: String::new(),
            name: None,
            busy_s: 0.0,
            head_s: 0.0,
            tail_s: 0.0,
            bound_s: 0.0,
        });
        let (lower_bound_s, bound_by) = if busiest.bound_s >= chain.total {
            (busiest.bound_s, "queue")
        } else {
            (chain.total, "chain")
        };
        let jobs_per_command = after
            .commands
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    c.jobs - before.commands.get(k).map_or(0, |b| b.jobs),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let calls: u64 = diff(&before.calls, &after.calls).values().sum();
        Ok(Phase {
            calls,
            rate_bound_s: rate.map(|(max, interval_s)| calls as f64 / f64::from(max) * interval_s),
            makespan_s,
            lower_bound_s,
            ratio: if lower_bound_s > 0.0 {
                makespan_s / lower_bound_s
            } else {
                0.0
            },
            bound_by,
            chain_s: chain.total,
            busiest_queue: busiest,
            jobs_per_command,
            max_concurrent_runs: max_concurrent(details),
            steps: step_times(details),
        })
    }
}

/// The most runs executing at once: each from its first step's start to its end.
fn max_concurrent(details: &[RunDetail]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for run in details {
        let first = run
            .steps
            .iter()
            .filter_map(|s| s.started_at.as_deref().and_then(|t| millis(t).ok()))
            .min();
        let end = run.run.finished_at.as_deref().and_then(|t| millis(t).ok());
        if let (Some(from), Some(to)) = (first, end) {
            edges.push((from, 1));
            edges.push((to, -1));
        }
    }
    // An end at the same millisecond as a start counts first.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

/// Per step, in the workflow's order: its median and longest duration.
fn step_times(details: &[RunDetail]) -> Vec<StepTimes> {
    let mut order: Vec<String> = Vec::new();
    let mut took: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in details {
        for step in &run.steps {
            if !order.contains(&step.name) {
                order.push(step.name.clone());
            }
            if let Some(ms) = step.duration_ms {
                took.entry(step.name.clone())
                    .or_default()
                    .push(ms as f64 / 1000.0);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|step| {
            let p = percentiles(took.remove(&step)?);
            Some(StepTimes {
                step,
                p50_s: p.p50,
                max_s: p.max,
            })
        })
        .collect()
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

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Nearest-rank percentiles.
fn percentiles(mut values: Vec<f64>) -> Percentiles {
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
