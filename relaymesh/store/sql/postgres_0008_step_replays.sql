-- The replays of a step, oldest first, as a JSON list of {at, actor, from_status,
-- from_attempt, max_attempts, error}: a replay keeps the attempt counter (it counts
-- every run ever started) and records here what the step was when it was replayed.
-- NULL: never replayed.
ALTER TABLE steps ADD COLUMN replays text;
