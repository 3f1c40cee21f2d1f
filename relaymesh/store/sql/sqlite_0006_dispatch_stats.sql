-- Dispatch statistics (work/dispatch.py): each node writes its one-hour window here
-- as per-minute counts, one row per (node, agent, minute, reason), so mesh-summary
-- and GET /api/stats sum the whole mesh in one grouped read. agent '' holds a node's
-- own decisions (a guard pause); reason 'ok' counts successes. Rows are rewritten with
-- absolute counts (idempotent) and deleted once older than the window.
CREATE TABLE dispatch_stats (
    node TEXT NOT NULL,
    agent TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (node, agent, bucket_ms, reason)
);
CREATE INDEX dispatch_stats_bucket ON dispatch_stats (bucket_ms);
