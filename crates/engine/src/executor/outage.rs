//! Waiting out an outage: a step (action or undo) that finds CloudStack or the volume
//! daemon not answering ([`StepError::Unreachable`]) pauses with capped backoff, its
//! attempts not counted, for up to the tolerance; the run records what it waits for
//! and since when, events tell the wait's start and end, and `ferry_runs_waiting`
//! counts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use store::{Run, now_ms};

use tracing::Instrument;

use super::{Engine, Outcome, Stop, observe_step};
use crate::step::StepError;

impl Engine {
    /// One attempt of a step's action or undo (`phase`): run under its span, its
    /// duration observed, and an outage it met waited out — `None` then, for another
    /// attempt that does not count. Only an action can be cancelled while it waits.
    pub(super) async fn attempt<T>(
        &self,
        (run, generation, step): (&Run, i64, &str),
        (phase, attempt): (&'static str, i64),
        outage: &mut Option<Outage>,
        lost: &AtomicBool,
        work: impl std::future::Future<Output = Result<T, StepError>>,
    ) -> Result<Option<Result<T, StepError>>, Stop> {
        let started = Instant::now();
        let result = work
            .instrument(tracing::info_span!("step", step, phase, attempt))
            .await;
        observe_step(run, step, phase, result.is_ok(), started);
        self.settle(
            run,
            generation,
            step,
            outage,
            result,
            lost,
            phase == "action",
        )
        .await
    }

    /// What an attempt of an action or undo came to, outages accounted for: `None`
    /// when it met an outage and waited a while ([`Self::wait_out`]) — try again, not
    /// counting the attempt; else its result, an outage past the tolerance as a
    /// definitive failure. Any result but an outage ends the wait, if there was one.
    #[allow(clippy::too_many_arguments)]
    async fn settle<T>(
        &self,
        run: &Run,
        generation: i64,
        step: &str,
        outage: &mut Option<Outage>,
        result: Result<T, StepError>,
        lost: &AtomicBool,
        cancellable: bool,
    ) -> Result<Option<Result<T, StepError>>, Stop> {
        match result {
            Err(StepError::Unreachable { of, reason, error }) => Ok(self
                .wait_out(
                    run,
                    generation,
                    step,
                    outage,
                    (&of, &reason, &error),
                    lost,
                    cancellable,
                )
                .await?
                .map(|spent| Err(StepError::Definitive(spent)))),
            other => {
                self.end_wait(run, generation, step, outage, true).await?;
                Ok(Some(other))
            }
        }
    }

    /// One more pause in an outage that a step (action or undo) met: the first one
    /// records on the run what it waits for and since when; each one checks that the
    /// run is still this worker's. `Some(error)` when the tolerance is spent (the wait
    /// is then over) or, for an action (`cancellable`), an operator cancelled the run
    /// while it waited; an undo goes on waiting, since unwinding is what a cancel asks.
    #[allow(clippy::too_many_arguments)]
    async fn wait_out(
        &self,
        run: &Run,
        generation: i64,
        step: &str,
        outage: &mut Option<Outage>,
        (of, reason, error): (&str, &str, &str),
        lost: &AtomicBool,
        cancellable: bool,
    ) -> Result<Option<String>, Stop> {
        if outage.is_none() {
            let waiting = format!("{of}: {reason}");
            self.store
                .set_run_waiting(&run.id, generation, Some((now_ms(), &waiting)))
                .await?;
            self.event(
                &run.id,
                "warn",
                Some(step),
                &format!(
                    "waiting for {of} ({reason}); ferry keeps trying for up to {}",
                    words(self.config.outage_tolerance)
                ),
            )
            .await;
            *outage = Some(Outage::begin(of));
        }
        let Some(current) = outage.as_mut() else {
            unreachable!("begun above")
        };
        let waited = current.since.elapsed();
        if waited >= self.config.outage_tolerance {
            let of = current.of.clone();
            self.end_wait(run, generation, step, outage, false).await?;
            return Ok(Some(format!(
                "{of} did not answer for {} (the outage tolerance): {error}",
                words(waited)
            )));
        }
        current.pauses += 1;
        let pause = self
            .backoff(current.pauses)
            .min(self.config.outage_tolerance - waited);
        tokio::time::sleep(pause).await;
        if lost.load(Ordering::SeqCst) {
            return Err(Stop::Outcome(Outcome::Fenced));
        }
        if cancellable && self.load(&run.id).await?.cancel_requested {
            self.end_wait(run, generation, step, outage, false).await?;
            return Ok(Some(format!(
                "cancelled by an operator while waiting for {of}: {error}"
            )));
        }
        Ok(None)
    }

    /// Ends an outage wait, if there was one: clears it on the run and, when the party
    /// answered again (`answered`), says after how long.
    async fn end_wait(
        &self,
        run: &Run,
        generation: i64,
        step: &str,
        outage: &mut Option<Outage>,
        answered: bool,
    ) -> Result<(), Stop> {
        let Some(ended) = outage.take() else {
            return Ok(());
        };
        self.store
            .set_run_waiting(&run.id, generation, None)
            .await?;
        if answered {
            self.event(
                &run.id,
                "info",
                Some(step),
                &format!(
                    "{} answers again after {}; carrying on",
                    ended.of,
                    words(ended.since.elapsed())
                ),
            )
            .await;
        }
        Ok(())
    }
}

/// An outage a step is waiting out. While it lasts, `ferry_runs_waiting{for}` counts
/// it (the guard's drop ends the count, however the wait ends).
pub(super) struct Outage {
    of: String,
    since: Instant,
    pauses: i64,
}

impl Outage {
    fn begin(of: &str) -> Outage {
        metrics::gauge!("ferry_runs_waiting", "for" => of.to_string()).increment(1.0);
        Outage {
            of: of.to_string(),
            since: Instant::now(),
            pauses: 0,
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        metrics::gauge!("ferry_runs_waiting", "for" => self.of.clone()).decrement(1.0);
    }
}

/// A duration in words an operator reads at a glance: `850 ms`, `42 s`, `3 min 5 s`.
fn words(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs < 60 {
        format!("{secs} s")
    } else if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{} min {} s", secs / 60, secs % 60)
    }
}
