//! How to reach CloudStack and how patiently to wait for it: the endpoint and keys,
//! request and signature lifetimes, how often a read is tried, and the [`PollPolicy`]
//! for async jobs.

use std::time::Duration;

use secrecy::SecretString;

use crate::polling::{JobPriors, PollPolicy};

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
    /// When to poll first a job of a command no job of which has finished yet.
    pub job_priors: JobPriors,
    /// Attempts for a read that fails transiently (a mutation is never re-sent).
    pub read_attempts: u32,
    /// How long a job's polls may find CloudStack unreachable before the wait gives
    /// the job up as of unknown outcome, for the caller to wait the outage out where
    /// it shows (a run says what it waits for) and to look again afterwards.
    pub unreachable_grace: Duration,
    /// The most calls this process sends in `interval`, polls included, spread evenly
    /// (`None`: no limit). Set it to the cloud's `api.throttling.max` calls per
    /// `api.throttling.interval` for the account, divided among the processes that
    /// use the account; a call CloudStack throttles anyway is sent again after the
    /// wait it names (see [`crate::client`]).
    pub rate_limit: Option<RateLimit>,
}

/// A rate of API calls: `calls` per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub calls: u32,
    pub interval: Duration,
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
            job_priors: JobPriors::none(),
            read_attempts: 4,
            unreachable_grace: Duration::from_secs(5),
            rate_limit: None,
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
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}
