//! The client's metrics: what a request, a wait on an async job and a failure each
//! record, read back from a `metrics_util` debugging recorder.
//!
//! `metrics::with_local_recorder` covers the current thread only, so the client runs
//! on a current-thread runtime built inside it. cloudsim runs on a runtime of its own,
//! whose worker threads the recorder does not see; that is fine, since every metric is
//! recorded by the client.

// These tests exercise the client's own volume calls against cloudsim.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use cloudsim::SimConfig;
use cloudsim::world::{World, ids};
use cloudstack::{
    Client, Config, Error, ErrorClass, PollPolicy, VmId, VolumeId, VolumeSource, ZoneId,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use secrecy::SecretString;

/// A metric's name and its labels, sorted by label name.
type Series = (String, Vec<(String, String)>);

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    (name.to_string(), labels)
}

/// A client of `endpoint` that polls jobs every few milliseconds and tries a read
/// twice at most.
fn client_of(endpoint: &str) -> anyhow::Result<Client> {
    let mut config = Config::new(
        endpoint,
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    );
    config.request_timeout = Duration::from_secs(10);
    config.read_attempts = 2;
    config.poll = PollPolicy {
        first: Duration::from_millis(5),
        factor: 1.5,
        max: Duration::from_millis(20),
        deadline: Duration::from_secs(20),
    };
    Ok(Client::new(config)?)
}

/// The counter's value, failing if the series is absent or not a counter.
fn counter(metrics: &BTreeMap<Series, DebugValue>, key: &Series) -> u64 {
    match metrics.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{key:?} is not a recorded counter: {other:?}"),
    }
}

/// The histogram's observations, failing if the series is absent or not a histogram.
fn histogram(metrics: &BTreeMap<Series, DebugValue>, key: &Series) -> Vec<f64> {
    match metrics.get(key) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.0).collect(),
        other => panic!("{key:?} is not a recorded histogram: {other:?}"),
    }
}

#[test]
fn requests_job_waits_and_failures_are_recorded() -> anyhow::Result<()> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut world = World::default();
    world.latency_ms.insert("createVolume".into(), 300);
    world.latency_ms.insert("attachVolume".into(), 1);
    let sim = server.block_on(cloudsim::start(
        SimConfig {
            world,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    ))?;
    let endpoint = sim.endpoint().to_string();

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = client_of(&endpoint)?;

            // A job that succeeds.
            let job = client
                .create_volume(
                    "metrics",
                    &ZoneId::from(ids::ZONE),
                    &VolumeSource::Offering {
                        disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                        size_gb: Some(5),
                    },
                )
                .await?;
            let volume = client.wait(&job).await?;
            assert_eq!(Some(volume.id.into_string()), job.id);

            // A job that fails: the volume is attached to the appliance already.
            let job = client
                .attach_volume(
                    &VolumeId::from(ids::PGTEST1_DISK_2000),
                    &VmId::from(ids::APPLIANCE_OMA),
                    None,
                )
                .await?;
            let err = client.wait(&job).await.unwrap_err();
            assert!(matches!(err, Error::JobFailed { .. }), "got {err:?}");

            // A call refused outright: no such volume.
            let err = client
                .detach_volume(&VolumeId::from("no-such-volume"))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Api { .. }), "got {err:?}");
            assert_eq!(err.class(), ErrorClass::Definitive);

            // A read to a port that refuses connections, tried twice (`read_attempts`).
            // The socket is bound but not listening, so the port stays taken.
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind("127.0.0.1:0".parse()?)?;
            let refused = client_of(&format!("http://{}/client/api", socket.local_addr()?))?;
            let err = refused.list_zones().await.unwrap_err();
            assert!(matches!(err, Error::Connect { .. }), "got {err:?}");
            anyhow::Ok(())
        })
    })?;
    server.block_on(sim.stop())?;

    let metrics: BTreeMap<Series, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            (series(key.name(), &labels), value)
        })
        .collect();

    // Each wait is observed once, under the async command, with the polls it made.
    let calls = |command| series("ferry_cloudstack_calls_total", &[("command", command)]);
    let waits = |command| series("ferry_cloudstack_job_wait_seconds", &[("command", command)]);
    let polls = |command| series("ferry_cloudstack_job_polls", &[("command", command)]);
    let mut total_polls = 0.0;
    for command in ["createVolume", "attachVolume"] {
        let waited = histogram(&metrics, &waits(command));
        assert_eq!(waited.len(), 1, "{command}: {waited:?}");
        assert!(waited[0] > 0.0 && waited[0] < 20.0, "{command}: {waited:?}");
        let polled = histogram(&metrics, &polls(command));
        assert_eq!(polled.len(), 1, "{command}: {polled:?}");
        assert!(polled[0] >= 1.0, "{command}: {polled:?}");
        total_polls += polled[0];
    }
    // The 300 ms volume creation outlasts the first poll, 5 ms after the wait began.
    assert!(histogram(&metrics, &polls("createVolume"))[0] >= 2.0);

    // Every request sent is counted, polls included; each poll was one request.
    assert_eq!(counter(&metrics, &calls("createVolume")), 1);
    assert_eq!(counter(&metrics, &calls("attachVolume")), 1);
    assert_eq!(counter(&metrics, &calls("detachVolume")), 1);
    assert_eq!(counter(&metrics, &calls("listZones")), 2);
    assert_eq!(
        counter(&metrics, &calls("queryAsyncJobResult")) as f64,
        total_polls
    );

    // Exactly the failures: the failed job under its command, the refused call, and
    // both attempts of the read.
    let errors: BTreeMap<Vec<(String, String)>, u64> = metrics
        .iter()
        .filter(|((name, _), _)| name == "ferry_cloudstack_errors_total")
        .map(|(key, _)| (key.1.clone(), counter(&metrics, key)))
        .collect();
    let expected: BTreeMap<Vec<(String, String)>, u64> = [
        ("attachVolume", "definitive", 1),
        ("detachVolume", "definitive", 1),
        ("listZones", "transient", 2),
    ]
    .into_iter()
    .map(|(command, class, n)| {
        let (_, labels) = series("", &[("command", command), ("class", class)]);
        (labels, n)
    })
    .collect();
    assert_eq!(errors, expected);
    Ok(())
}
