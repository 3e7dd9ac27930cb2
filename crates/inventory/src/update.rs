//! Updates at rest: change a registered VM's definition — its spec, NICs, disks and
//! replica volumes — and keep the VM. Removing it and adding it again would make a new
//! VM (a new id) and leave the old one's runs behind under `NAME (removed)`; an update
//! keeps its id, state, runs and events, and adds itself to that history.
//!
//! Only at rest: `ready_for_failover` with no active run. A run in flight, a stuck one
//! and a failed-over VM all depend on the disks as registered (the run's device plan,
//! the replicas on the target VM, what an undo puts back where), so changing them
//! underneath would break what that run does or undoes. The store checks it again in
//! the statement that writes, so a run that started in between is not missed.
//!
//! The file passes the same checks as a registration ([`crate::checks`]), except that
//! what the VM holds itself is its own to keep: its MACs, its replicas (which may
//! move between its disks) and their serials. Its name is not the file's to change:
//! the name is the VM's identity. What would change is reported field by field
//! ([`crate::changes`]); an update that changes nothing writes nothing, and a dry run
//! reports without writing.

use cloudstack::Client;
use store::{ProtectedVm, Run, Store, StoreError, VmState};

use crate::changes::{self, Change};
use crate::checks::{Refusal, check, raced};
use crate::definition::VmDefinition;
use crate::problem::{Problem, list};
use crate::rules::Limits;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("no protected VM named {0} is registered: register it with `ferry vm add FILE`")]
    NotRegistered(String),
    /// The VM is not at rest: a run of it is active, or it is not `ready_for_failover`.
    #[error("{}", not_at_rest(.name, *.state, .active_run.as_deref()))]
    NotAtRest {
        name: String,
        state: VmState,
        /// The run that holds the VM, if one does.
        active_run: Option<Box<Run>>,
    },
    #[error("the VM definition was refused and nothing was changed:\n{}", list(.0))]
    Invalid(Vec<Problem>),
    /// The store refused the write, in its words: the VM stopped being at rest
    /// between the checks and the write.
    #[error("{0}")]
    Refused(String),
    #[error("cannot check the definition against CloudStack")]
    CloudStack(#[source] cloudstack::Error),
    #[error("cannot read or write ferry's store")]
    Store(#[from] StoreError),
}

fn not_at_rest(name: &str, state: VmState, run: Option<&Run>) -> String {
    match run {
        Some(run) => format!(
            "{name} cannot be updated while run {id} ({workflow}) is {run_state}: a definition \
             changes only at rest (ready_for_failover, no active run); wait for the run to end, \
             or cancel it (`ferry run cancel {id}`), or retry or abandon it if it is stuck",
            id = run.id,
            workflow = run.workflow,
            run_state = run.state
        ),
        None => format!(
            "{name} is {state}, and a definition changes only at rest (ready_for_failover, no active run)"
        ),
    }
}

impl From<Refusal> for UpdateError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(problems) => UpdateError::Invalid(problems),
            Refusal::CloudStack(e) => UpdateError::CloudStack(e),
            Refusal::Store(e) => UpdateError::Store(e),
        }
    }
}

/// What an update did, or with a dry run would do.
#[derive(Debug, Clone)]
pub struct Updated {
    /// The VM as it is now: updated if `written`, else as it was.
    pub vm: ProtectedVm,
    /// What the definition changes; empty when it is the VM's as registered.
    pub changes: Vec<Change>,
    /// Whether the changes were written: there were some, and it was no dry run.
    pub written: bool,
}

/// Validates `def` as a new definition of the registered VM `name` and, unless it
/// changes nothing or `dry_run` is set, writes it — keeping the VM — and records what
/// changed in the VM's history.
pub async fn update(
    store: &Store,
    cloud: &Client,
    name: &str,
    def: &VmDefinition,
    limits: Limits,
    dry_run: bool,
) -> Result<Updated, UpdateError> {
    let vm = at_rest(store, name).await?;
    let checked = check(store, cloud, def, limits, Some(&vm)).await?;
    let changes = changes::between(&vm, &checked.vm);
    if changes.is_empty() || dry_run {
        return Ok(Updated {
            vm,
            changes,
            written: false,
        });
    }
    let record = serde_json::to_string(&changes).expect("changes serialize");
    let updated = match store
        .update_vm(&vm.id, vm.version, &checked.vm, &checked.seen, &record)
        .await
    {
        Ok(updated) => updated,
        // Another registration or update took a MAC or replica since the checks.
        Err(StoreError::Constraint {
            constraint,
            message,
        }) => return Err(UpdateError::Invalid(vec![raced(&constraint, &message)])),
        Err(StoreError::Refused(message)) => return Err(UpdateError::Refused(message)),
        Err(StoreError::NotFound { .. }) => return Err(UpdateError::NotRegistered(name.into())),
        Err(e) => return Err(e.into()),
    };
    let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
    tracing::info!(
        vm = %updated.name,
        changes = %fields.join(", "),
        "updated a protected VM at rest"
    );
    Ok(Updated {
        vm: updated,
        changes,
        written: true,
    })
}

/// The registered VM `name`, if it is at rest.
async fn at_rest(store: &Store, name: &str) -> Result<ProtectedVm, UpdateError> {
    let vm = store
        .vm(name)
        .await?
        .ok_or_else(|| UpdateError::NotRegistered(name.to_string()))?;
    let active_run = store.active_run(&vm.id).await?.map(Box::new);
    if active_run.is_some() || vm.state != VmState::ReadyForFailover {
        return Err(UpdateError::NotAtRest {
            name: vm.name,
            state: vm.state,
            active_run,
        });
    }
    Ok(vm)
}
