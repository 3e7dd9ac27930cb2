//! Black-box tests of guest preparation against cloudsim: the operator's command runs
//! once per idempotency key against the boot replica's device path as the daemon
//! resolved it (under cloudsim's sysfs root), a failing or slow command is a
//! definitive error with its output, a started command is never run again after a
//! restart, tools are looked up where the daemon runs, and the REST API carries it
//! all with the bearer token. A command the daemon lets go of is killed with all it
//! started, and one a daemon killed outright left running is found by its mark and
//! killed when the operation is found interrupted (the commands block on a FIFO
//! nobody writes to, so they never end by themselves).
//!
//! The "command" is a small shell script in a temp dir that appends its arguments to
//! a log file, so the test sees exactly how often, and with what, it ran.

// Set-up: volumes made with the real client for the daemon to prepare.
#![allow(clippy::disallowed_methods)]

use ::ids::{VmId, VolumeId, ZoneId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudsim::world::{World, ids};
use cloudstack::VolumeSource;
use secrecy::SecretString;
use serde_json::json;
use volumed::{
    Class, Error, GuestPrep, HttpClient, HttpClientConfig, Journal, Local, LocalConfig,
    MemoryJournal, NewOp, OpKind, OpRequest, OpState, VolumeService,
};

mod common;

use common::{cs_client, key, oma, start_sim};

type Result<T = ()> = anyhow::Result<T>;

/// The boot replica of the job sheet's `pgtest1`, attached to the appliance `oma`.
const BOOT: &str = ids::PGTEST1_DISK_2000;

struct Sim {
    running: cloudsim::Running,
    endpoint: String,
    root: tempfile::TempDir,
    journal: Arc<MemoryJournal>,
    /// Where the prep scripts and their logs live.
    tools: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.running.shutdown_token().cancel();
    }
}

impl Sim {
    async fn start() -> Result<Sim> {
        let mut world = World::default();
        for command in ["createVolume", "attachVolume", "detachVolume"] {
            world.latency_ms.insert(command.to_string(), 5);
        }
        world.settings.hotplug_delay_ms = 5;
        let (running, root) = start_sim(world, 1.0).await?;
        Ok(Sim {
            endpoint: running.announcement.endpoint.clone(),
            running,
            root,
            journal: Arc::new(MemoryJournal::new()),
            tools: tempfile::tempdir()?,
        })
    }

    fn local(&self) -> Result<Local> {
        let journal: Arc<dyn Journal> = self.journal.clone();
        Ok(Local::new(
            cs_client(&self.endpoint, None)?,
            journal,
            LocalConfig::with_appliance(ids::APPLIANCE_OMA, self.root.path()),
        ))
    }

    /// `<root>/dev/disk/by-id/virtio-<serial>`: the boot replica's path as the daemon
    /// resolves it under the sysfs root.
    fn device_path(&self, volume_id: &str) -> PathBuf {
        self.root.path().join(format!(
            "dev/disk/by-id/virtio-{}",
            cloudstack::volume_serial(&VolumeId::from(volume_id))
        ))
    }

    /// A prep script `name` that appends its arguments to `<name>.log`, then runs
    /// `body`.
    fn script(&self, name: &str, body: &str) -> Result<(PathBuf, PathBuf)> {
        use std::os::unix::fs::PermissionsExt;
        let script = self.tools.path().join(name);
        let log = self.tools.path().join(format!("{name}.log"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n{body}\n",
                log.display()
            ),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok((script, log))
    }
}

fn runs(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn prep(script: &Path, timeout_secs: u64) -> GuestPrep {
    GuestPrep {
        program: script.display().to_string(),
        args: vec![
            "-i".into(),
            "disk".into(),
            "{device}".into(),
            "--inject-virtio-win".into(),
            "/usr/share/virtio-win/virtio-win.iso".into(),
        ],
        timeout_secs,
    }
}

/// Runs `prep` on `oma` against the boot replica under the idempotency key `call`.
async fn prepare_boot<S: VolumeService + ?Sized>(
    service: &S,
    call: &str,
    prep: &GuestPrep,
) -> volumed::Result<volumed::GuestPrepOutcome> {
    service
        .prepare_guest(&key(call), &oma(), &VolumeId::from(BOOT), prep)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prep_runs_once_per_key_against_the_boot_replicas_device() -> Result {
    let sim = Sim::start().await?;
    let daemon = Arc::new(sim.local()?);
    let (script, log) = sim.script(
        "prep",
        "sleep 0.3; echo prepared; echo drivers injected >&2",
    )?;
    let prep = prep(&script, 30);
    let device = sim.device_path(BOOT);
    let device = device.to_str().unwrap();

    // Two requests with one key at once, then a third later: one run.
    let first = key("prep-1");
    let (oma, boot) = (VmId::from(ids::APPLIANCE_OMA), VolumeId::from(BOOT));
    let (a, b) = tokio::join!(
        daemon.prepare_guest(&first, &oma, &boot, &prep),
        daemon.prepare_guest(&first, &oma, &boot, &prep),
    );
    let (a, b) = (a?, b?);
    assert_eq!(a, b);
    assert_eq!(
        runs(&log),
        [format!(
            "-i disk {device} --inject-virtio-win /usr/share/virtio-win/virtio-win.iso"
        )]
    );
    assert_eq!(a.device_path, device);
    assert_eq!(a.volume_id, BOOT);
    assert_eq!(a.appliance_vm_id, ids::APPLIANCE_OMA);
    assert_eq!(a.exit_code, 0);
    assert_eq!(a.stdout_tail, "prepared");
    assert_eq!(a.stderr_tail, "drivers injected");
    assert_eq!(a.command[0], prep.program);
    assert_eq!(a.command[3], device);
    assert!(a.duration_ms >= 300, "{a:?}");
    // The kernel name is the guest's for that serial.
    let linked = std::fs::read_link(&a.device_path)?;
    assert_eq!(
        linked.file_name().unwrap().to_str(),
        Some(a.kernel_name.as_str())
    );

    let again = prepare_boot(&*daemon, "prep-1", &prep).await?;
    assert_eq!(again, a);
    assert_eq!(
        runs(&log).len(),
        1,
        "asked again with the key: not run again"
    );

    let op = sim.journal.op_by_key("prep-1").expect("journaled");
    assert_eq!(op.kind, OpKind::GuestPrep);
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(op.volume_id.as_ref().map(|id| id.as_str()), Some(BOOT));
    assert!(
        op.job_id
            .as_ref()
            .map(|id| id.as_str())
            .is_some_and(|j| j.starts_with("guest-prep:pid:")),
        "{op:?}"
    );

    // The key names one request: another command under it is refused, not run.
    let mut other = prep.clone();
    other.args.push("--extra".into());
    let err = prepare_boot(&*daemon, "prep-1", &other).await.unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err:?}");
    // A new key is a new run.
    prepare_boot(&*daemon, "prep-2", &prep).await?;
    assert_eq!(runs(&log).len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_prep_is_a_definitive_error_with_its_output() -> Result {
    let sim = Sim::start().await?;
    let daemon = sim.local()?;
    let (script, log) = sim.script("failing", "echo no virtio iso; exit 3")?;
    let prep = prep(&script, 30);
    let err = prepare_boot(&daemon, "fail-1", &prep).await.unwrap_err();
    assert_eq!(err.class(), Class::Definitive);
    let Error::GuestPrepFailed(failure) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(failure.reason, "exited with status 3");
    assert_eq!(failure.stdout_tail, "no virtio iso");
    assert_eq!(Path::new(&failure.device), sim.device_path(BOOT));
    let message = err.to_string();
    assert!(message.contains("no virtio iso"), "{message}");
    assert!(message.contains("exited with status 3"), "{message}");

    // The failure is the answer to the key: not run again.
    let again = prepare_boot(&daemon, "fail-1", &prep).await.unwrap_err();
    assert_eq!(again, err);
    assert_eq!(runs(&log).len(), 1);
    assert_eq!(
        sim.journal.op_by_key("fail-1").expect("journaled").state,
        OpState::Failed
    );

    // A program that is not there cannot be started: also definitive.
    let missing = GuestPrep::new("/nonexistent/virt-v2v-in-place", ["{device}"]);
    let err = prepare_boot(&daemon, "fail-2", &missing).await.unwrap_err();
    assert_eq!(err.class(), Class::Definitive);
    assert!(err.to_string().contains("could not be started"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prep_past_its_timeout_is_killed_with_what_it_started() -> Result {
    let sim = Sim::start().await?;
    let daemon = sim.local()?;
    let pidfile = sim.tools.path().join("sleeper.pid");
    let (script, log) = sim.script(
        "slow",
        &format!(
            "echo started; sleep 30 & echo $! > '{}'; wait",
            pidfile.display()
        ),
    )?;
    let began = Instant::now();
    let err = prepare_boot(&daemon, "slow-1", &prep(&script, 1))
        .await
        .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(err.class(), Class::Definitive);
    let Error::GuestPrepFailed(failure) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(failure.reason, "was killed after its timeout of 1 s");
    assert_eq!(failure.stdout_tail, "started");
    assert_eq!(runs(&log).len(), 1);
    // The script's own child went with it.
    let pid = std::fs::read_to_string(&pidfile)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        let alive = stat.is_ok_and(|s| s.split_whitespace().nth(2) != Some("Z"));
        if !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the prep's child {pid} outlived its timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prep_needs_the_disk_on_that_appliance() -> Result {
    let sim = Sim::start().await?;
    let daemon = sim.local()?;
    let (script, log) = sim.script("prep", "true")?;
    let prep = prep(&script, 30);
    // A volume attached nowhere.
    let setup = cs_client(&sim.endpoint, None)?;
    let job = setup
        .create_volume(
            "loose",
            &ZoneId::from(ids::ZONE),
            &VolumeSource::Offering {
                disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                size_gb: Some(1),
            },
        )
        .await?;
    let loose = setup.wait(&job).await?.id;
    let err = daemon
        .prepare_guest(&key("loose"), &oma(), &VolumeId::from(&loose), &prep)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not attached to appliance"),
        "{err}"
    );
    // Not an appliance of this daemon: refused before anything is recorded.
    let err = daemon
        .prepare_guest(
            &key("elsewhere"),
            &VmId::from("not-an-appliance"),
            &VolumeId::from(BOOT),
            &prep,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(sim.journal.op_by_key("elsewhere").is_none());
    // Bad configuration is bad input.
    let err = daemon
        .prepare_guest(
            &key("zero"),
            &oma(),
            &VolumeId::from(BOOT),
            &GuestPrep {
                timeout_secs: 0,
                ..prep.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadRequest { .. }), "{err:?}");
    assert!(runs(&log).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_never_runs_a_prep_twice() -> Result {
    let sim = Sim::start().await?;
    let (script, log) = sim.script("prep", "true")?;
    let prep = prep(&script, 30);
    let record = |id: &str, key: &str| NewOp {
        id: id.into(),
        idempotency_key: key.into(),
        kind: OpKind::GuestPrep,
        vm_id: Some(ids::APPLIANCE_OMA.into()),
        volume_id: Some(BOOT.into()),
        snapshot_id: None,
        request: serde_json::to_value(OpRequest::GuestPrep {
            appliance_vm_id: ids::APPLIANCE_OMA.into(),
            volume_id: BOOT.into(),
            prep: prep.clone(),
        })
        .unwrap(),
        run_id: None,
    };
    // A daemon died while its command ran (recorded as started), and another before
    // its command started.
    sim.journal.begin(record("op-started", "started")).await?;
    sim.journal
        .set_job("op-started", &"guest-prep:pid:4194303".into(), None)
        .await?;
    sim.journal
        .begin(record("op-unstarted", "unstarted"))
        .await?;

    let daemon = sim.local()?;
    let resumed = daemon.resume_unfinished().await?;
    assert_eq!(resumed.len(), 2);
    for r in &resumed {
        assert_eq!(r.kind, OpKind::GuestPrep);
        let err = r.outcome.as_ref().unwrap_err();
        assert_eq!(err.class(), Class::Definitive, "{err}");
    }
    let interrupted = prepare_boot(&daemon, "started", &prep).await.unwrap_err();
    assert!(
        interrupted.to_string().contains("was interrupted"),
        "{interrupted}"
    );
    let not_run = prepare_boot(&daemon, "unstarted", &prep).await.unwrap_err();
    assert!(not_run.to_string().contains("was not run"), "{not_run}");
    assert!(runs(&log).is_empty(), "nothing was run on resumption");
    assert!(sim.journal.unfinished().await?.is_empty());

    // An unstarted operation whose caller asks again is run (once).
    sim.journal.begin(record("op-asked", "asked")).await?;
    prepare_boot(&daemon, "asked", &prep).await?;
    assert_eq!(runs(&log).len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_looked_up_where_the_daemon_runs() -> Result {
    let sim = Sim::start().await?;
    let daemon = sim.local()?;
    let oma = ids::APPLIANCE_OMA;
    assert!(daemon.tool_available(&VmId::from(oma), "/bin/sh").await?);
    assert!(daemon.tool_available(&VmId::from(oma), "sh").await?);
    assert!(
        !daemon
            .tool_available(&VmId::from(oma), "no-such-tool-xyz")
            .await?
    );
    assert!(
        !daemon
            .tool_available(&VmId::from(oma), "/nonexistent/no-such-tool-xyz")
            .await?
    );
    let err = daemon
        .tool_available(&VmId::from("not-an-appliance"), "sh")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    Ok(())
}

// ---- REST API ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_carries_guest_prep_behind_the_token() -> Result {
    use reqwest::Method;
    let sim = Sim::start().await?;
    let local: Arc<dyn VolumeService> = Arc::new(sim.local()?);
    let token = "volumed-test-token";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(volumed::server::serve(
        listener,
        local,
        SecretString::from(token.to_string()),
        volumed::server::Identity::new(vec![ids::APPLIANCE_OMA.into()]),
        async move {
            let _ = stopped.await;
        },
    ));
    let (script, log) = sim.script("prep", "echo prepared")?;
    let prep = prep(&script, 30);
    let http = reqwest::Client::new();
    let prep_body = json!({
        "appliance_vm_id": ids::APPLIANCE_OMA,
        "volume_id": BOOT,
        "prep": prep,
    })
    .to_string();

    // No token or a wrong one: 401 on both new routes, and nothing run.
    for t in [None, Some("wrong-token")] {
        for (method, route, body) in [
            (
                Method::POST,
                format!("{url}/v1/guest-prep"),
                Some(prep_body.clone()),
            ),
            (
                Method::GET,
                format!(
                    "{url}/v1/appliances/{}/tools?program=sh",
                    ids::APPLIANCE_OMA
                ),
                None,
            ),
        ] {
            let mut request = http
                .request(method, &route)
                .header("Idempotency-Key", "k-unauth");
            if let Some(t) = t {
                request = request.bearer_auth(t);
            }
            if let Some(b) = body {
                request = request.header("content-type", "application/json").body(b);
            }
            let response = request.send().await?;
            assert_eq!(response.status().as_u16(), 401, "{route} with {t:?}");
            let answer: serde_json::Value = response.json().await?;
            assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
        }
    }
    assert!(runs(&log).is_empty());
    let wrong = HttpClient::new(HttpClientConfig::new(
        &url,
        SecretString::from("wrong".to_string()),
    ))?;
    assert_eq!(
        wrong.tool_available(&oma(), "sh").await.unwrap_err(),
        Error::Unauthorized
    );

    // A mistyped prep is 422 and runs nothing; no key is 400.
    let bad = json!({
        "appliance_vm_id": ids::APPLIANCE_OMA,
        "volume_id": BOOT,
        "prep": {"program": "x", "timeout": 5},
    });
    let good = prep_body_json(&prep);
    for (k, status) in [(Some("k-bad"), 422), (None, 400)] {
        let mut request = http
            .post(format!("{url}/v1/guest-prep"))
            .bearer_auth(token)
            .json(if k.is_some() { &bad } else { &good });
        if let Some(k) = k {
            request = request.header("Idempotency-Key", k);
        }
        assert_eq!(request.send().await?.status().as_u16(), status);
    }
    assert!(runs(&log).is_empty());

    // The HTTP client round-trips it, once per key.
    let client = HttpClient::new(HttpClientConfig::new(
        &url,
        SecretString::from(token.to_string()),
    ))?;
    let outcome = prepare_boot(&client, "http-prep", &prep).await?;
    assert_eq!(Path::new(&outcome.device_path), sim.device_path(BOOT));
    assert_eq!(outcome.stdout_tail, "prepared");
    let again = prepare_boot(&client, "http-prep", &prep).await?;
    assert_eq!(again, outcome);
    assert_eq!(runs(&log).len(), 1);
    // Errors come back as the same values.
    let (failing, _) = sim.script("failing", "echo no virtio iso >&2; exit 3")?;
    let err = prepare_boot(&client, "http-fail", &self::prep(&failing, 30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::GuestPrepFailed(_)), "{err:?}");
    assert!(err.to_string().contains("no virtio iso"), "{err}");
    assert_eq!(err.class(), Class::Definitive);
    // Tools, by name and by absolute path (encoded in the query).
    assert!(client.tool_available(&oma(), "sh").await?);
    assert!(client.tool_available(&oma(), "/bin/sh").await?);
    assert!(!client.tool_available(&oma(), "no-such-tool-xyz").await?);
    assert!(
        client
            .tool_available(&oma(), script.to_str().unwrap())
            .await?
    );
    let err = client
        .tool_available(&VmId::from("not-an-appliance"), "sh")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    let _ = stop.send(());
    server.await??;
    Ok(())
}

fn prep_body_json(prep: &GuestPrep) -> serde_json::Value {
    json!({"appliance_vm_id": ids::APPLIANCE_OMA, "volume_id": BOOT, "prep": prep})
}

// ---- what a preparation leaves running ----------------------------------------------

/// Whether process `pid` runs (a zombie has ended: it only waits to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            != Some("Z")
    })
}

/// Waits (bounded) until `what` holds, looking every few milliseconds.
async fn until(what: &str, mut holds: impl FnMut() -> bool) -> Result {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds() {
        anyhow::ensure!(Instant::now() < deadline, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The process id written to `file`, once it is there.
async fn pid_in(file: &Path) -> Result<u32> {
    until(&format!("{} is written", file.display()), || {
        std::fs::read_to_string(file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await?;
    Ok(std::fs::read_to_string(file)?.trim().parse()?)
}

/// A script body that starts a child blocked on a FIFO nobody writes to (it never ends
/// by itself), writes the child's and its own process ids, and waits for the child.
fn blocked_on_a_fifo(dir: &Path, name: &str) -> Result<(String, PathBuf, PathBuf)> {
    let fifo = dir.join(format!("{name}.fifo"));
    let status = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    anyhow::ensure!(status.success(), "mkfifo {}", fifo.display());
    let (child, leader) = (
        dir.join(format!("{name}.child")),
        dir.join(format!("{name}.leader")),
    );
    let body = format!(
        "cat '{}' > /dev/null &\necho $! > '{}'\necho $$ > '{}'\nwait",
        fifo.display(),
        child.display(),
        leader.display()
    );
    Ok((body, child, leader))
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prep_its_daemon_lets_go_of_is_killed_with_what_it_started() -> Result {
    let sim = Sim::start().await?;
    let daemon = Arc::new(sim.local()?);
    let (body, child_file, leader_file) = blocked_on_a_fifo(sim.tools.path(), "held")?;
    let (script, _log) = sim.script("held", &body)?;
    let prep = prep(&script, 600);
    let caller = {
        let daemon = Arc::clone(&daemon);
        tokio::spawn(async move { prepare_boot(&*daemon, "held", &prep).await })
    };
    let (child, leader) = (pid_in(&child_file).await?, pid_in(&leader_file).await?);
    assert!(alive(child) && alive(leader));
    // The daemon stops (as the server it runs in does): its operations stop with it.
    caller.abort();
    assert!(caller.await.is_err(), "the caller was cancelled");
    drop(Arc::into_inner(daemon).expect("the last reference"));
    until("the command and its child are killed", || {
        !alive(leader) && !alive(child)
    })
    .await?;
    Ok(())
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prep_left_running_by_a_dead_daemon_is_found_and_killed_on_restart() -> Result {
    use std::os::unix::process::CommandExt as _;
    let sim = Sim::start().await?;
    let (script, _log) = sim.script("prep", "true")?;
    let prep = prep(&script, 30);
    // What a daemon killed outright left: its command, marked with its operation, in a
    // process group of its own, and the child it started — and, beside them, another
    // operation's command, which must live.
    let start = |name: &str, op: &str| -> Result<(std::process::Child, PathBuf, PathBuf)> {
        let (body, child_file, leader_file) = blocked_on_a_fifo(sim.tools.path(), name)?;
        let process = std::process::Command::new("sh")
            .args(["-c", &body])
            .env(volumed::guest_prep::OP_ENV, op)
            .process_group(0)
            .spawn()?;
        Ok((process, leader_file, child_file))
    };
    let (mut left, leader, child) = start("left", "op-left")?;
    let (leader, child) = (pid_in(&leader).await?, pid_in(&child).await?);
    let (mut other, other_leader, other_child) = start("other", "op-other")?;
    let (other_leader, other_child) = (pid_in(&other_leader).await?, pid_in(&other_child).await?);
    sim.journal
        .begin(NewOp {
            id: "op-left".into(),
            idempotency_key: "left".into(),
            kind: OpKind::GuestPrep,
            vm_id: Some(ids::APPLIANCE_OMA.into()),
            volume_id: Some(BOOT.into()),
            snapshot_id: None,
            request: serde_json::to_value(OpRequest::GuestPrep {
                appliance_vm_id: ids::APPLIANCE_OMA.into(),
                volume_id: BOOT.into(),
                prep: prep.clone(),
            })?,
            run_id: None,
        })
        .await?;
    sim.journal
        .set_job("op-left", &format!("guest-prep:pid:{leader}").into(), None)
        .await?;

    let daemon = sim.local()?;
    let resumed = daemon.resume_unfinished().await?;
    assert_eq!(resumed.len(), 1);
    let Err(Error::GuestPrepFailed(failure)) = &resumed[0].outcome else {
        panic!("{:?}", resumed[0].outcome);
    };
    assert!(
        failure.reason.contains("was interrupted")
            && failure.reason.contains("was left running was killed"),
        "{}",
        failure.reason
    );
    until("the left command and its child are killed", || {
        !alive(leader) && !alive(child)
    })
    .await?;
    left.wait()?;
    assert!(
        alive(other_leader) && alive(other_child),
        "another operation's command is not touched"
    );
    other.kill()?;
    other.wait()?;
    std::process::Command::new("kill")
        .args(["-KILL", &other_child.to_string()])
        .status()?;
    Ok(())
}
