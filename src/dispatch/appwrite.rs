//! Batched application reads and writes: every actor's refresh and state change goes through
//! one task that takes all the requests waiting when it wakes and serves them together (one
//! statement for the writes, one for the reads; a transaction where acquisitions need several).
//! A command's last state change does not come here: it goes with the command's outcome to the
//! completer ([`super::complete`]); nor does the read before a command claimed by its turn,
//! which the turn claim makes itself (`Dispatcher::turn_round`).
//!
//! Why: each command an actor runs reads its application once and changes its state up to
//! three times, with an event. Sent one by one, 1,000 applications cost ~8 single-row statements
//! per command and capped application commands at ~1 k/s, with PostgreSQL's CPU spent parsing
//! and planning them (docs/benchmarks.md#round-trips). Batched as the completer batches
//! completions, the same work is two statements per batch. Under light load a batch is one
//! request, so nothing waits for a batch to fill.
//!
//! Must never: write without the (owner, epoch) condition of the actor that asked (each row of
//! a batch keeps its own epoch, invariant I3), or let one request see another's answer.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::complete::{cut_at_repeats, gather};
use crate::membership::MembershipState;
use crate::store::apps::{self, AppAcquire, AppChange, AppRelease, AppWrite};
use crate::store::fence::Fence;
use crate::store::models::{Application, NewEvent};
use crate::store::Store;

/// Requests served together, at most.
const MAX_BATCH: usize = 1024;

/// What an acquisition found.
pub enum Acquisition {
    /// This node owns the application now.
    Taken(Box<Application>),
    /// Another live member holds it (or the fence refused it): try again later.
    Held,
    /// The application does not exist.
    Missing,
}

/// Where the writer answers a request.
type Answer<T> = oneshot::Sender<Result<T, String>>;

/// A request served with others in one batch of reads and writes ([`serve`]).
enum Request {
    Acquire { acquire: Box<AppAcquire>, done: Answer<Acquisition> },
    Read { id: i64, done: Answer<Option<Application>> },
    Write { write: Box<AppWrite>, done: Answer<bool> },
}

/// What reaches the writer: a request, or a release (served apart, [`release`]).
enum Item {
    Serve(Request),
    Release(Box<AppRelease>, Answer<bool>),
}

/// Handle to the application writer.
#[derive(Clone)]
pub struct AppWriter {
    tx: mpsc::UnboundedSender<Item>,
}

const STOPPED: &str = "the application writer has stopped";

impl AppWriter {
    /// Start the writer for `node`, whose acquisitions and writes are fenced by its
    /// `membership` session (`store::fence::Fence`); `released` moves on after each batch that
    /// released applications (this node's own waiting actors try again at once).
    pub fn spawn(
        store: Store,
        node: String,
        membership: watch::Receiver<MembershipState>,
        released: std::sync::Arc<watch::Sender<u64>>,
    ) -> AppWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, node, membership, released, rx));
        AppWriter { tx }
    }

    /// Acquire application `id` at `epoch` ([`apps::acquire_app`]), unless another of the `live`
    /// members holds it.
    pub async fn acquire(
        &self,
        id: i64,
        epoch: i64,
        live: Vec<String>,
        event: NewEvent,
    ) -> Result<Acquisition, String> {
        let (done, wait) = oneshot::channel();
        let acquire = Box::new(AppAcquire { id, epoch, live, event });
        self.tx.send(Item::Serve(Request::Acquire { acquire, done })).map_err(|_| STOPPED.to_string())?;
        wait.await.map_err(|_| STOPPED.to_string())?
    }

    /// Give application `id` up, owned at `epoch`, recording `event` when it applied
    /// ([`apps::release_apps`]): Ok(false) when this node did not own it at that epoch.
    pub async fn release(&self, id: i64, epoch: i64, event: NewEvent) -> Result<bool, String> {
        let (done, wait) = oneshot::channel();
        let release = Box::new(AppRelease { id, epoch, event });
        self.tx.send(Item::Release(release, done)).map_err(|_| STOPPED.to_string())?;
        wait.await.map_err(|_| STOPPED.to_string())?
    }

    /// The application, read fresh; None when it does not exist.
    pub async fn read(&self, id: i64) -> Result<Option<Application>, String> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Item::Serve(Request::Read { id, done })).map_err(|_| STOPPED.to_string())?;
        wait.await.map_err(|_| STOPPED.to_string())?
    }

    /// Apply `change` to application `id` owned at `epoch`, and record `event` when it applied:
    /// Ok(false) when this node does not own it at that epoch (nothing written).
    pub async fn write(&self, id: i64, epoch: i64, change: AppChange, event: Option<NewEvent>) -> Result<bool, String> {
        let (done, wait) = oneshot::channel();
        let write = Box::new(AppWrite { id, epoch, change, event });
        self.tx.send(Item::Serve(Request::Write { write, done })).map_err(|_| STOPPED.to_string())?;
        wait.await.map_err(|_| STOPPED.to_string())?
    }
}

async fn run(
    store: Store,
    node: String,
    membership: watch::Receiver<MembershipState>,
    released: Arc<watch::Sender<u64>>,
    mut rx: mpsc::UnboundedReceiver<Item>,
) {
    while let Some(first) = rx.recv().await {
        let batch = gather(&mut rx, first, MAX_BATCH).await;
        // Two writes about one application in one statement would apply only one of them. An
        // actor has one request out at a time, so this does not happen; if it ever did, the
        // batch is cut before the repeat and the rest follows in order.
        let key = |item: &Item| match item {
            Item::Serve(Request::Write { write, .. }) => Some((write.id, false)),
            Item::Release(release, _) => Some((release.id, false)),
            Item::Serve(Request::Acquire { acquire, .. }) => Some((acquire.id, true)),
            Item::Serve(Request::Read { .. }) => None,
        };
        for part in cut_at_repeats(batch, key) {
            let (mut releases, mut rest) = (Vec::new(), Vec::new());
            for item in part {
                match item {
                    Item::Release(release, done) => releases.push((release, done)),
                    Item::Serve(request) => rest.push(request),
                }
            }
            if !releases.is_empty() {
                let (n, began) = (releases.len(), std::time::Instant::now());
                release(&store, &node, releases).await;
                released.send_modify(|g| *g += 1);
                tracing::debug!(
                    batch.releases = n,
                    batch.ms = began.elapsed().as_millis() as u64,
                    "application releases written"
                );
            }
            if !rest.is_empty() {
                // Counted only for the debug log: a batch is up to 1,024 requests.
                let counts = tracing::enabled!(tracing::Level::DEBUG).then(|| {
                    let count = |f: fn(&Request) -> bool| rest.iter().filter(|i| f(i)).count();
                    let acquires = count(|r| matches!(r, Request::Acquire { .. }));
                    let writes = count(|r| matches!(r, Request::Write { .. }));
                    (acquires, writes, rest.len() - acquires - writes)
                });
                let began = std::time::Instant::now();
                serve(&store, &node, super::current_fence(&membership), rest).await;
                if let Some((acquires, writes, reads)) = counts {
                    tracing::debug!(
                        batch.acquires = acquires,
                        batch.writes = writes,
                        batch.reads = reads,
                        batch.ms = began.elapsed().as_millis() as u64,
                        "application batch served"
                    );
                }
            }
        }
    }
}

async fn serve(store: &Store, node: &str, fence: Fence, batch: Vec<Request>) {
    let (mut acquires, mut writes, mut reads) = (Vec::new(), Vec::new(), Vec::new());
    for item in &batch {
        match item {
            Request::Acquire { acquire, .. } => acquires.push((**acquire).clone()),
            Request::Read { id, .. } => reads.push(*id),
            Request::Write { write, .. } => writes.push((**write).clone()),
        }
    }
    let (node, acquires, writes, reads) = (node.to_string(), Arc::new(acquires), Arc::new(writes), Arc::new(reads));
    let result = {
        let (acquires, writes, reads) = (acquires.clone(), writes.clone(), reads.clone());
        store.run(move |c| apps::apps_batch(c, &node, fence, &acquires, &writes, &reads)).await
    };
    match result {
        Ok(done) => {
            let (mut acquired, mut flags) = (done.acquired.into_iter(), done.written.into_iter());
            let missing: std::collections::HashSet<i64> = done.missing.into_iter().collect();
            let apps: std::collections::HashMap<i64, Application> = done.read.into_iter().map(|a| (a.id, a)).collect();
            for item in batch {
                match item {
                    Request::Acquire { acquire, done } => {
                        let found = match acquired.next().flatten() {
                            Some(app) => Acquisition::Taken(Box::new(app)),
                            None if missing.contains(&acquire.id) => Acquisition::Missing,
                            None => Acquisition::Held,
                        };
                        let _ = done.send(Ok(found));
                    }
                    Request::Read { id, done } => {
                        let _ = done.send(Ok(apps.get(&id).cloned()));
                    }
                    Request::Write { done, .. } => {
                        let _ = done.send(Ok(flags.next().unwrap_or(false)));
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(acquires = acquires.len(), writes = writes.len(), reads = reads.len(), error = %e,
                "application batch failed");
            let msg = e.to_string();
            for item in batch {
                match item {
                    Request::Acquire { done, .. } => {
                        let _ = done.send(Err(msg.clone()));
                    }
                    Request::Read { done, .. } => {
                        let _ = done.send(Err(msg.clone()));
                    }
                    Request::Write { done, .. } => {
                        let _ = done.send(Err(msg.clone()));
                    }
                }
            }
        }
    }
}

/// Serve releases together ([`apps::release_apps`]); not fenced: clearing an ownership this
/// node holds at its epoch takes nothing from anyone.
async fn release(store: &Store, node: &str, batch: Vec<(Box<AppRelease>, Answer<bool>)>) {
    let (releases, dones): (Vec<AppRelease>, Vec<_>) = batch.into_iter().map(|(r, done)| (*r, done)).unzip();
    let (node, n) = (node.to_string(), releases.len());
    match store.run(move |c| apps::release_apps(c, &node, &releases)).await {
        Ok(flags) => {
            for (done, flag) in dones.into_iter().zip(flags) {
                let _ = done.send(Ok(flag));
            }
        }
        Err(e) => {
            tracing::warn!(releases = n, error = %e, "application releases failed");
            for done in dones {
                let _ = done.send(Err(e.to_string()));
            }
        }
    }
}
