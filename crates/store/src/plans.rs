//! Recovery plans: a named, ordered list of boot tiers of protected VMs (issue #15).
//! The store keeps a plan's definition as the plans crate checked it (JSON text it
//! does not read) with its digest, and which VMs it names in which tier — so that a
//! VM a plan names cannot be removed ([`Store::remove_vm`] refuses it) and a plan is
//! found from its VMs. Plan names are unique among plans not removed
//! (`plans_one_name`); a removed plan keeps its row, as a removed VM does.

use ids::ProtectedVmId;

use crate::error::{Result, StoreError, found};
use crate::model::{NewPlan, Plan, PlanMember};
use crate::pool::Store;
use crate::rows::{FromRow, column, new_id, now_ms};

impl Store {
    /// Adds a plan naming `plan.members`; refused (`plans_one_name`) when a plan of
    /// that name exists.
    pub async fn add_plan(&self, plan: &NewPlan) -> Result<Plan> {
        let id = new_id();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO plans (id, name, definition, digest, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&id)
        .bind(&plan.name)
        .bind(&plan.definition)
        .bind(&plan.digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_members(&mut tx, &id, &plan.members).await?;
        tx.commit().await?;
        self.plan(&plan.name).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("plan {} vanished after it was added", plan.name))
        })
    }

    /// Replaces the definition and members of the plan named `plan.name`.
    pub async fn update_plan(&self, plan: &NewPlan) -> Result<Plan> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT id FROM plans WHERE name = $1 AND removed_at IS NULL")
            .bind(&plan.name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "recovery plan",
                key: plan.name.clone(),
            })?;
        let id: String = column(&row, "id")?;
        sqlx::query("UPDATE plans SET definition = $1, digest = $2, updated_at = $3 WHERE id = $4")
            .bind(&plan.definition)
            .bind(&plan.digest)
            .bind(now_ms())
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM plan_vms WHERE plan_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        insert_members(&mut tx, &id, &plan.members).await?;
        tx.commit().await?;
        self.plan(&plan.name).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("plan {} vanished after its update", plan.name))
        })
    }

    /// The plan of this name (never a removed one), with its members.
    pub async fn plan(&self, name: &str) -> Result<Option<Plan>> {
        let plan: Option<Plan> = self
            .fetch_optional(
                sqlx::query("SELECT * FROM plans WHERE name = $1 AND removed_at IS NULL")
                    .bind(name),
            )
            .await?;
        match plan {
            Some(plan) => Ok(Some(self.with_members(plan).await?)),
            None => Ok(None),
        }
    }

    /// Every plan not removed, by name, with their members.
    pub async fn plans(&self) -> Result<Vec<Plan>> {
        let plans: Vec<Plan> = self
            .fetch_all(sqlx::query(
                "SELECT * FROM plans WHERE removed_at IS NULL ORDER BY name",
            ))
            .await?;
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            out.push(self.with_members(plan).await?);
        }
        Ok(out)
    }

    /// The names of the plans (not removed) that name the VM.
    pub async fn plans_of_vm(&self, vm_id: &ProtectedVmId) -> Result<Vec<String>> {
        self.fetch_column(
            sqlx::query(
                "SELECT p.name AS name FROM plan_vms v JOIN plans p ON p.id = v.plan_id
                 WHERE v.vm_id = $1 AND p.removed_at IS NULL ORDER BY p.name",
            )
            .bind(vm_id.as_str()),
            "name",
        )
        .await
    }

    /// Removes the plan: its row stays (marked removed, its name freed; its runs keep
    /// naming it), its members are forgotten. The VMs are not touched. Refused while a
    /// run of the plan is active.
    pub async fn remove_plan(&self, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT id FROM plans WHERE name = $1 AND removed_at IS NULL")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return found(0, "recovery plan", name);
        };
        let id: String = column(&row, "id")?;
        if let Some(run) = sqlx::query(
            "SELECT id FROM plan_runs WHERE plan_id = $1 AND state IN ('pending', 'running')",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?
        {
            let run_id: String = column(&run, "id")?;
            return Err(StoreError::Refused(format!(
                "cannot remove plan {name}: its run {run_id} is under way; wait for it to end"
            )));
        }
        sqlx::query("DELETE FROM plan_vms WHERE plan_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let done =
            sqlx::query("UPDATE plans SET removed_at = $1 WHERE id = $2 AND removed_at IS NULL")
                .bind(now_ms())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        found(done.rows_affected(), "recovery plan", name)?;
        tx.commit().await?;
        Ok(())
    }

    async fn with_members(&self, mut plan: Plan) -> Result<Plan> {
        plan.members = self
            .fetch_all(
                sqlx::query(
                    "SELECT v.vm_id AS vm_id, m.name AS vm_name, v.tier AS tier
                     FROM plan_vms v JOIN protected_vms m ON m.id = v.vm_id
                     WHERE v.plan_id = $1 ORDER BY v.tier, m.name",
                )
                .bind(&plan.id),
            )
            .await?;
        Ok(plan)
    }
}

async fn insert_members(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    plan_id: &str,
    members: &[(ProtectedVmId, i64)],
) -> Result<()> {
    for (vm_id, tier) in members {
        sqlx::query("INSERT INTO plan_vms (plan_id, vm_id, tier) VALUES ($1, $2, $3)")
            .bind(plan_id)
            .bind(vm_id.as_str())
            .bind(*tier)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl FromRow for Plan {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self> {
        Ok(Plan {
            id: column(r, "id")?,
            name: column(r, "name")?,
            definition: column(r, "definition")?,
            digest: column(r, "digest")?,
            created_at: column(r, "created_at")?,
            updated_at: column(r, "updated_at")?,
            members: Vec::new(),
        })
    }
}

impl FromRow for PlanMember {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self> {
        Ok(PlanMember {
            vm_id: column(r, "vm_id")?,
            vm_name: column(r, "vm_name")?,
            tier: column(r, "tier")?,
        })
    }
}
