//! The HTTP client: signs every request, sends reads as GET and mutations as POST form
//! bodies, unwraps CloudStack's `<command>response` envelope and turns failures into
//! classified [`Error`]s.
//!
//! Async commands are split in two on purpose. [`Client::submit`] returns a [`Job`]
//! (the job id, and the new entity's id for create-style commands) as soon as
//! CloudStack accepted the command; [`Client::wait`] then polls `queryAsyncJobResult`.
//! A caller that must survive a crash records the job id between the two, and after a
//! restart builds the same [`Job`] with [`Job::resume`] and waits again — it never
//! submits the command a second time.
//!
//! Every request and every wait is measured through the `metrics` facade (whatever
//! recorder the process installed receives them):
//!
//! - `ferry_cloudstack_calls_total{command}`: HTTP requests sent, polls included.
//! - `ferry_cloudstack_errors_total{command, class}`: requests that failed, and async
//!   jobs that ended failed, by [`ErrorClass`](crate::ErrorClass).
//! - `ferry_cloudstack_job_wait_seconds{command}`: how long each wait for a job took,
//!   whether it ended in success, failure or timeout.
//! - `ferry_cloudstack_job_polls{command}`: how many `queryAsyncJobResult` polls each
//!   wait made.
//!
//! # When to poll
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
//! learned. Nothing here knows any command's duration in advance.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::Error;
use crate::signing::{java_url_encode, sign};
use crate::types::{AsyncJob, JobStatus};

/// How to reach CloudStack and how patiently to wait for it.
#[derive(Clone)]
pub struct Config {
    /// The full API URL, e.g. `https://cloud.example.com/client/api`.
    pub endpoint: String,
    pub api_key: String,
    pub secret_key: SecretString,
    /// Time allowed for one HTTP request, including reading the response.
    pub request_timeout: Duration,
    /// How long a signed request stays valid (`expires`, signature version 3).
    pub signature_ttl: Duration,
    pub poll: PollPolicy,
    /// Attempts for a read that fails transiently (a mutation is never re-sent).
    pub read_attempts: u32,
}

impl Config {
    /// A configuration with ferry's defaults.
    pub fn new(
        endpoint: impl Into<String>,
        api_key: impl Into<String>,
        secret_key: SecretString,
    ) -> Self {
        Config {
            endpoint: endpoint.into(),
            api_key: api_key.into(),
            secret_key,
            request_timeout: Duration::from_secs(60),
            signature_ttl: Duration::from_secs(600),
            poll: PollPolicy::default(),
            read_attempts: 4,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key)
            .field("secret_key", &"[redacted]")
            .field("request_timeout", &self.request_timeout)
            .field("poll", &self.poll)
            .finish()
    }
}

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

/// The delays between one wait's polls: from the policy alone, or — when jobs of the
/// command have been seen to finish — first at their learned duration, then in short
/// steps (a thirty-second of it, growing by the policy's factor, capped at its max).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Schedule {
    /// The delay before the next poll.
    next: Duration,
    /// The delay after that one.
    then: Duration,
    learned: bool,
}

impl Schedule {
    fn new(policy: &PollPolicy, learned: Option<Duration>) -> Schedule {
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
    fn resumed(policy: &PollPolicy, learned: Option<Duration>, elapsed: Duration) -> Schedule {
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
    fn advance(&mut self, policy: &PollPolicy) -> Duration {
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
const FOLLOWER_MAX_FACTOR: u32 = 8;

/// What one successful wait saw, for learning.
#[derive(Debug, Clone, Copy)]
struct Observed {
    /// Time from the wait's start to the poll that found the job done.
    done: Duration,
    /// Time to the last poll that found it pending (zero when the first poll found it
    /// done).
    last_pending: Duration,
    /// Whether the first poll came at a learned time.
    learned: bool,
}

/// How long each command's jobs have lately taken (see the module's documentation).
#[derive(Debug, Default)]
struct Timings {
    by_command: std::sync::Mutex<HashMap<String, Duration>>,
    /// Per command not learned yet: the wait that polls for the others (its id, and a
    /// channel closed when it ends).
    leaders: std::sync::Mutex<HashMap<String, (u64, tokio::sync::watch::Sender<()>)>>,
    next_leader: std::sync::atomic::AtomicU64,
}

/// A wait's part in a wave of jobs of one command that nothing is learned of yet.
enum Wave {
    /// The command's duration is known: by the schedule.
    Alone,
    /// This wait polls for the others, by the policy, until it is dropped.
    Leading { _until_dropped: Leader },
    /// Another wait polls promptly; this one backs off further until that one ends,
    /// then polls by what it learned.
    Follower(tokio::sync::watch::Receiver<()>),
}

struct Leader {
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
    /// The part a wait on a job of `command` takes: alone when the command's duration
    /// is learned; else the leader of its wave, or a follower of the one there is.
    fn join_wave(self: &Arc<Self>, command: &str) -> Wave {
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

    fn estimate(&self, command: &str) -> Option<Duration> {
        self.by_command
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(command)
            .copied()
    }

    fn learn(&self, command: &str, seen: Observed) {
        let mut by_command = self.by_command.lock().unwrap_or_else(|e| e.into_inner());
        let previous = by_command.get(command).copied();
        by_command.insert(command.to_string(), next_estimate(previous, seen));
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

/// Whether a command changes anything (sent as POST, never re-sent) or only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Mutation,
}

/// What an async job produces when it succeeds: the key of its `jobresult` object.
pub trait JobOutput: DeserializeOwned {
    /// `volume` for `{"volume": {…}}`; empty for `{"success": true}` results.
    const KEY: &'static str;
}

impl JobOutput for crate::types::Volume {
    const KEY: &'static str = "volume";
}
impl JobOutput for crate::types::VirtualMachine {
    const KEY: &'static str = "virtualmachine";
}
impl JobOutput for crate::types::Snapshot {
    const KEY: &'static str = "snapshot";
}

/// The result of a job whose answer is `{"success": true}`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Success {
    pub success: bool,
    #[serde(default)]
    pub displaytext: Option<String>,
}
impl JobOutput for Success {
    const KEY: &'static str = "";
}

/// An accepted async job: its id, and for create-style commands the new entity's id,
/// known before the job finishes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Job<T> {
    pub command: String,
    pub job_id: String,
    pub id: Option<String>,
    #[serde(skip)]
    _output: PhantomData<fn() -> T>,
}

impl<T> Job<T> {
    /// A job submitted earlier (perhaps by a process that has since died), to wait on.
    pub fn resume(
        command: impl Into<String>,
        job_id: impl Into<String>,
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

/// A CloudStack API client. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    config: Arc<Config>,
    http: reqwest::Client,
    timings: Arc<Timings>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish()
    }
}

impl Client {
    pub fn new(config: Config) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Client {
            config: Arc::new(config),
            http,
            timings: Arc::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How long jobs of `command` have lately taken, as this client (and its clones)
    /// learned from waiting on them; `None` before one finished.
    pub fn learned_job_duration(&self, command: &str) -> Option<Duration> {
        self.timings.estimate(command)
    }

    /// The signed parameter list for `command`.
    fn signed_params(&self, command: &str, params: &[(String, String)]) -> Vec<(String, String)> {
        let expires = chrono::Utc::now()
            + chrono::Duration::from_std(self.config.signature_ttl)
                .unwrap_or(chrono::Duration::minutes(10));
        let mut all: Vec<(String, String)> = Vec::with_capacity(params.len() + 6);
        all.push(("command".into(), command.into()));
        all.extend(params.iter().cloned());
        all.push(("apiKey".into(), self.config.api_key.clone()));
        all.push(("response".into(), "json".into()));
        all.push(("signatureversion".into(), "3".into()));
        all.push((
            "expires".into(),
            expires.format("%Y-%m-%dT%H:%M:%S%z").to_string(),
        ));
        let signature = sign(&all, self.config.secret_key.expose_secret());
        all.push(("signature".into(), signature));
        all
    }

    /// Sends one request and returns the content of its `<command>response` object.
    /// A read failing transiently is tried again, up to `read_attempts` times.
    pub async fn call(
        &self,
        command: &str,
        kind: Kind,
        params: &[(String, String)],
    ) -> Result<Value, Error> {
        let mut attempt = 1;
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = self.call_once(command, kind, params).await;
            match result {
                Err(e)
                    if kind == Kind::Read
                        && e.class() == crate::error::ErrorClass::Transient
                        && attempt < self.config.read_attempts =>
                {
                    tracing::debug!(command, attempt, error = %e, "retrying a read after a transient error");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends one request, counting it and, if it fails, its error.
    async fn call_once(
        &self,
        command: &str,
        kind: Kind,
        params: &[(String, String)],
    ) -> Result<Value, Error> {
        metrics::counter!("ferry_cloudstack_calls_total", "command" => command.to_string())
            .increment(1);
        let result = self.send(command, kind, params).await;
        if let Err(e) = &result {
            count_error(command, e);
        }
        result
    }

    /// Sends one request and returns the content of its `<command>response` object.
    async fn send(
        &self,
        command: &str,
        kind: Kind,
        params: &[(String, String)],
    ) -> Result<Value, Error> {
        let mutation = kind == Kind::Mutation;
        let signed = self.signed_params(command, params);
        let encoded = signed
            .iter()
            .map(|(k, v)| format!("{}={}", java_url_encode(k), java_url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = match kind {
            Kind::Read => self
                .http
                .get(format!("{}?{}", self.config.endpoint, encoded)),
            Kind::Mutation => self
                .http
                .post(&self.config.endpoint)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(encoded),
        };
        let transport = |source: reqwest::Error| {
            if source.is_connect() {
                Error::Connect {
                    command: command.to_string(),
                    source,
                }
            } else {
                Error::NoResponse {
                    command: command.to_string(),
                    mutation,
                    source,
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        let decode = |detail: String| Error::Decode {
            command: command.to_string(),
            mutation,
            detail,
        };
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if status != 200 {
            if let Some(inner) = parsed.as_ref().and_then(envelope)
                && let Some(code) = inner.get("errorcode").and_then(Value::as_u64)
            {
                {
                    return Err(Error::Api {
                        command: command.to_string(),
                        errorcode: code as u16,
                        cserrorcode: inner
                            .get("cserrorcode")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                        errortext: inner
                            .get("errortext")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
            }
            return Err(Error::Http {
                command: command.to_string(),
                mutation,
                status,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        let parsed = parsed.ok_or_else(|| {
            decode(format!(
                "not JSON: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        })?;
        envelope(&parsed)
            .cloned()
            .ok_or_else(|| decode(format!("no <command>response object in {parsed}")))
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

    /// One `queryAsyncJobResult`.
    pub async fn query_async_job_result(&self, job_id: &str) -> Result<AsyncJob, Error> {
        let inner = self
            .call(
                "queryAsyncJobResult",
                Kind::Read,
                &[("jobid".into(), job_id.into())],
            )
            .await?;
        serde_json::from_value(inner.clone()).map_err(|e| Error::Decode {
            command: "queryAsyncJobResult".into(),
            mutation: false,
            detail: format!("{e}: {inner}"),
        })
    }

    /// Waits for `job` under the configured [`PollPolicy`].
    pub async fn wait<T: JobOutput>(&self, job: &Job<T>) -> Result<T, Error> {
        self.wait_with(job, self.config.poll).await
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
        loop {
            let now = Instant::now();
            if now >= deadline {
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
                Ok(state) => state,
                Err(e) if e.class() == crate::error::ErrorClass::Transient => {
                    tracing::debug!(job_id = %job.job_id, error = %e, "poll failed transiently");
                    continue;
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

/// Counts a failure of `command` in `ferry_cloudstack_errors_total`, by its class.
fn count_error(command: &str, error: &Error) {
    metrics::counter!(
        "ferry_cloudstack_errors_total",
        "command" => command.to_string(),
        "class" => error.class().as_str(),
    )
    .increment(1);
}

/// The single `<command>response` (or `errorresponse`) object of a response.
fn envelope(value: &Value) -> Option<&Value> {
    let object = value.as_object()?;
    let mut values = object
        .iter()
        .filter(|(key, _)| key.ends_with("response"))
        .map(|(_, v)| v);
    let first = values.next()?;
    values.next().is_none().then_some(first)
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
