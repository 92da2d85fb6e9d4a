//! The claims' prepared statements on PostgreSQL, and when to plan them anew.
//!
//! Why: a claim sits between every insert and its start, and parsed and planned at every call it
//! cost more than it took to run; so each connection runs the claims as named prepared statements
//! ([`pg_prepared`]). PostgreSQL keeps a prepared statement's generic plan until the table's
//! statistics change, and a plan made on a nearly empty table outlives its fitness:
//! [`PlanGeneration`], one per [`Store`](super::Store), says when its connections prepare them
//! again.
//!
//! Must never: renew the plans of an idle node (its statements per second stay those of its
//! poll), be shared between stores or kept in a global (each pool's connections hold their own
//! statements; two nodes in one process must not renew each other's), or choose what a claim
//! reads and writes (its SQL comes from the claim).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::models::Task;
use super::sql::TaskRows;

/// Run `sql`, a statement returning [`TASK_COLUMNS`](super::sql::TASK_COLUMNS), as this
/// connection's named prepared statement `name`, whose parameters have the given PostgreSQL
/// types; its rows are decoded by position ([`TaskRows`]). `EXECUTE` takes no protocol
/// parameters, so `args` are SQL literals ([`pg_literal`](super::sql::pg_literal) for text). The
/// statement is prepared on the connection's first call, again if the server lost or invalidated
/// it, and again at each new generation of `plans` (the [`PlanGeneration`] of the connection's
/// store).
/// Why: an unnamed statement is parsed and planned at every call; the head claim's recursive
/// CTE took 0.6 ms to parse and 1.7 ms to plan against 0.5 ms to run (server log, latency case
/// at 500 rows/s, docs/benchmarks.md), and the claim sits between every insert and its start.
/// Diesel keeps its own prepared statements only for its query builder, never for `sql_query`.
pub(super) fn pg_prepared(
    c: &mut diesel::PgConnection,
    plans: &PlanGeneration,
    name: &str,
    types: &[&str],
    args: &str,
    sql: impl FnOnce() -> String,
) -> QueryResult<Vec<Task>> {
    let started = Instant::now();
    let generation = plans.current(started);
    let prefix = format!("{name}_g");
    let execute = format!("EXECUTE {prefix}{generation}({args})");
    match TaskRows(&execute).load(c) {
        // Not yet prepared on this connection (at this generation), lost, or invalidated by a
        // migration that changed the row type. The server's messages depend on its language,
        // so any database error prepares the statement again and retries once: the failed
        // `EXECUTE` was one autocommitted statement and changed nothing; a second failure is
        // returned. Every older generation of the statement held by the connection goes.
        // (A connection has no slot for remembering which generation it prepared, so a new one
        // is found by this failure: one error in the server log per connection and statement
        // every renewal, which an idle node never makes.) If the look-up fails too, the
        // `EXECUTE`'s own error is the one returned.
        Err(error @ diesel::result::Error::DatabaseError(..)) => {
            #[derive(QueryableByName)]
            struct Name {
                #[diesel(sql_type = Text)]
                name: String,
            }
            let Ok(held) = diesel::sql_query("SELECT name FROM pg_prepared_statements WHERE starts_with(name, $1)")
                .bind::<Text, _>(&prefix)
                .load::<Name>(c)
            else {
                return Err(error);
            };
            let drop: String = held.iter().map(|h| format!("DEALLOCATE {}; ", h.name)).collect();
            c.batch_execute(&format!("{drop}PREPARE {prefix}{generation}({}) AS {}", types.join(", "), sql()))?;
            TaskRows(&execute).load(c)
        }
        // Only an execution of a statement already prepared is timed: a first one includes the
        // preparation and a custom plan.
        other => {
            if let Ok(rows) = &other {
                plans.took(Instant::now(), started.elapsed(), rows.len());
            }
            other
        }
    }
}

/// Which generation of the prepared claim statements is current. PostgreSQL caches a prepared
/// statement's generic plan after five executions and keeps it until the table's statistics
/// change — which, without autovacuum, is never. A plan made while `task` was nearly empty
/// walks the whole table once it holds a million rows: the sustained case's claims went from
/// 1 ms to 0.5–2 s each (reproduced in psql, docs/benchmarks.md). So the statements are
/// prepared again — planned anew for the table as it is now — when the generation is older
/// than [`PlanGeneration::MAX_AGE`] and busy (its claims took [`PlanGeneration::BUSY_ROWS`]
/// rows), or right after a claim that took rows and longer than [`PlanGeneration::SLOW`] (at
/// most once per [`PlanGeneration::MIN_AGE`]). A new preparation costs a few custom plans per
/// connection, under 10 ms. An idle node, whose claims take nothing, never renews: its queries
/// per second stay those of its poll; nor does a node taking a task now and then.
///
/// One per [`Store`](super::Store), shared by the connections of its pool, which hold the
/// statements: [`Store::plans`](super::Store::plans) hands it to the claims.
pub struct PlanGeneration {
    /// The current generation, part of each statement's name.
    generation: AtomicU64,
    /// When it began, in milliseconds after `origin`.
    began_ms: AtomicU64,
    /// Rows the claims took during the current generation.
    claimed: AtomicU64,
    origin: OnceLock<Instant>,
}

impl PlanGeneration {
    /// A busy generation is renewed at least this often.
    pub(crate) const MAX_AGE: Duration = Duration::from_secs(10);
    /// A generation whose claims took this many rows is busy.
    pub(crate) const BUSY_ROWS: u64 = 1_000;
    /// A claim slower than this renews the generation…
    pub(crate) const SLOW: Duration = Duration::from_millis(20);
    /// …unless the generation is younger than this.
    pub(crate) const MIN_AGE: Duration = Duration::from_secs(1);

    /// Generation 0, nothing claimed yet.
    pub(crate) const fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            began_ms: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            origin: OnceLock::new(),
        }
    }

    /// The current generation at `now`, renewed first if it is older than [`Self::MAX_AGE`]
    /// and busy.
    pub(crate) fn current(&self, now: Instant) -> u64 {
        let now_ms = self.ms(now);
        if self.claimed.load(Ordering::Acquire) >= Self::BUSY_ROWS {
            self.renew_if_older(now_ms, Self::MAX_AGE);
        }
        self.generation.load(Ordering::Acquire)
    }

    /// A claim that ended at `end` took `took` and claimed `rows`: renew the generation if it
    /// was slow. A claim that took nothing never renews it: a slow empty claim is a slow round
    /// trip or commit as often as a bad plan, and an idle node must stay quiet.
    pub(crate) fn took(&self, end: Instant, took: Duration, rows: usize) {
        let end_ms = self.ms(end);
        if rows == 0 {
            return;
        }
        self.claimed.fetch_add(rows as u64, Ordering::AcqRel);
        if took > Self::SLOW {
            self.renew_if_older(end_ms, Self::MIN_AGE);
        }
    }

    /// `at` in milliseconds after the first instant this generation counter saw.
    fn ms(&self, at: Instant) -> u64 {
        let origin = *self.origin.get_or_init(|| at);
        u64::try_from(at.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// Start a new generation at `now_ms` if the current one is older than `age`; of several
    /// threads that see it old at once, one renews it.
    fn renew_if_older(&self, now_ms: u64, age: Duration) {
        let began = self.began_ms.load(Ordering::Acquire);
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(began) > age_ms
            && self.began_ms.compare_exchange(began, now_ms, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            // Rows another thread counted between the exchange and here are lost to the new
            // generation: at worst it turns busy one claim later.
            self.claimed.store(0, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PlanGeneration;
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_generation_is_never_renewed_by_age() {
        let plans = PlanGeneration::new();
        let t0 = Instant::now();
        assert_eq!(plans.current(t0), 0);
        plans.took(t0, MS, 0);
        assert_eq!(plans.current(t0 + PlanGeneration::MAX_AGE * 10), 0);
    }

    #[test]
    fn a_busy_generation_is_renewed_after_max_age_once() {
        let plans = PlanGeneration::new();
        let t0 = Instant::now();
        assert_eq!(plans.current(t0), 0);
        plans.took(t0, MS, PlanGeneration::BUSY_ROWS as usize - 1);
        assert_eq!(plans.current(t0 + PlanGeneration::MAX_AGE * 2), 0, "not busy yet");
        plans.took(t0, MS, 1);
        assert_eq!(plans.current(t0 + PlanGeneration::MAX_AGE), 0, "not older than MAX_AGE yet");
        let later = t0 + PlanGeneration::MAX_AGE * 2 + MS;
        assert_eq!(plans.current(later), 1);
        // The new generation has claimed nothing yet: it stays, however old.
        assert_eq!(plans.current(later + PlanGeneration::MAX_AGE * 3), 1);
    }

    #[test]
    fn a_slow_claim_renews_at_most_once_per_min_age() {
        let plans = PlanGeneration::new();
        let t0 = Instant::now();
        assert_eq!(plans.current(t0), 0);
        plans.took(t0, PlanGeneration::SLOW, 1);
        assert_eq!(plans.current(t0), 0, "SLOW itself is not slow");
        let t1 = t0 + PlanGeneration::MIN_AGE + MS;
        plans.took(t1, PlanGeneration::SLOW + MS, 1);
        assert_eq!(plans.current(t1), 1);
        plans.took(t1 + MS, Duration::from_secs(2), 1);
        assert_eq!(plans.current(t1 + MS), 1, "the generation is younger than MIN_AGE");
        let t2 = t1 + PlanGeneration::MIN_AGE + MS;
        plans.took(t2, Duration::from_secs(2), 0);
        assert_eq!(plans.current(t2), 1, "a slow claim that took nothing does not renew");
        plans.took(t2, Duration::from_secs(2), 1);
        assert_eq!(plans.current(t2), 2);
    }
}
