//! What cloudsim's black-box test binaries share: a client tuned for a simulator at
//! a small time scale, and the deploy request their VMs are made from.

use std::time::Duration;

use cloudsim::world::ids;
use cloudstack::{Client, Config, DeployVm, NicRequest, PollPolicy};
use secrecy::SecretString;

/// ferry's client for `endpoint`, polling jobs every few milliseconds.
pub fn client(
    endpoint: &str,
    key: &str,
    secret: &str,
    request_timeout: Duration,
) -> anyhow::Result<Client> {
    let mut config = Config::new(endpoint, key, SecretString::from(secret.to_string()));
    config.request_timeout = request_timeout;
    config.poll = PollPolicy {
        first: Duration::from_millis(5),
        factor: 1.5,
        max: Duration::from_millis(50),
        deadline: Duration::from_secs(20),
    };
    Ok(Client::new(config)?)
}

/// cloudsim with `world` at a thousandth of real pace (persisting to `state_file` if
/// given), and a client for it.
#[allow(dead_code)] // not every test binary starts its own world
pub async fn start_world(
    world: cloudsim::world::World,
    state_file: Option<std::path::PathBuf>,
) -> anyhow::Result<(cloudsim::Running, Client)> {
    let running = cloudsim::start_with_state_file(
        cloudsim::SimConfig {
            world,
            sysfs_root: None,
            time_scale: 0.001,
        },
        "127.0.0.1:0".parse()?,
        state_file,
    )
    .await?;
    let client = client(
        running.endpoint(),
        ids::API_KEY,
        ids::SECRET_KEY,
        Duration::from_secs(60),
    )?;
    Ok((running, client))
}

/// A VM with the custom offering (2 vCPU, 1000 MHz, 2 GiB) on the `test` network.
pub fn deploy_request(name: &str, start: bool) -> DeployVm {
    DeployVm {
        zone_id: ids::ZONE.into(),
        service_offering_id: ids::OFFERING_CUSTOM.into(),
        template_id: ids::TEMPLATE.into(),
        name: Some(name.into()),
        cpu_number: Some(2),
        cpu_speed: Some(1000),
        memory_mb: Some(2048),
        nics: vec![NicRequest {
            network_id: ids::NETWORK_TEST.into(),
            ..Default::default()
        }],
        start,
        ..Default::default()
    }
}
