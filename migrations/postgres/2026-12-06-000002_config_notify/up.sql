-- Tell the nodes when an admin changes a schedule or a traffic policy (API or SQL), so they read
-- them again at once instead of every few seconds: an idle node sent one read of each table per
-- 5 s, a third of its statements (docs/benchmarks.md, session 15). One notification per
-- statement. A firing moves `next_fire_at` (and `updated_at`) only: not a change of the schedule,
-- so those columns do not notify.
CREATE FUNCTION rota_config_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rota_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER schedule_config_notify
    AFTER INSERT OR DELETE OR TRUNCATE
    OR UPDATE OF name, app_id, cron, every_ms, payload, routing, shard_total, timeout_ms, max_attempts,
                 misfire, misfire_grace_ms, enabled
    ON schedule FOR EACH STATEMENT EXECUTE FUNCTION rota_config_notify();
CREATE TRIGGER traffic_policy_config_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON traffic_policy FOR EACH STATEMENT EXECUTE FUNCTION rota_config_notify();
