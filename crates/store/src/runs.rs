//! The engine's tables: runs (with the lease a worker holds on one and the fencing
//! generation that goes with it), their steps and their events. Every write a worker
//! makes while it executes a run carries the generation it acquired, in the same
//! statement, so a worker whose lease was taken over cannot write (`Fenced`); at most
//! one run per protected VM is active (the partial unique index
//! `runs_one_active_per_vm`).

use ids::{ProtectedVmId, RunId};

use crate::error::{Result, StoreError, fenced, found};
use crate::model::{Event, Run, RunState, StepRecord, WorkerProcess, Workflow};
use crate::pool::Store;
use crate::rows::{column, new_id, now_ms};

impl Store {
    // ---- runs and their leases -------------------------------------------------

    /// Starts a run; refused by `runs_one_active_per_vm` while another is active.
    pub async fn create_run(
        &self,
        vm_id: &ProtectedVmId,
        workflow: Workflow,
        mode: Option<&str>,
    ) -> Result<Run> {
        self.create_run_with_plan(vm_id, None, workflow, mode, None)
            .await
    }

    /// Starts a run with its input (`plan`, JSON) in the same statement, so no worker
    /// can ever find the run without it. With `seen_version`, the version of the VM the
    /// plan was made from: refused ([`StoreError::Refused`]) if the VM changed since
    /// (an update or a removal), raising the version in the same transaction so that an
    /// update or removal that read the VM before is refused in turn.
    pub async fn create_run_with_plan(
        &self,
        vm_id: &ProtectedVmId,
        seen_version: Option<i64>,
        workflow: Workflow,
        mode: Option<&str>,
        plan: Option<&str>,
    ) -> Result<Run> {
        let id = RunId::new(new_id());
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(version) = seen_version {
            let bumped = sqlx::query(
                "UPDATE protected_vms SET version = version + 1
                 WHERE id = $1 AND version = $2 AND removed_at IS NULL",
            )
            .bind(vm_id.as_str())
            .bind(version)
            .execute(&mut *tx)
            .await?;
            if bumped.rows_affected() != 1 {
                return Err(StoreError::Refused(format!(
                    "the protected VM {vm_id} was updated or removed while the run was being \
                     planned; nothing was started: look at it again and start it again"
                )));
            }
        }
        sqlx::query(
            "INSERT INTO runs (id, vm_id, workflow, mode, state, plan, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(id.as_str())
        .bind(vm_id.as_str())
        .bind(workflow.as_str())
        .bind(mode)
        .bind(RunState::Pending.as_str())
        .bind(plan)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.run(&id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))
    }

    pub async fn run(&self, id: &RunId) -> Result<Option<Run>> {
        let query = sqlx::query("SELECT * FROM runs WHERE id = $1").bind(id.as_str());
        self.fetch_optional(query).await
    }

    /// The newest run of `workflow` on the VM, in any state.
    pub async fn last_run(&self, vm_id: &ProtectedVmId, workflow: Workflow) -> Result<Option<Run>> {
        let query = sqlx::query(
            "SELECT * FROM runs WHERE vm_id = $1 AND workflow = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(vm_id.as_str())
        .bind(workflow.as_str());
        self.fetch_optional(query).await
    }

    /// How many runs are in each state (states with none left out).
    pub async fn run_counts(&self) -> Result<Vec<(RunState, i64)>> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((column(r, "state")?, column(r, "n")?)))
            .collect()
    }

    /// Runs, newest first: of one VM (by its id) or of all, at most `limit`.
    pub async fn runs(&self, vm_id: Option<&ProtectedVmId>, limit: i64) -> Result<Vec<Run>> {
        let limit = limit.max(0);
        let query = match vm_id {
            Some(vm_id) => sqlx::query(
                "SELECT * FROM runs WHERE vm_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            )
            .bind(vm_id.as_str())
            .bind(limit),
            None => sqlx::query("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT $1")
                .bind(limit),
        };
        self.fetch_all(query).await
    }

    /// Runs whose id starts with `prefix` (in any case: ids are lowercase), newest
    /// first, at most `limit` — among all runs, however many there are. `%`, `_` and
    /// `\` in `prefix` are themselves, not patterns.
    pub async fn runs_by_id_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<Run>> {
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for c in prefix.to_ascii_lowercase().chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        let query = sqlx::query(
            "SELECT * FROM runs WHERE id LIKE $1 ESCAPE '\\' ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(pattern)
        .bind(limit.max(0));
        self.fetch_all(query).await
    }

    pub async fn active_run(&self, vm_id: &ProtectedVmId) -> Result<Option<Run>> {
        let query = sqlx::query(
            "SELECT * FROM runs WHERE vm_id = $1 AND state IN ('pending', 'running', 'unwinding', 'stuck')",
        )
        .bind(vm_id.as_str());
        self.fetch_optional(query).await
    }

    pub async fn set_run_state(
        &self,
        id: &RunId,
        state: RunState,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let finished = (!state.is_active()).then_some(now);
        let done = sqlx::query(
            "UPDATE runs SET state = $1, error = COALESCE($2, error), updated_at = $3, finished_at = $4,
               waiting_since = NULL, waiting_for = NULL
             WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(now)
        .bind(finished)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        found(done.rows_affected(), "run", id)
    }

    /// Records who asked for run `id` (as the client said of itself).
    pub async fn set_run_requested_by(&self, id: &RunId, who: &str) -> Result<()> {
        let done = sqlx::query("UPDATE runs SET requested_by = $1 WHERE id = $2")
            .bind(who)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        found(done.rows_affected(), "run", id)
    }

    /// Stores the run's input (for example its device plan).
    pub async fn set_run_plan(&self, id: &RunId, plan: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET plan = $1, updated_at = $2 WHERE id = $3")
            .bind(plan)
            .bind(now_ms())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes the run's lease for `owner` if it is free, expired or already `owner`'s,
    /// raising its generation; returns the new generation, or `None` when another
    /// worker holds a live lease. Every later write by the worker carries it.
    pub async fn acquire_run(&self, id: &RunId, owner: &str, ttl_ms: i64) -> Result<Option<i64>> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE runs SET lease_owner = $1, lease_expires_at = $2, generation = generation + 1,
               updated_at = $3,
               workers = CASE
                 WHEN workers IS NULL THEN $1
                 WHEN workers = $1 OR substr(workers, length(workers) - length($1)) = ',' || $1
                   THEN workers
                 ELSE workers || ',' || $1 END
             WHERE id = $4 AND state IN ('pending', 'running', 'unwinding')
               AND (lease_owner IS NULL OR lease_expires_at < $3 OR lease_owner = $1)
             RETURNING generation",
        )
        .bind(owner)
        .bind(now + ttl_ms)
        .bind(now)
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| column(&r, "generation")).transpose()
    }

    /// Extends the lease held at `generation`; `Fenced` if it was taken over.
    pub async fn renew_run(
        &self,
        id: &RunId,
        owner: &str,
        generation: i64,
        ttl_ms: i64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE runs SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 AND generation = $4",
        )
        .bind(now_ms() + ttl_ms)
        .bind(id.as_str())
        .bind(owner)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), id, generation)
    }

    /// Gives the lease up (after the run ended, or on shutdown).
    pub async fn release_run(&self, id: &RunId, generation: i64) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND generation = $2",
        )
        .bind(id.as_str())
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Active runs that a worker other than `owner` holds under a live lease.
    pub async fn runs_held_by_others(&self, owner: &str) -> Result<Vec<RunId>> {
        let query = sqlx::query(
            "SELECT id FROM runs WHERE state IN ('pending', 'running', 'unwinding')
               AND lease_owner IS NOT NULL AND lease_owner <> $1 AND lease_expires_at >= $2
             ORDER BY created_at, id",
        )
        .bind(owner)
        .bind(now_ms());
        self.fetch_column(query, "id").await
    }

    /// Puts a stuck run back to unwinding, counting the retry (see [`Run::retries`]).
    pub async fn retry_stuck_run(&self, id: &RunId) -> Result<()> {
        let done = sqlx::query(
            "UPDATE runs SET state = 'unwinding', retries = retries + 1, updated_at = $1, finished_at = NULL
             WHERE id = $2 AND state = 'stuck'",
        )
        .bind(now_ms())
        .bind(id.as_str())
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
    pub async fn claimable_runs(&self, owner: &str) -> Result<Vec<RunId>> {
        let query = sqlx::query(
            "SELECT id FROM runs WHERE state IN ('pending', 'running', 'unwinding')
               AND (lease_owner IS NULL OR lease_expires_at < $1 OR lease_owner = $2)
             ORDER BY created_at, id",
        )
        .bind(now_ms())
        .bind(owner);
        self.fetch_column(query, "id").await
    }

    /// Moves the run to `state` if it is still held at `generation`.
    pub async fn set_run_state_fenced(
        &self,
        id: &RunId,
        generation: i64,
        state: RunState,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE runs SET state = $1, error = COALESCE($2, error), updated_at = $3, finished_at = $4,
               waiting_since = NULL, waiting_for = NULL,
               cause = CASE WHEN $1 = 'unwinding' THEN COALESCE(cause, $2) ELSE cause END
             WHERE id = $5 AND generation = $6",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(now)
        .bind((!state.is_active()).then_some(now))
        .bind(id.as_str())
        .bind(generation)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), id, generation)
    }

    /// Records that the run waits out an outage (`Some((since, what))`), or that it no
    /// longer does (`None`), under the generation the caller holds.
    pub async fn set_run_waiting(
        &self,
        id: &RunId,
        generation: i64,
        waiting: Option<(i64, &str)>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE runs SET waiting_since = $1, waiting_for = $2, updated_at = $3
             WHERE id = $4 AND generation = $5",
        )
        .bind(waiting.map(|(since, _)| since))
        .bind(waiting.map(|(_, what)| what))
        .bind(now_ms())
        .bind(id.as_str())
        .bind(generation)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), id, generation)
    }

    /// Asks the run to stop: checked before each step; a cancelled run unwinds.
    pub async fn request_cancel(&self, id: &RunId) -> Result<()> {
        let done =
            sqlx::query("UPDATE runs SET cancel_requested = 1, updated_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(id.as_str())
                .execute(&self.pool)
                .await?;
        found(done.rows_affected(), "run", id)
    }

    // ---- worker processes -------------------------------------------------------

    /// The process recorded under worker name `name`, if any.
    pub async fn worker_process(&self, name: &str) -> Result<Option<WorkerProcess>> {
        self.fetch_optional(sqlx::query("SELECT * FROM workers WHERE name = $1").bind(name))
            .await
    }

    /// Records this process (`host`, `pid`) under worker name `name`, replacing whatever
    /// held it (the caller has checked that it is gone).
    pub async fn register_worker(&self, name: &str, host: &str, pid: i64) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO workers (name, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
               started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        )
        .bind(name)
        .bind(host)
        .bind(pid)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Renews this process's heartbeat; false when another process holds the name now.
    pub async fn worker_heartbeat(&self, name: &str, host: &str, pid: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE workers SET heartbeat_at = $1 WHERE name = $2 AND host = $3 AND pid = $4",
        )
        .bind(now_ms())
        .bind(name)
        .bind(host)
        .bind(pid)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets this process under `name`, when it stops.
    pub async fn unregister_worker(&self, name: &str, host: &str, pid: i64) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE name = $1 AND host = $2 AND pid = $3")
            .bind(name)
            .bind(host)
            .bind(pid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- steps ------------------------------------------------------------------

    /// How long step `name` of `workflow` took (ms) each time it was done, in the most
    /// recent `limit` runs: what "its usual duration" means for a freeze warning.
    pub async fn recent_step_durations(
        &self,
        workflow: Workflow,
        name: &str,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT s.finished_at - s.started_at AS took FROM steps s JOIN runs r ON r.id = s.run_id
             WHERE r.workflow = $1 AND s.name = $2 AND s.state = 'done'
               AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL
             ORDER BY s.finished_at DESC LIMIT $3",
        )
        .bind(workflow.as_str())
        .bind(name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| column::<i64>(r, "took")).collect()
    }

    pub async fn steps(&self, run_id: &RunId) -> Result<Vec<StepRecord>> {
        let query = sqlx::query("SELECT * FROM steps WHERE run_id = $1 ORDER BY position")
            .bind(run_id.as_str());
        self.fetch_all(query).await
    }

    /// Records a step's state if the run is still held at `generation` — in one
    /// statement, so a worker that lost its lease cannot write.
    pub async fn put_step(&self, run_id: &RunId, generation: i64, step: &StepRecord) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO steps (run_id, position, name, state, attempts, output, error, started_at, finished_at,
               undo_started_at, undo_finished_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $11, $12
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND generation = $10)
             ON CONFLICT (run_id, position) DO UPDATE SET state = excluded.state,
               attempts = excluded.attempts, output = excluded.output, error = excluded.error,
               started_at = excluded.started_at, finished_at = excluded.finished_at,
               undo_started_at = excluded.undo_started_at, undo_finished_at = excluded.undo_finished_at",
        )
        .bind(run_id.as_str())
        .bind(step.position)
        .bind(&step.name)
        .bind(step.state.as_str())
        .bind(step.attempts)
        .bind(&step.output)
        .bind(&step.error)
        .bind(step.started_at)
        .bind(step.finished_at)
        .bind(generation)
        .bind(step.undo_started_at)
        .bind(step.undo_finished_at)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), run_id, generation)
    }

    // ---- events -----------------------------------------------------------------

    /// Appends a line to the run's log.
    pub async fn add_event(
        &self,
        run_id: &RunId,
        level: &str,
        step: Option<&str>,
        message: &str,
        fields: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (run_id, at, level, step, message, fields) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(run_id.as_str())
        .bind(now_ms())
        .bind(level)
        .bind(step)
        .bind(message)
        .bind(fields)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn events(&self, run_id: &RunId) -> Result<Vec<Event>> {
        let query =
            sqlx::query("SELECT * FROM events WHERE run_id = $1 ORDER BY id").bind(run_id.as_str());
        self.fetch_all(query).await
    }
}
