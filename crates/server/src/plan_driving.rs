//! The tasks that drive plan runs (docs/decisions/0002-plan-runs.md): a plan run
//! started through the API is driven by this process at once; the plan runs that are
//! active and free when the server starts, or whose driver died (its lease ran out),
//! are taken up by a sweep. A leaf of the crate: the handlers' state holds it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plans::runner::Driver;
use tokio_util::sync::CancellationToken;

/// The plan runs this process drives, and how it starts driving one.
#[derive(Clone)]
pub struct PlanDriving {
    driver: Driver,
    shutdown: CancellationToken,
    driving: Arc<Mutex<HashSet<String>>>,
}

impl PlanDriving {
    pub fn new(driver: Driver, shutdown: CancellationToken) -> PlanDriving {
        PlanDriving {
            driver,
            shutdown,
            driving: Arc::default(),
        }
    }

    /// Drives plan run `id` in a task of its own, unless this process already does.
    pub fn drive(&self, id: String) {
        if !self
            .driving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.driver.drive(&id, &this.shutdown).await {
                Ok(Some(run)) => {
                    tracing::info!(plan_run = %id, state = %run.state, "plan run driven")
                }
                Ok(None) => tracing::debug!(plan_run = %id, "another worker drives the plan run"),
                Err(e) => tracing::warn!(plan_run = %id, error = %e, "driving a plan run stopped"),
            }
            this.driving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }

    /// Takes up every active plan run no live worker drives, now and every `every`,
    /// until shutdown.
    pub async fn sweep(self, store: store::Store, every: Duration) {
        loop {
            match store.claimable_plan_runs(self.driver.owner()).await {
                Ok(runs) => runs.into_iter().for_each(|id| self.drive(id)),
                Err(e) => tracing::warn!(error = %e, "cannot list the active plan runs"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}

impl PlanDriving {
    pub(crate) fn driver(&self) -> &Driver {
        &self.driver
    }
}
