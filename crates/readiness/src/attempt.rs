//! One attempt of a gate, whatever its kind: a gate is made ready once
//! ([`Probe::new`]: its addresses, its HTTP client) and tried as often as its
//! interval and deadline allow.

use std::net::SocketAddr;
use std::time::Duration;

use crate::command;
use crate::gate::{Check, CommandCheck, Subject, VmState};
use crate::http::HttpProbe;
use crate::seen::Seen;
use crate::tcp;

/// A gate ready to be tried.
pub(crate) enum Probe<'a> {
    Running,
    Tcp {
        targets: Vec<SocketAddr>,
        connect_timeout: Duration,
    },
    Http(HttpProbe),
    Command(&'a CommandCheck),
}

impl<'a> Probe<'a> {
    /// `Err` says why the gate cannot pass however long it is tried (a network gate
    /// for a VM without an address).
    pub fn new(check: &'a Check, subject: &Subject) -> Result<Self, String> {
        let targets = |port: u16| -> Result<Vec<SocketAddr>, String> {
            if subject.addresses.is_empty() {
                return Err(format!(
                    "no address to try: ferry knows no IP address of {}",
                    subject.vm_name
                ));
            }
            Ok(subject
                .addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect())
        };
        Ok(match check {
            Check::Running => Probe::Running,
            Check::Tcp {
                port,
                connect_timeout,
            } => Probe::Tcp {
                targets: targets(*port)?,
                connect_timeout: *connect_timeout,
            },
            Check::Http(http) => Probe::Http(HttpProbe::new(http, &targets(http.port)?)?),
            Check::Command(command) => Probe::Command(command),
        })
    }

    /// One attempt; it ends as soon as its result is known.
    pub async fn attempt(&self, subject: &Subject, vm: &dyn VmState) -> Seen {
        match self {
            Probe::Running => match vm.is_running().await {
                Ok(state) if state.running => Seen::pass(format!("state {}", state.state)),
                Ok(state) => Seen::fail(format!("state {}", state.state)),
                Err(why) => Seen::fail(format!("cannot read the VM's state: {why}")),
            },
            Probe::Tcp {
                targets,
                connect_timeout,
            } => tcp::attempt(targets, *connect_timeout).await,
            Probe::Http(http) => http.attempt().await,
            Probe::Command(check) => command::attempt(check, subject).await,
        }
    }
}
