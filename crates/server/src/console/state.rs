//! What every console handler works with: the API's state (the same store, engine
//! worker and workflows the REST API uses), the sessions, and the shutdown signal
//! that ends the live streams when `ferry serve` stops.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::session::Sessions;
use crate::state::AppState;

#[derive(Clone)]
pub struct Console {
    pub app: AppState,
    pub sessions: Arc<Sessions>,
    pub shutdown: CancellationToken,
}
