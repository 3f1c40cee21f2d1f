-- Keyset paging of tasks and dead letters, newest first by (updated_at_ms, id): a page
-- is one backward range scan of an index from the cursor, never a sort of the table
-- nor a walk over the rows of earlier pages, however many finished rows it holds.
DROP INDEX IF EXISTS steps_updated;
CREATE INDEX IF NOT EXISTS steps_updated_id ON steps (updated_at_ms, id);
DROP INDEX IF EXISTS steps_status_updated;
CREATE INDEX IF NOT EXISTS steps_status_updated_id ON steps (status, updated_at_ms, id);
-- Retention reads workflows by (status, updated_at_ms) (0004); nothing else orders them
-- by updated_at_ms, so this index only cost a write at every workflow status change.
DROP INDEX IF EXISTS workflows_updated;
