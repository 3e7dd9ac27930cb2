//! The demo's second part: a small recovery plan (docs/recovery-plans.md) drilled and
//! cleaned up through the API, as `ferry plan test` and `ferry plan cleanup` do.
//!
//! Two tiers: the database `pgtest1` first, then the web server `web1` once pgtest1's
//! database port accepts connections — a TCP readiness gate against a real socket,
//! which cloudsim's emulated guest of the test VM opens a boot time after the VM runs
//! (docs/cloudsim.md, "Emulated guests"). For that the demo's world puts the `test`
//! network on a loopback range, so that the test VMs' NIC addresses can be bound on
//! this machine without any set-up.
//!
//! Several demos may run at once (the tests do): each holds a port of its own on
//! 127.0.0.1 for its whole life, and takes from it both the guest's port and the
//! loopback range, `127.<port / 256>.<port % 256>.0/24` — so no two demos meet, and no
//! listener on every address can be on that port (it would refuse this one), which
//! would let the gate pass without the guest.

use std::time::Duration;

use anyhow::Context as _;
use cloudsim::guests::rules::{GuestRule, GuestRules};
use cloudsim::world::{VolumeDef, ids};
use server::model::{AddVm, DefinitionFormat, VmDetail};
use server::plan_model::{AddPlan, PlanDetail, PlanRunView, PlanRunVmView};

use crate::client::api::Api;
use crate::client::plans;

/// The plan's name.
pub(super) const PLAN: &str = "demo";

/// The web server of the plan's second tier: one 20 GiB disk, replicated to `oma`.
const WEB1: &str = "web1";
const WEB1_DISK_2000: &str = "5f3b6a2e-0c1d-4e8f-9a7b-2d4c6e8f0a1b";

/// How long pgtest1's guest takes to come up after its VM runs, at real pace (× the
/// time scale): long enough that the gate is seen to wait for it.
const PGTEST1_BOOT_MS: u64 = 20_000;

/// How often the plan runs are looked at while they run.
const LOOK: Duration = Duration::from_millis(100);

/// A port held for the demo's life, from which its guest's port and loopback range
/// come.
pub(super) struct Reservation {
    _held: std::net::TcpListener,
    port: u16,
}

impl Reservation {
    pub(super) fn take() -> anyhow::Result<Reservation> {
        let held = std::net::TcpListener::bind("127.0.0.1:0")
            .context("cannot hold a port on 127.0.0.1 for the demo's guest")?;
        let port = held.local_addr()?.port();
        Ok(Reservation { _held: held, port })
    }

    /// The test network's range: a /24 of 127.0.0.0/8 no other demo has.
    fn cidr(&self) -> String {
        format!("127.{}.{}.0/24", self.port >> 8, self.port & 0xff)
    }

    /// The port pgtest1's guest listens on, and its gate tries.
    pub(super) fn port(&self) -> u16 {
        self.port
    }
}

/// The built-in world with what the plan needs: the `test` network on the demo's
/// loopback range, web1's replica on the appliance, and pgtest1's guest.
pub(super) fn world(reservation: &Reservation) -> anyhow::Result<cloudsim::World> {
    let mut world = cloudsim::World::default();
    let test = world
        .networks
        .iter_mut()
        .find(|n| n.id.as_deref() == Some(ids::NETWORK_TEST))
        .context("the built-in world has no test network")?;
    test.cidr = reservation.cidr();
    let oma = world
        .appliances
        .iter_mut()
        .find(|a| a.id.as_deref() == Some(ids::APPLIANCE_OMA))
        .context("the built-in world has no appliance oma")?;
    oma.volumes.push(VolumeDef {
        id: Some(WEB1_DISK_2000.into()),
        name: format!("{WEB1}-disk-2000"),
        size_gb: 20,
        zone: None,
    });
    world.guests = GuestRules::new(vec![GuestRule {
        vm: "pgtest1*".into(),
        boot_ms: PGTEST1_BOOT_MS,
        tcp_ports: vec![reservation.port()],
        http_ports: vec![],
        never: false,
    }])
    .map_err(|e| anyhow::anyhow!("the demo's guest rule: {e}"))?;
    Ok(world)
}

fn web1_definition() -> String {
    format!(
        r#"name = "{WEB1}"
source_id = "5029a4d2-8b1e-4c1a-9f3e-2d7c6b5a4e02"
appliance = "oma"

[spec]
vcpu = 2
memory_mb = 4096
firmware = "bios"
guest_os = "linux"

[[nics]]
mac = "00:50:56:8a:11:02"
source_network = "VM Network"
test_network = "test"
production_network = "production"

[[disks]]
key = 2000
controller = "scsi"
bus = 0
unit = 0
capacity_gib = 20
label = "Hard disk 1"
boot = true
replica_volume_id = "{WEB1_DISK_2000}"
"#
    )
}

/// The plan file: pgtest1, then web1 once pgtest1 takes TCP connections on `port`.
/// The gate's deadline (real seconds) is the guest's boot at the demo's `time_scale`
/// and half a minute more: ample on a loaded machine, and a guest that cannot come up
/// (a system that does not route all of 127.0.0.0/8 to loopback) is said soon.
fn plan_definition(port: u16, time_scale: f64) -> String {
    let deadline_secs = (PGTEST1_BOOT_MS as f64 / 1000.0 * time_scale).ceil() as u64 + 30;
    format!(
        r#"name = "{PLAN}"
description = "ferry demo: the database, then the web server"

[[tiers]]
name = "database"
vms = ["pgtest1"]

[[tiers.gates]]
kind = "tcp"
port = {port}
deadline_secs = {deadline_secs}
interval_secs = 1

[[tiers]]
name = "web"
vms = ["{WEB1}"]
"#
    )
}

/// What the plan part did, for the report and the final checks.
#[derive(serde::Serialize)]
pub(super) struct PlanPart {
    pub(super) plan: PlanDetail,
    pub(super) drill: PlanRunView,
    pub(super) cleanup: PlanRunView,
}

impl PlanPart {
    /// Whether the drill and its cleanup both ended done.
    pub(super) fn done(&self) -> bool {
        self.drill.state == "done" && self.cleanup.state == "done"
    }
}

/// Registers web1, adds the plan, drills it and cleans it up, printing each (unless
/// `quiet`) as `n`., `n + 1`., `n + 2`.; web1 as registered, and the part.
pub(super) async fn run(
    api: &Api,
    reservation: &Reservation,
    time_scale: f64,
    n: u32,
    quiet: bool,
) -> anyhow::Result<(VmDetail, PlanPart)> {
    let say = |text: String| {
        if !quiet {
            println!("{text}");
        }
    };
    let web1 = api
        .add_vm(&AddVm {
            definition: web1_definition(),
            format: DefinitionFormat::Toml,
        })
        .await
        .map_err(|e| anyhow::anyhow!("registering {WEB1}: {e}"))?;
    let plan = api
        .add_plan(&AddPlan {
            definition: plan_definition(reservation.port(), time_scale),
            format: DefinitionFormat::Toml,
        })
        .await
        .map_err(|e| anyhow::anyhow!("adding plan {PLAN}: {e}"))?;
    let mut lines = vec![format!(
        "\n{n}. Recovery plan {PLAN}: registered {} (1 disk, 20 GiB, on {}), and the plan of {} tiers:",
        web1.name,
        web1.appliance,
        plan.tiers.len()
    )];
    for (i, tier) in plan.tiers.iter().enumerate() {
        for vm in &tier.vms {
            lines.push(format!(
                "   tier {} ({}): {vm}, ready when: {}",
                i + 1,
                tier.name,
                gates_in_words(tier.gates.get(vm))
            ));
        }
    }
    say(lines.join("\n"));

    say(format!(
        "\n{}. Drill of plan {PLAN}: tier by tier, the next once each VM of the one before is ready",
        n + 1
    ));
    let drill = follow(api, "test-failover", quiet).await?;
    say(format!("\n{}", drill_table(&drill)));

    say(format!(
        "{}. Cleanup of plan {PLAN}, last tier first",
        n + 2
    ));
    let cleanup = follow(api, "cleanup", quiet).await?;
    say(format!("\n{}", cleanup_table(&cleanup)));
    Ok((
        web1,
        PlanPart {
            plan,
            drill,
            cleanup,
        },
    ))
}

/// Starts the plan's `workflow` and follows it to its end, a line each time a VM of
/// it moves.
async fn follow(api: &Api, workflow: &str, quiet: bool) -> anyhow::Result<PlanRunView> {
    let run = api
        .start_plan(PLAN, workflow)
        .await
        .map_err(|e| anyhow::anyhow!("starting the {workflow} of plan {PLAN}: {e}"))?;
    let mut shown = String::new();
    let (run, _) = plans::follow(api, run, LOOK, |run| {
        let now = moves(run);
        if !quiet && now != shown {
            println!("   {now}");
            shown = now;
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("following the {workflow} of plan {PLAN}: {e}"))?;
    Ok(run)
}

/// A tier's name, by its number in a plan run (1 = the first the run takes).
fn tier_name(run: &PlanRunView, tier: i64) -> &str {
    run.tier_timings
        .iter()
        .find(|t| t.tier == tier)
        .map_or("?", |t| t.name.as_str())
}

/// Where the plan run is: `tier 1/2 (database): pgtest1 checking` (`… — plan run done`
/// once it ended).
fn moves(run: &PlanRunView) -> String {
    let vms: Vec<String> = run
        .vms
        .iter()
        .filter(|v| v.tier == run.tier)
        .map(|v| format!("{} {}", v.name, v.state))
        .collect();
    let end = if plans::under_way(&run.state) {
        String::new()
    } else {
        format!(" — plan run {}", run.state)
    };
    format!(
        "tier {}/{} ({}): {}{end}",
        run.tier,
        run.tiers,
        tier_name(run, run.tier),
        vms.join(", ")
    )
}

/// The drill tier by tier: each VM's state, RTO and what its gates saw, and the
/// plan's RTO.
fn drill_table(run: &PlanRunView) -> String {
    let row = |tier: &str, vm: &str, state: &str, rto: &str, seen: &str| {
        format!("   {tier:<12} {vm:<9} {state:<7} {rto:>6}  {seen}\n")
    };
    let mut out = row("TIER", "VM", "STATE", "RTO", "READINESS");
    for v in &run.vms {
        out.push_str(&row(
            &format!("{} {}", v.tier, tier_name(run, v.tier)),
            &v.name,
            &v.state,
            &plans::seconds(v.rto_ms),
            &readiness_in_words(v),
        ));
    }
    match (run.state.as_str(), run.rto_ms) {
        ("done", Some(rto)) => out.push_str(&format!(
            "   Plan RTO (request → last VM ready): {}; plan run {} done.\n",
            plans::seconds(Some(rto)),
            run.id
        )),
        _ => out.push_str(&format!(
            "   The drill ended {}: {}\n",
            run.state,
            run.error.as_deref().unwrap_or("no reason recorded")
        )),
    }
    out
}

/// The cleanup: each VM in the order it was taken back.
fn cleanup_table(run: &PlanRunView) -> String {
    let mut out = String::new();
    for v in &run.vms {
        let state = if v.state == "ready" {
            "cleaned up"
        } else {
            v.state.as_str()
        };
        let detail = v.detail.as_deref().map(|d| format!(": {d}"));
        out.push_str(&format!(
            "   {}. {} ({}) {state}{}\n",
            v.tier,
            v.name,
            tier_name(run, v.tier),
            detail.unwrap_or_default()
        ));
    }
    let error = run.error.as_deref().map(|e| format!(": {e}"));
    out.push_str(&format!(
        "   Plan run {} {}{}\n",
        run.id,
        run.state,
        error.unwrap_or_default()
    ));
    out
}

/// What a VM's gates saw: `tcp port 41234 passed (attempt 2, 1.0 s): connected to …`.
fn readiness_in_words(vm: &PlanRunVmView) -> String {
    let Some(gates) = vm
        .readiness
        .as_ref()
        .and_then(|r| r.get("gates"))
        .and_then(|g| g.as_array())
    else {
        return vm.detail.clone().unwrap_or_else(|| "-".into());
    };
    let text = |g: &serde_json::Value, key: &str| {
        g.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    gates
        .iter()
        .map(|g| {
            let attempts = g.get("attempts").and_then(|a| a.as_u64()).unwrap_or(0);
            let elapsed = g.get("elapsed_ms").and_then(|e| e.as_i64());
            format!(
                "{} {} ({} attempt{}, {}): {}",
                text(g, "check"),
                text(g, "verdict"),
                attempts,
                if attempts == 1 { "" } else { "s" },
                plans::seconds(elapsed),
                g.get("last_seen")
                    .and_then(|s| s.as_str())
                    .unwrap_or("nothing seen")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A VM's gates as `plan show` lists them: `tcp 41234`, `running`.
fn gates_in_words(gates: Option<&serde_json::Value>) -> String {
    let Some(gates) = gates.and_then(|g| g.as_array()) else {
        return "running".into();
    };
    gates
        .iter()
        .map(|g| {
            let kind = g.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
            match g.get("port") {
                Some(port) => format!("{kind} port {port} on its NIC addresses"),
                None => kind.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demos_world_and_files_are_sound() {
        let reservation = Reservation::take().expect("a port");
        let world = world(&reservation).expect("the demo's world");
        // The world survives cloudsim's own reading of it.
        let text = toml::to_string(&world).expect("TOML");
        let read = cloudsim::World::from_toml(&text).expect("cloudsim reads it");
        let test = read
            .networks
            .iter()
            .find(|n| n.name == "test")
            .expect("a test network");
        assert!(test.cidr.starts_with("127."), "{}", test.cidr);
        assert_eq!(read.guests.rules().len(), 1);
        assert!(read.guests.for_vm("pgtest1-test-1").is_some());
        let plan: toml::Value = toml::from_str(&plan_definition(5432, 0.05)).expect("TOML");
        let gate = &plan["tiers"][0]["gates"][0];
        assert_eq!(gate["port"].as_integer(), Some(5432));
        // The guest's boot (1 s at 0.05) and half a minute; 20 s at real pace.
        assert_eq!(gate["deadline_secs"].as_integer(), Some(31));
        let real_pace: toml::Value = toml::from_str(&plan_definition(5432, 1.0)).expect("TOML");
        assert_eq!(
            real_pace["tiers"][0]["gates"][0]["deadline_secs"].as_integer(),
            Some(50)
        );
        let web1: toml::Value = toml::from_str(&web1_definition()).expect("TOML");
        assert_eq!(
            web1["disks"][0]["replica_volume_id"].as_str(),
            Some(WEB1_DISK_2000)
        );
    }
}
