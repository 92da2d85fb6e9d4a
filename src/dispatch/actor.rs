//! One actor per owned application: it acquires the application (owner, epoch), runs its
//! commands one at a time in id order, checks its status between commands, applies the restart
//! policy, and on release stops what this node runs for it and clears the ownership.
//!
//! Why an actor: start, stop and monitoring of one application must never race, and every write
//! about it must carry the owner and epoch it was acquired with (I1, I3). Hand-off (I4): the
//! new owner's acquisition succeeds only once the old owner released it or left the membership.
//!
//! Must never: act after membership says stop (checked before every driver call), or write
//! about the application without the (owner, epoch) condition.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::appwrite::Acquisition;
use super::held::Claimed;
use super::plan::{self, Command, Plan, Restart};
use super::Shared;
use crate::domain::{AppState, DesiredState, Takeover};
use crate::drivers::{Ctx, Driver, DriverError, Note, Observed, Runtime};
use crate::store::apps::{self, AppChange, AppWrite};
use crate::store::complete::{self, Outcome};
use crate::store::models::{Application, NewEvent, Task};

/// A message to an actor.
enum Msg {
    /// Held until the actor is done with it, however it ends ([`super::held`]); with the
    /// application as read right after the claim, when the claim read it ([`Handle::send`]).
    Task(Box<Claimed>, Option<Box<AppRead>>),
    /// Release it, saying why (`app.released`'s reason, read by the next owner's takeover event).
    Release(Takeover, oneshot::Sender<()>),
}

/// An application as read at `at` (the claim's round trip, [`Handle::send`]).
pub struct AppRead {
    pub app: Application,
    /// When the read began: a copy read before the actor's own copy was last brought up to
    /// date (its last write ended, or its last read began) is older than that copy, not used.
    pub at: Instant,
}

/// The dispatcher's handle on an actor.
pub struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    task: JoinHandle<()>,
}

impl Handle {
    /// Queue a claimed command, with its application when it was read after the claim (in the
    /// claim's round trip, `Dispatcher::turn_round`): the actor then checks its ownership
    /// against that copy instead of reading the row again before the command runs.
    pub fn send(&self, task: Claimed, app: Option<AppRead>) {
        if let Err(mpsc::error::SendError(Msg::Task(t, _))) = self.tx.send(Msg::Task(Box::new(task), app.map(Box::new)))
        {
            tracing::warn!(task.id = t.task.id, "actor is gone; the task is recovered once nothing holds it");
        }
    }

    /// Ask it to stop what it runs and release the application, for reason `why` (hand-off,
    /// drained or stopped), at once; the future ends when it has. Asked of many actors before
    /// any is awaited, their releases run together and are written in batches.
    pub fn release(self, why: Takeover) -> impl Future<Output = ()> {
        let (done, wait) = oneshot::channel();
        let sent = self.tx.send(Msg::Release(why, done)).is_ok();
        async move {
            if sent {
                let _ = wait.await;
            }
            let _ = self.task.await;
        }
    }

    /// Stop at once (fencing): no release, no further writes.
    pub fn abort(self) {
        self.task.abort();
    }

    /// The actor has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Start the actor for `app_id`.
pub fn spawn(app_id: i64, shared: Arc<Shared>) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(
        async move {
            let mut actor = Actor {
                app_id,
                shared,
                epoch: 0,
                app: None,
                copy_as_of: Instant::now(),
                checked: None,
                skipped: None,
                defer_last: false,
                last: None,
                confirm: None,
                runtime: Runtime::in_memory(Value::Null),
            };
            actor.run(rx).await;
        }
        .instrument(tracing::info_span!("app", app.id = app_id)),
    );
    Handle { tx, task }
}

/// A driver call that has not returned after this long shows its intermediate state
/// (`starting`, `stopping`) in the application row; a faster one goes straight to the state it
/// ends in, with the intermediate change folded into that write ([`Actor::showing_if_slow`]).
const SHOW_INTERMEDIATE_AFTER: Duration = Duration::from_millis(50);

/// An application's driver and parsed spec, or why they cannot be used.
type Checked = Result<(Arc<dyn Driver>, Value), String>;

/// This node no longer owns the application at its epoch: stop without writing.
struct Lost;

struct Actor {
    app_id: i64,
    shared: Arc<Shared>,
    /// The epoch the application was acquired at (its fencing token).
    epoch: i64,
    app: Option<Application>,
    /// `app` holds the row as it was at this instant or later: when its last write (or the
    /// acquisition) ended, or its last read began. A copy read earlier is not used ([`AppRead`]).
    copy_as_of: Instant,
    /// (driver, spec text) → the result of [`Actor::check`] for them.
    checked: Option<(String, String, Checked)>,
    /// An intermediate change not written because its driver call returned quickly: folded
    /// into the next change.
    skipped: Option<AppChange>,
    /// True while a command runs its last driver call: the change that follows it is not
    /// written at once but kept in `last`, and written with the command's outcome.
    defer_last: bool,
    /// The command's last change and its event, to be written with its outcome.
    last: Option<(AppChange, Option<NewEvent>)>,
    /// A start or restart command that succeeded, whose first status check confirms it
    /// (`app.confirmed`, for `rota app start --wait`): its task id.
    confirm: Option<i64>,
    /// What the driver keeps about the application (`application.runtime`), as acquired and
    /// since recorded by this actor's driver calls ([`Runtime`]).
    runtime: Runtime,
}

/// A refused acquisition is tried again after this long when no release was announced.
const ACQUIRE_RETRY: Duration = Duration::from_millis(200);

/// The first status check after a successful start comes this soon (or at the monitor interval,
/// when shorter): an application that exits at once is seen before `--wait` reports success.
const CONFIRM_AFTER: Duration = Duration::from_secs(1);

impl Actor {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        if !self.acquire(&mut rx).await {
            return;
        }
        let default_interval = self.shared.cfg.monitor_interval_ms;
        let interval_ms =
            self.app.as_ref().and_then(|a| a.monitor_interval_ms).map(|v| v.max(1) as u64).unwrap_or(default_interval);
        let mut monitor = tokio::time::interval(Duration::from_millis(interval_ms));
        monitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = monitor.tick() => {
                    if self.monitor().await.is_err() {
                        tracing::warn!(app.id = self.app_id, "lost the application; the actor stops");
                        return;
                    }
                    continue;
                }
            };
            let step = match msg {
                Some(Msg::Task(t, app)) => {
                    let (task, _hold) = t.into_parts();
                    // Every line logged about the command carries its id.
                    let span = tracing::info_span!("task", task.id = task.id, task.action = %task.action);
                    self.execute(task, app.map(|a| *a)).instrument(span).await
                }
                Some(Msg::Release(why, done)) => {
                    self.release(why).await;
                    // Commands claimed for it and not begun go back to the queue for the next
                    // owner (left here, they stayed `running` under this live node for good).
                    while let Ok(msg) = rx.try_recv() {
                        if let Msg::Task(t, _) = msg {
                            self.give_back(&t.task).await;
                        }
                    }
                    let _ = done.send(());
                    return;
                }
                None => return,
            };
            if step.is_err() {
                tracing::warn!(app.id = self.app_id, "lost the application; the actor stops");
                return;
            }
            if self.confirm.is_some() {
                monitor.reset_after(CONFIRM_AFTER.min(Duration::from_millis(interval_ms)));
            }
        }
    }

    /// Acquire the application; meanwhile, give claimed commands back. False when the actor
    /// should end (released, or the application does not exist).
    /// A refused acquisition is tried again as soon as a release is announced
    /// ([`Shared::released`]: the previous owner's release is usually what it waits for), and
    /// every [`ACQUIRE_RETRY`] in any case (a departure, a lost announcement).
    async fn acquire(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) -> bool {
        let mut logged_wait = false;
        let mut released = self.shared.released.subscribe();
        loop {
            released.borrow_and_update();
            let ms = self.shared.snapshot();
            if ms.may_act(Instant::now()) {
                let live: Vec<String> = ms.view.members.iter().map(|m| m.node_id.clone()).collect();
                let (id, epoch) = (self.app_id, ms.view.epoch as i64);
                let event = self.shared.new_event(
                    "app.acquired",
                    Some(id),
                    None,
                    format!("application {id} acquired at epoch {epoch}"),
                    json!({ "epoch": epoch }),
                );
                let acquired = self.shared.apps.acquire(id, epoch, live, event).await;
                self.copy_as_of = Instant::now();
                match acquired {
                    Ok(Acquisition::Taken(app)) => {
                        self.epoch = epoch;
                        tracing::info!(app.id = id, app.name = %app.name, ring.epoch = epoch, "acquired application");
                        self.runtime = self.recorded_runtime(&app);
                        self.app = Some(*app);
                        self.adopt().await;
                        return true;
                    }
                    Ok(Acquisition::Missing) => return self.drain_missing(rx).await,
                    Ok(Acquisition::Held) => {
                        if !logged_wait {
                            tracing::info!(app.id = id, "waiting for the previous owner to release the application");
                            logged_wait = true;
                        }
                    }
                    Err(e) => tracing::warn!(app.id = id, error = %e, "acquiring the application failed"),
                }
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Task(t, _)) => self.give_back(&t.task).await,
                    Some(Msg::Release(_, done)) => {
                        let _ = done.send(());
                        return false;
                    }
                    None => return false,
                },
                _ = released.changed() => {}
                _ = tokio::time::sleep(ACQUIRE_RETRY) => {}
            }
        }
    }

    /// The application does not exist: fail what was claimed for it, then end.
    async fn drain_missing(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) -> bool {
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Task(t, _) => {
                    let why = format!("application {} does not exist: create it first, or fix app_id", self.app_id);
                    self.shared.completer.finish(&t.task, Outcome::Failed(why)).await;
                    self.shared.wake.notify_one();
                }
                Msg::Release(_, done) => {
                    let _ = done.send(());
                }
            }
        }
        false
    }

    async fn give_back(&self, t: &Task) {
        let (id, me, claim) = (t.id, self.shared.node_id.clone(), t.claim());
        if let Err(e) = self.shared.store.run(move |c| complete::unclaim(c, id, &me, claim)).await {
            tracing::warn!(task.id = id, error = %e, "could not give a task back; it is recovered once nothing holds it");
        }
    }

    /// The application's driver and its parsed, validated spec. Parsed and validated once per
    /// (driver, spec) seen — not at every monitor tick — and again only when an update changes them.
    fn driver(&mut self) -> Checked {
        let app = self.app.as_ref().ok_or("internal: no application loaded")?;
        if let Some((driver, spec_text, checked)) = &self.checked {
            if *driver == app.driver && *spec_text == app.spec {
                return checked.clone();
            }
        }
        let checked = self.check(app);
        self.checked = Some((app.driver.clone(), app.spec.clone(), checked.clone()));
        checked
    }

    fn check(&self, app: &Application) -> Checked {
        let driver = self.shared.drivers.get(&app.driver).ok_or_else(|| {
            format!("driver `{}` is not available on this node (have: {:?})", app.driver, self.shared.drivers.names())
        })?;
        let spec: Value = serde_json::from_str(&app.spec)
            .map_err(|e| format!("application {} has a spec that is not valid JSON: {e}", app.id))?;
        driver.validate(&spec).map_err(|errors| {
            format!("application {} has an invalid {} spec: {}", app.id, app.driver, crate::drivers::describe(&errors))
        })?;
        Ok((driver, spec))
    }

    fn ctx(&self, spec: Value, task: Option<&Task>, params: Value) -> Ctx {
        Ctx {
            app_id: Some(self.app_id),
            app_name: self.app.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
            task_id: task.map(|t| t.id),
            spec,
            params,
            node_id: self.shared.node_id.clone(),
            epoch: self.epoch.max(0) as u64,
            act_by: self.shared.act_by.clone(),
            runtime: self.runtime.clone(),
            context: None,
        }
    }

    /// The application's runtime state as acquired, written back by its driver as this owner
    /// at this epoch (each write fenced: refused once another node owns it).
    fn recorded_runtime(&self, app: &Application) -> Runtime {
        let initial = match app.runtime.as_deref().map(serde_json::from_str::<Value>) {
            None => Value::Null,
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                // Only owners write it, as JSON; a row edited by hand is read as nothing
                // recorded rather than stopping the application's commands.
                tracing::warn!(app.id = app.id, error = %e, "application.runtime is not JSON; read as empty");
                Value::Null
            }
        };
        let (shared, id, epoch) = (self.shared.clone(), self.app_id, self.epoch);
        Runtime::recorded(
            initial,
            Arc::new(move |state: Value, note: Option<Note>| {
                let shared = shared.clone();
                Box::pin(async move {
                    let event = note.map(|n| shared.new_event(n.kind, Some(id), None, n.message, n.data));
                    let (me, fence, text) = (shared.node_id.clone(), shared.fence(), state.to_string());
                    shared
                        .store
                        .run(move |c| apps::record_runtime(c, id, &me, fence, epoch, &text, event.as_ref()))
                        .await
                        .map_err(|e| e.to_string())
                })
            }),
        )
    }

    async fn refresh(&mut self) -> Result<(), Lost> {
        let at = Instant::now();
        let read = self.shared.apps.read(self.app_id).await;
        self.refresh_from(read, at).await
    }

    /// [`Actor::refresh`] with the application as read from `at` on (by the actor, or with the
    /// claim): kept when this node still owns it at the actor's epoch, else lost (deleted: what
    /// runs here is stopped first). A read that failed keeps the copy the actor has.
    async fn refresh_from(&mut self, read: Result<Option<Application>, String>, at: Instant) -> Result<(), Lost> {
        let id = self.app_id;
        match read {
            Ok(Some(app))
                if app.owner_node.as_deref() == Some(self.shared.node_id.as_str())
                    && app.owner_epoch == Some(self.epoch) =>
            {
                self.app = Some(app);
                self.copy_as_of = self.copy_as_of.max(at);
                Ok(())
            }
            Ok(Some(_)) => Err(Lost),
            Ok(None) => {
                // Deleted (with force) while we ran it: stop what runs here, then end.
                if let (Some(app), Ok((driver, spec))) = (self.app.clone(), self.driver()) {
                    if self.shared.may_act() {
                        let ctx = self.ctx(spec, None, json!({}));
                        if let Err(e) = driver.stop(&ctx).await {
                            tracing::warn!(app.id = app.id, error = %e, "stopping a deleted application failed");
                        }
                    }
                }
                tracing::info!(app.id = id, "application deleted; its actor stops");
                Err(Lost)
            }
            Err(e) => {
                tracing::warn!(app.id = id, error = %e, "could not read the application");
                Ok(())
            }
        }
    }

    async fn change(&mut self, change: AppChange) -> Result<(), Lost> {
        self.change_with(change, None).await
    }

    /// Apply `change`, then record the `app.state` event of its new state (one trip to the
    /// blocking pool for both).
    async fn change_state(&mut self, change: AppChange, detail: Option<String>) -> Result<(), Lost> {
        let state = change.state.unwrap_or(AppState::Unknown);
        let event = self.state_event(state, detail);
        self.change_with(change, Some(event)).await
    }

    async fn change_with(&mut self, change: AppChange, event: Option<NewEvent>) -> Result<(), Lost> {
        let change = match self.skipped.take() {
            Some(skipped) => skipped.then(change),
            None => change,
        };
        let id = self.app_id;
        let written = self.shared.apps.write(id, self.epoch, change.clone(), event).await;
        self.copy_as_of = Instant::now();
        match written {
            Ok(true) => {
                self.applied(change);
                Ok(())
            }
            Ok(false) => Err(Lost),
            Err(e) => {
                tracing::warn!(app.id = id, error = %e, "could not update the application");
                Ok(())
            }
        }
    }

    /// The last change of a command: kept to be written with its outcome while the command's
    /// last driver call is what came before it ([`Actor::execute`]), written at once otherwise.
    /// Why: written on their own, a command's last state change and its outcome were two
    /// batched writes one after the other; together they are one statement (the completer's).
    async fn change_last(&mut self, change: AppChange, event: Option<NewEvent>) -> Result<(), Lost> {
        if !self.defer_last {
            return self.change_with(change, event).await;
        }
        let change = match self.skipped.take() {
            Some(skipped) => skipped.then(change),
            None => change,
        };
        self.last = Some((change, event));
        Ok(())
    }

    /// A change the database took: the same in the copy of the application kept here.
    fn applied(&mut self, change: AppChange) {
        if let Some(app) = self.app.as_mut() {
            if let Some(s) = change.state {
                app.state = s;
            }
            if let Some(d) = change.desired_state {
                app.desired_state = d;
            }
            if let Some(e) = change.last_error {
                app.last_error = e;
            }
            if let Some(r) = change.restart_count {
                app.restart_count = r;
            }
        }
    }

    fn check_may_act(&self) -> Result<(), Lost> {
        if self.shared.may_act() {
            Ok(())
        } else {
            Err(Lost)
        }
    }

    /// After acquiring: an application that should run but does not run here is started
    /// (a hand-off, not a failure: the restart count is untouched).
    async fn adopt(&mut self) {
        let Some(app) = self.app.clone() else { return };
        if app.desired_state != DesiredState::Running {
            return;
        }
        let Ok((driver, spec)) = self.driver() else { return };
        let ctx = self.ctx(spec, None, json!({}));
        if self.check_may_act().is_err() {
            return;
        }
        // Started only when it is seen down: what runs or is starting outside the node (a Flink
        // job the last owner submitted) is adopted as it is, and what cannot be seen there is
        // not started a second time — the monitor looks again. For a driver that supervises
        // here, "cannot tell" means "not started on this node".
        let observed = match driver.status(&ctx).await {
            Ok(o) => o,
            Err(e) => Observed::Unknown(e.to_string()),
        };
        let unseen = matches!(observed, Observed::Unknown(_)) && !driver.supervises_here();
        if unseen || matches!(observed, Observed::Running | Observed::Starting) {
            let _ = self.record_observed(&observed).await;
            return;
        }
        tracing::info!(app.id = app.id, "adopted an application that should run: starting it here");
        let result = driver.start(&ctx).await;
        let _ = self.after_start(&*driver, &ctx, result, None).await;
    }

    async fn execute(&mut self, task: Task, read: Option<AppRead>) -> Result<(), Lost> {
        self.check_may_act()?;
        let fresh = match read {
            Some(read) if read.at > self.copy_as_of => self.refresh_from(Ok(Some(read.app)), read.at).await,
            _ => self.refresh().await,
        };
        if let Err(lost) = fresh {
            // Not ours any more: the command goes back to the queue for the application's
            // owner (kept, it stayed `running` under this live node for good).
            self.give_back(&task).await;
            return Err(lost);
        }
        (self.last, self.defer_last) = (None, false);
        let outcome = match plan::plan(&task) {
            Plan::Poison(msg) => Outcome::Failed(msg),
            Plan::Job { .. } => Outcome::Failed("internal: a job reached an application actor".into()),
            Plan::App { command, params, .. } => match self.driver() {
                Err(msg) => Outcome::Failed(msg),
                Ok((driver, spec)) => {
                    let ctx = self.ctx(spec, Some(&task), params);
                    match self.command(&*driver, &ctx, command).await? {
                        Ok(result) => {
                            if matches!(command, Command::Start | Command::Restart) {
                                self.confirm = Some(task.id);
                            }
                            Outcome::Succeeded(result.map(|v| v.to_string()))
                        }
                        Err(e) => {
                            plan::outcome_after_error(&task, &e, &self.shared.cfg, chrono::Utc::now().naive_utc())
                        }
                    }
                }
            },
        };
        // A command that ended early (lost, fenced) leaves nothing to fold into the next one.
        self.skipped = None;
        self.defer_last = false;
        self.check_may_act()?;
        let last = self.last.take();
        let write = last.as_ref().map(|(change, event)| AppWrite {
            id: self.app_id,
            epoch: self.epoch,
            change: change.clone(),
            event: event.clone(),
        });
        let flags = self.shared.completer.finish_with(&task, outcome, write).await;
        self.copy_as_of = Instant::now();
        match (flags.app, last) {
            (Some(true), Some((change, _))) => self.applied(change),
            (Some(false), _) => return Err(Lost),
            _ => {}
        }
        // The next command of this application can be claimed now.
        self.shared.turn(self.app_id);
        Ok(())
    }

    async fn command(
        &mut self,
        driver: &dyn Driver,
        ctx: &Ctx,
        command: Command,
    ) -> Result<Result<Option<Value>, DriverError>, Lost> {
        // The change after the command's last driver call goes with its outcome.
        match command {
            Command::Start => {
                self.defer_last = true;
                Ok(self.start(driver, ctx).await?.map(|_| None))
            }
            Command::Stop => {
                self.defer_last = true;
                Ok(self.stop(driver, ctx).await?.map(|_| None))
            }
            Command::Restart => {
                if let Err(e) = self.stop(driver, ctx).await? {
                    return Ok(Err(e));
                }
                self.defer_last = true;
                Ok(self.start(driver, ctx).await?.map(|_| None))
            }
            Command::Savepoint => {
                self.check_may_act()?;
                let taken = self.shared.unfenced(driver.savepoint(ctx).await).ok_or(Lost)?;
                Ok(taken.map(Some))
            }
        }
    }

    /// A `start` command: desired `running`, state `starting`, then the driver.
    async fn start(&mut self, driver: &dyn Driver, ctx: &Ctx) -> Result<Result<(), DriverError>, Lost> {
        let starting = AppChange {
            desired_state: Some(DesiredState::Running),
            state: Some(AppState::Starting),
            ..Default::default()
        };
        self.check_may_act()?;
        let r = self.showing_if_slow(starting, driver.start(ctx)).await?;
        self.after_start(driver, ctx, r, Some(0)).await
    }

    /// Run a driver call; write `intermediate` only if the call has not returned within
    /// [`SHOW_INTERMEDIATE_AFTER`] (the call goes on meanwhile), else fold it into the next
    /// change. Why: most calls return at once (a `noop`, a process spawned, an HTTP request
    /// answered), and writing a state nobody could see cost an application row update and a
    /// round trip per command (docs/benchmarks.md#round-trips).
    async fn showing_if_slow<T>(&mut self, intermediate: AppChange, call: impl Future<Output = T>) -> Result<T, Lost> {
        tokio::pin!(call);
        tokio::select! {
            biased;
            r = &mut call => {
                self.skipped = Some(intermediate);
                Ok(r)
            }
            _ = tokio::time::sleep(SHOW_INTERMEDIATE_AFTER) => {
                let (shown, r) = tokio::join!(self.change(intermediate), &mut call);
                shown?;
                Ok(r)
            }
        }
    }

    async fn stop(&mut self, driver: &dyn Driver, ctx: &Ctx) -> Result<Result<(), DriverError>, Lost> {
        let stopping = AppChange {
            desired_state: Some(DesiredState::Stopped),
            state: Some(AppState::Stopping),
            ..Default::default()
        };
        self.check_may_act()?;
        let stopped = self.showing_if_slow(stopping, driver.stop(ctx)).await?;
        match self.shared.unfenced(stopped).ok_or(Lost)? {
            Ok(()) => {
                let change = AppChange { state: Some(AppState::Stopped), last_error: Some(None), ..Default::default() };
                let event = self.state_event(AppState::Stopped, None);
                self.change_last(change, Some(event)).await?;
                Ok(Ok(()))
            }
            Err(e) => {
                let change = AppChange {
                    state: Some(AppState::Unknown),
                    last_error: Some(Some(e.to_string())),
                    ..Default::default()
                };
                self.change_last(change, None).await?;
                Ok(Err(e))
            }
        }
    }

    /// Record what a start left: the observed state, and on success `restart_count` (0 after a
    /// `start` command, the restart's number after a restart, untouched after an adoption).
    /// Why one change: a reset to 0 followed by a second write of the restart's number lost
    /// the number whenever the second write failed.
    async fn after_start(
        &mut self,
        driver: &dyn Driver,
        ctx: &Ctx,
        result: Result<(), DriverError>,
        restart_count: Option<i32>,
    ) -> Result<Result<(), DriverError>, Lost> {
        match self.shared.unfenced(result).ok_or(Lost)? {
            Ok(()) => {
                self.check_may_act()?;
                let state = match driver.status(ctx).await {
                    Ok(o) => o,
                    Err(e) => Observed::Unknown(e.to_string()),
                };
                // A process that exited before this check is `failed` now: keep its reason (the
                // waiting CLI and the console show it), as the monitor does.
                let detail = match &state {
                    Observed::Failed(d) => Some(d.clone()),
                    _ => None,
                };
                let event = self.state_event(state.state(), detail.clone());
                let change = AppChange {
                    state: Some(state.state()),
                    restart_count,
                    last_error: Some(detail),
                    ..Default::default()
                };
                self.change_last(change, Some(event)).await?;
                Ok(Ok(()))
            }
            Err(e) => {
                let event = self.state_event(AppState::Failed, Some(e.to_string()));
                let change = AppChange {
                    state: Some(AppState::Failed),
                    last_error: Some(Some(e.to_string())),
                    ..Default::default()
                };
                self.change_last(change, Some(event)).await?;
                Ok(Err(e))
            }
        }
    }

    fn state_event(&self, state: AppState, detail: Option<String>) -> NewEvent {
        self.shared.new_event(
            "app.state",
            Some(self.app_id),
            None,
            format!(
                "application {} is {state}{}",
                self.app_id,
                detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ),
            json!({ "state": state, "epoch": self.epoch }),
        )
    }

    async fn record_observed(&mut self, observed: &Observed) -> Result<(), Lost> {
        let state = observed.state();
        // "Cannot tell" adds nothing to a known `failed` or `stopped`.
        let uninformative = matches!(observed, Observed::Unknown(_))
            && self.app.as_ref().is_some_and(|a| a.state == AppState::Failed || a.state == AppState::Stopped);
        let changed = !uninformative && self.app.as_ref().is_some_and(|a| a.state != state);
        if changed {
            let detail = match observed {
                Observed::Failed(d) | Observed::Unknown(d) => Some(d.clone()),
                _ => None,
            };
            let mut change = AppChange { state: Some(state), ..Default::default() };
            if let Some(d) = &detail {
                change.last_error = Some(Some(d.clone()));
            }
            self.change_state(change, detail).await?;
            tracing::info!(app.id = self.app_id, app.state = %state, "application state changed");
        }
        Ok(())
    }

    /// A status check, then the restart policy.
    async fn monitor(&mut self) -> Result<(), Lost> {
        self.check_may_act()?;
        self.refresh().await?;
        let Ok((driver, spec)) = self.driver() else { return Ok(()) };
        let ctx = self.ctx(spec, None, json!({}));
        let observed = match driver.status(&ctx).await {
            Ok(o) => o,
            Err(e) => Observed::Unknown(e.to_string()),
        };
        self.check_may_act()?;
        self.record_observed(&observed).await?;
        match (self.confirm, observed.state()) {
            (Some(task), AppState::Running) => {
                self.confirm = None;
                let message =
                    format!("application {} is running at its first status check after task {task}", self.app_id);
                self.shared.event("app.confirmed", Some(self.app_id), Some(task), message, json!({})).await;
            }
            // Still on its way up (a Flink job's tasks deploying): the next check confirms it.
            (Some(_), AppState::Starting) => {}
            _ => self.confirm = None,
        }
        let Some(app) = self.app.clone() else { return Ok(()) };
        match plan::restart(
            app.desired_state,
            observed.state(),
            &app.restart_policy,
            app.restart_count,
            app.max_restarts,
        ) {
            Restart::No => Ok(()),
            Restart::Yes(n) => {
                tracing::info!(app.id = app.id, restart = n, "restarting per policy");
                self.shared
                    .event(
                        "app.restart",
                        Some(app.id),
                        None,
                        format!(
                            "restart {n} of {} per policy {}{}",
                            app.max_restarts,
                            app.restart_policy,
                            app.last_error.as_deref().map(|e| format!(", after: {e}")).unwrap_or_default()
                        ),
                        json!({ "restart": n, "after": app.last_error }),
                    )
                    .await;
                self.change(AppChange {
                    restart_count: Some(n),
                    state: Some(AppState::Starting),
                    ..Default::default()
                })
                .await?;
                self.check_may_act()?;
                let r = driver.start(&ctx).await;
                // The count stays at n on success too, so the limit means something.
                // A failed start is recorded there; the next check decides the next restart.
                let _ = self.after_start(&*driver, &ctx, r, Some(n)).await?;
                Ok(())
            }
            Restart::GiveUp => {
                let why = format!("gave up after {} restarts", app.restart_count);
                if app.last_error.as_deref().is_some_and(|e| e.starts_with("gave up")) {
                    return Ok(());
                }
                let last = app.last_error.clone().unwrap_or_default();
                self.change(AppChange {
                    state: Some(AppState::Failed),
                    last_error: Some(Some(format!("{why}: {last}"))),
                    ..Default::default()
                })
                .await?;
                self.shared.event("app.failed", Some(app.id), None, format!("{why}: {last}"), json!({})).await;
                Ok(())
            }
        }
    }

    /// Hand the application off: stop what this node runs for it (only for drivers that run it
    /// here, [`Driver::supervises_here`]), then clear the ownership. The event says why, for the next owner's
    /// `app.acquired` (docs/dispatch.md, "Ownership events").
    async fn release(&mut self, why: Takeover) {
        if let (Some(app), Ok((driver, spec))) = (self.app.clone(), self.driver()) {
            if driver.supervises_here() && self.shared.may_act() {
                let ctx = self.ctx(spec, None, json!({}));
                if let Err(e) = driver.stop(&ctx).await {
                    tracing::warn!(app.id = app.id, error = %e, "stopping the process on release failed");
                }
            }
        }
        let (id, epoch) = (self.app_id, self.epoch);
        let event = self.shared.new_event(
            "app.released",
            Some(id),
            None,
            format!("application {id} released ({why})"),
            json!({ "epoch": epoch, "reason": why.as_str() }),
        );
        match self.shared.apps.release(id, epoch, event).await {
            Ok(true) => {
                tracing::info!(app.id = id, ring.epoch = epoch, "released application");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(app.id = id, error = %e, "could not release the application; it is freed when this node leaves")
            }
        }
    }
}
