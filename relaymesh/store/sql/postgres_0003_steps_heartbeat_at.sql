-- When the lease of a RUNNING step was last claimed or heartbeated (store clock). A
-- DEAD verdict from gossip is only a hint: a dead owner's step is reclaimed at once
-- only if this is old, so a forged or mistaken DEAD for a node that is still
-- heartbeating reclaims nothing. Rows running during the upgrade read started_at_ms.
ALTER TABLE steps ADD COLUMN heartbeat_at_ms BIGINT;
