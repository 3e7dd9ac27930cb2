//! `ferry demo`: ferry's whole job on one machine, with nothing to set up.
//!
//! Everything is embedded — a SQLite database in a temporary directory, cloudsim with
//! its built-in world and hot-plug emulation (its latencies have real proportions,
//! scaled down by `--time-scale`), the in-process volume daemon, the engine worker and
//! the REST API — and driven through the same API client the other commands use:
//! pgtest1 (a 107 GiB boot disk and a 10 GiB data disk) is registered, test-failed-over
//! with live progress, its target VM's device map is shown and verified against
//! CloudStack, and the cleanup puts every replica back on the appliance. Then a small
//! recovery plan ([`plan`]): pgtest1, then a web server once pgtest1's database port
//! answers (a readiness gate against cloudsim's emulated guest), drilled tier by tier
//! and cleaned up last tier first. The demo ends by checking cloudsim itself: nothing
//! ferry created is left.

mod plan;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use cloudsim::world::ids;
use server::config::{Builder, EngineSection, TargetSection};
use server::model::{AddVm, DefinitionFormat, RunDetail, TestMode, VmDetail};

use crate::client::api::Api;
use crate::client::{ConnectionArgs, Output, progress, render};
use crate::embedded::{Embedded, format_speed};

/// The job sheet's VM, as docs/examples/pgtest1.toml defines it.
const PGTEST1: &str = include_str!("../../../../docs/examples/pgtest1.toml");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep running afterwards, with the API up, to explore with the other commands.
    #[arg(long)]
    keep_running: bool,
    /// Where the API listens; with --keep-running the default is the address the
    /// client commands use by default, 127.0.0.1:8470.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Multiplies cloudsim's latencies (1: a KVM cloud's real pace, about 5 minutes for the
    /// whole demo; the default 0.05 runs it 20× faster).
    #[arg(long, default_value_t = 0.05)]
    time_scale: f64,
}

/// What `--output json` prints: one object at the end.
#[derive(serde::Serialize)]
struct Report {
    elapsed_ms: u128,
    vm: String,
    test_failover: RunDetail,
    failed_over: VmDetail,
    cleanup: RunDetail,
    cleaned_up: VmDetail,
    /// The recovery plan, its drill and the drill's cleanup.
    plan: plan::PlanPart,
    leftovers: Vec<String>,
}

pub async fn run(args: DemoArgs, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale > 0.0,
        "--time-scale must be a number > 0 (got {}); 1 is real time",
        args.time_scale
    );
    let json = connection.output == Output::Json;
    let say = |text: String| {
        if !json {
            println!("{text}");
        }
    };
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("ferry-demo-").tempdir()?;
    let sysfs = dir.path().join("appliance");
    let database = dir.path().join("ferry.db");

    let reservation = plan::Reservation::take()?;
    let sim = cloudsim::start(
        cloudsim::SimConfig {
            world: plan::world(&reservation)?,
            sysfs_root: Some(sysfs.clone()),
            time_scale: args.time_scale,
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("cannot start cloudsim")?;
    let announcement = &sim.announcement;

    // Polling paced to the simulated cloud: prompt, but not busier than needed.
    let poll_first_ms = ((500.0 * args.time_scale) as u64).clamp(5, 500);
    let config = Builder::new(
        &announcement.endpoint,
        &announcement.api_key,
        TargetSection {
            zone_id: ids::ZONE.into(),
            service_offering_id: ids::OFFERING_CUSTOM.into(),
            template_id: ids::TEMPLATE.into(),
        },
    )
    .database(database.display().to_string())
    .poll_ms(poll_first_ms, poll_first_ms * 10)
    .job_duration_scale(args.time_scale)
    .appliance("oma", ids::APPLIANCE_OMA, &sysfs)
    .engine(EngineSection {
        worker_name: Some("demo".into()),
        ..EngineSection::default()
    })
    .build()
    .context("the demo's config")?;
    let listen = args.listen.unwrap_or_else(|| {
        if args.keep_running {
            SocketAddr::from(([127, 0, 0, 1], 8470))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; pick another with --listen"))?;
    // The API's token is made for this demo only; it is printed with --keep-running,
    // for the client commands to use.
    let server = Embedded::start(config, &announcement.secret_key, listener).await?;
    let (api, url, token) = (&server.api, &server.url, &server.token);

    say(format!(
        "ferry demo: everything embedded in this process\n  database    {} (SQLite)\n  cloudstack  {} (cloudsim, built-in world, {}× real time)\n  appliance   oma, its disks under {}\n  api         {url}\n",
        database.display(),
        announcement.endpoint,
        format_speed(args.time_scale),
        sysfs.display(),
    ));

    let vm = api
        .add_vm(&AddVm {
            definition: PGTEST1.to_string(),
            format: DefinitionFormat::Toml,
        })
        .await
        .map_err(|e| anyhow::anyhow!("registering pgtest1: {e}"))?;
    let disks: Vec<String> = vm
        .disks
        .iter()
        .map(|d| {
            format!(
                "{} {} GiB",
                if d.boot { "boot" } else { "data" },
                d.capacity_bytes >> 30
            )
        })
        .collect();
    say(format!(
        "1. Registered {}: {} disks ({}), replicated to appliance {}.\n",
        vm.name,
        vm.disks.len(),
        disks.join(", "),
        vm.appliance
    ));

    say(format!("2. Test failover of {} (replica mode)", vm.name));
    let run = api
        .start_test_failover(&vm.name, TestMode::Replica)
        .await
        .map_err(|e| anyhow::anyhow!("starting the test failover: {e}"))?;
    let test_failover = follow_to_done(api, &run.id, "test failover", connection.output).await?;
    let failed_over = api
        .show_vm(&vm.name)
        .await
        .map_err(|e| anyhow::anyhow!("reading pgtest1: {e}"))?;
    let target = failed_over
        .target
        .as_ref()
        .context("pgtest1 is failed over but has no target VM")?;
    say(format!(
        "\n3. {} is {} on its test VM:\n{}",
        vm.name,
        failed_over.state,
        indent(&render::target_table(target))
    ));
    let verified = target.verified;

    say(format!("4. Cleanup of {}", vm.name));
    let run = api
        .start_cleanup(&vm.name)
        .await
        .map_err(|e| anyhow::anyhow!("starting the cleanup: {e}"))?;
    let cleanup = follow_to_done(api, &run.id, "cleanup", connection.output).await?;
    let cleaned_up = api
        .show_vm(&vm.name)
        .await
        .map_err(|e| anyhow::anyhow!("reading pgtest1: {e}"))?;
    let mut lines = vec![format!(
        "\n5. {} is {}; its replicas are back on the appliance {}:",
        vm.name, cleaned_up.state, cleaned_up.appliance
    )];
    for d in &cleaned_up.disks {
        lines.push(format!(
            "   {:<12} {}  device {}  at {}",
            d.label,
            d.replica_volume_id,
            d.device_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            d.device_path.as_deref().unwrap_or("(not seen)")
        ));
    }
    say(lines.join("\n"));

    let (web1, plan) = plan::run(api, &reservation, args.time_scale, 6, json).await?;
    let mut vms = Vec::new();
    for name in [&vm.name, &web1.name] {
        vms.push(
            api.show_vm(name)
                .await
                .map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?,
        );
    }
    let leftovers = leftovers(&server.running.state.env.cloud, &vms).await?;
    let elapsed = started.elapsed();
    let plan_done = plan.done();
    if json {
        let report = Report {
            elapsed_ms: elapsed.as_millis(),
            vm: vm.name.clone(),
            test_failover,
            failed_over,
            cleanup,
            cleaned_up,
            plan,
            leftovers: leftovers.clone(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if leftovers.is_empty() {
        println!(
            "Checked in cloudsim: no test VM, no snapshot, no volume ferry created is left. Done in {:.1} s.",
            elapsed.as_secs_f64()
        );
    } else {
        println!("\nLEFT BEHIND:");
        for l in &leftovers {
            println!("  - {l}");
        }
    }
    let ok = verified && leftovers.is_empty() && plan_done;

    if args.keep_running {
        // The explorer's instructions go to stderr in JSON mode, so stdout stays one
        // document.
        let hint = format!(
            "\nThe API is up at {url}. In another shell:\n  export FERRY_SERVER={url} FERRY_TOKEN={token}\n  ferry vm list\n  ferry failover test pgtest1 --wait\n  ferry run list\n  ferry plan show demo\nThe web console is at {url}/ (sign in with the token above; docs/console.md).\nCtrl-C stops the demo (its temporary directory is removed).",
        );
        // One write, and a closed stream is no reason to stop serving.
        use std::io::Write as _;
        let _ = if json {
            std::io::stderr().write_all(format!("{hint}\n").as_bytes())
        } else {
            std::io::stdout().write_all(format!("{hint}\n").as_bytes())
        };
        crate::shutdown::signal().await;
    }
    server.stop().await;
    sim.shutdown_token().cancel();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Follows the run `what` (the test failover, the cleanup) to its end, with progress;
/// an error that says where to look unless it ended `done`.
async fn follow_to_done(
    api: &Api,
    run_id: &str,
    what: &str,
    output: Output,
) -> anyhow::Result<RunDetail> {
    let detail = progress::follow(api, run_id, output).await?;
    if detail.run.state != "done" {
        anyhow::bail!(
            "the {what} ended {}: {}; `ferry run show {run_id}` says more",
            detail.run.state,
            detail.run.error.as_deref().unwrap_or("no reason recorded"),
        );
    }
    Ok(detail)
}

/// What cloudsim still holds that the cleanups should have removed: test VMs of `vms`,
/// snapshots, replicas not on the appliance.
async fn leftovers(client: &cloudstack::Client, vms: &[VmDetail]) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for v in client
        .list_virtual_machines(&cloudstack::VmFilter::default())
        .await?
    {
        if vms
            .iter()
            .any(|vm| v.name.starts_with(&format!("{}-test", vm.name)))
        {
            found.push(format!("test VM {} ({}) is {}", v.name, v.id, v.state));
        }
    }
    for s in client.list_snapshots(None, None).await? {
        found.push(format!(
            "snapshot {} of volume {}",
            s.id,
            s.volumeid.as_ref().map_or("?", |id| id.as_str())
        ));
    }
    for d in vms.iter().flat_map(|vm| &vm.disks) {
        if d.attached_vm_id.as_deref() != Some(ids::APPLIANCE_OMA) {
            found.push(format!(
                "replica {} is not on the appliance",
                d.replica_volume_id
            ));
        }
    }
    Ok(found)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("   {l}\n"))
        .collect::<String>()
}
