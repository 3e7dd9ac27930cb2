//! Test failover (replica mode) and cleanup of the job sheet's pgtest1, end to end
//! against cloudsim (port 0, hot-plug into a temp sysfs tree), with the in-process
//! volume daemon journaling into a SQLite store — and the invariants of DESIGN §5
//! checked against cloudsim's state after each run: every replica attached to exactly
//! one of {appliance, target VM}, nothing ferry created left behind, the store agreeing
//! with CloudStack, the replicas' content back to what it was.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudsim::world::ids;
use cloudsim::{SimConfig, World};
use engine::{Engine, EngineConfig, Outcome};
use secrecy::SecretString;
use serde_json::{Value, json};
use store::{Appliance, RunState, VmState};
use workflows::{Env, Target, cleanup, test_failover};

type TestResult = anyhow::Result<()>;

struct Rig {
    sim: cloudsim::Running,
    env: Env,
    engine: Engine,
    root: tempfile::TempDir,
    _store: store::testing::TestStore,
    http: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.sim.shutdown_token().cancel();
    }
}

async fn rig() -> anyhow::Result<Rig> {
    let root = tempfile::tempdir()?;
    let sim = cloudsim::start(
        SimConfig {
            world: World::default(),
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
    let journal: Arc<dyn volumed::Journal> = Arc::new(volumed::StoreJournal::new(t.store.clone()));
    let mut daemon = volumed::LocalConfig::with_appliance(ids::APPLIANCE_OMA, root.path());
    daemon.submit_backoff = Duration::from_millis(10);
    let volumes: Arc<dyn volumed::VolumeService> =
        Arc::new(volumed::Local::new(cloud.clone(), journal, daemon));
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
    };
    let engine = Engine::new(
        t.store.clone(),
        EngineConfig {
            owner: "test-worker".into(),
            lease: Duration::from_secs(30),
            max_attempts: 3,
            backoff_first: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
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

const REPLICAS: [&str; 2] = [ids::PGTEST1_DISK_2000, ids::PGTEST1_DISK_2001];

impl Rig {
    async fn admin(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/{path}", self.sim.announcement.admin))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn arm(&self, rule: Value) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/faults", self.sim.announcement.admin))
            .json(&rule)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Each replica's simulated content generation.
    async fn generations(&self) -> anyhow::Result<BTreeMap<String, u64>> {
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

    fn guest_sees(&self, volume_id: &str) -> bool {
        self.root
            .path()
            .join("dev/disk/by-id")
            .join(format!("virtio-{}", cloudstack::volume_serial(volume_id)))
            .exists()
    }

    async fn test_vms(&self) -> anyhow::Result<Vec<cloudstack::VirtualMachine>> {
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
    async fn assert_at_rest(&self) -> anyhow::Result<()> {
        let vm = self.env.store.vm("pgtest1").await?.expect("registered");
        assert_eq!(vm.state, VmState::ReadyForFailover);
        assert_eq!(vm.target_vm_id, None);
        for d in &vm.disks {
            let id = &d.disk.replica_volume_id;
            let v = self
                .env
                .cloud
                .get_volume(id)
                .await?
                .expect("a replica is never deleted");
            assert_eq!(
                v.virtualmachineid.as_deref(),
                Some(ids::APPLIANCE_OMA),
                "replica {id}"
            );
            assert_eq!(v.volume_type, "DATADISK");
            assert_eq!(
                d.attachment.vm_id.as_deref(),
                Some(ids::APPLIANCE_OMA),
                "the store agrees"
            );
            assert_eq!(
                d.attachment.device_id, v.deviceid,
                "the store agrees on the device id"
            );
            assert_eq!(
                d.attachment.device_path.as_deref(),
                Some(format!("/dev/disk/by-id/virtio-{}", cloudstack::volume_serial(id)).as_str())
            );
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
                !self.env.store.is_created_volume(&v.id).await?,
                "volume {} that ferry created is still alive",
                v.id
            );
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgtest1_goes_through_test_failover_and_cleanup_with_both_disks() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;

    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let outcome = rig
        .engine
        .execute(&run.id, &test_failover::saga(), &rig.env)
        .await?;
    assert_eq!(
        outcome,
        Outcome::Done,
        "{:?}",
        rig.env.store.events(&run.id).await?
    );

    let vms = rig.test_vms().await?;
    assert_eq!(vms.len(), 1);
    let target = &vms[0];
    assert_eq!(target.state, "Running");
    assert_eq!((target.cpunumber, target.memory), (Some(4), Some(8192)));
    assert_eq!(
        target.nic[0].macaddress.as_deref(),
        Some("00:50:56:8a:11:01")
    );
    assert_eq!(target.nic[0].networkid, ids::NETWORK_TEST);
    let mut on_target: Vec<(i64, String, String, i64)> = rig
        .env
        .cloud
        .list_volumes(&cloudstack::VolumeFilter {
            virtual_machine_id: Some(target.id.clone()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|v| (v.deviceid.unwrap(), v.id, v.volume_type, v.size >> 30))
        .collect();
    on_target.sort();
    assert_eq!(
        on_target,
        vec![
            (
                0,
                ids::PGTEST1_DISK_2000.to_string(),
                "ROOT".to_string(),
                107
            ),
            (
                1,
                ids::PGTEST1_DISK_2001.to_string(),
                "DATADISK".to_string(),
                10
            ),
        ],
        "boot disk at 0, data disk at 1, and nothing else (the placeholder ROOT is gone)"
    );
    for id in REPLICAS {
        assert!(!rig.guest_sees(id), "the appliance no longer sees {id}");
    }
    let vm = rig.env.store.vm("pgtest1").await?.unwrap();
    assert_eq!(vm.state, VmState::TestFailedOver);
    assert_eq!(vm.target_vm_id.as_deref(), Some(target.id.as_str()));
    assert_eq!(
        vm.disks[0].attachment.vm_id.as_deref(),
        Some(target.id.as_str())
    );
    let verify = &rig.env.store.steps(&run.id).await?[6];
    assert_eq!(verify.name, "verify");
    let map: Value = serde_json::from_str(verify.output.as_deref().unwrap())?;
    assert_eq!(map["device_map"][0]["device_id"], 0);
    assert_eq!(map["device_map"][1]["volume_id"], ids::PGTEST1_DISK_2001);
    let during = rig.generations().await?;
    assert!(
        REPLICAS.iter().all(|id| during[*id] > before[*id]),
        "the test VM wrote to its disks"
    );
    assert!(
        test_failover::start(&rig.env, "pgtest1").await.is_err(),
        "not ready for another drill"
    );

    let run = cleanup::start(&rig.env, "pgtest1").await?;
    let outcome = rig
        .engine
        .execute(&run.id, &cleanup::saga(), &rig.env)
        .await?;
    assert_eq!(
        outcome,
        Outcome::Done,
        "{:?}",
        rig.env.store.events(&run.id).await?
    );
    rig.assert_at_rest().await?;
    assert_eq!(
        rig.generations().await?,
        before,
        "the replicas were reverted to their snapshots"
    );

    // And another drill can start.
    let again = test_failover::start(&rig.env, "pgtest1").await?;
    assert_eq!(
        rig.engine
            .execute(&again.id, &test_failover::saga(), &rig.env)
            .await?,
        Outcome::Done
    );
    Ok(())
}

/// The data disk's attach fails inside CloudStack's job: the run unwinds — boot disk
/// off the test VM, both replicas back on the appliance, test VM destroyed, snapshots
/// deleted — and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_data_disk_attach_unwinds_to_where_it_started() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    // attachVolume calls of a test failover: the boot disk (1st), the data disk (2nd).
    rig.arm(json!({"command": "attachVolume", "nth": 2,
        "fault": {"kind": "job_error", "errorcode": 530, "errortext": "Failed to attach volume DATA to VM: agent error"}}))
        .await?;
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let outcome = rig
        .engine
        .execute(&run.id, &test_failover::saga(), &rig.env)
        .await?;
    let Outcome::Unwound { error } = outcome else {
        panic!("expected an unwound run, got {outcome:?}");
    };
    assert!(error.contains("attach-replicas"), "{error}");
    assert!(error.contains("agent error"), "{error}");
    let record = rig.env.store.run(&run.id).await?.unwrap();
    assert_eq!(record.state, RunState::Unwound);
    rig.assert_at_rest().await?;
    assert_eq!(
        rig.generations().await?,
        before,
        "nothing ran on the replicas"
    );
    Ok(())
}
