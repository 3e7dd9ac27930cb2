//! The topology of a real installation, as processes on port 0: one `ferry cloudsim`
//! with three appliances, one `ferry volumed` **agent per appliance** (each seeing only
//! its own appliance's emulated disks and journaling in its own SQLite file), and
//! `ferry serve` **workers** on one PostgreSQL schema, whose own sysfs root shows no
//! disks — so every volume operation, device wait and guest preparation can only have
//! been done by an agent.
//!
//! An agent can sit behind a [`Proxy`] the test controls, to cut the network between
//! the engine and it; it can be killed (SIGKILL) and started again on its port with
//! its journal.

#![allow(dead_code, reason = "each test binary uses a part of the harness")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use server::config::{Builder, EngineSection, TargetSection};
use tempfile::TempDir;

use crate::cli_harness::{Ferry, TOKEN, cloudsim, spawn_announced};

/// The agents' bearer token.
pub const AGENT_TOKEN: &str = "agent-test-token";

pub const ZONE: &str = "5a7c6f0e-0000-4000-8000-000000000001";
pub const OFFERING: &str = "5a7c6f0e-0000-4000-8000-000000000002";
pub const TEMPLATE: &str = "5a7c6f0e-0000-4000-8000-000000000003";

/// A protected VM of the world: its name, appliance and replica volumes (boot first).
#[derive(Debug, Clone)]
pub struct Vm {
    pub name: String,
    pub appliance: String,
    pub replicas: Vec<String>,
}

/// The world: three appliances, one VM on each, of 2, 3 and 1 disks.
pub fn vms() -> Vec<Vm> {
    [
        ("web", "oma-a", 2),
        ("db", "oma-b", 3),
        ("cache", "oma-c", 1),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, appliance, disks))| Vm {
        name: name.to_string(),
        appliance: appliance.to_string(),
        replicas: (0..disks)
            .map(|d| format!("{i}{d}57a9e0-0000-4000-8000-000000000000"))
            .collect(),
    })
    .collect()
}

pub const APPLIANCES: [&str; 3] = ["oma-a", "oma-b", "oma-c"];

fn world_toml() -> String {
    let mut text = format!(
        r#"[credentials]
api_key = "agents-api-key"
secret_key = "agents-secret-key"

[settings]
kvm_snapshot_enabled = true
max_data_volumes = 32
hotplug_delay_ms = 20

[[zones]]
id = "{ZONE}"
name = "dc"

[[service_offerings]]
id = "{OFFERING}"
name = "Custom"

[[disk_offerings]]
name = "Custom"

[[templates]]
id = "{TEMPLATE}"
name = "placeholder"
size_gb = 8

[[networks]]
name = "test"
cidr = "10.10.0.0/24"

[[networks]]
name = "production"
cidr = "10.20.0.0/24"
"#
    );
    for appliance in APPLIANCES {
        text.push_str(&format!("\n[[appliances]]\nname = \"{appliance}\"\n"));
        for vm in vms().iter().filter(|v| v.appliance == appliance) {
            for (d, id) in vm.replicas.iter().enumerate() {
                text.push_str(&format!(
                    "[[appliances.volumes]]\nid = \"{id}\"\nname = \"{}-disk-{d}\"\nsize_gb = {}\n",
                    vm.name,
                    10 + d
                ));
            }
        }
    }
    text
}

/// The definition file of `vm` (docs/vm-definition.md).
pub fn definition(vm: &Vm, index: usize) -> String {
    let mut text = format!(
        r#"name = "{name}"
source_id = "vm-{index}"
appliance = "{appliance}"

[spec]
vcpu = 2
memory_mb = 2048
firmware = "bios"
guest_os = "linux"
guest_prep = "skip"

[[nics]]
mac = "00:50:56:00:00:0{index}"
source_network = "VM Network"
test_network = "test"
production_network = "production"
"#,
        name = vm.name,
        appliance = vm.appliance,
    );
    for (d, id) in vm.replicas.iter().enumerate() {
        text.push_str(&format!(
            "\n[[disks]]\nkey = {}\ncontroller = \"scsi\"\nbus = 0\nunit = {d}\ncapacity_gib = {}\nlabel = \"Hard disk {}\"\nboot = {}\nreplica_volume_id = \"{id}\"\n",
            2000 + d,
            10 + d,
            d + 1,
            d == 0
        ));
    }
    text
}

/// A free loopback port (bound and let go: a process started next binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One appliance's `ferry volumed`.
pub struct Agent {
    pub appliance: String,
    pub vm_id: String,
    pub port: u16,
    root: PathBuf,
    pub journal: PathBuf,
    child: Option<Child>,
    /// Extra flags (`--api-revision 99`).
    pub extra: Vec<String>,
    starts: u32,
}

impl Agent {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self, cloud: &Cloud, dir: &Path) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .args(["volumed", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--cloudstack-endpoint", &cloud.endpoint])
            .args(["--api-key", &cloud.api_key])
            .args(["--appliance-vm-id", &self.vm_id])
            .args(["--poll-first-ms", "5", "--poll-max-ms", "50"])
            .args(["--job-duration-scale", "0.001"])
            .arg("--sysfs-root")
            .arg(&self.root)
            .arg("--database")
            .arg(&self.journal)
            .args(&self.extra)
            .env("FERRY_CLOUDSTACK_SECRET", &cloud.secret_key)
            .env("FERRY_VOLUMED_TOKEN", AGENT_TOKEN)
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null());
        self.starts += 1;
        // One log per start: the log of a killed agent is kept.
        let log = format!("agent-{}-{}.log", self.appliance, self.starts);
        let (child, ready) = spawn_announced(&mut command, dir, &log);
        assert_eq!(ready["url"], self.url(), "{ready}");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash or a power cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// cloudsim's endpoint, credentials and admin URL.
#[derive(Debug, Clone)]
pub struct Cloud {
    pub endpoint: String,
    pub admin: String,
    pub api_key: String,
    pub secret_key: String,
    pub appliances: BTreeMap<String, String>,
    pub roots: BTreeMap<String, PathBuf>,
}

impl Cloud {
    pub fn client(&self) -> cloudstack::Client {
        cloudstack::Client::new(cloudstack::Config::new(
            self.endpoint.as_str(),
            self.api_key.as_str(),
            secrecy::SecretString::from(self.secret_key.clone()),
        ))
        .expect("a CloudStack client")
    }

    /// `GET /sim/stats`.
    pub fn stats(&self) -> Value {
        block_on(async {
            reqwest::get(format!("{}/stats", self.admin))
                .await
                .expect("stats")
                .json::<Value>()
                .await
                .expect("JSON")
        })
    }
}

/// One `ferry serve` worker.
pub struct Worker {
    pub name: String,
    pub url: String,
    child: Option<Child>,
}

/// The whole topology, killed on drop.
pub struct Topology {
    pub dir: TempDir,
    pub cloud: Cloud,
    sim: Child,
    pub agents: Vec<Agent>,
    pub workers: Vec<Worker>,
    pub database: String,
    /// Where the engine reaches each agent (its URL, or a proxy's), by appliance.
    pub agent_urls: BTreeMap<String, String>,
    /// The VMs registered with guest preparation.
    prepared: Vec<&'static str>,
    _schema: store::testing::TestStore,
}

/// How to set a topology up.
pub struct Setup {
    pub workers: usize,
    /// Appliances whose agent the engine reaches through a [`Proxy`].
    pub proxied: Vec<&'static str>,
    /// How long a run waits out an unreachable party.
    pub outage_tolerance_s: u64,
    /// The token the engine presents to the agents.
    pub engine_token: &'static str,
    /// Appliance → the appliance whose agent the engine is (wrongly) pointed at.
    pub swapped: Vec<(&'static str, &'static str)>,
    /// Appliance → extra flags of its agent.
    pub agent_flags: Vec<(&'static str, Vec<String>)>,
    /// The engine's `[guest_prep]` command, and the VMs whose policy asks for it.
    pub guest_prep: Option<(volumed::GuestPrep, Vec<&'static str>)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            workers: 2,
            proxied: Vec::new(),
            outage_tolerance_s: 300,
            engine_token: AGENT_TOKEN,
            swapped: Vec::new(),
            agent_flags: Vec::new(),
            guest_prep: None,
        }
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

impl Topology {
    pub fn start(setup: Setup, proxies: &mut BTreeMap<String, Proxy>) -> Topology {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let world = dir.path().join("world.toml");
        std::fs::write(&world, world_toml()).expect("the world is written");
        let mut command = cloudsim(0.001);
        command
            .arg("--world")
            .arg(&world)
            .arg("--sysfs-root")
            .arg(dir.path().join("sysfs"));
        let (sim, announcement) = spawn_announced(&mut command, dir.path(), "cloudsim.log");
        let field = |name: &str| announcement[name].as_str().expect(name).to_string();
        let map = |name: &str| -> BTreeMap<String, String> {
            serde_json::from_value(announcement[name].clone()).expect(name)
        };
        let cloud = Cloud {
            endpoint: field("endpoint"),
            admin: field("admin"),
            api_key: field("api_key"),
            secret_key: field("secret_key"),
            appliances: map("appliances"),
            roots: map("sysfs_roots")
                .into_iter()
                .map(|(k, v)| (k, PathBuf::from(v)))
                .collect(),
        };

        let mut agents: Vec<Agent> = APPLIANCES
            .iter()
            .map(|a| Agent {
                appliance: a.to_string(),
                vm_id: cloud.appliances[*a].clone(),
                port: free_port(),
                root: cloud.roots[*a].clone(),
                journal: dir.path().join(format!("agent-{a}.db")),
                child: None,
                starts: 0,
                extra: setup
                    .agent_flags
                    .iter()
                    .find(|(x, _)| x == a)
                    .map(|(_, f)| f.clone())
                    .unwrap_or_default(),
            })
            .collect();
        for agent in &mut agents {
            agent.start(&cloud, dir.path());
        }
        let mut agent_urls = BTreeMap::new();
        for a in APPLIANCES {
            let serving = setup
                .swapped
                .iter()
                .find(|(x, _)| *x == a)
                .map_or(a, |(_, y)| *y);
            let agent = agents
                .iter()
                .find(|g| g.appliance == serving)
                .expect("agent");
            let url = if setup.proxied.contains(&a) {
                let proxy = Proxy::start(agent.port);
                let url = proxy.url();
                proxies.insert(a.to_string(), proxy);
                url
            } else {
                agent.url()
            };
            agent_urls.insert(a.to_string(), url);
        }

        let schema = block_on(store::testing::postgres()).expect("a PostgreSQL schema");
        let token_file = dir.path().join("agent.token");
        std::fs::write(&token_file, setup.engine_token).expect("the token file");
        let empty = dir.path().join("no-devices");
        std::fs::create_dir_all(empty.join("sys/block")).expect("an empty sysfs root");
        let mut topology = Topology {
            dir,
            cloud,
            sim,
            agents,
            workers: Vec::new(),
            database: schema.url.clone(),
            agent_urls,
            prepared: setup
                .guest_prep
                .as_ref()
                .map(|(_, vms)| vms.clone())
                .unwrap_or_default(),
            _schema: schema,
        };
        for i in 0..setup.workers {
            let mut config = Builder::new(
                topology.cloud.endpoint.as_str(),
                topology.cloud.api_key.as_str(),
                TargetSection {
                    zone_id: ZONE.into(),
                    service_offering_id: OFFERING.into(),
                    template_id: TEMPLATE.into(),
                },
            )
            .database(topology.database.clone())
            .poll_ms(5, 50)
            .job_duration_scale(0.001)
            .engine(EngineSection {
                worker_name: Some(format!("worker-{i}")),
                claim_interval_ms: 100,
                lease_secs: 3,
                outage_tolerance_s: setup.outage_tolerance_s,
                ..EngineSection::default()
            });
            if let Some((prep, _)) = &setup.guest_prep {
                config = config.guest_prep(prep.clone());
            }
            for a in APPLIANCES {
                config = config.appliance_with_agent(
                    a,
                    topology.cloud.appliances[a].as_str(),
                    topology.agent_urls[a].as_str(),
                    &token_file,
                    None,
                );
            }
            let mut config = config.build().expect("the config is valid");
            for a in &mut config.appliances {
                // The worker's own view of the appliances: no disks at all.
                a.sysfs_root = empty.clone();
            }
            let path = topology.dir.path().join(format!("worker-{i}.toml"));
            std::fs::write(&path, config.to_toml().expect("TOML")).expect("written");
            topology.start_worker(i, &path);
        }
        topology
    }

    fn start_worker(&mut self, i: usize, config: &Path) {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_ferry"));
        serve
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("FERRY_CLOUDSTACK_SECRET", &self.cloud.secret_key)
            .env("FERRY_TOKEN", TOKEN)
            .env("FERRY_LOG", "info")
            .env_remove("FERRY_VOLUMED_TOKEN")
            .env_remove("FERRY_DATABASE_URL")
            .env_remove("FERRY_LISTEN")
            .stdin(Stdio::null());
        let (child, ready) =
            spawn_announced(&mut serve, self.dir.path(), &format!("worker-{i}.log"));
        let worker = Worker {
            name: format!("worker-{i}"),
            url: ready["url"].as_str().expect("url").to_string(),
            child: Some(child),
        };
        if i < self.workers.len() {
            self.workers[i] = worker;
        } else {
            self.workers.push(worker);
        }
    }

    /// `ferry` against worker `i`.
    pub fn ferry(&self, i: usize) -> Ferry {
        Ferry::bare()
            .env("FERRY_SERVER", &self.workers[i].url)
            .env("FERRY_TOKEN", TOKEN)
            .dir(self.dir.path())
    }

    /// Slows CloudStack's commands (milliseconds before cloudsim's time scale), to
    /// give a test time to act in the middle of one.
    pub fn slow(&self, latencies: Value) {
        crate::cli_harness::admin_call(
            &self.cloud.admin,
            reqwest::Method::POST,
            "latency",
            Some(latencies),
        );
    }

    /// Starts `workflow` of `vm` on worker `i` without waiting: the run's id.
    pub fn start_run(&self, i: usize, workflow: &str, vm: &str) -> String {
        let started = self
            .ferry(i)
            .args(["failover", workflow, vm, "--output", "json"])
            .run();
        started.ok().json()["id"]
            .as_str()
            .expect("run id")
            .to_string()
    }

    /// Registers every VM of the world.
    pub fn register_all(&self) {
        for (i, vm) in vms().iter().enumerate() {
            let path = self.dir.path().join(format!("{}.toml", vm.name));
            let mut text = definition(vm, i);
            if self.prepared.contains(&vm.name.as_str()) {
                text = text.replace(
                    "guest_prep = \"skip\"",
                    "guest_prep = \"virt-v2v-in-place\"",
                );
            }
            std::fs::write(&path, text).expect("written");
            self.ferry(0)
                .args(["vm".as_ref(), "add".as_ref(), path.as_os_str()])
                .run()
                .ok();
        }
    }

    pub fn agent(&mut self, appliance: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.appliance == appliance)
            .expect("an agent of that appliance")
    }

    /// Starts `appliance`'s agent again on its port, with its journal.
    pub fn restart_agent(&mut self, appliance: &str) {
        let cloud = self.cloud.clone();
        let dir = self.dir.path().to_path_buf();
        let agent = self.agent(appliance);
        agent.kill();
        agent.start(&cloud, &dir);
    }

    /// SIGKILLs worker `i`.
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut child) = self.workers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every log, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for path in names
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
            {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                all.push_str(&format!("\n--- {} (last lines)\n", path.display()));
                for line in tail.into_iter().rev() {
                    all.push_str(line);
                    all.push('\n');
                }
            }
        }
        all
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(mut c) = w.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for a in &mut self.agents {
            a.kill();
        }
        let _ = self.sim.kill();
        let _ = self.sim.wait();
    }
}

/// A TCP proxy between the engine and an agent that the test can cut (new
/// connections refused, open ones reset) and restore, on the same port.
pub struct Proxy {
    port: u16,
    to: u16,
    runtime: tokio::runtime::Runtime,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub fn start(to: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let proxy = Proxy {
            port: free_port(),
            to,
            runtime,
            tasks: Arc::default(),
        };
        proxy.restore();
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts the line: the listener closes and every open connection is dropped.
    pub fn cut(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }

    /// Listens again and forwards.
    pub fn restore(&self) {
        let (port, to) = (self.port, self.to);
        let tasks = self.tasks.clone();
        let listener = self.runtime.block_on(async move {
            tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("the proxy's port")
        });
        let accept_tasks = tasks.clone();
        let accept = self.runtime.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_tasks.lock().expect("tasks").push(pipe);
            }
        });
        tasks.lock().expect("tasks").push(accept);
    }
}
