//! Runs of recovery plans (docs/decisions/0002-plan-runs.md): a plan run and where
//! each of its VMs is. The store keeps them and refuses a second active plan run of a
//! plan (`plan_runs_one_active_per_plan`); the plans crate's driver moves them, each
//! move a compare-and-set on what it read (a plan run's state and tier, a VM's state),
//! so two drivers that read the same row cannot both move it.

use crate::error::{Result, StoreError};
use crate::model::{NewPlanRun, PlanRun, PlanRunState, PlanRunVm, PlanVmState, Workflow};
use crate::pool::Store;
use crate::rows::{FromRow, Query, column, new_id, now_ms};

impl Store {
    /// Creates a pending plan run with every VM `waiting`; refused
    /// (`plan_runs_one_active_per_plan`) while another run of the plan is active.
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
            sqlx::query(
                "INSERT INTO plan_run_vms (plan_run_id, vm_id, tier, state)
                 VALUES ($1, $2, $3, 'waiting')",
            )
            .bind(&id)
            .bind(vm_id.as_str())
            .bind(*tier)
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

    /// Every active plan run, oldest first: what a driver takes up.
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

    /// Moves plan run `id` from `from` (state, tier) to `to`, with `error` when given;
    /// a final state records when it finished. `false` when the run was not at `from`
    /// (another driver moved it first): nothing is written.
    pub async fn move_plan_run(
        &self,
        id: &str,
        from: (PlanRunState, i64),
        to: (PlanRunState, i64),
        error: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        let finished = (!to.0.is_active()).then_some(now);
        let done = sqlx::query(
            "UPDATE plan_runs SET state = $1, tier = $2, error = COALESCE($3, error),
                    updated_at = $4, finished_at = COALESCE($5, finished_at)
             WHERE id = $6 AND state = $7 AND tier = $8",
        )
        .bind(to.0.as_str())
        .bind(to.1)
        .bind(error)
        .bind(now)
        .bind(finished)
        .bind(id)
        .bind(from.0.as_str())
        .bind(from.1)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Writes VM `vm.vm_id` of plan run `plan_run_id` as `vm` has it, if it was in
    /// state `from`; `false` (nothing written) when it was not.
    pub async fn set_plan_run_vm(
        &self,
        plan_run_id: &str,
        vm: &PlanRunVm,
        from: PlanVmState,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE plan_run_vms SET state = $1, run_id = $2, started_at = $3, ended_at = $4,
                    ready_at = $5, readiness = $6, detail = $7
             WHERE plan_run_id = $8 AND vm_id = $9 AND state = $10",
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
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
            vms: Vec::new(),
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
