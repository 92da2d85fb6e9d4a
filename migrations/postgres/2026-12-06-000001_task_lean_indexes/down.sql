DROP INDEX task_app_active_idx;
CREATE INDEX task_app_active_idx ON task (app_id, id) WHERE status IN ('pending', 'running');
