-- Keyset paging of tasks and dead letters, newest first by (updated_at_ms, id): a page
-- is one backward range scan of an index from the cursor, never a sort of the table
-- nor a walk over the rows of earlier pages, however many finished rows it holds.
DROP INDEX IF EXISTS steps_updated;
CREATE INDEX IF NOT EXISTS steps_updated_id ON steps (updated_at_ms, id);
DROP INDEX IF EXISTS steps_dead_letter;
CREATE INDEX IF NOT EXISTS steps_dead_letter_id ON steps (updated_at_ms, id)
    WHERE status = 'DEAD_LETTER';
-- Autovacuum after 2 % of the rows changed (default 20 %): on a table of millions of
-- finished rows, the dead tuples and index entries that every claim and commit leave
-- (and retention's deletes) are cleaned before they pile up; the claim path's partial
-- indexes then stay as small as the live queue.
ALTER TABLE steps SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE ownership_events SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE workflows SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
-- Retention reads workflows by (status, updated_at_ms) (0004); nothing else orders them
-- by updated_at_ms, so this index only cost a write at every workflow status change.
DROP INDEX IF EXISTS workflows_updated;
