//! Emulated guests: what a VM's operating system shows the network once it has
//! booted, so that ferry's readiness gates (a TCP port that accepts, an HTTP GET that
//! answers) can be tested against real sockets.
//!
//! A guest rule (the world file's `[[guests]]`, or `PUT /sim/guests`) names VMs by
//! name and says how long their guests take to boot and which ports they serve. When
//! a VM reaches Running — its start or deploy job ends, a reboot ends, cloudsim starts
//! again from a state file — the first rule that matches its name gives it a guest,
//! which after the boot time listens on each port at each of the VM's NIC addresses
//! that is a loopback address (`127.0.0.0/8`, on a network whose CIDR lies inside it).
//! No other address is ever bound: a VM on other networks has no guest. When the VM
//! stops, is destroyed or reboots, the guest's ports are closed before the job is seen
//! to end; a reboot's guest comes up again its boot time after the reboot ends.
//!
//! The files: `rules` (the rules and their checks, which a world file and `PUT`
//! share), `registry` (each VM's guest and its life: booting, up, down), `serve` (the
//! listeners and what they answer). This module holds no items of its own.
//!
//! Architecture invariant: the guests know nothing of CloudStack; the job queue tells
//! them what happened to a VM.

pub(crate) mod registry;
pub mod rules;
mod serve;
