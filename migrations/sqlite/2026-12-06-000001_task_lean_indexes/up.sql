-- As on PostgreSQL: `task_app_active_idx` serves the per-application order of commands only,
-- so jobs stay out of it (every query on it names `app_id`, `action <> 'run'` and — SQLite uses
-- a partial index only when the query names its condition's terms — the literal
-- `status IN ('pending', 'running')`: store/claim.rs, COMMAND_TURN).
DROP INDEX task_app_active_idx;
CREATE INDEX task_app_active_idx ON task (app_id, id)
    WHERE status IN ('pending', 'running') AND app_id IS NOT NULL AND action <> 'run';
