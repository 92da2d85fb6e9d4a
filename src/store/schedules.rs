//! Queries on `schedule` and `schedule_firing`: the admin CRUD, the runner's list, and [`fire`],
//! the one transaction that turns a decided [`Step`] into rows.
//!
//! Why the guard is here: two nodes may both believe they own a schedule for a moment (a ring
//! change seen at different instants). [`fire`] advances `next_fire_at` only from the value the
//! step started from (`WHERE next_fire_at = expected AND enabled`), and writes the firing rows
//! and tasks in the same transaction; the loser's update matches no row and it writes nothing.
//! The primary key `(schedule_id, fire_at)` of `schedule_firing` is the second line.
//!
//! Must never: write a task for a fire time without its `schedule_firing` row in the same
//! transaction, or move `next_fire_at` without the conditional guard.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Timestamp};
use serde::Serialize;
use serde_json::json;

use super::events::record_event;
use super::models::{NewEvent, NewTask};
use super::schema::{schedule, schedule_firing};
use super::tasks::insert_task;
use super::workflows::start_scheduled_run;
use super::{AnyConnection, StoreError};
use crate::schedule::{task_key, Outcome, Record, Step};

/// A row of `schedule`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = schedule)]
pub struct Schedule {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The job's application; None runs a noop job.
    pub app_id: Option<i64>,
    /// Cron expression (seconds first, UTC); exclusive with `every_ms`.
    pub cron: Option<String>,
    /// Fixed rate, ms, aligned to the Unix epoch; exclusive with `cron`.
    pub every_ms: Option<i64>,
    /// The tasks' payload (JSON).
    pub payload: String,
    /// The tasks' routing strategy; None is `hash`.
    pub routing: Option<String>,
    /// The tasks' shard count.
    pub shard_total: Option<i32>,
    /// The tasks' per-attempt time limit, ms.
    pub timeout_ms: Option<i32>,
    /// The tasks' attempts.
    pub max_attempts: i32,
    /// `skip` or `fire_once`.
    pub misfire: String,
    /// A fire time later than this is missed.
    pub misfire_grace_ms: i64,
    /// Paused when false.
    pub enabled: bool,
    /// The next fire time (UTC).
    pub next_fire_at: NaiveDateTime,
    /// Created (UTC).
    pub created_at: NaiveDateTime,
    /// Last changed by an admin (UTC).
    pub updated_at: NaiveDateTime,
    /// The workflow a firing starts a run of (its context: `payload`), instead of a job; exclusive
    /// with `app_id`.
    pub workflow_id: Option<i64>,
}

/// A new `schedule` row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = schedule)]
pub struct NewSchedule {
    /// See [`Schedule::name`].
    pub name: String,
    /// See [`Schedule::app_id`].
    pub app_id: Option<i64>,
    /// See [`Schedule::cron`].
    pub cron: Option<String>,
    /// See [`Schedule::every_ms`].
    pub every_ms: Option<i64>,
    /// See [`Schedule::payload`].
    pub payload: String,
    /// See [`Schedule::routing`].
    pub routing: Option<String>,
    /// See [`Schedule::shard_total`].
    pub shard_total: Option<i32>,
    /// See [`Schedule::timeout_ms`].
    pub timeout_ms: Option<i32>,
    /// See [`Schedule::max_attempts`].
    pub max_attempts: i32,
    /// See [`Schedule::misfire`].
    pub misfire: String,
    /// See [`Schedule::misfire_grace_ms`].
    pub misfire_grace_ms: i64,
    /// See [`Schedule::enabled`].
    pub enabled: bool,
    /// See [`Schedule::next_fire_at`].
    pub next_fire_at: NaiveDateTime,
    /// See [`Schedule::workflow_id`].
    pub workflow_id: Option<i64>,
}

/// Fields an admin may change (absent: unchanged; `Some(None)`: set NULL).
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = schedule)]
pub struct ScheduleUpdate {
    /// See [`Schedule::app_id`].
    pub app_id: Option<Option<i64>>,
    /// See [`Schedule::cron`].
    pub cron: Option<Option<String>>,
    /// See [`Schedule::every_ms`].
    pub every_ms: Option<Option<i64>>,
    /// See [`Schedule::payload`].
    pub payload: Option<String>,
    /// See [`Schedule::routing`].
    pub routing: Option<Option<String>>,
    /// See [`Schedule::shard_total`].
    pub shard_total: Option<Option<i32>>,
    /// See [`Schedule::timeout_ms`].
    pub timeout_ms: Option<Option<i32>>,
    /// See [`Schedule::max_attempts`].
    pub max_attempts: Option<i32>,
    /// See [`Schedule::misfire`].
    pub misfire: Option<String>,
    /// See [`Schedule::misfire_grace_ms`].
    pub misfire_grace_ms: Option<i64>,
    /// See [`Schedule::enabled`].
    pub enabled: Option<bool>,
    /// See [`Schedule::next_fire_at`].
    pub next_fire_at: Option<NaiveDateTime>,
    /// See [`Schedule::workflow_id`].
    pub workflow_id: Option<Option<i64>>,
}

/// A row of `schedule_firing`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = schedule_firing)]
pub struct Firing {
    /// The schedule.
    pub schedule_id: i64,
    /// The (first) fire time recorded.
    pub fire_at: NaiveDateTime,
    /// The last fire time recorded (a skipped span covers several).
    pub last_at: NaiveDateTime,
    /// How many fire times the row covers.
    pub times: i64,
    /// `fired`, `caught_up` or `skipped`.
    pub outcome: String,
    /// The task written (None when skipped): the job, or the coordinator of the run started.
    pub task_id: Option<i64>,
    /// The node that recorded it.
    pub node_id: String,
    /// When it was recorded (UTC).
    pub created_at: NaiveDateTime,
    /// The workflow run started (a schedule of a workflow).
    pub run_id: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = schedule_firing)]
struct NewFiring<'a> {
    schedule_id: i64,
    fire_at: NaiveDateTime,
    last_at: NaiveDateTime,
    times: i64,
    outcome: &'a str,
    task_id: Option<i64>,
    node_id: &'a str,
    run_id: Option<i64>,
}

/// Insert a schedule; returns its id. A taken name is a
/// [`diesel::result::DatabaseErrorKind::UniqueViolation`].
pub fn insert_schedule(conn: &mut AnyConnection, new: &NewSchedule) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(schedule::table).values(new).returning(schedule::id).get_result(conn)?)
}

/// The schedule with this id, if any.
pub fn find_schedule(conn: &mut AnyConnection, id: i64) -> Result<Option<Schedule>, StoreError> {
    Ok(schedule::table.find(id).select(Schedule::as_select()).first(conn).optional()?)
}

/// The schedule with this name, if any.
pub fn find_schedule_by_name(conn: &mut AnyConnection, name: &str) -> Result<Option<Schedule>, StoreError> {
    Ok(schedule::table.filter(schedule::name.eq(name)).select(Schedule::as_select()).first(conn).optional()?)
}

/// Schedules with `id > after`, in id order, at most `limit`.
pub fn list_schedules(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<Vec<Schedule>, StoreError> {
    Ok(schedule::table
        .filter(schedule::id.gt(after))
        .order(schedule::id)
        .limit(limit)
        .select(Schedule::as_select())
        .load(conn)?)
}

/// Every enabled schedule: what the runner keeps in memory between reloads.
pub fn enabled_schedules(conn: &mut AnyConnection) -> Result<Vec<Schedule>, StoreError> {
    Ok(schedule::table
        .filter(schedule::enabled.eq(true))
        .order(schedule::id)
        .select(Schedule::as_select())
        .load(conn)?)
}

/// Apply an admin's change; false when the schedule does not exist.
pub fn update_schedule(conn: &mut AnyConnection, id: i64, change: &ScheduleUpdate) -> Result<bool, StoreError> {
    let n = diesel::update(schedule::table.find(id))
        .set((change, schedule::updated_at.eq(chrono::Utc::now().naive_utc())))
        .execute(conn)?;
    Ok(n == 1)
}

/// Delete a schedule and its firing history; false when it does not exist. Its tasks stay.
pub fn delete_schedule(conn: &mut AnyConnection, id: i64) -> Result<bool, StoreError> {
    conn.transaction(|c| {
        diesel::delete(schedule_firing::table.filter(schedule_firing::schedule_id.eq(id))).execute(c)?;
        Ok(diesel::delete(schedule::table.find(id)).execute(c)? == 1)
    })
}

/// The latest firing rows of a schedule, newest first.
pub fn recent_firings(conn: &mut AnyConnection, id: i64, limit: i64) -> Result<Vec<Firing>, StoreError> {
    Ok(schedule_firing::table
        .filter(schedule_firing::schedule_id.eq(id))
        .order(schedule_firing::fire_at.desc())
        .limit(limit)
        .select(Firing::as_select())
        .load(conn)?)
}

/// Delete firing rows recorded before `cutoff`, at most `limit`; returns how many. Safe at any
/// age: `next_fire_at` only moves forward, so an old fire time never comes back.
pub fn prune_firings(conn: &mut AnyConnection, cutoff: NaiveDateTime, limit: i64) -> Result<usize, StoreError> {
    let old: Vec<(i64, NaiveDateTime)> = schedule_firing::table
        .filter(schedule_firing::created_at.lt(cutoff))
        .select((schedule_firing::schedule_id, schedule_firing::fire_at))
        .limit(limit)
        .load(conn)?;
    let mut n = 0;
    conn.transaction(|c| {
        for (id, at) in old {
            n += diesel::delete(schedule_firing::table.find((id, at))).execute(c)?;
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(n)
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Timestamp)]
    now: NaiveDateTime,
}

/// The database's clock (UTC): every node fires by one clock.
pub fn db_now(conn: &mut AnyConnection) -> Result<NaiveDateTime, StoreError> {
    let row: Now = match conn {
        AnyConnection::Postgresql(c) => {
            diesel::sql_query("SELECT (clock_timestamp() AT TIME ZONE 'utc') AS now").get_result(c)?
        }
        AnyConnection::Sqlite(c) => {
            diesel::sql_query("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now").get_result(c)?
        }
    };
    Ok(row.now)
}

/// What [`fire`] wrote.
#[derive(Debug, Clone)]
pub struct Fired {
    /// The schedule as it was when fired (after the advance).
    pub schedule: Schedule,
    /// Each record written, with its task (None for a skipped span).
    pub records: Vec<(Record, Option<i64>)>,
}

/// Apply `step` to schedule `id`, whose `next_fire_at` was read as `expected`, on behalf of
/// `node`: in one transaction, advance `next_fire_at` (or disable a cron schedule that has no
/// fire time left) only if it still is `expected` and the schedule is enabled; write a
/// `schedule_firing` row per record and, per fired record, a `run` task — or, for a schedule of
/// a workflow, a `workflow_run` row (whose trigger writes its coordinator task) with the
/// schedule's payload as its context; record the events.
/// `Ok(None)`: the guard matched nothing (another node fired it, or an admin changed it).
pub fn fire(
    conn: &mut AnyConnection,
    id: i64,
    expected: NaiveDateTime,
    step: &Step,
    node: &str,
) -> Result<Option<Fired>, StoreError> {
    conn.transaction(|c| {
        if advance(c, id, expected, step.next_fire_at)? == 0 {
            return Ok(None);
        }
        let Some(s) = find_schedule(c, id)? else { return Ok(None) };
        // Second line of defence: a time already recorded (next_fire_at moved back by hand)
        // is not fired again.
        let times: Vec<NaiveDateTime> = step.records.iter().map(|r| r.fire_at).collect();
        let taken: Vec<NaiveDateTime> = schedule_firing::table
            .filter(schedule_firing::schedule_id.eq(id))
            .filter(schedule_firing::fire_at.eq_any(times))
            .select(schedule_firing::fire_at)
            .load(c)?;
        let mut written = Vec::new();
        let mut runs = Vec::new();
        for r in step.records.iter().filter(|r| !taken.contains(&r.fire_at)) {
            let mut run_id = None;
            let task_id = if !r.outcome.fires() {
                None
            } else if let Some(workflow) = s.workflow_id {
                // The key a job of this firing would carry: one run per fire time, whichever
                // node fires it.
                let run = start_scheduled_run(c, workflow, &s.payload, &task_key(id, r.fire_at), r.fire_at)?;
                run_id = Some(run.id);
                runs.push(run.id);
                run.task_id
            } else {
                Some(insert_task(
                    c,
                    &NewTask {
                        app_id: s.app_id,
                        action: "run".into(),
                        payload: Some(s.payload.clone()),
                        max_attempts: Some(s.max_attempts),
                        idempotency_key: Some(task_key(id, r.fire_at)),
                        routing: s.routing.clone(),
                        timeout_ms: s.timeout_ms,
                        shard_total: s.shard_total,
                        // Not claimable before its fire time on the database's clock, whatever
                        // this node's idea of that clock was when it fired (docs/schedules.md).
                        run_after: Some(r.fire_at),
                        ..Default::default()
                    },
                )?)
            };
            diesel::insert_into(schedule_firing::table)
                .values(&NewFiring {
                    schedule_id: id,
                    fire_at: r.fire_at,
                    last_at: r.last_at,
                    times: r.times,
                    outcome: r.outcome.as_str(),
                    task_id,
                    node_id: node,
                    run_id,
                })
                .execute(c)?;
            written.push((r.clone(), task_id));
        }
        record_events(c, &s, &written, &runs, node, step.next_fire_at.is_none())?;
        Ok(Some(Fired { schedule: s, records: written }))
    })
}

/// The guarded advance; the number of rows changed (0 or 1).
fn advance(
    conn: &mut AnyConnection,
    id: i64,
    expected: NaiveDateTime,
    next: Option<NaiveDateTime>,
) -> Result<usize, StoreError> {
    // No time left: disable, keep next_fire_at (the guard then refuses every later step).
    let (next, enabled) = match next {
        Some(n) => (n, true),
        None => (expected, false),
    };
    let sql = "UPDATE schedule SET next_fire_at = $1, enabled = $2 WHERE id = $3 AND enabled AND ";
    Ok(match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(format!("{sql}next_fire_at = $4"))
            .bind::<Timestamp, _>(next)
            .bind::<Bool, _>(enabled)
            .bind::<BigInt, _>(id)
            .bind::<Timestamp, _>(expected)
            .execute(c)?,
        // SQLite stores TEXT: compare as times, so a value written by hand in another layout
        // (`T`, `.000`) still matches the time it was read as.
        AnyConnection::Sqlite(c) => {
            diesel::sql_query(format!("{sql}julianday(next_fire_at) = julianday($4)").replace('$', "?"))
                .bind::<Timestamp, _>(next)
                .bind::<Bool, _>(enabled)
                .bind::<BigInt, _>(id)
                .bind::<Timestamp, _>(expected)
                .execute(c)?
        }
    })
}

fn record_events(
    conn: &mut AnyConnection,
    s: &Schedule,
    written: &[(Record, Option<i64>)],
    runs: &[i64],
    node: &str,
    ended: bool,
) -> Result<(), StoreError> {
    let event = |kind: &str, task_id: Option<i64>, message: String, data: serde_json::Value| NewEvent {
        kind: kind.into(),
        app_id: s.app_id,
        task_id,
        node_id: Some(node.into()),
        actor: Some("scheduler".into()),
        message,
        data: Some(data.to_string()),
    };
    let time = |t: NaiveDateTime| t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let fired: Vec<&(Record, Option<i64>)> = written.iter().filter(|(r, _)| r.outcome == Outcome::Fired).collect();
    if let Some((first, task)) = fired.first() {
        let times: Vec<String> = fired.iter().map(|(r, _)| time(r.fire_at)).collect();
        let tasks: Vec<Option<i64>> = fired.iter().map(|(_, t)| *t).collect();
        let mut data = json!({ "schedule_id": s.id, "fire_at": times, "task_ids": tasks });
        let mut message = format!("schedule {} `{}` fired for {}", s.id, s.name, time(first.fire_at));
        if let Some(w) = s.workflow_id {
            data["workflow_id"] = json!(w);
            data["run_ids"] = json!(runs);
            message.push_str(&format!(": workflow {w} run {}", runs.first().copied().unwrap_or_default()));
        }
        record_event(conn, &event("schedule.fired", *task, message, data))?;
    }
    let missed: Vec<&(Record, Option<i64>)> = written.iter().filter(|(r, _)| r.outcome != Outcome::Fired).collect();
    if let (Some((from, _)), Some((to, _))) = (missed.first(), missed.last()) {
        let count: i64 = missed.iter().map(|(r, _)| r.times).sum();
        let caught_up = missed.iter().find(|(r, _)| r.outcome == Outcome::CaughtUp);
        let message = match caught_up {
            Some((r, t)) => format!(
                "schedule {} `{}` missed {count} fire time(s) from {} to {}; fired once for {} (task {})",
                s.id,
                s.name,
                time(from.fire_at),
                time(to.last_at),
                time(r.fire_at),
                t.unwrap_or_default()
            ),
            None => format!(
                "schedule {} `{}` missed {count} fire time(s) from {} to {}; skipped (misfire = skip)",
                s.id,
                s.name,
                time(from.fire_at),
                time(to.last_at)
            ),
        };
        record_event(
            conn,
            &event(
                "schedule.misfired",
                caught_up.and_then(|(_, t)| *t),
                message,
                json!({ "schedule_id": s.id, "from": time(from.fire_at), "to": time(to.last_at), "missed": count,
                        "policy": s.misfire, "caught_up": caught_up.map(|(r, _)| time(r.fire_at)) }),
            ),
        )?;
    }
    if ended {
        record_event(
            conn,
            &event(
                "schedule.ended",
                None,
                format!("schedule {} `{}` has no fire time left; disabled", s.id, s.name),
                json!({ "schedule_id": s.id }),
            ),
        )?;
    }
    Ok(())
}

/// Tasks a schedule wrote (by its idempotency-key prefix), oldest first: (task id, key).
pub fn schedule_tasks(conn: &mut AnyConnection, id: i64) -> Result<Vec<(i64, String)>, StoreError> {
    use super::schema::task;
    let prefix = format!("schedule:{id}:%");
    Ok(task::table
        .filter(task::idempotency_key.like(prefix))
        .order(task::id)
        .select((task::id, task::idempotency_key.assume_not_null()))
        .load(conn)?)
}
