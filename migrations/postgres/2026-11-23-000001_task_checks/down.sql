ALTER TABLE task DROP CONSTRAINT task_times_in_range;
ALTER TABLE task DROP CONSTRAINT task_pending_has_attempt_left;
