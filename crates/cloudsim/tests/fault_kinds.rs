//! The fault kinds the reliability suite relies on, over HTTP with ferry's client:
//! `api_error` refuses the call itself and changes nothing, a probabilistic rule on
//! `*` hits about its share of all calls with the faults it names and stays armed,
//! rules that could never fire are refused when armed, and a forgotten job
//! (`DELETE /sim/jobs/{id}`) is refused by `queryAsyncJobResult` as CloudStack refuses
//! an unknown id, never runs if it had not begun, and runs on unseen if it had (the
//! `forget_job` rule forgets one as soon as it is accepted).

// These tests drive cloudsim's volume rules with ferry's real client.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use cloudsim::SimConfig;
use cloudsim::world::{World, ids};
use cloudstack::{ErrorClass, VolumeFilter, VolumeId};
use serde_json::{Value, json};

type Result<T = ()> = anyhow::Result<T>;

struct Sim {
    running: cloudsim::Running,
    client: cloudstack::Client,
    http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.running.shutdown_token().cancel();
    }
}

async fn sim() -> Result<Sim> {
    let running = cloudsim::start(
        SimConfig {
            world: World::default(),
            sysfs_root: None,
            time_scale: 0.001,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let mut config = cloudstack::Config::new(
        running.endpoint(),
        ids::API_KEY,
        secrecy::SecretString::from(ids::SECRET_KEY.to_string()),
    );
    config.request_timeout = Duration::from_secs(5);
    // One attempt: the test counts what cloudsim answers, not what the client hides.
    config.read_attempts = 1;
    Ok(Sim {
        client: cloudstack::Client::new(config)?,
        running,
        http: reqwest::Client::new(),
    })
}

impl Sim {
    async fn post(&self, path: &str, body: Value) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}/{path}", self.running.announcement.admin))
            .json(&body)
            .send()
            .await?)
    }

    async fn faults(&self) -> Result<Vec<Value>> {
        Ok(self
            .http
            .get(format!("{}/faults", self.running.announcement.admin))
            .send()
            .await?
            .json()
            .await?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_error_refuses_the_call_itself_and_changes_nothing() -> Result {
    let sim = sim().await?;
    let before = sim
        .client
        .get_volume(&VolumeId::from(ids::PGTEST1_DISK_2001))
        .await?;
    let armed = sim
        .post(
            "faults",
            json!({"command": "detachVolume",
                   "fault": {"kind": "api_error", "errorcode": 431, "errortext": "injected refusal"}}),
        )
        .await?;
    assert_eq!(armed.status(), 200);
    let err = sim
        .client
        .detach_volume(&VolumeId::from(ids::PGTEST1_DISK_2001))
        .await
        .expect_err("refused");
    assert_eq!(err.errorcode(), Some(431));
    assert_eq!(err.errortext(), Some("injected refusal"));
    assert_eq!(err.class(), ErrorClass::Definitive);
    assert!(sim.faults().await?.is_empty(), "the rule is spent");
    assert_eq!(
        sim.client
            .get_volume(&VolumeId::from(ids::PGTEST1_DISK_2001))
            .await?,
        before,
        "nothing happened"
    );
    // A read can be refused the same way.
    sim.post(
        "faults",
        json!({"command": "listVolumes",
               "fault": {"kind": "api_error", "errorcode": 432, "errortext": "no"}}),
    )
    .await?;
    let err = sim
        .client
        .list_volumes(&VolumeFilter::default())
        .await
        .expect_err("refused");
    assert_eq!(err.errorcode(), Some(432));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probabilistic_rule_on_every_command_hits_about_its_share() -> Result {
    let sim = sim().await?;
    sim.post(
        "faults",
        json!([
            {"command": "*", "probability": 0.05, "seed": 1, "fault": {"kind": "transient_530"}},
            {"command": "*", "probability": 0.05, "seed": 2, "fault": {"kind": "drop_connection"}},
        ]),
    )
    .await?
    .error_for_status()?;
    let (mut ok, mut refused, mut dropped) = (0, 0, 0);
    for k in 0..400 {
        let result = if k % 2 == 0 {
            sim.client.list_zones().await.map(|_| ())
        } else {
            sim.client
                .list_volumes(&VolumeFilter::default())
                .await
                .map(|_| ())
        };
        match result {
            Ok(()) => ok += 1,
            Err(e) if e.errorcode() == Some(530) => refused += 1,
            Err(cloudstack::Error::NoResponse { .. }) => dropped += 1,
            Err(e) => anyhow::bail!("an unexpected error: {e}"),
        }
    }
    let failed = refused + dropped;
    assert!(
        (20..=65).contains(&failed),
        "{failed} of 400 calls failed at ~10% ({refused} refused, {dropped} dropped, {ok} ok)"
    );
    assert!(refused > 0 && dropped > 0, "both kinds fire");
    let armed = sim.faults().await?;
    assert_eq!(armed.len(), 2, "a probabilistic rule stays armed");
    let fired: u64 = armed.iter().map(|a| a["fired"].as_u64().unwrap()).sum();
    assert_eq!(fired, failed as u64);
    // Cleared, it stops.
    sim.http
        .delete(format!("{}/faults", sim.running.announcement.admin))
        .send()
        .await?;
    for _ in 0..50 {
        sim.client.list_zones().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_cannot_fire_is_refused_with_the_reason() -> Result {
    let sim = sim().await?;
    for (rule, expect) in [
        (
            json!({"command": "*", "probability": 2.0, "fault": {"kind": "transient_530"}}),
            "probability 2",
        ),
        (
            json!({"command": "listZones", "nth": 0, "fault": {"kind": "transient_530"}}),
            "nth",
        ),
        (
            json!({"command": "listZones", "fault": {"kind": "melt"}}),
            "not a fault rule",
        ),
    ] {
        let response = sim.post("faults", rule.clone()).await?;
        assert_eq!(response.status(), 422, "{rule}");
        let body: Value = response.json().await?;
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(expect), "{rule}: {error}");
    }
    assert!(sim.faults().await?.is_empty(), "nothing was armed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_job_is_unknown_to_the_api_and_runs_only_if_it_had_begun() -> Result {
    let sim = sim().await?;
    let admin = &sim.running.announcement.admin;
    let made = sim
        .client
        .create_volume(
            "spare",
            &ids::ZONE.into(),
            &cloudstack::VolumeSource::Offering {
                disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                size_gb: Some(5),
            },
        )
        .await?;
    let spare = sim.client.wait(&made).await?.id;
    // Attaches take 300 ms (at the time scale of 0.001): the detaches submitted after
    // this one wait in the appliance's queue behind it.
    sim.http
        .post(format!("{admin}/latency"))
        .json(&json!({"attachVolume": 300_000}))
        .send()
        .await?
        .error_for_status()?;
    let oma = cloudstack::VmId::from(ids::APPLIANCE_OMA);
    let running = sim.client.attach_volume(&spare, &oma, None).await?;
    let data = VolumeId::from(ids::PGTEST1_DISK_2001);
    let queued = sim.client.detach_volume(&data).await?;
    let forget = |job: &cloudstack::JobId| sim.http.delete(format!("{admin}/jobs/{job}")).send();
    assert_eq!(forget(&queued.job_id).await?.status(), 204);
    assert_eq!(
        forget(&queued.job_id).await?.status(),
        404,
        "already forgotten"
    );

    // CloudStack's answer for a job id it does not know: ParamProcessWorker's.
    let err = sim
        .client
        .query_async_job_result(&queued.job_id)
        .await
        .expect_err("unknown");
    assert_eq!(err.errorcode(), Some(431));
    let expected = format!(
        "Unable to execute API command queryasyncjobresult due to invalid value. Invalid parameter jobid value={} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.",
        queued.job_id
    );
    assert_eq!(err.errortext(), Some(expected.as_str()));
    let err = sim.client.wait(&queued).await.expect_err("unknown");
    assert!(
        matches!(err, cloudstack::Error::JobUnknown { .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Unknown, "what it did is not known");

    // A detach behind the forgotten one: once it has run, the queue is past that one.
    let behind = sim.client.detach_volume(&data).await?;
    // The running attach, forgotten once it has begun, still does its work.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sim.client.get_volume(&spare).await?.map(|v| v.state) != Some("Attaching".into()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the attach never began"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(forget(&running.job_id).await?.status(), 204);
    let listed: Vec<_> = sim
        .client
        .list_async_jobs()
        .await?
        .into_iter()
        .map(|j| j.jobid)
        .collect();
    assert!(
        !listed.contains(&running.job_id) && !listed.contains(&queued.job_id),
        "listAsyncJobs leaves forgotten jobs out: {listed:?}"
    );
    let detached = sim.client.wait(&behind).await?;
    assert_eq!(
        detached.virtualmachineid, None,
        "the forgotten queued detach did nothing: the one behind it found the volume attached"
    );
    let spare_now = sim.client.get_volume(&spare).await?.expect("exists");
    assert_eq!(
        spare_now.virtualmachineid.as_ref(),
        Some(&oma),
        "the forgotten running attach finished"
    );
    let stats: Value = sim
        .http
        .get(format!("{admin}/stats"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(stats["commands"]["attachvolume"]["jobs"], 1, "{stats}");
    assert_eq!(
        stats["commands"]["detachvolume"]["jobs"], 1,
        "the forgotten queued detach never ran: {stats}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_job_answers_the_job_id_and_the_job_never_runs() -> Result {
    let sim = sim().await?;
    sim.post(
        "faults",
        json!({"command": "detachVolume", "fault": {"kind": "forget_job"}}),
    )
    .await?
    .error_for_status()?;
    let data = VolumeId::from(ids::PGTEST1_DISK_2001);
    let forgotten = sim.client.detach_volume(&data).await?;
    assert!(sim.faults().await?.is_empty(), "the rule is spent");
    let err = sim
        .client
        .query_async_job_result(&forgotten.job_id)
        .await
        .expect_err("unknown");
    assert_eq!(err.errorcode(), Some(431));
    assert!(
        matches!(err, cloudstack::Error::JobUnknown { .. }),
        "{err:?}"
    );
    // A detach sent after it finds the volume still attached: the forgotten one never ran.
    let again = sim.client.detach_volume(&data).await?;
    let detached = sim.client.wait(&again).await?;
    assert_eq!(detached.virtualmachineid, None);
    let stats: Value = sim
        .http
        .get(format!("{}/stats", sim.running.announcement.admin))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(stats["commands"]["detachvolume"]["jobs"], 1, "{stats}");
    Ok(())
}
