//! A VM's readiness asked of CloudStack, against cloudsim's emulated guests on a
//! loopback network (real sockets): a guest that comes up passes `running`, `tcp` and
//! `http`; one that never comes up fails at `tcp` with what it saw, and the gate after
//! it is not run; a VM CloudStack does not have is an error, not a verdict.

use std::time::Duration;

use cloudsim::guests::rules::{GuestRule, GuestRules};
use cloudsim::world::{World, ids};
use cloudstack::{Client, Config, DeployVm, NicRequest, PollPolicy, VmId};
use plans::ready;
use readiness::{FailoverKind, GateSpec, Verdict};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

type Result<T = ()> = anyhow::Result<T>;

/// A port nothing listens on now: the kernel's pick for 127.0.0.1, let go.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn gate(kind: &str, port: Option<u16>) -> GateSpec {
    GateSpec {
        kind: Some(kind.into()),
        port: port.map(i64::from),
        deadline_secs: Some(3),
        interval_secs: Some(1),
        ..GateSpec::default()
    }
}

async fn sim(net: u8, rules: Vec<GuestRule>) -> Result<(cloudsim::Running, Client)> {
    let mut world = World::default();
    let test = world
        .networks
        .iter_mut()
        .find(|n| n.id.as_deref() == Some(ids::NETWORK_TEST))
        .expect("the built-in world has a test network");
    test.cidr = format!("127.77.{net}.0/24");
    world.guests = GuestRules::new(rules)?;
    let running = cloudsim::start(
        cloudsim::SimConfig {
            world,
            sysfs_root: None,
            time_scale: 0.001,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let mut config = Config::new(
        running.endpoint(),
        ids::API_KEY,
        SecretString::from(ids::SECRET_KEY.to_string()),
    );
    config.poll = PollPolicy {
        first: Duration::from_millis(5),
        factor: 1.5,
        max: Duration::from_millis(50),
        deadline: Duration::from_secs(20),
    };
    Ok((running, Client::new(config)?))
}

async fn deploy(client: &Client, name: &str) -> Result<VmId> {
    let request = DeployVm {
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
        start: true,
        ..Default::default()
    };
    let vm = client
        .wait(&client.deploy_virtual_machine(&request).await?)
        .await?;
    Ok(vm.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_comes_up_passes_its_gates_and_one_that_never_does_fails_at_its_port() -> Result
{
    let (tcp, http) = (free_port(), free_port());
    let up = GuestRule {
        vm: "up-*".into(),
        boot_ms: 300_000, // 0.3 s at this pace
        tcp_ports: vec![tcp],
        http_ports: vec![http],
        never: false,
    };
    let never = GuestRule {
        vm: "never-*".into(),
        never: true,
        ..up.clone()
    };
    let (_sim, client) = sim(201, vec![up, never]).await?;
    let cancel = CancellationToken::new();
    let run_id = ::ids::RunId::from("run-ready-test");
    let mut http_gate = gate("http", Some(http));
    http_gate.path = Some("/health".into());
    let gates = [gate("running", None), gate("tcp", Some(tcp)), http_gate];

    let vm = deploy(&client, "up-1").await?;
    let seen = ready::check(&client, &vm, &gates, &run_id, FailoverKind::Test, &cancel).await?;
    assert!(seen.ready, "{seen:?}");
    assert!(
        seen.gates.iter().all(|g| g.verdict == Verdict::Passed),
        "{seen:?}"
    );
    let address = client
        .get_virtual_machine(&vm)
        .await?
        .map(|v| ready::addresses(&v))
        .unwrap_or_default();
    assert_eq!(address.len(), 1);
    assert!(
        address[0].to_string().starts_with("127.77.201."),
        "{address:?}"
    );
    assert!(
        seen.gates[1]
            .last_seen
            .as_deref()
            .unwrap_or_default()
            .contains(&address[0].to_string()),
        "{:?}",
        seen.gates[1]
    );

    let vm = deploy(&client, "never-1").await?;
    let seen = ready::check(&client, &vm, &gates, &run_id, FailoverKind::Test, &cancel).await?;
    assert!(!seen.ready, "{seen:?}");
    assert_eq!(seen.gates[0].verdict, Verdict::Passed, "it runs");
    assert_eq!(seen.gates[1].verdict, Verdict::Failed);
    assert!(
        seen.gates[1]
            .last_seen
            .as_deref()
            .unwrap_or_default()
            .contains("refused"),
        "{:?}",
        seen.gates[1]
    );
    assert_eq!(seen.gates[2].verdict, Verdict::NotRun);

    // A VM CloudStack does not have: an error, not a verdict.
    let gone = VmId::from("00000000-0000-4000-8000-000000000000");
    let err = ready::check(&client, &gone, &gates, &run_id, FailoverKind::Test, &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no VM"), "{err}");
    // Gates that are not valid are refused before anything is asked.
    let bad = [gate("tcp", None)];
    let err = ready::check(&client, &vm, &bad, &run_id, FailoverKind::Test, &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gates[0].port"), "{err}");
    Ok(())
}
