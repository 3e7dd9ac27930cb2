//! Freeze warnings: a step, or one CloudStack job of a run, running far past what is
//! usual for it.
//!
//! A frozen management server or hypervisor agent shows as a job that never ends, and
//! ferry waits on it (the job may still finish; killing the wait would not stop it).
//! The operator is told instead, in `run show`, the run's story and the CLI's progress.
//! "Far past" is five times the usual duration and a minute beyond it, so that neither
//! a short job that took a few seconds longer nor a long one a little slower is
//! flagged.
//!
//! What is usual comes from what is at hand, so that a poll of a run that is not slow
//! costs nothing: a step's from its last runs in the store, read only once it has run
//! over a minute; a job's from how long jobs of its command lately took, as this
//! server's CloudStack client learned from the jobs it waited on (in memory: nothing
//! until a job of that command has ended since the server started, and nothing for
//! the volume commands of a volume daemon in another process).

/// How many of a step's recent durations make its usual one.
pub const USUAL_SAMPLE: i64 = 20;

/// How far past its usual duration, at least, a step or job must run to be overdue.
/// Nothing that has run less is: a poll spares itself the look at what is usual.
pub const MARGIN_MS: i64 = 60_000;

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Whether `ran_ms` is far past `usual_ms`: more than five times it and a minute
/// beyond it.
fn far_past(ran_ms: i64, usual_ms: i64) -> bool {
    let usual_ms = usual_ms.max(0);
    ran_ms > usual_ms.saturating_mul(5) && ran_ms - usual_ms > MARGIN_MS
}

/// Whether a step that has run `ran_ms` is far past its `usual` durations (ms, most
/// recent first), with at least three to go by; their median is what is usual. The
/// warning says how long and what is usual.
pub fn step(ran_ms: i64, usual: &[i64]) -> Option<String> {
    if usual.len() < 3 {
        return None;
    }
    let mut sorted = usual.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2].max(0);
    far_past(ran_ms, median).then(|| {
        format!(
            "running for {} — far past its usual {} (median of its last {} runs); CloudStack or a hook may be stuck: look at its jobs and the events",
            seconds(ran_ms),
            seconds(median),
            usual.len()
        )
    })
}

/// Whether a CloudStack job of `command` that has run `ran_ms` is far past `usual`,
/// how long such jobs lately took or, before one ended, usually take (`None`: not
/// known, never overdue).
pub fn job(command: &str, ran_ms: i64, usual: Option<cloudstack::Expected>) -> Option<String> {
    let (usual, whence) = match usual? {
        cloudstack::Expected::Learned(d) => (d, "have lately taken"),
        cloudstack::Expected::Typical(d) => (
            d,
            "usually take (a typical cloud's, times job_duration_scale)",
        ),
    };
    let usual_ms = i64::try_from(usual.as_millis()).unwrap_or(i64::MAX);
    far_past(ran_ms, usual_ms).then(|| {
        format!(
            "running for {} — far past the {} that {command} jobs {whence}; CloudStack may be stuck on it: look at the job in CloudStack",
            seconds(ran_ms),
            seconds(usual_ms),
        )
    })
}

/// [`job`] for a job of `command` that CloudStack has run since `since` (Unix ms) at
/// `now`: `usual` is asked what its command lately took only once it has run over a
/// minute — a poll of a run whose jobs are young looks nothing up.
pub fn job_since(
    command: &str,
    since: i64,
    now: i64,
    usual: impl FnOnce(&str) -> Option<cloudstack::Expected>,
) -> Option<String> {
    let ran = now - since;
    (ran > MARGIN_MS)
        .then(|| job(command, ran, usual(command)))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_step_is_overdue_only_far_past_a_known_usual_duration() {
        let usual = [2_000, 3_000, 2_500, 40_000];
        // The median (3 s) five times over, and a minute beyond it.
        let warning = step(64_000, &usual).expect("overdue");
        assert!(
            warning.contains("64.0 s")
                && warning.contains("usual 3.0 s")
                && warning.contains("last 4 runs"),
            "{warning}"
        );
        assert_eq!(step(62_000, &usual), None, "not a minute past the median");
        assert_eq!(step(14_000, &usual), None, "not five times the median");
        assert_eq!(step(600_000, &usual[..2]), None, "too few runs to know");
        assert!(step(10 * 60_000, &[100_000; 3]).is_some());
        assert_eq!(step(4 * 60_000, &[100_000; 3]), None);
    }

    #[test]
    fn a_job_is_overdue_only_far_past_what_its_command_lately_took() {
        let usual = Some(cloudstack::Expected::Learned(Duration::from_secs(2)));
        let warning = job("attachVolume", 63_000, usual).expect("overdue");
        assert!(
            warning.contains("63.0 s")
                && warning.contains("the 2.0 s that attachVolume jobs have lately taken"),
            "{warning}"
        );
        assert_eq!(
            job("attachVolume", 61_000, usual),
            None,
            "not a minute past"
        );
        let slow = Some(cloudstack::Expected::Learned(Duration::from_secs(100)));
        assert_eq!(
            job("startVirtualMachine", 400_000, slow),
            None,
            "not five times"
        );
        assert!(job("startVirtualMachine", 501_000, slow).is_some());
        assert_eq!(
            job("attachVolume", 3_600_000, None),
            None,
            "nothing to go by"
        );
        // Before a job of the command ended, its prior is what is usual.
        let typical = Some(cloudstack::Expected::Typical(Duration::from_secs(15)));
        let warning = job("startVirtualMachine", 76_000, typical).expect("overdue");
        assert!(
            warning.contains("the 15.0 s that startVirtualMachine jobs usually take"),
            "{warning}"
        );
        assert_eq!(job("startVirtualMachine", 74_000, typical), None);
    }

    #[test]
    fn a_young_job_costs_no_look_at_what_is_usual() {
        let now = 1_000_000_000;
        let never =
            |_: &str| -> Option<cloudstack::Expected> { panic!("looked up for a young job") };
        assert_eq!(job_since("attachVolume", now - 59_000, now, never), None);
        let asked = std::cell::Cell::new(None);
        let warning = job_since("detachVolume", now - 120_000, now, |c| {
            asked.set(Some(c.to_string()));
            Some(cloudstack::Expected::Learned(Duration::from_secs(3)))
        });
        assert_eq!(asked.take().as_deref(), Some("detachVolume"));
        assert!(warning.is_some_and(|w| w.starts_with("running for 120.0 s")));
    }
}
