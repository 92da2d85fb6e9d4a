//! Queries on `event`: append-only history.

use diesel::prelude::*;

use super::models::{Event, NewEvent};
use super::schema::event;
use super::{AnyConnection, MultiBackend, StoreError};

/// Append one event.
pub fn record_event(conn: &mut AnyConnection, new: &NewEvent) -> Result<(), StoreError> {
    diesel::insert_into(event::table).values(new).execute(conn)?;
    Ok(())
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
