ALTER TABLE task DROP CONSTRAINT task_id_positive;
