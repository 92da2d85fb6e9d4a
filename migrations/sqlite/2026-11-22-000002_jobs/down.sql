DROP TABLE traffic_policy;
DROP TABLE job_route;
ALTER TABLE application DROP COLUMN traffic_group;
DROP INDEX task_gather_idx;
DROP INDEX task_target_active_idx;
ALTER TABLE task DROP COLUMN stage;
ALTER TABLE task DROP COLUMN selector;
ALTER TABLE task DROP COLUMN timeout_ms;
ALTER TABLE task DROP COLUMN routing;
