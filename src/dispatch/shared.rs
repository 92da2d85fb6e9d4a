//! What the dispatcher, its actors and its job executors share: the store, the drivers, this
//! node's membership as every write as owner carries it, the wake-ups, and the writers that
//! take outcomes down to the database ([`super::complete`], [`super::appwrite`]).
//!
//! Must never: decide anything. It holds handles and answers questions about this node's right
//! to act; the decisions are in the loop ([`super::rounds`]), the actors and the job executor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::held::Held;
use super::record::{current_fence, dispatcher_event, record_event};
use super::slots::Slots;
use super::{appwrite, complete, start, wake};
use crate::config::DispatchConfig;
use crate::drivers::{ActBy, DriverError, Registry};
use crate::membership::MembershipState;
use crate::metrics::Metrics;
use crate::store::fence::Fence;
use crate::store::models::NewEvent;
use crate::store::Store;

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
    /// Wakes the dispatcher (NOTIFY, local inserts).
    pub wake: Arc<Notify>,
    /// Fan-out parents to gather now: a child ended here ([`wake::Parents`]).
    pub(super) parents: Arc<wake::Parents>,
    /// Applications whose command just finished, so their next command may be claimed
    /// ([`Shared::turn`]); `turn` wakes the dispatcher for them.
    pub(super) turns: std::sync::Mutex<Vec<i64>>,
    pub(super) turn: Notify,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Jobs executing at once (`dispatch.max_concurrency`), taken in claim order ([`Slots`]);
    /// held only while a driver runs, not while the outcome is written.
    pub(super) exec_slots: Slots,
    pub(super) completer: complete::Completer,
    /// The start marks of claimed jobs ([`start`]).
    pub(super) starts: Arc<start::Starts>,
    /// Actors' application reads and writes, batched.
    pub(super) apps: appwrite::AppWriter,
    /// The rows claimed here that an executor holds ([`held`]).
    pub(super) held: Arc<Held>,
    /// This node's membership deadline as drivers read it at the last moment ([`ActBy`]).
    pub(super) act_by: ActBy,
    /// Changes of schedules, traffic policies and applications' placement, announced by the
    /// database ([`wake::listen`]) or by this node's API ([`wake::Config::announce`]).
    pub config: Arc<watch::Sender<wake::Config>>,
    /// Moves on whenever applications were released, by this node or (announced by the database)
    /// by another: an actor waiting for a previous owner's release tries again at once.
    pub(super) released: Arc<watch::Sender<u64>>,
    /// How long a row claimed under a view newer than this node's is left alone before it is
    /// recovered (`store::recover::recover`): the lease TTL on etcd (a member sees a join
    /// within it), none for the standalone node (no other node can be a member beside it).
    pub(super) newer_claim_grace: Duration,
    /// True while the dispatcher acts; false once it has stopped every actor and supervised
    /// process (membership leaves the ring only then: `membership::health`).
    pub acting: watch::Sender<bool>,
}

/// How the dispatcher and this node's membership talk: the state it follows, how long a row
/// claimed under a view newer than its own is left alone, and where it says whether it acts.
pub struct MembershipLink {
    /// The membership state as its backend publishes it.
    pub state: watch::Receiver<MembershipState>,
    /// See [`Shared`]'s field of the same name.
    pub newer_claim_grace: Duration,
    /// True while the dispatcher acts ([`Shared`]'s field of the same name).
    pub acting: watch::Sender<bool>,
}

impl Shared {
    /// Everything the dispatcher needs; starts the batched writers (outcomes, start marks).
    pub fn new(
        store: Store,
        drivers: Registry,
        node_id: String,
        link: MembershipLink,
        cfg: DispatchConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Shared> {
        let MembershipLink { state: membership, newer_claim_grace, acting } = link;
        let wake = Arc::new(Notify::new());
        let parents = Arc::new(wake::Parents::default());
        let completer = complete::Completer::spawn(
            store.clone(),
            node_id.clone(),
            membership.clone(),
            metrics.clone(),
            parents.clone(),
        );
        let released = Arc::new(watch::Sender::new(0));
        let apps = appwrite::AppWriter::spawn(store.clone(), node_id.clone(), membership.clone(), released.clone());
        let exec_slots = Slots::new(cfg.max_concurrency as usize);
        let held = Arc::new(Held::new(metrics.tasks_held.clone()));
        let starts = start::Starts::spawn(store.clone(), node_id.clone(), membership.clone(), held.clone());
        let watched = membership.clone();
        let act_by = ActBy::new(move |now, epoch| watched.borrow().acting_until(now, epoch));
        Arc::new(Shared {
            store,
            drivers,
            node_id,
            membership,
            cfg,
            wake,
            parents,
            turns: std::sync::Mutex::new(Vec::new()),
            turn: Notify::new(),
            metrics,
            exec_slots,
            completer,
            starts,
            apps,
            held,
            act_by,
            config: Arc::new(watch::channel(wake::Config::default()).0),
            released,
            newer_claim_grace,
            acting,
        })
    }

    /// Application `app_id` finished a command: its next one may be claimed now.
    pub(super) fn turn(&self, app_id: i64) {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).push(app_id);
        self.turn.notify_one();
    }

    /// Up to `max` applications of [`Shared::turn`], each once, oldest first.
    pub(super) fn take_turns(&self, max: usize) -> Vec<i64> {
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

    /// Rows this node just claimed, held by its executors from now on ([`Held`]), their jobs'
    /// starts followed ([`start::Starts`]).
    pub(super) fn claimed(&self, rows: Vec<crate::store::models::Task>) -> Vec<super::held::Claimed> {
        self.starts.claimed(&rows);
        self.held.claimed(rows)
    }

    /// True when this node may claim and act right now.
    pub fn may_act(&self) -> bool {
        self.membership.borrow().may_act(Instant::now())
    }

    /// A driver's answer as the executors take it. `Fenced` (the driver began nothing: the
    /// deadline it read had passed) is None when this node may not act, so nothing is written
    /// about it; when it may, it was held up past that deadline rather than paused (its spawner
    /// thread busy), and the call failed as any other, to be retried.
    pub(super) fn unfenced<T>(&self, answer: Result<T, DriverError>) -> Option<Result<T, DriverError>> {
        match answer {
            Err(DriverError::Fenced(why)) => self.may_act().then_some(Err(DriverError::Failed(why))),
            answer => Some(answer),
        }
    }

    /// This node's session as every claim and recovery carries it (`current_fence`).
    pub fn fence(&self) -> Fence {
        current_fence(&self.membership)
    }

    pub(super) fn snapshot(&self) -> MembershipState {
        self.membership.borrow().clone()
    }

    /// An event written by this node's dispatcher.
    pub(super) fn new_event(
        &self,
        kind: &str,
        app_id: Option<i64>,
        task_id: Option<i64>,
        message: String,
        data: Value,
    ) -> NewEvent {
        dispatcher_event(&self.node_id, kind, app_id, task_id, message, data)
    }

    /// Record an event written by this node's dispatcher; failures are logged, never fatal.
    pub(super) async fn event(
        &self,
        kind: &str,
        app_id: Option<i64>,
        task_id: Option<i64>,
        message: String,
        data: Value,
    ) {
        record_event(&self.store, self.new_event(kind, app_id, task_id, message, data)).await;
    }
}
