ALTER TABLE task DROP COLUMN started_at;
