//! Property tests (proptest) of the VM definition parser and of registration, from
//! bad input: arbitrary text, and the example pgtest1 definition mutated — fields
//! removed, set to values of any type and size, unknown fields added, disks and NICs
//! duplicated or dropped — in TOML and in JSON.
//!
//! - Parsing never panics; a refusal has a message, and for a single mutation it
//!   names the field (TOML shows the offending line; serde_json gives the position
//!   instead, which is what its errors carry).
//! - The file's own checks (`check_definition`) never panic, name a field of the file
//!   in every problem with a message, and catch the mutations whose meaning is known
//!   to be wrong (no vCPU, too little memory, an empty name or source id).
//! - Registration against cloudsim and a SQLite store never panics; a refusal lists
//!   every problem with its field, and writes nothing: the store's VMs and replicas
//!   are what they were.
//!
//! `PROPTEST_CASES` scales every property (`scripts/reliability` raises it).

use ::ids::VolumeId;
use std::collections::BTreeSet;
use std::path::PathBuf;

use cloudsim::world::ids;
use cloudsim::{SimConfig, World};
use inventory::{Format, Limits, RegisterError, VmDefinition, check_definition, register};
use proptest::prelude::*;
use proptest::test_runner::Config;
use secrecy::SecretString;
use serde_json::{Value, json};

fn example() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml");
    toml::from_str(&std::fs::read_to_string(path).expect("the example")).expect("valid TOML")
}

/// Every field of a definition, as (path, key): the fields of pgtest1, each with
/// whether it is required (it has no default: removing one must be refused by name).
const FIELDS: &[(&str, bool)] = &[
    ("name", true),
    ("source_id", true),
    ("appliance", true),
    ("spec", true),
    ("spec.vcpu", true),
    ("spec.memory_mb", true),
    ("spec.cpu_speed_mhz", false),
    ("spec.firmware", true),
    ("spec.secure_boot", false),
    ("spec.guest_os", true),
    ("spec.guest_prep", false),
    ("nics", false),
    ("nics.0.mac", true),
    ("nics.0.source_network", true),
    ("nics.0.test_network", true),
    ("nics.0.test_ip", false),
    ("nics.0.production_network", true),
    ("nics.0.production_ip", false),
    ("disks", false),
    ("disks.0.key", true),
    ("disks.0.controller", true),
    ("disks.0.bus", true),
    ("disks.0.unit", true),
    ("disks.0.capacity_gib", false),
    ("disks.0.capacity_bytes", false),
    ("disks.0.label", false),
    ("disks.0.boot", false),
    ("disks.0.boot_order", false),
    ("disks.1.replica_volume_id", true),
    ("disks.1.key", false),
    ("disks.1.unit", false),
    ("disks.1.capacity_gib", false),
];

/// The paths of [`FIELDS`].
fn field_paths() -> Vec<&'static str> {
    FIELDS.iter().map(|(path, _)| *path).collect()
}

/// Whether the field at `path` is required.
fn required(path: &str) -> bool {
    FIELDS.iter().any(|(p, required)| *p == path && *required)
}

#[derive(Debug, Clone)]
enum Mutation {
    Remove(&'static str),
    Set(&'static str, Value),
    Unknown(&'static str, String),
    DuplicateDisk(usize),
    DuplicateNic,
}

fn key_of(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// The object holding `path`'s last key, and that key.
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
            Mutation::Unknown(path, key) => {
                let target = if path.is_empty() {
                    Some(&mut *v)
                } else {
                    parent(v, path).and_then(|(p, k)| p.get_mut(k))
                };
                if let Some(Value::Object(o)) = target {
                    o.insert(key.clone(), json!(1));
                }
            }
            Mutation::DuplicateDisk(i) => {
                if let Some(Value::Array(disks)) = v.get_mut("disks") {
                    let copy = disks.get(*i % disks.len().max(1)).cloned();
                    if let Some(copy) = copy {
                        disks.push(copy);
                    }
                }
            }
            Mutation::DuplicateNic => {
                if let Some(Value::Array(nics)) = v.get_mut("nics")
                    && let Some(first) = nics.first().cloned()
                {
                    nics.push(first);
                }
            }
        }
    }
}

/// Values of every type and many sizes.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(31),
            Just(32),
            Just(i64::MAX)
        ]
        .prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(|s| json!(s)),
        prop_oneof![
            Just(String::new()),
            Just(" ".to_string()),
            Just("x".repeat(300)),
            Just("pgtest1-test-".to_string()),
            Just("-bad".to_string()),
            Just("uefi".to_string()),
            Just("windows".to_string()),
            Just("nvme".to_string()),
            Just("00:50:56:8a:11:01".to_string()),
            Just("10.0.0.300".to_string()),
            Just("c02e3d1b-4b54-499e-ae29-03785d73dd9b".to_string()),
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        prop::sample::select(field_paths()).prop_map(Mutation::Remove),
        (prop::sample::select(field_paths()), any_value()).prop_map(|(p, v)| Mutation::Set(p, v)),
        (
            prop::sample::select(&["", "spec", "nics.0", "disks.0"][..]),
            "[a-z]{1,6}_x"
        )
            .prop_map(|(p, k)| Mutation::Unknown(p, k)),
        (0usize..2).prop_map(Mutation::DuplicateDisk),
        Just(Mutation::DuplicateNic),
    ]
}

/// The text of `v` in `format`, if it can be written so (TOML has no null, and no
/// mixed arrays in older writers).
fn render(v: &Value, json: bool) -> Option<String> {
    if json {
        Some(v.to_string())
    } else {
        toml::to_string(v).ok()
    }
}

fn format(json: bool) -> Format {
    if json { Format::Json } else { Format::Toml }
}

/// Whether a problem's field is a field of the file (`disks[1].capacity` names the
/// capacity of disks[1], given either way).
fn names_a_field(field: &str) -> bool {
    let top = field.split(['.', '[']).next().unwrap_or_default();
    ["name", "source_id", "appliance", "spec", "nics", "disks"].contains(&top)
}

/// What the message of a refused parse must contain for one mutation.
fn parse_message_ok(m: &Mutation, message: &str, json: bool) -> Result<(), String> {
    if message.trim().is_empty() {
        return Err("an empty message".into());
    }
    let wants: Option<String> = match m {
        Mutation::Remove(path) if required(path) => {
            Some(format!("missing field `{}`", key_of(path)))
        }
        Mutation::Unknown(_, key) => Some(format!("unknown field `{key}`")),
        Mutation::Set(path, _) if !json => Some(key_of(path).to_string()),
        Mutation::Set(..) => Some("line".into()),
        _ => None,
    };
    // A value of the wrong type is shown where it is: its field, or — for a table
    // written where a plain value belongs, whose own lines come after its header —
    // its line and what was expected instead.
    let located = message.contains("line") && message.contains("expected");
    match (m, wants) {
        (Mutation::Set(..), Some(w)) if !message.contains(&w) && !located => Err(format!(
            "the message says neither `{w}` nor where and what was expected"
        )),
        (Mutation::Set(..), _) => Ok(()),
        (_, Some(w)) if !message.contains(&w) => Err(format!("the message does not say `{w}`")),
        _ => Ok(()),
    }
}

fn cases(default: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// Any text at all: a definition or a refusal with a message, never a panic.
    #[test]
    fn any_text_parses_or_is_refused_with_a_message(text in ".{0,300}", json in any::<bool>()) {
        if let Err(e) = VmDefinition::parse(&text, format(json)) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }

    /// One mutation of pgtest1: refused by the parser with a message that names the
    /// field, or parsed, and then every problem the file's own checks find names a
    /// field, with a message.
    #[test]
    fn one_bad_field_is_refused_by_name(m in mutation(), json in any::<bool>()) {
        let mut v = example();
        m.apply(&mut v);
        let Some(text) = render(&v, json) else { return Ok(()) };
        match VmDefinition::parse(&text, format(json)) {
            Err(e) => {
                let message = e.to_string();
                if let Err(why) = parse_message_ok(&m, &message, json) {
                    prop_assert!(false, "{m:?}: {why}: {message}");
                }
            }
            Ok(def) => {
                let problems = check_definition(&def, Limits::default());
                for p in &problems {
                    prop_assert!(names_a_field(&p.field), "{m:?}: problem field `{}`", p.field);
                    prop_assert!(!p.message.trim().is_empty(), "{m:?}: an empty message");
                }
                let fields: BTreeSet<&str> = problems.iter().map(|p| p.field.as_str()).collect();
                if let Mutation::Set(path, value) = &m {
                    let must = match (*path, value) {
                        ("spec.vcpu", Value::Number(n)) if n.as_i64().is_some_and(|n| n < 1) => Some("spec.vcpu"),
                        ("spec.memory_mb", Value::Number(n)) if n.as_i64().is_some_and(|n| n < 32) => Some("spec.memory_mb"),
                        ("name", Value::String(s)) if s.trim().is_empty() || s.len() > 43 => Some("name"),
                        ("source_id", Value::String(s)) if s.trim().is_empty() => Some("source_id"),
                        ("disks.1.replica_volume_id", Value::String(s)) if s.trim().is_empty() => Some("disks[1].replica_volume_id"),
                        _ => None,
                    };
                    if let Some(field) = must {
                        prop_assert!(fields.contains(field), "{m:?}: no problem named {field}: {problems:?}");
                    }
                }
            }
        }
    }

    /// Several mutations at once: never a panic, and never a silent empty message.
    #[test]
    fn many_bad_fields_never_panic(ms in prop::collection::vec(mutation(), 1..6), json in any::<bool>()) {
        let mut v = example();
        for m in &ms {
            m.apply(&mut v);
        }
        let Some(text) = render(&v, json) else { return Ok(()) };
        match VmDefinition::parse(&text, format(json)) {
            Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
            Ok(def) => {
                for p in check_definition(&def, Limits::default()) {
                    prop_assert!(names_a_field(&p.field) && !p.message.trim().is_empty(), "{p:?}");
                }
            }
        }
    }
}

/// cloudsim and a SQLite store with the appliance `oma`, shared by the cases of the
/// registration property (each case leaves the store as it found it).
struct Site {
    rt: tokio::runtime::Runtime,
    _sim: cloudsim::Running,
    cloud: cloudstack::Client,
    store: store::Store,
    _dir: tempfile::TempDir,
}

fn site() -> Site {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (sim, cloud, store, dir) = rt.block_on(async {
        let sim = cloudsim::start(
            SimConfig {
                world: World::default(),
                sysfs_root: None,
                time_scale: 0.001,
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .expect("cloudsim");
        let cloud = cloudstack::Client::new(cloudstack::Config::new(
            sim.endpoint(),
            ids::API_KEY,
            SecretString::from(ids::SECRET_KEY.to_string()),
        ))
        .expect("a client");
        let dir = tempfile::tempdir().expect("a directory");
        let store = store::Store::connect(dir.path().join("ferry.db").to_str().unwrap())
            .await
            .expect("a store");
        store
            .upsert_appliance(&store::Appliance {
                name: "oma".into(),
                vm_id: ids::APPLIANCE_OMA.into(),
                zone_id: ids::ZONE.into(),
                volumed_url: None,
                sysfs_root: None,
            })
            .await
            .expect("the appliance");
        (sim, cloud, store, dir)
    });
    Site {
        rt,
        _sim: sim,
        cloud,
        store,
        _dir: dir,
    }
}

/// What registration may change in the store: its VMs and which volumes are replicas.
fn snapshot(site: &Site) -> (Vec<String>, Vec<bool>) {
    site.rt.block_on(async {
        let vms = site
            .store
            .vms()
            .await
            .expect("vms")
            .into_iter()
            .map(|v| format!("{} {:?} {}", v.name, v.state, v.disks.len()))
            .collect();
        let mut replicas = Vec::new();
        for id in [ids::PGTEST1_DISK_2000, ids::PGTEST1_DISK_2001] {
            replicas.push(
                site.store
                    .is_replica(&VolumeId::from(id))
                    .await
                    .expect("replica"),
            );
        }
        (vms, replicas)
    })
}

#[test]
fn registration_of_a_bad_definition_names_every_problem_and_writes_nothing() {
    let site = site();
    let empty = snapshot(&site);
    let refused = std::cell::Cell::new(0u32);
    let registered = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(cases(192));
    runner
        .run(
            &(prop::collection::vec(mutation(), 1..4), any::<bool>()),
            |(ms, json)| {
                let mut v = example();
                for m in &ms {
                    m.apply(&mut v);
                }
                let Some(text) = render(&v, json) else {
                    return Ok(());
                };
                let Ok(def) = VmDefinition::parse(&text, format(json)) else {
                    return Ok(());
                };
                let result =
                    site.rt
                        .block_on(register(&site.store, &site.cloud, &def, Limits::default()));
                match result {
                    Ok(vm) => {
                        registered.set(registered.get() + 1);
                        site.rt
                            .block_on(site.store.remove_vm(&vm.name))
                            .expect("removed");
                    }
                    Err(RegisterError::Invalid(problems)) => {
                        refused.set(refused.get() + 1);
                        prop_assert!(!problems.is_empty());
                        for p in &problems {
                            prop_assert!(
                                names_a_field(&p.field) && !p.message.trim().is_empty(),
                                "{ms:?}: {p:?}"
                            );
                        }
                        prop_assert_eq!(snapshot(&site), empty.clone(), "{:?} wrote something", ms);
                    }
                    Err(e) => prop_assert!(false, "{ms:?}: not a refusal but {e}"),
                }
                prop_assert_eq!(snapshot(&site), empty.clone());
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let (refused, registered) = (refused.get(), registered.get());
    eprintln!(
        "RELIABILITY fuzz vm-definition cases_per_parse_property={} parse_properties=3 \
         registration_cases={} refused={refused} registered={registered}",
        cases(512).cases,
        cases(192).cases
    );
    assert!(
        refused > 0,
        "no case was refused: the strategy does not reach registration"
    );
}

/// Found by `many_bad_fields_never_panic`: a capacity in GiB too large to count in
/// bytes overflowed (a panic in a debug build, a wrapped negative size in a release
/// one). It is a refusal of that disk's capacity.
#[test]
fn a_capacity_too_large_to_count_in_bytes_is_refused_by_name() {
    for gib in [i64::MAX, (i64::MAX >> 30) + 1] {
        let mut v = example();
        Mutation::Set("disks.0.capacity_gib", json!(gib)).apply(&mut v);
        let def = VmDefinition::parse(&render(&v, false).unwrap(), Format::Toml).unwrap();
        let problems = check_definition(&def, Limits::default());
        assert!(
            problems
                .iter()
                .any(|p| p.field == "disks[0].capacity" && p.message.contains("too large")),
            "{problems:?}"
        );
    }
    // The largest that fits is a capacity like any other.
    let mut v = example();
    Mutation::Set("disks.0.capacity_gib", json!(i64::MAX >> 30)).apply(&mut v);
    let def = VmDefinition::parse(&render(&v, false).unwrap(), Format::Toml).unwrap();
    assert!(
        !check_definition(&def, Limits::default())
            .iter()
            .any(|p| p.field == "disks[0].capacity")
    );
}
