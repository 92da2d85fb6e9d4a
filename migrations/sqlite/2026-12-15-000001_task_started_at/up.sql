-- When a job's attempt began (docs/design.md#an-attempt-counts-when-execution-starts): written
-- by each claim (most jobs start at once), taken back (NULL) from a job that has waited since its
-- claim without starting, and written again just before such a job's driver runs, each write
-- conditional on the claim. Recovery gives a job claimed and without a mark back with its
-- attempt uncounted.
-- Only the node writes it; a value in any other layout is refused, so that no row holds a time
-- the node cannot read back.
ALTER TABLE task ADD COLUMN started_at TIMESTAMP;

CREATE TRIGGER task_insert_started_at BEFORE INSERT ON task
    WHEN NOT (NEW.started_at IS NULL OR (typeof(NEW.started_at) = 'text' AND substr(NEW.started_at, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', NEW.started_at) AND (length(NEW.started_at) = 19 OR (substr(NEW.started_at, 20, 1) = '.' AND length(NEW.started_at) BETWEEN 21 AND 29 AND NOT substr(NEW.started_at, 21) GLOB '*[^0-9]*'))))
BEGIN
    SELECT RAISE(ABORT, 'task.started_at must be NULL or a time written as YYYY-MM-DD HH:MM:SS[.fraction] (UTC)');
END;

CREATE TRIGGER task_update_started_at BEFORE UPDATE OF started_at ON task
    WHEN NOT (NEW.started_at IS NULL OR (typeof(NEW.started_at) = 'text' AND substr(NEW.started_at, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', NEW.started_at) AND (length(NEW.started_at) = 19 OR (substr(NEW.started_at, 20, 1) = '.' AND length(NEW.started_at) BETWEEN 21 AND 29 AND NOT substr(NEW.started_at, 21) GLOB '*[^0-9]*'))))
BEGIN
    SELECT RAISE(ABORT, 'task.started_at must be NULL or a time written as YYYY-MM-DD HH:MM:SS[.fraction] (UTC)');
END;

-- Rows running now were claimed without the mark and may well have started: charged as before.
UPDATE task SET started_at = strftime('%Y-%m-%d %H:%M:%f', claimed_at) WHERE status = 'running' AND claimed_at IS NOT NULL;
