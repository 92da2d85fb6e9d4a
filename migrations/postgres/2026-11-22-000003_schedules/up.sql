-- Schedules (docs/schedules.md): cron expressions and fixed rates that write `run` tasks.
-- The ring owner of the key `schedule:{id}` fires a schedule. A firing advances `next_fire_at`
-- conditionally (on its old value) and records a `schedule_firing` row keyed by
-- (schedule_id, fire_at) in the same transaction, so a ring change can neither fire a time twice
-- nor skip one without a record.

CREATE TABLE schedule (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    -- The job's application (its driver and spec run the job); NULL runs a noop job.
    app_id           BIGINT,
    -- Exactly one of `cron` (seconds first: `SEC MIN HOUR DOM MON DOW [YEAR]`, UTC) and `every_ms`.
    cron             TEXT,
    every_ms         BIGINT CHECK (every_ms IS NULL OR every_ms >= 1),
    payload          TEXT NOT NULL DEFAULT '{}',
    routing          TEXT,
    shard_total      INTEGER CHECK (shard_total IS NULL OR shard_total >= 1),
    timeout_ms       INTEGER CHECK (timeout_ms IS NULL OR timeout_ms >= 1),
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    -- What happens to fire times missed by more than `misfire_grace_ms` (no node owned it, all
    -- nodes were down): `skip` records them as skipped; `fire_once` fires the latest one once.
    misfire          TEXT NOT NULL DEFAULT 'fire_once' CHECK (misfire IN ('skip', 'fire_once')),
    misfire_grace_ms BIGINT NOT NULL DEFAULT 60000 CHECK (misfire_grace_ms >= 0),
    enabled          BOOLEAN NOT NULL DEFAULT TRUE,
    -- The next fire time (UTC). A node fires only by moving it on from the value it read.
    next_fire_at     TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    created_at       TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at       TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    CHECK ((cron IS NULL) <> (every_ms IS NULL))
);

-- One row per fire time, or per span of consecutive skipped fire times (`fire_at` .. `last_at`,
-- `times` of them). `outcome`: `fired` (on time, a task), `caught_up` (the one firing
-- `fire_once` makes for a missed span, a task), `skipped` (no task).
CREATE TABLE schedule_firing (
    schedule_id BIGINT NOT NULL,
    fire_at     TIMESTAMP NOT NULL,
    last_at     TIMESTAMP NOT NULL,
    times       BIGINT NOT NULL DEFAULT 1 CHECK (times >= 1),
    outcome     TEXT NOT NULL CHECK (outcome IN ('fired', 'caught_up', 'skipped')),
    task_id     BIGINT,
    node_id     TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    PRIMARY KEY (schedule_id, fire_at)
);
-- Retention pruning of old firings.
CREATE INDEX schedule_firing_created_idx ON schedule_firing (created_at);
