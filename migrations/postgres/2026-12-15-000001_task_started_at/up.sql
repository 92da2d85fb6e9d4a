-- When a job's attempt began (docs/design.md#an-attempt-counts-when-execution-starts): written
-- by each claim (most jobs start at once), taken back (NULL) from a job that has waited since its
-- claim without starting, and written again just before such a job's driver runs, each write
-- conditional on the claim. Recovery gives a job claimed and without a mark back with its
-- attempt uncounted. Nullable, no default: added without rewriting the table.
ALTER TABLE task ADD COLUMN started_at TIMESTAMP;
-- Rows running now were claimed without the mark and may well have started: charged as before.
UPDATE task SET started_at = claimed_at WHERE status = 'running';
