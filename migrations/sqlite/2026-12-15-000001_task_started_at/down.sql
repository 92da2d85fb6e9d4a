DROP TRIGGER task_update_started_at;
DROP TRIGGER task_insert_started_at;
ALTER TABLE task DROP COLUMN started_at;
