-- Each hook a plan run ran (docs/recovery-plans.md), and how it ended: the evidence
-- report, `ferry plan run` and the console show them. A hook is named by where it
-- stands in the plan the run took: `tier` (the tier's place in the order the
-- workflow takes them, 0 first; -1 for the plan's own hooks), `point` (`before`
-- or `after`) and `position` (its place among that tier's hooks for that point).
-- Its row is written when it starts (`outcome` = 'running') and again when it ends
-- (`succeeded` or `failed`, with `detail` saying why); a hook run again (a plan
-- run resumed after a crash) counts the attempt and overwrites the outcome.
CREATE TABLE plan_run_hooks (
    plan_run_id TEXT NOT NULL REFERENCES plan_runs (id) ON DELETE CASCADE,
    tier        BIGINT NOT NULL,
    point       TEXT NOT NULL,
    position    BIGINT NOT NULL,
    hook        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT,
    attempts    BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    PRIMARY KEY (plan_run_id, tier, point, position)
);
