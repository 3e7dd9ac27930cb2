//! The shared simulator: what every request handler and every queue worker holds (as
//! [`Shared`]) — the cloud's state, the world it started from, latencies, armed
//! faults, the accounting, the job queues, the appliances' sysfs trees, the emulated
//! guests and the token that stops it all.
//!
//! It lives apart from the crate root so that the modules that use it (`api`,
//! `jobs`) and the root that builds it (`start`) do not depend on each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::guests::registry::Guests;
use crate::hotplug::Hotplug;
use crate::jobs::op::QueuedJob;
use crate::jobs::stats::{self, Stats, StatsInner};
use crate::state::entities::State;
use crate::world::World;

/// The simulator, shared.
pub(crate) type Shared = Arc<Inner>;

/// The shared simulator.
pub(crate) struct Inner {
    pub state: Mutex<State>,
    pub world: World,
    pub time_scale: f64,
    pub latency_ms: Mutex<BTreeMap<String, u64>>,
    pub faults: Mutex<Faults>,
    pub stats: Mutex<StatsInner>,
    pub queues: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<QueuedJob>>>,
    pub hotplug: Hotplug,
    pub guests: Guests,
    pub shutdown: CancellationToken,
    /// `--state-file`: where the cloud is kept (see `persist`).
    pub state_file: Option<std::path::PathBuf>,
    /// The API rate limit, when the world turns it on.
    pub throttle: Option<Mutex<crate::throttle::Throttle>>,
}

impl Inner {
    /// What `/sim/stats` returns.
    pub fn stats(&self) -> Stats {
        // Locks are taken in one order everywhere — `state`, then `stats` — as a job's
        // submission does; the other order could deadlock against it.
        let state = self.state.lock().expect("poisoned");
        let stats = self.stats.lock().expect("poisoned");
        stats::report(&stats, &state.jobs)
    }
}
