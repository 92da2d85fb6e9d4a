-- A busy queue turns every row over three times (insert, claim, completion), and each claim from
-- the head of the pending index walks past the dead entries of every row finished since the
-- last vacuum; a table that is not vacuumed decays (docs/benchmarks.md, "Sustained"). With the
-- default thresholds (20 % of a table that grows with the queue) and cost delay (2 ms), vacuum
-- comes late and slowly. Vacuum `task` after a fixed number of dead rows, without cost-based
-- pauses, and analyze it as often, so the planner's picture of the pending set stays current.
-- (These act only where autovacuum is on, as it is by default.)
ALTER TABLE task SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 50000,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE event SET (
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 100000
);
