DROP TRIGGER alarm_rule_config_update_notify ON alarm_rule;
DROP TRIGGER alarm_rule_config_notify ON alarm_rule;
DROP TRIGGER alarm_channel_config_update_notify ON alarm_channel;
DROP TRIGGER alarm_channel_config_notify ON alarm_channel;
