DROP INDEX workflow_run_idempotency_key;
ALTER TABLE workflow_run DROP COLUMN idempotency_key;
ALTER TABLE schedule_firing DROP COLUMN run_id;
ALTER TABLE schedule DROP CONSTRAINT schedule_one_target;
ALTER TABLE schedule DROP COLUMN workflow_id;
