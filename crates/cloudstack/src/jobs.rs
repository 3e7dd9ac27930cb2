//! Async jobs, split in two on purpose. [`Client::submit`] returns a [`Job`] (the job
//! id, and the new entity's id for create-style commands) as soon as CloudStack
//! accepted the command; [`Client::wait`] then polls `queryAsyncJobResult` — when, is
//! decided in `polling` from what earlier waits learned. A caller that must survive a
//! crash records the job id between the two, and after a restart builds the same
//! [`Job`] with [`Job::resume`] and waits again — it never submits the command a
//! second time.

use std::marker::PhantomData;
use std::time::Duration;

use ids::JobId;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{Client, Kind, count_error};
use crate::error::{Error, ErrorClass};
use crate::polling::{FOLLOWER_MAX_FACTOR, Observed, PollPolicy, Schedule, Wave};
use crate::types::{AsyncJob, JobStatus, Snapshot, VirtualMachine, Volume};

/// What an async job produces when it succeeds: the key of its `jobresult` object.
pub trait JobOutput: DeserializeOwned {
    /// `volume` for `{"volume": {…}}`; empty for `{"success": true}` results.
    const KEY: &'static str;
}

impl JobOutput for Volume {
    const KEY: &'static str = "volume";
}
impl JobOutput for VirtualMachine {
    const KEY: &'static str = "virtualmachine";
}
impl JobOutput for Snapshot {
    const KEY: &'static str = "snapshot";
}

/// The result of a job whose answer is `{"success": true}`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Success {
    pub success: bool,
    pub displaytext: Option<String>,
}
impl JobOutput for Success {
    const KEY: &'static str = "";
}

/// How long a job of a command is expected to take, and whence that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// What the client's waits on jobs of the command have lately seen.
    Learned(Duration),
    /// The command's prior: a typical cloud's duration times `job_duration_scale`.
    Typical(Duration),
}

/// An accepted async job: its id, and for create-style commands the new entity's id,
/// known before the job finishes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Job<T> {
    pub command: String,
    pub job_id: JobId,
    pub id: Option<String>,
    #[serde(skip)]
    _output: PhantomData<fn() -> T>,
}

impl<T> Job<T> {
    /// A job submitted earlier (perhaps by a process that has since died), to wait on.
    pub fn resume(
        command: impl Into<String>,
        job_id: impl Into<JobId>,
        id: Option<String>,
    ) -> Self {
        Job {
            command: command.into(),
            job_id: job_id.into(),
            id,
            _output: PhantomData,
        }
    }
}

impl Client {
    /// How long jobs of `command` have lately taken, as this client (and its clones)
    /// learned from waiting on them; `None` before one finished.
    pub fn learned_job_duration(&self, command: &str) -> Option<Duration> {
        self.timings.learned(command)
    }

    /// How long a job of `command` is expected to take: what this client learned, or
    /// before one finished the command's prior (`None`: neither).
    pub fn expected_job_duration(&self, command: &str) -> Option<Expected> {
        match self.timings.learned(command) {
            Some(d) => Some(Expected::Learned(d)),
            None => self.timings.prior(command).map(Expected::Typical),
        }
    }

    /// Submits an async command; returns once CloudStack has accepted it.
    pub async fn submit<T>(
        &self,
        command: &str,
        params: &[(String, String)],
    ) -> Result<Job<T>, Error> {
        let inner = self.call(command, Kind::Mutation, params).await?;
        let job_id = inner
            .get("jobid")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Decode {
                command: command.to_string(),
                mutation: true,
                detail: format!("no jobid in {inner}"),
            })?
            .to_string();
        let id = inner.get("id").and_then(Value::as_str).map(str::to_string);
        tracing::debug!(command, job_id, id, "job accepted");
        Ok(Job::resume(command, job_id, id))
    }

    /// One `queryAsyncJobResult`. A job CloudStack does not know (431) is
    /// [`Error::JobUnknown`], with `queryAsyncJobResult` as its command.
    pub async fn query_async_job_result(&self, job_id: &JobId) -> Result<AsyncJob, Error> {
        let inner = self
            .call(
                "queryAsyncJobResult",
                Kind::Read,
                &[("jobid".into(), job_id.to_string())],
            )
            .await
            .map_err(|e| match e {
                Error::Api {
                    command,
                    errorcode: 431,
                    errortext,
                    ..
                } => Error::JobUnknown {
                    command,
                    job_id: job_id.clone(),
                    errortext,
                },
                other => other,
            })?;
        serde_json::from_value(inner.clone()).map_err(|e| Error::Decode {
            command: "queryAsyncJobResult".into(),
            mutation: false,
            detail: format!("{e}: {inner}"),
        })
    }

    /// Waits for `job` under the configured [`PollPolicy`].
    pub async fn wait<T: JobOutput>(&self, job: &Job<T>) -> Result<T, Error> {
        self.wait_with(job, self.config().poll).await
    }

    /// Waits for `job`: a prompt first poll, then capped backoff, until the deadline.
    /// A poll that fails transiently is retried within the deadline; when the deadline
    /// passes the job's outcome is unknown ([`Error::JobTimeout`]), not failed.
    ///
    /// However the wait ends, its duration and number of polls are recorded; a job
    /// that ended failed is also counted as an error of the job's command (a poll that
    /// failed was already counted as an error of `queryAsyncJobResult`).
    pub async fn wait_with<T: JobOutput>(
        &self,
        job: &Job<T>,
        poll: PollPolicy,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let mut polls: u32 = 0;
        let result = self.poll_job(job, poll, started, &mut polls).await;
        metrics::histogram!("ferry_cloudstack_job_wait_seconds", "command" => job.command.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("ferry_cloudstack_job_polls", "command" => job.command.clone())
            .record(f64::from(polls));
        if let Err(e @ Error::JobFailed { .. }) = &result {
            count_error(&job.command, e);
        }
        result
    }

    /// The polling loop of [`Client::wait_with`], counting its polls in `polls`.
    async fn poll_job<T: JobOutput>(
        &self,
        job: &Job<T>,
        poll: PollPolicy,
        started: Instant,
        polls: &mut u32,
    ) -> Result<T, Error> {
        let deadline = started + poll.deadline;
        // Jobs of a command not learned yet, waited on together (a wave: every VM of a
        // drill stopped at once), are alike: one wait polls by the policy; the others
        // back off further until it has learned, then poll by that.
        let wave = self.timings.join_wave(&job.command);
        let (mut policy, mut follower) = match wave {
            Wave::Follower(ref leader) => (
                PollPolicy {
                    max: poll.max * FOLLOWER_MAX_FACTOR,
                    ..poll
                },
                Some(leader.clone()),
            ),
            Wave::Alone | Wave::Leading { .. } => (poll, None),
        };
        let mut schedule = Schedule::new(&policy, self.timings.estimate(&job.command));
        let mut last_pending = Duration::ZERO;
        // Since when, and with what error, the polls have found CloudStack unreachable:
        // past the grace (or the deadline) the wait ends with that error, and the
        // caller waits the outage out where it shows.
        let mut unreachable: Option<(Instant, Error)> = None;
        loop {
            let now = Instant::now();
            let outage_over_grace = unreachable
                .as_ref()
                .is_some_and(|(since, _)| since.elapsed() >= self.config().unreachable_grace);
            if now >= deadline || outage_over_grace {
                if let Some((_, e)) = unreachable {
                    return Err(Error::PollRefused {
                        command: job.command.clone(),
                        job_id: job.job_id.clone(),
                        source: Box::new(e),
                    });
                }
                return Err(Error::JobTimeout {
                    command: job.command.clone(),
                    job_id: job.job_id.clone(),
                    waited: started.elapsed(),
                });
            }
            let delay = schedule.advance(&policy).min(deadline - now);
            match follower.as_mut() {
                None => tokio::time::sleep(delay).await,
                Some(leader) => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = leader.changed() => {
                            // The leading wait ended: poll by what it learned, or else
                            // by the policy like any other wait.
                            follower = None;
                            policy = poll;
                            schedule = Schedule::resumed(
                                &policy,
                                self.timings.estimate(&job.command),
                                started.elapsed(),
                            );
                            continue;
                        }
                    }
                }
            }
            *polls += 1;
            let polled_at = started.elapsed();
            let state = match self.query_async_job_result(&job.job_id).await {
                Ok(state) => {
                    unreachable = None;
                    state
                }
                Err(e) if e.class() == ErrorClass::Transient => {
                    tracing::debug!(job_id = %job.job_id, error = %e, "poll failed transiently");
                    unreachable = match unreachable {
                        _ if e.unreachable().is_none() => None,
                        Some((since, _)) => Some((since, e)),
                        None => Some((Instant::now(), e)),
                    };
                    continue;
                }
                // CloudStack has no such job any more: what it did is not known.
                Err(Error::JobUnknown { errortext, .. }) => {
                    return Err(Error::JobUnknown {
                        command: job.command.clone(),
                        job_id: job.job_id.clone(),
                        errortext,
                    });
                }
                // The job's outcome is not known: it may still run and succeed.
                Err(e) => {
                    return Err(Error::PollRefused {
                        command: job.command.clone(),
                        job_id: job.job_id.clone(),
                        source: Box::new(e),
                    });
                }
            };
            match state.jobstatus {
                JobStatus::Pending => {
                    last_pending = polled_at;
                    continue;
                }
                JobStatus::Succeeded => {
                    self.timings.learn(
                        &job.command,
                        Observed {
                            done: polled_at,
                            last_pending,
                            learned: schedule.learned,
                        },
                    );
                    return self.job_output(job, state);
                }
                JobStatus::Failed | JobStatus::Cancelled | JobStatus::Other(_) => {
                    let result = state.jobresult.unwrap_or(Value::Null);
                    let errorcode = result
                        .get("errorcode")
                        .and_then(Value::as_u64)
                        .or(state.jobresultcode.map(|c| c as u64))
                        .unwrap_or(530) as u16;
                    let errortext = match result.get("errortext").and_then(Value::as_str) {
                        Some(text) => text.to_string(),
                        None if state.jobstatus == JobStatus::Cancelled => {
                            "job cancelled".to_string()
                        }
                        None => result.to_string(),
                    };
                    return Err(Error::JobFailed {
                        command: job.command.clone(),
                        job_id: job.job_id.clone(),
                        errorcode,
                        errortext,
                    });
                }
            }
        }
    }

    fn job_output<T: JobOutput>(&self, job: &Job<T>, state: AsyncJob) -> Result<T, Error> {
        let decode = |detail: String| Error::Decode {
            command: job.command.clone(),
            mutation: true,
            detail,
        };
        let result = state
            .jobresult
            .ok_or_else(|| decode(format!("job {} succeeded without a jobresult", job.job_id)))?;
        let object = if T::KEY.is_empty() {
            result
        } else {
            result.get(T::KEY).cloned().ok_or_else(|| {
                decode(format!(
                    "job {} result has no `{}`: {result}",
                    job.job_id,
                    T::KEY
                ))
            })?
        };
        serde_json::from_value(object)
            .map_err(|e| decode(format!("job {} result: {e}", job.job_id)))
    }
}
