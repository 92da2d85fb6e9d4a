DROP TRIGGER traffic_policy_config_update_notify ON traffic_policy;
DROP TRIGGER traffic_policy_config_notify ON traffic_policy;
DROP TRIGGER schedule_config_update_notify ON schedule;
DROP TRIGGER schedule_config_notify ON schedule;
DROP FUNCTION rota_config_notify();
