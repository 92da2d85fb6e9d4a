//! Queries on `event`: append-only history.
//!
//! Membership changes are written by more than one node (every survivor records a departure it
//! sees), so they go through [`record_event_once`]: the unique index `event_membership_once`
//! keeps one row per change (docs/membership.md, "Membership events").

use diesel::prelude::*;

use super::models::{Event, NewEvent};
use super::schema::event;
use super::{AnyConnection, MultiBackend, StoreError};
use crate::domain::{LastOwnership, Takeover};

/// Append one event.
pub fn record_event(conn: &mut AnyConnection, new: &NewEvent) -> Result<(), StoreError> {
    diesel::insert_into(event::table).values(new).execute(conn)?;
    Ok(())
}

/// Append events, in order: on PostgreSQL one statement for many (`unnest` of the columns,
/// planned the same whatever the count), one by one otherwise.
pub fn record_events(conn: &mut AnyConnection, evs: &[NewEvent]) -> Result<(), StoreError> {
    use diesel::sql_types::{Array, BigInt, Nullable, Text};
    match conn {
        AnyConnection::Postgresql(c) if evs.len() > 1 => {
            let col = |f: fn(&NewEvent) -> Option<&str>| evs.iter().map(f).collect::<Vec<_>>();
            diesel::sql_query(
                "INSERT INTO event (kind, app_id, node_id, actor, message, data) \
                 SELECT kind, app_id, node_id, actor, message, COALESCE(data, '{}') FROM \
                 unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                   AS v(kind, app_id, node_id, actor, message, data)",
            )
            .bind::<Array<Text>, _>(evs.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind::<Array<Nullable<BigInt>>, _>(evs.iter().map(|e| e.app_id).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(col(|e| e.node_id.as_deref()))
            .bind::<Array<Nullable<Text>>, _>(col(|e| e.actor.as_deref()))
            .bind::<Array<Text>, _>(evs.iter().map(|e| e.message.as_str()).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(col(|e| e.data.as_deref()))
            .execute(c)?;
        }
        _ => {
            for e in evs {
                record_event(conn, e)?;
            }
        }
    }
    Ok(())
}

/// Append one event unless the database already holds it: a membership change (`membership.*`
/// with `data.revision`) recorded by another node, or by this one before a retry. True when this
/// call wrote it.
pub fn record_event_once(conn: &mut AnyConnection, new: &NewEvent) -> Result<bool, StoreError> {
    use diesel::sql_types::{Nullable, Text};
    // `ON CONFLICT DO NOTHING` without a target: the conflict is on an expression index, which
    // both backends match this way.
    let sql = |p: [&str; 5]| {
        format!(
            "INSERT INTO event (kind, node_id, actor, message, data) VALUES ({}, {}, {}, {}, COALESCE({}, '{{}}')) \
             ON CONFLICT DO NOTHING",
            p[0], p[1], p[2], p[3], p[4]
        )
    };
    let n = match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(sql(["$1", "$2", "$3", "$4", "$5"]))
            .bind::<Text, _>(&new.kind)
            .bind::<Nullable<Text>, _>(&new.node_id)
            .bind::<Nullable<Text>, _>(&new.actor)
            .bind::<Text, _>(&new.message)
            .bind::<Nullable<Text>, _>(&new.data)
            .execute(c)?,
        AnyConnection::Sqlite(c) => diesel::sql_query(sql(["?", "?", "?", "?", "?"]))
            .bind::<Text, _>(&new.kind)
            .bind::<Nullable<Text>, _>(&new.node_id)
            .bind::<Nullable<Text>, _>(&new.actor)
            .bind::<Text, _>(&new.message)
            .bind::<Nullable<Text>, _>(&new.data)
            .execute(c)?,
    };
    Ok(n == 1)
}

/// The last ownership event (`app.acquired` or `app.released`) of each of `ids` that has one:
/// who owned an application acquired without an owner, and why it was let go.
pub fn last_ownership(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<(i64, LastOwnership)>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        app_id: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        node_id: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Text)]
        data: String,
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Row> = match conn {
        // One statement, one backward look per application on `event_app_idx` (app_id, id): a
        // node adopting a thousand applications after a full stop asks once.
        AnyConnection::Postgresql(c) => diesel::sql_query(
            "SELECT a.id AS app_id, e.kind, e.node_id, e.data FROM unnest($1::bigint[]) AS a(id) \
             CROSS JOIN LATERAL (SELECT kind, node_id, data FROM event WHERE app_id = a.id \
               AND kind IN ('app.acquired', 'app.released') ORDER BY id DESC LIMIT 1) e",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(ids)
        .load(c)?,
        AnyConnection::Sqlite(c) => {
            let mut rows = Vec::with_capacity(ids.len());
            for &id in ids {
                let row: Option<Row> = diesel::sql_query(
                    "SELECT app_id, kind, node_id, data FROM event WHERE app_id = ? \
                     AND kind IN ('app.acquired', 'app.released') ORDER BY id DESC LIMIT 1",
                )
                .bind::<diesel::sql_types::BigInt, _>(id)
                .get_result(c)
                .optional()?;
                rows.extend(row);
            }
            rows
        }
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let last = if r.kind == "app.released" {
                let why = serde_json::from_str::<serde_json::Value>(&r.data)
                    .ok()
                    .and_then(|d| d["reason"].as_str().and_then(|w| w.parse::<Takeover>().ok()));
                LastOwnership::Released(r.node_id, why)
            } else {
                LastOwnership::Acquired(r.node_id)
            };
            (r.app_id, last)
        })
        .collect())
}

/// Filters for [`list_events`].
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Application.
    pub app_id: Option<i64>,
    /// Task.
    pub task_id: Option<i64>,
    /// Kind prefix, e.g. `app.` or `membership.joined`.
    pub kind: Option<String>,
    /// Node that wrote it.
    pub node_id: Option<String>,
}

/// Events with `id < before` (all when None), newest first, at most `limit`.
pub fn list_events(
    conn: &mut AnyConnection,
    f: &EventFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let mut q = event::table.into_boxed::<MultiBackend>();
    if let Some(b) = before {
        q = q.filter(event::id.lt(b));
    }
    if let Some(a) = f.app_id {
        q = q.filter(event::app_id.eq(a));
    }
    if let Some(t) = f.task_id {
        q = q.filter(event::task_id.eq(t));
    }
    if let Some(k) = &f.kind {
        let escaped = k.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        q = q.filter(event::kind.like(format!("{escaped}%")).escape('\\'));
    }
    if let Some(n) = &f.node_id {
        q = q.filter(event::node_id.eq(n.clone()));
    }
    Ok(q.order(event::id.desc()).limit(limit).select(Event::as_select()).load(conn)?)
}
