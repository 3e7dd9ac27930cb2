-- Recovery plans (issue #15): a named, ordered list of boot tiers of protected VMs.
-- `definition` is the plan as the plans crate checked it (JSON), which the store keeps
-- as text and reads nothing in; `digest` (SHA-256 over it) changes whenever the plan
-- does, which is how a plan's last drill is known to be of another version of it.
-- A removed plan keeps its row (its runs will name it), out of the name index.
CREATE TABLE plans (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    removed_at  INTEGER
);
CREATE UNIQUE INDEX plans_one_name ON plans (name) WHERE removed_at IS NULL;

-- The protected VMs a plan names, by tier (0 = the first to fail over): a VM is in a
-- plan once, and a VM that a plan names cannot be removed (the store refuses it) —
-- the plan would name a VM that is gone.
CREATE TABLE plan_vms (
    plan_id TEXT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    vm_id   TEXT NOT NULL REFERENCES protected_vms (id),
    tier    INTEGER NOT NULL,
    PRIMARY KEY (plan_id, vm_id)
);
CREATE INDEX plan_vms_by_vm ON plan_vms (vm_id);
