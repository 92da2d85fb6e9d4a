-- Alarms (docs/alarms.md): the `event` table is the outbox. A channel says where messages go
-- (a webhook, a chat robot, SMTP); a rule says which events go to which channels. The ring
-- owner of `alarm-channel:{id}` reads the events past the channel's `cursor`, writes one
-- `alarm_delivery` per (event, channel) its rules match (or folds them into one per throttle
-- window), moves the cursor from the value it read — with its fence, in the same transaction —
-- and sends the deliveries, retrying with backoff.

CREATE TABLE alarm_channel (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('webhook', 'slack', 'dingtalk', 'feishu', 'wecom', 'email')),
    -- The kind's settings (JSON); secrets in it are write-only through the API.
    config     TEXT NOT NULL DEFAULT '{}',
    -- The last event id this channel's owner has matched: every event above it is still to be
    -- looked at. Starts at the newest event when the channel is created (no history is sent).
    cursor     BIGINT NOT NULL DEFAULT 0 CHECK (cursor >= 0),
    created_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

CREATE TABLE alarm_rule (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    -- The event kinds it fires on (a JSON array of strings).
    kinds      TEXT NOT NULL DEFAULT '[]',
    -- What an event must also match (JSON: `apps`, `traffic_groups`, `node_labels`).
    filter     TEXT NOT NULL DEFAULT '{}',
    -- The channels it sends to (a JSON array of channel ids).
    channels   TEXT NOT NULL DEFAULT '[]',
    -- 0: one message per event; N: one message per key per N seconds, saying how many it folds.
    throttle_s INTEGER NOT NULL DEFAULT 0 CHECK (throttle_s >= 0),
    created_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

-- One message to one channel: an event (`event_id`), or a throttle window's events
-- (`event_id` the first, `last_event_id` the last, `folded` how many). Its id is the delivery id
-- the receiver sees (`X-Rota-Delivery`): the same on every attempt.
CREATE TABLE alarm_delivery (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id    BIGINT NOT NULL,
    event_id      BIGINT NOT NULL,
    last_event_id BIGINT NOT NULL,
    rule_id       BIGINT,
    -- Set for a throttle window: the key events are folded by.
    throttle_key  TEXT,
    folded        BIGINT NOT NULL DEFAULT 1 CHECK (folded >= 1),
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When it is due: now, a window's end, the next retry. A claim moves it past the attempt's
    -- time limit, so an attempt whose node dies is made again then by the channel's owner.
    next_at       TIMESTAMP NOT NULL,
    owner_node    TEXT,
    owner_epoch   BIGINT,
    claim_token   BIGINT,
    -- The receiver's last answer (HTTP status, or 250 for SMTP) and the last error.
    last_status   INTEGER,
    last_error    TEXT,
    created_at    TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    finished_at   TIMESTAMP
);
CREATE UNIQUE INDEX alarm_delivery_once ON alarm_delivery (channel_id, event_id);
CREATE INDEX alarm_delivery_due_idx ON alarm_delivery (channel_id, next_at) WHERE status = 'pending';
CREATE INDEX alarm_delivery_window_idx ON alarm_delivery (channel_id, rule_id, throttle_key)
    WHERE status = 'pending' AND throttle_key IS NOT NULL;
