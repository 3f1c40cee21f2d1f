-- RelayMesh schema v1 (PostgreSQL). Times are bigint ms since the epoch from the
-- server's clock_timestamp(); JSON documents as text (parsed by the application).

CREATE OR REPLACE FUNCTION rm_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE TABLE workflows (
    id text PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL
);
CREATE INDEX workflows_updated ON workflows (updated_at_ms);

CREATE TABLE steps (
    id text PRIMARY KEY,
    workflow_id text NOT NULL REFERENCES workflows (id),
    name text NOT NULL,
    agent text NOT NULL,
    status text NOT NULL,
    priority smallint NOT NULL,
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    base_backoff_ms bigint NOT NULL,
    max_backoff_ms bigint NOT NULL,
    lease_token text,
    lease_epoch bigint NOT NULL DEFAULT 0,
    owner_node text,
    lease_expires_at_ms bigint,
    not_before_ms bigint,
    depends_on text[] NOT NULL DEFAULT '{}',
    locks text[] NOT NULL DEFAULT '{}',
    n_locks integer NOT NULL DEFAULT 0,
    n_dependents integer NOT NULL DEFAULT 0,
    input text,
    result text,
    error text,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    ready_at_ms bigint,
    started_at_ms bigint,
    finished_at_ms bigint,
    seq bigserial,
    UNIQUE (workflow_id, name)
);
-- Claims scan this in claim order; RETRY_WAIT rows carry ready_at_ms = not_before_ms.
CREATE INDEX steps_claimable ON steps (priority, ready_at_ms)
    WHERE status IN ('READY', 'RETRY_WAIT');
CREATE INDEX steps_running_expiry ON steps (lease_expires_at_ms) WHERE status = 'RUNNING';
CREATE INDEX steps_running_owner ON steps (owner_node) WHERE status = 'RUNNING';
CREATE INDEX steps_workflow_status ON steps (workflow_id, status);
-- No index leads with status alone: with stale statistics the planner would scan all
-- RUNNING/PENDING rows through it instead of going by id. Dead letters get their own.
CREATE INDEX steps_dead_letter ON steps (updated_at_ms) WHERE status = 'DEAD_LETTER';
CREATE INDEX steps_updated ON steps (updated_at_ms);

CREATE TABLE step_deps (
    step_id text NOT NULL REFERENCES steps (id),
    depends_on_id text NOT NULL REFERENCES steps (id),
    PRIMARY KEY (step_id, depends_on_id)
);
CREATE INDEX step_deps_upstream ON step_deps (depends_on_id);

-- One row per lock key held by a RUNNING step: the primary key is the exclusivity.
CREATE TABLE step_locks (
    lock_key text PRIMARY KEY,
    step_id text NOT NULL REFERENCES steps (id)
);
CREATE INDEX step_locks_step ON step_locks (step_id);

CREATE TABLE ownership_events (
    id bigserial PRIMARY KEY,
    step_id text NOT NULL,
    node text,
    event text NOT NULL,
    lease_epoch bigint NOT NULL,
    detail text,
    at_ms bigint NOT NULL
);
CREATE INDEX ownership_events_at ON ownership_events (at_ms);
CREATE INDEX ownership_events_step ON ownership_events (step_id);

CREATE TABLE lease_conflicts (
    id bigserial PRIMARY KEY,
    step_id text NOT NULL,
    node text NOT NULL,
    event text NOT NULL,
    expected_epoch bigint NOT NULL,
    actual_epoch bigint,
    actual_status text,
    at_ms bigint NOT NULL
);
CREATE INDEX lease_conflicts_at ON lease_conflicts (at_ms);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at_ms bigint NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target text,
    details text NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
CREATE INDEX audit_log_action ON audit_log (action, at_ms);
CREATE INDEX audit_log_target ON audit_log (target);

CREATE TABLE mesh_nodes (
    name text PRIMARY KEY,
    address text NOT NULL,
    status text NOT NULL,
    incarnation bigint NOT NULL,
    metadata text NOT NULL DEFAULT '{}',
    status_changed_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    reporter text
);
CREATE INDEX mesh_nodes_status ON mesh_nodes (status, status_changed_at_ms);

CREATE TABLE settings_history (
    id bigserial PRIMARY KEY,
    at_ms bigint NOT NULL,
    node text NOT NULL,
    fields text NOT NULL
);

CREATE TABLE leader_lease (
    id integer PRIMARY KEY CHECK (id = 1),
    node text,
    epoch bigint NOT NULL,
    expires_at_ms bigint NOT NULL
);

-- The single leadership row always exists; epoch 0 means nobody has held it yet.
INSERT INTO leader_lease (id, node, epoch, expires_at_ms) VALUES (1, NULL, 0, 0);
