//! Queries on `task`.

use diesel::prelude::*;

use super::models::{NewTask, Task};
use super::schema::task;
use super::{AnyConnection, StoreError};

/// Insert a task; returns its id. A duplicate `idempotency_key` is refused by the database's
/// unique index ([`diesel::result::DatabaseErrorKind::UniqueViolation`]).
pub fn insert_task(conn: &mut AnyConnection, new: &NewTask) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(task::table).values(new).returning(task::id).get_result(conn)?)
}

/// The task with this id, if any.
pub fn find_task(conn: &mut AnyConnection, id: i64) -> Result<Option<Task>, StoreError> {
    Ok(task::table.find(id).select(Task::as_select()).first(conn).optional()?)
}
