//! The `command` gate: a program of the operator's, run on ferry's host, exits 0.
//!
//! It runs without a shell, stdin closed, in its own process group, with an
//! environment that names the VM: `FERRY_VM_NAME`, `FERRY_VM_ADDRESSES` (the
//! addresses, comma-separated), `FERRY_RUN_ID` and `FERRY_FAILOVER_KIND` (`test` or
//! `live`). ferry's own environment (`FERRY_*`, among them its tokens and database
//! URL, and `PGPASSWORD`) is not passed on: the check is the operator's program, not
//! ferry's.
//!
//! When the program exits — or overruns its timeout, or the gate lets go of it (the
//! deadline passed, the wait was cancelled) — its whole process group is killed, so a
//! check never outlives its attempt and nothing it left in the background holds its
//! output open. The kill is a signal sent from `Drop` ([`Group`]), synchronous and
//! without a runtime, so every way out of an attempt does it.
//!
//! Its output is read as it comes and only the end of each stream is kept
//! ([`TAIL_BYTES`]), so a chatty check costs bounded memory; the report shows its
//! last lines.

use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::gate::{CommandCheck, Subject};
use crate::seen::{self, Seen};

/// At most this much of each output stream is kept while the program runs.
const TAIL_BYTES: usize = 4096;
/// The report shows at most this many of the last lines of the output.
const TAIL_LINES: usize = 5;

/// The inherited variables a check does not get: ferry's own namespace, which holds
/// its secrets (`FERRY_TOKEN`, `FERRY_DATABASE_URL`…), and PostgreSQL's password,
/// which is ferry's database's, not the guest's.
fn is_ferrys(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("FERRY_") || name == "PGPASSWORD"
}

/// One attempt: run the program to its end or its timeout.
pub(crate) async fn attempt(check: &CommandCheck, subject: &Subject) -> Seen {
    let mut command = tokio::process::Command::new(&check.program);
    #[cfg(unix)]
    command.process_group(0);
    for (name, _) in std::env::vars_os() {
        if is_ferrys(&name) {
            command.env_remove(name);
        }
    }
    let addresses: Vec<String> = subject.addresses.iter().map(|a| a.to_string()).collect();
    command
        .args(&check.args)
        .env("FERRY_VM_NAME", &subject.vm_name)
        .env("FERRY_VM_ADDRESSES", addresses.join(","))
        .env("FERRY_RUN_ID", subject.run_id.as_str())
        .env("FERRY_FAILOVER_KIND", subject.kind.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Where there are no process groups, at least the program itself.
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Seen::fail(format!("cannot start `{}`: {e}", check.program)),
    };
    let mut group = Group { pid: child.id() };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (mut out, mut err) = (Tail::default(), Tail::default());
    let mut exit = None;
    let ran = tokio::time::timeout(check.timeout, async {
        let wait = async {
            let status = child.wait().await;
            // Over: what it left running goes too, and with it the pipes it held.
            group.kill();
            exit = Some(status);
        };
        tokio::join!(
            wait,
            keep_tail(stdout, &mut out),
            keep_tail(stderr, &mut err)
        );
    })
    .await;
    group.kill();
    let (out, err) = (out.text(), err.text());
    match exit {
        Some(Ok(status)) if status.success() => Seen::pass(said("exit 0", &out, &err)),
        Some(Ok(status)) => Seen::fail(said(&ended(status), &err, &out)),
        Some(Err(e)) => Seen::fail(format!("cannot wait for `{}`: {e}", check.program)),
        None => {
            debug_assert!(ran.is_err(), "the program ended or its timeout passed");
            let why = format!(
                "timed out after {} and was killed",
                seen::duration(check.timeout)
            );
            Seen::fail(said(&why, &err, &out))
        }
    }
}

/// `exit 3`, or the signal that ended the program.
fn ended(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

/// `{what}: {the end of first}`, or of `second` when `first` is empty.
fn said(what: &str, first: &str, second: &str) -> String {
    let text = if first.is_empty() { second } else { first };
    if text.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {text}")
    }
}

/// The process group of a started program, killed when this is dropped (or before).
struct Group {
    pid: Option<u32>,
}

impl Group {
    /// Kills every process of the group, once. A group with no process left gets no
    /// signal (`ESRCH`, ignored).
    // TODO-robustness: after the leader was reaped and the rest of the group has
    // gone, the id could be reused by a new group before this runs; the window is the
    // few instructions between the two, as for every `kill(1)` of a reaped leader.
    fn kill(&mut self) {
        let Some(pid) = self.pid.take() else {
            return;
        };
        #[cfg(unix)]
        {
            // Never 0 or 1: `kill(-1)` would signal every process we may signal.
            let pid = i32::try_from(pid)
                .ok()
                .filter(|pid| *pid > 1)
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        #[cfg(not(unix))]
        let _ = pid;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`TAIL_BYTES`] of a stream.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > TAIL_BYTES {
            let excess = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..excess);
            self.cut = true;
        }
    }

    /// The last [`TAIL_LINES`] non-empty lines, `…` first when there was more.
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        let shown = lines[start..].join("\n");
        if self.cut || start > 0 {
            format!("…{shown}")
        } else {
            shown
        }
    }
}

async fn keep_tail(stream: Option<impl AsyncRead + Unpin>, tail: &mut Tail) {
    let Some(mut stream) = stream else {
        return;
    };
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.push(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_lines_of_a_bounded_end() {
        let mut tail = Tail::default();
        for i in 0..10_000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        assert!(tail.bytes.len() <= TAIL_BYTES);
        assert_eq!(
            tail.text(),
            "…line 9995\nline 9996\nline 9997\nline 9998\nline 9999"
        );
        let mut short = Tail::default();
        short.push(b"\nonly\n\n");
        assert_eq!(short.text(), "only");
    }

    #[test]
    fn ferrys_secrets_are_not_passed_on() {
        for name in ["FERRY_TOKEN", "FERRY_DATABASE_URL", "PGPASSWORD"] {
            assert!(is_ferrys(name.as_ref()), "{name}");
        }
        for name in ["PATH", "HOME", "PGHOST"] {
            assert!(!is_ferrys(name.as_ref()), "{name}");
        }
    }
}
