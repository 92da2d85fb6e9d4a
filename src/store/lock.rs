//! The standalone membership lock: one row that one running node holds and heartbeats.
//!
//! Why a row and not a file lock: the database is what two "alone" nodes would share, whether it
//! is a SQLite file or a PostgreSQL server reached from two machines. Times are the database's
//! clock, so hosts with skewed clocks agree on when a lock is stale. Every change is a
//! compare-and-swap on (`holder`, `epoch`), so of two nodes racing for a stale lock one wins.
//! The epoch only grows (a release marks the row stale instead of deleting it): it is the
//! fencing token a standalone node writes on what it owns.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Timestamp;

use super::models::LockRow;
use super::schema::membership_lock as ml;
use super::{AnyConnection, StoreError};

/// The one lock row's name.
pub const LOCK_NAME: &str = "standalone";

/// Who asks for the lock.
#[derive(Debug, Clone)]
pub struct Claimant {
    /// Node id.
    pub node_id: String,
    /// Per-process token: two processes with the same node id are still two holders.
    pub holder: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i64,
    /// Boot id + pid namespace: where `pid` is meaningful.
    pub pid_space: String,
    /// HTTP address.
    pub addr: String,
}

/// Outcome of [`try_acquire`].
#[derive(Debug, Clone, PartialEq)]
pub enum Acquire {
    /// We hold it, with this epoch.
    Acquired {
        /// The new epoch.
        epoch: i64,
        /// The previous holder, when it was another process that had not released the lock
        /// (crashed, or stalled past the TTL): a member lost, for the history.
        lost: Option<LockRow>,
    },
    /// Someone else holds it and is alive.
    Held(LockRow),
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Timestamp)]
    now: NaiveDateTime,
}

/// The database's clock, UTC.
pub fn db_now(conn: &mut AnyConnection) -> Result<NaiveDateTime, StoreError> {
    let now: Now = match conn {
        AnyConnection::Postgresql(c) => {
            diesel::sql_query("SELECT (clock_timestamp() AT TIME ZONE 'utc') AS now").get_result(c)?
        }
        AnyConnection::Sqlite(c) => {
            diesel::sql_query("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now").get_result(c)?
        }
    };
    Ok(now.now)
}

/// The lock row as it is now.
pub fn read_lock(conn: &mut AnyConnection) -> Result<Option<LockRow>, StoreError> {
    Ok(ml::table.find(LOCK_NAME).select(LockRow::as_select()).first(conn).optional()?)
}

/// Take the lock if it is free, stale (no heartbeat for `ttl`), ours, or held by a process that
/// `holder_is_dead` says is gone (same host, pid not running).
pub fn try_acquire(
    conn: &mut AnyConnection,
    me: &Claimant,
    ttl: Duration,
    holder_is_dead: impl Fn(&LockRow) -> bool,
) -> Result<Acquire, StoreError> {
    let now = db_now(conn)?;
    let Some(row) = read_lock(conn)? else {
        let fresh = LockRow {
            name: LOCK_NAME.into(),
            node_id: me.node_id.clone(),
            holder: me.holder.clone(),
            host: me.host.clone(),
            pid: me.pid,
            pid_space: me.pid_space.clone(),
            addr: me.addr.clone(),
            epoch: 1,
            acquired_at: now,
            heartbeat_at: now,
        };
        return match diesel::insert_into(ml::table).values(&fresh).execute(conn) {
            Ok(_) => Ok(Acquire::Acquired { epoch: 1, lost: None }),
            // Another node inserted first: it holds the lock.
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => held(conn),
            Err(e) => Err(e.into()),
        };
    };
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let stale = row.heartbeat_at < now - ttl;
    if !(stale || row.holder == me.holder || holder_is_dead(&row)) {
        return Ok(Acquire::Held(row));
    }
    let epoch = row.epoch + 1;
    let changed = diesel::update(
        ml::table.filter(ml::name.eq(LOCK_NAME)).filter(ml::holder.eq(&row.holder)).filter(ml::epoch.eq(row.epoch)),
    )
    .set((
        ml::node_id.eq(&me.node_id),
        ml::holder.eq(&me.holder),
        ml::host.eq(&me.host),
        ml::pid.eq(me.pid),
        ml::pid_space.eq(&me.pid_space),
        ml::addr.eq(&me.addr),
        ml::epoch.eq(epoch),
        ml::acquired_at.eq(now),
        ml::heartbeat_at.eq(now),
    ))
    .execute(conn)?;
    if changed == 1 {
        // A released lock carries the Unix epoch as its heartbeat ([`release`]).
        let released = row.heartbeat_at == chrono::DateTime::UNIX_EPOCH.naive_utc();
        let lost = (row.holder != me.holder && !released).then_some(row);
        Ok(Acquire::Acquired { epoch, lost })
    } else {
        held(conn)
    }
}

fn held(conn: &mut AnyConnection) -> Result<Acquire, StoreError> {
    match read_lock(conn)? {
        Some(row) => Ok(Acquire::Held(row)),
        None => Err(StoreError::Query(DieselError::NotFound)),
    }
}

/// Renew our heartbeat; false when the lock is no longer ours at this epoch.
pub fn heartbeat(conn: &mut AnyConnection, holder: &str, epoch: i64) -> Result<bool, StoreError> {
    use diesel::sql_types::{BigInt, Text};
    // One statement, the clock read in it: a heartbeat is the one query an idle standalone
    // node makes on its own, every `heartbeat_interval_ms`.
    let sql = |now: &str, p: [&str; 3]| {
        format!(
            "UPDATE membership_lock SET heartbeat_at = {now} WHERE name = {} AND holder = {} AND epoch = {}",
            p[0], p[1], p[2]
        )
    };
    let changed = match conn {
        AnyConnection::Postgresql(c) => {
            diesel::sql_query(sql("(clock_timestamp() AT TIME ZONE 'utc')", ["$1", "$2", "$3"]))
                .bind::<Text, _>(LOCK_NAME)
                .bind::<Text, _>(holder)
                .bind::<BigInt, _>(epoch)
                .execute(c)?
        }
        AnyConnection::Sqlite(c) => diesel::sql_query(sql("strftime('%Y-%m-%d %H:%M:%f', 'now')", ["?", "?", "?"]))
            .bind::<Text, _>(LOCK_NAME)
            .bind::<Text, _>(holder)
            .bind::<BigInt, _>(epoch)
            .execute(c)?,
    };
    Ok(changed == 1)
}

/// Give the lock up: mark it stale at once (the epoch stays, so the next holder's is higher).
pub fn release(conn: &mut AnyConnection, holder: &str) -> Result<bool, StoreError> {
    let long_ago = chrono::DateTime::UNIX_EPOCH.naive_utc();
    let changed = diesel::update(ml::table.filter(ml::name.eq(LOCK_NAME)).filter(ml::holder.eq(holder)))
        .set(ml::heartbeat_at.eq(long_ago))
        .execute(conn)?;
    Ok(changed == 1)
}
