//! The simulated cloud a bench runs against: its shape (K VMs of N disks on A
//! appliances, refused when CloudStack could not hold it), the generated world file and
//! VM definitions, and `ferry cloudsim` as a child process.
//!
//! cloudsim runs in a process of its own so that the bench's peak memory is the
//! engine's alone. The world states the latency profile it ran with, so a report can be
//! read without knowing cloudsim's defaults of the day.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;

/// KVM's data-volume limit per VM (`hypervisor_capabilities.max_data_volumes_limit`):
/// the appliance's too.
const MAX_DATA_VOLUMES: u32 = 32;

/// After an attach to a running appliance, the guest sees the disk this much later.
pub(super) const HOTPLUG_DELAY_MS: u64 = 200;

/// The bench's shape: which VM's disks go to which appliance, and whether it fits.
#[derive(Debug, Clone)]
pub(super) struct Shape {
    pub(super) vms: u32,
    pub(super) disks: u32,
    pub(super) appliances: u32,
}

impl Shape {
    pub(super) fn appliance_of(&self, vm: u32) -> u32 {
        vm % self.appliances
    }

    /// Replicas on the fullest appliance.
    pub(super) fn most_on_one_appliance(&self) -> u32 {
        self.vms.div_ceil(self.appliances) * self.disks
    }

    /// Refuses a shape CloudStack could not hold, saying what would fit.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        let most = self.most_on_one_appliance();
        if most <= MAX_DATA_VOLUMES {
            return Ok(());
        }
        let per_appliance = MAX_DATA_VOLUMES / self.disks;
        let needed = self.vms.div_ceil(per_appliance);
        anyhow::bail!(
            "{} VMs of {} disks on {} appliance(s) puts {most} replica volumes on one appliance, \
             but CloudStack on KVM attaches at most {MAX_DATA_VOLUMES} data volumes to a VM: \
             an appliance holds {per_appliance} VMs of {} disks, so {} appliance(s) hold at most \
             {} such VMs; use --appliances {needed} or more for {} VMs, or --vms {} or fewer",
            self.vms,
            self.disks,
            self.appliances,
            self.disks,
            self.appliances,
            per_appliance * self.appliances,
            self.vms,
            per_appliance * self.appliances,
        )
    }
}

/// The generated world: A appliances with K×N replica volumes, and K VM definitions.
pub(super) struct World {
    api_key: String,
    secret_key: String,
    pub(super) zone: String,
    pub(super) offering: String,
    pub(super) template: String,
    pub(super) appliances: Vec<ApplianceDef>,
    pub(super) vms: Vec<VmDef>,
    /// The unmeasured VM of `--warmup`, on an appliance of its own.
    pub(super) warmup: Option<VmDef>,
    /// CloudStack's API rate limit (`--throttle`): `max` calls per `interval_s`.
    pub(super) throttling: Option<cloudsim::world::ApiThrottling>,
}

pub(super) struct ApplianceDef {
    pub(super) name: String,
    pub(super) id: String,
}

pub(super) struct VmDef {
    pub(super) name: String,
    pub(super) appliance: String,
    /// (key, size in GiB, replica volume id)
    disks: Vec<(u32, u32, String)>,
    mac: String,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl World {
    pub(super) fn new(
        shape: &Shape,
        warmup: bool,
        throttling: Option<cloudsim::world::ApiThrottling>,
    ) -> World {
        let mut appliances: Vec<ApplianceDef> = (0..shape.appliances)
            .map(|a| ApplianceDef {
                name: format!("oma-{}", a + 1),
                id: new_id(),
            })
            .collect();
        let vm = |i: u32, name: String, appliance: &str| VmDef {
            name,
            appliance: appliance.to_string(),
            disks: (0..shape.disks)
                .map(|j| (2000 + j, 20 + j, new_id()))
                .collect(),
            mac: format!(
                "00:50:56:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            ),
        };
        let vms = (0..shape.vms)
            .map(|i| {
                vm(
                    i,
                    format!("bench-{:04}", i + 1),
                    &appliances[shape.appliance_of(i) as usize].name,
                )
            })
            .collect();
        let warmup = warmup.then(|| {
            appliances.push(ApplianceDef {
                name: "oma-warmup".into(),
                id: new_id(),
            });
            vm(0xff_ffff, "warmup".into(), "oma-warmup")
        });
        World {
            api_key: format!("bench-{}", uuid::Uuid::new_v4().simple()),
            secret_key: uuid::Uuid::new_v4().simple().to_string(),
            zone: new_id(),
            offering: new_id(),
            template: new_id(),
            appliances,
            vms,
            warmup,
            throttling,
        }
    }

    /// Every VM, the warm-up's included.
    pub(super) fn all_vms(&self) -> impl Iterator<Item = &VmDef> {
        self.vms.iter().chain(&self.warmup)
    }

    /// The world file `ferry cloudsim --world` reads (docs/cloudsim.md).
    pub(super) fn toml(&self) -> String {
        let mut text = format!(
            r#"# Generated by `ferry bench`.
[credentials]
api_key = "{api_key}"
secret_key = "{secret_key}"

[settings]
kvm_snapshot_enabled = true
max_data_volumes = {MAX_DATA_VOLUMES}
hotplug_delay_ms = {HOTPLUG_DELAY_MS}
{throttling}
[[zones]]
id = "{zone}"
name = "bench"

[[service_offerings]]
id = "{offering}"
name = "Custom"

[[disk_offerings]]
name = "Custom"

[[templates]]
id = "{template}"
name = "placeholder"
size_gb = 8

[[networks]]
name = "test"
cidr = "10.10.0.0/16"

[[networks]]
name = "production"
cidr = "10.20.0.0/16"
"#,
            api_key = self.api_key,
            secret_key = self.secret_key,
            zone = self.zone,
            offering = self.offering,
            template = self.template,
            throttling = self
                .throttling
                .map(|t| format!(
                    "api_throttling = {{ max = {}, interval_s = {} }}\n",
                    t.max, t.interval_s
                ))
                .unwrap_or_default(),
        );
        for a in &self.appliances {
            text.push_str(&format!(
                "\n[[appliances]]\nid = \"{}\"\nname = \"{}\"\n",
                a.id, a.name
            ));
            for vm in self.all_vms().filter(|v| v.appliance == a.name) {
                for (key, size, id) in &vm.disks {
                    text.push_str(&format!(
                        "[[appliances.volumes]]\nid = \"{id}\"\nname = \"{}-disk-{key}\"\nsize_gb = {size}\n",
                        vm.name
                    ));
                }
            }
        }
        text.push_str("\n[latency_ms]\n");
        // cloudsim's default profile, written into the world so the bench states what
        // it ran.
        for (command, ms) in cloudsim::world::DEFAULT_LATENCY_MS {
            text.push_str(&format!("{command} = {ms}\n"));
        }
        text
    }
}

impl VmDef {
    /// Its definition file (docs/vm-definition.md).
    pub(super) fn definition(&self) -> String {
        let mut text = format!(
            r#"name = "{name}"
source_id = "{source}"
appliance = "{appliance}"

[spec]
vcpu = 2
memory_mb = 4096
firmware = "bios"
guest_os = "linux"
guest_prep = "skip"

[[nics]]
mac = "{mac}"
source_network = "VM Network"
test_network = "test"
production_network = "production"
"#,
            name = self.name,
            source = new_id(),
            appliance = self.appliance,
            mac = self.mac,
        );
        // VMware's SCSI units: 0–15 without 7 (the controller's own), 15 per bus.
        const UNITS: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        for (j, (key, size, id)) in self.disks.iter().enumerate() {
            text.push_str(&format!(
                "\n[[disks]]\nkey = {key}\ncontroller = \"scsi\"\nbus = {}\nunit = {}\ncapacity_gib = {size}\nlabel = \"Hard disk {}\"\nboot = {}\nreplica_volume_id = \"{id}\"\n",
                j / UNITS.len(),
                UNITS[j % UNITS.len()],
                j + 1,
                j == 0,
            ));
        }
        text
    }
}

/// `ferry cloudsim` as a child process.
pub(super) struct Cloudsim {
    child: tokio::process::Child,
    pub(super) announcement: cloudsim::Announcement,
    http: reqwest::Client,
}

impl Cloudsim {
    pub(super) async fn spawn(world: &Path, sysfs: &Path, scale: f64) -> anyhow::Result<Cloudsim> {
        let exe = std::env::current_exe().context("cannot find the ferry binary")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("cloudsim")
            .arg("--world")
            .arg(world)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--time-scale",
                &scale.to_string(),
            ])
            .arg("--sysfs-root")
            .arg(sysfs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `ferry cloudsim`")?;
        let stdout = child.stdout.take().context("cloudsim's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("cloudsim did not announce itself within 60 s")??
            .context("cloudsim exited without announcing itself")?;
        let announcement: cloudsim::Announcement = serde_json::from_str(&line)
            .with_context(|| format!("cloudsim's announcement is not what was expected: {line}"))?;
        Ok(Cloudsim {
            child,
            announcement,
            http: reqwest::Client::new(),
        })
    }

    pub(super) async fn stats(&self) -> anyhow::Result<cloudsim::Stats> {
        let url = format!("{}/stats", self.announcement.admin);
        self.http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}: not cloudsim's stats"))
    }

    pub(super) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(vms: u32, disks: u32, appliances: u32) -> Shape {
        Shape {
            vms,
            disks,
            appliances,
        }
    }

    #[test]
    fn a_shape_that_fits_is_accepted() {
        assert!(shape(1, 2, 1).check().is_ok());
        assert!(shape(16, 4, 2).check().is_ok());
        assert!(shape(100, 4, 13).check().is_ok());
        assert!(shape(500, 1, 16).check().is_ok());
        assert!(shape(1, 32, 1).check().is_ok());
    }

    #[test]
    fn too_many_replicas_on_one_appliance_are_refused_with_what_fits() {
        let e = shape(100, 4, 2).check().unwrap_err().to_string();
        assert!(e.contains("200 replica volumes on one appliance"), "{e}");
        assert!(e.contains("at most 16 such VMs"), "{e}");
        assert!(e.contains("--appliances 13"), "{e}");
        let e = shape(500, 1, 1).check().unwrap_err().to_string();
        assert!(e.contains("--appliances 16"), "{e}");
        assert!(shape(33, 1, 1).check().is_err());
        assert!(shape(9, 4, 1).check().is_err());
    }

    #[test]
    fn vms_are_spread_round_robin() {
        let s = shape(5, 2, 2);
        let w = World::new(&s, false, None);
        let on: Vec<&str> = w.vms.iter().map(|v| v.appliance.as_str()).collect();
        assert_eq!(on, ["oma-1", "oma-2", "oma-1", "oma-2", "oma-1"]);
        assert_eq!(s.most_on_one_appliance(), 6);
        // The world parses as cloudsim reads it, with every replica on its appliance.
        let parsed = cloudsim::World::from_toml(&w.toml()).expect("a valid world");
        assert_eq!(parsed.appliances.len(), 2);
        assert_eq!(parsed.appliances[0].volumes.len(), 6);
        assert_eq!(parsed.appliances[1].volumes.len(), 4);
        assert_eq!(parsed.latency_ms["attachVolume"], 3_000);
    }

    #[test]
    fn the_warmup_vm_has_an_appliance_of_its_own() {
        let w = World::new(&shape(2, 3, 1), true, None);
        assert_eq!(w.vms.len(), 2);
        let warmup = w.warmup.as_ref().expect("a warm-up VM");
        assert_eq!(warmup.appliance, "oma-warmup");
        assert_eq!(warmup.disks.len(), 3);
        let parsed = cloudsim::World::from_toml(&w.toml()).expect("a valid world");
        let names: Vec<(&str, usize)> = parsed
            .appliances
            .iter()
            .map(|a| (a.name.as_str(), a.volumes.len()))
            .collect();
        assert_eq!(names, [("oma-1", 6), ("oma-warmup", 3)]);
    }

    #[test]
    fn definitions_parse_with_every_disk_on_its_own_slot() {
        let w = World::new(&shape(1, 20, 1), false, None);
        let text = w.vms[0].definition();
        let parsed: toml::Value = toml::from_str(&text).expect("TOML");
        let disks = parsed["disks"].as_array().expect("disks");
        assert_eq!(disks.len(), 20);
        let slots: std::collections::BTreeSet<(i64, i64)> = disks
            .iter()
            .map(|d| {
                (
                    d["bus"].as_integer().unwrap(),
                    d["unit"].as_integer().unwrap(),
                )
            })
            .collect();
        assert_eq!(slots.len(), 20);
        assert!(!slots.iter().any(|(_, unit)| *unit == 7));
        assert_eq!(
            disks
                .iter()
                .filter(|d| d["boot"].as_bool() == Some(true))
                .count(),
            1
        );
    }
}
