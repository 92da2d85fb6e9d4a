//! The firing loop: on every node, fire the enabled schedules whose ring owner (key
//! `schedule:{id}`) is this node, when they are due.
//!
//! Why it is shaped so: the schedule list is small and changes rarely, so it is kept in memory
//! and reloaded every [`Options::reload_every`] and at once when membership changes, a firing
//! finds the row changed, or PostgreSQL announces a change of the schedules (`rota_config`,
//! [`crate::dispatch::wake`]; while it does, the periodic reload is only a 30 s backstop);
//! between reloads the loop sleeps until the earliest owned fire time (capped), and touches the
//! database only to fire. Ownership is only a hint that spreads the work: the guard that makes a
//! firing happen once is the conditional advance in
//! [`crate::store::schedules::fire`], so two nodes that both think they own a schedule during a
//! ring change still record each fire time once.
//!
//! The clock is the database's: the offset between it and this node's clock is measured at a
//! reload (every 30 s at most), so nodes with skewed clocks still fire at the same instants.
//! This node's clock is an argument ([`crate::clock`]), so the timing rules are tested on a
//! manual clock.
//!
//! Must never: fire while membership says this node may not act, or write a firing other than
//! through `fire` (the guard).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{ring_key, step, Misfire, Outcome, Policy, Timing};
use crate::clock::Clock;
use crate::dispatch::wake::{self, Config};
use crate::membership::MembershipState;
use crate::store::schedules::{self, Schedule};
use crate::store::Store;

/// How often the schedule list is reloaded by default. A new or resumed schedule first fires at
/// least this long after it was written, so that its owner has seen it by then.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// How often the database's clock is read again (see `reload`).
const CLOCK_EVERY: Duration = Duration::from_secs(30);

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reload the schedule list this often while no change is announced (new and changed
    /// schedules are seen within it); while changes are announced, every
    /// [`wake::CONFIG_BACKSTOP`]. Default 5 s.
    pub reload_every: Duration,
    /// Never sleep longer than this between checks. Default 1 s.
    pub max_sleep: Duration,
    /// Wait this long before retrying a schedule whose firing failed. Default 1 s.
    pub retry_after: Duration,
    /// Delete firing rows older than this many hours (0 keeps them). Default 168 (a week).
    pub retention_hours: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reload_every: RELOAD_EVERY,
            max_sleep: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
            retention_hours: 168,
        }
    }
}

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

/// Run the loop until `shutdown`, reading the time from `clock`. `wake` is this node's dispatcher
/// (the only wake-up on SQLite); `config` announces changes of the schedules.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    store: Store,
    node_id: String,
    membership: watch::Receiver<MembershipState>,
    wake: Arc<Notify>,
    config: watch::Receiver<Config>,
    opts: Options,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let last_prune = clock.instant();
    let mut r = Runner {
        store,
        node_id,
        wake,
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
        last_prune,
        clock,
    };
    let mut membership = membership;
    let mut seen_epoch = 0;
    loop {
        // The generation is taken before the reload, so a change announced during it reloads again.
        let config = *r.config.borrow();
        if r.reload_now
            || r.config_seen != Some(config.generation)
            || r.last_reload.is_none_or(|t| r.elapsed(t) >= r.reload_every())
        {
            r.config_seen = Some(config.generation);
            r.reload().await;
        }
        let ms = membership.borrow().clone();
        let acting = ms.may_act(r.clock.instant());
        if acting {
            r.fire_due(&ms).await;
            r.prune().await;
        }
        let sleep = r.sleep_for(&ms, acting);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = membership.changed() => {
                if changed.is_err() {
                    break;
                }
                let epoch = membership.borrow_and_update().view.epoch;
                if epoch != seen_epoch {
                    seen_epoch = epoch;
                    r.reload_now = true;
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    tracing::debug!(node.id = %r.node_id, "schedule runner stopped");
}

struct Runner {
    store: Store,
    node_id: String,
    wake: Arc<Notify>,
    opts: Options,
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
    clock: Arc<dyn Clock>,
}

impl Runner {
    /// The database's clock, as this node estimates it.
    fn now(&self) -> NaiveDateTime {
        self.clock.now() + self.offset
    }

    /// Monotonic time since `t`.
    fn elapsed(&self, t: Instant) -> Duration {
        self.clock.instant().saturating_duration_since(t)
    }

    fn owns(&self, ms: &MembershipState, id: i64) -> bool {
        ms.ring.owner(ring_key(id).as_bytes()).is_some_and(|m| m.node_id == self.node_id)
    }

    async fn reload(&mut self) {
        self.reload_now = false;
        self.last_reload = Some(self.clock.instant());
        // The database's clock moves slowly against ours: read it with the list only every
        // CLOCK_EVERY (one statement less per reload on an idle node).
        let read_clock = self.last_clock.is_none_or(|t| self.elapsed(t) >= CLOCK_EVERY);
        let before = self.clock.now();
        let loaded = self
            .store
            .run(move |c| {
                let now = if read_clock { Some(schedules::db_now(c)?) } else { None };
                Ok((now, schedules::enabled_schedules(c)?))
            })
            .await;
        let (db_now, rows) = match loaded {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "could not load schedules; keeping the last list");
                self.reload_failed = true;
                return;
            }
        };
        self.reload_failed = false;
        let after = self.clock.now();
        if let Some(db_now) = db_now {
            self.offset = db_now - (before + (after - before) / 2);
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

    /// Fire every owned schedule that is due.
    async fn fire_due(&mut self, ms: &MembershipState) {
        let now = self.now();
        let due: Vec<i64> = self
            .entries
            .values()
            .filter(|e| self.owns(ms, e.row.id))
            .filter(|e| e.hold_until.is_none_or(|h| self.clock.instant() >= h))
            .filter(|e| e.due_at().is_some_and(|d| d <= now))
            .map(|e| e.row.id)
            .collect();
        for id in due {
            // A step stops at its caps; keep stepping while the schedule is still due.
            for _ in 0..1000 {
                if !ms.may_act(self.clock.instant()) || !self.fire_one(id).await {
                    break;
                }
            }
        }
    }

    /// One step for schedule `id`; true when it is still due afterwards.
    async fn fire_one(&mut self, id: i64) -> bool {
        let now = self.now();
        let Some(entry) = self.entries.get(&id) else { return false };
        let expected = entry.row.next_fire_at;
        let decided = step(&entry.timing, expected, now, entry.policy);
        if decided.records.is_empty() && decided.next_fire_at.is_some() {
            return false;
        }
        let node = self.node_id.clone();
        let applied = decided.clone();
        match self.store.run(move |c| schedules::fire(c, id, expected, &applied, &node)).await {
            Ok(Some(fired)) => {
                for (r, task) in &fired.records {
                    let at = r.fire_at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    match r.outcome {
                        Outcome::Fired => {
                            tracing::debug!(schedule.id = id, fire.at = %at, task.id = ?task, "schedule fired")
                        }
                        Outcome::CaughtUp => tracing::info!(schedule.id = id, fire.at = %at, task.id = ?task,
                            "schedule fired once for missed fire times (misfire = fire_once)"),
                        Outcome::Skipped => tracing::info!(schedule.id = id, fire.at = %at, fire.times = r.times,
                            fire.last = %r.last_at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            "schedule skipped missed fire times"),
                    }
                }
                if fired.records.iter().any(|(r, _)| r.outcome.fires()) {
                    self.wake.notify_one();
                }
                if !fired.schedule.enabled {
                    tracing::info!(schedule.id = id, "schedule has no fire time left; disabled");
                    self.entries.remove(&id);
                    return false;
                }
                let still_due = decided.next_fire_at.is_some_and(|n| n <= self.now());
                if let Some(e) = self.entries.get_mut(&id) {
                    e.row = fired.schedule;
                }
                still_due
            }
            Ok(None) => {
                tracing::debug!(schedule.id = id, "schedule was fired elsewhere or changed; reloading");
                // Reload at once, but give this schedule a moment, so that a row that keeps
                // refusing the guard cannot spin the loop.
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.hold_until = Some(self.clock.instant() + Duration::from_millis(100));
                }
                self.reload_now = true;
                false
            }
            Err(e) => {
                tracing::warn!(schedule.id = id, error = %e, "could not fire a schedule; will retry");
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.hold_until = Some(self.clock.instant() + self.opts.retry_after);
                }
                false
            }
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
    fn sleep_for(&self, ms: &MembershipState, acting: bool) -> Duration {
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

    async fn prune(&mut self) {
        if self.opts.retention_hours == 0 || self.elapsed(self.last_prune) < Duration::from_secs(60) {
            return;
        }
        self.last_prune = self.clock.instant();
        let cutoff = self.now() - chrono::Duration::hours(self.opts.retention_hours as i64);
        match self.store.run(move |c| schedules::prune_firings(c, cutoff, 1000)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned schedule firings past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning schedule firings failed"),
        }
    }
}
