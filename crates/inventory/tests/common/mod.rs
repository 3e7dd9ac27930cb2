//! What the inventory's tests share: cloudsim on port 0 with a world of the test's
//! choosing, a SQLite store with cloudsim's appliances configured, and pgtest1's
//! documented definition.

#![allow(dead_code, reason = "each test binary uses a part of it")]

use std::path::PathBuf;

use cloudsim::world::ids;
use cloudsim::{SimConfig, World};
use inventory::{Format, Problem, VmDefinition};
use secrecy::SecretString;
use store::{Appliance, Store};

pub type TestResult = anyhow::Result<()>;
pub const GIB: i64 = 1 << 30;

pub struct Env {
    _sim: cloudsim::Running,
    pub cloud: cloudstack::Client,
    pub store: Store,
    _dir: tempfile::TempDir,
}

pub async fn env(world: World) -> anyhow::Result<Env> {
    let sim = cloudsim::start(
        SimConfig {
            world,
            sysfs_root: None,
            time_scale: 0.001,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let cloud = cloudstack::Client::new(cloudstack::Config::new(
        sim.endpoint(),
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    ))?;
    let dir = tempfile::tempdir()?;
    let store = Store::connect(dir.path().join("ferry.db").to_str().expect("utf-8")).await?;
    for (name, vm_id) in &sim.announcement.appliances {
        store
            .upsert_appliance(&Appliance {
                name: name.clone(),
                vm_id: vm_id.clone().into(),
                zone_id: sim.announcement.zone_id.clone().into(),
                volumed_url: None,
                sysfs_root: None,
            })
            .await?;
    }
    Ok(Env {
        _sim: sim,
        cloud,
        store,
        _dir: dir,
    })
}

/// docs/examples/pgtest1.toml, parsed.
pub fn example() -> anyhow::Result<VmDefinition> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml");
    Ok(VmDefinition::parse(
        &std::fs::read_to_string(&path)?,
        Format::of_path(&path),
    )?)
}

#[track_caller]
pub fn assert_problem(problems: &[Problem], field: &str, text: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.field == field && p.message.contains(text)),
        "no problem on `{field}` containing `{text}` in {problems:#?}"
    );
}
