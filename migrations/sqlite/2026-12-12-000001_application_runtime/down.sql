-- The `flink` rows must be gone first: the old CHECK does not take them.
CREATE TABLE application_old (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
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
    created_at          TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at          TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    traffic_group       TEXT
);
INSERT INTO application_old SELECT id, name, driver, spec, selector, desired_state, state, owner_node, owner_epoch,
    restart_policy, max_restarts, restart_count, monitor_interval_ms, last_error, created_at, updated_at, traffic_group
FROM application;
DROP TABLE application;
ALTER TABLE application_old RENAME TO application;
