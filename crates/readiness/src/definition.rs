//! The gates as a recovery plan writes them (`[[gates]]` tables, `docs/readiness.md`)
//! and how they become [`Gate`]s.
//!
//! A table is read loosely — every field optional, numbers as TOML's integers — and
//! then checked field by field, so that one reading reports **every** problem with the
//! field it concerns (`gates[1].port: must be 1–65535, not 70000`) instead of stopping
//! at the first that serde meets. Only what cannot be read at all stops it early:
//! TOML that does not parse, a value of the wrong type, or a field no gate has
//! (`deny_unknown_fields`: a misspelt `deadline = 30` is refused, not ignored).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::gate::{Check, CommandCheck, Gate, HttpCheck};
use crate::problem::Problem;
use crate::seen::and_list;

/// How long a gate is tried when its table does not say: generous, because a gate
/// that passes ends at once (only a failing one waits it out) and a guest after a
/// failover may boot slowly and recover a database before it serves.
pub const DEFAULT_DEADLINE_SECS: u64 = 600;
/// The pause after an attempt that did not pass.
pub const DEFAULT_INTERVAL_SECS: u64 = 5;
/// How long one attempt of each kind may take when its table does not say.
pub const DEFAULT_TCP_TIMEOUT_SECS: u64 = 5;
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 60;
/// The longest deadline, interval or timeout: a day.
const MAX_SECS: i64 = 86_400;

/// One `[[gates]]` table as written. Which fields a gate may have depends on its
/// `kind`; [`validate`] says which are missing, out of range or not the kind's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// `running`, `tcp`, `http` or `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<i64>,
    /// `tcp`, `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// `http`: the path and query, `/` when not said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http`: HTTPS rather than HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<bool>,
    /// `http` with `https = true`: accept any certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    /// `http`: the statuses that pass, `[200]` when not said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Vec<i64>>,
    /// `command`: the program, an absolute path or a name looked up on `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// `tcp` (to connect), `http` (a request), `command` (a run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<i64>,
}

/// A document of gates and nothing else (`[[gates]]` tables), as [`parse`] reads it.
/// A recovery plan holds `Vec<GateSpec>` in its own document instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatesFile {
    #[serde(default)]
    pub gates: Vec<GateSpec>,
}

/// Gates that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("the gates cannot be read as TOML")]
    Syntax(#[source] toml::de::Error),
    #[error("the gates have {} problem(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

/// The problems as an indented list, one a line.
fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a document of `[[gates]]` tables into gates, or says everything wrong with
/// them.
pub fn parse(text: &str) -> Result<Vec<Gate>, DefinitionError> {
    let file: GatesFile = toml::from_str(text).map_err(DefinitionError::Syntax)?;
    to_gates(&file.gates, "gates").map_err(DefinitionError::Invalid)
}

/// Every problem of `specs`, in order, each field named under `at` (`gates` gives
/// `gates[1].port`). Empty when [`to_gates`] would succeed.
pub fn validate(specs: &[GateSpec], at: &str) -> Vec<Problem> {
    match to_gates(specs, at) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    }
}

/// The gates of `specs`, defaults filled in, or every problem they have.
pub fn to_gates(specs: &[GateSpec], at: &str) -> Result<Vec<Gate>, Vec<Problem>> {
    let mut problems = Vec::new();
    let gates: Vec<Option<Gate>> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| gate(spec, &format!("{at}[{i}]"), &mut problems))
        .collect();
    if problems.is_empty() {
        Ok(gates.into_iter().flatten().collect())
    } else {
        Err(problems)
    }
}

/// The kinds of gate and the fields each has (beyond `kind`, `deadline_secs` and
/// `interval_secs`, which all have).
const KINDS: &[(&str, &[&str])] = &[
    ("running", &[]),
    ("tcp", &["port", "timeout_secs"]),
    (
        "http",
        &[
            "port",
            "path",
            "https",
            "tls_skip_verify",
            "expect",
            "timeout_secs",
        ],
    ),
    ("command", &["program", "args", "timeout_secs"]),
];

impl GateSpec {
    /// The kind-specific fields this table sets.
    fn fields_set(&self) -> Vec<&'static str> {
        [
            ("port", self.port.is_some()),
            ("path", self.path.is_some()),
            ("https", self.https.is_some()),
            ("tls_skip_verify", self.tls_skip_verify.is_some()),
            ("expect", self.expect.is_some()),
            ("program", self.program.is_some()),
            ("args", self.args.is_some()),
            ("timeout_secs", self.timeout_secs.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// One gate from its table at `at` (`gates[1]`), or `None` with its problems added.
fn gate(spec: &GateSpec, at: &str, problems: &mut Vec<Problem>) -> Option<Gate> {
    let field = |name: &str| format!("{at}.{name}");
    let before = problems.len();
    let kind = match spec.kind.as_deref() {
        None => {
            problems.push(Problem::new(
                field("kind"),
                "missing: say what the gate checks (kind = \"running\", \"tcp\", \"http\" or \"command\")",
            ));
            None
        }
        Some(kind) => match KINDS.iter().find(|(name, _)| *name == kind) {
            Some((name, fields)) => Some((*name, *fields)),
            None => {
                problems.push(Problem::new(
                    field("kind"),
                    format!("`{kind}` is not a kind of gate: use running, tcp, http or command"),
                ));
                None
            }
        },
    };
    let deadline = secs(
        spec.deadline_secs,
        DEFAULT_DEADLINE_SECS,
        &field("deadline_secs"),
        problems,
    );
    let interval = secs(
        spec.interval_secs,
        DEFAULT_INTERVAL_SECS,
        &field("interval_secs"),
        problems,
    );
    if let (Some(deadline), Some(interval)) = (deadline, interval)
        && interval >= deadline
    {
        // Said of the field the author wrote: an interval left to its default is not
        // one they chose.
        problems.push(if spec.interval_secs.is_some() {
            Problem::new(
                field("interval_secs"),
                format!(
                    "must be shorter than the deadline ({}s), or the gate is tried only once: \
                     make it shorter or deadline_secs longer",
                    deadline.as_secs()
                ),
            )
        } else {
            Problem::new(
                field("deadline_secs"),
                format!(
                    "must be longer than the interval ({}s by default), or the gate is tried \
                     only once: make it longer or set a shorter interval_secs",
                    interval.as_secs()
                ),
            )
        });
    }
    let (kind, fields) = kind?;
    for name in spec.fields_set() {
        if !fields.contains(&name) {
            problems.push(Problem::new(field(name), not_of_kind(kind, name)));
        }
    }
    let check = match kind {
        "running" => Some(Check::Running),
        "tcp" => {
            let port = port(spec.port, kind, &field("port"), problems);
            let timeout = secs(
                spec.timeout_secs,
                DEFAULT_TCP_TIMEOUT_SECS,
                &field("timeout_secs"),
                problems,
            );
            Some(Check::Tcp {
                port: port?,
                connect_timeout: timeout?,
            })
        }
        "http" => http(spec, &field, problems).map(Check::Http),
        _ => command(spec, &field, problems).map(Check::Command),
    };
    if problems.len() > before {
        return None;
    }
    Some(Gate {
        check: check?,
        deadline: deadline?,
        interval: interval?,
    })
}

fn http(
    spec: &GateSpec,
    field: &dyn Fn(&str) -> String,
    problems: &mut Vec<Problem>,
) -> Option<HttpCheck> {
    let port = port(spec.port, "http", &field("port"), problems);
    let timeout = secs(
        spec.timeout_secs,
        DEFAULT_HTTP_TIMEOUT_SECS,
        &field("timeout_secs"),
        problems,
    );
    let path = spec.path.clone().unwrap_or_else(|| "/".to_string());
    let path_problem = if !path.starts_with('/') {
        Some(format!(
            "must start with `/` (like `/health`), not `{path}`"
        ))
    } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not hold spaces or control characters: percent-encode them (`%20`)".to_string())
    } else if path.contains('#') {
        Some("must not hold `#`: a fragment is never sent to the server".to_string())
    } else {
        None
    };
    if let Some(message) = path_problem {
        problems.push(Problem::new(field("path"), message));
    }
    let https = spec.https.unwrap_or(false);
    let tls_skip_verify = spec.tls_skip_verify.unwrap_or(false);
    if tls_skip_verify && !https {
        problems.push(Problem::new(
            field("tls_skip_verify"),
            "only means something over HTTPS: set https = true, or remove it",
        ));
    }
    let mut expect = Vec::new();
    match spec.expect.as_deref() {
        None => expect.push(200),
        Some([]) => problems.push(Problem::new(
            field("expect"),
            "names no status, so nothing would pass: list the statuses that mean ready (expect = [200])",
        )),
        Some(statuses) => {
            for (j, status) in statuses.iter().enumerate() {
                match u16::try_from(*status) {
                    Ok(status) if (100..=599).contains(&status) => expect.push(status),
                    _ => problems.push(Problem::new(
                        field(&format!("expect[{j}]")),
                        format!("must be an HTTP status, 100–599, not {status}"),
                    )),
                }
            }
        }
    }
    Some(HttpCheck {
        port: port?,
        path,
        https,
        tls_skip_verify,
        expect,
        timeout: timeout?,
    })
}

fn command(
    spec: &GateSpec,
    field: &dyn Fn(&str) -> String,
    problems: &mut Vec<Problem>,
) -> Option<CommandCheck> {
    let timeout = secs(
        spec.timeout_secs,
        DEFAULT_COMMAND_TIMEOUT_SECS,
        &field("timeout_secs"),
        problems,
    );
    let program = match spec.program.as_deref().map(str::trim) {
        None => {
            problems.push(Problem::new(
                field("program"),
                "missing: a command gate needs the program to run (an absolute path or a name on PATH)",
            ));
            None
        }
        Some("") => {
            problems.push(Problem::new(
                field("program"),
                "is empty: give the program to run (an absolute path or a name on PATH)",
            ));
            None
        }
        Some(program) if program.contains('/') && !program.starts_with('/') => {
            problems.push(Problem::new(
                field("program"),
                format!(
                    "`{program}` is a relative path, which would depend on where ferry was started: \
                     give an absolute path or a name looked up on PATH"
                ),
            ));
            None
        }
        Some(program) => Some(program.to_string()),
    };
    Some(CommandCheck {
        program: program?,
        args: spec.args.clone().unwrap_or_default(),
        timeout: timeout?,
    })
}

/// A port that `kind` needs, checked.
fn port(value: Option<i64>, kind: &str, field: &str, problems: &mut Vec<Problem>) -> Option<u16> {
    match value {
        None => {
            problems.push(Problem::new(
                field,
                format!(
                    "missing: {} gate needs the port to connect to (1–65535)",
                    a(kind)
                ),
            ));
            None
        }
        Some(port) => match u16::try_from(port) {
            Ok(port) if port >= 1 => Some(port),
            _ => {
                problems.push(Problem::new(field, format!("must be 1–65535, not {port}")));
                None
            }
        },
    }
}

/// A number of seconds (`default` when not said), checked.
fn secs(
    value: Option<i64>,
    default: u64,
    field: &str,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(Duration::from_secs(default));
    };
    if (1..=MAX_SECS).contains(&value) {
        Some(Duration::from_secs(value.unsigned_abs()))
    } else {
        problems.push(Problem::new(
            field,
            format!("must be 1–{MAX_SECS} seconds, not {value}"),
        ));
        None
    }
}

/// What to say of a field set on a gate whose kind has no such field.
fn not_of_kind(kind: &str, name: &str) -> String {
    let owners: Vec<&str> = KINDS
        .iter()
        .filter(|(_, fields)| fields.contains(&name))
        .map(|(owner, _)| *owner)
        .collect();
    match owners.as_slice() {
        [owner] => format!(
            "{} gate has no {name} (only {owner} gates do): remove it, or make it kind = \"{owner}\"",
            a(kind)
        ),
        owners => format!(
            "{} gate has no {name} (only {} gates do): remove it",
            a(kind),
            and_list(owners)
        ),
    }
}

/// `a tcp`, `an http`: the kind with its article.
fn a(kind: &str) -> String {
    let article = if kind == "http" { "an" } else { "a" };
    format!("{article} {kind}")
}
