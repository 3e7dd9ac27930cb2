//! Rows and values: how ferry's model types are read back from the rows the table
//! families write, and how times and ids are made for them.
//!
//! Every mapping reads a field from the column of the same name (or the one named
//! after `as`), in the form the schema stores that field's type — the [`Column`]
//! trait says it once per type: integers and text as they are, booleans as 0/1, the
//! text enums of [`crate::model`] by their `as_str` form. So a mapping is the list of
//! its fields, and the types decide how each is read; the table families only say
//! which rows to read.

use ids::{JobId, NetworkId, ProtectedVmId, RunId, SnapshotId, VmId, VolumeId, ZoneId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StoreError};
use crate::model::{
    Appliance, Attachment, Controller, Disk, DiskRecord, Divergence, Event, Firmware, GuestOs,
    GuestPrep, HookOutcome, HookPoint, Nic, OpState, PlanRunState, PlanVmState, ProtectedVm, Run,
    RunState, StepRecord, StepState, VmSpec, VmState, VmUpdate, VolumeOp, WorkerProcess, Workflow,
};
use crate::pool::Store;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new row id. Version 7 UUIDs grow with time (and within one millisecond, within a
/// process), so ordering by (created_at, id) lists rows in the order they were made.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A type as one column stores it. Integers and times are 64-bit and booleans 0/1,
/// the types sqlx's `Any` driver carries alike on both databases.
pub(crate) trait Column: Sized {
    fn column(row: &AnyRow, name: &str) -> Result<Self>;
}

/// Reads the column `name` as a `T`.
pub(crate) fn column<T: Column>(row: &AnyRow, name: &str) -> Result<T> {
    T::column(row, name)
}

/// Types the driver decodes as they are.
macro_rules! decoded {
    ($($ty:ty),+) => {
        $(impl Column for $ty {
            fn column(row: &AnyRow, name: &str) -> Result<Self> {
                Ok(row.try_get(name)?)
            }
        })+
    };
}
decoded!(String, Option<String>, i64, Option<i64>);

/// The ids, stored as their text.
macro_rules! id_text {
    ($($ty:ty),+) => {
        $(impl Column for $ty {
            fn column(row: &AnyRow, name: &str) -> Result<Self> {
                Ok(<$ty>::new(row.try_get::<String, _>(name)?))
            }
        }
        impl Column for Option<$ty> {
            fn column(row: &AnyRow, name: &str) -> Result<Self> {
                Ok(row.try_get::<Option<String>, _>(name)?.map(<$ty>::new))
            }
        })+
    };
}
id_text!(
    JobId,
    NetworkId,
    ProtectedVmId,
    RunId,
    SnapshotId,
    VmId,
    VolumeId,
    ZoneId
);

/// An optional id as the text a statement binds.
pub(crate) fn text<T: AsRef<str>>(id: &Option<T>) -> Option<&str> {
    id.as_ref().map(AsRef::as_ref)
}

impl Column for bool {
    fn column(row: &AnyRow, name: &str) -> Result<Self> {
        Ok(row.try_get::<i64, _>(name)? == 1)
    }
}

/// The text enums, stored in their `as_str` form; anything else is a corrupt row.
macro_rules! text {
    ($($ty:ty),+) => {
        $(impl Column for $ty {
            fn column(row: &AnyRow, name: &str) -> Result<Self> {
                let text: String = row.try_get(name)?;
                text.parse()
                    .map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
            }
        })+
    };
}
text!(
    Firmware,
    GuestOs,
    GuestPrep,
    Controller,
    VmState,
    Workflow,
    RunState,
    StepState,
    OpState,
    PlanRunState,
    PlanVmState,
    HookPoint,
    HookOutcome
);

/// Builds the struct `$ty` from `$row`: each field listed before `;` from the column of
/// its name (or the one after `as`), as [`Column`] reads its type; the fields after
/// `;` are given (by name, or `field: expression`).
macro_rules! from_row {
    ($row:expr => $ty:ident {
        $($field:ident $(as $name:literal)?),+ $(,)?
        $(; $($given:ident $(: $value:expr)?),+ $(,)?)?
    }) => {
        $ty {
            $($field: column($row, from_row!(@name $field $($name)?))?,)+
            $($($given $(: $value)?,)+)?
        }
    };
    (@name $field:ident $name:literal) => { $name };
    (@name $field:ident) => { stringify!($field) };
}

/// The `workers` column (names separated by commas, in the order they took the lease)
/// as a list.
pub(crate) fn worker_list(text: Option<String>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// A model type read from one row of its table.
pub(crate) trait FromRow: Sized {
    fn from_row(row: &AnyRow) -> Result<Self>;
}

/// A statement with its parameters bound, ready to send.
pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Sending a query and reading what it selects: the same for every table.
impl Store {
    /// The row `query` selects, if any, as a `T`.
    pub(crate) async fn fetch_optional<T: FromRow>(&self, query: Query<'_>) -> Result<Option<T>> {
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(T::from_row).transpose()
    }

    /// The rows `query` selects, as `T`s.
    pub(crate) async fn fetch_all<T: FromRow>(&self, query: Query<'_>) -> Result<Vec<T>> {
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(T::from_row).collect()
    }

    /// The column `name` of every row `query` selects, e.g. the ids of some rows.
    pub(crate) async fn fetch_column<T: Column>(
        &self,
        query: Query<'_>,
        name: &str,
    ) -> Result<Vec<T>> {
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(|row| column(row, name)).collect()
    }
}

impl FromRow for Appliance {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => Appliance { name, vm_id, zone_id, volumed_url, sysfs_root }))
    }
}

impl FromRow for Nic {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => Nic {
            position, mac, source_network, test_network_id, test_ip, production_network_id,
            production_ip,
        }))
    }
}

/// From a row of `disks` joined with its `replica_volumes` row.
impl FromRow for DiskRecord {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => DiskRecord { id;
            disk: from_row!(r => Disk {
                device_key, controller as "controller_type", bus, unit, capacity_bytes, label,
                is_boot, boot_order, replica_volume_id as "volume_id",
            }),
            attachment: from_row!(r => Attachment {
                vm_id as "attached_vm_id", device_id, device_path, seen_at,
            }),
            diverged: match column::<Option<i64>>(r, "diverged_at")? {
                Some(at) => Some(Divergence {
                    at,
                    reason: column::<Option<String>>(r, "diverged_reason")?.unwrap_or_default(),
                    run_id: column(r, "diverged_run_id")?,
                }),
                None => None,
            },
            resynced_at: column(r, "resynced_at")?,
        }))
    }
}

/// A protected VM from its `protected_vms` row and its NICs and disks, read apart.
pub(crate) fn protected_vm(
    r: &AnyRow,
    nics: Vec<Nic>,
    disks: Vec<DiskRecord>,
) -> Result<ProtectedVm> {
    // A removed VM's `name` is a tombstone; the name it had is kept apart.
    let removed_name: Option<String> = column(r, "removed_name")?;
    Ok(from_row!(r => ProtectedVm {
        id, source_id, appliance, state, target_vm_id, created_at, removed_at, version;
        name: match removed_name {
            Some(name) => name,
            None => column(r, "name")?,
        },
        spec: from_row!(r => VmSpec {
            vcpu, memory_mb, cpu_speed_mhz, firmware, secure_boot, guest_os, guest_prep,
        }),
        nics,
        disks,
    }))
}

impl FromRow for Run {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => Run {
            id, vm_id, workflow, mode, state, error, generation, cause, retries,
            cancel_requested, lease_owner, lease_expires_at, plan, created_at, updated_at,
            finished_at, waiting_since, waiting_for, requested_by;
            workers: worker_list(column(r, "workers")?),
        }))
    }
}

impl FromRow for StepRecord {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => StepRecord {
            position, name, state, attempts, output, error, started_at, finished_at,
            undo_started_at, undo_finished_at,
        }))
    }
}

impl FromRow for WorkerProcess {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => WorkerProcess { name, host, pid, started_at, heartbeat_at }))
    }
}

impl FromRow for Event {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => Event { id, at, level, step, message, fields }))
    }
}

impl FromRow for VmUpdate {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => VmUpdate { id, at, changes }))
    }
}

impl FromRow for VolumeOp {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(from_row!(r => VolumeOp {
            id, idempotency_key, kind, vm_id, volume_id, snapshot_id, request, state, job_id,
            entity_id, result, error, run_id, created_at, updated_at,
        }))
    }
}
