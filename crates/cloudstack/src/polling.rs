//! When to poll an async job.
//!
//! A poll too early is a wasted request; a poll too late leaves CloudStack's queue idle
//! and the caller waiting. CloudStack says nothing about how long a job will take, so
//! the client learns it: for each command it keeps how long that command's jobs have
//! lately taken (shared by a client's clones), polls a new job first at that time, and
//! if the job is not done yet, again after short, growing steps. A command not seen
//! yet is polled by the configured [`PollPolicy`] alone. The estimate is probed
//! downwards while first polls keep finding jobs done, and moves halfway towards a
//! longer duration when they do not, so one slow job does not make the next wait late.
//! Jobs of a command not learned yet that are waited on together — a wave, such as every
//! VM of a drill stopped at once — are taken as alike: one wait polls by the policy, the
//! others back off (to eight times the policy's cap) until it ends, then poll by what it
//! learned. Before any job of a command has finished, its first poll comes at the
//! command's [`JobPriors`] duration (what it takes on a typical KVM cloud, scaled to
//! this one by configuration), so the first drill of a process polls about as little as
//! later ones; a wait that finds the prior too long looks a quarter earlier next time.
//!
//! [`PollPolicy`] is the configured policy; [`JobPriors`] the expected durations;
//! `Schedule` is one wait's delays; `Timings` is what a client learned, per command,
//! and who leads each wave. The polling loop
//! itself is `Client::wait_with`, in `jobs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// When to poll an async job: a prompt first poll, then a growing interval, capped,
/// until a deadline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPolicy {
    /// Delay before the first `queryAsyncJobResult`.
    pub first: Duration,
    /// Each following interval is the previous one times this factor …
    pub factor: f64,
    /// … but never longer than this.
    pub max: Duration,
    /// Give up waiting (the job is then of unknown outcome, not failed) after this.
    pub deadline: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            first: Duration::from_millis(250),
            factor: 1.5,
            max: Duration::from_secs(5),
            deadline: Duration::from_secs(3600),
        }
    }
}

impl PollPolicy {
    /// The interval after `current`.
    pub fn next(&self, current: Duration) -> Duration {
        current.mul_f64(self.factor).min(self.max)
    }
}

/// How long a job of each command usually takes on a KVM cloud with shared primary
/// storage, in milliseconds: attach and detach a few seconds, a snapshot or a start
/// ten or more (the same profile docs/cloudsim.md gives for its simulated latencies).
/// Commands not listed have no prior: they are polled by the policy until learned.
pub const TYPICAL_JOB_DURATIONS_MS: [(&str, u64); 11] = [
    ("deployVirtualMachine", 6_000),
    ("startVirtualMachine", 15_000),
    ("stopVirtualMachine", 8_000),
    ("rebootVirtualMachine", 10_000),
    ("destroyVirtualMachine", 5_000),
    ("attachVolume", 3_000),
    ("detachVolume", 3_000),
    ("createSnapshot", 12_000),
    ("revertSnapshot", 10_000),
    ("deleteSnapshot", 2_000),
    ("createVolume", 8_000),
];

/// What a job of each command is expected to take before the client has seen one
/// finish: the first poll of such a job comes then. A guess, replaced by what the
/// client learns from the first job that ends.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobPriors {
    by_command: HashMap<String, Duration>,
}

impl JobPriors {
    /// No priors: every command is polled by the policy until learned.
    pub fn none() -> JobPriors {
        JobPriors::default()
    }

    /// [`TYPICAL_JOB_DURATIONS_MS`], each multiplied by `scale` (2: this cloud's jobs
    /// take twice as long as a typical one's). `scale` must be finite and > 0.
    pub fn typical(scale: f64) -> JobPriors {
        JobPriors {
            by_command: TYPICAL_JOB_DURATIONS_MS
                .iter()
                .map(|&(command, ms)| {
                    (
                        command.to_string(),
                        Duration::from_millis(ms).mul_f64(scale),
                    )
                })
                .collect(),
        }
    }

    /// The same, with `command` expected to take `duration`.
    pub fn with(mut self, command: impl Into<String>, duration: Duration) -> JobPriors {
        self.by_command.insert(command.into(), duration);
        self
    }

    pub fn get(&self, command: &str) -> Option<Duration> {
        self.by_command.get(command).copied()
    }
}

/// The delays between one wait's polls: from the policy alone, or — when jobs of the
/// command have been seen to finish — first at their learned duration, then in short
/// steps (a thirty-second of it, growing by the policy's factor, capped at its max).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Schedule {
    /// The delay before the next poll.
    pub(crate) next: Duration,
    /// The delay after that one.
    then: Duration,
    pub(crate) learned: bool,
}

impl Schedule {
    pub(crate) fn new(policy: &PollPolicy, learned: Option<Duration>) -> Schedule {
        match learned {
            None => Schedule {
                next: policy.first,
                then: policy.next(policy.first),
                learned: false,
            },
            Some(estimate) => Schedule {
                next: estimate.max(policy.first),
                then: (estimate / LEARNED_STEP_DIVISOR)
                    .max(MIN_STEP)
                    .min(policy.max),
                learned: true,
            },
        }
    }

    /// Polling resumed `elapsed` into a wait: at the learned duration from the wait's
    /// start (at once if that has passed) then in short steps, or else by the policy.
    pub(crate) fn resumed(
        policy: &PollPolicy,
        learned: Option<Duration>,
        elapsed: Duration,
    ) -> Schedule {
        match learned {
            None => Schedule::new(policy, None),
            Some(estimate) => {
                let mut schedule = Schedule::new(policy, Some(estimate));
                schedule.next = estimate.saturating_sub(elapsed);
                schedule
            }
        }
    }

    /// The delay before this poll; moves on to the next.
    pub(crate) fn advance(&mut self, policy: &PollPolicy) -> Duration {
        let now = self.next;
        self.next = self.then;
        self.then = policy.next(self.then);
        now
    }
}

/// After a learned first poll, the next comes this fraction of the estimate later.
const LEARNED_STEP_DIVISOR: u32 = 32;
/// No step shorter than this.
const MIN_STEP: Duration = Duration::from_millis(1);
/// A wait that follows another backs off to this many times the policy's cap, so it is
/// never more than that late should its leader be slow for reasons of its own.
pub(crate) const FOLLOWER_MAX_FACTOR: u32 = 8;

/// What one successful wait saw, for learning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observed {
    /// Time from the wait's start to the poll that found the job done.
    pub(crate) done: Duration,
    /// Time to the last poll that found it pending (zero when the first poll found it
    /// done).
    pub(crate) last_pending: Duration,
    /// Whether the first poll came at a learned time.
    pub(crate) learned: bool,
}

/// How long each command's jobs have lately taken (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Timings {
    priors: JobPriors,
    by_command: std::sync::Mutex<HashMap<String, Duration>>,
    /// Per command not learned yet: the wait that polls for the others (its id, and a
    /// channel closed when it ends).
    leaders: std::sync::Mutex<HashMap<String, (u64, tokio::sync::watch::Sender<()>)>>,
    next_leader: std::sync::atomic::AtomicU64,
}

/// A wait's part in a wave of jobs of one command that nothing is learned of yet.
pub(crate) enum Wave {
    /// The command's duration is known: by the schedule.
    Alone,
    /// This wait polls for the others, by the policy, until it is dropped.
    Leading { _until_dropped: Leader },
    /// Another wait polls promptly; this one backs off further until that one ends,
    /// then polls by what it learned.
    Follower(tokio::sync::watch::Receiver<()>),
}

pub(crate) struct Leader {
    timings: Arc<Timings>,
    command: String,
    id: u64,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut leaders = self
            .timings
            .leaders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Dropping the sender closes the channel: the followers wake up.
        if leaders
            .get(&self.command)
            .is_some_and(|(id, _)| *id == self.id)
        {
            leaders.remove(&self.command);
        }
    }
}

impl Timings {
    pub(crate) fn new(priors: JobPriors) -> Timings {
        Timings {
            priors,
            ..Timings::default()
        }
    }

    /// The part a wait on a job of `command` takes: alone when the command's duration
    /// is learned; else the leader of its wave, or a follower of the one there is.
    pub(crate) fn join_wave(self: &Arc<Self>, command: &str) -> Wave {
        if self.estimate(command).is_some() {
            return Wave::Alone;
        }
        let mut leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, sender)) = leaders.get(command) {
            return Wave::Follower(sender.subscribe());
        }
        let id = self
            .next_leader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        leaders.insert(
            command.to_string(),
            (id, tokio::sync::watch::Sender::new(())),
        );
        Wave::Leading {
            _until_dropped: Leader {
                timings: Arc::clone(self),
                command: command.to_string(),
                id,
            },
        }
    }

    /// When a job of `command` is expected to be done: what was learned, else the
    /// prior.
    pub(crate) fn estimate(&self, command: &str) -> Option<Duration> {
        self.learned(command).or_else(|| self.prior(command))
    }

    /// What `command`'s jobs are expected to take before one has finished.
    pub(crate) fn prior(&self, command: &str) -> Option<Duration> {
        self.priors.get(command)
    }

    /// What waits on jobs of `command` have learned (`None` before one finished).
    pub(crate) fn learned(&self, command: &str) -> Option<Duration> {
        self.by_command
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(command)
            .copied()
    }

    pub(crate) fn learn(&self, command: &str, seen: Observed) {
        let mut by_command = self.by_command.lock().unwrap_or_else(|e| e.into_inner());
        let previous = by_command.get(command).copied();
        let next = match previous {
            // The first job of the command, polled first at its prior and found done
            // then: it may have ended well before; look a quarter earlier next time.
            None if seen.learned && seen.last_pending.is_zero() => seen.done - seen.done / 4,
            None => next_estimate(None, seen),
            Some(_) => next_estimate(previous, seen),
        };
        by_command.insert(command.to_string(), next);
    }
}

/// The estimate after a wait that saw `seen`.
fn next_estimate(previous: Option<Duration>, seen: Observed) -> Duration {
    let first_poll_found_it_done = seen.last_pending.is_zero();
    // The job ended between the last pending poll and the one that found it done. After
    // short learned steps the latter is close; after the policy's longer ones, the
    // middle of the interval is the better guess.
    let sample = if seen.learned || first_poll_found_it_done {
        seen.done
    } else {
        seen.last_pending + (seen.done - seen.last_pending) / 2
    };
    match previous {
        None => sample,
        // Done at the first poll: it may well have been done earlier; look a little
        // earlier next time — by half a step, so that the step after a miss then
        // lands past the time that found it done.
        Some(estimate) if seen.learned && first_poll_found_it_done => {
            estimate - estimate / (2 * LEARNED_STEP_DIVISOR)
        }
        // Found done a step or two after a learned first poll: just that much longer.
        Some(estimate) if seen.learned && sample <= estimate + estimate / 8 => sample,
        // Halfway towards a much longer duration, so one slow job does not make the
        // next wait late; straight to a shorter one.
        Some(estimate) if sample > estimate => estimate + (sample - estimate) / 2,
        Some(_) => sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> PollPolicy {
        PollPolicy {
            first: ms(500),
            factor: 1.5,
            max: ms(5_000),
            deadline: Duration::from_secs(3_600),
        }
    }

    fn delays(mut schedule: Schedule, n: usize) -> Vec<Duration> {
        (0..n).map(|_| schedule.advance(&policy())).collect()
    }

    #[test]
    fn an_unknown_command_is_polled_by_the_policy() {
        let s = Schedule::new(&policy(), None);
        assert!(!s.learned);
        let micros: Vec<u128> = delays(s, 8).iter().map(Duration::as_micros).collect();
        assert_eq!(
            micros,
            [
                500_000, 750_000, 1_125_000, 1_687_500, 2_531_250, 3_796_875, 5_000_000, 5_000_000
            ]
        );
    }

    #[test]
    fn a_learned_command_is_polled_at_its_duration_then_in_short_steps() {
        let d = delays(Schedule::new(&policy(), Some(ms(3_200))), 4);
        assert_eq!(d, [ms(3_200), ms(100), ms(150), ms(225)]);
        // Never before the policy's first poll, never a step beyond its max.
        let d = delays(Schedule::new(&policy(), Some(ms(100))), 2);
        assert_eq!(d[0], ms(500));
        let d = delays(
            Schedule::new(&policy(), Some(Duration::from_secs(3_200))),
            2,
        );
        assert_eq!(d, [Duration::from_secs(3_200), ms(5_000)]);
    }

    fn seen(done: u64, last_pending: u64, learned: bool) -> Observed {
        Observed {
            done: ms(done),
            last_pending: ms(last_pending),
            learned,
        }
    }

    #[test]
    fn the_estimate_follows_what_jobs_take() {
        // First sight, after the policy's long steps: the middle of the last interval.
        assert_eq!(next_estimate(None, seen(4_000, 2_000, false)), ms(3_000));
        // Found done at the first poll of a learned wait: look a little earlier.
        assert_eq!(
            next_estimate(Some(ms(3_200)), seen(3_200, 0, true)),
            ms(3_150)
        );
        // A little longer than a learned first poll: that long.
        assert_eq!(
            next_estimate(Some(ms(3_200)), seen(3_300, 3_200, true)),
            ms(3_300)
        );
        // Much longer: halfway towards it.
        assert_eq!(
            next_estimate(Some(ms(3_000)), seen(5_000, 4_900, true)),
            ms(4_000)
        );
        // A shorter one (seen through the policy's steps): straight to it.
        assert_eq!(
            next_estimate(Some(ms(3_000)), seen(1_000, 800, false)),
            ms(900)
        );
    }

    #[tokio::test]
    async fn one_wait_of_a_wave_leads_and_the_others_follow_until_it_ends() {
        let timings = Arc::new(Timings::default());
        let leader = timings.join_wave("stopVirtualMachine");
        assert!(matches!(leader, Wave::Leading { .. }));
        let Wave::Follower(mut first) = timings.join_wave("stopVirtualMachine") else {
            panic!("a second wait follows the first");
        };
        let Wave::Follower(mut second) = timings.join_wave("stopVirtualMachine") else {
            panic!("so does a third");
        };
        // Another command has its own wave.
        assert!(matches!(
            timings.join_wave("startVirtualMachine"),
            Wave::Leading { .. }
        ));
        // The leader learns and ends: its followers wake up, and later waits are alone.
        timings.learn(
            "stopVirtualMachine",
            Observed {
                done: ms(8_000),
                last_pending: ms(7_900),
                learned: false,
            },
        );
        drop(leader);
        assert!(first.changed().await.is_err());
        assert!(second.changed().await.is_err());
        assert!(matches!(
            timings.join_wave("stopVirtualMachine"),
            Wave::Alone
        ));
        // A follower resumes at the learned duration from its own start.
        let resumed = Schedule::resumed(&policy(), Some(ms(7_950)), ms(7_000));
        assert_eq!((resumed.next, resumed.learned), (ms(950), true));
        let late = Schedule::resumed(&policy(), Some(ms(7_950)), ms(9_000));
        assert_eq!(late.next, Duration::ZERO);
        // A leader that ended without learning leaves the next wait to lead.
        let leader = timings.join_wave("revertSnapshot");
        drop(leader);
        assert!(matches!(
            timings.join_wave("revertSnapshot"),
            Wave::Leading { .. }
        ));
    }

    #[test]
    fn a_prior_is_the_first_estimate_until_a_job_ends() {
        let priors = JobPriors::typical(0.5).with("attachVolume", ms(1_000));
        assert_eq!(priors.get("startVirtualMachine"), Some(ms(7_500)));
        assert_eq!(priors.get("listVolumes"), None);
        let timings = Arc::new(Timings::new(priors));
        assert_eq!(timings.estimate("attachVolume"), Some(ms(1_000)));
        assert_eq!(timings.learned("attachVolume"), None);
        // A command with a prior polls alone, never as a wave's follower.
        assert!(matches!(timings.join_wave("attachVolume"), Wave::Alone));
        // Polled first at the prior and found done: the job may have ended well
        // before; a quarter earlier next time.
        timings.learn("attachVolume", seen(1_000, 0, true));
        assert_eq!(timings.learned("attachVolume"), Some(ms(750)));
        // Found pending at the prior, done a few short steps later: that long.
        timings.learn("createSnapshot", seen(6_400, 6_300, true));
        assert_eq!(timings.estimate("createSnapshot"), Some(ms(6_400)));
        // No priors: nothing is assumed.
        assert_eq!(
            Timings::new(JobPriors::none()).estimate("attachVolume"),
            None
        );
    }

    #[test]
    fn steady_jobs_settle_on_few_polls_and_little_lateness() {
        // Jobs that always take 3 s, polled by the learned schedule: count the polls
        // and how late the poll that finds each done comes.
        let policy = policy();
        let duration = ms(3_000);
        let timings = Timings::default();
        let mut polls = Vec::new();
        let mut late = Vec::new();
        for _ in 0..200 {
            let mut schedule = Schedule::new(&policy, timings.estimate("attachVolume"));
            let (mut at, mut last_pending, mut n) = (Duration::ZERO, Duration::ZERO, 0);
            loop {
                at += schedule.advance(&policy);
                n += 1;
                if at >= duration {
                    break;
                }
                last_pending = at;
            }
            timings.learn(
                "attachVolume",
                Observed {
                    done: at,
                    last_pending,
                    learned: schedule.learned,
                },
            );
            polls.push(n);
            late.push(at - duration);
        }
        let settled = &polls[20..];
        assert!(settled.iter().all(|&n| n <= 2), "{settled:?}");
        let first_poll_found_it = settled.iter().filter(|&&n| n == 1).count();
        assert!(first_poll_found_it * 2 >= settled.len(), "{settled:?}");
        let worst = late[20..].iter().max().unwrap();
        assert!(*worst <= duration / 16, "{worst:?}");
    }
}
