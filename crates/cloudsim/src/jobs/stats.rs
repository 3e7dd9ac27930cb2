//! Accounting: API calls and errors per command, jobs and busy time per queue and per
//! command, the most jobs ever seen running at once in one queue, and how many times
//! each finished job was polled — what `/sim/stats` reports. The busiest queue bounds
//! how fast any client can possibly finish a workload.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::state::entities::Job;

#[derive(Debug, Default, Clone, Serialize)]
pub struct QueueStats {
    pub jobs: u64,
    pub busy_s: f64,
}

/// Jobs of one command: how many ran and how long they took (in the simulator's
/// clock: real time, latencies already scaled).
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct CommandJobs {
    pub jobs: u64,
    pub busy_s: f64,
    /// The quickest and slowest job (0 while none ran).
    pub min_s: f64,
    pub max_s: f64,
}

#[derive(Debug, Default)]
pub struct StatsInner {
    pub calls: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub queues: BTreeMap<String, QueueStats>,
    /// Per command (lower case, as in the latency table): its jobs' durations.
    pub commands: BTreeMap<String, CommandJobs>,
    /// Queue name → VM name, for readable stats.
    pub queue_names: BTreeMap<String, String>,
    /// Per-queue overlap check: jobs running right now in each queue.
    pub running: BTreeMap<String, u32>,
    pub max_concurrency_per_queue: u32,
    /// Calls that came during an outage and got no answer from CloudStack.
    pub unanswered: u64,
    /// Calls refused by the API rate limit.
    pub throttled: u64,
}

impl StatsInner {
    /// Counts one call that came during an outage.
    pub fn count_unanswered(&mut self) {
        self.unanswered += 1;
    }

    /// Counts one call refused by the API rate limit (also counted as a call and as
    /// an error of its command).
    pub fn count_throttled(&mut self) {
        self.throttled += 1;
    }

    /// Counts one API call of `command`.
    pub fn count_call(&mut self, command: &str) {
        *self.calls.entry(command.to_string()).or_default() += 1;
    }

    /// Counts one failed call, or one failed job, of `command`.
    pub fn count_error(&mut self, command: &str) {
        *self.errors.entry(command.to_string()).or_default() += 1;
    }
}

/// What `/sim/stats` returns.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Stats {
    /// API calls per command.
    pub calls: BTreeMap<String, u64>,
    /// Failed calls and failed jobs per command.
    pub errors: BTreeMap<String, u64>,
    /// Per queue: jobs run and busy seconds.
    pub queues: BTreeMap<String, QueueReport>,
    /// Per command (lower case): jobs run, their total, shortest and longest duration
    /// — what a job of that command really took, overheads of the simulator included.
    #[serde(default)]
    pub commands: BTreeMap<String, CommandJobs>,
    /// The most jobs ever seen running at once in a single queue (1 when CloudStack's
    /// per-VM serialization holds).
    pub max_concurrency_per_queue: u32,
    /// Calls that came during an outage (`/sim/outage`, an `outage` fault) and were
    /// not answered; they are in no other count.
    #[serde(default)]
    pub unanswered: u64,
    /// Calls refused by the API rate limit (`api_throttling`), also counted in
    /// `calls` and `errors`.
    #[serde(default)]
    pub throttled: u64,
    /// `queryAsyncJobResult` calls per finished job.
    pub polls_per_job: PollStats,
    /// The same, per command (lower case).
    #[serde(default)]
    pub polls_per_command: BTreeMap<String, PollStats>,
    /// Per command (lower case): how many finished jobs were polled how many times
    /// (polls → jobs), so that two readings can be subtracted.
    #[serde(default)]
    pub polls_histogram: BTreeMap<String, BTreeMap<u64, u64>>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct QueueReport {
    pub name: Option<String>,
    pub jobs: u64,
    pub busy_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct PollStats {
    pub jobs: u64,
    pub median: f64,
    pub max: u64,
    pub total: u64,
}

/// What `/sim/stats` reports, from the counters and the job records.
pub fn report(stats: &StatsInner, jobs: &BTreeMap<String, Job>) -> Stats {
    let finished = || jobs.values().filter(|j| j.status != 0);
    let polls_per_job = poll_stats(finished().map(|j| j.polls).collect());
    let mut by_command: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut polls_histogram: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    for j in finished() {
        by_command
            .entry(j.command.to_string())
            .or_default()
            .push(j.polls);
        *polls_histogram
            .entry(j.command.to_string())
            .or_default()
            .entry(j.polls)
            .or_default() += 1;
    }
    let polls_per_command = by_command
        .into_iter()
        .map(|(command, polls)| (command, poll_stats(polls)))
        .collect();
    Stats {
        calls: stats.calls.clone(),
        errors: stats.errors.clone(),
        queues: stats
            .queues
            .iter()
            .map(|(k, q)| {
                (
                    k.clone(),
                    QueueReport {
                        name: stats.queue_names.get(k).cloned(),
                        jobs: q.jobs,
                        busy_s: q.busy_s,
                    },
                )
            })
            .collect(),
        commands: stats.commands.clone(),
        max_concurrency_per_queue: stats.max_concurrency_per_queue,
        unanswered: stats.unanswered,
        throttled: stats.throttled,
        polls_per_job,
        polls_per_command,
        polls_histogram,
    }
}

/// Median, maximum and total of `polls`.
fn poll_stats(mut polls: Vec<u64>) -> PollStats {
    polls.sort_unstable();
    let median = match polls.len() {
        0 => 0.0,
        n if n % 2 == 1 => polls[n / 2] as f64,
        n => (polls[n / 2 - 1] + polls[n / 2]) as f64 / 2.0,
    };
    PollStats {
        jobs: polls.len() as u64,
        median,
        max: polls.last().copied().unwrap_or(0),
        total: polls.iter().sum(),
    }
}
