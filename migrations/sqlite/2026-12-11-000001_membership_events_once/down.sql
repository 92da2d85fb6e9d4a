DROP INDEX event_membership_once;
