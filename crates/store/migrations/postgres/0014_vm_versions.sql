-- A protected VM's version: raised by every write that depends on what was read of the
-- VM before it — a run started (its plan was made from the VM's disks and NICs), the
-- definition updated, the VM removed. Each such write is
-- `UPDATE protected_vms ... SET version = version + 1 WHERE id = ... AND version = <read>`,
-- so of two racing writes the second finds the row changed and is refused: a run is
-- never started from a definition an update replaced meanwhile (it would attach the
-- old disks and verify against them), and a VM is never updated or removed under a
-- run that started meanwhile. On PostgreSQL the row lock and the re-check of `version`
-- make this hold under READ COMMITTED, where a NOT EXISTS over `runs` alone does not.
ALTER TABLE protected_vms ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
