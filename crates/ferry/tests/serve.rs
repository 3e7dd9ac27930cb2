//! `ferry serve --check-config`, its refusals, and shell completions, as processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/ferry.toml")
}

/// `ferry serve --config CONFIG --check-config EXTRA…` with only `env` set.
fn check_config(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "serve",
        "--config",
        config.to_str().expect("utf-8"),
        "--check-config",
    ];
    args.extend_from_slice(extra);
    ferry(&args, env)
}

/// Writes the example config, edited by `edit`, to `name` in `dir`.
fn edited_example(dir: &Path, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
    let path = dir.join(name);
    let example = std::fs::read_to_string(example()).expect("example");
    std::fs::write(&path, edit(example)).expect("writes");
    path
}

/// `ferry` with a clean environment: only what the test sets.
fn ferry(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command.env_clear().args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("ferry runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `out` is a refusal (exit 2) and returns its stderr, which says why.
#[track_caller]
fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2));
    text(&out.stderr)
}

const SECRET: &str = "cs-secret-4f1d9a";
const TOKEN: &str = "api-token-77c2e0";

#[test]
fn check_config_prints_what_would_run_without_any_secret() {
    let out = check_config(
        &example(),
        &[],
        &[
            ("FERRY_CLOUDSTACK_SECRET", SECRET),
            ("FERRY_TOKEN", TOKEN),
            (
                "FERRY_DATABASE_URL",
                "postgres://ferry:pg-pass-91@db.example.com/ferry",
            ),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for expected in [
        ": ok",
        "api          http://127.0.0.1:8470",
        "console      http://127.0.0.1:8470/ (sessions last 8 h)",
        "database     postgres://ferry:***@db.example.com/ferry",
        "cloudstack   https://cloud.example.com/client/api (api key AbCdEf0123456789, secret key read)",
        "appliance    oma",
        "guest prep   virt-v2v-in-place",
        "hooks        2 before live failover, 1 after rollback",
    ] {
        assert!(stdout.contains(expected), "`{expected}` in:\n{stdout}");
    }
    let everything = format!("{stdout}{}", text(&out.stderr));
    for secret in [SECRET, TOKEN, "pg-pass-91"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

#[test]
fn command_line_overrides_apply_before_the_checks() {
    let out = check_config(
        &example(),
        &[
            "--database",
            "/var/lib/ferry/ferry.db",
            "--listen",
            "0.0.0.0:9999",
            "--no-console",
        ],
        &[("FERRY_CLOUDSTACK_SECRET", SECRET), ("FERRY_TOKEN", TOKEN)],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("database     /var/lib/ferry/ferry.db"),
        "{stdout}"
    );
    assert!(
        stdout.contains("api          http://0.0.0.0:9999"),
        "{stdout}"
    );
    assert!(stdout.contains("console      off"), "{stdout}");
}

#[test]
fn a_config_without_its_secrets_is_refused_with_what_to_set() {
    let stderr = refused(&check_config(&example(), &[], &[("FERRY_TOKEN", TOKEN)]));
    // The example names a secret file that does not exist on this machine.
    assert!(
        stderr.contains("cannot read the CloudStack secret key file /etc/ferry/cloudstack-secret"),
        "{stderr}"
    );
}

#[test]
fn a_bad_config_is_refused_with_every_problem_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = [("FERRY_CLOUDSTACK_SECRET", SECRET), ("FERRY_TOKEN", TOKEN)];
    let unknown = edited_example(dir.path(), "unknown.toml", |text| {
        text.replace("concurrency = 64", "workers = 64")
    });
    let stderr = refused(&check_config(&unknown, &[], &secrets));
    assert!(stderr.contains("unknown field `workers`"), "{stderr}");
    assert!(stderr.contains("unknown.toml is not valid"), "{stderr}");

    let invalid = edited_example(dir.path(), "invalid.toml", |text| {
        text.replace("lease_secs = 30", "lease_secs = 1")
            .replace("timeout_secs = 3600", "timeout_secs = 0")
    });
    let stderr = refused(&check_config(&invalid, &[], &secrets));
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    assert!(
        stderr.contains("engine.lease_secs must be at least 2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("guest_prep.timeout_secs must be between 1 and 86400"),
        "{stderr}"
    );

    let stderr = refused(&check_config(
        Path::new("/nonexistent/ferry.toml"),
        &[],
        &[],
    ));
    assert!(
        stderr.contains("cannot read the config file /nonexistent/ferry.toml"),
        "{stderr}"
    );
}

#[test]
fn a_bad_log_filter_is_an_error_not_a_silent_default() {
    let stderr = refused(&ferry(&["--log", "ferry=[", "vm", "list"], &[]));
    assert!(stderr.contains("is not a log filter"), "{stderr}");
}

#[test]
fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ferry(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["demo", "serve", "failover", "rollback", "abandon", "output"] {
            assert!(script.contains(word), "{shell} completion has `{word}`");
        }
    }
    let out = ferry(&["completions", "tcsh"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
