//! A network's addresses: its CIDR, the NIC addresses `deployVirtualMachine`
//! allocates from it, and which of a VM's addresses its emulated guest may listen on.
//!
//! The conventions are the ones cloudsim has always had, now kept inside the CIDR
//! (before, the allocation ignored all but the first two octets, so two networks
//! `127.77.1.0/24` and `127.77.2.0/24` handed out the same `127.77.0.20`): the network
//! address is not a host, the first host address is the gateway (`render`), the last
//! is the broadcast address, and a network's first NIC gets the host 20 places in
//! (`10.10.0.0/24` → `10.10.0.20`, then `.21`, …). Past the end the allocation wraps
//! round to the first address after the gateway; an address a NIC of the network
//! already holds (an explicit `ipaddress`, say) is skipped, and when every one is held
//! the deploy is refused as CloudStack refuses it, with 533.
//!
//! A guest is emulated on real sockets (`guests`), so only loopback addresses may
//! ever be bound: [`State::guest_vm`] gives a guest the addresses of its VM's NICs on
//! networks whose whole CIDR lies in `127.0.0.0/8`, and nothing else.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::error::CsError;
use crate::guests::registry::GuestVm;
use crate::state::entities::State;

/// A network's IPv4 range, `a.b.c.d/n`, its address a network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// How far into its CIDR a network's first NIC address lies.
const FIRST_OFFSET: u64 = 20;

impl Cidr {
    /// Parses `a.b.c.d/n` (n ≤ 30, so that there is a host beside the gateway) whose
    /// host bits are zero.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a CIDR (a.b.c.d/n)"))?;
        let network: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("`{text}` is not a CIDR: `{address}` is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 30).ok_or_else(|| {
            format!("`{text}` is not a CIDR with room for hosts: the prefix must be 0 to 30")
        })?;
        let cidr = Cidr { network, prefix };
        if cidr.nth(0) != network {
            return Err(format!(
                "`{text}` is not a network address: its network is {}/{prefix}",
                cidr.nth(0)
            ));
        }
        Ok(cidr)
    }

    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The address `offset` places into the range (0 is the network address).
    fn nth(&self, offset: u64) -> Ipv4Addr {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        let base = u32::from(self.network) & mask;
        Ipv4Addr::from(base.wrapping_add(offset as u32))
    }

    /// How many addresses NICs can get: all but the network address, the gateway and
    /// the broadcast address.
    fn hosts(&self) -> u64 {
        self.size() - 3
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u64::from(u32::from(ip).wrapping_sub(u32::from(self.nth(0))));
        offset < self.size()
    }

    /// Whether the whole range is loopback (inside `127.0.0.0/8`).
    pub fn is_loopback(&self) -> bool {
        self.prefix >= 8 && self.network.is_loopback()
    }
}

impl State {
    /// The next free address of network `network_id` (see the module doc).
    pub(super) fn allocate_ip(&mut self, network_id: &str) -> Result<String, CsError> {
        let held: BTreeSet<String> = self
            .vms
            .values()
            .flat_map(|v| &v.nics)
            .filter(|n| n.network_id == network_id)
            .map(|n| n.ip.clone())
            .collect();
        let network = self
            .networks
            .iter_mut()
            .find(|n| n.id == network_id)
            .expect("network checked");
        let cidr = Cidr::parse(&network.cidr).map_err(|e| {
            CsError::internal(format!(
                "Unable to allocate an ip address in network {network_id}: {e}"
            ))
        })?;
        let hosts = cidr.hosts();
        for _ in 0..hosts {
            // `next_host` counts allocations from 10 (as it always has); the first lands
            // FIRST_OFFSET places in, the gateway's neighbour (2) follows the last host.
            let k = u64::from(network.next_host.saturating_sub(10));
            network.next_host = network.next_host.wrapping_add(1);
            let ip = cidr.nth(2 + (FIRST_OFFSET - 2 + k) % hosts).to_string();
            if !held.contains(&ip) {
                return Ok(ip);
            }
        }
        Err(CsError::insufficient_capacity(format!(
            "Insufficient address capacity: every address of network {network_id} ({}) is in use",
            network.cidr
        )))
    }

    /// VM `vm_id` as its emulated guest needs it (if the VM exists): its name, and the
    /// addresses of its NICs the guest may listen on — those in `127.0.0.0/8` on a
    /// network whose CIDR lies inside it and contains them.
    pub fn guest_vm(&self, vm_id: &str) -> Option<GuestVm> {
        let vm = self.vms.get(vm_id)?;
        let addresses = vm
            .nics
            .iter()
            .filter_map(|nic| {
                let network = self.networks.iter().find(|n| n.id == nic.network_id)?;
                let cidr = Cidr::parse(&network.cidr).ok()?;
                let ip: Ipv4Addr = nic.ip.parse().ok()?;
                (cidr.is_loopback() && ip.is_loopback() && cidr.contains(ip)).then_some(ip)
            })
            .collect();
        Some(GuestVm {
            id: vm.id.clone(),
            name: vm.name.clone(),
            addresses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocations(cidr: &str, n: usize) -> Vec<String> {
        let mut state = State::from_world(&crate::world::World {
            networks: vec![crate::world::NetworkDef {
                id: Some("net".into()),
                name: "net".into(),
                zone: None,
                kind: "Isolated".into(),
                cidr: cidr.into(),
            }],
            ..crate::world::World::default()
        })
        .expect("a world");
        (0..n)
            .map(|_| state.allocate_ip("net").expect("an address"))
            .collect()
    }

    #[test]
    fn the_first_address_is_twenty_places_into_the_network_and_the_next_follow() {
        assert_eq!(
            allocations("10.10.0.0/24", 3),
            ["10.10.0.20", "10.10.0.21", "10.10.0.22"]
        );
        // Every octet of the CIDR counts, not only the first two.
        assert_eq!(
            allocations("127.77.5.0/24", 2),
            ["127.77.5.20", "127.77.5.21"]
        );
        assert_eq!(allocations("10.10.0.0/16", 1), ["10.10.0.20"]);
    }

    #[test]
    fn the_allocation_stays_inside_the_network_and_wraps_past_its_end() {
        // A /28 has 16 addresses: .0 the network, .1 the gateway, .15 the broadcast.
        // Twenty places in is past its end: the count wraps round the 13 hosts
        // (.18 to .30) and lands on .23, then goes on from there.
        let all = allocations("127.77.9.16/28", 13);
        let expected: Vec<String> = [23, 24, 25, 26, 27, 28, 29, 30, 18, 19, 20, 21, 22]
            .iter()
            .map(|last| format!("127.77.9.{last}"))
            .collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn a_full_network_refuses_with_533() {
        let mut state = State::from_world(&crate::world::World {
            networks: vec![crate::world::NetworkDef {
                id: Some("net".into()),
                name: "net".into(),
                zone: None,
                kind: "Isolated".into(),
                cidr: "127.77.9.0/30".into(),
            }],
            ..crate::world::World::default()
        })
        .expect("a world");
        // A /30 has one host beside the gateway.
        let ip = state.allocate_ip("net").expect("the one host");
        assert_eq!(ip, "127.77.9.2");
        let vm = state.vms.values_mut().next().expect("the appliance");
        vm.nics.push(crate::state::entities::Nic {
            id: "nic".into(),
            network_id: "net".into(),
            ip,
            mac: "02:00:00:00:00:01".into(),
            default: true,
        });
        let refused = state.allocate_ip("net").unwrap_err();
        assert_eq!(refused.code, 533, "{refused:?}");
    }

    #[test]
    fn a_guest_gets_only_loopback_addresses_inside_a_loopback_network() {
        let network = |id: &str, cidr: &str| crate::world::NetworkDef {
            id: Some(id.into()),
            name: id.into(),
            zone: None,
            kind: "Isolated".into(),
            cidr: cidr.into(),
        };
        let mut state = State::from_world(&crate::world::World {
            networks: vec![
                network("lo", "127.77.3.0/24"),
                network("lan", "10.10.0.0/24"),
            ],
            ..crate::world::World::default()
        })
        .expect("a world");
        let vm = state.vms.values_mut().next().expect("the appliance");
        let id = vm.id.clone();
        for (network_id, ip) in [
            ("lo", "127.77.3.20"),
            // Outside its network's range, or a loopback address on another network:
            // never bound.
            ("lo", "127.78.0.1"),
            ("lan", "127.0.0.9"),
            ("lan", "10.10.0.20"),
        ] {
            vm.nics.push(crate::state::entities::Nic {
                id: format!("{network_id}-{ip}"),
                network_id: network_id.into(),
                ip: ip.into(),
                mac: "02:00:00:00:00:01".into(),
                default: false,
            });
        }
        let guest = state.guest_vm(&id).expect("the VM");
        assert_eq!(guest.addresses, [Ipv4Addr::new(127, 77, 3, 20)]);
        assert!(state.guest_vm("no such VM").is_none());
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(Cidr::parse("127.77.0.0/24").is_ok());
        for bad in [
            "127.77.0.0",
            "127.77.0/24",
            "127.77.0.0/31",
            "127.77.0.0/x",
            "127.77.0.5/24",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(Cidr::parse("127.77.0.0/24").unwrap().is_loopback());
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().is_loopback());
        // A range that reaches out of 127/8 is not loopback, though it starts inside.
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().is_loopback());
        assert!(!Cidr::parse("126.0.0.0/7").unwrap().is_loopback());
    }
}
