-- Runs of recovery plans (docs/decisions/0002-plan-runs.md): a plan run drives the
-- VMs' own runs tier by tier. `definition` and `digest` are the plan as it was run
-- (a later change to the plan does not change a run of it); `tier` is the tier under
-- way (0 = the first in the order the workflow takes them). At most one plan run per
-- plan is active (pending or running): a second is refused by the index.
CREATE TABLE plan_runs (
    id          TEXT PRIMARY KEY,
    plan_id     TEXT NOT NULL REFERENCES plans (id),
    workflow    TEXT NOT NULL
                CHECK (workflow IN ('test_failover', 'cleanup', 'live_failover', 'rollback', 'commit')),
    state       TEXT NOT NULL
                CHECK (state IN ('pending', 'running', 'stopped', 'done', 'failed')),
    definition  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    tier        INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE UNIQUE INDEX plan_runs_one_active_per_plan ON plan_runs (plan_id)
    WHERE state IN ('pending', 'running');
CREATE INDEX plan_runs_by_plan ON plan_runs (plan_id, created_at);

-- Each VM of a plan run: its tier, the run the plan run started for it (`started_at`
-- is written before the run is asked for, so a plan run resumed after a crash in
-- between finds the VM's run instead of asking twice), when that run ended, when the
-- VM was found ready and what its readiness gates saw (JSON).
CREATE TABLE plan_run_vms (
    plan_run_id TEXT NOT NULL REFERENCES plan_runs (id) ON DELETE CASCADE,
    vm_id       TEXT NOT NULL REFERENCES protected_vms (id),
    tier        INTEGER NOT NULL,
    state       TEXT NOT NULL
                CHECK (state IN ('waiting', 'starting', 'running', 'checking', 'ready', 'failed', 'skipped')),
    run_id      TEXT REFERENCES runs (id),
    started_at  INTEGER,
    ended_at    INTEGER,
    ready_at    INTEGER,
    readiness   TEXT,
    detail      TEXT,
    PRIMARY KEY (plan_run_id, vm_id)
);
CREATE INDEX plan_run_vms_by_vm ON plan_run_vms (vm_id);
