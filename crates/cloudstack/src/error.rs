//! Errors from CloudStack, and what a caller may safely do after each one.
//!
//! The classification is the important part. A failed async job is CloudStack saying
//! it did nothing ([`ErrorClass::Definitive`]): the caller may unwind. A refused
//! connection, or CloudStack's 530 before it accepted a job, means the request had no
//! effect and can be sent again ([`ErrorClass::Transient`]). But a mutation whose
//! response never arrived — a timeout, a dropped connection, a proxy's 502 — may or may
//! not have happened ([`ErrorClass::Unknown`]): the caller must look at CloudStack's
//! state before it retries, or it will attach a volume twice.

use std::time::Duration;

use ids::JobId;

/// What a caller may do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// CloudStack refused or failed the operation and changed nothing: unwind.
    Definitive,
    /// The request had no effect; sending it again is safe.
    Transient,
    /// The request may or may not have taken effect: look before retrying.
    Unknown,
}

impl ErrorClass {
    /// The class in lowercase, as serialized and as used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Definitive => "definitive",
            ErrorClass::Transient => "transient",
            ErrorClass::Unknown => "unknown",
        }
    }
}

/// An error from a CloudStack call. Every variant names the command; those that
/// concern an async job name the job id.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// CloudStack answered the call itself with an error (HTTP status = `errorcode`).
    #[error(
        "CloudStack refused {command}: errorcode {errorcode}, cserrorcode {cserrorcode}: {errortext}"
    )]
    Api {
        command: String,
        errorcode: u16,
        cserrorcode: i64,
        errortext: String,
    },
    /// The async job ended in failure (`jobstatus` 2) or was cancelled (3).
    #[error("CloudStack job {job_id} ({command}) failed: errorcode {errorcode}: {errortext}")]
    JobFailed {
        command: String,
        job_id: JobId,
        errorcode: u16,
        errortext: String,
    },
    /// CloudStack does not know the job: `queryAsyncJobResult` was refused with 431, as
    /// `ParamProcessWorker` refuses an id that resolves to no async job — its record
    /// purged (`job.expire.minutes` after it ended), or the management server's
    /// database is not the one that accepted it (restored from a backup). Whether its
    /// work happened is not known: look before doing it again.
    #[error("CloudStack does not know job {job_id} ({command}): {errortext}")]
    JobUnknown {
        command: String,
        job_id: JobId,
        errortext: String,
    },
    /// An HTTP error without a CloudStack error body: a proxy or load balancer spoke.
    #[error("{command}: HTTP {status} from the endpoint without a CloudStack error body: {body}")]
    Http {
        command: String,
        mutation: bool,
        status: u16,
        body: String,
    },
    /// The connection could not be made; the request was never sent.
    #[error("{command}: could not connect to CloudStack")]
    Connect {
        command: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request was (or may have been) sent, but no complete response came back.
    #[error("{command}: no complete response from CloudStack after sending the request")]
    NoResponse {
        command: String,
        mutation: bool,
        #[source]
        source: reqwest::Error,
    },
    /// The job was still running when the caller's deadline passed.
    #[error("CloudStack job {job_id} ({command}) still running after {waited:?}")]
    JobTimeout {
        command: String,
        job_id: JobId,
        waited: Duration,
    },
    /// CloudStack refused to tell a job's state (`queryAsyncJobResult` failed for a
    /// reason other than a transient one): the job may still run and succeed.
    #[error("cannot read the state of CloudStack job {job_id} ({command})")]
    PollRefused {
        command: String,
        job_id: JobId,
        #[source]
        source: Box<Error>,
    },
    /// The response did not have the shape CloudStack gives.
    #[error("{command}: unexpected response from CloudStack: {detail}")]
    Decode {
        command: String,
        mutation: bool,
        detail: String,
    },
}

impl Error {
    /// What the caller may do next; see the module documentation.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Api { errorcode, .. } => match errorcode {
                // 530 on the call itself happens before any job is accepted; 429 is the
                // API rate limit; 534 is "resource unavailable". None did anything.
                429 | 530 | 534 => ErrorClass::Transient,
                _ => ErrorClass::Definitive,
            },
            // A job its management server was running when it stopped is failed at the
            // restart without knowing what the hypervisor did: look before retrying.
            Error::JobFailed { errortext, .. } if cancelled_by_restart(errortext) => {
                ErrorClass::Unknown
            }
            Error::JobFailed { .. } => ErrorClass::Definitive,
            Error::JobUnknown { .. } => ErrorClass::Unknown,
            Error::Http {
                status, mutation, ..
            } => {
                if *status >= 500 {
                    if *mutation {
                        ErrorClass::Unknown
                    } else {
                        ErrorClass::Transient
                    }
                } else {
                    // A 4xx from something that is not CloudStack: a wrong endpoint.
                    ErrorClass::Definitive
                }
            }
            Error::Connect { .. } => ErrorClass::Transient,
            Error::NoResponse { mutation, .. } => {
                if *mutation {
                    ErrorClass::Unknown
                } else {
                    ErrorClass::Transient
                }
            }
            Error::JobTimeout { .. } | Error::PollRefused { .. } => ErrorClass::Unknown,
            Error::Decode { mutation, .. } => {
                if *mutation {
                    ErrorClass::Unknown
                } else {
                    ErrorClass::Definitive
                }
            }
        }
    }

    /// Why CloudStack could not be reached, when this error means it is not answering
    /// now rather than answering no: the connection refused, reset or timed out, an
    /// HTTP 5xx without CloudStack's error body (a proxy or load balancer in front of a
    /// management server that is down), 503, or the API's rate limit (429). Such an
    /// outage is waited out (a management-server restart takes minutes); CloudStack's
    /// own answers — a refusal, a failed job — are not.
    pub fn unreachable(&self) -> Option<String> {
        match self {
            Error::Connect { source, .. } => Some(format!("cannot connect: {}", io_reason(source))),
            Error::NoResponse { source, .. } => Some(format!("no response: {}", io_reason(source))),
            Error::Http { status, .. } if *status >= 500 => {
                Some(format!("HTTP {status} without a CloudStack answer"))
            }
            Error::Api { errorcode, .. } if matches!(errorcode, 429 | 503) => {
                Some(format!("CloudStack answered {errorcode} (not now)"))
            }
            Error::PollRefused { source, .. } => source.unreachable(),
            _ => None,
        }
    }

    /// The CloudStack error code, where CloudStack gave one.
    pub fn errorcode(&self) -> Option<u16> {
        match self {
            Error::Api { errorcode, .. } | Error::JobFailed { errorcode, .. } => Some(*errorcode),
            Error::JobUnknown { .. } => Some(431),
            _ => None,
        }
    }

    /// CloudStack's error text, where it gave one.
    pub fn errortext(&self) -> Option<&str> {
        match self {
            Error::Api { errortext, .. }
            | Error::JobFailed { errortext, .. }
            | Error::JobUnknown { errortext, .. } => Some(errortext),
            _ => None,
        }
    }

    /// The async job id the error concerns, if any.
    pub fn job_id(&self) -> Option<&JobId> {
        match self {
            Error::JobFailed { job_id, .. }
            | Error::JobUnknown { job_id, .. }
            | Error::JobTimeout { job_id, .. }
            | Error::PollRefused { job_id, .. } => Some(job_id),
            _ => None,
        }
    }

    /// The CloudStack command that failed.
    pub fn command(&self) -> &str {
        match self {
            Error::Api { command, .. }
            | Error::JobFailed { command, .. }
            | Error::JobUnknown { command, .. }
            | Error::Http { command, .. }
            | Error::Connect { command, .. }
            | Error::NoResponse { command, .. }
            | Error::JobTimeout { command, .. }
            | Error::PollRefused { command, .. }
            | Error::Decode { command, .. } => command,
        }
    }
}

/// Whether a failed job's text is CloudStack's for a job cut short by a
/// management-server restart (`AsyncJobManagerImpl`: "job cancelled because of
/// management server restart", "Execution was cancelled because of server shutdown").
fn cancelled_by_restart(errortext: &str) -> bool {
    let text = errortext.to_ascii_lowercase();
    text.contains("cancelled because of management server restart")
        || text.contains("cancelled because of server shutdown")
}

/// The words for what went wrong under a transport error: the I/O error's kind where
/// there is one (`connection refused`), `timed out`, or reqwest's own words. Never the
/// URL: callers strip it before the error is kept.
fn io_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
                std::io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
                std::io::ErrorKind::TimedOut => "timed out".to_string(),
                std::io::ErrorKind::UnexpectedEof => "connection closed".to_string(),
                kind => kind.to_string(),
            };
        }
        source = e.source();
    }
    if error.is_request() || error.is_body() {
        "the connection closed before a complete response".to_string()
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_poll_leaves_the_job_unknown_not_failed() {
        let e = Error::PollRefused {
            command: "startVirtualMachine".into(),
            job_id: "j-1".into(),
            source: Box::new(api(431)),
        };
        assert_eq!(e.class(), ErrorClass::Unknown);
        assert_eq!(e.job_id().map(JobId::as_str), Some("j-1"));
        assert_eq!(e.command(), "startVirtualMachine");
    }

    fn api(code: u16) -> Error {
        Error::Api {
            command: "attachVolume".into(),
            errorcode: code,
            cserrorcode: 9999,
            errortext: "x".into(),
        }
    }

    #[test]
    fn refusals_of_the_call_itself_are_definitive_except_530_429_534() {
        for code in [401, 405, 430, 431, 432, 531, 532, 533, 535, 536, 537] {
            assert_eq!(api(code).class(), ErrorClass::Definitive, "code {code}");
        }
        for code in [429, 530, 534] {
            assert_eq!(api(code).class(), ErrorClass::Transient, "code {code}");
        }
    }

    #[test]
    fn a_class_reads_as_its_serialized_form() {
        for class in [
            ErrorClass::Definitive,
            ErrorClass::Transient,
            ErrorClass::Unknown,
        ] {
            assert_eq!(
                serde_json::to_value(class).unwrap(),
                serde_json::Value::from(class.as_str())
            );
        }
    }

    #[test]
    fn a_job_cut_short_by_a_management_server_restart_is_unknown() {
        for text in [
            "job cancelled because of management server restart",
            "Execution was cancelled because of server shutdown",
        ] {
            let e = Error::JobFailed {
                command: "attachVolume".into(),
                job_id: "j".into(),
                errorcode: 530,
                errortext: text.into(),
            };
            assert_eq!(e.class(), ErrorClass::Unknown, "{text}");
        }
    }

    #[test]
    fn a_job_cloudstack_does_not_know_is_unknown_not_failed() {
        let e = Error::JobUnknown {
            command: "attachVolume".into(),
            job_id: "j".into(),
            errortext: "Invalid parameter jobid value=j".into(),
        };
        assert_eq!(e.class(), ErrorClass::Unknown);
        assert_eq!(e.job_id().map(JobId::as_str), Some("j"));
        assert!(e.unreachable().is_none(), "CloudStack answered");
    }

    #[test]
    fn failed_jobs_are_definitive() {
        let e = Error::JobFailed {
            command: "attachVolume".into(),
            job_id: "j".into(),
            errorcode: 530,
            errortext: "deviceId 5 is used by vm 12".into(),
        };
        assert_eq!(e.class(), ErrorClass::Definitive);
        assert_eq!(e.job_id().map(JobId::as_str), Some("j"));
        assert_eq!(e.errorcode(), Some(530));
    }

    #[test]
    fn proxy_5xx_is_unknown_for_mutations_and_transient_for_reads() {
        let http = |status, mutation| Error::Http {
            command: "c".into(),
            mutation,
            status,
            body: String::new(),
        };
        assert_eq!(http(502, true).class(), ErrorClass::Unknown);
        assert_eq!(http(504, true).class(), ErrorClass::Unknown);
        assert_eq!(http(502, false).class(), ErrorClass::Transient);
        assert_eq!(http(404, false).class(), ErrorClass::Definitive);
    }

    #[test]
    fn a_proxy_5xx_and_not_now_answers_are_unreachable_but_refusals_are_not() {
        let http = |status| Error::Http {
            command: "c".into(),
            mutation: true,
            status,
            body: String::new(),
        };
        assert!(http(502).unreachable().is_some());
        assert!(http(503).unreachable().is_some());
        assert!(http(404).unreachable().is_none());
        assert!(api(429).unreachable().is_some());
        assert!(api(503).unreachable().is_some());
        assert!(api(530).unreachable().is_none(), "CloudStack answered");
        assert!(api(431).unreachable().is_none());
        let poll = Error::PollRefused {
            command: "attachVolume".into(),
            job_id: "j".into(),
            source: Box::new(http(502)),
        };
        assert!(poll.unreachable().is_some());
    }

    #[test]
    fn a_job_still_running_at_the_deadline_is_unknown() {
        let e = Error::JobTimeout {
            command: "detachVolume".into(),
            job_id: "j".into(),
            waited: Duration::from_secs(1),
        };
        assert_eq!(e.class(), ErrorClass::Unknown);
    }

    #[test]
    fn an_undecodable_mutation_response_is_unknown_but_a_read_is_definitive() {
        let d = |mutation| Error::Decode {
            command: "c".into(),
            mutation,
            detail: "x".into(),
        };
        assert_eq!(d(true).class(), ErrorClass::Unknown);
        assert_eq!(d(false).class(), ErrorClass::Definitive);
    }
}
