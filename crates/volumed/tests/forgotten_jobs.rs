//! A recorded job that CloudStack no longer knows: `queryAsyncJobResult` refuses its
//! id (431) because the job's record was purged, or the management server's database
//! was restored from before it. cloudsim forgets a job on `DELETE /sim/jobs/{id}`.
//!
//! What the daemon promises: it does not wait on such a job forever, nor take the
//! refusal for a failure; it looks at CloudStack (the volume, the snapshot) and ends
//! the operation by what it sees — done, or not done and then sent once more — so
//! that exactly one CloudStack operation is done. CloudStack is watched through
//! cloudsim's `/sim/stats`: calls of a command, and jobs of it that really ran.
//!
//! Nothing sleeps for a fixed time except the short steps of a bounded wait.

// Set-up: a volume made, and a blocking attach sent, with the real client.
#![allow(clippy::disallowed_methods)]

use ::ids::{JobId, VolumeId, ZoneId};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloudsim::world::{World, ids};
use cloudstack::{Client, VolumeSource};
use serde_json::Value;
use volumed::{Class, Journal, Local, LocalConfig, MemoryJournal, OpKind, OpState, VolumeService};

mod common;

use common::{assert_on_oma, attach_to_oma, cs_client, key, oma, start_sim};

type Result<T = ()> = anyhow::Result<T>;

const PATIENCE: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_millis(5);

/// Waits (bounded) until `probe` yields something.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(STEP).await;
    }
}

struct Sim {
    running: cloudsim::Running,
    root: tempfile::TempDir,
    /// For set-up and for watching CloudStack; never for the operations under test.
    client: Client,
    http: reqwest::Client,
    journal: Arc<MemoryJournal>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.running.shutdown_token().cancel();
    }
}

impl Sim {
    /// The default world whose attaches take `attach_ms` (snapshots 10 ms).
    async fn start(attach_ms: u64) -> Result<Sim> {
        let mut world = World::default();
        for (command, ms) in [
            ("createVolume", 1),
            ("createSnapshot", 10),
            ("attachVolume", attach_ms),
        ] {
            world.latency_ms.insert(command.to_string(), ms);
        }
        world.settings.hotplug_delay_ms = 15;
        let (running, root) = start_sim(world, 1.0).await?;
        Ok(Sim {
            client: cs_client(running.endpoint(), Some(Duration::from_secs(10)))?,
            running,
            root,
            http: reqwest::Client::new(),
            journal: Arc::new(MemoryJournal::new()),
        })
    }

    /// A daemon over this simulator and the shared journal.
    fn local(&self) -> Result<Local> {
        let journal: Arc<dyn Journal> = self.journal.clone();
        let mut config = LocalConfig::with_appliance(ids::APPLIANCE_OMA, self.root.path());
        config.submit_backoff = Duration::from_millis(10);
        Ok(Local::new(
            cs_client(self.running.endpoint(), Some(Duration::from_secs(10)))?,
            journal,
            config,
        ))
    }

    fn admin(&self, path: &str) -> String {
        format!("{}/{path}", self.running.announcement.admin)
    }

    /// CloudStack forgets the job.
    async fn forget(&self, job_id: &JobId) -> Result {
        let answer = self
            .http
            .delete(self.admin(&format!("jobs/{job_id}")))
            .send()
            .await?;
        anyhow::ensure!(answer.status() == 204, "forgetting {job_id}: {answer:?}");
        Ok(())
    }

    async fn stats(&self) -> Result<Value> {
        Ok(self
            .http
            .get(self.admin("stats"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Calls of `command` (as CloudStack names it) and jobs of it that ran.
    async fn calls_and_jobs(&self, command: &str) -> Result<(u64, u64)> {
        let stats = self.stats().await?;
        Ok((
            stats["calls"][command].as_u64().unwrap_or(0),
            stats["commands"][command.to_lowercase()]["jobs"]
                .as_u64()
                .unwrap_or(0),
        ))
    }

    /// A new detached 5 GiB volume.
    async fn new_volume(&self, name: &str) -> Result<VolumeId> {
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
        Ok(self.client.wait(&job).await?.id)
    }

    /// Keeps the appliance's queue busy (an attach of a volume of its own, sent past
    /// the daemon), so that what the daemon sends next waits behind it.
    async fn block_the_appliance(&self) -> Result {
        let blocker = self.new_volume("blocker").await?;
        self.client.attach_volume(&blocker, &oma(), None).await?;
        Ok(())
    }

    /// The job id the journal has for `key` once it is not `other`.
    async fn job_of(&self, key: &str, other: Option<&JobId>) -> Result<JobId> {
        let journal = Arc::clone(&self.journal);
        eventually("a job id to be recorded", || {
            let job = journal
                .op_by_key(key)
                .and_then(|o| o.job_id)
                .filter(|j| Some(j) != other);
            async move { Ok(job) }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_whose_job_is_forgotten_before_it_ran_is_looked_at_and_sent_once_more() -> Result
{
    let sim = Sim::start(400).await?;
    let daemon = Arc::new(sim.local()?);
    let v = sim.new_volume("forgotten").await?;
    sim.block_the_appliance().await?;
    let attach = {
        let (daemon, v) = (Arc::clone(&daemon), v.clone());
        tokio::spawn(async move { attach_to_oma(&*daemon, "attach", v.as_str(), None).await })
    };
    let forgotten = sim.job_of("attach", None).await?;
    sim.forget(&forgotten).await?;

    let attached = attach.await??;
    assert_on_oma(attached.vm_id.as_ref());
    let on = sim.client.get_volume(&v).await?.context("exists")?;
    assert_on_oma(on.virtualmachineid.as_ref());
    assert_eq!(
        sim.calls_and_jobs("attachVolume").await?,
        (3, 2),
        "the blocker, the forgotten attach (never run) and one more: two attaches done"
    );
    let op = sim.journal.op_by_key("attach").context("recorded")?;
    assert_eq!(op.state, OpState::Succeeded);
    assert_ne!(
        op.job_id.as_ref(),
        Some(&forgotten),
        "the new job is recorded"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_whose_job_is_forgotten_before_it_ran_is_taken_once() -> Result {
    let sim = Sim::start(400).await?;
    let daemon = Arc::new(sim.local()?);
    sim.block_the_appliance().await?;
    let boot = VolumeId::from(ids::PGTEST1_DISK_2000);
    let snapshot = {
        let (daemon, boot) = (Arc::clone(&daemon), boot.clone());
        tokio::spawn(async move { daemon.snapshot(&key("snap"), &boot, "before-drill").await })
    };
    let forgotten = sim.job_of("snap", None).await?;
    sim.forget(&forgotten).await?;

    let taken = snapshot.await??;
    let listed = sim.client.list_snapshots(Some(&boot), None).await?;
    assert_eq!(listed.len(), 1, "one snapshot: {listed:?}");
    assert_eq!(listed[0].id, taken.id);
    assert_eq!(listed[0].state.as_deref(), Some("BackedUp"));
    assert_eq!(sim.calls_and_jobs("createSnapshot").await?, (2, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_forgotten_while_the_daemon_was_down_is_settled_by_looking_not_sent_again() -> Result
{
    let sim = Sim::start(300).await?;
    let v = sim.new_volume("done-unseen").await?;
    let first = Arc::new(sim.local()?);
    let caller = {
        let (first, v) = (Arc::clone(&first), v.clone());
        tokio::spawn(async move { attach_to_oma(&*first, "attach", v.as_str(), None).await })
    };
    let job = sim.job_of("attach", None).await?;
    // The daemon dies with the attach in flight …
    caller.abort();
    assert!(caller.await.is_err(), "the caller was cancelled");
    drop(first);
    // … the attach is done while nobody waits on it, and then CloudStack forgets it.
    eventually("the attach to be done", || async {
        let on = sim.client.get_volume(&v).await?.context("exists")?;
        Ok((on.virtualmachineid.is_some() && on.state == "Ready").then_some(()))
    })
    .await?;
    sim.forget(&job).await?;

    let second = sim.local()?;
    let resumed = second.resume_unfinished().await?;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].kind, OpKind::Attach);
    let result = resumed[0].outcome.as_ref().map_err(Clone::clone)?;
    assert_eq!(result["vm_id"], ids::APPLIANCE_OMA);
    assert_eq!(
        sim.calls_and_jobs("attachVolume").await?,
        (1, 1),
        "settled by looking: not sent again"
    );
    let op = sim.journal.op_by_key("attach").context("recorded")?;
    assert_eq!(op.state, OpState::Succeeded);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_forgotten_twice_is_sent_once_more_not_twice_more() -> Result {
    let sim = Sim::start(1500).await?;
    let daemon = Arc::new(sim.local()?);
    let v = sim.new_volume("forgotten-twice").await?;
    sim.block_the_appliance().await?;
    let attach = {
        let (daemon, v) = (Arc::clone(&daemon), v.clone());
        tokio::spawn(async move { attach_to_oma(&*daemon, "attach", v.as_str(), None).await })
    };
    let first = sim.job_of("attach", None).await?;
    sim.forget(&first).await?;
    let second = sim.job_of("attach", Some(&first)).await?;
    sim.forget(&second).await?;

    let err = attach.await?.expect_err("the outcome stays unknown");
    assert_eq!(err.class(), Class::Unknown, "{err}");
    assert_eq!(
        sim.calls_and_jobs("attachVolume").await?.0,
        3,
        "the blocker and two attaches: no third after the second was forgotten"
    );
    let op = sim.journal.op_by_key("attach").context("recorded")?;
    assert!(!op.state.is_finished(), "left unfinished: {op:?}");

    // Asked again with the key, the daemon looks once more and finishes it.
    let attached = attach_to_oma(&*daemon, "attach", v.as_str(), None).await?;
    assert_on_oma(attached.vm_id.as_ref());
    assert_eq!(
        sim.calls_and_jobs("attachVolume").await?,
        (4, 2),
        "the blocker and one attach done; the two forgotten ones never ran"
    );
    Ok(())
}
