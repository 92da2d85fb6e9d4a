-- Jobs out of `task_app_active_idx`. Every claim and completion changes `status`, which partial
-- indexes name, so neither is a HOT update: each writes a new entry into every index whose
-- condition the new row version meets. `task_app_active_idx` held every pending or running job,
-- which no query asks it for: it serves the per-application order of commands, and every query
-- on it names `app_id` and `action <> 'run'` (store/claim.rs). A job now writes 10 index
-- entries in its life instead of 12 (docs/benchmarks.md#dead-rows).
-- (The unique index of `idempotency_key` also holds an entry, NULL, for every row without a
-- key; a partial one would save 3 more, but `INSERT … ON CONFLICT (idempotency_key)` — the way a
-- producer inserts idempotently in SQL — cannot use a partial index unless it repeats its
-- condition, so it stays a constraint: docs/sql.md.)
-- The index is rebuilt under a lock that keeps every other session away from `task` for as
-- long as that takes on a large table (docs/operations.md, *Upgrades*).
DROP INDEX task_app_active_idx;
CREATE INDEX task_app_active_idx ON task (app_id, id)
    WHERE status IN ('pending', 'running') AND app_id IS NOT NULL AND action <> 'run';
