//! `ferry cloudsim --state-file`: a cloudsim killed outright and started again keeps
//! its cloud, as CloudStack keeps its database across a management-server restart, and
//! a job in flight when it died ends as CloudStack ends it — failed, errorcode 530, "job
//! cancelled because of management server restart" — its work not done. The
//! appliance's guest view (which a management-server restart does not touch) is not
//! laid out twice.

// The test drives CloudStack's volume commands itself.
#![allow(clippy::disallowed_methods)]

mod cli_harness;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use cli_harness::{cloudsim, spawn_announced};
use cloudstack::{Client, Config, JobStatus, VolumeFilter};
use secrecy::SecretString;
use serde_json::{Value, json};

fn start(dir: &Path, state: &Path, log: &str) -> (Child, Value) {
    let mut command = cloudsim(1.0);
    command
        .arg("--state-file")
        .arg(state)
        .arg("--sysfs-root")
        .arg(dir.join("sysfs"));
    spawn_announced(&mut command, dir, log)
}

fn client(announcement: &Value) -> anyhow::Result<Client> {
    let field = |name: &str| announcement[name].as_str().unwrap_or_default().to_string();
    Ok(Client::new(Config::new(
        field("endpoint"),
        field("api_key"),
        SecretString::from(field("secret_key")),
    ))?)
}

fn block_devices(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("sysfs/sys/block"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cloudsim_restarts_with_its_cloud_and_cancels_the_jobs_in_flight()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("cloud.json");
    let (mut first, announced) = start(dir.path(), &state, "first.log");
    let admin = announced["admin"].as_str().unwrap_or_default().to_string();
    // Snapshots are quick; a detach takes ten minutes.
    reqwest::Client::new()
        .post(format!("{admin}/latency"))
        .json(&json!({"createSnapshot": 50, "detachVolume": 600_000}))
        .send()
        .await?
        .error_for_status()?;
    let cloud = client(&announced)?;
    let replicas = cloud
        .list_volumes(&VolumeFilter {
            volume_type: Some("DATADISK".into()),
            ..VolumeFilter::default()
        })
        .await?;
    let replica = replicas
        .iter()
        .find(|v| v.virtualmachineid.is_some())
        .expect("a replica on the appliance")
        .clone();
    let devices = block_devices(dir.path());
    assert!(devices > 0, "the appliance sees its disks");

    let snapshot = cloud
        .wait(&cloud.create_snapshot(&replica.id, Some("kept")).await?)
        .await?;
    let detach = cloud.detach_volume(&replica.id).await?;
    // Until the state file holds the detach's job, as the database would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&state)
        .unwrap_or_default()
        .contains(detach.job_id.as_str())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the state file never held the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill()?;
    first.wait()?;

    let (mut second, announced) = start(dir.path(), &state, "second.log");
    let cloud = client(&announced)?;
    let job = cloud.query_async_job_result(&detach.job_id).await?;
    assert_eq!(job.jobstatus, JobStatus::Failed, "{job:?}");
    assert_eq!(job.jobresultcode, Some(530), "{job:?}");
    assert_eq!(
        job.jobresult.as_ref().and_then(|r| r["errortext"].as_str()),
        Some("job cancelled because of management server restart"),
        "{job:?}"
    );
    // The detach was not done: the replica is still on the appliance, Ready.
    let now = cloud
        .list_volumes(&VolumeFilter {
            id: Some(replica.id.clone()),
            ..VolumeFilter::default()
        })
        .await?;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].virtualmachineid, replica.virtualmachineid);
    assert_eq!(now[0].state, "Ready", "{:?}", now[0]);
    // What was done before the kill is kept.
    let kept = cloud.list_snapshots(Some(&replica.id), None).await?;
    assert!(
        kept.iter().any(|s| s.id == snapshot.id && s.name == "kept"),
        "the snapshot is kept: {kept:?}"
    );
    assert_eq!(
        block_devices(dir.path()),
        devices,
        "the guest view is not laid out twice"
    );
    second.kill()?;
    second.wait()?;

    // A file that is not a state file is refused, with what is wrong.
    std::fs::write(&state, "{not json")?;
    let output = cloudsim(1.0)
        .arg("--state-file")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a cloudsim state file"), "{stderr}");
    Ok(())
}
