//! The protected VMs: the list (state, disks, appliance, last drill and its age, the
//! run that holds each) and one VM's page (its spec, disks and where each replica
//! is, the target VM while failed over, its runs, and what can be started on it).

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use store::{Run, Workflow};

use super::format::{self, Badge};
use super::page::{self, Layout, Nav};
use super::session::Session;
use super::state::Console;
use crate::error::ApiError;
use crate::model::{RunSummary, TargetVm};
use crate::{commands, view};

/// A VM's last test failover (drill): its run, state and age.
pub struct Drill {
    pub run_id: String,
    pub state: Badge,
    pub age: String,
    pub when: String,
}

impl Drill {
    fn of(run: &Run, now: i64) -> Drill {
        let summary = view::run_summary(run, "");
        let at = summary
            .finished_at
            .clone()
            .unwrap_or(summary.created_at.clone());
        Drill {
            run_id: summary.id,
            state: Badge::of(&summary.state),
            age: format::age(&at, now),
            when: format::when(&at),
        }
    }
}

struct VmRow {
    name: String,
    state: Badge,
    diverged: usize,
    disks: usize,
    capacity: String,
    appliance: String,
    last_drill: Option<Drill>,
    active: Option<(String, Badge)>,
}

#[derive(Template)]
#[template(path = "console/vms.html")]
struct VmsPage {
    layout: Layout,
    vms: Vec<VmRow>,
}

pub async fn list(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Response {
    match rows(&console).await {
        Ok(vms) => page::ok(&VmsPage {
            layout: Layout::new(&console, &session, "Protected VMs", Some(Nav::Vms)).await,
            vms,
        }),
        Err(e) => page::error(&console, &session, e, None).await,
    }
}

async fn rows(console: &Console) -> Result<Vec<VmRow>, ApiError> {
    let store = &console.app.env.store;
    let now = store::now_ms();
    let mut out = Vec::new();
    for vm in store.vms().await? {
        let active = store.active_run(&vm.id).await?;
        let summary = view::vm_summary(&vm, active.as_ref());
        let drill = store.last_run(&vm.id, Workflow::TestFailover).await?;
        out.push(VmRow {
            state: Badge::of(&summary.state),
            diverged: summary.diverged,
            disks: summary.disks,
            capacity: format::gib(summary.capacity_bytes),
            appliance: summary.appliance,
            last_drill: drill.as_ref().map(|r| Drill::of(r, now)),
            active: active.map(|r| (r.id.to_string(), Badge::of(r.state.as_str()))),
            name: summary.name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

struct DiskRow {
    label: String,
    boot: bool,
    place: String,
    key: i64,
    size: String,
    replica: String,
    /// Where ferry last saw the replica, in words.
    on: String,
    device_id: Option<i64>,
    device_path: Option<String>,
    diverged: Option<String>,
}

/// Something that can be started on the VM now: its confirmation page and label.
pub struct Action {
    pub href: String,
    pub label: &'static str,
    pub class: &'static str,
}

#[derive(Template)]
#[template(path = "console/vm.html")]
struct VmPage {
    layout: Layout,
    name: String,
    state: Badge,
    facts: Vec<(&'static str, String)>,
    disks: Vec<DiskRow>,
    target: Option<TargetVm>,
    active: Option<(String, Badge)>,
    last_drill: Option<Drill>,
    actions: Vec<Action>,
    runs: Vec<RunRow>,
}

/// A run in a table, by its whole id: ids are time-ordered (UUIDv7), so the runs of
/// one minute share their first eight characters, and the CLI takes any unambiguous
/// start of one.
pub struct RunRow {
    pub id: String,
    pub vm: String,
    pub workflow: String,
    pub state: Badge,
    pub created: String,
    pub age: String,
    pub took: String,
}

impl RunRow {
    pub fn of(run: &RunSummary, now: i64) -> RunRow {
        RunRow {
            id: run.id.clone(),
            vm: run.vm.clone(),
            workflow: format::workflow(&run.workflow, run.mode.as_deref()),
            state: Badge::of(&run.state),
            created: format::when(&run.created_at),
            age: format::age(&run.created_at, now),
            took: format::duration(run.duration_ms),
        }
    }
}

pub async fn show(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    match vm_page(&console, &session, &name).await {
        Ok(page) => page::ok(&page),
        Err(e) => page::error(&console, &session, e, Some(("/", "All protected VMs"))).await,
    }
}

async fn vm_page(console: &Console, session: &Session, name: &str) -> Result<VmPage, ApiError> {
    let app = &console.app;
    let store = &app.env.store;
    let vm = commands::vm_by_name(app, name).await?;
    let detail = view::vm_detail(app, &vm).await?;
    let now = store::now_ms();
    let appliance_vm = store
        .appliance(&vm.appliance)
        .await?
        .map(|a| a.vm_id.to_string());
    let target_id = detail.target.as_ref().map(|t| t.id.clone());
    let disks = detail
        .disks
        .iter()
        .map(|d| DiskRow {
            label: d.label.clone(),
            boot: d.boot,
            place: format!("{} {}:{}", d.controller, d.bus, d.unit),
            key: d.device_key,
            size: format::gib(d.capacity_bytes),
            replica: d.replica_volume_id.clone(),
            on: match &d.attached_vm_id {
                None => "nowhere (detached)".into(),
                Some(id) if Some(id) == appliance_vm.as_ref() => {
                    format!("appliance {}", detail.appliance)
                }
                Some(id) if Some(id) == target_id.as_ref() => "the target VM".into(),
                Some(id) => format!("VM {id}"),
            },
            device_id: d.device_id,
            device_path: d.device_path.clone(),
            diverged: d
                .diverged
                .as_ref()
                .map(|m| format!("diverged since {}: {}", format::when(&m.since), m.reason)),
        })
        .collect();
    let active = detail
        .active_run
        .as_ref()
        .map(|r| (r.id.clone(), Badge::of(&r.state)));
    let mut actions = Vec::new();
    if active.is_none() {
        let mut action = |path: &str, label, class| {
            actions.push(Action {
                href: format!("/vms/{}/{path}", detail.name),
                label,
                class,
            })
        };
        match detail.state.as_str() {
            "ready_for_failover" => {
                action("test-failover", "Test failover…", "primary");
                action("live-failover", "Live failover…", "danger");
            }
            "test_failed_over" => action("cleanup", "Clean up the test failover…", "primary"),
            "failed_over" => {
                action("rollback", "Roll back…", "danger");
                action("commit", "Commit…", "danger");
            }
            _ => {}
        }
    }
    let runs = commands::runs(
        app,
        commands::RunFilter {
            vm: Some(name),
            id_prefix: None,
            limit: 10,
        },
    )
    .await?
    .iter()
    .map(|r| RunRow::of(r, now))
    .collect();
    let last_drill = store
        .last_run(&vm.id, Workflow::TestFailover)
        .await?
        .map(|r| Drill::of(&r, now));
    let facts = vec![
        ("Appliance", detail.appliance.clone()),
        ("vCPU", detail.vcpu.to_string()),
        ("Memory", format!("{} MiB", detail.memory_mb)),
        (
            "Firmware",
            format!(
                "{}{}",
                detail.firmware,
                if detail.secure_boot {
                    ", secure boot"
                } else {
                    ""
                }
            ),
        ),
        ("Guest OS", detail.guest_os.clone()),
        ("Guest preparation", detail.guest_prep.clone()),
        ("NICs", detail.nics.len().to_string()),
        ("Source id", detail.source_id.clone()),
        ("Registered", format::when(&detail.created_at)),
    ];
    Ok(VmPage {
        layout: Layout::new(console, session, detail.name.clone(), Some(Nav::Vms)).await,
        name: detail.name.clone(),
        state: Badge::of(&detail.state),
        facts,
        disks,
        target: detail.target,
        active,
        last_drill,
        actions,
        runs,
    })
}

impl VmPage {
    fn gib(&self, bytes: &i64) -> String {
        format::gib(*bytes)
    }
}
