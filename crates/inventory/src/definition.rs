//! The VM definition file: what an operator (or the replication side) writes to
//! register a protected VM. TOML or JSON, with the same fields; unknown fields are
//! refused so that a typo cannot silently drop a setting. `docs/vm-definition.md`
//! documents it, and `docs/examples/pgtest1.toml` is parsed by a test.

use serde::Deserialize;
use store::{Controller, Firmware, GuestOs, GuestPrep};

use crate::problem::Problem;

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
    /// Required fields are missing: every one of them, by field, and whatever else the
    /// parser stopped at.
    #[error("the VM definition is incomplete (the parser stopped at: {parser}):\n{}", crate::problem::list(.problems))]
    Incomplete {
        /// What the parser said, with where it stopped.
        parser: String,
        problems: Vec<Problem>,
    },
}

impl ParseError {
    /// The problems by field: every missing field when fields are missing, else the
    /// parser's one complaint (on `definition`).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ParseError::Incomplete { problems, .. } => problems.clone(),
            other => vec![Problem {
                field: "definition".into(),
                message: other.to_string(),
            }],
        }
    }
}

/// The fields without a default, by table. `docs/vm-definition.md` lists the same.
const REQUIRED_TOP: &[&str] = &["name", "source_id", "appliance", "spec"];
const REQUIRED_SPEC: &[&str] = &["vcpu", "memory_mb", "firmware", "guest_os"];
const REQUIRED_NIC: &[&str] = &[
    "mac",
    "source_network",
    "test_network",
    "production_network",
];
const REQUIRED_DISK: &[&str] = &["key", "controller", "bus", "unit", "replica_volume_id"];

/// Every required field missing from `value` (the file as a plain tree). Serde stops
/// at the first; this walks them all. Tables of the wrong type are left to serde.
fn missing_fields(value: &serde_json::Value) -> Vec<Problem> {
    fn check(out: &mut Vec<Problem>, table: &serde_json::Value, prefix: &str, required: &[&str]) {
        let Some(table) = table.as_object() else {
            return;
        };
        for key in required {
            if !table.contains_key(*key) {
                out.push(Problem {
                    field: format!("{prefix}{key}"),
                    message: format!("missing field `{key}`: it is required"),
                });
            }
        }
    }
    let mut out = Vec::new();
    check(&mut out, value, "", REQUIRED_TOP);
    if let Some(spec) = value.get("spec") {
        check(&mut out, spec, "spec.", REQUIRED_SPEC);
    }
    for (list, required) in [("nics", REQUIRED_NIC), ("disks", REQUIRED_DISK)] {
        if let Some(items) = value.get(list).and_then(|v| v.as_array()) {
            for (i, item) in items.iter().enumerate() {
                check(&mut out, item, &format!("{list}[{i}]."), required);
            }
        }
    }
    out
}

impl VmDefinition {
    /// Parses a definition. When required fields are missing, the error lists all of
    /// them ([`ParseError::Incomplete`]), not only the first serde met.
    pub fn parse(text: &str, format: Format) -> Result<VmDefinition, ParseError> {
        let (error, tree): (ParseError, Option<serde_json::Value>) = match format {
            Format::Toml => match toml::from_str(text) {
                Ok(def) => return Ok(def),
                Err(e) => (
                    e.into(),
                    toml::from_str::<toml::Table>(text)
                        .ok()
                        .and_then(|t| serde_json::to_value(t).ok()),
                ),
            },
            Format::Json => match serde_json::from_str(text) {
                Ok(def) => return Ok(def),
                Err(e) => (e.into(), serde_json::from_str(text).ok()),
            },
        };
        let mut missing = tree.as_ref().map(missing_fields).unwrap_or_default();
        if missing.is_empty() {
            return Err(error);
        }
        // The parser's own complaint, unless it is one of the missing fields.
        let message = error.to_string();
        if !message.contains("missing field") {
            missing.push(Problem {
                field: "definition".into(),
                message,
            });
        }
        Err(ParseError::Incomplete {
            parser: error.to_string(),
            problems: missing,
        })
    }
}
