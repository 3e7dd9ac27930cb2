//! The appliances: each one's volume daemon (its agent, or the one in `ferry serve`)
//! — reachable or not and why, its version and backlog, the disks it sees — the
//! replicas and VMs on it, and the data-volume slots CloudStack still has free.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use super::format::Badge;
use super::page::{self, Layout, Nav};
use super::session::Session;
use super::state::Console;
use crate::appliances::{self, ApplianceView};

#[derive(Template)]
#[template(path = "console/appliances.html")]
struct AppliancesPage {
    layout: Layout,
    appliances: Vec<(ApplianceView, Badge)>,
}

pub async fn list(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Response {
    match appliances::list(&console.app).await {
        Ok(all) => page::ok(&AppliancesPage {
            layout: Layout::new(&console, &session, "Appliances", Some(Nav::Appliances)).await,
            appliances: all
                .into_iter()
                .map(|a| {
                    let badge = Badge::of(if a.reachable {
                        "reachable"
                    } else {
                        "unreachable"
                    });
                    (a, badge)
                })
                .collect(),
        }),
        Err(e) => page::error(&console, &session, e, None).await,
    }
}
