//! Property tests (proptest) of `ferry serve`'s config: a complete config mutated —
//! keys removed, set to values of any type and size, unknown keys added — and any
//! text at all.
//!
//! - `Config::parse` never panics; a refusal has a message naming the key (TOML's
//!   errors show the offending line), or where it is and what was expected.
//! - `Config::check` never panics, and each problem it reports names its key.
//! - A config that `check` accepts can be run: no duration that the engine, the
//!   CloudStack client or the volume daemon adds to a clock is zero where zero breaks
//!   a run, or so large that the addition overflows (a panic in the serving process).
//!
//! `PROPTEST_CASES` scales it.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::Config as Cases;
use serde_json::{Value, json};

const FULL: &str = r#"
[server]
listen = "127.0.0.1:8470"
token_file = "/etc/ferry/token"

[database]
url = "/var/lib/ferry/ferry.db"

[cloudstack]
endpoint = "https://cloud.example.com/client/api"
api_key = "key"
secret_key_file = "/etc/ferry/cloudstack-secret"
poll_first_ms = 500
poll_max_ms = 5000
job_deadline_secs = 1800
job_duration_scale = 1.5

[target]
zone_id = "zone"
service_offering_id = "offering"
template_id = "template"

[[appliances]]
name = "oma"
vm_id = "vm"
zone_id = "zone"
sysfs_root = "/"

[engine]
concurrency = 64
lease_secs = 30
max_attempts = 5
claim_interval_ms = 1000
device_timeout_secs = 120

[guest_prep]
program = "virt-v2v-in-place"
args = ["-i", "disk", "{device}"]
timeout_secs = 3600

[[hooks.before_live]]
kind = "command"
program = "/usr/local/bin/power-off"
timeout_secs = 300

[[hooks.after_rollback]]
kind = "http"
url = "https://hooks.example.com/power-on"
method = "POST"
timeout_secs = 30
"#;

const KEYS: &[&str] = &[
    "server",
    "server.listen",
    "server.token_file",
    "database.url",
    "cloudstack",
    "cloudstack.endpoint",
    "cloudstack.api_key",
    "cloudstack.secret_key_file",
    "cloudstack.poll_first_ms",
    "cloudstack.poll_max_ms",
    "cloudstack.job_deadline_secs",
    "cloudstack.job_duration_scale",
    "target",
    "target.zone_id",
    "target.service_offering_id",
    "target.template_id",
    "appliances.0.name",
    "appliances.0.vm_id",
    "appliances.0.zone_id",
    "appliances.0.sysfs_root",
    "engine.concurrency",
    "engine.lease_secs",
    "engine.max_attempts",
    "engine.claim_interval_ms",
    "engine.device_timeout_secs",
    "guest_prep.program",
    "guest_prep.args",
    "guest_prep.timeout_secs",
    "hooks.before_live.0.program",
    "hooks.before_live.0.timeout_secs",
    "hooks.after_rollback.0.url",
    "hooks.after_rollback.0.timeout_secs",
];

const NUMBERS: &[&str] = &[
    "cloudstack.poll_first_ms",
    "cloudstack.poll_max_ms",
    "cloudstack.job_deadline_secs",
    "engine.concurrency",
    "engine.lease_secs",
    "engine.max_attempts",
    "engine.claim_interval_ms",
    "engine.device_timeout_secs",
    "guest_prep.timeout_secs",
];

#[derive(Debug, Clone)]
enum Mutation {
    Remove(&'static str),
    Set(&'static str, Value),
    Unknown(&'static str, String),
}

fn key_of(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn parent<'a>(root: &'a mut Value, path: &'a str) -> Option<(&'a mut Value, &'a str)> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop()?;
    let mut at = root;
    for p in parts {
        at = match p.parse::<usize>() {
            Ok(i) => at.get_mut(i)?,
            Err(_) => at.get_mut(p)?,
        };
    }
    Some((at, last))
}

impl Mutation {
    fn apply(&self, v: &mut Value) {
        match self {
            Mutation::Remove(path) => {
                if let Some((Value::Object(o), key)) = parent(v, path) {
                    o.remove(key);
                }
            }
            Mutation::Set(path, value) => {
                if let Some((Value::Object(o), key)) = parent(v, path) {
                    o.insert(key.to_string(), value.clone());
                }
            }
            Mutation::Unknown(section, key) => {
                let target = if section.is_empty() {
                    Some(&mut *v)
                } else {
                    v.get_mut(*section)
                };
                if let Some(Value::Object(o)) = target {
                    o.insert(key.clone(), json!(1));
                }
            }
        }
    }
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(2),
            Just(-1),
            Just(86_400),
            Just(86_401),
            Just(i64::MAX)
        ]
        .prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        ".{0,30}".prop_map(|s| json!(s)),
        prop_oneof![
            Just(""),
            Just(" "),
            Just("ftp://cloud"),
            Just("http://"),
            Just("0.0.0.0:0"),
            Just("[::1]:8470"),
            Just("postgres://u@h/db"),
        ]
        .prop_map(|s| json!(s)),
        prop::collection::vec(any::<u8>(), 0..3).prop_map(|v| json!(v)),
        Just(json!({"x": 1})),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        prop::sample::select(KEYS).prop_map(Mutation::Remove),
        (prop::sample::select(KEYS), any_value()).prop_map(|(k, v)| Mutation::Set(k, v)),
        // Numbers around the edges of what makes sense, more often.
        (
            prop::sample::select(NUMBERS),
            prop_oneof![
                Just(0u64),
                Just(1),
                Just(2),
                Just(1_000),
                Just(86_400),
                Just(2_592_000),
                Just(2_592_001),
                Just(u64::MAX / 1_000),
                Just(i64::MAX as u64),
                any::<u64>()
            ]
        )
            .prop_map(|(k, n)| Mutation::Set(k, json!(n))),
        (
            prop::sample::select(&["", "server", "cloudstack", "engine", "target"][..]),
            "[a-z]{1,6}_x"
        )
            .prop_map(|(s, k)| Mutation::Unknown(s, k)),
    ]
}

fn full() -> Value {
    toml::from_str(FULL).expect("the full config")
}

fn cases(default: u32) -> Cases {
    Cases {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..Cases::default()
    }
}

/// Whether `problem` (one line of check's refusal) names a key of the config.
fn names_a_key(problem: &str) -> bool {
    [
        "server",
        "database",
        "cloudstack",
        "target",
        "appliances",
        "engine",
        "guest_prep",
        "hooks",
    ]
    .iter()
    .any(|s| problem.contains(&format!("{s}.")) || problem.contains(&format!("{s}[")))
}

/// What an accepted config must allow: every duration the serving process adds to a
/// clock fits, and none that must not be zero is.
fn runnable(c: &server::Config) -> Result<(), String> {
    let now = Instant::now();
    let durations = [
        (
            "cloudstack.job_deadline_secs",
            Duration::from_secs(c.cloudstack.job_deadline_secs),
        ),
        (
            "engine.device_timeout_secs",
            Duration::from_secs(c.engine.device_timeout_secs),
        ),
        (
            "engine.claim_interval_ms",
            Duration::from_millis(c.engine.claim_interval_ms),
        ),
        (
            "engine.lease_secs",
            Duration::from_secs(c.engine.lease_secs),
        ),
    ];
    for (key, d) in durations {
        if d.is_zero() {
            return Err(format!("{key} = 0 was accepted"));
        }
        if now.checked_add(d).is_none() {
            return Err(format!(
                "{key} = {d:?} was accepted: Instant + it overflows"
            ));
        }
    }
    // The lease in milliseconds is added to the wall clock in milliseconds (i64).
    let lease_ms = Duration::from_secs(c.engine.lease_secs).as_millis();
    if lease_ms > (i64::MAX / 2) as u128 {
        return Err(format!(
            "engine.lease_secs = {} was accepted: it overflows the lease's expiry",
            c.engine.lease_secs
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn any_text_parses_or_is_refused_with_a_message(text in ".{0,300}") {
        if let Err(e) = server::Config::parse(&text) {
            prop_assert!(!e.trim().is_empty());
        } else if let Ok(c) = server::Config::parse(&text) {
            let _ = c.check();
        }
    }

    #[test]
    fn a_mutated_config_is_refused_by_name_or_runs(ms in prop::collection::vec(mutation(), 1..4)) {
        let mut v = full();
        for m in &ms {
            m.apply(&mut v);
        }
        let Ok(text) = toml::to_string(&v) else { return Ok(()) };
        match server::Config::parse(&text) {
            Err(message) => {
                prop_assert!(!message.trim().is_empty());
                if let [m] = ms.as_slice() {
                    let named = match m {
                        Mutation::Remove(k) => message.contains(&format!("missing field `{}`", key_of(k))),
                        Mutation::Unknown(_, k) => message.contains(&format!("unknown field `{k}`")),
                        Mutation::Set(k, _) => message.contains(key_of(k))
                            || (message.contains("line") && message.contains("expected")),
                    };
                    prop_assert!(named, "{m:?}: {message}");
                }
            }
            Ok(config) => match config.check() {
                Err(e) => {
                    let message = e.to_string();
                    let problems: Vec<&str> = message.lines().skip(1).collect();
                    prop_assert!(!problems.is_empty(), "{ms:?}: {message}");
                    for p in problems {
                        prop_assert!(names_a_key(p), "{ms:?}: `{p}` names no key");
                    }
                }
                Ok(()) => {
                    if let Err(why) = runnable(&config) {
                        prop_assert!(false, "{ms:?}: {why}");
                    }
                }
            },
        }
    }
}

/// The values `check` once let through that break a run or the serving process.
#[test]
fn zero_and_overflowing_durations_are_refused_by_name() {
    for (key, value, says) in [
        (
            "engine.claim_interval_ms",
            json!(0),
            "engine.claim_interval_ms",
        ),
        (
            "cloudstack.job_deadline_secs",
            json!(0),
            "cloudstack.job_deadline_secs",
        ),
        (
            "cloudstack.job_deadline_secs",
            json!(i64::MAX),
            "cloudstack.job_deadline_secs",
        ),
        (
            "engine.device_timeout_secs",
            json!(0),
            "engine.device_timeout_secs",
        ),
        (
            "engine.device_timeout_secs",
            json!(i64::MAX),
            "engine.device_timeout_secs",
        ),
        ("engine.lease_secs", json!(i64::MAX), "engine.lease_secs"),
    ] {
        let mut v = full();
        Mutation::Set(key, value.clone()).apply(&mut v);
        let config = server::Config::parse(&toml::to_string(&v).unwrap()).expect("parses");
        let error = config
            .check()
            .expect_err(&format!("{key} = {value} must be refused"))
            .to_string();
        assert!(error.contains(says), "{key} = {value}: {error}");
    }
    full_config_is_accepted();
    eprintln!(
        "RELIABILITY fuzz config cases_per_property={} properties=2 pinned_refusals=6",
        cases(512).cases
    );
}

fn full_config_is_accepted() {
    let config = server::Config::parse(FULL).expect("parses");
    config.check().expect("the full config is valid");
    runnable(&config).expect("runnable");
}
