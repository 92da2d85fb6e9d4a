//! The dispatcher: wake, read due rows, keep the ones this node owns, claim them in one
//! statement, and hand them to the executors — one actor per owned application, a bounded pool
//! for jobs. It also reconciles: adopts and releases applications as the ring moves, recovers the
//! running tasks of departed nodes, and prunes old rows.
//!
//! ```text
//!            NOTIFY / in-process wake / poll tick
//!                          │
//!   due_after(cursor) ─► owned by me (ring) ─► claim(ids, node, epoch, fence) ─┬─► app actor (id order, 1 at a time)
//!                                                                              └─► job pool (max_concurrency)
//!   membership change / reconcile tick ─► adopt / release apps, recover orphans, prune
//!   fenced ─► abort every actor and job, stop every child: act no more
//! ```
//!
//! Must never: hold a transaction while a command runs (claims and completions are single
//! statements); claim or act while membership says this node may not; write about work it does
//! not own at the epoch it claimed it (every completion is conditional, invariant I3), nor
//! any write as owner past its membership deadline or under an epoch older than its session
//! (each carries a [`q::Fence`], which the database checks against its own clock).

mod actor;
mod appwrite;
mod complete;
mod held;
mod jobs;
pub mod place;
pub mod plan;
mod pump;
pub mod wake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::DispatchConfig;
use crate::drivers::{ActBy, DriverError, Registry};
use crate::jobs::traffic::{Policy, Switch};
use crate::membership::MembershipState;
use crate::metrics::Metrics;
use crate::ring::Selector;
use crate::store::dispatch::{self as q, AppWrite, FinishFlags, Outcome};
use crate::store::models::{NewEvent, Task};
use crate::store::{events, DbUrl, Store, StoreError};
use actor::AppRead;
use held::{Claimed, Held, Stranded, STRANDED_AFTER};
use place::{AppPlace, Placement};
use plan::AfterError;

/// Orphans are looked for at every membership change, and at every this many reconciliations
/// (30 s at the default interval).
const RECOVER_EVERY: u32 = 6;

/// Finished rows past retention are pruned at every this many reconciliations (a minute at the
/// default interval; retention is counted in hours).
const PRUNE_EVERY: u32 = 12;
/// Finished tasks between two looks at the task table's dead rows ([`Dispatcher::vacuum`]).
const VACUUM_LOOK_AFTER: u64 = 20_000;
/// The least and the most time between two looks of a node at the task table's dead rows (each
/// look may vacuum it): at most one vacuum per 10 s, fewer after vacuums that did not help.
const VACUUM_GAP_MIN: Duration = Duration::from_secs(10);
const VACUUM_GAP_MAX: Duration = Duration::from_secs(600);

/// How long giving back a pump's claims waits for the claim in flight (one statement, ~4 ms in
/// a drain): a database that does not answer must not hold up a stop or a view change.
const STOP_CLAIM_WITHIN: Duration = Duration::from_secs(10);

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
    /// Wakes the dispatcher (NOTIFY, local inserts, a finished fan-out child).
    pub wake: Arc<Notify>,
    /// Applications whose command just finished, so their next command may be claimed
    /// ([`Shared::turn`]); `turn` wakes the dispatcher for them.
    turns: std::sync::Mutex<Vec<i64>>,
    turn: Notify,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Jobs executing at once (`dispatch.max_concurrency`); held only while a driver runs, not
    /// while the outcome is written.
    exec_slots: Semaphore,
    completer: complete::Completer,
    /// Actors' application reads and writes, batched.
    apps: appwrite::AppWriter,
    /// Tasks this node finished since it started (it looks at the table's dead rows after
    /// [`VACUUM_LOOK_AFTER`] more).
    finished: AtomicU64,
    /// The rows claimed here that an executor holds ([`held`]).
    held: Arc<Held>,
    /// This node's membership deadline as drivers read it at the last moment ([`ActBy`]).
    act_by: ActBy,
    /// Changes of schedules and traffic policies announced by the database ([`wake::listen`]).
    pub config: Arc<watch::Sender<wake::Config>>,
}

/// This node's session as every write as owner carries it ([`q::Fence`]): its deadline on the
/// wall clock ([`MembershipState::deadline_on`], the wall clock read first) and the epoch it
/// began at, from one look at the membership.
pub(crate) fn fence(membership: &watch::Receiver<MembershipState>) -> q::Fence {
    let wall = chrono::Utc::now().naive_utc();
    let state = membership.borrow();
    q::Fence { until: state.deadline_on(wall, Instant::now()), joined: state.joined_epoch as i64 }
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
        let completer = complete::Completer::spawn(store.clone(), node_id.clone(), membership.clone());
        let apps = appwrite::AppWriter::spawn(store.clone(), node_id.clone(), membership.clone());
        let exec_slots = Semaphore::new(cfg.max_concurrency as usize);
        let held = Arc::new(Held::new(metrics.tasks_held.clone()));
        let watched = membership.clone();
        let act_by = ActBy::new(move |now, epoch| watched.borrow().acting_until(now, epoch));
        Arc::new(Shared {
            store,
            drivers,
            node_id,
            membership,
            cfg,
            wake: Arc::new(Notify::new()),
            turns: std::sync::Mutex::new(Vec::new()),
            turn: Notify::new(),
            metrics,
            exec_slots,
            completer,
            apps,
            finished: AtomicU64::new(0),
            held,
            act_by,
            config: Arc::new(watch::channel(wake::Config::default()).0),
        })
    }

    /// Application `app_id` finished a command: its next one may be claimed now.
    fn turn(&self, app_id: i64) {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).push(app_id);
        self.turn.notify_one();
    }

    /// Up to `max` applications of [`Shared::turn`], each once, oldest first.
    fn take_turns(&self, max: usize) -> Vec<i64> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = std::collections::HashSet::new();
        let mut taken = Vec::new();
        let mut cut = 0;
        for &app in turns.iter() {
            if taken.len() == max {
                break;
            }
            cut += 1;
            if seen.insert(app) {
                taken.push(app);
            }
        }
        turns.drain(..cut);
        taken
    }

    /// True when this node may claim and act right now.
    pub fn may_act(&self) -> bool {
        self.membership.borrow().may_act(Instant::now())
    }

    /// A driver's answer as the executors take it. `Fenced` (the driver began nothing: the
    /// deadline it read had passed) is None when this node may not act, so nothing is written
    /// about it; when it may, it was held up past that deadline rather than paused (its spawner
    /// thread busy), and the call failed as any other, to be retried.
    fn unfenced<T>(&self, answer: Result<T, DriverError>) -> Option<Result<T, DriverError>> {
        match answer {
            Err(DriverError::Fenced(why)) => self.may_act().then_some(Err(DriverError::Failed(why))),
            answer => Some(answer),
        }
    }

    /// This node's session as every claim and recovery carries it ([`fence`]).
    pub fn fence(&self) -> q::Fence {
        fence(&self.membership)
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
        self.finish_with(task, outcome, None).await.task
    }

    /// [`Shared::finish`] for an application command, with its last write about its
    /// application (`app`), written first: the outcome is written only when `app` applied
    /// (`app: Some(false)`: the application is no longer this node's at that epoch). A failed
    /// database answers that nothing was written and nothing is known of `app`.
    async fn finish_with(&self, task: &Task, outcome: Outcome, app: Option<AppWrite>) -> FinishFlags {
        let (id, epoch) = (task.id, task.owner_epoch.unwrap_or_default());
        match self.completer.finish(id, epoch, outcome.clone(), app).await {
            Ok(flags) if flags.task => {
                self.finished.fetch_add(1, Ordering::Relaxed);
                if task.parent_id.is_some() {
                    // The parent's coordinator may be this node: let it gather now.
                    self.wake.notify_one();
                }
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
                flags
            }
            Ok(flags) if flags.app == Some(false) => {
                tracing::warn!(task.id = id, app.id = ?task.app_id,
                    "the application is no longer ours at our epoch: its state and the task's outcome were not written");
                flags
            }
            Ok(flags) => {
                tracing::warn!(task.id = id, "task is no longer ours (recovered or cancelled): outcome dropped");
                flags
            }
            Err(e) => {
                tracing::error!(task.id = id, error = %e, "could not record a task outcome; it is recovered once nothing holds it");
                FinishFlags { task: false, app: None }
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

/// Run the dispatcher until `shutdown`; then release owned applications gracefully.
pub async fn run(shared: Arc<Shared>, url: DbUrl, shutdown: CancellationToken) {
    let listener_stop = CancellationToken::new();
    if let (DbUrl::Postgres(u), true) = (&url, shared.cfg.listen_notify) {
        tokio::spawn(wake::listen(
            u.clone(),
            shared.wake.clone(),
            shared.config.clone(),
            shared.metrics.notify_listening.clone(),
            listener_stop.clone(),
        ));
    }
    let mut d = Dispatcher {
        // Claimed jobs not yet completed, at most: enough for the executors to stay busy while
        // completions are written, bounded so a slow database cannot pile up claimed rows.
        outstanding: Arc::new(Semaphore::new(
            (4 * shared.cfg.batch_size as usize).max(shared.cfg.max_concurrency as usize),
        )),
        shared,
        actors: HashMap::new(),
        apps: Arc::new(HashMap::new()),
        policies: Arc::new(HashMap::new()),
        traffic_rows: None,
        gathering: HashMap::new(),
        last_gather: Instant::now(),
        jobs: JoinSet::new(),
        pump: None,
        window: None,
        windowed_to: 0,
        cursor: 0,
        label_pass: true,
        last_recover: None,
        stranded: Stranded::default(),
        last_prune: None,
        vacuuming: None,
        vacuum_seen: (0, Instant::now()),
        vacuumed_at: None,
        vacuum_gap: VACUUM_GAP_MIN,
        vacuum_backend: Arc::new(AtomicI32::new(0)),
        unplaced_logged: (0, 0),
        fenced: true,
        seen_epoch: 0,
    };
    d.run(shutdown).await;
    listener_stop.cancel();
}

/// A member of a larger ring draining a backlog of jobs placed by their id alone (no selector,
/// no target node, an application without selector or traffic group, if any): it computes
/// which of the next ids its ring owns and claims them ([`q::claim_jobs`]) instead of reading
/// every due row. Why: each member read a batch per member to claim one, so every row of a
/// backlog was read once per member — three nodes drained at 0.63–0.88 of one node's rate on
/// the same database (docs/benchmarks.md). A window starts when a full read was mostly such
/// jobs, and yields to a look at the queue's head at every poll tick.
#[derive(Debug, Clone, Copy)]
struct JobWindow {
    /// The next id to look at.
    next: i64,
    /// The highest id known to exist.
    hi: i64,
    /// When it started: it ends after [`WINDOW_POLLS`] poll intervals.
    started: Instant,
    /// When it last yielded to a look at the queue's head: it does once per poll interval.
    looked: Instant,
}

/// A job window lasts at most this many poll intervals (10 s at the default): then the node
/// reads the queue from its head, past every row the window left (commands, label-dependent
/// rows, retried, locked or delayed jobs), before a new window may start. Why: while rows kept
/// coming, a window never reached the end of the table, and a command behind a head full of
/// rows no one could claim yet waited for as long as the inserts went on.
const WINDOW_POLLS: u32 = 10;

struct Dispatcher {
    shared: Arc<Shared>,
    actors: HashMap<i64, actor::Handle>,
    /// Applications' selectors and traffic groups, refreshed at each reconciliation and loaded
    /// on a miss.
    apps: Arc<HashMap<i64, AppPlace>>,
    /// Traffic policies by group, refreshed at each reconciliation.
    policies: Arc<HashMap<String, Policy>>,
    /// The traffic policies as last read: the [`wake::Config`] generation before the read
    /// ([`Shared::config`]), when.
    traffic_rows: Option<(u64, Instant, Vec<crate::store::jobs::TrafficRow>)>,
    /// Fan-out parents this node coordinates, waiting for their children.
    gathering: HashMap<i64, Claimed>,
    last_gather: Instant,
    /// Running jobs; a job that becomes a waiting parent returns it.
    jobs: JoinSet<Option<Claimed>>,
    outstanding: Arc<Semaphore>,
    /// The only member's claims of a backlog, made one after another while the batches before
    /// them are handed out ([`pump`]). Why: with one claim at a time the claim stream kept the
    /// database busy for 62 % of a drain (server log, docs/benchmarks.md), idle while each batch
    /// was handed out. The next round takes its rows before anything else; a view change gives
    /// them back first ([`Dispatcher::reconcile`]), since the new ring may place them elsewhere.
    pump: Option<pump::Pump>,
    /// A member of a larger ring claiming a backlog of jobs by their ids ([`JobWindow`]).
    window: Option<JobWindow>,
    /// The highest id a job window looked at: a new one starts only past it.
    windowed_to: i64,
    cursor: i64,
    /// The only member must read and place the queue's head row by row in its next round from
    /// the head: label-dependent rows (which its one-statement claim leaves out) were seen there
    /// last time, or a poll tick or reconciliation asks for a look.
    label_pass: bool,
    /// When orphans were last looked for, and old rows last pruned: both run at most this often
    /// on reconciliation ticks (orphans at once on every membership change), because an idle
    /// node's queries per second are the sum of its periodic reads (docs/benchmarks.md).
    last_recover: Option<Instant>,
    /// This node's running rows that no executor held at the last look ([`held`]).
    stranded: Stranded,
    last_prune: Option<Instant>,
    /// The running vacuum of the task table, if any, and [`Shared::finished`] when the table
    /// was last looked at, and when ([`Dispatcher::vacuum`]).
    vacuuming: Option<JoinHandle<Option<bool>>>,
    vacuum_seen: (u64, Instant),
    /// When the last look (and vacuum, if one was needed) started, how long to wait after it,
    /// and the server process running a vacuum (0 when none), to cancel it on a graceful stop.
    vacuumed_at: Option<Instant>,
    vacuum_gap: Duration,
    vacuum_backend: Arc<AtomicI32>,
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
        let (mut config, mut config_open) = (self.shared.config.subscribe(), true);
        let wake = self.shared.wake.clone();
        let shared = self.shared.clone();
        // The last drain stopped at its round limit with rows still waiting: go on at once.
        let mut more = false;
        loop {
            // Stopping wins over every other event: `select!` picks among ready branches at
            // random, and a wake or a poll tick taken after the signal started another round
            // (it took a batch the pump had claimed ahead, to be run instead of given back).
            if shutdown.is_cancelled() {
                break;
            }
            let mut do_reconcile = false;
            let mut do_policies = false;
            let mut do_round = true;
            // Woken only because applications finished commands: claim their next ones.
            let mut turns_only = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = std::future::ready(()), if more => {}
                _ = wake.notified() => {}
                _ = shared.turn.notified() => turns_only = true,
                _ = poll.tick() => self.label_pass = true,
                _ = reconcile.tick() => {
                    // The poll reads the queue; a reconciliation tick does not read it again.
                    do_reconcile = true;
                    do_round = false;
                }
                changed = config.changed(), if config_open => {
                    // A traffic policy may have changed (or the listener came or went): read the
                    // policies now. The queue is not read for it, and no switch is decided on it:
                    // switches follow membership (at a reconciliation), and every node reacting
                    // at once to another's switch, some on a view a moment older, could flip a
                    // group back and forth.
                    config_open = changed.is_ok();
                    do_policies = config_open;
                    do_round = false;
                }
                changed = membership.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let epoch = membership.borrow_and_update().view.epoch;
                    if epoch != self.seen_epoch {
                        do_reconcile = true;
                    } else {
                        // A renewed lease or heartbeat changes nothing in the queue (measured:
                        // one read per heartbeat on an idle node).
                        do_round = false;
                    }
                }
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    // A finished job is no reason to read the queue (measured: a read per
                    // finished job, most of them empty, while a backlog drained).
                    do_round = false;
                    if let Ok(Some(parent)) = done {
                        self.gathering.insert(parent.task.id, parent);
                    }
                }
            }
            if !self.shared.may_act() {
                if !self.fenced {
                    self.fence().await;
                }
                continue;
            }
            if self.fenced {
                self.fenced = false;
                self.last_recover = None;
                do_reconcile = true;
                do_round = true;
                tracing::info!(node.id = %self.shared.node_id, "dispatcher is acting");
            }
            if do_reconcile {
                self.reconcile().await;
            } else if do_policies {
                let ms = self.shared.snapshot();
                self.traffic(&ms, false).await;
            }
            // Drain a backlog: keep reading while rounds come back full; after 64 rounds look at
            // the other events (membership, shutdown) and come straight back.
            // An event that reads nothing (a finished job, a heartbeat) leaves `more` as it was:
            // clearing it stalled a backlog until the next poll tick.
            if do_round && turns_only && self.takes_turns() {
                if let Err(e) = self.turn_round().await {
                    tracing::warn!(error = %e, "claiming the next commands of applications failed");
                    // A full round looks at every application's head.
                    more = true;
                }
            } else if do_round {
                if !self.takes_turns() {
                    // A full round looks at every application's head.
                    self.shared.take_turns(usize::MAX);
                }
                more = false;
                for i in 0..64 {
                    match self.round().await {
                        Ok(true) if self.shared.may_act() && !shutdown.is_cancelled() => more = i == 63,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "dispatch round failed");
                            self.fail_unreadable(&e).await;
                            break;
                        }
                    }
                }
            }
            if !self.gathering.is_empty() && self.last_gather.elapsed() >= Duration::from_millis(200) {
                self.gather().await;
            }
        }
        self.stop_gracefully().await;
    }

    fn placement(&self) -> Placement {
        Placement::new(&self.shared.node_id, &self.shared.snapshot(), self.apps.clone(), self.policies.clone())
    }

    /// Look at every waiting parent: move or lose the children of departed nodes, and finish
    /// the parents whose children are all done.
    async fn gather(&mut self) {
        self.last_gather = Instant::now();
        let place = self.placement();
        let parents: Vec<Task> = self.gathering.values().map(|c| c.task.clone()).collect();
        for parent in parents {
            if !self.shared.may_act() {
                return;
            }
            if jobs::gather(&self.shared, &place, &parent).await {
                self.gathering.remove(&parent.id);
            }
        }
    }

    /// One read-and-claim round; true when the read was full (more may be waiting).
    async fn round(&mut self) -> Result<bool, StoreError> {
        let batch = i64::from(self.shared.cfg.batch_size);
        let after = self.cursor;
        let place = self.placement();
        let (node, epoch) = (self.shared.node_id.clone(), place.view.epoch as i64);
        // The only member reads and claims in one statement (one round trip from NOTIFY to
        // claim), except for a round from the head that must look for label-dependent rows —
        // those `claim_next` leaves out. They are looked for at every poll tick, and at every
        // wake while the head holds some: none waits longer than `poll_interval_ms` after a
        // backlog being pumped has been claimed (the pump's batches come first).
        let (claimed, full, last) = if let Some(pump) = self.pump.as_mut() {
            match pump.next().await {
                Some(Ok(claimed)) => {
                    let (full, last) = Self::summary(claimed.iter().map(|c| &c.task), batch);
                    if !full {
                        self.pump = None;
                    }
                    (claimed, full, last)
                }
                Some(Err(e)) => {
                    self.pump = None;
                    return Err(e);
                }
                // It stopped on its own (the view changed): read as usual from the cursor.
                None => {
                    self.pump = None;
                    return Ok(true);
                }
            }
        } else if self.owns_everything(&place) && (after > 0 || !self.label_pass) {
            let fence = self.shared.fence();
            let claimed = self.shared.store.run(move |c| q::claim_next(c, after, batch, &node, epoch, fence)).await?;
            self.claimed_next(self.shared.held.claimed(claimed), &place)
        } else if self.window.is_some() && !self.label_pass {
            return self.window_round(&place).await;
        } else {
            // A member of a larger ring reads every due row and claims its share, so it reads one
            // batch per taking member: a claim then still takes about a batch (3 nodes reading a
            // batch each claimed a third of one per round trip, and drained slower than one node).
            // While a job window runs, this is the look at the queue's head of a poll tick: it
            // leaves the window and its cursor as they are.
            let windowing = self.window.is_some();
            let after = if windowing { 0 } else { after };
            let takers = place.view.members.iter().filter(|m| m.weight > 0).count().max(1) as i64;
            let read = if windowing { batch } else { batch * takers.min(8) };
            let due = self.shared.store.run(move |c| q::due_after(c, after, read)).await?;
            self.shared.metrics.rows_read.inc_by(due.len() as u64);
            let full = due.len() as i64 == read;
            let last = due.last().map(|d| d.id);
            self.learn_apps(&due).await?;
            let place = self.placement();
            if after == 0 {
                self.label_pass = !windowing && due.iter().any(|d| place.depends_on_labels(d));
            }
            // A backlog of jobs placed by their id alone: claim the rest of it by window.
            let jobs = due.iter().filter(|d| place.placed_by_id(d)).count();
            let larger = !self.owns_everything(&place) && place.takes_work();
            // Only past the ids a window already covered: a node that claimed its share of a
            // backlog walks the others' rows once, by reading, not by window after window.
            let uncovered = last.is_some_and(|l| l > self.windowed_to);
            if let (true, false, Some(last)) = (full && jobs * 2 >= due.len() && larger && uncovered, windowing, last) {
                tracing::debug!(cursor = last, "a job window starts");
                let now = Instant::now();
                self.window = Some(JobWindow { next: last + 1, hi: last, started: now, looked: now });
            }
            let mine: Vec<i64> = due.iter().filter(|d| place.owns_due(d)).map(|d| d.id).collect();
            let claimed = if mine.is_empty() {
                Vec::new()
            } else {
                // Under the epoch of the view that placed the rows (read again after the read).
                let (fence, epoch) = (self.shared.fence(), place.view.epoch as i64);
                self.shared.store.run(move |c| q::claim(c, &mine, &node, epoch, fence)).await?
            };
            if windowing {
                self.hand_out(self.shared.held.claimed(claimed), &place, HashMap::new()).await;
                return Ok(true);
            }
            (self.shared.held.claimed(claimed), full, last)
        };
        self.cursor = if full { last.unwrap_or(0) } else { 0 };
        tracing::trace!(claimed = claimed.len(), cursor = after, full, "round");
        self.hand_out(claimed, &place, HashMap::new()).await;
        Ok(full)
    }

    /// One claim of the job window ([`JobWindow`]): the next ids up to a batch that this node's
    /// ring owns, claimed if they are pending, due jobs placed by their id alone
    /// ([`q::claim_jobs`]). Past the highest id it knew, the window reads the highest id again;
    /// when none was added it ends, and the next round reads from the queue's head, which finds
    /// every row the window left: commands, label-dependent rows, locked or delayed ones.
    async fn window_round(&mut self, place: &Placement) -> Result<bool, StoreError> {
        // A backlog's rounds follow one another without a look at the dispatcher's other
        // events (up to 64 rounds, each waiting for room among the jobs in flight): the window
        // claims the turns of applications, and looks at the queue's head, itself.
        if self.takes_turns() {
            self.turn_round().await?;
        }
        let Some(mut w) = self.window.take() else { return Ok(true) };
        let batch = self.shared.cfg.batch_size as usize;
        let poll = Duration::from_millis(self.shared.cfg.poll_interval_ms);
        if w.started.elapsed() >= poll * WINDOW_POLLS {
            tracing::debug!(cursor = w.next, "the job window has run its time; reading from the head");
            self.windowed_to = w.next - 1;
            self.cursor = 0;
            return Ok(true);
        }
        if w.looked.elapsed() >= poll {
            w.looked = Instant::now();
            self.window = Some(w);
            self.label_pass = true;
            return Ok(true);
        }
        // Claim no more than the job slots free now, so that handing out never waits for room
        // while applications' turns wait behind it; with none free, wait for one, or for a
        // turn, for up to a poll interval (then the loop looks at its other events).
        if self.outstanding.available_permits() == 0 {
            self.window = Some(w);
            let slots = self.outstanding.clone();
            return tokio::select! {
                _ = self.shared.turn.notified() => Ok(true),
                slot = slots.acquire_owned() => Ok(slot.is_ok()),
                _ = tokio::time::sleep(poll) => Ok(false),
            };
        }
        let batch = batch.min(self.outstanding.available_permits());
        // Ids looked at per round, at most: a node with a small share of the ring must not walk
        // a long stretch of ids in one go.
        let span = (batch as i64) * 64;
        let mut ids = Vec::with_capacity(batch);
        let mut looked = 0;
        while ids.is_empty() && looked < span {
            if w.next > w.hi {
                let hi = self.shared.store.run(q::max_task_id).await?;
                if hi < w.next {
                    tracing::debug!(cursor = w.next, "the job window ends");
                    self.windowed_to = w.hi;
                    self.cursor = 0;
                    return Ok(true);
                }
                w.hi = hi;
            }
            while ids.len() < batch && w.next <= w.hi && looked < span {
                if place.owner_of(&w.next.to_string(), &Selector::new()) == Some(place.me.as_str()) {
                    ids.push(w.next);
                }
                w.next += 1;
                looked += 1;
            }
        }
        self.window = Some(w);
        self.windowed_to = w.next - 1;
        let (node, epoch) = (self.shared.node_id.clone(), place.view.epoch as i64);
        let fence = self.shared.fence();
        let claimed = self.shared.store.run(move |c| q::claim_jobs(c, &ids, &node, epoch, fence)).await?;
        tracing::trace!(claimed = claimed.len(), window = w.next, "window round");
        self.hand_out(self.shared.held.claimed(claimed), place, HashMap::new()).await;
        Ok(true)
    }

    /// Hand claimed rows to their executors: commands to their application's actor (with the
    /// application from `apps` when the claim read it), jobs to the pool.
    async fn hand_out(&mut self, claimed: Vec<Claimed>, place: &Placement, mut apps: HashMap<i64, AppRead>) {
        for claim in claimed {
            let task = &claim.task;
            if let Some(claimed_at) = task.claimed_at {
                let due = task.created_at.max(task.run_after);
                let secs = (claimed_at - due).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                self.shared.metrics.claim_latency.observe(secs);
            }
            match task.app_id {
                Some(app_id) if task.action != "run" => {
                    let app = apps.remove(&app_id);
                    self.actor(app_id).send(claim, app)
                }
                _ => self.spawn_job(claim, place.clone()).await,
            }
        }
    }

    /// True when the next commands of applications that finished one may be claimed by
    /// [`q::claim_turns`]: this node is the only member, or a member of a larger ring claiming
    /// by job window (whose rounds read no commands), and no label-dependent rows wait at the
    /// queue's head (those need a full round, which also claims the next commands).
    fn takes_turns(&self) -> bool {
        !self.label_pass && (self.window.is_some() || self.owns_everything(&self.placement()))
    }

    /// Claim the next command of every application that finished one ([`Shared::turn`]).
    async fn turn_round(&mut self) -> Result<(), StoreError> {
        let batch = self.shared.cfg.batch_size as usize;
        loop {
            let apps = self.shared.take_turns(batch);
            if apps.is_empty() || !self.shared.may_act() {
                return Ok(());
            }
            let place = self.placement();
            // A member of a larger ring claims only for the applications the ring gives it
            // now (an actor may outlive its application's move until it has released it).
            let apps: Vec<i64> = apps.into_iter().filter(|&a| place.owns_app(a)).collect();
            if apps.is_empty() {
                continue;
            }
            let (node, epoch) = (self.shared.node_id.clone(), place.view.epoch as i64);
            let fence = self.shared.fence();
            // The claimed commands' applications are read in the same call to the database,
            // right after the claim, so their actors need not read them again before they run
            // (one round trip less on every command's path: docs/benchmarks.md, session 15). A
            // read that fails leaves it to the actors; the claim, done, is not retried for it.
            let (claimed, read, at) = self
                .shared
                .store
                .run(move |c| {
                    let claimed = q::claim_turns(c, &apps, &node, epoch, fence)?;
                    let ids: Vec<i64> = claimed.iter().filter_map(|t| t.app_id).collect();
                    let at = Instant::now();
                    let read = if ids.is_empty() { Ok(Vec::new()) } else { q::apps(c, &ids) };
                    Ok((claimed, read, at))
                })
                .await?;
            let read = read.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "reading the applications of claimed commands failed; their actors read them");
                Vec::new()
            });
            let claimed = self.shared.held.claimed(claimed);
            tracing::trace!(claimed = claimed.len(), "turn round");
            self.hand_out(claimed, &place, read.into_iter().map(|app| (app.id, AppRead { app, at })).collect()).await;
        }
    }

    /// Whether a claim of `batch` rows came back full, and its last id.
    fn summary<'a>(claimed: impl ExactSizeIterator<Item = &'a Task>, batch: i64) -> (bool, Option<i64>) {
        (claimed.len() as i64 == batch, claimed.map(|t| t.id).max())
    }

    /// The rows of the only member's one-statement claim, whether it was full, and its last id.
    /// A full claim means a backlog: the pump starts claiming the next batches at once, while
    /// this one is handed out ([`Dispatcher::pump`]).
    fn claimed_next(&mut self, claimed: Vec<Claimed>, place: &Placement) -> (Vec<Claimed>, bool, Option<i64>) {
        let batch = i64::from(self.shared.cfg.batch_size);
        let (full, last) = Self::summary(claimed.iter().map(|c| &c.task), batch);
        if let (true, Some(after)) = (full && self.owns_everything(place) && self.shared.may_act(), last) {
            self.pump = Some(pump::Pump::start(self.shared.clone(), after, batch, place.view.epoch as i64));
        }
        (claimed, full, last)
    }

    /// A read that failed on text that is not UTF-8 (SQLite stores any bytes): fail the rows
    /// that hold such text, with the column named, so the queue behind them moves again.
    async fn fail_unreadable(&self, e: &StoreError) {
        if !e.to_string().to_lowercase().contains("utf-8") {
            return;
        }
        let (after, batch) = (self.cursor, i64::from(self.shared.cfg.batch_size));
        match self.shared.store.run(move |c| q::fail_unreadable(c, after, batch)).await {
            Ok(n) if n > 0 => tracing::warn!(rows = n, "failed rows whose text is not UTF-8"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not fail rows whose text is not UTF-8"),
        }
    }

    /// True when this node owns every key that does not depend on labels: the only member of
    /// the ring, taking work. (The rows whose placement depends on labels — selectors, traffic
    /// groups, fan-out targets — are left out of the one-statement claim by its SQL.)
    fn owns_everything(&self, place: &Placement) -> bool {
        place.view.members.len() == 1
            && place.view.members[0].node_id == self.shared.node_id
            && place.view.members[0].weight > 0
    }

    /// Load the selectors and traffic groups of applications seen for the first time.
    async fn learn_apps(&mut self, due: &[q::Due]) -> Result<(), StoreError> {
        let mut unknown: Vec<i64> =
            due.iter().filter_map(|d| d.app_id).filter(|a| !self.apps.contains_key(a)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        unknown.dedup();
        let ids = unknown.clone();
        let found = self.shared.store.run(move |c| q::app_selectors(c, &ids)).await?;
        let apps = Arc::make_mut(&mut self.apps);
        for a in unknown {
            // Missing applications constrain nothing (their commands fail on their owner).
            apps.insert(a, AppPlace::default());
        }
        for (id, _, selector, group) in found {
            apps.insert(id, AppPlace { selector: parse_selector(id, &selector), group });
        }
        Ok(())
    }

    fn actor(&mut self, app_id: i64) -> &actor::Handle {
        let alive = self.actors.get(&app_id).is_some_and(|a| !a.is_finished());
        if !alive {
            self.actors.insert(app_id, actor::spawn(app_id, self.shared.clone()));
            self.shared.metrics.owned_applications.set(self.actors.len() as i64);
        }
        &self.actors[&app_id]
    }

    async fn spawn_job(&mut self, claim: Claimed, place: Placement) {
        let Ok(permit) = self.outstanding.clone().acquire_owned().await else { return };
        let shared = self.shared.clone();
        // The job's future is large (every kind of job's state); boxed, the spawn moves a
        // pointer instead of copying it several times on its way into the task (callgrind:
        // the copies were the largest single cost of a drain, docs/benchmarks.md).
        self.jobs.spawn(async move {
            // Held while the job runs, however it ends; a waiting parent keeps the hold.
            let (task, hold) = claim.into_parts();
            let waiting = Box::pin(jobs::run(&shared, &place, task)).await;
            drop(permit);
            waiting.map(|parent| Claimed::from_parts(parent, hold))
        });
    }

    /// Adopt and release applications as the ring says, apply traffic switches, recover
    /// orphans, prune old rows.
    async fn reconcile(&mut self) {
        let ms = self.shared.snapshot();
        let moved = ms.view.epoch != self.seen_epoch;
        self.seen_epoch = ms.view.epoch;
        if moved {
            // Its ids were placed by the old ring; the next round reads from the head.
            if self.window.take().is_some() {
                self.cursor = 0;
            }
            self.windowed_to = 0;
            if let Some(pump) = self.pump.take() {
                // Claimed under the old view: back to pending before the new one places them.
                pump.stop(self.shared.clone(), STOP_CLAIM_WITHIN).await;
            }
        }
        let me = self.shared.node_id.clone();
        self.actors.retain(|_, a| !a.is_finished());
        self.traffic(&ms, true).await;
        match self.shared.store.run(q::app_owners).await {
            Ok(rows) => {
                self.apps = Arc::new(
                    rows.iter()
                        .map(|(id, _, selector, group)| {
                            (*id, AppPlace { selector: parse_selector(*id, selector), group: group.clone() })
                        })
                        .collect(),
                );
                let place = self.placement();
                let mut unplaced = Vec::new();
                for (id, owner, _, _) in rows {
                    let selector = place.app_selector(id);
                    if place.owner_of(&id.to_string(), &selector).is_none() {
                        unplaced.push(id);
                    }
                    if place.owns_app(id) {
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
        let every = Duration::from_millis(self.shared.cfg.reconcile_interval_ms);
        // Rows seen unheld are looked at again as soon as they may be recovered, not only at the
        // next periodic look (none are seen on an idle node: it sends no more queries).
        let stranded_due = self.stranded.due_at(STRANDED_AFTER).is_some_and(|at| at <= Instant::now());
        if moved || stranded_due || self.last_recover.is_none_or(|t| t.elapsed() >= every * RECOVER_EVERY) {
            self.last_recover = Some(Instant::now());
            self.recover().await;
        }
        if self.last_prune.is_none_or(|t| t.elapsed() >= every * PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            self.prune().await;
        }
        self.vacuum().await;
    }

    /// After [`VACUUM_LOOK_AFTER`] more finished tasks (or after any, once a pruning interval
    /// has passed since the last look), look at the task table's dead rows and `VACUUM` it if
    /// no one else will ([`q::TaskVacuum::needed`]), on a task of its own: a vacuum of millions
    /// of dead rows takes seconds, which the dispatcher does not wait for. A vacuum that did not
    /// halve the dead rows (another session's old snapshot holds them, or it was skipped)
    /// doubles the wait before the next one, up to [`VACUUM_GAP_MAX`].
    /// Why: every claim and completion leaves a dead row version, and with autovacuum off they
    /// pile up until each claim wades through them — a 3-minute load at 38 k/s fell to 0.78 of
    /// its first minute with 10 M dead rows, and held 0.93 with this (docs/benchmarks.md,
    /// session 10). An idle node finishes nothing and sends nothing for this.
    async fn vacuum(&mut self) {
        if let Some(done) = self.vacuuming.take_if(|v| v.is_finished()) {
            match done.await {
                Ok(Some(true)) => self.vacuum_gap = VACUUM_GAP_MIN,
                Ok(Some(false)) => self.vacuum_gap = (self.vacuum_gap * 2).min(VACUUM_GAP_MAX),
                _ => {}
            }
        }
        let finished = self.shared.finished.load(Ordering::Relaxed);
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
            let before = match store.run(q::task_vacuum).await {
                Ok(Some(state)) if state.needed() => state,
                Ok(_) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the task table's dead rows");
                    return None;
                }
            };
            let started = Instant::now();
            if let Err(e) = store.run(move |c| q::vacuum_task(c, &backend)).await {
                tracing::warn!(error = %e, "could not vacuum the task table");
                return Some(false);
            }
            let after = store.run(q::task_vacuum).await.ok().flatten().map_or(before.dead, |s| s.dead);
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
        let cancel = self.shared.store.run(move |c| q::cancel_backend(c, pid));
        match tokio::time::timeout(Duration::from_secs(2), cancel).await {
            Ok(Ok(())) => tracing::info!(db.backend = pid, "cancelled the vacuum of the task table (stopping)"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not cancel the vacuum of the task table"),
            Err(_) => tracing::warn!("cancelling the vacuum of the task table took too long"),
        }
    }

    /// Reload the traffic policies and, with `decide`, record the automatic switches the view
    /// calls for (each is written once, by whichever node gets there first).
    async fn traffic(&mut self, ms: &MembershipState, decide: bool) {
        // Read again when a change was announced, at every reconciliation while nothing
        // announces changes, and every `CONFIG_BACKSTOP` otherwise; switches are decided at every
        // reconciliation (they follow the membership). The generation is taken before the read,
        // so a change announced during it is read next time.
        let config = *self.shared.config.borrow();
        let fresh = self.traffic_rows.as_ref().is_some_and(|(generation, at, _)| {
            *generation == config.generation && at.elapsed() < config.period(Duration::ZERO, wake::CONFIG_BACKSTOP)
        });
        if !fresh {
            match self.shared.store.run(crate::store::jobs::traffic_policies).await {
                Ok(rows) => self.traffic_rows = Some((config.generation, Instant::now(), rows)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read traffic policies; keeping the last ones");
                    return;
                }
            }
        }
        let rows = self.traffic_rows.as_ref().map(|(_, _, rows)| rows.as_slice()).unwrap_or_default();
        let mut policies = HashMap::new();
        for row in rows {
            let mut p = row.policy();
            let live = |label: &str, v: &str| {
                ms.view.members.iter().filter(|m| m.weight > 0 && m.labels.get(label).is_some_and(|x| x == v)).count()
            };
            let has_live = |v: &str| live(&p.label, v) > 0;
            if let Some(switch) = p.switch_due(&has_live).filter(|_| decide) {
                let backup = p.backup.clone().unwrap_or_default();
                let (kind, failed_over, reason) = match switch {
                    Switch::FailOver => (
                        "traffic.failover",
                        true,
                        format!(
                            "no live node has {}={}; moving group {} to {}={} ({} live)",
                            p.label,
                            p.preferred,
                            p.group,
                            p.label,
                            backup,
                            live(&p.label, &backup)
                        ),
                    ),
                    Switch::FailBack => (
                        "traffic.failback",
                        false,
                        format!(
                            "{}={} has {} live node(s) again; moving group {} back",
                            p.label,
                            p.preferred,
                            live(&p.label, &p.preferred),
                            p.group
                        ),
                    ),
                };
                let mut ev = self.shared.new_event(
                    kind,
                    None,
                    None,
                    reason.clone(),
                    serde_json::json!({
                        "group": p.group, "label": p.label, "preferred": p.preferred, "backup": p.backup,
                        "ring_epoch": ms.view.epoch,
                    }),
                );
                ev.actor = Some("system".into());
                let group = p.group.clone();
                match self
                    .shared
                    .store
                    .run(move |c| crate::store::jobs::record_switch(c, &group, failed_over, &reason, &ev))
                    .await
                {
                    Ok(true) => {
                        tracing::warn!(traffic.group = %p.group, switch = kind, "traffic switched automatically")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(traffic.group = %p.group, error = %e, "could not record a traffic switch"),
                }
                p.failed_over = failed_over;
            }
            policies.insert(p.group.clone(), p);
        }
        self.policies = Arc::new(policies);
    }

    /// Recover the running rows of departed nodes that this node's ring places here, the rows
    /// of this node's earlier lives, and the rows of its current life that none of its
    /// executors has held for [`STRANDED_AFTER`] (a write about them failed, or their executor
    /// ended without one: [`held`]).
    async fn recover(&mut self) {
        let ms = self.shared.snapshot();
        // Ownership decided on the same view as the live members.
        let place = Placement::new(&self.shared.node_id, &ms, self.apps.clone(), self.policies.clone());
        let live: Vec<String> = ms.view.members.iter().map(|m| m.node_id.clone()).collect();
        let (me, joined) = (self.shared.node_id.clone(), ms.joined_epoch as i64);
        let m = me.clone();
        let found = match self.shared.store.run(move |c| q::orphans(c, &live, &m)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for orphaned tasks");
                return;
            }
        };
        let this_life = |o: &q::Orphan| o.owner_node.as_deref() == Some(me.as_str()) && o.owner_epoch >= Some(joined);
        let running: Vec<held::Seen> = found
            .iter()
            .filter(|o| this_life(o))
            .map(|o| held::Seen { id: o.id, epoch: o.owner_epoch.unwrap_or_default(), attempts: o.attempts })
            .collect();
        let held = self.shared.held.clone();
        let stranded = self.stranded.sweep(&running, |id| held.holds(id), Instant::now(), STRANDED_AFTER);
        for o in found {
            let reason = if this_life(&o) {
                if !stranded.contains(&o.id) {
                    continue;
                }
                format!(
                    "stranded on its owner {me}: claimed at epoch {} and held by none of its executors for {} s \
                     (a write about it failed, or its executor ended without one)",
                    o.owner_epoch.unwrap_or_default(),
                    STRANDED_AFTER.as_secs()
                )
            } else {
                // An earlier life's rows are ours to recover; others' go to their key's owner.
                let earlier_life = o.owner_node.as_deref() == Some(me.as_str());
                if !earlier_life
                    && !place.owns(o.id, o.app_id, &o.action, o.routing.as_deref(), o.selector.as_deref(), None)
                {
                    continue;
                }
                format!(
                    "owner {} left while the task was running (claimed at epoch {})",
                    o.owner_node.clone().unwrap_or_default(),
                    o.owner_epoch.unwrap_or_default()
                )
            };
            let (orphan, why, fence) = (o.clone(), reason.clone(), (self.shared.fence(), ms.view.epoch as i64));
            match self.shared.store.run(move |c| q::recover(c, &orphan, &why, fence)).await {
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
        match self.shared.store.run(move |c| q::prune_finished(c, cutoff, 1000)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned finished tasks past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
    }

    /// Membership says stop: abort everything at once and stop every child we supervise.
    async fn fence(&mut self) {
        self.fenced = true;
        // Its rows stay claimed at this epoch, like those of the aborted jobs: recovered as
        // orphans (by the others, or by this node when it joins again).
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        (self.window, self.windowed_to, self.cursor) = (None, 0, 0);
        let n = self.actors.len();
        for (_, a) in self.actors.drain() {
            a.abort();
        }
        self.shared.metrics.owned_applications.set(0);
        self.jobs.abort_all();
        self.gathering.clear();
        // The aborted executors' rows belong to this life still: were it to act again without
        // joining anew, they are stranded from now on, not from an earlier look.
        self.stranded.clear();
        self.shared.drivers.shutdown_within(Duration::from_secs(30)).await;
        tracing::error!(node.id = %self.shared.node_id, actors = n, "fenced: aborted all work and stopped supervised processes");
    }

    /// Graceful stop: release every application (stop its children, clear ownership), let jobs
    /// finish within the grace period, then stop whatever is left.
    async fn stop_gracefully(&mut self) {
        let grace = Duration::from_secs(10);
        self.cancel_vacuum().await;
        if let Some(pump) = self.pump.take() {
            pump.stop(self.shared.clone(), STOP_CLAIM_WITHIN).await;
        }
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
