DROP TABLE schedule_firing;
DROP TABLE schedule;
