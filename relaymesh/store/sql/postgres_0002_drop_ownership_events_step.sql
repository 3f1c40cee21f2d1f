-- Nothing reads ownership events by step, and its random keys made every claim
-- dirty many index pages: drop it.
DROP INDEX IF EXISTS ownership_events_step;
