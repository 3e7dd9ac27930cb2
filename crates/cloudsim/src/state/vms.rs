//! The rules of VM commands: `deployVirtualMachine` (`deploy_create`, with
//! CloudStack's validation of the offering's custom values, the host name, the
//! firmware and each NIC, and the allocation of addresses, which `addresses` does),
//! `startVirtualMachine`, `stopVirtualMachine` and `destroyVirtualMachine` (`begin_*`,
//! `finish_*`, and `abort_vm` for a job failed by a fault).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::CsError;
use crate::state::entities::{DeployRequest, Nic, Offering, State, Vm, Volume, new_id, now};

impl State {
    // ---- deployVirtualMachine ------------------------------------------------------

    /// `DeployVMCmd.create()`: validation and allocation, synchronously. The VM is
    /// Stopped, with a ROOT volume from the template in state Allocated.
    pub fn deploy_create(&mut self, req: &DeployRequest) -> Result<String, CsError> {
        let offering = self
            .offerings
            .iter()
            .find(|o| o.id == req.offering_id)
            .cloned()
            .expect("offering resolved by the caller");
        let template = self
            .templates
            .iter()
            .find(|t| t.id == req.template_id)
            .cloned()
            .expect("template resolved by the caller");
        let (cpu_number, cpu_speed, memory) = validate_custom(&offering, &req.details)?;
        let name = match &req.name {
            Some(n) => {
                validate_hostname(n)?;
                n.clone()
            }
            None => String::new(),
        };
        let (boot_type, boot_mode) =
            validate_boot(req.boot_type.as_deref(), req.boot_mode.as_deref())?;
        if req.nics.is_empty() {
            return Err(CsError::param(
                "Can't deploy a VM without a network: specify networkids or iptonetworklist",
            ));
        }
        let mut seen_networks = Vec::new();
        for (network_id, ip, mac) in &req.nics {
            let network = self
                .networks
                .iter()
                .find(|n| &n.id == network_id)
                .ok_or_else(|| {
                    CsError::param(format!("Unable to find network by id {network_id}"))
                })?;
            if network.zone_id != req.zone_id {
                return Err(CsError::param(format!(
                    "Network id={} doesn't belong to zone {}",
                    network.id, req.zone_id
                )));
            }
            if seen_networks.contains(network_id) {
                return Err(CsError::param(format!(
                    "Network id={network_id} is specified more than once"
                )));
            }
            seen_networks.push(network_id.clone());
            if let Some(mac) = mac {
                if !valid_mac(mac) {
                    return Err(CsError::param(format!("Mac address is not valid: {mac}")));
                }
                if self
                    .vms
                    .values()
                    .flat_map(|v| &v.nics)
                    .any(|n| n.mac.eq_ignore_ascii_case(mac))
                {
                    return Err(CsError::param(format!(
                        "The mac address {mac} is already in use in network {network_id}"
                    )));
                }
            }
            if let Some(ip) = ip {
                if ip.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(CsError::param(format!(
                        "Invalid format for IPv4 address: {ip}"
                    )));
                }
                let used = self
                    .vms
                    .values()
                    .flat_map(|v| &v.nics)
                    .any(|n| &n.network_id == network_id && &n.ip == ip);
                if used {
                    return Err(CsError::internal(format!(
                        "Unable to allocate ip address {ip} in network {network_id}: it is in use"
                    )));
                }
            }
        }
        if !name.is_empty()
            && let Some(other) = self
                .vms
                .values()
                .find(|v| v.name.eq_ignore_ascii_case(&name))
        {
            let network = self.network_name(&req.nics[0].0);
            return Err(CsError::param(format!(
                "The vm with hostName {} already exists in the network domain: cs1cloud.internal; network={network}",
                other.name
            )));
        }
        let vm_id = new_id();
        let seq = self.next_seq();
        let name = if name.is_empty() {
            format!("VM-{vm_id}")
        } else {
            name
        };
        let mut nics = Vec::new();
        for (i, (network_id, ip, mac)) in req.nics.iter().enumerate() {
            let ip = match ip {
                Some(ip) => ip.clone(),
                None => self.allocate_ip(network_id)?,
            };
            let mac = match mac {
                Some(m) => m.to_lowercase(),
                None => self.allocate_mac(),
            };
            nics.push(Nic {
                id: new_id(),
                network_id: network_id.clone(),
                ip,
                mac,
                default: i == 0,
            });
        }
        self.vms.insert(
            vm_id.clone(),
            Vm {
                id: vm_id.clone(),
                seq,
                display_name: req.display_name.clone().unwrap_or_else(|| name.clone()),
                name,
                state: "Stopped".into(),
                zone_id: req.zone_id.clone(),
                template_id: template.id.clone(),
                offering_id: offering.id.clone(),
                cpu_number,
                cpu_speed,
                memory,
                boot_type,
                boot_mode,
                nics,
                created: now(),
                appliance: false,
            },
        );
        let root_id = new_id();
        let root_seq = self.next_seq();
        self.volumes.insert(
            root_id.clone(),
            Volume {
                id: root_id,
                seq: root_seq,
                name: format!("ROOT-{seq}"),
                zone_id: req.zone_id.clone(),
                kind: "ROOT".into(),
                size: template.size,
                state: "Allocated".into(),
                vm_id: Some(vm_id.clone()),
                device_id: Some(0),
                disk_offering_id: None,
                template_id: Some(template.id.clone()),
                created: now(),
                attached: Some(now()),
                generation: 1,
                prior_state: None,
            },
        );
        Ok(vm_id)
    }

    fn allocate_mac(&mut self) -> String {
        let n = self.next_mac;
        self.next_mac += 1;
        format!(
            "02:00:4c:{:02x}:{:02x}:{:02x}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    }

    // ---- start / stop / destroy ----------------------------------------------------

    pub fn begin_start(&mut self, vm_id: &str) -> Result<(), CsError> {
        let vm = self.vm(vm_id)?;
        match vm.state.as_str() {
            "Stopped" => {}
            "Running" => {
                return Err(CsError::param(format!(
                    "The virtual machine {} ({}) is already running",
                    vm.id, vm.display_name
                )));
            }
            other => {
                return Err(CsError::internal(format!(
                    "Unable to start VM instance {} as it is in state {other}",
                    vm.name
                )));
            }
        }
        if !self.volumes_of(vm_id).any(|v| v.device_id == Some(0)) {
            return Err(CsError::internal(format!(
                "Unable to start VM instance {}: it has no ROOT volume (device 0)",
                vm.name
            )));
        }
        self.vms.get_mut(vm_id).expect("checked").state = "Starting".into();
        Ok(())
    }

    pub fn finish_start(&mut self, vm_id: &str) -> Value {
        let was_starting = self.vm_in(vm_id, "Starting");
        self.set_vm_state(vm_id, "Running");
        if was_starting {
            for v in self
                .volumes
                .values_mut()
                .filter(|v| v.vm_id.as_deref() == Some(vm_id))
            {
                if v.state == "Allocated" {
                    v.state = "Ready".into();
                }
                // A running guest writes to its disks.
                v.generation += 1;
            }
        }
        json!({ "virtualmachine": self.vm_json(vm_id) })
    }

    pub fn abort_vm(&mut self, vm_id: &str, back_to: &str) {
        self.set_vm_state(vm_id, back_to);
    }

    pub fn begin_stop(&mut self, vm_id: &str) -> Result<(), CsError> {
        let vm = self.vm(vm_id)?;
        match vm.state.as_str() {
            "Running" => {}
            "Stopped" => return Ok(()),
            other => {
                return Err(CsError::internal(format!(
                    "Unable to stop VM instance {} as it is in state {other}",
                    vm.name
                )));
            }
        }
        self.vms.get_mut(vm_id).expect("checked").state = "Stopping".into();
        Ok(())
    }

    pub fn finish_stop(&mut self, vm_id: &str) -> Value {
        self.set_vm_state(vm_id, "Stopped");
        json!({ "virtualmachine": self.vm_json(vm_id) })
    }

    /// `rebootVirtualMachine` at the head of the VM's queue. CloudStack
    /// (`UserVmManagerImpl.rebootVirtualMachine(userId, vmId, enterSetup, forced)`)
    /// reboots only a Running VM with a host and otherwise returns null, which
    /// `RebootVMCmd.execute()` turns into `ServerApiException(INTERNAL_ERROR, "Failed to
    /// reboot vm instance")`: the job fails with 530. The VM stays Running throughout
    /// (CloudStack has no rebooting state).
    pub fn begin_reboot(&mut self, vm_id: &str) -> Result<(), CsError> {
        if self.vm_in(vm_id, "Running") {
            Ok(())
        } else {
            Err(CsError::internal("Failed to reboot vm instance"))
        }
    }

    /// A rebooted guest boots again and writes to its disks.
    pub fn finish_reboot(&mut self, vm_id: &str) -> Value {
        for v in self
            .volumes
            .values_mut()
            .filter(|v| v.vm_id.as_deref() == Some(vm_id))
        {
            v.generation += 1;
        }
        json!({ "virtualmachine": self.vm_json(vm_id) })
    }

    pub fn begin_destroy(&mut self, vm_id: &str) -> Result<String, CsError> {
        let vm = self.vm(vm_id)?;
        let prior = vm.state.clone();
        match prior.as_str() {
            "Running" | "Stopped" | "Error" | "Destroyed" => {}
            other => {
                return Err(CsError::param(format!(
                    "Unable to destroy VM instance {} as it is in state {other}",
                    vm.name
                )));
            }
        }
        if vm.appliance {
            // Nothing in ferry should ever do this; make it loud if it does.
            tracing::warn!(vm = %vm.name, "destroying an appliance VM");
        }
        Ok(prior)
    }

    /// Destroys the VM. With `expunge`, the VM and its ROOT volume are removed and
    /// every DATADISK volume is detached (not deleted); without, the VM is Destroyed
    /// and its ROOT volume goes to the Destroy state.
    pub fn finish_destroy(&mut self, vm_id: &str, expunge: bool) -> Value {
        let mut response = self.vm_json(vm_id);
        if expunge {
            let attached: Vec<String> = self.volumes_of(vm_id).map(|v| v.id.clone()).collect();
            for id in attached {
                let v = self.volumes.get_mut(&id).expect("listed");
                if v.kind == "ROOT" {
                    self.remove_volume(&id);
                } else {
                    v.vm_id = None;
                    v.device_id = None;
                    v.attached = None;
                }
            }
            self.remove_vm(vm_id);
            response["state"] = json!("Expunging");
        } else {
            self.set_vm_state(vm_id, "Destroyed");
            for v in self
                .volumes
                .values_mut()
                .filter(|v| v.vm_id.as_deref() == Some(vm_id) && v.kind == "ROOT")
            {
                v.state = "Destroy".into();
            }
            response["state"] = json!("Destroyed");
        }
        json!({ "virtualmachine": response })
    }

    /// `recoverVirtualMachine` (a synchronous command): a Destroyed VM that is not yet
    /// expunged becomes Stopped again, and its ROOT volume Ready. Any other state is
    /// refused as `UserVmManagerImpl.recoverVirtualMachine` refuses it.
    pub fn recover_vm(&mut self, vm_id: &str) -> Result<Value, CsError> {
        let vm = self.vm(vm_id)?;
        if vm.state != "Destroyed" {
            return Err(CsError::param(format!(
                "Vm with id {vm_id} is not in the right state"
            )));
        }
        self.set_vm_state(vm_id, "Stopped");
        for v in self
            .volumes
            .values_mut()
            .filter(|v| v.vm_id.as_deref() == Some(vm_id) && v.kind == "ROOT")
        {
            v.state = "Ready".into();
        }
        Ok(json!({ "virtualmachine": self.vm_json(vm_id) }))
    }
}

fn validate_custom(
    offering: &Offering,
    details: &BTreeMap<String, String>,
) -> Result<(i64, i64, i64), CsError> {
    let def = &offering.def;
    let get = |key: &str| -> Option<&String> {
        details
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    let custom_cpu = def.cpu_number.is_none();
    let custom_speed = def.cpu_speed.is_none();
    let custom_memory = def.memory_mb.is_none();
    if (custom_cpu || custom_speed || custom_memory)
        && get("cpuNumber").is_none()
        && get("cpuSpeed").is_none()
        && get("memory").is_none()
    {
        return Err(CsError::param(
            "Need to specify custom parameter values cpu, cpu speed and memory when using custom offering",
        ));
    }
    let number = |key: &str| -> Result<Option<i64>, CsError> {
        match get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| CsError::param(format!("Invalid value for {key}: {v}"))),
        }
    };
    let fixed = |what: &str| {
        CsError::param(format!(
            "The {what} of this offering id:{} is not customizable. This is predefined in the template.",
            offering.id
        ))
    };
    let cpu = match (def.cpu_number, number("cpuNumber")?) {
        (Some(_), Some(_)) => return Err(fixed("cpu cores")),
        (Some(fixed_value), None) => fixed_value,
        (None, v) => {
            let v = v.unwrap_or(0);
            if v < def.min_cpu_number || v > def.max_cpu_number {
                return Err(CsError::param(format!(
                    "Invalid cpu cores value, specify a value between {} and {}",
                    def.min_cpu_number, def.max_cpu_number
                )));
            }
            v
        }
    };
    let speed = match (def.cpu_speed, number("cpuSpeed")?) {
        (Some(_), Some(_)) => return Err(fixed("cpu speed")),
        (Some(fixed_value), None) => fixed_value,
        (None, v) => {
            let v = v.unwrap_or(0);
            if v <= 0 {
                return Err(CsError::param(
                    "Invalid cpu speed value, specify a value between 1 and 2147483647",
                ));
            }
            v
        }
    };
    let memory = match (def.memory_mb, number("memory")?) {
        (Some(_), Some(_)) => return Err(fixed("memory")),
        (Some(fixed_value), None) => fixed_value,
        (None, v) => {
            let v = v.unwrap_or(0);
            if v < def.min_memory_mb || v > def.max_memory_mb {
                return Err(CsError::param(format!(
                    "Invalid memory value, specify a value between {} and {}",
                    def.min_memory_mb, def.max_memory_mb
                )));
            }
            v
        }
    };
    Ok((cpu, speed, memory))
}

fn validate_hostname(name: &str) -> Result<(), CsError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(CsError::param(
            "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', and the hyphen ('-'), must be between 1 and 63 characters long, and can't start or end with \"-\" and can't start with digit",
        ))
    }
}

fn validate_boot(
    boot_type: Option<&str>,
    boot_mode: Option<&str>,
) -> Result<(String, String), CsError> {
    let boot_type = boot_type.unwrap_or("BIOS").to_uppercase();
    let boot_mode = boot_mode.unwrap_or("LEGACY").to_uppercase();
    match (boot_type.as_str(), boot_mode.as_str()) {
        ("BIOS", "LEGACY") | ("UEFI", "LEGACY") | ("UEFI", "SECURE") => Ok((boot_type, boot_mode)),
        ("BIOS", _) => Err(CsError::param(
            "Boot Mode other than LEGACY is not supported for BIOS boot type",
        )),
        ("UEFI", other) => Err(CsError::param(format!(
            "Invalid boot mode {other}; use LEGACY or SECURE"
        ))),
        (other, _) => Err(CsError::param(format!(
            "Invalid boot type {other}; use BIOS or UEFI"
        ))),
    }
}

/// `NetUtils.isValidMac`: six pairs of hex digits separated by `:` or `-`.
fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_validation() {
        assert!(valid_mac("00:50:56:aa:bb:cc"));
        assert!(!valid_mac("00:50:56:aa:bb"));
        assert!(!valid_mac("00:50:56:aa:bb:zz"));
    }
}
