//! Guest preparation (DESIGN §5, test and live failover step 3): after the replicas'
//! snapshots and before the target VM is created, the volume daemon on the appliance
//! runs the operator's command against the boot replica's device path while the
//! replica is still attached there — for Windows guests, `virt-v2v-in-place` injecting
//! the VirtIO drivers, without which Windows cannot boot from a virtio disk.
//!
//! **Policy**, per VM ([`store::GuestPrep`]): `auto` prepares Windows guests and skips
//! Linux and other guests (their kernels have virtio drivers); `skip` never prepares;
//! `virt-v2v-in-place` always prepares. *What* runs is not the policy's business: it
//! is the one command configured for ferry ([`crate::Env::guest_prep`], a
//! [`volumed::GuestPrep`]); the policy's name only says what that command usually is.
//!
//! [`check_guest_prep`] is the validation half: a VM that needs preparation is refused
//! before anything changes when no command is configured or the appliance lacks it.
//!
//! The daemon journals the preparation under the step's idempotency key, so a resumed
//! run that asks again gets the first outcome and the command never runs twice; a
//! failed command (or one interrupted by a daemon restart) is a definitive error that
//! unwinds the run, with the tail of what the command printed.

use store::{GuestOs, GuestPrep};

use crate::env::Env;

/// What the policy decides for one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip,
}

/// The policy: `skip` never, `virt-v2v-in-place` always, `auto` for Windows guests only.
pub fn decide(policy: GuestPrep, os: GuestOs) -> Decision {
    match (policy, os) {
        (GuestPrep::Skip, _) => Decision::Skip,
        (GuestPrep::VirtV2vInPlace, _) => Decision::Run,
        (GuestPrep::Auto, GuestOs::Windows) => Decision::Run,
        (GuestPrep::Auto, GuestOs::Linux | GuestOs::Other) => Decision::Skip,
    }
}

pub(crate) fn why(vm: &store::ProtectedVm) -> String {
    format!(
        "guest_prep = \"{}\", guest_os = \"{}\"",
        vm.spec.guest_prep.as_str(),
        vm.spec.guest_os.as_str()
    )
}

/// The refusal when a VM needs preparation and ferry has no command for it.
pub(crate) fn not_configured(vm: &store::ProtectedVm) -> String {
    format!(
        "{} needs guest preparation ({}) but no guest-preparation command is configured: \
         configure one (program, args with {{device}} for the boot disk's path, timeout_secs) — for Windows guests \
         program = \"virt-v2v-in-place\", args = [\"-i\", \"disk\", \"{{device}}\", \"--inject-virtio-win\", \
         \"/usr/share/virtio-win/virtio-win.iso\"] — or set guest_prep = \"skip\" on the VM if its guest already \
         has VirtIO drivers",
        vm.name,
        why(vm)
    )
}

/// What to install so that `program` is there.
fn install_hint(program: &str) -> String {
    let name = program.rsplit('/').next().unwrap_or(program);
    if name.starts_with("virt-v2v") {
        format!(
            "install virt-v2v (which provides `{name}`) and the virtio-win drivers ISO on the appliance"
        )
    } else {
        format!("install `{name}` on the appliance, or correct the configured program")
    }
}

/// Validation's check (DESIGN §5 step 1): when `vm` needs guest preparation, a command
/// must be configured and the volume daemon of `vm`'s appliance must find its program.
/// `Err` is the problem, in words for the operator (also when the check itself could
/// not be made: validation refuses rather than guess).
pub async fn check_guest_prep(env: &Env, vm: &store::ProtectedVm) -> Result<(), String> {
    if decide(vm.spec.guest_prep, vm.spec.guest_os) == Decision::Skip {
        return Ok(());
    }
    let Some(prep) = &env.guest_prep else {
        return Err(not_configured(vm));
    };
    let appliance = env
        .store
        .appliance(&vm.appliance)
        .await
        .map_err(|e| format!("reading appliance {}: {e}", vm.appliance))?
        .ok_or_else(|| format!("appliance {} is not configured", vm.appliance))?;
    match env
        .volumes_of(&vm.appliance)
        .tool_available(&appliance.vm_id, &prep.program)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{} needs guest preparation ({}), but `{}` is not installed on appliance {} ({}): \
             it is not {}; {}",
            vm.name,
            why(vm),
            prep.program,
            appliance.name,
            appliance.vm_id,
            if prep.program.contains('/') {
                "an executable file there"
            } else {
                "an executable on the volume daemon's PATH"
            },
            install_hint(&prep.program)
        )),
        Err(e) => Err(format!(
            "cannot check for the guest-preparation tool `{}` on appliance {}: {e}",
            prep.program, appliance.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_policy_prepares_windows_on_auto_and_obeys_skip_and_virt_v2v() {
        assert_eq!(decide(GuestPrep::Auto, GuestOs::Linux), Decision::Skip);
        assert_eq!(decide(GuestPrep::Auto, GuestOs::Other), Decision::Skip);
        assert_eq!(decide(GuestPrep::Auto, GuestOs::Windows), Decision::Run);
        for os in [GuestOs::Linux, GuestOs::Windows, GuestOs::Other] {
            assert_eq!(decide(GuestPrep::Skip, os), Decision::Skip, "{os:?}");
            assert_eq!(
                decide(GuestPrep::VirtV2vInPlace, os),
                Decision::Run,
                "{os:?}"
            );
        }
    }

    const APPLIANCE_VM: &str = "0b4c1f1e-oma";

    fn vm(os: GuestOs, policy: GuestPrep) -> store::ProtectedVm {
        store::ProtectedVm {
            id: "vm-1".into(),
            name: "winsrv1".into(),
            source_id: "vm-42".into(),
            appliance: "oma".into(),
            spec: store::VmSpec {
                vcpu: 2,
                memory_mb: 4096,
                cpu_speed_mhz: 2000,
                firmware: store::Firmware::Uefi,
                secure_boot: false,
                guest_os: os,
                guest_prep: policy,
            },
            state: store::VmState::ReadyForFailover,
            target_vm_id: None,
            created_at: 0,
            removed_at: None,
            version: 0,
            nics: vec![],
            disks: vec![],
        }
    }

    /// An environment whose volume daemon serves the appliance in-process; the
    /// CloudStack endpoint is never called (looking up a tool does not need it).
    async fn env(prep: Option<volumed::GuestPrep>) -> (Env, store::testing::TestStore) {
        let t = store::testing::sqlite().await.unwrap();
        t.store
            .upsert_appliance(&store::Appliance {
                name: "oma".into(),
                vm_id: APPLIANCE_VM.into(),
                zone_id: "zone".into(),
                volumed_url: None,
                sysfs_root: None,
            })
            .await
            .unwrap();
        let cloud = cloudstack::Client::new(cloudstack::Config::new(
            "http://127.0.0.1:9/client/api",
            "key",
            secrecy::SecretString::from("secret".to_string()),
        ))
        .unwrap();
        let volumes: Arc<dyn volumed::VolumeService> = Arc::new(volumed::Local::new(
            cloud.clone(),
            Arc::new(volumed::MemoryJournal::new()),
            volumed::LocalConfig::with_appliance(APPLIANCE_VM, "/"),
        ));
        let env = Env {
            store: t.store.clone(),
            cloud,
            volumes,
            agents: Default::default(),
            target: crate::env::Target {
                zone_id: "zone".into(),
                service_offering_id: "offering".into(),
                template_id: "template".into(),
            },
            device_timeout: Duration::from_secs(1),
            hooks: Default::default(),
            guest_prep: prep,
        };
        (env, t)
    }

    #[tokio::test]
    async fn validation_names_what_is_missing() {
        let windows = vm(GuestOs::Windows, GuestPrep::Auto);
        let linux = vm(GuestOs::Linux, GuestPrep::Auto);

        // Nothing configured: fine for a guest that is skipped, a refusal that says
        // how to configure it for one that is not.
        let (unconfigured, _t) = env(None).await;
        assert_eq!(check_guest_prep(&unconfigured, &linux).await, Ok(()));
        assert_eq!(
            check_guest_prep(&unconfigured, &vm(GuestOs::Windows, GuestPrep::Skip)).await,
            Ok(())
        );
        let err = check_guest_prep(&unconfigured, &windows).await.unwrap_err();
        assert!(
            err.contains("no guest-preparation command is configured"),
            "{err}"
        );
        assert!(
            err.contains("virt-v2v-in-place") && err.contains("{device}"),
            "{err}"
        );
        assert!(err.contains("guest_prep = \"skip\""), "{err}");

        // Configured, but the appliance lacks the tool.
        let (missing, _t) = env(Some(volumed::GuestPrep::new(
            "virt-v2v-in-place-no-such-xyz",
            ["-i", "disk", "{device}"],
        )))
        .await;
        let err = check_guest_prep(&missing, &vm(GuestOs::Linux, GuestPrep::VirtV2vInPlace))
            .await
            .unwrap_err();
        assert!(
            err.contains("`virt-v2v-in-place-no-such-xyz` is not installed"),
            "{err}"
        );
        assert!(err.contains("install virt-v2v"), "{err}");
        assert!(err.contains(APPLIANCE_VM), "{err}");
        assert_eq!(check_guest_prep(&missing, &linux).await, Ok(()));

        // Configured and there (by name on PATH, or by absolute path).
        for program in ["sh", "/bin/sh"] {
            let (present, _t) = env(Some(volumed::GuestPrep::new(program, ["{device}"]))).await;
            assert_eq!(
                check_guest_prep(&present, &windows).await,
                Ok(()),
                "{program}"
            );
        }
    }
}
