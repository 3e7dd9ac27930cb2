//! ferry's one configuration file (TOML), its environment overrides and its secrets.
//!
//! The file says where everything is; secrets are never in it and never on a command
//! line. The CloudStack secret key and the API's bearer token come from the
//! environment (`FERRY_CLOUDSTACK_SECRET`, `FERRY_TOKEN`) or else from the files the
//! config names (`cloudstack.secret_key_file`, `server.token_file`). A secret is held
//! as a [`SecretString`] from the moment it is read, so it cannot reach a log line by
//! `Debug`.
//!
//! Environment overrides, applied after the file is read: `FERRY_LISTEN`,
//! `FERRY_DATABASE_URL`, `FERRY_CLOUDSTACK_ENDPOINT`, `FERRY_CLOUDSTACK_API_KEY`.
//!
//! Where a config is made by a program rather than an operator (`ferry demo`, `ferry
//! bench`, the tests' servers), [`Builder`] sets the same typed fields and, for a
//! `ferry serve` child, writes them out with serde: there is no second spelling of the
//! file to fall out of step with this one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

mod agent_url;
mod console;
mod worker_name;
use agent_url::agent_url_problem;
pub use console::ConsoleSection;
use worker_name::worker_name_problem;

/// The configuration file, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub database: DatabaseSection,
    pub cloudstack: CloudStackSection,
    /// What target VMs are made from.
    pub target: TargetSection,
    /// The appliances whose replica volumes ferry fails over. The in-process volume
    /// daemon acts for each.
    #[serde(default)]
    pub appliances: Vec<ApplianceSection>,
    #[serde(default)]
    pub engine: EngineSection,
    /// The guest-preparation command run on the appliance against the boot disk, for
    /// the VMs whose policy asks for it. `{device}` in `args` is the disk's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_prep: Option<volumed::GuestPrep>,
    /// Hooks around live failover and rollback.
    #[serde(default)]
    pub hooks: workflows::Hooks,
    /// The web console (docs/console.md).
    #[serde(default)]
    pub console: ConsoleSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where the REST API listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The file holding the API's bearer token (used when `FERRY_TOKEN` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            token_file: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8470))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// A SQLite path (created on first start) or a `postgres://` URL. Several `ferry
    /// serve` processes may share one PostgreSQL database; SQLite is for one.
    #[serde(default = "default_database")]
    pub url: String,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection {
            url: default_database(),
        }
    }
}

fn default_database() -> String {
    "ferry.db".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudStackSection {
    /// The API URL, e.g. `https://cloud.example.com/client/api`.
    pub endpoint: String,
    /// The API key (not secret).
    pub api_key: String,
    /// The file holding the secret key (used when `FERRY_CLOUDSTACK_SECRET` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// The first poll of an async job comes this soon after it was submitted — or,
    /// once jobs of its command have been seen to finish, when they have lately been
    /// finishing, if that is later (the client learns it; nothing is assumed).
    #[serde(default = "default_poll_first_ms")]
    pub poll_first_ms: u64,
    /// Polls back off up to this interval.
    #[serde(default = "default_poll_max_ms")]
    pub poll_max_ms: u64,
    /// After this long a job's outcome is unknown, and ferry looks at CloudStack
    /// before doing anything else.
    #[serde(default = "default_job_deadline_secs")]
    pub job_deadline_secs: u64,
    /// At most this many API calls (polls included) per `rate_limit_interval_ms`, spread
    /// evenly; 0, the default, sets no limit. With CloudStack's `api.throttling.enabled`
    /// on, use its `api.throttling.max` per `api.throttling.interval` (25 per 1000 ms
    /// by default) divided among the processes that share the account (every `ferry
    /// serve` and `ferry volumed`). A call CloudStack throttles anyway is sent again
    /// after the wait it names.
    #[serde(default)]
    pub rate_limit_calls: u32,
    #[serde(default = "default_rate_limit_interval_ms")]
    pub rate_limit_interval_ms: u64,
    /// How long this cloud's async jobs take compared with a typical KVM cloud on
    /// shared storage (`cloudstack::TYPICAL_JOB_DURATIONS_MS`: an attach 3 s, a start
    /// 15 s …): 2 when they take twice as long. The first poll of a job of a command
    /// not seen to finish yet comes at its typical duration times this; after one has
    /// finished, at what the client learned. Only the number of polls depends on it.
    #[serde(default = "default_job_duration_scale")]
    pub job_duration_scale: f64,
}

fn default_job_duration_scale() -> f64 {
    1.0
}

fn default_rate_limit_interval_ms() -> u64 {
    1_000
}

fn default_poll_first_ms() -> u64 {
    500
}
fn default_poll_max_ms() -> u64 {
    5_000
}
fn default_job_deadline_secs() -> u64 {
    1_800
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub zone_id: String,
    /// A custom (CPU and memory) service offering.
    pub service_offering_id: String,
    /// Any template: target VMs are deployed stopped and its ROOT disk removed.
    pub template_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceSection {
    /// The name VM definitions use (`appliance = "oma"`).
    pub name: String,
    /// Its CloudStack VM id.
    pub vm_id: String,
    /// Its zone; the target zone when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// Where its `/sys/block` and `/dev/disk/by-id` are seen from this process: `/`
    /// when `ferry serve` runs on the appliance. Unused when it has a `volumed_url`.
    #[serde(default = "default_sysfs_root")]
    pub sysfs_root: PathBuf,
    /// Its volume agent: the `ferry volumed` on the appliance, `https://host:port`
    /// (`http://` only to a loopback address). Every volume command, device wait and
    /// guest preparation of this appliance goes there. Omitted: this process serves
    /// the appliance in-process, seeing its disks under `sysfs_root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumed_url: Option<String>,
    /// The file holding the agent's bearer token (else `FERRY_VOLUMED_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumed_token_file: Option<PathBuf>,
    /// PEM file of the certificate authority the agent's TLS certificate must chain
    /// to — or the agent's self-signed certificate itself, which pins it. Omitted: the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumed_ca_file: Option<PathBuf>,
}

/// The agent token's name, environment variable and config key, for messages.
const VOLUMED_TOKEN: SecretSource = SecretSource {
    what: "volume agent token",
    env: "FERRY_VOLUMED_TOKEN",
    key: "appliances.volumed_token_file",
};

fn default_sysfs_root() -> PathBuf {
    PathBuf::from("/")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Runs one process executes at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long a worker's lease on a run lasts without renewal: after a crash,
    /// another worker takes the run over this long after the last renewal.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Attempts of one step (or undo) when it fails transiently.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    /// How long a step (or undo) waits out CloudStack or the volume daemon not
    /// answering at all — refused, reset, timed out, a proxy's 5xx — before it fails:
    /// a management-server restart or upgrade takes minutes. Attempts spent waiting
    /// are not counted against `max_attempts`.
    #[serde(default = "default_outage_tolerance_s")]
    pub outage_tolerance_s: u64,
    /// How often to look for runs that other processes created or left.
    #[serde(default = "default_claim_interval_ms")]
    pub claim_interval_ms: u64,
    /// How long to wait for a disk to appear in, or leave, an appliance.
    #[serde(default = "default_device_timeout_secs")]
    pub device_timeout_secs: u64,
    /// This process's name in run leases. When omitted: the host name with SQLite (one
    /// process per database, so a restart takes its runs back at once), and
    /// `<hostname>-<pid>` with PostgreSQL (a crashed process's runs are taken over when
    /// their leases run out). Never give one name to two live processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            concurrency: default_concurrency(),
            lease_secs: default_lease_secs(),
            max_attempts: default_max_attempts(),
            outage_tolerance_s: default_outage_tolerance_s(),
            claim_interval_ms: default_claim_interval_ms(),
            device_timeout_secs: default_device_timeout_secs(),
            worker_name: None,
        }
    }
}

fn default_concurrency() -> usize {
    64
}
fn default_lease_secs() -> u64 {
    30
}
fn default_max_attempts() -> i64 {
    5
}
fn default_outage_tolerance_s() -> u64 {
    15 * 60
}
fn default_claim_interval_ms() -> u64 {
    1_000
}
fn default_device_timeout_secs() -> u64 {
    120
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the config cannot be written as TOML: {0}")]
    Write(String),
    #[error("cannot read the {what} file {path}")]
    SecretFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A secret's name, its environment variable and its config key, for messages.
struct SecretSource {
    what: &'static str,
    env: &'static str,
    key: &'static str,
}

const CLOUDSTACK_SECRET: SecretSource = SecretSource {
    what: "CloudStack secret key",
    env: "FERRY_CLOUDSTACK_SECRET",
    key: "cloudstack.secret_key_file",
};
const API_TOKEN: SecretSource = SecretSource {
    what: "API token",
    env: "FERRY_TOKEN",
    key: "server.token_file",
};

const DAY_SECS: u64 = 86_400;

impl Config {
    /// Reads `path` and applies the environment overrides; the caller applies its own
    /// (command-line) overrides and then [`Config::check`]s the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Parses a config text (no environment, no checks beyond the format).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The config as the file [`Config::load`] reads: every key, defaults included,
    /// so a `ferry serve` started on it runs exactly this config.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Write(e.to_string()))
    }

    /// Applies the environment overrides that `lookup` finds.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(listen) = lookup("FERRY_LISTEN") {
            self.server.listen = listen.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "FERRY_LISTEN=`{listen}` is not an address: use host:port, e.g. 127.0.0.1:8470"
                ))
            })?;
        }
        if let Some(url) = lookup("FERRY_DATABASE_URL") {
            self.database.url = url;
        }
        if let Some(endpoint) = lookup("FERRY_CLOUDSTACK_ENDPOINT") {
            self.cloudstack.endpoint = endpoint;
        }
        if let Some(key) = lookup("FERRY_CLOUDSTACK_API_KEY") {
            self.cloudstack.api_key = key;
        }
        Ok(())
    }

    /// The checks a file can fail beyond its format, all at once.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut required = |value: &str, key: &str| {
            if value.trim().is_empty() {
                problems.push(format!("{key} is empty"));
            }
        };
        required(&self.database.url, "database.url");
        required(&self.cloudstack.endpoint, "cloudstack.endpoint");
        required(&self.cloudstack.api_key, "cloudstack.api_key");
        required(&self.target.zone_id, "target.zone_id");
        required(
            &self.target.service_offering_id,
            "target.service_offering_id",
        );
        required(&self.target.template_id, "target.template_id");
        if !(self.cloudstack.endpoint.starts_with("http://")
            || self.cloudstack.endpoint.starts_with("https://"))
        {
            problems.push(format!(
                "cloudstack.endpoint `{}` is not an http(s) URL: use e.g. https://cloud.example.com/client/api",
                self.cloudstack.endpoint
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, a) in self.appliances.iter().enumerate() {
            if a.name.trim().is_empty() || a.vm_id.trim().is_empty() {
                problems.push(format!("appliances[{i}] needs both `name` and `vm_id`"));
            }
            if !names.insert(a.name.as_str()) {
                problems.push(format!(
                    "appliances[{i}]: the name `{}` is used twice",
                    a.name
                ));
            }
            match &a.volumed_url {
                Some(url) => {
                    if let Some(problem) = agent_url_problem(url) {
                        problems.push(format!("appliances[{i}].volumed_url {problem}"));
                    }
                }
                None => {
                    if a.volumed_token_file.is_some() || a.volumed_ca_file.is_some() {
                        problems.push(format!(
                            "appliances[{i}] (`{}`) has volumed_token_file or volumed_ca_file \
                             but no volumed_url: name its agent, or remove them to serve it in-process",
                            a.name
                        ));
                    }
                }
            }
        }
        if let Some(problem) = self
            .engine
            .worker_name
            .as_deref()
            .and_then(worker_name_problem)
        {
            problems.push(problem);
        }
        if self.engine.concurrency == 0 {
            problems.push("engine.concurrency must be at least 1".into());
        }
        if self.engine.lease_secs < 2 {
            problems.push(
                "engine.lease_secs must be at least 2 (a lease is renewed at a third of it)".into(),
            );
        }
        // Durations the process adds to its clocks: zero breaks every run, and a value
        // too large for the addition panics in the middle of one.
        if self.engine.lease_secs > DAY_SECS {
            problems.push(format!(
                "engine.lease_secs must be at most {DAY_SECS} (a day): after a crash, runs wait this long (got {})",
                self.engine.lease_secs
            ));
        }
        if self.engine.claim_interval_ms == 0 {
            problems.push(
                "engine.claim_interval_ms must be at least 1 (0 would look for runs without pause)"
                    .into(),
            );
        }
        if !(1..=DAY_SECS).contains(&self.engine.device_timeout_secs) {
            problems.push(format!(
                "engine.device_timeout_secs must be between 1 and {DAY_SECS} (got {})",
                self.engine.device_timeout_secs
            ));
        }
        if !(1..=30 * DAY_SECS).contains(&self.cloudstack.job_deadline_secs) {
            problems.push(format!(
                "cloudstack.job_deadline_secs must be between 1 and {} (30 days) (got {})",
                30 * DAY_SECS,
                self.cloudstack.job_deadline_secs
            ));
        }
        if self.engine.max_attempts < 1 {
            problems.push("engine.max_attempts must be at least 1".into());
        }
        if self.engine.outage_tolerance_s > 30 * DAY_SECS {
            problems.push(format!(
                "engine.outage_tolerance_s must be at most {} (30 days) (got {}); 0 fails a step at the first outage",
                30 * DAY_SECS,
                self.engine.outage_tolerance_s
            ));
        }
        if self.cloudstack.rate_limit_interval_ms == 0
            || self.cloudstack.rate_limit_interval_ms > DAY_SECS * 1000
        {
            problems.push(format!(
                "cloudstack.rate_limit_interval_ms must be between 1 and {} (a day; got {})",
                DAY_SECS * 1000,
                self.cloudstack.rate_limit_interval_ms
            ));
        }
        let scale = self.cloudstack.job_duration_scale;
        if !(scale.is_finite() && scale > 0.0 && scale <= 1_000.0) {
            problems.push(format!(
                "cloudstack.job_duration_scale must be a number > 0 and ≤ 1000 (got {scale}); \
                 1 is a typical KVM cloud's pace, 2 a cloud whose jobs take twice as long"
            ));
        }
        if self.cloudstack.poll_first_ms == 0
            || self.cloudstack.poll_max_ms < self.cloudstack.poll_first_ms
        {
            problems.push(
                "cloudstack.poll_first_ms must be > 0 and cloudstack.poll_max_ms at least as large"
                    .into(),
            );
        }
        if let Some(prep) = &self.guest_prep {
            if prep.program.trim().is_empty() {
                problems.push("guest_prep.program is empty".into());
            }
            if !(1..=86_400).contains(&prep.timeout_secs) {
                problems.push(format!(
                    "guest_prep.timeout_secs must be between 1 and 86400 (got {})",
                    prep.timeout_secs
                ));
            }
        }
        problems.extend(self.console.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(format!(
                "the config has {} problem(s):\n{}",
                problems.len(),
                problems
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )))
        }
    }

    /// The CloudStack secret key, from the environment or the configured file.
    pub fn cloudstack_secret(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SecretString, ConfigError> {
        secret(
            &CLOUDSTACK_SECRET,
            self.cloudstack.secret_key_file.as_deref(),
            lookup,
        )
    }

    /// The API's bearer token, from the environment or the configured file.
    pub fn api_token(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SecretString, ConfigError> {
        secret(&API_TOKEN, self.server.token_file.as_deref(), lookup)
    }

    /// The bearer token of each appliance's volume agent, by appliance name: from
    /// its `volumed_token_file`, else `FERRY_VOLUMED_TOKEN`.
    pub fn agent_tokens(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<std::collections::BTreeMap<String, SecretString>, ConfigError> {
        let mut tokens = std::collections::BTreeMap::new();
        for a in self.appliances.iter().filter(|a| a.volumed_url.is_some()) {
            let token = match &a.volumed_token_file {
                Some(file) => secret(&VOLUMED_TOKEN, Some(file), |_| None),
                None => secret(&VOLUMED_TOKEN, None, &lookup),
            }
            .map_err(|e| match e {
                ConfigError::Invalid(m) => {
                    ConfigError::Invalid(format!("appliance `{}`: {m}", a.name))
                }
                other => other,
            })?;
            tokens.insert(a.name.clone(), token);
        }
        Ok(tokens)
    }

    /// The client's own API rate limit (`None`: none).
    pub fn rate_limit(&self) -> Option<cloudstack::RateLimit> {
        (self.cloudstack.rate_limit_calls > 0).then(|| cloudstack::RateLimit {
            calls: self.cloudstack.rate_limit_calls,
            interval: Duration::from_millis(self.cloudstack.rate_limit_interval_ms),
        })
    }

    /// When the client first polls a job of a command it has not seen finish.
    pub fn job_priors(&self) -> cloudstack::JobPriors {
        cloudstack::JobPriors::typical(self.cloudstack.job_duration_scale)
    }

    /// The client's async-job polling.
    pub fn poll_policy(&self) -> cloudstack::PollPolicy {
        cloudstack::PollPolicy {
            first: Duration::from_millis(self.cloudstack.poll_first_ms),
            factor: 1.5,
            max: Duration::from_millis(self.cloudstack.poll_max_ms),
            deadline: Duration::from_secs(self.cloudstack.job_deadline_secs),
        }
    }
}

/// A config made in code instead of written by hand: what `ferry demo` and `ferry bench`
/// run on, and what the tests start their servers with (in process, from
/// [`Builder::build`], or as a `ferry serve` child reading [`Builder::toml`]). It sets
/// the same typed fields the file is parsed into, so it cannot name a key the file
/// does not have; whatever it does not set keeps the file's default.
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// A config with what has no default: CloudStack's endpoint and API key, and what
    /// target VMs are made from.
    pub fn new(
        cloudstack_endpoint: impl Into<String>,
        api_key: impl Into<String>,
        target: TargetSection,
    ) -> Builder {
        Builder {
            config: Config {
                server: ServerSection::default(),
                database: DatabaseSection::default(),
                cloudstack: CloudStackSection {
                    endpoint: cloudstack_endpoint.into(),
                    api_key: api_key.into(),
                    secret_key_file: None,
                    poll_first_ms: default_poll_first_ms(),
                    poll_max_ms: default_poll_max_ms(),
                    job_deadline_secs: default_job_deadline_secs(),
                    rate_limit_calls: 0,
                    rate_limit_interval_ms: default_rate_limit_interval_ms(),
                    job_duration_scale: default_job_duration_scale(),
                },
                target,
                appliances: Vec::new(),
                engine: EngineSection::default(),
                guest_prep: None,
                hooks: workflows::Hooks::default(),
                console: ConsoleSection::default(),
            },
        }
    }

    /// `server.listen`.
    pub fn listen(mut self, listen: SocketAddr) -> Builder {
        self.config.server.listen = listen;
        self
    }

    /// `database.url`: a SQLite path or a `postgres://` URL.
    pub fn database(mut self, url: impl Into<String>) -> Builder {
        self.config.database.url = url.into();
        self
    }

    /// `cloudstack.poll_first_ms` and `cloudstack.poll_max_ms`.
    pub fn poll_ms(mut self, first: u64, max: u64) -> Builder {
        self.config.cloudstack.poll_first_ms = first;
        self.config.cloudstack.poll_max_ms = max;
        self
    }

    /// `cloudstack.job_duration_scale`.
    pub fn job_duration_scale(mut self, scale: f64) -> Builder {
        self.config.cloudstack.job_duration_scale = scale;
        self
    }

    /// `cloudstack.rate_limit_calls` per `cloudstack.rate_limit_interval_ms`.
    pub fn rate_limit(mut self, calls: u32, interval_ms: u64) -> Builder {
        self.config.cloudstack.rate_limit_calls = calls;
        self.config.cloudstack.rate_limit_interval_ms = interval_ms;
        self
    }

    /// `cloudstack.job_deadline_secs`.
    pub fn job_deadline_secs(mut self, secs: u64) -> Builder {
        self.config.cloudstack.job_deadline_secs = secs;
        self
    }

    /// One more `[[appliances]]`, in the target zone.
    pub fn appliance(
        mut self,
        name: impl Into<String>,
        vm_id: impl Into<String>,
        sysfs_root: impl Into<PathBuf>,
    ) -> Builder {
        self.config.appliances.push(ApplianceSection {
            name: name.into(),
            vm_id: vm_id.into(),
            zone_id: None,
            sysfs_root: sysfs_root.into(),
            volumed_url: None,
            volumed_token_file: None,
            volumed_ca_file: None,
        });
        self
    }

    /// One more `[[appliances]]`, in the target zone, served by its volume agent at
    /// `url` with the token in `token_file` (and `ca_file` to trust its certificate).
    pub fn appliance_with_agent(
        mut self,
        name: impl Into<String>,
        vm_id: impl Into<String>,
        url: impl Into<String>,
        token_file: impl Into<PathBuf>,
        ca_file: Option<PathBuf>,
    ) -> Builder {
        self.config.appliances.push(ApplianceSection {
            name: name.into(),
            vm_id: vm_id.into(),
            zone_id: None,
            sysfs_root: default_sysfs_root(),
            volumed_url: Some(url.into()),
            volumed_token_file: Some(token_file.into()),
            volumed_ca_file: ca_file,
        });
        self
    }

    /// The `[engine]` section (`..EngineSection::default()` for the keys left out).
    pub fn engine(mut self, engine: EngineSection) -> Builder {
        self.config.engine = engine;
        self
    }

    /// The `[guest_prep]` command.
    pub fn guest_prep(mut self, prep: volumed::GuestPrep) -> Builder {
        self.config.guest_prep = Some(prep);
        self
    }

    /// The `[hooks]`.
    pub fn hooks(mut self, hooks: workflows::Hooks) -> Builder {
        self.config.hooks = hooks;
        self
    }

    /// The `[console]` section.
    pub fn console(mut self, console: ConsoleSection) -> Builder {
        self.config.console = console;
        self
    }

    /// The config, once it passes [`Config::check`].
    pub fn build(self) -> Result<Config, ConfigError> {
        self.config.check()?;
        Ok(self.config)
    }

    /// The config file's text, once the config passes [`Config::check`].
    pub fn toml(self) -> Result<String, ConfigError> {
        self.build()?.to_toml()
    }
}

/// A secret from the environment, else from `file` (a trailing newline removed).
fn secret(
    source: &SecretSource,
    file: Option<&Path>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<SecretString, ConfigError> {
    let value = match (lookup(source.env), file) {
        (Some(value), _) => value,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError::SecretFile {
                what: source.what,
                path: path.to_path_buf(),
                source: e,
            })?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        (None, None) => {
            return Err(ConfigError::Invalid(format!(
                "no {}: set {} or name the file that holds it in `{}`",
                source.what, source.env, source.key
            )));
        }
    };
    if value.trim().is_empty() {
        return Err(ConfigError::Invalid(format!(
            "the {} is empty",
            source.what
        )));
    }
    Ok(SecretString::from(value))
}

#[cfg(test)]
mod tests;
