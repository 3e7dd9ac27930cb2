//! The guests of the VMs, one per VM a rule matches, each following its VM: it boots
//! when the VM reaches Running, is up (listening) after its boot time, and is down —
//! its ports closed — as soon as the VM stops, reboots or is destroyed.
//!
//! The races, and how each is closed:
//!
//! - a VM that stops while its guest boots: the boot task waits on a timer or the
//!   guest's token, whichever comes first, and binds under the registry's lock after
//!   looking at the token again; [`Guests::down`] cancels the token under the same
//!   lock. So either the ports were bound before (and the down closes them) or they
//!   never are.
//! - "closed at once": a port is closed when its serving task returns; `down` waits
//!   for every task of the guest, and the job queue calls it before it marks the job
//!   done. A client that sees a stop job end finds the ports closed.
//! - a guest booted again before its old life ended (a reboot's two halves, a restart):
//!   [`Guests::boot`] ends the old life, waiting for its tasks, before it starts the new
//!   one, so an old listener never holds the port the new one binds.
//!
//! The registry knows nothing of CloudStack: the job queue tells it a VM's name and
//! loopback addresses ([`GuestVm`]) and what happened to the VM ([`GuestChange`]).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::guests::rules::{GuestRule, GuestRules};
use crate::guests::serve::{self, Service};

/// A VM as its guest needs it: its id, its name (what rules match) and the addresses
/// its guest may listen on (its NICs' loopback addresses; see `state::addresses`).
#[derive(Debug, Clone)]
pub struct GuestVm {
    pub id: String,
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
}

/// What a VM job did to the VM, for its guest.
#[derive(Debug, Clone)]
pub enum GuestChange {
    /// The VM reached Running (a start, a deploy that starts it, a reboot).
    Boot(GuestVm),
    /// The VM stopped or was destroyed; the guest stays known, down.
    Down(String),
    /// The VM was expunged; the guest is forgotten.
    Gone(String),
}

/// Every guest, and the rules new guests follow.
pub struct Guests {
    time_scale: f64,
    shutdown: CancellationToken,
    registry: Arc<Mutex<Registry>>,
}

struct Registry {
    rules: GuestRules,
    /// By VM id.
    guests: BTreeMap<String, Guest>,
}

struct Guest {
    vm_name: String,
    rule: GuestRule,
    addresses: Vec<Ipv4Addr>,
    phase: Phase,
    listening: Vec<SocketAddrV4>,
    /// The ports that could not be bound when it came up, with the reason.
    errors: Vec<String>,
    /// While its VM runs: the token that takes it down, and its tasks (the boot timer,
    /// then one per listener).
    life: Option<Life>,
}

struct Life {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Booting { up_at: Instant },
    Up,
    Down,
    Never,
}

impl Guests {
    pub fn new(rules: GuestRules, time_scale: f64, shutdown: CancellationToken) -> Guests {
        Guests {
            time_scale,
            shutdown,
            registry: Arc::new(Mutex::new(Registry {
                rules,
                guests: BTreeMap::new(),
            })),
        }
    }

    /// Replaces the rules. They apply to guests that boot from now on; a guest booting
    /// or up keeps the rule it booted with.
    pub fn set_rules(&self, rules: GuestRules) {
        self.registry.lock().expect("poisoned").rules = rules;
    }

    pub async fn apply(&self, change: GuestChange) {
        match change {
            GuestChange::Boot(vm) => self.boot(vm).await,
            GuestChange::Down(vm_id) => self.down(&vm_id, false).await,
            GuestChange::Gone(vm_id) => self.down(&vm_id, true).await,
        }
    }

    /// The VM reached Running: its guest (if a rule matches it and it has a loopback
    /// address) boots, and comes up after the rule's boot time.
    pub async fn boot(&self, vm: GuestVm) {
        let mut registry = loop {
            let old = {
                let mut registry = self.registry.lock().expect("poisoned");
                match registry.guests.get_mut(&vm.id).and_then(|g| g.life.take()) {
                    None => break registry,
                    Some(life) => life,
                }
            };
            end(old).await;
        };
        let Some(rule) = registry.rules.for_vm(&vm.name).cloned() else {
            registry.guests.remove(&vm.id);
            return;
        };
        if vm.addresses.is_empty() {
            // Only loopback addresses are ever bound: a VM on other networks has no
            // guest.
            registry.guests.remove(&vm.id);
            return;
        }
        let boot = Duration::from_secs_f64(rule.boot_ms as f64 / 1000.0 * self.time_scale);
        let (phase, life) = if rule.never {
            (Phase::Never, None)
        } else {
            let stop = self.shutdown.child_token();
            let task = tokio::spawn(come_up(
                Arc::clone(&self.registry),
                vm.id.clone(),
                boot,
                stop.clone(),
            ));
            let up_at = Instant::now() + boot;
            (
                Phase::Booting { up_at },
                Some(Life {
                    stop,
                    tasks: vec![task],
                }),
            )
        };
        registry.guests.insert(
            vm.id,
            Guest {
                vm_name: vm.name,
                rule,
                addresses: vm.addresses,
                phase,
                listening: vec![],
                errors: vec![],
                life,
            },
        );
    }

    /// The VM stopped, rebooted or was destroyed (`forget`: expunged): its guest's
    /// ports are closed when this returns, and a guest still booting never comes up.
    pub async fn down(&self, vm_id: &str, forget: bool) {
        let life = {
            let mut registry = self.registry.lock().expect("poisoned");
            let life = registry.guests.get_mut(vm_id).and_then(|guest| {
                guest.phase = Phase::Down;
                guest.listening.clear();
                guest.life.take()
            });
            if forget {
                registry.guests.remove(vm_id);
            }
            if let Some(life) = &life {
                life.stop.cancel();
            }
            life
        };
        if let Some(life) = life {
            end(life).await;
        }
    }

    /// Takes every guest down and waits until all its ports are closed (the simulator
    /// is stopping).
    pub async fn close_all(&self) {
        let lives: Vec<Life> = {
            let mut registry = self.registry.lock().expect("poisoned");
            registry
                .guests
                .values_mut()
                .filter_map(|guest| {
                    guest.phase = Phase::Down;
                    guest.listening.clear();
                    guest.life.take()
                })
                .collect()
        };
        for life in lives {
            end(life).await;
        }
    }

    /// What `GET /sim/guests` shows: the rules, and each guest with its state.
    pub fn report(&self) -> Value {
        let registry = self.registry.lock().expect("poisoned");
        let now = Instant::now();
        let mut guests: Vec<(&String, &Guest)> = registry.guests.iter().collect();
        guests.sort_by(|a, b| a.1.vm_name.cmp(&b.1.vm_name).then(a.0.cmp(b.0)));
        let guests: Vec<Value> = guests
            .into_iter()
            .map(|(vm_id, g)| {
                let (state, up_in_ms) = match g.phase {
                    Phase::Booting { up_at } => (
                        "booting",
                        Some(up_at.saturating_duration_since(now).as_millis() as u64),
                    ),
                    Phase::Up => ("up", None),
                    Phase::Down => ("down", None),
                    Phase::Never => ("never", None),
                };
                let mut report = json!({
                    "vm_id": vm_id,
                    "vm": g.vm_name,
                    "rule": g.rule.vm,
                    "state": state,
                    "addresses": g.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "tcp_ports": g.rule.tcp_ports,
                    "http_ports": g.rule.http_ports,
                    "listening": g.listening.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "errors": g.errors,
                });
                if let Some(ms) = up_in_ms {
                    report["up_in_ms"] = json!(ms);
                }
                report
            })
            .collect();
        json!({ "rules": registry.rules, "guests": guests })
    }
}

/// Ends a guest's life: cancels its token and waits for its tasks, so that its ports
/// are closed when this returns.
async fn end(life: Life) {
    life.stop.cancel();
    for task in life.tasks {
        let _ = task.await;
    }
}

/// The boot: after `boot`, unless `stop` comes first, the guest of `vm_id` binds each
/// port of its rule on each of its addresses and serves them.
async fn come_up(
    registry: Arc<Mutex<Registry>>,
    vm_id: String,
    boot: Duration,
    stop: CancellationToken,
) {
    tokio::select! {
        biased;
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(boot) => {}
    }
    let mut registry = registry.lock().expect("poisoned");
    // Looked at again under the lock `down` cancels under: a guest taken down while
    // this waited for the lock never binds.
    if stop.is_cancelled() {
        return;
    }
    let Some(guest) = registry.guests.get_mut(&vm_id) else {
        return;
    };
    let body: Arc<str> = format!("cloudsim guest of {}: up\n", guest.vm_name).into();
    let ports = (guest.rule.tcp_ports.iter().map(|p| (*p, Service::Tcp)))
        .chain(guest.rule.http_ports.iter().map(|p| (*p, Service::Http)));
    let mut tasks = Vec::new();
    for (port, service) in ports {
        for ip in &guest.addresses {
            let addr = SocketAddrV4::new(*ip, port);
            match serve::bind(addr) {
                Ok(listener) => {
                    guest.listening.push(addr);
                    tasks.push(tokio::spawn(serve::serve(
                        listener,
                        service,
                        Arc::clone(&body),
                        stop.clone(),
                    )));
                }
                Err(e) => {
                    tracing::warn!(vm = %guest.vm_name, %addr, error = %e, "an emulated guest cannot listen");
                    guest.errors.push(format!("{addr}: {e}"));
                }
            }
        }
    }
    guest.phase = Phase::Up;
    if let Some(life) = &mut guest.life {
        life.tasks.extend(tasks);
    }
}
