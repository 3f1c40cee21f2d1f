-- Every statement the PostgreSQL backend runs, by name (see store/queries.py).
-- Parameters are positional ($n); asyncpg prepares and caches each one.
-- Writers that change a step in a way that can change its workflow's status or its
-- dependents lock the workflow rows first (workflows_lock*), always in id order: that
-- serialises "last dependency succeeded" decisions and keeps lock order deadlock-free.
-- `(status || '') = 'X'` where rows are found by id: it keeps the planner on the primary
-- key (no partial index on status can match it), whatever its statistics say.
-- In WHERE clauses the clock is read as (SELECT rm_now_ms()): evaluated once per
-- statement, so the planner can use it as an index bound (a bare volatile call cannot).

-- name: migrate_lock
SELECT pg_advisory_xact_lock(7262738119071220161);

-- name: schema_version_create
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at_ms bigint NOT NULL
);

-- name: schema_version_current
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: schema_version_insert
INSERT INTO schema_version (version, name, applied_at_ms)
VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);

-- name: now_ms
SELECT rm_now_ms();

-- name: notify_work
SELECT pg_notify('relaymesh_work', '');

-- name: workflow_insert
INSERT INTO workflows (id, name, status, created_at_ms, updated_at_ms)
VALUES ($1, $2, $3, $4, $4);

-- name: steps_insert
INSERT INTO steps (
    id, workflow_id, name, agent, status, priority, max_attempts, base_backoff_ms,
    max_backoff_ms, depends_on, locks, n_locks, n_dependents, input, created_at_ms,
    updated_at_ms, ready_at_ms
)
SELECT v.id, $1::text, v.name, v.agent, v.status, v.priority, v.max_attempts, v.base_backoff_ms,
       v.max_backoff_ms, ARRAY(SELECT jsonb_array_elements_text(v.depends_on::jsonb)),
       ARRAY(SELECT jsonb_array_elements_text(v.locks::jsonb)),
       jsonb_array_length(v.locks::jsonb), v.n_dependents, v.input, $2::bigint, $2::bigint,
       CASE WHEN v.status = 'READY' THEN $2::bigint END
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::smallint[], $8::int[],
            $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::int[], $14::text[])
     WITH ORDINALITY AS v(id, name, agent, status, priority, max_attempts, base_backoff_ms,
                          max_backoff_ms, depends_on, locks, n_dependents, input, ord)
ORDER BY v.ord;

-- name: step_deps_insert
INSERT INTO step_deps (step_id, depends_on_id)
SELECT * FROM unnest($1::text[], $2::text[]);

-- name: workflow_get
SELECT id, name, status, created_at_ms, updated_at_ms FROM workflows WHERE id = $1;

-- name: workflow_steps
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms,
       replays
FROM steps WHERE workflow_id = $1 ORDER BY created_at_ms, seq;

-- name: step_get
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms,
       replays
FROM steps WHERE id = $1;

-- name: steps_list
-- Newest first by (updated_at_ms, id); the row value is the keyset cursor (the last
-- row of the previous page; a first page passes a cursor above every row), so the
-- page is a range scan of steps_updated_id. Three variants, each with the index its
-- filter needs: a nullable filter would hide the index from a generic plan.
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms,
       replays
FROM steps
WHERE ($1::text IS NULL OR agent = $1)
  AND (updated_at_ms, id) < ($2::bigint, $3::text)
ORDER BY updated_at_ms DESC, id DESC
LIMIT $4;

-- name: steps_list_status
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms
FROM steps
WHERE status = $5
  AND ($1::text IS NULL OR agent = $1)
  AND (updated_at_ms, id) < ($2::bigint, $3::text)
ORDER BY updated_at_ms DESC, id DESC
LIMIT $4;

-- name: steps_list_workflow
SELECT id, workflow_id, name, agent, status, priority, attempt, max_attempts, lease_epoch,
       owner_node, lease_expires_at_ms, not_before_ms, depends_on, locks, input, result,
       error, created_at_ms, updated_at_ms, ready_at_ms, started_at_ms, finished_at_ms
FROM steps
WHERE workflow_id = $5
  AND ($6::text IS NULL OR status = $6)
  AND ($1::text IS NULL OR agent = $1)
  AND (updated_at_ms, id) < ($2::bigint, $3::text)
ORDER BY updated_at_ms DESC, id DESC
LIMIT $4;

-- name: claim_candidates
-- Claimable rows in claim order whose lock keys no RUNNING step holds; rows another
-- claimer has locked are skipped, never waited for. $4: ids already looked at.
SELECT id, locks FROM steps
WHERE status IN ('READY', 'RETRY_WAIT') AND ready_at_ms <= (SELECT rm_now_ms())
  AND ($1::text[] IS NULL OR agent = ANY ($1::text[]))
  AND NOT (agent = ANY ($2::text[]))
  AND NOT (id = ANY ($4::text[]))
  AND (n_locks = 0 OR NOT EXISTS (
        SELECT 1 FROM step_locks AS l WHERE l.lock_key = ANY (steps.locks)))
ORDER BY priority, ready_at_ms
LIMIT $3
FOR UPDATE SKIP LOCKED;

-- name: claim_candidates_low
-- The same for LOW priority only (the anti-starvation picks).
SELECT id, locks FROM steps
WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 2 AND ready_at_ms <= (SELECT rm_now_ms())
  AND ($1::text[] IS NULL OR agent = ANY ($1::text[]))
  AND NOT (agent = ANY ($2::text[]))
  AND NOT (id = ANY ($4::text[]))
  AND (n_locks = 0 OR NOT EXISTS (
        SELECT 1 FROM step_locks AS l WHERE l.lock_key = ANY (steps.locks)))
ORDER BY priority, ready_at_ms
LIMIT $3
FOR UPDATE SKIP LOCKED;

-- name: claim_fast
-- The whole claim in one statement (one round trip, autocommit) when none of the
-- first $3 candidates needs a lock key; otherwise it claims nothing and reports how
-- many did ("locked"), and the caller takes the general path (claim_candidates...).
-- $6: how many LOW steps come first (the anti-starvation pick; 0: none); "ord" keeps
-- them first in the answer.
WITH low AS (
    SELECT id, n_locks, 0 AS ord FROM steps
    WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 2
      AND ready_at_ms <= (SELECT rm_now_ms())
      AND ($1::text[] IS NULL OR agent = ANY ($1::text[]))
      AND NOT (agent = ANY ($2::text[]))
      AND (n_locks = 0 OR NOT EXISTS (
            SELECT 1 FROM step_locks AS l WHERE l.lock_key = ANY (steps.locks)))
    ORDER BY ready_at_ms
    LIMIT least($6::int, $3::int)
    FOR UPDATE SKIP LOCKED
), rest AS (
    SELECT id, n_locks, 1 AS ord FROM steps
    WHERE status IN ('READY', 'RETRY_WAIT') AND ready_at_ms <= (SELECT rm_now_ms())
      AND ($1::text[] IS NULL OR agent = ANY ($1::text[]))
      AND NOT (agent = ANY ($2::text[]))
      AND NOT (id IN (SELECT id FROM low))
      AND (n_locks = 0 OR NOT EXISTS (
            SELECT 1 FROM step_locks AS l WHERE l.lock_key = ANY (steps.locks)))
    ORDER BY priority, ready_at_ms
    LIMIT $3::int - (SELECT count(*) FROM low)
    FOR UPDATE SKIP LOCKED
), candidates AS (
    SELECT * FROM low UNION ALL SELECT * FROM rest
), chosen AS (
    SELECT id FROM candidates WHERE NOT EXISTS (SELECT 1 FROM candidates WHERE n_locks > 0)
), claimed AS (
    UPDATE steps SET
        status = 'RUNNING',
        lease_token = replace(gen_random_uuid()::text, '-', ''),
        lease_epoch = lease_epoch + 1,
        attempt = attempt + 1,
        owner_node = $4,
        lease_expires_at_ms = rm_now_ms() + $5,
        not_before_ms = NULL,
        started_at_ms = rm_now_ms(),
        heartbeat_at_ms = rm_now_ms(),
        updated_at_ms = rm_now_ms()
    WHERE id IN (SELECT id FROM chosen)
    RETURNING id, workflow_id, name, agent, input, attempt, max_attempts, base_backoff_ms,
              max_backoff_ms, priority, lease_token, lease_epoch, lease_expires_at_ms,
              ready_at_ms, locks, depends_on, started_at_ms
), events AS (
    INSERT INTO ownership_events (step_id, node, event, lease_epoch, at_ms)
    SELECT id, $4, 'claimed', lease_epoch, started_at_ms FROM claimed
)
SELECT c.*,
       (SELECT json_object_agg(u.name, u.result::json)::text
        FROM step_deps AS d JOIN steps AS u ON u.id = d.depends_on_id
        WHERE d.step_id = c.id) AS upstream,
       (SELECT count(*) FROM candidates WHERE n_locks > 0) AS locked,
       (SELECT min(ord) FROM candidates AS k WHERE k.id = c.id) AS ord
FROM claimed AS c
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, (SELECT count(*) FROM candidates WHERE n_locks > 0), NULL
WHERE NOT EXISTS (SELECT 1 FROM claimed);

-- name: claim_locks
-- Take a step's lock keys without ever waiting: the advisory try-lock fails at once if
-- another claimer is taking the same key right now; the insert skips committed holders.
WITH free AS (
    SELECT bool_and(pg_try_advisory_xact_lock(hashtext('relaymesh:' || k))) AS ok
    FROM unnest($1::text[]) AS k
)
INSERT INTO step_locks (lock_key, step_id)
SELECT k, $2 FROM unnest($1::text[]) AS k WHERE (SELECT ok FROM free)
ON CONFLICT DO NOTHING
RETURNING lock_key;

-- name: claim_update
WITH claimed AS (
    UPDATE steps SET
        status = 'RUNNING',
        lease_token = replace(gen_random_uuid()::text, '-', ''),
        lease_epoch = lease_epoch + 1,
        attempt = attempt + 1,
        owner_node = $2,
        lease_expires_at_ms = rm_now_ms() + $3,
        not_before_ms = NULL,
        started_at_ms = rm_now_ms(),
        heartbeat_at_ms = rm_now_ms(),
        updated_at_ms = rm_now_ms()
    WHERE id = ANY ($1::text[])
    RETURNING id, workflow_id, name, agent, input, attempt, max_attempts, base_backoff_ms,
              max_backoff_ms, priority, lease_token, lease_epoch, lease_expires_at_ms,
              ready_at_ms, locks, depends_on, started_at_ms
), events AS (
    INSERT INTO ownership_events (step_id, node, event, lease_epoch, at_ms)
    SELECT id, $2, 'claimed', lease_epoch, started_at_ms FROM claimed
)
SELECT * FROM claimed;

-- name: locks_release
DELETE FROM step_locks WHERE step_id = ANY ($1::text[]);

-- name: upstream_results
SELECT d.step_id, u.name, u.result FROM step_deps AS d JOIN steps AS u ON u.id = d.depends_on_id
WHERE d.step_id = ANY ($1::text[]);

-- name: workflows_lock_for_steps
SELECT id FROM workflows
WHERE id IN (SELECT workflow_id FROM steps WHERE id = ANY ($1::text[]))
ORDER BY id FOR UPDATE;

-- name: workflows_lock
SELECT id FROM workflows WHERE id = ANY ($1::text[]) ORDER BY id FOR UPDATE;

-- name: workflows_share_for_steps
-- Success commits: KEY SHARE excludes every FOR UPDATE writer (cancel, replay, dead
-- letter...) but not other success commits, so nodes finishing steps of one workflow
-- do not queue behind each other's commit flush (postgres.py: _success_many).
SELECT id FROM workflows
WHERE id IN (SELECT workflow_id FROM steps WHERE id = ANY ($1::text[]))
ORDER BY id FOR KEY SHARE;

-- name: fence_heartbeat
UPDATE steps AS s SET lease_expires_at_ms = rm_now_ms() + $4, heartbeat_at_ms = rm_now_ms()
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(id, token, epoch)
WHERE s.id = v.id AND s.lease_token = v.token AND s.lease_epoch = v.epoch
  AND (s.status || '') = 'RUNNING'
RETURNING s.id, s.lease_expires_at_ms;

-- name: fence_success
UPDATE steps AS s SET
    status = 'SUCCEEDED', result = v.result, error = NULL, lease_expires_at_ms = NULL,
    finished_at_ms = rm_now_ms(), updated_at_ms = rm_now_ms()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS v(id, token, epoch, result)
WHERE s.id = v.id AND s.lease_token = v.token AND s.lease_epoch = v.epoch
  AND (s.status || '') = 'RUNNING'
RETURNING s.id, s.workflow_id, s.n_locks, s.n_dependents;

-- name: fence_retry
UPDATE steps SET
    status = 'RETRY_WAIT', error = $4, lease_expires_at_ms = NULL,
    not_before_ms = rm_now_ms() + $5, ready_at_ms = rm_now_ms() + $5,
    updated_at_ms = rm_now_ms()
WHERE id = $1 AND lease_token = $2 AND lease_epoch = $3 AND status = 'RUNNING'
RETURNING workflow_id, n_locks;

-- name: fence_dead_letter
UPDATE steps SET
    status = 'DEAD_LETTER', error = $4, lease_expires_at_ms = NULL,
    finished_at_ms = rm_now_ms(), updated_at_ms = rm_now_ms()
WHERE id = $1 AND lease_token = $2 AND lease_epoch = $3 AND status = 'RUNNING'
RETURNING workflow_id, n_locks;

-- name: fence_release
WITH released AS (
    UPDATE steps SET
        status = 'READY', attempt = greatest(attempt - 1, 0), owner_node = NULL,
        lease_expires_at_ms = NULL, ready_at_ms = rm_now_ms(), updated_at_ms = rm_now_ms()
    WHERE id = $1 AND lease_token = $2 AND lease_epoch = $3 AND status = 'RUNNING'
    RETURNING id, n_locks, lease_epoch, updated_at_ms
), events AS (
    INSERT INTO ownership_events (step_id, node, event, lease_epoch, detail, at_ms)
    SELECT id, $4, 'released', lease_epoch, $5, updated_at_ms FROM released
)
SELECT n_locks FROM released;

-- name: fence_success_landed
-- Of these rejected leases, the steps already SUCCEEDED under that very lease with that
-- very result: a retried commit whose first try landed before its connection died.
SELECT s.id FROM steps AS s
JOIN unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS v(id, token, epoch, result)
  ON s.id = v.id
WHERE s.lease_token = v.token AND s.lease_epoch = v.epoch AND s.status = 'SUCCEEDED'
  AND s.result IS NOT DISTINCT FROM v.result;

-- name: fence_failure_landed
-- The status a retried failure commit's first try left (RETRY_WAIT, READY once promoted,
-- or DEAD_LETTER) under the same lease with the same error; no row when it did not land.
SELECT status FROM steps
WHERE id = $1 AND lease_token = $2 AND lease_epoch = $3
  AND status IN ('RETRY_WAIT', 'READY', 'DEAD_LETTER') AND error IS NOT DISTINCT FROM $4;

-- name: fence_release_landed
-- A retried release whose first try landed: READY, no owner, the same lease.
SELECT 1 FROM steps
WHERE id = $1 AND lease_token = $2 AND lease_epoch = $3 AND status = 'READY'
  AND owner_node IS NULL;

-- name: conflicts_insert
-- One lease_conflicts row per rejected lease, with the step's actual epoch and status.
INSERT INTO lease_conflicts (step_id, node, event, expected_epoch, actual_epoch,
                             actual_status, at_ms)
SELECT v.id, $4, $5, v.epoch, s.lease_epoch, s.status, rm_now_ms()
FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS v(id, token, epoch, ord)
LEFT JOIN steps AS s ON s.id = v.id
ORDER BY v.ord
RETURNING step_id, actual_epoch, actual_status;

-- name: events_insert
INSERT INTO ownership_events (step_id, node, event, lease_epoch, detail, at_ms)
SELECT v.step_id, v.node, $4, v.epoch, $5, rm_now_ms()
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(step_id, node, epoch);

-- name: ready_dependents
-- PENDING dependents of $1 whose dependencies have now all succeeded.
UPDATE steps SET status = 'READY', ready_at_ms = rm_now_ms(), updated_at_ms = rm_now_ms()
WHERE (status || '') = 'PENDING'
  AND id IN (SELECT step_id FROM step_deps WHERE depends_on_id = ANY ($1::text[]))
  AND NOT EXISTS (
        SELECT 1 FROM step_deps AS d JOIN steps AS u ON u.id = d.depends_on_id
        WHERE d.step_id = steps.id AND u.status <> 'SUCCEEDED');

-- name: deps_all_succeeded
SELECT NOT EXISTS (
    SELECT 1 FROM step_deps AS d JOIN steps AS u ON u.id = d.depends_on_id
    WHERE d.step_id = $1 AND u.status <> 'SUCCEEDED');

-- name: workflow_shapes
-- What the workflow status rule needs (store/rows.py: workflow_status).
SELECT w.id, w.status,
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id
            AND status IN ('READY', 'RUNNING', 'RETRY_WAIT')),
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id AND status = 'PENDING'),
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id AND status = 'DEAD_LETTER'),
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id AND status = 'CANCELLED'),
    EXISTS (SELECT 1 FROM steps WHERE workflow_id = w.id AND status IN ('READY', 'RETRY_WAIT'))
FROM workflows AS w WHERE w.id = ANY ($1::text[]);

-- name: workflow_set_status
UPDATE workflows SET status = $2, updated_at_ms = rm_now_ms() WHERE id = $1;

-- name: lease_states
SELECT id, lease_token, lease_epoch, status FROM steps WHERE id = ANY ($1::text[]);

-- name: expired_running
SELECT id, lease_epoch FROM steps
WHERE status = 'RUNNING' AND lease_expires_at_ms < (SELECT rm_now_ms())
ORDER BY lease_expires_at_ms LIMIT $1;

-- name: dead_owner_running
SELECT id, lease_epoch FROM steps
WHERE status = 'RUNNING' AND owner_node IN (
    SELECT name FROM mesh_nodes WHERE status IN ('DEAD', 'LEFT'))
  AND coalesce(heartbeat_at_ms, started_at_ms) <= (SELECT rm_now_ms()) - $2
ORDER BY started_at_ms LIMIT $1;

-- name: dead_owner_fresh_count
-- RUNNING steps of DEAD/LEFT owners left alone because their leases are still heartbeated.
SELECT count(*) FROM steps
WHERE status = 'RUNNING' AND owner_node IN (
    SELECT name FROM mesh_nodes WHERE status IN ('DEAD', 'LEFT'))
  AND coalesce(heartbeat_at_ms, started_at_ms) > (SELECT rm_now_ms()) - $1;

-- name: named_owner_fresh_count
SELECT count(*) FROM steps
WHERE status = 'RUNNING' AND owner_node = ANY ($1::text[])
  AND coalesce(heartbeat_at_ms, started_at_ms) > (SELECT rm_now_ms()) - $2;

-- name: named_owner_running
SELECT id, lease_epoch FROM steps
WHERE status = 'RUNNING' AND owner_node = ANY ($2::text[])
  AND coalesce(heartbeat_at_ms, started_at_ms) <= (SELECT rm_now_ms()) - $3
ORDER BY started_at_ms LIMIT $1;

-- name: reclaim_lock_rows
-- Re-check under row locks (after the workflow locks) which steps are still to reclaim:
-- still RUNNING under the lease the caller chose them by ($1 ids, $3 epochs), so a step
-- another node reclaimed and re-claimed meanwhile is left to its new owner.
-- $2: 'expired' (the lease must also have passed) or 'owner' (the lease must not have
-- been heartbeated for $4 ms: a live owner's heartbeat between choice and lock wins).
SELECT s.id, s.workflow_id, s.owner_node, s.attempt, s.max_attempts, s.n_locks
FROM steps AS s JOIN unnest($1::text[], $3::bigint[]) AS v(id, epoch)
  ON s.id = v.id AND s.lease_epoch = v.epoch
WHERE (s.status || '') = 'RUNNING'
  AND ($2::text <> 'expired' OR s.lease_expires_at_ms < (SELECT rm_now_ms()))
  AND ($2::text <> 'owner'
       OR coalesce(s.heartbeat_at_ms, s.started_at_ms) <= (SELECT rm_now_ms()) - $4)
ORDER BY s.id FOR UPDATE OF s;

-- name: reclaim_ready
UPDATE steps SET
    status = 'READY', lease_epoch = lease_epoch + 1, owner_node = NULL,
    lease_expires_at_ms = NULL, ready_at_ms = rm_now_ms(), updated_at_ms = rm_now_ms()
WHERE id = ANY ($1::text[])
RETURNING id, lease_epoch;

-- name: reclaim_dead_letter
UPDATE steps AS s SET
    status = 'DEAD_LETTER', lease_epoch = s.lease_epoch + 1, error = v.error,
    lease_expires_at_ms = NULL, finished_at_ms = rm_now_ms(), updated_at_ms = rm_now_ms()
FROM unnest($1::text[], $2::text[]) AS v(id, error)
WHERE s.id = v.id
RETURNING s.id, s.lease_epoch;

-- name: promote_retries
UPDATE steps SET status = 'READY', updated_at_ms = rm_now_ms()
WHERE id IN (
    SELECT id FROM steps
    WHERE status = 'RETRY_WAIT' AND ready_at_ms <= (SELECT rm_now_ms())
    ORDER BY priority, ready_at_ms LIMIT $1
    FOR UPDATE SKIP LOCKED);

-- name: cancel_waiting
UPDATE steps SET status = 'CANCELLED', lease_expires_at_ms = NULL,
    finished_at_ms = rm_now_ms(), updated_at_ms = rm_now_ms()
WHERE workflow_id = $1 AND status IN ('PENDING', 'READY', 'RETRY_WAIT');

-- name: cancel_running
UPDATE steps SET status = 'CANCELLED', lease_epoch = lease_epoch + 1,
    lease_expires_at_ms = NULL, finished_at_ms = rm_now_ms(), updated_at_ms = rm_now_ms()
WHERE workflow_id = $1 AND status = 'RUNNING'
RETURNING id, owner_node, lease_epoch, n_locks;

-- name: replay_candidates
SELECT id, workflow_id FROM steps
WHERE status = $1
  AND ($2::text IS NULL OR agent = $2)
  AND ($3::text IS NULL OR workflow_id = $3)
ORDER BY updated_at_ms, seq LIMIT $4;

-- name: replay_update
-- The attempt counter is kept; max_attempts grows by the step's budget (rows.replayed).
UPDATE steps SET
    status = $2, max_attempts = $3, replays = $4,
    owner_node = NULL, lease_expires_at_ms = NULL,
    not_before_ms = NULL, finished_at_ms = NULL,
    ready_at_ms = CASE WHEN $2 = 'READY' THEN rm_now_ms() END,
    updated_at_ms = rm_now_ms()
WHERE id = $1 AND status IN ('DEAD_LETTER', 'CANCELLED')
RETURNING workflow_id, lease_epoch;

-- name: leader_get
SELECT node, epoch, expires_at_ms, rm_now_ms() FROM leader_lease WHERE id = 1 FOR UPDATE;

-- name: leader_set
UPDATE leader_lease SET node = $1, epoch = $2, expires_at_ms = rm_now_ms() + $3 WHERE id = 1
RETURNING expires_at_ms;

-- name: leader_release
UPDATE leader_lease SET expires_at_ms = 0 WHERE id = 1 AND node = $1 AND epoch = $2;

-- name: mesh_upsert
-- The membership merge rule: higher incarnation wins; at equal incarnation
-- DEAD/LEFT > SUSPECT > ALIVE. Anything else leaves the row as it is.
INSERT INTO mesh_nodes AS m (name, address, status, incarnation, metadata,
                             status_changed_at_ms, updated_at_ms, reporter)
VALUES ($1, $2, $3, $4, $5, $6, rm_now_ms(), $7)
ON CONFLICT (name) DO UPDATE SET
    address = excluded.address,
    status = excluded.status,
    incarnation = excluded.incarnation,
    metadata = excluded.metadata,
    status_changed_at_ms = CASE WHEN m.status = excluded.status
        THEN m.status_changed_at_ms ELSE excluded.status_changed_at_ms END,
    updated_at_ms = excluded.updated_at_ms,
    reporter = excluded.reporter
WHERE excluded.incarnation > m.incarnation
   OR (excluded.incarnation = m.incarnation
       AND (CASE excluded.status WHEN 'ALIVE' THEN 0 WHEN 'SUSPECT' THEN 1 ELSE 2 END)
         > (CASE m.status WHEN 'ALIVE' THEN 0 WHEN 'SUSPECT' THEN 1 ELSE 2 END));

-- name: mesh_list
SELECT name, address, status, incarnation, metadata, status_changed_at_ms, updated_at_ms, reporter
FROM mesh_nodes ORDER BY name;

-- name: mesh_prune
DELETE FROM mesh_nodes WHERE name IN (
    SELECT name FROM mesh_nodes
    WHERE status IN ('DEAD', 'LEFT') AND status_changed_at_ms < (SELECT rm_now_ms()) - $1
    ORDER BY status_changed_at_ms LIMIT $2
    FOR UPDATE)
RETURNING name;

-- name: running_by_owner_status
SELECT coalesce(m.status, 'UNKNOWN'), count(*)
FROM steps AS s LEFT JOIN mesh_nodes AS m ON m.name = s.owner_node
WHERE s.status = 'RUNNING'
GROUP BY 1;

-- name: step_counts
SELECT status, count(*) FROM steps GROUP BY status;

-- name: queue_lag
SELECT coalesce(rm_now_ms() - min(m), 0) FROM (
    SELECT min(ready_at_ms) AS m FROM steps
    WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 0 AND ready_at_ms <= (SELECT rm_now_ms())
    UNION ALL
    SELECT min(ready_at_ms) FROM steps
    WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 1 AND ready_at_ms <= (SELECT rm_now_ms())
    UNION ALL
    SELECT min(ready_at_ms) FROM steps
    WHERE status IN ('READY', 'RETRY_WAIT') AND priority = 2 AND ready_at_ms <= (SELECT rm_now_ms())
) AS oldest;

-- name: ownership_events_list
SELECT id, step_id, node, event, lease_epoch, at_ms FROM ownership_events
WHERE ($1::bigint IS NULL OR at_ms >= $1) AND id < $3
ORDER BY id DESC LIMIT $2;

-- name: conflicts_list
SELECT id, step_id, node, event, expected_epoch, actual_epoch, actual_status, at_ms
FROM lease_conflicts
WHERE ($1::bigint IS NULL OR at_ms >= $1)
ORDER BY id DESC LIMIT $2;

-- name: conflicts_total
SELECT count(*) FROM lease_conflicts WHERE ($1::bigint IS NULL OR at_ms >= $1);

-- name: conflicts_by_step
SELECT step_id, count(*) AS n FROM lease_conflicts WHERE ($1::bigint IS NULL OR at_ms >= $1)
GROUP BY step_id ORDER BY n DESC, step_id LIMIT $2;

-- name: conflicts_by_node
SELECT node, count(*) AS n FROM lease_conflicts WHERE ($1::bigint IS NULL OR at_ms >= $1)
GROUP BY node ORDER BY n DESC, node LIMIT $2;

-- name: conflicts_by_event
SELECT event, count(*) AS n FROM lease_conflicts WHERE ($1::bigint IS NULL OR at_ms >= $1)
GROUP BY event ORDER BY n DESC, event LIMIT $2;

-- name: audit_insert
INSERT INTO audit_log (at_ms, actor, action, target, details)
VALUES (rm_now_ms(), $1, $2, $3, $4);

-- name: audit_query
SELECT id, at_ms, actor, action, target, details FROM audit_log
WHERE ($1::text IS NULL OR target = $1 OR strpos(details, '"' || $1 || '"') > 0)
  AND ($2::text IS NULL OR action = $2)
  AND ($3::bigint IS NULL OR at_ms >= $3)
  AND ($4::bigint IS NULL OR at_ms <= $4)
  AND id < $6
ORDER BY id DESC LIMIT $5;

-- name: settings_insert
INSERT INTO settings_history (at_ms, node, fields) VALUES (rm_now_ms(), $1, $2);

-- name: settings_list
SELECT id, at_ms, node, fields FROM settings_history ORDER BY id DESC LIMIT $1;

-- name: backup_tables
SELECT table_name FROM information_schema.tables
WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
ORDER BY table_name;

-- name: leases_held_by
-- RUNNING steps a node owns, with their leases (the partial index steps_running_owner).
SELECT id, lease_token, lease_epoch FROM steps
WHERE status = 'RUNNING' AND owner_node = $1
ORDER BY id;

-- == retention (store/postgres.py "retention" section; work/retention.py) =====

-- name: retention_workflow_candidates
-- Final workflows of one status past the cutoff, oldest first, locked so a concurrent
-- replay (which locks its workflow first) either runs before and makes it RUNNING
-- (the re-check below then skips it) or waits for the delete.
-- With $4 only those ids: the batch that was archived first.
SELECT w.id, w.updated_at_ms FROM workflows AS w
WHERE w.status = $1 AND w.updated_at_ms < rm_now_ms() - $2
  AND ($4::text[] IS NULL OR w.id = ANY ($4::text[]))
ORDER BY w.updated_at_ms LIMIT $3
FOR UPDATE SKIP LOCKED;

-- name: archive_candidates
-- What retention_workflow_candidates picks next, read-only, no step able to run.
SELECT w.id, w.updated_at_ms FROM workflows AS w
WHERE w.status = $1 AND w.updated_at_ms < rm_now_ms() - $2
  AND NOT EXISTS (SELECT 1 FROM steps AS s WHERE s.workflow_id = w.id
                  AND s.status IN ('READY', 'RUNNING', 'RETRY_WAIT'))
ORDER BY w.updated_at_ms LIMIT $3;

-- name: archive_workflows
SELECT * FROM workflows WHERE id = ANY ($1::text[]);

-- name: archive_steps
SELECT * FROM steps WHERE workflow_id = ANY ($1::text[]);

-- name: archive_deps
SELECT d.* FROM step_deps AS d JOIN steps AS s ON s.id = d.step_id
WHERE s.workflow_id = ANY ($1::text[]);

-- name: archive_events
-- Bounded by at_ms like retention_delete_events (no index by step).
SELECT e.* FROM ownership_events AS e WHERE e.at_ms <= $2 AND e.step_id IN (
    SELECT id FROM steps WHERE workflow_id = ANY ($1::text[]))
ORDER BY e.id;

-- name: archive_keys
SELECT * FROM workflow_keys WHERE workflow_id = ANY ($1::text[]);

-- name: restore_columns
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position;

-- name: restore_workflow_count
SELECT count(*) FROM workflows;

-- name: restore_workflow_exists
SELECT 1 FROM workflows WHERE id = $1;

-- name: restore_lock
-- One restore or import at a time; a concurrent one waits, then sees the rows.
LOCK TABLE workflows IN SHARE ROW EXCLUSIVE MODE;

-- name: restore_steps_seq
SELECT setval(pg_get_serial_sequence('steps', 'seq'),
              (SELECT coalesce(max(seq), 0) + 1 FROM steps), false);

-- name: retention_still_final
-- Under the row locks: the candidates that are still final with no step able to run.
SELECT w.id FROM workflows AS w
WHERE w.id = ANY ($1::text[]) AND w.status = $2
  AND NOT EXISTS (SELECT 1 FROM steps AS s WHERE s.workflow_id = w.id
                  AND s.status IN ('READY', 'RUNNING', 'RETRY_WAIT'));

-- name: retention_count_workflows
SELECT count(*) FROM workflows AS w
WHERE w.status = $1 AND w.updated_at_ms < rm_now_ms() - $2
  AND NOT EXISTS (SELECT 1 FROM steps AS s WHERE s.workflow_id = w.id
                  AND s.status IN ('READY', 'RUNNING', 'RETRY_WAIT'));

-- name: retention_step_ids
SELECT id FROM steps WHERE workflow_id = ANY ($1::text[]) FOR UPDATE;

-- name: retention_delete_locks
DELETE FROM step_locks WHERE step_id = ANY ($1::text[]);

-- name: retention_delete_deps
DELETE FROM step_deps WHERE step_id = ANY ($1::text[]);

-- name: retention_delete_events
-- No index by step (it slowed claims): the at_ms range bounds the scan.
DELETE FROM ownership_events WHERE at_ms <= $2 AND step_id = ANY ($1::text[]);

-- name: retention_delete_keys
-- The workflows' idempotency keys, but never a schedule's latest fire: the scheduler
-- reads it (schedule_last_fire) to fire each tick exactly once.
DELETE FROM workflow_keys AS k WHERE k.workflow_id = ANY ($1::text[])
  AND NOT (k.schedule IS NOT NULL AND k.fire_at_ms = (
      SELECT max(l.fire_at_ms) FROM workflow_keys AS l WHERE l.schedule = k.schedule));

-- name: retention_delete_steps
DELETE FROM steps WHERE workflow_id = ANY ($1::text[]);

-- name: retention_delete_workflows
DELETE FROM workflows WHERE id = ANY ($1::text[]);

-- name: retention_delete_conflicts
DELETE FROM lease_conflicts WHERE id IN (
    SELECT id FROM lease_conflicts WHERE at_ms < rm_now_ms() - $1
    ORDER BY at_ms LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: retention_delete_audit
DELETE FROM audit_log WHERE id IN (
    SELECT id FROM audit_log WHERE at_ms < rm_now_ms() - $1
    ORDER BY at_ms LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: retention_delete_settings_history
DELETE FROM settings_history WHERE id IN (
    SELECT id FROM settings_history WHERE at_ms < rm_now_ms() - $1
    ORDER BY at_ms LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: retention_count_conflicts
SELECT count(*) FROM lease_conflicts WHERE at_ms < rm_now_ms() - $1;

-- name: retention_count_audit
SELECT count(*) FROM audit_log WHERE at_ms < rm_now_ms() - $1;

-- name: retention_count_settings_history
SELECT count(*) FROM settings_history WHERE at_ms < rm_now_ms() - $1;

-- name: stats_bytes
SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r';

-- Idempotency keys, workflow listing and schedule fires (migration 0005).

-- name: workflow_key_claim
INSERT INTO workflow_keys (idempotency_key, workflow_id, schedule, fire_at_ms, created_at_ms)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (idempotency_key) DO NOTHING;

-- name: workflow_key_get
SELECT workflow_id FROM workflow_keys WHERE idempotency_key = $1;

-- name: workflows_list
SELECT w.id, w.name, w.status, w.created_at_ms, w.updated_at_ms, k.idempotency_key, k.schedule
FROM workflows w LEFT JOIN workflow_keys k ON k.workflow_id = w.id
WHERE ($1::text IS NULL OR w.status = $1)
  AND ($2::text IS NULL OR w.name = $2)
  AND ($3::bigint IS NULL OR w.created_at_ms >= $3)
  AND (w.created_at_ms, w.id) < ($4::bigint, $5::text)
ORDER BY w.created_at_ms DESC, w.id DESC LIMIT $6;

-- name: workflows_step_counts
SELECT workflow_id, status, count(*) FROM steps
WHERE workflow_id = ANY($1::text[])
GROUP BY workflow_id, status;

-- name: schedule_last_fire
SELECT fire_at_ms, workflow_id FROM workflow_keys
WHERE schedule = $1 ORDER BY fire_at_ms DESC LIMIT 1;

-- == dispatch statistics (migration 0006; work/dispatch.py) =====================

-- name: dispatch_upsert
INSERT INTO dispatch_stats (node, agent, bucket_ms, reason, count)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (node, agent, bucket_ms, reason) DO UPDATE SET count = excluded.count;

-- name: dispatch_prune
DELETE FROM dispatch_stats WHERE bucket_ms < rm_now_ms() - $1;

-- name: dispatch_totals
SELECT node, agent, reason, SUM(count)::BIGINT FROM dispatch_stats
WHERE bucket_ms >= rm_now_ms() - $1
GROUP BY node, agent, reason
ORDER BY node, agent, reason;
