-- Who asked for a run or a plan run, and which workers executed it: the evidence
-- report (docs/report.md) says "what ran, by which worker, on whose request".
-- `requested_by` is what the client said of itself (the CLI sends `$USER@host` in the
-- `X-Ferry-Requested-By` header); NULL when it said nothing. The API token is the
-- authentication; this is the record. `workers` is every worker name that took the
-- run's (or plan run's) lease, in the order they took it, separated by commas (a name
-- that takes it again right after itself is not repeated); the lease itself is
-- cleared when the run ends, so without this the report could not say who ran it.
ALTER TABLE runs ADD COLUMN requested_by TEXT;
ALTER TABLE runs ADD COLUMN workers TEXT;
ALTER TABLE plan_runs ADD COLUMN requested_by TEXT;
ALTER TABLE plan_runs ADD COLUMN workers TEXT;
