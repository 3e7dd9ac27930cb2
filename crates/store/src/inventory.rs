//! The inventory's tables: appliances, protected VMs with their NICs and disks, and
//! the replica volumes with where each was last seen. Registration writes a VM whole
//! or not at all, and so does an update at rest, which replaces its NICs and disks but
//! keeps the VM (and so its runs) and records what changed (`vm_updates`); the
//! constraints that keep a VM whole (one replica per disk, one boot disk, unique
//! identities, names and MACs, one device path per volume) are the schema's, and their
//! violations come back as `StoreError::Constraint`.

use sqlx::any::AnyRow;

use ids::{ProtectedVmId, RunId, VmId, VolumeId};

use crate::error::{Result, StoreError, found};
use crate::model::{
    Appliance, Attachment, Disk, DiskRecord, NewVm, ProtectedVm, VmName, VmState, VmUpdate,
};
use crate::pool::Store;
use crate::rows::{FromRow, Query, column, new_id, now_ms, protected_vm, text};

impl Store {
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
        .bind(a.vm_id.as_str())
        .bind(a.zone_id.as_str())
        .bind(&a.volumed_url)
        .bind(&a.sysfs_root)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn appliance(&self, name: &str) -> Result<Option<Appliance>> {
        let query = sqlx::query("SELECT * FROM appliances WHERE name = $1").bind(name);
        self.fetch_optional(query).await
    }

    pub async fn appliances(&self) -> Result<Vec<Appliance>> {
        let query = sqlx::query("SELECT * FROM appliances ORDER BY name");
        self.fetch_all(query).await
    }

    // ---- protected VMs ----------------------------------------------------------

    /// Writes a protected VM with its NICs, disks and replica volumes in one
    /// transaction; `seen` gives where each replica volume was observed at
    /// registration (volume id → attachment). All or nothing.
    pub async fn register_vm(
        &self,
        vm: &NewVm,
        seen: &[(VolumeId, Attachment)],
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
        let attachment = |disk: &Disk| sighting(seen, disk).unwrap_or_default();
        insert_parts(&mut tx, &id, vm, |_| new_id(), attachment, |_| None).await?;
        tx.commit().await?;
        self.vm_by_id(&ProtectedVmId::from(&id))
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("VM {id} vanished after registration")))
    }

    /// Changes a registered VM's definition at rest and records the change in its
    /// history (`changes`, kept as given). The VM stays the same VM: its id, name,
    /// state, runs and events are kept. In one transaction its row takes `vm`'s spec,
    /// source id and appliance, and its NICs, disks and replica volumes are replaced by
    /// `vm`'s; a disk keeps its id when the VM had a disk of the same device key.
    ///
    /// Where each replica volume is attached is the volume daemon's record (with the
    /// device path it found on the appliance, which no CloudStack list tells), so a
    /// replica the VM already had keeps its record unless `seen` contradicts it (another
    /// VM or device id). A new replica, or one CloudStack now sees elsewhere, is
    /// recorded as `seen` has it, as at registration.
    ///
    /// Refused ([`StoreError::Refused`]) unless the VM is `ready_for_failover` and no
    /// run of it is active — checked by the same statement that writes its row, so a
    /// run that started before cannot be missed — and when `vm.name` is not its name:
    /// the name is a VM's identity and does not change.
    pub async fn update_vm(
        &self,
        id: &ProtectedVmId,
        version: i64,
        vm: &NewVm,
        seen: &[(VolumeId, Attachment)],
        changes: &str,
    ) -> Result<ProtectedVm> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE protected_vms SET source_id = $1, appliance = $2, vcpu = $3, memory_mb = $4,
               cpu_speed_mhz = $5, firmware = $6, secure_boot = $7, guest_os = $8, guest_prep = $9,
               version = version + 1
             WHERE id = $10 AND name = $11 AND removed_at IS NULL AND state = 'ready_for_failover'
               AND version = $12
               AND NOT EXISTS (SELECT 1 FROM runs WHERE vm_id = $10
                                 AND state IN ('pending', 'running', 'unwinding', 'stuck'))",
        )
        .bind(&vm.source_id)
        .bind(&vm.appliance)
        .bind(vm.spec.vcpu)
        .bind(vm.spec.memory_mb)
        .bind(vm.spec.cpu_speed_mhz)
        .bind(vm.spec.firmware.as_str())
        .bind(vm.spec.secure_boot as i64)
        .bind(vm.spec.guest_os.as_str())
        .bind(vm.spec.guest_prep.as_str())
        .bind(id.as_str())
        .bind(&vm.name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(not_at_rest(&mut tx, id, &vm.name).await);
        }
        let old = sqlx::query(
            "SELECT d.*, r.volume_id, r.attached_vm_id, r.device_id, r.device_path, r.seen_at,
                    r.diverged_at, r.diverged_reason, r.diverged_run_id, r.resynced_at
             FROM disks d JOIN replica_volumes r ON r.disk_id = d.id WHERE d.vm_id = $1",
        )
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(DiskRecord::from_row)
        .collect::<Result<Vec<DiskRecord>>>()?;
        delete_parts(&mut tx, id.as_str()).await?;
        let disk_id = |disk: &Disk| {
            old.iter()
                .find(|o| o.disk.device_key == disk.device_key)
                .map_or_else(new_id, |o| o.id.clone())
        };
        let attachment = |disk: &Disk| {
            let kept = old
                .iter()
                .find(|o| o.disk.replica_volume_id == disk.replica_volume_id)
                .map(|o| &o.attachment);
            match (kept, sighting(seen, disk)) {
                (Some(kept), Some(now))
                    if kept.vm_id == now.vm_id && kept.device_id == now.device_id =>
                {
                    kept.clone()
                }
                (_, Some(now)) => now,
                (Some(kept), None) => kept.clone(),
                (None, None) => Attachment::default(),
            }
        };
        // A replica the update keeps keeps its divergence mark and resync history: an
        // update of the definition is no resync.
        let kept = |disk: &Disk| {
            old.iter()
                .find(|o| o.disk.replica_volume_id == disk.replica_volume_id)
        };
        insert_parts(&mut tx, id.as_str(), vm, disk_id, attachment, kept).await?;
        sqlx::query("INSERT INTO vm_updates (vm_id, at, changes) VALUES ($1, $2, $3)")
            .bind(id.as_str())
            .bind(now_ms())
            .bind(changes)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.vm_by_id(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("VM {id} vanished after its update")))
    }

    /// The VM's recorded updates, oldest first.
    pub async fn vm_updates(&self, vm_id: &ProtectedVmId) -> Result<Vec<VmUpdate>> {
        let query = sqlx::query("SELECT * FROM vm_updates WHERE vm_id = $1 ORDER BY id")
            .bind(vm_id.as_str());
        self.fetch_all(query).await
    }

    /// The registered VM of this name (never a removed one).
    pub async fn vm(&self, name: &str) -> Result<Option<ProtectedVm>> {
        self.vm_where(
            sqlx::query("SELECT * FROM protected_vms WHERE name = $1 AND removed_at IS NULL")
                .bind(name),
        )
        .await
    }

    /// The VM of this id, registered or removed (`removed_at` tells): runs name their
    /// VM by id, and a removed VM's runs are kept.
    pub async fn vm_by_id(&self, id: &ProtectedVmId) -> Result<Option<ProtectedVm>> {
        self.vm_where(sqlx::query("SELECT * FROM protected_vms WHERE id = $1").bind(id.as_str()))
            .await
    }

    /// The registered VMs, by name.
    pub async fn vms(&self) -> Result<Vec<ProtectedVm>> {
        let rows =
            sqlx::query("SELECT * FROM protected_vms WHERE removed_at IS NULL ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.load_vm(r).await?);
        }
        Ok(out)
    }

    /// The VM `query` selects from `protected_vms`, if any.
    async fn vm_where(&self, query: Query<'_>) -> Result<Option<ProtectedVm>> {
        match query.fetch_optional(&self.pool).await? {
            Some(r) => Ok(Some(self.load_vm(&r).await?)),
            None => Ok(None),
        }
    }

    /// The VM of a `protected_vms` row, with its NICs and disks.
    async fn load_vm(&self, r: &AnyRow) -> Result<ProtectedVm> {
        let id: String = column(r, "id")?;
        let query = sqlx::query("SELECT * FROM nics WHERE vm_id = $1 ORDER BY position").bind(&id);
        let nics = self.fetch_all(query).await?;
        let query = sqlx::query(
            "SELECT d.*, r.volume_id, r.attached_vm_id, r.device_id, r.device_path, r.seen_at,
                    r.diverged_at, r.diverged_reason, r.diverged_run_id, r.resynced_at
             FROM disks d JOIN replica_volumes r ON r.disk_id = d.id
             WHERE d.vm_id = $1 ORDER BY d.controller_type, d.bus, d.unit",
        )
        .bind(&id);
        let disks = self.fetch_all(query).await?;
        protected_vm(r, nics, disks)
    }

    /// The name of every VM, registered or removed, by id: what runs are listed with.
    pub async fn vm_names(&self) -> Result<Vec<VmName>> {
        let rows = sqlx::query(
            "SELECT id, COALESCE(removed_name, name) AS name, removed_at FROM protected_vms",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VmName {
                    id: column(r, "id")?,
                    name: column(r, "name")?,
                    removed_at: column(r, "removed_at")?,
                })
            })
            .collect()
    }

    /// How many runs a VM has had, in any state.
    pub async fn vm_run_count(&self, vm_id: &ProtectedVmId) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM runs WHERE vm_id = $1")
            .bind(vm_id.as_str())
            .fetch_one(&self.pool)
            .await?;
        column(&row, "n")
    }

    /// Removes a protected VM from ferry's inventory (not from CloudStack: its
    /// replica volumes stay where they are). Refused while a run is active.
    ///
    /// Its runs, with their steps and events, are kept: the VM's row stays, marked
    /// removed (`removed_at`), so they still name it ([`Store::vm_by_id`] finds it).
    /// Its name is freed (the row's `name` becomes a tombstone that no valid name
    /// equals, the name kept in `removed_name`), and its NICs, disks and replica
    /// volumes are deleted, so the name, the MACs and the volumes can be registered
    /// again — as a new VM, with a new id.
    pub async fn remove_vm(&self, name: &str) -> Result<()> {
        let not_found = || StoreError::NotFound {
            what: "protected VM",
            key: name.to_string(),
        };
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, version FROM protected_vms WHERE name = $1 AND removed_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(not_found)?;
        let id: String = column(&row, "id")?;
        let version: i64 = column(&row, "version")?;
        if let Some(run) = sqlx::query(
            "SELECT id, workflow, state FROM runs WHERE vm_id = $1
               AND state IN ('pending', 'running', 'unwinding', 'stuck')",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?
        {
            let run_id: String = column(&run, "id")?;
            let workflow: String = column(&run, "workflow")?;
            let state: String = column(&run, "state")?;
            return Err(StoreError::Refused(format!(
                "cannot remove {name}: run {run_id} ({workflow}) is {state}; wait for it to end, \
                 or cancel it (`ferry run cancel {run_id}`) or abandon it if it is stuck"
            )));
        }
        let plans: Vec<String> = sqlx::query(
            "SELECT p.name FROM plan_vms v JOIN plans p ON p.id = v.plan_id
             WHERE v.vm_id = $1 AND p.removed_at IS NULL ORDER BY p.name",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| column(r, "name"))
        .collect::<Result<_>>()?;
        if !plans.is_empty() {
            return Err(StoreError::Refused(format!(
                "cannot remove {name}: recovery plan(s) {} name it; take it out of them (`ferry plan update FILE`) or remove them first",
                plans.join(", ")
            )));
        }
        // Only one removal of the row wins: a second one, racing, finds it removed; and
        // a run that started since the checks above raised the version (migration 0014).
        let done = sqlx::query(
            "UPDATE protected_vms SET removed_at = $1, removed_name = name, name = $2,
                    version = version + 1
             WHERE id = $3 AND removed_at IS NULL AND version = $4",
        )
        .bind(now_ms())
        .bind(format!("removed:{id}"))
        .bind(&id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            let gone =
                sqlx::query("SELECT 1 FROM protected_vms WHERE id = $1 AND removed_at IS NULL")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none();
            return Err(if gone {
                not_found()
            } else {
                StoreError::Refused(format!(
                    "cannot remove {name}: a run of it started, or it was updated, while it was \
                     being removed; nothing was removed, look at it (`ferry vm show {name}`) and \
                     try again"
                ))
            });
        }
        delete_parts(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_vm_state(
        &self,
        vm_id: &ProtectedVmId,
        state: VmState,
        target_vm_id: Option<&VmId>,
    ) -> Result<()> {
        let done =
            sqlx::query("UPDATE protected_vms SET state = $1, target_vm_id = $2 WHERE id = $3")
                .bind(state.as_str())
                .bind(target_vm_id.map(VmId::as_str))
                .bind(vm_id.as_str())
                .execute(&self.pool)
                .await?;
        found(done.rows_affected(), "protected VM", vm_id)
    }

    // ---- replica volumes --------------------------------------------------------

    /// The protected VM's name and the disk a replica volume belongs to.
    pub async fn replica(&self, volume_id: &VolumeId) -> Result<Option<(String, DiskRecord)>> {
        let row = sqlx::query(
            "SELECT v.name AS vm_name, d.*, r.volume_id, r.attached_vm_id, r.device_id, r.device_path, r.seen_at,
                    r.diverged_at, r.diverged_reason, r.diverged_run_id, r.resynced_at
             FROM replica_volumes r JOIN disks d ON d.id = r.disk_id JOIN protected_vms v ON v.id = d.vm_id
             WHERE r.volume_id = $1",
        )
        .bind(volume_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((column(&r, "vm_name")?, DiskRecord::from_row(&r)?))),
            None => Ok(None),
        }
    }

    pub async fn is_replica(&self, volume_id: &VolumeId) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM replica_volumes WHERE volume_id = $1")
                .bind(volume_id.as_str())
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Records where a replica volume was seen. Two volumes on one VM can never share
    /// a device path (constraint `replica_volumes_one_path`).
    pub async fn record_attachment(&self, volume_id: &VolumeId, a: &Attachment) -> Result<()> {
        let done = sqlx::query(
            "UPDATE replica_volumes SET attached_vm_id = $1, device_id = $2, device_path = $3, seen_at = $4
             WHERE volume_id = $5",
        )
        .bind(text(&a.vm_id))
        .bind(a.device_id)
        .bind(&a.device_path)
        .bind(a.seen_at.unwrap_or_else(now_ms))
        .bind(volume_id.as_str())
        .execute(&self.pool)
        .await?;
        found(done.rows_affected(), "replica volume", volume_id)
    }

    /// Marks replica `volume_id` as diverged from its source (see [`Divergence`]),
    /// found by `run_id` for `reason`. A replica already marked keeps its first mark:
    /// that is when it stopped being trusted. Returns whether this call marked it.
    ///
    /// [`Divergence`]: crate::Divergence
    pub async fn mark_diverged(
        &self,
        volume_id: &VolumeId,
        run_id: Option<&RunId>,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE replica_volumes SET diverged_at = $1, diverged_reason = $2, diverged_run_id = $3
             WHERE volume_id = $4 AND diverged_at IS NULL",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(run_id.map(RunId::as_str))
        .bind(volume_id.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        // Not marked now: already diverged, or no such replica (an error).
        if self.is_replica(volume_id).await? {
            Ok(false)
        } else {
            found(0, "replica volume", volume_id)?;
            Ok(false)
        }
    }

    /// Records that replication resynchronised the diverged replicas `volume_ids` of
    /// VM `vm_id` from their source: their marks are cleared and `resynced_at` stamped,
    /// in one transaction. A volume that is not a diverged replica of the VM is left
    /// alone and not returned; the caller checks first and says why.
    pub async fn record_resync(
        &self,
        vm_id: &ProtectedVmId,
        volume_ids: &[VolumeId],
    ) -> Result<Vec<VolumeId>> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut cleared = Vec::new();
        for id in volume_ids {
            let done = sqlx::query(
                "UPDATE replica_volumes
                 SET diverged_at = NULL, diverged_reason = NULL, diverged_run_id = NULL, resynced_at = $1
                 WHERE volume_id = $2 AND diverged_at IS NOT NULL
                   AND disk_id IN (SELECT id FROM disks WHERE vm_id = $3)",
            )
            .bind(now)
            .bind(id.as_str())
            .bind(vm_id.as_str())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                cleared.push(id.clone());
            }
        }
        tx.commit().await?;
        Ok(cleared)
    }

    /// How many replicas of registered VMs are diverged from their source, by VM name.
    pub async fn diverged_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT v.name AS name, COUNT(*) AS n
             FROM replica_volumes r JOIN disks d ON d.id = r.disk_id JOIN protected_vms v ON v.id = d.vm_id
             WHERE r.diverged_at IS NOT NULL AND v.removed_at IS NULL
             GROUP BY v.name ORDER BY v.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((column(r, "name")?, column(r, "n")?)))
            .collect()
    }

    /// The replica volume recorded at `device_path` on `vm_id`, if any.
    pub async fn replica_at_path(
        &self,
        vm_id: &VmId,
        device_path: &str,
    ) -> Result<Option<VolumeId>> {
        let row = sqlx::query(
            "SELECT volume_id FROM replica_volumes WHERE attached_vm_id = $1 AND device_path = $2",
        )
        .bind(vm_id.as_str())
        .bind(device_path)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| column(&r, "volume_id")).transpose()
    }
}

/// The transaction a multi-statement write runs in.
type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Where `seen` says the disk's replica volume is, if it says.
fn sighting(seen: &[(VolumeId, Attachment)], disk: &Disk) -> Option<Attachment> {
    seen.iter()
        .find(|(v, _)| *v == disk.replica_volume_id)
        .map(|(_, a)| a.clone())
}

/// Writes VM `vm_id`'s NICs, disks and replica volumes from `vm`: each disk under the
/// id `disk_id` gives it, its replica volume with the record `attachment` gives it.
async fn insert_parts<'k>(
    tx: &mut Tx<'_>,
    vm_id: &str,
    vm: &NewVm,
    disk_id: impl Fn(&Disk) -> String,
    attachment: impl Fn(&Disk) -> Attachment,
    kept: impl Fn(&Disk) -> Option<&'k DiskRecord>,
) -> Result<()> {
    for nic in &vm.nics {
        sqlx::query(
            "INSERT INTO nics (vm_id, position, mac, source_network, test_network_id, test_ip,
               production_network_id, production_ip)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(vm_id)
        .bind(nic.position)
        .bind(nic.mac.to_lowercase())
        .bind(&nic.source_network)
        .bind(nic.test_network_id.as_str())
        .bind(&nic.test_ip)
        .bind(nic.production_network_id.as_str())
        .bind(&nic.production_ip)
        .execute(&mut **tx)
        .await?;
    }
    for disk in &vm.disks {
        let disk_id = disk_id(disk);
        sqlx::query(
            "INSERT INTO disks (id, vm_id, device_key, controller_type, bus, unit, capacity_bytes,
               label, is_boot, boot_order)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&disk_id)
        .bind(vm_id)
        .bind(disk.device_key)
        .bind(disk.controller.as_str())
        .bind(disk.bus)
        .bind(disk.unit)
        .bind(disk.capacity_bytes)
        .bind(&disk.label)
        .bind(disk.is_boot as i64)
        .bind(disk.boot_order)
        .execute(&mut **tx)
        .await?;
        let attachment = attachment(disk);
        let kept = kept(disk);
        let mark = kept.and_then(|k| k.diverged.as_ref());
        sqlx::query(
            "INSERT INTO replica_volumes (volume_id, disk_id, expected_size_bytes, attached_vm_id,
               device_id, device_path, seen_at, diverged_at, diverged_reason, diverged_run_id,
               resynced_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(disk.replica_volume_id.as_str())
        .bind(&disk_id)
        .bind(disk.capacity_bytes)
        .bind(text(&attachment.vm_id))
        .bind(attachment.device_id)
        .bind(&attachment.device_path)
        .bind(attachment.seen_at)
        .bind(mark.map(|m| m.at))
        .bind(mark.map(|m| m.reason.clone()))
        .bind(mark.and_then(|m| m.run_id.as_ref().map(|r| r.to_string())))
        .bind(kept.and_then(|k| k.resynced_at))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Deletes VM `vm_id`'s NICs, disks and replica volumes (not the VM's row).
async fn delete_parts(tx: &mut Tx<'_>, vm_id: &str) -> Result<()> {
    sqlx::query(
        "DELETE FROM replica_volumes WHERE disk_id IN (SELECT id FROM disks WHERE vm_id = $1)",
    )
    .bind(vm_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM disks WHERE vm_id = $1")
        .bind(vm_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM nics WHERE vm_id = $1")
        .bind(vm_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Why the update of VM `id`, named `name` by the caller, wrote nothing, in words: no
/// such VM, another name, a state other than `ready_for_failover`, or an active run.
async fn not_at_rest(tx: &mut Tx<'_>, id: &ProtectedVmId, name: &str) -> StoreError {
    match why_not_at_rest(tx, id, name).await {
        Ok(refusal) => refusal,
        Err(e) => e,
    }
}

async fn why_not_at_rest(tx: &mut Tx<'_>, id: &ProtectedVmId, name: &str) -> Result<StoreError> {
    let not_found = || StoreError::NotFound {
        what: "protected VM",
        key: name.to_string(),
    };
    let Some(row) =
        sqlx::query("SELECT name, state FROM protected_vms WHERE id = $1 AND removed_at IS NULL")
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await?
    else {
        return Ok(not_found());
    };
    let registered: String = column(&row, "name")?;
    if registered != name {
        return Ok(StoreError::Refused(format!(
            "cannot update {registered} as `{name}`: a protected VM's name is its identity and does not change"
        )));
    }
    let state: VmState = column(&row, "state")?;
    if state != VmState::ReadyForFailover {
        return Ok(StoreError::Refused(format!(
            "cannot update {name}: it is {state}, and a definition changes only at rest (ready_for_failover)"
        )));
    }
    if let Some(run) = sqlx::query(
        "SELECT id, workflow, state FROM runs WHERE vm_id = $1
           AND state IN ('pending', 'running', 'unwinding', 'stuck')",
    )
    .bind(id.as_str())
    .fetch_optional(&mut **tx)
    .await?
    {
        let run_id: String = column(&run, "id")?;
        let workflow: String = column(&run, "workflow")?;
        let state: String = column(&run, "state")?;
        return Ok(StoreError::Refused(format!(
            "cannot update {name}: run {run_id} ({workflow}) is {state}; wait for it to end, \
             or cancel it (`ferry run cancel {run_id}`) or abandon it if it is stuck"
        )));
    }
    // At rest now: what stood in the way has just ended, or the VM changed (a run
    // started and ended, another update) since the caller read it. It may try again.
    Ok(StoreError::Refused(format!(
        "cannot update {name}: it changed (a run of it, or another update) while this update \
         was being checked; nothing was written, try again"
    )))
}
