//! The VM definition file: what an operator (or the replication side) writes to
//! register a protected VM. TOML or JSON, with the same fields; unknown fields are
//! refused so that a typo cannot silently drop a setting. `docs/vm-definition.md`
//! documents it, and `docs/examples/pgtest1.toml` is parsed by a test.

use serde::Deserialize;
use store::{Controller, Firmware, GuestOs, GuestPrep};

/// A whole definition file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefinition {
    /// The protected VM's name; the target VMs are `<name>` and
    /// `<name>-test-<timestamp>`, so it must be a valid host name.
    pub name: String,
    /// The VM's identity at the source (vCenter instance UUID or moref).
    pub source_id: String,
    /// The appliance (as registered with ferry) holding the replica volumes.
    pub appliance: String,
    pub spec: SpecDefinition,
    #[serde(default)]
    pub nics: Vec<NicDefinition>,
    #[serde(default)]
    pub disks: Vec<DiskDefinition>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecDefinition {
    pub vcpu: i64,
    pub memory_mb: i64,
    /// MHz per vCPU given to CloudStack's custom offering.
    #[serde(default = "default_cpu_speed")]
    pub cpu_speed_mhz: i64,
    pub firmware: Firmware,
    #[serde(default)]
    pub secure_boot: bool,
    pub guest_os: GuestOs,
    #[serde(default = "default_guest_prep")]
    pub guest_prep: GuestPrep,
}

fn default_cpu_speed() -> i64 {
    2000
}

fn default_guest_prep() -> GuestPrep {
    GuestPrep::Auto
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicDefinition {
    pub mac: String,
    pub source_network: String,
    /// CloudStack network (name or id) for test failovers.
    pub test_network: String,
    #[serde(default)]
    pub test_ip: Option<String>,
    /// CloudStack network (name or id) for the live failover.
    pub production_network: String,
    #[serde(default)]
    pub production_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskDefinition {
    /// VMware device key (2000, 2001, 16000, …).
    pub key: i64,
    pub controller: Controller,
    pub bus: i64,
    pub unit: i64,
    /// Capacity in bytes, exactly as VMware reports it …
    #[serde(default)]
    pub capacity_bytes: Option<i64>,
    /// … or in GiB. Give exactly one of the two.
    #[serde(default)]
    pub capacity_gib: Option<i64>,
    #[serde(default)]
    pub label: Option<String>,
    /// Marks the boot disk. Without any mark, the disk first in `boot_order` boots.
    #[serde(default)]
    pub boot: bool,
    /// Position in the VMware boot order (1 first), if known.
    #[serde(default)]
    pub boot_order: Option<i64>,
    /// The CloudStack volume replication writes this disk into.
    pub replica_volume_id: String,
}

/// A definition file's format, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// `.json` is JSON; anything else is TOML.
    pub fn of_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// Why a definition file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not valid TOML for a VM definition: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("not valid JSON for a VM definition: {0}")]
    Json(#[from] serde_json::Error),
}

impl VmDefinition {
    pub fn parse(text: &str, format: Format) -> Result<VmDefinition, ParseError> {
        Ok(match format {
            Format::Toml => toml::from_str(text)?,
            Format::Json => serde_json::from_str(text)?,
        })
    }
}
