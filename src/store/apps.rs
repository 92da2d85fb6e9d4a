//! Queries on `application` for the admin API (the dispatch path's live in `dispatch`).

use diesel::prelude::*;

use super::models::{Application, NewApplication};
use super::schema::application;
use super::{AnyConnection, MultiBackend, StoreError};

/// Insert an application; returns its id. A taken name is a unique violation.
pub fn insert_application(conn: &mut AnyConnection, new: &NewApplication) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(application::table).values(new).returning(application::id).get_result(conn)?)
}

/// The application with this id, if any.
pub fn find_application(conn: &mut AnyConnection, id: i64) -> Result<Option<Application>, StoreError> {
    Ok(application::table.find(id).select(Application::as_select()).first(conn).optional()?)
}

/// Filters for [`list_applications`].
#[derive(Debug, Clone, Default)]
pub struct AppFilter {
    /// Observed state.
    pub state: Option<String>,
    /// Driver name.
    pub driver: Option<String>,
    /// Owning node.
    pub owner: Option<String>,
}

/// Applications with `id > after`, in id order, at most `limit`.
pub fn list_applications(
    conn: &mut AnyConnection,
    f: &AppFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<Application>, StoreError> {
    let mut q = application::table.into_boxed::<MultiBackend>().filter(application::id.gt(after));
    if let Some(s) = &f.state {
        q = q.filter(application::state.eq(s.clone()));
    }
    if let Some(d) = &f.driver {
        q = q.filter(application::driver.eq(d.clone()));
    }
    if let Some(o) = &f.owner {
        q = q.filter(application::owner_node.eq(o.clone()));
    }
    Ok(q.order(application::id).limit(limit).select(Application::as_select()).load(conn)?)
}

/// Fields an admin may change.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = application)]
pub struct AppUpdate {
    /// Driver spec (JSON).
    pub spec: Option<String>,
    /// Selector (JSON).
    pub selector: Option<String>,
    /// Restart policy.
    pub restart_policy: Option<String>,
    /// Restarts allowed.
    pub max_restarts: Option<i32>,
    /// Monitor interval (`Some(None)` returns to the node default).
    pub monitor_interval_ms: Option<Option<i32>>,
    /// Traffic group (`Some(None)` removes it).
    pub traffic_group: Option<Option<String>>,
}

/// Apply an admin's update; false when the application does not exist.
pub fn update_application(conn: &mut AnyConnection, id: i64, change: &AppUpdate) -> Result<bool, StoreError> {
    let n = diesel::update(application::table.find(id))
        .set((change, application::updated_at.eq(chrono::Utc::now().naive_utc())))
        .execute(conn)?;
    Ok(n == 1)
}

/// Outcome of [`delete_application`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Gone.
    Yes,
    /// No such application.
    Missing,
    /// It is not stopped (and `force` was not given): its observed and desired states.
    NotStopped(String, String),
}

/// Delete an application: only when stopped (observed and desired), unless `force`.
pub fn delete_application(conn: &mut AnyConnection, id: i64, force: bool) -> Result<Deleted, StoreError> {
    let Some(app) = find_application(conn, id)? else { return Ok(Deleted::Missing) };
    let stopped = app.state == "stopped" && app.desired_state == "stopped";
    if !stopped && !force {
        return Ok(Deleted::NotStopped(app.state, app.desired_state));
    }
    let mut q = application::table.into_boxed::<MultiBackend>().filter(application::id.eq(id));
    if !force {
        q = q.filter(application::state.eq("stopped")).filter(application::desired_state.eq("stopped"));
    }
    let ids: Vec<i64> = q.select(application::id).load(conn)?;
    let n = diesel::delete(application::table.filter(application::id.eq_any(ids))).execute(conn)?;
    Ok(if n == 1 { Deleted::Yes } else { Deleted::Missing })
}

/// How many applications each node owns.
pub fn owned_counts(conn: &mut AnyConnection) -> Result<Vec<(Option<String>, i64)>, StoreError> {
    Ok(application::table
        .filter(application::owner_node.is_not_null())
        .group_by(application::owner_node)
        .select((application::owner_node, diesel::dsl::count_star()))
        .load(conn)?)
}
