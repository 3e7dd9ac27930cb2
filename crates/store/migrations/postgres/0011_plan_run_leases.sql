-- Plan runs are driven under a lease, like runs (docs/decisions/0002-plan-runs.md):
-- the worker named `lease_owner` drives the plan run until `lease_expires_at` (ms
-- since the epoch), renewing it while it does; each taking raises `generation`, and
-- every write of a driver carries the generation it took, so that one whose lease
-- was taken over (a process frozen, then thawed) cannot move the plan run any more.
ALTER TABLE plan_runs ADD COLUMN lease_owner TEXT;
ALTER TABLE plan_runs ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE plan_runs ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;

-- When each tier of a plan run began (the plan run moved to it: its `before` hooks,
-- its VMs' runs, their readiness gates, its `after` hooks and its delay follow) and
-- when it ended (the plan run moved past it, or stopped or ended at it). Written by
-- the store in the same transaction as the move.
CREATE TABLE plan_run_tiers (
    plan_run_id TEXT NOT NULL REFERENCES plan_runs (id) ON DELETE CASCADE,
    tier        BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    PRIMARY KEY (plan_run_id, tier)
);

-- `run show` names the plan run that started a run.
CREATE INDEX plan_run_vms_by_run ON plan_run_vms (run_id);
