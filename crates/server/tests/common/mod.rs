//! What the reliability tests of the server share: cloudsim with a world of any size
//! (protected VMs spread over as many appliances as their disks need), `server::start`
//! on port 0 in this process, and a small client for its REST API.

#![allow(dead_code)]

use std::time::Duration;

use cloudsim::SimConfig;
use cloudsim::world::{ApplianceDef, VolumeDef, World, ids};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use server::config::{Builder, EngineSection, TargetSection};
use tokio_util::sync::CancellationToken;

pub type TestResult = anyhow::Result<()>;

pub const TOKEN: &str = "reliability-token-6f1d2c9a";

/// CloudStack's limit of data volumes on one VM (KVM): an appliance holds at most this
/// many replicas.
pub const MAX_DATA_VOLUMES: usize = 32;

/// One generated protected VM: its name, appliance, and replica volume ids (boot
/// first).
#[derive(Debug, Clone)]
pub struct GenVm {
    pub name: String,
    pub appliance: String,
    pub appliance_id: String,
    pub replicas: Vec<String>,
    pub mac: String,
}

/// A world of `vms` protected VMs of `disks` disks each: the built-in world's zone,
/// offerings, template and networks, and as many appliances as the replicas need at
/// 32 a piece (no VM's replicas split over two appliances).
pub fn world(vms: usize, disks: usize) -> (World, Vec<GenVm>) {
    world_of(&vec![disks; vms])
}

/// A world of one protected VM per entry of `disks`, of that many disks (`vm000`
/// first), packed onto appliances of 32 replicas at most as [`world`] does.
pub fn world_of(disks: &[usize]) -> (World, Vec<GenVm>) {
    let mut world = World::default();
    world.appliances.clear();
    let mut out = Vec::new();
    let mut used = MAX_DATA_VOLUMES;
    for (i, &disks) in disks.iter().enumerate() {
        assert!((1..=MAX_DATA_VOLUMES).contains(&disks));
        if used + disks > MAX_DATA_VOLUMES {
            let a = world.appliances.len();
            world.appliances.push(ApplianceDef {
                id: Some(format!("a{a:07x}-0000-4000-8000-000000000001")),
                name: format!("oma{a:02}"),
                zone: None,
                root_volume_id: Some(format!("a{a:07x}-0000-4000-8000-000000000002")),
                volumes: Vec::new(),
            });
            used = 0;
        }
        used += disks;
        let appliance = world.appliances.last_mut().expect("one");
        let name = format!("vm{i:03}");
        let mut replicas = Vec::new();
        for d in 0..disks {
            // The first 20 hex digits are a disk's serial in the guest: keep them apart.
            let id = format!("{:08x}-{d:04x}-4000-8000-{i:012x}", i * 64 + d + 1);
            appliance.volumes.push(VolumeDef {
                id: Some(id.clone()),
                name: format!("{name}-disk-{}", 2000 + d),
                size_gb: if d == 0 { 20 } else { 10 + d as i64 },
                zone: None,
            });
            replicas.push(id);
        }
        out.push(GenVm {
            name,
            appliance: appliance.name.clone(),
            appliance_id: appliance.id.clone().expect("set"),
            replicas,
            mac: format!(
                "00:50:56:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            ),
        });
    }
    (world, out)
}

impl GenVm {
    /// The VM definition (docs/vm-definition.md) that registers it.
    pub fn definition(&self) -> String {
        let mut text = format!(
            r#"
name = "{name}"
source_id = "5029a4d2-8b1e-4c1a-9f3e-{n:012x}"
appliance = "{appliance}"

[spec]
vcpu = 2
memory_mb = 2048
cpu_speed_mhz = 2000
firmware = "bios"
guest_os = "linux"

[[nics]]
mac = "{mac}"
source_network = "VM Network"
test_network = "test"
production_network = "production"
"#,
            name = self.name,
            n = self.name[2..].parse::<u64>().unwrap_or(0),
            appliance = self.appliance,
            mac = self.mac,
        );
        for (d, id) in self.replicas.iter().enumerate() {
            text.push_str(&format!(
                r#"
[[disks]]
key = {key}
controller = "scsi"
bus = 0
unit = {d}
capacity_gib = {gib}
label = "Hard disk {label}"
boot = {boot}
replica_volume_id = "{id}"
"#,
                key = 2000 + d,
                gib = if d == 0 { 20 } else { 10 + d },
                label = d + 1,
                boot = d == 0,
            ));
        }
        text
    }
}

/// A port nothing listens on now: the kernel's pick for 127.0.0.1, let go.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The checked-in example definition of pgtest1 (docs/examples/pgtest1.toml), the VM
/// of cloudsim's built-in world.
pub fn pgtest1_definition() -> std::io::Result<String> {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/pgtest1.toml"
    ))
}

pub struct Server {
    pub url: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub sim: cloudsim::Running,
    pub dir: tempfile::TempDir,
    /// The server's task: it ends once `shutdown` is cancelled and everything stopped.
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.sim.shutdown_token().cancel();
    }
}

/// cloudsim with `world` at a time scale of 0.001, and `server::start` on port 0 with
/// a SQLite file, every appliance of the world, and `engine` as its `[engine]`.
pub async fn server(world: World, engine: EngineSection) -> anyhow::Result<Server> {
    server_with_hooks(world, engine, workflows::Hooks::default()).await
}

/// [`server`] with an engine that claims runs every 50 ms (a plan run's VMs start
/// promptly), and `vms` registered.
pub async fn server_of(world: World, vms: &[GenVm]) -> anyhow::Result<Server> {
    let server = server(
        world,
        EngineSection {
            claim_interval_ms: 50,
            ..EngineSection::default()
        },
    )
    .await?;
    for vm in vms {
        server.add(&vm.definition()).await?;
    }
    Ok(server)
}

/// [`server`] with `hooks` as its `[hooks]`.
pub async fn server_with_hooks(
    world: World,
    engine: EngineSection,
    hooks: workflows::Hooks,
) -> anyhow::Result<Server> {
    server_paced(world, engine, hooks, 0.001).await
}

/// [`server_with_hooks`] with cloudsim at `time_scale` (0.001: a 3 s attach takes
/// 3 ms; 0.1: 300 ms), the client's expectations scaled alike.
pub async fn server_paced(
    world: World,
    engine: EngineSection,
    hooks: workflows::Hooks,
    time_scale: f64,
) -> anyhow::Result<Server> {
    server_configured(world, time_scale, |config| {
        config.engine(engine).hooks(hooks)
    })
    .await
}

/// cloudsim with `world` at `time_scale`, and `server::start` on port 0 with a SQLite
/// file and every appliance of the world, its config made by `configure` from one
/// with the keys that connect it to cloudsim.
pub async fn server_configured(
    world: World,
    time_scale: f64,
    configure: impl FnOnce(Builder) -> Builder,
) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let sysfs = dir.path().join("sysfs");
    let appliances: Vec<(String, String)> = world
        .appliances
        .iter()
        .map(|a| (a.name.clone(), a.id.clone().expect("appliance ids are set")))
        .collect();
    let sim = cloudsim::start(
        SimConfig {
            world,
            sysfs_root: Some(sysfs.clone()),
            time_scale,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let mut config = Builder::new(
        sim.endpoint(),
        ids::API_KEY,
        TargetSection {
            zone_id: ids::ZONE.into(),
            service_offering_id: ids::OFFERING_CUSTOM.into(),
            template_id: ids::TEMPLATE.into(),
        },
    )
    .database(dir.path().join("ferry.db").display().to_string())
    .poll_ms(5, 50)
    .job_duration_scale(time_scale);
    config = configure(config);
    for (name, id) in &appliances {
        let root = sim
            .announcement
            .sysfs_roots
            .get(name)
            .expect("cloudsim announces each appliance's tree");
        config = config.appliance(name, id, root);
    }
    let config = config.build()?;
    let settings = server::Settings {
        config,
        cloudstack_secret: SecretString::from(ids::SECRET_KEY.to_string()),
        api_token: SecretString::from(TOKEN.to_string()),
        agent_tokens: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let running = server::start(settings, listener, shutdown.clone()).await?;
    Ok(Server {
        url: format!("http://{}", running.addr),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        shutdown,
        sim,
        dir,
        task: Some(running.task),
    })
}

impl Server {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// Registers a VM from its definition text.
    pub async fn add(&self, definition: &str) -> anyhow::Result<Value> {
        let (status, body) = self
            .post("/v1/vms", Some(json!({ "definition": definition })))
            .await?;
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "registering: {status} {body}"
        );
        Ok(body)
    }

    pub async fn add_pgtest1(&self) -> anyhow::Result<Value> {
        self.add(&pgtest1_definition()?).await
    }

    /// Polls the run until it is no longer active.
    pub async fn finish(&self, run_id: &str, within: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let (status, run) = self.get(&format!("/v1/runs/{run_id}")).await?;
            anyhow::ensure!(status == StatusCode::OK, "{run}");
            let state = run["state"].as_str().unwrap_or_default().to_string();
            if !matches!(state.as_str(), "pending" | "running" | "unwinding") {
                return Ok(run);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not finish: {run}"
            );
        }
    }

    /// Polls plan run `id` until it is no longer pending or running.
    pub async fn finish_plan_run(&self, id: &str, within: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, run) = self.get(&format!("/v1/plan-runs/{id}")).await?;
            anyhow::ensure!(status == StatusCode::OK, "{status} {run}");
            if !matches!(run["state"].as_str(), Some("pending" | "running")) {
                return Ok(run);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "plan run still going: {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// cloudsim's admin endpoint `path`.
    pub async fn admin(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/{path}", self.sim.announcement.admin))
            .send()
            .await?
            .json()
            .await?)
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/{path}", self.sim.announcement.admin))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
