-- When a step's undo began and when it ended (or failed, leaving the run stuck), in ms
-- since the epoch; NULL until the run unwinds through the step. `started_at` and
-- `finished_at` stay the action's own, so that each of the two shows its own time.
ALTER TABLE steps ADD COLUMN undo_started_at INTEGER;
ALTER TABLE steps ADD COLUMN undo_finished_at INTEGER;
