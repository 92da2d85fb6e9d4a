-- Tell the nodes when an alarm channel or rule changes (API or SQL), so their alarm runners read
-- them again at once instead of every 5 s: an idle node's reads of them were a tenth of its
-- statements (docs/benchmarks.md#idle). A channel's `cursor` and `updated_at` are moved by its
-- owner as it matches events: those updates are not changes of the channel.
CREATE TRIGGER alarm_channel_config_notify
    AFTER INSERT OR DELETE OR TRUNCATE ON alarm_channel
    FOR EACH STATEMENT EXECUTE FUNCTION rota_config_notify();
CREATE TRIGGER alarm_channel_config_update_notify
    AFTER UPDATE ON alarm_channel FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'cursor' - 'updated_at') IS DISTINCT FROM
          (to_jsonb(NEW) - 'cursor' - 'updated_at'))
    EXECUTE FUNCTION rota_config_notify();
CREATE TRIGGER alarm_rule_config_notify
    AFTER INSERT OR DELETE OR TRUNCATE ON alarm_rule
    FOR EACH STATEMENT EXECUTE FUNCTION rota_config_notify();
CREATE TRIGGER alarm_rule_config_update_notify
    AFTER UPDATE ON alarm_rule FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION rota_config_notify();
