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
//!
//! With `--plan TIERS` the K VMs are instead the boot tiers of one recovery plan, added
//! through the API and drilled (`ferry plan test`), then cleaned up (`ferry plan
//! cleanup`): the plan's makespan is measured against the sum of its tiers' bounds,
//! each tier bounded as VMs at once are ([`tiers`]).
//!
//! The parts: [`world`] is the simulated cloud (the shape, the world file, `ferry
//! cloudsim` as a child), [`run`] drives the runs (or the plan runs) through the API,
//! [`bound`] is the lower bound's chain (from what the workflows declare) and queues,
//! [`report`] turns what VMs at once measured into the figures above and [`tiers`]
//! what a plan's tiers measured, both with the figures every bench has ([`figures`]:
//! calls, polls, memory, the machine), and print them. This file takes the arguments
//! and puts the parts in order.

mod agents;
mod bound;
mod figures;
mod report;
mod run;
mod tiers;
mod world;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use server::config::{Builder, EngineSection, TargetSection};

use crate::client::{ConnectionArgs, Output};
use crate::embedded::{Embedded, format_speed};
use figures::Setup;
use report::Report;
use run::{Observed, PlanObserved, Workflow, phase, plan_phase, register};
use tiers::PlanReport;
use world::{Cloudsim, Shape, World};

/// The default time scale, 25× real pace: 100 VMs of 4 disks on the 13 appliances they
/// need take about half a minute, one VM of 2 disks about 4 s. Faster scales shrink
/// every job while ferry's own costs (HTTP, SQLite, scheduling) stay what they are, so
/// the ratio to the bound grows (docs/benchmarks.md).
pub const DEFAULT_TIME_SCALE: f64 = 0.04;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Protected VMs (K), test-failed-over all at once, then cleaned up all at once
    /// [default: 1; with --plan, one per tier, or the sum of its list].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    vms: Option<u32>,
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
    /// Runs one `ferry volumed` process per appliance (each seeing only its own
    /// appliance's disks, journaling in its own SQLite file), as a real installation
    /// does, and an engine that sees no disks and reaches the agents over HTTP.
    #[arg(long)]
    agents: bool,
    /// Turns CloudStack's API rate limit on at its defaults (`api.throttling.max` 25
    /// calls per `api.throttling.interval` 1 s, scaled like every latency), and gives
    /// ferry's processes a client-side limit that shares it; reports the bound the rate
    /// limit sets.
    #[arg(long)]
    throttle: bool,
    /// The client's `cloudstack.job_duration_scale`: when a command's first jobs are
    /// polled (its typical duration times this). The time scale by default, as an
    /// operator sets it from their cloud's pace; a tiny value (0.000001) polls first
    /// drills as if ferry expected nothing, to see what the priors buy.
    #[arg(long)]
    job_duration_scale: Option<f64>,
    /// Runs the VMs as the boot tiers of one recovery plan instead of all at once: a
    /// number of tiers (`--plan 3`: the VMs split evenly, the first tiers taking one
    /// more) or the VMs of each tier (`--plan 2,4,2`). The plan is drilled (`ferry plan
    /// test`) and cleaned up through the API, and measured against the sum of its
    /// tiers' bounds.
    #[arg(long, value_name = "TIERS", value_parser = tiers::parse)]
    plan: Option<tiers::Tiers>,
}

pub async fn run(args: BenchArgs, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale > 0.0 && args.time_scale <= 10.0,
        "--time-scale must be a number > 0 and ≤ 10 (got {}); 1 is real time",
        args.time_scale
    );
    let plan = args.plan.as_ref().map(|t| t.sizes(args.vms)).transpose()?;
    let vms = match &plan {
        Some(sizes) => sizes.iter().sum(),
        None => args.vms.unwrap_or(1),
    };
    let shape = Shape {
        vms,
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
    let concurrency = args.engine_concurrency.unwrap_or(vms as usize).max(1);
    let scale = args.time_scale;
    let job_duration_scale = args.job_duration_scale.unwrap_or(scale);
    anyhow::ensure!(
        job_duration_scale.is_finite() && job_duration_scale > 0.0 && job_duration_scale <= 1_000.0,
        "--job-duration-scale must be a number > 0 and ≤ 1000 (got {job_duration_scale})"
    );

    let dir = tempfile::Builder::new().prefix("ferry-bench-").tempdir()?;
    let throttling = args.throttle.then(cloudsim::world::ApiThrottling::default);
    let world = World::new(&shape, args.warmup, throttling);
    let world_path = dir.path().join("world.toml");
    std::fs::write(&world_path, world.toml())?;
    let sysfs = dir.path().join("appliances");
    std::fs::create_dir_all(&sysfs)?;
    let sim = Cloudsim::spawn(&world_path, &sysfs, scale).await?;
    let announcement = &sim.announcement;

    // Polling paced to the simulated cloud, as an operator sets it for a real one:
    // the typical job durations scaled to its pace (`job_duration_scale`), so every
    // command is first polled at what its jobs usually take; polls of a job found
    // pending then come in growing steps, at most 1 s of CloudStack time apart; a
    // command without a prior is polled first after 100 ms of CloudStack time.
    let poll_first_ms = ((100.0 * scale).round() as u64).max(1);
    let poll_max_ms = ((1_000.0 * scale).round() as u64).max(poll_first_ms);
    let mut config = Builder::new(
        &announcement.endpoint,
        &announcement.api_key,
        TargetSection {
            zone_id: world.zone.clone(),
            service_offering_id: world.offering.clone(),
            template_id: world.template.clone(),
        },
    )
    .database(dir.path().join("ferry.db").display().to_string())
    .poll_ms(poll_first_ms, poll_max_ms)
    .job_duration_scale(job_duration_scale)
    .engine(EngineSection {
        worker_name: Some("bench".into()),
        concurrency,
        ..EngineSection::default()
    });
    // One account, shared by the engine and (with --agents) every agent: each process
    // gets its share of CloudStack's limit, its interval scaled like every latency.
    let processes = if args.agents {
        1 + u64::from(shape.appliances)
    } else {
        1
    };
    let rate_limit_interval_ms = throttling
        .map(|t| ((t.interval_s as f64 * 1000.0 * scale * processes as f64).round() as u64).max(1));
    if let (Some(t), Some(interval_ms)) = (throttling, rate_limit_interval_ms) {
        config = config.rate_limit(t.max, interval_ms);
    }
    let mut appliances = Vec::new();
    for a in &world.appliances {
        let vm_id = announcement
            .appliances
            .get(&a.name)
            .with_context(|| format!("cloudsim did not announce appliance {}", a.name))?;
        let root = announcement
            .sysfs_roots
            .get(&a.name)
            .with_context(|| format!("cloudsim has no guest view of appliance {}", a.name))?;
        appliances.push((a.name.clone(), vm_id.clone(), root.clone()));
    }
    let agents = if args.agents {
        let token_file = dir.path().join("agent.token");
        std::fs::write(&token_file, uuid::Uuid::new_v4().simple().to_string())?;
        let agents = agents::Agents::spawn(
            &appliances,
            &agents::Common {
                cloudstack: (
                    &announcement.endpoint,
                    &announcement.api_key,
                    &announcement.secret_key,
                ),
                poll_ms: (poll_first_ms, poll_max_ms),
                job_duration_scale,
                rate_limit: throttling
                    .zip(rate_limit_interval_ms)
                    .map(|(t, ms)| (t.max, ms)),
                token_file: &token_file,
                dir: dir.path(),
            },
        )
        .await?;
        for (agent, (name, vm_id, _)) in agents.iter().zip(&appliances) {
            debug_assert_eq!(&agent.appliance, name);
            config = config.appliance_with_agent(name, vm_id, &agent.url, &token_file, None);
        }
        Some(agents)
    } else {
        for (name, vm_id, root) in &appliances {
            config = config.appliance(name, vm_id, root);
        }
        None
    };
    let config = config.build().context("the bench's config")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Embedded::start(config, &announcement.secret_key, listener).await?;
    let api = &server.api;
    say(format!(
        "ferry bench: {} VM(s) × {} disk(s) on {} appliance(s){}, cloudsim at {}× real time, engine concurrency {concurrency}",
        shape.vms,
        shape.disks,
        shape.appliances,
        if agents.is_some() {
            ", one volume agent (ferry volumed) each"
        } else {
            ""
        },
        format_speed(scale),
    ));

    let registered = Instant::now();
    register(api, &world).await?;
    say(format!(
        "registered {} VMs in {:.1} s",
        world.vms.len(),
        registered.elapsed().as_secs_f64()
    ));
    if let Some(warmup) = &world.warmup {
        let name = [warmup.name.clone()];
        for workflow in [Workflow::TestFailover, Workflow::Cleanup] {
            let (_, runs) = phase(api, &name, workflow).await?;
            if let Some(r) = runs.iter().find(|r| r.state != "done") {
                eprintln!(
                    "error: the warm-up's {workflow:?} {} ended {}: {}",
                    r.id,
                    r.state,
                    r.error.as_deref().unwrap_or("no reason recorded")
                );
                server.stop().await;
                sim.stop().await;
                return Ok(ExitCode::from(1));
            }
        }
        say(format!(
            "warmed up: {} through a test failover and cleanup, unmeasured",
            warmup.name
        ));
    }

    let names: Vec<String> = world.vms.iter().map(|v| v.name.clone()).collect();
    if let Some(sizes) = &plan {
        run::add_plan(api, tiers::definition(&world, sizes)).await?;
        say(format!(
            "added plan {}: {} tiers of {} VMs",
            tiers::PLAN,
            sizes.len(),
            sizes
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let stats_before = sim.stats().await?;
    let (stats_between, stats_after, measured) = match &plan {
        None => {
            let (started_ms, runs) = phase(api, &names, Workflow::TestFailover).await?;
            let stats_between = sim.stats().await?;
            let test_failover = Observed::read(api, started_ms, runs).await?;
            let failed_over: Vec<String> = test_failover.done().map(|r| r.vm.clone()).collect();
            say(format!(
                "test failover: {} of {} done in {:.2} s",
                failed_over.len(),
                names.len(),
                test_failover.seconds()?
            ));
            let (started_ms, runs) = phase(api, &failed_over, Workflow::Cleanup).await?;
            let stats_after = sim.stats().await?;
            let cleanup = Observed::read(api, started_ms, runs).await?;
            say(format!(
                "cleanup: {} of {} done in {:.2} s",
                cleanup.done().count(),
                failed_over.len(),
                cleanup.seconds()?
            ));
            (
                stats_between,
                stats_after,
                Measured::AtOnce {
                    test_failover,
                    cleanup,
                },
            )
        }
        Some(sizes) => {
            let drill = plan_phase(api, tiers::PLAN, "test-failover").await?;
            let stats_between = sim.stats().await?;
            say(format!(
                "plan test failover: {}, {} VMs in {} tiers in {:.2} s",
                drill.run.state,
                drill.details.len(),
                sizes.len(),
                drill.seconds()?
            ));
            let cleanup = plan_phase(api, tiers::PLAN, "cleanup").await?;
            let stats_after = sim.stats().await?;
            say(format!(
                "plan cleanup: {}, {} VMs in {:.2} s",
                cleanup.run.state,
                cleanup.details.len(),
                cleanup.seconds()?
            ));
            (
                stats_between,
                stats_after,
                Measured::Plan {
                    sizes: sizes.clone(),
                    drill: Box::new(drill),
                    cleanup: Box::new(cleanup),
                },
            )
        }
    };
    let peak_rss_mib = figures::peak_rss_mib()?;
    let agents_peak_rss_mib = agents.as_ref().and_then(agents::Agents::peak_rss_mib);

    server.stop().await;
    if let Some(agents) = agents {
        agents.stop().await;
    }
    sim.stop().await;

    let setup = Setup {
        shape,
        time_scale: scale,
        engine_concurrency: concurrency,
        warmup: args.warmup,
        agents: args.agents,
        throttling,
    };
    let peak_rss = (peak_rss_mib, agents_peak_rss_mib);
    let stats = [&stats_before, &stats_between, &stats_after];
    let (json_line, table, verdict) = match &measured {
        Measured::Plan {
            sizes,
            drill,
            cleanup,
        } => {
            let report = PlanReport::new(&setup, &world, sizes, stats, drill, cleanup, peak_rss)?;
            (
                serde_json::to_string(&report)?,
                report.table(),
                report.verdict(&names, &cleanup.details),
            )
        }
        Measured::AtOnce {
            test_failover,
            cleanup,
        } => {
            let report = Report::new(&setup, &world, stats, test_failover, cleanup, peak_rss)?;
            (
                serde_json::to_string(&report)?,
                report.table(),
                report.verdict(&names, &cleanup.runs),
            )
        }
    };
    if json {
        println!("{json_line}");
    } else {
        print!("{table}");
    }
    Ok(verdict)
}

/// What the two phases saw: VMs all at once, or a plan's drill and cleanup (with the
/// VMs of its tiers).
enum Measured {
    AtOnce {
        test_failover: Observed,
        cleanup: Observed,
    },
    Plan {
        sizes: Vec<u32>,
        drill: Box<PlanObserved>,
        cleanup: Box<PlanObserved>,
    },
}
