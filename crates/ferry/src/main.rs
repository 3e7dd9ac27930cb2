//! `ferry`: fails over VMware VMs with all of their disks into Apache CloudStack.
//!
//! This binary is the operator's entry point:
//! - `ferry demo`: everything embedded, pgtest1 through a test failover and cleanup;
//! - `ferry bench`: K VMs × N disks on A appliances through test failover and cleanup,
//!   measured against the lower bound CloudStack's queues allow;
//! - `ferry serve`: the REST API, the engine worker and the in-process volume daemon;
//! - `ferry vm …`, `ferry failover …`, `ferry run …`: clients of a server's API
//!   ([`client`]);
//! - `ferry volumed`: the volume agent of one appliance;
//! - `ferry cloudsim`: the CloudStack simulator ferry is tested against;
//! - `ferry completions SHELL`.
//!
//! Exit codes: 0 success; 1 the operation failed (a run unwound or is stuck); 2 bad
//! usage, a refused request, or a server that cannot be reached; 130 Ctrl-C stopped
//! following a run (`--wait`, `ferry run watch`), which goes on in the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

mod bench;
mod client;
mod demo;
mod embedded;
mod serve;
mod shutdown;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Fails over VMware VMs with all of their disks into Apache CloudStack"
)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `ferry=debug`.
    #[arg(long, global = true, env = "FERRY_LOG", default_value = "warn")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(flatten)]
    connection: client::ConnectionArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything embedded (SQLite in a temporary directory, cloudsim, the volume
    /// daemon, the engine) and take pgtest1 through a test failover and its cleanup.
    Demo(demo::DemoArgs),
    /// Measure ferry against cloudsim: K VMs × N disks on A appliances through test
    /// failover and cleanup, the makespan against the lower bound CloudStack's queues
    /// allow (docs/benchmarks.md). Exit 1 if a run did not end done.
    Bench(bench::BenchArgs),
    /// Serve the REST API with the engine worker (and the in-process volume daemon for
    /// appliances without an agent).
    Serve(serve::ServeArgs),
    /// Protected VMs: add, list, show, remove.
    #[command(subcommand)]
    Vm(client::VmCommand),
    /// Start a workflow on a protected VM.
    #[command(subcommand)]
    Failover(client::FailoverCommand),
    /// Runs of workflows: list, show, watch, cancel, retry, abandon.
    #[command(subcommand)]
    Run(client::RunCommand),
    /// Appliances and their volume agents: list, show.
    #[command(subcommand)]
    Appliance(client::appliances::ApplianceCommand),
    /// Recovery plans: applications as boot tiers of protected VMs — add, update, list,
    /// show, remove.
    #[command(subcommand)]
    Plan(client::plans::PlanCommand),
    /// The evidence report of a run or a plan run (docs/report.md): one self-contained
    /// HTML file that prints to PDF (the default), or its JSON; both carry a SHA-256
    /// digest over the facts.
    Report(client::report::ReportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Run cloudsim, a CloudStack API simulator, until SIGTERM or SIGINT.
    ///
    /// Once it accepts requests it prints one JSON line on stdout with `endpoint`,
    /// `admin`, `api_key`, `secret_key`, `zone_id`, `appliances` (name → VM id) and
    /// `sysfs_roots`.
    Cloudsim(CloudsimArgs),
    /// Run the volume daemon's REST API (on an appliance) until SIGTERM or SIGINT.
    ///
    /// The CloudStack secret key comes from FERRY_CLOUDSTACK_SECRET or
    /// --cloudstack-secret-file, the API's bearer token from FERRY_VOLUMED_TOKEN or
    /// --token-file — never from the command line. Operations are journaled in
    /// --database, and those in flight at a crash are resumed at start. Once it accepts
    /// requests it prints one JSON line on stdout: {"url": "http://ADDR"}.
    Volumed(VolumedArgs),
}

#[derive(Debug, clap::Args)]
struct VolumedArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// CloudStack's API URL, e.g. https://cloud.example.com/client/api.
    #[arg(long)]
    cloudstack_endpoint: String,
    /// CloudStack API key (not secret; the secret key is read from the environment or
    /// a file).
    #[arg(long)]
    api_key: String,
    /// File holding the CloudStack secret key (else FERRY_CLOUDSTACK_SECRET).
    #[arg(long)]
    cloudstack_secret_file: Option<PathBuf>,
    /// File holding the API's bearer token (else FERRY_VOLUMED_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The CloudStack VM id of the appliance this daemon runs on; device waits are
    /// answered for it only.
    #[arg(long)]
    appliance_vm_id: Option<String>,
    /// Where the appliance's /sys and /dev are (/ on the appliance itself).
    #[arg(long, default_value = "/")]
    sysfs_root: PathBuf,
    /// The journal of volume operations: a SQLite file (created on first start) or a
    /// postgres:// URL. Operations in flight when the daemon stopped are resumed from
    /// it at start.
    #[arg(long, default_value = "ferry-volumed.db")]
    database: String,
    /// PEM certificate chain to serve HTTPS with (with --tls-key). Without them the
    /// daemon serves plain HTTP, which it allows on a loopback address only.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// First poll of a CloudStack async job after this many ms (as
    /// `cloudstack.poll_first_ms` of `ferry serve`); the client then learns each
    /// command's usual duration.
    #[arg(long, default_value_t = 500)]
    poll_first_ms: u64,
    /// Polls of one job at most this many ms apart (`cloudstack.poll_max_ms`).
    #[arg(long, default_value_t = 5_000)]
    poll_max_ms: u64,
    /// Give up waiting on one job after this long (`cloudstack.job_deadline_secs`); the
    /// operation stays unfinished and is looked at again.
    #[arg(long, default_value_t = 1_800)]
    job_deadline_secs: u64,
    /// At most this many CloudStack API calls (polls included) per
    /// --rate-limit-interval-ms, spread evenly; 0 sets no limit (as
    /// `cloudstack.rate_limit_calls` of `ferry serve`).
    #[arg(long, default_value_t = 0)]
    rate_limit_calls: u32,
    #[arg(long, default_value_t = 1_000)]
    rate_limit_interval_ms: u64,
    /// How long this cloud's async jobs take compared with a typical KVM cloud's (as
    /// `cloudstack.job_duration_scale` of `ferry serve`): when a job of a command not
    /// seen to finish yet is first polled.
    #[arg(long, default_value_t = 1.0)]
    job_duration_scale: f64,
    /// The agent API revision to claim (tests of the engine's refusal only).
    #[arg(long, hide = true)]
    api_revision: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct CloudsimArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// World file (TOML); the built-in world when omitted.
    #[arg(long)]
    world: Option<PathBuf>,
    /// Root of the appliances' emulated /sys/block and /dev/disk/by-id.
    #[arg(long)]
    sysfs_root: Option<PathBuf>,
    /// Multiplies every simulated latency (0.01: a 3 s attach takes 30 ms).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    time_scale: f64,
    /// Keep the simulated cloud in this file, as CloudStack keeps its database: started
    /// from it when it exists (jobs in flight then end failed, as at a management-server
    /// restart), else from the world; written as it changes.
    #[arg(long)]
    state_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log, cli.log_json) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let connection = cli.connection;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Cloudsim(args) => cloudsim(args).await.map(|()| ExitCode::SUCCESS),
            Command::Volumed(args) => volumed(args).await.map(|()| ExitCode::SUCCESS),
            Command::Serve(args) => serve::run(args).await,
            Command::Demo(args) => demo::run(args, &connection).await,
            Command::Bench(args) => bench::run(args, &connection).await,
            Command::Vm(command) => Ok(client::vm(command, &connection).await),
            Command::Failover(command) => Ok(client::failover(command, &connection).await),
            Command::Run(command) => Ok(client::run(command, &connection).await),
            Command::Appliance(command) => {
                Ok(client::appliances::appliance(command, &connection).await)
            }
            Command::Plan(command) => Ok(client::plans::plan(command, &connection).await),
            Command::Report(args) => Ok(client::report::report(args, &connection).await),
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "ferry",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(filter: &str, json: bool) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| {
        format!("--log / FERRY_LOG `{filter}` is not a log filter ({e}); use e.g. `info` or `warn,server=debug`")
    })?;
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Whether log lines are coloured: only on a terminal, and not when `NO_COLOR` is set
/// to anything but the empty string (<https://no-color.org>). A journal, a file or a
/// pipe gets plain text.
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

async fn cloudsim(args: CloudsimArgs) -> anyhow::Result<()> {
    if !(args.time_scale.is_finite() && args.time_scale >= 0.0) {
        anyhow::bail!(
            "--time-scale must be a number ≥ 0 (got {}); 1 is real time, 0.01 is 100× faster",
            args.time_scale
        );
    }
    let world = match &args.world {
        None => cloudsim::World::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the world file {}", path.display()))?;
            cloudsim::World::from_toml(&text)
                .with_context(|| format!("the world file {} is not valid", path.display()))?
        }
    };
    let config = cloudsim::SimConfig {
        world,
        sysfs_root: args.sysfs_root,
        time_scale: args.time_scale,
    };
    let running = cloudsim::start_with_state_file(config, args.listen, args.state_file)
        .await
        .with_context(|| format!("cannot start cloudsim on {}", args.listen))?;
    println!("{}", serde_json::to_string(&running.announcement)?);
    let token = running.shutdown_token();
    tokio::spawn(async move {
        shutdown::signal().await;
        token.cancel();
    });
    running
        .wait()
        .await
        .context("cloudsim stopped with an error")
}

/// A secret from `file` (trailing newline removed) or else the environment variable
/// `env`; never from the command line.
fn secret(what: &str, env: &str, file: Option<&PathBuf>) -> anyhow::Result<secrecy::SecretString> {
    let value = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => std::env::var(env)
            .map_err(|_| anyhow::anyhow!("no {what}: set {env} or pass the file that holds it"))?,
    };
    anyhow::ensure!(!value.is_empty(), "the {what} is empty");
    Ok(secrecy::SecretString::from(value))
}

async fn volumed(args: VolumedArgs) -> anyhow::Result<()> {
    use std::sync::Arc;
    let cloudstack_secret = secret(
        "CloudStack secret key",
        "FERRY_CLOUDSTACK_SECRET",
        args.cloudstack_secret_file.as_ref(),
    )?;
    let token = secret(
        "volume daemon token",
        "FERRY_VOLUMED_TOKEN",
        args.token_file.as_ref(),
    )?;
    anyhow::ensure!(
        args.poll_first_ms >= 1
            && args.poll_max_ms >= args.poll_first_ms
            && args.job_deadline_secs >= 1,
        "--poll-first-ms must be at least 1, --poll-max-ms at least --poll-first-ms, and \
         --job-deadline-secs at least 1 (got {}, {}, {})",
        args.poll_first_ms,
        args.poll_max_ms,
        args.job_deadline_secs
    );
    let mut client_config =
        cloudstack::Config::new(&args.cloudstack_endpoint, &args.api_key, cloudstack_secret);
    client_config.poll = cloudstack::PollPolicy {
        first: std::time::Duration::from_millis(args.poll_first_ms),
        max: std::time::Duration::from_millis(args.poll_max_ms),
        deadline: std::time::Duration::from_secs(args.job_deadline_secs),
        ..cloudstack::PollPolicy::default()
    };
    anyhow::ensure!(
        args.job_duration_scale.is_finite()
            && args.job_duration_scale > 0.0
            && args.job_duration_scale <= 1_000.0,
        "--job-duration-scale must be a number > 0 and ≤ 1000 (got {}); 1 is a typical KVM \
         cloud's pace",
        args.job_duration_scale
    );
    client_config.job_priors = cloudstack::JobPriors::typical(args.job_duration_scale);
    anyhow::ensure!(
        args.rate_limit_interval_ms >= 1,
        "--rate-limit-interval-ms must be at least 1"
    );
    client_config.rate_limit = (args.rate_limit_calls > 0).then(|| cloudstack::RateLimit {
        calls: args.rate_limit_calls,
        interval: std::time::Duration::from_millis(args.rate_limit_interval_ms),
    });
    let client =
        cloudstack::Client::new(client_config).context("cannot build the CloudStack client")?;
    let tls = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    anyhow::ensure!(
        tls.is_some() || args.listen.ip().is_loopback(),
        "refusing to serve plain HTTP on {}: the token and the appliance's volume commands \
         would cross the network in clear. Give --tls-cert and --tls-key, or listen on a \
         loopback address (127.0.0.1) behind your own TLS proxy",
        args.listen
    );
    let mut config = volumed::LocalConfig::default();
    let mut identity = volumed::server::Identity::new(Vec::new());
    if let Some(vm) = args.appliance_vm_id {
        identity.serves.push(vm.as_str().into());
        config.appliances.insert(vm, args.sysfs_root);
    }
    if let Some(revision) = args.api_revision {
        identity.api_revision = revision;
    }
    let store = store::Store::connect(&args.database)
        .await
        .with_context(|| format!("cannot open the journal database {}", args.database))?;
    let journal: Arc<dyn volumed::Journal> = Arc::new(volumed::StoreJournal::new(store));
    let local = Arc::new(volumed::Local::new(client, journal, config));
    // Operations a previous run left in flight: waited on by their job ids, or settled
    // by looking at CloudStack, before anything is sent again.
    let resuming = Arc::clone(&local);
    tokio::spawn(async move {
        match resuming.resume_unfinished().await {
            Ok(resumed) => {
                for op in resumed {
                    match &op.outcome {
                        Ok(_) => {
                            tracing::info!(op = %op.op_id, key = %op.idempotency_key, kind = ?op.kind, by_job_id = op.had_job_id, "resumed operation finished")
                        }
                        Err(e) => {
                            tracing::warn!(op = %op.op_id, key = %op.idempotency_key, kind = ?op.kind, error = %e, "resumed operation failed")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot resume the operations in flight"),
        }
    });
    let service: Arc<dyn volumed::VolumeService> = local;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "{}",
        serde_json::json!({ "url": format!("{scheme}://{addr}") })
    );
    match tls {
        Some(files) => {
            volumed::server::serve_tls(
                listener,
                service,
                token,
                identity,
                files,
                shutdown::signal(),
            )
            .await
        }
        None => {
            volumed::server::serve(listener, service, token, identity, shutdown::signal()).await
        }
    }
    .context("the volume daemon stopped with an error")
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
        assert!(!colour(false, Some("".into())));
    }
}
