//! Fencing through the volume daemon's REST API (what `ferry volumed` serves on an
//! appliance), journaling into the store as `ferry volumed --database` does: a
//! request carrying a run's fencing generation lower than one the daemon has seen is
//! refused — 409 `fenced`, naming both generations — on every mutating route, before
//! anything is recorded or sent to CloudStack; and the highest generation survives a
//! restart of the daemon, so a worker fenced off before the restart stays fenced off.
//! (`tests/daemon.rs` has the same rule for the in-process daemon.)

use std::sync::Arc;
use std::time::Duration;

use cloudsim::World;
use cloudsim::world::ids;
use secrecy::SecretString;
use serde_json::{Value, json};

mod common;

use common::start_sim;

type Result<T = ()> = anyhow::Result<T>;

const TOKEN: &str = "volumed-fencing-token";

struct Site {
    sim: cloudsim::Running,
    store: store::Store,
    root: tempfile::TempDir,
    _db: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.sim.shutdown_token().cancel();
    }
}

async fn site() -> Result<Site> {
    let (sim, root) = start_sim(World::default(), 0.001).await?;
    let db = tempfile::tempdir()?;
    let store =
        store::Store::connect(db.path().join("volumed.db").to_str().expect("utf-8")).await?;
    Ok(Site {
        sim,
        store,
        root,
        _db: db,
        http: reqwest::Client::new(),
    })
}

impl Site {
    /// A daemon process: a new `Local` on the store's journal, behind the REST API.
    async fn daemon(&self) -> Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let client = cloudstack::Client::new(cloudstack::Config::new(
            self.sim.endpoint(),
            ids::API_KEY,
            SecretString::from(ids::SECRET_KEY.to_string()),
        ))?;
        let journal: Arc<dyn volumed::Journal> =
            Arc::new(volumed::StoreJournal::new(self.store.clone()));
        let local = volumed::Local::new(
            client,
            journal,
            volumed::LocalConfig::with_appliance(ids::APPLIANCE_OMA, self.root.path()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(volumed::server::serve(
            listener,
            Arc::new(local),
            SecretString::from(TOKEN.to_string()),
            volumed::server::Identity::new(vec![ids::APPLIANCE_OMA.into()]),
            std::future::pending(),
        ));
        Ok((url, task))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        key: &str,
        body: Value,
    ) -> Result<(u16, Value)> {
        let response = self
            .http
            .request(method, url)
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Mutating CloudStack calls so far.
    async fn mutations(&self) -> Result<u64> {
        let stats: Value = self
            .http
            .get(format!("{}/stats", self.sim.announcement.admin))
            .send()
            .await?
            .json()
            .await?;
        Ok(stats["calls"]
            .as_object()
            .map(|c| {
                c.iter()
                    .filter(|(k, _)| !k.starts_with("list") && *k != "queryAsyncJobResult")
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0))
    }
}

fn fence(generation: i64) -> Value {
    json!({"run_id": "run-7", "generation": generation})
}

/// Every mutating route, with a body that is otherwise acceptable.
fn routes(url: &str, generation: i64) -> Vec<(reqwest::Method, String, Value)> {
    use reqwest::Method;
    let f = fence(generation);
    vec![
        (
            Method::POST,
            format!("{url}/v1/attach"),
            json!({"volume_id": ids::PGTEST1_DISK_2001, "vm_id": ids::APPLIANCE_OMA, "fence": f}),
        ),
        (
            Method::POST,
            format!("{url}/v1/attach-root"),
            json!({"volume_id": ids::PGTEST1_DISK_2001, "vm_id": ids::APPLIANCE_OMA, "fence": f}),
        ),
        (
            Method::POST,
            format!("{url}/v1/detach"),
            json!({"volume_id": ids::PGTEST1_DISK_2001, "fence": f}),
        ),
        (
            Method::POST,
            format!("{url}/v1/snapshots"),
            json!({"volume_id": ids::PGTEST1_DISK_2001, "name": "s", "fence": f}),
        ),
        (
            Method::POST,
            format!("{url}/v1/snapshots/some-snapshot/revert"),
            json!({"fence": f}),
        ),
        (
            Method::DELETE,
            format!("{url}/v1/snapshots/some-snapshot"),
            json!({"fence": f}),
        ),
        (
            Method::POST,
            format!("{url}/v1/volumes"),
            json!({"snapshot_id": "some-snapshot", "name": "c", "zone_id": ids::ZONE, "fence": f}),
        ),
        (
            Method::DELETE,
            format!("{url}/v1/volumes/some-volume"),
            json!({"fence": f}),
        ),
        (
            Method::POST,
            format!("{url}/v1/guest-prep"),
            json!({"appliance_vm_id": ids::APPLIANCE_OMA, "volume_id": ids::PGTEST1_DISK_2001,
                   "prep": {"program": "/bin/true", "args": [], "timeout_secs": 5}, "fence": f}),
        ),
    ]
}

async fn assert_fenced(site: &Site, url: &str, stale: i64, highest: i64) -> Result {
    let before = site.mutations().await?;
    for (k, (method, route, body)) in routes(url, stale).into_iter().enumerate() {
        let key = format!("stale-{stale}-{k}");
        let (status, answer) = site.send(method.clone(), &route, &key, body).await?;
        assert_eq!(status, 409, "{method} {route}: {answer}");
        assert_eq!(answer["error"]["code"], "fenced", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("generation {stale}"))
                && message.contains(&format!("generation {highest}")),
            "the refusal names both generations: {message}"
        );
        assert!(
            site.store.op_by_key(&key).await?.is_none(),
            "{route}: a fenced request was journaled"
        );
    }
    assert_eq!(
        site.mutations().await?,
        before,
        "a fenced request reached CloudStack"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fencing_generation_is_refused_on_every_route_and_across_a_restart() -> Result {
    let site = site().await?;
    let (url, first) = site.daemon().await?;

    // Generation 2 of the run acts: detaching one replica.
    let (status, answer) = site
        .send(
            reqwest::Method::POST,
            &format!("{url}/v1/detach"),
            "gen-2-detach",
            json!({"volume_id": ids::PGTEST1_DISK_2000, "fence": fence(2)}),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");

    // Generation 1, a worker that lost the run, is refused on every route.
    assert_fenced(&site, &url, 1, 2).await?;

    // The daemon restarts on the same journal: generation 1 is still fenced off.
    first.abort();
    let _ = first.await;
    let (url, _second) = site.daemon().await?;
    assert_fenced(&site, &url, 1, 2).await?;

    // A newer worker (generation 3) is served, and from then on generation 2 is stale.
    let (status, answer) = site
        .send(
            reqwest::Method::POST,
            &format!("{url}/v1/attach"),
            "gen-3-attach",
            json!({"volume_id": ids::PGTEST1_DISK_2000, "vm_id": ids::APPLIANCE_OMA, "fence": fence(3)}),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_fenced(&site, &url, 2, 3).await?;
    eprintln!("RELIABILITY security volumed-fencing routes=9 refused_before_and_after_restart=yes");
    Ok(())
}
