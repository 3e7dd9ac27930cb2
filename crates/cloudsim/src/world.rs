//! The world file: what exists in the simulated cloud when cloudsim starts.
//!
//! A TOML file seeds zones, offerings, templates, networks, appliance VMs with their
//! replica volumes, the API credentials, settings, latencies, faults and the emulated
//! guests' rules. [`World::default`] is the built-in world: one zone, a
//! custom-CPU/memory service offering, a custom-size disk offering, a template, a
//! `test` and a `production` network, and the appliance `oma` with the two replica
//! volumes of the job sheet's `pgtest1` (107 GiB boot disk, 10 GiB data disk)
//! attached. Its ids are fixed so that documents and demos can name them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::guests::rules::GuestRules;

/// The whole world file. A field that is an `Option` may be left out (serde reads a
/// missing `Option` as `None`); every other field that may be left out says its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    pub credentials: Credentials,
    #[serde(default)]
    pub settings: Settings,
    pub zones: Vec<ZoneDef>,
    #[serde(default)]
    pub service_offerings: Vec<ServiceOfferingDef>,
    #[serde(default)]
    pub disk_offerings: Vec<DiskOfferingDef>,
    #[serde(default)]
    pub templates: Vec<TemplateDef>,
    #[serde(default)]
    pub networks: Vec<NetworkDef>,
    #[serde(default)]
    pub appliances: Vec<ApplianceDef>,
    /// Detached volumes that exist from the start.
    #[serde(default)]
    pub volumes: Vec<VolumeDef>,
    /// Milliseconds of simulated work per async command (before the time scale);
    /// commands not named keep [`default_latency_ms`].
    #[serde(default)]
    pub latency_ms: BTreeMap<String, u64>,
    /// Faults armed at start (the same rules `/sim/faults` takes).
    #[serde(default)]
    pub faults: Vec<crate::faults::FaultRule>,
    /// Emulated guests (`[[guests]]`, the rules `PUT /sim/guests` takes): checked as
    /// they are read, so a world with a bad rule is refused with the reason.
    #[serde(default, skip_serializing_if = "GuestRules::is_empty")]
    pub guests: GuestRules,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub api_key: String,
    pub secret_key: String,
}

/// CloudStack global settings that change the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `kvm.snapshot.enabled`: allow volume snapshots of running VMs (default true
    /// since 4.22).
    pub kvm_snapshot_enabled: bool,
    /// `hypervisor_capabilities.max_data_volumes_limit` for KVM (32).
    pub max_data_volumes: u32,
    /// Milliseconds after an attach job completes before the appliance sees the disk.
    pub hotplug_delay_ms: u64,
    /// `api.throttling.enabled` with its `max` and `interval`; off (`None`) by default,
    /// as in CloudStack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_throttling: Option<ApiThrottling>,
}

/// CloudStack's API rate limit per account: at most `max` calls per `interval_s`
/// seconds (CloudStack's defaults: 25 per 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiThrottling {
    #[serde(default = "default_throttling_max")]
    pub max: u32,
    #[serde(default = "default_throttling_interval_s")]
    pub interval_s: u64,
}

fn default_throttling_max() -> u32 {
    25
}

fn default_throttling_interval_s() -> u64 {
    1
}

impl Default for ApiThrottling {
    fn default() -> Self {
        ApiThrottling {
            max: default_throttling_max(),
            interval_s: default_throttling_interval_s(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            kvm_snapshot_enabled: true,
            max_data_volumes: 32,
            hotplug_delay_ms: 200,
            api_throttling: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneDef {
    pub id: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOfferingDef {
    pub id: Option<String>,
    pub name: String,
    /// Fixed values; leave all three out for a custom (dynamic) offering.
    pub cpu_number: Option<i64>,
    pub cpu_speed: Option<i64>,
    pub memory_mb: Option<i64>,
    /// Limits for custom values (`mincpunumber` … `maxmemory`).
    #[serde(default = "one")]
    pub min_cpu_number: i64,
    #[serde(default = "sixty_four")]
    pub max_cpu_number: i64,
    #[serde(default = "thirty_two")]
    pub min_memory_mb: i64,
    #[serde(default = "max_memory")]
    pub max_memory_mb: i64,
}

fn one() -> i64 {
    1
}
fn sixty_four() -> i64 {
    64
}
fn thirty_two() -> i64 {
    32
}
fn max_memory() -> i64 {
    1024 * 1024
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskOfferingDef {
    pub id: Option<String>,
    pub name: String,
    /// GiB; 0 (the default) makes a custom-size offering.
    #[serde(default)]
    pub size_gb: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    pub id: Option<String>,
    pub name: String,
    /// Size of the ROOT volume a VM deployed from it gets.
    pub size_gb: i64,
    #[serde(default = "linux")]
    pub os: String,
}

fn linux() -> String {
    "Other Linux (64-bit)".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    pub id: Option<String>,
    pub name: String,
    /// The zone's name; the first zone when omitted.
    pub zone: Option<String>,
    #[serde(default = "isolated")]
    pub kind: String,
    /// Its range, `a.b.c.d/n` (n ≤ 30, the host bits zero), which NIC addresses are
    /// allocated from; a range inside `127.0.0.0/8` gets emulated guests (`guests`).
    #[serde(default = "cidr")]
    pub cidr: String,
}

fn isolated() -> String {
    "Isolated".into()
}
fn cidr() -> String {
    "10.1.1.0/24".into()
}

/// An appliance VM (Running) with its replica volumes attached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceDef {
    pub id: Option<String>,
    pub name: String,
    pub zone: Option<String>,
    /// Its own root disk, `vda` inside it.
    pub root_volume_id: Option<String>,
    #[serde(default)]
    pub volumes: Vec<VolumeDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDef {
    pub id: Option<String>,
    pub name: String,
    pub size_gb: i64,
    pub zone: Option<String>,
}

/// Default simulated work per command, in milliseconds before the time scale. The
/// proportions follow a KVM cloud on shared storage: snapshots and starts are slow,
/// attach and detach take a few seconds.
pub fn default_latency_ms(command: &str) -> u64 {
    DEFAULT_LATENCY_MS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(command))
        .map_or(0, |&(_, ms)| ms)
}

/// The default latency profile: each async command's job duration at real pace, in
/// milliseconds (a KVM cloud on shared storage). Commands not listed take no time.
pub const DEFAULT_LATENCY_MS: [(&str, u64); 11] = [
    ("deployVirtualMachine", 6_000),
    ("startVirtualMachine", 15_000),
    ("stopVirtualMachine", 8_000),
    ("rebootVirtualMachine", 10_000),
    ("destroyVirtualMachine", 5_000),
    ("attachVolume", 3_000),
    ("detachVolume", 3_000),
    ("createSnapshot", 12_000),
    ("revertSnapshot", 10_000),
    ("deleteSnapshot", 2_000),
    ("createVolume", 8_000),
];

impl World {
    /// Parses a world file.
    pub fn from_toml(text: &str) -> Result<World, toml::de::Error> {
        toml::from_str(text)
    }
}

/// Ids of the built-in world, for tests and documents.
pub mod ids {
    pub const ZONE: &str = "69c5ed37-c6a7-4bca-8611-c5ccfdf7f42f";
    pub const OFFERING_CUSTOM: &str = "7d8a0e1a-c573-43ec-a0b5-3549cd87956d";
    pub const OFFERING_SMALL: &str = "888f2559-5e5e-4c72-8c52-960a3226b30a";
    pub const DISK_OFFERING_CUSTOM: &str = "e6f3350d-0713-4e25-8334-651002be1f8f";
    pub const TEMPLATE: &str = "ef2fc7d1-7f5b-44c3-81e5-774f2ab3ef26";
    pub const NETWORK_TEST: &str = "5b5baf0d-9697-42bb-bd5e-5c0c7ec94f20";
    pub const NETWORK_PRODUCTION: &str = "8d1f3712-117f-4e5d-92b2-4e2fa9f11935";
    pub const APPLIANCE_OMA: &str = "5e6caca7-9e67-43d1-8277-c6dfbdb5e769";
    pub const OMA_ROOT: &str = "a9ce27b6-89b3-43fe-9fe1-4ab896df1905";
    pub const PGTEST1_DISK_2000: &str = "233463a7-6161-47e9-9238-14e51ceae620";
    pub const PGTEST1_DISK_2001: &str = "c02e3d1b-4b54-499e-ae29-03785d73dd9b";
    pub const API_KEY: &str = "ferry-demo-api-key";
    pub const SECRET_KEY: &str = "ferry-demo-secret-key";
}

impl Default for World {
    fn default() -> Self {
        World {
            credentials: Credentials {
                api_key: ids::API_KEY.into(),
                secret_key: ids::SECRET_KEY.into(),
            },
            settings: Settings::default(),
            zones: vec![ZoneDef {
                id: Some(ids::ZONE.into()),
                name: "zone1".into(),
            }],
            service_offerings: vec![
                ServiceOfferingDef {
                    id: Some(ids::OFFERING_CUSTOM.into()),
                    name: "Custom".into(),
                    cpu_number: None,
                    cpu_speed: None,
                    memory_mb: None,
                    min_cpu_number: 1,
                    max_cpu_number: 64,
                    min_memory_mb: 32,
                    max_memory_mb: max_memory(),
                },
                ServiceOfferingDef {
                    id: Some(ids::OFFERING_SMALL.into()),
                    name: "Small Instance".into(),
                    cpu_number: Some(1),
                    cpu_speed: Some(1000),
                    memory_mb: Some(1024),
                    min_cpu_number: 1,
                    max_cpu_number: 64,
                    min_memory_mb: 32,
                    max_memory_mb: max_memory(),
                },
            ],
            disk_offerings: vec![DiskOfferingDef {
                id: Some(ids::DISK_OFFERING_CUSTOM.into()),
                name: "Custom".into(),
                size_gb: 0,
            }],
            templates: vec![TemplateDef {
                id: Some(ids::TEMPLATE.into()),
                name: "ferry-placeholder".into(),
                size_gb: 8,
                os: linux(),
            }],
            networks: vec![
                NetworkDef {
                    id: Some(ids::NETWORK_TEST.into()),
                    name: "test".into(),
                    zone: None,
                    kind: isolated(),
                    cidr: "10.10.0.0/24".into(),
                },
                NetworkDef {
                    id: Some(ids::NETWORK_PRODUCTION.into()),
                    name: "production".into(),
                    zone: None,
                    kind: isolated(),
                    cidr: "10.20.0.0/24".into(),
                },
            ],
            appliances: vec![ApplianceDef {
                id: Some(ids::APPLIANCE_OMA.into()),
                name: "oma".into(),
                zone: None,
                root_volume_id: Some(ids::OMA_ROOT.into()),
                volumes: vec![
                    VolumeDef {
                        id: Some(ids::PGTEST1_DISK_2000.into()),
                        name: "pgtest1-disk-2000".into(),
                        size_gb: 107,
                        zone: None,
                    },
                    VolumeDef {
                        id: Some(ids::PGTEST1_DISK_2001.into()),
                        name: "pgtest1-disk-2001".into(),
                        size_gb: 10,
                        zone: None,
                    },
                ],
            }],
            volumes: vec![],
            latency_ms: BTreeMap::new(),
            faults: vec![],
            guests: GuestRules::default(),
        }
    }
}
