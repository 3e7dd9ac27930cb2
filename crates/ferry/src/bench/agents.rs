//! `ferry bench --agents`: the deployed topology on one machine — one `ferry volumed`
//! child per appliance, each seeing only its own appliance's emulated disks and
//! journaling in its own SQLite file, and the engine (this process) seeing none.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;

/// The running agents, killed when dropped (also when the bench fails half-way).
pub(super) struct Agents {
    agents: Vec<Agent>,
}

/// One appliance's agent.
pub(super) struct Agent {
    pub(super) appliance: String,
    pub(super) url: String,
    child: tokio::process::Child,
}

/// What every agent is started with.
pub(super) struct Common<'a> {
    /// CloudStack's endpoint, API key and secret key.
    pub(super) cloudstack: (&'a str, &'a str, &'a str),
    /// The engine's polling (first, max, in ms), which the agents get too.
    pub(super) poll_ms: (u64, u64),
    /// The engine's `cloudstack.job_duration_scale`, which the agents get too.
    pub(super) job_duration_scale: f64,
    /// Each agent's share of the API rate limit: calls per ms, if on.
    pub(super) rate_limit: Option<(u32, u64)>,
    /// The file holding the agents' token.
    pub(super) token_file: &'a Path,
    /// Where their journals and logs go.
    pub(super) dir: &'a Path,
}

impl Agents {
    /// Starts an agent for every `(name, vm_id, sysfs_root)`, all at once, and waits
    /// for each one's announcement.
    pub(super) async fn spawn(
        appliances: &[(String, String, std::path::PathBuf)],
        common: &Common<'_>,
    ) -> anyhow::Result<Agents> {
        let starts = appliances
            .iter()
            .map(|(name, vm_id, root)| spawn_one(name, vm_id, root, common));
        let agents = futures::future::try_join_all(starts).await?;
        Ok(Agents { agents })
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Agent> {
        self.agents.iter()
    }

    /// The agents' peak resident memory, summed, in MiB (`VmHWM` of each), read before
    /// they are stopped.
    pub(super) fn peak_rss_mib(&self) -> Option<f64> {
        let mut total = 0.0;
        for agent in &self.agents {
            let pid = agent.child.id()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            total += kib / 1024.0;
        }
        Some(total)
    }

    pub(super) async fn stop(mut self) {
        for agent in &mut self.agents {
            let _ = agent.child.start_kill();
            let _ = agent.child.wait().await;
        }
    }
}

async fn spawn_one(
    name: &str,
    vm_id: &str,
    root: &Path,
    common: &Common<'_>,
) -> anyhow::Result<Agent> {
    let Common {
        cloudstack: (endpoint, api_key, secret_key),
        poll_ms: (poll_first_ms, poll_max_ms),
        job_duration_scale,
        rate_limit,
        token_file,
        dir,
    } = *common;
    let exe = std::env::current_exe().context("cannot find the ferry binary")?;
    let log = std::fs::File::create(dir.join(format!("agent-{name}.log")))
        .with_context(|| format!("cannot create the log of {name}'s agent"))?;
    let (rate_calls, rate_interval_ms) = rate_limit.unwrap_or((0, 1000));
    let mut child = tokio::process::Command::new(exe)
        .args(["volumed", "--listen", "127.0.0.1:0"])
        .args(["--cloudstack-endpoint", endpoint, "--api-key", api_key])
        .args(["--appliance-vm-id", vm_id])
        .args(["--poll-first-ms", &poll_first_ms.to_string()])
        .args(["--poll-max-ms", &poll_max_ms.to_string()])
        .args(["--job-duration-scale", &job_duration_scale.to_string()])
        .args(["--rate-limit-calls", &rate_calls.to_string()])
        .args(["--rate-limit-interval-ms", &rate_interval_ms.to_string()])
        .arg("--sysfs-root")
        .arg(root)
        .arg("--token-file")
        .arg(token_file)
        .arg("--database")
        .arg(dir.join(format!("agent-{name}.db")))
        .env("FERRY_CLOUDSTACK_SECRET", secret_key)
        .env("FERRY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the agent of {name}"))?;
    let stdout = child.stdout.take().context("the agent's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .with_context(|| format!("the agent of {name} did not announce itself within 60 s"))??
        .with_context(|| {
            format!(
                "the agent of {name} exited without announcing itself (see {})",
                dir.join(format!("agent-{name}.log")).display()
            )
        })?;
    let announced: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("the agent of {name} announced {line:?}"))?;
    let url = announced["url"]
        .as_str()
        .with_context(|| format!("the agent of {name} announced no url: {line}"))?
        .to_string();
    Ok(Agent {
        appliance: name.to_string(),
        url,
        child,
    })
}
