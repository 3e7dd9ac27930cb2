//! CloudStack's API rate limit in cloudsim, and ferry's client under it: over the
//! limit a call is refused as CloudStack refuses it (HTTP 429, errorcode 429,
//! cserrorcode 9999, "please retry after [N] ms") before its command is looked at; the
//! client sends a throttled call again after that wait, so nothing fails, and with its
//! own limit under the cloud's it is not throttled at all.

use std::time::Duration;

use cloudsim::SimConfig;
use cloudsim::world::{ApiThrottling, World, ids};
use cloudstack::{RateLimit, VolumeFilter};
use serde_json::Value;

type Result<T = ()> = anyhow::Result<T>;

/// cloudsim at real time (so the interval is a real second) with at most `max` calls
/// per second, and a client of it with `rate_limit`.
async fn sim(
    max: u32,
    rate_limit: Option<RateLimit>,
) -> Result<(cloudsim::Running, cloudstack::Client)> {
    let mut world = World::default();
    world.settings.api_throttling = Some(ApiThrottling { max, interval_s: 1 });
    let running = cloudsim::start(
        SimConfig {
            world,
            sysfs_root: None,
            time_scale: 1.0,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let mut config = cloudstack::Config::new(
        running.endpoint(),
        ids::API_KEY,
        secrecy::SecretString::from(ids::SECRET_KEY.to_string()),
    );
    config.rate_limit = rate_limit;
    let client = cloudstack::Client::new(config)?;
    Ok((running, client))
}

/// `command` signed as a client signs it, sent by hand to see CloudStack's answer.
async fn signed_get(running: &cloudsim::Running, command: &str) -> Result<reqwest::Response> {
    use cloudstack::signing::{java_url_encode, sign};
    let mut params = vec![
        ("apiKey".to_string(), ids::API_KEY.to_string()),
        ("command".to_string(), command.to_string()),
        ("response".to_string(), "json".to_string()),
    ];
    let signature = sign(&params, ids::SECRET_KEY);
    params.push(("signature".to_string(), signature));
    let query = params
        .iter()
        .map(|(k, v)| format!("{}={}", java_url_encode(k), java_url_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    Ok(reqwest::get(format!("{}?{query}", running.endpoint())).await?)
}

async fn stats(running: &cloudsim::Running) -> Result<Value> {
    Ok(
        reqwest::get(format!("{}/stats", running.announcement.admin))
            .await?
            .json()
            .await?,
    )
}

#[tokio::test]
async fn a_call_over_the_limit_is_refused_as_cloudstack_refuses_it() -> Result {
    let (running, client) = sim(2, None).await?;
    client.list_zones().await?;
    client.list_zones().await?;
    let raw = reqwest::get(format!(
        "{}?command=listZones&response=json&apiKey={}",
        running.endpoint(),
        ids::API_KEY
    ))
    .await?;
    // Unsigned: refused for its signature first (401), counted nowhere near the limit.
    assert_eq!(raw.status(), 401);
    let before = stats(&running).await?;
    assert_eq!(before["throttled"], 0, "{before}");

    // The third signed call in the second is refused as CloudStack refuses it.
    let raw = signed_get(&running, "listZones").await?;
    assert_eq!(raw.status(), 429);
    let body: Value = raw.json().await?;
    let inner = &body["listzonesresponse"];
    assert_eq!(inner["errorcode"], 429, "{body}");
    assert_eq!(inner["cserrorcode"], 9999, "{body}");
    let text = inner["errortext"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(
            "The given user has reached his/her account api limit, please retry after ["
        ) && text.ends_with("] ms."),
        "{text}"
    );
    // The client, throttled too, waits the time named and sends the call again.
    client.list_zones().await?;
    let stats = stats(&running).await?;
    assert!(stats["throttled"].as_u64().unwrap_or(0) >= 2, "{stats}");
    Ok(())
}

#[tokio::test]
async fn throttled_calls_are_sent_again_and_nothing_fails() -> Result {
    let (running, client) = sim(5, None).await?;
    // Twelve reads at once against five a second: most are throttled at first.
    let all = VolumeFilter::default();
    let calls = (0..12).map(|_| client.list_volumes(&all));
    for result in futures::future::join_all(calls).await {
        result?;
    }
    let stats = stats(&running).await?;
    assert!(stats["throttled"].as_u64().unwrap_or(0) >= 7, "{stats}");
    assert_eq!(
        stats["calls"]["listVolumes"].as_u64(),
        Some(12 + stats["throttled"].as_u64().unwrap_or(0)),
        "every throttled call was counted, and sent again: {stats}"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_under_the_limit_is_never_throttled() -> Result {
    // Four a second against five: spread evenly, no second ever sees a sixth.
    let (running, client) = sim(
        5,
        Some(RateLimit {
            calls: 4,
            interval: Duration::from_secs(1),
        }),
    )
    .await?;
    let calls = (0..10).map(|_| client.list_zones());
    for result in futures::future::join_all(calls).await {
        result?;
    }
    let stats = stats(&running).await?;
    assert_eq!(stats["throttled"], 0, "{stats}");
    assert_eq!(stats["calls"]["listZones"], 10, "{stats}");
    Ok(())
}
