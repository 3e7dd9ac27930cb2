//! What is wrong with a gate definition, one field at a time.
//!
//! The same shape as the inventory's `Problem` (a field path and what to do), kept
//! here rather than shared: the inventory depends on CloudStack and the store, and a
//! readiness gate needs neither. A recovery plan that holds gates adds these to its
//! own report as they are.

use serde::{Deserialize, Serialize};

/// One thing wrong with a definition: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The field, as a path into the file (`gates[1].port`).
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
