-- Hostile input (docs/sql.md, tests/hostile.rs): values the dispatcher cannot work with are refused
-- at INSERT with a message naming the column, instead of stopping the queue behind them. SQLite
-- cannot add CHECK constraints to a table, hence triggers; they run on INSERT only (the
-- dispatcher's own updates write well-formed values).

CREATE TRIGGER task_insert_checks BEFORE INSERT ON task
BEGIN
    -- SQLite stores any type in any column; a text or a 64-bit number read as a 32-bit one made
    -- the claim of the row's whole batch fail.
    SELECT RAISE(ABORT, 'task.app_id must be an integer or NULL')
        WHERE NEW.app_id IS NOT NULL AND typeof(NEW.app_id) <> 'integer';
    SELECT RAISE(ABORT, 'task.priority must be an integer between -2147483648 and 2147483647')
        WHERE typeof(NEW.priority) <> 'integer' OR NEW.priority NOT BETWEEN -2147483648 AND 2147483647;
    -- (Negative attempts and max_attempts < 1 are left to the table's CHECK constraints.)
    SELECT RAISE(ABORT, 'task.attempts must be an integer up to 2147483647')
        WHERE typeof(NEW.attempts) <> 'integer' OR NEW.attempts > 2147483647;
    SELECT RAISE(ABORT, 'task.max_attempts must be an integer up to 2147483647')
        WHERE typeof(NEW.max_attempts) <> 'integer' OR NEW.max_attempts > 2147483647;
    SELECT RAISE(ABORT, 'task.timeout_ms must be an integer between -2147483648 and 2147483647 or NULL')
        WHERE NEW.timeout_ms IS NOT NULL
          AND (typeof(NEW.timeout_ms) <> 'integer' OR NEW.timeout_ms NOT BETWEEN -2147483648 AND 2147483647);
    SELECT RAISE(ABORT, 'task.shard_index and task.shard_total must be integers (32-bit) or NULL')
        WHERE (NEW.shard_index IS NOT NULL
               AND (typeof(NEW.shard_index) <> 'integer' OR NEW.shard_index > 2147483647))
           OR (NEW.shard_total IS NOT NULL
               AND (typeof(NEW.shard_total) <> 'integer' OR NEW.shard_total > 2147483647));
    SELECT RAISE(ABORT, 'task.parent_id and task.owner_epoch must be integers or NULL')
        WHERE (NEW.parent_id IS NOT NULL AND typeof(NEW.parent_id) <> 'integer')
           OR (NEW.owner_epoch IS NOT NULL AND typeof(NEW.owner_epoch) <> 'integer');
    -- The claim counts one more attempt; fan-out parents (stage set) are exempt (docs/jobs.md).
    SELECT RAISE(ABORT, 'task: a pending row needs an attempt left (attempts < max_attempts)')
        WHERE NEW.status = 'pending' AND NEW.stage IS NULL AND NEW.max_attempts >= 1
          AND NEW.attempts >= NEW.max_attempts;
    -- A time SQLite cannot read is never due: refuse it rather than let the row wait for ever.
    SELECT RAISE(ABORT, 'task.run_after is not a time: write e.g. datetime(''now'', ''+30 seconds'') (UTC)')
        WHERE julianday(NEW.run_after) IS NULL;
    SELECT RAISE(ABORT, 'task.created_at, claimed_at and finished_at must be times (UTC) or NULL')
        WHERE julianday(NEW.created_at) IS NULL
           OR (NEW.claimed_at IS NOT NULL AND julianday(NEW.claimed_at) IS NULL)
           OR (NEW.finished_at IS NOT NULL AND julianday(NEW.finished_at) IS NULL);
END;

-- Every time SQLite understands ('now', a bare date, an offset, a julian day number) is stored in
-- the one format the node reads back ('YYYY-MM-DD HH:MM:SS.SSS', UTC): a due row in another
-- format made the claim of its whole batch fail.
CREATE TRIGGER task_insert_times AFTER INSERT ON task
    WHEN NEW.run_after IS NOT strftime('%Y-%m-%d %H:%M:%f', NEW.run_after)
      OR NEW.created_at IS NOT strftime('%Y-%m-%d %H:%M:%f', NEW.created_at)
      OR NEW.claimed_at IS NOT strftime('%Y-%m-%d %H:%M:%f', NEW.claimed_at)
      OR NEW.finished_at IS NOT strftime('%Y-%m-%d %H:%M:%f', NEW.finished_at)
BEGIN
    UPDATE task SET run_after = strftime('%Y-%m-%d %H:%M:%f', NEW.run_after),
                    created_at = strftime('%Y-%m-%d %H:%M:%f', NEW.created_at),
                    claimed_at = strftime('%Y-%m-%d %H:%M:%f', NEW.claimed_at),
                    finished_at = strftime('%Y-%m-%d %H:%M:%f', NEW.finished_at)
        WHERE id = NEW.id;
END;
