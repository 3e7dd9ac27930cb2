//! Black-box behaviour of the simulator: each test starts cloudsim and talks to it only
//! over HTTP — CloudStack calls through ferry's real client (`cloudstack::Client`),
//! and the `/sim/` admin surface through plain reqwest. The emulated appliance sysfs
//! tree is the only other thing a test looks at, as the appliance itself would.
//!
//! Timing assertions have generous margins: they must hold on a loaded 2-core machine.
//! Nothing sleeps for a fixed time except the short steps of a bounded wait for a
//! condition.

// These tests drive cloudsim's volume rules with ferry's real client.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use cloudsim::SimConfig;
use cloudsim::world::{World, ids};
use cloudstack::{
    Client, Error, ErrorClass, Job, JobStatus, VmId, Volume, VolumeFilter, VolumeId, VolumeSource,
    ZoneId,
};
use serde_json::{Value, json};

mod common;

type Result<T = ()> = anyhow::Result<T>;

/// How long a condition may take to become true, and how often it is looked at.
const PATIENCE: Duration = Duration::from_secs(5);
const STEP: Duration = Duration::from_millis(5);

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

fn client_for(endpoint: &str, request_timeout: Duration) -> Result<Client> {
    common::client(endpoint, ids::API_KEY, ids::SECRET_KEY, request_timeout)
}

/// The default world with quick setup commands, so that time goes where a test
/// measures it; attach and detach take `attach_ms` (before the time scale).
fn quick_world(attach_ms: u64) -> World {
    let mut world = World::default();
    for (command, ms) in [
        ("createVolume", 1),
        ("deployVirtualMachine", 1),
        ("startVirtualMachine", 1),
        ("attachVolume", attach_ms),
        ("detachVolume", attach_ms),
    ] {
        world.latency_ms.insert(command.to_string(), ms);
    }
    world.settings.hotplug_delay_ms = 20;
    world
}

/// A running simulator and the ways to talk to it.
struct Sim {
    _running: cloudsim::Running,
    endpoint: String,
    admin: String,
    client: Client,
    http: reqwest::Client,
    root: tempfile::TempDir,
}

impl Sim {
    async fn start(world: World, time_scale: f64) -> Result<Sim> {
        let root = tempfile::tempdir()?;
        let running = cloudsim::start(
            SimConfig {
                world,
                sysfs_root: Some(root.path().to_path_buf()),
                time_scale,
            },
            "127.0.0.1:0".parse()?,
        )
        .await?;
        let a = running.announcement.clone();
        assert_eq!(a.api_key, ids::API_KEY);
        assert_eq!(a.secret_key, ids::SECRET_KEY);
        assert_eq!(
            a.appliances.get("oma").map(String::as_str),
            Some(ids::APPLIANCE_OMA)
        );
        assert_eq!(
            a.sysfs_roots.get("oma").map(PathBuf::as_path),
            Some(root.path()),
            "a single appliance's tree is the root itself"
        );
        let client = client_for(&a.endpoint, Duration::from_secs(10))?;
        Ok(Sim {
            _running: running,
            endpoint: a.endpoint,
            admin: a.admin,
            client,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            root,
        })
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    // ---- /sim admin surface ----

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

    async fn arm(&self, rule: Value) -> Result {
        let answer: Value = self
            .http
            .post(format!("{}/faults", self.admin))
            .json(&rule)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        assert_eq!(answer["armed"], 1, "{answer}");
        Ok(())
    }

    async fn faults(&self) -> Result<Vec<Value>> {
        Ok(self
            .http
            .get(format!("{}/faults", self.admin))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn clear_faults(&self) -> Result {
        self.http
            .delete(format!("{}/faults", self.admin))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn set_latency(&self, body: Value) -> Result {
        self.http
            .post(format!("{}/latency", self.admin))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn settings(&self) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/settings", self.admin))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn set_settings(&self, settings: &Value) -> Result {
        self.http
            .post(format!("{}/settings", self.admin))
            .json(settings)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `/sim/volumes`: every volume with its state and content generation.
    async fn sim_volumes(&self) -> Result<Vec<Value>> {
        Ok(self
            .http
            .get(format!("{}/volumes", self.admin))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    // ---- CloudStack calls ----

    /// A new custom-offering volume (detached, Allocated); returns its id.
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
        let id = job
            .id
            .clone()
            .context("createVolume answers with the new volume's id")?;
        let volume = self.client.wait(&job).await?;
        assert_eq!(volume.id.as_str(), id);
        assert_eq!(volume.size, 5 << 30);
        Ok(id)
    }

    /// Makes a volume, arms a fault of `kind` on the next attachVolume, attaches the
    /// volume to the appliance, and checks that the refused call made no job and
    /// changed nothing. Returns the volume and the client's error.
    async fn attach_refused_by(&self, name: &str, kind: &str) -> Result<(String, Error)> {
        let v = self.new_volume(name).await?;
        let before = self.volume(&v).await?;
        let jobs_before = self.job_count().await?;
        self.arm(json!({"command": "attachVolume", "fault": {"kind": kind}}))
            .await?;
        let err = self
            .client
            .attach_volume(&VolumeId::from(&v), &VmId::from(ids::APPLIANCE_OMA), None)
            .await
            .unwrap_err();
        assert_eq!(self.job_count().await?, jobs_before, "no job was made");
        assert_eq!(self.volume(&v).await?, before);
        Ok((v, err))
    }

    /// A VM deployed from the template (not an appliance); returns its id.
    async fn deploy(&self, name: &str, start: bool) -> Result<String> {
        let job = self
            .client
            .deploy_virtual_machine(&common::deploy_request(name, start))
            .await?;
        let vm = self.client.wait(&job).await?;
        assert_eq!(vm.state, if start { "Running" } else { "Stopped" });
        Ok(vm.id.into_string())
    }

    async fn attach(
        &self,
        volume_id: impl AsRef<str>,
        vm_id: impl AsRef<str>,
        device_id: Option<i64>,
    ) -> Result<Volume> {
        let vm_id = vm_id.as_ref();
        let job = self
            .client
            .attach_volume(
                &VolumeId::from(volume_id.as_ref()),
                &VmId::from(vm_id),
                device_id,
            )
            .await?;
        let volume = self.client.wait(&job).await?;
        assert_eq!(
            volume.virtualmachineid.as_ref().map(|id| id.as_str()),
            Some(vm_id)
        );
        Ok(volume)
    }

    async fn detach(&self, volume_id: impl AsRef<str>) -> Result<Volume> {
        let volume_id = VolumeId::from(volume_id.as_ref());
        let job = self
            .client
            .detach_volume(&VolumeId::from(&volume_id))
            .await?;
        let volume = self.client.wait(&job).await?;
        assert_eq!(volume.virtualmachineid, None);
        Ok(volume)
    }

    async fn volume(&self, id: impl AsRef<str>) -> Result<Volume> {
        let id = VolumeId::from(id.as_ref());
        self.client
            .get_volume(&VolumeId::from(&id))
            .await?
            .with_context(|| format!("volume {id} exists"))
    }

    async fn volumes_of(&self, vm_id: impl AsRef<str>) -> Result<Vec<Volume>> {
        Ok(self
            .client
            .list_volumes(&VolumeFilter {
                virtual_machine_id: Some(vm_id.as_ref().into()),
                ..Default::default()
            })
            .await?)
    }

    async fn job_count(&self) -> Result<usize> {
        Ok(self.client.list_async_jobs().await?.len())
    }

    /// Waits until the disk with this volume's serial is fully present in the
    /// appliance and returns its guest name.
    async fn wait_disk(&self, volume_id: impl AsRef<str>) -> Result<String> {
        let serial = cloudstack::volume_serial(&VolumeId::from(volume_id.as_ref()));
        let root = self.root().to_path_buf();
        eventually(&format!("disk {serial} to appear"), || {
            let found = guest_disk(&root, &serial);
            async move { Ok(found) }
        })
        .await
    }

    /// (CloudStack device id, libvirt target name, name inside the guest) of every
    /// disk of the appliance, by device id.
    async fn appliance_layout(&self) -> Result<Vec<(i64, String, String)>> {
        let mut layout = Vec::new();
        for v in self.volumes_of(ids::APPLIANCE_OMA).await? {
            let device = v.deviceid.context("an attached volume has a device id")?;
            let guest = self.wait_disk(&v.id).await?;
            layout.push((device, cloudsim::disk_name(device as usize), guest));
        }
        layout.sort();
        Ok(layout)
    }
}

fn by_id(root: &Path, serial: &str) -> PathBuf {
    root.join("dev/disk/by-id").join(format!("virtio-{serial}"))
}

/// The guest name of the disk with `serial`, when both its by-id link and its
/// `/sys/block/<name>/serial` are there and agree.
fn guest_disk(root: &Path, serial: &str) -> Option<String> {
    let link = std::fs::read_link(by_id(root, serial)).ok()?;
    let name = link.to_str()?.strip_prefix("../../")?.to_string();
    let content =
        std::fs::read_to_string(root.join("sys/block").join(&name).join("serial")).ok()?;
    (content.trim_end() == serial).then_some(name)
}

/// Whether anything in the appliance tree mentions `serial`.
fn mentioned(root: &Path, serial: &str) -> bool {
    if by_id(root, serial).symlink_metadata().is_ok() {
        return true;
    }
    std::fs::read_dir(root.join("sys/block"))
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("serial"))
                    .map(|s| s.trim_end() == serial)
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

fn oma_queue() -> String {
    format!("vm:{}", ids::APPLIANCE_OMA)
}

// ---- reads ----------------------------------------------------------------------

/// `get_volumes` reads several volumes in one `listVolumes ids=…`: a volume deleted
/// since is left out, and `get_volume` of an id CloudStack never knew is `None` (the
/// list is refused with 431, as CloudStack's id translation refuses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_volumes_are_read_in_one_call_and_a_deleted_one_is_left_out() -> Result {
    let sim = Sim::start(quick_world(1), 0.01).await?;
    let a = VolumeId::from(sim.new_volume("read-a").await?);
    let b = VolumeId::from(sim.new_volume("read-b").await?);
    let gone = VolumeId::from(sim.new_volume("read-gone").await?);
    sim.client.delete_volume(&gone).await?;
    let calls = |stats: &Value| stats["calls"]["listVolumes"].as_u64().unwrap_or(0);
    let before = calls(&sim.stats().await?);
    let seen = sim
        .client
        .get_volumes(&[a.clone(), b.clone(), gone.clone()])
        .await?;
    assert_eq!(calls(&sim.stats().await?), before + 1, "one call");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[&a].name, "read-a");
    assert_eq!(seen[&b].name, "read-b");
    assert!(!seen.contains_key(&gone));
    assert!(sim.client.get_volumes(&[]).await?.is_empty());
    assert_eq!(calls(&sim.stats().await?), before + 1, "none for no ids");
    // Deleted since: not there. Never known: not there either, not an error.
    assert!(sim.client.get_volume(&gone).await?.is_none());
    let never = VolumeId::from("9b3f6d0e-0000-4000-8000-000000000000");
    assert!(sim.client.get_volume(&never).await?.is_none());
    // But a list that names a never-known volume among others is refused whole.
    let err = sim.client.get_volumes(&[a, never]).await.unwrap_err();
    assert!(err.to_string().contains("431"), "{err}");
    Ok(())
}

/// `listSnapshots name=` matches a part of the name (CloudStack's `LIKE '%name%'`), so
/// one call finds a run's snapshots of every volume; `keyword` the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_listed_by_a_part_of_their_name() -> Result {
    let sim = Sim::start(quick_world(1), 0.01).await?;
    // The replicas of pgtest1: Ready, on the appliance.
    let a = VolumeId::from(ids::PGTEST1_DISK_2000);
    let b = VolumeId::from(ids::PGTEST1_DISK_2001);
    for (volume, name) in [
        (&a, "drill-7-disk-2000"),
        (&b, "drill-7-disk-2001"),
        (&b, "drill-70-disk-2001"),
        (&a, "other-disk-2000"),
    ] {
        let job = sim.client.create_snapshot(volume, Some(name)).await?;
        sim.client.wait(&job).await?;
    }
    let mut names: Vec<String> = sim
        .client
        .list_snapshots_named("drill-7-disk-")
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    assert_eq!(names, ["drill-7-disk-2000", "drill-7-disk-2001"]);
    // A substring anywhere, as SQL's LIKE '%…%': "disk-2001" is in two names.
    let by_keyword: Vec<cloudstack::Snapshot> = sim
        .client
        .list(
            "listSnapshots",
            "snapshot",
            vec![("keyword".into(), "disk-2001".into())],
        )
        .await?;
    assert_eq!(by_keyword.len(), 2, "{by_keyword:?}");
    assert!(sim.client.list_snapshots_named("no-such").await?.is_empty());
    Ok(())
}

// ---- 1. per-VM serialization ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_one_vm_never_overlap_and_finish_in_submission_order() -> Result {
    const N: u32 = 4;
    let latency = Duration::from_millis(200);
    let sim = Sim::start(quick_world(1), 1.0).await?;
    let mut volumes = Vec::new();
    for i in 0..N {
        volumes.push(sim.new_volume(&format!("serial-{i}")).await?);
    }
    sim.set_latency(json!({"attachVolume": latency.as_millis() as u64}))
        .await?;

    let started = Instant::now();
    let mut jobs = Vec::new();
    for v in &volumes {
        jobs.push(
            sim.client
                .attach_volume(&VolumeId::from(v), &VmId::from(ids::APPLIANCE_OMA), None)
                .await?,
        );
    }
    // Wait for all of them at once. Whenever one is seen finished, every job submitted
    // before it must already be finished.
    let waits = jobs.iter().enumerate().map(|(i, job)| {
        let client = &sim.client;
        let jobs = &jobs;
        async move {
            let volume = client.wait(job).await?;
            for (j, earlier) in jobs[..i].iter().enumerate() {
                let state = client.query_async_job_result(&earlier.job_id).await?;
                anyhow::ensure!(
                    state.jobstatus == JobStatus::Succeeded,
                    "job {i} finished while job {j}, submitted before it, was {:?}",
                    state.jobstatus
                );
            }
            Ok(volume)
        }
    });
    let attached = futures::future::try_join_all(waits).await?;
    let wall = started.elapsed();

    assert!(
        wall >= latency * N,
        "{N} attaches of {latency:?} to one VM took only {wall:?}: they overlapped"
    );
    // Device ids are chosen when a job reaches the head of the queue: 4, 5, 6, 7 in
    // submission order (1 and 2 hold the replicas, 3 is the CD-ROM).
    let devices: Vec<Option<i64>> = attached.iter().map(|v| v.deviceid).collect();
    assert_eq!(devices, vec![Some(4), Some(5), Some(6), Some(7)]);

    let stats = sim.stats().await?;
    assert_eq!(stats["max_concurrency_per_queue"], 1, "{stats}");
    let queue = &stats["queues"][oma_queue().as_str()];
    assert_eq!(queue["jobs"], N, "{stats}");
    assert_eq!(queue["name"], "oma", "{stats}");
    let busy = queue["busy_s"].as_f64().context("busy_s")?;
    assert!(
        busy >= latency.as_secs_f64() * f64::from(N),
        "busy {busy} s for {N} jobs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_different_vms_run_concurrently() -> Result {
    let latency = Duration::from_millis(500);
    let sim = Sim::start(quick_world(1), 1.0).await?;
    let other = sim.deploy("other", false).await?;
    let a = sim.new_volume("for-oma").await?;
    let b = sim.new_volume("for-other").await?;
    sim.set_latency(json!({"attachVolume": latency.as_millis() as u64}))
        .await?;

    let started = Instant::now();
    let ja = sim
        .client
        .attach_volume(&VolumeId::from(&a), &VmId::from(ids::APPLIANCE_OMA), None)
        .await?;
    let jb = sim
        .client
        .attach_volume(&VolumeId::from(&b), &VmId::from(&other), None)
        .await?;
    let (va, vb) = tokio::try_join!(sim.client.wait(&ja), sim.client.wait(&jb))?;
    let wall = started.elapsed();

    assert_eq!(
        va.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some(ids::APPLIANCE_OMA)
    );
    assert_eq!(
        vb.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some(other.as_str())
    );
    assert!(wall >= latency, "an attach took {wall:?} < {latency:?}");
    assert!(
        wall < latency.mul_f64(1.7),
        "one attach on each of two VMs took {wall:?}: they did not overlap"
    );

    let stats = sim.stats().await?;
    assert_eq!(stats["max_concurrency_per_queue"], 1, "{stats}");
    assert_eq!(stats["queues"][oma_queue().as_str()]["jobs"], 1, "{stats}");
    // deploy + attach
    assert_eq!(
        stats["queues"][format!("vm:{other}").as_str()]["jobs"],
        2,
        "{stats}"
    );
    Ok(())
}

// ---- 2. hot-plug emulation --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_volumes_appear_in_the_appliance_under_the_lowest_free_name() -> Result {
    let sim = Sim::start(quick_world(20), 1.0).await?;
    let root = sim.root().to_path_buf();
    // The hot-plug delay is a setting that can be changed while running.
    let mut settings = sim.settings().await?;
    settings["hotplug_delay_ms"] = json!(10);
    sim.set_settings(&settings).await?;
    assert_eq!(sim.settings().await?["hotplug_delay_ms"], 10);

    // At start: the appliance's own root is vda, the replicas vdb and vdc.
    assert_eq!(
        guest_disk(
            &root,
            &cloudstack::volume_serial(&VolumeId::from(ids::OMA_ROOT))
        )
        .as_deref(),
        Some("vda")
    );
    assert_eq!(
        guest_disk(
            &root,
            &cloudstack::volume_serial(&VolumeId::from(ids::PGTEST1_DISK_2000))
        )
        .as_deref(),
        Some("vdb")
    );
    assert_eq!(
        guest_disk(
            &root,
            &cloudstack::volume_serial(&VolumeId::from(ids::PGTEST1_DISK_2001))
        )
        .as_deref(),
        Some("vdc")
    );

    // A new volume gets device id 4 (3 is the CD-ROM), whose libvirt target is vde,
    // but the guest names it vdd.
    let a = sim.new_volume("a").await?;
    let serial_a = cloudstack::volume_serial(&VolumeId::from(&a));
    let attached = sim.attach(&a, ids::APPLIANCE_OMA, None).await?;
    assert_eq!(attached.deviceid, Some(4));
    let vdd_serial = root.join("sys/block/vdd/serial");
    eventually("sys/block/vdd/serial to hold the serial", || {
        let content = std::fs::read_to_string(&vdd_serial).ok();
        let serial = serial_a.clone();
        async move { Ok(content.filter(|c| c.trim_end() == serial).map(|_| ())) }
    })
    .await?;
    eventually("the by-id link", || {
        let link = std::fs::read_link(by_id(&root, &serial_a)).ok();
        async move { Ok(link) }
    })
    .await
    .map(|link| assert_eq!(link, Path::new("../../vdd")))?;
    assert_eq!(cloudsim::disk_name(4), "vde");

    // Detach removes both the block device and the link.
    sim.detach(ids::PGTEST1_DISK_2000).await?;
    let serial_2000 = cloudstack::volume_serial(&VolumeId::from(ids::PGTEST1_DISK_2000));
    assert!(!root.join("sys/block/vdb").exists());
    assert!(by_id(&root, &serial_2000).symlink_metadata().is_err());
    assert!(!mentioned(&root, &serial_2000));

    // B asks for device 6 (libvirt vdg) and takes the freed vdb; C gets the freed
    // device 1 (libvirt vdb) and becomes vde; D gets device 5 and vdf.
    let b = sim.new_volume("b").await?;
    assert_eq!(
        sim.attach(&b, ids::APPLIANCE_OMA, Some(6)).await?.deviceid,
        Some(6)
    );
    assert_eq!(sim.wait_disk(&b).await?, "vdb");
    let c = sim.new_volume("c").await?;
    assert_eq!(
        sim.attach(&c, ids::APPLIANCE_OMA, None).await?.deviceid,
        Some(1)
    );
    assert_eq!(sim.wait_disk(&c).await?, "vde");
    let d = sim.new_volume("d").await?;
    assert_eq!(
        sim.attach(&d, ids::APPLIANCE_OMA, None).await?.deviceid,
        Some(5)
    );
    assert_eq!(sim.wait_disk(&d).await?, "vdf");

    // Five data disks; listVolumes' device id says nothing about the guest name.
    let layout = sim.appliance_layout().await?;
    let expected: Vec<(i64, String, String)> = [
        (0, "vda", "vda"),
        (1, "vdb", "vde"),
        (2, "vdc", "vdc"),
        (4, "vde", "vdd"),
        (5, "vdf", "vdf"),
        (6, "vdg", "vdb"),
    ]
    .into_iter()
    .map(|(d, l, g)| (d, l.to_string(), g.to_string()))
    .collect();
    assert_eq!(layout, expected);
    let at_4 = layout.iter().find(|(d, _, _)| *d == 4).expect("device 4");
    assert_ne!(at_4.2, "vde", "device id 4 is not vde inside the guest");

    // Re-attaching after a detach takes the lowest free name: A and B keep their
    // device ids (4 and 6) but swap guest names.
    sim.detach(&a).await?;
    sim.detach(&b).await?;
    assert!(!mentioned(&root, &serial_a));
    assert!(!mentioned(
        &root,
        &cloudstack::volume_serial(&VolumeId::from(&b))
    ));
    assert_eq!(
        sim.attach(&a, ids::APPLIANCE_OMA, None).await?.deviceid,
        Some(4)
    );
    assert_eq!(sim.wait_disk(&a).await?, "vdb");
    assert_eq!(
        sim.attach(&b, ids::APPLIANCE_OMA, None).await?.deviceid,
        Some(6)
    );
    assert_eq!(sim.wait_disk(&b).await?, "vdd");
    // The replica that was vdb comes back as the next free name.
    assert_eq!(
        sim.attach(ids::PGTEST1_DISK_2000, ids::APPLIANCE_OMA, None)
            .await?
            .deviceid,
        Some(7)
    );
    assert_eq!(sim.wait_disk(ids::PGTEST1_DISK_2000).await?, "vdg");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hot_plug_into_a_vm_that_is_not_the_appliance() -> Result {
    let sim = Sim::start(quick_world(20), 1.0).await?;
    let root = sim.root().to_path_buf();
    let vm = sim.deploy("worker", true).await?;
    let elsewhere = sim.new_volume("elsewhere").await?;
    let here = sim.new_volume("here").await?;

    let attached = sim.attach(&elsewhere, &vm, None).await?;
    assert_eq!(attached.deviceid, Some(1));
    // An attach to the appliance issued afterwards appears; by then the first would
    // have appeared too, had it been hot-plugged into the appliance.
    sim.attach(&here, ids::APPLIANCE_OMA, None).await?;
    assert_eq!(sim.wait_disk(&here).await?, "vdd");
    assert!(!mentioned(
        &root,
        &cloudstack::volume_serial(&VolumeId::from(&elsewhere))
    ));
    for v in sim.volumes_of(&vm).await? {
        assert!(!mentioned(&root, &v.serial()), "{} leaked in", v.name);
    }
    // Detaching from the other VM leaves the appliance alone.
    sim.detach(&elsewhere).await?;
    assert_eq!(
        guest_disk(&root, &cloudstack::volume_serial(&VolumeId::from(&here))).as_deref(),
        Some("vdd")
    );
    Ok(())
}

// ---- 3. faults --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_error_fails_the_job_and_changes_nothing() -> Result {
    let sim = Sim::start(quick_world(20), 1.0).await?;
    let v = sim.new_volume("doomed").await?;
    let before = sim.volume(&v).await?;
    sim.arm(json!({"command": "attachVolume", "nth": 1, "times": 1,
        "fault": {"kind": "job_error", "errorcode": 530, "errortext": "boom"}}))
        .await?;

    let job = sim
        .client
        .attach_volume(&VolumeId::from(&v), &VmId::from(ids::APPLIANCE_OMA), None)
        .await?;
    assert!(!job.job_id.as_str().is_empty());
    let err = sim.client.wait(&job).await.unwrap_err();
    match &err {
        Error::JobFailed {
            job_id,
            errorcode,
            errortext,
            ..
        } => {
            assert_eq!(job_id, &job.job_id);
            assert_eq!(*errorcode, 530);
            assert_eq!(errortext, "boom");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Definitive);

    let after = sim.volume(&v).await?;
    assert_eq!(after, before, "a failed job changed the volume");
    assert_eq!(after.state, "Allocated");
    assert_eq!(sim.volumes_of(ids::APPLIANCE_OMA).await?.len(), 3);
    assert!(sim.faults().await?.is_empty(), "the rule is spent");
    // Nothing was consumed: the same attach now works and takes device 4 / vdd.
    assert_eq!(
        sim.attach(&v, ids::APPLIANCE_OMA, None).await?.deviceid,
        Some(4)
    );
    assert_eq!(sim.wait_disk(&v).await?, "vdd");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_530_refuses_a_mutation_and_a_read_is_retried() -> Result {
    let sim = Sim::start(quick_world(20), 1.0).await?;
    let (_, err) = sim.attach_refused_by("refused", "transient_530").await?;
    assert!(
        matches!(err, Error::Api { errorcode: 530, .. }),
        "expected Api 530, got {err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);

    // A read hit twice is retried by the client (read_attempts) and succeeds.
    let calls_before = sim.stats().await?["calls"]["listZones"]
        .as_u64()
        .unwrap_or(0);
    sim.arm(json!({"command": "listZones", "times": 2, "fault": {"kind": "transient_530"}}))
        .await?;
    let zones = sim.client.list_zones().await?;
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0].id, ids::ZONE);
    let stats = sim.stats().await?;
    assert_eq!(stats["calls"]["listZones"], calls_before + 3, "{stats}");
    assert_eq!(stats["errors"]["listZones"], 2, "{stats}");
    assert!(sim.faults().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_connection_is_of_unknown_outcome_and_changes_nothing() -> Result {
    let sim = Sim::start(quick_world(20), 1.0).await?;
    let (v, err) = sim.attach_refused_by("dropped", "drop_connection").await?;
    assert!(
        matches!(err, Error::NoResponse { mutation: true, .. }),
        "expected NoResponse, got {err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Unknown);
    // The simulator still serves, and the same attach now works.
    assert_eq!(
        sim.attach(&v, ids::APPLIANCE_OMA, None).await?.deviceid,
        Some(4)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lose_response_is_of_unknown_outcome_but_the_attach_happened() -> Result {
    let sim = Sim::start(quick_world(20), 1.0).await?;
    let v = sim.new_volume("lost").await?;
    let impatient = client_for(&sim.endpoint, Duration::from_millis(300))?;
    sim.arm(json!({"command": "attachVolume", "fault": {"kind": "lose_response"}}))
        .await?;

    let err = impatient
        .attach_volume(&VolumeId::from(&v), &VmId::from(ids::APPLIANCE_OMA), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NoResponse { mutation: true, .. }),
        "expected NoResponse, got {err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Unknown);

    // Looking before retrying shows the attach went through.
    let attached = eventually("the lost attach to take effect", || {
        let sim = &sim;
        let v = &v;
        async move {
            let vol = sim.volume(v).await?;
            Ok(
                (vol.virtualmachineid.as_ref().map(|id| id.as_str()) == Some(ids::APPLIANCE_OMA)
                    && vol.state == "Ready")
                    .then_some(vol),
            )
        }
    })
    .await?;
    assert_eq!(attached.deviceid, Some(4));
    let jobs = sim.client.list_async_jobs().await?;
    let job = jobs
        .iter()
        .find(|j| {
            j.jobinstanceid.as_deref() == Some(v.as_str())
                && j.cmd.as_deref().is_some_and(|c| c.contains("AttachVolume"))
        })
        .context("the attach job exists")?;
    assert_eq!(job.jobstatus, JobStatus::Succeeded);
    assert_eq!(sim.wait_disk(&v).await?, "vdd");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_with_nth_2_spares_the_first_call() -> Result {
    let sim = Sim::start(quick_world(20), 1.0).await?;
    let a = sim.new_volume("first").await?;
    let b = sim.new_volume("second").await?;
    sim.arm(json!({"command": "attachVolume", "nth": 2, "fault": {"kind": "transient_530"}}))
        .await?;
    let armed = sim.faults().await?;
    assert_eq!(armed.len(), 1);
    assert_eq!(armed[0]["rule"]["nth"], 2);
    assert_eq!(armed[0]["rule"]["fault"]["kind"], "transient_530");

    sim.attach(&a, ids::APPLIANCE_OMA, None).await?;
    let err = sim
        .client
        .attach_volume(&VolumeId::from(&b), &VmId::from(ids::APPLIANCE_OMA), None)
        .await
        .unwrap_err();
    assert_eq!(err.errorcode(), Some(530));
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(sim.faults().await?.is_empty(), "the rule is spent");
    sim.attach(&b, ids::APPLIANCE_OMA, None).await?;

    // A cleared rule never fires.
    sim.arm(json!({"command": "detachVolume", "fault": {"kind": "transient_530"}}))
        .await?;
    sim.clear_faults().await?;
    assert!(sim.faults().await?.is_empty());
    sim.detach(&b).await?;
    Ok(())
}

// ---- 4. stats ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_calls_queue_busy_time_and_polls() -> Result {
    let sim = Sim::start(quick_world(30), 1.0).await?;
    let v = sim.new_volume("counted").await?;
    sim.attach(&v, ids::APPLIANCE_OMA, None).await?;
    sim.detach(&v).await?;
    sim.attach(&v, ids::APPLIANCE_OMA, None).await?;
    sim.client.list_zones().await?;

    let stats = sim.stats().await?;
    assert_eq!(stats["calls"]["attachVolume"], 2, "{stats}");
    assert_eq!(stats["calls"]["detachVolume"], 1, "{stats}");
    assert_eq!(stats["calls"]["createVolume"], 1, "{stats}");
    assert_eq!(stats["calls"]["listZones"], 1, "{stats}");
    assert!(
        stats["calls"]["queryAsyncJobResult"].as_u64() >= Some(4),
        "{stats}"
    );
    assert_eq!(stats["max_concurrency_per_queue"], 1, "{stats}");

    let queue = &stats["queues"][oma_queue().as_str()];
    assert_eq!(queue["name"], "oma", "{stats}");
    assert_eq!(queue["jobs"], 3, "{stats}");
    let busy = queue["busy_s"].as_f64().context("busy_s")?;
    assert!(
        busy >= 0.09,
        "three 30 ms jobs kept the queue busy only {busy} s"
    );
    let create_queue = &stats["queues"][format!("volume:{v}").as_str()];
    assert_eq!(create_queue["jobs"], 1, "{stats}");

    // Per command: how many jobs ran and what each took, shortest and longest.
    let attaches = &stats["commands"]["attachvolume"];
    assert_eq!(attaches["jobs"], 2, "{stats}");
    assert_eq!(stats["commands"]["detachvolume"]["jobs"], 1, "{stats}");
    let (min, max, total) = (
        attaches["min_s"].as_f64().context("min_s")?,
        attaches["max_s"].as_f64().context("max_s")?,
        attaches["busy_s"].as_f64().context("busy_s")?,
    );
    assert!(min >= 0.03 && min <= max, "{stats}");
    assert!((total - min - max).abs() < 1e-9, "{stats}");

    let polls = &stats["polls_per_job"];
    assert_eq!(polls["jobs"], 4, "{stats}");
    assert!(polls["median"].as_f64() >= Some(1.0), "{stats}");
    assert!(polls["max"].as_u64() >= Some(1), "{stats}");
    assert!(polls["total"].as_u64() >= Some(4), "{stats}");
    // Per command too: the two attaches, the detach, the volume creation.
    let per = &stats["polls_per_command"];
    assert_eq!(per["attachvolume"]["jobs"], 2, "{stats}");
    assert_eq!(per["detachvolume"]["jobs"], 1, "{stats}");
    assert_eq!(per["createvolume"]["jobs"], 1, "{stats}");
    let by_command: u64 = ["attachvolume", "detachvolume", "createvolume"]
        .iter()
        .map(|c| per[c]["total"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(Some(by_command), polls["total"].as_u64(), "{stats}");
    // And as a histogram (polls → jobs), which two readings can be subtracted.
    let attaches: u64 = stats["polls_histogram"]["attachvolume"]
        .as_object()
        .context("a histogram")?
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(attaches, 2, "{stats}");
    Ok(())
}

// ---- 5. job resumption ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_resumed_from_its_id_alone() -> Result {
    let sim = Sim::start(quick_world(100), 1.0).await?;
    let v = sim.new_volume("resumed").await?;
    let job_id = {
        let job = sim
            .client
            .attach_volume(&VolumeId::from(&v), &VmId::from(ids::APPLIANCE_OMA), None)
            .await?;
        job.job_id.clone()
        // The Job is dropped here, as if the process had died after recording its id.
    };
    // A new client, as after a restart.
    let client = client_for(&sim.endpoint, Duration::from_secs(10))?;
    let job = Job::<Volume>::resume("attachVolume", job_id.clone(), None);
    let volume = client.wait(&job).await?;
    assert_eq!(volume.id, v);
    assert_eq!(
        volume.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some(ids::APPLIANCE_OMA)
    );
    assert_eq!(volume.deviceid, Some(4));
    // Waiting again on a finished job gives the same answer.
    assert_eq!(client.wait(&job).await?.id, v);
    // No second attach was submitted.
    assert_eq!(sim.stats().await?["calls"]["attachVolume"], 1);
    Ok(())
}

// ---- 6. connection refused --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_transient() -> Result {
    // A socket bound but not listening: connections to it are refused, and the port
    // stays taken for the whole test.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let addr = socket.local_addr()?;
    let client = client_for(&format!("http://{addr}/client/api"), Duration::from_secs(5))?;

    let err = client
        .attach_volume(
            &VolumeId::from(ids::PGTEST1_DISK_2000),
            &VmId::from(ids::APPLIANCE_OMA),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "got {err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.command(), "attachVolume");

    let err = client.list_zones().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "got {err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    drop(socket);
    Ok(())
}

// ---- /sim/volumes -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_volumes_shows_attachments() -> Result {
    let sim = Sim::start(quick_world(20), 1.0).await?;
    let volumes = sim.sim_volumes().await?;
    let replica = volumes
        .iter()
        .find(|v| v["id"] == ids::PGTEST1_DISK_2000)
        .context("replica listed")?;
    assert_eq!(replica["virtualmachineid"], ids::APPLIANCE_OMA);
    assert_eq!(replica["deviceid"], 1);
    sim.detach(ids::PGTEST1_DISK_2000).await?;
    let volumes = sim.sim_volumes().await?;
    let replica = volumes
        .iter()
        .find(|v| v["id"] == ids::PGTEST1_DISK_2000)
        .context("replica listed")?;
    assert_eq!(replica["virtualmachineid"], Value::Null);
    Ok(())
}
