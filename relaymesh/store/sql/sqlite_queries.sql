-- Every statement the SQLite backend runs, by name (see store/queries.py).
-- Parameters are named (:name). JSON lists are passed as text and read with json_each.

-- name: schema_version_create
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms INTEGER NOT NULL
);

-- name: schema_version_current
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: schema_version_insert
INSERT INTO schema_version (version, name, applied_at_ms) VALUES (:version, :name, :now);

-- name: data_version
PRAGMA data_version;

-- name: workflow_insert
INSERT INTO workflows (id, name, status, created_at_ms, updated_at_ms)
VALUES (:id, :name, :status, :now, :now);

-- name: steps_insert
INSERT INTO steps (
    id, workflow_id, name, agent, status, priority, max_attempts, base_backoff_ms,
    max_backoff_ms, depends_on, locks, n_locks, n_dependents, input, created_at_ms,
    updated_at_ms, ready_at_ms
) VALUES (
    :id, :workflow_id, :name, :agent, :status, :priority, :max_attempts, :base_backoff_ms,
    :max_backoff_ms, :depends_on, :locks, :n_locks, :n_dependents, :input, :now,
    :now, :ready_at
);

-- name: step_deps_insert
INSERT INTO step_deps (step_id, depends_on_id) VALUES (:step_id, :depends_on_id);

-- name: workflow_get
SELECT id, name, status, created_at_ms, updated_at_ms FROM workflows WHERE id = :id;

-- name: workflow_steps
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms,
       replays
FROM steps WHERE workflow_id = :workflow_id ORDER BY created_at_ms, rowid;

-- name: step_get
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms,
       replays
FROM steps WHERE id = :id;

-- name: steps_list
-- Newest first by (updated_at_ms, id); the row value is the keyset cursor (the last
-- row of the previous page; a first page passes a cursor above every row), so the
-- page is a range scan of steps_updated_id. Three variants, each with the index its
-- filter needs: a nullable filter (":x IS NULL OR") would hide the index.
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms,
       replays
FROM steps
WHERE (:agent IS NULL OR agent = :agent)
  AND (updated_at_ms, id) < (:before_ms, :before_id)
ORDER BY updated_at_ms DESC, id DESC
LIMIT :limit;

-- name: steps_list_status
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms
FROM steps
WHERE status = :status
  AND (:agent IS NULL OR agent = :agent)
  AND (updated_at_ms, id) < (:before_ms, :before_id)
ORDER BY updated_at_ms DESC, id DESC
LIMIT :limit;

-- name: steps_list_workflow
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms
FROM steps
WHERE workflow_id = :workflow_id
  AND (:status IS NULL OR status = :status)
  AND (:agent IS NULL OR agent = :agent)
  AND (updated_at_ms, id) < (:before_ms, :before_id)
ORDER BY updated_at_ms DESC, id DESC
LIMIT :limit;

-- name: claim_candidates
-- Claimable rows in claim order whose lock keys no RUNNING step holds.
SELECT id, locks, n_locks FROM steps INDEXED BY steps_claimable
WHERE status IN ('READY', 'RETRY_WAIT') AND ready_at_ms <= :now
  AND (:agents IS NULL OR agent IN (SELECT value FROM json_each(:agents)))
  AND agent NOT IN (SELECT value FROM json_each(:exclude_agents))
  AND (n_locks = 0 OR NOT EXISTS (
        SELECT 1 FROM json_each(steps.locks) AS k JOIN step_locks AS l ON l.lock_key = k.value))
ORDER BY priority, ready_at_ms
LIMIT :limit OFFSET :offset;

-- name: claim_candidates_low
-- The same for LOW priority only (the anti-starvation picks).
SELECT id, locks, n_locks FROM steps INDEXED BY steps_claimable
WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 2 AND ready_at_ms <= :now
  AND (:agents IS NULL OR agent IN (SELECT value FROM json_each(:agents)))
  AND agent NOT IN (SELECT value FROM json_each(:exclude_agents))
  AND (n_locks = 0 OR NOT EXISTS (
        SELECT 1 FROM json_each(steps.locks) AS k JOIN step_locks AS l ON l.lock_key = k.value))
ORDER BY priority, ready_at_ms
LIMIT :limit OFFSET :offset;

-- name: claim_update
UPDATE steps SET
    status = 'RUNNING',
    lease_token = lower(hex(randomblob(16))),
    lease_epoch = lease_epoch + 1,
    attempt = attempt + 1,
    owner_node = :node,
    lease_expires_at_ms = :now + :lease_ms,
    not_before_ms = NULL,
    started_at_ms = :now,
    heartbeat_at_ms = :now,
    updated_at_ms = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status IN ('READY', 'RETRY_WAIT')
RETURNING id, workflow_id, name, agent, input, attempt, max_attempts, base_backoff_ms,
          max_backoff_ms, priority, lease_token, lease_epoch, lease_expires_at_ms,
          ready_at_ms, locks, depends_on;

-- name: claim_events
INSERT INTO ownership_events (step_id, node, event, lease_epoch, at_ms)
SELECT id, :node, 'claimed', lease_epoch, :now FROM steps
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: claim_locks
-- :items is a JSON list of [lock_key, step_id]; BEGIN IMMEDIATE already serialises
-- claimers, so no key can be taken by another claimer meanwhile.
INSERT INTO step_locks (lock_key, step_id)
SELECT value ->> 0, value ->> 1 FROM json_each(:items);

-- name: locks_release
DELETE FROM step_locks WHERE step_id IN (SELECT value FROM json_each(:ids));

-- name: upstream_results
SELECT d.step_id, u.name, u.result FROM step_deps AS d JOIN steps AS u ON u.id = d.depends_on_id
WHERE d.step_id IN (SELECT value FROM json_each(:ids));

-- name: fence_heartbeat
-- :items is a JSON list of [step_id, lease_token, lease_epoch].
UPDATE steps SET lease_expires_at_ms = :now + :lease_ms, heartbeat_at_ms = :now
FROM (
    SELECT value ->> 0 AS id, value ->> 1 AS token, value ->> 2 AS epoch
    FROM json_each(:items)
) AS v
WHERE steps.id = v.id AND steps.lease_token = v.token AND steps.lease_epoch = v.epoch
  AND +steps.status = 'RUNNING'
RETURNING steps.id, steps.lease_expires_at_ms;

-- name: fence_success
-- :items is a JSON list of [step_id, lease_token, lease_epoch, result_json]; rows are
-- found by id (+status keeps the planner off the status index).
UPDATE steps SET
    status = 'SUCCEEDED', result = v.result, error = NULL, lease_expires_at_ms = NULL,
    finished_at_ms = :now, updated_at_ms = :now
FROM (
    SELECT value ->> 0 AS id, value ->> 1 AS token, value ->> 2 AS epoch,
           value ->> 3 AS result
    FROM json_each(:items)
) AS v
WHERE steps.id = v.id AND steps.lease_token = v.token AND steps.lease_epoch = v.epoch
  AND +steps.status = 'RUNNING'
RETURNING steps.id, steps.workflow_id, steps.n_locks, steps.n_dependents;

-- name: fence_retry
UPDATE steps SET
    status = 'RETRY_WAIT', error = :error, lease_expires_at_ms = NULL,
    not_before_ms = :now + :delay_ms, ready_at_ms = :now + :delay_ms, updated_at_ms = :now
WHERE id = :step_id AND lease_token = :token AND lease_epoch = :epoch AND status = 'RUNNING'
RETURNING workflow_id, n_locks;

-- name: fence_dead_letter
UPDATE steps SET
    status = 'DEAD_LETTER', error = :error, lease_expires_at_ms = NULL,
    finished_at_ms = :now, updated_at_ms = :now
WHERE id = :step_id AND lease_token = :token AND lease_epoch = :epoch AND status = 'RUNNING'
RETURNING workflow_id, n_locks;

-- name: fence_release
UPDATE steps SET
    status = 'READY', attempt = max(attempt - 1, 0), owner_node = NULL,
    lease_expires_at_ms = NULL, ready_at_ms = :now, updated_at_ms = :now
WHERE id = :step_id AND lease_token = :token AND lease_epoch = :epoch AND status = 'RUNNING'
RETURNING workflow_id, n_locks, lease_epoch;

-- name: conflicts_insert
-- One lease_conflicts row per rejected lease (:items, a JSON list of [step_id,
-- lease_token, lease_epoch]), with the step's actual epoch and status.
INSERT INTO lease_conflicts (step_id, node, event, expected_epoch, actual_epoch,
                             actual_status, at_ms)
SELECT v.value ->> 0, :node, :event, v.value ->> 2, s.lease_epoch, s.status, :now
FROM json_each(:items) AS v LEFT JOIN steps AS s ON s.id = v.value ->> 0
ORDER BY v.key
RETURNING step_id, actual_epoch, actual_status;

-- name: events_insert
-- :items is a JSON list of [step_id, node, lease_epoch].
INSERT INTO ownership_events (step_id, node, event, lease_epoch, detail, at_ms)
SELECT value ->> 0, value ->> 1, :event, value ->> 2, :detail, :now FROM json_each(:items);

-- name: ready_dependents
-- PENDING dependents of :ids (a JSON list) whose dependencies have now all succeeded.
UPDATE steps SET status = 'READY', ready_at_ms = :now, updated_at_ms = :now
WHERE +status = 'PENDING'
  AND id IN (SELECT step_id FROM step_deps
             WHERE depends_on_id IN (SELECT value FROM json_each(:ids)))
  AND NOT EXISTS (
        SELECT 1 FROM step_deps AS d JOIN steps AS u ON u.id = d.depends_on_id
        WHERE d.step_id = steps.id AND u.status <> 'SUCCEEDED');

-- name: deps_all_succeeded
SELECT NOT EXISTS (
    SELECT 1 FROM step_deps AS d JOIN steps AS u ON u.id = d.depends_on_id
    WHERE d.step_id = :step_id AND u.status <> 'SUCCEEDED');

-- name: workflow_shapes
-- What the workflow status rule needs (store/rows.py: workflow_status), for :ids.
SELECT w.id, w.status,
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id
            AND status IN ('READY', 'RUNNING', 'RETRY_WAIT')),
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id AND status = 'PENDING'),
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id AND status = 'DEAD_LETTER'),
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id AND status = 'CANCELLED')
FROM workflows AS w WHERE w.id IN (SELECT value FROM json_each(:ids));

-- name: workflow_set_status
UPDATE workflows SET status = :status, updated_at_ms = :now WHERE id = :id;

-- name: lease_states
SELECT id, lease_token, lease_epoch, status FROM steps
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: expired_running
SELECT id, workflow_id, owner_node, attempt, max_attempts, n_locks, lease_epoch
FROM steps INDEXED BY steps_running_expiry
WHERE status = 'RUNNING' AND lease_expires_at_ms < :now
ORDER BY lease_expires_at_ms LIMIT :limit;

-- name: dead_owner_running
SELECT id, workflow_id, owner_node, attempt, max_attempts, n_locks, lease_epoch
FROM steps INDEXED BY steps_running_owner
WHERE status = 'RUNNING' AND owner_node IN (
    SELECT name FROM mesh_nodes WHERE status IN ('DEAD', 'LEFT'))
  AND coalesce(heartbeat_at_ms, started_at_ms) <= :now - :stale_after_ms
ORDER BY started_at_ms LIMIT :limit;

-- name: dead_owner_fresh_count
-- RUNNING steps of DEAD/LEFT owners left alone because their leases are still heartbeated.
SELECT count(*) FROM steps INDEXED BY steps_running_owner
WHERE status = 'RUNNING' AND owner_node IN (
    SELECT name FROM mesh_nodes WHERE status IN ('DEAD', 'LEFT'))
  AND coalesce(heartbeat_at_ms, started_at_ms) > :now - :stale_after_ms;

-- name: named_owner_fresh_count
SELECT count(*) FROM steps INDEXED BY steps_running_owner
WHERE status = 'RUNNING' AND owner_node IN (SELECT value FROM json_each(:nodes))
  AND coalesce(heartbeat_at_ms, started_at_ms) > :now - :stale_after_ms;

-- name: named_owner_running
SELECT id, workflow_id, owner_node, attempt, max_attempts, n_locks, lease_epoch
FROM steps INDEXED BY steps_running_owner
WHERE status = 'RUNNING' AND owner_node IN (SELECT value FROM json_each(:nodes))
  AND coalesce(heartbeat_at_ms, started_at_ms) <= :now - :stale_after_ms
ORDER BY started_at_ms LIMIT :limit;

-- name: reclaim_ready
UPDATE steps SET
    status = 'READY', lease_epoch = lease_epoch + 1, owner_node = NULL,
    lease_expires_at_ms = NULL, ready_at_ms = :now, updated_at_ms = :now
WHERE id = :step_id AND status = 'RUNNING'
RETURNING lease_epoch;

-- name: reclaim_dead_letter
UPDATE steps SET
    status = 'DEAD_LETTER', lease_epoch = lease_epoch + 1, error = :error,
    lease_expires_at_ms = NULL, finished_at_ms = :now, updated_at_ms = :now
WHERE id = :step_id AND status = 'RUNNING'
RETURNING lease_epoch;

-- name: promote_retries
UPDATE steps SET status = 'READY', updated_at_ms = :now
WHERE id IN (
    SELECT id FROM steps INDEXED BY steps_claimable
    WHERE status IN ('READY', 'RETRY_WAIT') AND +status = 'RETRY_WAIT' AND ready_at_ms <= :now
    ORDER BY priority, ready_at_ms LIMIT :limit);

-- name: cancel_waiting
UPDATE steps SET status = 'CANCELLED', lease_expires_at_ms = NULL,
    finished_at_ms = :now, updated_at_ms = :now
WHERE workflow_id = :workflow_id AND status IN ('PENDING', 'READY', 'RETRY_WAIT');

-- name: cancel_running
UPDATE steps SET status = 'CANCELLED', lease_epoch = lease_epoch + 1,
    lease_expires_at_ms = NULL, finished_at_ms = :now, updated_at_ms = :now
WHERE workflow_id = :workflow_id AND status = 'RUNNING'
RETURNING id, owner_node, lease_epoch, n_locks;

-- name: replay_candidates
SELECT id, workflow_id FROM steps
WHERE status = :status
  AND (:agent IS NULL OR agent = :agent)
  AND (:workflow_id IS NULL OR workflow_id = :workflow_id)
ORDER BY updated_at_ms, rowid LIMIT :limit;

-- name: replay_update
-- The attempt counter is kept; max_attempts grows by the step's budget (rows.replayed).
UPDATE steps SET
    status = :new_status, max_attempts = :max_attempts, replays = :replays,
    owner_node = NULL, lease_expires_at_ms = NULL,
    not_before_ms = NULL, finished_at_ms = NULL,
    ready_at_ms = CASE WHEN :new_status = 'READY' THEN :now ELSE NULL END,
    updated_at_ms = :now
WHERE id = :step_id AND status IN ('DEAD_LETTER', 'CANCELLED')
RETURNING workflow_id, lease_epoch;

-- name: leader_get
SELECT node, epoch, expires_at_ms, :now FROM leader_lease WHERE id = 1;

-- name: leader_set
-- An upsert: a new SQLite file has no leader row yet (the PostgreSQL migration makes it).
INSERT INTO leader_lease (id, node, epoch, expires_at_ms) VALUES (1, :node, :epoch, :now + :lease_ms)
ON CONFLICT (id) DO UPDATE SET
    node = excluded.node, epoch = excluded.epoch, expires_at_ms = excluded.expires_at_ms
RETURNING expires_at_ms;

-- name: leader_release
UPDATE leader_lease SET expires_at_ms = 0 WHERE id = 1 AND node = :node AND epoch = :epoch;

-- name: mesh_upsert
-- The membership merge rule: higher incarnation wins; at equal incarnation
-- DEAD/LEFT > SUSPECT > ALIVE. Anything else leaves the row as it is.
INSERT INTO mesh_nodes (name, address, status, incarnation, metadata, status_changed_at_ms,
                        updated_at_ms, reporter)
VALUES (:name, :address, :status, :incarnation, :metadata, :status_changed_at, :now, :reporter)
ON CONFLICT (name) DO UPDATE SET
    address = excluded.address,
    status = excluded.status,
    incarnation = excluded.incarnation,
    metadata = excluded.metadata,
    status_changed_at_ms = CASE WHEN mesh_nodes.status = excluded.status
        THEN mesh_nodes.status_changed_at_ms ELSE excluded.status_changed_at_ms END,
    updated_at_ms = excluded.updated_at_ms,
    reporter = excluded.reporter
WHERE excluded.incarnation > mesh_nodes.incarnation
   OR (excluded.incarnation = mesh_nodes.incarnation
       AND (CASE excluded.status WHEN 'ALIVE' THEN 0 WHEN 'SUSPECT' THEN 1 ELSE 2 END)
         > (CASE mesh_nodes.status WHEN 'ALIVE' THEN 0 WHEN 'SUSPECT' THEN 1 ELSE 2 END));

-- name: mesh_list
SELECT name, address, status, incarnation, metadata, status_changed_at_ms, updated_at_ms, reporter
FROM mesh_nodes ORDER BY name;

-- name: mesh_prune
DELETE FROM mesh_nodes WHERE name IN (
    SELECT name FROM mesh_nodes
    WHERE status IN ('DEAD', 'LEFT') AND status_changed_at_ms < :now - :older_than_ms
    ORDER BY status_changed_at_ms LIMIT :limit)
RETURNING name;

-- name: running_by_owner_status
SELECT coalesce(m.status, 'UNKNOWN'), count(*)
FROM steps AS s LEFT JOIN mesh_nodes AS m ON m.name = s.owner_node
WHERE s.status = 'RUNNING'
GROUP BY 1;

-- name: step_counts
SELECT status, count(*) FROM steps GROUP BY status;

-- name: queue_lag
SELECT coalesce(:now - min(m), 0) FROM (
    SELECT min(ready_at_ms) AS m FROM steps
    WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 0 AND ready_at_ms <= :now
    UNION ALL
    SELECT min(ready_at_ms) FROM steps
    WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 1 AND ready_at_ms <= :now
    UNION ALL
    SELECT min(ready_at_ms) FROM steps
    WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 2 AND ready_at_ms <= :now);

-- name: ownership_events_list
SELECT id, step_id, node, event, lease_epoch, at_ms FROM ownership_events
WHERE (:since IS NULL OR at_ms >= :since) AND id < :before_id
ORDER BY id DESC LIMIT :limit;

-- name: conflicts_list
SELECT id, step_id, node, event, expected_epoch, actual_epoch, actual_status, at_ms
FROM lease_conflicts
WHERE (:since IS NULL OR at_ms >= :since)
ORDER BY id DESC LIMIT :limit;

-- name: conflicts_total
SELECT count(*) FROM lease_conflicts WHERE (:since IS NULL OR at_ms >= :since);

-- name: conflicts_by_step
SELECT step_id, count(*) AS n FROM lease_conflicts WHERE (:since IS NULL OR at_ms >= :since)
GROUP BY step_id ORDER BY n DESC, step_id LIMIT :top;

-- name: conflicts_by_node
SELECT node, count(*) AS n FROM lease_conflicts WHERE (:since IS NULL OR at_ms >= :since)
GROUP BY node ORDER BY n DESC, node LIMIT :top;

-- name: conflicts_by_event
SELECT event, count(*) AS n FROM lease_conflicts WHERE (:since IS NULL OR at_ms >= :since)
GROUP BY event ORDER BY n DESC, event LIMIT :top;

-- name: audit_insert
INSERT INTO audit_log (at_ms, actor, action, target, details)
VALUES (:now, :actor, :action, :target, :details);

-- name: audit_query
SELECT id, at_ms, actor, action, target, details FROM audit_log
WHERE (:task_id IS NULL OR target = :task_id OR instr(details, '"' || :task_id || '"') > 0)
  AND (:action IS NULL OR action = :action)
  AND (:from_ms IS NULL OR at_ms >= :from_ms)
  AND (:to_ms IS NULL OR at_ms <= :to_ms)
  AND id < :before_id
ORDER BY id DESC LIMIT :limit;

-- name: settings_insert
INSERT INTO settings_history (at_ms, node, fields) VALUES (:now, :node, :fields);

-- name: settings_list
SELECT id, at_ms, node, fields FROM settings_history ORDER BY id DESC LIMIT :limit;

-- name: leases_held_by
-- RUNNING steps a node owns, with their leases (the partial index steps_running_owner).
SELECT id, lease_token, lease_epoch FROM steps
WHERE status = 'RUNNING' AND owner_node = :node
ORDER BY id;

-- == retention (store/sqlite.py "retention" section; work/retention.py) =======

-- name: retention_workflow_candidates
-- Final workflows of one status past the cutoff, oldest first, none of whose steps can
-- still run (belt and braces: a final workflow has none).
-- With :ids (a JSON list) only those: the batch that was archived first.
SELECT w.id, w.updated_at_ms FROM workflows AS w
WHERE w.status = :status AND w.updated_at_ms < :cutoff
  AND (:ids IS NULL OR w.id IN (SELECT value FROM json_each(:ids)))
  AND NOT EXISTS (SELECT 1 FROM steps AS s WHERE s.workflow_id = w.id
                  AND s.status IN ('READY', 'RUNNING', 'RETRY_WAIT'))
ORDER BY w.updated_at_ms LIMIT :limit;

-- name: retention_count_workflows
SELECT count(*) FROM workflows AS w
WHERE w.status = :status AND w.updated_at_ms < :cutoff
  AND NOT EXISTS (SELECT 1 FROM steps AS s WHERE s.workflow_id = w.id
                  AND s.status IN ('READY', 'RUNNING', 'RETRY_WAIT'));

-- name: retention_delete_locks
DELETE FROM step_locks WHERE step_id IN (
    SELECT id FROM steps WHERE workflow_id IN (SELECT value FROM json_each(:ids)));

-- name: retention_delete_deps
DELETE FROM step_deps WHERE step_id IN (
    SELECT id FROM steps WHERE workflow_id IN (SELECT value FROM json_each(:ids)));

-- name: retention_delete_events
-- No index by step (it slowed claims): the at_ms range bounds the scan to events no
-- younger than the newest workflow of the batch (plus a margin).
DELETE FROM ownership_events WHERE at_ms <= :upto AND step_id IN (
    SELECT id FROM steps WHERE workflow_id IN (SELECT value FROM json_each(:ids)));

-- name: retention_delete_keys
-- The workflows' idempotency keys, but never a schedule's latest fire: the scheduler
-- reads it (schedule_last_fire) to fire each tick exactly once.
DELETE FROM workflow_keys WHERE workflow_id IN (SELECT value FROM json_each(:ids))
  AND NOT (schedule IS NOT NULL AND fire_at_ms = (
      SELECT max(k.fire_at_ms) FROM workflow_keys AS k WHERE k.schedule = workflow_keys.schedule));

-- name: retention_delete_steps
DELETE FROM steps WHERE workflow_id IN (SELECT value FROM json_each(:ids));

-- name: retention_delete_workflows
DELETE FROM workflows WHERE id IN (SELECT value FROM json_each(:ids));

-- name: archive_workflows
SELECT * FROM workflows WHERE id IN (SELECT value FROM json_each(:ids));

-- name: archive_steps
SELECT * FROM steps WHERE workflow_id IN (SELECT value FROM json_each(:ids));

-- name: archive_deps
SELECT d.* FROM step_deps AS d JOIN steps AS s ON s.id = d.step_id
WHERE s.workflow_id IN (SELECT value FROM json_each(:ids));

-- name: archive_events
-- Bounded by at_ms like retention_delete_events (no index by step).
SELECT * FROM ownership_events WHERE at_ms <= :upto AND step_id IN (
    SELECT id FROM steps WHERE workflow_id IN (SELECT value FROM json_each(:ids)))
ORDER BY id;

-- name: archive_keys
SELECT * FROM workflow_keys WHERE workflow_id IN (SELECT value FROM json_each(:ids));

-- name: restore_workflow_count
SELECT count(*) FROM workflows;

-- name: restore_workflow_exists
SELECT 1 FROM workflows WHERE id = :id;

-- name: retention_delete_conflicts
DELETE FROM lease_conflicts WHERE id IN (
    SELECT id FROM lease_conflicts WHERE at_ms < :cutoff ORDER BY at_ms LIMIT :limit);

-- name: retention_delete_audit
DELETE FROM audit_log WHERE id IN (
    SELECT id FROM audit_log WHERE at_ms < :cutoff ORDER BY at_ms LIMIT :limit);

-- name: retention_delete_settings_history
DELETE FROM settings_history WHERE id IN (
    SELECT id FROM settings_history WHERE at_ms < :cutoff ORDER BY at_ms LIMIT :limit);

-- name: retention_count_conflicts
SELECT count(*) FROM lease_conflicts WHERE at_ms < :cutoff;

-- name: retention_count_audit
SELECT count(*) FROM audit_log WHERE at_ms < :cutoff;

-- name: retention_count_settings_history
SELECT count(*) FROM settings_history WHERE at_ms < :cutoff;

-- name: stats_bytes
-- Bytes per table including its indexes (needs SQLITE_ENABLE_DBSTAT_VTAB).
SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat AS d
LEFT JOIN sqlite_schema AS m ON m.name = d.name GROUP BY 1;

-- name: stats_freelist_count
PRAGMA freelist_count;

-- name: stats_auto_vacuum
PRAGMA auto_vacuum;

-- Idempotency keys, workflow listing and schedule fires (migration 0005).

-- name: workflow_key_claim
INSERT INTO workflow_keys (idempotency_key, workflow_id, schedule, fire_at_ms, created_at_ms)
VALUES (:key, :workflow_id, :schedule, :fire_at_ms, :now)
ON CONFLICT (idempotency_key) DO NOTHING;

-- name: workflow_key_get
SELECT workflow_id FROM workflow_keys WHERE idempotency_key = :key;

-- name: workflows_list
SELECT w.id, w.name, w.status, w.created_at_ms, w.updated_at_ms, k.idempotency_key, k.schedule
FROM workflows w LEFT JOIN workflow_keys k ON k.workflow_id = w.id
WHERE (:status IS NULL OR w.status = :status)
  AND (:name IS NULL OR w.name = :name)
  AND (:since IS NULL OR w.created_at_ms >= :since)
  AND (w.created_at_ms, w.id) < (:before_ms, :before_id)
ORDER BY w.created_at_ms DESC, w.id DESC LIMIT :limit;

-- name: workflows_step_counts
SELECT workflow_id, status, count(*) FROM steps
WHERE workflow_id IN (SELECT value FROM json_each(:ids))
GROUP BY workflow_id, status;

-- name: schedule_last_fire
SELECT fire_at_ms, workflow_id FROM workflow_keys
WHERE schedule = :schedule ORDER BY fire_at_ms DESC LIMIT 1;

-- == dispatch statistics (migration 0006; work/dispatch.py) =====================

-- name: dispatch_upsert
INSERT INTO dispatch_stats (node, agent, bucket_ms, reason, count)
VALUES (:node, :agent, :bucket_ms, :reason, :count)
ON CONFLICT (node, agent, bucket_ms, reason) DO UPDATE SET count = excluded.count;

-- name: dispatch_prune
DELETE FROM dispatch_stats WHERE bucket_ms < :cutoff;

-- name: dispatch_totals
SELECT node, agent, reason, SUM(count) FROM dispatch_stats
WHERE bucket_ms >= :since
GROUP BY node, agent, reason
ORDER BY node, agent, reason;
