-- Rota's SQL interface (docs/sql.md). Timestamps are TIMESTAMP in UTC; JSON is TEXT so both
-- backends share one schema shape and a bad payload can be inserted, then failed with a clear
-- error by the dispatcher instead of being refused without a trace.

CREATE TABLE application (
    id                  BIGSERIAL PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    driver              TEXT NOT NULL CHECK (driver IN ('process', 'shell', 'http', 'noop')),
    spec                TEXT NOT NULL DEFAULT '{}',
    selector            TEXT NOT NULL DEFAULT '{}',
    desired_state       TEXT NOT NULL DEFAULT 'stopped' CHECK (desired_state IN ('running', 'stopped')),
    state               TEXT NOT NULL DEFAULT 'stopped'
                        CHECK (state IN ('stopped', 'starting', 'running', 'stopping', 'failed', 'unknown')),
    owner_node          TEXT,
    owner_epoch         BIGINT,
    restart_policy      TEXT NOT NULL DEFAULT 'on_failure' CHECK (restart_policy IN ('never', 'on_failure', 'always')),
    max_restarts        INTEGER NOT NULL DEFAULT 3 CHECK (max_restarts >= 0),
    restart_count       INTEGER NOT NULL DEFAULT 0 CHECK (restart_count >= 0),
    monitor_interval_ms INTEGER CHECK (monitor_interval_ms IS NULL OR monitor_interval_ms > 0),
    last_error          TEXT,
    created_at          TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at          TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);

CREATE TABLE task (
    id              BIGSERIAL PRIMARY KEY,
    app_id          BIGINT,
    action          TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
    priority        INTEGER NOT NULL DEFAULT 0,
    run_after       TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    owner_node      TEXT,
    owner_epoch     BIGINT,
    idempotency_key TEXT UNIQUE,
    parent_id       BIGINT,
    shard_index     INTEGER CHECK (shard_index IS NULL OR shard_index >= 0),
    shard_total     INTEGER CHECK (shard_total IS NULL OR shard_total >= 1),
    target_node     TEXT,
    result          TEXT,
    error           TEXT,
    created_at      TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    claimed_at      TIMESTAMP,
    finished_at     TIMESTAMP
);

-- The dispatch read: pending rows in id order, with a cursor.
CREATE INDEX task_pending_idx ON task (id) WHERE status = 'pending';
-- "Is an earlier command of this application still pending or running?"
CREATE INDEX task_app_active_idx ON task (app_id, id) WHERE status IN ('pending', 'running');
-- Recovery of a departed node's running tasks.
CREATE INDEX task_running_owner_idx ON task (owner_node) WHERE status = 'running';
-- Fan-out children of a job.
CREATE INDEX task_parent_idx ON task (parent_id) WHERE parent_id IS NOT NULL;
-- Retention pruning of finished rows.
CREATE INDEX task_finished_idx ON task (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE event (
    id       BIGSERIAL PRIMARY KEY,
    at       TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    kind     TEXT NOT NULL,
    app_id   BIGINT,
    task_id  BIGINT,
    node_id  TEXT,
    actor    TEXT,
    message  TEXT NOT NULL DEFAULT '',
    data     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX event_app_idx ON event (app_id, id) WHERE app_id IS NOT NULL;
CREATE INDEX event_task_idx ON event (task_id) WHERE task_id IS NOT NULL;

-- Standalone membership: one row, held by one running node, kept alive by its heartbeat.
CREATE TABLE membership_lock (
    name         TEXT PRIMARY KEY,
    node_id      TEXT NOT NULL,
    holder       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    pid_space    TEXT NOT NULL,
    addr         TEXT NOT NULL,
    epoch        BIGINT NOT NULL,
    acquired_at  TIMESTAMP NOT NULL,
    heartbeat_at TIMESTAMP NOT NULL
);

-- Wake the dispatchers: one notification per inserting statement keeps bulk inserts cheap.
CREATE FUNCTION rota_task_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rota_task', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER task_insert_notify AFTER INSERT ON task
    FOR EACH STATEMENT EXECUTE FUNCTION rota_task_notify();
