//! The dispatcher: wake, read due rows, keep the ones this node owns, claim them in one
//! statement, and hand them to the executors — one actor per owned application, a bounded pool
//! for jobs. It also reconciles: adopts and releases applications as the ring moves, recovers the
//! running tasks of departed nodes, and prunes old rows.
//!
//! ```text
//!            NOTIFY / in-process wake / poll tick
//!                          │
//!   due_after(cursor) ─► owned by me (ring) ─► claim(ids, node, epoch) ─┬─► app actor (id order, 1 at a time)
//!                                                                       └─► job pool (max_concurrency)
//!   membership change / reconcile tick ─► adopt / release apps, recover orphans, prune
//!   fenced ─► abort every actor and job, stop every child: act no more
//! ```
//!
//! Must never: hold a transaction while a command runs (claims and completions are single
//! statements); claim or act while membership says this node may not; write about work it does
//! not own at the epoch it claimed it (every completion is conditional, invariant I3).

mod actor;
mod complete;
pub mod plan;
pub mod wake;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::DispatchConfig;
use crate::drivers::{Ctx, DriverError, Registry};
use crate::membership::MembershipState;
use crate::metrics::Metrics;
use crate::ring::Selector;
use crate::store::dispatch::{self as q, Outcome};
use crate::store::models::{NewEvent, Task};
use crate::store::{events, DbUrl, Store};
use plan::{AfterError, Plan};

/// What the dispatcher and its actors share.
pub struct Shared {
    /// The database.
    pub store: Store,
    /// Drivers by name.
    pub drivers: Registry,
    /// This node.
    pub node_id: String,
    /// Membership (view, ring, may-act deadline).
    pub membership: watch::Receiver<MembershipState>,
    /// Settings.
    pub cfg: DispatchConfig,
    /// Wakes the dispatcher (NOTIFY, an actor that finished a command, local inserts).
    pub wake: Arc<Notify>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    completer: complete::Completer,
}

impl Shared {
    /// Everything the dispatcher needs; starts the batched completer.
    pub fn new(
        store: Store,
        drivers: Registry,
        node_id: String,
        membership: watch::Receiver<MembershipState>,
        cfg: DispatchConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Shared> {
        let completer = complete::Completer::spawn(store.clone(), node_id.clone());
        Arc::new(Shared { store, drivers, node_id, membership, cfg, wake: Arc::new(Notify::new()), metrics, completer })
    }

    /// True when this node may claim and act right now.
    pub fn may_act(&self) -> bool {
        self.membership.borrow().may_act(Instant::now())
    }

    fn snapshot(&self) -> MembershipState {
        self.membership.borrow().clone()
    }

    /// An event written by this node's dispatcher.
    fn new_event(
        &self,
        kind: &str,
        app_id: Option<i64>,
        task_id: Option<i64>,
        message: String,
        data: Value,
    ) -> NewEvent {
        NewEvent {
            kind: kind.to_string(),
            app_id,
            task_id,
            node_id: Some(self.node_id.clone()),
            actor: Some("dispatcher".into()),
            message,
            data: Some(data.to_string()),
        }
    }

    /// Record an event; failures are logged, never fatal.
    async fn event(&self, kind: &str, app_id: Option<i64>, task_id: Option<i64>, message: String, data: Value) {
        let ev = self.new_event(kind, app_id, task_id, message, data);
        if let Err(e) = self.store.run(move |c| events::record_event(c, &ev)).await {
            tracing::warn!(error = %e, "could not record an event");
        }
    }

    /// Record how a claimed task ended, conditional on our claim. Returns false when the row was
    /// no longer ours (nothing written).
    async fn finish(&self, task: &Task, outcome: Outcome) -> bool {
        let (id, epoch) = (task.id, task.owner_epoch.unwrap_or_default());
        match self.completer.finish(id, epoch, outcome.clone()).await {
            Ok(true) => {
                let status = match &outcome {
                    Outcome::Succeeded(_) => "succeeded",
                    Outcome::Failed(_) => "failed",
                    Outcome::Retry { .. } => "retried",
                };
                self.metrics
                    .tasks
                    .get_or_create(&vec![("action".into(), task.action.clone()), ("status".into(), status.into())])
                    .inc();
                if let Some(claimed) = task.claimed_at {
                    let secs =
                        (chrono::Utc::now().naive_utc() - claimed).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    self.metrics.execution.get_or_create(&vec![("action".into(), task.action.clone())]).observe(secs);
                }
                match &outcome {
                    Outcome::Succeeded(_) => tracing::debug!(task.id = id, app.id = ?task.app_id, "task succeeded"),
                    Outcome::Failed(error) => {
                        tracing::warn!(task.id = id, app.id = ?task.app_id, error = %error, "task failed");
                        self.event(
                            "task.failed",
                            task.app_id,
                            Some(id),
                            error.clone(),
                            serde_json::json!({
                                "action": task.action, "attempts": task.attempts,
                            }),
                        )
                        .await;
                    }
                    Outcome::Retry { error, run_after } => {
                        tracing::info!(task.id = id, app.id = ?task.app_id, error = %error, run_after = %run_after, "task will be retried");
                    }
                }
                true
            }
            Ok(false) => {
                tracing::warn!(task.id = id, "task is no longer ours (recovered or cancelled): outcome dropped");
                false
            }
            Err(e) => {
                tracing::error!(task.id = id, error = %e, "could not record a task outcome; it will be recovered");
                false
            }
        }
    }

    /// The outcome of a failed attempt: retry with backoff or fail for good.
    fn outcome_of_error(&self, task: &Task, error: &DriverError) -> Outcome {
        let base = Duration::from_millis(self.cfg.retry_base_ms);
        let max = Duration::from_millis(self.cfg.retry_max_ms);
        match plan::after_error(task.attempts, task.max_attempts, error, base, max) {
            AfterError::Fail => {
                Outcome::Failed(format!("{error} (attempt {} of {})", task.attempts, task.max_attempts))
            }
            AfterError::Retry(delay) => Outcome::Retry {
                error: format!(
                    "{error} (attempt {} of {}; retrying in {:.1} s)",
                    task.attempts,
                    task.max_attempts,
                    delay.as_secs_f64()
                ),
                run_after: (chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()).naive_utc(),
            },
        }
    }
}

/// The key a task is owned by: its application's id, or its own id for a job.
pub fn task_key(id: i64, app_id: Option<i64>) -> String {
    app_id.unwrap_or(id).to_string()
}

/// Parse an application's `selector` column: a JSON object of string values. Anything else
/// (written by hand) constrains nothing, with a warning — a selector that matched no node would
/// leave the application without an owner and its commands pending for ever.
pub fn parse_selector(app_id: i64, text: &str) -> Selector {
    match serde_json::from_str::<Selector>(text) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(app.id = app_id, error = %e, "application selector is not an object of strings; ignoring it");
            Selector::new()
        }
    }
}

/// Does `me` own the work under `key`, honouring the application's selector (first matching node
/// clockwise; none when no member matches)?
fn owns(ring: &crate::ring::Ring, me: &str, key: &str, selector: Option<&Selector>) -> bool {
    let owner = match selector.filter(|s| !s.is_empty()) {
        Some(sel) => ring.owner_matching(key.as_bytes(), sel),
        None => ring.owner(key.as_bytes()),
    };
    owner.is_some_and(|m| m.node_id == me)
}

/// Run the dispatcher until `shutdown`; then release owned applications gracefully.
pub async fn run(shared: Arc<Shared>, url: DbUrl, shutdown: CancellationToken) {
    let listener_stop = CancellationToken::new();
    if let (DbUrl::Postgres(u), true) = (&url, shared.cfg.listen_notify) {
        tokio::spawn(wake::listen(u.clone(), shared.wake.clone(), listener_stop.clone()));
    }
    let mut d = Dispatcher {
        job_slots: Arc::new(Semaphore::new(shared.cfg.max_concurrency as usize)),
        shared,
        actors: HashMap::new(),
        selectors: HashMap::new(),
        jobs: JoinSet::new(),
        cursor: 0,
        unplaced_logged: (0, 0),
        fenced: true,
        seen_epoch: 0,
    };
    d.run(shutdown).await;
    listener_stop.cancel();
}

struct Dispatcher {
    shared: Arc<Shared>,
    actors: HashMap<i64, actor::Handle>,
    /// Application selectors, refreshed at each reconciliation and loaded on a miss.
    selectors: HashMap<i64, Selector>,
    jobs: JoinSet<()>,
    job_slots: Arc<Semaphore>,
    cursor: i64,
    /// (epoch, count) of the last "no member matches" warning, so it is logged once per change.
    unplaced_logged: (u64, usize),
    fenced: bool,
    seen_epoch: u64,
}

impl Dispatcher {
    async fn run(&mut self, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(Duration::from_millis(self.shared.cfg.poll_interval_ms));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval(Duration::from_millis(self.shared.cfg.reconcile_interval_ms));
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut membership = self.shared.membership.clone();
        let wake = self.shared.wake.clone();
        loop {
            let mut do_reconcile = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = poll.tick() => {}
                _ = reconcile.tick() => do_reconcile = true,
                changed = membership.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let epoch = membership.borrow_and_update().view.epoch;
                    if epoch != self.seen_epoch {
                        do_reconcile = true;
                    }
                }
                Some(_) = self.jobs.join_next(), if !self.jobs.is_empty() => {}
            }
            if !self.shared.may_act() {
                if !self.fenced {
                    self.fence().await;
                }
                continue;
            }
            if self.fenced {
                self.fenced = false;
                do_reconcile = true;
                tracing::info!(node.id = %self.shared.node_id, "dispatcher is acting");
            }
            if do_reconcile {
                self.reconcile().await;
            }
            // Drain a backlog: keep reading while rounds come back full.
            for _ in 0..64 {
                match self.round().await {
                    Ok(true) if self.shared.may_act() && !shutdown.is_cancelled() => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatch round failed");
                        break;
                    }
                }
            }
        }
        self.stop_gracefully().await;
    }

    /// One read-and-claim round; true when the read was full (more may be waiting).
    async fn round(&mut self) -> Result<bool, crate::store::StoreError> {
        let ms = self.shared.snapshot();
        let batch = i64::from(self.shared.cfg.batch_size);
        let after = self.cursor;
        let due = self.shared.store.run(move |c| q::due_after(c, after, batch)).await?;
        let full = due.len() as i64 == batch;
        self.cursor = if full { due.last().map(|d| d.id).unwrap_or(0) } else { 0 };
        let unknown: Vec<i64> =
            due.iter().filter_map(|d| d.app_id).filter(|a| !self.selectors.contains_key(a)).collect();
        if !unknown.is_empty() {
            let ids = unknown.clone();
            let found = self.shared.store.run(move |c| q::app_selectors(c, &ids)).await?;
            for a in unknown {
                // Missing applications constrain nothing (their commands fail on their owner).
                self.selectors.insert(a, Selector::new());
            }
            for (id, text) in found {
                self.selectors.insert(id, parse_selector(id, &text));
            }
        }
        let me = self.shared.node_id.as_str();
        let mine: Vec<i64> = due
            .iter()
            .filter(|d| owns(&ms.ring, me, &task_key(d.id, d.app_id), d.app_id.and_then(|a| self.selectors.get(&a))))
            .map(|d| d.id)
            .collect();
        if mine.is_empty() {
            return Ok(full);
        }
        let (node, epoch) = (self.shared.node_id.clone(), ms.view.epoch as i64);
        let claimed = self.shared.store.run(move |c| q::claim(c, &mine, &node, epoch)).await?;
        for task in claimed {
            tracing::debug!(task.id = task.id, app.id = ?task.app_id, ring.epoch = epoch, "claimed");
            if let Some(claimed_at) = task.claimed_at {
                let due = task.created_at.max(task.run_after);
                let secs = (claimed_at - due).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                self.shared.metrics.claim_latency.observe(secs);
            }
            match task.app_id {
                Some(app_id) => self.actor(app_id).send(task),
                None => self.spawn_job(task).await,
            }
        }
        Ok(full)
    }

    fn actor(&mut self, app_id: i64) -> &actor::Handle {
        let alive = self.actors.get(&app_id).is_some_and(|a| !a.is_finished());
        if !alive {
            self.actors.insert(app_id, actor::spawn(app_id, self.shared.clone()));
            self.shared.metrics.owned_applications.set(self.actors.len() as i64);
        }
        &self.actors[&app_id]
    }

    async fn spawn_job(&mut self, task: Task) {
        let Ok(permit) = self.job_slots.clone().acquire_owned().await else { return };
        let shared = self.shared.clone();
        self.jobs.spawn(async move {
            run_job(&shared, task).await;
            drop(permit);
        });
    }

    /// Adopt and release applications as the ring says, recover orphans, prune old rows.
    async fn reconcile(&mut self) {
        let ms = self.shared.snapshot();
        self.seen_epoch = ms.view.epoch;
        let me = self.shared.node_id.clone();
        self.actors.retain(|_, a| !a.is_finished());
        match self.shared.store.run(q::app_owners).await {
            Ok(apps) => {
                self.selectors.clear();
                let mut unplaced = Vec::new();
                for (id, owner, selector) in apps {
                    let selector = parse_selector(id, &selector);
                    if !selector.is_empty() && ms.ring.owner_matching(id.to_string().as_bytes(), &selector).is_none() {
                        unplaced.push(id);
                    }
                    let mine = owns(&ms.ring, &me, &id.to_string(), Some(&selector));
                    self.selectors.insert(id, selector);
                    if mine {
                        self.actor(id);
                    } else if let Some(handle) = self.actors.remove(&id) {
                        self.shared.metrics.owned_applications.set(self.actors.len() as i64);
                        handle.release().await;
                    } else if owner.as_deref() == Some(me.as_str()) {
                        // Ours from an earlier life (no actor runs it): let the new owner have it.
                        let m = me.clone();
                        if let Err(e) = self.shared.store.run(move |c| q::release_stale_app(c, id, &m)).await {
                            tracing::warn!(app.id = id, error = %e, "could not release a stale application");
                        }
                    }
                }
                if !unplaced.is_empty() && self.unplaced_logged != (ms.view.epoch, unplaced.len()) {
                    self.unplaced_logged = (ms.view.epoch, unplaced.len());
                    tracing::warn!(
                        ring.epoch = ms.view.epoch, apps = ?unplaced,
                        "no member matches these applications' selectors: their commands wait until one joins"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list applications"),
        }
        self.shared.metrics.owned_applications.set(self.actors.len() as i64);
        self.recover(&ms).await;
        self.prune().await;
    }

    async fn recover(&self, ms: &MembershipState) {
        let live: Vec<String> = ms.view.members.iter().map(|m| m.node_id.clone()).collect();
        let (me, joined) = (self.shared.node_id.clone(), ms.joined_epoch as i64);
        let m = me.clone();
        let orphans = match self.shared.store.run(move |c| q::orphans(c, &live, &m, joined)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for orphaned tasks");
                return;
            }
        };
        for o in orphans {
            let selector = o.app_id.and_then(|a| self.selectors.get(&a));
            if !owns(&ms.ring, &me, &task_key(o.id, o.app_id), selector) {
                continue;
            }
            let reason = format!(
                "owner {} left while the task was running (claimed at epoch {})",
                o.owner_node.clone().unwrap_or_default(),
                o.owner_epoch.unwrap_or_default()
            );
            let (orphan, why) = (o.clone(), reason.clone());
            match self.shared.store.run(move |c| q::recover(c, &orphan, &why)).await {
                Ok(Some(status)) => {
                    tracing::info!(task.id = o.id, app.id = ?o.app_id, from.node = ?o.owner_node, to.status = status, "recovered an orphaned task");
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
                Err(e) => tracing::warn!(task.id = o.id, error = %e, "could not recover an orphaned task"),
            }
        }
    }

    async fn prune(&self) {
        let hours = self.shared.cfg.retention_hours;
        if hours == 0 {
            return;
        }
        let cutoff = (chrono::Utc::now() - chrono::Duration::hours(hours as i64)).naive_utc();
        match self.shared.store.run(move |c| q::prune_finished(c, cutoff, 1000)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned finished tasks past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
    }

    /// Membership says stop: abort everything at once and stop every child we supervise.
    async fn fence(&mut self) {
        self.fenced = true;
        let n = self.actors.len();
        for (_, a) in self.actors.drain() {
            a.abort();
        }
        self.shared.metrics.owned_applications.set(0);
        self.jobs.abort_all();
        self.shared.drivers.shutdown_within(Duration::from_secs(30)).await;
        tracing::error!(node.id = %self.shared.node_id, actors = n, "fenced: aborted all work and stopped supervised processes");
    }

    /// Graceful stop: release every application (stop its children, clear ownership), let jobs
    /// finish within the grace period, then stop whatever is left.
    async fn stop_gracefully(&mut self) {
        let grace = Duration::from_secs(10);
        let actors: Vec<_> = self.actors.drain().map(|(_, a)| a).collect();
        let releases = futures_util::future::join_all(actors.into_iter().map(|a| a.release()));
        if tokio::time::timeout(grace, releases).await.is_err() {
            tracing::warn!("releasing applications took longer than {grace:?}");
        }
        if tokio::time::timeout(grace, async { while self.jobs.join_next().await.is_some() {} }).await.is_err() {
            self.jobs.abort_all();
        }
        self.shared.drivers.shutdown_within(Duration::from_secs(30)).await;
    }
}

/// Run one job (a task without an application).
async fn run_job(shared: &Shared, task: Task) {
    let outcome = match plan::plan(&task) {
        Plan::Poison(msg) => Outcome::Failed(msg),
        Plan::App { .. } => Outcome::Failed("internal: an application task reached the job pool".into()),
        Plan::Job { params } => {
            let Some(driver) = shared.drivers.get("noop") else {
                shared.finish(&task, Outcome::Failed("the noop driver is not available".into())).await;
                return;
            };
            let ctx = Ctx {
                app_id: None,
                app_name: String::new(),
                task_id: Some(task.id),
                spec: params.get("spec").cloned().unwrap_or_else(|| serde_json::json!({})),
                params,
                node_id: shared.node_id.clone(),
                epoch: task.owner_epoch.unwrap_or_default() as u64,
            };
            if !shared.may_act() {
                return;
            }
            if let Err(errors) = driver.validate(&ctx.spec) {
                Outcome::Failed(format!("job spec is invalid: {}", crate::drivers::describe(&errors)))
            } else {
                match driver.run(&ctx).await {
                    Ok(v) => Outcome::Succeeded(Some(v.to_string())),
                    Err(e) => shared.outcome_of_error(&task, &e),
                }
            }
        }
    };
    // Fenced meanwhile: write nothing; the task is recovered by its key's owner.
    if shared.may_act() {
        shared.finish(&task, outcome).await;
    }
}
