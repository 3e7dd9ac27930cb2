//! Several engine workers on one PostgreSQL share the runs: three protected VMs fail
//! over (test) and clean up with two workers — each with its own volume daemon, as two
//! processes would be — claiming runs at the same time; every run is executed exactly
//! once, nothing is done twice in CloudStack. And a worker's loop picks a new run up
//! as soon as it is woken.

use ::ids::RunId;
mod common;

use std::sync::Arc;
use std::time::Duration;

use cloudsim::world::ids;
use cloudsim::{SimConfig, World};
use common::{TestResult, appliance_world, client, engine_config, env, pgtest1};
use engine::{Engine, EngineConfig, Outcome};
use store::{Appliance, RunState, VmState};
use workflows::{Env, Worker, WorkerConfig, cleanup, test_failover};

const VMS: [&str; 3] = ["web01", "web02", "db01"];

fn volume_id(vm: usize, disk: usize) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012}",
        0xabc0_0000u32 + vm as u32 * 16 + disk as u32,
        vm * 10 + disk
    )
}

fn world() -> World {
    appliance_world(
        None,
        (0..VMS.len()).flat_map(|vm| {
            [(0, 20), (1, 5)].map(|(disk, gib)| {
                (
                    volume_id(vm, disk),
                    format!("{}-disk-{}", VMS[vm], 2000 + disk),
                    gib,
                )
            })
        }),
    )
}

struct Shared {
    sim: cloudsim::Running,
    store: store::testing::TestStore,
    root: tempfile::TempDir,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.sim.shutdown_token().cancel();
    }
}

async fn shared() -> anyhow::Result<Shared> {
    let root = tempfile::tempdir()?;
    let sim = cloudsim::start(
        SimConfig {
            world: world(),
            sysfs_root: Some(root.path().to_path_buf()),
            time_scale: 0.001,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let store = store::testing::postgres().await?;
    store
        .store
        .upsert_appliance(&Appliance {
            name: "oma".into(),
            vm_id: ids::APPLIANCE_OMA.into(),
            zone_id: ids::ZONE.into(),
            volumed_url: None,
            sysfs_root: None,
        })
        .await?;
    let client = client(&sim, None)?;
    let template = pgtest1()?;
    for (i, name) in VMS.iter().enumerate() {
        let mut def = template.clone();
        def.name = name.to_string();
        def.nics[0].mac = format!("00:50:56:8a:20:{i:02x}");
        def.nics[0].production_ip = None;
        for (disk, gib) in [(0usize, 20i64), (1, 5)] {
            def.disks[disk].replica_volume_id = volume_id(i, disk);
            def.disks[disk].capacity_gib = Some(gib);
        }
        inventory::register(&store.store, &client, &def, inventory::Limits::default()).await?;
    }
    Ok(Shared { sim, store, root })
}

/// The volume daemon of a process on `store` and `cloud`, journaling into `store`.
fn daemon(
    s: &Shared,
    store: &store::Store,
    cloud: &cloudstack::Client,
) -> Arc<dyn volumed::VolumeService> {
    let journal: Arc<dyn volumed::Journal> = Arc::new(volumed::StoreJournal::new(store.clone()));
    Arc::new(volumed::Local::new(
        cloud.clone(),
        journal,
        volumed::LocalConfig::with_appliance(ids::APPLIANCE_OMA, s.root.path()),
    ))
}

/// A worker as another process would run it: its own connections to the database,
/// its own CloudStack client and volume daemon.
async fn worker(s: &Shared, owner: &str) -> anyhow::Result<Worker> {
    let store = store::Store::connect(&s.store.url).await?;
    let cloud = client(&s.sim, None)?;
    let volumes = daemon(s, &store, &cloud);
    let env = env(store.clone(), cloud, volumes);
    let engine = Engine::new(store, engine_config(owner, Duration::from_secs(30)));
    Ok(Worker::new(engine, env, WorkerConfig::default()))
}

async fn calls(s: &Shared, command: &str) -> anyhow::Result<u64> {
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", s.sim.announcement.admin))
        .await?
        .json()
        .await?;
    Ok(stats["calls"][command].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_runs_and_execute_each_once() -> TestResult {
    let s = shared().await?;
    let a = worker(&s, "worker-a").await?;
    let b = worker(&s, "worker-b").await?;
    let creator = worker_env(&s).await?;
    let mut runs = Vec::new();
    for name in VMS {
        runs.push(test_failover::start(&creator, name).await?.id);
    }
    let (from_a, from_b) = tokio::try_join!(a.run_once(), b.run_once())?;
    let done = |finished: &[workflows::worker::Finished]| {
        finished
            .iter()
            .filter(|(_, o)| matches!(o, Ok(Outcome::Done)))
            .count()
    };
    assert_eq!(
        done(&from_a) + done(&from_b),
        3,
        "a: {from_a:?}\nb: {from_b:?}"
    );
    for run in &runs {
        let record = s.store.store.run(run).await?.expect("run");
        assert_eq!(record.state, RunState::Done);
        let steps = s.store.store.steps(&RunId::from(run)).await?;
        assert!(
            steps.iter().all(|st| st.attempts == 1),
            "no step of {run} ran twice: {steps:?}"
        );
    }
    assert_eq!(calls(&s, "deployVirtualMachine").await?, 3);
    assert_eq!(calls(&s, "attachVolume").await?, 6);
    for name in VMS {
        assert_eq!(
            s.store.store.vm(name).await?.unwrap().state,
            VmState::TestFailedOver
        );
    }

    for name in VMS {
        cleanup::start(&creator, name).await?;
    }
    let (from_a, from_b) = tokio::try_join!(a.run_once(), b.run_once())?;
    assert_eq!(
        done(&from_a) + done(&from_b),
        3,
        "a: {from_a:?}\nb: {from_b:?}"
    );
    for name in VMS {
        let vm = s.store.store.vm(name).await?.unwrap();
        assert_eq!(vm.state, VmState::ReadyForFailover);
        for d in &vm.disks {
            assert_eq!(
                d.attachment.vm_id.as_ref().map(|id| id.as_str()),
                Some(ids::APPLIANCE_OMA)
            );
        }
    }
    assert_eq!(calls(&s, "destroyVirtualMachine").await?, 3);
    Ok(())
}

async fn worker_env(s: &Shared) -> anyhow::Result<Env> {
    let cloud = client(&s.sim, None)?;
    let volumes = daemon(s, &s.store.store, &cloud);
    Ok(env(s.store.store.clone(), cloud, volumes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_worker_loop_picks_up_a_new_run_at_once() -> TestResult {
    let s = shared().await?;
    // So slow a periodic claim that only the wake can explain a prompt pickup.
    let slow = WorkerConfig {
        claim_interval: Duration::from_secs(3600),
        ..WorkerConfig::default()
    };
    let w = Worker::new(
        Engine::new(
            s.store.store.clone(),
            EngineConfig {
                owner: "looping".into(),
                ..EngineConfig::default()
            },
        ),
        worker_env(&s).await?,
        slow,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let looping = {
        let w = w.clone();
        tokio::spawn(async move {
            w.run(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let creator = worker_env(&s).await?;
    let run = test_failover::start(&creator, "web01").await?;
    w.wake();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = s.store.store.run(&run.id).await?.expect("run").state;
        if state == RunState::Done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run was not picked up: {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    looping.await?;
    Ok(())
}
