DROP INDEX IF EXISTS task_pending_job_idx;
