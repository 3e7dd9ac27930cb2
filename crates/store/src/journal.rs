//! The volume daemon's tables: its operation journal (`volume_ops`, one row per
//! idempotency key, with the CloudStack job id recorded before anyone waits on it),
//! the fences it checks every call against, and the volumes ferry created (the only
//! ones the daemon may delete). The daemon reaches them through its `Journal` trait
//! (`volumed::StoreJournal`); the store knows nothing of CloudStack, only what it is
//! told to keep.

use ids::{JobId, RunId, SnapshotId, VolumeId};

use crate::error::{Result, StoreError, found};
use crate::model::{NewVolumeOp, OpState, VolumeOp};
use crate::pool::Store;
use crate::rows::{column, new_id, now_ms, text};

impl Store {
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
        .bind(text(&op.vm_id))
        .bind(text(&op.volume_id))
        .bind(text(&op.snapshot_id))
        .bind(&op.request)
        .bind(OpState::Pending.as_str())
        .bind(text(&op.run_id))
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
        job_id: &JobId,
        entity_id: Option<&str>,
    ) -> Result<()> {
        self.update_op(
            "UPDATE volume_ops SET state = 'submitted', job_id = $1, entity_id = COALESCE($2, entity_id),
               updated_at = $3 WHERE id = $4 AND state IN ('pending', 'submitted')",
            &[Some(job_id.as_str()), entity_id],
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
        found(done.rows_affected(), "open volume operation", id)
    }

    pub async fn op(&self, id: &str) -> Result<Option<VolumeOp>> {
        let query = sqlx::query("SELECT * FROM volume_ops WHERE id = $1").bind(id);
        self.fetch_optional(query).await
    }

    pub async fn op_by_key(&self, key: &str) -> Result<Option<VolumeOp>> {
        let query = sqlx::query("SELECT * FROM volume_ops WHERE idempotency_key = $1").bind(key);
        self.fetch_optional(query).await
    }

    /// The volume-daemon operations a run made (their CloudStack job ids with them),
    /// oldest first.
    pub async fn ops_for_run(&self, run_id: &RunId) -> Result<Vec<VolumeOp>> {
        let query =
            sqlx::query("SELECT * FROM volume_ops WHERE run_id = $1 ORDER BY created_at, id")
                .bind(run_id.as_str());
        self.fetch_all(query).await
    }

    /// Operations that have not finished (pending or submitted), oldest first.
    pub async fn unfinished_ops(&self) -> Result<Vec<VolumeOp>> {
        let query = sqlx::query(
            "SELECT * FROM volume_ops WHERE state IN ('pending', 'submitted') ORDER BY created_at, id",
        );
        self.fetch_all(query).await
    }

    // ---- fences -----------------------------------------------------------------

    /// Accepts `generation` for `run_id` unless a higher one was already seen; a
    /// worker whose lease was taken over is thereby refused.
    pub async fn check_fence(&self, run_id: &RunId, generation: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO fences (run_id, generation) VALUES ($1, $2)
             ON CONFLICT (run_id) DO UPDATE SET generation = excluded.generation
             WHERE fences.generation < excluded.generation",
        )
        .bind(run_id.as_str())
        .bind(generation)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT generation FROM fences WHERE run_id = $1")
            .bind(run_id.as_str())
            .fetch_one(&self.pool)
            .await?;
        let current: i64 = column(&row, "generation")?;
        if current > generation {
            return Err(StoreError::StaleFence {
                run_id: run_id.to_string(),
                generation,
                current,
            });
        }
        Ok(())
    }

    // ---- volumes ferry created --------------------------------------------------

    pub async fn record_created_volume(
        &self,
        volume_id: &VolumeId,
        purpose: &str,
        source_snapshot_id: Option<&SnapshotId>,
        run_id: Option<&RunId>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO created_volumes (volume_id, purpose, source_snapshot_id, run_id, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (volume_id) DO NOTHING",
        )
        .bind(volume_id.as_str())
        .bind(purpose)
        .bind(source_snapshot_id.map(SnapshotId::as_str))
        .bind(run_id.map(RunId::as_str))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The volumes a run created for `purpose` and has not deleted yet, oldest first.
    pub async fn run_created_volumes(
        &self,
        run_id: &RunId,
        purpose: &str,
    ) -> Result<Vec<VolumeId>> {
        let query = sqlx::query(
            "SELECT volume_id FROM created_volumes
             WHERE run_id = $1 AND purpose = $2 AND deleted_at IS NULL
             ORDER BY created_at, volume_id",
        )
        .bind(run_id.as_str())
        .bind(purpose);
        self.fetch_column(query, "volume_id").await
    }

    /// Whether ferry created this volume and has not deleted it yet.
    pub async fn is_created_volume(&self, volume_id: &VolumeId) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM created_volumes WHERE volume_id = $1 AND deleted_at IS NULL",
        )
        .bind(volume_id.as_str())
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    pub async fn mark_created_volume_deleted(&self, volume_id: &VolumeId) -> Result<()> {
        sqlx::query("UPDATE created_volumes SET deleted_at = $1 WHERE volume_id = $2 AND deleted_at IS NULL")
            .bind(now_ms())
            .bind(volume_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
