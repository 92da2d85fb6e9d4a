-- Fewer index entries per job. Every claim and completion changes `status`, which partial
-- indexes name, so neither is a HOT update: each writes a new entry into every index whose
-- predicate the new row version meets. A job passed through 12 entries in its life (insert 5,
-- claim 4, completion 3); these two indexes took 5 of them for nothing:
-- - the UNIQUE constraint on `idempotency_key` indexed the NULL key of every row that has none
--   (nearly all): the same uniqueness, for the keys there are, with a partial unique index;
-- - `task_app_active_idx` held every pending or running job, which no query asks it for: it
--   serves the per-application order of commands, and every query on it names
--   `app_id` and `action <> 'run'` (store/dispatch.rs).
-- On a large table this migration rebuilds both indexes under a lock that blocks writes for as
-- long as that takes (docs/operations.md, *Upgrades*).
ALTER TABLE task DROP CONSTRAINT task_idempotency_key_key;
CREATE UNIQUE INDEX task_idempotency_key_idx ON task (idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX task_app_active_idx;
CREATE INDEX task_app_active_idx ON task (app_id, id)
    WHERE status IN ('pending', 'running') AND app_id IS NOT NULL AND action <> 'run';
