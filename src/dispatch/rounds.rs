//! The dispatcher's loop: wait for a reason to read the queue (a notification, a finished
//! command's turn, a poll tick, a reconciliation tick, a membership change), read and claim in
//! rounds by the strategy the moment calls for ([`super::strategy`]), and hand the claimed rows
//! out to their executors. It also stops: at once when fenced, gracefully on shutdown.
//!
//! Must never: claim while membership says this node may not act, or let a round wait for a
//! command to run (executors run on their own tasks; a round only hands rows over).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::actor::{self, AppRead};
use super::held::Claimed;
use super::place::Placement;
use super::strategy::{self, Claim, Situation};
use super::{jobs, pump, Dispatcher, JobWindow};
use crate::domain::{Action, Takeover};
use crate::store::apps;
use crate::store::claim;
use crate::store::models::Task;
use crate::store::StoreError;

/// How long giving back a pump's claims waits for the claim in flight (one statement, ~4 ms in
/// a drain): a database that does not answer must not hold up a stop or a view change.
pub(super) const STOP_CLAIM_WITHIN: Duration = Duration::from_secs(10);

/// What a wake-up of the loop asks for.
#[derive(Debug, Clone, Copy)]
struct Work {
    reconcile: bool,
    policies: bool,
    round: bool,
    /// Woken only because applications finished commands: claim their next ones.
    turns_only: bool,
}

impl Dispatcher {
    pub(super) async fn run(&mut self, shutdown: CancellationToken) {
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
                // Gathered below, after any round; the queue is not read for it.
                _ = shared.parents.notified() => do_round = false,
                _ = poll.tick() => self.label_pass = true,
                _ = reconcile.tick() => {
                    // The poll reads the queue; a reconciliation tick does not read it again.
                    do_reconcile = true;
                    do_round = false;
                }
                changed = config.changed(), if config_open => {
                    // A traffic policy or an application's placement may have changed (or the
                    // listener came or went): read them now. The queue is not read for it, and no switch is decided on it:
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
                    let (epoch, apps) = {
                        let ms = membership.borrow_and_update();
                        (ms.view.epoch, ms.app_generation)
                    };
                    if epoch != self.seen_epoch || apps != self.seen_app_generation {
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
                        // Its children may all have ended already: look at it now.
                        self.shared.parents.look_at(parent.task.id);
                        self.gathering.insert(parent.task.id, parent);
                    }
                }
            }
            // A change announced while another event won the race above is applied before the
            // round: the listener announces a change before the inserts committed after it.
            if config_open && config.has_changed().unwrap_or(false) {
                config.borrow_and_update();
                do_policies = true;
            }
            if !self.shared.may_act() {
                if !self.fenced {
                    self.stop_at_once().await;
                }
                continue;
            }
            if self.fenced {
                self.fenced = false;
                self.shared.acting.send_replace(true);
                do_reconcile = true;
                do_round = true;
                tracing::info!(node.id = %self.shared.node_id, "dispatcher is acting");
            }
            // The work of this wake-up gives way the moment membership says stop: a round waiting
            // for an unreachable database (up to its connection timeout per statement) must not
            // hold up stopping every process, which leaving the ring waits for
            // (docs/design.md, "Health-gated membership"). What it claimed stays claimed at this
            // epoch, recovered like the rows of aborted jobs.
            let mut stop = self.shared.membership.clone();
            let work = Work { reconcile: do_reconcile, policies: do_policies, round: do_round, turns_only };
            let stopped = tokio::select! {
                biased;
                _ = stop.wait_for(|m| !m.may_act(Instant::now())) => true,
                _ = self.work(work, &mut more, &shutdown) => false,
            };
            if stopped {
                self.stop_at_once().await;
            }
        }
        self.stop_gracefully().await;
    }

    /// What one wake-up of the loop does, once it may act ([`Work`]).
    async fn work(&mut self, work: Work, more: &mut bool, shutdown: &CancellationToken) {
        let Work { reconcile: do_reconcile, policies: do_policies, round: do_round, turns_only } = work;
        if do_reconcile {
            self.reconcile().await;
        } else if do_policies {
            self.placement_changed().await;
        }
        // Drain a backlog: keep reading while rounds come back full; after 64 rounds look at
        // the other events (membership, shutdown) and come straight back.
        // An event that reads nothing (a finished job, a heartbeat) leaves `more` as it was:
        // clearing it stalled a backlog until the next poll tick.
        if do_round && turns_only && self.takes_turns() {
            if let Err(e) = self.turn_round().await {
                tracing::warn!(error = %e, "claiming the next commands of applications failed");
                // A full round looks at every application's head.
                *more = true;
            }
        } else if do_round {
            if !self.takes_turns() {
                // A full round looks at every application's head.
                self.shared.take_turns(usize::MAX);
            }
            *more = false;
            for i in 0..64 {
                match self.round().await {
                    Ok(true) if self.shared.may_act() && !shutdown.is_cancelled() => *more = i == 63,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatch round failed");
                        self.fail_unreadable(&e).await;
                        break;
                    }
                }
            }
        }
        let asked = self.shared.parents.take();
        if !asked.is_empty() {
            self.gather_asked(asked).await;
        }
        if !self.gathering.is_empty() && self.last_gather.elapsed() >= Duration::from_millis(200) {
            self.gather().await;
        }
    }

    /// Gather the parents a child's end asked for ([`super::wake::Parents`]) that this node
    /// coordinates, once none of their children is left unfinished (one row read per parent
    /// until then; the periodic [`Dispatcher::gather`] moves children off departed nodes).
    async fn gather_asked(&mut self, asked: std::collections::HashSet<i64>) {
        for id in asked {
            let Some(parent) = self.gathering.get(&id).map(|c| c.task.clone()) else { continue };
            if !self.shared.may_act() {
                return;
            }
            // A workflow run advances as each node's job ends, not once all have.
            if parent.routing.as_deref() == Some(crate::jobs::Strategy::Workflow.as_str()) {
                if super::workflow::advance(&self.shared, &parent).await {
                    self.gathering.remove(&id);
                }
                continue;
            }
            match self.shared.store.run(move |c| crate::store::jobs::has_active_child(c, id)).await {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    tracing::warn!(task.id = id, error = %e, "could not read a job's children; it is gathered at the next pass");
                    continue;
                }
            }
            if jobs::conclude(&self.shared, &parent).await {
                self.gathering.remove(&id);
            }
        }
    }

    pub(super) fn placement(&self) -> Placement {
        Placement::new(&self.shared.node_id, &self.shared.snapshot(), self.apps.clone(), self.policies.clone())
    }

    /// Look at every waiting parent: move or lose the children of departed nodes, and finish
    /// the parents whose children are all done.
    pub(super) async fn gather(&mut self) {
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
    pub(super) async fn round(&mut self) -> Result<bool, StoreError> {
        let batch = i64::from(self.shared.cfg.batch_size);
        let after = self.cursor;
        let place = self.placement();
        let (node, epoch) = (self.shared.node_id.clone(), place.view.epoch as i64);
        // The only member reads and claims in one statement (one round trip from NOTIFY to
        // claim), except for a round from the head that must look for label-dependent rows —
        // those `claim_next` leaves out. They are looked for at every poll tick, and at every
        // wake while the head holds some: none waits longer than `poll_interval_ms` after a
        // backlog being pumped has been claimed (the pump's batches come first).
        let claim = strategy::choose(&self.situation(&place));
        let (claimed, full, last) = if let (Claim::Pump, Some(pump)) = (claim, self.pump.as_mut()) {
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
        } else if claim == Claim::Next {
            let (fence, plans) = (self.shared.fence(), self.shared.store.plans());
            let claimed =
                self.shared.store.run(move |c| claim::claim_next(c, &plans, after, batch, &node, epoch, fence)).await?;
            self.claimed_next(self.shared.claimed(claimed), &place)
        } else if claim == Claim::Window {
            return self.window_round(&place).await;
        } else {
            // A member of a larger ring reads every due row and claims its share, so it reads one
            // batch per taking member: a claim then still takes about a batch (3 nodes reading a
            // batch each claimed a third of one per round trip, and drained slower than one node).
            // While a job window runs, this is the look at the queue's head of a poll tick: it
            // leaves the window and its cursor as they are.
            let windowing = claim == (Claim::ReadAndClaim { head_look: true });
            let after = if windowing { 0 } else { after };
            let takers = place.view.members.iter().filter(|m| m.weight > 0).count().max(1) as i64;
            let read = if windowing { batch } else { batch * takers.min(8) };
            let due = self.shared.store.run(move |c| claim::due_after(c, after, read)).await?;
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
                let plans = self.shared.store.plans();
                self.shared.store.run(move |c| claim::claim(c, &plans, &mine, &node, epoch, fence)).await?
            };
            if windowing {
                self.hand_out(self.shared.claimed(claimed), &place, HashMap::new()).await;
                return Ok(true);
            }
            (self.shared.claimed(claimed), full, last)
        };
        self.cursor = if full { last.unwrap_or(0) } else { 0 };
        tracing::trace!(claimed = claimed.len(), cursor = after, full, "round");
        self.hand_out(claimed, &place, HashMap::new()).await;
        Ok(full)
    }

    /// Hand claimed rows to their executors: commands to their application's actor (with the
    /// application from `apps` when the claim read it), jobs to the pool.
    pub(super) async fn hand_out(&mut self, claimed: Vec<Claimed>, place: &Placement, mut apps: HashMap<i64, AppRead>) {
        for claim in claimed {
            let task = &claim.task;
            if let Some(claimed_at) = task.claimed_at {
                let due = task.created_at.max(task.run_after);
                let secs = (claimed_at - due).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                self.shared.metrics.claim_latency.observe(secs);
            }
            match task.app_id {
                Some(app_id) if task.action_word() != Some(Action::Run) => {
                    let app = apps.remove(&app_id);
                    self.actor(app_id).send(claim, app)
                }
                _ => self.spawn_job(claim, place.clone()).await,
            }
        }
    }

    /// What the choice of a round's claim depends on, now ([`strategy::Situation`]).
    pub(super) fn situation(&self, place: &Placement) -> Situation {
        Situation {
            pumping: self.pump.is_some(),
            owns_everything: self.owns_everything(place),
            cursor: self.cursor,
            label_pass: self.label_pass,
            windowing: self.window.is_some(),
        }
    }

    /// True when the next commands of applications that finished one may be claimed by their
    /// turns alone ([`strategy::takes_turns`]).
    pub(super) fn takes_turns(&self) -> bool {
        strategy::takes_turns(&self.situation(&self.placement()))
    }

    /// Claim the next command of every application that finished one ([`Shared::turn`]).
    pub(super) async fn turn_round(&mut self) -> Result<(), StoreError> {
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
            let (fence, plans) = (self.shared.fence(), self.shared.store.plans());
            // The claimed commands' applications are read in the same call to the database,
            // right after the claim, so their actors need not read them again before they run
            // (one round trip less on every command's path: docs/benchmarks.md#round-trips). A
            // read that fails leaves it to the actors; the claim, done, is not retried for it.
            let (claimed, read, at) = self
                .shared
                .store
                .run(move |c| {
                    let claimed = claim::claim_turns(c, &plans, &apps, &node, epoch, fence)?;
                    let ids: Vec<i64> = claimed.iter().filter_map(|t| t.app_id).collect();
                    let at = Instant::now();
                    let read = if ids.is_empty() { Ok(Vec::new()) } else { apps::apps(c, &ids) };
                    Ok((claimed, read, at))
                })
                .await?;
            let read = read.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "reading the applications of claimed commands failed; their actors read them");
                Vec::new()
            });
            let claimed = self.shared.claimed(claimed);
            tracing::trace!(claimed = claimed.len(), "turn round");
            self.hand_out(claimed, &place, read.into_iter().map(|app| (app.id, AppRead { app, at })).collect()).await;
        }
    }

    /// Whether a claim of `batch` rows came back full, and its last id.
    pub(super) fn summary<'a>(claimed: impl ExactSizeIterator<Item = &'a Task>, batch: i64) -> (bool, Option<i64>) {
        (claimed.len() as i64 == batch, claimed.map(|t| t.id).max())
    }

    /// The rows of the only member's one-statement claim, whether it was full, and its last id.
    /// A full claim means a backlog: the pump starts claiming the next batches at once, while
    /// this one is handed out (`Dispatcher::pump`).
    pub(super) fn claimed_next(
        &mut self,
        claimed: Vec<Claimed>,
        place: &Placement,
    ) -> (Vec<Claimed>, bool, Option<i64>) {
        let batch = i64::from(self.shared.cfg.batch_size);
        let (full, last) = Self::summary(claimed.iter().map(|c| &c.task), batch);
        if let (true, Some(after)) = (full && self.owns_everything(place) && self.shared.may_act(), last) {
            self.pump = Some(pump::Pump::start(self.shared.clone(), after, batch, place.view.epoch as i64));
        }
        (claimed, full, last)
    }

    /// A read that failed decoding a row (SQLite stores anything in any column: text that is
    /// not UTF-8, a time in a layout the node does not read): fail the rows that hold such
    /// values, each alone with its column named, so the queue behind them moves again.
    pub(super) async fn fail_unreadable(&self, e: &StoreError) {
        if !matches!(e, StoreError::Query(diesel::result::Error::DeserializationError(_)))
            && !e.to_string().to_lowercase().contains("utf-8")
        {
            return;
        }
        let (after, batch) = (self.cursor, i64::from(self.shared.cfg.batch_size));
        match self.shared.store.run(move |c| claim::fail_unreadable(c, after, batch)).await {
            Ok(n) if n > 0 => tracing::warn!(rows = n, "failed rows holding values the node cannot read"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not fail rows holding values the node cannot read"),
        }
    }

    /// True when this node owns every key that does not depend on labels: the only member of
    /// the ring, taking work. (The rows whose placement depends on labels — selectors, traffic
    /// groups, fan-out targets — are left out of the one-statement claim by its SQL.)
    pub(super) fn owns_everything(&self, place: &Placement) -> bool {
        // While the view settles, application commands are placed by another ring than jobs.
        !place.settling()
            && place.view.members.len() == 1
            && place.view.members[0].node_id == self.shared.node_id
            && place.view.members[0].weight > 0
    }

    pub(super) fn actor(&mut self, app_id: i64) -> &actor::Handle {
        let alive = self.actors.get(&app_id).is_some_and(|a| !a.is_finished());
        if !alive {
            self.actors.insert(app_id, actor::spawn(app_id, self.shared.clone()));
            self.shared.metrics.owned_applications.set(self.actors.len() as i64);
        }
        &self.actors[&app_id]
    }

    pub(super) async fn spawn_job(&mut self, claim: Claimed, place: Placement) {
        let Ok(permit) = self.outstanding.clone().acquire_owned().await else { return };
        // Taken here, in the order the claim handed the jobs out (higher priority first).
        let ticket = self.shared.exec_slots.ticket();
        let shared = self.shared.clone();
        // The job's future is large (every kind of job's state); boxed, the spawn moves a
        // pointer instead of copying it several times on its way into the task (callgrind:
        // the copies were the largest single cost of a drain, docs/benchmarks.md).
        self.jobs.spawn(async move {
            // Held while the job runs, however it ends; a waiting parent keeps the hold.
            let (task, hold) = claim.into_parts();
            // Every line logged about the job carries its id.
            let span = tracing::info_span!("task", task.id = task.id, app.id = task.app_id);
            let waiting = Box::pin(jobs::run(&shared, &place, task, ticket)).instrument(span).await;
            drop(permit);
            waiting.map(|parent| Claimed::from_parts(parent, hold))
        });
    }

    /// Membership says stop: abort everything at once and stop every child we supervise.
    async fn stop_at_once(&mut self) {
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
        self.maintenance.fenced();
        self.shared.drivers.shutdown_within(Duration::from_secs(30)).await;
        self.shared.acting.send_replace(false);
        tracing::error!(node.id = %self.shared.node_id, actors = n, "fenced: aborted all work and stopped supervised processes");
    }

    /// Graceful stop: release every application (stop its children, clear ownership), let jobs
    /// finish within the grace period, then stop whatever is left.
    pub(super) async fn stop_gracefully(&mut self) {
        let grace = Duration::from_secs(10);
        self.maintenance.stop().await;
        if let Some(pump) = self.pump.take() {
            pump.stop(self.shared.clone(), STOP_CLAIM_WITHIN).await;
        }
        let actors: Vec<_> = self.actors.drain().map(|(_, a)| a).collect();
        let releases = futures_util::future::join_all(actors.into_iter().map(|a| a.release(Takeover::Stopped)));
        if tokio::time::timeout(grace, releases).await.is_err() {
            tracing::warn!("releasing applications took longer than {grace:?}");
        }
        if tokio::time::timeout(grace, async { while self.jobs.join_next().await.is_some() {} }).await.is_err() {
            self.jobs.abort_all();
        }
        self.shared.drivers.shutdown_within(Duration::from_secs(30)).await;
    }
}
