-- `cause`: the error that started a run's unwind, kept when the run later gets stuck
-- and is retried (its `error` then says what is stuck). `retries`: how many times an
-- operator retried the stuck run; a retried undo uses new idempotency keys, so a
-- volume operation that failed definitively is sent again instead of answered from
-- the journal.
ALTER TABLE runs ADD COLUMN cause TEXT;
ALTER TABLE runs ADD COLUMN retries BIGINT NOT NULL DEFAULT 0;
