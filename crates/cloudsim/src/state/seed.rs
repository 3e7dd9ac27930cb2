//! The cloud a world file describes, as it is when cloudsim starts: zones, offerings,
//! templates and networks, each appliance Running with its ROOT volume at device 0
//! and its replica volumes at 1, 2, 4, … (3 is the CD-ROM's), and the detached
//! volumes. Ids the world leaves out are generated.

use std::collections::BTreeMap;

use crate::state::addresses::Cidr;
use crate::state::entities::{
    DiskOffering, GIB, Network, Offering, State, Template, Vm, Volume, Zone, new_id, now,
};
use crate::world::World;

impl State {
    /// Builds the cloud a world file describes.
    pub fn from_world(world: &World) -> Result<State, String> {
        let mut s = State {
            seq: 0,
            settings: world.settings.clone(),
            zones: vec![],
            offerings: vec![],
            disk_offerings: vec![],
            templates: vec![],
            networks: vec![],
            vms: BTreeMap::new(),
            volumes: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_mac: 1,
            removed: Default::default(),
        };
        if world.zones.is_empty() {
            return Err("the world needs at least one zone".into());
        }
        for z in &world.zones {
            s.zones.push(Zone {
                id: z.id.clone().unwrap_or_else(new_id),
                name: z.name.clone(),
            });
        }
        let zone_of = |s: &State, name: &Option<String>| -> Result<String, String> {
            match name {
                None => Ok(s.zones[0].id.clone()),
                Some(n) => s
                    .zones
                    .iter()
                    .find(|z| &z.name == n)
                    .map(|z| z.id.clone())
                    .ok_or_else(|| format!("unknown zone `{n}`")),
            }
        };
        for o in &world.service_offerings {
            s.offerings.push(Offering {
                id: o.id.clone().unwrap_or_else(new_id),
                def: o.clone(),
            });
        }
        for o in &world.disk_offerings {
            s.disk_offerings.push(DiskOffering {
                id: o.id.clone().unwrap_or_else(new_id),
                name: o.name.clone(),
                size_gb: o.size_gb,
            });
        }
        for t in &world.templates {
            s.templates.push(Template {
                id: t.id.clone().unwrap_or_else(new_id),
                name: t.name.clone(),
                size: t.size_gb * GIB,
                os: t.os.clone(),
            });
        }
        for n in &world.networks {
            let zone_id = zone_of(&s, &n.zone)?;
            Cidr::parse(&n.cidr).map_err(|e| format!("network `{}`: {e}", n.name))?;
            s.networks.push(Network {
                id: n.id.clone().unwrap_or_else(new_id),
                name: n.name.clone(),
                zone_id,
                kind: n.kind.clone(),
                cidr: n.cidr.clone(),
                next_host: 10,
            });
        }
        for a in &world.appliances {
            let zone_id = zone_of(&s, &a.zone)?;
            let vm_id = a.id.clone().unwrap_or_else(new_id);
            let seq = s.next_seq();
            s.vms.insert(
                vm_id.clone(),
                Vm {
                    id: vm_id.clone(),
                    seq,
                    name: a.name.clone(),
                    display_name: a.name.clone(),
                    state: "Running".into(),
                    zone_id: zone_id.clone(),
                    template_id: s
                        .templates
                        .first()
                        .map(|t| t.id.clone())
                        .unwrap_or_default(),
                    offering_id: s
                        .offerings
                        .first()
                        .map(|o| o.id.clone())
                        .unwrap_or_default(),
                    cpu_number: 4,
                    cpu_speed: 2000,
                    memory: 8192,
                    boot_type: "BIOS".into(),
                    boot_mode: "LEGACY".into(),
                    nics: vec![],
                    created: now(),
                    appliance: true,
                },
            );
            let root_id = a.root_volume_id.clone().unwrap_or_else(new_id);
            s.add_volume(
                &root_id,
                &format!("ROOT-{seq}"),
                &zone_id,
                20 * GIB,
                Some((&vm_id, 0)),
            );
            let mut device = 1;
            for v in &a.volumes {
                let id = v.id.clone().unwrap_or_else(new_id);
                s.add_volume(
                    &id,
                    &v.name,
                    &zone_id,
                    v.size_gb * GIB,
                    Some((&vm_id, device)),
                );
                device += if device == 2 { 2 } else { 1 };
            }
        }
        for v in &world.volumes {
            let zone_id = zone_of(&s, &v.zone)?;
            let id = v.id.clone().unwrap_or_else(new_id);
            s.add_volume(&id, &v.name, &zone_id, v.size_gb * GIB, None);
        }
        Ok(s)
    }

    fn add_volume(
        &mut self,
        id: &str,
        name: &str,
        zone_id: &str,
        size: i64,
        on: Option<(&str, i64)>,
    ) {
        let seq = self.next_seq();
        let kind = if on.map(|(_, d)| d) == Some(0) {
            "ROOT"
        } else {
            "DATADISK"
        };
        self.volumes.insert(
            id.to_string(),
            Volume {
                id: id.to_string(),
                seq,
                name: name.to_string(),
                zone_id: zone_id.to_string(),
                kind: kind.into(),
                size,
                state: "Ready".into(),
                vm_id: on.map(|(vm, _)| vm.to_string()),
                device_id: on.map(|(_, d)| d),
                disk_offering_id: None,
                // A ROOT volume was made from its VM's template.
                template_id: (kind == "ROOT")
                    .then(|| {
                        on.and_then(|(vm, _)| self.vms.get(vm))
                            .map(|vm| vm.template_id.clone())
                            .or_else(|| self.templates.first().map(|t| t.id.clone()))
                    })
                    .flatten(),
                created: now(),
                attached: on.map(|_| now()),
                generation: 1,
                prior_state: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_world_puts_replicas_on_the_appliance_at_1_and_2() {
        let s = State::from_world(&World::default()).unwrap();
        let oma = crate::world::ids::APPLIANCE_OMA;
        let mut devices: Vec<(i64, i64)> = s
            .volumes
            .values()
            .filter(|v| v.vm_id.as_deref() == Some(oma))
            .map(|v| (v.device_id.unwrap(), v.size / GIB))
            .collect();
        devices.sort();
        assert_eq!(devices, vec![(0, 20), (1, 107), (2, 10)]);
    }
}
