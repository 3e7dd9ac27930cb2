//! Secrets, as processes: `ferry cloudsim` with credentials of its own and `ferry
//! serve --log debug` (text, then JSON lines) with the CloudStack secret key and the
//! API token in its environment (FERRY_CLOUDSTACK_SECRET, FERRY_TOKEN), taken through
//! a test failover (with guest preparation and injected CloudStack faults, so that
//! error paths log too), its cleanup, a live failover (with a `before_live` hook) and
//! its rollback, all through the `ferry` client commands — and a collection of
//! refused API requests (no token, a wrong one, bad input, unknown things, conflicts).
//!
//! Then the server's whole log, every command's output (`run show` of each run
//! included), every API error body and `/metrics` are searched for the secret key and
//! the token: neither may appear. And the programs ferry runs for the operator — the
//! guest-preparation command and the hook — must not have either in their
//! environment (ferry removes `volumed::guest_prep::SECRET_ENV`): each writes
//! `${FERRY_TOKEN:-absent}` and `${FERRY_CLOUDSTACK_SECRET:-absent}` to a file.
//!
//! (Every route but /health and /metrics refusing a missing or wrong token is
//! `crates/server/tests/api.rs`; here the refusals only feed the search.)

mod cli_harness;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cli_harness::{admin_call, spawn_announced};
use cloudsim::world::{Credentials, World};
use serde_json::{Value, json};
use volumed::GuestPrep;
use workflows::{Hook, Hooks};

const SECRET: &str = "cs-SECRET-4b1d9e07c3a2f5-never-logged";
const TOKEN: &str = "api-TOKEN-7e2c90d1a6b348-never-logged";
const API_KEY: &str = "security-test-api-key";

struct Processes {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    url: String,
    admin: String,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn script(dir: &Path, name: &str, out: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"token=${{FERRY_TOKEN:-absent}} secret=${{FERRY_CLOUDSTACK_SECRET:-absent}}\" >> {}\n",
            out.display()
        ),
    )
    .expect("written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// cloudsim and `ferry serve --log debug` (JSON lines with `json`), with a guest
/// preparation command and a `before_live` hook that record their environment.
fn start(json: bool) -> Processes {
    let dir = tempfile::tempdir().expect("a directory");
    let sysfs = dir.path().join("sysfs");
    std::fs::create_dir_all(&sysfs).expect("sysfs");
    let world = World {
        credentials: Credentials {
            api_key: API_KEY.into(),
            secret_key: SECRET.into(),
        },
        ..World::default()
    };
    let world_file = dir.path().join("world.toml");
    std::fs::write(&world_file, toml::to_string(&world).expect("a world")).expect("written");
    let mut children = Vec::new();
    let (sim, announced) = spawn_announced(
        cli_harness::cloudsim(0.001)
            .arg("--world")
            .arg(&world_file)
            .arg("--sysfs-root")
            .arg(&sysfs),
        dir.path(),
        "cloudsim.log",
    );
    children.push(sim);
    let prep = script(dir.path(), "prepare.sh", &dir.path().join("prep.env"));
    let hook = script(dir.path(), "power-off.sh", &dir.path().join("hook.env"));
    let config = dir.path().join("ferry.toml");
    let text = cli_harness::serve_config(
        announced["endpoint"].as_str().expect("an endpoint"),
        API_KEY,
        dir.path(),
        &sysfs,
    )
    .guest_prep(GuestPrep {
        timeout_secs: 30,
        ..GuestPrep::new(prep.display().to_string(), ["{device}"])
    })
    .hooks(Hooks {
        before_live: vec![Hook::Command {
            program: hook.display().to_string(),
            args: Vec::new(),
            timeout_secs: 300,
        }],
        after_rollback: Vec::new(),
    })
    .toml()
    .expect("a valid config");
    std::fs::write(&config, text).expect("the config");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_ferry"));
    serve
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "debug",
            "--config",
        ])
        .arg(&config)
        .env("FERRY_CLOUDSTACK_SECRET", SECRET)
        .env("FERRY_TOKEN", TOKEN)
        .env_remove("FERRY_LOG")
        .env_remove("FERRY_DATABASE_URL")
        .env_remove("FERRY_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if json {
        serve.arg("--log-json");
    }
    let (serve, ready) = spawn_announced(&mut serve, dir.path(), "serve.log");
    children.push(serve);
    Processes {
        url: ready["url"].as_str().expect("a url").to_string(),
        admin: announced["admin"].as_str().expect("admin").to_string(),
        dir,
        children,
    }
}

/// The log filter of `ferry serve`: `debug`, or FERRY_SECURITY_LOG (the reliability
/// runner also tries `trace`).
fn log_level() -> String {
    std::env::var("FERRY_SECURITY_LOG").unwrap_or_else(|_| "debug".into())
}

/// What a command or request gave, kept for the search.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }
}

impl Processes {
    /// `ferry ARGS` against this server (the token in FERRY_TOKEN, as operators do).
    fn ferry(&self, seen: &mut Seen, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_SERVER", &self.url)
            .env("FERRY_TOKEN", TOKEN)
            .env("FERRY_LOG", "debug")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("ferry runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        seen.add(
            format!("ferry {}", args.join(" ")),
            format!("{stdout}\n{stderr}"),
        );
        (out.status.code().unwrap_or(-1), stdout)
    }

    /// A raw API request with `token`; the body is kept for the search.
    fn request(
        &self,
        seen: &mut Seen,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> u16 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (status, text) = runtime.block_on(async {
            let mut r =
                reqwest::Client::new().request(method.clone(), format!("{}{path}", self.url));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let response = r.send().await.expect("an answer");
            let status = response.status().as_u16();
            let headers = format!("{:?}", response.headers());
            (
                status,
                format!("{headers}\n{}", response.text().await.unwrap_or_default()),
            )
        });
        seen.add(format!("{method} {path} → {status}"), text);
        status
    }

    fn arm(&self, rules: Value) {
        admin_call(&self.admin, reqwest::Method::POST, "faults", Some(rules));
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

fn run_id(stdout: &str) -> String {
    let v: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("JSON ({e}): {stdout}"));
    v["id"]
        .as_str()
        .or(v["run"]["id"].as_str())
        .unwrap_or_else(|| panic!("a run id in {v}"))
        .to_string()
}

fn drive(p: &Processes, seen: &mut Seen) {
    // pgtest1 as a Windows guest, so that its boot disk is prepared.
    let definition = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml"),
    )
    .expect("the example")
    .replace("guest_os = \"linux\"", "guest_os = \"windows\"");
    std::fs::write(p.dir.path().join("pgtest1.toml"), definition).expect("written");
    let (code, _) = p.ferry(seen, &["vm", "add", "pgtest1.toml", "--output", "json"]);
    assert_eq!(code, 0, "registered");

    // Error paths that log: a refused attach (resubmitted), a dropped read (retried).
    p.arm(json!([
        {"command": "attachVolume", "fault": {"kind": "transient_530"}},
        {"command": "listVolumes", "nth": 3, "fault": {"kind": "drop_connection"}},
        {"command": "queryAsyncJobResult", "nth": 5, "fault": {"kind": "transient_530"}},
    ]));
    for (args, what) in [
        (
            &["failover", "test", "pgtest1", "--wait", "--output", "json"][..],
            "test failover",
        ),
        (
            &[
                "failover", "cleanup", "pgtest1", "--wait", "--output", "json",
            ][..],
            "cleanup",
        ),
        (
            &["failover", "live", "pgtest1", "--wait", "--output", "json"][..],
            "live failover",
        ),
        (
            &[
                "failover", "rollback", "pgtest1", "--wait", "--output", "json",
            ][..],
            "rollback",
        ),
    ] {
        let (code, stdout) = p.ferry(seen, args);
        assert_eq!(code, 0, "{what}: {stdout}\n{}", p.read("serve.log"));
        let id = run_id(&stdout);
        let (code, _) = p.ferry(seen, &["run", "show", &id, "--output", "json"]);
        assert_eq!(code, 0);
        p.ferry(seen, &["run", "show", &id]);
    }
    p.ferry(seen, &["run", "list", "--output", "json"]);
    p.ferry(seen, &["vm", "show", "pgtest1", "--output", "json"]);
    p.ferry(seen, &["vm", "list"]);

    // Refusals of every kind.
    use reqwest::Method;
    for token in [None, Some("wrong-token"), Some(&TOKEN[..TOKEN.len() - 1])] {
        assert_eq!(p.request(seen, Method::GET, "/v1/vms", token, None), 401);
    }
    let ok = Some(TOKEN);
    assert_eq!(
        p.request(seen, Method::GET, "/v1/vms/nobody", ok, None),
        404
    );
    assert_eq!(
        p.request(seen, Method::POST, "/v1/vms", ok, Some("{not json")),
        422
    );
    assert_eq!(
        p.request(
            seen,
            Method::POST,
            "/v1/vms",
            ok,
            Some(r#"{"definition": "name = 1"}"#)
        ),
        422
    );
    assert_eq!(
        p.request(seen, Method::POST, "/v1/vms/pgtest1/commit", ok, None),
        409
    );
    assert_eq!(
        p.request(seen, Method::POST, "/v1/runs/none/retry", ok, None),
        404
    );
    assert_eq!(
        p.request(seen, Method::GET, "/v1/runs?limit=0", ok, None),
        422
    );
    assert_eq!(p.request(seen, Method::GET, "/metrics", None, None), 200);
    // A CLI refused for its token.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["vm", "list"])
        .env("FERRY_SERVER", &p.url)
        .env("FERRY_TOKEN", "wrong")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    seen.add(
        "ferry vm list (wrong token)",
        String::from_utf8_lossy(&out.stderr),
    );
}

fn check(p: &Processes, seen: &mut Seen, json: bool) {
    let log = p.read("serve.log");
    seen.add("ferry serve's log", log.clone());
    // The control: the server had both secrets to leak (its environment holds them).
    let environ =
        std::fs::read(format!("/proc/{}/environ", p.children[1].id())).unwrap_or_default();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains(SECRET) && environ.contains(TOKEN),
        "the server was given both secrets"
    );
    // The log is the verbose one: debug lines, of the CloudStack calls among others.
    assert!(
        log.contains("DEBUG")
            && log.contains("attachVolume")
            && log.contains("deployVirtualMachine")
            && log.len() > 100_000,
        "a debug log of the whole run was expected:\n{}",
        &log[..log.len().min(2000)]
    );
    if json {
        let first = log.lines().next().unwrap_or_default();
        assert!(
            serde_json::from_str::<Value>(first).is_ok(),
            "JSON lines: {first}"
        );
    }
    let mut leaks = Vec::new();
    for (what, text) in &seen.0 {
        for (name, secret) in [
            ("the CloudStack secret key", SECRET),
            ("the API token", TOKEN),
        ] {
            if text.contains(secret) {
                let at = text.find(secret).unwrap_or(0);
                let context =
                    &text[at.saturating_sub(200)..(at + secret.len() + 50).min(text.len())];
                leaks.push(format!("{name} in {what}: …{context}…"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    // The programs ferry runs for the operator never get the secrets.
    let prep = p.read("prep.env");
    let hook = p.read("hook.env");
    // Preparation runs in the test failover and in the live failover.
    for (what, text, runs) in [
        ("guest preparation", &prep, 2),
        ("the before_live hook", &hook, 1),
    ] {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), runs, "{what} ran {runs} time(s): {text}");
        for line in lines {
            assert_eq!(line, "token=absent secret=absent", "{what}'s environment");
        }
    }
    eprintln!(
        "RELIABILITY security secrets log={} level={} searched={} bytes={} leaks=0 prep_env=clean hook_env=clean",
        if json { "json" } else { "text" },
        log_level(),
        seen.0.len(),
        seen.0.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
}

/// Starts the processes (`json`: JSON log lines), drives them and searches all they
/// said.
fn start_drive_and_check(json: bool) {
    let p = start(json);
    let mut seen = Seen::default();
    drive(&p, &mut seen);
    check(&p, &mut seen, json);
}

#[test]
fn no_secret_in_a_debug_log_run_show_or_an_api_error_and_none_for_hooks() {
    start_drive_and_check(false);
}

#[test]
fn no_secret_in_a_json_debug_log_either() {
    start_drive_and_check(true);
}
