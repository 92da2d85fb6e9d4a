//! Reading due rows and claiming them: what a node takes to run.
//!
//! A claim turns pending, due rows into `running` rows of the claimant (`owner_node`,
//! `owner_epoch`, a fresh `claim_token`, the attempt counted) in one statement, under two rules:
//! the commands of one application run one at a time, in id order ([`COMMAND_TURN`]), and
//! nothing is claimed past the claimant's [`Fence`]. Four variants, by what the dispatcher knows: [`claim`] (rows it read
//! and placed), [`claim_next`] (read and claim at once, for the only member of the ring),
//! [`claim_turns`] (the next command of given applications), [`claim_jobs`] (the jobs a ring
//! member owns by their id, claimed without reading them).
//!
//! The read and the claims are per-backend SQL: on PostgreSQL `FOR UPDATE SKIP LOCKED`, run as
//! prepared statements ([`plans`](super::plans)); on SQLite one writer and `IN (…)` of integers.
//!
//! Must never: claim a row without counting its attempt, without clearing its start mark or
//! without a new token, claim without the fence, or claim a row whose placement depends on
//! labels without the dispatcher having placed it.

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use super::fence::{before_deadline, deadline_text, Fence};
use super::models::{Claim, Task};
use super::plans::{pg_prepared, PlanGeneration};
use super::schema::task;
use super::sql::{due, id_list, pg_literal, Count, SQLITE_NOW, TASK_COLUMNS};
use super::{AnyConnection, StoreError};
use crate::domain::TaskStatus;

/// A pending, due row: enough to decide ownership.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Due {
    /// Task id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Its application, if any.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub app_id: Option<i64>,
    /// `run` rows are jobs; the rest are application commands.
    #[diesel(sql_type = Text)]
    pub action: String,
    /// A fan-out child's node.
    #[diesel(sql_type = Nullable<Text>)]
    pub target_node: Option<String>,
    /// A job's routing strategy.
    #[diesel(sql_type = Nullable<Text>)]
    pub routing: Option<String>,
    /// A job's own selector.
    #[diesel(sql_type = Nullable<Text>)]
    pub selector: Option<String>,
}

/// Pending rows due now with `id > after`, in id order, at most `limit`.
pub fn due_after(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<Vec<Due>, StoreError> {
    let sql =
        "SELECT id, app_id, action, target_node, routing, selector FROM task WHERE status = 'pending' AND id > $1 AND DUE(run_after) ORDER BY id LIMIT $2";
    Ok(match conn {
        AnyConnection::Postgresql(c) => {
            diesel::sql_query(due(sql, true)).bind::<BigInt, _>(after).bind::<BigInt, _>(limit).load(c)?
        }
        AnyConnection::Sqlite(c) => diesel::sql_query(due(sql, false).replace('$', "?"))
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(limit)
            .load(c)?,
    })
}

/// The claim's assignments (`$1` node, `$2` epoch, `$token` the claim's [`claim_token`]);
/// `claimed_at` follows. Every claim's WHERE also holds [`before_deadline`]: the claimant's
/// membership deadline. The attempt is counted here and `started_at` written with it (most jobs
/// start at once); a job that waits has its mark taken back, and a job recovered without one gets
/// its attempt back (docs/design.md#an-attempt-counts-when-execution-starts). `now`: the
/// backend's clock ([`PG_CLAIMED_AT`], [`SQLITE_NOW`]).
fn claim_set(token: usize, now: &str) -> String {
    format!(
        "UPDATE task SET status = 'running', owner_node = $1, owner_epoch = $2, claim_token = ${token}, \
         attempts = attempts + 1, started_at = {now}, claimed_at = {now}"
    )
}

/// A new claim's token: one per claim statement (the rows of one statement differ by id), a
/// 63-bit mix of a random seed and a counter — the same twice, in a process or between two, only
/// by a chance of about 2^-63 per pair; positive, so that no token is the recovery's stand-in for
/// NULL. Why: the token, not the epoch, tells two claims of one id apart (docs/design.md#i3,
/// [`Claim`]). No extra statement and no extra round trip: one more bound value.
/// [`Claim`]: super::models::Claim
pub fn claim_token() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.write_u32(std::process::id());
        h.finish()
    });
    // SplitMix64 of seed + n·γ: a bijection of n, so distinct for every claim of this process.
    let mut z = seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 63 bits, and never 0 (the value a NULL token reads as).
    ((z >> 1) as i64).max(1)
}

/// Row `t` may be claimed as far as its application's ordering goes: jobs always; a command only
/// when no earlier command of its application is running or pending and due.
/// The literal `status IN ('pending', 'running')` is implied by the condition after it; it is
/// there for SQLite, which uses a partial index only when the query names its condition's terms:
/// without it SQLite walked every earlier row of the table by id (34–189 ms per command with
/// 200,000 finished rows, against under 6 ms through `task_app_active_idx`).
const COMMAND_TURN: &str = "(t.app_id IS NULL OR t.action = 'run' OR NOT EXISTS (SELECT 1 FROM task e \
    WHERE e.app_id = t.app_id AND e.id < t.id AND e.action <> 'run' AND e.status IN ('pending', 'running') \
    AND (e.status = 'running' OR (e.status = 'pending' AND DUE(e.run_after)))))";

/// Claim the given pending rows for `node` at `epoch` in one statement: each becomes `running`
/// with its attempt counted — unless it is no longer pending and due, is addressed to another
/// node (a fan-out child moved meanwhile), or an earlier due command
/// of the same application is still pending or running (commands of one application run one at
/// a time, in id order; a delayed earlier command does not hold back the ones behind it). Jobs
/// (`run`) are not commands: they neither wait for nor hold back anything. Nothing is claimed
/// under an epoch older than the claimant's session, or once the database's clock has passed its
/// deadline ([`Fence`]). `plans`: the store's ([`crate::store::Store::plans`]).
pub fn claim(
    conn: &mut AnyConnection,
    plans: &PlanGeneration,
    ids: &[i64],
    node: &str,
    epoch: i64,
    fence: Fence,
) -> Result<Vec<Task>, StoreError> {
    claim_ids(conn, (plans, "rota_claim"), ids, "", (node, epoch, fence))
}

/// [`claim_where`] for the rows of `ids` that `filter` keeps (the statement `name` of `plans` on
/// PostgreSQL), unless there are none or the [`Fence`] does not admit `epoch`.
fn claim_ids(
    conn: &mut AnyConnection,
    statement: (&PlanGeneration, &str),
    ids: &[i64],
    filter: &str,
    (node, epoch, fence): (&str, i64, Fence),
) -> Result<Vec<Task>, StoreError> {
    if ids.is_empty() || !fence.admits(epoch) {
        return Ok(Vec::new());
    }
    let claimant = (node, epoch, fence.until);
    claim_where(conn, statement, ids, "= ANY($3)", &format!("IN ({})", id_list(ids)), filter, claimant)
}

/// Claim for the claimant (node, epoch, deadline; its epoch admitted by its [`Fence`]) the
/// pending, due rows that `pg_ids`
/// (PostgreSQL, with `$3` the array of `ids`) or `sqlite_ids` picks and `filter` (`AND …`)
/// keeps, in one statement, each under the ordering rule [`COMMAND_TURN`] and [`before_deadline`].
/// PostgreSQL: the prepared statement `name` of `plans`, its rows decoded by position
/// ([`TaskRows`](super::sql::TaskRows)).
/// SQLite: `sqlite_ids` and `filter` must not use `$3` (bound to a placeholder value, so that
/// the deadline is `?4`). `$5` is the claim's token ([`claim_token`]). Returns the claimed rows by priority, then id.
fn claim_where(
    conn: &mut AnyConnection,
    (plans, name): (&PlanGeneration, &str),
    ids: &[i64],
    pg_ids: &str,
    sqlite_ids: &str,
    filter: &str,
    (node, epoch, until): (&str, i64, NaiveDateTime),
) -> Result<Vec<Task>, StoreError> {
    // `claimed_at` on PostgreSQL is the clock at the row's update, after the statement's
    // snapshot: it is never earlier than the completion of the command before it.
    // PostgreSQL updates by `id = ANY(ARRAY(…))`, as [`claim_turns_pg`] does: the sub-select
    // runs once and the update is one scan of the primary key. With `id IN (SELECT …)` the plan
    // was a HashAggregate of the locked ids joined back to the table by a nested loop (three
    // nodes: 6.9 ms per job-window claim against 6.1 ms, and the drain 8–14 % slower;
    // docs/benchmarks.md#the-claims-plan).
    let token = claim_token();
    let body = |postgres: bool, claimed: &str, ids: &str, lock: &str, returning: &str| {
        let (open, close) = if postgres { ("= ANY(ARRAY(", "))") } else { ("IN (", ")") };
        due(
            &format!(
                "{set} \
                 WHERE id {open}SELECT t.id FROM task t WHERE t.id {ids} AND t.status = 'pending' AND DUE(t.run_after) \
                   AND (t.target_node IS NULL OR t.target_node = $1) {filter} \
                   AND {COMMAND_TURN} {lock}{close} AND {before_deadline} \
                 RETURNING {returning}",
                set = claim_set(5, claimed),
                before_deadline = before_deadline(postgres, 4)
            ),
            postgres,
        )
    };
    let mut claimed: Vec<Task> = match conn {
        AnyConnection::Postgresql(c) => pg_prepared(
            c,
            plans,
            name,
            &["text", "bigint", "bigint[]", "timestamp", "bigint"],
            &format!("{}, {epoch}, '{{{}}}', '{}', {token}", pg_literal(node), id_list(ids), deadline_text(until)),
            || body(true, PG_CLAIMED_AT, pg_ids, "FOR UPDATE OF t SKIP LOCKED", TASK_COLUMNS),
        )?,
        AnyConnection::Sqlite(c) => {
            let sql = body(false, SQLITE_NOW, sqlite_ids, "", "*").replace('$', "?");
            sqlite_claim(c, |c| {
                diesel::sql_query(sql)
                    .bind::<Text, _>(node)
                    .bind::<BigInt, _>(epoch)
                    // `?3` is not used on SQLite (the ids are in the statement); bound all the same.
                    .bind::<BigInt, _>(0)
                    .bind::<Text, _>(deadline_text(until))
                    .bind::<BigInt, _>(token)
                    .load(c)
            })?
        }
    };
    claimed.sort_by_key(|t| (std::cmp::Reverse(t.priority), t.id));
    Ok(claimed)
}

/// Read and claim in one statement: up to `limit` pending, due rows with `id > after`, in id
/// order, with the same per-application ordering as [`claim`] — leaving out every row whose
/// placement depends on labels: rows addressed to another node, jobs with their own selector,
/// and rows of an application with a selector or a traffic group. For the only member of the
/// ring every other row is its own, so this halves the statements per batch (and the round
/// trips between a NOTIFY and a claim); the dispatcher reads the rows left out with
/// [`due_after`] and places them itself, at least once per poll interval.
/// Nothing is claimed under an epoch the [`Fence`] does not admit, or past its deadline.
/// Returns the claimed rows by priority, then id. `plans`: the store's
/// ([`crate::store::Store::plans`]).
pub fn claim_next(
    conn: &mut AnyConnection,
    plans: &PlanGeneration,
    after: i64,
    limit: i64,
    node: &str,
    epoch: i64,
    fence: Fence,
) -> Result<Vec<Task>, StoreError> {
    if !fence.admits(epoch) {
        return Ok(Vec::new());
    }
    let (until, token) = (fence.until, claim_token());
    // SQLite: the per-row check along the id order (one writer, no planner for the loose scan).
    let sqlite = due(
        &format!(
            "{set} \
             WHERE id IN (SELECT t.id FROM task t WHERE t.status = 'pending' AND t.id > $3 AND DUE(t.run_after) \
               AND (t.target_node IS NULL OR t.target_node = $1) AND {UNLABELLED} \
               AND {COMMAND_TURN} \
               ORDER BY t.id LIMIT $4) AND {before_deadline} \
             RETURNING *",
            set = claim_set(6, SQLITE_NOW),
            before_deadline = before_deadline(false, 5)
        ),
        false,
    );
    let mut claimed: Vec<Task> = match conn {
        // The limit is written into the statement (one prepared statement per batch size) so
        // that PostgreSQL's generic plan knows it, and picks the same plan as a custom one.
        AnyConnection::Postgresql(c) => pg_prepared(
            c,
            plans,
            &format!("rota_claim_next_{limit}"),
            &["text", "bigint", "bigint", "timestamp", "bigint"],
            &format!("{}, {epoch}, {after}, '{}', {token}", pg_literal(node), deadline_text(until)),
            || due(&claim_next_pg(limit), true) + TASK_COLUMNS,
        )?,
        AnyConnection::Sqlite(c) => sqlite_claim(c, |c| {
            diesel::sql_query(sqlite.replace('$', "?"))
                .bind::<Text, _>(node)
                .bind::<BigInt, _>(epoch)
                .bind::<BigInt, _>(after)
                .bind::<BigInt, _>(limit)
                .bind::<Text, _>(deadline_text(until))
                .bind::<BigInt, _>(token)
                .load(c)
        })?,
    };
    claimed.sort_by_key(|t| (std::cmp::Reverse(t.priority), t.id));
    Ok(claimed)
}

/// Claim the next command of each of `apps` (at most `apps.len()` rows): its first pending, due
/// command, when no earlier command of it is running ([`COMMAND_TURN`]) — with the same rows left
/// out as by [`claim_next`] (those whose placement depends on labels). For the only member of
/// the ring, right after an application's command finished: its next one is claimed with one
/// index probe per application instead of [`claim_next`]'s scan of every application's head
/// (11 ms per claim for 1,000 applications, server log, docs/benchmarks.md).
/// Nothing is claimed under an epoch the [`Fence`] does not admit, or past its deadline.
/// Returns the claimed rows by priority, then id. `plans`: the store's
/// ([`crate::store::Store::plans`]).
pub fn claim_turns(
    conn: &mut AnyConnection,
    plans: &PlanGeneration,
    apps: &[i64],
    node: &str,
    epoch: i64,
    fence: Fence,
) -> Result<Vec<Task>, StoreError> {
    if apps.is_empty() || !fence.admits(epoch) {
        return Ok(Vec::new());
    }
    let until = fence.until;
    match conn {
        AnyConnection::Postgresql(c) => {
            let mut claimed = pg_prepared(
                c,
                plans,
                "rota_claim_turns",
                &["text", "bigint", "bigint[]", "timestamp", "bigint"],
                &format!(
                    "{}, {epoch}, '{{{}}}', '{}', {}",
                    pg_literal(node),
                    id_list(apps),
                    deadline_text(until),
                    claim_token()
                ),
                || due(&claim_turns_pg(), true) + TASK_COLUMNS,
            )?;
            claimed.sort_by_key(|t| (std::cmp::Reverse(t.priority), t.id));
            Ok(claimed)
        }
        AnyConnection::Sqlite(_) => {
            let sqlite_ids = format!(
                "IN (SELECT min(f.id) FROM task f WHERE f.app_id IN ({}) AND f.status IN ('pending', 'running') \
                 AND f.status = 'pending' AND f.action <> 'run' AND DUE(f.run_after) GROUP BY f.app_id)",
                id_list(apps)
            );
            claim_where(conn, (plans, ""), apps, "", &sqlite_ids, &format!("AND {UNLABELLED}"), (node, epoch, until))
        }
    }
}

/// [`claim_turns`] on PostgreSQL: each application's head — its first command that is running,
/// or pending and due — found with one probe of `task_app_active_idx`, and claimed when it is
/// pending ([`lock_heads`], as the commands of [`claim_next_pg`]).
/// Why one probe: finding the first pending command and then checking [`COMMAND_TURN`] for it
/// walked each application's entries in the index twice, past the dead entries of every command
/// it ran since the last vacuum; the claim was 26 µs of the server's time per command, the
/// largest part of an application command (server log, docs/benchmarks.md#round-trips).
/// The rows are updated by `id = ANY(ARRAY(…))`, probes of the primary key: with
/// `id IN (SELECT …)` PostgreSQL joined the claimed ids against a sequential scan of the whole
/// table whenever its statistics were stale and the table looked small (9.8 ms of an 11 ms claim
/// for 54 commands in a table of 20,000 rows: `auto_explain`, docs/benchmarks.md#the-claims-plan).
fn claim_turns_pg() -> String {
    format!(
        "WITH head AS (SELECT h.id FROM unnest($3::bigint[]) AS a(app_id) CROSS JOIN LATERAL \
           (SELECT t.id, t.status FROM task t WHERE t.app_id = a.app_id AND t.status IN ('pending', 'running') \
             AND t.action <> 'run' AND (t.status = 'running' OR DUE(t.run_after)) ORDER BY t.id LIMIT 1) h \
           WHERE h.status = 'pending'), \
         commands AS (SELECT c.id FROM head h {lock}) \
         {set} WHERE id = ANY(ARRAY(SELECT id FROM commands)) AND {before_deadline} RETURNING ",
        set = claim_set(5, PG_CLAIMED_AT),
        lock = lock_heads(),
        before_deadline = before_deadline(true, 4)
    )
}

/// Lock each pending head `h` of an application (its command whose turn it is) through a probe
/// of the primary key, in the order the heads come, as `c`: one nested loop driven by the heads
/// in every plan, and only rows whose placement does not depend on labels ([`UNLABELLED`]).
fn lock_heads() -> String {
    format!(
        "CROSS JOIN LATERAL (SELECT t.id FROM task t WHERE t.id = h.id AND t.status = 'pending' \
         AND (t.target_node IS NULL OR t.target_node = $1) AND {UNLABELLED} FOR UPDATE OF t SKIP LOCKED) c"
    )
}

/// A PostgreSQL claim's `claimed_at`: the clock at the row's update, after the statement's
/// snapshot, so never earlier than the completion of the command before it.
const PG_CLAIMED_AT: &str = "(clock_timestamp() AT TIME ZONE 'utc')";

/// Claim for `node` at `epoch` those of `ids` that are pending, due jobs whose placement does
/// not depend on labels — the rows a ring member owns by their task id alone — in one statement.
/// Every other row among `ids` (a command, owned by its application's key; a row addressed to a
/// node, or with a selector or a traffic group) is left alone, as is a locked one.
/// Why: a member of a larger ring that read every due row to claim its share read each row once
/// per member; for the jobs of a backlog it computes which ids of the next stretch its ring owns
/// and claims them without reading any ([`crate::dispatch`], *job window*).
/// Nothing is claimed under an epoch the [`Fence`] does not admit, or past its deadline.
/// Returns the claimed rows by priority, then id. `plans`: the store's
/// ([`crate::store::Store::plans`]).
pub fn claim_jobs(
    conn: &mut AnyConnection,
    plans: &PlanGeneration,
    ids: &[i64],
    node: &str,
    epoch: i64,
    fence: Fence,
) -> Result<Vec<Task>, StoreError> {
    let filter = format!("AND (t.app_id IS NULL OR t.action = 'run') AND t.target_node IS NULL AND {UNLABELLED}");
    claim_ids(conn, (plans, "rota_claim_jobs"), ids, &filter, (node, epoch, fence))
}

/// The highest task id there is (0 for an empty table): where a job window ends.
pub fn max_task_id(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let sql = "SELECT COALESCE(MAX(id), 0) AS n FROM task";
    let n: Count = match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(sql).get_result(c)?,
        AnyConnection::Sqlite(c) => diesel::sql_query(sql).get_result(c)?,
    };
    Ok(n.n)
}

/// Row `t`'s placement does not depend on labels: no selector of its own, and its application
/// (if any) has neither a selector nor a traffic group.
const UNLABELLED: &str = "t.selector IS NULL AND NOT EXISTS (SELECT 1 FROM application a WHERE a.id = t.app_id \
    AND (a.selector <> '{}' OR a.traffic_group IS NOT NULL))";

/// [`claim_next`] on PostgreSQL. Jobs are read in id order; commands by their application's
/// head instead: the only command of an application that may be claimed is its first one that
/// is running, or pending and due ([`COMMAND_TURN`]), and it may be claimed when it is pending.
/// The heads are found with a loose scan of `task_app_active_idx` (one probe per application
/// with active commands, a recursive CTE). Why: checking [`COMMAND_TURN`] row by row along the
/// id order walked the whole backlog of commands waiting behind their application's current one
/// — 19,000 rows and 23 ms per claim for 1,000 applications with 20 commands each, the
/// dispatcher's whole time (docs/benchmarks.md). The pending heads are then locked one by one
/// through a lateral probe of the primary key, in id order: a join left to the planner was
/// planned, on a nearly empty table, as a walk of every pending row in id order matched
/// against the heads — 0.46 s per claim with a million jobs and no command at all.
/// `limit` is written into the statement (one prepared statement per batch size). The rows are
/// updated by `id = ANY(ARRAY(…))`, as in [`claim_turns_pg`] and for the same reason.
fn claim_next_pg(limit: i64) -> String {
    format!(
        "WITH RECURSIVE head(app_id, id, status) AS ( \
          (SELECT t.app_id, t.id, t.status FROM task t \
            WHERE t.status IN ('pending', 'running') AND t.app_id IS NOT NULL AND t.action <> 'run' \
              AND (t.status = 'running' OR DUE(t.run_after)) ORDER BY t.app_id, t.id LIMIT 1) \
          UNION ALL \
          SELECT n.app_id, n.id, n.status FROM head h CROSS JOIN LATERAL \
            (SELECT t.app_id, t.id, t.status FROM task t \
              WHERE t.status IN ('pending', 'running') AND t.app_id > h.app_id AND t.action <> 'run' \
                AND (t.status = 'running' OR DUE(t.run_after)) ORDER BY t.app_id, t.id LIMIT 1) n), \
        jobs AS (SELECT t.id FROM task t WHERE t.status = 'pending' AND t.id > $3 AND DUE(t.run_after) \
            AND (t.app_id IS NULL OR t.action = 'run') \
            AND (t.target_node IS NULL OR t.target_node = $1) AND t.selector IS NULL \
            AND (t.app_id IS NULL OR NOT EXISTS (SELECT 1 FROM application a WHERE a.id = t.app_id \
                 AND (a.selector <> '{{}}' OR a.traffic_group IS NOT NULL))) \
            ORDER BY t.id LIMIT {limit} FOR UPDATE SKIP LOCKED), \
        commands AS (SELECT c.id FROM (SELECT h.id FROM head h WHERE h.status = 'pending' AND h.id > $3 ORDER BY h.id) h \
          {lock} ORDER BY h.id LIMIT {limit}) \
        {set} \
        WHERE id = ANY(ARRAY(SELECT c.id FROM (SELECT id FROM jobs UNION ALL SELECT id FROM commands) c ORDER BY c.id LIMIT {limit})) \
        AND {before_deadline} RETURNING ",
        set = claim_set(5, PG_CLAIMED_AT),
        lock = lock_heads(),
        before_deadline = before_deadline(true, 4)
    )
}

/// Run a claiming `UPDATE … RETURNING` on SQLite inside a transaction. SQLite applies the whole
/// update at its first step, before diesel decodes the returned rows; without the transaction a
/// row whose text is not UTF-8 failed the decoding after the claim had been written, and every
/// good row of that batch stayed `running` with nobody working on it. Rolled back, the batch is
/// pending again and [`fail_unreadable`] can fail the bad row alone.
fn sqlite_claim(
    c: &mut diesel::SqliteConnection,
    claim: impl FnOnce(&mut diesel::SqliteConnection) -> QueryResult<Vec<Task>>,
) -> QueryResult<Vec<Task>> {
    c.transaction(claim)
}

/// Text columns of `task`, for [`fail_unreadable`].
const TASK_TEXT: [&str; 11] = [
    "action",
    "payload",
    "status",
    "owner_node",
    "idempotency_key",
    "target_node",
    "result",
    "error",
    "routing",
    "selector",
    "stage",
];

/// How [`fail_unreadable`] reads a column of `task` alone.
enum Probe {
    Int,
    BigInt,
    Time,
}

/// The non-text columns of `task`, how each is read, and what replaces a value that cannot be
/// (the original is kept in the row's `error`).
const TASK_TYPED: [(&str, Probe, &str); 16] = [
    ("app_id", Probe::BigInt, "NULL"),
    ("priority", Probe::Int, "0"),
    ("attempts", Probe::Int, "0"),
    ("max_attempts", Probe::Int, "1"),
    ("owner_epoch", Probe::BigInt, "NULL"),
    ("claim_token", Probe::BigInt, "NULL"),
    ("parent_id", Probe::BigInt, "NULL"),
    ("shard_index", Probe::Int, "NULL"),
    ("shard_total", Probe::Int, "NULL"),
    ("timeout_ms", Probe::Int, "NULL"),
    ("run_after", Probe::Time, "strftime('%Y-%m-%d %H:%M:%f', 'now')"),
    ("created_at", Probe::Time, "strftime('%Y-%m-%d %H:%M:%f', 'now')"),
    ("claimed_at", Probe::Time, "NULL"),
    ("finished_at", Probe::Time, "NULL"),
    ("started_at", Probe::Time, "NULL"),
    ("id", Probe::BigInt, "id"),
];

/// SQLite keeps whatever it is given in any column; a pending row with text that is not UTF-8,
/// or a value the node cannot read as its column's type (a bare date in `run_after`, text in
/// `priority`), cannot be decoded, and it made every read of its batch fail — the queue behind
/// it stopped. Among the first `limit` pending rows after `after`, fail each such row: its bad
/// column is rewritten as a readable value and the error names the column and keeps the
/// original (text bytes in hex), so nothing is lost. Returns how many rows it failed. A
/// no-op on PostgreSQL, which refuses such text at insert.
pub fn fail_unreadable(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<usize, StoreError> {
    use diesel::sql_types::{Binary, Timestamp};
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    #[derive(QueryableByName)]
    struct Raw {
        #[diesel(sql_type = Nullable<Binary>)]
        raw: Option<Vec<u8>>,
    }
    #[derive(QueryableByName)]
    struct ProbeInt {
        #[diesel(sql_type = Nullable<diesel::sql_types::Integer>)]
        #[allow(dead_code)]
        v: Option<i32>,
    }
    #[derive(QueryableByName)]
    struct ProbeBigInt {
        #[diesel(sql_type = Nullable<BigInt>)]
        #[allow(dead_code)]
        v: Option<i64>,
    }
    #[derive(QueryableByName)]
    struct ProbeTime {
        #[diesel(sql_type = Nullable<Timestamp>)]
        #[allow(dead_code)]
        v: Option<chrono::NaiveDateTime>,
    }
    let AnyConnection::Sqlite(c) = conn else { return Ok(0) };
    let ids: Vec<Id> = diesel::sql_query("SELECT id FROM task WHERE status = 'pending' AND id > ? ORDER BY id LIMIT ?")
        .bind::<BigInt, _>(after)
        .bind::<BigInt, _>(limit)
        .load(c)?;
    let mut failed = 0;
    for Id { id } in ids {
        let mut bad = Vec::new();
        for col in TASK_TEXT {
            let raw: Raw = diesel::sql_query(format!("SELECT CAST({col} AS BLOB) AS raw FROM task WHERE id = ?"))
                .bind::<BigInt, _>(id)
                .get_result(c)?;
            if let Some(bytes) = raw.raw.filter(|b| std::str::from_utf8(b).is_err()) {
                bad.push((col, bytes));
            }
        }
        let mut why = Vec::new();
        for (col, bytes) in &bad {
            let hex: String = bytes.iter().take(256).map(|b| format!("{b:02X}")).collect();
            why.push(format!("`{col}` is not valid UTF-8 (its bytes, in hex: {hex})"));
            diesel::sql_query(format!("UPDATE task SET {col} = ? WHERE id = ?"))
                .bind::<Text, _>(String::from_utf8_lossy(bytes).into_owned())
                .bind::<BigInt, _>(id)
                .execute(c)?;
        }
        // Values of other types the node cannot read back (a row written before the update
        // checks of migration `task_rows_never_stall`): each column read alone, as the node
        // reads it; one that fails is named, and replaced so that the row can be read at all.
        for (col, probe, replacement) in TASK_TYPED {
            let sql = format!("SELECT {col} AS v FROM task WHERE id = ?");
            let read = match probe {
                Probe::Int => diesel::sql_query(&sql).bind::<BigInt, _>(id).get_result::<ProbeInt>(c).map(|_| ()),
                Probe::BigInt => diesel::sql_query(&sql).bind::<BigInt, _>(id).get_result::<ProbeBigInt>(c).map(|_| ()),
                Probe::Time => diesel::sql_query(&sql).bind::<BigInt, _>(id).get_result::<ProbeTime>(c).map(|_| ()),
            };
            if let Err(e) = read {
                let shown: Raw = diesel::sql_query(format!("SELECT CAST({col} AS BLOB) AS raw FROM task WHERE id = ?"))
                    .bind::<BigInt, _>(id)
                    .get_result(c)?;
                let shown = String::from_utf8_lossy(&shown.raw.unwrap_or_default()).into_owned();
                why.push(format!("`{col}` cannot be read ({e}; it holds {shown:?})"));
                diesel::sql_query(format!("UPDATE task SET {col} = {replacement} WHERE id = ?"))
                    .bind::<BigInt, _>(id)
                    .execute(c)?;
            }
        }
        if why.is_empty() {
            continue;
        }
        let error = format!("{}: write the row again with values of the column's type (docs/sql.md)", why.join("; "));
        failed += diesel::sql_query(
            "UPDATE task SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND status = 'pending'",
        )
        .bind::<Text, _>(error)
        .bind::<Timestamp, _>(Utc::now().naive_utc())
        .bind::<BigInt, _>(id)
        .execute(c)?;
    }
    Ok(failed)
}

/// Task `id` still held under `node`'s `claim`: `running`, owned by `node` at the claim's epoch,
/// with its token. The condition of every write a claimer makes about its claimed row (its start
/// mark, giving it back, a fan-out or a workflow's step); a row claimed again since matches no
/// more.
#[diesel::dsl::auto_type(no_type_alias)]
pub(super) fn held_under<'a>(id: i64, node: &'a str, claim: Claim) -> _ {
    let running: TaskStatus = TaskStatus::Running;
    let (epoch, token): (i64, i64) = (claim.epoch, claim.token);
    task::id
        .eq(id)
        .and(task::status.eq(running))
        .and(task::owner_node.eq(node))
        .and(task::owner_epoch.eq(epoch))
        .and(task::claim_token.eq(token))
}
