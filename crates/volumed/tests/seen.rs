//! What a caller has just seen stands for the daemon's own read (`Call::seeing`): a
//! detach, snapshot or revert that carries it does not read the volume (or the
//! snapshot) again, records the VM it was told, and without it the daemon reads as
//! before — in process and over the agent API alike. CloudStack is watched through
//! cloudsim's `/sim/stats`.

// Set-up: volumes made with the real client.
#![allow(clippy::disallowed_methods)]

use ::ids::{VolumeId, ZoneId};
use std::sync::Arc;
use std::time::Duration;

use cloudsim::world::{World, ids};
use cloudstack::{Client, VolumeSource};
use secrecy::SecretString;
use serde_json::Value;
use volumed::{
    HttpClient, HttpClientConfig, Journal, Local, LocalConfig, MemoryJournal, OpKind, VolumeService,
};

mod common;

use common::{attach_to_oma, cs_client, key, oma, start_sim};

type Result<T = ()> = anyhow::Result<T>;

struct Sim {
    _running: cloudsim::Running,
    endpoint: String,
    admin: String,
    client: Client,
    root: tempfile::TempDir,
    journal: Arc<MemoryJournal>,
}

impl Sim {
    async fn start() -> Result<Sim> {
        let mut world = World::default();
        for command in [
            "createVolume",
            "createSnapshot",
            "revertSnapshot",
            "attachVolume",
            "detachVolume",
        ] {
            world.latency_ms.insert(command.to_string(), 5);
        }
        world.settings.hotplug_delay_ms = 5;
        let (running, root) = start_sim(world, 1.0).await?;
        let a = running.announcement.clone();
        Ok(Sim {
            client: cs_client(&a.endpoint, Some(Duration::from_secs(10)))?,
            endpoint: a.endpoint,
            admin: a.admin,
            _running: running,
            root,
            journal: Arc::new(MemoryJournal::new()),
        })
    }

    fn local(&self) -> Result<Local> {
        let journal: Arc<dyn Journal> = self.journal.clone();
        let config = LocalConfig::with_appliance(ids::APPLIANCE_OMA, self.root.path());
        Ok(Local::new(
            cs_client(&self.endpoint, Some(Duration::from_secs(10)))?,
            journal,
            config,
        ))
    }

    /// CloudStack calls so far, by command.
    async fn calls(&self) -> Result<Value> {
        let stats: Value = reqwest::get(format!("{}/stats", self.admin))
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(stats["calls"].clone())
    }

    /// A new 5 GiB volume attached to `oma` through `daemon`.
    async fn volume_on_oma(&self, daemon: &dyn VolumeService, name: &str) -> Result<VolumeId> {
        let job = self
            .client
            .create_volume(
                name,
                &ZoneId::from(ids::ZONE),
                &VolumeSource::Offering {
                    disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                    size_gb: Some(5),
                },
            )
            .await?;
        let id = self.client.wait(&job).await?.id;
        attach_to_oma(daemon, &format!("attach-{name}"), id.as_str(), None).await?;
        Ok(id)
    }

    /// The VM the journal recorded for the operation of `key`.
    fn recorded_vm(&self, key: &str) -> Option<String> {
        self.journal
            .op_by_key(key)
            .and_then(|op| op.vm_id)
            .map(|vm| vm.to_string())
    }
}

/// How many more times `command` was called in `after` than in `before`.
fn more(before: &Value, after: &Value, command: &str) -> u64 {
    after[command].as_u64().unwrap_or(0) - before[command].as_u64().unwrap_or(0)
}

/// Detaches `volume` with what the caller saw (or without), and returns how many
/// `listVolumes` the daemon made for it.
async fn reads_of_a_detach(
    sim: &Sim,
    daemon: &dyn VolumeService,
    volume: &VolumeId,
    k: &str,
    seen: bool,
) -> Result<u64> {
    let mut call = key(k);
    if seen {
        call = call.seeing(volume, Some(&oma()));
    }
    let before = sim.calls().await?;
    let detached = daemon.detach(&call, volume).await?;
    assert_eq!(detached.vm_id, None, "{detached:?}");
    let after = sim.calls().await?;
    assert_eq!(more(&before, &after, "detachVolume"), 1, "{after}");
    assert_eq!(
        sim.recorded_vm(k).as_deref(),
        Some(ids::APPLIANCE_OMA),
        "the detach's VM is recorded either way"
    );
    Ok(more(&before, &after, "listVolumes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_caller_saw_stands_for_the_daemons_read() -> Result {
    let sim = Sim::start().await?;
    let daemon = sim.local()?;

    // A detach: one read of the volume without, none with.
    let a = sim.volume_on_oma(&daemon, "seen-a").await?;
    let b = sim.volume_on_oma(&daemon, "seen-b").await?;
    assert_eq!(
        reads_of_a_detach(&sim, &daemon, &a, "detach-a", false).await?,
        1
    );
    assert_eq!(
        reads_of_a_detach(&sim, &daemon, &b, "detach-b", true).await?,
        0
    );

    // A claim about another volume than the request's is not taken: the daemon reads.
    let c = sim.volume_on_oma(&daemon, "seen-c").await?;
    let before = sim.calls().await?;
    let elsewhere = key("snapshot-c").seeing(&a, None);
    let snap = daemon.snapshot(&elsewhere, &c, "seen-c-snap").await?;
    let after = sim.calls().await?;
    assert_eq!(more(&before, &after, "listVolumes"), 1, "{after}");
    assert_eq!(
        sim.recorded_vm("snapshot-c").as_deref(),
        Some(ids::APPLIANCE_OMA)
    );

    // A snapshot told where its volume is: no read.
    let before = sim.calls().await?;
    let told = key("snapshot-c2").seeing(&c, Some(&oma()));
    daemon.snapshot(&told, &c, "seen-c-snap2").await?;
    let after = sim.calls().await?;
    assert_eq!(more(&before, &after, "listVolumes"), 0, "{after}");
    assert_eq!(more(&before, &after, "createSnapshot"), 1, "{after}");

    // A revert of a detached volume: without what the caller saw the daemon reads the
    // snapshot and its volume; with it, neither — and it is serialized on the volume.
    daemon.detach(&key("detach-c"), &c).await?;
    let before = sim.calls().await?;
    daemon.revert(&key("revert-1"), &snap.id).await?;
    let after = sim.calls().await?;
    assert_eq!(more(&before, &after, "listSnapshots"), 1, "{after}");
    assert_eq!(more(&before, &after, "listVolumes"), 1, "{after}");
    let before = sim.calls().await?;
    daemon
        .revert(&key("revert-2").seeing(&c, None), &snap.id)
        .await?;
    let after = sim.calls().await?;
    assert_eq!(more(&before, &after, "listSnapshots"), 0, "{after}");
    assert_eq!(more(&before, &after, "listVolumes"), 0, "{after}");
    assert_eq!(more(&before, &after, "revertSnapshot"), 1, "{after}");
    let op = sim.journal.op_by_key("revert-2").expect("recorded");
    assert_eq!(op.kind, OpKind::Revert);
    assert_eq!(op.vm_id, None);
    assert_eq!(op.volume_id, Some(c.clone()));

    // Asked again with the key (a repeated request sees nothing, or something else):
    // the recorded answer, nothing sent, the recorded VM unchanged.
    let before = sim.calls().await?;
    daemon.detach(&key("detach-b"), &b).await?;
    let after = sim.calls().await?;
    assert_eq!(more(&before, &after, "detachVolume"), 0, "{after}");
    assert_eq!(
        sim.recorded_vm("detach-b").as_deref(),
        Some(ids::APPLIANCE_OMA)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_caller_saw_travels_over_the_agent_api() -> Result {
    let sim = Sim::start().await?;
    let local: Arc<dyn VolumeService> = Arc::new(sim.local()?);
    let token = "volumed-seen-token";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(volumed::server::serve(
        listener,
        local.clone(),
        SecretString::from(token.to_string()),
        volumed::server::Identity::new(vec![ids::APPLIANCE_OMA.into()]),
        async move {
            let _ = stopped.await;
        },
    ));
    let http = HttpClient::new(HttpClientConfig::new(
        &url,
        SecretString::from(token.to_string()),
    ))?;

    let a = sim.volume_on_oma(local.as_ref(), "http-a").await?;
    let b = sim.volume_on_oma(local.as_ref(), "http-b").await?;
    assert_eq!(
        reads_of_a_detach(&sim, &http, &a, "http-detach-a", false).await?,
        1
    );
    assert_eq!(
        reads_of_a_detach(&sim, &http, &b, "http-detach-b", true).await?,
        0
    );

    // A `seen` of the wrong shape is refused before anything is done.
    let c = sim.volume_on_oma(local.as_ref(), "http-c").await?;
    let before = sim.calls().await?;
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/detach"))
        .bearer_auth(token)
        .header("idempotency-key", "http-detach-c")
        .json(&serde_json::json!({
            "volume_id": c,
            "seen": {"volume_id": c, "vm": ids::APPLIANCE_OMA},
        }))
        .send()
        .await?;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "unprocessable", "{body}");
    let after = sim.calls().await?;
    assert_eq!(more(&before, &after, "detachVolume"), 0, "{after}");

    let _ = stop.send(());
    server.await??;
    Ok(())
}
