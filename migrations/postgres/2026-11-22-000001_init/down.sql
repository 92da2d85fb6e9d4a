DROP TRIGGER IF EXISTS task_insert_notify ON task;
DROP FUNCTION IF EXISTS rota_task_notify();
DROP TABLE IF EXISTS membership_lock;
DROP TABLE IF EXISTS event;
DROP TABLE IF EXISTS task;
DROP TABLE IF EXISTS application;
