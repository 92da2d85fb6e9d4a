-- A schedule can start a workflow (docs/workflows.md#schedules): a schedule with `workflow_id`
-- inserts a `workflow_run` row at each firing instead of writing a job, with the schedule's
-- payload as the run's context. The firing's idempotency is the schedule's own (the conditional
-- advance of `next_fire_at`, the `schedule_firing` key); the run carries the key a job would
-- (`schedule:{id}:{fire_at}`), unique, as the third line a job has.

ALTER TABLE schedule ADD COLUMN workflow_id BIGINT;
-- A schedule starts a workflow or writes a job of an application (or a noop job), not both.
ALTER TABLE schedule ADD CONSTRAINT schedule_one_target CHECK (workflow_id IS NULL OR app_id IS NULL);

-- The run a firing started (its coordinator task is the firing's `task_id`).
ALTER TABLE schedule_firing ADD COLUMN run_id BIGINT;

ALTER TABLE workflow_run ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX workflow_run_idempotency_key ON workflow_run (idempotency_key) WHERE idempotency_key IS NOT NULL;
