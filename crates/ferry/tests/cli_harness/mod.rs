//! The harness of the CLI tests, after ripgrep's: each test gets its own temporary
//! directory and its own server (a `ferry cloudsim` and a `ferry serve` on port 0,
//! killed on drop), and runs `ferry` through a small command builder that returns the
//! exit code and both outputs. Golden files are compared after [`normalize`].

#![allow(dead_code, reason = "each test binary uses a part of the harness")]

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;

use cloudsim::world::ids;
use regex::Regex;
use serde_json::Value;
use server::config::{Builder, EngineSection, TargetSection};
use tempfile::TempDir;

/// The API token every test server is started with.
pub const TOKEN: &str = "cli-test-token";

/// How a test's server is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// cloudsim's `--time-scale`: 0.001 makes a 3 s attach take 3 ms.
    pub time_scale: f64,
    /// `[engine] max_attempts`: how often a transiently failing step or undo is tried.
    pub max_attempts: i64,
    /// cloudsim keeps its cloud in a state file, on a port of its own, so that
    /// [`Server::restart_cloudsim`] can stop it and start it again where ferry reaches it.
    pub restartable_cloudsim: bool,
    /// `ferry serve`'s FERRY_LOG.
    pub log: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            time_scale: 0.001,
            max_attempts: 5,
            restartable_cloudsim: false,
            log: "warn",
        }
    }
}

/// A cloudsim and a ferry server in a temporary directory, both killed on drop.
pub struct Server {
    dir: TempDir,
    /// The API's URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// cloudsim's admin URL (`…/sim`): faults, latencies.
    pub admin: String,
    /// cloudsim's API endpoint and credentials, for a test to act as a person with
    /// CloudStack access would ([`Server::cloud`]).
    cloudstack: (String, String, String),
    children: Vec<Child>,
    /// How to start cloudsim again (its command), when it is restartable.
    cloudsim_again: Option<(String, f64)>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sysfs = dir.path().join("sysfs");
        std::fs::create_dir_all(&sysfs).expect("the sysfs root");
        let mut children = Vec::new();

        let listen = if options.restartable_cloudsim {
            let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            format!(
                "127.0.0.1:{}",
                free.local_addr().expect("its address").port()
            )
        } else {
            "127.0.0.1:0".to_string()
        };
        let (sim, announcement) = spawn_announced(
            &mut restartable_cloudsim(
                options.time_scale,
                &listen,
                dir.path(),
                options.restartable_cloudsim,
            ),
            dir.path(),
            "cloudsim.log",
        );
        children.push(sim);
        let field = |name: &str| {
            announcement[name]
                .as_str()
                .unwrap_or_else(|| panic!("the announcement has `{name}`: {announcement}"))
                .to_string()
        };
        let admin = field("admin");

        let config = dir.path().join("ferry.toml");
        let text = serve_config(&field("endpoint"), &field("api_key"), dir.path(), &sysfs)
            .engine(EngineSection {
                claim_interval_ms: 100,
                max_attempts: options.max_attempts,
                ..EngineSection::default()
            })
            .toml()
            .expect("the config is valid");
        std::fs::write(&config, text).expect("the config is written");

        let mut serve = Command::new(env!("CARGO_BIN_EXE_ferry"));
        serve
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("FERRY_CLOUDSTACK_SECRET", field("secret_key"))
            .env("FERRY_TOKEN", TOKEN)
            .env("FERRY_LOG", options.log)
            .env_remove("FERRY_DATABASE_URL")
            .env_remove("FERRY_LISTEN")
            .env_remove("FERRY_CLOUDSTACK_ENDPOINT")
            .env_remove("FERRY_CLOUDSTACK_API_KEY")
            .stdin(Stdio::null());
        let (serve, ready) = spawn_announced(&mut serve, dir.path(), "serve.log");
        children.push(serve);
        let url = ready["url"]
            .as_str()
            .unwrap_or_else(|| panic!("ferry serve announces its url: {ready}"))
            .to_string();
        Server {
            dir,
            url,
            admin,
            cloudstack: (field("endpoint"), field("api_key"), field("secret_key")),
            children,
            cloudsim_again: options
                .restartable_cloudsim
                .then_some((listen, options.time_scale)),
        }
    }

    /// Kills cloudsim outright, runs `meanwhile` while it is down, and starts it again
    /// on the same port from its state file, as a management server restarts.
    pub fn restart_cloudsim(&mut self, meanwhile: impl FnOnce(&Server)) {
        let (listen, time_scale) = self
            .cloudsim_again
            .clone()
            .expect("started with Options::restartable_cloudsim");
        let _ = self.children[0].kill();
        let _ = self.children[0].wait();
        meanwhile(self);
        let (sim, _) = spawn_announced(
            &mut restartable_cloudsim(time_scale, &listen, self.dir.path(), true),
            self.dir.path(),
            "cloudsim-again.log",
        );
        self.children[0] = sim;
    }

    /// The test's directory (files written for `ferry vm add` go here).
    /// A CloudStack client of the server's cloudsim: what someone with CloudStack
    /// access uses behind ferry's back.
    pub fn cloud(&self) -> cloudstack::Client {
        let (endpoint, api_key, secret) = &self.cloudstack;
        let config = cloudstack::Config::new(
            endpoint.as_str(),
            api_key.as_str(),
            secrecy::SecretString::from(secret.clone()),
        );
        cloudstack::Client::new(config).expect("a CloudStack client")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `name` in the test's directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("the file is written");
        path
    }

    /// Arms cloudsim faults (one rule or a list; docs/cloudsim.md).
    pub fn arm(&self, rules: Value) {
        self.admin_call(reqwest::Method::POST, "faults", Some(rules));
    }

    /// Disarms every cloudsim fault.
    pub fn disarm(&self) {
        self.admin_call(reqwest::Method::DELETE, "faults", None);
    }

    /// Sets cloudsim latencies (milliseconds before the time scale, per command).
    pub fn latency(&self, latencies: Value) {
        self.admin_call(reqwest::Method::POST, "latency", Some(latencies));
    }

    fn admin_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) {
        admin_call(&self.admin, method, path, body);
    }

    /// Kills `ferry serve` (cloudsim goes on): the server becomes unreachable.
    pub fn stop_serve(&mut self) {
        let serve = &mut self.children[1];
        let _ = serve.kill();
        let _ = serve.wait();
    }

    /// What `ferry serve` wrote to stderr so far.
    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Both processes' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        ["cloudsim.log", "serve.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                format!("--- {name}\n{text}")
            })
            .collect()
    }

    /// `ferry` with FERRY_SERVER and FERRY_TOKEN set for this server.
    pub fn ferry(&self) -> Ferry {
        Ferry::bare()
            .env("FERRY_SERVER", &self.url)
            .env("FERRY_TOKEN", TOKEN)
            .dir(self.dir.path())
    }

    /// `ferry ARGS --output json` against this server, which must succeed with nothing
    /// on stderr: its stdout as JSON.
    #[track_caller]
    pub fn json<const N: usize>(&self, args: [&str; N]) -> Value {
        self.ferry()
            .args(args)
            .args(["--output", "json"])
            .run()
            .ok()
            .json()
    }
}

/// `method` on cloudsim's admin API at `admin` (`…/sim`), `path` below it; panics
/// unless it succeeds.
pub fn admin_call(admin: &str, method: reqwest::Method, path: &str, body: Option<Value>) {
    let url = format!("{admin}/{path}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut request = reqwest::Client::new().request(method, &url);
        if let Some(body) = &body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("cloudsim admin {url}: {e}"));
    });
}

/// The config of a `ferry serve` on cloudsim's built-in world at `endpoint`: the
/// database in `dir`, the appliance `oma` seen under `sysfs`, CloudStack polled from
/// 5 ms up to 50 ms, and new runs looked for every 100 ms.
pub fn serve_config(endpoint: &str, api_key: &str, dir: &Path, sysfs: &Path) -> Builder {
    Builder::new(
        endpoint,
        api_key,
        TargetSection {
            zone_id: ids::ZONE.into(),
            service_offering_id: ids::OFFERING_CUSTOM.into(),
            template_id: ids::TEMPLATE.into(),
        },
    )
    .database(dir.join("ferry.db").display().to_string())
    .poll_ms(5, 50)
    .job_duration_scale(0.001)
    .appliance("oma", ids::APPLIANCE_OMA, sysfs)
    .engine(EngineSection {
        claim_interval_ms: 100,
        ..EngineSection::default()
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `ferry cloudsim` on port 0 at `time_scale`, its stdin closed and its stdout piped
/// for the announcement ([`first_line_json`]); more flags and stderr are the caller's.
pub fn cloudsim(time_scale: f64) -> Command {
    cloudsim_at(time_scale, "127.0.0.1:0")
}

/// [`cloudsim`] listening on `listen`.
pub fn cloudsim_at(time_scale: f64, listen: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(["cloudsim", "--listen", listen, "--time-scale"])
        .arg(time_scale.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command
}

/// The test server's cloudsim on `listen`, its sysfs tree in `dir`, with its state in
/// `dir/cloud.json` when `persistent`.
fn restartable_cloudsim(time_scale: f64, listen: &str, dir: &Path, persistent: bool) -> Command {
    let mut command = cloudsim_at(time_scale, listen);
    command.arg("--sysfs-root").arg(dir.join("sysfs"));
    if persistent {
        command.arg("--state-file").arg(dir.join("cloud.json"));
    }
    command
}

fn log_file(dir: &Path, name: &str) -> File {
    File::create(dir.join(name)).expect("a log file")
}

/// Spawns `command` with its stdout piped and its stderr in the file `log` in `dir`,
/// and returns it with the JSON line it announces itself with ([`first_line_json`]).
pub fn spawn_announced(command: &mut Command, dir: &Path, log: &str) -> (Child, Value) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(log_file(dir, log))
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} starts: {e}"));
    let announcement = first_line_json(&mut child, Some(&dir.join(log)));
    (child, announcement)
}

/// The first line a process prints, as JSON: how `ferry cloudsim`, `ferry serve` and
/// `ferry volumed` say they are ready. If it is not, the process is killed and the
/// panic shows the line and the process's `log` file, if it writes one.
pub fn first_line_json(child: &mut Child, log: Option<&Path>) -> Value {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("reads the first line");
    serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.kill();
        let log = log
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .unwrap_or_default();
        panic!("expected one JSON line ({e}), got {line:?}; its log:\n{log}")
    })
}

/// `ferry …` to run: a command builder.
pub struct Ferry {
    command: Command,
}

/// What a `ferry` command did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ferry {
    /// `ferry` without a server, token or config in its environment.
    pub fn bare() -> Ferry {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .env_remove("FERRY_SERVER")
            .env_remove("FERRY_TOKEN")
            .env_remove("FERRY_CONFIG")
            .env("FERRY_LOG", "warn")
            .stdin(Stdio::null());
        Ferry { command }
    }

    pub fn args<I, S>(mut self, args: I) -> Ferry
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Ferry {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Ferry {
        self.command.env_remove(key);
        self
    }

    pub fn dir(mut self, dir: &Path) -> Ferry {
        self.command.current_dir(dir);
        self
    }

    /// The command as built, for a test that spawns it and talks to it while it runs.
    pub fn command(self) -> Command {
        self.command
    }

    /// Starts the command in the background.
    pub fn spawn(mut self) -> Running {
        let mut child = self
            .command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ferry starts");
        let stdout = std::sync::Arc::default();
        let stderr = std::sync::Arc::default();
        let readers = vec![
            collect(
                child.stdout.take().expect("piped"),
                std::sync::Arc::clone(&stdout),
            ),
            collect(
                child.stderr.take().expect("piped"),
                std::sync::Arc::clone(&stderr),
            ),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn run(mut self) -> Outcome {
        let output = self.command.output().expect("ferry runs");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A `ferry` command running in the background, its outputs read as they come.
pub struct Running {
    child: Child,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The output read so far: stdout, stderr.
    pub fn so_far(&self) -> (String, String) {
        (
            self.stdout.lock().expect("not poisoned").clone(),
            self.stderr.lock().expect("not poisoned").clone(),
        )
    }

    /// Waits until stdout + stderr contain `text`; panics after `timeout`.
    #[track_caller]
    pub fn wait_for(&self, text: &str, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (stdout, stderr) = self.so_far();
            if stdout.contains(text) || stderr.contains(text) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{text:?} within {timeout:?}\n--- stdout\n{stdout}--- stderr\n{stderr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -INT");
    }

    /// Waits for the command to end.
    pub fn finish(mut self) -> Outcome {
        let status = self.child.wait().expect("ferry ends");
        for reader in self.readers.drain(..) {
            reader.join().expect("the reader ends");
        }
        let (stdout, stderr) = self.so_far();
        Outcome {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A thread appending what `from` yields to `to`.
fn collect(
    mut from: impl std::io::Read + Send + 'static,
    to: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 {
                break;
            }
            to.lock()
                .expect("not poisoned")
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    })
}

impl Outcome {
    /// Asserts the exit code, showing both outputs when it is not the one expected.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Outcome {
        assert_eq!(
            self.code, expected,
            "exit code\n--- stdout\n{}--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts success with nothing on stderr.
    #[track_caller]
    pub fn ok(&self) -> &Outcome {
        self.code(0);
        assert_eq!(self.stderr, "", "nothing on stderr");
        self
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}):\n{}", self.stdout))
    }

    /// The exit code and both outputs, for a golden file.
    pub fn transcript(&self) -> String {
        format!(
            "exit code: {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Compares `text`, normalized, with `tests/golden/NAME`
/// (`EXPECTORATE=overwrite cargo test -p ferry --test cli_client` rewrites it).
#[track_caller]
pub fn golden(name: &str, text: &str) {
    expectorate::assert_contents(format!("tests/golden/{name}"), &normalize(text));
}

/// The built-in world's ids and pgtest1's VMware instance UUID: the same every time,
/// so kept.
const KNOWN_IDS: [&str; 12] = [
    "5029a4d2-8b1e-4c1a-9f3e-2d7c6b5a4e01",
    ids::ZONE,
    ids::OFFERING_CUSTOM,
    ids::OFFERING_SMALL,
    ids::DISK_OFFERING_CUSTOM,
    ids::TEMPLATE,
    ids::NETWORK_TEST,
    ids::NETWORK_PRODUCTION,
    ids::APPLIANCE_OMA,
    ids::OMA_ROOT,
    ids::PGTEST1_DISK_2000,
    ids::PGTEST1_DISK_2001,
];

/// Placeholders are as long as what they replace where that can vary in a table
/// column, so normalized tables stay aligned.
const ANY_UUID: &str = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
        .expect("a valid regex")
});

static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z",
            "YYYY-MM-DDTHH:MM:SS.mmmZ",
        ),
        // A target VM's name carries the time of its run.
        (r"-test-\d{14}", "-test-YYYYMMDDHHMMSS"),
        (r"\b\d+ h \d{2} min\b", "<dur>"),
        (r"\b\d+ min \d{2} s\b", "<dur>"),
        (r"\b\d+\.\d s\b", "<dur>"),
        (r#""duration_ms": \d+"#, r#""duration_ms": 0"#),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
    ]
    .into_iter()
    .map(|(pattern, replacement)| (Regex::new(pattern).expect("a valid regex"), replacement))
    .collect()
});

/// `text` with what changes from one run to the next replaced: UUIDs other than the
/// built-in world's, times, durations (`<dur>`, 0 in JSON) and ports; and the
/// CloudStack jobs one step submits at once (one snapshot per disk) put in one order,
/// since they may be recorded in either.
pub fn normalize(text: &str) -> String {
    let mut text = UUID
        .replace_all(text, |c: &regex::Captures<'_>| {
            if KNOWN_IDS.contains(&&c[0]) {
                c[0].to_string()
            } else {
                ANY_UUID.to_string()
            }
        })
        .into_owned();
    for (pattern, replacement) in PATTERNS.iter() {
        text = pattern.replace_all(&text, *replacement).into_owned();
    }
    let text = sort_concurrent_job_rows(&text);
    sort_concurrent_job_objects(&text)
}

/// In a `CLOUDSTACK JOBS` table, rows of one step and kind (with their note lines)
/// sorted among themselves.
fn sort_concurrent_job_rows(text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        out.push_str(lines[i]);
        if lines[i].trim_end() == "CLOUDSTACK JOBS" && i + 1 < lines.len() {
            out.push_str(lines[i + 1]);
            i += 2;
            let mut rows: Vec<String> = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() {
                if lines[i].starts_with("    ") && !rows.is_empty() {
                    rows.last_mut().expect("a row").push_str(lines[i]);
                } else {
                    rows.push(lines[i].to_string());
                }
                i += 1;
            }
            let key = |row: &String| -> (String, String) {
                let mut words = row.split_whitespace();
                (
                    words.next().unwrap_or("").to_string(),
                    words.next().unwrap_or("").to_string(),
                )
            };
            for row in sorted_within_runs(rows, key) {
                out.push_str(&row);
            }
            continue;
        }
        i += 1;
    }
    out
}

/// In a run's JSON, the `jobs` objects of one step and kind sorted among themselves.
fn sort_concurrent_job_objects(text: &str) -> String {
    let Some(start) = text.find("\n  \"jobs\": [\n") else {
        return text.to_string();
    };
    let body_start = start + "\n  \"jobs\": [\n".len();
    let Some(len) = text[body_start..].find("\n  ]") else {
        return text.to_string();
    };
    let body = &text[body_start..body_start + len];
    let mut objects: Vec<String> = Vec::new();
    for line in body.lines() {
        if line == "    {" {
            objects.push(String::new());
        }
        if let Some(object) = objects.last_mut() {
            let line = if line == "    }," { "    }" } else { line };
            object.push_str(line);
            object.push('\n');
        }
    }
    let field = |object: &String, name: &str| -> String {
        object
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{name}\":")))
            .unwrap_or("")
            .to_string()
    };
    let objects = sorted_within_runs(objects, |o| (field(o, "step"), field(o, "kind")));
    let joined = objects
        .iter()
        .map(|o| o.trim_end().to_string())
        .collect::<Vec<_>>()
        .join(",\n");
    format!(
        "{}{joined}{}",
        &text[..body_start],
        &text[body_start + len..]
    )
}

/// `items` with each run of consecutive items of equal `key` sorted.
fn sorted_within_runs<K: PartialEq>(items: Vec<String>, key: impl Fn(&String) -> K) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for item in items {
        if let Some(first) = run.first()
            && key(first) != key(&item)
        {
            run.sort();
            out.append(&mut run);
        }
        run.push(item);
    }
    run.sort();
    out.append(&mut run);
    out
}

/// A port on which nothing listens.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("an address").port()
}

/// docs/examples/pgtest1.toml: the VM the built-in world replicates.
pub fn pgtest1() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml"),
    )
    .expect("docs/examples/pgtest1.toml")
}
