//! Queries on `task` as an entity: insert, find, list and cancel (the admin API), and the counts
//! that metrics and node views read. The dispatch path's statements on `task` live with their
//! concern: `claim`, `complete`, `recover`, `maintenance`.
//!
//! Must never: change a row a node may be running (only a pending row is cancelled here).

use crate::domain::TaskStatus;
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use super::models::{NewTask, Task, TaskSummary};
use super::schema::task;
use super::sql::due;
use super::{AnyConnection, MultiBackend, StoreError};

/// Insert a task; returns its id. A duplicate `idempotency_key` is refused by the database's
/// unique index ([`diesel::result::DatabaseErrorKind::UniqueViolation`]).
pub fn insert_task(conn: &mut AnyConnection, new: &NewTask) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(task::table).values(new).returning(task::id).get_result(conn)?)
}

/// The task with this id, if any.
pub fn find_task(conn: &mut AnyConnection, id: i64) -> Result<Option<Task>, StoreError> {
    Ok(task::table.find(id).select(Task::as_select()).first(conn).optional()?)
}

/// The task holding an idempotency key, if any.
pub fn find_by_idempotency_key(conn: &mut AnyConnection, key: &str) -> Result<Option<Task>, StoreError> {
    Ok(task::table.filter(task::idempotency_key.eq(key)).select(Task::as_select()).first(conn).optional()?)
}

/// Filters for [`list_tasks`].
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Status.
    pub status: Option<String>,
    /// Application.
    pub app_id: Option<i64>,
    /// Claiming node.
    pub owner: Option<String>,
    /// Parent job.
    pub parent_id: Option<i64>,
    /// Created at or after.
    pub since: Option<NaiveDateTime>,
    /// Created before.
    pub until: Option<NaiveDateTime>,
}

/// Tasks with `id > after`, in id order, at most `limit`, without their payloads and results
/// (`TaskSummary`).
pub fn list_tasks(
    conn: &mut AnyConnection,
    f: &TaskFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<TaskSummary>, StoreError> {
    let mut q = task::table.into_boxed::<MultiBackend>().filter(task::id.gt(after));
    if let Some(s) = &f.status {
        q = q.filter(task::status.eq(s.clone()));
    }
    if let Some(a) = f.app_id {
        q = q.filter(task::app_id.eq(a));
    }
    if let Some(o) = &f.owner {
        q = q.filter(task::owner_node.eq(o.clone()));
    }
    if let Some(p) = f.parent_id {
        q = q.filter(task::parent_id.eq(p));
    }
    if let Some(t) = f.since {
        q = q.filter(task::created_at.ge(t));
    }
    if let Some(t) = f.until {
        q = q.filter(task::created_at.lt(t));
    }
    Ok(q.order(task::id).limit(limit).select(TaskSummary::as_select()).load(conn)?)
}

/// The due queue at a glance: how many pending tasks are due now, and how long the oldest of
/// them has been due (seconds; `None` when none is), from its `run_after` (its creation time
/// unless it was deferred). For `/metrics` ([`crate::metrics`]): one statement, at scrape time.
pub fn queue_backlog(conn: &mut AnyConnection) -> Result<(i64, Option<f64>), StoreError> {
    #[derive(QueryableByName)]
    struct Backlog {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
        oldest_s: Option<f64>,
    }
    let b: Backlog = match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(due(
            "SELECT COUNT(*) AS n, \
             CAST(EXTRACT(EPOCH FROM (now() AT TIME ZONE 'utc') - MIN(run_after)) AS DOUBLE PRECISION) AS oldest_s \
             FROM task WHERE status = 'pending' AND DUE(run_after)",
            true,
        ))
        .get_result(c)?,
        // Julian days, not text: a `run_after` written by hand with a `T` sorts apart ([`due`]).
        AnyConnection::Sqlite(c) => diesel::sql_query(due(
            "SELECT COUNT(*) AS n, \
             (julianday('now') - MIN(julianday(run_after))) * 86400.0 AS oldest_s \
             FROM task WHERE status = 'pending' AND DUE(run_after)",
            false,
        ))
        .get_result(c)?,
    };
    Ok((b.n, b.oldest_s.map(|s| s.max(0.0))))
}

/// Running tasks claimed by `node`.
pub fn running_on(conn: &mut AnyConnection, node: &str) -> Result<i64, StoreError> {
    Ok(task::table
        .filter(task::status.eq(TaskStatus::Running))
        .filter(task::owner_node.eq(node))
        .count()
        .get_result(conn)?)
}

/// How many children task `parent` has in each status (`(status, count)`).
pub fn child_counts(conn: &mut AnyConnection, parent: i64) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(task::table
        .filter(task::parent_id.eq(parent))
        .group_by(task::status)
        .select((task::status, diesel::dsl::count_star()))
        .load::<(String, i64)>(conn)?)
}

/// Cancel a pending task; false when it is not pending (any more). A finished row has no
/// fan-out stage (a parent recovered to `pending` keeps one until then).
pub fn cancel(conn: &mut AnyConnection, id: i64) -> Result<bool, StoreError> {
    let n = diesel::update(task::table.filter(task::id.eq(id)).filter(task::status.eq(TaskStatus::Pending)))
        .set((
            task::status.eq(TaskStatus::Cancelled),
            task::stage.eq(None::<String>),
            task::finished_at.eq(Utc::now().naive_utc()),
        ))
        .execute(conn)?;
    Ok(n == 1)
}
