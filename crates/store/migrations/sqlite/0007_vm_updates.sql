-- A protected VM's definition changed at rest (`ferry vm update`): one row per change
-- written, oldest first. `changes` is what changed, as the inventory wrote it (JSON: a
-- list of {field, change, from, to}); the store keeps it as text and reads nothing in
-- it. With the VM's runs, these rows are its history: an update keeps the VM's id, so
-- its runs and these rows stay with it (and outlive its removal, as its runs do).
CREATE TABLE vm_updates (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    vm_id   TEXT NOT NULL REFERENCES protected_vms (id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,
    changes TEXT NOT NULL
);
CREATE INDEX vm_updates_by_vm ON vm_updates (vm_id, id);
