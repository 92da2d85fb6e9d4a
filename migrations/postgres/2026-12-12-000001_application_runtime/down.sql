ALTER TABLE application DROP COLUMN runtime;
