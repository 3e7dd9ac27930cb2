//! The daemon's error, and what a caller may do after each one.
//!
//! Unlike most library errors in ferry, [`Error`] carries no `#[source]` chain: it is
//! persisted in the journal (so that a repeated request gets the *same* error back)
//! and sent over HTTP (so that [`crate::HttpClient`] returns exactly what [`crate::Local`]
//! would). Both need a value, not a chain of live error objects, so the cause is
//! rendered — whole chain — into `detail` at the point where the daemon meets
//! CloudStack or the journal.
//!
//! [`Class`] tells the caller what is safe next. It mirrors
//! [`cloudstack::ErrorClass`], with one difference that idempotency keys make: after
//! an *unknown* outcome the caller does not have to look anywhere itself — asking again
//! with the same key makes the daemon look and finish the operation.

use serde::{Deserialize, Serialize};

use crate::journal::JournalError;
use crate::presence::Presence;

/// The result of every volume-daemon call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller may do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Nothing was done and doing it again will fail again: unwind.
    Definitive,
    /// Nothing was done (or the operation is recorded and will resume); asking again
    /// later is safe.
    Transient,
    /// The operation may or may not have happened. Asking again with the same
    /// idempotency key is safe: the daemon looks before it acts.
    Unknown,
}

/// Who did not answer, and why: see [`Error::unreachable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub of: String,
    pub reason: String,
}

impl From<cloudstack::ErrorClass> for Class {
    fn from(c: cloudstack::ErrorClass) -> Self {
        match c {
            cloudstack::ErrorClass::Definitive => Class::Definitive,
            cloudstack::ErrorClass::Transient => Class::Transient,
            cloudstack::ErrorClass::Unknown => Class::Unknown,
        }
    }
}

/// An error from a volume-daemon call. The serde tag `code` is the stable,
/// machine-readable name that the REST API returns as `error.code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Error {
    /// The request is malformed or names something impossible (device id 3, …).
    #[error("bad request: {detail}")]
    BadRequest { detail: String },
    /// Well-formed JSON that does not fit the call (a missing or unknown field).
    #[error("unprocessable request: {detail}")]
    Unprocessable { detail: String },
    /// A mutating request without an idempotency key.
    #[error("an idempotency key is required on every mutating call (`Idempotency-Key` header)")]
    MissingIdempotencyKey,
    /// No or wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The thing named does not exist (a route, a volume, an appliance).
    #[error("not found: {detail}")]
    NotFound { detail: String },
    /// The idempotency key was first used for a different request.
    #[error(
        "idempotency key {key:?} was first used for a different request ({first}); use a new key for a new request"
    )]
    IdempotencyConflict { key: String, first: String },
    /// The caller's lease was taken over by a newer worker of the same run.
    #[error(
        "run {run_id}: generation {generation} is fenced off, generation {highest} has taken over; stop writing"
    )]
    Fenced {
        run_id: String,
        generation: i64,
        highest: i64,
    },
    /// ferry never deletes a replica volume.
    #[error(
        "volume {volume_id} is a replica volume: ferry never deletes replica volumes (only volumes it created, such as clones)"
    )]
    ReplicaVolume { volume_id: String },
    /// ferry deletes only volumes it created.
    #[error(
        "volume {volume_id} was not created by ferry (it is neither a clone nor a placeholder ferry recorded): refusing to delete it"
    )]
    NotCreatedByFerry { volume_id: String },
    /// CloudStack failed or refused the operation, or could not be asked.
    #[error("CloudStack {command}: {detail}")]
    #[serde(rename = "cloudstack")]
    CloudStack {
        class: Class,
        command: String,
        #[serde(default)]
        errorcode: Option<u16>,
        #[serde(default)]
        job_id: Option<String>,
        detail: String,
        /// Set when CloudStack did not answer (refused, reset, timed out, a proxy's
        /// 5xx): why. The caller waits such an outage out instead of failing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unreachable: Option<String>,
    },
    /// Neither CloudStack nor looking at it could tell what happened; the operation
    /// stays recorded as unfinished.
    #[error(
        "the outcome of operation {op_id} is not known yet: {detail}; ask again with the same idempotency key"
    )]
    OutcomeUnknown {
        op_id: String,
        detail: String,
        /// Set when the outcome is unknown because CloudStack did not answer: why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unreachable: Option<String>,
    },
    /// State in CloudStack contradicts the request (the volume is on another VM, at
    /// another device, …): someone else acted.
    #[error("conflict: {detail}")]
    Conflict { detail: String },
    /// A device did not appear or disappear in time.
    #[error("volume {volume_id}: device did not {presence} within {waited_ms} ms")]
    DeviceTimeout {
        volume_id: String,
        presence: Presence,
        waited_ms: u64,
    },
    /// Two disks or two volumes claim one device path.
    #[error("device conflict: {detail}")]
    DeviceConflict { detail: String },
    /// The guest-preparation command could not be started, exited non-zero, was
    /// killed, ran past its timeout, or was interrupted by a restart of the daemon (it
    /// is never run twice for one idempotency key). The disk may be partly changed:
    /// the caller reverts it to its snapshot.
    #[error("{0}")]
    GuestPrepFailed(Box<GuestPrepFailure>),
    /// The journal could not be read or written.
    #[error("journal: {detail}")]
    Journal { detail: String },
    /// The volume daemon could not be reached, or answered something unreadable
    /// (HTTP client only).
    #[error("volume daemon at {url}: {detail}")]
    Transport {
        url: String,
        /// Whether the request may have reached the daemon.
        maybe_sent: bool,
        detail: String,
        /// The appliance whose agent it is, when the client knows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        appliance: Option<String>,
    },
    /// The request was meant for another appliance's agent: the engine's
    /// `[[appliances]]` entry names the wrong `volumed_url`.
    #[error(
        "this volume agent serves appliance VM {serves}, not {asked}: check the volumed_url of that appliance in the engine's configuration"
    )]
    WrongAppliance { serves: String, asked: String },
    /// The engine and the agent speak different revisions of the agent API.
    #[error(
        "version mismatch: this side is ferry {ours} (agent API revision {ours_revision}), the other is ferry {theirs} (revision {theirs_revision}); run the same ferry release on the engine and on every appliance's agent"
    )]
    VersionMismatch {
        ours: String,
        ours_revision: u32,
        theirs: String,
        theirs_revision: u32,
    },
    /// A bug or a stopped daemon; never bad input.
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

impl Error {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Error::BadRequest {
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Error::NotFound {
            detail: detail.into(),
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Error::Conflict {
            detail: detail.into(),
        }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Error::Internal {
            detail: detail.into(),
        }
    }

    /// A CloudStack client error, with its whole chain in `detail`.
    pub fn cloudstack(e: &cloudstack::Error) -> Self {
        Error::CloudStack {
            class: e.class().into(),
            command: e.command().to_string(),
            errorcode: e.errorcode(),
            job_id: e.job_id().map(ToString::to_string),
            detail: chain(e),
            unreachable: e.unreachable(),
        }
    }

    /// When this error means a party did not answer rather than answered no: who
    /// (`CloudStack`, `the volume daemon`) and why. Such an outage is waited out.
    pub fn unreachable(&self) -> Option<Unreachable> {
        match self {
            Error::CloudStack {
                unreachable: Some(reason),
                ..
            }
            | Error::OutcomeUnknown {
                unreachable: Some(reason),
                ..
            } => Some(Unreachable {
                of: "CloudStack".into(),
                reason: reason.clone(),
            }),
            Error::Transport {
                url,
                detail,
                appliance,
                ..
            } => Some(Unreachable {
                of: match appliance {
                    Some(a) => format!("the volume agent on {a}"),
                    None => "the volume daemon".into(),
                },
                reason: format!("{url}: {detail}"),
            }),
            _ => None,
        }
    }

    /// A journal error: a refused fencing token or device path keeps its meaning;
    /// anything else is [`Error::Journal`] with the whole chain.
    pub(crate) fn journal(e: JournalError) -> Self {
        match e {
            JournalError::Fenced {
                run_id,
                generation,
                highest,
            } => Error::Fenced {
                run_id,
                generation,
                highest,
            },
            JournalError::DevicePathTaken {
                path,
                other_volume_id,
            } => Error::DeviceConflict {
                detail: format!("{path} is already recorded for volume {other_volume_id}"),
            },
            other => Error::Journal {
                detail: chain(&other),
            },
        }
    }

    /// The stable machine-readable name (`error.code` in the REST API).
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { .. } => "bad_request",
            Error::Unprocessable { .. } => "unprocessable",
            Error::MissingIdempotencyKey => "missing_idempotency_key",
            Error::Unauthorized => "unauthorized",
            Error::NotFound { .. } => "not_found",
            Error::IdempotencyConflict { .. } => "idempotency_conflict",
            Error::Fenced { .. } => "fenced",
            Error::ReplicaVolume { .. } => "replica_volume",
            Error::NotCreatedByFerry { .. } => "not_created_by_ferry",
            Error::CloudStack { .. } => "cloudstack",
            Error::OutcomeUnknown { .. } => "outcome_unknown",
            Error::Conflict { .. } => "conflict",
            Error::DeviceTimeout { .. } => "device_timeout",
            Error::DeviceConflict { .. } => "device_conflict",
            Error::GuestPrepFailed(_) => "guest_prep_failed",
            Error::Journal { .. } => "journal",
            Error::Transport { .. } => "transport",
            Error::WrongAppliance { .. } => "wrong_appliance",
            Error::VersionMismatch { .. } => "version_mismatch",
            Error::Internal { .. } => "internal",
        }
    }

    /// The error in words for whoever reads it past the daemon's caller — a run's error
    /// in `ferry run show`: without the advice to the API's caller (which idempotency
    /// key to send), which ferry's steps follow by themselves.
    pub fn without_api_advice(&self) -> String {
        match self {
            Error::OutcomeUnknown { op_id, detail, .. } => {
                format!("the outcome of operation {op_id} is not known yet: {detail}")
            }
            Error::IdempotencyConflict { key, first } => {
                format!("idempotency key {key:?} was first used for a different request ({first})")
            }
            other => other.to_string(),
        }
    }

    /// What the caller may do next; see [`Class`].
    pub fn class(&self) -> Class {
        match self {
            Error::CloudStack { class, .. } => *class,
            Error::OutcomeUnknown { .. } => Class::Unknown,
            Error::Transport {
                maybe_sent: true, ..
            } => Class::Unknown,
            Error::Transport { .. } | Error::Journal { .. } | Error::DeviceTimeout { .. } => {
                Class::Transient
            }
            Error::Internal { .. } => Class::Unknown,
            Error::BadRequest { .. }
            | Error::Unprocessable { .. }
            | Error::MissingIdempotencyKey
            | Error::Unauthorized
            | Error::NotFound { .. }
            | Error::IdempotencyConflict { .. }
            | Error::Fenced { .. }
            | Error::ReplicaVolume { .. }
            | Error::NotCreatedByFerry { .. }
            | Error::Conflict { .. }
            | Error::DeviceConflict { .. }
            | Error::GuestPrepFailed(_)
            | Error::WrongAppliance { .. }
            | Error::VersionMismatch { .. } => Class::Definitive,
        }
    }

    /// Whether this error ends an operation for good (it is then recorded as the
    /// operation's result). Everything else leaves the operation unfinished, to be
    /// finished by a repeated request or by [`crate::Local::resume_unfinished`].
    pub(crate) fn is_final(&self) -> bool {
        self.class() == Class::Definitive
    }

    /// The HTTP status the REST API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::BadRequest { .. } | Error::MissingIdempotencyKey => 400,
            Error::Unauthorized => 401,
            Error::NotFound { .. } => 404,
            Error::IdempotencyConflict { .. }
            | Error::Fenced { .. }
            | Error::Conflict { .. }
            | Error::DeviceConflict { .. }
            | Error::VersionMismatch { .. } => 409,
            Error::WrongAppliance { .. } => 421,
            Error::ReplicaVolume { .. }
            | Error::NotCreatedByFerry { .. }
            | Error::Unprocessable { .. }
            | Error::GuestPrepFailed(_) => 422,
            Error::CloudStack { class, .. } => match class {
                // CloudStack understood and refused: the request cannot be carried out.
                Class::Definitive => 422,
                Class::Transient | Class::Unknown => 502,
            },
            Error::OutcomeUnknown { .. } => 502,
            Error::DeviceTimeout { .. } => 504,
            Error::Journal { .. } | Error::Transport { .. } | Error::Internal { .. } => 500,
        }
    }
}

/// What [`Error::GuestPrepFailed`] says (boxed: the error stays small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestPrepFailure {
    pub volume_id: String,
    /// The device path the command was given.
    pub device: String,
    /// The program and its arguments, as one line.
    pub command: String,
    /// "exited with status 3", "was killed after its timeout of 60 s", …
    pub reason: String,
    /// The last few KiB of what it printed.
    #[serde(default)]
    pub stdout_tail: String,
    #[serde(default)]
    pub stderr_tail: String,
}

impl std::fmt::Display for GuestPrepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guest preparation of volume {} ({}) failed: `{}` {}",
            self.volume_id, self.device, self.command, self.reason
        )?;
        for (name, text) in [("stdout", &self.stdout_tail), ("stderr", &self.stderr_tail)] {
            if !text.is_empty() {
                write!(f, "; {name}: {text}")?;
            }
        }
        Ok(())
    }
}

impl From<GuestPrepFailure> for Error {
    fn from(f: GuestPrepFailure) -> Self {
        Error::GuestPrepFailed(Box::new(f))
    }
}

/// `e` and all its sources, joined with ": ".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_api_advice_an_error_says_no_key_to_send() {
        let unknown = Error::OutcomeUnknown {
            op_id: "op-1".into(),
            detail: "CloudStack shows nothing yet".into(),
            unreachable: None,
        };
        assert!(
            unknown
                .to_string()
                .contains("ask again with the same idempotency key")
        );
        assert_eq!(
            unknown.without_api_advice(),
            "the outcome of operation op-1 is not known yet: CloudStack shows nothing yet"
        );
        let conflict = Error::IdempotencyConflict {
            key: "k".into(),
            first: "attach {}".into(),
        };
        assert!(!conflict.without_api_advice().contains("use a new key"));
        let other = Error::not_found("volume v");
        assert_eq!(other.without_api_advice(), other.to_string());
    }

    #[test]
    fn errors_round_trip_through_json_with_their_code() {
        let errors = [
            Error::bad_request("x"),
            Error::MissingIdempotencyKey,
            Error::ReplicaVolume {
                volume_id: "v".into(),
            },
            Error::CloudStack {
                class: Class::Definitive,
                command: "attachVolume".into(),
                errorcode: Some(530),
                job_id: Some("j".into()),
                detail: "deviceId 4 is used by vm 7".into(),
                unreachable: None,
            },
            Error::OutcomeUnknown {
                op_id: "op".into(),
                detail: "looking at CloudStack failed".into(),
                unreachable: Some("cannot connect: connection refused".into()),
            },
            Error::DeviceTimeout {
                volume_id: "v".into(),
                presence: Presence::Appears,
                waited_ms: 5,
            },
            GuestPrepFailure {
                volume_id: "v".into(),
                device: "/dev/disk/by-id/virtio-v".into(),
                command: "prep /dev/disk/by-id/virtio-v".into(),
                reason: "exited with status 3".into(),
                stdout_tail: "".into(),
                stderr_tail: "no virtio iso".into(),
            }
            .into(),
        ];
        for e in errors {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["code"], e.code(), "{v}");
            assert_eq!(serde_json::from_value::<Error>(v).unwrap(), e);
        }
    }

    #[test]
    fn a_failed_guest_prep_says_why_with_its_output() {
        let e: Error = GuestPrepFailure {
            volume_id: "v".into(),
            device: "/dev/disk/by-id/virtio-v".into(),
            command: "prep -i disk /dev/disk/by-id/virtio-v".into(),
            reason: "exited with status 3".into(),
            stdout_tail: "".into(),
            stderr_tail: "no virtio iso".into(),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "guest preparation of volume v (/dev/disk/by-id/virtio-v) failed: \
             `prep -i disk /dev/disk/by-id/virtio-v` exited with status 3; stderr: no virtio iso"
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["code"], "guest_prep_failed");
        assert_eq!(
            v["stderr_tail"], "no virtio iso",
            "flat in the error body: {v}"
        );
    }

    #[test]
    fn bad_input_is_never_a_500() {
        for e in [
            Error::bad_request("x"),
            Error::MissingIdempotencyKey,
            Error::not_found("x"),
            Error::ReplicaVolume {
                volume_id: "v".into(),
            },
            Error::IdempotencyConflict {
                key: "k".into(),
                first: "attach".into(),
            },
        ] {
            assert!(e.http_status() < 500, "{e:?}");
            assert_eq!(e.class(), Class::Definitive);
        }
    }
}
