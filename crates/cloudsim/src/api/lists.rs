//! The list commands: their id parameters translated as CloudStack translates them
//! (`ids`: an id that names nothing is refused, one of a removed entity gives an empty
//! list), then the entities that pass every filter, in creation order, paged, under
//! CloudStack's plural key — and an empty list as `{}`.

use serde_json::{Value, json};

use crate::api::ids::{Resolved, resolve_list};
use crate::api::params::Params;
use crate::error::CsError;
use crate::state::entities::{Job, Snapshot, State, Vm, Volume};
use crate::state::fixed;

/// Whether `command` is one of the list commands answered here.
pub fn is_list(command: &str) -> bool {
    crate::api::ids::list_params(command).is_some()
}

fn list_body(key: &str, items: Vec<Value>, params: &Params) -> Value {
    if items.is_empty() {
        return json!({});
    }
    let count = items.len();
    let page = params
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let size = params
        .get("pagesize")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(500)
        .max(1);
    let page_items: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    json!({ "count": count, key: page_items })
}

/// Entities in creation order, as CloudStack lists them, each rendered.
fn by_seq<T>(
    mut items: Vec<&T>,
    seq: impl Fn(&T) -> u64,
    render: impl Fn(&T) -> Value,
) -> Vec<Value> {
    items.sort_by_key(|x| seq(x));
    items.into_iter().map(render).collect()
}

/// Whether the entity `id` passes both `id` and `ids`.
fn by_id(r: &Resolved, id: &str) -> bool {
    r.admits("id", id) && r.admits("ids", id)
}

/// A filter on a kind of entity no simulated cloud has (a VPC, a host, …): given, it
/// can only have resolved to `-1` or a number, which names nothing.
fn absent(r: &Resolved, names: &[&str]) -> bool {
    !names.iter().any(|n| r.has(n))
}

/// Answers the list command `command` (one [`is_list`] accepts).
pub fn answer(s: &State, command: &str, p: &Params) -> Result<Value, CsError> {
    let r = resolve_list(s, command, p)?;
    let name_is = |name: &str| p.get("name").is_none_or(|n| n == name);
    match command {
        "listZones" => {
            let items = s
                .zones
                .iter()
                .filter(|z| by_id(&r, &z.id) && name_is(&z.name))
                .map(|z| s.zone_json(z))
                .collect();
            Ok(list_body("zone", items, p))
        }
        "listServiceOfferings" => {
            // With a VM, the offerings it could change to: not the one it has.
            let current = r
                .get("virtualmachineid")
                .map(|vm| s.vms.get(vm).map(|v| v.offering_id.clone()));
            let items = s
                .offerings
                .iter()
                .filter(|o| {
                    by_id(&r, &o.id)
                        && name_is(&o.def.name)
                        && current
                            .as_ref()
                            .is_none_or(|c| c.as_ref().is_some_and(|c| *c != o.id))
                })
                .map(|o| s.offering_json(o))
                .collect();
            Ok(list_body("serviceoffering", items, p))
        }
        "listDiskOfferings" => {
            let items = s
                .disk_offerings
                .iter()
                .filter(|o| by_id(&r, &o.id) && name_is(&o.name) && absent(&r, &["storageid"]))
                .map(|o| s.disk_offering_json(o))
                .collect();
            Ok(list_body("diskoffering", items, p))
        }
        "listTemplates" => {
            p.require(command, "templatefilter")?;
            // cloudsim lists its templates as being in the first zone.
            let zone = &s.zones[0];
            let items = s
                .templates
                .iter()
                .filter(|t| {
                    by_id(&r, &t.id)
                        && name_is(&t.name)
                        && r.admits("zoneid", &zone.id)
                        // Datadisk templates of a parent: cloudsim's have none.
                        && !r.has("parenttemplateid")
                })
                .map(|t| s.template_json(t, zone))
                .collect();
            Ok(list_body("template", items, p))
        }
        "listNetworks" => {
            let items = s
                .networks
                .iter()
                .filter(|n| {
                    by_id(&r, &n.id)
                        && r.admits("zoneid", &n.zone_id)
                        && r.admits("physicalnetworkid", fixed::PHYSICAL_NETWORK_ID)
                        && r.admits("networkofferingid", fixed::network_offering(&n.kind).id)
                        && absent(&r, &["vpcid", "associatednetworkid"])
                        && p.get("type").is_none_or(|t| {
                            t.eq_ignore_ascii_case("all") || t.eq_ignore_ascii_case(&n.kind)
                        })
                })
                .map(|n| s.network_json(n))
                .collect();
            Ok(list_body("network", items, p))
        }
        // A world has no public IPs and no NAT or port-forwarding rules: the lists are
        // empty, as CloudStack's are for an account without them; an id, which can
        // name none of them, was refused above as every unknown id is.
        "listPublicIpAddresses" | "listPortForwardingRules" | "listIpForwardingRules" => {
            Ok(list_body("none", Vec::new(), p))
        }
        "listVirtualMachines" => {
            let vms: Vec<&Vm> = s
                .vms
                .values()
                .filter(|v| {
                    by_id(&r, &v.id)
                        && r.admits("zoneid", &v.zone_id)
                        && r.admits("templateid", &v.template_id)
                        && r.admits("serviceofferingid", &v.offering_id)
                        && r.admits_any("networkid", v.nics.iter().map(|n| n.network_id.as_str()))
                        && absent(
                            &r,
                            &[
                                "groupid",
                                "isoid",
                                "vpcid",
                                "affinitygroupid",
                                "securitygroupid",
                                "backupofferingid",
                                "autoscalevmgroupid",
                                "userdataid",
                            ],
                        )
                        && p.get("name").is_none_or(|n| v.name.contains(n))
                        && p.get("state")
                            .is_none_or(|st| v.state.eq_ignore_ascii_case(st))
                })
                .collect();
            let items = by_seq(vms, |v| v.seq, |v| s.vm_json(&v.id));
            Ok(list_body("virtualmachine", items, p))
        }
        "listVolumes" => {
            let vols: Vec<&Volume> = s
                .volumes
                .values()
                .filter(|v| {
                    by_id(&r, &v.id)
                        && r.admits("zoneid", &v.zone_id)
                        && r.admits_any("virtualmachineid", v.vm_id.as_deref())
                        && r.admits_any("diskofferingid", v.disk_offering_id.as_deref())
                        && r.admits_any("serviceofferingid", root_offering(s, v))
                        && absent(&r, &["hostid", "podid", "clusterid"])
                        && p.get("type").is_none_or(|t| v.kind.eq_ignore_ascii_case(t))
                        && p.get("name").is_none_or(|n| v.name.contains(n))
                })
                .collect();
            let items = by_seq(vols, |v| v.seq, |v| s.volume_json(&v.id));
            Ok(list_body("volume", items, p))
        }
        "listSnapshots" => {
            let snaps: Vec<&Snapshot> = s
                .snapshots
                .values()
                .filter(|x| {
                    by_id(&r, &x.id)
                        && r.admits("volumeid", &x.volume_id)
                        && r.admits("zoneid", &x.zone_id)
                        // Both `LIKE '%…%'` on the name, as SnapshotManagerImpl has them.
                        && p.get("name").is_none_or(|n| x.name.contains(n))
                        && p.get("keyword").is_none_or(|k| x.name.contains(k))
                })
                .collect();
            let items = by_seq(snaps, |x| x.seq, |x| s.snapshot_json(&x.id));
            Ok(list_body("snapshot", items, p))
        }
        "listAsyncJobs" => {
            let jobs: Vec<&Job> = s.jobs.values().collect();
            let items = by_seq(jobs, |j| j.seq, |j| s.job_json(&j.id));
            Ok(list_body("asyncjobs", items, p))
        }
        other => unreachable!("{other} is not a list command"),
    }
}

/// The service offering of a ROOT volume's VM (what `serviceofferingid` filters by).
fn root_offering<'a>(s: &'a State, v: &Volume) -> Option<&'a str> {
    if v.kind != "ROOT" {
        return None;
    }
    v.vm_id
        .as_ref()
        .and_then(|vm| s.vms.get(vm))
        .map(|vm| vm.offering_id.as_str())
}
