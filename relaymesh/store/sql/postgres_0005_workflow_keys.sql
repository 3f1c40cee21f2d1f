-- Idempotency keys of submitted workflows. The primary key is the promise: a second
-- submit with the same key finds this row and writes nothing. A schedule's fire sets
-- schedule and fire_at_ms (key schedule:NAME:<fire_at_ms>), so the last fire of each
-- schedule is one indexed lookup, whichever node fired it. No foreign key: retention
-- may prune the workflow; the key row then still stops a late repeat.
CREATE TABLE workflow_keys (
    idempotency_key TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    schedule TEXT,
    fire_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX workflow_keys_workflow ON workflow_keys (workflow_id);
CREATE INDEX workflow_keys_schedule ON workflow_keys (schedule, fire_at_ms);
CREATE INDEX workflows_created ON workflows (created_at_ms, id);
