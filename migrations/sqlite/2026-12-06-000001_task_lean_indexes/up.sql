-- As on PostgreSQL: `task_app_active_idx` serves the per-application order of commands only,
-- so jobs stay out of it (every query on it names `app_id` and `action <> 'run'`, and the
-- literal `status IN ('pending', 'running')` SQLite needs to use a partial index:
-- store/dispatch.rs, COMMAND_TURN). The UNIQUE of `idempotency_key` stays a column constraint
-- here: SQLite cannot drop one without rebuilding the table, and SQLite is the single-node,
-- embedded backend, not the one tuned for throughput.
DROP INDEX task_app_active_idx;
CREATE INDEX task_app_active_idx ON task (app_id, id)
    WHERE status IN ('pending', 'running') AND app_id IS NOT NULL AND action <> 'run';
