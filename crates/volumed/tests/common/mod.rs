//! What the volume daemon's black-box tests share: ferry's CloudStack client for the
//! simulator, idempotency keys, and calls on the appliance `oma`, where every test
//! attaches its disks.
//!
//! Each test binary uses only some of these, hence the `dead_code` allowance.
#![allow(dead_code)]

use ::ids::{VmId, VolumeId};
use std::time::Duration;

use cloudsim::SimConfig;
use cloudsim::world::{World, ids};
use cloudstack::{Client, Config, PollPolicy};
use secrecy::SecretString;
use volumed::{Call, VolumeInfo, VolumeService};

/// ferry's CloudStack client for the simulator, polling every few milliseconds;
/// `request_timeout`, when given, bounds each request.
pub fn cs_client(endpoint: &str, request_timeout: Option<Duration>) -> anyhow::Result<Client> {
    let mut config = Config::new(
        endpoint,
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    );
    if let Some(timeout) = request_timeout {
        config.request_timeout = timeout;
    }
    config.poll = PollPolicy {
        first: Duration::from_millis(5),
        factor: 1.5,
        max: Duration::from_millis(40),
        deadline: Duration::from_secs(30),
    };
    Ok(Client::new(config)?)
}

/// A simulator of `world` on port 0 whose appliance's sysfs tree lives in the returned
/// temp dir.
pub async fn start_sim(
    world: World,
    time_scale: f64,
) -> anyhow::Result<(cloudsim::Running, tempfile::TempDir)> {
    let root = tempfile::tempdir()?;
    let running = cloudsim::start(
        SimConfig {
            world,
            sysfs_root: Some(root.path().to_path_buf()),
            time_scale,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    Ok((running, root))
}

pub fn key(s: &str) -> Call {
    Call::new(s)
}

/// The appliance `oma` of the simulator's default world.
pub fn oma() -> VmId {
    VmId::from(ids::APPLIANCE_OMA)
}

/// Attaches `volume` to `oma` under the idempotency key `call`.
pub async fn attach_to_oma<S: VolumeService + ?Sized>(
    service: &S,
    call: &str,
    volume: &str,
    device_id: Option<i64>,
) -> volumed::Result<VolumeInfo> {
    service
        .attach(&key(call), &VolumeId::from(volume), &oma(), device_id)
        .await
}

/// Checks that a VM id (as CloudStack, the daemon or its journal reports it) is `oma`.
#[track_caller]
pub fn assert_on_oma(vm_id: Option<&VmId>) {
    assert_eq!(vm_id.map(|id| id.as_str()), Some(ids::APPLIANCE_OMA));
}
