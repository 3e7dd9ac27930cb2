//! Whether a wait is for a disk to appear or to disappear.
//!
//! Its own module because two modules name it that must not name each other both
//! ways: the device scan ([`crate::device`]) waits with it and fails with
//! [`crate::Error::DeviceTimeout`], and that error says which wait timed out.

use serde::{Deserialize, Serialize};

/// Whether to wait for a disk to appear (after attach) or disappear (after detach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Appears,
    Disappears,
}

impl std::fmt::Display for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Presence::Appears => "appear",
            Presence::Disappears => "disappear",
        })
    }
}
