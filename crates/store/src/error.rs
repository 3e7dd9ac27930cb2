//! What can go wrong in the store, in the store's own words. Callers tell failures
//! apart by [`StoreError`]'s kinds, never by the database driver's error type: the
//! driver (sqlx) is the store's business, so the classification — a constraint that
//! refused a write, a database that cannot be reached, a pool with no free connection
//! — is made once, here, when a driver error becomes a [`StoreError`].
//!
//! It also holds what a write that changed no row means ([`fenced`], [`found`]), so
//! that every table family answers "nothing was there" and "another worker took over"
//! the same way.

use crate::backend::Backend;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "`{url}` is not a database URL: use a SQLite path (sqlite:///var/lib/ferry/ferry.db) or postgres://user@host/db"
    )]
    BadUrl { url: String },
    #[error("cannot open the database {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot bring the {backend:?} schema up to date")]
    Migrate {
        backend: Backend,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A database constraint refused the write; `constraint` names it (the same name on
    /// SQLite and PostgreSQL).
    #[error("refused by the database constraint {constraint}: {message}")]
    Constraint { constraint: String, message: String },
    #[error("no {what} `{key}`")]
    NotFound { what: &'static str, key: String },
    /// A request the store refuses for a reason stated in words.
    #[error("{0}")]
    Refused(String),
    /// A write by a worker whose lease on the run was taken over (its generation is no
    /// longer the run's): it must stop.
    #[error(
        "run {run_id} is no longer held at generation {generation}: another worker took it over"
    )]
    Fenced { run_id: String, generation: i64 },
    /// A fencing generation lower than one already seen for the run.
    #[error(
        "stale fencing generation {generation} for run {run_id}: generation {current} has taken over"
    )]
    StaleFence {
        run_id: String,
        generation: i64,
        current: i64,
    },
    #[error("a stored row is not what ferry wrote: {0}")]
    Corrupt(String),
    /// The database cannot be reached now: its connection broke (I/O or TLS) or the
    /// pool was closed. Nothing was done; try again later. (Its message is the same
    /// as [`StoreError::Db`]'s; the source says what happened.)
    #[error("database error")]
    Unavailable(#[source] sqlx::Error),
    /// No connection of the pool came free in time: the database is busy. Nothing
    /// was done; try again later.
    #[error("database error")]
    Busy(#[source] sqlx::Error),
    /// Any other failure of the database.
    #[error("database error")]
    Db(#[source] sqlx::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db)
                if matches!(
                    db.kind(),
                    sqlx::error::ErrorKind::UniqueViolation
                        | sqlx::error::ErrorKind::ForeignKeyViolation
                        | sqlx::error::ErrorKind::CheckViolation
                        | sqlx::error::ErrorKind::NotNullViolation
                ) =>
            {
                StoreError::Constraint {
                    constraint: constraint_name(db.constraint(), db.message()),
                    message: db.message().to_string(),
                }
            }
            sqlx::Error::PoolTimedOut => StoreError::Busy(e),
            sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Db(e),
        }
    }
}

/// PostgreSQL names the violated constraint; SQLite names the columns ("UNIQUE
/// constraint failed: disks.vm_id, disks.device_key"). Map SQLite's to PostgreSQL's
/// names so callers and tests see one vocabulary.
fn constraint_name(named: Option<&str>, message: &str) -> String {
    if let Some(name) = named {
        return name.to_string();
    }
    let columns = message
        .split_once("constraint failed: ")
        .map(|(_, rest)| rest.trim())
        .unwrap_or(message);
    let known = [
        ("appliances.name", "appliances_pkey"),
        ("appliances.vm_id", "appliances_vm_id_key"),
        ("protected_vms.id", "protected_vms_pkey"),
        ("protected_vms.name", "protected_vms_name_key"),
        ("nics.vm_id, nics.position", "nics_pkey"),
        ("nics.mac", "nics_mac_key"),
        (
            "disks.vm_id, disks.controller_type, disks.bus, disks.unit",
            "disks_identity",
        ),
        ("disks.vm_id, disks.device_key", "disks_device_key"),
        ("disks.vm_id", "disks_one_boot_per_vm"),
        ("replica_volumes.volume_id", "replica_volumes_pkey"),
        ("replica_volumes.disk_id", "replica_volumes_disk_id_key"),
        (
            "replica_volumes.attached_vm_id, replica_volumes.device_path",
            "replica_volumes_one_path",
        ),
        (
            "volume_ops.idempotency_key",
            "volume_ops_idempotency_key_key",
        ),
        ("runs.vm_id", "runs_one_active_per_vm"),
        ("created_volumes.volume_id", "created_volumes_pkey"),
        ("plans.name", "plans_one_name"),
        ("plan_vms.plan_id, plan_vms.vm_id", "plan_vms_pkey"),
        ("plan_runs.plan_id", "plan_runs_one_active_per_plan"),
        (
            "plan_run_vms.plan_run_id, plan_run_vms.vm_id",
            "plan_run_vms_pkey",
        ),
    ];
    known
        .iter()
        .find(|(cols, _)| *cols == columns)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| columns.to_string())
}

/// A write guarded by the run's generation that changed no row: the run is no longer
/// held at `generation`.
pub(crate) fn fenced(rows: u64, run_id: impl std::fmt::Display, generation: i64) -> Result<()> {
    if rows == 0 {
        return Err(StoreError::Fenced {
            run_id: run_id.to_string(),
            generation,
        });
    }
    Ok(())
}

/// A write to one row by its key that changed no row: there is no `what` `key`.
pub(crate) fn found(rows: u64, what: &'static str, key: impl std::fmt::Display) -> Result<()> {
    if rows == 0 {
        return Err(StoreError::NotFound {
            what,
            key: key.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_constraint_messages_map_to_postgres_names() {
        assert_eq!(
            constraint_name(None, "UNIQUE constraint failed: runs.vm_id"),
            "runs_one_active_per_vm"
        );
        assert_eq!(
            constraint_name(Some("disks_identity"), "whatever"),
            "disks_identity"
        );
    }

    #[test]
    fn unreachable_and_busy_databases_are_their_own_kinds() {
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Busy(_)
        ));
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolClosed),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(sqlx::Error::Io(std::io::Error::other("reset"))),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(sqlx::Error::RowNotFound),
            StoreError::Db(_)
        ));
    }
}
