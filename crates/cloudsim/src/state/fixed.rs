//! The parts of the simulated cloud that no world file describes but CloudStack's
//! responses name: the one host, physical network, primary storage pool, pod and
//! cluster, the network offerings the networks are created from, and the guest OS
//! types of the templates. Their ids are fixed (or derived from a name), so that a
//! field that is an id always names the same entity, and the list commands resolve
//! it (`api::ids`).

/// The KVM host every running VM runs on.
pub const HOST_ID: &str = "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4a01";
pub const HOST_NAME: &str = "kvm-host-1";
/// The zone's physical network, which every guest network is on.
pub const PHYSICAL_NETWORK_ID: &str = "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4a02";
/// The primary storage pool (NFS) every volume that has been created is on.
pub const STORAGE_POOL_ID: &str = "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4a03";
pub const STORAGE_POOL_NAME: &str = "primary-nfs-1";
pub const POD_ID: &str = "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4a04";
pub const POD_NAME: &str = "pod1";
pub const CLUSTER_ID: &str = "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4a05";
pub const CLUSTER_NAME: &str = "cluster1";
/// The zone's DNS servers (`dns1`, `internaldns1`), which guest networks hand out.
pub const DNS1: &str = "8.8.8.8";
pub const INTERNAL_DNS1: &str = "10.0.0.2";
/// The network domain of guest networks (`networkdomain`).
pub const NETWORK_DOMAIN: &str = "cs1cloud.internal";

/// A network offering, as a network's `networkoffering*` fields show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkOffering {
    pub id: &'static str,
    pub name: &'static str,
    pub display_text: &'static str,
    pub availability: &'static str,
    pub conserve_mode: bool,
}

/// The default offering CloudStack creates a network of type `kind` from (its
/// system offerings `DefaultIsolatedNetworkOfferingWithSourceNatService`,
/// `DefaultSharedNetworkOffering`, `DefaultL2NetworkOffering`).
pub fn network_offering(kind: &str) -> NetworkOffering {
    match kind.to_ascii_lowercase().as_str() {
        "shared" => NetworkOffering {
            id: "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4b02",
            name: "DefaultSharedNetworkOffering",
            display_text: "Offering for Shared networks",
            availability: "Optional",
            conserve_mode: true,
        },
        "l2" => NetworkOffering {
            id: "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4b03",
            name: "DefaultL2NetworkOffering",
            display_text: "Offering for L2 networks",
            availability: "Optional",
            conserve_mode: true,
        },
        _ => NetworkOffering {
            id: "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4b01",
            name: "DefaultIsolatedNetworkOfferingWithSourceNatService",
            display_text: "Offering for Isolated networks with Source Nat service enabled",
            availability: "Required",
            conserve_mode: true,
        },
    }
}

/// The id of the guest OS type named `os` (`ostypeid`, `guestosid`): derived from
/// the name, so that templates of one OS share it.
pub fn os_type_id(os: &str) -> String {
    derived_id("guest-os", os)
}

/// The zone token of the zone `zone_id`.
pub fn zone_token(zone_id: &str) -> String {
    derived_id("zone-token", zone_id)
}

/// A UUID-shaped id (lower-case hex, as CloudStack's) derived from `kind` and `name`
/// with FNV-1a, stable across starts.
fn derived_id(kind: &str, name: &str) -> String {
    let hash = |salt: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for b in kind.bytes().chain([0]).chain(name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let (a, b) = (hash(1), hash(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}
