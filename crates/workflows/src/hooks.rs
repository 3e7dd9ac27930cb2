//! Operator hooks: what ferry cannot do itself around a live failover, because the
//! source side (VMware, replication) is outside it — power the source VM off and run a
//! final sync before a live failover, power it back on after a rollback.
//!
//! A hook is a command (run without a shell, its output captured) or an HTTP call,
//! each with a timeout. A hook *fails* when the command exits non-zero, is killed or
//! times out, or when the HTTP call gets no answer in time or a non-2xx status; the
//! failure carries the tail of what the hook printed (or answered), so the operator
//! sees why without digging.
//!
//! Hooks must be idempotent — "power off" of a VM already off succeeds — because a
//! run that dies while its hooks run re-runs them all when it resumes (the engine
//! re-runs the step it was in).
//!
//! Every hook is told what it runs for: a command gets `FERRY_HOOK` (`before_live` or
//! `after_rollback`), `FERRY_VM` and `FERRY_RUN_ID` in its environment; an HTTP call
//! (other than GET and HEAD) gets the same as a JSON body
//! (`{"hook": …, "vm": …, "run_id": …}`).

use ids::RunId;
use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// At most this much of a hook's output is kept in an error message.
const TAIL_BYTES: usize = 2000;

/// One operator hook, as the (future) TOML config spells it:
///
/// ```toml
/// [[hooks.before_live]]
/// kind = "command"
/// program = "/usr/local/bin/power-off"
/// args = ["pgtest1"]
/// timeout_secs = 600
///
/// [[hooks.after_rollback]]
/// kind = "http"
/// url = "https://vcenter-bridge.example/power-on/pgtest1"
/// method = "POST"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Hook {
    /// A program run directly (no shell) with its arguments.
    Command {
        program: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default = "default_command_timeout")]
        timeout_secs: u64,
    },
    /// An HTTP call; any 2xx status is success.
    Http {
        url: String,
        #[serde(default = "default_method")]
        method: String,
        #[serde(default = "default_http_timeout")]
        timeout_secs: u64,
    },
}

fn default_command_timeout() -> u64 {
    300
}

fn default_http_timeout() -> u64 {
    30
}

fn default_method() -> String {
    "POST".to_string()
}

/// The hooks of each point of the live failover workflows, run in order; the first
/// failure stops the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before a live failover changes anything: power the source off, final sync. A
    /// failure stops the live failover before anything changed in CloudStack.
    #[serde(default)]
    pub before_live: Vec<Hook>,
    /// After a rollback put everything back: power the source on. A failure is
    /// reported (the rollback itself is complete by then).
    #[serde(default)]
    pub after_rollback: Vec<Hook>,
}

/// Which point of a workflow a hook runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    BeforeLive,
    AfterRollback,
}

impl HookPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::BeforeLive => "before_live",
            HookPoint::AfterRollback => "after_rollback",
        }
    }

    /// The hooks configured for this point.
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        match self {
            HookPoint::BeforeLive => &hooks.before_live,
            HookPoint::AfterRollback => &hooks.after_rollback,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook is told about the run it serves.
#[derive(Debug, Clone, Serialize)]
pub struct HookContext<'a> {
    pub hook: &'a str,
    pub vm: &'a str,
    pub run_id: &'a RunId,
}

/// A hook that did not succeed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HookFailure(pub String);

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Command { program, args, .. } => {
                write!(f, "command `{program}")?;
                for a in args {
                    write!(f, " {a}")?;
                }
                f.write_str("`")
            }
            Hook::Http { url, method, .. } => {
                write!(f, "http {} {url}", method.to_ascii_uppercase())
            }
        }
    }
}

impl Hook {
    /// Runs the hook once; `Ok` with a short summary of what it said.
    pub async fn run(&self, context: &HookContext<'_>) -> Result<String, HookFailure> {
        match self {
            Hook::Command {
                program,
                args,
                timeout_secs,
            } => run_command(program, args, Duration::from_secs(*timeout_secs), context).await,
            Hook::Http {
                url,
                method,
                timeout_secs,
            } => run_http(url, method, Duration::from_secs(*timeout_secs), context).await,
        }
    }
}

async fn run_command(
    program: &str,
    args: &[String],
    timeout: Duration,
    context: &HookContext<'_>,
) -> Result<String, HookFailure> {
    let mut command = tokio::process::Command::new(program);
    // Its own process group, so a timed-out hook is killed with whatever it started
    // (a script's children), not only the script.
    #[cfg(unix)]
    command.process_group(0);
    // ferry's secrets are not the hook's.
    for name in volumed::guest_prep::SECRET_ENV {
        command.env_remove(name);
    }
    let child = command
        .args(args)
        .env("FERRY_HOOK", context.hook)
        .env("FERRY_VM", context.vm)
        .env("FERRY_RUN_ID", context.run_id.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A hook that outlives its timeout is killed when its future is dropped.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookFailure(format!("cannot start `{program}`: {e}")))?;
    let pid = child.id();
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(HookFailure(format!("waiting for `{program}`: {e}"))),
        Err(_) => {
            // The hook itself is killed when its future is dropped (`kill_on_drop`);
            // the rest of its group here (without `unsafe`: by `kill`).
            #[cfg(unix)]
            if let Some(pid) = pid {
                let _ = tokio::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
            return Err(HookFailure(format!(
                "timed out after {}s and was killed",
                timeout.as_secs()
            )));
        }
    };
    let said = said(&[("stdout", &output.stdout), ("stderr", &output.stderr)]);
    if output.status.success() {
        Ok(format!("exited 0{said}"))
    } else {
        let status = match output.status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("was killed ({})", output.status),
        };
        Err(HookFailure(format!("{status}{said}")))
    }
}

async fn run_http(
    url: &str,
    method: &str,
    timeout: Duration,
    context: &HookContext<'_>,
) -> Result<String, HookFailure> {
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| HookFailure(format!("`{method}` is not an HTTP method")))?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| HookFailure(format!("cannot build an HTTP client: {e}")))?;
    let mut request = client.request(method.clone(), url);
    if method != reqwest::Method::GET && method != reqwest::Method::HEAD {
        request = request.json(context);
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            HookFailure(format!("timed out after {}s", timeout.as_secs()))
        } else {
            HookFailure(format!("request failed: {e}"))
        }
    })?;
    let status = response.status();
    // The body is only for the message: an unreadable one is not a failure of its own.
    let body = response.bytes().await.unwrap_or_default();
    let said = said(&[("body", &body)]);
    if status.is_success() {
        Ok(format!("answered {status}{said}"))
    } else {
        Err(HookFailure(format!("answered {status}{said}")))
    }
}

/// `; stdout: …; stderr: …` with the tail of each non-empty stream.
fn said(streams: &[(&str, &[u8])]) -> String {
    let mut out = String::new();
    for (name, bytes) in streams {
        let text = tail(bytes);
        if !text.is_empty() {
            out.push_str(&format!("; {name}: {text}"));
        }
    }
    out
}

/// The last [`TAIL_BYTES`] of a stream, trimmed, as text.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let text = text.trim();
    if start > 0 {
        format!("…{text}")
    } else {
        text.to_string()
    }
}

/// What running one point's hooks did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HookReport {
    /// `"<hook>: <summary>"` for each hook that succeeded, in order.
    pub ran: Vec<String>,
    /// The hook that failed and why (`None` when all succeeded); the hooks after it
    /// were not run.
    pub failed: Option<String>,
}

/// Runs the hooks of `point` in order, stopping at the first failure; each outcome is
/// also logged.
pub async fn run_all(hooks: &[Hook], point: HookPoint, context: &HookContext<'_>) -> HookReport {
    let mut report = HookReport::default();
    for (i, hook) in hooks.iter().enumerate() {
        match hook.run(context).await {
            Ok(summary) => {
                tracing::info!(hook = %hook, point = %point, vm = context.vm, run = %context.run_id, "hook succeeded");
                report.ran.push(format!("{hook}: {summary}"));
            }
            Err(HookFailure(why)) => {
                tracing::warn!(hook = %hook, point = %point, vm = context.vm, run = %context.run_id, error = %why, "hook failed");
                report.failed = Some(format!(
                    "{point} hook {} of {} ({hook}) failed: {why}",
                    i + 1,
                    hooks.len()
                ));
                break;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    static RUN: std::sync::LazyLock<RunId> = std::sync::LazyLock::new(|| "run-1".into());

    fn context() -> HookContext<'static> {
        HookContext {
            hook: "before_live",
            vm: "pgtest1",
            run_id: &RUN,
        }
    }

    #[test]
    fn hooks_read_from_toml_shaped_json() {
        let hooks: Hooks = serde_json::from_value(serde_json::json!({
            "before_live": [
                {"kind": "command", "program": "/bin/power-off", "args": ["pgtest1"]},
                {"kind": "http", "url": "http://bridge/sync"}
            ]
        }))
        .unwrap();
        assert_eq!(
            hooks.before_live,
            vec![
                Hook::Command {
                    program: "/bin/power-off".into(),
                    args: vec!["pgtest1".into()],
                    timeout_secs: 300
                },
                Hook::Http {
                    url: "http://bridge/sync".into(),
                    method: "POST".into(),
                    timeout_secs: 30
                }
            ]
        );
        assert!(hooks.after_rollback.is_empty());
        assert!(
            serde_json::from_value::<Hook>(
                serde_json::json!({"kind": "command", "program": "x", "timeout": 3})
            )
            .is_err(),
            "a misspelt field is refused, not ignored"
        );
    }

    #[tokio::test]
    async fn a_command_succeeds_fails_or_times_out_with_its_output() {
        let sh = |script: &str, timeout_secs| Hook::Command {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            timeout_secs,
        };
        let ok = sh("echo \"$FERRY_HOOK $FERRY_VM $FERRY_RUN_ID\"", 10)
            .run(&context())
            .await
            .unwrap();
        assert_eq!(ok, "exited 0; stdout: before_live pgtest1 run-1");
        let failed = sh("echo out; echo no power >&2; exit 3", 10)
            .run(&context())
            .await
            .unwrap_err();
        assert_eq!(
            failed.0,
            "exited with status 3; stdout: out; stderr: no power"
        );
        let slow = sh("sleep 5", 1).run(&context()).await.unwrap_err();
        assert_eq!(slow.0, "timed out after 1s and was killed");
        #[cfg(target_os = "linux")]
        {
            let dir = tempfile::tempdir().unwrap();
            let pidfile = dir.path().join("pid");
            let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
            sh(&script, 1).run(&context()).await.unwrap_err();
            let pid = std::fs::read_to_string(&pidfile).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            assert!(
                stat.is_err() || stat.unwrap().split_whitespace().nth(2) == Some("Z"),
                "the hook's child {pid} outlived its timeout"
            );
        }
        let missing = Hook::Command {
            program: "/nonexistent/ferry-hook".into(),
            args: vec![],
            timeout_secs: 1,
        }
        .run(&context())
        .await
        .unwrap_err();
        assert!(missing.0.starts_with("cannot start"), "{missing}");
    }

    #[test]
    fn a_long_output_keeps_its_tail() {
        let long = "x".repeat(TAIL_BYTES) + "the end";
        let t = tail(long.as_bytes());
        assert!(t.starts_with('…') && t.ends_with("the end"), "{t}");
        assert_eq!(t.len(), '…'.len_utf8() + TAIL_BYTES);
    }

    #[tokio::test]
    async fn run_all_stops_at_the_first_failure_and_names_it() {
        let hooks = vec![
            Hook::Command {
                program: "true".into(),
                args: vec![],
                timeout_secs: 5,
            },
            Hook::Command {
                program: "false".into(),
                args: vec![],
                timeout_secs: 5,
            },
            Hook::Command {
                program: "true".into(),
                args: vec![],
                timeout_secs: 5,
            },
        ];
        let report = run_all(&hooks, HookPoint::BeforeLive, &context()).await;
        assert_eq!(report.ran, vec!["command `true`: exited 0".to_string()]);
        assert_eq!(
            report.failed.as_deref(),
            Some("before_live hook 2 of 3 (command `false`) failed: exited with status 1")
        );
    }
}
