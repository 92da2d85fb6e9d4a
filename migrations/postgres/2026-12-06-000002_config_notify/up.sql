-- Tell the nodes when an admin changes a schedule or a traffic policy (API or SQL), so they read
-- them again at once instead of every few seconds: an idle node sent one read of each table per
-- 5 s, a third of its statements (docs/benchmarks.md#idle).
-- An update notifies only when it changes the row (a row trigger with that condition): an update
-- that loses a race changes nothing, and a firing's advance of a schedule (`next_fire_at`,
-- `updated_at`, `enabled` written unchanged) is not a change of the schedule. Inserts, deletes
-- and truncations notify once per statement.
CREATE FUNCTION rota_config_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rota_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER schedule_config_notify
    AFTER INSERT OR DELETE OR TRUNCATE ON schedule
    FOR EACH STATEMENT EXECUTE FUNCTION rota_config_notify();
-- Every column but the two a firing moves, so a column added later notifies too.
CREATE TRIGGER schedule_config_update_notify
    AFTER UPDATE ON schedule FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'next_fire_at' - 'updated_at') IS DISTINCT FROM
          (to_jsonb(NEW) - 'next_fire_at' - 'updated_at'))
    EXECUTE FUNCTION rota_config_notify();
CREATE TRIGGER traffic_policy_config_notify
    AFTER INSERT OR DELETE OR TRUNCATE ON traffic_policy
    FOR EACH STATEMENT EXECUTE FUNCTION rota_config_notify();
CREATE TRIGGER traffic_policy_config_update_notify
    AFTER UPDATE ON traffic_policy FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION rota_config_notify();
