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

impl AppState {
    /// Whether `presented` is the server's API token. Both sides are hashed first, so
    /// the comparison takes the same time whatever the presented token's length, and
    /// reveals neither where the tokens differ nor how long the token is. The REST
    /// API's bearer check and the console's sign-in both ask this.
    pub fn token_matches(&self, presented: &str) -> bool {
        use secrecy::ExposeSecret as _;
        use subtle::ConstantTimeEq as _;
        bool::from(
            digest(presented.as_bytes()).ct_eq(&digest(self.token.expose_secret().as_bytes())),
        )
    }
}

fn digest(bytes: &[u8]) -> [u8; 20] {
    use sha1::Digest as _;
    sha1::Sha1::digest(bytes).into()
}
