//! One operation at a time per VM: the per-key locks the operation pipeline takes,
//! and the count that lets a test see that they hold.
//!
//! CloudStack runs the jobs of one VM one at a time anyway; serializing ours too
//! keeps auto-assigned device ids in request order, lets an operation of unknown
//! outcome be resolved by looking at the VM without another of our own jobs changing
//! it underneath, and makes hot-plugged disks appear in the appliance one at a time
//! (see the crate documentation). Its own module because it is a mechanism the
//! pipeline ([`crate::Local`]) uses, with rules of its own (which key an operation
//! takes), and nothing in it knows what an operation does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

use crate::journal::{OpKind, OpRecord};

/// The per-key locks, and how many operations are running under each key.
#[derive(Default)]
pub(crate) struct Serialization {
    /// Serialization key (`vm:<id>`, `volume:<id>`, `snapshot:<id>`) → its lock.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    concurrency: Mutex<Concurrency>,
}

#[derive(Default)]
struct Concurrency {
    running: HashMap<String, u32>,
    max: u32,
}

/// An operation's turn under its serialization key: held while it runs.
pub(crate) struct Turn<'a> {
    // Dropped in this order: the count first, then the lock.
    _running: Running<'a>,
    _serialized: OwnedMutexGuard<()>,
}

/// Counts an operation as running under its serialization key while alive.
struct Running<'a> {
    serialization: &'a Serialization,
    key: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut c = lock(&self.serialization.concurrency);
        if let Some(n) = c.running.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The serialization key of an operation: its VM, else its volume, else its snapshot.
///
/// Guest preparation is serialized per volume, not per appliance: it can run for an
/// hour, and the appliance's other disks (other VMs' failovers) must not wait for it.
/// Nothing else is done to that volume meanwhile, because its one caller — the
/// failover that owns the VM — does one thing at a time.
fn lock_key(op: &OpRecord) -> String {
    if op.kind == OpKind::GuestPrep
        && let Some(v) = &op.volume_id
    {
        format!("volume:{v}")
    } else if let Some(vm) = &op.vm_id {
        format!("vm:{vm}")
    } else if let Some(v) = &op.volume_id {
        format!("volume:{v}")
    } else if let Some(s) = &op.snapshot_id {
        format!("snapshot:{s}")
    } else {
        format!("op:{}", op.id)
    }
}

impl Serialization {
    /// Waits until no other operation runs under `op`'s key, and counts it as running
    /// there until the turn is dropped.
    pub(crate) async fn turn(&self, op: &OpRecord) -> Turn<'_> {
        let key = lock_key(op);
        let serial = self.serialization_lock(&key);
        let serialized = serial.lock_owned().await;
        Turn {
            _running: self.enter(&key),
            _serialized: serialized,
        }
    }

    /// The most operations ever running at once under one key.
    pub(crate) fn max_running(&self) -> u32 {
        lock(&self.concurrency).max
    }

    fn enter(&self, key: &str) -> Running<'_> {
        let mut c = lock(&self.concurrency);
        let n = c.running.entry(key.to_string()).or_default();
        *n += 1;
        let now = *n;
        c.max = c.max.max(now);
        Running {
            serialization: self,
            key: key.to_string(),
        }
    }

    fn serialization_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        // TODO-robustness: entries are never removed; one small mutex per VM, volume
        // and snapshot ever touched by this process.
        lock(&self.locks)
            .entry(key.to_string())
            .or_default()
            .clone()
    }
}
