//! The HTTP client: signs every request, sends reads as GET and mutations as POST form
//! bodies, unwraps CloudStack's `<command>response` envelope and turns failures into
//! classified [`Error`]s. A read that fails transiently is tried again; a mutation is
//! never re-sent.
//!
//! Async commands are submitted and waited on in `jobs`, and when to poll them is
//! learned in `polling`; this file is the transport both use.
//!
//! Every request and every wait is measured through the `metrics` facade (whatever
//! recorder the process installed receives them):
//!
//! - `ferry_cloudstack_calls_total{command}`: HTTP requests sent, polls included.
//! - `ferry_cloudstack_errors_total{command, class}`: requests that failed, and async
//!   jobs that ended failed, by [`ErrorClass`](crate::ErrorClass).
//! - `ferry_cloudstack_job_wait_seconds{command}`: how long each wait for a job took,
//!   whether it ended in success, failure or timeout (recorded in `jobs`).
//! - `ferry_cloudstack_job_polls{command}`: how many `queryAsyncJobResult` polls each
//!   wait made (recorded in `jobs`).
//! - `ferry_cloudstack_throttled_total{command}`: calls CloudStack refused for the
//!   account's API rate limit (each was sent again after the wait it named).
//!
//! # The API rate limit
//!
//! CloudStack can limit the API calls of an account (`api.throttling.enabled`, at most
//! `api.throttling.max` calls — 25 by default — per `api.throttling.interval` seconds,
//! 1 by default; every command counts, `queryAsyncJobResult` too, and root admins are
//! exempt). Over the limit it refuses the call before looking at the command: HTTP 429,
//! errorcode 429, cserrorcode 9999, "The given user has reached his/her account api
//! limit, please retry after [N] ms." (`ApiRateLimitServiceImpl`, `ApiServer`). So a
//! throttled call did nothing, a mutation too, and is sent again after those N ms: a
//! throttle is back-pressure, never a failure. To be throttled rarely, the client
//! spreads its own calls under [`crate::RateLimit`] (one limiter shared by every clone
//! of a [`Client`], so by everything in the process that calls CloudStack).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, ErrorClass};
use crate::polling::Timings;
use crate::signing::{java_url_encode, sign};

/// Whether a command changes anything (sent as POST, never re-sent) or only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Mutation,
}

/// A CloudStack API client. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    config: Arc<Config>,
    http: reqwest::Client,
    /// How long each command's jobs have lately taken, shared by the clones.
    pub(crate) timings: Arc<Timings>,
    /// The process's own pace ([`Config::rate_limit`]), shared by the clones.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

/// How often one call is sent again when CloudStack keeps throttling it; past that its
/// 429 is returned (a transient error, which callers wait out as an outage).
const THROTTLED_RESENDS: u32 = 100;

/// The wait a throttled call's error text names ("please retry after [N] ms"), else
/// `fallback`; at most a minute.
fn retry_after(errortext: &str, fallback: Duration) -> Duration {
    let named = errortext
        .split_once("retry after [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(ms, _)| ms.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    named.unwrap_or(fallback).min(Duration::from_secs(60))
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
        // Evenly spread: one call every interval / calls, no burst, so that no window
        // of CloudStack's (which starts at any call) sees more than `calls`.
        let limiter = config.rate_limit.and_then(|limit| {
            let calls = NonZeroU32::new(limit.calls)?;
            let period = (limit.interval / calls.get()).max(Duration::from_nanos(1));
            Quota::with_period(period).map(|q| {
                Arc::new(governor::RateLimiter::direct(
                    q.allow_burst(NonZeroU32::MIN),
                ))
            })
        });
        let timings = Arc::new(Timings::new(config.job_priors.clone()));
        Ok(Client {
            config: Arc::new(config),
            http,
            timings,
            limiter,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
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
                        && e.class() == ErrorClass::Transient
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

    /// Sends one request at the process's pace, counting it and, if it fails, its
    /// error; a call CloudStack throttles is sent again after the wait it names.
    async fn call_once(
        &self,
        command: &str,
        kind: Kind,
        params: &[(String, String)],
    ) -> Result<Value, Error> {
        let mut resends = 0;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
            metrics::counter!("ferry_cloudstack_calls_total", "command" => command.to_string())
                .increment(1);
            tracing::trace!(command, ?params, "calling CloudStack");
            let result = self.send(command, kind, params).await;
            match &result {
                Err(Error::Api {
                    errorcode: 429,
                    errortext,
                    ..
                }) if resends < THROTTLED_RESENDS => {
                    metrics::counter!("ferry_cloudstack_throttled_total", "command" => command.to_string())
                        .increment(1);
                    let wait = retry_after(errortext, Duration::from_millis(100));
                    tracing::debug!(
                        command,
                        wait_ms = wait.as_millis() as u64,
                        "throttled by CloudStack; sending again"
                    );
                    tokio::time::sleep(wait).await;
                    resends += 1;
                }
                Err(e) => {
                    count_error(command, e);
                    return result;
                }
                Ok(_) => return result,
            }
        }
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
        // reqwest's error carries the request's URL, and a read's URL carries the API key
        // and the signature: no error may hold it.
        let transport = |source: reqwest::Error| {
            let source = source.without_url();
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
                        errortext: scrub(
                            inner
                                .get("errortext")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        ),
                    });
                }
            }
            return Err(Error::Http {
                command: command.to_string(),
                mutation,
                status,
                body: excerpt(&body),
            });
        }
        let parsed = parsed.ok_or_else(|| decode(format!("not JSON: {}", excerpt(&body))))?;
        envelope(&parsed)
            .cloned()
            .ok_or_else(|| decode(scrub(&format!("no <command>response object in {parsed}"))))
    }
}

/// Counts a failure of `command` in `ferry_cloudstack_errors_total`, by its class.
pub(crate) fn count_error(command: &str, error: &Error) {
    metrics::counter!(
        "ferry_cloudstack_errors_total",
        "command" => command.to_string(),
        "class" => error.class().as_str(),
    )
    .increment(1);
}

/// The first 200 characters of a response body, for an error, with the value of any
/// credential parameter it echoes (a proxy's error page may quote the request line)
/// replaced by `[redacted]`.
fn excerpt(body: &[u8]) -> String {
    scrub(&String::from_utf8_lossy(body))
        .chars()
        .take(200)
        .collect()
}

/// `text` with every word that carries a credential parameter — `apikey=`,
/// `signature=` or `secretkey=`, any case: a quoted URL or query string — replaced by
/// `[redacted query]` as a whole, so that neither the keys, the signature nor the rest
/// of the signed query is kept.
pub(crate) fn scrub(text: &str) -> String {
    const NAMES: [&str; 3] = ["apikey=", "signature=", "secretkey="];
    let delimiter = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>');
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let lower = word.to_ascii_lowercase();
        if NAMES.iter().any(|name| lower.contains(name)) {
            out.push_str("[redacted query]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if delimiter(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
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

    #[test]
    fn the_wait_a_throttled_call_names_is_read_from_cloudstacks_text() {
        let text =
            "The given user has reached his/her account api limit, please retry after [734] ms.";
        assert_eq!(
            retry_after(text, Duration::from_millis(5)),
            Duration::from_millis(734)
        );
        assert_eq!(
            retry_after("throttled", Duration::from_millis(5)),
            Duration::from_millis(5)
        );
        assert_eq!(
            retry_after("please retry after [99999999] ms.", Duration::ZERO),
            Duration::from_secs(60)
        );
    }
}
