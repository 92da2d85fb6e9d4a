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
//! The modules, by duty (calls go one way: down from the loop to the executors, and from the
//! executors down to the writers — nothing climbs back up into the loop):
//!
//! - `rounds`: the loop (`Dispatcher`): wake-ups, rounds of read and claim, handing out.
//! - `strategy`: which claim a round makes (pure, property-tested).
//! - `window`: a member of a larger ring claiming a backlog of jobs by id.
//! - `pump`: the only member claiming a backlog ahead of handing it out.
//! - `reconcile`: adopt and release applications as the ring moves; traffic switches.
//! - `maintenance`: recovery of orphaned rows, pruning, vacuuming.
//! - `actor`: one per owned application; `jobs`: the job executor and fan-out.
//! - `complete`, `start` and `appwrite`: the batched writers of outcomes, jobs' start marks and
//!   application changes; `slots`: jobs' execution slots, taken in claim order.
//! - `shared`: the handles all of them share; `record`: the fence and events writers stamp; `held`: the rows an executor holds.
//! - `place` (who may place what), `plan` (what a row asks for) and `strategy`: pure rules.
//! - `wake`: NOTIFY and the in-process wake-up.
//!
//! Must never: hold a transaction while a command runs (claims and completions are single
//! statements); claim or act while membership says this node may not; write about work it does
//! not own at the epoch it claimed it (every completion is conditional, invariant I3 in
//! docs/design.md), nor any write as owner past its membership deadline or under an epoch older
//! than its session (each carries a [`Fence`](crate::store::fence::Fence), which the database
//! checks against its own clock).

mod actor;
mod appwrite;
mod complete;
mod held;
mod jobs;
mod maintenance;
pub mod place;
pub mod plan;
mod pump;
mod reconcile;
pub(crate) mod record;
mod rounds;
mod shared;
mod slots;
mod start;
pub mod strategy;
pub mod wake;
mod window;
mod workflow;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::jobs::traffic::Policy;
use crate::ring::Selector;
use crate::store::DbUrl;
use held::Claimed;
use maintenance::Maintenance;
use place::AppPlace;
pub(crate) use record::current_fence;
pub use shared::{MembershipLink, Shared};
use window::JobWindow;

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
            shared.released.clone(),
            shared.metrics.notify_listening.clone(),
            listener_stop.clone(),
        ));
    }
    let shared_for_maintenance = shared.clone();
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
        maintenance: Maintenance::new(shared_for_maintenance),
        unplaced_logged: (0, 0),
        fenced: true,
        seen_epoch: 0,
        seen_app_generation: 0,
    };
    d.run(shutdown).await;
    listener_stop.cancel();
}

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
    /// database busy for 62 % of a drain (server log, docs/benchmarks.md#round-trips), idle while each batch
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
    /// Recovery of orphaned rows, pruning and vacuuming ([`maintenance`]).
    maintenance: Maintenance,
    /// (epoch, count) of the last "no member matches" warning, so it is logged once per change.
    unplaced_logged: (u64, usize),
    fenced: bool,
    seen_epoch: u64,
    /// The applications' ring last reconciled ([`crate::membership::MembershipState::app_generation`]).
    seen_app_generation: u64,
}
