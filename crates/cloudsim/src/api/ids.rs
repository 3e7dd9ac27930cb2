//! The id parameters of the list commands, translated as CloudStack's
//! `ParamProcessWorker.translateUuidToInternalId` translates every `CommandType.UUID`
//! parameter before a command runs (apache/cloudstack,
//! `server/src/main/java/com/cloud/api/dispatch/ParamProcessWorker.java`):
//!
//! - `-1` is passed through (a legacy special case): it names nothing, so a list
//!   filtered by it is empty;
//! - a parameter without a `since` (one from before CloudStack 3) also takes an
//!   internal numeric id: a positive number is accepted unchecked — no entity of
//!   cloudsim's is addressed by one, so the list is empty — and zero or a negative
//!   number fails `validateNaturalNumber`, whose `ServerApiException` the worker turns
//!   into 530 `Internal error executing API command <cmd>`;
//! - a value that is not a lower-case UUID given to a parameter with a `since` is left
//!   unset: the parameter is ignored;
//! - anything else is looked up with `findByUuidIncludingRemoved`: an entity that
//!   exists **or was removed** (an expunged VM, a deleted volume or snapshot) resolves
//!   — the list is then filtered by it, and is empty for a removed one — and a value
//!   that names nothing is refused with 431, cserrorcode 9999, `Unable to execute API
//!   command <cmd> due to invalid value. Invalid parameter <name> value=<v> due to
//!   incorrect long value format, or entity does not exist or due to incorrect
//!   parameter annotation for the field in api cmd class.`
//!
//! A list parameter (`ids`) is a comma-separated list, each element translated alike.
//! The table [`LIST_PARAMS`] is every id parameter of the list commands cloudsim
//! serves, read from their `*Cmd.java` (`api/src/main/java/org/apache/cloudstack/api/
//! command/user/...`), with the entity each names and whether it has a `since`. An
//! entity kind no simulated cloud has (public IPs, rules, VPCs, hosts, …) resolves
//! nothing.

use crate::api::params::Params;
use crate::error::CsError;
use crate::state::entities::State;
use crate::state::fixed;

use self::Kind::*;

/// What an id parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Zone,
    ServiceOffering,
    DiskOffering,
    Template,
    Network,
    NetworkOffering,
    PhysicalNetwork,
    Vm,
    Volume,
    Snapshot,
    /// An entity no simulated cloud has (IP address, rule, VPC, host, pod, cluster,
    /// storage pool, management server, group, ISO, …): no id resolves.
    Absent,
}

/// One id parameter of a command.
#[derive(Debug, Clone, Copy)]
pub struct IdParam {
    pub name: &'static str,
    pub kind: Kind,
    /// A `CommandType.LIST` of UUIDs (`ids`).
    pub list: bool,
    /// The annotation has no `since`: numeric internal ids are accepted too.
    pub pre_3x: bool,
}

const fn old(name: &'static str, kind: Kind) -> IdParam {
    IdParam {
        name,
        kind,
        list: false,
        pre_3x: true,
    }
}

const fn since(name: &'static str, kind: Kind) -> IdParam {
    IdParam {
        name,
        kind,
        list: false,
        pre_3x: false,
    }
}

const fn many(name: &'static str, kind: Kind) -> IdParam {
    IdParam {
        name,
        kind,
        list: true,
        pre_3x: false,
    }
}

/// Every id parameter of each list command cloudsim serves (see the module doc).
pub const LIST_PARAMS: &[(&str, &[IdParam])] = &[
    // ListZonesCmd
    ("listZones", &[old("id", Zone), many("ids", Zone)]),
    // ListServiceOfferingsCmd
    (
        "listServiceOfferings",
        &[
            old("id", ServiceOffering),
            old("virtualmachineid", Vm),
            since("zoneid", Zone),
            since("templateid", Template),
        ],
    ),
    // ListDiskOfferingsCmd
    (
        "listDiskOfferings",
        &[
            old("id", DiskOffering),
            since("zoneid", Zone),
            since("volumeid", Volume),
            since("storageid", Absent),
        ],
    ),
    // ListTemplatesCmd
    (
        "listTemplates",
        &[
            old("id", Template),
            many("ids", Template),
            old("zoneid", Zone),
            since("parenttemplateid", Template),
        ],
    ),
    // ListNetworksCmd
    (
        "listNetworks",
        &[
            old("id", Network),
            old("zoneid", Zone),
            old("physicalnetworkid", PhysicalNetwork),
            old("vpcid", Absent),
            old("networkofferingid", NetworkOffering),
            since("associatednetworkid", Network),
        ],
    ),
    // ListVMsCmd
    (
        "listVirtualMachines",
        &[
            old("id", Vm),
            many("ids", Vm),
            old("zoneid", Zone),
            old("networkid", Network),
            old("templateid", Template),
            since("serviceofferingid", ServiceOffering),
            old("groupid", Absent),
            old("isoid", Absent),
            old("vpcid", Absent),
            old("affinitygroupid", Absent),
            since("securitygroupid", Absent),
            since("backupofferingid", Absent),
            since("autoscalevmgroupid", Absent),
            since("userdataid", Absent),
        ],
    ),
    // ListVolumesCmd
    (
        "listVolumes",
        &[
            old("id", Volume),
            many("ids", Volume),
            old("virtualmachineid", Vm),
            old("zoneid", Zone),
            since("diskofferingid", DiskOffering),
            since("serviceofferingid", ServiceOffering),
            old("hostid", Absent),
            old("podid", Absent),
            old("clusterid", Absent),
        ],
    ),
    // ListSnapshotsCmd
    (
        "listSnapshots",
        &[
            old("id", Snapshot),
            many("ids", Snapshot),
            old("volumeid", Volume),
            old("zoneid", Zone),
        ],
    ),
    // ListAsyncJobsCmd
    ("listAsyncJobs", &[since("managementserverid", Absent)]),
    // ListPublicIpAddressesCmd
    (
        "listPublicIpAddresses",
        &[
            old("id", Absent),
            old("vlanid", Absent),
            old("zoneid", Zone),
            old("physicalnetworkid", PhysicalNetwork),
            old("associatednetworkid", Network),
            since("networkid", Network),
            old("vpcid", Absent),
        ],
    ),
    // ListPortForwardingRulesCmd
    (
        "listPortForwardingRules",
        &[
            old("id", Absent),
            old("ipaddressid", Absent),
            since("networkid", Network),
        ],
    ),
    // ListIpForwardingRulesCmd
    (
        "listIpForwardingRules",
        &[
            old("ipaddressid", Absent),
            old("id", Absent),
            old("virtualmachineid", Vm),
        ],
    ),
];

/// The id parameters of `command`, if it is a list command.
pub fn list_params(command: &str) -> Option<&'static [IdParam]> {
    LIST_PARAMS
        .iter()
        .find(|(c, _)| *c == command)
        .map(|(_, params)| *params)
}

/// A list command's id parameters, translated: each one given (and not ignored) with
/// the ids it names.
#[derive(Debug, Default)]
pub struct Resolved {
    given: Vec<(&'static str, Vec<String>)>,
}

impl Resolved {
    /// Whether an entity whose parameter `name` would be `value` passes the filter:
    /// always when the parameter was not given (or was ignored).
    pub fn admits(&self, name: &str, value: &str) -> bool {
        self.admits_any(name, [value])
    }

    /// Whether any of `values` passes the filter `name` (an entity with several, such
    /// as a VM's networks); always when the parameter was not given.
    pub fn admits_any<'a>(&self, name: &str, values: impl IntoIterator<Item = &'a str>) -> bool {
        match self.given.iter().find(|(n, _)| *n == name) {
            None => true,
            Some((_, ids)) => values.into_iter().any(|v| ids.iter().any(|id| id == v)),
        }
    }

    /// Whether the parameter `name` was given (and not ignored).
    pub fn has(&self, name: &str) -> bool {
        self.given.iter().any(|(n, _)| *n == name)
    }

    /// The one id the parameter `name` names, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.given
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, ids)| ids.first())
            .map(String::as_str)
    }
}

/// Translates the id parameters of the list command `command`, refusing one that
/// names nothing (see the module doc).
pub fn resolve_list(s: &State, command: &str, p: &Params) -> Result<Resolved, CsError> {
    let mut resolved = Resolved::default();
    for param in list_params(command).unwrap_or(&[]) {
        let Some(value) = p.get(param.name) else {
            continue;
        };
        let tokens: Vec<&str> = if param.list {
            value.split(',').filter(|t| !t.is_empty()).collect()
        } else {
            vec![value]
        };
        let mut ids = Vec::new();
        for token in tokens {
            if let Some(id) = translate(s, command, param, token)? {
                ids.push(id);
            }
        }
        if !ids.is_empty() {
            resolved.given.push((param.name, ids));
        }
    }
    Ok(resolved)
}

/// `translateUuidToInternalId` for one value: the id it names (which may name a
/// removed entity, or none at all for `-1` and numbers), `None` when the parameter
/// is ignored, or the refusal.
fn translate(
    s: &State,
    command: &str,
    param: &IdParam,
    value: &str,
) -> Result<Option<String>, CsError> {
    if value == "-1" {
        return Ok(Some(value.to_string()));
    }
    let uuid = is_uuid(value);
    if !param.pre_3x && !uuid {
        return Ok(None);
    }
    if param.pre_3x
        && !uuid
        && let Ok(n) = value.parse::<i64>()
    {
        if n < 1 {
            return Err(CsError {
                code: 530,
                cs_code: 9999,
                text: format!(
                    "Internal error executing API command {}",
                    command.to_lowercase()
                ),
            });
        }
        return Ok(Some(value.to_string()));
    }
    if known(s, param.kind, value) {
        Ok(Some(value.to_string()))
    } else {
        Err(CsError::bad_id(command, param.name, value))
    }
}

/// Java's `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`.
fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// `findByUuidIncludingRemoved`: whether an entity of `kind` has, or had, id `id`.
pub fn known(s: &State, kind: Kind, id: &str) -> bool {
    match kind {
        Zone => s.zones.iter().any(|z| z.id == id),
        ServiceOffering => s.offerings.iter().any(|o| o.id == id),
        DiskOffering => s.disk_offerings.iter().any(|o| o.id == id),
        Template => s.templates.iter().any(|t| t.id == id),
        Network => s.networks.iter().any(|n| n.id == id),
        NetworkOffering => s
            .networks
            .iter()
            .any(|n| fixed::network_offering(&n.kind).id == id),
        PhysicalNetwork => id == fixed::PHYSICAL_NETWORK_ID,
        Vm => s.vms.contains_key(id) || s.removed.vms.contains(id),
        Volume => s.volumes.contains_key(id) || s.removed.volumes.contains(id),
        Snapshot => s.snapshots.contains_key(id) || s.removed.snapshots.contains(id),
        Absent => false,
    }
}
