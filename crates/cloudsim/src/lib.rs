//! cloudsim: a simulator of the Apache CloudStack API, faithful to the rules ferry
//! relies on.
//!
//! No real CloudStack can be reached where ferry is built and tested, so everything
//! ferry claims about correctness is proved against this simulator. It speaks the
//! HTTP API at `/client/api` as CloudStack 4.19–4.22 on KVM does: signed requests
//! (parameter names in any case, GET query or POST form), JSON envelopes, async jobs
//! whose business validation happens inside the job, one job at a time per VM in
//! submission order, and CloudStack's error codes and texts. Beside the API it has
//! an admin surface under `/sim/` that no CloudStack has: fault injection, latency
//! overrides, settings, accounting of per-queue busy time, and a view of each
//! volume's simulated content.
//!
//! Module map: [`world`] (the seed file), `state` (entities, rules per resource, and
//! the JSON CloudStack returns), `api` (the HTTP surface: `/client/api` and the `/sim/`
//! admin endpoints), `jobs` (per-VM queues, latency and accounting), `sim` (the shared
//! simulator the API and the queues hold), [`faults`], `hotplug` (the appliance's
//! `/sys/block` and `/dev/disk/by-id`, and the disk serial), [`guests`] (what a VM's
//! guest shows the network: ports that open after its boot time), `auth` (signature
//! checks).
//! This file only starts a simulator: no module uses anything defined here.
//!
//! Architecture invariant: ferry's real client code (`cloudstack` crate) never knows
//! it talks to this simulator; nothing here is reachable from it except over HTTP.

mod api;
mod auth;
pub mod error;
pub mod faults;
pub mod guests;
mod hotplug;
mod jobs;
pub mod persist;
mod sim;
mod state;
mod throttle;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use guests::registry::{GuestVm, Guests};
use hotplug::{Hotplug, volume_serial};
use sim::Inner;
use state::entities::{State, Vm};

use tokio_util::sync::CancellationToken;

pub use hotplug::disk_name;
pub use jobs::stats::Stats;
pub use world::World;

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub world: World,
    /// Root of the appliances' emulated `/sys/block` and `/dev/disk/by-id`. With one
    /// appliance it is the root itself; with several, each gets `<root>/<name>`.
    pub sysfs_root: Option<PathBuf>,
    /// Multiplies every latency (0.01 makes a 3 s attach take 30 ms).
    pub time_scale: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            world: World::default(),
            sysfs_root: None,
            time_scale: 1.0,
        }
    }
}

/// What a started simulator tells its user (and what `ferry cloudsim` prints).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Announcement {
    pub endpoint: String,
    pub admin: String,
    pub api_key: String,
    pub secret_key: String,
    pub zone_id: String,
    /// Appliance name → VM id.
    pub appliances: BTreeMap<String, String>,
    /// Appliance name → root of its emulated sysfs tree.
    #[serde(default)]
    pub sysfs_roots: BTreeMap<String, PathBuf>,
}

/// A running simulator.
pub struct Running {
    pub addr: SocketAddr,
    pub announcement: Announcement,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The `/client/api` URL.
    pub fn endpoint(&self) -> &str {
        &self.announcement.endpoint
    }

    /// Stops serving and waits for the server to end.
    pub async fn stop(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.task.await.unwrap_or(Ok(()))
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server ends (after its token is cancelled).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Starts a simulator on `listen` (port 0 picks a free port) and returns once it
/// accepts requests.
pub async fn start(config: SimConfig, listen: SocketAddr) -> Result<Running, StartError> {
    start_with_state_file(config, listen, None).await
}

/// [`start`], keeping the simulated cloud in `state_file` (see [`persist`]): started
/// from the file when it exists — the jobs that were in flight ending as CloudStack
/// ends them at a restart — else from the world, and written as it changes.
pub async fn start_with_state_file(
    config: SimConfig,
    listen: SocketAddr,
    state_file: Option<PathBuf>,
) -> Result<Running, StartError> {
    let saved = match &state_file {
        Some(path) => persist::load(path).map_err(StartError::StateFile)?,
        None => None,
    };
    let state = match saved {
        Some(mut state) => {
            let cancelled = persist::after_restart(&mut state);
            if cancelled > 0 {
                eprintln!(
                    "cloudsim: {cancelled} job(s) in flight when it stopped ended failed: {}",
                    persist::CANCELLED_BY_RESTART
                );
            }
            state
        }
        None => State::from_world(&config.world).map_err(StartError::World)?,
    };
    let mut roots = HashMap::new();
    let mut sysfs_roots = BTreeMap::new();
    let appliances: Vec<&Vm> = state.vms.values().filter(|v| v.appliance).collect();
    if let Some(root) = &config.sysfs_root {
        for vm in &appliances {
            let dir = if appliances.len() == 1 {
                root.clone()
            } else {
                root.join(&vm.name)
            };
            roots.insert(vm.id.clone(), dir.clone());
            sysfs_roots.insert(vm.name.clone(), dir);
        }
    }
    let hotplug = Hotplug::new(roots);
    for vm in &appliances {
        let mut disks: Vec<(i64, String)> = state
            .volumes
            .values()
            .filter(|v| v.vm_id.as_deref() == Some(vm.id.as_str()))
            .map(|v| (v.device_id.unwrap_or(0), volume_serial(&v.id)))
            .collect();
        disks.sort();
        let serials: Vec<String> = disks.into_iter().map(|(_, s)| s).collect();
        hotplug.seed(&vm.id, &serials).map_err(StartError::Sysfs)?;
    }
    let appliance_ids: BTreeMap<String, String> = appliances
        .iter()
        .map(|v| (v.name.clone(), v.id.clone()))
        .collect();
    let zone_id = state.zones[0].id.clone();
    let mut faults = faults::Faults::default();
    for rule in &config.world.faults {
        faults.arm(rule.clone());
    }
    let shutdown = CancellationToken::new();
    let inner = Arc::new(Inner {
        state: Mutex::new(state),
        world: config.world.clone(),
        time_scale: config.time_scale,
        latency_ms: Mutex::new(
            config
                .world
                .latency_ms
                .iter()
                .map(|(k, v)| (k.to_lowercase(), *v))
                .collect(),
        ),
        faults: Mutex::new(faults),
        stats: Mutex::new(jobs::stats::StatsInner::default()),
        queues: Mutex::new(HashMap::new()),
        hotplug,
        guests: Guests::new(
            config.world.guests.clone(),
            config.time_scale,
            shutdown.clone(),
        ),
        shutdown: shutdown.clone(),
        state_file: state_file.clone(),
        throttle: config
            .world
            .settings
            .api_throttling
            .map(|t| Mutex::new(throttle::Throttle::new(&t, config.time_scale))),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(StartError::Bind)?;
    let addr = listener.local_addr().map_err(StartError::Bind)?;
    // A VM running when cloudsim starts (from a state file, or a world's appliance)
    // boots its guest now: cloudsim's own restart stands for its guests' too.
    let running: Vec<GuestVm> = {
        let state = inner.state.lock().expect("poisoned");
        state
            .vms
            .values()
            .filter(|vm| vm.state == "Running")
            .filter_map(|vm| state.guest_vm(&vm.id))
            .collect()
    };
    for vm in running {
        inner.guests.boot(vm).await;
    }
    let saver = state_file.map(|path| persist::spawn_saver(inner.clone(), path));
    let router = api::router(inner.clone());
    let token = shutdown.clone();
    let guests_of = inner.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        // Every guest port closed before the simulator is said to have stopped, so
        // that one started again at once can bind them.
        guests_of.guests.close_all().await;
        // The state file's last write, after the last request.
        if let Some(saver) = saver {
            let _ = saver.await;
        }
        served
    });
    let announcement = Announcement {
        endpoint: format!("http://{addr}/client/api"),
        admin: format!("http://{addr}/sim"),
        api_key: config.world.credentials.api_key.clone(),
        secret_key: config.world.credentials.secret_key.clone(),
        zone_id,
        appliances: appliance_ids,
        sysfs_roots,
    };
    Ok(Running {
        addr,
        announcement,
        shutdown,
        task,
    })
}

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the world is inconsistent: {0}")]
    World(String),
    #[error("cannot listen")]
    Bind(#[source] std::io::Error),
    #[error("cannot lay out the appliance sysfs tree")]
    Sysfs(#[source] std::io::Error),
    #[error("{0}")]
    StateFile(String),
}
