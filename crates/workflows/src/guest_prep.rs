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

use async_trait::async_trait;
use engine::{Output, StepContext, StepError, TypedStep};
use serde::{Deserialize, Serialize};
use store::{GuestOs, GuestPrep};
use volumed::Presence;

use crate::common::{appliance_vm_id, ensure_on_appliance, input, protected_vm};
use crate::env::{Env, call, cloud_error, store_error, volume_error};

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

fn why(vm: &store::ProtectedVm) -> String {
    format!(
        "guest_prep = \"{}\", guest_os = \"{}\"",
        vm.spec.guest_prep.as_str(),
        vm.spec.guest_os.as_str()
    )
}

/// The refusal when a VM needs preparation and ferry has no command for it.
fn not_configured(vm: &store::ProtectedVm) -> String {
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
        .volumes
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

/// Runs the configured guest preparation on the boot replica, on the appliance, when
/// the VM's policy asks for it.
pub(crate) struct PrepareGuest;

/// Whether the preparation ran (and the policy that decided), with what it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Prepared {
    pub ran: bool,
    pub policy: String,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub run: Option<PreparationRun>,
}

/// What the command did, when it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreparationRun {
    pub volume_id: String,
    pub device_path: String,
    pub command: Vec<String>,
    pub duration_ms: u64,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

const GUEST_PREP: Output<Prepared> = Output::new("guest-prep");
const STEP: &str = GUEST_PREP.name();

#[async_trait]
impl TypedStep<Env> for PrepareGuest {
    type Output = Prepared;

    fn output(&self) -> Output<Prepared> {
        GUEST_PREP
    }

    async fn run(&self, cx: &StepContext<'_, Env>) -> Result<Self::Output, StepError> {
        let env = cx.ctx;
        let vm = protected_vm(cx).await?;
        if decide(vm.spec.guest_prep, vm.spec.guest_os) == Decision::Skip {
            return Ok(Prepared {
                ran: false,
                policy: why(&vm),
                run: None,
            });
        }
        let prep = env
            .guest_prep
            .as_ref()
            .ok_or_else(|| StepError::Definitive(not_configured(&vm)))?;
        let input = input(cx)?;
        let boot = input.plan.boot();
        let appliance = appliance_vm_id(cx, &vm).await?;
        let outcome = env
            .volumes
            .prepare_guest(
                &call(cx, STEP, &boot.volume_id),
                &appliance,
                &boot.volume_id,
                prep,
            )
            .await
            .map_err(|e| volume_error(&format!("on appliance {appliance}"), e))?;
        let message = format!(
            "guest preparation of boot replica {} ({}): `{}` succeeded in {} ms",
            boot.volume_id,
            outcome.device_path,
            outcome.command.join(" "),
            outcome.duration_ms
        );
        if let Err(e) = env
            .store
            .add_event(&cx.run.id, "info", Some(STEP), &message, None)
            .await
        {
            tracing::warn!(run = %cx.run.id, error = %e, "cannot record an event");
        }
        Ok(Prepared {
            ran: true,
            policy: why(&vm),
            run: Some(PreparationRun {
                volume_id: outcome.volume_id,
                device_path: outcome.device_path,
                command: outcome.command,
                duration_ms: outcome.duration_ms,
                stdout_tail: outcome.stdout_tail,
                stderr_tail: outcome.stderr_tail,
            }),
        })
    }

    /// Puts the boot replica's content back: the command rewrote it (in part, if it
    /// failed), and the steps around this one do not undo that. The snapshot step's
    /// undo only *deletes* the snapshots, and the reverts that do exist — cleanup's
    /// and the attach step's undo — run only on the replicas' way back from a target
    /// VM, which an unwind from here (a failed preparation, a failed create-vm) never
    /// takes. So this undo reverts the boot replica to the run's snapshot itself, while
    /// that snapshot still exists (the snapshot step's undo runs after this one).
    /// CloudStack reverts only a detached volume (or one of a stopped VM, and the
    /// appliance keeps running), so the replica leaves the appliance for the revert
    /// and comes back, its device path found again.
    ///
    /// Run twice, it reverts once: the revert is recorded as a run event, and a second
    /// run that finds it only makes sure the replica is back on the appliance (the
    /// replica is on the appliance both before and after, so CloudStack's state alone
    /// cannot tell a done revert from one still to do).
    ///
    /// Nothing is done when the policy skips the VM, or when no command is configured
    /// and the action recorded nothing (then it cannot have run).
    async fn undo(
        &self,
        cx: &StepContext<'_, Env>,
        output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        let env = cx.ctx;
        let vm = protected_vm(cx).await?;
        let ran = match output {
            Some(out) => out.ran,
            None => {
                decide(vm.spec.guest_prep, vm.spec.guest_os) == Decision::Run
                    && env.guest_prep.is_some()
            }
        };
        if !ran {
            return Ok(());
        }
        let input = input(cx)?;
        let boot = input.plan.boot();
        let appliance = appliance_vm_id(cx, &vm).await?;
        if !reverted_already(cx).await? {
            revert_boot_replica(cx, &input, &appliance).await?;
        }
        ensure_on_appliance(cx, UNDO, &boot.volume_id, &appliance).await
    }
}

const UNDO: &str = "undo-guest-prep";

/// The start of the event that records the undo's revert.
const REVERTED: &str = "reverted the boot replica after guest preparation:";

async fn reverted_already(cx: &StepContext<'_, Env>) -> Result<bool, StepError> {
    Ok(cx
        .ctx
        .store
        .events(&cx.run.id)
        .await
        .map_err(|e| store_error("reading the run's events", e))?
        .iter()
        .any(|e| e.step.as_deref() == Some(UNDO) && e.message.starts_with(REVERTED)))
}

/// Detaches the boot replica from the appliance (if it is there), reverts it to the
/// run's snapshot and records that it did.
async fn revert_boot_replica(
    cx: &StepContext<'_, Env>,
    input: &crate::common::RunInput,
    appliance: &str,
) -> Result<(), StepError> {
    let env = cx.ctx;
    let boot = input.plan.boot();
    let name = crate::test_failover::snapshot_name(&input.target_name, boot.device_key);
    let snapshot = env
        .cloud
        .list_snapshots(Some(&boot.volume_id), None)
        .await
        .map_err(|e| cloud_error("listing snapshots", e))?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            StepError::Definitive(format!(
                "cannot revert boot replica {} after guest preparation: its snapshot {name} is gone, so it may hold \
                 the preparation's changes; resynchronise it from the source, then abandon this run",
                boot.volume_id
            ))
        })?;
    let volume = env
        .cloud
        .get_volume(&boot.volume_id)
        .await
        .map_err(|e| cloud_error("looking up the boot replica", e))?
        .ok_or_else(|| {
            StepError::Definitive(format!(
                "boot replica {} no longer exists in CloudStack",
                boot.volume_id
            ))
        })?;
    match volume.virtualmachineid.as_deref() {
        None => {}
        Some(on) if on == appliance => {
            // Until the revert is recorded, nothing puts the replica back on the
            // appliance, so this key is never asked for a second detach.
            env.volumes
                .detach(
                    &call(cx, UNDO, &format!("detach/{}", boot.volume_id)),
                    &boot.volume_id,
                )
                .await
                .map_err(|e| volume_error("detaching the boot replica to revert it", e))?;
            env.volumes
                .wait_device(
                    appliance,
                    &boot.volume_id,
                    Presence::Disappears,
                    env.device_timeout,
                )
                .await
                .map_err(|e| {
                    volume_error("waiting for the boot replica to leave the appliance", e)
                })?;
            env.store
                .record_attachment(
                    &boot.volume_id,
                    &store::Attachment {
                        vm_id: None,
                        device_id: None,
                        device_path: None,
                        seen_at: None,
                    },
                )
                .await
                .map_err(|e| store_error("recording the detach", e))?;
        }
        Some(other) => {
            // The later steps' undos bring it back to the appliance before this one
            // runs; anywhere else, someone else has it.
            return Err(StepError::Definitive(format!(
                "boot replica {} is attached to VM {other}, neither the appliance nor detached: \
                 cannot revert the guest preparation",
                boot.volume_id
            )));
        }
    }
    env.volumes
        .revert(
            &call(cx, UNDO, &format!("revert/{}", snapshot.id)),
            &snapshot.id,
        )
        .await
        .map_err(|e| {
            volume_error(
                &format!(
                    "reverting boot replica {} to {}",
                    boot.volume_id, snapshot.id
                ),
                e,
            )
        })?;
    env.store
        .add_event(
            &cx.run.id,
            "info",
            Some(UNDO),
            &format!(
                "{REVERTED} {} to snapshot {} ({name})",
                boot.volume_id, snapshot.id
            ),
            None,
        )
        .await
        .map_err(|e| store_error("recording the revert", e))
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
            target: crate::Target {
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
