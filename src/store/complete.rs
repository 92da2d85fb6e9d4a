//! Completion: how a claimed task ended, written for the claim it ends — or the claim given back.
//!
//! Every outcome is conditional on its claim (`running`, this node, the epoch it was claimed at
//! and the claim's token: [`Claim`]) and on the writer's [`Fence`]: a row recovered by another node meanwhile, or a node past its
//! deadline, writes nothing, and the caller learns it ([`FinishFlags`]). An application
//! command's last write about its application goes with its outcome, which is written only when
//! that write applied. On PostgreSQL a batch is one statement ([`outcomes_pg`], which also writes
//! `apps_batch`'s application writes); on SQLite, one transaction of single-row statements.
//!
//! A job's start mark is taken back and written again the same way ([`take_back_starts`],
//! [`mark_started`]).
//!
//! Must never: write an outcome or a start mark for a row this node no longer holds, or record
//! an event twice when a batch whose answer was lost is sent again.

use crate::domain::TaskStatus;
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text};

use super::apps::{update_owned_app, AppWrite};
use super::claim::held_under;
use super::events;
use super::fence::{before_deadline, merge_admitted, BeforeDeadline, Fence};
use super::models::Claim;
use super::schema::task;
use super::sql::unnest;
use super::{AnyConnection, StoreError};

/// How a claimed task ends (or does not, for a retry).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the result as JSON.
    Succeeded(Option<String>),
    /// Failed for good; the error says what to fix.
    Failed(String),
    /// Failed for good, with a result as JSON all the same: a fan-out parent's counts of its
    /// children (docs/jobs.md).
    FailedWithResult {
        /// What failed.
        error: String,
        /// The result.
        result: String,
    },
    /// Failed this attempt; pending again from `run_after`.
    Retry {
        /// This attempt's error.
        error: String,
        /// Not before.
        run_after: NaiveDateTime,
    },
}

/// Record the outcome of a task this node holds under `claim`; false when the row is no longer
/// ours (recovered by another node, cancelled, claimed again — a row with the same id after a
/// database failover included) or the database's clock has passed `until`: nothing is written
/// then.
fn finish(
    conn: &mut AnyConnection,
    id: i64,
    (node, until): (&str, NaiveDateTime),
    claim: Claim,
    outcome: &Outcome,
) -> Result<bool, StoreError> {
    let now = Utc::now().naive_utc();
    let target = task::table
        .filter(task::id.eq(id))
        .filter(task::status.eq(TaskStatus::Running))
        .filter(task::owner_node.eq(node))
        .filter(task::owner_epoch.eq(claim.epoch))
        .filter(task::claim_token.eq(claim.token))
        .filter(BeforeDeadline(until));
    let n = match outcome {
        Outcome::Succeeded(result) => diesel::update(target)
            .set((
                task::status.eq(TaskStatus::Succeeded),
                task::result.eq(result),
                task::error.eq(None::<String>),
                task::stage.eq(None::<String>),
                task::finished_at.eq(now),
            ))
            .execute(conn)?,
        Outcome::Failed(error) => diesel::update(target)
            .set((
                task::status.eq(TaskStatus::Failed),
                task::error.eq(error),
                task::stage.eq(None::<String>),
                task::finished_at.eq(now),
            ))
            .execute(conn)?,
        Outcome::FailedWithResult { error, result } => diesel::update(target)
            .set((
                task::status.eq(TaskStatus::Failed),
                task::result.eq(result),
                task::error.eq(error),
                task::stage.eq(None::<String>),
                task::finished_at.eq(now),
            ))
            .execute(conn)?,
        Outcome::Retry { error, run_after } => diesel::update(target)
            .set((
                task::status.eq(TaskStatus::Pending),
                task::error.eq(error),
                task::run_after.eq(run_after),
                task::owner_node.eq(None::<String>),
                task::owner_epoch.eq(None::<i64>),
                task::claim_token.eq(None::<i64>),
            ))
            .execute(conn)?,
    };
    Ok(n == 1)
}

/// A finished task for [`finish_batch`]: its claim, its outcome, and for an application command
/// the write about its application that goes with the outcome (its last state change).
#[derive(Debug, Clone)]
pub struct Finished {
    /// Task id.
    pub id: i64,
    /// The claim it was held under.
    pub claim: Claim,
    /// How it ended.
    pub outcome: Outcome,
    /// Written first, conditional on the application's owner and epoch; the outcome is written
    /// only when it applied.
    pub app: Option<AppWrite>,
}

/// What [`finish_batch`] wrote of one [`Finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishFlags {
    /// The outcome was written (false: the row is no longer ours, or its application write did
    /// not apply).
    pub task: bool,
    /// The application write applied (None: there was none).
    pub app: Option<bool>,
}

/// [`finish`] for many tasks at once, each with its application write if any
/// ([`update_owned_app`], then the outcome only when it applied); one [`FinishFlags`] per row,
/// in order. PostgreSQL: one statement (`UPDATE … FROM unnest(…)`, the application writes and
/// their events in CTEs before it), each row still conditional on its own claim; SQLite: one
/// transaction of single-row statements (one writer, no round trips to save).
/// Why the application write goes with the outcome: an application command's last state change
/// and its completion were two statements through two batching tasks, one after the other on
/// every command's path; application commands drained at 2.1–2.5× the time of plain tasks
/// (docs/benchmarks.md#round-trips).
/// Nothing is written under the [`Fence`]: past the node's membership deadline (a node paused
/// past its lease, its outcomes queued, writes none when it wakes; its rows are recovered by
/// their new owners), nor for a row claimed, or an application acquired, in an earlier session.
pub fn finish_batch(
    conn: &mut AnyConnection,
    node: &str,
    fence: Fence,
    rows: &[Finished],
) -> Result<Vec<FinishFlags>, StoreError> {
    let refused = |r: &Finished| FinishFlags { task: false, app: r.app.as_ref().map(|_| false) };
    let admitted = |r: &Finished| fence.admits(r.claim.epoch) && r.app.as_ref().is_none_or(|w| fence.admits(w.epoch));
    if !rows.iter().all(admitted) {
        let mine: Vec<Finished> = rows.iter().filter(|r| admitted(r)).cloned().collect();
        return Ok(merge_admitted(rows, admitted, finish_batch(conn, node, fence, &mine)?, refused));
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let writer = (node, fence.until);
    match conn {
        AnyConnection::Postgresql(c) if rows.iter().any(|r| r.app.is_some()) => finish_with_apps_pg(c, writer, rows),
        AnyConnection::Postgresql(c) if rows.len() > 1 => {
            Ok(finish_batch_pg(c, writer, rows)?.into_iter().map(|task| FinishFlags { task, app: None }).collect())
        }
        AnyConnection::Postgresql(_) => finish_one(conn, writer, rows),
        AnyConnection::Sqlite(_) => conn.transaction(|c| finish_one(c, writer, rows)),
    }
}

/// [`finish_batch`] row by row.
fn finish_one(
    conn: &mut AnyConnection,
    writer: (&str, NaiveDateTime),
    rows: &[Finished],
) -> Result<Vec<FinishFlags>, StoreError> {
    rows.iter()
        .map(|r| {
            let app = match &r.app {
                Some(w) => Some(update_owned_app(conn, w.id, writer, w.epoch, &w.change, None)?),
                None => None,
            };
            let task = app != Some(false) && finish(conn, r.id, writer, r.claim, &r.outcome)?;
            // As on PostgreSQL: the event of a row whose outcome was written.
            if let (true, Some(event)) = (task, r.app.as_ref().and_then(|w| w.event.as_ref())) {
                events::record_event(conn, event)?;
            }
            Ok(FinishFlags { task, app })
        })
        .collect()
}

/// [`finish_batch`] on PostgreSQL for a batch that holds application writes ([`outcomes_pg`]).
fn finish_with_apps_pg(
    conn: &mut diesel::PgConnection,
    writer: (&str, NaiveDateTime),
    rows: &[Finished],
) -> Result<Vec<FinishFlags>, StoreError> {
    let mut t = TaskOutcomes::default();
    let mut a = AppWrites::default();
    for r in rows {
        t.push(r.id, r.claim, &r.outcome);
        a.push(r.app.as_ref());
    }
    let written = outcomes_pg(conn, writer, &t, &a)?;
    let tasks: std::collections::HashSet<i64> = written.iter().filter(|w| !w.app).map(|w| w.id).collect();
    let apps: std::collections::HashSet<i64> = written.iter().filter(|w| w.app).map(|w| w.id).collect();
    Ok(rows
        .iter()
        .map(|r| FinishFlags { task: tasks.contains(&r.id), app: r.app.as_ref().map(|w| apps.contains(&w.id)) })
        .collect())
}

/// What [`outcomes_pg`] wrote: a task's outcome, or an application (`app`).
#[derive(QueryableByName)]
struct WrittenRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    app: bool,
}

/// The set clause of a task's outcome from the row `v` of a batch ([`TaskOutcomes`]), with
/// `{now}` for its `finished_at`: succeeded (result, no error, finished), failed (error,
/// finished, and a result when it has one), retry (pending again from `run_after`, owner
/// cleared) — as [`finish`]. A finished row has no fan-out stage (a retried one keeps it: it
/// says where the next attempt resumes).
const OUTCOME_SET: &str = "status = v.status, \
    result = CASE WHEN v.status = 'succeeded' THEN v.result ELSE COALESCE(v.result, t.result) END, \
    stage = CASE WHEN v.status = 'pending' THEN t.stage ELSE NULL END, \
    error = CASE WHEN v.status = 'succeeded' THEN NULL ELSE v.error END, \
    finished_at = CASE WHEN v.status = 'pending' THEN t.finished_at ELSE {now} END, \
    run_after = CASE WHEN v.status = 'pending' THEN v.run_after ELSE t.run_after END, \
    owner_node = CASE WHEN v.status = 'pending' THEN NULL ELSE t.owner_node END, \
    owner_epoch = CASE WHEN v.status = 'pending' THEN NULL ELSE t.owner_epoch END, \
    claim_token = CASE WHEN v.status = 'pending' THEN NULL ELSE t.claim_token END";

/// The columns of a batch of task outcomes ([`TaskOutcomes`]), with their PostgreSQL types, in
/// the order their arrays are bound.
const OUTCOME_COLUMNS: [(&str, &str); 7] = [
    ("id", "bigint"),
    ("epoch", "bigint"),
    ("token", "bigint"),
    ("status", "text"),
    ("result", "text"),
    ("error", "text"),
    ("run_after", "timestamp"),
];

/// The columns of a batch of application writes and their events ([`AppWrites`]), with their
/// PostgreSQL types, in the order their arrays are bound.
const APP_WRITE_COLUMNS: [(&str, &str); 13] = [
    ("app_id", "bigint"),
    ("app_epoch", "bigint"),
    ("desired_state", "text"),
    ("state", "text"),
    ("set_error", "bool"),
    ("last_error", "text"),
    ("restart_count", "int"),
    ("kind", "text"),
    ("task_id", "bigint"),
    ("node_id", "text"),
    ("actor", "text"),
    ("message", "text"),
    ("data", "text"),
];

/// [`outcomes_pg`]'s statement. Its parameters: the arrays of [`OUTCOME_COLUMNS`] then of
/// [`APP_WRITE_COLUMNS`] (`$1`…), then the time written as `finished_at` and `updated_at`, the
/// writer's node and its deadline — numbered from the columns, so a column added to the batch
/// renumbers what follows it. The application writes compare the owner with a column of the
/// materialized batch (`v.writer`), not with the bound node: a join condition, which stale
/// statistics cannot turn into a scan of every row the node owns compared with every row of the
/// batch ([`super::apps::batch_with_owner`] says why).
fn outcomes_pg_sql() -> String {
    let columns = [OUTCOME_COLUMNS.as_slice(), APP_WRITE_COLUMNS.as_slice()].concat();
    let (now, node, deadline) = (columns.len() + 1, columns.len() + 2, columns.len() + 3);
    format!(
        "WITH v AS MATERIALIZED (SELECT *, ${node}::text AS writer FROM {unnest}), \
         u AS (UPDATE application AS a SET \
           desired_state = COALESCE(v.desired_state, a.desired_state), \
           state = COALESCE(v.state, a.state), \
           last_error = CASE WHEN v.set_error THEN v.last_error ELSE a.last_error END, \
           restart_count = COALESCE(v.restart_count, a.restart_count), \
           updated_at = ${now} \
           FROM v WHERE v.app_id IS NOT NULL AND a.id = v.app_id AND a.owner_node = v.writer \
             AND a.owner_epoch = v.app_epoch AND {before_deadline} \
           RETURNING a.id), \
         t AS (UPDATE task AS t SET {set} \
           FROM v WHERE t.id = v.id AND t.status = 'running' AND t.owner_node = ${node} AND t.owner_epoch = v.epoch \
             AND t.claim_token = v.token \
             AND (v.app_id IS NULL OR EXISTS (SELECT 1 FROM u WHERE u.id = v.app_id)) AND {before_deadline} \
           RETURNING t.id), \
         e AS (INSERT INTO event (kind, app_id, task_id, node_id, actor, message, data) \
           SELECT v.kind, v.app_id, v.task_id, v.node_id, v.actor, v.message, COALESCE(v.data, '{{}}') \
           FROM v JOIN u ON u.id = v.app_id \
           WHERE v.kind IS NOT NULL AND (v.id IS NULL OR EXISTS (SELECT 1 FROM t WHERE t.id = v.id))) \
         SELECT id, false AS app FROM t UNION ALL SELECT id, true AS app FROM u",
        unnest = unnest(&columns),
        set = OUTCOME_SET.replace("{now}", &format!("${now}")),
        before_deadline = before_deadline(true, deadline)
    )
}

/// [`finish_batch_pg`]'s statement. Its parameters: the arrays of [`OUTCOME_COLUMNS`] (`$1`…),
/// then the time written as `finished_at`, the writer's node and its deadline.
fn finish_batch_pg_sql() -> String {
    let (now, node, deadline) = (OUTCOME_COLUMNS.len() + 1, OUTCOME_COLUMNS.len() + 2, OUTCOME_COLUMNS.len() + 3);
    format!(
        "UPDATE task AS t SET {set} \
         FROM {unnest} \
         WHERE t.id = v.id AND t.status = 'running' AND t.owner_node = ${node} AND t.owner_epoch = v.epoch \
             AND t.claim_token = v.token \
           AND {before_deadline} \
         RETURNING t.id",
        set = OUTCOME_SET.replace("{now}", &format!("${now}")),
        unnest = unnest(&OUTCOME_COLUMNS),
        before_deadline = before_deadline(true, deadline)
    )
}

/// One statement on PostgreSQL for task outcomes `t` and application writes `a`, row by row
/// (either may be shorter: `unnest` pads it with NULLs): each application write conditional on
/// its owner and epoch (as [`update_owned_app`]: a NULL field is left as it is; `last_error` has
/// its own flag, since clearing it writes NULL), each outcome on its claim and on its row's
/// application write having applied, and the events of the application writes that applied —
/// for a row with an outcome, only when the outcome was written. Why that last rule: the
/// completer retries a batch whose answer was lost; the second time the outcomes read as no
/// longer ours, the application writes apply again unchanged, and no event is recorded twice.
/// Every write also holds [`before_deadline`], the writer's deadline (the last parameter).
fn outcomes_pg(
    conn: &mut diesel::PgConnection,
    (node, until): (&str, NaiveDateTime),
    t: &TaskOutcomes,
    a: &AppWrites,
) -> Result<Vec<WrittenRow>, StoreError> {
    use diesel::sql_types::{Bool, Integer, Timestamp};
    let sql = outcomes_pg_sql();
    // In the order of the statement's parameters ([`outcomes_pg_sql`]).
    Ok(diesel::sql_query(sql)
        .bind::<Array<BigInt>, _>(&t.ids)
        .bind::<Array<BigInt>, _>(&t.epochs)
        .bind::<Array<BigInt>, _>(&t.tokens)
        .bind::<Array<Text>, _>(&t.statuses)
        .bind::<Array<Nullable<Text>>, _>(&t.results)
        .bind::<Array<Nullable<Text>>, _>(&t.errors)
        .bind::<Array<Nullable<Timestamp>>, _>(&t.afters)
        .bind::<Array<Nullable<BigInt>>, _>(&a.ids)
        .bind::<Array<Nullable<BigInt>>, _>(&a.epochs)
        .bind::<Array<Nullable<Text>>, _>(&a.desired)
        .bind::<Array<Nullable<Text>>, _>(&a.states)
        .bind::<Array<Bool>, _>(&a.set_error)
        .bind::<Array<Nullable<Text>>, _>(&a.errors)
        .bind::<Array<Nullable<Integer>>, _>(&a.restarts)
        .bind::<Array<Nullable<Text>>, _>(&a.kinds)
        .bind::<Array<Nullable<BigInt>>, _>(&a.tasks)
        .bind::<Array<Nullable<Text>>, _>(&a.nodes)
        .bind::<Array<Nullable<Text>>, _>(&a.actors)
        .bind::<Array<Nullable<Text>>, _>(&a.messages)
        .bind::<Array<Nullable<Text>>, _>(&a.data)
        .bind::<Timestamp, _>(Utc::now().naive_utc())
        .bind::<Text, _>(node)
        .bind::<Timestamp, _>(until)
        .load(conn)?)
}

/// The columns of task outcomes, one array each, for a batched `UPDATE … FROM unnest(…)`.
#[derive(Default)]
struct TaskOutcomes {
    ids: Vec<i64>,
    epochs: Vec<i64>,
    tokens: Vec<i64>,
    statuses: Vec<&'static str>,
    results: Vec<Option<String>>,
    errors: Vec<Option<String>>,
    afters: Vec<Option<NaiveDateTime>>,
}

impl TaskOutcomes {
    /// Same effect per row as [`finish`]: succeeded (result, no error, finished), failed (error,
    /// finished), retry (pending again from run_after, owner cleared).
    fn push(&mut self, id: i64, claim: Claim, outcome: &Outcome) {
        let (status, result, error, after) = match outcome {
            Outcome::Succeeded(r) => ("succeeded", r.clone(), None, None),
            Outcome::Failed(e) => ("failed", None, Some(e.clone()), None),
            Outcome::FailedWithResult { error, result } => ("failed", Some(result.clone()), Some(error.clone()), None),
            Outcome::Retry { error, run_after } => ("pending", None, Some(error.clone()), Some(*run_after)),
        };
        self.ids.push(id);
        self.epochs.push(claim.epoch);
        self.tokens.push(claim.token);
        self.statuses.push(status);
        self.results.push(result);
        self.errors.push(error);
        self.afters.push(after);
    }
}

/// The columns of application writes and their events, one array each (NULL where a row has
/// none), for a batched `UPDATE … FROM unnest(…)`.
#[derive(Default)]
struct AppWrites {
    ids: Vec<Option<i64>>,
    epochs: Vec<Option<i64>>,
    desired: Vec<Option<String>>,
    states: Vec<Option<String>>,
    set_error: Vec<bool>,
    errors: Vec<Option<String>>,
    restarts: Vec<Option<i32>>,
    kinds: Vec<Option<String>>,
    tasks: Vec<Option<i64>>,
    nodes: Vec<Option<String>>,
    actors: Vec<Option<String>>,
    messages: Vec<Option<String>>,
    data: Vec<Option<String>>,
}

impl AppWrites {
    /// Same effect per row as [`update_owned_app`]: a NULL field is left as it is
    /// (`last_error` has its own flag, since clearing it writes NULL).
    fn push(&mut self, w: Option<&AppWrite>) {
        let change = w.map(|w| &w.change);
        let e = w.and_then(|w| w.event.as_ref());
        self.ids.push(w.map(|w| w.id));
        self.epochs.push(w.map(|w| w.epoch));
        self.desired.push(change.and_then(|c| c.desired_state.map(|s| s.as_str().to_string())));
        self.states.push(change.and_then(|c| c.state.map(|s| s.as_str().to_string())));
        self.set_error.push(change.is_some_and(|c| c.last_error.is_some()));
        self.errors.push(change.and_then(|c| c.last_error.clone().flatten()));
        self.restarts.push(change.and_then(|c| c.restart_count));
        self.kinds.push(e.map(|e| e.kind.clone()));
        self.tasks.push(e.and_then(|e| e.task_id));
        self.nodes.push(e.and_then(|e| e.node_id.clone()));
        self.actors.push(e.and_then(|e| e.actor.clone()));
        self.messages.push(e.map(|e| e.message.clone()));
        self.data.push(e.and_then(|e| e.data.clone()));
    }
}

fn finish_batch_pg(
    conn: &mut diesel::PgConnection,
    (node, until): (&str, NaiveDateTime),
    rows: &[Finished],
) -> Result<Vec<bool>, StoreError> {
    use diesel::sql_types::Timestamp;
    let mut t = TaskOutcomes::default();
    for r in rows {
        t.push(r.id, r.claim, &r.outcome);
    }
    let sql = finish_batch_pg_sql();
    // In the order of the statement's parameters ([`finish_batch_pg_sql`]).
    let written: Vec<Written> = diesel::sql_query(sql)
        .bind::<Array<BigInt>, _>(&t.ids)
        .bind::<Array<BigInt>, _>(&t.epochs)
        .bind::<Array<BigInt>, _>(&t.tokens)
        .bind::<Array<Text>, _>(&t.statuses)
        .bind::<Array<Nullable<Text>>, _>(&t.results)
        .bind::<Array<Nullable<Text>>, _>(&t.errors)
        .bind::<Array<Nullable<Timestamp>>, _>(&t.afters)
        .bind::<Timestamp, _>(Utc::now().naive_utc())
        .bind::<Text, _>(node)
        .bind::<Timestamp, _>(until)
        .load(conn)?;
    Ok(written_flags(&t.ids, written))
}

/// A row a batched write returned.
#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// One flag per id of a batched write, in order: whether the write returned its row.
fn written_flags(ids: &[i64], written: Vec<Written>) -> Vec<bool> {
    let done: std::collections::HashSet<i64> = written.into_iter().map(|w| w.id).collect();
    ids.iter().map(|id| done.contains(id)).collect()
}

/// Write again the start marks of the jobs of `rows` (each held by `node` under its claim),
/// taken back while they waited ([`take_back_starts`]), as their drivers are about to run:
/// `started_at` is the node's clock now, written for each row only when its claim still holds
/// and before the writer's deadline ([`Fence`]). One flag per row, in order: whether it was
/// written — a row that was not may not be run (recovered, cancelled, or this node is past its
/// deadline). Written before the driver runs, so that a job that brings its node down is still
/// charged its attempt (docs/design.md#an-attempt-counts-when-execution-starts). One statement
/// on PostgreSQL; one transaction of single-row statements on SQLite.
pub fn mark_started(
    conn: &mut AnyConnection,
    node: &str,
    fence: Fence,
    rows: &[(i64, Claim)],
) -> Result<Vec<bool>, StoreError> {
    let admitted = |r: &(i64, Claim)| fence.admits(r.1.epoch);
    if !rows.iter().all(admitted) {
        let mine: Vec<(i64, Claim)> = rows.iter().copied().filter(admitted).collect();
        return Ok(merge_admitted(rows, admitted, mark_started(conn, node, fence, &mine)?, |_| false));
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now().naive_utc();
    match conn {
        AnyConnection::Postgresql(c) => {
            use diesel::sql_types::Timestamp;
            let sql = format!(
                "UPDATE task AS t SET started_at = $4 \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, epoch, token) \
                 WHERE t.id = v.id AND t.status = 'running' AND t.owner_node = $5 AND t.owner_epoch = v.epoch \
                   AND t.claim_token = v.token AND {} \
                 RETURNING t.id",
                before_deadline(true, 6)
            );
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let epochs: Vec<i64> = rows.iter().map(|r| r.1.epoch).collect();
            let tokens: Vec<i64> = rows.iter().map(|r| r.1.token).collect();
            let written: Vec<Written> = diesel::sql_query(sql)
                .bind::<Array<BigInt>, _>(&ids)
                .bind::<Array<BigInt>, _>(&epochs)
                .bind::<Array<BigInt>, _>(&tokens)
                .bind::<Timestamp, _>(now)
                .bind::<Text, _>(node)
                .bind::<Timestamp, _>(fence.until)
                .load(c)?;
            Ok(written_flags(&ids, written))
        }
        AnyConnection::Sqlite(_) => set_start_marks(conn, node, fence, rows, Some(now)),
    }
}

/// Set the start mark of each of `rows` (held by `node` under its claim, before `fence`'s
/// deadline) to `value`, row by row in one transaction; whether each was written.
fn set_start_marks(
    conn: &mut AnyConnection,
    node: &str,
    fence: Fence,
    rows: &[(i64, Claim)],
    value: Option<NaiveDateTime>,
) -> Result<Vec<bool>, StoreError> {
    conn.transaction(|c| {
        rows.iter()
            .map(|&(id, claim)| {
                let n =
                    diesel::update(task::table.filter(held_under(id, node, claim)).filter(BeforeDeadline(fence.until)))
                        .set(task::started_at.eq(value))
                        .execute(c)?;
                Ok(n == 1)
            })
            .collect()
    })
}

/// Take back the start marks the claims of `rows` wrote (each held by `node`): these jobs have
/// waited since their claim and have not started, so that recovery, should this node die
/// before they start, gives them back with their attempts uncounted. Conditional on each claim
/// and on the writer's deadline; a row whose claim no longer holds is left as it is. How many
/// were taken back.
pub fn take_back_starts(
    conn: &mut AnyConnection,
    node: &str,
    fence: Fence,
    rows: &[(i64, Claim)],
) -> Result<usize, StoreError> {
    let mut rows: Vec<(i64, Claim)> = rows.iter().copied().filter(|r| fence.admits(r.1.epoch)).collect();
    if rows.is_empty() {
        return Ok(0);
    }
    // One short statement per row, in one transaction: the rows are few (jobs that waited
    // behind long ones), and taken in id order ([`in_lock_order`]).
    in_lock_order(&mut rows);
    Ok(set_start_marks(conn, node, fence, &rows, None)?.into_iter().filter(|&w| w).count())
}

/// Sort the rows a transaction of single-row statements will write by id: every such
/// transaction on `task` then locks its rows in the same order, so two of them that share rows
/// wait for each other instead of deadlocking. Why: at a stop, the give-back of the rows
/// claimed ahead ([`unclaim_all`], in claim order) met a take-back of their start marks
/// ([`take_back_starts`], in the order of a hash map) on the same rows; PostgreSQL broke the
/// deadlock by failing one of them, and when it failed the give-back the rows stayed `running`
/// under a node that had stopped.
fn in_lock_order(rows: &mut [(i64, Claim)]) {
    rows.sort_unstable_by_key(|r| r.0);
}

/// Give a task held under `claim` back untouched (its attempt uncounted, its start mark cleared:
/// it never started): the application could not be acquired yet (its previous owner has not
/// released it), or the claim will not be run.
pub fn unclaim(conn: &mut AnyConnection, id: i64, node: &str, claim: Claim) -> Result<bool, StoreError> {
    let n = diesel::update(task::table.filter(held_under(id, node, claim)))
        .set((
            task::status.eq(TaskStatus::Pending),
            task::attempts.eq(task::attempts - 1),
            task::owner_node.eq(None::<String>),
            task::owner_epoch.eq(None::<i64>),
            task::claim_token.eq(None::<i64>),
            task::claimed_at.eq(None::<NaiveDateTime>),
            task::started_at.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// [`unclaim`] for every `(id, claim)` of a claim this node will not run (a claim still in
/// flight when it stops), in one transaction; how many were given back.
pub fn unclaim_all(conn: &mut AnyConnection, rows: &[(i64, Claim)], node: &str) -> Result<usize, StoreError> {
    let mut rows = rows.to_vec();
    in_lock_order(&mut rows);
    conn.transaction(|c| {
        let mut n = 0;
        for (id, claim) in &rows {
            n += usize::from(unclaim(c, *id, node, *claim)?);
        }
        Ok(n)
    })
}

/// `apps_batch`'s writes on PostgreSQL: [`outcomes_pg`] with application writes alone; one flag
/// per write, in order.
pub(super) fn apps_write_pg(
    conn: &mut diesel::PgConnection,
    writer: (&str, NaiveDateTime),
    writes: &[AppWrite],
) -> Result<Vec<bool>, StoreError> {
    let mut a = AppWrites::default();
    for w in writes {
        a.push(Some(w));
    }
    let written = outcomes_pg(conn, writer, &TaskOutcomes::default(), &a)?;
    let applied: std::collections::HashSet<i64> = written.iter().filter(|w| w.app).map(|w| w.id).collect();
    Ok(writes.iter().map(|w| applied.contains(&w.id)).collect())
}

#[cfg(test)]
mod tests {
    use super::{finish_batch_pg_sql, outcomes_pg_sql, APP_WRITE_COLUMNS, OUTCOME_COLUMNS};

    /// The numbers of the `$n` parameters in `sql`, sorted, each once.
    fn parameters(sql: &str) -> Vec<usize> {
        let mut found: Vec<usize> = sql
            .split('$')
            .skip(1)
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect();
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn the_batched_statements_number_their_parameters_from_one_without_gaps() {
        // The arrays of the columns, then the time, the node and the deadline: as many as binds.
        let binds = OUTCOME_COLUMNS.len() + APP_WRITE_COLUMNS.len() + 3;
        assert_eq!(parameters(&outcomes_pg_sql()), (1..=binds).collect::<Vec<_>>());
        assert_eq!(parameters(&finish_batch_pg_sql()), (1..=OUTCOME_COLUMNS.len() + 3).collect::<Vec<_>>());
    }
}
