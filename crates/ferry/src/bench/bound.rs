//! The lower bound's two sides. The chain: how long one VM's workflow takes at the
//! least, and how much of that lies before its first and after its last job on its
//! appliance's queue. The queues: each CloudStack queue's busy time between two
//! readings of cloudsim's counters, and the busiest one with its head and tail.
//!
//! The chain is not written here: it is computed from what the workflows declare of
//! themselves (`workflows::cost::declared`: each step's jobs, how many, on which
//! CloudStack queue, and whether the step then waits for a disk to appear in the
//! appliance). A job on the appliance's or the target VM's queue waits for the one
//! before it, so N of them cost N durations; a per-disk job on its own queue (a
//! detached volume's revert, a snapshot's deletion) runs at once for every disk, so it
//! costs one. Were a workflow to gain or lose a step, the bound follows it.

use std::collections::BTreeMap;

use serde::Serialize;
use workflows::cost::{self, Queue, StepCost, Times};
use workflows::test_failover::Mode;

use super::world::HOTPLUG_DELAY_MS;

/// How long one job of each command takes: the shortest cloudsim measured (so the
/// chain below is a true lower bound, the simulator's own overheads included), else
/// the latency profile scaled.
pub(super) struct Durations {
    measured: BTreeMap<String, f64>,
    scale: f64,
}

/// One VM's chain in a phase, and the parts of it before its first and after its last
/// job on its appliance.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chain {
    pub(super) total: f64,
    pub(super) head: f64,
    pub(super) tail: f64,
}

impl Durations {
    pub(super) fn new(stats: &cloudsim::Stats, scale: f64) -> Durations {
        Durations {
            measured: stats
                .commands
                .iter()
                .filter(|(_, c)| c.jobs > 0)
                .map(|(k, c)| (k.clone(), c.min_s))
                .collect(),
            scale,
        }
    }

    fn of(&self, command: &str) -> f64 {
        let lower = command.to_lowercase();
        self.measured.get(&lower).copied().unwrap_or_else(|| {
            cloudsim::world::default_latency_ms(&lower) as f64 / 1000.0 * self.scale
        })
    }

    fn hotplug(&self) -> f64 {
        HOTPLUG_DELAY_MS as f64 / 1000.0 * self.scale
    }

    /// A test failover (replica mode), as its steps declare their jobs
    /// (`workflows::cost`): the chain is not written here, so it cannot drift.
    pub(super) fn test_failover(&self, disks: u32) -> Chain {
        self.chain(
            &cost::declared(store::Workflow::TestFailover, Mode::Replica),
            disks,
        )
    }

    /// A cleanup (replica mode), as its steps declare their jobs (`workflows::cost`).
    pub(super) fn cleanup(&self, disks: u32) -> Chain {
        self.chain(
            &cost::declared(store::Workflow::Cleanup, Mode::Replica),
            disks,
        )
    }

    /// The chain of `steps` for a VM of `disks` disks: each step's jobs in order, then
    /// its device wait. `head` is all before the first job on the appliance's queue,
    /// `tail` all after the last (the hot-plug that step waits for included); a
    /// workflow that never reaches the appliance has neither.
    fn chain(&self, steps: &[StepCost], disks: u32) -> Chain {
        // Each piece of the chain in order: its duration, and whether it is a job on
        // the appliance's queue.
        let mut pieces: Vec<(f64, bool)> = Vec::new();
        for step in steps {
            for job in &step.jobs {
                let one = self.of(job.command);
                let duration = match (job.times, job.queue) {
                    (Times::Once, _) | (Times::PerDisk, Queue::Own) => one,
                    (Times::PerDisk, Queue::Appliance | Queue::Target) => f64::from(disks) * one,
                };
                pieces.push((duration, job.queue == Queue::Appliance));
            }
            if step.waits_for_device {
                pieces.push((self.hotplug(), false));
            }
        }
        // Added up from +0.0: an empty sum of floats is -0.0, which prints as "-0.000".
        let sum = |pieces: &[(f64, bool)]| pieces.iter().fold(0.0, |s, (d, _)| s + d);
        let total = sum(&pieces);
        let first = pieces.iter().position(|(_, appliance)| *appliance);
        let last = pieces.iter().rposition(|(_, appliance)| *appliance);
        let (head, tail) = match (first, last) {
            (Some(first), Some(last)) => (sum(&pieces[..first]), sum(&pieces[last + 1..])),
            _ => (0.0, 0.0),
        };
        Chain { total, head, tail }
    }
}

/// The queue that bounds a phase (or a tier): its busy time, with the least time
/// before its first job and after its last when it is an appliance's.
#[derive(Debug, Clone, Serialize)]
pub(super) struct BusiestQueue {
    /// `vm:<id>` (with the VM's name), `volume:<id>` or `snapshot:<id>`.
    pub(super) queue: String,
    pub(super) name: Option<String>,
    pub(super) busy_s: f64,
    /// The least time before its first job and after its last (an appliance's).
    pub(super) head_s: f64,
    pub(super) tail_s: f64,
    pub(super) bound_s: f64,
}

impl BusiestQueue {
    pub(super) fn new(work: &Work, busy_s: f64, (head_s, tail_s): (f64, f64)) -> BusiestQueue {
        BusiestQueue {
            queue: work.queue.clone(),
            name: work.name.clone(),
            busy_s,
            head_s,
            tail_s,
            bound_s: head_s + busy_s + tail_s,
        }
    }

    /// The busiest of `queues` by its bound; all zeros when there is none.
    pub(super) fn of(queues: impl IntoIterator<Item = BusiestQueue>) -> BusiestQueue {
        queues
            .into_iter()
            .reduce(|a, b| if b.bound_s > a.bound_s { b } else { a })
            .unwrap_or(BusiestQueue {
                queue: String::new(),
                name: None,
                busy_s: 0.0,
                head_s: 0.0,
                tail_s: 0.0,
                bound_s: 0.0,
            })
    }

    /// The larger of this queue's bound and `chain`, and which it is: `queue` or
    /// `chain`.
    pub(super) fn or_chain(&self, chain: f64) -> (f64, &'static str) {
        if self.bound_s >= chain {
            (self.bound_s, "queue")
        } else {
            (chain, "chain")
        }
    }

    /// `oma-1 busy 1.234 s + head 0.100 s + tail 0.840 s`.
    pub(super) fn words(&self) -> String {
        format!(
            "{} busy {:.3} s + head {:.3} s + tail {:.3} s",
            self.name.as_deref().unwrap_or(&self.queue),
            self.busy_s,
            self.head_s,
            self.tail_s
        )
    }
}

/// One CloudStack queue's work between two readings of cloudsim's counters.
pub(super) struct Work {
    pub(super) queue: String,
    pub(super) name: Option<String>,
    pub(super) busy_s: f64,
}

/// Every queue that ran a job between `before` and `after`, with its busy time.
pub(super) fn work_between(before: &cloudsim::Stats, after: &cloudsim::Stats) -> Vec<Work> {
    after
        .queues
        .iter()
        .filter_map(|(queue, report)| {
            let earlier = before.queues.get(queue);
            let jobs = report.jobs - earlier.map_or(0, |q| q.jobs);
            (jobs > 0).then(|| Work {
                queue: queue.clone(),
                name: report.name.clone(),
                busy_s: report.busy_s - earlier.map_or(0.0, |q| q.busy_s),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_follow_the_workflows_steps() {
        let d = Durations {
            measured: BTreeMap::new(),
            scale: 1.0,
        };
        // 2 disks: snapshots 24, deploy 6, placeholder detach 3, detaches 6,
        // attaches 6, start 15.
        let tf = d.test_failover(2);
        assert!((tf.total - 60.0).abs() < 1e-9, "{tf:?}");
        // Nothing before the first snapshot, and not "-0".
        assert!(tf.head == 0.0 && tf.head.is_sign_positive(), "{tf:?}");
        assert!((tf.tail - 21.0).abs() < 1e-9, "{tf:?}");
        // stop 8, detaches 6, revert 10 (at once), attaches 6, hot-plug 0.2,
        // snapshot deletion 2 (at once), destroy 5.
        let cu = d.cleanup(2);
        assert!((cu.total - 37.2).abs() < 1e-9, "{cu:?}");
        assert!((cu.head - 24.0).abs() < 1e-9, "{cu:?}");
        assert!((cu.tail - 7.2).abs() < 1e-9, "{cu:?}");
    }
}
