//! Schedules: when a cron expression or a fixed rate is due, and what one firing step records.
//!
//! Why it exists: "fire every second across ring changes and crashes, never twice, never
//! silently skipped" is a rule about times, not about I/O. This module decides it, purely:
//! given a schedule's stored `next_fire_at`, the clock and the misfire policy, [`step`] says which
//! fire times to record as fired, caught up or skipped, and the new `next_fire_at`. The store
//! ([`crate::store::schedules::fire`]) applies a step in one transaction, conditional on the
//! `next_fire_at` the step started from; [`runner`] is the loop that calls both on the ring
//! owner of `schedule:{id}`, with its timing rules (reload, due, hold, sleep, prune) in
//! `timetable`.
//!
//! Times are UTC `NaiveDateTime`s at microsecond precision (PostgreSQL's). Fixed rates are
//! aligned to the Unix epoch (every 5 s fires at :00, :05, …), so the grid of fire times does not
//! depend on when a schedule was created or which node computes it. Cron expressions have a
//! seconds field first (`SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK [YEAR]`).
//!
//! The records of successive steps tile the grid: the first record starts at the first grid time
//! at or after the old `next_fire_at`, each record starts at the grid time after the previous
//! one's last, and the new `next_fire_at` is the grid time after the last record. That is what
//! makes "none doubled, none skipped beyond the policy" checkable from the `schedule_firing` rows.
//!
//! Must never: do I/O, read the clock (callers pass `now`), or return a step whose records
//! overlap or leave a hole in the grid.

pub mod runner;
mod timetable;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, Timelike, Utc};

/// At most this many on-time firings per step: one step is one transaction, kept short; the
/// runner steps again at once while a schedule is still due.
pub const MAX_FIRED_PER_STEP: usize = 100;
/// At most this many missed cron times are counted per step (a long outage of a per-second cron
/// is counted over several steps).
pub const MAX_SCAN_PER_STEP: i64 = 10_000;
/// The smallest fixed rate accepted by the API.
pub const MIN_EVERY_MS: i64 = 100;
/// The largest fixed rate (about a year), so that grid arithmetic cannot overflow.
pub const MAX_EVERY_MS: i64 = 366 * 24 * 3_600_000;
/// The default misfire grace: a fire time later than this is a misfire (as Quartz's default).
pub const DEFAULT_MISFIRE_GRACE_MS: i64 = 60_000;
/// An example that parses, for error messages.
pub const CRON_EXAMPLE: &str = "`*/5 * * * * *` (every 5 seconds) or `0 30 9 * * Mon-Fri` (09:30:00 UTC on weekdays)";

const FIELDS: [(&str, &str); 7] = [
    ("seconds", "0-59"),
    ("minutes", "0-59"),
    ("hours", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or Jan-Dec"),
    ("day of week", "1-7 (1 = Sunday) or Sun-Sat"),
    ("year", "1970-2100"),
];

/// A parsed cron expression (seconds first, UTC).
#[derive(Clone)]
pub struct Cron {
    schedule: cron::Schedule,
    text: String,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl Cron {
    /// Parse `text`; the error names the field that is wrong and gives an example.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let layout = "`SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK [YEAR]` (the first field is seconds)";
        match fields.len() {
            0 => return Err(format!("is empty: give 6 or 7 fields, {layout}, e.g. {CRON_EXAMPLE}")),
            5 => {
                return Err(format!(
                    "has 5 fields, but Rota's cron has seconds first: {layout}; to run at second 0 of \
                     those minutes write `0 {}`",
                    fields.join(" ")
                ))
            }
            6 | 7 => {}
            n => return Err(format!("has {n} fields; give 6 or 7: {layout}, e.g. {CRON_EXAMPLE}")),
        }
        let joined = fields.join(" ");
        match cron::Schedule::from_str(&joined) {
            Ok(schedule) => Ok(Cron { schedule, text: joined }),
            Err(_) => {
                // The crate says only "invalid": find the field by parsing each one alone.
                for (i, value) in fields.iter().enumerate() {
                    let mut probe = vec!["*"; fields.len()];
                    probe[i] = value;
                    if cron::Schedule::from_str(&probe.join(" ")).is_err() {
                        let (name, range) = FIELDS[i];
                        return Err(format!(
                            "field {} ({name}) `{value}` is not valid: use {range}, `*`, a list `a,b`, a range \
                             `a-b` or a step `*/n`; the layout is {layout}, e.g. {CRON_EXAMPLE}",
                            i + 1
                        ));
                    }
                }
                Err(format!("does not parse: the layout is {layout}, e.g. {CRON_EXAMPLE}"))
            }
        }
    }

    /// The expression as given (whitespace normalised).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Timing {
    /// A cron expression.
    Cron(Box<Cron>),
    /// A fixed rate in milliseconds, aligned to the Unix epoch.
    Every(i64),
}

/// A timing that cannot be built from a row (both or neither of cron and every_ms, a bad value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TimingError {
    /// `cron` or `every_ms`.
    pub field: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl Timing {
    /// The timing of a row: exactly one of `cron` and `every_ms`.
    pub fn from_parts(cron: Option<&str>, every_ms: Option<i64>) -> Result<Timing, TimingError> {
        match (cron, every_ms) {
            (Some(_), Some(_)) => {
                Err(TimingError { field: "cron", message: "give either `cron` or `every_ms`, not both".into() })
            }
            (None, None) => Err(TimingError {
                field: "cron",
                message: format!("give `cron` (e.g. {CRON_EXAMPLE}) or `every_ms` (e.g. 1000)"),
            }),
            (Some(c), None) => {
                Cron::parse(c).map(|c| Timing::Cron(Box::new(c))).map_err(|m| TimingError { field: "cron", message: m })
            }
            (None, Some(ms)) if !(1..=MAX_EVERY_MS).contains(&ms) => Err(TimingError {
                field: "every_ms",
                message: format!("must be between 1 and {MAX_EVERY_MS}, got {ms}"),
            }),
            (None, Some(ms)) => Ok(Timing::Every(ms)),
        }
    }

    /// The first fire time strictly after `t`; None when a cron expression has no more.
    pub fn next_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        match self {
            Timing::Cron(c) => c.schedule.after(&t.and_utc()).next().map(|d: DateTime<Utc>| d.naive_utc()),
            Timing::Every(ms) => {
                let p = ms.checked_mul(1000)?;
                let us = t.and_utc().timestamp_micros();
                let next = us.div_euclid(p).checked_add(1)?.checked_mul(p)?;
                DateTime::from_timestamp_micros(next).map(|d| d.naive_utc())
            }
        }
    }

    /// The first fire time at or after `t`.
    pub fn at_or_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        if self.is_fire_time(t) {
            Some(t)
        } else {
            self.next_after(t)
        }
    }

    /// Is `t` on this timing's grid?
    pub fn is_fire_time(&self, t: NaiveDateTime) -> bool {
        match self {
            Timing::Cron(c) => t.nanosecond() == 0 && c.schedule.includes(t.and_utc()),
            Timing::Every(ms) => {
                t.nanosecond().is_multiple_of(1000)
                    && t.and_utc().timestamp_micros().rem_euclid(ms.saturating_mul(1000)) == 0
            }
        }
    }

    /// Fire times in `[from, before)` with `from` on the grid: (count, second-to-last, last, the
    /// time after the last), counting at most `cap` (then the count is `cap`).
    fn span(&self, from: NaiveDateTime, before: NaiveDateTime, cap: i64) -> Span {
        match self {
            Timing::Every(ms) => {
                let p = ms * 1000;
                let d = (before - from).num_microseconds().unwrap_or(i64::MAX);
                let count = (d + p - 1) / p;
                let last = from + Duration::microseconds((count - 1) * p);
                Span {
                    count,
                    before_last: (count > 1).then(|| last - Duration::microseconds(p)),
                    last,
                    after: Some(last + Duration::microseconds(p)),
                }
            }
            Timing::Cron(_) => {
                let (mut count, mut before_last, mut last) = (1, None, from);
                let mut after = self.next_after(from);
                while let Some(t) = after {
                    if t >= before || count >= cap {
                        break;
                    }
                    before_last = Some(last);
                    last = t;
                    count += 1;
                    after = self.next_after(t);
                }
                Span { count, before_last, last, after }
            }
        }
    }
}

struct Span {
    count: i64,
    before_last: Option<NaiveDateTime>,
    last: NaiveDateTime,
    after: Option<NaiveDateTime>,
}

/// What to do with fire times missed by more than the grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfire {
    /// Record the missed times as skipped; fire none of them.
    Skip,
    /// Fire the latest missed time once; record the others as skipped.
    FireOnce,
}

impl Misfire {
    /// Every policy, as stored.
    pub const ALL: [Misfire; 2] = [Misfire::Skip, Misfire::FireOnce];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::Skip => "skip",
            Misfire::FireOnce => "fire_once",
        }
    }

    /// Parse a stored name; the error lists the valid ones.
    pub fn parse(text: &str) -> Result<Misfire, String> {
        Misfire::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| format!("`{}` is not one of skip, fire_once", text.chars().take(64).collect::<String>()))
    }
}

/// How a range of fire times was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fired within the grace: a task.
    Fired,
    /// The one firing `fire_once` makes for a missed span: a task.
    CaughtUp,
    /// Missed and not fired: no task.
    Skipped,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fired => "fired",
            Outcome::CaughtUp => "caught_up",
            Outcome::Skipped => "skipped",
        }
    }

    /// True when a task is written for it.
    pub fn fires(self) -> bool {
        self != Outcome::Skipped
    }
}

/// One `schedule_firing` row to write: `times` consecutive fire times from `fire_at` to `last_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What happened.
    pub outcome: Outcome,
    /// The first fire time covered (the row's key with the schedule id).
    pub fire_at: NaiveDateTime,
    /// The last fire time covered (= `fire_at` unless a skipped span).
    pub last_at: NaiveDateTime,
    /// How many fire times it covers.
    pub times: i64,
}

/// The result of one firing step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Rows to record, in time order, tiling the grid from the old `next_fire_at`.
    pub records: Vec<Record>,
    /// The new `next_fire_at`; None when a cron expression has no fire time left (the schedule
    /// is then disabled).
    pub next_fire_at: Option<NaiveDateTime>,
}

/// The misfire policy of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Skip or fire once.
    pub misfire: Misfire,
    /// A fire time more than this before `now` is missed.
    pub grace_ms: i64,
}

/// Truncate to microseconds (the database's precision), so that a time read back compares equal.
pub fn micros(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// Decide one step for a schedule whose stored `next_fire_at` is `next`, at `now`.
///
/// Fire times from the first grid time at or after `next` up to `now` are due. Those earlier
/// than `now - grace` are missed: `skip` records them as one skipped span, `fire_once` records
/// all but the latest as a skipped span and fires the latest once (caught up). The rest fire,
/// one record each, at most [`MAX_FIRED_PER_STEP`]. Nothing due: no records, `next_fire_at` the
/// first grid time at or after `next`.
pub fn step(timing: &Timing, next: NaiveDateTime, now: NaiveDateTime, policy: Policy) -> Step {
    let now = micros(now);
    let Some(mut t) = timing.at_or_after(next) else {
        return Step { records: Vec::new(), next_fire_at: None };
    };
    let mut records = Vec::new();
    let cutoff = now - Duration::milliseconds(policy.grace_ms.max(0));
    if t < cutoff {
        let span = timing.span(t, cutoff, MAX_SCAN_PER_STEP);
        let complete = span.after.is_none_or(|a| a >= cutoff);
        match (policy.misfire, complete) {
            (Misfire::Skip, _) | (Misfire::FireOnce, false) => {
                records.push(Record { outcome: Outcome::Skipped, fire_at: t, last_at: span.last, times: span.count });
            }
            (Misfire::FireOnce, true) => {
                if let Some(before_last) = span.before_last {
                    records.push(Record {
                        outcome: Outcome::Skipped,
                        fire_at: t,
                        last_at: before_last,
                        times: span.count - 1,
                    });
                }
                records.push(Record { outcome: Outcome::CaughtUp, fire_at: span.last, last_at: span.last, times: 1 });
            }
        }
        match span.after {
            Some(a) if complete => t = a,
            other => return Step { records, next_fire_at: other },
        }
    }
    let mut fired = 0;
    while t <= now && fired < MAX_FIRED_PER_STEP {
        records.push(Record { outcome: Outcome::Fired, fire_at: t, last_at: t, times: 1 });
        fired += 1;
        match timing.next_after(t) {
            Some(n) => t = n,
            None => return Step { records, next_fire_at: None },
        }
    }
    Step { records, next_fire_at: Some(t) }
}

/// The first fire time after `now` for a new or changed schedule; None when a cron expression
/// never fires again.
pub fn first_fire_after(timing: &Timing, now: NaiveDateTime) -> Option<NaiveDateTime> {
    timing.next_after(micros(now))
}

/// The idempotency key of the task a firing writes: one task per schedule and fire time.
pub fn task_key(schedule_id: i64, fire_at: NaiveDateTime) -> String {
    format!("schedule:{schedule_id}:{}", fire_at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// The ring key whose owner fires a schedule.
pub fn ring_key(schedule_id: i64) -> String {
    format!("schedule:{schedule_id}")
}

#[cfg(test)]
mod tests;
