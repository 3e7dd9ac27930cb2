-- ferry's schema, SQLite flavour. Keep in step with ../postgres/0001_schema.sql:
-- the same tables, columns, constraints and index names; only types differ.
-- Integers are INTEGER (64-bit); booleans are 0/1; times are unix milliseconds.

CREATE TABLE appliances (
    name        TEXT PRIMARY KEY,
    vm_id       TEXT NOT NULL UNIQUE,
    zone_id     TEXT NOT NULL,
    volumed_url TEXT,
    sysfs_root  TEXT,
    created_at  INTEGER NOT NULL
);

CREATE TABLE protected_vms (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    source_id     TEXT NOT NULL,
    appliance     TEXT NOT NULL REFERENCES appliances (name),
    vcpu          INTEGER NOT NULL CHECK (vcpu > 0),
    memory_mb     INTEGER NOT NULL CHECK (memory_mb > 0),
    cpu_speed_mhz INTEGER NOT NULL CHECK (cpu_speed_mhz > 0),
    firmware      TEXT NOT NULL CHECK (firmware IN ('bios', 'uefi')),
    secure_boot   INTEGER NOT NULL DEFAULT 0 CHECK (secure_boot IN (0, 1)),
    guest_os      TEXT NOT NULL CHECK (guest_os IN ('linux', 'windows', 'other')),
    guest_prep    TEXT NOT NULL CHECK (guest_prep IN ('auto', 'skip', 'virt-v2v-in-place')),
    state         TEXT NOT NULL DEFAULT 'ready_for_failover'
                  CHECK (state IN ('ready_for_failover', 'test_failed_over', 'failed_over', 'committed')),
    target_vm_id  TEXT,
    created_at    INTEGER NOT NULL,
    CHECK (secure_boot = 0 OR firmware = 'uefi')
);

CREATE TABLE nics (
    vm_id                 TEXT NOT NULL REFERENCES protected_vms (id) ON DELETE CASCADE,
    position              INTEGER NOT NULL CHECK (position >= 0),
    mac                   TEXT NOT NULL UNIQUE,
    source_network        TEXT NOT NULL,
    test_network_id       TEXT NOT NULL,
    test_ip               TEXT,
    production_network_id TEXT NOT NULL,
    production_ip         TEXT,
    PRIMARY KEY (vm_id, position)
);

CREATE TABLE disks (
    id              TEXT PRIMARY KEY,
    vm_id           TEXT NOT NULL REFERENCES protected_vms (id) ON DELETE CASCADE,
    device_key      INTEGER NOT NULL,
    controller_type TEXT NOT NULL CHECK (controller_type IN ('scsi', 'sata', 'ide', 'nvme')),
    bus             INTEGER NOT NULL CHECK (bus >= 0),
    unit            INTEGER NOT NULL CHECK (unit >= 0),
    capacity_bytes  INTEGER NOT NULL CHECK (capacity_bytes > 0),
    label           TEXT NOT NULL,
    is_boot         INTEGER NOT NULL DEFAULT 0 CHECK (is_boot IN (0, 1)),
    boot_order      INTEGER,
    CONSTRAINT disks_identity UNIQUE (vm_id, controller_type, bus, unit),
    CONSTRAINT disks_device_key UNIQUE (vm_id, device_key)
);
CREATE UNIQUE INDEX disks_one_boot_per_vm ON disks (vm_id) WHERE is_boot = 1;

-- One replica volume per disk (disk_id UNIQUE), one disk per replica volume (PK).
CREATE TABLE replica_volumes (
    volume_id           TEXT PRIMARY KEY,
    disk_id             TEXT NOT NULL UNIQUE REFERENCES disks (id) ON DELETE CASCADE,
    expected_size_bytes INTEGER NOT NULL CHECK (expected_size_bytes > 0),
    attached_vm_id      TEXT,
    device_id           INTEGER,
    device_path         TEXT,
    seen_at             INTEGER
);
CREATE UNIQUE INDEX replica_volumes_one_path ON replica_volumes (attached_vm_id, device_path)
    WHERE device_path IS NOT NULL;

-- Volumes ferry itself created (clones, placeholders it must clean up).
CREATE TABLE created_volumes (
    volume_id          TEXT PRIMARY KEY,
    purpose            TEXT NOT NULL,
    source_snapshot_id TEXT,
    run_id             TEXT,
    created_at         INTEGER NOT NULL,
    deleted_at         INTEGER
);

-- Every volume-daemon operation, recorded before ferry waits on CloudStack.
CREATE TABLE volume_ops (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    vm_id           TEXT,
    volume_id       TEXT,
    snapshot_id     TEXT,
    request         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'submitted', 'succeeded', 'failed')),
    job_id          TEXT,
    entity_id       TEXT,
    result          TEXT,
    error           TEXT,
    run_id          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX volume_ops_unfinished ON volume_ops (state) WHERE state IN ('pending', 'submitted');

-- The highest fencing generation seen per run; lower ones are refused.
CREATE TABLE fences (
    run_id     TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    vm_id            TEXT NOT NULL REFERENCES protected_vms (id) ON DELETE CASCADE,
    workflow         TEXT NOT NULL
                     CHECK (workflow IN ('test_failover', 'cleanup', 'live_failover', 'rollback', 'commit')),
    mode             TEXT,
    state            TEXT NOT NULL
                     CHECK (state IN ('pending', 'running', 'unwinding', 'stuck', 'done', 'unwound', 'abandoned')),
    error            TEXT,
    plan             TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    generation       INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
-- At most one active run per protected VM. A stuck run is active: it must be retried
-- or abandoned before anything else runs on that VM.
CREATE UNIQUE INDEX runs_one_active_per_vm ON runs (vm_id)
    WHERE state IN ('pending', 'running', 'unwinding', 'stuck');

CREATE TABLE steps (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL
                CHECK (state IN ('pending', 'running', 'done', 'failed', 'undoing', 'undone', 'undo_failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    output      TEXT,
    error       TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (run_id, position)
);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,
    level   TEXT NOT NULL,
    step    TEXT,
    message TEXT NOT NULL,
    fields  TEXT
);
CREATE INDEX events_by_run ON events (run_id, id);

CREATE TABLE locks (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    generation INTEGER NOT NULL
);
