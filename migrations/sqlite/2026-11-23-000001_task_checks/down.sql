DROP TRIGGER task_insert_times;
DROP TRIGGER task_insert_checks;
