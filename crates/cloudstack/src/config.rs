//! How to reach CloudStack and how patiently to wait for it: the endpoint and keys,
//! request and signature lifetimes, how often a read is tried, and the [`PollPolicy`]
//! for async jobs.

use std::time::Duration;

use secrecy::SecretString;

use crate::polling::PollPolicy;

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
