//! SQL text that the store's hand-written statements share: the database's clock on each
//! backend, the `DUE(…)` rewrite, literals and id lists, and [`TaskRows`], a raw statement whose
//! `task` rows are decoded by position.
//!
//! Why a module of its own: the claim, completion and counting statements are SQL text (what
//! diesel's DSL cannot say on both backends, or says slower), and the pieces they share must mean
//! the same in each of them. The membership deadline's SQL is in `fence`.
//!
//! Must never: decide anything or hold state. Everything here turns values into SQL text, or runs
//! the text it is given.

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::schema::task;

const PG_NOW: &str = "(now() AT TIME ZONE 'utc')";
pub(super) const SQLITE_NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

/// Rewrite every `DUE(column)` into "column is due now" for the backend. On SQLite the times are
/// compared as julian days, not as text: a `run_after` written by hand as `2026-11-22T05:00:00`
/// (with a `T`) would otherwise sort after every `2026-11-22 …` of the same day.
pub(super) fn due(sql: &str, postgres: bool) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(start) = rest.find("DUE(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 4..];
        let Some(end) = after.find(')') else { break };
        let column = &after[..end];
        if postgres {
            out.push_str(&format!("{column} <= {PG_NOW}"));
        } else {
            out.push_str(&format!("julianday({column}) <= julianday('now')"));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Ids as a comma-separated list of integers (for `IN (…)` and array literals).
pub(super) fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// The columns of `task` in the order of `schema.rs` (and of [`Task`](super::models::Task)'s fields), for a statement
/// whose rows [`TaskRows`] decodes by position. The test `task_columns_follow_the_schema` holds
/// this list to the schema.
pub(super) const TASK_COLUMNS: &str =
    "id, app_id, action, payload, status, priority, run_after, attempts, max_attempts, \
    owner_node, owner_epoch, idempotency_key, parent_id, shard_index, shard_total, target_node, result, error, \
    created_at, claimed_at, finished_at, routing, timeout_ms, selector, stage, claim_token, started_at";

/// A raw PostgreSQL statement without bind parameters whose rows are whole `task` rows in
/// [`TASK_COLUMNS`] order, decoded by position. Why: `sql_query` decodes by name, and diesel
/// finds each name by a scan of the result's columns; for a claimed batch that scan was 15 % of
/// the node's instructions in a drain (callgrind, docs/benchmarks.md), on the claim's critical
/// path.
pub(super) struct TaskRows<'a>(pub(super) &'a str);

impl diesel::query_builder::QueryId for TaskRows<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for TaskRows<'_> {
    type SqlType = task::SqlType;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for TaskRows<'_> {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        out.unsafe_to_cache_prepared();
        out.push_sql(self.0);
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for TaskRows<'_> {}

/// A one-column count row (`… AS n`).
#[derive(QueryableByName)]
pub(super) struct Count {
    #[diesel(sql_type = BigInt)]
    pub(super) n: i64,
}

/// `unnest($1::type[], …) AS v(name, …)` for `columns` (name, PostgreSQL type): one array
/// parameter per column, numbered from `$1` in order, each row of the arrays a row `v`. The
/// statement's next parameter is `$(columns.len() + 1)`.
pub(super) fn unnest(columns: &[(&str, &str)]) -> String {
    unnest_as(columns, "v")
}

/// [`unnest`] with the rows named `alias`.
pub(super) fn unnest_as(columns: &[(&str, &str)], alias: &str) -> String {
    let arrays: Vec<String> = columns.iter().enumerate().map(|(i, (_, ty))| format!("${}::{ty}[]", i + 1)).collect();
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    format!("unnest({}) AS {alias}({})", arrays.join(", "), names.join(", "))
}

/// `text` as a PostgreSQL string literal. The `E'…'` form escapes backslashes and quotes the
/// same way whatever `standard_conforming_strings` says.
pub(super) fn pg_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::{due, task, TASK_COLUMNS};
    use diesel::prelude::*;

    #[test]
    fn task_columns_follow_the_schema() {
        let select = diesel::debug_query::<diesel::pg::Pg, _>(&task::table.select(task::all_columns)).to_string();
        let listed: Vec<String> = select
            .trim_start_matches("SELECT ")
            .split(" FROM ")
            .next()
            .unwrap()
            .split(", ")
            .map(|c| c.trim_start_matches("\"task\".").trim_matches('"').to_string())
            .collect();
        let ours: Vec<String> = TASK_COLUMNS.split(',').map(|c| c.trim().to_string()).collect();
        assert_eq!(ours, listed);
    }

    #[test]
    fn due_rewrites_every_column() {
        let sql = "a AND DUE(t.run_after) OR (DUE(e.run_after))";
        assert_eq!(
            due(sql, true),
            "a AND t.run_after <= (now() AT TIME ZONE 'utc') OR (e.run_after <= (now() AT TIME ZONE 'utc'))"
        );
        assert_eq!(
            due(sql, false),
            "a AND julianday(t.run_after) <= julianday('now') OR (julianday(e.run_after) <= julianday('now'))"
        );
    }
}
