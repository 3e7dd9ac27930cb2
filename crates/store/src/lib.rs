//! ferry's store: the inventory (appliances, protected VMs, disks, replica volumes),
//! the volume daemon's operation journal, and the engine's runs, steps, events,
//! leases and fences — one schema on SQLite (the default: a file created on first
//! start) and on PostgreSQL (for several engine processes sharing work).
//!
//! The rules that keep failovers honest are constraints in the database, not only in
//! code, so that no bug or race in a caller can break them: one replica volume per
//! disk and one disk per replica volume, one boot disk per VM, a disk's identity
//! (controller, bus, unit, key) unique within its VM, unique VM names and MACs, and
//! at most one active run per protected VM (a partial unique index). A violated
//! constraint comes back as [`StoreError::Constraint`] with the same constraint name
//! on both databases.
//!
//! Both databases are reached through sqlx's `Any` driver with the same SQL (`$1`
//! placeholders, `ON CONFLICT`, partial indexes — all of which both support), so the
//! one conformance suite in `tests/` proves the same code on both. Integers are
//! 64-bit, booleans 0/1, times unix milliseconds: the types `Any` carries alike.
//!
//! Architecture invariant: the store knows nothing of CloudStack or of workflows; it
//! keeps what it is told and refuses what would break a constraint.

mod model;
pub mod testing;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use model::*;
/// The database driver, for callers that tell its errors apart.
pub use sqlx;

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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
    #[error("database error")]
    Db(#[source] sqlx::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let kind = db.kind();
            if matches!(
                kind,
                sqlx::error::ErrorKind::UniqueViolation
                    | sqlx::error::ErrorKind::ForeignKeyViolation
                    | sqlx::error::ErrorKind::CheckViolation
                    | sqlx::error::ErrorKind::NotNullViolation
            ) {
                return StoreError::Constraint {
                    constraint: constraint_name(db.constraint(), db.message()),
                    message: db.message().to_string(),
                };
            }
        }
        StoreError::Db(e)
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
    ];
    known
        .iter()
        .find(|(cols, _)| *cols == columns)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| columns.to_string())
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new row id. Version 7 UUIDs grow with time (and within one millisecond, within a
/// process), so ordering by (created_at, id) lists rows in the order they were made.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn parse<T: std::str::FromStr<Err = String>>(row: &AnyRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// The store. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`:
    /// `sqlite://PATH`, `sqlite::memory:`, or `postgres://…`. A plain path is taken as
    /// a SQLite file.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalize_url(url)?;
        let mut options = AnyPoolOptions::new();
        if backend == Backend::Sqlite {
            // SQLite has one writer; a small pool and a busy timeout keep writers
            // queueing instead of failing with SQLITE_BUSY.
            options = options.max_connections(4).after_connect(|conn, _meta| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA foreign_keys = ON",
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(&url),
                source,
            })?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { backend, source })?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- appliances -------------------------------------------------------------

    /// Adds an appliance, or updates the one with the same name.
    pub async fn upsert_appliance(&self, a: &Appliance) -> Result<()> {
        sqlx::query(
            "INSERT INTO appliances (name, vm_id, zone_id, volumed_url, sysfs_root, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET vm_id = excluded.vm_id, zone_id = excluded.zone_id,
               volumed_url = excluded.volumed_url, sysfs_root = excluded.sysfs_root",
        )
        .bind(&a.name)
        .bind(&a.vm_id)
        .bind(&a.zone_id)
        .bind(&a.volumed_url)
        .bind(&a.sysfs_root)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn appliance(&self, name: &str) -> Result<Option<Appliance>> {
        let row = sqlx::query("SELECT * FROM appliances WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| appliance_from(&r)).transpose()
    }

    pub async fn appliances(&self) -> Result<Vec<Appliance>> {
        let rows = sqlx::query("SELECT * FROM appliances ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(appliance_from).collect()
    }

    // ---- protected VMs ----------------------------------------------------------

    /// Writes a protected VM with its NICs, disks and replica volumes in one
    /// transaction; `seen` gives where each replica volume was observed at
    /// registration (volume id → attachment). All or nothing.
    pub async fn register_vm(
        &self,
        vm: &NewVm,
        seen: &[(String, Attachment)],
    ) -> Result<ProtectedVm> {
        let id = new_id();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO protected_vms (id, name, source_id, appliance, vcpu, memory_mb, cpu_speed_mhz,
               firmware, secure_boot, guest_os, guest_prep, state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&id)
        .bind(&vm.name)
        .bind(&vm.source_id)
        .bind(&vm.appliance)
        .bind(vm.spec.vcpu)
        .bind(vm.spec.memory_mb)
        .bind(vm.spec.cpu_speed_mhz)
        .bind(vm.spec.firmware.as_str())
        .bind(vm.spec.secure_boot as i64)
        .bind(vm.spec.guest_os.as_str())
        .bind(vm.spec.guest_prep.as_str())
        .bind(VmState::ReadyForFailover.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for nic in &vm.nics {
            sqlx::query(
                "INSERT INTO nics (vm_id, position, mac, source_network, test_network_id, test_ip,
                   production_network_id, production_ip)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&id)
            .bind(nic.position)
            .bind(nic.mac.to_lowercase())
            .bind(&nic.source_network)
            .bind(&nic.test_network_id)
            .bind(&nic.test_ip)
            .bind(&nic.production_network_id)
            .bind(&nic.production_ip)
            .execute(&mut *tx)
            .await?;
        }
        for disk in &vm.disks {
            let disk_id = new_id();
            sqlx::query(
                "INSERT INTO disks (id, vm_id, device_key, controller_type, bus, unit, capacity_bytes,
                   label, is_boot, boot_order)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&disk_id)
            .bind(&id)
            .bind(disk.device_key)
            .bind(disk.controller.as_str())
            .bind(disk.bus)
            .bind(disk.unit)
            .bind(disk.capacity_bytes)
            .bind(&disk.label)
            .bind(disk.is_boot as i64)
            .bind(disk.boot_order)
            .execute(&mut *tx)
            .await?;
            let attachment = seen
                .iter()
                .find(|(v, _)| *v == disk.replica_volume_id)
                .map(|(_, a)| a.clone())
                .unwrap_or(Attachment {
                    vm_id: None,
                    device_id: None,
                    device_path: None,
                    seen_at: None,
                });
            sqlx::query(
                "INSERT INTO replica_volumes (volume_id, disk_id, expected_size_bytes, attached_vm_id,
                   device_id, device_path, seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&disk.replica_volume_id)
            .bind(&disk_id)
            .bind(disk.capacity_bytes)
            .bind(&attachment.vm_id)
            .bind(attachment.device_id)
            .bind(&attachment.device_path)
            .bind(attachment.seen_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.vm_by_id(&id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("VM {id} vanished after registration")))
    }

    pub async fn vm(&self, name: &str) -> Result<Option<ProtectedVm>> {
        let row = sqlx::query("SELECT * FROM protected_vms WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.load_vm(&r).await?)),
            None => Ok(None),
        }
    }

    pub async fn vm_by_id(&self, id: &str) -> Result<Option<ProtectedVm>> {
        let row = sqlx::query("SELECT * FROM protected_vms WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.load_vm(&r).await?)),
            None => Ok(None),
        }
    }

    pub async fn vms(&self) -> Result<Vec<ProtectedVm>> {
        let rows = sqlx::query("SELECT * FROM protected_vms ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.load_vm(r).await?);
        }
        Ok(out)
    }

    async fn load_vm(&self, r: &AnyRow) -> Result<ProtectedVm> {
        let id: String = r.try_get("id")?;
        let nics = sqlx::query("SELECT * FROM nics WHERE vm_id = $1 ORDER BY position")
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|n| {
                Ok(Nic {
                    position: n.try_get("position")?,
                    mac: n.try_get("mac")?,
                    source_network: n.try_get("source_network")?,
                    test_network_id: n.try_get("test_network_id")?,
                    test_ip: n.try_get("test_ip")?,
                    production_network_id: n.try_get("production_network_id")?,
                    production_ip: n.try_get("production_ip")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let disks = sqlx::query(
            "SELECT d.*, r.volume_id, r.attached_vm_id, r.device_id, r.device_path, r.seen_at
             FROM disks d JOIN replica_volumes r ON r.disk_id = d.id
             WHERE d.vm_id = $1 ORDER BY d.controller_type, d.bus, d.unit",
        )
        .bind(&id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(disk_from)
        .collect::<Result<Vec<_>>>()?;
        Ok(ProtectedVm {
            id,
            name: r.try_get("name")?,
            source_id: r.try_get("source_id")?,
            appliance: r.try_get("appliance")?,
            spec: VmSpec {
                vcpu: r.try_get("vcpu")?,
                memory_mb: r.try_get("memory_mb")?,
                cpu_speed_mhz: r.try_get("cpu_speed_mhz")?,
                firmware: parse(r, "firmware")?,
                secure_boot: r.try_get::<i64, _>("secure_boot")? == 1,
                guest_os: parse(r, "guest_os")?,
                guest_prep: parse(r, "guest_prep")?,
            },
            state: parse(r, "state")?,
            target_vm_id: r.try_get("target_vm_id")?,
            created_at: r.try_get("created_at")?,
            nics,
            disks,
        })
    }

    /// Removes a protected VM from ferry's inventory (not from CloudStack: its
    /// replica volumes stay where they are). Refused while a run is active.
    pub async fn remove_vm(&self, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT id FROM protected_vms WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "protected VM",
                key: name.to_string(),
            })?;
        let id: String = row.try_get("id")?;
        if let Some(run) = sqlx::query(
            "SELECT id, workflow, state FROM runs WHERE vm_id = $1
               AND state IN ('pending', 'running', 'unwinding', 'stuck')",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?
        {
            let run_id: String = run.try_get("id")?;
            let workflow: String = run.try_get("workflow")?;
            let state: String = run.try_get("state")?;
            return Err(StoreError::Refused(format!(
                "cannot remove {name}: run {run_id} ({workflow}) is {state}; wait for it to end, \
                 or cancel it (`ferry run cancel {run_id}`) or abandon it if it is stuck"
            )));
        }
        sqlx::query("DELETE FROM protected_vms WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_vm_state(
        &self,
        vm_id: &str,
        state: VmState,
        target_vm_id: Option<&str>,
    ) -> Result<()> {
        let done =
            sqlx::query("UPDATE protected_vms SET state = $1, target_vm_id = $2 WHERE id = $3")
                .bind(state.as_str())
                .bind(target_vm_id)
                .bind(vm_id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "protected VM",
                key: vm_id.to_string(),
            });
        }
        Ok(())
    }

    // ---- replica volumes --------------------------------------------------------

    /// The protected VM's name and the disk a replica volume belongs to.
    pub async fn replica(&self, volume_id: &str) -> Result<Option<(String, DiskRecord)>> {
        let row = sqlx::query(
            "SELECT v.name AS vm_name, d.*, r.volume_id, r.attached_vm_id, r.device_id, r.device_path, r.seen_at
             FROM replica_volumes r JOIN disks d ON d.id = r.disk_id JOIN protected_vms v ON v.id = d.vm_id
             WHERE r.volume_id = $1",
        )
        .bind(volume_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((r.try_get("vm_name")?, disk_from(&r)?))),
            None => Ok(None),
        }
    }

    pub async fn is_replica(&self, volume_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM replica_volumes WHERE volume_id = $1")
                .bind(volume_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Records where a replica volume was seen. Two volumes on one VM can never share
    /// a device path (constraint `replica_volumes_one_path`).
    pub async fn record_attachment(&self, volume_id: &str, a: &Attachment) -> Result<()> {
        let done = sqlx::query(
            "UPDATE replica_volumes SET attached_vm_id = $1, device_id = $2, device_path = $3, seen_at = $4
             WHERE volume_id = $5",
        )
        .bind(&a.vm_id)
        .bind(a.device_id)
        .bind(&a.device_path)
        .bind(a.seen_at.unwrap_or_else(now_ms))
        .bind(volume_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "replica volume",
                key: volume_id.to_string(),
            });
        }
        Ok(())
    }

    /// The replica volume recorded at `device_path` on `vm_id`, if any.
    pub async fn replica_at_path(&self, vm_id: &str, device_path: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT volume_id FROM replica_volumes WHERE attached_vm_id = $1 AND device_path = $2",
        )
        .bind(vm_id)
        .bind(device_path)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("volume_id")).transpose()?)
    }

    // ---- volumes ferry created --------------------------------------------------

    pub async fn record_created_volume(
        &self,
        volume_id: &str,
        purpose: &str,
        source_snapshot_id: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO created_volumes (volume_id, purpose, source_snapshot_id, run_id, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (volume_id) DO NOTHING",
        )
        .bind(volume_id)
        .bind(purpose)
        .bind(source_snapshot_id)
        .bind(run_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The volumes a run created for `purpose` and has not deleted yet, oldest first.
    pub async fn run_created_volumes(&self, run_id: &str, purpose: &str) -> Result<Vec<String>> {
        sqlx::query(
            "SELECT volume_id FROM created_volumes
             WHERE run_id = $1 AND purpose = $2 AND deleted_at IS NULL
             ORDER BY created_at, volume_id",
        )
        .bind(run_id)
        .bind(purpose)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok(r.try_get("volume_id")?))
        .collect()
    }

    /// Whether ferry created this volume and has not deleted it yet.
    pub async fn is_created_volume(&self, volume_id: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM created_volumes WHERE volume_id = $1 AND deleted_at IS NULL",
        )
        .bind(volume_id)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    pub async fn mark_created_volume_deleted(&self, volume_id: &str) -> Result<()> {
        sqlx::query("UPDATE created_volumes SET deleted_at = $1 WHERE volume_id = $2 AND deleted_at IS NULL")
            .bind(now_ms())
            .bind(volume_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- runs -------------------------------------------------------------------

    /// Starts a run; refused by `runs_one_active_per_vm` while another is active.
    pub async fn create_run(
        &self,
        vm_id: &str,
        workflow: Workflow,
        mode: Option<&str>,
    ) -> Result<Run> {
        self.create_run_with_plan(vm_id, workflow, mode, None).await
    }

    /// Starts a run with its input (`plan`, JSON) in the same statement, so no worker
    /// can ever find the run without it.
    pub async fn create_run_with_plan(
        &self,
        vm_id: &str,
        workflow: Workflow,
        mode: Option<&str>,
        plan: Option<&str>,
    ) -> Result<Run> {
        let id = new_id();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO runs (id, vm_id, workflow, mode, state, plan, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&id)
        .bind(vm_id)
        .bind(workflow.as_str())
        .bind(mode)
        .bind(RunState::Pending.as_str())
        .bind(plan)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.run(&id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))
    }

    pub async fn run(&self, id: &str) -> Result<Option<Run>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| run_from(&r)).transpose()
    }

    /// The newest run of `workflow` on the VM, in any state.
    pub async fn last_run(&self, vm_id: &str, workflow: Workflow) -> Result<Option<Run>> {
        let row = sqlx::query(
            "SELECT * FROM runs WHERE vm_id = $1 AND workflow = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(vm_id)
        .bind(workflow.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| run_from(&r)).transpose()
    }

    /// How many runs are in each state (states with none left out).
    pub async fn run_counts(&self) -> Result<Vec<(RunState, i64)>> {
        sqlx::query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((parse(r, "state")?, r.try_get("n")?)))
            .collect()
    }

    /// Runs, newest first: of one VM (by its id) or of all, at most `limit`.
    pub async fn runs(&self, vm_id: Option<&str>, limit: i64) -> Result<Vec<Run>> {
        let limit = limit.max(0);
        let rows = match vm_id {
            Some(vm_id) => sqlx::query(
                "SELECT * FROM runs WHERE vm_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            )
            .bind(vm_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
            None => {
                sqlx::query("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(run_from).collect()
    }

    pub async fn active_run(&self, vm_id: &str) -> Result<Option<Run>> {
        let row = sqlx::query(
            "SELECT * FROM runs WHERE vm_id = $1 AND state IN ('pending', 'running', 'unwinding', 'stuck')",
        )
        .bind(vm_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| run_from(&r)).transpose()
    }

    pub async fn set_run_state(
        &self,
        id: &str,
        state: RunState,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let finished = (!state.is_active()).then_some(now);
        let done = sqlx::query(
            "UPDATE runs SET state = $1, error = COALESCE($2, error), updated_at = $3, finished_at = $4
             WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(now)
        .bind(finished)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "run",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    /// Stores the run's input (for example its device plan).
    pub async fn set_run_plan(&self, id: &str, plan: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET plan = $1, updated_at = $2 WHERE id = $3")
            .bind(plan)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes the run's lease for `owner` if it is free, expired or already `owner`'s,
    /// raising its generation; returns the new generation, or `None` when another
    /// worker holds a live lease. Every later write by the worker carries it.
    pub async fn acquire_run(&self, id: &str, owner: &str, ttl_ms: i64) -> Result<Option<i64>> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE runs SET lease_owner = $1, lease_expires_at = $2, generation = generation + 1,
               updated_at = $3
             WHERE id = $4 AND state IN ('pending', 'running', 'unwinding')
               AND (lease_owner IS NULL OR lease_expires_at < $3 OR lease_owner = $1)
             RETURNING generation",
        )
        .bind(owner)
        .bind(now + ttl_ms)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("generation")).transpose()?)
    }

    /// Extends the lease held at `generation`; `Fenced` if it was taken over.
    pub async fn renew_run(
        &self,
        id: &str,
        owner: &str,
        generation: i64,
        ttl_ms: i64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE runs SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 AND generation = $4",
        )
        .bind(now_ms() + ttl_ms)
        .bind(id)
        .bind(owner)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), id, generation)
    }

    /// Gives the lease up (after the run ended, or on shutdown).
    pub async fn release_run(&self, id: &str, generation: i64) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND generation = $2",
        )
        .bind(id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Active runs that a worker other than `owner` holds under a live lease.
    pub async fn runs_held_by_others(&self, owner: &str) -> Result<Vec<String>> {
        sqlx::query(
            "SELECT id FROM runs WHERE state IN ('pending', 'running', 'unwinding')
               AND lease_owner IS NOT NULL AND lease_owner <> $1 AND lease_expires_at >= $2
             ORDER BY created_at, id",
        )
        .bind(owner)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok(r.try_get("id")?))
        .collect()
    }

    /// Puts a stuck run back to unwinding, counting the retry (see [`Run::retries`]).
    pub async fn retry_stuck_run(&self, id: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE runs SET state = 'unwinding', retries = retries + 1, updated_at = $1, finished_at = NULL
             WHERE id = $2 AND state = 'stuck'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Refused(format!(
                "run {id} is not stuck: only a stuck run can be retried"
            )));
        }
        Ok(())
    }

    /// Runs that the worker `owner` may take: active, not stuck, and with no live
    /// lease — or a lease of its own name, which a restarted process with a stable
    /// worker name takes back at once instead of waiting for it to run out. (Two live
    /// processes given one name would take turns on a run, each acquisition fencing
    /// the other off; they never write at the same time.)
    pub async fn claimable_runs(&self, owner: &str) -> Result<Vec<String>> {
        sqlx::query(
            "SELECT id FROM runs WHERE state IN ('pending', 'running', 'unwinding')
               AND (lease_owner IS NULL OR lease_expires_at < $1 OR lease_owner = $2)
             ORDER BY created_at, id",
        )
        .bind(now_ms())
        .bind(owner)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok(r.try_get("id")?))
        .collect()
    }

    /// Moves the run to `state` if it is still held at `generation`.
    pub async fn set_run_state_fenced(
        &self,
        id: &str,
        generation: i64,
        state: RunState,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE runs SET state = $1, error = COALESCE($2, error), updated_at = $3, finished_at = $4,
               cause = CASE WHEN $1 = 'unwinding' THEN COALESCE(cause, $2) ELSE cause END
             WHERE id = $5 AND generation = $6",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(now)
        .bind((!state.is_active()).then_some(now))
        .bind(id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), id, generation)
    }

    /// Asks the run to stop: checked before each step; a cancelled run unwinds.
    pub async fn request_cancel(&self, id: &str) -> Result<()> {
        let done =
            sqlx::query("UPDATE runs SET cancel_requested = 1, updated_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "run",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        sqlx::query("SELECT * FROM steps WHERE run_id = $1 ORDER BY position")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(step_from)
            .collect()
    }

    /// Records a step's state if the run is still held at `generation` — in one
    /// statement, so a worker that lost its lease cannot write.
    pub async fn put_step(&self, run_id: &str, generation: i64, step: &StepRecord) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO steps (run_id, position, name, state, attempts, output, error, started_at, finished_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND generation = $10)
             ON CONFLICT (run_id, position) DO UPDATE SET state = excluded.state,
               attempts = excluded.attempts, output = excluded.output, error = excluded.error,
               started_at = excluded.started_at, finished_at = excluded.finished_at",
        )
        .bind(run_id)
        .bind(step.position)
        .bind(&step.name)
        .bind(step.state.as_str())
        .bind(step.attempts)
        .bind(&step.output)
        .bind(&step.error)
        .bind(step.started_at)
        .bind(step.finished_at)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), run_id, generation)
    }

    /// Appends a line to the run's log.
    pub async fn add_event(
        &self,
        run_id: &str,
        level: &str,
        step: Option<&str>,
        message: &str,
        fields: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (run_id, at, level, step, message, fields) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(run_id)
        .bind(now_ms())
        .bind(level)
        .bind(step)
        .bind(message)
        .bind(fields)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn events(&self, run_id: &str) -> Result<Vec<Event>> {
        sqlx::query("SELECT * FROM events WHERE run_id = $1 ORDER BY id")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(Event {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    level: r.try_get("level")?,
                    step: r.try_get("step")?,
                    message: r.try_get("message")?,
                    fields: r.try_get("fields")?,
                })
            })
            .collect()
    }

    // ---- fences -----------------------------------------------------------------

    /// Accepts `generation` for `run_id` unless a higher one was already seen; a
    /// worker whose lease was taken over is thereby refused.
    pub async fn check_fence(&self, run_id: &str, generation: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO fences (run_id, generation) VALUES ($1, $2)
             ON CONFLICT (run_id) DO UPDATE SET generation = excluded.generation
             WHERE fences.generation < excluded.generation",
        )
        .bind(run_id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        let current: i64 = sqlx::query("SELECT generation FROM fences WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("generation")?;
        if current > generation {
            return Err(StoreError::StaleFence {
                run_id: run_id.to_string(),
                generation,
                current,
            });
        }
        Ok(())
    }

    // ---- volume-daemon journal ---------------------------------------------------

    /// Records a new operation, or returns the one already recorded under the same
    /// idempotency key (`false`: not created now).
    pub async fn begin_op(&self, op: &NewVolumeOp) -> Result<(VolumeOp, bool)> {
        let id = new_id();
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO volume_ops (id, idempotency_key, kind, vm_id, volume_id, snapshot_id, request,
               state, run_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&id)
        .bind(&op.idempotency_key)
        .bind(&op.kind)
        .bind(&op.vm_id)
        .bind(&op.volume_id)
        .bind(&op.snapshot_id)
        .bind(&op.request)
        .bind(OpState::Pending.as_str())
        .bind(&op.run_id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let record = self.op_by_key(&op.idempotency_key).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("operation {} vanished", op.idempotency_key))
        })?;
        Ok((record, inserted))
    }

    /// The CloudStack job (and, for create-style commands, the new entity) of an
    /// operation — recorded before anyone waits on the job.
    pub async fn op_submitted(
        &self,
        id: &str,
        job_id: &str,
        entity_id: Option<&str>,
    ) -> Result<()> {
        self.update_op(
            "UPDATE volume_ops SET state = 'submitted', job_id = $1, entity_id = COALESCE($2, entity_id),
               updated_at = $3 WHERE id = $4 AND state IN ('pending', 'submitted')",
            &[Some(job_id), entity_id],
            id,
        )
        .await
    }

    pub async fn op_succeeded(
        &self,
        id: &str,
        result: &str,
        entity_id: Option<&str>,
    ) -> Result<()> {
        self.update_op(
            "UPDATE volume_ops SET state = 'succeeded', result = $1, entity_id = COALESCE($2, entity_id),
               updated_at = $3 WHERE id = $4",
            &[Some(result), entity_id],
            id,
        )
        .await
    }

    pub async fn op_failed(&self, id: &str, error: &str) -> Result<()> {
        self.update_op(
            "UPDATE volume_ops SET state = 'failed', error = $1, entity_id = COALESCE($2, entity_id),
               updated_at = $3 WHERE id = $4",
            &[Some(error), None],
            id,
        )
        .await
    }

    async fn update_op(
        &self,
        sql: &'static str,
        values: &[Option<&str>; 2],
        id: &str,
    ) -> Result<()> {
        let done = sqlx::query(sql)
            .bind(values[0])
            .bind(values[1])
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "open volume operation",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    pub async fn op(&self, id: &str) -> Result<Option<VolumeOp>> {
        let row = sqlx::query("SELECT * FROM volume_ops WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| op_from(&r)).transpose()
    }

    pub async fn op_by_key(&self, key: &str) -> Result<Option<VolumeOp>> {
        let row = sqlx::query("SELECT * FROM volume_ops WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| op_from(&r)).transpose()
    }

    /// The volume-daemon operations a run made (their CloudStack job ids with them),
    /// oldest first.
    pub async fn ops_for_run(&self, run_id: &str) -> Result<Vec<VolumeOp>> {
        sqlx::query("SELECT * FROM volume_ops WHERE run_id = $1 ORDER BY created_at, id")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(op_from)
            .collect()
    }

    /// Operations that have not finished (pending or submitted), oldest first.
    pub async fn unfinished_ops(&self) -> Result<Vec<VolumeOp>> {
        sqlx::query(
            "SELECT * FROM volume_ops WHERE state IN ('pending', 'submitted') ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(op_from)
        .collect()
    }
}

fn fenced(rows: u64, run_id: &str, generation: i64) -> Result<()> {
    if rows == 0 {
        return Err(StoreError::Fenced {
            run_id: run_id.to_string(),
            generation,
        });
    }
    Ok(())
}

/// Accepts `sqlite://…`, `sqlite::memory:`, `postgres://…`/`postgresql://…`, or a
/// plain file path (SQLite). SQLite files are created on first start.
fn normalize_url(url: &str) -> Result<(String, Backend)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_string(), Backend::Postgres));
    }
    let sqlite = if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest == ":memory:" {
            return Ok((url.to_string(), Backend::Sqlite));
        }
        url.to_string()
    } else if url.contains("://") || url.is_empty() {
        return Err(StoreError::BadUrl { url: redact(url) });
    } else {
        format!("sqlite://{url}")
    };
    let with_mode = if sqlite.contains("mode=") {
        sqlite
    } else if sqlite.contains('?') {
        format!("{sqlite}&mode=rwc")
    } else {
        format!("{sqlite}?mode=rwc")
    };
    Ok((with_mode, Backend::Sqlite))
}

/// A URL without its password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn appliance_from(r: &AnyRow) -> Result<Appliance> {
    Ok(Appliance {
        name: r.try_get("name")?,
        vm_id: r.try_get("vm_id")?,
        zone_id: r.try_get("zone_id")?,
        volumed_url: r.try_get("volumed_url")?,
        sysfs_root: r.try_get("sysfs_root")?,
    })
}

fn disk_from(r: &AnyRow) -> Result<DiskRecord> {
    Ok(DiskRecord {
        id: r.try_get("id")?,
        disk: Disk {
            device_key: r.try_get("device_key")?,
            controller: parse(r, "controller_type")?,
            bus: r.try_get("bus")?,
            unit: r.try_get("unit")?,
            capacity_bytes: r.try_get("capacity_bytes")?,
            label: r.try_get("label")?,
            is_boot: r.try_get::<i64, _>("is_boot")? == 1,
            boot_order: r.try_get("boot_order")?,
            replica_volume_id: r.try_get("volume_id")?,
        },
        attachment: Attachment {
            vm_id: r.try_get("attached_vm_id")?,
            device_id: r.try_get("device_id")?,
            device_path: r.try_get("device_path")?,
            seen_at: r.try_get("seen_at")?,
        },
    })
}

fn run_from(r: &AnyRow) -> Result<Run> {
    Ok(Run {
        id: r.try_get("id")?,
        vm_id: r.try_get("vm_id")?,
        workflow: parse(r, "workflow")?,
        mode: r.try_get("mode")?,
        state: parse(r, "state")?,
        error: r.try_get("error")?,
        generation: r.try_get("generation")?,
        cause: r.try_get("cause")?,
        retries: r.try_get("retries")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? == 1,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        plan: r.try_get("plan")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

fn step_from(r: &AnyRow) -> Result<StepRecord> {
    Ok(StepRecord {
        position: r.try_get("position")?,
        name: r.try_get("name")?,
        state: parse(r, "state")?,
        attempts: r.try_get("attempts")?,
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

fn op_from(r: &AnyRow) -> Result<VolumeOp> {
    Ok(VolumeOp {
        id: r.try_get("id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        kind: r.try_get("kind")?,
        vm_id: r.try_get("vm_id")?,
        volume_id: r.try_get("volume_id")?,
        snapshot_id: r.try_get("snapshot_id")?,
        request: r.try_get("request")?,
        state: parse(r, "state")?,
        job_id: r.try_get("job_id")?,
        entity_id: r.try_get("entity_id")?,
        result: r.try_get("result")?,
        error: r.try_get("error")?,
        run_id: r.try_get("run_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("/var/lib/ferry/ferry.db").unwrap(),
            (
                "sqlite:///var/lib/ferry/ferry.db?mode=rwc".to_string(),
                Backend::Sqlite
            )
        );
        assert_eq!(
            normalize_url("postgres://u@h/db").unwrap().1,
            Backend::Postgres
        );
        assert!(normalize_url("mysql://x").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }

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
}
