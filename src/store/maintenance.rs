//! Upkeep of the `task` table: deleting finished rows past their retention ([`prune_finished`]),
//! and vacuuming the table where no one else will ([`TaskVacuum`]).
//!
//! Why: finished rows are kept for their history, then deleted in small batches. On PostgreSQL
//! every claim and completion leaves dead row versions that the claims walk past; where
//! autovacuum is off (the server's setting or the table's option) the node vacuums the table
//! itself, and can cancel that vacuum when it stops ([`cancel_backend`]).
//!
//! Must never: delete a row that is not finished, or run `VACUUM` inside a transaction.

use std::sync::atomic::{AtomicI32, Ordering};

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::schema::task;
use super::{AnyConnection, StoreError};
use crate::domain::TaskStatus;

/// Delete up to `limit` finished tasks that finished before `cutoff`; returns how many.
pub fn prune_finished(conn: &mut AnyConnection, cutoff: NaiveDateTime, limit: i64) -> Result<usize, StoreError> {
    let old: Vec<i64> = task::table
        .filter(task::status.eq_any(TaskStatus::TERMINAL))
        .filter(task::finished_at.lt(cutoff))
        .select(task::id)
        .limit(limit)
        .load(conn)?;
    if old.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(task::table.filter(task::id.eq_any(old)).filter(task::status.eq_any(TaskStatus::TERMINAL)))
        .execute(conn)?)
}

/// The dead and live row versions of the `task` table, and whether vacuuming it is left to this
/// node: PostgreSQL only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct TaskVacuum {
    /// Dead row versions (`pg_stat_user_tables.n_dead_tup`).
    #[diesel(sql_type = BigInt)]
    pub dead: i64,
    /// Live rows.
    #[diesel(sql_type = BigInt)]
    pub live: i64,
    /// Autovacuum is off for the table (server setting or table option): no one else vacuums it.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub autovacuum_off: bool,
    /// This role may vacuum it (owner, or a member of the owner's role; superusers may).
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub may_vacuum: bool,
}

impl TaskVacuum {
    /// Dead row versions below this never call for a vacuum.
    pub const MIN_DEAD: i64 = 100_000;

    /// Vacuum now: autovacuum will not, this role may, and the dead versions are past
    /// [`Self::MIN_DEAD`] — a fixed number, not a share of the live rows, for the reason the
    /// table's autovacuum settings give (migration `task_autovacuum`): the live rows include
    /// every finished row kept for retention, and a share of them comes late.
    pub fn needed(&self) -> bool {
        self.autovacuum_off && self.may_vacuum && self.dead >= Self::MIN_DEAD
    }
}

/// The `task` table's vacuum state; `None` on SQLite (no dead versions to speak of: its rows
/// are rewritten in place).
pub fn task_vacuum(conn: &mut AnyConnection) -> Result<Option<TaskVacuum>, StoreError> {
    let AnyConnection::Postgresql(c) = conn else { return Ok(None) };
    Ok(diesel::sql_query(
        "SELECT s.n_dead_tup AS dead, s.n_live_tup AS live, \
           (current_setting('autovacuum') = 'off' \
            OR EXISTS (SELECT 1 FROM pg_options_to_table(cl.reloptions) o \
                       WHERE o.option_name = 'autovacuum_enabled' AND NOT o.option_value::boolean)) AS autovacuum_off, \
           pg_has_role(cl.relowner, 'USAGE') AS may_vacuum \
         FROM pg_stat_user_tables s JOIN pg_class cl ON cl.oid = s.relid WHERE s.relid = 'task'::regclass",
    )
    .get_result(c)
    .optional()?)
}

/// `VACUUM` the `task` table, skipping it if another session vacuums it already (PostgreSQL;
/// nothing on SQLite). Outside any transaction: `VACUUM` cannot run in one. `backend` holds
/// the server process running it meanwhile (0 otherwise), for [`cancel_backend`].
pub fn vacuum_task(conn: &mut AnyConnection, backend: &AtomicI32) -> Result<(), StoreError> {
    let AnyConnection::Postgresql(c) = conn else { return Ok(()) };
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let pid: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid").get_result(c)?;
    backend.store(pid.pid, Ordering::Release);
    let done = c.batch_execute("VACUUM (SKIP_LOCKED) task");
    backend.store(0, Ordering::Release);
    Ok(done?)
}

/// Ask the server to cancel what backend `pid` runs (PostgreSQL; a vacuum of [`vacuum_task`]).
pub fn cancel_backend(conn: &mut AnyConnection, pid: i32) -> Result<(), StoreError> {
    if let AnyConnection::Postgresql(c) = conn {
        c.batch_execute(&format!("SELECT pg_cancel_backend({pid})"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_task_table_is_vacuumed_only_when_no_one_else_will_and_it_pays() {
        use super::TaskVacuum;
        let at = |dead, live, autovacuum_off, may_vacuum| TaskVacuum { dead, live, autovacuum_off, may_vacuum };
        assert!(at(TaskVacuum::MIN_DEAD, 0, true, true).needed());
        assert!(at(TaskVacuum::MIN_DEAD, 100_000_000, true, true).needed(), "however many rows are kept");
        assert!(!at(TaskVacuum::MIN_DEAD - 1, 0, true, true).needed(), "too few dead versions to bother");
        assert!(!at(10_000_000, 0, false, true).needed(), "autovacuum is on: it vacuums");
        assert!(!at(10_000_000, 0, true, false).needed(), "this role may not vacuum the table");
    }
}
