-- Workflows (docs/workflows.md): DAGs of jobs. A definition is kept per version, so a run keeps
-- the definition it started with; a run is a `workflow_run` row whose coordinator is a `run`
-- task with routing `workflow` (the ring owner of that task's id), and each node's run is a task
-- with the coordinator as its parent. `workflow_node_run` has one row per (run, node): the
-- coordinator starts a node only by moving its row from `waiting` to `running` in the same
-- fenced transaction that inserts its task, so a replaced coordinator can never start it twice.

CREATE TABLE workflow (
    id                  BIGSERIAL PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    -- The current version: a new run takes it.
    version             INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- Runs of this workflow running at once, at most; NULL: no limit. Runs over it wait, in id order.
    max_concurrent_runs INTEGER CHECK (max_concurrent_runs IS NULL OR max_concurrent_runs >= 1),
    created_at          TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at          TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);

-- Every version of every definition: `{"nodes": [...], "edges": [...]}`, validated by the API.
CREATE TABLE workflow_version (
    workflow_id BIGINT NOT NULL REFERENCES workflow (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version >= 1),
    definition  TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    PRIMARY KEY (workflow_id, version)
);

CREATE TABLE workflow_run (
    id               BIGSERIAL PRIMARY KEY,
    workflow_id      BIGINT NOT NULL REFERENCES workflow (id),
    -- The definition's version; an insert without one takes the workflow's current version.
    version          INTEGER CHECK (version IS NULL OR version >= 1),
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    -- A JSON object given to every node; each succeeded node's result is added under its key.
    context          TEXT NOT NULL DEFAULT '{}',
    -- The coordinator task (written at insert); a retried finished run gets a new one.
    task_id          BIGINT UNIQUE,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    error            TEXT,
    created_at       TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at       TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    finished_at      TIMESTAMP
);
-- The concurrency limit counts the open runs of a workflow.
CREATE INDEX workflow_run_open_idx ON workflow_run (workflow_id, id) WHERE status IN ('pending', 'running');

CREATE TABLE workflow_node_run (
    run_id      BIGINT NOT NULL REFERENCES workflow_run (id) ON DELETE CASCADE,
    node_key    TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'waiting'
                CHECK (status IN ('waiting', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    -- The node's task (its latest, after a retry).
    task_id     BIGINT,
    -- Times an admin retried it; part of its task's idempotency key.
    round       INTEGER NOT NULL DEFAULT 0 CHECK (round >= 0),
    -- A decision node's branch.
    decision    BOOLEAN,
    error       TEXT,
    started_at  TIMESTAMP,
    finished_at TIMESTAMP,
    PRIMARY KEY (run_id, node_key)
);

-- Inserting a run row starts a run: it takes the current version and gets its coordinator task.
CREATE FUNCTION workflow_run_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version IS NULL THEN
        SELECT version INTO NEW.version FROM workflow WHERE id = NEW.workflow_id;
    END IF;
    IF NEW.task_id IS NULL AND NEW.status = 'pending' THEN
        INSERT INTO task (action, routing, max_attempts, payload)
        VALUES ('run', 'workflow', 100, json_build_object('workflow_run', NEW.id)::text)
        RETURNING id INTO NEW.task_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workflow_run_start BEFORE INSERT ON workflow_run
    FOR EACH ROW EXECUTE FUNCTION workflow_run_start();
