//! The harness the end-to-end workflow tests share: cloudsim on port 0 (hot-plug into
//! a temp sysfs tree), a SQLite store with pgtest1 registered, the in-process volume
//! daemon journaling into that store, an engine — and DESIGN §5's invariants for a VM
//! at rest, checked against cloudsim's state.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use ::ids::{VmId, VolumeId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudsim::world::{ApplianceDef, VolumeDef, ids};
use cloudsim::{SimConfig, World};
use engine::{Engine, EngineConfig, Outcome, Saga};
use secrecy::SecretString;
use serde_json::Value;
use store::{Appliance, VmState};
use workflows::{Env, Target};

pub mod flows;
pub mod trio;

pub type TestResult = anyhow::Result<()>;

pub struct Rig {
    pub sim: cloudsim::Running,
    pub env: Env,
    pub engine: Engine,
    pub root: tempfile::TempDir,
    _store: store::testing::TestStore,
    http: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.sim.shutdown_token().cancel();
    }
}

/// What a rig may be made with other than the defaults of [`rig`].
#[derive(Clone)]
pub struct RigOptions {
    /// How long the CloudStack client waits for a response (a lost one included).
    pub request_timeout: Duration,
    /// The engine's attempts of one action or undo.
    pub max_attempts: i64,
    /// The engine's lease.
    pub lease: Duration,
    /// How long the engine waits out CloudStack not answering.
    pub outage_tolerance: Duration,
    /// The client's attempts of a read, and how long a job's polls may find CloudStack
    /// unreachable before the wait gives up.
    pub read_attempts: u32,
    pub unreachable_grace: Duration,
    pub world: World,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            request_timeout: cloudstack::Config::new("", "", SecretString::from(String::new()))
                .request_timeout,
            max_attempts: 3,
            lease: Duration::from_secs(30),
            outage_tolerance: Duration::from_secs(60),
            read_attempts: 4,
            unreachable_grace: Duration::from_secs(5),
            world: World::default(),
        }
    }
}

pub async fn rig() -> anyhow::Result<Rig> {
    rig_with(RigOptions::default()).await
}

/// A rig made with `options`, with pgtest1 registered.
pub async fn rig_with(options: RigOptions) -> anyhow::Result<Rig> {
    let rig = bare_rig(options).await?;
    rig.register(&pgtest1()?).await?;
    Ok(rig)
}

/// pgtest1 as the job sheet's example defines it.
pub fn pgtest1() -> anyhow::Result<inventory::VmDefinition> {
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml");
    Ok(inventory::VmDefinition::parse(
        &std::fs::read_to_string(example)?,
        inventory::Format::Toml,
    )?)
}

/// A CloudStack client of `sim` that polls fast, with `request_timeout` if given.
pub fn client(
    sim: &cloudsim::Running,
    options: Option<&RigOptions>,
) -> anyhow::Result<cloudstack::Client> {
    let mut config = cloudstack::Config::new(
        sim.endpoint(),
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    );
    config.poll = cloudstack::PollPolicy {
        first: Duration::from_millis(5),
        factor: 1.5,
        max: Duration::from_millis(50),
        deadline: Duration::from_secs(30),
    };
    if let Some(options) = options {
        config.request_timeout = options.request_timeout;
        config.read_attempts = options.read_attempts;
        config.unreachable_grace = options.unreachable_grace;
    }
    Ok(cloudstack::Client::new(config)?)
}

/// The environment of a worker on `store` and `cloud` with `volumes`, its target
/// cloudsim's zone, custom offering and template, with no hooks nor guest preparation.
pub fn env(
    store: store::Store,
    cloud: cloudstack::Client,
    volumes: Arc<dyn volumed::VolumeService>,
) -> Env {
    Env {
        store,
        cloud,
        volumes,
        agents: Default::default(),
        target: Target {
            zone_id: ids::ZONE.into(),
            service_offering_id: ids::OFFERING_CUSTOM.into(),
            template_id: ids::TEMPLATE.into(),
        },
        device_timeout: Duration::from_secs(10),
        hooks: Default::default(),
        guest_prep: None,
    }
}

/// An engine's configuration as the tests use it: three attempts, short backoffs.
pub fn engine_config(owner: &str, lease: Duration) -> EngineConfig {
    EngineConfig {
        owner: owner.into(),
        lease,
        max_attempts: 3,
        backoff_first: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        outage_tolerance: Duration::from_secs(60),
    }
}

/// A world whose one appliance, `oma` (with `root_volume_id` as its ROOT if given),
/// holds exactly `volumes` (id, name, GiB).
pub fn appliance_world(
    root_volume_id: Option<&str>,
    volumes: impl IntoIterator<Item = (String, String, i64)>,
) -> World {
    World {
        appliances: vec![ApplianceDef {
            id: Some(ids::APPLIANCE_OMA.into()),
            name: "oma".into(),
            zone: None,
            root_volume_id: root_volume_id.map(Into::into),
            volumes: volumes
                .into_iter()
                .map(|(id, name, gib)| VolumeDef {
                    id: Some(id),
                    name,
                    size_gb: gib,
                    zone: None,
                })
                .collect(),
        }],
        ..World::default()
    }
}

/// A rig made with `options` and nothing registered: cloudsim with `options.world`,
/// the store with the appliance `oma`, the volume daemon and the engine.
pub async fn bare_rig(options: RigOptions) -> anyhow::Result<Rig> {
    let root = tempfile::tempdir()?;
    let sim = cloudsim::start(
        SimConfig {
            world: options.world.clone(),
            sysfs_root: Some(root.path().to_path_buf()),
            time_scale: 0.001,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let cloud = client(&sim, Some(&options))?;
    let t = store::testing::sqlite().await?;
    t.store
        .upsert_appliance(&Appliance {
            name: "oma".into(),
            vm_id: ids::APPLIANCE_OMA.into(),
            zone_id: ids::ZONE.into(),
            volumed_url: None,
            sysfs_root: Some(root.path().display().to_string()),
        })
        .await?;
    let volumes = volume_daemon(&t.store, &cloud, root.path());
    let env = env(t.store.clone(), cloud, volumes);
    let engine = Engine::new(
        t.store.clone(),
        EngineConfig {
            max_attempts: options.max_attempts,
            outage_tolerance: options.outage_tolerance,
            ..engine_config("test-worker", options.lease)
        },
    );
    Ok(Rig {
        sim,
        env,
        engine,
        root,
        _store: t,
        http: reqwest::Client::new(),
    })
}

pub const REPLICAS: [&str; 2] = [ids::PGTEST1_DISK_2000, ids::PGTEST1_DISK_2001];

/// The in-process volume daemon, journaling into the store.
fn volume_daemon(
    store: &store::Store,
    cloud: &cloudstack::Client,
    root: &std::path::Path,
) -> Arc<dyn volumed::VolumeService> {
    local_daemon(store, cloud, root)
}

fn local_daemon(
    store: &store::Store,
    cloud: &cloudstack::Client,
    root: &std::path::Path,
) -> Arc<volumed::Local> {
    let journal: Arc<dyn volumed::Journal> = Arc::new(volumed::StoreJournal::new(store.clone()));
    let mut daemon = volumed::LocalConfig::with_appliance(ids::APPLIANCE_OMA, root);
    daemon.submit_backoff = Duration::from_millis(10);
    Arc::new(volumed::Local::new(cloud.clone(), journal, daemon))
}

impl Rig {
    /// The environment a restarted ferry process would have: a new volume daemon on
    /// the same store (its journal included), the same CloudStack and appliance.
    pub fn restarted_env(&self) -> Env {
        Env {
            volumes: volume_daemon(&self.env.store, &self.env.cloud, self.root.path()),
            ..self.env.clone()
        }
    }

    /// A new volume daemon on the same store, as a restarted ferry process has: the
    /// caller may resume what its journal holds unfinished
    /// ([`volumed::Local::resume_unfinished`]). Dropping the last handle on it aborts
    /// the operations it runs, as a killed process would.
    pub fn restarted_local(&self) -> Arc<volumed::Local> {
        local_daemon(&self.env.store, &self.env.cloud, self.root.path())
    }

    /// Registers `def` (its replicas must be in cloudsim's world).
    pub async fn register(&self, def: &inventory::VmDefinition) -> TestResult {
        inventory::register(
            &self.env.store,
            &self.env.cloud,
            def,
            inventory::Limits::default(),
        )
        .await?;
        Ok(())
    }

    /// Runs `run` with `saga` to its end.
    pub async fn execute(&self, run: &store::Run, saga: Saga<Env>) -> anyhow::Result<Outcome> {
        Ok(self.engine.execute(&run.id, &saga, &self.env).await?)
    }

    /// Runs `run` with `saga`, which must end done; the failure shows the run's events.
    pub async fn done(&self, run: &store::Run, saga: Saga<Env>) -> TestResult {
        let outcome = self.execute(run, saga).await?;
        trio::expect_done(self, &run.id, outcome).await
    }

    /// Runs `run` with `saga`, which must unwind; returns its error.
    pub async fn unwound(&self, run: &store::Run, saga: Saga<Env>) -> anyhow::Result<String> {
        match self.execute(run, saga).await? {
            Outcome::Unwound { error } => Ok(error),
            outcome => panic!("expected an unwound run, got {outcome:?}"),
        }
    }

    /// cloudsim's `/sim/stats`.
    pub async fn stats(&self) -> anyhow::Result<cloudsim::Stats> {
        Ok(serde_json::from_value(self.admin("stats").await?)?)
    }

    pub async fn admin(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/{path}", self.sim.announcement.admin))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Sends `request` to cloudsim's admin API, which must answer with success.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<()> {
        request.send().await?.error_for_status()?;
        Ok(())
    }

    /// POSTs `body` to cloudsim's admin `path`.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let url = format!("{}/{path}", self.sim.announcement.admin);
        self.send(self.http.post(url).json(body)).await
    }

    pub async fn arm(&self, rule: Value) -> anyhow::Result<()> {
        self.post("faults", &rule).await
    }

    /// Makes the job of the second attachVolume fail, as CloudStack's agent would: in a
    /// drill, or a live failover, that of the data disk (the boot disk's is the first).
    pub async fn fail_data_attach(&self) -> anyhow::Result<()> {
        self.arm(serde_json::json!({"command": "attachVolume", "nth": 2,
            "fault": {"kind": "job_error", "errorcode": 530, "errortext": "Failed to attach volume DATA to VM: agent error"}}))
            .await
    }

    /// Runs `flow` (a test or live failover) with the data disk's attach failing
    /// ([`Rig::fail_data_attach`]); it must unwind. Its run and error.
    pub async fn unwound_by_a_failed_data_attach(
        &self,
        flow: flows::Flow,
    ) -> anyhow::Result<(store::Run, String)> {
        self.fail_data_attach().await?;
        let run = flow.start(&self.env).await?;
        let error = self.unwound(&run, flow.saga()).await?;
        Ok((run, error))
    }

    /// The output of `run`'s step `name`.
    pub async fn step_output(&self, run: &store::Run, name: &str) -> anyhow::Result<Value> {
        let steps = self.env.store.steps(&run.id).await?;
        let step = steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("a {name} step"));
        Ok(serde_json::from_str(
            step.output.as_deref().expect("an output"),
        )?)
    }

    /// Disarms every fault rule (`DELETE /sim/faults`).
    pub async fn http_delete_faults(&self) -> anyhow::Result<()> {
        let url = format!("{}/faults", self.sim.announcement.admin);
        self.send(self.http.delete(url)).await
    }

    /// Sets cloudsim's latency of commands, in milliseconds before its time scale.
    pub async fn latency(&self, latencies: Value) -> anyhow::Result<()> {
        self.post("latency", &latencies).await
    }

    /// Each replica's simulated content generation.
    pub async fn generations(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(self
            .admin("volumes")
            .await?
            .as_array()
            .expect("a list")
            .iter()
            .filter(|v| REPLICAS.contains(&v["id"].as_str().unwrap_or_default()))
            .map(|v| {
                (
                    v["id"].as_str().unwrap().to_string(),
                    v["generation"].as_u64().unwrap(),
                )
            })
            .collect())
    }

    pub fn guest_sees(&self, volume_id: impl AsRef<str>) -> bool {
        self.root
            .path()
            .join("dev/disk/by-id")
            .join(format!(
                "virtio-{}",
                cloudstack::volume_serial(&VolumeId::from(volume_id.as_ref()))
            ))
            .exists()
    }

    /// Every VM CloudStack lists.
    pub async fn all_vms(&self) -> anyhow::Result<Vec<cloudstack::VirtualMachine>> {
        Ok(self
            .env
            .cloud
            .list_virtual_machines(&cloudstack::VmFilter::default())
            .await?)
    }

    /// The volumes CloudStack lists with `filter`.
    async fn volumes(
        &self,
        filter: cloudstack::VolumeFilter,
    ) -> anyhow::Result<Vec<cloudstack::Volume>> {
        Ok(self.env.cloud.list_volumes(&filter).await?)
    }

    /// Every volume CloudStack lists.
    pub async fn all_volumes(&self) -> anyhow::Result<Vec<cloudstack::Volume>> {
        self.volumes(Default::default()).await
    }

    /// The volumes attached to the VM `vm_id`.
    pub async fn volumes_on(
        &self,
        vm_id: impl AsRef<str>,
    ) -> anyhow::Result<Vec<cloudstack::Volume>> {
        self.volumes(cloudstack::VolumeFilter {
            virtual_machine_id: Some(VmId::from(vm_id.as_ref())),
            ..Default::default()
        })
        .await
    }

    /// Whether the store tracks volume `id` as one ferry created.
    pub async fn created(&self, id: impl AsRef<str>) -> anyhow::Result<bool> {
        Ok(self
            .env
            .store
            .is_created_volume(&VolumeId::from(id.as_ref()))
            .await?)
    }

    /// The replica volume `id`, which must exist.
    pub async fn replica(&self, id: impl AsRef<str>) -> anyhow::Result<cloudstack::Volume> {
        let id = id.as_ref();
        self.env
            .cloud
            .get_volume(&VolumeId::from(id))
            .await?
            .ok_or_else(|| anyhow::anyhow!("replica {id} was deleted"))
    }

    /// The snapshots of pgtest1's replicas.
    pub async fn snapshots(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for id in REPLICAS {
            n += self
                .env
                .cloud
                .list_snapshots(Some(&VolumeId::from(id)), None)
                .await?
                .len();
        }
        Ok(n)
    }

    /// The test VMs of `name`'s drills.
    pub async fn test_vms_of(&self, name: &str) -> anyhow::Result<Vec<cloudstack::VirtualMachine>> {
        let prefix = format!("{name}-test-");
        Ok(self
            .all_vms()
            .await?
            .into_iter()
            .filter(|v| v.name.starts_with(&prefix))
            .collect())
    }

    pub async fn test_vms(&self) -> anyhow::Result<Vec<cloudstack::VirtualMachine>> {
        self.test_vms_of("pgtest1").await
    }

    /// The VM named exactly `pgtest1`, if CloudStack has one alive.
    pub async fn live_vm(&self) -> anyhow::Result<Option<cloudstack::VirtualMachine>> {
        Ok(self
            .all_vms()
            .await?
            .into_iter()
            .find(|v| v.name == "pgtest1" && v.state != "Destroyed" && v.state != "Expunging"))
    }

    /// pgtest1 as the store has it, checked to be `state` with `target` as its target VM.
    pub async fn assert_recorded(
        &self,
        state: VmState,
        target: impl AsRef<str>,
    ) -> anyhow::Result<store::ProtectedVm> {
        let vm = self.env.store.vm("pgtest1").await?.expect("registered");
        assert_eq!(vm.state, state);
        assert_eq!(
            vm.target_vm_id.as_ref().map(|id| id.as_str()),
            Some(target.as_ref())
        );
        Ok(vm)
    }

    /// pgtest1's replicas on `target` and nothing else — the boot replica at device 0
    /// as its ROOT, the data replica at 1 (the placeholder ROOT gone) —, neither seen
    /// by the appliance any more; the store records pgtest1 `state` on `target`, and
    /// each replica there.
    pub async fn assert_replicas_on(
        &self,
        target: &cloudstack::VirtualMachine,
        state: VmState,
    ) -> TestResult {
        let mut on_target: Vec<(i64, String, String)> = self
            .volumes_on(&target.id)
            .await?
            .into_iter()
            .map(|v| (v.deviceid.unwrap_or(-1), v.id.into_string(), v.volume_type))
            .collect();
        on_target.sort();
        assert_eq!(
            on_target,
            vec![
                (0, ids::PGTEST1_DISK_2000.to_string(), "ROOT".to_string()),
                (
                    1,
                    ids::PGTEST1_DISK_2001.to_string(),
                    "DATADISK".to_string()
                ),
            ],
            "boot disk at 0, data disk at 1, and nothing else"
        );
        for id in REPLICAS {
            assert!(!self.guest_sees(id), "the appliance still sees {id}");
        }
        let vm = self.assert_recorded(state, &target.id).await?;
        for d in &vm.disks {
            assert_eq!(
                d.attachment.vm_id.as_ref().map(|id| id.as_str()),
                Some(target.id.as_str()),
                "the store agrees on where {} is",
                d.disk.replica_volume_id
            );
        }
        Ok(())
    }

    /// pgtest1 committed with `target`: no snapshot left, `target` still running with
    /// the replicas, and the store agreeing.
    pub async fn assert_committed(&self, target: &cloudstack::VirtualMachine) -> TestResult {
        self.assert_recorded(VmState::Committed, &target.id).await?;
        assert_eq!(self.snapshots().await?, 0, "the snapshots were deleted");
        let still = self.live_vm().await?.expect("the VM stays");
        assert_eq!(
            (still.id.as_str(), still.state.as_str()),
            (target.id.as_str(), "Running")
        );
        for id in REPLICAS {
            assert_eq!(
                self.replica(id)
                    .await?
                    .virtualmachineid
                    .as_ref()
                    .map(|id| id.as_str()),
                Some(target.id.as_str())
            );
        }
        Ok(())
    }

    /// [`Rig::assert_at_rest`], with the replicas' content as it was `before`.
    pub async fn assert_at_rest_as(&self, before: &BTreeMap<String, u64>) -> TestResult {
        self.assert_at_rest().await?;
        assert_eq!(
            &self.generations().await?,
            before,
            "the replicas' content is not what it was"
        );
        Ok(())
    }

    /// DESIGN §5's invariants for a VM at rest: every replica on the appliance (and
    /// seen by its guest, and recorded so in the store), no test VM, no snapshot, no
    /// volume ferry created still alive.
    pub async fn assert_at_rest(&self) -> anyhow::Result<()> {
        self.assert_at_rest_since(None).await
    }

    /// [`Rig::assert_at_rest`], except that a replica whose record in the store is
    /// still the one it had in `before` may lack its device path: registration does
    /// not look for device paths (only a workflow that moves a replica back to the
    /// appliance does), so a run that unwound before moving anything leaves none.
    pub async fn assert_at_rest_since(
        &self,
        before: Option<&store::ProtectedVm>,
    ) -> anyhow::Result<()> {
        let vm = self.env.store.vm("pgtest1").await?.expect("registered");
        assert_eq!(vm.state, VmState::ReadyForFailover);
        assert_eq!(vm.target_vm_id, None);
        for d in &vm.disks {
            let id = &d.disk.replica_volume_id;
            let v = self.replica(id).await?;
            assert_eq!(
                v.virtualmachineid.as_ref().map(|id| id.as_str()),
                Some(ids::APPLIANCE_OMA),
                "replica {id}"
            );
            assert_eq!(v.volume_type, "DATADISK");
            assert_eq!(
                d.attachment.vm_id.as_ref().map(|id| id.as_str()),
                Some(ids::APPLIANCE_OMA),
                "the store agrees"
            );
            assert_eq!(
                d.attachment.device_id, v.deviceid,
                "the store agrees on the device id"
            );
            let unmoved = before
                .and_then(|b| b.disks.iter().find(|b| b.disk.replica_volume_id == *id))
                .is_some_and(|b| {
                    (
                        &b.attachment.vm_id,
                        b.attachment.device_id,
                        &b.attachment.device_path,
                    ) == (&d.attachment.vm_id, d.attachment.device_id, &None)
                });
            if !unmoved {
                assert_eq!(
                    d.attachment.device_path.as_deref(),
                    Some(device_path(id).as_str()),
                    "the store has the device path of {id}"
                );
            }
            assert!(self.guest_sees(id), "the appliance sees {id}");
            assert!(
                self.env
                    .cloud
                    .list_snapshots(Some(id), None)
                    .await?
                    .is_empty(),
                "snapshots of {id} left"
            );
        }
        assert!(self.test_vms().await?.is_empty(), "a test VM was left");
        for v in &self.all_volumes().await? {
            assert!(
                !self.created(&v.id).await?,
                "volume {} that ferry created is still alive",
                v.id
            );
        }
        Ok(())
    }
}

/// The device path the appliance's guest has for volume `id`.
pub fn device_path(id: impl AsRef<str>) -> String {
    format!(
        "/dev/disk/by-id/virtio-{}",
        cloudstack::volume_serial(&VolumeId::from(id.as_ref()))
    )
}
