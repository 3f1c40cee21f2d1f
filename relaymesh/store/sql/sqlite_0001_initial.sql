-- RelayMesh schema v1 (SQLite). Times are integer ms since the epoch; JSON as text.

CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX workflows_updated ON workflows (updated_at_ms);

CREATE TABLE steps (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows (id),
    name TEXT NOT NULL,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    base_backoff_ms INTEGER NOT NULL,
    max_backoff_ms INTEGER NOT NULL,
    lease_token TEXT,
    lease_epoch INTEGER NOT NULL DEFAULT 0,
    owner_node TEXT,
    lease_expires_at_ms INTEGER,
    not_before_ms INTEGER,
    depends_on TEXT NOT NULL DEFAULT '[]',
    locks TEXT NOT NULL DEFAULT '[]',
    n_locks INTEGER NOT NULL DEFAULT 0,
    n_dependents INTEGER NOT NULL DEFAULT 0,
    input TEXT,
    result TEXT,
    error TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    ready_at_ms INTEGER,
    started_at_ms INTEGER,
    finished_at_ms INTEGER,
    UNIQUE (workflow_id, name)
);
-- Claims scan this in claim order; RETRY_WAIT rows carry ready_at_ms = not_before_ms.
CREATE INDEX steps_claimable ON steps (priority, ready_at_ms)
    WHERE status IN ('READY', 'RETRY_WAIT');
CREATE INDEX steps_running_expiry ON steps (lease_expires_at_ms) WHERE status = 'RUNNING';
CREATE INDEX steps_running_owner ON steps (owner_node) WHERE status = 'RUNNING';
CREATE INDEX steps_workflow_status ON steps (workflow_id, status);
CREATE INDEX steps_status_updated ON steps (status, updated_at_ms);
CREATE INDEX steps_updated ON steps (updated_at_ms);

CREATE TABLE step_deps (
    step_id TEXT NOT NULL REFERENCES steps (id),
    depends_on_id TEXT NOT NULL REFERENCES steps (id),
    PRIMARY KEY (step_id, depends_on_id)
) WITHOUT ROWID;
CREATE INDEX step_deps_upstream ON step_deps (depends_on_id);

-- One row per lock key held by a RUNNING step: the primary key is the exclusivity.
CREATE TABLE step_locks (
    lock_key TEXT PRIMARY KEY,
    step_id TEXT NOT NULL REFERENCES steps (id)
) WITHOUT ROWID;
CREATE INDEX step_locks_step ON step_locks (step_id);

CREATE TABLE ownership_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id TEXT NOT NULL,
    node TEXT,
    event TEXT NOT NULL,
    lease_epoch INTEGER NOT NULL,
    detail TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX ownership_events_at ON ownership_events (at_ms);
CREATE INDEX ownership_events_step ON ownership_events (step_id);

CREATE TABLE lease_conflicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id TEXT NOT NULL,
    node TEXT NOT NULL,
    event TEXT NOT NULL,
    expected_epoch INTEGER NOT NULL,
    actual_epoch INTEGER,
    actual_status TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX lease_conflicts_at ON lease_conflicts (at_ms);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
CREATE INDEX audit_log_action ON audit_log (action, at_ms);
CREATE INDEX audit_log_target ON audit_log (target);

CREATE TABLE mesh_nodes (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    status TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    status_changed_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    reporter TEXT
);
CREATE INDEX mesh_nodes_status ON mesh_nodes (status, status_changed_at_ms);

CREATE TABLE settings_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    node TEXT NOT NULL,
    fields TEXT NOT NULL
);

CREATE TABLE leader_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    node TEXT,
    epoch INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
