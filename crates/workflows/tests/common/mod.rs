//! The harness the end-to-end workflow tests share: cloudsim on port 0 (hot-plug into
//! a temp sysfs tree), a SQLite store with pgtest1 registered, the in-process volume
//! daemon journaling into that store, an engine — and DESIGN §5's invariants for a VM
//! at rest, checked against cloudsim's state.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use ::ids::VolumeId;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudsim::world::ids;
use cloudsim::{SimConfig, World};
use engine::{Engine, EngineConfig};
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

pub async fn rig_with(options: RigOptions) -> anyhow::Result<Rig> {
    let root = tempfile::tempdir()?;
    let sim = cloudsim::start(
        SimConfig {
            world: options.world,
            sysfs_root: Some(root.path().to_path_buf()),
            time_scale: 0.001,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
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
    config.request_timeout = options.request_timeout;
    config.read_attempts = options.read_attempts;
    config.unreachable_grace = options.unreachable_grace;
    let cloud = cloudstack::Client::new(config)?;
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
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml");
    let definition = inventory::VmDefinition::parse(
        &std::fs::read_to_string(example)?,
        inventory::Format::Toml,
    )?;
    inventory::register(&t.store, &cloud, &definition, inventory::Limits::default()).await?;
    let volumes = volume_daemon(&t.store, &cloud, root.path());
    let env = Env {
        store: t.store.clone(),
        cloud,
        volumes,
        target: Target {
            zone_id: ids::ZONE.into(),
            service_offering_id: ids::OFFERING_CUSTOM.into(),
            template_id: ids::TEMPLATE.into(),
        },
        device_timeout: Duration::from_secs(10),
        hooks: Default::default(),
        guest_prep: None,
    };
    let engine = Engine::new(
        t.store.clone(),
        EngineConfig {
            owner: "test-worker".into(),
            lease: options.lease,
            max_attempts: options.max_attempts,
            backoff_first: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            outage_tolerance: options.outage_tolerance,
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

    pub async fn arm(&self, rule: Value) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/faults", self.sim.announcement.admin))
            .json(&rule)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Disarms every fault rule (`DELETE /sim/faults`).
    pub async fn http_delete_faults(&self) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/faults", self.sim.announcement.admin))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Sets cloudsim's latency of commands, in milliseconds before its time scale.
    pub async fn latency(&self, latencies: Value) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/latency", self.sim.announcement.admin))
            .json(&latencies)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
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

    pub async fn test_vms(&self) -> anyhow::Result<Vec<cloudstack::VirtualMachine>> {
        Ok(self
            .env
            .cloud
            .list_virtual_machines(&cloudstack::VmFilter::default())
            .await?
            .into_iter()
            .filter(|v| v.name.starts_with("pgtest1-test-"))
            .collect())
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
            let v = self
                .env
                .cloud
                .get_volume(&VolumeId::from(id))
                .await?
                .expect("a replica is never deleted");
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
                    Some(
                        format!(
                            "/dev/disk/by-id/virtio-{}",
                            cloudstack::volume_serial(&VolumeId::from(id))
                        )
                        .as_str()
                    ),
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
        let all = self
            .env
            .cloud
            .list_volumes(&cloudstack::VolumeFilter::default())
            .await?;
        for v in &all {
            assert!(
                !self
                    .env
                    .store
                    .is_created_volume(&VolumeId::from(&v.id))
                    .await?,
                "volume {} that ferry created is still alive",
                v.id
            );
        }
        Ok(())
    }
}
