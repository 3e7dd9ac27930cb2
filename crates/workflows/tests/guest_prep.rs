//! Guest preparation inside a test failover: a Windows pgtest1 has its boot replica
//! prepared on the appliance — the configured command gets the boot disk's device
//! path — before the test VM is made; without a configured command the drill is
//! refused by validation, before anything changes.

use ::ids::{RunId, VolumeId};
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use cloudsim::world::ids;
use common::{TestResult, rig};
use engine::Outcome;
use workflows::test_failover;

/// Re-registers pgtest1 as a Windows guest with the `auto` policy (which prepares
/// Windows guests).
async fn windows_pgtest1(rig: &common::Rig) -> anyhow::Result<()> {
    rig.env.store.remove_vm("pgtest1").await?;
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/pgtest1.toml");
    let mut def = inventory::VmDefinition::parse(
        &std::fs::read_to_string(example)?,
        inventory::Format::Toml,
    )?;
    def.spec.guest_os = store::GuestOs::Windows;
    def.spec.guest_prep = store::GuestPrep::Auto;
    inventory::register(
        &rig.env.store,
        &rig.env.cloud,
        &def,
        inventory::Limits::default(),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_guest_is_prepared_on_its_boot_disk_before_the_test_vm_is_made() -> TestResult {
    let rig = rig().await?;
    windows_pgtest1(&rig).await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("prep.log");
    let script = dir.path().join("inject-virtio.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let mut env = rig.env.clone();
    env.guest_prep = Some(volumed::GuestPrep {
        program: script.display().to_string(),
        args: vec!["-i".into(), "disk".into(), "{device}".into()],
        timeout_secs: 60,
    });

    let run = test_failover::start(&env, "pgtest1").await?;
    let outcome = rig
        .engine
        .execute(&run.id, &test_failover::saga(), &env)
        .await?;
    assert_eq!(
        outcome,
        Outcome::Done,
        "{:?}",
        env.store.events(&RunId::from(&run.id)).await?
    );
    let boot_serial = cloudstack::volume_serial(&VolumeId::from(ids::PGTEST1_DISK_2000));
    let ran = std::fs::read_to_string(&log)?;
    assert_eq!(ran.lines().count(), 1, "prepared once: {ran}");
    assert!(
        ran.trim().starts_with("-i disk ")
            && ran
                .trim()
                .ends_with(&format!("dev/disk/by-id/virtio-{boot_serial}")),
        "the command got the boot disk's device path: {ran}"
    );
    let steps = env.store.steps(&RunId::from(&run.id)).await?;
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let prep = names
        .iter()
        .position(|n| *n == "guest-prep")
        .expect("a guest-prep step");
    assert!(
        names[prep - 1] == "snapshot" && names[prep + 1] == "create-vm",
        "{names:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_preparation_command_a_windows_drill_is_refused_before_any_change() -> TestResult
{
    let rig = rig().await?;
    windows_pgtest1(&rig).await?;
    let mutations_before = rig.stats().await?.calls;
    let before = rig.env.store.vm("pgtest1").await?;
    let run = test_failover::start(&rig.env, "pgtest1").await?;
    let Outcome::Unwound { error } = rig
        .engine
        .execute(&run.id, &test_failover::saga(), &rig.env)
        .await?
    else {
        panic!("expected a refusal");
    };
    assert!(error.contains("validate"), "{error}");
    assert!(error.to_lowercase().contains("guest prep"), "{error}");
    let after = rig.stats().await?.calls;
    for command in [
        "createSnapshot",
        "deployVirtualMachine",
        "detachVolume",
        "attachVolume",
    ] {
        assert_eq!(
            after.get(command),
            mutations_before.get(command),
            "{command} was called"
        );
    }
    rig.assert_at_rest_since(before.as_ref()).await?;
    Ok(())
}
