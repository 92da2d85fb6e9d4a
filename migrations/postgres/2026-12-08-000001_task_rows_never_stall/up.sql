-- No row stalls, whatever wrote it (docs/design.md#no-row-stalls).
-- Every read of the queue starts at cursor 0 (`id > 0`), so a row with `id <= 0` (written by hand
-- with an explicit id) was never read, never claimed and never recovered: refused from now on,
-- with the constraint named. Rows already there that are still open are failed here with the
-- reason; finished ones are left as they are (NOT VALID: only new and changed rows are checked).
UPDATE task SET status = 'failed',
                error = 'task.id must be above 0: every read of the queue starts after id 0, so this row would never run; insert it again without an id',
                finished_at = (now() AT TIME ZONE 'utc')
    WHERE id <= 0 AND status IN ('pending', 'running');
ALTER TABLE task ADD CONSTRAINT task_id_positive CHECK (id > 0) NOT VALID;
