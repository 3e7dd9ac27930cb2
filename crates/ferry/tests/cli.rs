//! Black-box tests of the `ferry` binary: real processes on port 0.

// Set-up: a volume made with the real client, as an operator's CloudStack would have it.
#![allow(clippy::disallowed_methods)]

mod cli_harness;

use ::ids::{VolumeId, ZoneId};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use cli_harness::first_line_json;
use secrecy::SecretString;

/// A `ferry cloudsim` process, killed on drop.
struct Cloudsim {
    child: Child,
    announcement: serde_json::Value,
}

impl Cloudsim {
    fn start(extra: &[&str]) -> Cloudsim {
        let mut child = cli_harness::cloudsim(0.001)
            .args(extra)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry cloudsim starts");
        let announcement = first_line_json(&mut child, None);
        Cloudsim {
            child,
            announcement,
        }
    }

    fn field(&self, name: &str) -> String {
        self.announcement[name]
            .as_str()
            .unwrap_or_else(|| panic!("announcement has `{name}`: {}", self.announcement))
            .to_string()
    }

    fn client(&self) -> cloudstack::Client {
        let config = cloudstack::Config::new(
            self.field("endpoint"),
            self.field("api_key"),
            SecretString::from(self.field("secret_key")),
        );
        cloudstack::Client::new(config).expect("client builds")
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("ferry exits")
    }
}

impl Drop for Cloudsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn cloudsim_announces_itself_serves_the_api_and_stops_on_sigterm() {
    let sim = Cloudsim::start(&[]);
    let endpoint = sim.field("endpoint");
    assert!(endpoint.starts_with("http://127.0.0.1:") && endpoint.ends_with("/client/api"));
    let oma = sim.announcement["appliances"]["oma"]
        .as_str()
        .expect("oma")
        .to_string();
    let client = sim.client();
    let zones = client.list_zones().await.expect("listZones");
    assert_eq!(zones[0].id, sim.field("zone_id"));
    let filter = cloudstack::VolumeFilter {
        virtual_machine_id: Some(oma.into()),
        ..Default::default()
    };
    let mut sizes: Vec<(i64, i64)> = client
        .list_volumes(&filter)
        .await
        .expect("listVolumes")
        .iter()
        .map(|v| (v.deviceid.expect("attached"), v.size >> 30))
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![(0, 20), (1, 107), (2, 10)],
        "oma holds pgtest1's replicas"
    );
    let status = sim.terminate();
    assert!(
        status.success(),
        "ferry cloudsim exits 0 on SIGTERM, got {status}"
    );
}

#[test]
fn cloudsim_lays_out_the_appliance_disks_under_the_sysfs_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8").to_string();
    let sim = Cloudsim::start(&["--sysfs-root", &root]);
    let mut serials = Vec::new();
    for disk in ["vda", "vdb", "vdc"] {
        let serial =
            std::fs::read_to_string(dir.path().join("sys/block").join(disk).join("serial"))
                .unwrap_or_else(|e| panic!("{disk} exists: {e}"));
        let link = dir
            .path()
            .join("dev/disk/by-id")
            .join(format!("virtio-{}", serial.trim()));
        assert_eq!(
            std::fs::read_link(&link).expect("by-id link"),
            PathBuf::from(format!("../../{disk}"))
        );
        serials.push(serial.trim().to_string());
    }
    use cloudsim::world::ids;
    let expected: Vec<String> = [
        ids::OMA_ROOT,
        ids::PGTEST1_DISK_2000,
        ids::PGTEST1_DISK_2001,
    ]
    .iter()
    .map(|id| cloudstack::volume_serial(&VolumeId::from(id)))
    .collect();
    assert_eq!(
        serials, expected,
        "vda is the appliance's root, then the replicas in device order"
    );
    drop(sim);
}

#[test]
fn cloudsim_refuses_a_bad_world_file_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("world.toml");
    std::fs::write(
        &world,
        "[credentials]\napi_key = \"k\"\nsecret_key = \"s\"\nzones = []\nbogus = 1\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["cloudsim", "--listen", "127.0.0.1:0", "--world"])
        .arg(&world)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not valid"),
        "stderr names the problem: {stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing is announced");
}

#[test]
fn cloudsim_refuses_a_negative_time_scale() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["cloudsim", "--listen", "127.0.0.1:0", "--time-scale", "-1"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--time-scale must be a number"));
}

/// The signature check agrees with `cs` (PyPI), a CloudStack client ferry did not
/// write. `.ci/test` installs it into `target/compat-venv`; `FERRY_COMPAT_PYTHON`
/// names another interpreter that has it.
#[test]
fn cs_client_compat() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("FERRY_COMPAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/compat-venv/bin/python"));
    assert!(
        python.exists(),
        "no Python with the `cs` package at {}: run the tests with `bash .ci/test`, which installs it, or set FERRY_COMPAT_PYTHON",
        python.display()
    );
    let sim = Cloudsim::start(&[]);
    let output = Command::new(&python)
        .arg(workspace.join("tests/compat/cs_client.py"))
        .arg(sim.announcement.to_string())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "cs client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok   wrong secret refused with 401"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("ok   ").count(),
        17,
        "every check ran:\n{stdout}"
    );
}

/// The example world in the docs parses, starts, and gives each of several
/// appliances its own sysfs tree; its armed fault is listed by the admin API.
#[tokio::test]
async fn the_documented_example_world_starts_with_two_appliances() {
    let world = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/world.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8").to_string();
    let world = world.to_str().expect("utf-8").to_string();
    let sim = Cloudsim::start(&["--world", &world, "--sysfs-root", &root]);
    let appliances = sim.announcement["appliances"]
        .as_object()
        .expect("appliances");
    assert_eq!(
        appliances.keys().collect::<Vec<_>>(),
        vec!["oma-1", "oma-2"]
    );
    for (name, disks) in [("oma-1", 3), ("oma-2", 2)] {
        let block = dir.path().join(name).join("sys/block");
        let count = std::fs::read_dir(&block)
            .unwrap_or_else(|e| panic!("{} exists: {e}", block.display()))
            .count();
        assert_eq!(count, disks, "{name} sees its root disk and its replicas");
    }
    let admin = sim.field("admin");
    let faults: serde_json::Value = reqwest::get(format!("{admin}/faults"))
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(faults[0]["rule"]["command"], "attachVolume");
    assert_eq!(faults[0]["rule"]["nth"], 3);
    let zones = sim.client().list_zones().await.expect("listZones");
    assert_eq!(zones[0].name, "dc-west");
    let guests: serde_json::Value = reqwest::get(format!("{admin}/guests"))
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(guests["rules"][0]["vm"], "web01*", "{guests}");
    assert_eq!(
        guests["rules"][0]["tcp_ports"],
        serde_json::json!([5432]),
        "{guests}"
    );
}

/// A `ferry volumed` process journaling into `database`, killed on drop.
struct Volumed {
    child: Child,
    url: String,
}

impl Volumed {
    fn start(sim: &Cloudsim, database: &std::path::Path) -> Volumed {
        let oma = sim.announcement["appliances"]["oma"]
            .as_str()
            .expect("oma")
            .to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "volumed",
                "--listen",
                "127.0.0.1:0",
                "--cloudstack-endpoint",
            ])
            .arg(sim.field("endpoint"))
            .args([
                "--api-key",
                &sim.field("api_key"),
                "--appliance-vm-id",
                &oma,
            ])
            .arg("--database")
            .arg(database)
            .env("FERRY_CLOUDSTACK_SECRET", sim.field("secret_key"))
            .env("FERRY_VOLUMED_TOKEN", "volumed-test-token")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry volumed starts");
        let announced = first_line_json(&mut child, None);
        let url = announced["url"].as_str().expect("url").to_string();
        Volumed { child, url }
    }

    fn attach(&self, key: &str, volume: impl AsRef<str>, vm: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("{}/v1/attach", self.url))
            .bearer_auth("volumed-test-token")
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({"volume_id": volume.as_ref(), "vm_id": vm}))
    }
}

impl Drop for Volumed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 10 ms for at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The daemon is SIGKILLed while CloudStack is still running its attach job; the
/// restarted daemon finds the operation in its SQLite journal, waits on the same job,
/// and answers the retried request — one attachVolume in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_volume_daemon_resumes_its_attach_from_the_journal() {
    let sim = Cloudsim::start(&[]);
    let admin = sim.field("admin");
    let oma = sim.announcement["appliances"]["oma"]
        .as_str()
        .expect("oma")
        .to_string();
    let client = sim.client();
    let job = client
        .create_volume(
            "data-3",
            &ZoneId::from(&sim.field("zone_id")),
            &cloudstack::VolumeSource::Offering {
                disk_offering_id: cloudsim::world::ids::DISK_OFFERING_CUSTOM.into(),
                size_gb: Some(5),
            },
        )
        .await
        .expect("createVolume");
    let volume = client.wait(&job).await.expect("volume created").id;
    // 1.5 s per attach (at cloudsim's time scale of 0.001): time to kill the daemon.
    reqwest::Client::new()
        .post(format!("{admin}/latency"))
        .json(&serde_json::json!({"attachVolume": 1_500_000}))
        .send()
        .await
        .expect("latency set");
    let stats = || async {
        reqwest::get(format!("{admin}/stats"))
            .await
            .expect("stats")
            .json::<serde_json::Value>()
            .await
            .expect("JSON")
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("journal.db");
    let first = Volumed::start(&sim, &database);
    let request = first.attach("drill-7/attach/data-3", &volume, &oma);
    let in_flight = tokio::spawn(async move { request.send().await });
    eventually("CloudStack to accept the attach", || async {
        (stats().await["calls"]["attachVolume"] == 1).then_some(())
    })
    .await;
    // The daemon records the job id just after CloudStack answers: the kill lands
    // once it has (the job still in flight for 1.5 s), however loaded the machine.
    let watch = store::Store::connect(database.to_str().expect("utf-8"))
        .await
        .expect("journal opens");
    eventually("the daemon to record the attach's job id", || async {
        let ops = watch.unfinished_ops().await.expect("ops");
        ops.iter().any(|op| op.job_id.is_some()).then_some(())
    })
    .await;
    drop(watch);
    drop(first); // SIGKILL
    assert_eq!(
        stats().await["commands"]["attachVolume"]["jobs"]
            .as_u64()
            .unwrap_or(0),
        0,
        "the job id was in the journal while CloudStack still ran the attach"
    );
    assert!(
        in_flight.await.expect("joined").is_err(),
        "the caller lost its answer with the daemon"
    );

    let journal = store::Store::connect(database.to_str().expect("utf-8"))
        .await
        .expect("journal opens");
    let pending = journal.unfinished_ops().await.expect("ops");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        pending[0].job_id.is_some(),
        "the job id was recorded before waiting"
    );

    let second = Volumed::start(&sim, &database);
    eventually("the resumed attach to finish", || async {
        journal
            .op_by_key("drill-7/attach/data-3")
            .await
            .expect("op")
            .filter(|op| op.state == store::OpState::Succeeded)
    })
    .await;
    let answer: serde_json::Value = second
        .attach("drill-7/attach/data-3", &volume, &oma)
        .send()
        .await
        .expect("answered")
        .error_for_status()
        .expect("2xx")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["vm_id"], oma.as_str());
    assert_eq!(answer["device_id"], 4);
    assert_eq!(
        stats().await["calls"]["attachVolume"],
        1,
        "resumed by job id, never resubmitted"
    );
    let attached = client
        .get_volume(&VolumeId::from(&volume))
        .await
        .expect("listVolumes")
        .expect("exists");
    assert_eq!(
        attached.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some(oma.as_str())
    );
}
