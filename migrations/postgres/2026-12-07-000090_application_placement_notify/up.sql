-- Tell the nodes when an application's placement changes (its selector or its traffic group, by
-- the API or by SQL): each node reads the applications again before its next round, so a job
-- inserted after the change runs in the new place (docs/jobs.md#placement-changes). Other
-- changes of an application (its state, its owner: the dispatcher's own writes) do not notify.
CREATE TRIGGER application_placement_notify
    AFTER UPDATE ON application FOR EACH ROW
    WHEN ((OLD.selector, OLD.traffic_group) IS DISTINCT FROM (NEW.selector, NEW.traffic_group))
    EXECUTE FUNCTION rota_config_notify();
