//! The fence on every write as owner: the writer's membership session, as the database can
//! check it.
//!
//! Every write that concerns work a node is doing is conditional on that node's `owner_node` and
//! `owner_epoch` (invariant I3), and every write as owner (claims, outcomes, application writes
//! and acquisitions) on the node's membership deadline, checked against the database's clock
//! ([`Fence`]): a paused node that wakes up with an old view changes nothing, even when the pause
//! fell between its check and its write. The deadline's condition is written here once, as SQL
//! text ([`before_deadline`]) and as a diesel expression ([`BeforeDeadline`]), so that every
//! statement checks it the same way.
//!
//! Must never: compare the deadline with the node's own clock (the database's clock decides), or
//! write anything itself.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::MultiBackend;

/// What every write as owner is fenced by: the writer's membership session as the database can
/// check it. Why: a node checks that it may act before it reads and claims, but a node paused
/// between the check and the claim (or while its read was in flight) sent the claim when it
/// woke — past its lease, under the epoch of a session that had ended, for rows the ring had
/// meanwhile given to others (the chaos suite's I3, CI seed 155236777). docs/membership.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The session's deadline on the wall clock (UTC): nothing is written once the database's
    /// clock has passed it ([`before_deadline`]). Already passed when the node may not act.
    pub until: NaiveDateTime,
    /// The epoch at which the session began: a write under an older epoch (a claim made with
    /// a view from before a re-join, an outcome or an application of an earlier life) is not
    /// written, whatever the deadline of the session that came after.
    pub joined: i64,
}

impl Fence {
    /// True when a write under `epoch` belongs to this session.
    pub fn admits(&self, epoch: i64) -> bool {
        epoch >= self.joined
    }
}

/// The answers to `items`, in order, when only those `admitted` keeps were written: the next of
/// `answers` (the written items' answers, in order) for each of them, `refused(item)` for the
/// others — and for a written item left without an answer.
pub(super) fn merge_admitted<T, R>(
    items: &[T],
    admitted: impl Fn(&T) -> bool,
    answers: Vec<R>,
    refused: impl Fn(&T) -> R,
) -> Vec<R> {
    let mut answers = answers.into_iter();
    items.iter().map(|i| if admitted(i) { answers.next().unwrap_or_else(|| refused(i)) } else { refused(i) }).collect()
}

/// "The database's clock is before the writer's deadline `$n`" ([`Fence::until`]), a condition
/// of every write as owner written as SQL text (the claims, the batched outcomes and
/// acquisitions); [`BeforeDeadline`] is the same for the statements built with diesel's DSL.
/// A scalar subquery: evaluated once per statement as it begins (PostgreSQL plans it as a
/// one-time filter, and past the deadline reads and locks nothing). Compared row by row, the
/// clock's conversion cost each row the claim's plan looked at, and insert-to-start p99 at 500
/// tasks/s rose by a quarter (docs/benchmarks.md#fencing). It holds as far as the node's and
/// the database's clocks agree (docs/membership.md).
pub(super) fn before_deadline(postgres: bool, n: usize) -> String {
    let (open, close) = deadline_parts(postgres);
    format!("{open}${n}{close}")
}

/// [`before_deadline`] with the deadline written in the statement ([`deadline_text`]) instead of
/// bound, for statements whose parameters are numbered differently per backend.
pub(super) fn before_deadline_literal(postgres: bool, until: NaiveDateTime) -> String {
    let (open, close) = deadline_parts(postgres);
    format!("{open}'{}'{close}", deadline_text(until))
}

/// The text of [`before_deadline`] before and after the deadline, for each backend.
fn deadline_parts(postgres: bool) -> (&'static str, &'static str) {
    if postgres {
        ("(SELECT (clock_timestamp() AT TIME ZONE 'utc') < ", ")")
    } else {
        ("(SELECT julianday('now') < julianday(", "))")
    }
}

/// [`before_deadline`] for a statement built with diesel's DSL: "the database's clock is before the
/// bound deadline", its text fixed per backend ([`deadline_parts`]). Why: the single-row writes (a
/// completion under light load, an acquisition, a recovery; on SQLite outcomes, application
/// writes and acquisitions) keep their small statements; sending a single completion through
/// the batched `unnest` statement instead raised insert-to-start p50 at 500 tasks/s from 0.66
/// to 0.73 ms (docs/benchmarks.md#fencing).
#[derive(Debug, Clone, Copy)]
pub(super) struct BeforeDeadline(pub(super) NaiveDateTime);

impl diesel::query_builder::QueryId for BeforeDeadline {
    type QueryId = BeforeDeadline;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::expression::Expression for BeforeDeadline {
    type SqlType = diesel::sql_types::Bool;
}

impl<QS> diesel::expression::AppearsOnTable<QS> for BeforeDeadline {}

impl<QS> diesel::expression::SelectableExpression<QS> for BeforeDeadline {}

impl diesel::expression::ValidGrouping<()> for BeforeDeadline {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

impl diesel::query_builder::QueryFragment<MultiBackend> for BeforeDeadline {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        let (open, close) = deadline_parts(matches!(out.backend(), MultiBackend::Postgresql(_)));
        out.push_sql(open);
        out.push_bind_param::<diesel::sql_types::Timestamp, _>(&self.0)?;
        out.push_sql(close);
        Ok(())
    }
}

/// A deadline as text, in UTC to the microsecond: a literal for PostgreSQL's `EXECUTE` (of a
/// `timestamp` parameter) and a time SQLite's `julianday` reads (to the millisecond).
pub(super) fn deadline_text(until: NaiveDateTime) -> String {
    until.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}
