//! What the client commands print with `--output table`: plain ASCII, columns aligned
//! with spaces, no colors — so it reads the same in a terminal, a log and a golden file.
//! (`--output json` prints the API's bodies instead; see docs/cli.md.)

use server::appliances::ApplianceView;
use server::model::{
    Change, DiskView, RunDetail, RunSummary, StepView, TargetVm, UpdateRecord, VmDetail, VmSummary,
    VmUpdated,
};

/// Rows of cells aligned under a header; a note is a whole line after the row it
/// explains and does not widen the columns.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Row>,
}

enum Row {
    Cells(Vec<String>),
    Note(String),
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(Row::Cells(cells));
    }

    pub(crate) fn note(&mut self, text: String) {
        self.rows.push(Row::Note(text));
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            if let Row::Cells(cells) = row {
                for (w, c) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, (cell, width)) in cells.zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(&mut self.header.iter().copied());
        for row in &self.rows {
            match row {
                Row::Cells(cells) => out.push_str(&line(&mut cells.iter().map(String::as_str))),
                Row::Note(text) => {
                    out.push_str("    ");
                    out.push_str(text);
                    out.push('\n');
                }
            }
        }
        out
    }
}

pub(crate) use server::words::{duration, gib};

/// Milliseconds from `from` to `to` (RFC 3339 times), when both can be read.
fn between(from: &str, to: &str) -> Option<i64> {
    let a = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((b - a).num_milliseconds())
}

/// `+1.2 s` after the run's creation, or the time itself when it cannot be read.
fn offset(created: &str, at: &str) -> String {
    match between(created, at) {
        Some(ms) => format!("+{}", duration(ms)),
        None => at.to_string(),
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// `test_failover (replica mode)`.
pub(crate) fn workflow(run: &RunSummary) -> String {
    match &run.mode {
        Some(mode) => format!("{} ({mode} mode)", run.workflow),
        None => run.workflow.clone(),
    }
}

/// A job's error in words: the volume daemon's JSON record read as its detail.
pub(crate) use server::words::in_words as job_error;

/// `ferry vm list`.
pub(crate) fn vm_list(vms: &[VmSummary]) -> String {
    if vms.is_empty() {
        return "No protected VMs. Register one with `ferry vm add FILE`.\n".into();
    }
    let mut table = Table::new(&[
        "NAME",
        "STATE",
        "APPLIANCE",
        "DISKS",
        "CAPACITY",
        "ACTIVE RUN",
    ]);
    for vm in vms {
        // A VM with diverged replicas says so where its state is: it cannot fail over.
        let state = match vm.diverged {
            0 => vm.state.clone(),
            n => format!("{} (DIVERGED: {n})", vm.state),
        };
        table.row(vec![
            vm.name.clone(),
            state,
            vm.appliance.clone(),
            vm.disks.to_string(),
            gib(vm.capacity_bytes),
            or_dash(vm.active_run_id.as_deref()),
        ]);
    }
    table.render()
}

/// A protected VM as `ferry vm show` prints it: its spec, NICs and disks (with where
/// each replica is now), its active run, and — while it is failed over — the target
/// VM's device map from CloudStack ([`target_table`]).
pub fn vm_table(vm: &VmDetail) -> String {
    let mut out = format!("VM {}: {}\n", vm.name, vm.state);
    let secure_boot = if vm.secure_boot { ", secure boot" } else { "" };
    for (key, value) in [
        ("id", vm.id.clone()),
        ("source id", vm.source_id.clone()),
        ("appliance", vm.appliance.clone()),
        (
            "spec",
            format!(
                "{} vCPU, {} MiB memory, {} firmware{secure_boot}",
                vm.vcpu, vm.memory_mb, vm.firmware
            ),
        ),
        (
            "guest",
            format!("{}, guest preparation {}", vm.guest_os, vm.guest_prep),
        ),
        ("registered", vm.created_at.clone()),
    ] {
        out.push_str(&format!("  {key:<11} {value}\n"));
    }

    out.push_str("\nNICS\n");
    let mut nics = Table::new(&[
        "#",
        "MAC",
        "SOURCE NETWORK",
        "TEST NETWORK",
        "PRODUCTION NETWORK",
    ]);
    for nic in &vm.nics {
        nics.row(vec![
            nic.position.to_string(),
            nic.mac.clone(),
            nic.source_network.clone(),
            nic.test_network_id.clone(),
            nic.production_network_id.clone(),
        ]);
    }
    out.push_str(&nics.render());

    out.push_str("\nDISKS\n");
    out.push_str(&disk_table(&vm.disks, vm.target.as_ref()));
    let diverged: Vec<&DiskView> = vm.disks.iter().filter(|d| d.diverged.is_some()).collect();
    if !diverged.is_empty() {
        out.push_str(&format!(
            "\nDIVERGED: {} of {}'s replicas no longer hold what the source holds; it cannot \
             fail over until replication resynchronises them from the source and that is \
             recorded with `ferry vm resynced {}`.\n",
            diverged.len(),
            vm.name,
            vm.name
        ));
        for d in diverged {
            if let Some(m) = &d.diverged {
                out.push_str(&format!(
                    "  {} (disk {}) since {}{}: {}\n",
                    d.replica_volume_id,
                    d.device_key,
                    m.since,
                    m.run_id
                        .as_deref()
                        .map(|r| format!(", run {r}"))
                        .unwrap_or_default(),
                    m.reason
                ));
            }
        }
    }

    out.push('\n');
    match &vm.active_run {
        Some(run) => out.push_str(&format!(
            "Active run: {} ({}, {}); `ferry run show {}` tells more.\n",
            run.id,
            workflow(run),
            run.state,
            run.id
        )),
        None => out.push_str("Active run: none.\n"),
    }
    if let Some(target) = &vm.target {
        out.push('\n');
        out.push_str(&target_table(target));
    }
    if !vm.updates.is_empty() {
        out.push_str("\nUPDATES\n");
        out.push_str(&update_history(&vm.updates));
    }
    out
}

/// `ferry vm update`: what changed — or with `--dry-run` would change — or that
/// nothing did.
pub(crate) fn vm_updated(updated: &VmUpdated) -> String {
    let name = &updated.vm.name;
    let n = updated.changes.len();
    if n == 0 {
        return format!(
            "{name} is unchanged: the file is its registered definition. Nothing was written.\n"
        );
    }
    let head = if updated.updated {
        format!(
            "Updated {name}: {n} change(s). It keeps its id, state ({}) and runs; \
             `ferry vm show {name}` shows it whole.\n",
            updated.vm.state
        )
    } else {
        format!("Dry run: updating {name} would make {n} change(s). Nothing was written.\n")
    };
    let mut table = Table::new(&["CHANGE", "FIELD", "FROM", "TO"]);
    for change in &updated.changes {
        table.row(change_cells(change));
    }
    format!("{head}\nCHANGES\n{}", table.render())
}

/// A VM's recorded updates, oldest first, each change a row under its time.
fn update_history(updates: &[UpdateRecord]) -> String {
    let mut table = Table::new(&["AT", "CHANGE", "FIELD", "FROM", "TO"]);
    for update in updates {
        for (i, change) in update.changes.iter().enumerate() {
            let at = if i == 0 {
                update.at.clone()
            } else {
                String::new()
            };
            table.row([vec![at], change_cells(change)].concat());
        }
    }
    table.render()
}

/// A change as cells: what kind, the field, before and after (`-` when unset; sizes
/// in GiB).
fn change_cells(change: &Change) -> Vec<String> {
    let value = |v: &Option<String>| match v {
        Some(v) if change.field.ends_with(".capacity_bytes") => {
            v.parse().map(gib).unwrap_or_else(|_| v.clone())
        }
        Some(v) => v.clone(),
        None => "-".into(),
    };
    vec![
        change.change.clone(),
        change.field.clone(),
        value(&change.from),
        value(&change.to),
    ]
}

fn disk_table(disks: &[DiskView], target: Option<&TargetVm>) -> String {
    let mut table = Table::new(&[
        "LABEL",
        "DISK",
        "KEY",
        "SIZE",
        "BOOT",
        "REPLICA VOLUME",
        "ATTACHED TO",
        "DEVICE ID",
        "DEVICE PATH",
    ]);
    for d in disks {
        let attached = match (&d.attached_vm_id, target) {
            (Some(vm), Some(t)) if *vm == t.id => format!("{vm} (target)"),
            (Some(vm), _) => vm.clone(),
            (None, _) => "-".into(),
        };
        table.row(vec![
            d.label.clone(),
            format!("{}:{}:{}", d.controller, d.bus, d.unit),
            d.device_key.to_string(),
            gib(d.capacity_bytes),
            if d.boot { "boot" } else { "data" }.into(),
            d.replica_volume_id.clone(),
            attached,
            d.device_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            or_dash(d.device_path.as_deref()),
        ]);
    }
    table.render()
}

/// A failed-over VM's target as CloudStack has it now: a title line, the device map
/// (device id, volume, size, boot or data, the VMware disk it carries, the planned
/// device id) and the verification in words.
pub fn target_table(target: &TargetVm) -> String {
    let mut out = format!(
        "Target VM {} ({}): {}\n",
        target.name, target.id, target.state
    );
    if target.disks.is_empty() {
        out.push_str("  no volumes attached\n");
    } else {
        let mut table = Table::new(&[
            "DEVICE ID",
            "VOLUME",
            "SIZE",
            "ROLE",
            "VMWARE DISK",
            "PLANNED",
        ]);
        for d in &target.disks {
            let device = d
                .device_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into());
            let planned = d
                .planned_device_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into());
            table.row(vec![
                device,
                d.volume_id.clone(),
                gib(d.size_bytes),
                d.role.clone(),
                or_dash(d.label.as_deref()),
                planned,
            ]);
        }
        out.push_str(&table.render());
    }
    out.push_str(&format!(
        "{}: {}\n",
        if target.verified {
            "Verified"
        } else {
            "NOT VERIFIED"
        },
        target.verification
    ));
    out
}

/// `ferry run list`.
pub(crate) fn run_list(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "No runs yet. `ferry failover test NAME` starts one.\n".into();
    }
    let mut table = Table::new(&[
        "ID", "VM", "WORKFLOW", "MODE", "STATE", "CREATED", "DURATION",
    ]);
    for run in runs {
        table.row(vec![
            run.id.clone(),
            run.vm.clone(),
            run.workflow.clone(),
            or_dash(run.mode.as_deref()),
            if run.cancel_requested && run.state == "running" {
                "running (cancel requested)".into()
            } else {
                run.state.clone()
            },
            run.created_at.clone(),
            duration(run.duration_ms),
        ]);
        if let Some(error) = &run.error {
            table.note(format!("error: {error}"));
        }
    }
    table.render()
}

/// One line for a run a command just started or changed.
pub(crate) fn run_line(run: &RunSummary) -> String {
    format!(
        "run {}: {} of {}, {}",
        run.id,
        workflow(run),
        run.vm,
        run.state
    )
}

/// `[3/10]`: a step's place in its workflow.
pub(crate) fn step_place(step: &StepView, of: usize) -> String {
    let width = of.to_string().len();
    format!("[{:>width$}/{of}]", step.position + 1)
}

/// `ferry run show`: the run, each step with its timing, each CloudStack job, the
/// warnings and errors, then the story in sentences and what to do.
pub(crate) fn run_detail(detail: &RunDetail) -> String {
    let run = &detail.run;
    let mut out = format!(
        "Run {}: {} of {}, {}\n",
        run.id,
        workflow(run),
        run.vm,
        run.state
    );
    let mut facts = vec![("created", run.created_at.clone())];
    if let Some(finished) = &run.finished_at {
        facts.push(("finished", finished.clone()));
    }
    facts.push((
        if run.finished_at.is_some() {
            "took"
        } else {
            "running for"
        },
        duration(run.duration_ms),
    ));
    if run.cancel_requested {
        facts.push(("cancel", "requested by an operator".into()));
    }
    if let Some(w) = &run.waiting {
        facts.push((
            "WAITING",
            format!(
                "for {} since {} ({} so far); ferry keeps trying",
                w.for_,
                w.since,
                duration((w.seconds * 1000.0) as i64)
            ),
        ));
    }
    if let Some(plan_run) = &detail.plan_run {
        facts.push((
            "plan run",
            format!(
                "{} (plan {}, tier {}{}; `ferry plan run {}`)",
                plan_run.id,
                plan_run.plan,
                plan_run.tier,
                plan_run
                    .rto_ms
                    .map(|ms| format!(
                        ", ready {:.1} s after the plan run's request",
                        ms as f64 / 1000.0
                    ))
                    .unwrap_or_default(),
                plan_run.id
            ),
        ));
    }
    if let Some(owner) = &detail.lease_owner {
        facts.push((
            "worker",
            format!("{owner} (generation {})", detail.generation),
        ));
    }
    if let Some(error) = &run.error {
        facts.push(("error", error.clone()));
    }
    for (key, value) in facts {
        out.push_str(&format!("  {key:<12} {value}\n"));
    }

    out.push_str("\nSTEPS\n");
    let mut steps = Table::new(&["STEP", "NAME", "STATE", "ATTEMPTS", "STARTED", "DURATION"]);
    for step in &detail.steps {
        steps.row(vec![
            step_place(step, detail.steps.len()),
            step.name.clone(),
            step.state.clone(),
            step.attempts.to_string(),
            step.started_at
                .as_deref()
                .map(|at| offset(&run.created_at, at))
                .unwrap_or_else(|| "-".into()),
            step_time(step).unwrap_or_else(|| "-".into()),
        ]);
        if let Some(error) = &step.error {
            steps.note(format!("error: {error}"));
        }
        if let Some(warning) = &step.overdue {
            steps.note(format!("warning: {warning}"));
        }
    }
    out.push_str(&steps.render());

    out.push_str("\nCLOUDSTACK JOBS\n");
    if detail.jobs.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut jobs = Table::new(&["STEP", "KIND", "VOLUME", "VM", "JOB ID", "STATE", "AT"]);
        for job in &detail.jobs {
            jobs.row(vec![
                or_dash(job.step.as_deref()),
                job.kind.clone(),
                or_dash(job.volume_id.as_deref()),
                or_dash(job.vm_id.as_deref()),
                or_dash(job.job_id.as_deref()),
                job.state.clone(),
                offset(&run.created_at, &job.at),
            ]);
            if let Some(error) = &job.error {
                jobs.note(format!("error: {}", job_error(error)));
            }
            if let Some(warning) = &job.overdue {
                jobs.note(format!("warning: {warning}"));
            }
        }
        out.push_str(&jobs.render());
    }

    let notable: Vec<_> = detail.events.iter().filter(|e| e.level != "info").collect();
    if !notable.is_empty() {
        out.push_str("\nWARNINGS AND ERRORS\n");
        let mut events = Table::new(&["AT", "LEVEL", "STEP", "MESSAGE"]);
        for e in notable {
            events.row(vec![
                offset(&run.created_at, &e.at),
                e.level.clone(),
                or_dash(e.step.as_deref()),
                e.message.clone(),
            ]);
        }
        out.push_str(&events.render());
    }

    out.push_str(&story(detail));
    out
}

/// The run's story and advice, as sections.
pub(crate) fn story(detail: &RunDetail) -> String {
    let mut out = String::new();
    if !detail.story.is_empty() {
        out.push_str("\nWHAT HAPPENED\n");
        for sentence in &detail.story {
            out.push_str(&format!("  {sentence}\n"));
        }
    }
    if let Some(advice) = &detail.advice {
        out.push_str("\nWHAT TO DO\n");
        out.push_str(&format!("  {advice}\n"));
    }
    out
}

/// A step's own times: its action's, and its undo's once it was undone (or is being
/// undone, or its undo failed) — `1.2 s, undo 0.8 s`; each from its own start.
pub(crate) fn step_time(step: &StepView) -> Option<String> {
    match (step.duration_ms, step.undo_duration_ms) {
        (Some(action), Some(undo)) => {
            Some(format!("{}, undo {}", duration(action), duration(undo)))
        }
        (Some(action), None) => Some(duration(action)),
        (None, Some(undo)) => Some(format!("undo {}", duration(undo))),
        (None, None) => None,
    }
}

/// `ferry appliance list`.
pub(crate) fn appliance_list(all: &[ApplianceView]) -> String {
    if all.is_empty() {
        return "No appliances. Name them in the [[appliances]] of ferry serve's config.\n".into();
    }
    let mut table = Table::new(&[
        "NAME",
        "AGENT",
        "STATUS",
        "VERSION",
        "BACKLOG",
        "VMS",
        "REPLICAS",
        "FREE SLOTS",
        "DEVICES",
    ]);
    for a in all {
        let count = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
        table.row(vec![
            a.name.clone(),
            a.agent_url.clone().unwrap_or_else(|| "in-process".into()),
            if a.reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            }
            .to_string(),
            or_dash(a.version.as_deref()),
            count(a.backlog),
            a.vms.to_string(),
            a.replicas.to_string(),
            match a.free_slots {
                Some(free) => format!("{free} of {}", a.data_volume_limit),
                None => "?".into(),
            },
            count(a.devices),
        ]);
        if let Some(error) = &a.error {
            table.note(error.clone());
        }
    }
    table.render()
}

/// `ferry appliance show NAME`.
pub(crate) fn appliance_table(a: &ApplianceView) -> String {
    let unknown = |n: Option<u64>| n.map_or_else(|| "unknown".to_string(), |n| n.to_string());
    let mut out = format!("Appliance {}\n", a.name);
    for (key, value) in [
        ("vm id", a.vm_id.clone()),
        ("zone", a.zone_id.clone()),
        (
            "agent",
            a.agent_url
                .clone()
                .unwrap_or_else(|| "in-process (ferry serve)".into()),
        ),
        (
            "status",
            match (&a.error, a.reachable) {
                (Some(error), true) => format!("reachable ({error})"),
                (None, true) => "reachable".into(),
                (Some(error), false) => format!("UNREACHABLE: {error}"),
                (None, false) => "UNREACHABLE".into(),
            },
        ),
        (
            "version",
            match (&a.version, a.api_revision) {
                (Some(v), Some(r)) => format!("ferry {v}, agent API revision {r}"),
                _ => "unknown".into(),
            },
        ),
        ("backlog", unknown(a.backlog)),
        (
            "protected",
            format!("{} VM(s), {} replica volume(s)", a.vms, a.replicas),
        ),
        (
            "slots",
            match (a.data_volumes_attached, a.free_slots) {
                (Some(used), Some(free)) => format!(
                    "{used} of {} data volumes attached, {free} free",
                    a.data_volume_limit
                ),
                _ => format!("unknown (limit {})", a.data_volume_limit),
            },
        ),
        ("devices", unknown(a.devices)),
    ] {
        out.push_str(&format!("  {key:<10} {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undone_step_shows_its_action_and_its_undo_each_its_own() {
        let mut step = StepView {
            position: 2,
            name: "create-vm".into(),
            state: "undone".into(),
            attempts: 1,
            started_at: None,
            finished_at: None,
            duration_ms: Some(1_200),
            undo_started_at: None,
            undo_finished_at: None,
            undo_duration_ms: Some(800),
            error: None,
            overdue: None,
        };
        assert_eq!(step_time(&step).as_deref(), Some("1.2 s, undo 0.8 s"));
        step.undo_duration_ms = None;
        assert_eq!(step_time(&step).as_deref(), Some("1.2 s"));
        step.duration_ms = None;
        assert_eq!(step_time(&step), None);
    }

    #[test]
    fn columns_line_up_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(&["A", "LONGER", "C"]);
        t.row(vec!["wide cell".into(), "x".into(), "".into()]);
        t.note("error: below the row".into());
        t.row(vec!["y".into(), "z".into(), "last".into()]);
        assert_eq!(
            t.render(),
            "A          LONGER  C\nwide cell  x\n    error: below the row\ny          z       last\n"
        );
    }

    #[test]
    fn sizes_and_durations_read_as_an_operator_would_say_them() {
        assert_eq!(gib(107 << 30), "107 GiB");
        assert_eq!(gib(1 << 29), "0.5 GiB");
        assert_eq!(duration(1234), "1.2 s");
        assert_eq!(duration(65_000), "1 min 05 s");
        assert_eq!(duration(7_380_000), "2 h 03 min");
        assert_eq!(
            offset("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.500Z"),
            "+1.5 s"
        );
    }

    #[test]
    fn a_job_error_recorded_as_json_reads_as_its_detail() {
        assert_eq!(
            job_error(
                r#"{"class":"definitive","detail":"CloudStack job j (attachVolume) failed"}"#
            ),
            "CloudStack job j (attachVolume) failed"
        );
        assert_eq!(job_error("plain words"), "plain words");
    }
}
