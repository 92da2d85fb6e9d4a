DROP TRIGGER application_placement_notify ON application;
