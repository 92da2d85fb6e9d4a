-- A busy queue turns every row over three times (insert, claim, completion), and each claim walks
-- the pending index from its head past the dead entries of every row finished since the last
-- vacuum. With the default thresholds (20 % of the table) and cost delay (2 ms), autovacuum
-- first ran minutes into a 30 k rows/s load and the claim slowed down as the dead entries piled
-- up (docs/benchmarks.md, "Sustained"). Vacuum `task` after a fixed number of dead rows instead
-- of a share of a growing table, without the cost-based pauses, and analyze it as often, so the
-- planner's picture of the pending set stays current.
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
