//! The parts of the simulated cloud that no world file describes but CloudStack's
//! responses name: the one host, physical network, primary storage pool, pod and
//! cluster, the network offerings the networks are created from, and the guest OS
//! types of the templates. Their ids are fixed (or derived from a name), so that a
//! field that is an id always names the same entity, and the list commands resolve
//! it (`api::ids`).

/// The zone's physical network, which every guest network is on.
pub const PHYSICAL_NETWORK_ID: &str = "8b0b2d5e-5f55-4c43-9f4d-6a7c1e0d4a02";
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
