DROP TABLE alarm_delivery;
DROP TABLE alarm_rule;
DROP TABLE alarm_channel;
