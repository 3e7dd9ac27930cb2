//! What every handler works with, in a module of its own so that the router (`api`)
//! and the views (`view`) can both use it without using each other.

use secrecy::SecretString;

/// What every handler works with.
#[derive(Clone)]
pub struct AppState {
    pub env: workflows::Env,
    pub worker: workflows::Worker,
    pub token: std::sync::Arc<SecretString>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub limits: inventory::Limits,
    /// Runs of recovery plans: started here, driven by tasks of this process.
    pub plans: crate::plan_driving::PlanDriving,
}
