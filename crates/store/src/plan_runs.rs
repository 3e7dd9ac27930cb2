//! Runs of recovery plans (docs/decisions/0002-plan-runs.md): a plan run, where each
//! of its VMs is, and when each tier began and ended. The store keeps them and refuses
//! a second active plan run of a plan (`plan_runs_one_active_per_plan`); the plans
//! crate's driver moves them under a lease (the worker that holds it drives the plan
//! run; each taking raises the plan run's fencing generation), each move a
//! compare-and-set on what it read — a plan run's state and tier, a VM's state — and
//! on the generation the driver took, so that two drivers that read the same row
//! cannot both move it, and one whose lease was taken over cannot move it at all.

use crate::error::{Result, StoreError, fenced};
use crate::model::{
    HookOutcome, HookPoint, NewPlanRun, PlanRun, PlanRunHook, PlanRunState, PlanRunTier, PlanRunVm,
    PlanVmState, Workflow,
};
use crate::pool::Store;
use crate::rows::{FromRow, Query, column, new_id, now_ms};

impl Store {
    /// Creates a pending plan run with every VM `waiting` but those it skips from the
    /// start; refused (`plan_runs_one_active_per_plan`) while another run of the plan
    /// is active.
    pub async fn create_plan_run(&self, new: &NewPlanRun) -> Result<PlanRun> {
        let id = new_id();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO plan_runs (id, plan_id, workflow, state, definition, digest, tier,
                                    created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', $4, $5, 0, $6, $6)",
        )
        .bind(&id)
        .bind(&new.plan_id)
        .bind(new.workflow.as_str())
        .bind(&new.definition)
        .bind(&new.digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (vm_id, tier) in &new.vms {
            let skipped = new.skipped.iter().find(|(v, _)| v == vm_id);
            sqlx::query(
                "INSERT INTO plan_run_vms (plan_run_id, vm_id, tier, state, detail)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(vm_id.as_str())
            .bind(*tier)
            .bind(if skipped.is_some() {
                PlanVmState::Skipped.as_str()
            } else {
                PlanVmState::Waiting.as_str()
            })
            .bind(skipped.map(|(_, why)| why.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.plan_run(&id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("plan run {id} vanished after it was created"))
        })
    }

    /// The plan run of this id, with its VMs.
    pub async fn plan_run(&self, id: &str) -> Result<Option<PlanRun>> {
        let query = sqlx::query(
            "SELECT r.*, p.name AS plan_name FROM plan_runs r JOIN plans p ON p.id = r.plan_id
             WHERE r.id = $1",
        )
        .bind(id);
        match self.fetch_optional::<PlanRun>(query).await? {
            Some(run) => Ok(Some(self.with_vms(run).await?)),
            None => Ok(None),
        }
    }

    /// The runs of a plan, newest first, at most `limit`.
    pub async fn plan_runs_of(&self, plan_id: &str, limit: i64) -> Result<Vec<PlanRun>> {
        let query = sqlx::query(
            "SELECT r.*, p.name AS plan_name FROM plan_runs r JOIN plans p ON p.id = r.plan_id
             WHERE r.plan_id = $1 ORDER BY r.created_at DESC, r.id DESC LIMIT $2",
        )
        .bind(plan_id)
        .bind(limit);
        self.plan_runs_where(query).await
    }

    /// The plan run that started run `run_id`, and its plan's name, if one did.
    pub async fn plan_run_of_run(&self, run_id: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT r.id, p.name FROM plan_run_vms v
             JOIN plan_runs r ON r.id = v.plan_run_id JOIN plans p ON p.id = r.plan_id
             WHERE v.run_id = $1 LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((column(&r, "id")?, column(&r, "name")?)))
            .transpose()
    }

    /// Records who asked for plan run `id` (as the client said of itself).
    pub async fn set_plan_run_requested_by(&self, id: &str, who: &str) -> Result<()> {
        sqlx::query("UPDATE plan_runs SET requested_by = $1 WHERE id = $2")
            .bind(who)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every active plan run, oldest first.
    pub async fn active_plan_runs(&self) -> Result<Vec<PlanRun>> {
        let query = sqlx::query(
            "SELECT r.*, p.name AS plan_name FROM plan_runs r JOIN plans p ON p.id = r.plan_id
             WHERE r.state IN ('pending', 'running') ORDER BY r.created_at, r.id",
        );
        self.plan_runs_where(query).await
    }

    /// The newest run of the plan with this workflow that ended `done`.
    pub async fn last_done_plan_run(
        &self,
        plan_id: &str,
        workflow: Workflow,
    ) -> Result<Option<PlanRun>> {
        let query = sqlx::query(
            "SELECT r.*, p.name AS plan_name FROM plan_runs r JOIN plans p ON p.id = r.plan_id
             WHERE r.plan_id = $1 AND r.workflow = $2 AND r.state = 'done'
             ORDER BY r.finished_at DESC, r.id DESC LIMIT 1",
        )
        .bind(plan_id)
        .bind(workflow.as_str());
        Ok(self.plan_runs_where(query).await?.into_iter().next())
    }

    /// Moves plan run `id` from `from` (state, tier) to `to`, with `error` when given,
    /// if it is still held at `generation` (0 = never leased); a final state records
    /// when it finished. The tiers' times move with it: the tier left (or stopped or
    /// ended at) ends, the tier moved to begins. `false` when the run was not at
    /// `from` or has been taken over: nothing is written.
    pub async fn move_plan_run(
        &self,
        id: &str,
        generation: i64,
        from: (PlanRunState, i64),
        to: (PlanRunState, i64),
        error: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        let finished = (!to.0.is_active()).then_some(now);
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE plan_runs SET state = $1, tier = $2, error = COALESCE($3, error),
                    updated_at = $4, finished_at = COALESCE($5, finished_at)
             WHERE id = $6 AND state = $7 AND tier = $8 AND generation = $9",
        )
        .bind(to.0.as_str())
        .bind(to.1)
        .bind(error)
        .bind(now)
        .bind(finished)
        .bind(id)
        .bind(from.0.as_str())
        .bind(from.1)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if from.1 != to.1 || !to.0.is_active() {
            sqlx::query(
                "UPDATE plan_run_tiers SET ended_at = $1
                 WHERE plan_run_id = $2 AND tier = $3 AND ended_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .bind(from.1)
            .execute(&mut *tx)
            .await?;
        }
        if to.0 == PlanRunState::Running && (from.0 == PlanRunState::Pending || from.1 != to.1) {
            sqlx::query(
                "INSERT INTO plan_run_tiers (plan_run_id, tier, started_at) VALUES ($1, $2, $3)
                 ON CONFLICT (plan_run_id, tier) DO NOTHING",
            )
            .bind(id)
            .bind(to.1)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Writes VM `vm.vm_id` of plan run `plan_run_id` as `vm` has it, if it was in
    /// state `from` and the plan run is still held at `generation` (0 = never leased);
    /// `false` (nothing written) when it was not.
    pub async fn set_plan_run_vm(
        &self,
        plan_run_id: &str,
        generation: i64,
        vm: &PlanRunVm,
        from: PlanVmState,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE plan_run_vms SET state = $1, run_id = $2, started_at = $3, ended_at = $4,
                    ready_at = $5, readiness = $6, detail = $7
             WHERE plan_run_id = $8 AND vm_id = $9 AND state = $10
               AND EXISTS (SELECT 1 FROM plan_runs WHERE id = $8 AND generation = $11)",
        )
        .bind(vm.state.as_str())
        .bind(vm.run_id.as_ref().map(|r| r.as_str()))
        .bind(vm.started_at)
        .bind(vm.ended_at)
        .bind(vm.ready_at)
        .bind(vm.readiness.as_deref())
        .bind(vm.detail.as_deref())
        .bind(plan_run_id)
        .bind(vm.vm_id.as_str())
        .bind(from.as_str())
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- the hooks a plan run runs -------------------------------------------------

    /// Records that plan run `plan_run_id` starts the hook at (`tier`, `point`,
    /// `position`) — `tier` None for the plan's own — counting the attempt. Not
    /// fenced: a hook that runs is a fact, whoever runs it.
    pub async fn start_plan_run_hook(
        &self,
        plan_run_id: &str,
        tier: Option<i64>,
        point: HookPoint,
        position: i64,
        hook: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO plan_run_hooks (plan_run_id, tier, point, position, hook, outcome,
                                         attempts, started_at)
             VALUES ($1, $2, $3, $4, $5, 'running', 1, $6)
             ON CONFLICT (plan_run_id, tier, point, position) DO UPDATE
               SET hook = excluded.hook, outcome = 'running', detail = NULL,
                   attempts = plan_run_hooks.attempts + 1,
                   started_at = excluded.started_at, ended_at = NULL",
        )
        .bind(plan_run_id)
        .bind(tier.unwrap_or(-1))
        .bind(point.as_str())
        .bind(position)
        .bind(hook)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how the hook started by [`Store::start_plan_run_hook`] ended.
    pub async fn end_plan_run_hook(
        &self,
        plan_run_id: &str,
        tier: Option<i64>,
        point: HookPoint,
        position: i64,
        outcome: HookOutcome,
        detail: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE plan_run_hooks SET outcome = $1, detail = $2, ended_at = $3
             WHERE plan_run_id = $4 AND tier = $5 AND point = $6 AND position = $7",
        )
        .bind(outcome.as_str())
        .bind(detail)
        .bind(now_ms())
        .bind(plan_run_id)
        .bind(tier.unwrap_or(-1))
        .bind(point.as_str())
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- the lease a driver holds on a plan run ---------------------------------

    /// Takes plan run `id`'s lease for `owner` if it is active and its lease free,
    /// expired or already `owner`'s (a restarted process of the same worker name takes
    /// its plan runs back at once), raising its generation; the new generation, or
    /// `None` when another worker holds a live lease or the plan run has ended.
    pub async fn acquire_plan_run(
        &self,
        id: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE plan_runs SET lease_owner = $1, lease_expires_at = $2, generation = generation + 1,
                    workers = CASE
                      WHEN workers IS NULL THEN $1
                      WHEN workers = $1 OR substr(workers, length(workers) - length($1)) = ',' || $1
                        THEN workers
                      ELSE workers || ',' || $1 END
             WHERE id = $3 AND state IN ('pending', 'running')
               AND (lease_owner IS NULL OR lease_expires_at < $4 OR lease_owner = $1)
             RETURNING generation",
        )
        .bind(owner)
        .bind(now + ttl_ms)
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| column(&r, "generation")).transpose()
    }

    /// Extends the lease `owner` holds at `generation`; `Fenced` if it was taken over.
    pub async fn renew_plan_run(
        &self,
        id: &str,
        owner: &str,
        generation: i64,
        ttl_ms: i64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE plan_runs SET lease_expires_at = $1
             WHERE id = $2 AND lease_owner = $3 AND generation = $4",
        )
        .bind(now_ms() + ttl_ms)
        .bind(id)
        .bind(owner)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), id, generation)
    }

    /// Gives the lease held at `generation` up (the plan run ended, or on shutdown).
    pub async fn release_plan_run(&self, id: &str, generation: i64) -> Result<()> {
        sqlx::query(
            "UPDATE plan_runs SET lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND generation = $2",
        )
        .bind(id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The active plan runs `owner` may drive — no live lease, or a lease of its own
    /// name —, oldest first.
    pub async fn claimable_plan_runs(&self, owner: &str) -> Result<Vec<String>> {
        let query = sqlx::query(
            "SELECT id FROM plan_runs WHERE state IN ('pending', 'running')
               AND (lease_owner IS NULL OR lease_expires_at < $1 OR lease_owner = $2)
             ORDER BY created_at, id",
        )
        .bind(now_ms())
        .bind(owner);
        self.fetch_column(query, "id").await
    }

    async fn plan_runs_where(&self, query: Query<'_>) -> Result<Vec<PlanRun>> {
        let runs: Vec<PlanRun> = self.fetch_all(query).await?;
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            out.push(self.with_vms(run).await?);
        }
        Ok(out)
    }

    async fn with_vms(&self, mut run: PlanRun) -> Result<PlanRun> {
        run.vms = self
            .fetch_all(
                sqlx::query(
                    "SELECT v.*, m.name AS vm_name FROM plan_run_vms v
                     JOIN protected_vms m ON m.id = v.vm_id
                     WHERE v.plan_run_id = $1 ORDER BY v.tier, m.name",
                )
                .bind(&run.id),
            )
            .await?;
        run.tiers = self
            .fetch_all(
                sqlx::query("SELECT * FROM plan_run_tiers WHERE plan_run_id = $1 ORDER BY tier")
                    .bind(&run.id),
            )
            .await?;
        run.hooks = self
            .fetch_all(
                sqlx::query(
                    "SELECT * FROM plan_run_hooks WHERE plan_run_id = $1
                     ORDER BY tier, point DESC, position",
                )
                .bind(&run.id),
            )
            .await?;
        Ok(run)
    }
}

impl FromRow for PlanRun {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self> {
        Ok(PlanRun {
            id: column(r, "id")?,
            plan_id: column(r, "plan_id")?,
            plan_name: column(r, "plan_name")?,
            workflow: column(r, "workflow")?,
            state: column(r, "state")?,
            definition: column(r, "definition")?,
            digest: column(r, "digest")?,
            tier: column(r, "tier")?,
            error: column(r, "error")?,
            created_at: column(r, "created_at")?,
            updated_at: column(r, "updated_at")?,
            finished_at: column(r, "finished_at")?,
            lease_owner: column(r, "lease_owner")?,
            lease_expires_at: column(r, "lease_expires_at")?,
            generation: column(r, "generation")?,
            requested_by: column(r, "requested_by")?,
            workers: crate::rows::worker_list(column(r, "workers")?),
            vms: Vec::new(),
            tiers: Vec::new(),
            hooks: Vec::new(),
        })
    }
}

impl FromRow for PlanRunTier {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self> {
        Ok(PlanRunTier {
            tier: column(r, "tier")?,
            started_at: column(r, "started_at")?,
            ended_at: column(r, "ended_at")?,
        })
    }
}

impl FromRow for PlanRunHook {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self> {
        let tier: i64 = column(r, "tier")?;
        Ok(PlanRunHook {
            tier: (tier >= 0).then_some(tier),
            point: column(r, "point")?,
            position: column(r, "position")?,
            hook: column(r, "hook")?,
            outcome: column(r, "outcome")?,
            detail: column(r, "detail")?,
            attempts: column(r, "attempts")?,
            started_at: column(r, "started_at")?,
            ended_at: column(r, "ended_at")?,
        })
    }
}

impl FromRow for PlanRunVm {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self> {
        Ok(PlanRunVm {
            vm_id: column(r, "vm_id")?,
            vm_name: column(r, "vm_name")?,
            tier: column(r, "tier")?,
            state: column(r, "state")?,
            run_id: column(r, "run_id")?,
            started_at: column(r, "started_at")?,
            ended_at: column(r, "ended_at")?,
            ready_at: column(r, "ready_at")?,
            readiness: column(r, "readiness")?,
            detail: column(r, "detail")?,
        })
    }
}
