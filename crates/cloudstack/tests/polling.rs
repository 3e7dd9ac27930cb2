//! Polling learns: after a command's first jobs, a wait polls when that command's jobs
//! have been finishing, so a steady job is found done in one or two polls — whatever
//! the configured first poll and backoff would have made of it — and of a wave of jobs
//! of a command not learned yet, one wait polls for all. Checked against cloudsim by
//! the polls it counted per job.

// These tests exercise the client's own volume calls against cloudsim.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use cloudsim::SimConfig;
use cloudsim::world::{World, ids};
use cloudstack::{Client, Config, PollPolicy, VmId, VolumeSource, ZoneId};
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_jobs_are_polled_when_they_have_been_finishing() -> anyhow::Result<()> {
    let mut world = World::default();
    world.latency_ms.insert("createVolume".into(), 1);
    world.latency_ms.insert("attachVolume".into(), 60);
    world.latency_ms.insert("detachVolume".into(), 60);
    let sim = cloudsim::start(
        SimConfig {
            world,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let mut config = Config::new(
        sim.endpoint(),
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    );
    // Alone, this policy polls a 60 ms job five times (2, 5, 9.5, 16, 26 … ms).
    config.poll = PollPolicy {
        first: Duration::from_millis(2),
        factor: 1.5,
        max: Duration::from_millis(10),
        deadline: Duration::from_secs(30),
    };
    let client = Client::new(config)?;
    assert_eq!(client.learned_job_duration("attachVolume"), None);

    let job = client
        .create_volume(
            "polled",
            &ZoneId::from(ids::ZONE),
            &VolumeSource::Offering {
                disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                size_gb: Some(1),
            },
        )
        .await?;
    let volume = client.wait(&job).await?;
    let cycles = 12;
    for _ in 0..cycles {
        let job = client
            .attach_volume(&volume.id, &VmId::from(ids::APPLIANCE_OMA), None)
            .await?;
        client.wait(&job).await?;
        let job = client.detach_volume(&volume.id).await?;
        client.wait(&job).await?;
    }

    // What the client learned is what a job takes, at least.
    let learned = client
        .learned_job_duration("attachVolume")
        .expect("attaches were waited on");
    assert!(learned >= Duration::from_millis(55), "{learned:?}");
    // A clone shares it.
    assert_eq!(
        client.clone().learned_job_duration("attachVolume"),
        Some(learned)
    );

    let stats: serde_json::Value = reqwest::get(format!("{}/stats", sim.announcement.admin))
        .await?
        .json()
        .await?;
    for command in ["attachvolume", "detachvolume"] {
        let polls = &stats["polls_per_command"][command];
        assert_eq!(polls["jobs"], cycles, "{stats}");
        // The first job of each command is polled by the policy; the others mostly
        // once or twice (a job that runs late on a loaded machine costs a few more).
        let median = polls["median"].as_f64().unwrap_or(f64::MAX);
        assert!(median <= 3.0, "{command}: {stats}");
    }
    sim.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_a_wave_of_new_jobs_one_wait_polls_for_all() -> anyhow::Result<()> {
    let mut world = World::default();
    world.latency_ms.insert("createVolume".into(), 200);
    let sim = cloudsim::start(
        SimConfig {
            world,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let mut config = Config::new(
        sim.endpoint(),
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    );
    // Alone, this policy polls a 200 ms job about forty times (every 5 ms at most).
    config.poll = PollPolicy {
        first: Duration::from_millis(2),
        factor: 1.5,
        max: Duration::from_millis(5),
        deadline: Duration::from_secs(30),
    };
    let client = Client::new(config)?;

    // Eight volumes at once, each on its own queue: alike, and nothing learned yet.
    let wave = 8;
    let mut waits = tokio::task::JoinSet::new();
    for i in 0..wave {
        let client = client.clone();
        waits.spawn(async move {
            let job = client
                .create_volume(
                    &format!("wave-{i}"),
                    &ZoneId::from(ids::ZONE),
                    &VolumeSource::Offering {
                        disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                        size_gb: Some(1),
                    },
                )
                .await?;
            client.wait(&job).await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = waits.join_next().await {
        done??;
    }

    let stats: serde_json::Value = reqwest::get(format!("{}/stats", sim.announcement.admin))
        .await?
        .json()
        .await?;
    let polls = &stats["polls_per_command"]["createvolume"];
    assert_eq!(polls["jobs"], wave, "{stats}");
    // The leader polls about forty times; each follower backs off (2, 5, 9.5 … ms, up to
    // 40 ms apart) and polls once more when the leader is done: about ten each. Without
    // waves, all eight would have polled about forty times.
    let total = polls["total"].as_u64().unwrap_or(u64::MAX);
    assert!(total < 40 * wave / 2, "{total} polls: {stats}");
    sim.stop().await?;
    Ok(())
}
