//! The work of one async job, as the API puts it on a queue: which command, on which
//! entities, and the fault injected into it, if any.

use crate::error::CsError;

/// The work of one async job.
#[derive(Debug, Clone)]
pub enum Op {
    Deploy {
        vm_id: String,
        start: bool,
    },
    Start {
        vm_id: String,
    },
    Stop {
        vm_id: String,
    },
    Destroy {
        vm_id: String,
        expunge: bool,
    },
    Attach {
        volume_id: String,
        vm_id: String,
        device_id: Option<i64>,
    },
    Detach {
        volume_id: String,
    },
    CreateSnapshot {
        snapshot_id: String,
    },
    RevertSnapshot {
        snapshot_id: String,
    },
    DeleteSnapshot {
        snapshot_id: String,
    },
    CreateVolume {
        volume_id: String,
        from_snapshot: bool,
    },
}

impl Op {
    /// The lower-case command, for latency lookup.
    pub fn command(&self) -> &'static str {
        match self {
            Op::Deploy { .. } => "deployvirtualmachine",
            Op::Start { .. } => "startvirtualmachine",
            Op::Stop { .. } => "stopvirtualmachine",
            Op::Destroy { .. } => "destroyvirtualmachine",
            Op::Attach { .. } => "attachvolume",
            Op::Detach { .. } => "detachvolume",
            Op::CreateSnapshot { .. } => "createsnapshot",
            Op::RevertSnapshot { .. } => "revertsnapshot",
            Op::DeleteSnapshot { .. } => "deletesnapshot",
            Op::CreateVolume { .. } => "createvolume",
        }
    }
}

/// A job on its queue, waiting for the queue's worker.
pub struct QueuedJob {
    pub job_id: String,
    pub queue: String,
    pub op: Op,
    /// An injected failure: the job fails with this after its latency.
    pub fault: Option<CsError>,
}
