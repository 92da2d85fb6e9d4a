-- No row stalls, whatever wrote it (docs/design.md#no-row-stalls).
-- Every read of the queue starts at cursor 0 (`id > 0`), so a row with `id <= 0` was never read,
-- claimed or recovered: refused from now on; open ones already there are failed with the reason.
UPDATE task SET status = 'failed',
                error = 'task.id must be above 0: every read of the queue starts after id 0, so this row would never run; insert it again without an id',
                finished_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
    WHERE id <= 0 AND status IN ('pending', 'running');

-- AFTER, not BEFORE: before the insert an id SQLite is about to assign reads as -1.
CREATE TRIGGER task_insert_id AFTER INSERT ON task
    WHEN NEW.id <= 0
BEGIN
    SELECT RAISE(ABORT, 'task.id must be above 0 (leave it out: the database numbers rows)');
END;

-- Updates are checked and normalised as inserts are (2026-11-23-000001_task_checks): a hand-written
-- `UPDATE task SET run_after = date('now')` stored a time in a layout the node could not read back,
-- and every round of the node failed on that row, every second, while good rows stayed pending.
-- PostgreSQL's CHECK constraints and column types hold on updates already. The WHEN clause keeps
-- the check off the dispatcher's own updates unless a value is wrong.
CREATE TRIGGER task_update_checks BEFORE UPDATE ON task
    WHEN NEW.id <> OLD.id
      OR (NEW.app_id IS NOT NULL AND typeof(NEW.app_id) <> 'integer')
      OR typeof(NEW.priority) <> 'integer' OR NEW.priority NOT BETWEEN -2147483648 AND 2147483647
      OR typeof(NEW.attempts) <> 'integer' OR NEW.attempts > 2147483647
      OR typeof(NEW.max_attempts) <> 'integer' OR NEW.max_attempts > 2147483647
      OR (NEW.timeout_ms IS NOT NULL
          AND (typeof(NEW.timeout_ms) <> 'integer' OR NEW.timeout_ms NOT BETWEEN -2147483648 AND 2147483647))
      OR (NEW.shard_index IS NOT NULL AND (typeof(NEW.shard_index) <> 'integer' OR NEW.shard_index > 2147483647))
      OR (NEW.shard_total IS NOT NULL AND (typeof(NEW.shard_total) <> 'integer' OR NEW.shard_total > 2147483647))
      OR (NEW.parent_id IS NOT NULL AND typeof(NEW.parent_id) <> 'integer')
      OR (NEW.owner_epoch IS NOT NULL AND typeof(NEW.owner_epoch) <> 'integer')
      OR (NEW.status = 'pending' AND NEW.stage IS NULL AND NEW.max_attempts >= 1
          AND NEW.attempts >= NEW.max_attempts)
      OR julianday(NEW.run_after) IS NULL
      OR julianday(NEW.created_at) IS NULL
      OR (NEW.claimed_at IS NOT NULL AND julianday(NEW.claimed_at) IS NULL)
      OR (NEW.finished_at IS NOT NULL AND julianday(NEW.finished_at) IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'task.id cannot be changed (the queue and its history refer to it)')
        WHERE NEW.id <> OLD.id;
    SELECT RAISE(ABORT, 'task.app_id must be an integer or NULL')
        WHERE NEW.app_id IS NOT NULL AND typeof(NEW.app_id) <> 'integer';
    SELECT RAISE(ABORT, 'task.priority must be an integer between -2147483648 and 2147483647')
        WHERE typeof(NEW.priority) <> 'integer' OR NEW.priority NOT BETWEEN -2147483648 AND 2147483647;
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
    SELECT RAISE(ABORT, 'task: a pending row needs an attempt left (attempts < max_attempts)')
        WHERE NEW.status = 'pending' AND NEW.stage IS NULL AND NEW.max_attempts >= 1
          AND NEW.attempts >= NEW.max_attempts;
    SELECT RAISE(ABORT, 'task.run_after is not a time: write e.g. datetime(''now'', ''+30 seconds'') (UTC)')
        WHERE julianday(NEW.run_after) IS NULL;
    SELECT RAISE(ABORT, 'task.created_at, claimed_at and finished_at must be times (UTC) or NULL')
        WHERE julianday(NEW.created_at) IS NULL
           OR (NEW.claimed_at IS NOT NULL AND julianday(NEW.claimed_at) IS NULL)
           OR (NEW.finished_at IS NOT NULL AND julianday(NEW.finished_at) IS NULL);
END;

-- A time the node cannot read back (a bare date, a `T`, 'now', a julian day number: anything
-- SQLite understands as a time) is stored in the layout the node reads, as on insert
-- (`task_insert_times`). The node's own values ('YYYY-MM-DD HH:MM:SS' with up to 9 digits of
-- fraction) are left as they are, so its claims and completions neither lose precision nor
-- pay for a second write. (The trigger's own UPDATE does not fire it again: SQLite's
-- recursive_triggers is off.)
CREATE TRIGGER task_update_times AFTER UPDATE OF run_after, created_at, claimed_at, finished_at ON task
    WHEN NOT (NEW.run_after IS NULL OR (typeof(NEW.run_after) = 'text' AND substr(NEW.run_after, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', NEW.run_after) AND (length(NEW.run_after) = 19 OR (substr(NEW.run_after, 20, 1) = '.' AND length(NEW.run_after) BETWEEN 21 AND 29 AND NOT substr(NEW.run_after, 21) GLOB '*[^0-9]*'))))
      OR NOT (NEW.created_at IS NULL OR (typeof(NEW.created_at) = 'text' AND substr(NEW.created_at, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', NEW.created_at) AND (length(NEW.created_at) = 19 OR (substr(NEW.created_at, 20, 1) = '.' AND length(NEW.created_at) BETWEEN 21 AND 29 AND NOT substr(NEW.created_at, 21) GLOB '*[^0-9]*'))))
      OR NOT (NEW.claimed_at IS NULL OR (typeof(NEW.claimed_at) = 'text' AND substr(NEW.claimed_at, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', NEW.claimed_at) AND (length(NEW.claimed_at) = 19 OR (substr(NEW.claimed_at, 20, 1) = '.' AND length(NEW.claimed_at) BETWEEN 21 AND 29 AND NOT substr(NEW.claimed_at, 21) GLOB '*[^0-9]*'))))
      OR NOT (NEW.finished_at IS NULL OR (typeof(NEW.finished_at) = 'text' AND substr(NEW.finished_at, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', NEW.finished_at) AND (length(NEW.finished_at) = 19 OR (substr(NEW.finished_at, 20, 1) = '.' AND length(NEW.finished_at) BETWEEN 21 AND 29 AND NOT substr(NEW.finished_at, 21) GLOB '*[^0-9]*'))))
BEGIN
    UPDATE task SET run_after = CASE WHEN (run_after IS NULL OR (typeof(run_after) = 'text' AND substr(run_after, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', run_after) AND (length(run_after) = 19 OR (substr(run_after, 20, 1) = '.' AND length(run_after) BETWEEN 21 AND 29 AND NOT substr(run_after, 21) GLOB '*[^0-9]*')))) THEN run_after
                        ELSE strftime('%Y-%m-%d %H:%M:%f', run_after) END,
                    created_at = CASE WHEN (created_at IS NULL OR (typeof(created_at) = 'text' AND substr(created_at, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', created_at) AND (length(created_at) = 19 OR (substr(created_at, 20, 1) = '.' AND length(created_at) BETWEEN 21 AND 29 AND NOT substr(created_at, 21) GLOB '*[^0-9]*')))) THEN created_at
                        ELSE strftime('%Y-%m-%d %H:%M:%f', created_at) END,
                    claimed_at = CASE WHEN (claimed_at IS NULL OR (typeof(claimed_at) = 'text' AND substr(claimed_at, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', claimed_at) AND (length(claimed_at) = 19 OR (substr(claimed_at, 20, 1) = '.' AND length(claimed_at) BETWEEN 21 AND 29 AND NOT substr(claimed_at, 21) GLOB '*[^0-9]*')))) THEN claimed_at
                        ELSE strftime('%Y-%m-%d %H:%M:%f', claimed_at) END,
                    finished_at = CASE WHEN (finished_at IS NULL OR (typeof(finished_at) = 'text' AND substr(finished_at, 1, 19) = strftime('%Y-%m-%d %H:%M:%S', finished_at) AND (length(finished_at) = 19 OR (substr(finished_at, 20, 1) = '.' AND length(finished_at) BETWEEN 21 AND 29 AND NOT substr(finished_at, 21) GLOB '*[^0-9]*')))) THEN finished_at
                        ELSE strftime('%Y-%m-%d %H:%M:%f', finished_at) END
        WHERE id = NEW.id;
END;
