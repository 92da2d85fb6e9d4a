//! What the schedule runner knows and decides between two database calls: the schedule list it
//! holds, the database's clock as it estimates it, and its timing rules — when to reload, which
//! owned schedules are due, how long to hold one after a failed firing, how long to sleep, when
//! to prune.
//!
//! Why it is apart from [`super::runner`]: those rules are about time, and are unit-tested here
//! on a [`crate::clock::ManualClock`] without a database or any waiting; the runner is the loop
//! that does the I/O and reports back (`loaded`, `advanced`, `refused`, `failed`).
//!
//! Must never: touch the database, wait, or read the machine's clock (only the [`Clock`] it was
//! given).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio::sync::watch;

use super::runner::Options;
use super::{ring_key, step, Misfire, Policy, Step, Timing};
use crate::clock::Clock;
use crate::dispatch::wake::{self, Config};
use crate::membership::MembershipState;
use crate::store::schedules::Schedule;

/// How often the database's clock is read again (see [`Timetable::reloading`]).
pub const CLOCK_EVERY: Duration = Duration::from_secs(30);

/// How long a schedule whose firing the guard refused waits, while the list is reloaded.
pub const REFUSED_HOLD: Duration = Duration::from_millis(100);

/// How often firing rows past retention are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A schedule as the loop holds it.
struct Entry {
    row: Schedule,
    timing: Timing,
    policy: Policy,
    /// Not before this instant (after a failed firing).
    hold_until: Option<Instant>,
}

impl Entry {
    fn due_at(&self) -> Option<NaiveDateTime> {
        self.timing.at_or_after(self.row.next_fire_at)
    }
}

/// The runner's state and timing rules.
pub struct Timetable {
    node_id: String,
    opts: Options,
    clock: Arc<dyn Clock>,
    entries: HashMap<i64, Entry>,
    /// Database clock minus this node's clock.
    offset: chrono::Duration,
    last_reload: Option<Instant>,
    /// When the database's clock was last read.
    last_clock: Option<Instant>,
    reload_now: bool,
    /// Announced changes of the schedules, and the generation of the last reload.
    config: watch::Receiver<Config>,
    config_seen: Option<u64>,
    /// The last reload failed: the next one comes after [`Options::reload_every`], announced
    /// changes or not (a change announced meanwhile must not wait for the backstop).
    reload_failed: bool,
    /// (id, cron, every_ms) of rows whose timing does not parse, logged once.
    bad: HashSet<(i64, Option<String>, Option<i64>)>,
    last_prune: Instant,
}

impl Timetable {
    /// An empty timetable for `node_id` that reloads at once; the first prune comes
    /// [`PRUNE_EVERY`] after it is made.
    pub fn new(node_id: String, opts: Options, config: watch::Receiver<Config>, clock: Arc<dyn Clock>) -> Self {
        Timetable {
            node_id,
            opts,
            entries: HashMap::new(),
            offset: chrono::Duration::zero(),
            last_reload: None,
            last_clock: None,
            reload_now: true,
            config,
            config_seen: None,
            reload_failed: false,
            bad: HashSet::new(),
            last_prune: clock.instant(),
            clock,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's wall clock (UTC).
    pub fn wall(&self) -> NaiveDateTime {
        self.clock.now()
    }

    /// The database's clock, as this node estimates it.
    pub fn now(&self) -> NaiveDateTime {
        self.clock.now() + self.offset
    }

    /// Monotonic time since `t`.
    fn elapsed(&self, t: Instant) -> Duration {
        self.clock.instant().saturating_duration_since(t)
    }

    /// Whether this node may act now, by its membership.
    pub fn may_act(&self, ms: &MembershipState) -> bool {
        ms.may_act(self.clock.instant())
    }

    fn owns(&self, ms: &MembershipState, id: i64) -> bool {
        ms.ring.owner(ring_key(id).as_bytes()).is_some_and(|m| m.node_id == self.node_id)
    }

    /// Reload before the next round (membership changed, or a firing found the row changed).
    pub fn reload_at_once(&mut self) {
        self.reload_now = true;
    }

    /// Whether the list is to be reloaded now: asked for, a change announced since the last
    /// reload, or the periodic reload is due. When it is, the announced generation is taken
    /// as seen now, before the reload, so a change announced during it reloads again.
    pub fn take_reload(&mut self) -> bool {
        let config = *self.config.borrow();
        if self.reload_now
            || self.config_seen != Some(config.generation)
            || self.last_reload.is_none_or(|t| self.elapsed(t) >= self.reload_every())
        {
            self.config_seen = Some(config.generation);
            return true;
        }
        false
    }

    /// A reload begins: true when the database's clock is to be read with the list.
    pub fn reloading(&mut self) -> bool {
        self.reload_now = false;
        self.last_reload = Some(self.clock.instant());
        // The database's clock moves slowly against ours: read it with the list only every
        // CLOCK_EVERY (one statement less per reload on an idle node).
        self.last_clock.is_none_or(|t| self.elapsed(t) >= CLOCK_EVERY)
    }

    /// The reload failed: keep the last list.
    pub fn reload_failed(&mut self) {
        self.reload_failed = true;
    }

    /// The reload read `rows` and, when asked to, the database's clock `db_now` between this
    /// node's wall clock `before` and `after` (the database's reading taken as made at `after`,
    /// the latest it can have been made). A schedule held after a failed firing stays held.
    /// Why `after` and not the middle: the database read its clock somewhere in the round trip,
    /// and taking the middle put this node's idea of the database's time up to half a round trip
    /// ahead of it — schedules fired up to 5 ms early (docs/schedules.md). Taken at `after`, the
    /// idea is never ahead: a firing is late by at most the round trip, never early.
    pub fn loaded(&mut self, rows: Vec<Schedule>, clock: Option<(NaiveDateTime, NaiveDateTime, NaiveDateTime)>) {
        self.reload_failed = false;
        if let Some((_before, db_now, after)) = clock {
            self.offset = db_now - after;
            self.last_clock = Some(self.clock.instant());
        }
        let mut entries = HashMap::with_capacity(rows.len());
        for row in rows {
            let timing = match Timing::from_parts(row.cron.as_deref(), row.every_ms) {
                Ok(t) => t,
                Err(e) => {
                    if self.bad.insert((row.id, row.cron.clone(), row.every_ms)) {
                        tracing::warn!(schedule.id = row.id, schedule.name = %row.name, error = %e,
                            "schedule has an invalid timing (written by hand?); it does not fire until fixed");
                    }
                    continue;
                }
            };
            let misfire = Misfire::parse(&row.misfire).unwrap_or(Misfire::FireOnce);
            let policy = Policy { misfire, grace_ms: row.misfire_grace_ms };
            let hold_until = self.entries.get(&row.id).and_then(|e| e.hold_until);
            entries.insert(row.id, Entry { row, timing, policy, hold_until });
        }
        self.entries = entries;
    }

    /// The owned schedules that are due now and not held.
    pub fn due(&self, ms: &MembershipState) -> Vec<i64> {
        let now = self.now();
        self.entries
            .values()
            .filter(|e| self.owns(ms, e.row.id))
            .filter(|e| e.hold_until.is_none_or(|h| self.clock.instant() >= h))
            .filter(|e| e.due_at().is_some_and(|d| d <= now))
            .map(|e| e.row.id)
            .collect()
    }

    /// The next step for schedule `id` now, with the `next_fire_at` it starts from; None when
    /// there is nothing to write (not held in the list, or nothing due yet).
    pub fn decide(&self, id: i64) -> Option<(NaiveDateTime, Step)> {
        let entry = self.entries.get(&id)?;
        let expected = entry.row.next_fire_at;
        let decided = step(&entry.timing, expected, self.now(), entry.policy);
        if decided.records.is_empty() && decided.next_fire_at.is_some() {
            return None;
        }
        Some((expected, decided))
    }

    /// Schedule `id` was advanced by a step to `next_fire_at` and now reads `row`; true when it
    /// is still due. A schedule disabled by the step (no fire time left) leaves the list.
    pub fn advanced(&mut self, id: i64, row: Schedule, next_fire_at: Option<NaiveDateTime>) -> bool {
        if !row.enabled {
            self.entries.remove(&id);
            return false;
        }
        let still_due = next_fire_at.is_some_and(|n| n <= self.now());
        if let Some(e) = self.entries.get_mut(&id) {
            e.row = row;
        }
        still_due
    }

    /// The guard refused a firing of `id` (fired elsewhere, or changed): reload at once, but
    /// give this schedule a moment, so that a row that keeps refusing the guard cannot spin
    /// the loop.
    pub fn refused(&mut self, id: i64) {
        self.hold(id, REFUSED_HOLD);
        self.reload_now = true;
    }

    /// A firing of `id` failed: retry after [`Options::retry_after`].
    pub fn failed(&mut self, id: i64) {
        self.hold(id, self.opts.retry_after);
    }

    fn hold(&mut self, id: i64, wait: Duration) {
        let until = self.clock.instant() + wait;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.hold_until = Some(until);
        }
    }

    /// The periodic reload's period: [`Options::reload_every`] while no change is announced or
    /// after a failed reload, else the backstop.
    fn reload_every(&self) -> Duration {
        if self.reload_failed {
            return self.opts.reload_every;
        }
        self.config.borrow().period(self.opts.reload_every, wake::CONFIG_BACKSTOP.max(self.opts.reload_every))
    }

    /// Until the earliest owned fire time, the next reload, or `max_sleep`.
    pub fn sleep_for(&self, ms: &MembershipState, acting: bool) -> Duration {
        let mut sleep = self.opts.max_sleep;
        if let Some(t) = self.last_reload {
            sleep = sleep.min(self.reload_every().saturating_sub(self.elapsed(t)));
        }
        if self.reload_now {
            return Duration::ZERO;
        }
        if acting {
            let now = self.now();
            for e in self.entries.values().filter(|e| self.owns(ms, e.row.id)) {
                if let Some(due) = e.due_at() {
                    let wait = (due - now).to_std().unwrap_or(Duration::ZERO);
                    let wait = match e.hold_until {
                        Some(h) => wait.max(h.saturating_duration_since(self.clock.instant())),
                        None => wait,
                    };
                    sleep = sleep.min(wait);
                }
            }
        }
        sleep
    }

    /// When a prune is due (retention on, [`PRUNE_EVERY`] since the last): the cutoff, firing
    /// rows older than it go. The next prune is counted from now.
    pub fn prune_cutoff(&mut self) -> Option<NaiveDateTime> {
        if self.opts.retention_hours == 0 || self.elapsed(self.last_prune) < PRUNE_EVERY {
            return None;
        }
        self.last_prune = self.clock.instant();
        Some(self.now() - chrono::Duration::hours(self.opts.retention_hours as i64))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;

    use super::*;
    use crate::clock::ManualClock;
    use crate::membership::Status;
    use crate::ring::{self, Ring};

    const ME: &str = "me";
    const MS: Duration = Duration::from_millis(1);

    fn at(s: &str) -> NaiveDateTime {
        DateTime::parse_from_rfc3339(s).unwrap().naive_utc()
    }

    fn t0() -> NaiveDateTime {
        at("2030-01-01T00:00:00Z")
    }

    fn ms(n: i64) -> chrono::Duration {
        chrono::Duration::milliseconds(n)
    }

    /// An enabled schedule firing every 100 ms (so any whole 100 ms is a fire time) whose next
    /// fire time is `next`.
    fn row(id: i64, next: NaiveDateTime) -> Schedule {
        Schedule {
            id,
            name: format!("s{id}"),
            app_id: None,
            cron: None,
            every_ms: Some(100),
            payload: "{}".into(),
            routing: None,
            shard_total: None,
            timeout_ms: None,
            max_attempts: 1,
            misfire: "fire_once".into(),
            misfire_grace_ms: 60_000,
            enabled: true,
            next_fire_at: next,
            created_at: t0(),
            updated_at: t0(),
            workflow_id: None,
        }
    }

    /// Joined, acting for an hour, on a ring of `me` and `other`.
    fn joined(clock: &ManualClock) -> MembershipState {
        let member = |id: &str| ring::Member { node_id: id.into(), weight: 1, labels: BTreeMap::new() };
        let ring = Ring::build(1, vec![member(ME), member("other")], 64).unwrap();
        MembershipState {
            status: Status::Joined,
            ring: Arc::new(ring),
            valid_until: Some(clock.instant() + Duration::from_secs(3600)),
            ..MembershipState::joining()
        }
    }

    /// The first schedule id from `from` that `owner` owns.
    fn owned_by(ms: &MembershipState, owner: &str, from: i64) -> i64 {
        (from..).find(|id| ms.ring.owner(ring_key(*id).as_bytes()).unwrap().node_id == owner).unwrap()
    }

    fn opts() -> Options {
        Options {
            reload_every: Duration::from_secs(5),
            max_sleep: Duration::from_secs(1),
            retry_after: Duration::from_secs(2),
            retention_hours: 168,
        }
    }

    struct Fixture {
        clock: Arc<ManualClock>,
        config: watch::Sender<Config>,
        t: Timetable,
        ms: MembershipState,
    }

    /// A timetable at `t0()` that has just reloaded an empty list (the database's clock equal
    /// to ours).
    fn fixture(opts: Options) -> Fixture {
        let clock = ManualClock::new(t0());
        let (config, rx) = watch::channel(Config::default());
        let mut t = Timetable::new(ME.into(), opts, rx, clock.clone());
        let ms = joined(&clock);
        assert!(t.take_reload(), "a new timetable reloads at once");
        assert!(t.reloading(), "the first reload reads the database's clock");
        t.loaded(vec![], Some((t0(), t0(), t0())));
        Fixture { clock, config, t, ms }
    }

    #[test]
    fn reloads_every_reload_every_at_a_change_and_when_asked() {
        let mut f = fixture(opts());
        assert!(!f.t.take_reload());
        f.clock.advance(Duration::from_secs(5) - MS);
        assert!(!f.t.take_reload(), "not before reload_every");
        f.clock.advance(MS);
        assert!(f.t.take_reload(), "at reload_every");
        f.t.reloading();
        f.t.loaded(vec![], None);
        assert!(!f.t.take_reload());

        f.config.send_modify(|c| c.generation += 1);
        assert!(f.t.take_reload(), "a change announced");
        assert!(!f.t.take_reload(), "the announced generation is taken as seen");
        f.t.reload_at_once();
        assert!(f.t.take_reload(), "asked for");
    }

    #[test]
    fn while_changes_are_announced_the_reload_is_a_backstop_unless_the_last_failed() {
        let mut f = fixture(opts());
        f.config.send_modify(|c| {
            c.listening = true;
            c.generation += 1;
        });
        assert!(f.t.take_reload(), "the listener's connection is announced");
        f.t.reloading();
        f.t.loaded(vec![], None);
        f.clock.advance(wake::CONFIG_BACKSTOP - MS);
        assert!(!f.t.take_reload(), "announced changes: no periodic reload before the backstop");
        f.clock.advance(MS);
        assert!(f.t.take_reload(), "at the backstop");
        f.t.reloading();
        f.t.reload_failed();
        f.clock.advance(Duration::from_secs(5));
        assert!(f.t.take_reload(), "after a failed reload, again after reload_every");
    }

    #[test]
    fn the_database_clock_is_read_every_clock_every_and_taken_at_the_round_trips_end() {
        let mut f = fixture(opts());
        // Our clock read 0 s and 2 s around a database reading 11 s: the database is at least
        // 9 s ahead (it read its clock at our 2 s at the latest); never taken as further ahead.
        f.t.loaded(vec![], Some((t0(), t0() + ms(11_000), t0() + ms(2_000))));
        assert_eq!(f.t.now(), t0() + ms(9_000));
        f.clock.advance(CLOCK_EVERY - MS);
        assert!(!f.t.reloading(), "not read again before CLOCK_EVERY");
        f.t.loaded(vec![], None);
        assert_eq!(f.t.now() - f.t.wall(), ms(9_000), "the offset stays without a reading");
        f.clock.advance(MS);
        assert!(f.t.reloading(), "read again at CLOCK_EVERY");
    }

    #[test]
    fn due_are_the_owned_unheld_schedules_at_or_past_their_time_by_the_database_clock() {
        let mut f = fixture(opts());
        let mine = owned_by(&f.ms, ME, 1);
        let later = owned_by(&f.ms, ME, mine + 1);
        let theirs = owned_by(&f.ms, "other", 1);
        let rows = vec![row(mine, t0()), row(later, t0() + ms(500)), row(theirs, t0())];
        f.t.loaded(rows.clone(), None);
        assert_eq!(f.t.due(&f.ms), vec![mine], "another node's schedule and a later one are not due");
        assert!(f.t.decide(later).is_none(), "nothing to write before its time");
        let (expected, step) = f.t.decide(mine).unwrap();
        assert_eq!((expected, step.records.len(), step.next_fire_at), (t0(), 1, Some(t0() + ms(100))));

        // The database's clock 500 ms ahead of ours makes `later` due now.
        f.t.loaded(rows, Some((t0(), t0() + ms(500), t0())));
        let mut due = f.t.due(&f.ms);
        due.sort();
        assert_eq!(due, vec![mine, later]);
    }

    #[test]
    fn a_failed_firing_holds_the_schedule_for_retry_after_across_reloads() {
        let mut f = fixture(opts());
        let id = owned_by(&f.ms, ME, 1);
        f.t.loaded(vec![row(id, t0())], None);
        f.t.failed(id);
        assert!(f.t.due(&f.ms).is_empty(), "held");
        assert_eq!(f.t.sleep_for(&f.ms, true), Duration::from_secs(1), "max_sleep caps the hold");
        f.clock.advance(Duration::from_millis(1500));
        assert_eq!(f.t.sleep_for(&f.ms, true), Duration::from_millis(500), "sleeps until the hold ends");
        f.t.loaded(vec![row(id, t0())], None);
        f.clock.advance(Duration::from_millis(500) - MS);
        assert!(f.t.due(&f.ms).is_empty(), "still held after a reload, until retry_after");
        f.clock.advance(MS);
        assert_eq!(f.t.due(&f.ms), vec![id]);
    }

    #[test]
    fn a_refused_firing_reloads_at_once_and_holds_the_schedule_briefly() {
        let mut f = fixture(opts());
        let id = owned_by(&f.ms, ME, 1);
        f.t.loaded(vec![row(id, t0())], None);
        f.t.refused(id);
        assert_eq!(f.t.sleep_for(&f.ms, true), Duration::ZERO, "no sleep before the reload");
        assert!(f.t.take_reload());
        f.t.reloading();
        f.t.loaded(vec![row(id, t0())], None);
        assert!(f.t.due(&f.ms).is_empty(), "held");
        assert_eq!(f.t.sleep_for(&f.ms, true), REFUSED_HOLD);
        f.clock.advance(REFUSED_HOLD);
        assert_eq!(f.t.due(&f.ms), vec![id]);
    }

    #[test]
    fn sleeps_until_the_earliest_owned_fire_time_the_next_reload_or_max_sleep() {
        let mut f = fixture(opts());
        assert_eq!(f.t.sleep_for(&f.ms, true), Duration::from_secs(1), "nothing held: max_sleep");
        let mine = owned_by(&f.ms, ME, 1);
        let theirs = owned_by(&f.ms, "other", 1);
        f.t.loaded(vec![row(mine, t0() + ms(300)), row(theirs, t0() + ms(100))], None);
        assert_eq!(f.t.sleep_for(&f.ms, true), Duration::from_millis(300), "until the earliest owned");
        assert_eq!(f.t.sleep_for(&f.ms, false), Duration::from_secs(1), "not acting: fire times do not count");

        f.t.loaded(vec![row(mine, t0() + ms(10_000))], None);
        f.clock.advance(Duration::from_millis(4_600));
        assert_eq!(f.t.sleep_for(&f.ms, true), Duration::from_millis(400), "until the next reload");
        f.clock.advance(Duration::from_secs(1));
        assert_eq!(f.t.sleep_for(&f.ms, true), Duration::ZERO, "the reload is overdue");
    }

    #[test]
    fn a_step_that_leaves_the_schedule_due_steps_again_and_a_disabled_one_leaves() {
        let mut f = fixture(opts());
        let id = owned_by(&f.ms, ME, 1);
        f.t.loaded(vec![row(id, t0())], None);
        f.clock.advance(Duration::from_millis(200));
        assert!(f.t.advanced(id, row(id, t0() + ms(200)), Some(t0() + ms(200))), "still due at its new time");
        assert!(!f.t.advanced(id, row(id, t0() + ms(300)), Some(t0() + ms(300))), "not due yet");
        assert!(f.t.due(&f.ms).is_empty(), "the advanced row is not due before its new time");
        let mut done = row(id, t0() + ms(300));
        done.enabled = false;
        assert!(!f.t.advanced(id, done, None));
        assert!(f.t.decide(id).is_none(), "a disabled schedule leaves the list");
        f.clock.advance(Duration::from_secs(1));
        assert!(f.t.due(&f.ms).is_empty());
    }

    #[test]
    fn firing_rows_are_pruned_every_minute_back_to_the_retention() {
        let mut f = fixture(opts());
        assert_eq!(f.t.prune_cutoff(), None, "not at start");
        f.clock.advance(PRUNE_EVERY - MS);
        assert_eq!(f.t.prune_cutoff(), None);
        f.clock.advance(MS);
        f.t.loaded(vec![], Some((f.t.wall(), f.t.wall() + ms(3_000), f.t.wall())));
        assert_eq!(
            f.t.prune_cutoff(),
            Some(f.t.wall() + ms(3_000) - chrono::Duration::hours(168)),
            "by the database's clock"
        );
        assert_eq!(f.t.prune_cutoff(), None, "the next a minute later");
        f.clock.advance(PRUNE_EVERY);
        assert!(f.t.prune_cutoff().is_some());

        let mut keep = fixture(Options { retention_hours: 0, ..opts() });
        keep.clock.advance(PRUNE_EVERY * 10);
        assert_eq!(keep.t.prune_cutoff(), None, "retention 0 keeps every row");
    }

    #[test]
    fn a_node_that_may_not_act_fires_nothing() {
        let f = fixture(opts());
        assert!(f.t.may_act(&f.ms));
        f.clock.advance(Duration::from_secs(3600));
        assert!(!f.t.may_act(&f.ms), "past its deadline by the given clock");
    }
}
