//! Maintenance of the task table, on the dispatcher's reconciliation ticks: recovery of the
//! running rows of departed nodes (and of this node's earlier lives, and its own stranded rows),
//! pruning of finished rows past retention, and vacuuming of the table's dead rows.
//!
//! Why its own service: these duties have their own clocks (every few reconciliations, after
//! enough finished tasks) and their own state, and none of them may hold up a round of claims —
//! a vacuum runs on a task of its own. The loop only tells it when a reconciliation happened and
//! whether the view moved ([`Maintenance::tick`]), and asks it to stop
//! ([`Maintenance::stop`]).
//!
//! Must never: recover a row that one of this node's executors holds ([`super::held`]), or a
//! row whose key the current ring places on another live node; write without this node's fence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::held::{self, Stranded, STRANDED_AFTER};
use super::place::{AppPlace, Placement};
use super::Shared;
use crate::jobs::traffic::Policy;
use crate::store::maintenance;
use crate::store::recover;

/// Finished rows past retention are pruned at every this many reconciliations (a minute at the
/// default interval; retention is counted in hours).
const PRUNE_EVERY: u32 = 12;
/// Finished tasks between two looks at the task table's dead rows ([`Maintenance::vacuum`]).
const VACUUM_LOOK_AFTER: u64 = 20_000;
/// The least and the most time between two looks of a node at the task table's dead rows (each
/// look may vacuum it): at most one vacuum per 10 s, fewer after vacuums that did not help.
const VACUUM_GAP_MIN: Duration = Duration::from_secs(10);
const VACUUM_GAP_MAX: Duration = Duration::from_secs(600);

/// Recovery, pruning and vacuuming, with the state that paces them.
pub(super) struct Maintenance {
    shared: Arc<Shared>,
    /// When old rows were last pruned: at most every [`PRUNE_EVERY`] reconciliations, because
    /// an idle node's queries per second are the sum of its periodic reads
    /// (docs/benchmarks.md#idle).
    /// This node's running rows that no executor held at the last look ([`held`]).
    stranded: Stranded,
    last_prune: Option<Instant>,
    /// The running vacuum of the task table, if any, and [`super::complete::Completer::finished`] when the table
    /// was last looked at, and when ([`Maintenance::vacuum`]).
    vacuuming: Option<JoinHandle<Option<bool>>>,
    vacuum_seen: (u64, Instant),
    /// When the last look (and vacuum, if one was needed) started, how long to wait after it,
    /// and the server process running a vacuum (0 when none), to cancel it on a graceful stop.
    vacuumed_at: Option<Instant>,
    vacuum_gap: Duration,
    vacuum_backend: Arc<AtomicI32>,
}

impl Maintenance {
    pub(super) fn new(shared: Arc<Shared>) -> Maintenance {
        Maintenance {
            shared,
            stranded: Stranded::default(),
            last_prune: None,
            vacuuming: None,
            vacuum_seen: (0, Instant::now()),
            vacuumed_at: None,
            vacuum_gap: VACUUM_GAP_MIN,
            vacuum_backend: Arc::new(AtomicI32::new(0)),
        }
    }

    /// A reconciliation happened: recover, and prune and vacuum when each is due. `apps` and
    /// `policies` place the orphans' keys.
    pub(super) async fn tick(&mut self, apps: Arc<HashMap<i64, AppPlace>>, policies: Arc<HashMap<String, Policy>>) {
        let every = Duration::from_millis(self.shared.cfg.reconcile_interval_ms);
        // Orphans are looked for at every reconciliation (and at once on a membership change):
        // every running row is recovered within the lease TTL plus the reconcile interval, rows
        // of owners that never were members included (docs/design.md#no-row-stalls). One read
        // per reconciliation; it was every sixth (30 s), past that bound.
        self.recover(apps, policies).await;
        if self.last_prune.is_none_or(|t| t.elapsed() >= every * PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            self.prune().await;
        }
        self.vacuum().await;
    }

    /// The node was fenced: its aborted executors' rows belong to this life still; were it to
    /// act again without joining anew, they are stranded from now on, not from an earlier look.
    pub(super) fn fenced(&mut self) {
        self.stranded.clear();
    }

    /// A graceful stop: cancel the vacuum in flight, if any (a stop does not wait for it).
    pub(super) async fn stop(&mut self) {
        self.cancel_vacuum().await;
    }

    /// Recover the running rows of departed nodes that this node's ring places here, the rows
    /// of this node's earlier lives, and the rows of its current life that none of its
    /// executors has held for a reconcile interval (a write about them failed, or their executor
    /// ended without one: [`held`]).
    async fn recover(&mut self, apps: Arc<HashMap<i64, AppPlace>>, policies: Arc<HashMap<String, Policy>>) {
        let ms = self.shared.snapshot();
        // Ownership decided on the same view as the live members.
        let place = Placement::new(&self.shared.node_id, &ms, apps, policies);
        let live: Vec<String> = ms.view.members.iter().map(|m| m.node_id.clone()).collect();
        let (me, joined) = (self.shared.node_id.clone(), ms.joined_epoch as i64);
        let m = me.clone();
        let found = match self.shared.store.run(move |c| recover::orphans(c, &live, &m)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for orphaned tasks");
                return;
            }
        };
        let this_life =
            |o: &recover::Orphan| o.owner_node.as_deref() == Some(me.as_str()) && o.owner_epoch >= Some(joined);
        let running: Vec<held::Seen> = found
            .iter()
            .filter(|o| this_life(o))
            .map(|o| held::Seen {
                id: o.id,
                epoch: o.owner_epoch.unwrap_or_default(),
                token: o.claim_token,
                attempts: o.attempts,
            })
            .collect();
        let held = self.shared.held.clone();
        let after = Duration::from_millis(self.shared.cfg.reconcile_interval_ms).max(STRANDED_AFTER);
        let stranded = self.stranded.sweep(&running, |id| held.holds(id), Instant::now(), after);
        for o in found {
            let reason = if this_life(&o) {
                if !stranded.contains(&o.id) {
                    continue;
                }
                format!(
                    "stranded on its owner {me}: claimed at epoch {} and held by none of its executors for {:.1} s \
                     (a write about it failed, or its executor ended without one)",
                    o.owner_epoch.unwrap_or_default(),
                    after.as_secs_f64()
                )
            } else {
                // An earlier life's rows are ours to recover; others' go to their key's owner.
                let earlier_life = o.owner_node.as_deref() == Some(me.as_str());
                if !earlier_life
                    && !place.owns(o.id, o.app_id, &o.action, o.routing.as_deref(), o.selector.as_deref(), None)
                {
                    continue;
                }
                match (&o.owner_node, o.owner_epoch) {
                    (None, _) => "running without an owner (owner_node is NULL); nothing runs it".to_string(),
                    (Some(owner), None) if earlier_life => {
                        format!("running under {owner} without a claim epoch (owner_epoch is NULL); nothing runs it")
                    }
                    (Some(owner), epoch) => format!(
                        "owner {owner} is not a live member (it left while the task was running, or never was one; \
                         claimed at epoch {})",
                        epoch.map_or_else(|| "NULL".to_string(), |e| e.to_string())
                    ),
                }
            };
            let grace = chrono::TimeDelta::from_std(self.shared.newer_claim_grace).unwrap_or_default();
            let (orphan, why, fence) = (o.clone(), reason.clone(), (self.shared.fence(), ms.view.epoch as i64, grace));
            match self.shared.store.run(move |c| recover::recover(c, &orphan, &why, fence)).await {
                Ok(Some(status)) => {
                    tracing::info!(task.id = o.id, app.id = ?o.app_id, from.node = ?o.owner_node, to.status = status, reason = %reason, "recovered a task");
                    self.shared
                        .event(
                            "task.recovered",
                            o.app_id,
                            Some(o.id),
                            reason,
                            serde_json::json!({ "status": status, "from": o.owner_node }),
                        )
                        .await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(task.id = o.id, error = %e, "could not recover a task"),
            }
        }
    }

    async fn prune(&self) {
        let hours = self.shared.cfg.retention_hours;
        if hours == 0 {
            return;
        }
        let cutoff = (chrono::Utc::now() - chrono::Duration::hours(hours as i64)).naive_utc();
        match self.shared.store.run(move |c| maintenance::prune_finished(c, cutoff, 1000)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned finished tasks past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
    }

    /// After [`VACUUM_LOOK_AFTER`] more finished tasks (or after any, once a pruning interval
    /// has passed since the last look), look at the task table's dead rows and `VACUUM` it if
    /// no one else will ([`maintenance::TaskVacuum::needed`]), on a task of its own: a vacuum of
    /// millions of dead rows takes seconds, which the dispatcher does not wait for. A vacuum that
    /// did not halve the dead rows (another session's old snapshot holds them, or it was skipped)
    /// doubles the wait before the next one, up to [`VACUUM_GAP_MAX`].
    /// Why: every claim and completion leaves a dead row version, and with autovacuum off they
    /// pile up until each claim wades through them — a 3-minute load at 38 k/s fell to 0.78 of
    /// its first minute with 10 M dead rows, and held 0.93 with this
    /// (docs/benchmarks.md#dead-rows). An idle node finishes nothing and sends nothing for this.
    async fn vacuum(&mut self) {
        if let Some(done) = self.vacuuming.take_if(|v| v.is_finished()) {
            match done.await {
                Ok(Some(true)) => self.vacuum_gap = VACUUM_GAP_MIN,
                Ok(Some(false)) => self.vacuum_gap = (self.vacuum_gap * 2).min(VACUUM_GAP_MAX),
                _ => {}
            }
        }
        let finished = self.shared.completer.finished();
        let every = Duration::from_millis(self.shared.cfg.reconcile_interval_ms) * PRUNE_EVERY;
        let (seen, at) = self.vacuum_seen;
        let due = finished >= seen + VACUUM_LOOK_AFTER || (finished > seen && at.elapsed() >= every);
        let rested = self.vacuumed_at.is_none_or(|t| t.elapsed() >= self.vacuum_gap);
        if !self.shared.cfg.vacuum || !due || !rested || self.vacuuming.is_some() {
            return;
        }
        self.vacuum_seen = (finished, Instant::now());
        let (store, backend) = (self.shared.store.clone(), self.vacuum_backend.clone());
        self.vacuuming = Some(tokio::spawn(async move {
            let before = match store.run(maintenance::task_vacuum).await {
                Ok(Some(state)) if state.needed() => state,
                Ok(_) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the task table's dead rows");
                    return None;
                }
            };
            let started = Instant::now();
            if let Err(e) = store.run(move |c| maintenance::vacuum_task(c, &backend)).await {
                tracing::warn!(error = %e, "could not vacuum the task table");
                return Some(false);
            }
            let after = store.run(maintenance::task_vacuum).await.ok().flatten().map_or(before.dead, |s| s.dead);
            tracing::info!(
                table.dead_rows = before.dead, table.dead_rows_after = after, table.live_rows = before.live,
                took = ?started.elapsed(),
                "vacuumed the task table (autovacuum is off for it; dispatch.vacuum = false leaves it alone)"
            );
            Some(after < before.dead / 2)
        }));
        self.vacuumed_at = Some(Instant::now());
    }

    /// Cancel the vacuum in flight, if any: a graceful stop does not wait for it.
    async fn cancel_vacuum(&mut self) {
        let pid = self.vacuum_backend.load(Ordering::Acquire);
        if self.vacuuming.take().is_none_or(|v| v.is_finished()) || pid == 0 {
            return;
        }
        let cancel = self.shared.store.run(move |c| maintenance::cancel_backend(c, pid));
        match tokio::time::timeout(Duration::from_secs(2), cancel).await {
            Ok(Ok(())) => tracing::info!(db.backend = pid, "cancelled the vacuum of the task table (stopping)"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not cancel the vacuum of the task table"),
            Err(_) => tracing::warn!("cancelling the vacuum of the task table took too long"),
        }
    }
}
