DROP INDEX task_app_active_idx;
CREATE INDEX task_app_active_idx ON task (app_id, id) WHERE status IN ('pending', 'running');
DROP INDEX task_idempotency_key_idx;
ALTER TABLE task ADD CONSTRAINT task_idempotency_key_key UNIQUE (idempotency_key);
