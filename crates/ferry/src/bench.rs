//! `ferry bench`: how close ferry comes to what CloudStack allows (DESIGN §7).
//!
//! K protected VMs of N disks each, their replicas spread over A appliances (VM i's on
//! appliance i mod A), go through a test failover — all K at once — and then, once
//! every one has ended, through their cleanups, all K at once. CloudStack is cloudsim,
//! run as a child process (`ferry cloudsim`) so that this process's peak memory is the
//! engine's: the REST API, the engine worker with its in-process volume daemon, the
//! SQLite store, and this driver, which uses the API as an operator would.
//!
//! What it reports, per phase and in total:
//!
//! - the **makespan**: from just before the first run was requested to the end of the
//!   last run (the runs' own `finished_at`, so how often this driver looks is not
//!   counted);
//! - the **lower bound** no client could beat, from what cloudsim measured:
//!   - every CloudStack queue's busy time in the phase; for an appliance's queue plus
//!     the least time any VM needs before its first job there (a cleanup reaches the
//!     appliance only after stop, detach and revert) and after its last (a test
//!     failover's attaches and start follow its last detach). A queue runs one job at
//!     a time, so nothing finishes before head + busy + tail;
//!   - the chain of one VM's workflow: its steps in order, each step's jobs taking
//!     the shortest duration cloudsim measured for their command, jobs of one step on
//!     one queue one after another (a VM's snapshots and detaches on its appliance, its
//!     attaches on the target VM) and jobs on different queues (reverts, snapshot
//!     deletions) at once;
//!   - the larger of the two;
//! - their **ratio**; per VM the **time to running** (from the run's creation to the
//!   end of its `start-vm` step); CloudStack **calls per command**; `queryAsyncJobResult`
//!   **polls per async job**; the process's **peak resident memory** (`VmHWM`).
//!
//! CloudStack attaches at most 32 data volumes to a KVM VM, the appliance included: a
//! bench that would put more replicas on one appliance is refused, with the most that
//! fits.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::SecretString;
use serde::Serialize;
use server::model::{AddVm, DefinitionFormat, RunDetail, RunSummary, TestMode};
use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;

use crate::client::api::Api;
use crate::client::{ConnectionArgs, Output};

/// The default time scale, 25× real pace: 100 VMs of 4 disks on the 13 appliances they
/// need take about half a minute, one VM of 2 disks about 4 s. Faster scales shrink
/// every job while ferry's own costs (HTTP, SQLite, scheduling) stay what they are, so
/// the ratio to the bound grows (docs/benchmarks.md).
pub const DEFAULT_TIME_SCALE: f64 = 0.04;

/// KVM's data-volume limit per VM (`hypervisor_capabilities.max_data_volumes_limit`):
/// the appliance's too.
const MAX_DATA_VOLUMES: u32 = 32;

/// Latencies in milliseconds at real pace: cloudsim's default profile (a KVM cloud on
/// shared storage), written into the world so the bench states what it ran.
const LATENCY_COMMANDS: [&str; 10] = [
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
];
/// After an attach to a running appliance, the guest sees the disk this much later.
const HOTPLUG_DELAY_MS: u64 = 200;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Protected VMs (K), test-failed-over all at once, then cleaned up all at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    vms: u32,
    /// Disks per VM (N): one boot disk and N−1 data disks.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    disks: u32,
    /// Appliances (A) holding the replicas: VM i's on appliance i mod A.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    appliances: u32,
    /// Multiplies cloudsim's latencies (1: a KVM cloud's real pace).
    #[arg(long, default_value_t = DEFAULT_TIME_SCALE)]
    time_scale: f64,
    /// Runs the engine executes at once; all K by default, so every run is truly
    /// concurrent (ferry serve's default is 64).
    #[arg(long)]
    engine_concurrency: Option<usize>,
    /// First take one more VM of N disks, on an appliance of its own, through a test
    /// failover and cleanup, unmeasured: the CloudStack client then knows how long
    /// each command's jobs take, as a `ferry serve` that has run a drill before does.
    #[arg(long)]
    warmup: bool,
}

/// The whole report; `--output json` prints it as one line, last.
#[derive(Debug, Serialize)]
struct Report {
    vms: u32,
    disks: u32,
    appliances: u32,
    time_scale: f64,
    engine_concurrency: usize,
    /// Whether a drill ran first, unmeasured (`--warmup`).
    warmup: bool,
    makespan_s: f64,
    lower_bound_s: f64,
    ratio: f64,
    test_failover_makespan_s: f64,
    test_failover_lower_bound_s: f64,
    test_failover_ratio: f64,
    cleanup_makespan_s: f64,
    cleanup_lower_bound_s: f64,
    cleanup_ratio: f64,
    test_failover: Phase,
    cleanup: Phase,
    time_to_running_s: Percentiles,
    async_jobs: u64,
    polls_per_job: Polls,
    calls_total: u64,
    calls_per_vm: f64,
    calls_per_command: BTreeMap<String, u64>,
    peak_rss_mib: f64,
    runs_done: usize,
    runs_not_done: Vec<NotDone>,
    machine: Machine,
}

/// One phase (all test failovers, or all cleanups).
#[derive(Debug, Serialize)]
struct Phase {
    makespan_s: f64,
    lower_bound_s: f64,
    ratio: f64,
    /// Which side of the bound binds: `queue` or `chain`.
    bound_by: &'static str,
    /// One VM's chain of jobs.
    chain_s: f64,
    busiest_queue: BusiestQueue,
    /// Jobs the phase ran, per command.
    jobs_per_command: BTreeMap<String, u64>,
    /// The most runs that were executing at one time (from a run's first step to its
    /// end).
    max_concurrent_runs: usize,
    /// How long each step of the workflow took across the phase's runs, in order.
    steps: Vec<StepTimes>,
}

#[derive(Debug, Serialize)]
struct StepTimes {
    step: String,
    p50_s: f64,
    max_s: f64,
}

#[derive(Debug, Serialize)]
struct BusiestQueue {
    /// `vm:<id>` (with the VM's name), `volume:<id>` or `snapshot:<id>`.
    queue: String,
    name: Option<String>,
    busy_s: f64,
    /// The least time before its first job and after its last (an appliance's).
    head_s: f64,
    tail_s: f64,
    bound_s: f64,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p95: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Polls {
    median: f64,
    max: u64,
    total: u64,
    /// Per command (lower case): its jobs' median and most polls.
    per_command: BTreeMap<String, CommandPolls>,
}

#[derive(Debug, Serialize)]
struct CommandPolls {
    jobs: u64,
    median: f64,
    max: u64,
}

#[derive(Debug, Serialize)]
struct NotDone {
    run: String,
    vm: String,
    workflow: String,
    state: String,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: Option<String>,
    memory_mib: Option<u64>,
}

/// The bench's shape: which VM's disks go to which appliance, and whether it fits.
#[derive(Debug, Clone)]
struct Shape {
    vms: u32,
    disks: u32,
    appliances: u32,
}

impl Shape {
    fn appliance_of(&self, vm: u32) -> u32 {
        vm % self.appliances
    }

    /// Replicas on the fullest appliance.
    fn most_on_one_appliance(&self) -> u32 {
        self.vms.div_ceil(self.appliances) * self.disks
    }

    /// Refuses a shape CloudStack could not hold, saying what would fit.
    fn check(&self) -> anyhow::Result<()> {
        let most = self.most_on_one_appliance();
        if most <= MAX_DATA_VOLUMES {
            return Ok(());
        }
        let per_appliance = MAX_DATA_VOLUMES / self.disks;
        let needed = self.vms.div_ceil(per_appliance);
        anyhow::bail!(
            "{} VMs of {} disks on {} appliance(s) puts {most} replica volumes on one appliance, \
             but CloudStack on KVM attaches at most {MAX_DATA_VOLUMES} data volumes to a VM: \
             an appliance holds {per_appliance} VMs of {} disks, so {} appliance(s) hold at most \
             {} such VMs; use --appliances {needed} or more for {} VMs, or --vms {} or fewer",
            self.vms,
            self.disks,
            self.appliances,
            self.disks,
            self.appliances,
            per_appliance * self.appliances,
            self.vms,
            per_appliance * self.appliances,
        )
    }
}

pub async fn run(args: BenchArgs, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale > 0.0 && args.time_scale <= 10.0,
        "--time-scale must be a number > 0 and ≤ 10 (got {}); 1 is real time",
        args.time_scale
    );
    let shape = Shape {
        vms: args.vms,
        disks: args.disks,
        appliances: args.appliances,
    };
    shape.check()?;
    let json = connection.output == Output::Json;
    let say = |text: String| {
        if json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    };
    let concurrency = args.engine_concurrency.unwrap_or(args.vms as usize).max(1);
    let scale = args.time_scale;

    let dir = tempfile::Builder::new().prefix("ferry-bench-").tempdir()?;
    let world = World::new(&shape, args.warmup);
    let world_path = dir.path().join("world.toml");
    std::fs::write(&world_path, world.toml())?;
    let sysfs = dir.path().join("appliances");
    std::fs::create_dir_all(&sysfs)?;
    let sim = Cloudsim::spawn(&world_path, &sysfs, scale).await?;
    let announcement = &sim.announcement;

    // Polling paced to the simulated cloud: the first poll of a command not seen yet
    // comes after 100 ms of CloudStack time, and polls are never more than 250 ms
    // apart until the client has learned how long the command's jobs take.
    let poll_first_ms = ((100.0 * scale).round() as u64).max(1);
    let poll_max_ms = ((250.0 * scale).round() as u64).max(poll_first_ms);
    let mut config = format!(
        r#"
        [database]
        url = "{database}"
        [cloudstack]
        endpoint = "{endpoint}"
        api_key = "{api_key}"
        poll_first_ms = {poll_first_ms}
        poll_max_ms = {poll_max_ms}
        [target]
        zone_id = "{zone}"
        service_offering_id = "{offering}"
        template_id = "{template}"
        [engine]
        worker_name = "bench"
        concurrency = {concurrency}
        "#,
        database = dir.path().join("ferry.db").display(),
        endpoint = announcement.endpoint,
        api_key = announcement.api_key,
        zone = world.zone,
        offering = world.offering,
        template = world.template,
    );
    for a in &world.appliances {
        let vm_id = announcement
            .appliances
            .get(&a.name)
            .with_context(|| format!("cloudsim did not announce appliance {}", a.name))?;
        let root = announcement
            .sysfs_roots
            .get(&a.name)
            .with_context(|| format!("cloudsim has no guest view of appliance {}", a.name))?;
        config.push_str(&format!(
            "[[appliances]]\nname = \"{}\"\nvm_id = \"{vm_id}\"\nsysfs_root = \"{}\"\n",
            a.name,
            root.display()
        ));
    }
    let config = server::Config::parse(&config)
        .map_err(anyhow::Error::msg)
        .context("the bench's config")?;
    config.check()?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let settings = server::Settings {
        config,
        cloudstack_secret: SecretString::from(announcement.secret_key.clone()),
        api_token: SecretString::from(token.clone()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let running = server::start(settings, listener, shutdown.clone()).await?;
    let api = Api::new(
        &format!("http://{}", running.addr),
        SecretString::from(token),
    );
    say(format!(
        "ferry bench: {} VM(s) × {} disk(s) on {} appliance(s), cloudsim at {}× real time, engine concurrency {concurrency}",
        shape.vms,
        shape.disks,
        shape.appliances,
        format_speed(scale),
    ));

    let registered = Instant::now();
    register(&api, &world).await?;
    say(format!(
        "registered {} VMs in {:.1} s",
        world.vms.len(),
        registered.elapsed().as_secs_f64()
    ));
    if let Some(warmup) = &world.warmup {
        let name = [warmup.name.clone()];
        for workflow in [Workflow::TestFailover, Workflow::Cleanup] {
            let (_, runs) = phase(&api, &name, workflow).await?;
            if let Some(r) = runs.iter().find(|r| r.state != "done") {
                eprintln!(
                    "error: the warm-up's {workflow:?} {} ended {}: {}",
                    r.id,
                    r.state,
                    r.error.as_deref().unwrap_or("no reason recorded")
                );
                shutdown.cancel();
                let _ = running.task.await;
                sim.stop().await;
                return Ok(ExitCode::from(1));
            }
        }
        say(format!(
            "warmed up: {} through a test failover and cleanup, unmeasured",
            warmup.name
        ));
    }

    let stats_before = sim.stats().await?;
    let names: Vec<String> = world.vms.iter().map(|v| v.name.clone()).collect();
    let (tf_start, tf_runs) = phase(&api, &names, Workflow::TestFailover).await?;
    let stats_between = sim.stats().await?;
    let tf_details = details(&api, &tf_runs).await?;
    let failed_over: Vec<String> = tf_runs
        .iter()
        .filter(|r| r.state == "done")
        .map(|r| r.vm.clone())
        .collect();
    say(format!(
        "test failover: {} of {} done in {:.2} s",
        failed_over.len(),
        names.len(),
        seconds_between(tf_start, last_finish(&tf_runs)?)
    ));
    let (cu_start, cu_runs) = phase(&api, &failed_over, Workflow::Cleanup).await?;
    let stats_after = sim.stats().await?;
    let cu_details = details(&api, &cu_runs).await?;
    say(format!(
        "cleanup: {} of {} done in {:.2} s",
        cu_runs.iter().filter(|r| r.state == "done").count(),
        failed_over.len(),
        seconds_between(cu_start, last_finish(&cu_runs)?)
    ));
    let peak_rss_mib = peak_rss_mib()?;

    shutdown.cancel();
    let _ = running.task.await;
    sim.stop().await;

    let durations = Durations::new(&stats_after, scale);
    let test_failover = Phase::of(
        &tf_runs,
        &tf_details,
        tf_start,
        &stats_before,
        &stats_between,
        durations.test_failover(shape.disks),
        &world,
    )?;
    let cleanup = Phase::of(
        &cu_runs,
        &cu_details,
        cu_start,
        &stats_between,
        &stats_after,
        durations.cleanup(shape.disks),
        &world,
    )?;
    let running_after: Vec<f64> = tf_details
        .iter()
        .filter_map(time_to_running)
        .collect::<Vec<_>>();
    let calls_per_command = diff(&stats_before.calls, &stats_after.calls);
    let polls = polls_between(&stats_before, &stats_after);
    let calls_total: u64 = calls_per_command.values().sum();
    let mut runs_not_done = Vec::new();
    for r in tf_runs.iter().chain(&cu_runs) {
        if r.state != "done" {
            runs_not_done.push(NotDone {
                run: r.id.clone(),
                vm: r.vm.clone(),
                workflow: r.workflow.clone(),
                state: r.state.clone(),
                error: r.error.clone(),
            });
        }
    }
    // A VM whose test failover did not end done was not cleaned up: that is a run
    // missing, not only a run failed.
    let makespan_s = test_failover.makespan_s + cleanup.makespan_s;
    let lower_bound_s = test_failover.lower_bound_s + cleanup.lower_bound_s;
    let report = Report {
        vms: shape.vms,
        disks: shape.disks,
        appliances: shape.appliances,
        time_scale: scale,
        engine_concurrency: concurrency,
        warmup: args.warmup,
        makespan_s,
        lower_bound_s,
        ratio: makespan_s / lower_bound_s,
        test_failover_makespan_s: test_failover.makespan_s,
        test_failover_lower_bound_s: test_failover.lower_bound_s,
        test_failover_ratio: test_failover.ratio,
        cleanup_makespan_s: cleanup.makespan_s,
        cleanup_lower_bound_s: cleanup.lower_bound_s,
        cleanup_ratio: cleanup.ratio,
        test_failover,
        cleanup,
        time_to_running_s: percentiles(running_after),
        async_jobs: polls.jobs,
        polls_per_job: polls.polls,
        calls_total,
        calls_per_vm: calls_total as f64 / f64::from(shape.vms),
        calls_per_command,
        peak_rss_mib,
        runs_done: tf_runs
            .iter()
            .chain(&cu_runs)
            .filter(|r| r.state == "done")
            .count(),
        runs_not_done,
        machine: Machine::this(),
    };
    let ok = report.runs_not_done.is_empty() && report.runs_done == 2 * names.len();
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    if !ok {
        eprintln!(
            "error: {} of {} runs did not end done:",
            2 * names.len() - report.runs_done,
            2 * names.len()
        );
        for r in &report.runs_not_done {
            eprintln!(
                "  - {} {} of {}: {} — {}",
                r.workflow,
                r.run,
                r.vm,
                r.state,
                r.error.as_deref().unwrap_or("no reason recorded")
            );
        }
        let cleaned: std::collections::BTreeSet<&str> =
            cu_runs.iter().map(|r| r.vm.as_str()).collect();
        for vm in names.iter().filter(|n| !cleaned.contains(n.as_str())) {
            eprintln!("  - {vm} was not cleaned up: its test failover did not end done");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

// ---- the simulated cloud -------------------------------------------------------------

/// The generated world: A appliances with K×N replica volumes, and K VM definitions.
struct World {
    api_key: String,
    secret_key: String,
    zone: String,
    offering: String,
    template: String,
    appliances: Vec<ApplianceDef>,
    vms: Vec<VmDef>,
    /// The unmeasured VM of `--warmup`, on an appliance of its own.
    warmup: Option<VmDef>,
}

struct ApplianceDef {
    name: String,
    id: String,
}

struct VmDef {
    name: String,
    appliance: String,
    /// (key, size in GiB, replica volume id)
    disks: Vec<(u32, u32, String)>,
    mac: String,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl World {
    fn new(shape: &Shape, warmup: bool) -> World {
        let mut appliances: Vec<ApplianceDef> = (0..shape.appliances)
            .map(|a| ApplianceDef {
                name: format!("oma-{}", a + 1),
                id: new_id(),
            })
            .collect();
        let vm = |i: u32, name: String, appliance: &str| VmDef {
            name,
            appliance: appliance.to_string(),
            disks: (0..shape.disks)
                .map(|j| (2000 + j, 20 + j, new_id()))
                .collect(),
            mac: format!(
                "00:50:56:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            ),
        };
        let vms = (0..shape.vms)
            .map(|i| {
                vm(
                    i,
                    format!("bench-{:04}", i + 1),
                    &appliances[shape.appliance_of(i) as usize].name,
                )
            })
            .collect();
        let warmup = warmup.then(|| {
            appliances.push(ApplianceDef {
                name: "oma-warmup".into(),
                id: new_id(),
            });
            vm(0xff_ffff, "warmup".into(), "oma-warmup")
        });
        World {
            api_key: format!("bench-{}", uuid::Uuid::new_v4().simple()),
            secret_key: uuid::Uuid::new_v4().simple().to_string(),
            zone: new_id(),
            offering: new_id(),
            template: new_id(),
            appliances,
            vms,
            warmup,
        }
    }

    /// Every VM, the warm-up's included.
    fn all_vms(&self) -> impl Iterator<Item = &VmDef> {
        self.vms.iter().chain(&self.warmup)
    }

    /// The world file `ferry cloudsim --world` reads (docs/cloudsim.md).
    fn toml(&self) -> String {
        let mut text = format!(
            r#"# Generated by `ferry bench`.
[credentials]
api_key = "{api_key}"
secret_key = "{secret_key}"

[settings]
kvm_snapshot_enabled = true
max_data_volumes = {MAX_DATA_VOLUMES}
hotplug_delay_ms = {HOTPLUG_DELAY_MS}

[[zones]]
id = "{zone}"
name = "bench"

[[service_offerings]]
id = "{offering}"
name = "Custom"

[[disk_offerings]]
name = "Custom"

[[templates]]
id = "{template}"
name = "placeholder"
size_gb = 8

[[networks]]
name = "test"
cidr = "10.10.0.0/16"

[[networks]]
name = "production"
cidr = "10.20.0.0/16"
"#,
            api_key = self.api_key,
            secret_key = self.secret_key,
            zone = self.zone,
            offering = self.offering,
            template = self.template,
        );
        for a in &self.appliances {
            text.push_str(&format!(
                "\n[[appliances]]\nid = \"{}\"\nname = \"{}\"\n",
                a.id, a.name
            ));
            for vm in self.all_vms().filter(|v| v.appliance == a.name) {
                for (key, size, id) in &vm.disks {
                    text.push_str(&format!(
                        "[[appliances.volumes]]\nid = \"{id}\"\nname = \"{}-disk-{key}\"\nsize_gb = {size}\n",
                        vm.name
                    ));
                }
            }
        }
        text.push_str("\n[latency_ms]\n");
        for command in LATENCY_COMMANDS {
            text.push_str(&format!(
                "{command} = {}\n",
                cloudsim::world::default_latency_ms(&command.to_lowercase())
            ));
        }
        text
    }
}

impl VmDef {
    /// Its definition file (docs/vm-definition.md).
    fn definition(&self) -> String {
        let mut text = format!(
            r#"name = "{name}"
source_id = "{source}"
appliance = "{appliance}"

[spec]
vcpu = 2
memory_mb = 4096
firmware = "bios"
guest_os = "linux"
guest_prep = "skip"

[[nics]]
mac = "{mac}"
source_network = "VM Network"
test_network = "test"
production_network = "production"
"#,
            name = self.name,
            source = new_id(),
            appliance = self.appliance,
            mac = self.mac,
        );
        // VMware's SCSI units: 0–15 without 7 (the controller's own), 15 per bus.
        const UNITS: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        for (j, (key, size, id)) in self.disks.iter().enumerate() {
            text.push_str(&format!(
                "\n[[disks]]\nkey = {key}\ncontroller = \"scsi\"\nbus = {}\nunit = {}\ncapacity_gib = {size}\nlabel = \"Hard disk {}\"\nboot = {}\nreplica_volume_id = \"{id}\"\n",
                j / UNITS.len(),
                UNITS[j % UNITS.len()],
                j + 1,
                j == 0,
            ));
        }
        text
    }
}

/// `ferry cloudsim` as a child process.
struct Cloudsim {
    child: tokio::process::Child,
    announcement: cloudsim::Announcement,
    http: reqwest::Client,
}

impl Cloudsim {
    async fn spawn(world: &Path, sysfs: &Path, scale: f64) -> anyhow::Result<Cloudsim> {
        let exe = std::env::current_exe().context("cannot find the ferry binary")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("cloudsim")
            .arg("--world")
            .arg(world)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--time-scale",
                &scale.to_string(),
            ])
            .arg("--sysfs-root")
            .arg(sysfs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `ferry cloudsim`")?;
        let stdout = child.stdout.take().context("cloudsim's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("cloudsim did not announce itself within 60 s")??
            .context("cloudsim exited without announcing itself")?;
        let announcement: cloudsim::Announcement = serde_json::from_str(&line)
            .with_context(|| format!("cloudsim's announcement is not what was expected: {line}"))?;
        Ok(Cloudsim {
            child,
            announcement,
            http: reqwest::Client::new(),
        })
    }

    async fn stats(&self) -> anyhow::Result<cloudsim::Stats> {
        let url = format!("{}/stats", self.announcement.admin);
        self.http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}: not cloudsim's stats"))
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Registers every VM through the API, a few at a time.
async fn register(api: &Api, world: &World) -> anyhow::Result<()> {
    let mut pending = world.all_vms();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < 8 {
            let Some(vm) = pending.next() else { break };
            let api = api.clone();
            let request = AddVm {
                definition: vm.definition(),
                format: DefinitionFormat::Toml,
            };
            let name = vm.name.clone();
            tasks.spawn(async move {
                api.add_vm(&request)
                    .await
                    .map_err(|e| anyhow::anyhow!("registering {name}: {e}"))
            });
        }
        match tasks.join_next().await {
            None => return Ok(()),
            Some(result) => {
                result??;
            }
        }
    }
}

// ---- the phases ----------------------------------------------------------------------

/// Requests to start runs sent at once.
const STARTS_IN_FLIGHT: usize = 8;

#[derive(Debug, Clone, Copy)]
enum Workflow {
    TestFailover,
    Cleanup,
}

/// Starts the workflow on every VM at once, waits until every run has ended, and
/// returns when it started (ms since the epoch, the store's clock) and the runs.
async fn phase(
    api: &Api,
    vms: &[String],
    workflow: Workflow,
) -> anyhow::Result<(i64, Vec<RunSummary>)> {
    let started = chrono::Utc::now().timestamp_millis();
    if vms.is_empty() {
        return Ok((started, Vec::new()));
    }
    // Requested as an operator's script would, a few at a time: each request is answered
    // as soon as the run is stored, so all K are active at once all the same, without
    // K connections to the API (whose buffers would count as the engine's memory).
    let requests = std::sync::Arc::new(tokio::sync::Semaphore::new(STARTS_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for vm in vms {
        let api = api.clone();
        let vm = vm.clone();
        let requests = std::sync::Arc::clone(&requests);
        tasks.spawn(async move {
            let _slot = requests.acquire_owned().await?;
            let run = match workflow {
                Workflow::TestFailover => api.start_test_failover(&vm, TestMode::Replica).await,
                Workflow::Cleanup => api.start_cleanup(&vm).await,
            };
            run.map_err(|e| anyhow::anyhow!("starting the {workflow:?} of {vm}: {e}"))
        });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(run) = tasks.join_next().await {
        ids.insert(run??.id);
    }
    // Looking costs the engine (same process) a little: often enough to end soon after
    // the last run, no more.
    let mut look = Duration::from_millis(20);
    loop {
        tokio::time::sleep(look).await;
        look = (look * 2).min(Duration::from_millis(250));
        let runs: Vec<RunSummary> = api
            .list_runs(None, Some(vms.len() as i64))
            .await
            .map_err(|e| anyhow::anyhow!("listing runs: {e}"))?
            .into_iter()
            .filter(|r| ids.contains(&r.id))
            .collect();
        anyhow::ensure!(
            runs.len() == ids.len(),
            "the API lists {} of the {} runs just started",
            runs.len(),
            ids.len()
        );
        if runs.iter().all(|r| r.finished_at.is_some()) {
            return Ok((started, runs));
        }
    }
}

/// Every run's detail (for its steps' times), a few at a time.
async fn details(api: &Api, runs: &[RunSummary]) -> anyhow::Result<Vec<RunDetail>> {
    let mut out = Vec::with_capacity(runs.len());
    for chunk in runs.chunks(16) {
        let mut tasks = tokio::task::JoinSet::new();
        for r in chunk {
            let api = api.clone();
            let id = r.id.clone();
            tasks.spawn(async move {
                api.show_run(&id)
                    .await
                    .map_err(|e| anyhow::anyhow!("reading run {id}: {e}"))
            });
        }
        while let Some(detail) = tasks.join_next().await {
            out.push(detail??);
        }
    }
    Ok(out)
}

fn millis(at: &str) -> anyhow::Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(at)
        .with_context(|| format!("`{at}` is not an RFC 3339 time"))?
        .timestamp_millis())
}

fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms) as f64 / 1000.0
}

fn last_finish(runs: &[RunSummary]) -> anyhow::Result<i64> {
    let mut last = 0;
    for r in runs {
        if let Some(at) = &r.finished_at {
            last = last.max(millis(at)?);
        }
    }
    Ok(last)
}

/// From the run's creation to the end of its `start-vm` step.
fn time_to_running(run: &RunDetail) -> Option<f64> {
    let created = millis(&run.run.created_at).ok()?;
    let step = run
        .steps
        .iter()
        .find(|s| s.name == "start-vm" && s.state == "done")?;
    let finished = millis(step.finished_at.as_deref()?).ok()?;
    Some(seconds_between(created, finished))
}

// ---- the lower bound -----------------------------------------------------------------

/// How long one job of each command takes: the shortest cloudsim measured (so the
/// chain below is a true lower bound, the simulator's own overheads included), else
/// the latency profile scaled.
struct Durations {
    measured: BTreeMap<String, f64>,
    scale: f64,
}

impl Durations {
    fn new(stats: &cloudsim::Stats, scale: f64) -> Durations {
        Durations {
            measured: stats
                .commands
                .iter()
                .filter(|(_, c)| c.jobs > 0)
                .map(|(k, c)| (k.clone(), c.min_s))
                .collect(),
            scale,
        }
    }

    fn of(&self, command: &str) -> f64 {
        let lower = command.to_lowercase();
        self.measured.get(&lower).copied().unwrap_or_else(|| {
            cloudsim::world::default_latency_ms(&lower) as f64 / 1000.0 * self.scale
        })
    }

    fn hotplug(&self) -> f64 {
        HOTPLUG_DELAY_MS as f64 / 1000.0 * self.scale
    }

    /// A test failover (replica mode), by step: snapshot (N snapshots on the
    /// appliance's queue) → create-vm (deploy) → remove-placeholder-root (its detach;
    /// deleteVolume is synchronous) → detach-replicas (N on the appliance's queue) →
    /// attach-replicas (N on the target VM's) → start-vm.
    fn test_failover(&self, disks: u32) -> Chain {
        let n = f64::from(disks);
        let before_appliance = 0.0;
        let on_appliance = n * self.of("createSnapshot") + n * self.of("detachVolume");
        let between = self.of("deployVirtualMachine") + self.of("detachVolume");
        let after_appliance = n * self.of("attachVolume") + self.of("startVirtualMachine");
        Chain {
            total: before_appliance + on_appliance + between + after_appliance,
            head: before_appliance,
            tail: after_appliance,
        }
    }

    /// A cleanup, by step: stop-test-vm → detach-from-test-vm (N on the test VM's
    /// queue) → revert-replicas (each replica detached, on its own queue: at once) →
    /// reattach-replicas (N on the appliance's queue, then the last disk's hot-plug) →
    /// delete-snapshots (each on its own queue) → destroy-test-vm.
    fn cleanup(&self, disks: u32) -> Chain {
        let n = f64::from(disks);
        let before_appliance =
            self.of("stopVirtualMachine") + n * self.of("detachVolume") + self.of("revertSnapshot");
        let on_appliance = n * self.of("attachVolume");
        let after_appliance =
            self.hotplug() + self.of("deleteSnapshot") + self.of("destroyVirtualMachine");
        Chain {
            total: before_appliance + on_appliance + after_appliance,
            head: before_appliance,
            tail: after_appliance,
        }
    }
}

/// One VM's chain in a phase, and the parts of it before its first and after its last
/// job on its appliance.
#[derive(Debug, Clone, Copy)]
struct Chain {
    total: f64,
    head: f64,
    tail: f64,
}

impl Phase {
    fn of(
        runs: &[RunSummary],
        details: &[RunDetail],
        started_ms: i64,
        before: &cloudsim::Stats,
        after: &cloudsim::Stats,
        chain: Chain,
        world: &World,
    ) -> anyhow::Result<Phase> {
        let makespan_s = if runs.is_empty() {
            0.0
        } else {
            seconds_between(started_ms, last_finish(runs)?)
        };
        let appliances: std::collections::BTreeSet<String> = world
            .appliances
            .iter()
            .map(|a| format!("vm:{}", a.id))
            .collect();
        let mut busiest: Option<BusiestQueue> = None;
        for (queue, report) in &after.queues {
            let earlier = before.queues.get(queue);
            let jobs = report.jobs - earlier.map_or(0, |q| q.jobs);
            if jobs == 0 {
                continue;
            }
            let busy_s = report.busy_s - earlier.map_or(0.0, |q| q.busy_s);
            let (head_s, tail_s) = if appliances.contains(queue) {
                (chain.head, chain.tail)
            } else {
                (0.0, 0.0)
            };
            let bound_s = head_s + busy_s + tail_s;
            if busiest.as_ref().is_none_or(|b| bound_s > b.bound_s) {
                busiest = Some(BusiestQueue {
                    queue: queue.clone(),
                    name: report.name.clone(),
                    busy_s,
                    head_s,
                    tail_s,
                    bound_s,
                });
            }
        }
        let busiest = busiest.unwrap_or(BusiestQueue {
            queue: String::new(),
            name: None,
            busy_s: 0.0,
            head_s: 0.0,
            tail_s: 0.0,
            bound_s: 0.0,
        });
        let (lower_bound_s, bound_by) = if busiest.bound_s >= chain.total {
            (busiest.bound_s, "queue")
        } else {
            (chain.total, "chain")
        };
        let jobs_per_command = after
            .commands
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    c.jobs - before.commands.get(k).map_or(0, |b| b.jobs),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Ok(Phase {
            makespan_s,
            lower_bound_s,
            ratio: if lower_bound_s > 0.0 {
                makespan_s / lower_bound_s
            } else {
                0.0
            },
            bound_by,
            chain_s: chain.total,
            busiest_queue: busiest,
            jobs_per_command,
            max_concurrent_runs: max_concurrent(details),
            steps: step_times(details),
        })
    }
}

/// The most runs executing at once: each from its first step's start to its end.
fn max_concurrent(details: &[RunDetail]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for run in details {
        let first = run
            .steps
            .iter()
            .filter_map(|s| s.started_at.as_deref().and_then(|t| millis(t).ok()))
            .min();
        let end = run.run.finished_at.as_deref().and_then(|t| millis(t).ok());
        if let (Some(from), Some(to)) = (first, end) {
            edges.push((from, 1));
            edges.push((to, -1));
        }
    }
    // An end at the same millisecond as a start counts first.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

/// Per step, in the workflow's order: its median and longest duration.
fn step_times(details: &[RunDetail]) -> Vec<StepTimes> {
    let mut order: Vec<String> = Vec::new();
    let mut took: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in details {
        for step in &run.steps {
            if !order.contains(&step.name) {
                order.push(step.name.clone());
            }
            if let Some(ms) = step.duration_ms {
                took.entry(step.name.clone())
                    .or_default()
                    .push(ms as f64 / 1000.0);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|step| {
            let p = percentiles(took.remove(&step)?);
            Some(StepTimes {
                step,
                p50_s: p.p50,
                max_s: p.max,
            })
        })
        .collect()
}

/// Polls per job of the jobs that finished between two readings, from cloudsim's
/// per-command histograms.
struct MeasuredPolls {
    jobs: u64,
    polls: Polls,
}

fn polls_between(before: &cloudsim::Stats, after: &cloudsim::Stats) -> MeasuredPolls {
    // Each job's poll count, expanded from the histogram's difference.
    let counts = |command: &str, histogram: &BTreeMap<u64, u64>| -> Vec<u64> {
        let earlier = before.polls_histogram.get(command);
        let mut out = Vec::new();
        for (polls, jobs) in histogram {
            let was = earlier.and_then(|h| h.get(polls)).copied().unwrap_or(0);
            out.extend(std::iter::repeat_n(
                *polls,
                jobs.saturating_sub(was) as usize,
            ));
        }
        out
    };
    let median = |mut v: Vec<u64>| -> f64 {
        v.sort_unstable();
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2] as f64,
            n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0,
        }
    };
    let mut all = Vec::new();
    let mut per_command = BTreeMap::new();
    for (command, histogram) in &after.polls_histogram {
        let polls = counts(command, histogram);
        if polls.is_empty() {
            continue;
        }
        all.extend_from_slice(&polls);
        per_command.insert(
            command.clone(),
            CommandPolls {
                jobs: polls.len() as u64,
                max: polls.iter().copied().max().unwrap_or(0),
                median: median(polls),
            },
        );
    }
    MeasuredPolls {
        jobs: all.len() as u64,
        polls: Polls {
            max: all.iter().copied().max().unwrap_or(0),
            total: all.iter().sum(),
            median: median(all),
            per_command,
        },
    }
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Nearest-rank percentiles.
fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| -> f64 {
        if values.is_empty() {
            return 0.0;
        }
        let i = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[i - 1]
    };
    Percentiles {
        p50: rank(0.50),
        p95: rank(0.95),
        max: values.last().copied().unwrap_or(0.0),
    }
}

// ---- the machine ---------------------------------------------------------------------

/// This process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status for the peak memory")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("/proc/self/status has no VmHWM")?;
    Ok(kib / 1024.0)
}

impl Machine {
    fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string()),
            memory_mib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib / 1024),
        }
    }
}

fn format_speed(time_scale: f64) -> String {
    let speed = 1.0 / time_scale;
    if (speed - speed.round()).abs() < 1e-9 {
        format!("{}", speed.round())
    } else {
        format!("{speed:.2}")
    }
}

// ---- the table -----------------------------------------------------------------------

fn table(r: &Report) -> String {
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: String| {
        out.push_str(&format!("  {label:<28} {value}\n"));
    };
    out.push('\n');
    for (name, p) in [("test failover", &r.test_failover), ("cleanup", &r.cleanup)] {
        line(
            &mut out,
            name,
            format!(
                "{:.3} s, bound {:.3} s ({}), ratio {:.3}",
                p.makespan_s, p.lower_bound_s, p.bound_by, p.ratio
            ),
        );
        let q = &p.busiest_queue;
        line(
            &mut out,
            "  busiest queue",
            format!(
                "{} busy {:.3} s + head {:.3} s + tail {:.3} s",
                q.name.as_deref().unwrap_or(&q.queue),
                q.busy_s,
                q.head_s,
                q.tail_s
            ),
        );
        line(&mut out, "  one VM's chain", format!("{:.3} s", p.chain_s));
        line(
            &mut out,
            "  runs at once (most)",
            p.max_concurrent_runs.to_string(),
        );
        for st in &p.steps {
            line(
                &mut out,
                &format!("    {}", st.step),
                format!("p50 {:.3} s, max {:.3} s", st.p50_s, st.max_s),
            );
        }
    }
    line(
        &mut out,
        "total",
        format!(
            "{:.3} s, bound {:.3} s, ratio {:.3}",
            r.makespan_s, r.lower_bound_s, r.ratio
        ),
    );
    line(
        &mut out,
        "time to running",
        format!(
            "p50 {:.3} s, p95 {:.3} s, max {:.3} s",
            r.time_to_running_s.p50, r.time_to_running_s.p95, r.time_to_running_s.max
        ),
    );
    line(
        &mut out,
        "polls per async job",
        format!(
            "median {}, max {} ({} jobs, {} polls)",
            r.polls_per_job.median, r.polls_per_job.max, r.async_jobs, r.polls_per_job.total
        ),
    );
    for (command, p) in &r.polls_per_job.per_command {
        line(
            &mut out,
            &format!("  {command}"),
            format!("median {}, max {} ({} jobs)", p.median, p.max, p.jobs),
        );
    }
    line(
        &mut out,
        "CloudStack calls",
        format!("{} ({:.1} per VM)", r.calls_total, r.calls_per_vm),
    );
    for (command, n) in &r.calls_per_command {
        line(&mut out, &format!("  {command}"), n.to_string());
    }
    line(
        &mut out,
        "peak memory (VmHWM)",
        format!("{:.1} MiB", r.peak_rss_mib),
    );
    line(
        &mut out,
        "runs done",
        format!("{} of {}", r.runs_done, 2 * r.vms),
    );
    line(
        &mut out,
        "machine",
        format!(
            "{} CPUs, {}, {} MiB",
            r.machine.cpus,
            r.machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
            r.machine
                .memory_mib
                .map_or("?".to_string(), |m| m.to_string())
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(vms: u32, disks: u32, appliances: u32) -> Shape {
        Shape {
            vms,
            disks,
            appliances,
        }
    }

    #[test]
    fn a_shape_that_fits_is_accepted() {
        assert!(shape(1, 2, 1).check().is_ok());
        assert!(shape(16, 4, 2).check().is_ok());
        assert!(shape(100, 4, 13).check().is_ok());
        assert!(shape(500, 1, 16).check().is_ok());
        assert!(shape(1, 32, 1).check().is_ok());
    }

    #[test]
    fn too_many_replicas_on_one_appliance_are_refused_with_what_fits() {
        let e = shape(100, 4, 2).check().unwrap_err().to_string();
        assert!(e.contains("200 replica volumes on one appliance"), "{e}");
        assert!(e.contains("at most 16 such VMs"), "{e}");
        assert!(e.contains("--appliances 13"), "{e}");
        let e = shape(500, 1, 1).check().unwrap_err().to_string();
        assert!(e.contains("--appliances 16"), "{e}");
        assert!(shape(33, 1, 1).check().is_err());
        assert!(shape(9, 4, 1).check().is_err());
    }

    #[test]
    fn vms_are_spread_round_robin() {
        let s = shape(5, 2, 2);
        let w = World::new(&s, false);
        let on: Vec<&str> = w.vms.iter().map(|v| v.appliance.as_str()).collect();
        assert_eq!(on, ["oma-1", "oma-2", "oma-1", "oma-2", "oma-1"]);
        assert_eq!(s.most_on_one_appliance(), 6);
        // The world parses as cloudsim reads it, with every replica on its appliance.
        let parsed = cloudsim::World::from_toml(&w.toml()).expect("a valid world");
        assert_eq!(parsed.appliances.len(), 2);
        assert_eq!(parsed.appliances[0].volumes.len(), 6);
        assert_eq!(parsed.appliances[1].volumes.len(), 4);
        assert_eq!(parsed.latency_ms["attachVolume"], 3_000);
    }

    #[test]
    fn the_warmup_vm_has_an_appliance_of_its_own() {
        let w = World::new(&shape(2, 3, 1), true);
        assert_eq!(w.vms.len(), 2);
        let warmup = w.warmup.as_ref().expect("a warm-up VM");
        assert_eq!(warmup.appliance, "oma-warmup");
        assert_eq!(warmup.disks.len(), 3);
        let parsed = cloudsim::World::from_toml(&w.toml()).expect("a valid world");
        let names: Vec<(&str, usize)> = parsed
            .appliances
            .iter()
            .map(|a| (a.name.as_str(), a.volumes.len()))
            .collect();
        assert_eq!(names, [("oma-1", 6), ("oma-warmup", 3)]);
    }

    #[test]
    fn polls_are_counted_between_two_readings() {
        let stats = |histogram: &[(&str, &[(u64, u64)])]| -> cloudsim::Stats {
            serde_json::from_value(serde_json::json!({
                "calls": {}, "errors": {}, "queues": {}, "max_concurrency_per_queue": 1,
                "polls_per_job": {"jobs": 0, "median": 0.0, "max": 0, "total": 0},
                "polls_histogram": histogram
                    .iter()
                    .map(|(c, h)| (c.to_string(), h.iter().map(|(p, j)| (p.to_string(), *j)).collect::<BTreeMap<_, _>>()))
                    .collect::<BTreeMap<_, _>>(),
            }))
            .expect("stats")
        };
        let before = stats(&[
            ("attachvolume", &[(9, 2)]),
            ("stopvirtualmachine", &[(30, 1)]),
        ]);
        let after = stats(&[
            ("attachvolume", &[(1, 3), (2, 1), (9, 2)]),
            ("stopvirtualmachine", &[(30, 1)]),
        ]);
        let m = polls_between(&before, &after);
        assert_eq!(m.jobs, 4);
        assert_eq!((m.polls.median, m.polls.max, m.polls.total), (1.0, 2, 5));
        assert!(!m.polls.per_command.contains_key("stopvirtualmachine"));
    }

    #[test]
    fn chains_follow_the_workflows_steps() {
        let d = Durations {
            measured: BTreeMap::new(),
            scale: 1.0,
        };
        // 2 disks: snapshots 24, deploy 6, placeholder detach 3, detaches 6,
        // attaches 6, start 15.
        let tf = d.test_failover(2);
        assert!((tf.total - 60.0).abs() < 1e-9, "{tf:?}");
        assert!((tf.tail - 21.0).abs() < 1e-9, "{tf:?}");
        // stop 8, detaches 6, revert 10 (at once), attaches 6, hot-plug 0.2,
        // snapshot deletion 2 (at once), destroy 5.
        let cu = d.cleanup(2);
        assert!((cu.total - 37.2).abs() < 1e-9, "{cu:?}");
        assert!((cu.head - 24.0).abs() < 1e-9, "{cu:?}");
        assert!((cu.tail - 7.2).abs() < 1e-9, "{cu:?}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.max), (50.0, 95.0, 100.0));
        let p = percentiles(vec![3.0]);
        assert_eq!((p.p50, p.p95, p.max), (3.0, 3.0, 3.0));
    }

    #[test]
    fn definitions_parse_with_every_disk_on_its_own_slot() {
        let w = World::new(&shape(1, 20, 1), false);
        let text = w.vms[0].definition();
        let parsed: toml::Value = toml::from_str(&text).expect("TOML");
        let disks = parsed["disks"].as_array().expect("disks");
        assert_eq!(disks.len(), 20);
        let slots: std::collections::BTreeSet<(i64, i64)> = disks
            .iter()
            .map(|d| {
                (
                    d["bus"].as_integer().unwrap(),
                    d["unit"].as_integer().unwrap(),
                )
            })
            .collect();
        assert_eq!(slots.len(), 20);
        assert!(!slots.iter().any(|(_, unit)| *unit == 7));
        assert_eq!(
            disks
                .iter()
                .filter(|d| d["boot"].as_bool() == Some(true))
                .count(),
            1
        );
    }
}
