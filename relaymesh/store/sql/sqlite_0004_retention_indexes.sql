-- Retention finds finished workflows by status and age, oldest first: a range scan of
-- exactly the rows it may delete, never of the RUNNING ones or of kept FAILED ones.
CREATE INDEX IF NOT EXISTS workflows_status_updated ON workflows (status, updated_at_ms);
CREATE INDEX IF NOT EXISTS settings_history_at ON settings_history (at_ms);
