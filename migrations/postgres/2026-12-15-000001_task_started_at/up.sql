-- When a job's execution began (docs/design.md#an-attempt-counts-when-execution-starts): written
-- by the node just before its driver runs, conditional on the claim; NULL from the claim until
-- then. Recovery gives a row claimed but never started back with its attempt uncounted. Nullable,
-- no default: added without rewriting the table.
ALTER TABLE task ADD COLUMN started_at TIMESTAMP;
-- Rows running now were claimed without the mark and may well have started: charged as before.
UPDATE task SET started_at = claimed_at WHERE status = 'running';
