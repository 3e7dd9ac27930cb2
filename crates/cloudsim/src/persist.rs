//! `--state-file`: the simulated cloud kept across a stop and a start, as CloudStack
//! keeps its database across a management-server restart.
//!
//! The whole [`State`] (VMs, volumes, snapshots, async jobs and their results) is
//! written as JSON, atomically (a temporary file renamed over the old one): before any
//! call that is not a read is answered — as CloudStack commits a job before it returns
//! the job's id — and within [`SAVE_EVERY`] of any other change (a job's progress or
//! end), and once more when the simulator stops. A process killed outright loses at
//! most a job's progress of that last moment, never a job it has answered for.
//!
//! At a start from a state file, the jobs that were in flight are what CloudStack makes
//! of them: its `AsyncJobManagerImpl.start()` calls `resetJobProcess(msid, 530, "job
//! cancelled because of management server restart")` for the jobs the stopped server
//! was running, so each ends failed (`jobstatus` 2) with errorcode 530 and that text,
//! and a poll after the restart gets that answer. cloudsim then treats their work as
//! not done — the entities go back from their transitional states (`Attaching`,
//! `Starting`, …) to where they were, a snapshot being taken ends `Error`, a volume
//! being created from a snapshot is gone — which is what the job's failure claims.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::sim::Shared;
use crate::state::entities::{State, now};

/// How soon a change reaches the state file.
pub const SAVE_EVERY: Duration = Duration::from_millis(100);

/// CloudStack's text for a job its management server was running when it stopped.
pub const CANCELLED_BY_RESTART: &str = "job cancelled because of management server restart";

/// The state saved in `path`, or `None` when there is no such file yet.
pub(crate) fn load(path: &Path) -> Result<Option<State>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a cloudsim state file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Ends the jobs that were in flight when the simulator stopped, as CloudStack does at
/// a restart (see the module doc). Returns how many.
pub(crate) fn after_restart(state: &mut State) -> usize {
    let pending: Vec<(String, &'static str, Option<String>)> = state
        .jobs
        .values()
        .filter(|j| j.status == 0)
        .map(|j| (j.id.clone(), j.command.0, j.instance_id.clone()))
        .collect();
    for (job_id, command, instance) in &pending {
        if let Some(job) = state.jobs.get_mut(job_id) {
            job.status = 2;
            job.result_code = 530;
            job.completed = Some(now());
            job.result = Some(json!({"errorcode": 530, "errortext": CANCELLED_BY_RESTART}));
        }
        match (*command, instance) {
            ("createsnapshot", Some(id)) => state.abort_snapshot(id),
            ("createvolume", Some(id))
                if state
                    .volumes
                    .get(id)
                    .is_some_and(|v| v.state == "Allocated" && v.vm_id.is_none()) =>
            {
                state.abort_create_volume(id)
            }
            _ => {}
        }
    }
    // Whatever else a job had begun goes back to where it was.
    let volumes: Vec<String> = state
        .volumes
        .values()
        .filter(|v| v.prior_state.is_some())
        .map(|v| v.id.clone())
        .collect();
    for id in volumes {
        state.abort_volume(&id);
    }
    for vm in state.vms.values_mut() {
        match vm.state.as_str() {
            "Starting" => vm.state = "Stopped".into(),
            "Stopping" => vm.state = "Running".into(),
            _ => {}
        }
    }
    pending.len()
}

/// Writes the state file now, if there is one: before a call that changed the cloud is
/// answered, as CloudStack commits a job to its database before it returns the job's id.
pub(crate) fn save_now(inner: &crate::sim::Inner) {
    if let Some(path) = &inner.state_file {
        let text = {
            let state = inner.state.lock().expect("poisoned");
            serde_json::to_string(&*state).expect("the state serializes")
        };
        if let Err(e) = write_atomically(path, &text) {
            eprintln!("cloudsim: cannot write {}: {e}", path.display());
        }
    }
}

/// Keeps `path` up to date with the simulator's state until it stops, then writes it a
/// last time.
pub(crate) fn spawn_saver(inner: Shared, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(SAVE_EVERY) => false,
                _ = inner.shutdown.cancelled() => true,
            };
            let text = {
                let state = inner.state.lock().expect("poisoned");
                serde_json::to_string(&*state).expect("the state serializes")
            };
            if text != last {
                match write_atomically(&path, &text) {
                    Ok(()) => last = text,
                    Err(e) => eprintln!("cloudsim: cannot write {}: {e}", path.display()),
                }
            }
            if stopping {
                return;
            }
        }
    })
}

/// Writes `text` to `path` through a temporary file of its own (the saver and a
/// request may write at once), renamed over it: a reader sees the old or the new.
pub(crate) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{n}"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
