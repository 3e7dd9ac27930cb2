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
    Reboot {
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
            Op::Reboot { .. } => "rebootvirtualmachine",
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

/// Every async command's lower-case name, as [`Op::command`] gives it.
pub const COMMANDS: [&str; 11] = [
    "deployvirtualmachine",
    "startvirtualmachine",
    "stopvirtualmachine",
    "rebootvirtualmachine",
    "destroyvirtualmachine",
    "attachvolume",
    "detachvolume",
    "createsnapshot",
    "revertsnapshot",
    "deletesnapshot",
    "createvolume",
];

/// An async command's lower-case name (one of [`COMMANDS`]), written to a state file
/// as its name and read back as the same static string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandName(pub &'static str);

impl std::ops::Deref for CommandName {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl serde::Serialize for CommandName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CommandName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        COMMANDS
            .iter()
            .find(|c| **c == name)
            .map(|c| CommandName(c))
            .ok_or_else(|| serde::de::Error::custom(format!("unknown async command `{name}`")))
    }
}

/// A fault injected into an async job when it is submitted.
#[derive(Debug, Clone)]
pub enum JobFault {
    /// The job fails with this after its latency, changing nothing.
    Fail(CsError),
    /// CloudStack forgets the job as soon as it has given out its id: it never runs.
    Forget,
}

/// A job on its queue, waiting for the queue's worker.
pub struct QueuedJob {
    pub job_id: String,
    pub queue: String,
    pub op: Op,
    /// An injected failure: the job fails with this after its latency.
    pub fault: Option<CsError>,
}
