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
//! ring change still record each fire time once (docs/design.md, *Schedules*).
//!
//! The clock is the database's: the offset between it and this node's clock is measured at a
//! reload (every 30 s at most), so nodes with skewed clocks still fire at the same instants.
//! What the loop knows and decides between database calls (the list, that offset, when to
//! reload, fire, hold, sleep and prune) is in `timetable`, without I/O; it reads this node's
//! clock from the [`Clock`] argument, so those rules are unit-tested on a manual clock.
//!
//! Must never: fire while membership says this node may not act, or write a firing other than
//! through `fire` (the guard).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::timetable::Timetable;
use super::Outcome;
use crate::clock::Clock;
use crate::dispatch::wake::Config;
use crate::membership::MembershipState;
use crate::store::schedules;
use crate::store::Store;

/// How often the schedule list is reloaded by default. A new or resumed schedule first fires at
/// least this long after it was written, so that its owner has seen it by then.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reload the schedule list this often while no change is announced (new and changed
    /// schedules are seen within it); while changes are announced, every
    /// [`crate::dispatch::wake::CONFIG_BACKSTOP`]. Default 5 s.
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
    let mut r = Runner { store, wake, t: Timetable::new(node_id, opts, config, clock) };
    let mut membership = membership;
    let mut seen_epoch = 0;
    loop {
        if r.t.take_reload() {
            r.reload().await;
        }
        let ms = membership.borrow().clone();
        let acting = r.t.may_act(&ms);
        if acting {
            r.fire_due(&ms).await;
            r.prune().await;
        }
        let sleep = r.t.sleep_for(&ms, acting);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = membership.changed() => {
                if changed.is_err() {
                    break;
                }
                let epoch = membership.borrow_and_update().view.epoch;
                if epoch != seen_epoch {
                    seen_epoch = epoch;
                    r.t.reload_at_once();
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    tracing::debug!(node.id = %r.t.node_id(), "schedule runner stopped");
}

/// The loop's I/O; what it knows and decides is in `t`.
struct Runner {
    store: Store,
    wake: Arc<Notify>,
    t: Timetable,
}

impl Runner {
    async fn reload(&mut self) {
        let read_clock = self.t.reloading();
        let before = self.t.wall();
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
                self.t.reload_failed();
                return;
            }
        };
        let after = self.t.wall();
        self.t.loaded(rows, db_now.map(|db| (before, db, after)));
    }

    /// Fire every owned schedule that is due.
    async fn fire_due(&mut self, ms: &MembershipState) {
        for id in self.t.due(ms) {
            // A step stops at its caps; keep stepping while the schedule is still due.
            for _ in 0..1000 {
                if !self.t.may_act(ms) || !self.fire_one(id).await {
                    break;
                }
            }
        }
    }

    /// One step for schedule `id`; true when it is still due afterwards.
    async fn fire_one(&mut self, id: i64) -> bool {
        let Some((expected, decided)) = self.t.decide(id) else { return false };
        let node = self.t.node_id().to_owned();
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
                }
                self.t.advanced(id, fired.schedule, decided.next_fire_at)
            }
            Ok(None) => {
                tracing::debug!(schedule.id = id, "schedule was fired elsewhere or changed; reloading");
                self.t.refused(id);
                false
            }
            Err(e) => {
                tracing::warn!(schedule.id = id, error = %e, "could not fire a schedule; will retry");
                self.t.failed(id);
                false
            }
        }
    }

    async fn prune(&mut self) {
        let Some(cutoff) = self.t.prune_cutoff() else { return };
        match self.store.run(move |c| schedules::prune_firings(c, cutoff, 1000)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned schedule firings past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning schedule firings failed"),
        }
    }
}
