-- Tell the nodes when an admin changes a schedule or a traffic policy (API or SQL), so they read
-- them again at once instead of every few seconds: an idle node sent one read of each table per
-- 5 s, a third of its statements (docs/benchmarks.md, session 15).
-- A firing moves `next_fire_at` (and writes `enabled` unchanged): not a change of the schedule,
-- so an update notifies only when another column's value changes (a row trigger with that
-- condition); inserts, deletes and truncations notify once per statement.
CREATE FUNCTION rota_config_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rota_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER schedule_config_notify
    AFTER INSERT OR DELETE OR TRUNCATE ON schedule
    FOR EACH STATEMENT EXECUTE FUNCTION rota_config_notify();
CREATE TRIGGER schedule_config_update_notify
    AFTER UPDATE ON schedule FOR EACH ROW
    WHEN ((OLD.name, OLD.app_id, OLD.cron, OLD.every_ms, OLD.payload, OLD.routing, OLD.shard_total,
           OLD.timeout_ms, OLD.max_attempts, OLD.misfire, OLD.misfire_grace_ms, OLD.enabled)
          IS DISTINCT FROM
          (NEW.name, NEW.app_id, NEW.cron, NEW.every_ms, NEW.payload, NEW.routing, NEW.shard_total,
           NEW.timeout_ms, NEW.max_attempts, NEW.misfire, NEW.misfire_grace_ms, NEW.enabled))
    EXECUTE FUNCTION rota_config_notify();
CREATE TRIGGER traffic_policy_config_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON traffic_policy
    FOR EACH STATEMENT EXECUTE FUNCTION rota_config_notify();
