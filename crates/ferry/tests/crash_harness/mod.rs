//! The harness of the process-level crash tests (`tests/crash.rs`): cloudsim on port 0
//! (in this process: it is never the one killed) with its appliance's guest view in a
//! temp dir, `ferry serve` as real child processes (SIGKILLed and restarted on the
//! same database), the REST API over reqwest, and DESIGN §5's invariants checked
//! against cloudsim's state over HTTP — CloudStack's API and `/sim/`.
//!
//! Every wait has a deadline and says what it waited for; nothing sleeps but the poll
//! interval. Child processes are killed on drop.

// Shared by tests that each use part of it.
#![allow(dead_code)]

use ::ids::{JobId, RunId, VolumeId};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use cloudsim::world::ids;
use cloudsim::{SimConfig, World};
use secrecy::SecretString;
use serde_json::{Value, json};
use server::config::{Builder, EngineSection, TargetSection};
use server::model::{RunDetail, RunSummary, VmDetail};
use tokio::time::Instant;

pub type TestResult = anyhow::Result<()>;

/// Each replica's content generation, by volume id.
pub type Generations = BTreeMap<String, u64>;

/// The API's bearer token in every test.
pub const TOKEN: &str = "crash-test-token";
/// pgtest1's replica volumes: boot, data.
pub const REPLICAS: [&str; 2] = [ids::PGTEST1_DISK_2000, ids::PGTEST1_DISK_2001];
/// How often a run is looked at while waiting for a kill point.
pub const POLL: Duration = Duration::from_millis(3);

// ---- cloudsim ---------------------------------------------------------------------------

/// cloudsim, in this process, with the appliance's guest view under `sysfs`.
pub struct Sim {
    pub running: cloudsim::Running,
    pub sysfs: tempfile::TempDir,
    pub cloud: cloudstack::Client,
    /// cloudsim's time scale, which the workers' job priors follow.
    pub time_scale: f64,
    http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.running.shutdown_token().cancel();
    }
}

/// Starts cloudsim's built-in world with every job's latency scaled by `time_scale`
/// (at 0.01: attach 30 ms, snapshot 120 ms, deploy 60 ms, start 150 ms).
pub async fn sim(time_scale: f64) -> anyhow::Result<Sim> {
    sim_with(World::default(), time_scale).await
}

/// Starts cloudsim with `world`, as [`sim`] does.
pub async fn sim_with(world: World, time_scale: f64) -> anyhow::Result<Sim> {
    let sysfs = tempfile::tempdir()?;
    let running = cloudsim::start(
        SimConfig {
            world,
            sysfs_root: Some(sysfs.path().to_path_buf()),
            time_scale,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let mut config = cloudstack::Config::new(
        running.endpoint(),
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    );
    config.poll = cloudstack::PollPolicy {
        first: Duration::from_millis(5),
        factor: 1.5,
        max: Duration::from_millis(20),
        deadline: Duration::from_secs(30),
    };
    let cloud = cloudstack::Client::new(config)?;
    Ok(Sim {
        running,
        sysfs,
        cloud,
        time_scale,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
    })
}

impl Sim {
    async fn admin(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}/{path}", self.running.announcement.admin);
        Ok(self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Sets a CloudStack command's job latency (milliseconds before the time scale).
    pub async fn set_latency(&self, command: &str, ms: u64) -> anyhow::Result<()> {
        let url = format!("{}/latency", self.running.announcement.admin);
        self.http
            .post(&url)
            .json(&json!({ command: ms }))
            .send()
            .await
            .with_context(|| format!("POST {url}"))?
            .error_for_status()?;
        Ok(())
    }

    /// `/sim/stats`.
    pub async fn stats(&self) -> anyhow::Result<cloudsim::Stats> {
        Ok(serde_json::from_value(self.admin("stats").await?)?)
    }

    /// `/sim/volumes`: every volume cloudsim holds.
    pub async fn volumes(&self) -> anyhow::Result<Vec<Value>> {
        match self.admin("volumes").await? {
            Value::Array(all) => Ok(all),
            other => bail!("/sim/volumes is not a list: {other}"),
        }
    }

    /// Each replica's simulated content generation.
    pub async fn generations(&self) -> anyhow::Result<Generations> {
        Ok(self
            .volumes()
            .await?
            .iter()
            .filter(|v| REPLICAS.contains(&v["id"].as_str().unwrap_or_default()))
            .map(|v| {
                (
                    v["id"].as_str().unwrap_or_default().to_string(),
                    v["generation"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect())
    }

    /// Whether the appliance's guest sees `volume_id` (its by-id link resolves).
    pub fn guest_sees(&self, volume_id: &str) -> bool {
        self.sysfs
            .path()
            .join("dev/disk/by-id")
            .join(format!(
                "virtio-{}",
                cloudstack::volume_serial(&VolumeId::from(volume_id))
            ))
            .exists()
    }

    /// Every VM CloudStack lists, destroyed and expunging ones left out.
    pub async fn live_vms(&self) -> anyhow::Result<Vec<cloudstack::VirtualMachine>> {
        Ok(self
            .cloud
            .list_virtual_machines(&cloudstack::VmFilter::default())
            .await?
            .into_iter()
            .filter(|v| v.state != "Destroyed" && v.state != "Expunging")
            .collect())
    }

    /// Whether CloudStack is still working on `job_id`.
    pub async fn job_pending(&self, job_id: &str) -> anyhow::Result<bool> {
        let job = self
            .cloud
            .query_async_job_result(&JobId::from(job_id))
            .await?;
        Ok(job.jobstatus == cloudstack::JobStatus::Pending)
    }
}

// ---- ferry serve ------------------------------------------------------------------------

/// Where one test's `ferry serve` processes keep their config, database and logs.
pub struct Site {
    pub dir: tempfile::TempDir,
    /// The database every process of this site opens.
    pub database: String,
    spawned: AtomicUsize,
}

impl Site {
    /// A site on a SQLite file in a temp dir.
    pub fn sqlite() -> anyhow::Result<Site> {
        let dir = tempfile::tempdir()?;
        let database = dir
            .path()
            .join("ferry.db")
            .to_str()
            .ok_or_else(|| anyhow!("temp dir is not UTF-8"))?
            .to_string();
        Ok(Site {
            dir,
            database,
            spawned: AtomicUsize::new(0),
        })
    }

    /// A site on `database` (e.g. a PostgreSQL schema of its own).
    pub fn with_database(database: String) -> anyhow::Result<Site> {
        Ok(Site {
            dir: tempfile::tempdir()?,
            database,
            spawned: AtomicUsize::new(0),
        })
    }

    /// Writes the config of the worker `name` (lease 2 s, claims every 50 ms, polls
    /// CloudStack from 5 ms up to 20 ms) and returns its path.
    fn config(&self, sim: &Sim, name: &str) -> anyhow::Result<PathBuf> {
        let text = Builder::new(
            sim.running.endpoint(),
            ids::API_KEY,
            TargetSection {
                zone_id: ids::ZONE.into(),
                service_offering_id: ids::OFFERING_CUSTOM.into(),
                template_id: ids::TEMPLATE.into(),
            },
        )
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .database(&self.database)
        .poll_ms(5, 20)
        .job_duration_scale(sim.time_scale)
        .job_deadline_secs(60)
        .appliance("oma", ids::APPLIANCE_OMA, sim.sysfs.path())
        .engine(EngineSection {
            claim_interval_ms: 50,
            lease_secs: 2,
            device_timeout_secs: 20,
            worker_name: Some(name.to_string()),
            ..EngineSection::default()
        })
        .toml()?;
        let path = self.dir.path().join(format!("ferry-{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Starts `ferry serve` as the worker `name` and waits for it to announce its URL.
    pub async fn serve(&self, sim: &Sim, name: &str) -> anyhow::Result<Serve> {
        let config = self.config(sim, name)?;
        let n = self.spawned.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.path().join(format!("serve-{n:03}-{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["--log", "info", "serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--database", &self.database])
            .env("FERRY_TOKEN", TOKEN)
            .env("FERRY_CLOUDSTACK_SECRET", ids::SECRET_KEY)
            .env_remove("FERRY_LISTEN")
            .env_remove("FERRY_DATABASE_URL")
            .env_remove("FERRY_CLOUDSTACK_ENDPOINT")
            .env_remove("FERRY_CLOUDSTACK_API_KEY")
            .env_remove("FERRY_CONFIG")
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning ferry serve")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the announcement, then drains stdout until the process is gone.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = String::new();
            while matches!(reader.read_line(&mut rest), Ok(n) if n > 0) {
                rest.clear();
            }
        });
        let mut serve = Serve {
            name: name.to_string(),
            url: String::new(),
            pid: child.id(),
            child,
            log,
            api: Api::new("")?,
        };
        let line = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            Ok(_) => bail!(
                "ferry serve ({name}) exited before announcing its URL:\n{}",
                tail(&serve.log, 40)
            ),
            Err(_) => bail!(
                "ferry serve ({name}) did not announce its URL within 30 s:\n{}",
                tail(&serve.log, 40)
            ),
        };
        let announced: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("ferry serve's announcement is one JSON line: {line:?}"))?;
        serve.url = announced["url"]
            .as_str()
            .ok_or_else(|| anyhow!("no `url` in {announced}"))?
            .to_string();
        serve.api = Api::new(&serve.url)?;
        Ok(serve)
    }

    /// The last lines of every log of this site, for a failure's report.
    pub fn logs(&self, lines: usize) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        logs.iter()
            .map(|p| format!("==> {} <==\n{}", p.display(), tail(p, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid)?;
    let pid = rustix::process::Pid::from_raw(raw).ok_or_else(|| anyhow!("pid {raw}"))?;
    rustix::process::kill_process(pid, signal)
        .with_context(|| format!("sending {signal:?} to {raw}"))?;
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A `ferry serve` process, SIGKILLed on drop.
pub struct Serve {
    pub name: String,
    pub url: String,
    pub pid: u32,
    pub api: Api,
    child: Child,
    pub log: PathBuf,
}

impl Serve {
    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL ferry serve")?;
        self.child.wait()?;
        Ok(())
    }

    /// Freezes the process (SIGSTOP): what it recorded stays as it is while the test
    /// looks, and it acts no further until [`Serve::thaw`] — or a SIGKILL.
    pub fn freeze(&self) -> anyhow::Result<()> {
        signal(self.pid, rustix::process::Signal::STOP)
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        signal(self.pid, rustix::process::Signal::CONT)
    }

    /// Whether the process is still alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the REST API -----------------------------------------------------------------------

/// ferry's REST API at one process.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> anyhow::Result<Api> {
        Ok(Api {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Sends a request and requires the status `want`; the body.
    pub async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.send(method.clone(), path, body).await?;
        ensure!(
            status.as_u16() == want,
            "{method} {path}: {status}, expected {want}: {value}"
        );
        Ok(value)
    }

    /// Registers pgtest1 (docs/examples/pgtest1.toml).
    pub async fn add_pgtest1(&self) -> anyhow::Result<()> {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml");
        let definition = std::fs::read_to_string(path)?;
        self.expect(
            reqwest::Method::POST,
            "/v1/vms",
            Some(json!({ "definition": definition })),
            201,
        )
        .await?;
        Ok(())
    }

    /// Starts a replica-mode test failover of pgtest1.
    pub async fn start_test_failover(&self) -> anyhow::Result<RunSummary> {
        let value = self
            .expect(
                reqwest::Method::POST,
                "/v1/vms/pgtest1/test-failover",
                Some(json!({ "mode": "replica" })),
                202,
            )
            .await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Starts a cleanup of pgtest1.
    pub async fn start_cleanup(&self) -> anyhow::Result<RunSummary> {
        let value = self
            .expect(reqwest::Method::POST, "/v1/vms/pgtest1/cleanup", None, 202)
            .await?;
        Ok(serde_json::from_value(value)?)
    }

    pub async fn run(&self, id: &str) -> anyhow::Result<RunDetail> {
        let value = self
            .expect(reqwest::Method::GET, &format!("/v1/runs/{id}"), None, 200)
            .await?;
        Ok(serde_json::from_value(value)?)
    }

    pub async fn pgtest1(&self) -> anyhow::Result<VmDetail> {
        let value = self
            .expect(reqwest::Method::GET, "/v1/vms/pgtest1", None, 200)
            .await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Waits until run `id` has ended (`done`, `unwound`, `stuck`, `abandoned`).
    pub async fn wait_end(&self, id: &str, within: Duration) -> anyhow::Result<RunDetail> {
        let deadline = Instant::now() + within;
        loop {
            let run = self.run(id).await?;
            if !matches!(run.run.state.as_str(), "pending" | "running" | "unwinding") {
                return Ok(run);
            }
            ensure!(
                Instant::now() < deadline,
                "run {id} did not end within {within:?}: {}",
                describe(&run)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A run in one line: its state and each step's.
pub fn describe(run: &RunDetail) -> String {
    format!(
        "{} {} (gen {}, lease {:?}, error {:?}): {}",
        run.run.workflow,
        run.run.state,
        run.generation,
        run.lease_owner,
        run.run.error,
        run.steps
            .iter()
            .map(|s| format!("{}={}", s.name, s.state))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

// ---- kill points ------------------------------------------------------------------------

/// Where in a run a process is killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// Right after the API accepted the run, before (or as) a worker claims it.
    Created,
    /// While the step is `running`.
    Step(String),
    /// While a CloudStack job of `kind` (a volume operation of the journal, or a VM
    /// command) submitted by `step` is in flight.
    Job { step: String, kind: String },
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Created => write!(f, "run created"),
            Point::Step(s) => write!(f, "step {s} running"),
            Point::Job { step, kind } => write!(f, "{kind} job of {step} in flight"),
        }
    }
}

impl Point {
    fn step(&self) -> Option<&str> {
        match self {
            Point::Created => None,
            Point::Step(s) | Point::Job { step: s, .. } => Some(s),
        }
    }
}

/// The kill points of a workflow: every step of `run` in order, each followed by the
/// in-flight job points `jobs` lists for it.
pub fn points(run: &RunDetail, jobs: &[(&str, &str)]) -> Vec<Point> {
    let mut out = vec![Point::Created];
    for s in &run.steps {
        out.push(Point::Step(s.name.clone()));
        for (step, kind) in jobs {
            if *step == s.name {
                out.push(Point::Job {
                    step: step.to_string(),
                    kind: kind.to_string(),
                });
            }
        }
    }
    out
}

/// What one look at a run says about a kill point.
pub enum Seen {
    /// The run is at the point now; the job id when it is a job point.
    Hit(Option<String>),
    /// The run went past it.
    Passed,
    /// Not yet.
    Before,
}

pub fn assess(point: &Point, run: &RunDetail) -> Seen {
    let Some(name) = point.step() else {
        return Seen::Hit(None);
    };
    let Some(position) = run.steps.iter().position(|s| s.name == name) else {
        return Seen::Passed;
    };
    let step = &run.steps[position];
    let later_started = run.steps[position + 1..]
        .iter()
        .any(|s| s.state != "waiting");
    let active = matches!(run.run.state.as_str(), "pending" | "running");
    if !active || later_started || !matches!(step.state.as_str(), "waiting" | "running") {
        return Seen::Passed;
    }
    if step.state != "running" {
        return Seen::Before;
    }
    match point {
        Point::Job { kind, .. } => run
            .jobs
            .iter()
            .rev()
            .find(|j| j.kind == *kind && j.step.as_deref() == Some(name) && j.state == "submitted")
            .map(|j| Seen::Hit(j.job_id.clone()))
            .unwrap_or(Seen::Before),
        _ => Seen::Hit(None),
    }
}

/// What a kill at a point hit, as the database and CloudStack had it when the process
/// was dead.
#[derive(Debug, Clone)]
pub struct Kill {
    pub point: Point,
    /// The step the dead process had recorded as running (none: between steps).
    pub step_running: Option<String>,
    /// For a job point: whether CloudStack was still working on the job.
    pub job_in_flight: Option<bool>,
}

impl Kill {
    /// Whether the kill landed where the point says.
    pub fn landed(&self) -> bool {
        match &self.point {
            Point::Created => true,
            Point::Step(s) => self.step_running.as_deref() == Some(s),
            Point::Job { step, .. } => {
                self.step_running.as_deref() == Some(step) && self.job_in_flight == Some(true)
            }
        }
    }
}

/// Waits for `point` in run `id` at `serve` and SIGKILLs the process there — unless,
/// frozen, it shows a step `avoid` names running. `None` when the run went past the
/// point first, or the kill was avoided.
///
/// The API is polled every [`POLL`] until the run is close: the step before the
/// point's, or the point's own, running. Many steps take a millisecond (one listing,
/// or only the database) and some jobs a few, over before the API shows them; so from
/// there the process is frozen (SIGSTOP) again and again, each time the database it
/// wrote is read (and CloudStack asked about a job it recorded), and it is killed
/// while frozen as soon as it is at the point.
pub async fn kill_at(
    sim: &Sim,
    db: &store::Store,
    serve: &mut Serve,
    id: &str,
    point: &Point,
    avoid: &dyn Fn(&str) -> bool,
    within: Duration,
) -> anyhow::Result<Option<Kill>> {
    if *point == Point::Created {
        return freeze_and_kill(sim, db, serve, id, point, None, avoid).await;
    }
    let deadline = Instant::now() + within;
    loop {
        let run = serve.api.run(id).await?;
        if let Seen::Passed = assess(point, &run) {
            return Ok(None);
        }
        if let Some(name) = point.step()
            && let Some(k) = run.steps.iter().position(|s| s.name == name)
            && (k == 0 || run.steps[k].state == "running" || run.steps[k - 1].state == "running")
        {
            return step_by_freezing(sim, db, serve, id, point, k, deadline).await;
        }
        ensure!(
            Instant::now() < deadline,
            "run {id} did not reach the kill point `{point}` within {within:?}: {}",
            describe(&run)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Freezes the process and, unless the step it recorded running is one `avoid`
/// names (then it lets it go on and returns `None`), kills it.
pub async fn freeze_and_kill(
    sim: &Sim,
    db: &store::Store,
    serve: &mut Serve,
    id: &str,
    point: &Point,
    job: Option<String>,
    avoid: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Option<Kill>> {
    serve.freeze()?;
    let running = match running_step(db, id).await {
        Ok(running) => running,
        Err(e) => {
            serve.thaw()?;
            return Err(e);
        }
    };
    if running.as_deref().is_some_and(avoid) {
        serve.thaw()?;
        return Ok(None);
    }
    serve.kill()?;
    Ok(Some(inspect_kill(sim, db, id, point, job).await?))
}

/// The step of run `id` recorded as running.
async fn running_step(db: &store::Store, id: &str) -> anyhow::Result<Option<String>> {
    Ok(db
        .steps(&RunId::from(id))
        .await?
        .into_iter()
        .find(|s| s.state == store::StepState::Running)
        .map(|s| s.name))
}

/// What a frozen process recorded about a point.
enum Recorded {
    /// At the point; the job in flight for a job point.
    At(Option<String>),
    Passed,
    Before,
}

/// Freezes the process, reads what it recorded of run `id` (step `k` is the point's),
/// and kills it if it is at `point`, else lets it go on for a moment and looks again.
async fn step_by_freezing(
    sim: &Sim,
    db: &store::Store,
    serve: &mut Serve,
    id: &str,
    point: &Point,
    k: usize,
    deadline: Instant,
) -> anyhow::Result<Option<Kill>> {
    loop {
        serve.freeze()?;
        let recorded = match recorded(sim, db, id, point, k).await {
            Ok(recorded) => recorded,
            // Frozen in the middle of a SQLite write, the process holds the database's
            // lock: let it finish, and freeze it again at another moment.
            Err(e) if holds_the_lock(&e) && Instant::now() < deadline => {
                serve.thaw()?;
                tokio::task::yield_now().await;
                continue;
            }
            Err(e) => {
                serve.thaw()?;
                return Err(e.context(format!("reading run {id} while its process was frozen")));
            }
        };
        match recorded {
            Recorded::At(job) => {
                serve.kill()?;
                return Ok(Some(inspect_kill(sim, db, id, point, job).await?));
            }
            Recorded::Passed => {
                serve.thaw()?;
                return Ok(None);
            }
            Recorded::Before => serve.thaw()?,
        }
        ensure!(
            Instant::now() < deadline,
            "run {id} did not reach the kill point `{point}`: {:?}",
            db.steps(&RunId::from(id)).await?
        );
        tokio::task::yield_now().await;
    }
}

/// Whether reading failed because the frozen process holds SQLite's lock (SQLITE_BUSY,
/// SQLITE_LOCKED, or SQLITE_PROTOCOL when it holds the WAL's), which says nothing of
/// where it is.
fn holds_the_lock(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let text = cause.to_string();
        text.contains("locking protocol") || text.contains("database is locked")
    })
}

/// Where the (frozen) process is with respect to `point`, by what it recorded: the
/// steps, the volume operations of the journal and the VM commands' job events, and
/// for a job, whether CloudStack still works on it.
async fn recorded(
    sim: &Sim,
    db: &store::Store,
    id: &str,
    point: &Point,
    k: usize,
) -> anyhow::Result<Recorded> {
    let steps = db.steps(&RunId::from(id)).await?;
    let run = db
        .run(&RunId::from(id))
        .await?
        .ok_or_else(|| anyhow!("no run {id}"))?;
    let at = steps.iter().find(|s| s.position == k as i64);
    let running = at.is_some_and(|s| s.state == store::StepState::Running);
    let passed = (at.is_some() && !running)
        || steps.iter().any(|s| s.position > k as i64)
        || !matches!(
            run.state,
            store::RunState::Pending | store::RunState::Running
        );
    if passed {
        return Ok(Recorded::Passed);
    }
    if !running {
        return Ok(Recorded::Before);
    }
    let Point::Job { step, kind } = point else {
        return Ok(Recorded::At(None));
    };
    // Volume operations: the key is `<run>/<step>/<what>`.
    let mut jobs: Vec<String> = db
        .ops_for_run(&RunId::from(id))
        .await?
        .into_iter()
        .filter(|op| {
            op.kind == *kind
                && op.idempotency_key.split('/').nth(1) == Some(step.as_str())
                && op.state == store::OpState::Submitted
        })
        .filter_map(|op| op.job_id.map(String::from))
        .collect();
    // VM commands: an event of the step with the job's id and command.
    for e in db.events(&RunId::from(id)).await? {
        let Some(fields) = e
            .fields
            .as_deref()
            .and_then(|f| serde_json::from_str::<Value>(f).ok())
        else {
            continue;
        };
        if e.step.as_deref() == Some(step.as_str())
            && fields["command"].as_str() == Some(kind.as_str())
            && let Some(job) = fields["job_id"].as_str()
        {
            jobs.push(job.to_string());
        }
    }
    for job in jobs {
        if sim.job_pending(&job).await? {
            return Ok(Recorded::At(Some(job)));
        }
    }
    Ok(Recorded::Before)
}

/// Looks at what a process killed at `point` left: the step it recorded as running,
/// and whether CloudStack still works on `job`.
pub async fn inspect_kill(
    sim: &Sim,
    db: &store::Store,
    id: &str,
    point: &Point,
    job: Option<String>,
) -> anyhow::Result<Kill> {
    let step_running = running_step(db, id).await?;
    let job_in_flight = match job {
        Some(job) => Some(sim.job_pending(&job).await?),
        None => None,
    };
    Ok(Kill {
        point: point.clone(),
        step_running,
        job_in_flight,
    })
}

// ---- invariants -------------------------------------------------------------------------

/// The CloudStack commands that change something.
pub const MUTATIONS: [&str; 11] = [
    "deployVirtualMachine",
    "startVirtualMachine",
    "stopVirtualMachine",
    "destroyVirtualMachine",
    "attachVolume",
    "detachVolume",
    "createSnapshot",
    "revertSnapshot",
    "deleteSnapshot",
    "createVolume",
    "deleteVolume",
];

/// A replica-mode test failover of pgtest1, each operation once: two snapshots, the
/// VM deployed, its placeholder ROOT detached and deleted, the two replicas detached
/// from the appliance and attached to the VM, the VM started.
pub const TEST_FAILOVER_CALLS: [(&str, u64); 6] = [
    ("createSnapshot", 2),
    ("deployVirtualMachine", 1),
    ("detachVolume", 3),
    ("deleteVolume", 1),
    ("attachVolume", 2),
    ("startVirtualMachine", 1),
];

/// Its cleanup, each operation once: the VM stopped, the replicas detached from it,
/// reverted, attached to the appliance, the snapshots deleted, the VM destroyed.
pub const CLEANUP_CALLS: [(&str, u64); 6] = [
    ("stopVirtualMachine", 1),
    ("detachVolume", 2),
    ("revertSnapshot", 2),
    ("attachVolume", 2),
    ("deleteSnapshot", 2),
    ("destroyVirtualMachine", 1),
];

/// Checks that between `before` and `after` every mutating command was called exactly
/// as often as `expected` says (0 when it does not name it), and none failed.
pub fn check_calls(
    what: &str,
    before: &cloudsim::Stats,
    after: &cloudsim::Stats,
    expected: &[(&str, u64)],
) -> anyhow::Result<()> {
    let delta = |map: fn(&cloudsim::Stats) -> &BTreeMap<String, u64>, c: &str| {
        map(after).get(c).copied().unwrap_or(0) - map(before).get(c).copied().unwrap_or(0)
    };
    let mut problems = Vec::new();
    for command in MUTATIONS {
        let want = expected
            .iter()
            .find(|(c, _)| *c == command)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let calls = delta(|s| &s.calls, command);
        let errors = delta(|s| &s.errors, command);
        if calls != want {
            problems.push(format!("{command}: {calls} calls, expected {want}"));
        }
        if errors != 0 {
            problems.push(format!("{command}: {errors} failed"));
        }
    }
    ensure!(
        problems.is_empty(),
        "{what}: CloudStack operations not done exactly once: {}",
        problems.join("; ")
    );
    Ok(())
}

/// DESIGN §5's invariants for pgtest1 at rest, against cloudsim and the API: each
/// replica attached to the appliance only (seen by its guest, at the device id and
/// device path ferry recorded), no VM but the appliance, no snapshot, no volume but the
/// appliance's ROOT and the replicas, the replicas' content what it was in `before`.
/// With `paths_recorded` false, a replica's device path may be missing in ferry's
/// record (registration does not look for device paths; only a workflow that moved a
/// replica back finds it).
pub async fn check_at_rest(
    sim: &Sim,
    api: &Api,
    before: &Generations,
    paths_recorded: bool,
) -> anyhow::Result<()> {
    let vm = api.pgtest1().await?;
    ensure!(
        vm.state == "ready_for_failover",
        "pgtest1 is {}, not ready_for_failover",
        vm.state
    );
    ensure!(
        vm.target.is_none(),
        "pgtest1 still has a target VM: {:?}",
        vm.target
    );
    ensure!(vm.disks.len() == 2, "pgtest1 has {} disks", vm.disks.len());
    for d in &vm.disks {
        let id = d.replica_volume_id.as_str();
        let v = sim
            .cloud
            .get_volume(&VolumeId::from(id))
            .await?
            .ok_or_else(|| anyhow!("replica {id} was deleted"))?;
        ensure!(
            v.virtualmachineid.as_ref().map(|id| id.as_str()) == Some(ids::APPLIANCE_OMA),
            "replica {id} is on {:?}, not the appliance",
            v.virtualmachineid
        );
        ensure!(
            v.volume_type == "DATADISK",
            "replica {id} is {}",
            v.volume_type
        );
        ensure!(
            d.attached_vm_id.as_deref() == Some(ids::APPLIANCE_OMA),
            "ferry records replica {id} on {:?}",
            d.attached_vm_id
        );
        ensure!(
            d.device_id == v.deviceid,
            "ferry records replica {id} at device {:?}, CloudStack has {:?}",
            d.device_id,
            v.deviceid
        );
        let path = format!(
            "/dev/disk/by-id/virtio-{}",
            cloudstack::volume_serial(&VolumeId::from(id))
        );
        ensure!(
            d.device_path.as_deref() == Some(path.as_str())
                || (!paths_recorded && d.device_path.is_none()),
            "ferry records replica {id} at device path {:?}, expected {path}",
            d.device_path
        );
        ensure!(
            sim.guest_sees(id),
            "the appliance does not see replica {id}"
        );
        let snapshots = sim
            .cloud
            .list_snapshots(Some(&VolumeId::from(id)), None)
            .await?;
        ensure!(
            snapshots.is_empty(),
            "snapshots of replica {id} left: {:?}",
            snapshots.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    }
    let vms = sim.live_vms().await?;
    ensure!(
        vms.iter().all(|v| v.id == ids::APPLIANCE_OMA),
        "VMs left besides the appliance: {:?}",
        vms.iter()
            .map(|v| format!("{} ({}, {})", v.name, v.id, v.state))
            .collect::<Vec<_>>()
    );
    let volumes = sim.volumes().await?;
    let stray: Vec<&Value> = volumes
        .iter()
        .filter(|v| {
            let id = v["id"].as_str().unwrap_or_default();
            id != ids::OMA_ROOT && !REPLICAS.contains(&id)
        })
        .collect();
    ensure!(stray.is_empty(), "volumes left: {stray:?}");
    let now = sim.generations().await?;
    ensure!(
        &now == before,
        "the replicas' content is not what it was before the drill: generations {now:?}, before {before:?}"
    );
    Ok(())
}

/// A finished test failover of pgtest1: one test VM, Running, with the boot replica
/// at device 0 (its ROOT) and the data replica at 1 and nothing else, neither seen by
/// the appliance; one snapshot of each replica; ferry says `test_failed_over` with
/// that VM, verified, and records each replica on it. Returns the test VM's id.
pub async fn check_failed_over(sim: &Sim, api: &Api) -> anyhow::Result<String> {
    let vms: Vec<_> = sim
        .live_vms()
        .await?
        .into_iter()
        .filter(|v| v.id != ids::APPLIANCE_OMA)
        .collect();
    ensure!(
        vms.len() == 1,
        "expected exactly one test VM, CloudStack has {:?}",
        vms.iter()
            .map(|v| format!("{} ({}, {})", v.name, v.id, v.state))
            .collect::<Vec<_>>()
    );
    let target = &vms[0];
    ensure!(
        target.name.starts_with("pgtest1-test-"),
        "the test VM is named {}",
        target.name
    );
    ensure!(target.state == "Running", "the test VM is {}", target.state);
    let mut on_target: Vec<(i64, String, String)> = sim
        .cloud
        .list_volumes(&cloudstack::VolumeFilter {
            virtual_machine_id: Some(target.id.clone()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|v| (v.deviceid.unwrap_or(-1), v.id.into_string(), v.volume_type))
        .collect();
    on_target.sort();
    let expected = vec![
        (0, ids::PGTEST1_DISK_2000.to_string(), "ROOT".to_string()),
        (
            1,
            ids::PGTEST1_DISK_2001.to_string(),
            "DATADISK".to_string(),
        ),
    ];
    ensure!(
        on_target == expected,
        "the test VM's disks are {on_target:?}, expected boot at 0 and data at 1 only"
    );
    for id in REPLICAS {
        ensure!(!sim.guest_sees(id), "the appliance still sees replica {id}");
        let snapshots = sim
            .cloud
            .list_snapshots(Some(&VolumeId::from(id)), None)
            .await?;
        ensure!(
            snapshots.len() == 1,
            "replica {id} has {} snapshots, expected the drill's one",
            snapshots.len()
        );
    }
    let stray: Vec<Value> = sim
        .volumes()
        .await?
        .into_iter()
        .filter(|v| {
            let id = v["id"].as_str().unwrap_or_default();
            id != ids::OMA_ROOT && !REPLICAS.contains(&id)
        })
        .collect();
    ensure!(
        stray.is_empty(),
        "volumes besides the replicas (the placeholder ROOT?): {stray:?}"
    );
    let vm = api.pgtest1().await?;
    ensure!(
        vm.state == "test_failed_over",
        "pgtest1 is {}, not test_failed_over",
        vm.state
    );
    let recorded = vm
        .target
        .as_ref()
        .ok_or_else(|| anyhow!("ferry shows no target VM"))?;
    ensure!(
        recorded.id == target.id,
        "ferry's target VM {} is not CloudStack's {}",
        recorded.id,
        target.id
    );
    ensure!(
        recorded.verified,
        "ferry does not verify the target: {}",
        recorded.verification
    );
    for d in &vm.disks {
        ensure!(
            d.attached_vm_id.as_deref() == Some(target.id.as_str()),
            "ferry records replica {} on {:?}",
            d.replica_volume_id,
            d.attached_vm_id
        );
    }
    Ok(target.id.to_string())
}

/// Polls `probe` every 10 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A small deterministic generator (xorshift64*), for seeded kill schedules.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
