//! Queries on `application`: the admin API's (insert, find, list, update, delete), and its
//! owner's — who owns each application, acquiring and releasing it (hand-off invariant I4), and
//! the owner's writes about it, batched ([`apps_batch`]).
//!
//! Every write as owner is conditional on the application's `owner_node` and `owner_epoch` and
//! on the writer's [`Fence`].
//!
//! Must never: take an application that another live node holds, or change an application's
//! owner from the admin API.

use std::collections::HashMap;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};

use super::complete::apps_write_pg;
use super::events;
use super::fence::{before_deadline, merge_admitted, BeforeDeadline, Fence};
use super::models::{Application, NewApplication, NewEvent};
use super::schema::application;
use super::sql::unnest_as;
use super::{AnyConnection, MultiBackend, StoreError};
use crate::domain::{AppState, DesiredState, LastOwnership, Takeover};

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
    let stopped = app.state == AppState::Stopped && app.desired_state == DesiredState::Stopped;
    if !stopped && !force {
        return Ok(Deleted::NotStopped(app.state.to_string(), app.desired_state.to_string()));
    }
    let mut q = application::table.into_boxed::<MultiBackend>().filter(application::id.eq(id));
    if !force {
        q = q
            .filter(application::state.eq(AppState::Stopped))
            .filter(application::desired_state.eq(DesiredState::Stopped));
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

// The owner's queries: who owns each application, acquisition and release, and the owner's
// writes (the dispatch path).

/// Who owns an application, and what places it: the dispatcher's view of every application.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct AppOwner {
    /// The application.
    pub id: i64,
    /// Its owning node, if any.
    pub owner: Option<String>,
    /// Its label selector (JSON text, as written).
    pub selector: String,
    /// Its traffic group, if any.
    pub group: Option<String>,
}

/// Every application's id, owner, selector and traffic group.
pub fn app_owners(conn: &mut AnyConnection) -> Result<Vec<AppOwner>, StoreError> {
    Ok(application::table
        .select((application::id, application::owner_node, application::selector, application::traffic_group))
        .order(application::id)
        .load(conn)?)
}

/// The selectors (JSON) and traffic groups of these applications; missing ones are absent.
pub fn app_selectors(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<AppOwner>, StoreError> {
    Ok(application::table
        .filter(application::id.eq_any(ids.to_vec()))
        .select((application::id, application::owner_node, application::selector, application::traffic_group))
        .load(conn)?)
}

/// Take ownership of an application at `epoch` — only when it has no owner, its owner has left
/// (`live` does not name it), or it is already ours. Hand-off invariant I4: never while another
/// live node still holds it. Returns the application when acquired. `event` is recorded in the
/// same transaction, so the history orders acquisitions and releases as the database did.
/// Nothing is acquired under the [`Fence`] (an epoch of an earlier session, or past the node's
/// deadline): a node paused with an old list of live members takes nothing from a node that
/// joined meanwhile. [`apps_batch`] with this one acquisition.
pub fn acquire_app(
    conn: &mut AnyConnection,
    id: i64,
    me: &str,
    fence: Fence,
    epoch: i64,
    live: &[String],
    event: &NewEvent,
) -> Result<Option<Application>, StoreError> {
    let acquire = AppAcquire { id, epoch, live: live.to_vec(), event: event.clone() };
    Ok(apps_batch(conn, me, fence, &[acquire], &[], &[])?.acquired.pop().flatten())
}

/// [`acquire_app`] inside the caller's transaction, fenced by the deadline `until`, without its
/// event ([`record_acquisitions`]).
fn acquire_app_in(
    conn: &mut AnyConnection,
    id: i64,
    (me, until): (&str, NaiveDateTime),
    epoch: i64,
    live: &[String],
) -> Result<Option<Application>, StoreError> {
    let n = diesel::update(
        application::table
            .filter(application::id.eq(id))
            .filter(
                application::owner_node
                    .is_null()
                    .or(application::owner_node.eq(me))
                    .or(application::owner_node.ne_all(live.to_vec())),
            )
            .filter(BeforeDeadline(until)),
    )
    .set((
        application::owner_node.eq(me),
        application::owner_epoch.eq(epoch),
        application::updated_at.eq(Utc::now().naive_utc()),
    ))
    .execute(conn)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(application::table.find(id).select(Application::as_select()).first(conn).optional()?)
}

/// An acquisition for [`apps_batch`]: [`acquire_app`]'s arguments.
#[derive(Debug, Clone)]
pub struct AppAcquire {
    /// The application.
    pub id: i64,
    /// The ring epoch it is acquired at (its fencing token from now on).
    pub epoch: i64,
    /// The live members: an owner not among them has left, and its applications may be taken.
    pub live: Vec<String>,
    /// Recorded in the same transaction when the acquisition succeeded.
    pub event: NewEvent,
}

/// `FROM` text for a batch statement on `application`: the arrays of `columns` as rows `v`
/// ([`unnest_as`]), with the values every row shares (`extra`: the node, the live members) as
/// columns of `v`, behind an `OFFSET 0` that keeps the planner from folding them back into
/// constants.
/// Why: compared with a constant, `owner_node = 'n1'` is estimated from the table's statistics,
/// and statistics taken before a node owned anything estimate it at one row. PostgreSQL then
/// scanned every row the node owns and compared each with every row of the batch: 8-24 s per
/// batch of 1,024 at 100,000 applications (auto_explain; docs/benchmarks.md#scale). Compared
/// with a column of the batch, the ownership is a join condition; the batch drives, each of its
/// rows probing the primary key (or, on a small table, one hash join).
pub(super) fn batch_with_owner(columns: &[(&str, &str)], extra: &str) -> String {
    format!("(SELECT u.*, {extra} FROM {} OFFSET 0) AS v", unnest_as(columns, "u"))
}

/// The arrays of a batch of acquisitions or releases (`$1`, `$2`).
const OWNED_BATCH: [(&str, &str); 2] = [("id", "bigint"), ("epoch", "bigint")];

/// [`acquire_app`] for applications on PostgreSQL, all with the same `live` members, fenced by
/// the deadline `until` ([`before_deadline`]): one statement (`UPDATE … FROM unnest(…)`), the
/// events written after it ([`record_acquisitions`]).
/// Why: a node adopting 1,000 applications at once (a start, a failover) spent ~1 s committing
/// one transaction per application (server log, docs/benchmarks.md).
fn acquire_apps_pg(
    conn: &mut diesel::PgConnection,
    (me, until): (&str, NaiveDateTime),
    live: &[String],
    acquires: &[&AppAcquire],
) -> Result<Vec<Option<Application>>, StoreError> {
    use diesel::sql_types::Timestamp;
    let ids: Vec<i64> = acquires.iter().map(|a| a.id).collect();
    let epochs: Vec<i64> = acquires.iter().map(|a| a.epoch).collect();
    let sql = format!(
        "UPDATE application AS a SET owner_node = $3, owner_epoch = v.epoch, updated_at = $4 \
         FROM {batch} \
         WHERE a.id = v.id AND (a.owner_node IS NULL OR a.owner_node = v.me OR a.owner_node <> ALL (v.live)) \
           AND {before_deadline} \
         RETURNING a.*",
        batch = batch_with_owner(&OWNED_BATCH, "$3::text AS me, $5::text[] AS live"),
        before_deadline = before_deadline(true, 6)
    );
    let got: Vec<Application> = diesel::sql_query(sql)
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<BigInt>, _>(&epochs)
        .bind::<Text, _>(me)
        .bind::<Timestamp, _>(Utc::now().naive_utc())
        .bind::<Array<Text>, _>(live)
        .bind::<Timestamp, _>(until)
        .load(conn)?;
    let mut got: std::collections::HashMap<i64, Application> = got.into_iter().map(|a| (a.id, a)).collect();
    Ok(ids.iter().map(|id| got.remove(id)).collect())
}

/// A release for [`release_apps`]: the application, the epoch it was acquired at, and the
/// `app.released` event recorded when the release applies.
#[derive(Debug, Clone)]
pub struct AppRelease {
    /// The application.
    pub id: i64,
    /// The epoch this node acquired it at: nothing is released under another.
    pub epoch: i64,
    /// Recorded in the same transaction when the release applied.
    pub event: NewEvent,
}

/// The PostgreSQL channel a release is announced on: a node waiting to acquire an application
/// tries again at once instead of at its next retry (`dispatch::wake`).
pub const RELEASED_CHANNEL: &str = "rota_release";

/// Give applications up (after stopping whatever this node ran for them), each only while this
/// node owns it at the epoch it names; their events are recorded in the same transaction, and on
/// PostgreSQL the commit is announced on [`RELEASED_CHANNEL`]. One flag per release, in order:
/// whether it applied. PostgreSQL: one statement for the releases (`UPDATE … FROM unnest(…)`),
/// one for the events, one for the announcement; SQLite: one statement per release.
/// Why batched: a node handing 2,500 applications to a joining node spent a transaction on each
/// (docs/benchmarks.md#scale).
pub fn release_apps(conn: &mut AnyConnection, me: &str, releases: &[AppRelease]) -> Result<Vec<bool>, StoreError> {
    if releases.is_empty() {
        return Ok(Vec::new());
    }
    conn.transaction(|c| {
        let released: std::collections::HashSet<i64> = match c {
            AnyConnection::Postgresql(pg) => {
                let ids: Vec<i64> = releases.iter().map(|r| r.id).collect();
                let epochs: Vec<i64> = releases.iter().map(|r| r.epoch).collect();
                #[derive(QueryableByName)]
                struct Id {
                    #[diesel(sql_type = BigInt)]
                    id: i64,
                }
                let got: Vec<Id> = diesel::sql_query(format!(
                    "UPDATE application AS a SET owner_node = NULL, owner_epoch = NULL \
                     FROM {batch} \
                     WHERE a.id = v.id AND a.owner_node = v.me AND a.owner_epoch = v.epoch \
                     RETURNING a.id",
                    batch = batch_with_owner(&OWNED_BATCH, "$3::text AS me")
                ))
                .bind::<Array<BigInt>, _>(&ids)
                .bind::<Array<BigInt>, _>(&epochs)
                .bind::<Text, _>(me)
                .load(pg)?;
                got.into_iter().map(|r| r.id).collect()
            }
            AnyConnection::Sqlite(_) => {
                let mut done = std::collections::HashSet::new();
                for r in releases {
                    let n = diesel::update(
                        application::table
                            .filter(application::id.eq(r.id))
                            .filter(application::owner_node.eq(me))
                            .filter(application::owner_epoch.eq(r.epoch)),
                    )
                    .set((application::owner_node.eq(None::<String>), application::owner_epoch.eq(None::<i64>)))
                    .execute(c)?;
                    if n == 1 {
                        done.insert(r.id);
                    }
                }
                done
            }
        };
        let evs: Vec<NewEvent> =
            releases.iter().filter(|r| released.contains(&r.id)).map(|r| r.event.clone()).collect();
        events::record_events(c, &evs)?;
        if let (AnyConnection::Postgresql(pg), false) = (&mut *c, released.is_empty()) {
            diesel::sql_query("SELECT pg_notify($1, '')").bind::<Text, _>(RELEASED_CHANNEL).execute(pg)?;
        }
        Ok(releases.iter().map(|r| released.contains(&r.id)).collect())
    })
}

/// Release an application that this node owned in an earlier life (any epoch): no actor of
/// this process runs it, and the ring gives it to another node.
pub fn release_stale_app(conn: &mut AnyConnection, id: i64, me: &str) -> Result<bool, StoreError> {
    let n = diesel::update(application::table.filter(application::id.eq(id)).filter(application::owner_node.eq(me)))
        .set((application::owner_node.eq(None::<String>), application::owner_epoch.eq(None::<i64>)))
        .execute(conn)?;
    Ok(n == 1)
}

/// Fields of an application its owner may change.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = application)]
pub struct AppChange {
    /// New desired state.
    pub desired_state: Option<DesiredState>,
    /// New observed state.
    pub state: Option<AppState>,
    /// New last error (`Some(None)` clears it).
    pub last_error: Option<Option<String>>,
    /// New restart count.
    pub restart_count: Option<i32>,
}

impl AppChange {
    /// This change followed by `later`, as one: `later`'s fields where it sets them.
    pub fn then(self, later: AppChange) -> AppChange {
        AppChange {
            desired_state: later.desired_state.or(self.desired_state),
            state: later.state.or(self.state),
            last_error: later.last_error.or(self.last_error),
            restart_count: later.restart_count.or(self.restart_count),
        }
    }
}

/// Apply `change` to an application this node owns at `epoch`, then record `event` when it
/// was applied; false (nothing written) when the node does not own it, or the database's clock
/// has passed `until`.
pub(super) fn update_owned_app(
    conn: &mut AnyConnection,
    id: i64,
    (me, until): (&str, NaiveDateTime),
    epoch: i64,
    change: &AppChange,
    event: Option<&NewEvent>,
) -> Result<bool, StoreError> {
    let n = diesel::update(
        application::table
            .filter(application::id.eq(id))
            .filter(application::owner_node.eq(me))
            .filter(application::owner_epoch.eq(epoch))
            .filter(BeforeDeadline(until)),
    )
    .set((change, application::updated_at.eq(Utc::now().naive_utc())))
    .execute(conn)?;
    if let (1, Some(event)) = (n, event) {
        events::record_event(conn, event)?;
    }
    Ok(n == 1)
}

/// Record what the driver of application `id` keeps ([`crate::drivers::Runtime`], JSON text),
/// as its owner at `epoch` under `fence`, then `event` when it was written: false (nothing
/// written) when this node does not own it at that epoch, the epoch belongs to an earlier
/// session, or the database's clock has passed the fence's deadline. Rare (a driver records
/// before and after it acts on an outside system), so one statement of its own, not batched.
pub fn record_runtime(
    conn: &mut AnyConnection,
    id: i64,
    me: &str,
    fence: Fence,
    epoch: i64,
    runtime: &str,
    event: Option<&NewEvent>,
) -> Result<bool, StoreError> {
    if !fence.admits(epoch) {
        return Ok(false);
    }
    conn.transaction(|conn| {
        let n = diesel::update(
            application::table
                .filter(application::id.eq(id))
                .filter(application::owner_node.eq(me))
                .filter(application::owner_epoch.eq(epoch))
                .filter(BeforeDeadline(fence.until)),
        )
        .set((application::runtime.eq(runtime), application::updated_at.eq(Utc::now().naive_utc())))
        .execute(conn)?;
        if let (1, Some(event)) = (n, event) {
            events::record_event(conn, event)?;
        }
        Ok(n == 1)
    })
}

/// One owner's write about an application: `change` at `epoch`, and `event` when it applied.
#[derive(Debug, Clone)]
pub struct AppWrite {
    /// The application.
    pub id: i64,
    /// The epoch this node acquired it at (the write is conditional on it).
    pub epoch: i64,
    /// What changes.
    pub change: AppChange,
    /// Recorded with the change when it applied (with a task's outcome,
    /// [`finish_batch`](super::complete::finish_batch): only when the outcome was written too).
    pub event: Option<NewEvent>,
}

/// [`acquire_app`] for `acquires`, [`update_owned_app`] for `writes`, then a fresh read of
/// `reads`: per acquisition the application when acquired (None: another live node holds it,
/// it does not exist, or the [`Fence`] refused it), one flag per write (in order; false = not
/// ours, or refused, nothing written), and the applications of `reads` that exist. The
/// acquisitions and the writes must each name distinct applications.
/// PostgreSQL: one statement for the writes and their events (`UPDATE … FROM unnest(…)` with
/// the `INSERT` in a CTE fed by its `RETURNING`, each row conditional on its own owner and
/// epoch and on the deadline), one per set of live members for the acquisitions (in a
/// transaction when there are any), and one for the reads; SQLite: single-row statements in one
/// transaction, then the reads. Nothing is acquired or written under an epoch of an earlier
/// session, or once the database's clock has passed the deadline.
pub fn apps_batch(
    conn: &mut AnyConnection,
    me: &str,
    fence: Fence,
    acquires: &[AppAcquire],
    writes: &[AppWrite],
    reads: &[i64],
) -> Result<AppsBatch, StoreError> {
    if !acquires.iter().all(|a| fence.admits(a.epoch)) || !writes.iter().all(|w| fence.admits(w.epoch)) {
        let mine: Vec<AppAcquire> = acquires.iter().filter(|a| fence.admits(a.epoch)).cloned().collect();
        let ours: Vec<AppWrite> = writes.iter().filter(|w| fence.admits(w.epoch)).cloned().collect();
        let done = apps_batch(conn, me, fence, &mine, &ours, reads)?;
        return Ok(AppsBatch {
            acquired: merge_admitted(acquires, |a| fence.admits(a.epoch), done.acquired, |_| None),
            missing: done.missing,
            written: merge_admitted(writes, |w| fence.admits(w.epoch), done.written, |_| false),
            read: done.read,
        });
    }
    let writer = (me, fence.until);
    let batch = |c: &mut AnyConnection| {
        let (acquired, missing, written) = apps_write_in(c, writer, acquires, writes)?;
        let read = if reads.is_empty() { Vec::new() } else { apps(c, reads)? };
        Ok(AppsBatch { acquired, missing, written, read })
    };
    // Several statements to write (acquisitions; every write on SQLite): one transaction, the
    // reads in it — so a read that fails rolls the writes back, and a batch run again after a
    // lost connection records no event twice. Writes alone on PostgreSQL are one statement, and
    // a transaction around it cost a BEGIN and a COMMIT per batch, on the path of every
    // application command. (A read that fails after such a write answers the writes with its
    // error: their actors keep their copy of the application as it was until their next read.)
    match conn {
        AnyConnection::Postgresql(_) if acquires.is_empty() => batch(conn),
        _ => conn.transaction(batch),
    }
}

/// [`apps_batch`]'s acquisitions and writes: per acquisition the application when acquired,
/// the acquisitions' applications that do not exist, and per write whether it applied.
#[allow(clippy::type_complexity)]
fn apps_write_in(
    conn: &mut AnyConnection,
    writer: (&str, NaiveDateTime),
    acquires: &[AppAcquire],
    writes: &[AppWrite],
) -> Result<(Vec<Option<Application>>, Vec<i64>, Vec<bool>), StoreError> {
    let mut acquired = vec![None; acquires.len()];
    let before: HashMap<i64, Option<String>> = if acquires.is_empty() {
        HashMap::new()
    } else {
        application::table
            .filter(application::id.eq_any(acquires.iter().map(|a| a.id).collect::<Vec<_>>()))
            .select((application::id, application::owner_node))
            .load::<(i64, Option<String>)>(conn)?
            .into_iter()
            .collect()
    };
    let mut rest: Vec<usize> = (0..acquires.len()).collect();
    // PostgreSQL: one statement per set of live members (one set, unless the membership changed
    // while the batch gathered); SQLite and single acquisitions: one by one.
    while let Some(&first) = rest.first() {
        let live = &acquires[first].live;
        let (group, other): (Vec<usize>, Vec<usize>) = rest.iter().partition(|&&i| acquires[i].live == *live);
        rest = other;
        let got = match conn {
            AnyConnection::Postgresql(c) if group.len() > 1 => {
                acquire_apps_pg(c, writer, live, &group.iter().map(|&i| &acquires[i]).collect::<Vec<_>>())?
            }
            _ => group
                .iter()
                .map(|&i| {
                    let a = &acquires[i];
                    acquire_app_in(conn, a.id, writer, a.epoch, &a.live)
                })
                .collect::<Result<_, _>>()?,
        };
        for (i, app) in group.into_iter().zip(got) {
            acquired[i] = app;
        }
    }
    record_acquisitions(conn, writer.0, acquires, &acquired, &before)?;
    let missing = acquires.iter().map(|a| a.id).filter(|id| !before.contains_key(id)).collect();
    let flags = match conn {
        AnyConnection::Postgresql(_) if writes.is_empty() => Vec::new(),
        AnyConnection::Postgresql(c) => apps_write_pg(c, writer, writes)?,
        AnyConnection::Sqlite(_) => writes
            .iter()
            .map(|w| update_owned_app(conn, w.id, writer, w.epoch, &w.change, w.event.as_ref()))
            .collect::<Result<_, _>>()?,
    };
    Ok((acquired, missing, flags))
}

/// Record the `app.acquired` event of each acquisition that took its application, naming the
/// previous owner and why it moved ([`Takeover::decide`]; docs/dispatch.md, "Ownership events"):
/// `before` holds the owners read in the same transaction before the acquisitions. The last
/// ownership events are read only for applications that had no owner, or a live one that
/// released it meanwhile.
fn record_acquisitions(
    conn: &mut AnyConnection,
    me: &str,
    acquires: &[AppAcquire],
    acquired: &[Option<Application>],
    before: &HashMap<i64, Option<String>>,
) -> Result<(), StoreError> {
    let taken: Vec<&AppAcquire> = acquires.iter().zip(acquired).filter(|(_, a)| a.is_some()).map(|(a, _)| a).collect();
    if taken.is_empty() {
        return Ok(());
    }
    let owner_before = |a: &AppAcquire| before.get(&a.id).cloned().flatten();
    let unknown: Vec<i64> =
        taken.iter().filter(|a| owner_before(a).is_none_or(|o| o != me && a.live.contains(&o))).map(|a| a.id).collect();
    let last: HashMap<i64, LastOwnership> = events::last_ownership(conn, &unknown)?.into_iter().collect();
    let evs: Vec<NewEvent> = taken
        .iter()
        .map(|a| {
            let (previous, why) = Takeover::decide(me, owner_before(a).as_deref(), &a.live, last.get(&a.id));
            describe_takeover(&a.event, previous.as_deref(), why)
        })
        .collect();
    events::record_events(conn, &evs)?;
    Ok(())
}

/// `event` (an `app.acquired` as the actor wrote it) with the previous owner and the reason in
/// its message and `data` (`previous_owner`, `reason`).
fn describe_takeover(event: &NewEvent, previous: Option<&str>, why: Takeover) -> NewEvent {
    let mut data = event
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    data["previous_owner"] = previous.map_or(serde_json::Value::Null, |p| p.into());
    data["reason"] = why.as_str().into();
    NewEvent {
        message: format!("{} ({})", event.message, why.describe(previous)),
        data: Some(data.to_string()),
        ..event.clone()
    }
}

/// What [`apps_batch`] did.
#[derive(Debug)]
pub struct AppsBatch {
    /// Per acquisition, in order: the application when this node now owns it.
    pub acquired: Vec<Option<Application>>,
    /// The acquisitions' applications that do not exist (read in the same transaction): an
    /// actor waiting for one ends instead of waiting for a release.
    pub missing: Vec<i64>,
    /// Per write, in order: whether it applied.
    pub written: Vec<bool>,
    /// The applications read that exist.
    pub read: Vec<Application>,
}

/// The applications of `ids` that exist, read fresh.
pub fn apps(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<Application>, StoreError> {
    Ok(application::table.filter(application::id.eq_any(ids.to_vec())).select(Application::as_select()).load(conn)?)
}

/// The application, read fresh.
pub fn app(conn: &mut AnyConnection, id: i64) -> Result<Option<Application>, StoreError> {
    Ok(application::table.find(id).select(Application::as_select()).first(conn).optional()?)
}
