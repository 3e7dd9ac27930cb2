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

use serde::Serialize;
use server::model::{RunDetail, RunSummary};

use super::bound::{BusiestQueue, Chain, Durations, work_between};
use super::figures::{Figures, Settings, Setup, diff, line, percentiles};
use super::run::{Observed, millis};
use super::world::World;

/// The whole report; `--output json` prints it as one line, last.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    #[serde(flatten)]
    settings: Settings,
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
    #[serde(flatten)]
    figures: Figures,
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

impl Report {
    /// The figures, from the two phases and cloudsim's counters read before the test
    /// failovers, between the phases and after the cleanups.
    pub(super) fn new(
        setup: &Setup,
        world: &World,
        [stats_before, stats_between, stats_after]: [&cloudsim::Stats; 3],
        tf: &Observed,
        cu: &Observed,
        peak_rss: (f64, Option<f64>),
    ) -> anyhow::Result<Report> {
        let rate = setup.rate();
        let disks = setup.shape.disks;
        let durations = Durations::new(stats_after, setup.time_scale);
        let test_failover = Phase::of(
            tf,
            stats_before,
            stats_between,
            durations.test_failover(disks),
            world,
            rate,
        )?;
        let cleanup = Phase::of(
            cu,
            stats_between,
            stats_after,
            durations.cleanup(disks),
            world,
            rate,
        )?;
        // A VM whose test failover did not end done was not cleaned up: that is a run
        // missing, not only a run failed (`Figures::verdict`).
        let runs: Vec<&RunSummary> = tf.runs.iter().chain(&cu.runs).collect();
        let figures = Figures::new(
            setup.shape.vms,
            [stats_before, stats_after],
            &runs,
            &tf.details,
            peak_rss,
        );
        let makespan_s = test_failover.makespan_s + cleanup.makespan_s;
        let lower_bound_s = test_failover.lower_bound_s + cleanup.lower_bound_s;
        Ok(Report {
            settings: Settings::of(setup),
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
            figures,
        })
    }

    /// The report for people.
    pub(super) fn table(&self) -> String {
        let mut out = String::new();
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
            line(&mut out, "  busiest queue", p.busiest_queue.words());
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
        self.figures.table(&self.settings, &mut out);
        out
    }

    /// Success when every run ended done; else exit 1, after saying on stderr which
    /// runs did not and which VMs (of `vms`) were not cleaned up at all.
    pub(super) fn verdict(&self, vms: &[String], cleanups: &[RunSummary]) -> ExitCode {
        let cleanups: Vec<&RunSummary> = cleanups.iter().collect();
        self.figures.verdict(vms, &cleanups)
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
        let busiest = BusiestQueue::of(work_between(before, after).iter().map(|work| {
            let ends = if appliances.contains(&work.queue) {
                (chain.head, chain.tail)
            } else {
                (0.0, 0.0)
            };
            BusiestQueue::new(work, work.busy_s, ends)
        }));
        let (lower_bound_s, bound_by) = busiest.or_chain(chain.total);
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
