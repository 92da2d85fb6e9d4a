//! The clock a long-running service reads, passed in as an argument.
//!
//! Why it exists: schedules, retry holds and deadlines are rules about time. A service that calls
//! `chrono::Utc::now()` or `Instant::now()` itself can only have those rules tested by waiting
//! for real time to pass (slow and flaky) or by faking the process's clock. A service that reads
//! an [`Arc<dyn Clock>`](Clock) given by its caller runs on [`SystemClock`] in `rota serve` and on
//! a [`ManualClock`] in tests, which moves only when the test says so (as River's services take a
//! `TimeGenerator`).
//!
//! Two readings, because they answer different questions: [`Clock::now`] is the wall clock (UTC),
//! for times that are compared with the database's or stored; [`Clock::instant`] is monotonic,
//! for "how long since" and "not before" that must not jump when the wall clock is stepped.
//!
//! Must never: sleep or wait. Waiting stays with the service (`tokio::time`), which sleeps for
//! durations it computed from this clock; a [`ManualClock`] does not wake sleepers.
//! This is not the check of this node's clock against the database's
//! ([`crate::membership::clock`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;

/// Where a service reads the time.
pub trait Clock: fmt::Debug + Send + Sync {
    /// The wall clock, UTC.
    fn now(&self) -> NaiveDateTime;
    /// The monotonic clock.
    fn instant(&self) -> Instant;
}

/// The machine's clocks: what `rota serve` runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// A [`SystemClock`] as the shared handle services take.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> NaiveDateTime {
        chrono::Utc::now().naive_utc()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock for tests: it stands still until [`ManualClock::advance`] moves both readings, or
/// [`ManualClock::set`] steps the wall clock alone (as an operator or NTP may).
///
/// Its instants start at the real `Instant::now()` of its creation (an `Instant` cannot be made
/// from nothing) and move only by `advance`.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    state: Mutex<Manual>,
}

#[derive(Debug, Clone, Copy)]
struct Manual {
    wall: NaiveDateTime,
    elapsed: Duration,
}

impl ManualClock {
    /// A clock standing at the wall time `wall`.
    pub fn new(wall: NaiveDateTime) -> Arc<ManualClock> {
        Arc::new(ManualClock { start: Instant::now(), state: Mutex::new(Manual { wall, elapsed: Duration::ZERO }) })
    }

    /// Let `by` pass on both clocks.
    pub fn advance(&self, by: Duration) {
        let mut s = self.lock();
        s.elapsed += by;
        // A duration too long for chrono (hundreds of millions of years) leaves the wall clock.
        s.wall += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
    }

    /// Step the wall clock to `wall`; the monotonic clock does not move.
    pub fn set(&self, wall: NaiveDateTime) {
        self.lock().wall = wall;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manual> {
        // The state is two plain values, consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> NaiveDateTime {
        self.lock().wall
    }

    fn instant(&self) -> Instant {
        self.start + self.lock().elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().naive_utc()
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(at("2030-01-01T00:00:00Z"));
        let (wall, mono) = (clock.now(), clock.instant());
        assert_eq!((clock.now(), clock.instant()), (wall, mono), "stands still");
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), at("2030-01-01T00:00:01.5Z"));
        assert_eq!(clock.instant() - mono, Duration::from_millis(1500));
        clock.set(at("2029-12-31T00:00:00Z"));
        assert_eq!(clock.now(), at("2029-12-31T00:00:00Z"), "the wall clock steps back");
        assert_eq!(clock.instant() - mono, Duration::from_millis(1500), "the monotonic clock does not");
    }

    #[test]
    fn system_clock_reads_the_machine() {
        let clock = SystemClock::shared();
        let before = chrono::Utc::now().naive_utc();
        let (wall, mono) = (clock.now(), clock.instant());
        assert!(wall >= before && wall <= chrono::Utc::now().naive_utc());
        assert!(mono <= Instant::now());
    }
}
