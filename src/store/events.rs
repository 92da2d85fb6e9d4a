//! Queries on `event`: append-only history.

use diesel::prelude::*;

use super::models::{Event, NewEvent};
use super::schema::event;
use super::{AnyConnection, StoreError};

/// Append one event.
pub fn record_event(conn: &mut AnyConnection, new: &NewEvent) -> Result<(), StoreError> {
    diesel::insert_into(event::table).values(new).execute(conn)?;
    Ok(())
}

/// The newest events of one kind prefix (e.g. `membership.`), newest first.
pub fn recent_events(conn: &mut AnyConnection, kind_prefix: &str, limit: i64) -> Result<Vec<Event>, StoreError> {
    Ok(event::table
        .filter(event::kind.like(format!("{kind_prefix}%")))
        .order(event::id.desc())
        .limit(limit)
        .select(Event::as_select())
        .load(conn)?)
}
