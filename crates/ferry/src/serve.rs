//! `ferry serve`: the REST API, the engine worker and the in-process volume daemon,
//! from the config file, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use store::redact_url;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file (docs/examples/ferry.toml shows every key).
    #[arg(long, env = "FERRY_CONFIG", default_value = "/etc/ferry/ferry.toml")]
    config: PathBuf,
    /// The database, over the config and FERRY_DATABASE_URL: a SQLite path or a
    /// postgres:// URL.
    #[arg(long)]
    database: Option<String>,
    /// The API's address, over the config and FERRY_LISTEN; port 0 picks a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Do not serve the web console at `/` (over the config's `[console] enabled`); the
    /// REST API is served all the same.
    #[arg(long)]
    no_console: bool,
    /// Check the config and its secrets, print what would run, and exit: 0 when it is
    /// usable, 2 with every problem when it is not.
    #[arg(long)]
    check_config: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = server::Config::load(&args.config)?;
    if let Some(database) = args.database {
        config.database.url = database;
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if args.no_console {
        config.console.enabled = false;
    }
    config.check()?;
    let settings = server::Settings::resolve(config)?;
    let config = &settings.config;
    if args.check_config {
        println!("config {}: ok", args.config.display());
        println!("  api          http://{}", config.server.listen);
        println!(
            "  console      {}",
            if config.console.enabled {
                format!(
                    "http://{}/ (sessions last {} h)",
                    config.server.listen, config.console.session_hours
                )
            } else {
                "off".into()
            }
        );
        println!("  database     {}", redact_url(&config.database.url));
        println!(
            "  cloudstack   {} (api key {}, secret key read)",
            config.cloudstack.endpoint, config.cloudstack.api_key
        );
        println!(
            "  target       zone {}, offering {}, template {}",
            config.target.zone_id, config.target.service_offering_id, config.target.template_id
        );
        for a in &config.appliances {
            println!(
                "  appliance    {} (VM {}, devices under {})",
                a.name,
                a.vm_id,
                a.sysfs_root.display()
            );
        }
        println!(
            "  engine       {} runs at once, lease {} s, {} attempts per step",
            config.engine.concurrency, config.engine.lease_secs, config.engine.max_attempts
        );
        println!(
            "  guest prep   {}",
            config
                .guest_prep
                .as_ref()
                .map(|g| format!("{} {}", g.program, g.args.join(" ")))
                .unwrap_or_else(|| "not configured (VMs that need it are refused)".into())
        );
        println!(
            "  hooks        {} before live failover, {} after rollback",
            config.hooks.before_live.len(),
            config.hooks.after_rollback.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let running = server::start(settings, listener, shutdown.clone()).await?;
    // One line for whoever started the process (tests, scripts) to find the API.
    println!("{}", serde_json::json!({ "url": format!("http://{addr}") }));
    let mut task = running.task;
    let finished = tokio::select! {
        _ = crate::shutdown::signal() => {
            tracing::info!("stopping: runs in progress resume at the next start");
            shutdown.cancel();
            task.await
        }
        finished = &mut task => finished,
    };
    finished.context("the server task failed")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_database_password_is_not_printed() {
        assert_eq!(
            super::redact_url("postgres://ferry:s3cret@db/ferry"),
            "postgres://ferry:***@db/ferry"
        );
        assert_eq!(
            super::redact_url("postgres://ferry@db/ferry"),
            "postgres://ferry@db/ferry"
        );
        assert_eq!(super::redact_url("ferry.db"), "ferry.db");
    }
}
