//! Queries on `alarm_channel`, `alarm_rule` and `alarm_delivery` (docs/alarms.md).
//!
//! The writes a channel's owner makes go through two guarded statements: [`record`] writes the
//! deliveries a batch of events makes and moves the channel's cursor from the value it read, in
//! one transaction that does nothing unless the cursor is still that value and the owner's fence
//! holds — so two nodes that both think they own a channel during a ring change never write a
//! batch twice; and [`claim_due`] takes the due deliveries, moving each one's due time past the
//! attempt's time limit, so that an attempt whose node dies is made again by whoever owns the
//! channel then. Outcomes are written only under the claim's token ([`delivered`], [`retry`]).
//!
//! Must never: write as owner without the fence, or move a cursor it did not read.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use serde::Serialize;

use super::fence::{before_deadline_literal, Fence};
use super::schema::{alarm_channel, alarm_delivery, alarm_rule, application, event};
use super::sql::pg_literal;
use super::{AnyConnection, StoreError};
use crate::alarms::Planned;

/// A row of `alarm_channel`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = alarm_channel)]
pub struct Channel {
    /// Its id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// `webhook`, `slack`, `dingtalk`, `feishu`, `wecom` or `email`.
    pub kind: String,
    /// The kind's settings (JSON), secrets included.
    pub config: String,
    /// The last event id matched for it.
    pub cursor: i64,
    /// Created (UTC).
    pub created_at: NaiveDateTime,
    /// Last changed (UTC).
    pub updated_at: NaiveDateTime,
}

/// A row of `alarm_rule`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = alarm_rule)]
pub struct RuleRow {
    /// Its id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Event kinds (JSON array).
    pub kinds: String,
    /// Filter (JSON object).
    pub filter: String,
    /// Channel ids (JSON array).
    pub channels: String,
    /// Throttle window in seconds (0: none).
    pub throttle_s: i32,
    /// Created (UTC).
    pub created_at: NaiveDateTime,
    /// Last changed (UTC).
    pub updated_at: NaiveDateTime,
}

impl RuleRow {
    /// The rule as the matcher reads it; a column that does not parse (written by hand) makes
    /// a rule that matches nothing.
    pub fn rule(&self) -> crate::alarms::Rule {
        crate::alarms::Rule {
            id: self.id,
            kinds: serde_json::from_str(&self.kinds).unwrap_or_default(),
            filter: serde_json::from_str(&self.filter).unwrap_or_default(),
            channels: serde_json::from_str(&self.channels).unwrap_or_default(),
            throttle_s: i64::from(self.throttle_s),
        }
    }
}

/// A row of `alarm_delivery`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = alarm_delivery)]
pub struct Delivery {
    /// Its id: the delivery id receivers see.
    pub id: i64,
    /// The channel.
    pub channel_id: i64,
    /// The (first) event.
    pub event_id: i64,
    /// The last event folded in.
    pub last_event_id: i64,
    /// The rule that matched.
    pub rule_id: Option<i64>,
    /// The throttle key of a window.
    pub throttle_key: Option<String>,
    /// Events it stands for.
    pub folded: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When it is due.
    pub next_at: NaiveDateTime,
    /// The node of the last claim.
    pub owner_node: Option<String>,
    /// Its epoch.
    pub owner_epoch: Option<i64>,
    /// Its token.
    pub claim_token: Option<i64>,
    /// The receiver's last status.
    pub last_status: Option<i32>,
    /// The last error.
    pub last_error: Option<String>,
    /// Written (UTC).
    pub created_at: NaiveDateTime,
    /// Delivered or given up (UTC).
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Insertable)]
#[diesel(table_name = alarm_channel)]
struct NewChannel<'a> {
    name: &'a str,
    kind: &'a str,
    config: &'a str,
    cursor: i64,
}

/// The database's clock plus `ms` milliseconds, as SQL.
fn now_plus(postgres: bool, ms: i64) -> String {
    if postgres {
        format!("((clock_timestamp() AT TIME ZONE 'utc') + {ms} * interval '1 millisecond')")
    } else {
        format!("strftime('%Y-%m-%d %H:%M:%f', 'now', '{:+.3} seconds')", ms as f64 / 1000.0)
    }
}

fn max_event_id(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let max: Option<i64> = event::table.select(diesel::dsl::max(event::id)).first(conn)?;
    Ok(max.unwrap_or(0))
}

/// A new channel whose cursor is the newest event: history is not sent.
pub fn insert_channel(conn: &mut AnyConnection, name: &str, kind: &str, config: &str) -> Result<i64, StoreError> {
    conn.transaction(|c| {
        let cursor = max_event_id(c)?;
        Ok(diesel::insert_into(alarm_channel::table)
            .values(NewChannel { name, kind, config, cursor })
            .returning(alarm_channel::id)
            .get_result(c)?)
    })
}

/// The channel with this id.
pub fn find_channel(conn: &mut AnyConnection, id: i64) -> Result<Option<Channel>, StoreError> {
    Ok(alarm_channel::table.find(id).select(Channel::as_select()).first(conn).optional()?)
}

/// The channel with this name.
pub fn find_channel_by_name(conn: &mut AnyConnection, name: &str) -> Result<Option<Channel>, StoreError> {
    Ok(alarm_channel::table.filter(alarm_channel::name.eq(name)).select(Channel::as_select()).first(conn).optional()?)
}

/// Channels with `id > after`, by id, at most `limit`.
pub fn list_channels(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<Vec<Channel>, StoreError> {
    Ok(alarm_channel::table
        .filter(alarm_channel::id.gt(after))
        .order(alarm_channel::id)
        .limit(limit)
        .select(Channel::as_select())
        .load(conn)?)
}

/// Every channel (the runner's list).
pub fn all_channels(conn: &mut AnyConnection) -> Result<Vec<Channel>, StoreError> {
    Ok(alarm_channel::table.order(alarm_channel::id).select(Channel::as_select()).load(conn)?)
}

/// Change a channel's name and config; false when it is gone.
pub fn update_channel(conn: &mut AnyConnection, id: i64, name: &str, config: &str) -> Result<bool, StoreError> {
    let now = super::schedules::db_now(conn)?;
    let n = diesel::update(alarm_channel::table.find(id))
        .set((alarm_channel::name.eq(name), alarm_channel::config.eq(config), alarm_channel::updated_at.eq(now)))
        .execute(conn)?;
    Ok(n == 1)
}

/// Delete a channel and its deliveries; false when it was gone.
pub fn delete_channel(conn: &mut AnyConnection, id: i64) -> Result<bool, StoreError> {
    conn.transaction(|c| {
        diesel::delete(alarm_delivery::table.filter(alarm_delivery::channel_id.eq(id))).execute(c)?;
        Ok(diesel::delete(alarm_channel::table.find(id)).execute(c)? == 1)
    })
}

/// A rule to write.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = alarm_rule)]
pub struct NewRule {
    /// Unique name.
    pub name: String,
    /// Event kinds (JSON array).
    pub kinds: String,
    /// Filter (JSON object).
    pub filter: String,
    /// Channel ids (JSON array).
    pub channels: String,
    /// Throttle window, seconds.
    pub throttle_s: i32,
}

/// A new rule.
pub fn insert_rule(conn: &mut AnyConnection, new: &NewRule) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(alarm_rule::table).values(new).returning(alarm_rule::id).get_result(conn)?)
}

/// The rule with this id.
pub fn find_rule(conn: &mut AnyConnection, id: i64) -> Result<Option<RuleRow>, StoreError> {
    Ok(alarm_rule::table.find(id).select(RuleRow::as_select()).first(conn).optional()?)
}

/// Rules with `id > after`, by id, at most `limit`.
pub fn list_rules(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<Vec<RuleRow>, StoreError> {
    Ok(alarm_rule::table
        .filter(alarm_rule::id.gt(after))
        .order(alarm_rule::id)
        .limit(limit)
        .select(RuleRow::as_select())
        .load(conn)?)
}

/// Every rule (the runner's list).
pub fn all_rules(conn: &mut AnyConnection) -> Result<Vec<RuleRow>, StoreError> {
    Ok(alarm_rule::table.order(alarm_rule::id).select(RuleRow::as_select()).load(conn)?)
}

/// Replace a rule's fields; false when it is gone.
pub fn update_rule(conn: &mut AnyConnection, id: i64, change: &NewRule) -> Result<bool, StoreError> {
    let now = super::schedules::db_now(conn)?;
    let n = diesel::update(alarm_rule::table.find(id)).set((change, alarm_rule::updated_at.eq(now))).execute(conn)?;
    Ok(n == 1)
}

/// Delete a rule; false when it was gone. Its deliveries stay.
pub fn delete_rule(conn: &mut AnyConnection, id: i64) -> Result<bool, StoreError> {
    Ok(diesel::delete(alarm_rule::table.find(id)).execute(conn)? == 1)
}

/// An event row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = event)]
pub struct EventRow {
    /// Id.
    pub id: i64,
    /// When.
    pub at: NaiveDateTime,
    /// Kind.
    pub kind: String,
    /// Application.
    pub app_id: Option<i64>,
    /// Task.
    pub task_id: Option<i64>,
    /// Node.
    pub node_id: Option<String>,
    /// Message.
    pub message: String,
    /// Data (JSON).
    pub data: String,
}

impl EventRow {
    /// As the matcher sees it.
    pub fn event(&self) -> crate::alarms::Event {
        crate::alarms::Event {
            id: self.id,
            at: self.at,
            kind: self.kind.clone(),
            app_id: self.app_id,
            task_id: self.task_id,
            node_id: self.node_id.clone(),
            message: self.message.clone(),
            data: serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Events with `id > after`, by id, at most `limit`.
pub fn events_after(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
    Ok(event::table
        .filter(event::id.gt(after))
        .order(event::id)
        .limit(limit)
        .select(EventRow::as_select())
        .load(conn)?)
}

/// One event by id.
pub fn find_event(conn: &mut AnyConnection, id: i64) -> Result<Option<EventRow>, StoreError> {
    Ok(event::table.find(id).select(EventRow::as_select()).first(conn).optional()?)
}

/// (id, name, traffic group) of the applications among `ids` that exist.
pub fn app_names(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<(i64, String, Option<String>)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(application::table
        .filter(application::id.eq_any(ids))
        .select((application::id, application::name, application::traffic_group))
        .load(conn)?)
}

/// Write the deliveries `planned` (made by the events after `from` up to `to`) for `channel`,
/// and move its cursor from `from` to `to` — only if it is still `from` and `fence` holds, all
/// or nothing. A fold joins the key's window that is still unsent (pending, never attempted),
/// or opens one due `throttle_s` from now. False when nothing was written (the cursor moved,
/// the fence passed).
pub fn record(
    conn: &mut AnyConnection,
    channel: i64,
    from: i64,
    to: i64,
    planned: &[Planned],
    fence: Fence,
) -> Result<bool, StoreError> {
    let postgres = matches!(conn, AnyConnection::Postgresql(_));
    conn.transaction::<bool, StoreError, _>(|c| {
        // The cursor first: it locks the channel's row, so a second owner waits here and then
        // finds the cursor moved.
        let sql = format!(
            "UPDATE alarm_channel SET cursor = {to} WHERE id = {channel} AND cursor = {from} AND {}",
            before_deadline_literal(postgres, fence.until)
        );
        if diesel::sql_query(sql).execute(c)? != 1 {
            // Nothing written yet: the empty transaction commits.
            return Ok(false);
        }
        for p in planned {
            match p {
                Planned::Each { event_id, rule_id } => {
                    let sql = format!(
                        "INSERT INTO alarm_delivery (channel_id, event_id, last_event_id, rule_id, next_at) \
                         VALUES ({channel}, {event_id}, {event_id}, {rule_id}, {}) ON CONFLICT DO NOTHING",
                        now_plus(postgres, 0)
                    );
                    diesel::sql_query(sql).execute(c)?;
                }
                Planned::Fold { rule_id, key, first, last, count, throttle_s, .. } => {
                    let key_sql = if postgres { pg_literal(key) } else { format!("'{}'", key.replace('\'', "''")) };
                    let joined = format!(
                        "UPDATE alarm_delivery SET folded = folded + {count}, last_event_id = {last} \
                         WHERE id = (SELECT id FROM alarm_delivery WHERE channel_id = {channel} AND rule_id = {rule_id} \
                         AND throttle_key = {key_sql} AND status = 'pending' AND attempts = 0 ORDER BY id LIMIT 1)"
                    );
                    if diesel::sql_query(joined).execute(c)? == 0 {
                        let sql = format!(
                            "INSERT INTO alarm_delivery (channel_id, event_id, last_event_id, rule_id, throttle_key, folded, next_at) \
                             VALUES ({channel}, {first}, {last}, {rule_id}, {key_sql}, {count}, {}) ON CONFLICT DO NOTHING",
                            now_plus(postgres, throttle_s.saturating_mul(1000))
                        );
                        diesel::sql_query(sql).execute(c)?;
                    }
                }
            }
        }
        Ok(true)
    })
}

/// A claimed delivery with what its message needs.
#[derive(Debug, Clone, QueryableByName)]
pub struct DueDelivery {
    /// The delivery id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Attempts made, this one included.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Events it stands for.
    #[diesel(sql_type = BigInt)]
    pub folded: i64,
    /// The last event folded in.
    #[diesel(sql_type = BigInt)]
    pub last_event_id: i64,
    /// The claim's token.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub claim_token: Option<i64>,
    /// The rule's name (gone: None).
    #[diesel(sql_type = Nullable<Text>)]
    pub rule_name: Option<String>,
    /// Its window.
    #[diesel(sql_type = Nullable<Integer>)]
    pub throttle_s: Option<i32>,
    /// The event.
    #[diesel(sql_type = BigInt)]
    pub event_id: i64,
    /// When.
    #[diesel(sql_type = Timestamp)]
    pub at: NaiveDateTime,
    /// Kind.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// Application.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub app_id: Option<i64>,
    /// Its name.
    #[diesel(sql_type = Nullable<Text>)]
    pub app_name: Option<String>,
    /// Task.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub task_id: Option<i64>,
    /// Node.
    #[diesel(sql_type = Nullable<Text>)]
    pub node_id: Option<String>,
    /// Message.
    #[diesel(sql_type = Text)]
    pub message: String,
    /// Data.
    #[diesel(sql_type = Text)]
    pub data: String,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Claim up to `limit` due deliveries of `channel` for this attempt: attempts + 1, the claim
/// (`node`, `epoch`, `token`) written, and the due time moved `hold_ms` ahead (the attempt's
/// time limit and a margin), so that if this node dies the channel's next owner makes the
/// attempt again then. Fenced; nothing when the fence has passed.
#[allow(clippy::too_many_arguments)]
pub fn claim_due(
    conn: &mut AnyConnection,
    channel: i64,
    node: &str,
    epoch: i64,
    token: i64,
    hold_ms: i64,
    limit: i64,
    fence: Fence,
) -> Result<Vec<DueDelivery>, StoreError> {
    let postgres = matches!(conn, AnyConnection::Postgresql(_));
    let (lock, node_sql) = if postgres {
        (" FOR UPDATE SKIP LOCKED", pg_literal(node))
    } else {
        ("", format!("'{}'", node.replace('\'', "''")))
    };
    let sql = format!(
        "UPDATE alarm_delivery SET attempts = attempts + 1, owner_node = {node_sql}, owner_epoch = {epoch}, \
         claim_token = {token}, next_at = {hold} \
         WHERE id IN (SELECT id FROM alarm_delivery WHERE channel_id = {channel} AND status = 'pending' \
         AND next_at <= {now} ORDER BY next_at, id LIMIT {limit}{lock}) AND {fenced} RETURNING id",
        hold = now_plus(postgres, hold_ms),
        now = now_plus(postgres, 0),
        fenced = before_deadline_literal(postgres, fence.until),
    );
    let ids: Vec<Id> = diesel::sql_query(sql).load(conn)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids.iter().map(|i| i.id.to_string()).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT d.id, d.attempts, d.folded, d.last_event_id, d.claim_token, r.name AS rule_name, r.throttle_s, \
         e.id AS event_id, e.at, e.kind, e.app_id, a.name AS app_name, e.task_id, e.node_id, e.message, e.data \
         FROM alarm_delivery d JOIN event e ON e.id = d.event_id LEFT JOIN alarm_rule r ON r.id = d.rule_id \
         LEFT JOIN application a ON a.id = e.app_id WHERE d.id IN ({list}) ORDER BY d.id"
    );
    Ok(diesel::sql_query(sql).load(conn)?)
}

/// Record a delivered attempt, under its claim. False when another claim has taken it since.
pub fn delivered(
    conn: &mut AnyConnection,
    id: i64,
    token: i64,
    status: Option<i32>,
    fence: Fence,
) -> Result<bool, StoreError> {
    let postgres = matches!(conn, AnyConnection::Postgresql(_));
    let sql = format!(
        "UPDATE alarm_delivery SET status = 'delivered', last_status = {}, last_error = NULL, finished_at = {} \
         WHERE id = {id} AND claim_token = {token} AND status = 'pending' AND {}",
        status.map_or("NULL".to_string(), |s| s.to_string()),
        now_plus(postgres, 0),
        before_deadline_literal(postgres, fence.until),
    );
    Ok(diesel::sql_query(sql).execute(conn)? == 1)
}

/// Record a failed attempt, under its claim: due again in `retry_ms`, or `failed` for good when
/// `retry_ms` is None.
pub fn retry(
    conn: &mut AnyConnection,
    id: i64,
    token: i64,
    status: Option<i32>,
    error: &str,
    retry_ms: Option<i64>,
    fence: Fence,
) -> Result<bool, StoreError> {
    let postgres = matches!(conn, AnyConnection::Postgresql(_));
    let next = match retry_ms {
        Some(ms) => format!("next_at = {}", now_plus(postgres, ms)),
        None => format!("status = 'failed', finished_at = {}", now_plus(postgres, 0)),
    };
    let sql = format!(
        "UPDATE alarm_delivery SET {next}, last_status = {}, last_error = $1 \
         WHERE id = {id} AND claim_token = {token} AND status = 'pending' AND {}",
        status.map_or("NULL".to_string(), |s| s.to_string()),
        before_deadline_literal(postgres, fence.until),
    );
    let error: String = error.chars().take(2000).collect();
    let n = match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(sql).bind::<Text, _>(&error).execute(c)?,
        AnyConnection::Sqlite(c) => diesel::sql_query(sql.replace("$1", "?")).bind::<Text, _>(&error).execute(c)?,
    };
    Ok(n == 1)
}

/// Filters for [`list_deliveries`].
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Channel.
    pub channel_id: Option<i64>,
    /// Status.
    pub status: Option<String>,
    /// Event (first or only).
    pub event_id: Option<i64>,
}

/// Deliveries with `id < before` (all when None), newest first, at most `limit`.
pub fn list_deliveries(
    conn: &mut AnyConnection,
    f: &DeliveryFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let mut q = alarm_delivery::table.into_boxed::<super::MultiBackend>();
    if let Some(b) = before {
        q = q.filter(alarm_delivery::id.lt(b));
    }
    if let Some(c) = f.channel_id {
        q = q.filter(alarm_delivery::channel_id.eq(c));
    }
    if let Some(s) = &f.status {
        q = q.filter(alarm_delivery::status.eq(s.clone()));
    }
    if let Some(e) = f.event_id {
        q = q.filter(alarm_delivery::event_id.eq(e));
    }
    Ok(q.order(alarm_delivery::id.desc()).limit(limit).select(Delivery::as_select()).load(conn)?)
}

/// The oldest due pending task (by id, the order dispatch takes them in) and how long it has
/// been due, in ms by the database's clock.
pub fn oldest_due_pending(conn: &mut AnyConnection) -> Result<Option<(i64, i64)>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = BigInt)]
        age_ms: i64,
    }
    let row: Option<Row> = match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(
            "SELECT id, CAST(EXTRACT(EPOCH FROM ((clock_timestamp() AT TIME ZONE 'utc') - run_after)) * 1000 AS BIGINT) \
             AS age_ms FROM task WHERE status = 'pending' AND run_after <= (clock_timestamp() AT TIME ZONE 'utc') \
             ORDER BY id LIMIT 1",
        )
        .get_result(c)
        .optional()?,
        AnyConnection::Sqlite(c) => diesel::sql_query(
            "SELECT id, CAST((julianday('now') - julianday(run_after)) * 86400000 AS INTEGER) AS age_ms FROM task \
             WHERE status = 'pending' AND julianday(run_after) <= julianday('now') ORDER BY id LIMIT 1",
        )
        .get_result(c)
        .optional()?,
    };
    Ok(row.map(|r| (r.id, r.age_ms)))
}
