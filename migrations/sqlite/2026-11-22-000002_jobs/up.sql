-- Jobs (docs/jobs.md): routing strategies, fan-out stages, traffic groups and policies.

-- How a `run` task picks its node(s); NULL is `hash` (the ring). Read, and refused with a clear
-- `error`, by the dispatcher: no CHECK here, so a bad value inserted by hand ends `failed`.
ALTER TABLE task ADD COLUMN routing TEXT;
-- Per-attempt time limit of a job (and of each of its children).
ALTER TABLE task ADD COLUMN timeout_ms INTEGER;
-- A job's own label selector (JSON); NULL uses its application's.
ALTER TABLE task ADD COLUMN selector TEXT;
-- Where a fan-out parent is: NULL (not started), `gather` (children out, waiting for them),
-- `reduce` (map_reduce: every child terminal, the reduce step runs).
ALTER TABLE task ADD COLUMN stage TEXT;
-- Children addressed to a node: "is any child of this parent still active?" and per-node load.
CREATE INDEX task_target_active_idx ON task (target_node) WHERE status IN ('pending', 'running') AND target_node IS NOT NULL;
CREATE INDEX task_gather_idx ON task (owner_node) WHERE stage IS NOT NULL AND status = 'running';

-- An application's (and its jobs') traffic group: a `traffic_policy` decides which datacenter runs it.
ALTER TABLE application ADD COLUMN traffic_group TEXT;

-- Routing memory per job (its application, or `-` for jobs without one): the row with node_id ''
-- holds the round-robin counter (and is the lock that serialises choices); the others count uses
-- per node for lru/lfu.
CREATE TABLE job_route (
    route_key TEXT NOT NULL,
    node_id   TEXT NOT NULL,
    uses      BIGINT NOT NULL DEFAULT 0,
    last_seq  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (route_key, node_id)
);

-- Which datacenter (any label) a traffic group runs in: preferred, with a percentage split to the
-- backup for a gradual move, automatic failover to the backup when the preferred has no live
-- node, and back. `failed_over` is the state an automatic switch recorded.
CREATE TABLE traffic_policy (
    group_name    TEXT PRIMARY KEY,
    label         TEXT NOT NULL DEFAULT 'dc',
    preferred     TEXT NOT NULL,
    backup        TEXT,
    percent       INTEGER NOT NULL DEFAULT 100 CHECK (percent BETWEEN 0 AND 100),
    sticky        BOOLEAN NOT NULL DEFAULT 1,
    auto_failover BOOLEAN NOT NULL DEFAULT 1,
    auto_failback BOOLEAN NOT NULL DEFAULT 1,
    failed_over   BOOLEAN NOT NULL DEFAULT 0,
    updated_by    TEXT,
    reason        TEXT,
    updated_at    TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
