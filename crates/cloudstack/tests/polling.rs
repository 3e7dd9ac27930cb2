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

/// A simulator of the default world with these commands' latencies (ms), and a client
/// whose poll policy starts at 2 ms and backs off by half up to `max_poll`.
async fn start(
    latencies: &[(&str, u64)],
    max_poll: Duration,
) -> anyhow::Result<(cloudsim::Running, Client)> {
    let mut world = World::default();
    for (command, ms) in latencies {
        world.latency_ms.insert((*command).into(), *ms);
    }
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
    config.poll = PollPolicy {
        first: Duration::from_millis(2),
        factor: 1.5,
        max: max_poll,
        deadline: Duration::from_secs(30),
    };
    Ok((sim, Client::new(config)?))
}

/// A new 1 GiB volume `name`, waited for.
async fn create_volume(client: &Client, name: &str) -> anyhow::Result<cloudstack::Volume> {
    let job = client
        .create_volume(
            name,
            &ZoneId::from(ids::ZONE),
            &VolumeSource::Offering {
                disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                size_gb: Some(1),
            },
        )
        .await?;
    Ok(client.wait(&job).await?)
}

/// The simulator's `/stats`: calls and polls it counted.
async fn stats(sim: &cloudsim::Running) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::get(format!("{}/stats", sim.announcement.admin))
        .await?
        .json()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_jobs_are_polled_when_they_have_been_finishing() -> anyhow::Result<()> {
    // Alone, this policy polls a 60 ms job five times (2, 5, 9.5, 16, 26 … ms).
    let (sim, client) = start(
        &[
            ("createVolume", 1),
            ("attachVolume", 60),
            ("detachVolume", 60),
        ],
        Duration::from_millis(10),
    )
    .await?;
    assert_eq!(client.learned_job_duration("attachVolume"), None);

    let volume = create_volume(&client, "polled").await?;
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

    let stats = stats(&sim).await?;
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
    // Alone, this policy polls a 200 ms job about forty times (every 5 ms at most).
    let (sim, client) = start(&[("createVolume", 200)], Duration::from_millis(5)).await?;

    // Eight volumes at once, each on its own queue: alike, and nothing learned yet.
    let wave = 8;
    let mut waits = tokio::task::JoinSet::new();
    for i in 0..wave {
        let client = client.clone();
        waits.spawn(async move {
            create_volume(&client, &format!("wave-{i}")).await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = waits.join_next().await {
        done??;
    }

    let stats = stats(&sim).await?;
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
