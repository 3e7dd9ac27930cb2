//! ferry's server: the REST API, the engine worker and the in-process volume daemon,
//! built from one config ([`config`]) and started by [`app::start`].
//!
//! Architecture invariant: this crate adds no failover logic. It turns HTTP requests
//! into calls of `workflows` (start a run), `engine` (retry, abandon) and `store`
//! (read), and turns their records into the views an operator reads ([`model`]).
//! Those views are the API's JSON contract and the CLI's `--output json`.

pub mod api;
pub mod app;
pub mod appliances;
mod body;
mod commands;
pub mod config;
mod console;
pub mod error;
pub mod model;
mod ops;
mod overdue;
mod plan_driving;
pub mod plan_model;
mod plan_runs;
mod plans;
pub mod report;
pub mod requester;
mod state;
pub mod view;
pub mod words;

pub use api::{AppState, openapi_json, router};
pub use app::{Running, Settings, StartError, metrics_handle, start};
pub use config::{Config, ConfigError};
