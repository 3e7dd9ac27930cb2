//! Registration: turn a [`VmDefinition`] into a protected VM in the store — or refuse
//! it, with every problem named by its field, *before* anything is written. What is
//! checked is [`crate::rules`] (the file by itself) and [`crate::checks`] (the file
//! against ferry's store and CloudStack), the same as for an update.

use cloudstack::Client;
use store::{ProtectedVm, Store, StoreError};

use crate::checks::{Refusal, check, raced};
use crate::definition::VmDefinition;
use crate::problem::{Problem, list};
use crate::rules::Limits;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the VM definition was refused and nothing was registered:\n{}", list(.0))]
    Invalid(Vec<Problem>),
    #[error("cannot check the definition against CloudStack")]
    CloudStack(#[from] cloudstack::Error),
    #[error("cannot read or write ferry's store")]
    Store(#[from] StoreError),
}

impl RegisterError {
    /// The problems, if the definition itself was refused.
    pub fn problems(&self) -> &[Problem] {
        match self {
            RegisterError::Invalid(p) => p,
            _ => &[],
        }
    }
}

impl From<Refusal> for RegisterError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(problems) => RegisterError::Invalid(problems),
            Refusal::CloudStack(e) => RegisterError::CloudStack(e),
            Refusal::Store(e) => RegisterError::Store(e),
        }
    }
}

/// Validates `def` against the file's own rules, ferry's store and CloudStack, and
/// registers it if — and only if — nothing is wrong.
pub async fn register(
    store: &Store,
    cloud: &Client,
    def: &VmDefinition,
    limits: Limits,
) -> Result<ProtectedVm, RegisterError> {
    let checked = check(store, cloud, def, limits, None).await?;
    match store.register_vm(&checked.vm, &checked.seen).await {
        Ok(vm) => {
            tracing::info!(vm = %vm.name, disks = vm.disks.len(), "registered");
            Ok(vm)
        }
        // A race with another registration, caught by the database.
        Err(StoreError::Constraint {
            constraint,
            message,
        }) => Err(RegisterError::Invalid(vec![raced(&constraint, &message)])),
        Err(e) => Err(e.into()),
    }
}
