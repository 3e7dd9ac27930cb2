//! The fault kinds the reliability suite relies on, over HTTP with ferry's client:
//! `api_error` refuses the call itself and changes nothing, a probabilistic rule on
//! `*` hits about its share of all calls with the faults it names and stays armed, and
//! rules that could never fire are refused when armed.

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
