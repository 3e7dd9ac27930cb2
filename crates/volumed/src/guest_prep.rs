//! Guest preparation: running the operator's command (for Windows guests,
//! `virt-v2v-in-place` injecting the VirtIO drivers) against a disk while it is
//! attached to the appliance.
//!
//! It lives in the daemon because the daemon is what runs on the appliance and what
//! knows which device path is which volume ([`crate::device`]). It is journaled like
//! the CloudStack operations, under the caller's idempotency key, with one difference
//! that follows from what it is: a command that rewrites a disk cannot be "looked up"
//! afterwards the way an attach can, so it is **never run twice for one key**. The
//! journal marks the operation `submitted` (job id `guest-prep:starting`, then
//! `guest-prep:pid:<pid>`) *before* the command starts; an operation found in that
//! state after a restart of the daemon is finished as failed — the command may have
//! done part of its work — and the caller reverts the disk to its snapshot. An
//! operation that never got that far (the device check failed transiently) is run
//! when the caller asks again with the key, but not by
//! [`crate::Local::resume_unfinished`]: nobody would be waiting for it, and the disk
//! may no longer be the caller's to change.
//!
//! The command runs without a shell, in its own process group, with stdin closed and
//! stdout and stderr captured (their last [`TAIL_BYTES`] each are kept). When it ends
//! — or when its timeout passes, or when the daemon lets go of it (the daemon stops,
//! and its operations with it) — its whole group is killed, so nothing it started
//! keeps writing to the disk after the preparation is over.
//!
//! A daemon killed outright (SIGKILL, a crash) cannot kill anything (there is no
//! parent-death signal without `unsafe`), so the command is marked: it and everything
//! it starts inherit [`OP_ENV`]`=<operation id>` in their environment. When the
//! operation is found interrupted after a restart, [`kill_leftovers`] finds the
//! processes still carrying that mark (Linux: `/proc/<pid>/environ`) and kills them
//! before the caller reverts the disk — whatever their process ids or groups have
//! become, and never a process that is not the operation's. Only this host's processes
//! can be seen: a preparation another host's daemon ran is left to that host (the
//! caller's unwind detaches the disk from the appliance before it reverts it, so the
//! disk is safe all the same).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::error::Error;

/// At most this much of each of the command's output streams is kept.
pub const TAIL_BYTES: usize = 4096;

/// How long the output of a command that ended is still read (a process outside its
/// group may hold the pipes open).
const DRAIN: Duration = Duration::from_secs(5);

/// Where `program` is, evaluated where the daemon runs: a name containing no `/` is
/// looked up on `path_var` (the daemon's `PATH`), an absolute path is taken as is. It
/// must be a file with an execute bit. `Ok(None)`: not there; a relative path with a
/// `/` is refused (it would depend on the daemon's working directory).
pub fn find_executable(program: &str, path_var: Option<&OsStr>) -> Result<Option<PathBuf>, Error> {
    if program.trim().is_empty() {
        return Err(Error::bad_request("the program name is empty"));
    }
    if program.contains('/') {
        let path = Path::new(program);
        if !path.is_absolute() {
            return Err(Error::bad_request(format!(
                "`{program}` is a relative path: give a program name looked up on PATH or an absolute path"
            )));
        }
        return Ok(is_executable(path).then(|| path.to_path_buf()));
    }
    Ok(path_var
        .into_iter()
        .flat_map(std::env::split_paths)
        .find_map(|dir| {
            let candidate = dir.join(program);
            is_executable(&candidate).then_some(candidate)
        }))
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// The command line as one string, for messages.
pub(crate) fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command that ran to exit status 0.
#[derive(Debug)]
pub(crate) struct Ran {
    pub duration: Duration,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// A command that did not: why, with what it printed.
#[derive(Debug)]
pub(crate) struct Failed {
    pub reason: String,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// A started command. Dropped before [`Started::finish`] ended it (the daemon let go
/// of it), it kills its process group.
pub(crate) struct Started {
    child: tokio::process::Child,
    pid: Option<u32>,
    /// Whether `finish` killed what was left of the group.
    ended: bool,
    started: Instant,
    stdout: Arc<Mutex<Tail>>,
    stderr: Arc<Mutex<Tail>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

/// The variable that marks a guest preparation's processes with its operation id (see
/// the module doc); the command and all it starts inherit it.
pub const OP_ENV: &str = "FERRY_GUEST_PREP_OP";

/// The environment variables that carry ferry's secrets. Programs ferry runs for the
/// operator (guest preparation, hooks) do not inherit them.
pub const SECRET_ENV: &[&str] = &[
    "FERRY_TOKEN",
    "FERRY_CLOUDSTACK_SECRET",
    "FERRY_VOLUMED_TOKEN",
    "FERRY_DATABASE_URL",
    "PGPASSWORD",
];

/// Starts `program` with `args` in its own process group, its processes marked with
/// operation `op_id` ([`OP_ENV`]). `Err` carries why it could not be started.
pub(crate) fn start(program: &str, args: &[String], op_id: &str) -> Result<Started, String> {
    let mut command = tokio::process::Command::new(program);
    command.env(OP_ENV, op_id);
    // Its own process group: a timeout kills what it started too (a script's
    // children, virt-v2v's helper appliance).
    #[cfg(unix)]
    command.process_group(0);
    for name in SECRET_ENV {
        command.env_remove(name);
    }
    // The clock starts before the process does: the duration reported is the
    // command's whole life, never less than it really took.
    let started = Instant::now();
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not be started: {e}"))?;
    let stdout = Arc::new(Mutex::new(Tail::default()));
    let stderr = Arc::new(Mutex::new(Tail::default()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(keep_tail(out, Arc::clone(&stdout))));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(keep_tail(err, Arc::clone(&stderr))));
    }
    Ok(Started {
        pid: child.id(),
        ended: false,
        child,
        started,
        stdout,
        stderr,
        readers,
    })
}

impl Started {
    /// The process id, which is also its process group id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Waits for the command to end, at most `timeout`; then kills its process group
    /// (whatever it left behind, or all of it after a timeout).
    pub async fn finish(mut self, timeout: Duration) -> Result<Ran, Failed> {
        let waited = tokio::time::timeout(timeout, self.child.wait()).await;
        kill_group(self.pid).await;
        self.ended = true;
        let failure = match waited {
            Ok(Ok(status)) if status.success() => None,
            Ok(Ok(status)) => Some(match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => format!("was killed ({status})"),
            }),
            Ok(Err(e)) => Some(format!("could not be waited for: {e}")),
            Err(_) => {
                // The group is dead or dying; reap the leader.
                let _ = self.child.kill().await;
                Some(format!(
                    "was killed after its timeout of {} s",
                    timeout.as_secs()
                ))
            }
        };
        let duration = self.started.elapsed();
        let drained = Instant::now() + DRAIN;
        for reader in self.readers.drain(..) {
            let abort = reader.abort_handle();
            if tokio::time::timeout_at(drained, reader).await.is_err() {
                abort.abort();
            }
        }
        let stdout_tail = text(&self.stdout);
        let stderr_tail = text(&self.stderr);
        match failure {
            None => Ok(Ran {
                duration,
                stdout_tail,
                stderr_tail,
            }),
            Some(reason) => Err(Failed {
                reason,
                stdout_tail,
                stderr_tail,
            }),
        }
    }
}

impl Drop for Started {
    /// The daemon let go of a command still running — its operation's task was
    /// stopped, as when the daemon (or the server it runs in) stops: its whole group is
    /// killed, not only the process `kill_on_drop` kills. Synchronously: there may be
    /// no runtime left to wait on.
    fn drop(&mut self) {
        #[cfg(unix)]
        if let (false, Some(pid)) = (self.ended, self.pid) {
            tracing::warn!(
                pid,
                "stopping a guest preparation still running: killing its process group"
            );
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// How many times [`kill_leftovers`] looks and kills, at most, and how long it lets
/// killed processes take to go between two looks.
const LEFTOVER_ROUNDS: u32 = 100;
const LEFTOVER_PAUSE: Duration = Duration::from_millis(10);

/// Finds the processes marked with operation `op_id` ([`OP_ENV`]) that are still
/// running on this host — what a command its daemon no longer watches left — and
/// kills them, again until none is left (one may start another while it dies).
/// Returns their process ids; `Err` when they cannot be looked for here.
pub(crate) async fn kill_leftovers(op_id: &str) -> Result<Vec<u32>, String> {
    let mark = format!("{OP_ENV}={op_id}");
    let mut killed: Vec<u32> = Vec::new();
    for round in 0..LEFTOVER_ROUNDS {
        let found = marked_processes(&mark)?;
        if found.is_empty() {
            return Ok(killed);
        }
        if round > 0 {
            // Killed already, not yet gone from /proc: a moment for the kernel.
            tokio::time::sleep(LEFTOVER_PAUSE).await;
        }
        let _ = tokio::process::Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .args(found.iter().map(u32::to_string))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        for pid in found {
            if !killed.contains(&pid) {
                killed.push(pid);
            }
        }
    }
    Err(format!(
        "processes marked {mark} were still there after {LEFTOVER_ROUNDS} rounds of killing: {killed:?}"
    ))
}

/// The live (not zombie) processes of this host whose environment holds `mark`.
fn marked_processes(mark: &str) -> Result<Vec<u32>, String> {
    let proc_dir = Path::new("/proc");
    let entries = std::fs::read_dir(proc_dir)
        .map_err(|e| format!("processes cannot be looked for on this host (no /proc: {e})"))?;
    let own = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        // Another user's process, or one that just ended, cannot be read: not ours.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|var| var == mark.as_bytes()) {
            continue;
        }
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
            })
            .unwrap_or(true);
        if !zombie {
            found.push(pid);
        }
    }
    Ok(found)
}

/// Kills process group `pid` (nothing if it has no members left). Without `unsafe`,
/// by `kill(1)`.
async fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    #[cfg(not(unix))]
    let _ = pid;
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
}

async fn keep_tail(mut stream: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&chunk[..n]),
        }
    }
}

/// A tail as trimmed text, `…` in front when the stream was longer.
fn text(tail: &Mutex<Tail>) -> String {
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    let text = String::from_utf8_lossy(&tail.bytes);
    let text = text.trim();
    if tail.cut {
        format!("…{text}")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_or_by_absolute_path() {
        let path = std::env::var_os("PATH");
        let path = path.as_deref();
        assert!(find_executable("sh", path).unwrap().is_some());
        assert!(find_executable("/bin/sh", path).unwrap().is_some());
        assert_eq!(find_executable("no-such-tool-xyz", path).unwrap(), None);
        assert_eq!(find_executable("/nonexistent/tool", path).unwrap(), None);
        assert!(find_executable("bin/sh", path).is_err());
        assert!(find_executable("", path).is_err());
        // A directory, or a file without an execute bit, is not a tool.
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert_eq!(
            find_executable(plain.to_str().unwrap(), path).unwrap(),
            None
        );
        assert_eq!(
            find_executable(dir.path().to_str().unwrap(), path).unwrap(),
            None
        );
        assert_eq!(
            find_executable("plain", Some(dir.path().as_os_str())).unwrap(),
            None
        );
    }

    #[test]
    fn a_long_stream_keeps_its_tail() {
        let mut tail = Tail::default();
        tail.push(&vec![b'x'; TAIL_BYTES]);
        assert!(!tail.cut);
        tail.push(b"the end");
        let t = text(&Mutex::new(tail));
        assert!(t.starts_with('…') && t.ends_with("the end"), "{t}");
        assert_eq!(t.len(), '…'.len_utf8() + TAIL_BYTES);
    }

    #[tokio::test]
    async fn a_command_succeeds_fails_or_is_killed_with_its_group() {
        let sh = |script: &str| vec!["-c".to_string(), script.to_string()];
        let ran = start("sh", &sh("echo out; echo err >&2"), "op-test")
            .unwrap()
            .finish(Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            (ran.stdout_tail.as_str(), ran.stderr_tail.as_str()),
            ("out", "err")
        );
        let failed = start("sh", &sh("echo no virtio iso >&2; exit 3"), "op-test")
            .unwrap()
            .finish(Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(failed.reason, "exited with status 3");
        assert_eq!(failed.stderr_tail, "no virtio iso");
        let missing = start("/nonexistent/ferry-prep", &[], "op-test")
            .err()
            .unwrap();
        assert!(missing.starts_with("could not be started"), "{missing}");
        #[cfg(target_os = "linux")]
        {
            let dir = tempfile::tempdir().unwrap();
            let pidfile = dir.path().join("pid");
            let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
            let begun = std::time::Instant::now();
            let slow = start("sh", &sh(&script), "op-test")
                .unwrap()
                .finish(Duration::from_secs(1))
                .await
                .unwrap_err();
            assert_eq!(slow.reason, "was killed after its timeout of 1 s");
            assert!(begun.elapsed() < Duration::from_secs(10));
            let pid = std::fs::read_to_string(&pidfile).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            assert!(
                stat.is_err() || stat.unwrap().split_whitespace().nth(2) == Some("Z"),
                "the command's child {pid} outlived its timeout"
            );
        }
    }
}
