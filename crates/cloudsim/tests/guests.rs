//! Emulated guests, black-box: each test starts cloudsim on port 0 with a world whose
//! `test` network is a loopback range of its own (`127.77.<n>.0/24`, n different in
//! every test, so that tests running at once never meet), drives VMs with ferry's
//! client, and looks at the guests only as ferry's readiness gates will: by connecting
//! to the VMs' addresses, and through `/sim/guests`.
//!
//! Timing: cloudsim runs at a hundredth of real pace, so a rule's `boot_ms` of 100 000
//! is a second of wall-clock time. A guest must not answer before its boot time (a
//! lower bound measured from before the call that started the VM, which cannot pass
//! early on a slow machine) and must answer within [`PATIENCE`]. Where a test looks
//! "before the boot time" it first checks that it really is before it, and says so if
//! the machine was too slow. Nothing sleeps for a fixed time but the short steps of a
//! bounded wait.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::Context;
use cloudsim::guests::rules::{GuestRule, GuestRules};
use cloudsim::world::{World, ids};
use cloudstack::{Client, DeployVm, NicRequest, VirtualMachine, VmId};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

type Result<T = ()> = anyhow::Result<T>;

/// cloudsim's pace: a rule's `boot_ms` × this is the wall-clock boot time.
const TIME_SCALE: f64 = 0.01;

/// How long a condition may take to become true, and how often it is looked at.
const PATIENCE: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_millis(10);

/// The `boot_ms` that makes a boot last `wall` at [`TIME_SCALE`].
fn boot_ms(wall: Duration) -> u64 {
    (wall.as_secs_f64() * 1000.0 / TIME_SCALE).round() as u64
}

/// A port nothing listens on now: the kernel's pick for 127.0.0.1, let go.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn rule(vm: &str, boot: Duration, tcp: &[u16], http: &[u16]) -> GuestRule {
    GuestRule {
        vm: vm.into(),
        boot_ms: boot_ms(boot),
        tcp_ports: tcp.to_vec(),
        http_ports: http.to_vec(),
        never: false,
    }
}

/// The built-in world with its `test` network on `127.77.<net>.0/24`, quick VM
/// commands, and `rules`.
fn world(net: u8, rules: Vec<GuestRule>) -> World {
    let mut world = World::default();
    let test = world
        .networks
        .iter_mut()
        .find(|n| n.id.as_deref() == Some(ids::NETWORK_TEST))
        .expect("the built-in world has a test network");
    test.cidr = format!("127.77.{net}.0/24");
    for command in [
        "deployVirtualMachine",
        "startVirtualMachine",
        "stopVirtualMachine",
        "rebootVirtualMachine",
        "destroyVirtualMachine",
    ] {
        // 100 ms before the time scale: 1 ms.
        world.latency_ms.insert(command.into(), 100);
    }
    world.guests = GuestRules::new(rules).expect("sound rules");
    world
}

/// A running cloudsim and the ways to talk to it.
struct Sim {
    running: cloudsim::Running,
    client: Client,
    http: reqwest::Client,
}

impl Sim {
    async fn start(world: World, state_file: Option<std::path::PathBuf>) -> Result<Sim> {
        let running = cloudsim::start_with_state_file(
            cloudsim::SimConfig {
                world,
                sysfs_root: None,
                time_scale: TIME_SCALE,
            },
            "127.0.0.1:0".parse()?,
            state_file,
        )
        .await?;
        let client = common::client(
            running.endpoint(),
            ids::API_KEY,
            ids::SECRET_KEY,
            Duration::from_secs(10),
        )?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Sim {
            running,
            client,
            http,
        })
    }

    fn admin(&self, path: &str) -> String {
        format!("{}/{path}", self.running.announcement.admin)
    }

    /// `GET /sim/guests`.
    async fn guests(&self) -> Result<Value> {
        Ok(self
            .http
            .get(self.admin("guests"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The guest of VM `vm` as `/sim/guests` shows it, if it has one.
    async fn guest(&self, vm: &VmId) -> Result<Option<Value>> {
        let all = self.guests().await?;
        Ok(all["guests"]
            .as_array()
            .context("a list of guests")?
            .iter()
            .find(|g| g["vm_id"] == json!(vm.as_ref()))
            .cloned())
    }

    /// `PUT /sim/guests`: the status and the answer.
    async fn put_rules(&self, body: Value) -> Result<(u16, Value)> {
        let answer = self
            .http
            .put(self.admin("guests"))
            .json(&body)
            .send()
            .await?;
        Ok((answer.status().as_u16(), answer.json().await?))
    }

    /// Deploys and starts VM `name` with NICs on `networks` (the first holding `ip`
    /// if given), and waits for the job.
    async fn deploy_on(
        &self,
        name: &str,
        networks: &[&str],
        ip: Option<&str>,
    ) -> Result<VirtualMachine> {
        let mut request: DeployVm = common::deploy_request(name, true);
        request.nics = networks
            .iter()
            .enumerate()
            .map(|(i, network)| NicRequest {
                network_id: (*network).into(),
                ip: ip.filter(|_| i == 0).map(str::to_string),
                ..Default::default()
            })
            .collect();
        let vm = self
            .client
            .wait(&self.client.deploy_virtual_machine(&request).await?)
            .await?;
        anyhow::ensure!(vm.state == "Running", "{name} is {}", vm.state);
        Ok(vm)
    }

    /// Deploys and starts VM `name` on the loopback `test` network; its id and address.
    async fn deploy(&self, name: &str) -> Result<(VmId, Ipv4Addr)> {
        let vm = self.deploy_on(name, &[ids::NETWORK_TEST], None).await?;
        let ip = vm.nic[0]
            .ipaddress
            .as_deref()
            .context("the NIC has an address")?
            .parse()?;
        Ok((VmId::from(vm.id.as_ref()), ip))
    }

    async fn stop_vm(&self, vm: &VmId) -> Result {
        let stopped = self
            .client
            .wait(&self.client.stop_virtual_machine(vm, false).await?)
            .await?;
        anyhow::ensure!(stopped.state == "Stopped", "{}", stopped.state);
        Ok(())
    }

    async fn start_vm(&self, vm: &VmId) -> Result {
        self.client
            .wait(&self.client.start_virtual_machine(vm).await?)
            .await?;
        Ok(())
    }

    async fn reboot_vm(&self, vm: &VmId) -> Result {
        let job = self
            .client
            .submit::<VirtualMachine>(
                "rebootVirtualMachine",
                &[("id".to_string(), vm.as_ref().to_string())],
            )
            .await?;
        self.client.wait(&job).await?;
        Ok(())
    }
}

/// Whether a connection to `addr` is refused (`false`: it is accepted).
async fn refused(addr: SocketAddrV4) -> Result<bool> {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(false),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
        Ok(Err(e)) => Err(e).with_context(|| format!("connecting to {addr}")),
        Err(_) => anyhow::bail!("connecting to {addr} took over 5 s"),
    }
}

/// Waits (bounded) until `probe` yields something.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(STEP).await;
    }
}

/// Waits (bounded) until `addr` accepts a connection; when it first did.
async fn accepting(addr: SocketAddrV4) -> Result<Instant> {
    eventually(&format!("{addr} to accept"), || async move {
        Ok((!refused(addr).await?).then(Instant::now))
    })
    .await
}

/// Checks that every connection to `addrs` is refused until `until`.
async fn refused_until(addrs: &[SocketAddrV4], until: Instant) -> Result {
    let mut looks = 0;
    while Instant::now() < until {
        for addr in addrs {
            anyhow::ensure!(
                refused(*addr).await?,
                "{addr} accepted a connection before {until:?}"
            );
        }
        looks += 1;
        tokio::time::sleep(STEP).await;
    }
    anyhow::ensure!(looks > 0, "never looked before {until:?}");
    Ok(())
}

/// Fails (saying why) when `since` is `boot` or more ago: a look meant to come before
/// the boot time came too late on this machine.
fn still_before(since: Instant, boot: Duration, what: &str) -> Result {
    let elapsed = since.elapsed();
    anyhow::ensure!(
        elapsed < boot,
        "the machine is too slow for this test: {what} took {elapsed:?}, the whole boot time ({boot:?})"
    );
    Ok(())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ---- coming up ----------------------------------------------------------------------

#[tokio::test]
async fn a_guest_refuses_connections_until_its_boot_time_then_accepts() -> Result {
    let boot = Duration::from_millis(1500);
    let (tcp, http) = (free_port(), free_port());
    let sim = Sim::start(
        world(1, vec![rule("pgtest1*", boot, &[tcp], &[http])]),
        None,
    )
    .await?;

    let asked = Instant::now();
    let (vm, ip) = sim.deploy("pgtest1-test-20261204").await?;
    // The first address of the loopback range, twenty places in (as every network's).
    assert_eq!(ip, Ipv4Addr::new(127, 77, 1, 20));
    let (tcp_addr, http_addr) = (SocketAddrV4::new(ip, tcp), SocketAddrV4::new(ip, http));
    assert!(refused(tcp_addr).await?, "the TCP port is open at once");
    assert!(refused(http_addr).await?, "the HTTP port is open at once");
    let booting = sim.guest(&vm).await?.context("the VM has a guest")?;
    still_before(asked, boot, "deploying and looking")?;
    assert_eq!(booting["state"], "booting", "{booting}");
    assert_eq!(booting["rule"], "pgtest1*");
    assert_eq!(strings(&booting["addresses"]), [ip.to_string()]);
    assert_eq!(strings(&booting["listening"]), Vec::<String>::new());
    assert!(
        booting["up_in_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{booting}"
    );

    let up = accepting(tcp_addr).await?;
    assert!(
        up - asked >= boot,
        "the guest came up {:?} after the deploy was asked for, before its boot time {boot:?}",
        up - asked
    );
    assert!(
        !refused(http_addr).await?,
        "the HTTP port is up with the TCP one"
    );
    let guest = sim.guest(&vm).await?.context("the VM has a guest")?;
    assert_eq!(guest["state"], "up", "{guest}");
    let mut listening = strings(&guest["listening"]);
    listening.sort();
    let mut expected = vec![tcp_addr.to_string(), http_addr.to_string()];
    expected.sort();
    assert_eq!(listening, expected);
    assert_eq!(guest["errors"], json!([]));

    // A TCP port accepts and closes at once: a reader sees the end of the stream.
    let mut stream = TcpStream::connect(tcp_addr).await?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .context("the guest closes an accepted TCP connection")??;
    assert_eq!(n, 0, "a TCP port sends nothing");
    Ok(())
}

#[tokio::test]
async fn an_http_port_answers_any_http_1_request_with_200() -> Result {
    let (tcp, http) = (free_port(), free_port());
    let boot = Duration::from_millis(100);
    let sim = Sim::start(world(2, vec![rule("web*", boot, &[tcp], &[http])]), None).await?;
    let (_vm, ip) = sim.deploy("web01-test-1").await?;
    let http_addr = SocketAddrV4::new(ip, http);
    accepting(http_addr).await?;

    let answer = sim
        .http
        .get(format!("http://{http_addr}/healthz?deep=1"))
        .send()
        .await?;
    assert_eq!(answer.status().as_u16(), 200);
    let body = answer.text().await?;
    assert!(
        body.contains("web01-test-1") && body.contains("up"),
        "{body}"
    );

    // Any HTTP/1.x request, by hand: HEAD gets the headers only, HTTP/1.0 too.
    let raw = |request: &'static str| async move {
        let mut stream = TcpStream::connect(http_addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer)).await??;
        anyhow::Ok(answer)
    };
    let head = raw("HEAD / HTTP/1.0\r\n\r\n").await?;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
    let post = raw("POST /x HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\nhello").await?;
    assert!(post.starts_with("HTTP/1.1 200 OK\r\n"), "{post}");
    let garbage = raw("hello there\r\n\r\n").await?;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");

    // The TCP port does not speak HTTP: it closes without a word.
    let tcp_answer = sim
        .http
        .get(format!("http://{}/", SocketAddrV4::new(ip, tcp)))
        .send()
        .await;
    assert!(tcp_answer.is_err(), "{tcp_answer:?}");
    Ok(())
}

// ---- going down ---------------------------------------------------------------------

#[tokio::test]
async fn stopping_or_expunging_the_vm_closes_its_ports_at_once() -> Result {
    let (tcp, http) = (free_port(), free_port());
    let boot = Duration::from_millis(100);
    let sim = Sim::start(
        world(3, vec![rule("pgtest1*", boot, &[tcp], &[http])]),
        None,
    )
    .await?;
    let (vm, ip) = sim.deploy("pgtest1-test-1").await?;
    let addrs = [SocketAddrV4::new(ip, tcp), SocketAddrV4::new(ip, http)];
    accepting(addrs[0]).await?;
    accepting(addrs[1]).await?;

    sim.stop_vm(&vm).await?;
    for addr in addrs {
        assert!(refused(addr).await?, "{addr} still accepts after the stop");
    }
    let guest = sim
        .guest(&vm)
        .await?
        .context("a stopped VM's guest is known")?;
    assert_eq!(guest["state"], "down", "{guest}");
    assert_eq!(guest["listening"], json!([]));

    // Started again, it comes up again.
    let asked = Instant::now();
    sim.start_vm(&vm).await?;
    let up = accepting(addrs[0]).await?;
    assert!(up - asked >= boot, "up again after {:?}", up - asked);

    // Expunged, its ports close at once and its guest is forgotten.
    sim.client
        .wait(&sim.client.destroy_virtual_machine(&vm, true).await?)
        .await?;
    for addr in addrs {
        assert!(
            refused(addr).await?,
            "{addr} still accepts after the expunge"
        );
    }
    assert_eq!(sim.guest(&vm).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_guest_still_booting_when_its_vm_stops_never_comes_up() -> Result {
    let tcp = free_port();
    let boot = Duration::from_millis(1000);
    let sim = Sim::start(world(4, vec![rule("pgtest1*", boot, &[tcp], &[])]), None).await?;
    let asked = Instant::now();
    let (vm, ip) = sim.deploy("pgtest1-test-1").await?;
    sim.stop_vm(&vm).await?;
    still_before(asked, boot, "deploying and stopping")?;
    let addr = SocketAddrV4::new(ip, tcp);
    refused_until(&[addr], asked + 2 * boot).await?;
    let guest = sim.guest(&vm).await?.context("the guest is known")?;
    assert_eq!(guest["state"], "down", "{guest}");
    Ok(())
}

#[tokio::test]
async fn a_guest_that_never_comes_up_still_refuses_after_three_boot_times() -> Result {
    let (tcp, http, control_port) = (free_port(), free_port(), free_port());
    let boot = Duration::from_millis(300);
    let never = GuestRule {
        never: true,
        ..rule("pgtest1*", boot, &[tcp], &[http])
    };
    // A VM that comes up in the same time, so that the refusals mean something.
    let control = rule("control", boot, &[control_port], &[]);
    let sim = Sim::start(world(5, vec![never, control]), None).await?;

    let asked = Instant::now();
    let (vm, ip) = sim.deploy("pgtest1-test-1").await?;
    let (_control_vm, control_ip) = sim.deploy("control").await?;
    let guest = sim.guest(&vm).await?.context("the VM has a guest")?;
    assert_eq!(guest["state"], "never", "{guest}");

    accepting(SocketAddrV4::new(control_ip, control_port)).await?;
    refused_until(
        &[SocketAddrV4::new(ip, tcp), SocketAddrV4::new(ip, http)],
        asked + 3 * boot,
    )
    .await?;
    let guest = sim.guest(&vm).await?.context("the VM has a guest")?;
    assert_eq!(guest["state"], "never", "{guest}");
    assert_eq!(guest["listening"], json!([]));
    Ok(())
}

#[tokio::test]
async fn a_reboot_closes_the_ports_and_opens_them_again_after_the_boot_time() -> Result {
    let (tcp, http) = (free_port(), free_port());
    let boot = Duration::from_millis(1000);
    let sim = Sim::start(
        world(6, vec![rule("pgtest1*", boot, &[tcp], &[http])]),
        None,
    )
    .await?;
    let (vm, ip) = sim.deploy("pgtest1-test-1").await?;
    let addrs = [SocketAddrV4::new(ip, tcp), SocketAddrV4::new(ip, http)];
    accepting(addrs[0]).await?;

    let asked = Instant::now();
    sim.reboot_vm(&vm).await?;
    for addr in addrs {
        assert!(
            refused(addr).await?,
            "{addr} still accepts after the reboot"
        );
    }
    let guest = sim.guest(&vm).await?.context("the VM has a guest")?;
    still_before(asked, boot, "rebooting and looking")?;
    assert_eq!(guest["state"], "booting", "{guest}");
    let up = accepting(addrs[1]).await?;
    assert!(
        up - asked >= boot,
        "up again {:?} after the reboot was asked for",
        up - asked
    );
    Ok(())
}

// ---- which guests -------------------------------------------------------------------

#[tokio::test]
async fn new_rules_apply_to_the_guests_that_boot_afterwards() -> Result {
    let (tcp, late_port) = (free_port(), free_port());
    let quick = Duration::from_millis(200);
    let sim = Sim::start(world(7, vec![rule("pgtest1*", quick, &[tcp], &[])]), None).await?;
    let (first, first_ip) = sim.deploy("pgtest1-test-1").await?;
    let first_addr = SocketAddrV4::new(first_ip, tcp);
    accepting(first_addr).await?;

    let late = Duration::from_millis(1500);
    let (status, answer) = sim
        .put_rules(json!([{"vm": "pgtest1*", "boot_ms": boot_ms(late), "tcp_ports": [late_port]}]))
        .await?;
    assert_eq!(status, 200, "{answer}");
    let rules = sim.guests().await?["rules"].clone();
    assert_eq!(rules[0]["boot_ms"], json!(boot_ms(late)), "{rules}");
    assert_eq!(rules[0]["tcp_ports"], json!([late_port]));

    // The guest already up keeps its rule.
    assert!(!refused(first_addr).await?);
    let guest = sim.guest(&first).await?.context("the guest")?;
    assert_eq!(guest["tcp_ports"], json!([tcp]));

    let asked = Instant::now();
    let (_second, second_ip) = sim.deploy("pgtest1-test-2").await?;
    let second_addr = SocketAddrV4::new(second_ip, late_port);
    assert!(refused(second_addr).await?);
    let up = accepting(second_addr).await?;
    assert!(
        up - asked >= late,
        "the late guest came up after {:?}, before its new boot time {late:?}",
        up - asked
    );
    Ok(())
}

#[tokio::test]
async fn only_loopback_addresses_get_a_guest() -> Result {
    let tcp = free_port();
    let sim = Sim::start(
        world(8, vec![rule("*", Duration::from_millis(50), &[tcp], &[])]),
        None,
    )
    .await?;
    // On the production network (10.20.0.0/24) only: no guest, nothing bound.
    let outside = sim
        .deploy_on("outside", &[ids::NETWORK_PRODUCTION], None)
        .await?;
    // On both: a guest on its loopback address only.
    let both = sim
        .deploy_on("both", &[ids::NETWORK_PRODUCTION, ids::NETWORK_TEST], None)
        .await?;
    let loopback: Ipv4Addr = both
        .nic
        .iter()
        .find(|n| n.networkid.as_ref() == ids::NETWORK_TEST)
        .and_then(|n| n.ipaddress.as_deref())
        .context("a NIC on the test network")?
        .parse()?;
    assert!(loopback.is_loopback());
    accepting(SocketAddrV4::new(loopback, tcp)).await?;

    let all = sim.guests().await?;
    let guests = all["guests"].as_array().context("guests")?;
    // The appliance (Running, without NICs) and `outside` have none.
    assert_eq!(guests.len(), 1, "{all}");
    assert_eq!(guests[0]["vm_id"], json!(both.id.as_ref()));
    assert_eq!(strings(&guests[0]["addresses"]), [loopback.to_string()]);
    assert_eq!(
        strings(&guests[0]["listening"]),
        [SocketAddrV4::new(loopback, tcp).to_string()]
    );
    assert_eq!(sim.guest(&VmId::from(outside.id.as_ref())).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_port_in_use_is_reported_and_the_other_ports_listen() -> Result {
    let (tcp, http) = (free_port(), free_port());
    let ip = Ipv4Addr::new(127, 77, 9, 50);
    let _squatter = std::net::TcpListener::bind(SocketAddrV4::new(ip, tcp))?;
    let sim = Sim::start(
        world(
            9,
            vec![rule("pgtest1*", Duration::from_millis(50), &[tcp], &[http])],
        ),
        None,
    )
    .await?;
    let vm = sim
        .deploy_on(
            "pgtest1-test-1",
            &[ids::NETWORK_TEST],
            Some(&ip.to_string()),
        )
        .await?;
    accepting(SocketAddrV4::new(ip, http)).await?;
    let guest = sim
        .guest(&VmId::from(vm.id.as_ref()))
        .await?
        .context("the guest")?;
    assert_eq!(guest["state"], "up", "{guest}");
    assert_eq!(
        strings(&guest["listening"]),
        [SocketAddrV4::new(ip, http).to_string()]
    );
    let errors = strings(&guest["errors"]);
    assert_eq!(errors.len(), 1, "{guest}");
    assert!(
        errors[0].starts_with(&format!("{ip}:{tcp}: ")) && errors[0].contains("in use"),
        "{errors:?}"
    );
    Ok(())
}

// ---- rules refused ------------------------------------------------------------------

#[tokio::test]
async fn bad_rules_are_refused_when_the_world_is_read_and_when_put() -> Result {
    let world_with = |guests: &str| {
        World::from_toml(&format!(
            "[credentials]\napi_key = \"k\"\nsecret_key = \"s\"\n\n[[zones]]\nname = \"z\"\n\n{guests}"
        ))
    };
    let good = world_with(
        "[[guests]]\nvm = \"pgtest1*\"\nboot_ms = 2000\ntcp_ports = [5432]\nhttp_ports = [8080]\n",
    )?;
    assert_eq!(good.guests.rules().len(), 1);
    assert_eq!(good.guests.rules()[0].tcp_ports, [5432]);
    assert!(!good.guests.rules()[0].never);
    // A world written out reads back the same, its rules too.
    assert_eq!(World::from_toml(&toml::to_string(&good)?)?, good);

    for (guests, reason) in [
        (
            "vm = \"pg*test\"\nboot_ms = 1\ntcp_ports = [1]",
            "`vm` must be a VM name",
        ),
        ("vm = \"pg\"\nboot_ms = 1\ntcp_ports = [0]", "port 0"),
        (
            "vm = \"pg\"\nboot_ms = 1\ntcp_ports = [80]\nhttp_ports = [80]",
            "port 80 is in both",
        ),
        (
            "vm = \"pg\"\nboot_ms = 100000000\ntcp_ports = [1]",
            "more than a day",
        ),
        ("vm = \"pg\"\nboot_ms = 1", "lists no port"),
        (
            "vm = \"pg\"\nboot_ms = 1\nports = [1]",
            "unknown field `ports`",
        ),
        ("vm = \"pg\"\nboot_ms = 1\ntcp_ports = [70000]", "u16"),
        (
            "vm = \"pg*\"\nboot_ms = 1\ntcp_ports = [1]\n[[guests]]\nvm = \"pgtest1\"\nboot_ms = 1\ntcp_ports = [1]",
            "guest rule 2 (vm = `pgtest1`): it can never apply: rule 1 (`pg*`)",
        ),
    ] {
        let refused = world_with(&format!("[[guests]]\n{guests}\n")).unwrap_err();
        assert!(
            refused.to_string().contains(reason),
            "{guests:?}: {refused} does not say {reason:?}"
        );
    }

    let tcp = free_port();
    let sim = Sim::start(
        world(
            10,
            vec![rule("pgtest1*", Duration::from_millis(50), &[tcp], &[])],
        ),
        None,
    )
    .await?;
    let before = sim.guests().await?["rules"].clone();
    for (body, reason) in [
        (
            json!([{"vm": "pg", "boot_ms": 1, "tcp_ports": [22], "http_ports": [22]}]),
            "guest rule 1 (vm = `pg`): port 22 is in both tcp_ports and http_ports",
        ),
        (
            json!([{"vm": "a*", "boot_ms": 1, "tcp_ports": [1]}, {"vm": "a*", "boot_ms": 1, "tcp_ports": [1]}]),
            "can never apply",
        ),
        (
            json!({"vm": "pg", "boot_ms": 1, "tcp_ports": [1]}),
            "a sequence",
        ),
        (
            json!([{"vm": "pg", "tcp_ports": [1]}]),
            "missing field `boot_ms`",
        ),
    ] {
        let (status, answer) = sim.put_rules(body.clone()).await?;
        assert_eq!(status, 422, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{body}: {error} does not say {reason:?}"
        );
    }
    assert_eq!(
        sim.guests().await?["rules"],
        before,
        "a refused PUT changes nothing"
    );
    Ok(())
}

// ---- restarts -----------------------------------------------------------------------

#[tokio::test]
async fn guests_come_up_again_after_a_restart_from_the_state_file() -> Result {
    let dir = tempfile::tempdir()?;
    let state_file = dir.path().join("cloud.json");
    let tcp = free_port();
    let boot = Duration::from_millis(1000);
    let make_world = || world(11, vec![rule("pgtest1*", boot, &[tcp], &[])]);
    let sim = Sim::start(make_world(), Some(state_file.clone())).await?;
    let (vm, ip) = sim.deploy("pgtest1-test-1").await?;
    let addr = SocketAddrV4::new(ip, tcp);
    accepting(addr).await?;

    // Stopping cloudsim closes every guest port before it returns.
    sim.running.stop().await?;
    assert!(
        refused(addr).await?,
        "{addr} still accepts after cloudsim stopped"
    );

    let asked = Instant::now();
    let sim = Sim::start(make_world(), Some(state_file)).await?;
    assert!(refused(addr).await?, "{addr} accepts before the boot time");
    let guest = sim
        .guest(&vm)
        .await?
        .context("the running VM has a guest")?;
    still_before(asked, boot, "restarting and looking")?;
    assert_eq!(guest["state"], "booting", "{guest}");
    let up = accepting(addr).await?;
    assert!(up - asked >= boot, "up {:?} after the restart", up - asked);
    Ok(())
}
