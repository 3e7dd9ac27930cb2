//! Wiring: from a config to a running server — the store, the CloudStack client, the
//! in-process volume daemon (which resumes the operations a crash left in flight), the
//! engine worker and the REST API, all stopped by one shutdown token.

use ids::{ServiceOfferingId, TemplateId, VmId, ZoneId};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, router};
use crate::config::Config;

/// Everything `ferry serve` needs, secrets read.
pub struct Settings {
    pub config: Config,
    pub cloudstack_secret: SecretString,
    pub api_token: SecretString,
    /// The token of each appliance's volume agent, by appliance name.
    pub agent_tokens: std::collections::BTreeMap<String, SecretString>,
}

impl Settings {
    /// Reads the secrets the config names (or the environment holds).
    pub fn resolve(config: Config) -> Result<Settings, crate::config::ConfigError> {
        let lookup = |name: &str| std::env::var(name).ok();
        let cloudstack_secret = config.cloudstack_secret(lookup)?;
        let api_token = config.api_token(lookup)?;
        let agent_tokens = config.agent_tokens(lookup)?;
        Ok(Settings {
            config,
            cloudstack_secret,
            api_token,
            agent_tokens,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database {url}")]
    Store {
        url: String,
        #[source]
        source: store::StoreError,
    },
    #[error("cannot build the CloudStack client: {0}")]
    Client(String),
    #[error("cannot record the appliance {name}")]
    Appliance {
        name: String,
        #[source]
        source: store::StoreError,
    },
    #[error(
        "another ferry serve runs on this database under the worker name `{name}` (pid {pid} on {host}, seen {seen_s} s ago): \
         two workers of one name would each take the other's runs as their own. Stop it, or give this one its own \
         `[engine] worker_name`"
    )]
    WorkerNameTaken {
        name: String,
        host: String,
        pid: i64,
        seen_s: i64,
    },
    #[error("cannot record this process's worker name")]
    Worker(#[source] store::StoreError),
}

/// The process-wide Prometheus recorder (installed once, on first use).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0,
                ])
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_metrics();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

/// The `# HELP` line of every metric ferry exports (docs/operating.md 8.2 says more).
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "ferry_runs_total",
        "Executions of runs by this process that ended, by workflow and outcome"
    );
    describe_gauge!(
        "ferry_replicas_diverged",
        "Replicas diverged from their source (drift); their VMs fail over only once a resync is recorded"
    );
    describe_gauge!("ferry_runs_executing", "Runs this process is executing now");
    describe_gauge!(
        "ferry_appliance_agent_up",
        "1 when the appliance's volume daemon (its agent, or the in-process one) answered at the last scrape, else 0"
    );
    describe_gauge!(
        "ferry_appliance_agent_backlog",
        "Operations in the appliance's volume daemon journal not finished yet (NaN when it did not answer)"
    );
    describe_gauge!(
        "ferry_appliance_replicas",
        "Replica volumes registered on the appliance"
    );
    describe_gauge!(
        "ferry_appliance_free_slots",
        "Data-volume slots CloudStack still has free on the appliance VM (NaN when CloudStack could not be read)"
    );
    describe_gauge!(
        "ferry_appliance_devices",
        "Disks the appliance's volume daemon sees on it (NaN when it did not answer)"
    );
    describe_gauge!(
        "ferry_runs",
        "Runs in the database in each state, counted at each scrape"
    );
    describe_gauge!(
        "ferry_runs_waiting",
        "Runs of this process waiting out an outage now, by what they wait for"
    );
    describe_histogram!(
        "ferry_step_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of each attempt of a step's action or undo"
    );
    describe_counter!(
        "ferry_cloudstack_calls_total",
        "HTTP requests sent to CloudStack, polls included, by command"
    );
    describe_counter!(
        "ferry_cloudstack_errors_total",
        "CloudStack requests that failed and async jobs that ended failed, by command and class"
    );
    describe_histogram!(
        "ferry_cloudstack_job_wait_seconds",
        metrics::Unit::Seconds,
        "How long each wait for a CloudStack async job took, whatever its end"
    );
    describe_histogram!(
        "ferry_cloudstack_job_polls",
        "Polls each wait for a CloudStack async job made"
    );
}

/// A started server: its address, and the handle to wait on.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    pub task: tokio::task::JoinHandle<()>,
}

/// Builds everything from `settings` and serves the API on `listener` until
/// `shutdown` is cancelled.
pub async fn start(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let config = &settings.config;
    let store = store::Store::connect(&config.database.url)
        .await
        .map_err(|source| StartError::Store {
            url: config.database.url.clone(),
            source,
        })?;
    let mut client_config = cloudstack::Config::new(
        &config.cloudstack.endpoint,
        &config.cloudstack.api_key,
        settings.cloudstack_secret.clone(),
    );
    client_config.poll = config.poll_policy();
    client_config.job_priors = config.job_priors();
    client_config.rate_limit = config.rate_limit();
    let cloud =
        cloudstack::Client::new(client_config).map_err(|e| StartError::Client(e.to_string()))?;

    let mut daemon = volumed::LocalConfig::default();
    // The engine's registry (replicas, created volumes, attachments), which the
    // in-process daemon and every remote agent's client keep.
    let journal: Arc<dyn volumed::Journal> = Arc::new(volumed::StoreJournal::new(store.clone()));
    let mut agents: Vec<(String, Arc<dyn volumed::VolumeService>)> = Vec::new();
    for a in &config.appliances {
        store
            .upsert_appliance(&store::Appliance {
                name: a.name.clone(),
                vm_id: VmId::from(&a.vm_id),
                zone_id: ZoneId::new(
                    a.zone_id
                        .clone()
                        .unwrap_or_else(|| config.target.zone_id.clone()),
                ),
                volumed_url: a.volumed_url.clone(),
                sysfs_root: a
                    .volumed_url
                    .is_none()
                    .then(|| a.sysfs_root.display().to_string()),
            })
            .await
            .map_err(|source| StartError::Appliance {
                name: a.name.clone(),
                source,
            })?;
        match &a.volumed_url {
            None => {
                daemon
                    .appliances
                    .insert(a.vm_id.clone(), PathBuf::from(&a.sysfs_root));
            }
            Some(url) => {
                let token = settings.agent_tokens.get(&a.name).cloned().ok_or_else(|| {
                    StartError::Client(format!("appliance {}: no volume agent token", a.name))
                })?;
                let mut http = volumed::HttpClientConfig::new(url, token);
                http.ca_file = a.volumed_ca_file.clone();
                let agent =
                    volumed::Agent::new(&a.name, VmId::from(&a.vm_id), http, journal.clone())
                        .map_err(|e| {
                            StartError::Client(format!("appliance {}'s volume agent: {e}", a.name))
                        })?;
                agents.push((a.name.clone(), Arc::new(agent)));
            }
        }
    }
    let local = Arc::new(volumed::Local::new(cloud.clone(), journal, daemon));
    let env = workflows::Env {
        store: store.clone(),
        cloud,
        volumes: local.clone(),
        agents: workflows::Agents::new(agents),
        target: workflows::Target {
            zone_id: ZoneId::from(&config.target.zone_id),
            service_offering_id: ServiceOfferingId::from(&config.target.service_offering_id),
            template_id: TemplateId::from(&config.target.template_id),
        },
        device_timeout: Duration::from_secs(config.engine.device_timeout_secs),
        hooks: config.hooks.clone(),
        guest_prep: config.guest_prep.clone(),
    };
    let owner = config
        .engine
        .worker_name
        .clone()
        .unwrap_or_else(|| default_worker_name(store.backend()));
    let me = claim_worker_name(&store, &owner, config.engine.lease_secs).await?;
    let engine = engine::Engine::new(
        store.clone(),
        engine::EngineConfig {
            owner: owner.clone(),
            lease: Duration::from_secs(config.engine.lease_secs),
            max_attempts: config.engine.max_attempts,
            outage_tolerance: Duration::from_secs(config.engine.outage_tolerance_s),
            ..engine::EngineConfig::default()
        },
    );
    let worker = workflows::Worker::new(
        engine,
        env.clone(),
        workflows::WorkerConfig {
            concurrency: config.engine.concurrency,
            claim_interval: Duration::from_millis(config.engine.claim_interval_ms),
        },
    );
    let plan_driver = plans::runner::Driver::new(
        env.clone(),
        worker.clone(),
        plans::runner::DriverConfig {
            owner: owner.clone(),
            lease: Duration::from_secs(config.engine.lease_secs),
            step: PLAN_STEP,
        },
    );
    let state = AppState {
        env,
        worker: worker.clone(),
        token: Arc::new(settings.api_token),
        metrics: metrics_handle(),
        limits: inventory::Limits {
            guest_prep_configured: Some(config.guest_prep.is_some()),
            ..inventory::Limits::default()
        },
        plans: crate::plan_driving::PlanDriving::new(plan_driver, shutdown.clone()),
    };
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let mut app = router(state.clone());
    if config.console.enabled {
        app = app.merge(crate::console::router(
            state.clone(),
            &config.console,
            shutdown.clone(),
        ));
    }
    let state_for_plans = state.clone();
    // Plan runs are looked for as often as runs are claimed (a query of ids only).
    let plan_sweep = Duration::from_millis(config.engine.claim_interval_ms);
    let task = tokio::spawn(async move {
        let worker_shutdown = shutdown.clone();
        // The volume operations a previous process left in flight are settled first
        // (the worker's restart policy), so no run resumes into a volume that is still
        // moving.
        let worker_task = tokio::spawn(async move {
            worker
                .resume_and_run(&local, worker_shutdown.cancelled_owned())
                .await;
        });
        // Plan runs active when the server starts (or left by a process that stopped)
        // are taken up again.
        tokio::spawn(
            state_for_plans
                .plans
                .clone()
                .sweep(state_for_plans.env.store.clone(), plan_sweep),
        );
        tracing::info!(%addr, worker = %owner, "ferry serves");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the API stopped with an error");
        }
        let _ = worker_task.await;
        me.release().await;
    });
    Ok(Running { addr, state, task })
}

/// How often a plan run under way is looked at again.
const PLAN_STEP: Duration = Duration::from_millis(200);

/// This process, recorded under its worker name while it runs.
struct WorkerName {
    store: store::Store,
    name: String,
    host: String,
    pid: i64,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl WorkerName {
    /// Stops the heartbeat and forgets the name, when the process stops.
    async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self
            .store
            .unregister_worker(&self.name, &self.host, self.pid)
            .await
        {
            tracing::warn!(error = %e, "cannot forget this process's worker name");
        }
    }
}

/// Records this process under worker name `name`, refusing when a live process holds
/// it: on this host, one whose pid still runs; elsewhere, one whose heartbeat is younger
/// than a lease. A holder that died (a crash, a SIGKILL) leaves the name to its
/// successor at once on its own host. The heartbeat is renewed every third of a lease.
async fn claim_worker_name(
    store: &store::Store,
    name: &str,
    lease_secs: u64,
) -> Result<WorkerName, StartError> {
    let host = hostname();
    let pid = i64::from(std::process::id());
    let lease_ms = (lease_secs * 1000) as i64;
    if let Some(holder) = store
        .worker_process(name)
        .await
        .map_err(StartError::Worker)?
    {
        let seen_ms = store::now_ms() - holder.heartbeat_at;
        let alive = if holder.host == host {
            holder.pid != pid && std::path::Path::new(&format!("/proc/{}", holder.pid)).exists()
        } else {
            seen_ms < lease_ms
        };
        if alive {
            return Err(StartError::WorkerNameTaken {
                name: name.to_string(),
                host: holder.host,
                pid: holder.pid,
                seen_s: seen_ms / 1000,
            });
        }
    }
    store
        .register_worker(name, &host, pid)
        .await
        .map_err(StartError::Worker)?;
    let heartbeat = {
        let (store, name, host) = (store.clone(), name.to_string(), host.clone());
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis((lease_ms / 3).max(1) as u64));
            loop {
                tick.tick().await;
                match store.worker_heartbeat(&name, &host, pid).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(worker = %name, "another process has taken this worker name")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew this process's heartbeat"),
                }
            }
        })
    };
    Ok(WorkerName {
        store: store.clone(),
        name: name.to_string(),
        host,
        pid,
        heartbeat,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferry".into())
}

/// With SQLite there is one `ferry serve` per database, so its name is the host's: a
/// restarted process takes its runs back at once instead of waiting for their leases to
/// run out. With PostgreSQL several processes share the runs, each under its own name
/// (`<host>-<pid>`) unless the config gives it a stable one.
fn default_worker_name(backend: store::Backend) -> String {
    let host = hostname();
    match backend {
        store::Backend::Sqlite => host,
        store::Backend::Postgres => format!("{host}-{}", std::process::id()),
    }
}
