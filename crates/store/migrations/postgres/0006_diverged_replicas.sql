-- A replica that drift kept ferry from putting back as its source had it (its snapshot
-- deleted by hand, so a drill's writes could not be reverted; the volume gone from
-- CloudStack; held by a VM ferry does not stop) is marked as diverged from its source:
-- replication must resynchronise it from the source side before it is trusted again,
-- and the next failover of its VM is refused until an operator records that the resync
-- happened. `diverged_at` (ms since the epoch) is NULL while the replica is trusted;
-- `diverged_reason` says why in words; `diverged_run_id` is the run that found it.
-- `resynced_at`: when an operator last recorded a resync (kept as history).
ALTER TABLE replica_volumes ADD COLUMN diverged_at BIGINT;
ALTER TABLE replica_volumes ADD COLUMN diverged_reason TEXT;
ALTER TABLE replica_volumes ADD COLUMN diverged_run_id TEXT;
ALTER TABLE replica_volumes ADD COLUMN resynced_at BIGINT;
