-- A token per claim (docs/design.md#i3): every claim writes a random `claim_token`, and every write
-- as the claim's holder (outcome, give-back, a fan-out parent's stage and children) is conditional
-- on it besides `owner_node` and `owner_epoch` (see the PostgreSQL migration of the same name for
-- why: ids handed out again after a database failover). SQLite has no replicas, but the statements
-- are the same on both backends.
ALTER TABLE task ADD COLUMN claim_token INTEGER;

-- Checked on insert and update as the other integer columns are (2026-11-23-000001_task_checks,
-- 2026-12-08-000001_task_rows_never_stall): a text token could not be read back, and would stop
-- the queue behind its row.
CREATE TRIGGER task_insert_claim_token BEFORE INSERT ON task
    WHEN NEW.claim_token IS NOT NULL AND typeof(NEW.claim_token) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'task.claim_token must be an integer or NULL');
END;

CREATE TRIGGER task_update_claim_token BEFORE UPDATE OF claim_token ON task
    WHEN NEW.claim_token IS NOT NULL AND typeof(NEW.claim_token) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'task.claim_token must be an integer or NULL');
END;
