DROP TRIGGER task_update_times;
DROP TRIGGER task_update_checks;
DROP TRIGGER task_insert_id;
