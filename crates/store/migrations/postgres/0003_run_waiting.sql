-- While a run waits out an outage (CloudStack or the volume daemon not answering),
-- since when (ms since the epoch) and what it waits for, with the reason; both NULL
-- otherwise. `ferry run show`, the CLI's progress and /metrics read them.
ALTER TABLE runs ADD COLUMN waiting_since BIGINT;
ALTER TABLE runs ADD COLUMN waiting_for TEXT;
