-- Removing a protected VM keeps its row, so that its runs (with their steps and
-- events) stay listable and showable: `runs.vm_id` references it. `removed_at`: when
-- it was removed (ms since the epoch), NULL while it is registered. `removed_name`:
-- its name then; `name` becomes a tombstone (`removed:<id>`, never a valid VM
-- name), so the name can be registered again without dropping the UNIQUE constraint
-- (which SQLite cannot do without rebuilding the table). Its NICs, disks and replica
-- volumes are deleted, freeing their MACs and volumes. Every lookup by name and the
-- VM list skip removed rows.
ALTER TABLE protected_vms ADD COLUMN removed_at INTEGER;
ALTER TABLE protected_vms ADD COLUMN removed_name TEXT;
