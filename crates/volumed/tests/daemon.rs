//! Black-box tests of the volume daemon against cloudsim.
//!
//! Each test starts a simulator on port 0 with its appliance's sysfs tree in a temp
//! dir, builds a [`Local`] daemon over a [`MemoryJournal`], and checks what the daemon
//! promises: device paths re-correlated as guest names change, one operation at a time
//! per VM, unknown outcomes resolved by looking (never a second attach), operations
//! resumed by job id after the daemon is killed, one action per idempotency key, no
//! replica ever deleted, and the REST API's auth and errors. CloudStack is watched
//! through cloudsim's `/sim/stats` (calls per command, per-queue concurrency).
//!
//! Nothing sleeps for a fixed time except the short steps of a bounded wait.

// Set-up and faults: volumes made, and attaches a dead daemon sent, with the real client.
#![allow(clippy::disallowed_methods)]

use ::ids::{SnapshotId, VmId, VolumeId, ZoneId};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloudsim::world::{World, ids};
use cloudstack::{Client, VolumeSource};
use secrecy::SecretString;
use serde_json::{Value, json};
use volumed::{
    Call, Class, Error, Fence, HttpClient, HttpClientConfig, Journal, Local, LocalConfig,
    MemoryJournal, NewOp, OpKind, OpRequest, OpState, Presence, VolumeService,
};

mod common;

use common::{assert_on_oma, attach_to_oma, cs_client, key, oma, start_sim};

type Result<T = ()> = anyhow::Result<T>;

const PATIENCE: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_millis(5);
const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// Waits (bounded) until `probe` yields something.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(STEP).await;
    }
}

/// The default world with quick commands; attach and detach take `attach_ms`.
fn quick_world(attach_ms: u64) -> World {
    let mut world = World::default();
    for (command, ms) in [
        ("createVolume", 1),
        ("createSnapshot", 10),
        ("revertSnapshot", 10),
        ("deleteSnapshot", 1),
        ("attachVolume", attach_ms),
        ("detachVolume", attach_ms),
    ] {
        world.latency_ms.insert(command.to_string(), ms);
    }
    world.settings.hotplug_delay_ms = 15;
    world
}

struct Sim {
    running: Option<cloudsim::Running>,
    endpoint: String,
    admin: String,
    /// For setting up the world (creating plain volumes); never for volume operations
    /// under test.
    client: Client,
    http: reqwest::Client,
    root: tempfile::TempDir,
    journal: Arc<MemoryJournal>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            // Releases the connections held open by `lose_response`.
            running.shutdown_token().cancel();
        }
    }
}

impl Sim {
    async fn start(world: World) -> Result<Sim> {
        let (running, root) = start_sim(world, 1.0).await?;
        let a = running.announcement.clone();
        Ok(Sim {
            running: Some(running),
            client: cs_client(&a.endpoint, Some(Duration::from_secs(10)))?,
            endpoint: a.endpoint,
            admin: a.admin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            root,
            journal: Arc::new(MemoryJournal::new()),
        })
    }

    /// The usual set-up: the default world with 20 ms attaches, and a daemon over it
    /// whose CloudStack requests may take 10 s.
    async fn quick() -> Result<(Sim, Local)> {
        let sim = Sim::start(quick_world(20)).await?;
        let daemon = sim.local(Duration::from_secs(10))?;
        Ok((sim, daemon))
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// A daemon over this simulator and the shared journal; `request_timeout` bounds
    /// each CloudStack request (short to make a lost response show quickly).
    fn local(&self, request_timeout: Duration) -> Result<Local> {
        let journal: Arc<dyn Journal> = self.journal.clone();
        let mut config = LocalConfig::with_appliance(ids::APPLIANCE_OMA, self.root());
        config.submit_backoff = Duration::from_millis(10);
        Ok(Local::new(
            cs_client(&self.endpoint, Some(request_timeout))?,
            journal,
            config,
        ))
    }

    async fn stats(&self) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/stats", self.admin))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// How many times CloudStack was called with `command`.
    async fn calls(&self, command: &str) -> Result<u64> {
        Ok(self.stats().await?["calls"][command].as_u64().unwrap_or(0))
    }

    async fn arm(&self, rule: Value) -> Result {
        self.http
            .post(format!("{}/faults", self.admin))
            .json(&rule)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// A new detached 5 GiB volume (set-up, through the raw client).
    async fn new_volume(&self, name: &str) -> Result<String> {
        let job = self
            .client
            .create_volume(
                name,
                &ZoneId::from(ids::ZONE),
                &VolumeSource::Offering {
                    disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                    size_gb: Some(5),
                },
            )
            .await?;
        Ok(self.client.wait(&job).await?.id.into_string())
    }

    async fn volume(&self, id: impl AsRef<str>) -> Result<Option<cloudstack::Volume>> {
        let id = id.as_ref();
        Ok(self.client.get_volume(&VolumeId::from(id)).await?)
    }
}

/// What the guest tree says independently of the daemon: the kernel name whose
/// `serial` file holds this volume's serial, if the by-id link agrees.
fn guest_name(root: &Path, volume_id: &str) -> Option<String> {
    let serial = cloudstack::volume_serial(&VolumeId::from(volume_id));
    let link = std::fs::read_link(root.join(format!("dev/disk/by-id/virtio-{serial}"))).ok()?;
    let name = link.file_name()?.to_string_lossy().into_owned();
    let content =
        std::fs::read_to_string(root.join("sys/block").join(&name).join("serial")).ok()?;
    (content.trim() == serial).then_some(name)
}

/// Asserts that `service` refuses to delete pgtest1's boot replica (key `key_name`),
/// saying it is a replica; returns the refusal.
async fn refuses_to_delete_the_replica<S: VolumeService + ?Sized>(
    service: &S,
    key_name: &str,
) -> Error {
    let err = service
        .delete_volume(&key(key_name), &VolumeId::from(ids::PGTEST1_DISK_2000))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::ReplicaVolume {
            volume_id: ids::PGTEST1_DISK_2000.into()
        }
    );
    err
}

/// Waits (bounded by [`DEVICE_WAIT`]) until `volume`'s device on `oma` shows `presence`.
async fn wait_on_oma<S: VolumeService + ?Sized>(
    service: &S,
    volume: &str,
    presence: Presence,
) -> volumed::Result<Option<volumed::Device>> {
    service
        .wait_device(&oma(), &VolumeId::from(volume), presence, DEVICE_WAIT)
        .await
}

// ---- attach / detach round trips and device correlation ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_detach_round_trips_re_correlate_device_paths() -> Result {
    let (sim, daemon) = Sim::quick().await?;
    let root = sim.root().to_path_buf();
    let mut volumes = Vec::new();
    for i in 0..5 {
        volumes.push(sim.new_volume(&format!("data-{i}")).await?);
    }

    // Five more disks on an appliance that has two: seven data disks.
    let mut devices = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let attached = attach_to_oma(&daemon, &format!("attach-{i}"), v, None).await?;
        assert_on_oma(attached.vm_id.as_ref());
        let device = wait_on_oma(&daemon, v, Presence::Appears)
            .await?
            .context("an appearing device is returned")?;
        let serial = cloudstack::volume_serial(&VolumeId::from(v));
        assert_eq!(
            device.path,
            Path::new(&format!("/dev/disk/by-id/virtio-{serial}"))
        );
        assert_eq!(
            Some(device.kernel_name.clone()),
            guest_name(&root, v),
            "the daemon's kernel name is the guest's"
        );
        // The link itself (cloudsim does not create the `dev/vdX` it points at).
        assert!(device.under(&root).symlink_metadata().is_ok());
        let recorded = sim.journal.device(&VolumeId::from(v)).context("recorded")?;
        assert_on_oma(recorded.vm_id.as_ref());
        assert_eq!(recorded.device_id, attached.device_id);
        assert_eq!(
            recorded.device_path.as_deref(),
            Some(device.path.to_str().unwrap())
        );
        devices.push(device);
    }
    let ids_seen: Vec<Option<i64>> = daemon
        .list_vm_volumes(&oma())
        .await?
        .iter()
        .map(|v| v.device_id)
        .collect();
    assert_eq!(
        ids_seen,
        [0, 1, 2, 4, 5, 6, 7, 8].map(Some).to_vec(),
        "device 3 is the CD-ROM"
    );

    // Every disk on the appliance has its own path and kernel name.
    let listed = daemon.list_vm_volumes(&oma()).await?;
    let mut paths: Vec<_> = listed
        .iter()
        .map(|v| v.device.as_ref().map(|d| d.path.clone()))
        .collect::<Option<Vec<_>>>()
        .context("every attached disk is visible")?;
    let mut names: Vec<_> = listed
        .iter()
        .filter_map(|v| v.device.as_ref().map(|d| d.kernel_name.clone()))
        .collect();
    paths.sort();
    paths.dedup();
    names.sort();
    names.dedup();
    assert_eq!(paths.len(), 8);
    assert_eq!(names.len(), 8);

    // Detach two of ours and a replica: their names are freed.
    let before: Vec<Option<String>> = [&volumes[0], &volumes[2], ids::PGTEST1_DISK_2000]
        .iter()
        .map(|v| guest_name(&root, v))
        .collect();
    for (i, v) in [&volumes[0], &volumes[2], ids::PGTEST1_DISK_2000]
        .iter()
        .enumerate()
    {
        let detached = daemon
            .detach(&key(&format!("detach-{i}")), &VolumeId::from(v))
            .await?;
        assert_eq!(detached.vm_id, None);
        let gone = wait_on_oma(&daemon, v, Presence::Disappears).await?;
        assert_eq!(gone, None);
        assert_eq!(guest_name(&root, v), None);
        assert_eq!(
            sim.journal
                .device(&VolumeId::from(v))
                .context("recorded")?
                .vm_id,
            None
        );
    }

    // Re-attach in another order: the guest hands out the lowest free names, so the
    // names change, and the paths follow the volumes.
    let mut after = vec![None; 3];
    for (i, v) in [
        (1, volumes[2].as_str()),
        (0, volumes[0].as_str()),
        (2, ids::PGTEST1_DISK_2000),
    ] {
        attach_to_oma(&daemon, &format!("reattach-{i}"), v, None).await?;
        let device = wait_on_oma(&daemon, v, Presence::Appears)
            .await?
            .context("re-attached device")?;
        assert_eq!(Some(device.kernel_name.clone()), guest_name(&root, v));
        after[i] = Some(device.kernel_name);
    }
    assert_eq!(
        before,
        [Some("vdd"), Some("vdf"), Some("vdb")]
            .map(|s| s.map(String::from))
            .to_vec()
    );
    assert_eq!(
        after,
        [Some("vdd"), Some("vdb"), Some("vdf")]
            .map(|s| s.map(String::from))
            .to_vec()
    );
    assert_ne!(before[1], after[1], "data-2 moved from vdf to vdb");

    // Each operation was sent exactly once.
    assert_eq!(sim.calls("attachVolume").await?, 8);
    assert_eq!(sim.calls("detachVolume").await?, 3);
    Ok(())
}

// ---- per-VM serialization ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_vm_are_serialized() -> Result {
    let latency = Duration::from_millis(80);
    let sim = Sim::start(quick_world(latency.as_millis() as u64)).await?;
    let daemon = Arc::new(sim.local(Duration::from_secs(10))?);
    let mut volumes = Vec::new();
    for i in 0..4 {
        volumes.push(sim.new_volume(&format!("c-{i}")).await?);
    }
    // Watch CloudStack from outside while the requests run: how many jobs are
    // pending at once (CloudStack would queue them; the daemon must not even send
    // the next before the previous ended).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let client = sim.client.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut most = 0;
            let deadline = Instant::now() + PATIENCE;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let pending = client
                    .list_async_jobs()
                    .await?
                    .iter()
                    .filter(|j| j.jobstatus == cloudstack::JobStatus::Pending)
                    .count();
                most = most.max(pending);
                tokio::time::sleep(STEP).await;
            }
            anyhow::Ok(most)
        })
    };
    let started = Instant::now();
    let attaches = volumes.iter().enumerate().map(|(i, v)| {
        let daemon = Arc::clone(&daemon);
        async move { attach_to_oma(&*daemon, &format!("c-{i}"), v, None).await }
    });
    // A detach of a replica from the same VM joins the queue too.
    let detach_key = key("c-detach");
    let detached_id = VolumeId::from(ids::PGTEST1_DISK_2001);
    let detach = daemon.detach(&detach_key, &detached_id);
    let (attached, detached) = tokio::join!(futures::future::join_all(attaches), detach);
    let wall = started.elapsed();
    detached?;
    let mut device_ids: Vec<i64> = attached
        .into_iter()
        .map(|r| r.map(|v| v.device_id.unwrap_or(-1)))
        .collect::<std::result::Result<_, _>>()?;
    device_ids.sort();
    device_ids.dedup();
    assert_eq!(device_ids.len(), 4, "{device_ids:?}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let most_pending = watcher.await??;
    assert_eq!(most_pending, 1, "jobs for one VM were pending at once");
    assert_eq!(
        daemon.max_in_flight_per_vm(),
        1,
        "the daemon had two in flight for one VM"
    );
    let stats = sim.stats().await?;
    assert_eq!(stats["max_concurrency_per_queue"], 1, "{stats}");
    assert!(
        wall >= latency * 5,
        "five jobs of {latency:?} on one VM took {wall:?}: they overlapped"
    );
    assert_eq!(stats["calls"]["attachVolume"], 4, "{stats}");
    Ok(())
}

// ---- unknown outcomes -------------------------------------------------------------

/// A simulator whose attaches take `attach_ms`, a daemon whose requests time out after
/// `timeout_ms`, and a new volume `name` attached to `oma` under `call` while the
/// simulator loses the attach's response.
async fn attach_losing_the_response(
    attach_ms: u64,
    timeout_ms: u64,
    name: &str,
    call: &str,
) -> Result<(Sim, Local, String, volumed::VolumeInfo)> {
    let sim = Sim::start(quick_world(attach_ms)).await?;
    let daemon = sim.local(Duration::from_millis(timeout_ms))?;
    let v = sim.new_volume(name).await?;
    sim.arm(json!({"command": "attachVolume", "fault": {"kind": "lose_response"}}))
        .await?;
    let attached = attach_to_oma(&daemon, call, &v, None).await?;
    Ok((sim, daemon, v, attached))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_attach_response_is_resolved_by_looking_not_by_a_second_attach() -> Result {
    // The lost response shows as a timeout of this request.
    let (sim, daemon, v, attached) = attach_losing_the_response(20, 400, "lost", "lost-1").await?;
    assert_on_oma(attached.vm_id.as_ref());
    assert_eq!(attached.device_id, Some(4));
    assert_eq!(sim.calls("attachVolume").await?, 1, "no second attach");
    let on = sim.volume(&v).await?.context("volume exists")?;
    assert_on_oma(on.virtualmachineid.as_ref());
    let op = sim.journal.op_by_key("lost-1").context("recorded")?;
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(
        op.job_id, None,
        "settled by looking: the attach was already done"
    );
    wait_on_oma(&daemon, &v, Presence::Appears).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_while_the_job_still_runs_adopts_that_job() -> Result {
    // The attach job outlives the request timeout: looking finds it pending.
    let (sim, _daemon, _v, attached) =
        attach_losing_the_response(1200, 300, "slow-lost", "slow-lost").await?;
    assert_on_oma(attached.vm_id.as_ref());
    assert_eq!(sim.calls("attachVolume").await?, 1, "no second attach");
    let op = sim.journal.op_by_key("slow-lost").context("recorded")?;
    assert_eq!(op.state, OpState::Succeeded);
    assert!(
        op.job_id.is_some(),
        "the pending job's id was adopted: {op:?}"
    );
    Ok(())
}

// ---- restart ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_is_resumed_by_job_id_with_one_attach() -> Result {
    let sim = Sim::start(quick_world(800)).await?;
    let v = sim.new_volume("killed").await?;
    let first = Arc::new(sim.local(Duration::from_secs(10))?);

    let caller = {
        let first = Arc::clone(&first);
        let v = v.clone();
        tokio::spawn(async move { attach_to_oma(&*first, "killed-1", &v, None).await })
    };
    let journal = Arc::clone(&sim.journal);
    let job_id = eventually("the attach's job id to be recorded", || {
        let op = journal.op_by_key("killed-1");
        async move { Ok(op.and_then(|o| o.job_id)) }
    })
    .await?;
    // Kill: the caller goes, then the daemon (its tasks are aborted where they are).
    caller.abort();
    assert!(caller.await.is_err(), "the caller was cancelled");
    drop(first);
    let op = sim.journal.op_by_key("killed-1").context("recorded")?;
    assert_eq!(op.state, OpState::Submitted, "{op:?}");

    // Restart over the same journal.
    let second = sim.local(Duration::from_secs(10))?;
    let resumed = second.resume_unfinished().await?;
    assert_eq!(resumed.len(), 1);
    assert!(resumed[0].had_job_id);
    assert_eq!(resumed[0].kind, OpKind::Attach);
    let result = resumed[0].outcome.as_ref().map_err(Clone::clone)?;
    assert_eq!(result["vm_id"], ids::APPLIANCE_OMA);

    assert_eq!(
        sim.calls("attachVolume").await?,
        1,
        "resumed, not resubmitted"
    );
    let op = sim.journal.op_by_key("killed-1").context("recorded")?;
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(
        op.job_id.as_ref().map(|id| id.as_str()),
        Some(job_id.as_str())
    );
    let on = sim.volume(&v).await?.context("volume exists")?;
    assert_on_oma(on.virtualmachineid.as_ref());

    // The caller asking again gets the result without another attach.
    let again = attach_to_oma(&second, "killed-1", &v, None).await?;
    assert_eq!(again.device_id, on.deviceid);
    assert_eq!(sim.calls("attachVolume").await?, 1);
    assert!(second.resume_unfinished().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_recorded_without_a_job_id_are_resolved_by_looking() -> Result {
    let sim = Sim::start(quick_world(20)).await?;
    let sent = sim.new_volume("sent-before-crash").await?;
    let unsent = sim.new_volume("never-sent").await?;
    let record = |key: &str, v: &str| NewOp {
        id: uuid_like(key),
        idempotency_key: key.into(),
        kind: OpKind::Attach,
        vm_id: Some(ids::APPLIANCE_OMA.into()),
        volume_id: Some(v.into()),
        snapshot_id: None,
        request: serde_json::to_value(OpRequest::Attach {
            volume_id: v.into(),
            vm_id: ids::APPLIANCE_OMA.into(),
            device_id: None,
        })
        .unwrap(),
        run_id: None,
    };
    // A daemon that died after CloudStack accepted the attach but before it recorded
    // the job id …
    sim.journal.begin(record("sent", &sent)).await?;
    sim.client
        .attach_volume(&VolumeId::from(&sent), &oma(), None)
        .await?;
    // … and one that died before it sent anything.
    sim.journal.begin(record("unsent", &unsent)).await?;

    let daemon = sim.local(Duration::from_secs(10))?;
    let resumed = daemon.resume_unfinished().await?;
    assert_eq!(resumed.len(), 2);
    for r in &resumed {
        assert!(!r.had_job_id);
        let result = r.outcome.as_ref().map_err(Clone::clone)?;
        assert_eq!(result["vm_id"], ids::APPLIANCE_OMA, "{r:?}");
    }
    assert_eq!(
        sim.calls("attachVolume").await?,
        2,
        "the sent one was found (attached or pending), only the unsent one was submitted"
    );
    for v in [&sent, &unsent] {
        let on = sim.volume(v).await?.context("volume exists")?;
        assert_on_oma(on.virtualmachineid.as_ref());
    }
    Ok(())
}

fn uuid_like(seed: &str) -> String {
    format!("op-{seed}")
}

// ---- idempotency and fencing ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_with_the_same_key_acts_once() -> Result {
    let sim = Sim::start(quick_world(60)).await?;
    let daemon = Arc::new(sim.local(Duration::from_secs(10))?);
    let a = sim.new_volume("a").await?;
    let b = sim.new_volume("b").await?;

    // One after the other.
    let first = attach_to_oma(&*daemon, "same", &a, None).await?;
    let second = attach_to_oma(&*daemon, "same", &a, None).await?;
    assert_eq!(first, second);
    assert_eq!(sim.calls("attachVolume").await?, 1);

    // At the same time: the second waits for the first.
    let same_now = key("same-now");
    let (b_id, oma) = (VolumeId::from(&b), VmId::from(ids::APPLIANCE_OMA));
    let (x, y) = tokio::join!(
        daemon.attach(&same_now, &b_id, &oma, None),
        daemon.attach(&same_now, &b_id, &oma, None),
    );
    assert_eq!(x?, y?);
    assert_eq!(sim.calls("attachVolume").await?, 2);

    // A key reused for another request is refused, and nothing is done.
    let err = attach_to_oma(&*daemon, "same", &b, Some(9))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err:?}");
    assert_eq!(err.class(), Class::Definitive);

    // A definitive failure is the answer for its key too, without a second call.
    let c = sim.new_volume("c").await?;
    let used = attach_to_oma(&*daemon, "taken-slot", &c, Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&used, Error::CloudStack { class: Class::Definitive, detail, .. } if detail.contains("deviceId 1 is used")),
        "{used:?}"
    );
    let again = attach_to_oma(&*daemon, "taken-slot", &c, Some(1))
        .await
        .unwrap_err();
    assert_eq!(used, again);
    assert_eq!(sim.calls("attachVolume").await?, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_off_worker_is_refused_before_anything_is_done() -> Result {
    let (sim, daemon) = Sim::quick().await?;
    let a = sim.new_volume("fenced-a").await?;
    let b = sim.new_volume("fenced-b").await?;
    let fence = |generation| Fence {
        run_id: "run-1".into(),
        generation,
    };
    daemon
        .attach(
            &Call::fenced("gen-2", fence(2)),
            &VolumeId::from(&a),
            &oma(),
            None,
        )
        .await?;
    let err = daemon
        .attach(
            &Call::fenced("gen-1", fence(1)),
            &VolumeId::from(&b),
            &oma(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fenced {
                generation: 1,
                highest: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(sim.calls("attachVolume").await?, 1);
    assert!(sim.journal.op_by_key("gen-1").is_none(), "nothing recorded");
    Ok(())
}

// ---- snapshots, clones and the replica rule ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_clones_and_the_replica_rule() -> Result {
    let (sim, daemon) = Sim::quick().await?;
    sim.journal
        .register_replica(&VolumeId::from(ids::PGTEST1_DISK_2000));
    sim.journal
        .register_replica(&VolumeId::from(ids::PGTEST1_DISK_2001));

    // A replica is never deleted, even detached (when CloudStack would allow it).
    daemon
        .detach(&key("free-2000"), &VolumeId::from(ids::PGTEST1_DISK_2000))
        .await?;
    let err = refuses_to_delete_the_replica(&daemon, "delete-2000").await;
    assert!(err.to_string().contains("never deletes replica volumes"));
    assert!(sim.volume(ids::PGTEST1_DISK_2000).await?.is_some());
    // The refusal is recorded: asking again gives it again.
    assert_eq!(
        daemon
            .delete_volume(&key("delete-2000"), &VolumeId::from(ids::PGTEST1_DISK_2000))
            .await
            .unwrap_err(),
        err
    );
    // Nor a volume ferry did not create.
    let stranger = sim.new_volume("not-ferrys").await?;
    let err = daemon
        .delete_volume(&key("delete-stranger"), &VolumeId::from(&stranger))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::NotCreatedByFerry {
            volume_id: stranger.clone()
        }
    );
    assert_eq!(err.class(), Class::Definitive);
    assert!(sim.volume(&stranger).await?.is_some());
    assert_eq!(sim.calls("deleteVolume").await?, 0);

    // Snapshot → clone → delete the clone.
    let snap = daemon
        .snapshot(
            &key("snap"),
            &VolumeId::from(ids::PGTEST1_DISK_2001),
            "ferry-run1-disk-2001",
        )
        .await?;
    assert_eq!(snap.state.as_deref(), Some("BackedUp"));
    assert_eq!(
        snap.volume_id.as_ref().map(|id| id.as_str()),
        Some(ids::PGTEST1_DISK_2001)
    );
    let clone = daemon
        .create_volume_from_snapshot(
            &key("clone"),
            &SnapshotId::from(&snap.id),
            "pgtest1-clone-2001",
            &ZoneId::from(ids::ZONE),
        )
        .await?;
    assert_eq!(clone.state, "Ready");
    assert_eq!(clone.size_bytes, 10 << 30);
    assert!(
        sim.journal
            .is_created_volume(&VolumeId::from(&clone.id))
            .await?,
        "the clone is tracked"
    );
    daemon
        .delete_volume(&key("delete-clone"), &VolumeId::from(&clone.id))
        .await?;
    assert!(sim.volume(&clone.id).await?.is_none());
    assert!(
        !sim.journal
            .is_created_volume(&VolumeId::from(&clone.id))
            .await?
    );
    // Asked again once the clone is gone: the recorded answer, nothing sent.
    daemon
        .delete_volume(&key("delete-clone"), &VolumeId::from(&clone.id))
        .await?;
    assert_eq!(sim.calls("deleteVolume").await?, 1);

    // Revert needs the volume detached (its VM, the appliance, is running): the
    // refusal is definitive and is the answer for that key.
    let refused = daemon
        .revert(&key("revert-early"), &SnapshotId::from(&snap.id))
        .await
        .unwrap_err();
    assert_eq!(refused.class(), Class::Definitive, "{refused:?}");
    assert_eq!(
        daemon
            .revert(&key("revert-early"), &SnapshotId::from(&snap.id))
            .await
            .unwrap_err(),
        refused
    );
    assert_eq!(sim.calls("revertSnapshot").await?, 1);
    daemon
        .detach(&key("free-2001"), &VolumeId::from(ids::PGTEST1_DISK_2001))
        .await?;
    let reverted = daemon
        .revert(&key("revert"), &SnapshotId::from(&snap.id))
        .await?;
    assert_eq!(reverted.id, snap.id);

    daemon
        .delete_snapshot(&key("delete-snap"), &SnapshotId::from(&snap.id))
        .await?;
    assert!(
        sim.client
            .list_snapshots(None, Some(&snap.id))
            .await?
            .is_empty()
    );
    // The snapshot is gone, and a repeated revert still gets its recorded answer.
    assert_eq!(
        daemon
            .revert(&key("revert"), &SnapshotId::from(&snap.id))
            .await?,
        reverted
    );
    assert_eq!(sim.calls("revertSnapshot").await?, 2);
    Ok(())
}

// ---- REST API ---------------------------------------------------------------------

struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(service: Arc<dyn VolumeService>, token: &str) -> Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(volumed::server::serve(
            listener,
            service,
            SecretString::from(token.to_string()),
            volumed::server::Identity::new(vec![ids::APPLIANCE_OMA.into()]),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Server {
            url,
            stop: Some(stop),
            task,
        })
    }

    async fn stop(mut self) -> Result {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await??;
        Ok(())
    }

    fn client(&self, token: &str) -> Result<HttpClient> {
        Ok(HttpClient::new(HttpClientConfig::new(
            &self.url,
            SecretString::from(token.to_string()),
        ))?)
    }
}

/// Sends a raw request; returns the status and the JSON body.
async fn raw(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    idempotency_key: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, Value)> {
    let mut request = http.request(method, url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(k) = idempotency_key {
        request = request.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        request = request
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let value = serde_json::from_str(&text).with_context(|| format!("JSON body: {text:?}"))?;
    Ok((status, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_needs_the_token_and_round_trips_through_the_http_client() -> Result {
    use reqwest::Method;
    let (sim, local) = Sim::quick().await?;
    let local: Arc<dyn VolumeService> = Arc::new(local);
    let token = "volumed-test-token";
    let server = Server::start(local, token).await?;
    let http = reqwest::Client::new();
    let v = sim.new_volume("over-http").await?;
    let attach_body = json!({"volume_id": v, "vm_id": ids::APPLIANCE_OMA}).to_string();
    let attach_url = format!("{}/v1/attach", server.url);

    // No token, a wrong token, a token of another length: 401, and nothing done.
    for t in [None, Some("wrong-token-of-same-len"), Some("x")] {
        for (method, url, body) in [
            (Method::POST, attach_url.clone(), Some(attach_body.as_str())),
            (
                Method::GET,
                format!("{}/v1/vms/{}/volumes", server.url, ids::APPLIANCE_OMA),
                None,
            ),
            (Method::GET, format!("{}/no/such/route", server.url), None),
        ] {
            let (status, body) = raw(&http, method, &url, t, Some("k-unauth"), body).await?;
            assert_eq!(status, 401, "{url} with {t:?}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        }
    }
    assert_eq!(sim.calls("attachVolume").await?, 0);
    let err = server
        .client("wrong")?
        .list_vm_volumes(&oma())
        .await
        .unwrap_err();
    assert_eq!(err, Error::Unauthorized);

    // Bad input is 4xx with a JSON error, never 500.
    let cases: [(&str, Option<&str>, &str, u16, &str); 5] = [
        (
            "no key",
            None,
            attach_body.as_str(),
            400,
            "missing_idempotency_key",
        ),
        ("not JSON", Some("k1"), "{not json", 400, "bad_request"),
        (
            "wrong shape",
            Some("k2"),
            r#"{"volume_id": "x"}"#,
            422,
            "unprocessable",
        ),
        (
            "unknown field",
            Some("k3"),
            r#"{"volume_id": "x", "vm_id": "y", "devise_id": 4}"#,
            422,
            "unprocessable",
        ),
        (
            "CD-ROM slot",
            Some("k4"),
            r#"{"volume_id": "x", "vm_id": "y", "device_id": 3}"#,
            400,
            "bad_request",
        ),
    ];
    for (what, k, body, status, code) in cases {
        let (got, answer) =
            raw(&http, Method::POST, &attach_url, Some(token), k, Some(body)).await?;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{what}: {answer}");
    }
    for (url, status, code) in [
        (format!("{}/no/such/route", server.url), 404, "not_found"),
        (
            format!(
                "{}/v1/appliances/{}/devices/{v}?presence=sideways&timeout_ms=5",
                server.url,
                ids::APPLIANCE_OMA
            ),
            400,
            "bad_request",
        ),
    ] {
        let (got, answer) = raw(&http, Method::GET, &url, Some(token), None, None).await?;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code))
        );
    }
    assert_eq!(sim.calls("attachVolume").await?, 0);

    // The HTTP client is the same service as the local one.
    let client = server.client(token)?;
    let attached = attach_to_oma(&client, "http-attach", &v, None).await?;
    assert_on_oma(attached.vm_id.as_ref());
    assert_eq!(attached.device_id, Some(4));
    let device = wait_on_oma(&client, &v, Presence::Appears)
        .await?
        .context("device over HTTP")?;
    assert_eq!(Some(device.kernel_name.clone()), guest_name(sim.root(), &v));
    let listed = client.list_vm_volumes(&oma()).await?;
    let ours = listed.iter().find(|x| x.id == v).context("listed")?;
    assert_eq!(ours.device.as_ref(), Some(&device));
    // Asked again over HTTP: the first answer, no second attach.
    let again = attach_to_oma(&client, "http-attach", &v, None).await?;
    assert_eq!(again, attached);
    assert_eq!(sim.calls("attachVolume").await?, 1);
    // Errors come back as the same values.
    sim.journal
        .register_replica(&VolumeId::from(ids::PGTEST1_DISK_2000));
    refuses_to_delete_the_replica(&client, "http-delete-replica").await;
    let err = client
        .wait_device(
            &VmId::from("not-an-appliance"),
            &VolumeId::from(&v),
            Presence::Appears,
            DEVICE_WAIT,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    server.stop().await?;
    Ok(())
}

// ---- transient refusals ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_refusal_is_resubmitted_with_backoff() -> Result {
    let (sim, daemon) = Sim::quick().await?;
    let v = sim.new_volume("transient").await?;
    sim.arm(json!({"command": "attachVolume", "times": 2, "fault": {"kind": "transient_530"}}))
        .await?;
    let attached = attach_to_oma(&daemon, "transient", &v, None).await?;
    assert_on_oma(attached.vm_id.as_ref());
    let stats = sim.stats().await?;
    assert_eq!(stats["calls"]["attachVolume"], 3, "{stats}");
    assert_eq!(stats["errors"]["attachVolume"], 2, "{stats}");
    Ok(())
}
