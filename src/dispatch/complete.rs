//! Batched completion: outcomes of finished tasks are written many per transaction, each
//! application command's with its last write about its application.
//!
//! Why: a commit (an fsync) per finished task caps a node at a few thousand tasks per second on
//! PostgreSQL, and far fewer on SQLite. The completer takes every outcome waiting when it wakes
//! (up to `MAX_BATCH`) and writes them in one transaction; under light load a batch is one row,
//! so nothing waits for a batch to fill. Each row's update stays conditional on the claim's
//! owner and epoch (I3), and each caller learns whether its own row was written.
//!
//! Measured (docs/benchmarks.md#round-trips): writing as soon as the first outcome arrived gave batches of ~7
//! rows while a backlog drained — one commit per 7 tasks. Now, before writing, the completer
//! yields a few times so the jobs that are ready can finish and queue their outcomes (no timer:
//! it costs microseconds, not a wait), and one batch is in flight at a time: the next one fills
//! while it commits (two in flight gave smaller batches and a slower drain, docs/dispatch.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::record::{current_fence, dispatcher_event, record_event};
use super::wake::Parents;
use crate::domain::Action;
use crate::membership::MembershipState;
use crate::metrics::Metrics;
use crate::store::apps::AppWrite;
use crate::store::complete::{self, FinishFlags, Finished, Outcome};
use crate::store::models::{Claim, Task};
use crate::store::Store;

/// Outcomes written per transaction, at most.
const MAX_BATCH: usize = 512;

/// Yields before a batch is cut (each lets ready jobs queue their outcomes).
const GATHER_YIELDS: usize = 4;

struct Item {
    row: Finished,
    done: oneshot::Sender<Result<FinishFlags, String>>,
}

/// The completion writer: the one way down from an executor to the database for a task's
/// outcome. Executors hand it what happened; it writes the row (batched), counts it, records
/// the failure event and wakes a coordinator waiting for the row. Nothing on this path calls
/// back up into the dispatcher.
#[derive(Clone)]
pub struct Completer {
    tx: mpsc::UnboundedSender<Item>,
    store: Store,
    node: String,
    metrics: Arc<Metrics>,
    /// Asks the dispatcher to gather the parent of a child that ended: its coordinator may be
    /// this node.
    parents: Arc<Parents>,
    /// Tasks this node finished since it started (the maintenance looks at the table's dead
    /// rows after enough of them: [`super::maintenance`]).
    finished: Arc<AtomicU64>,
}

impl Completer {
    /// Start the completer for `node`, whose writes are fenced by its `membership` deadline.
    pub fn spawn(
        store: Store,
        node: String,
        membership: watch::Receiver<MembershipState>,
        metrics: Arc<Metrics>,
        parents: Arc<Parents>,
    ) -> Completer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store.clone(), node.clone(), membership, rx));
        Completer { tx, store, node, metrics, parents, finished: Arc::new(AtomicU64::new(0)) }
    }

    /// Tasks this node finished since it started.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Record how a claimed task ended, conditional on our claim. Returns false when the row was
    /// no longer ours (nothing written).
    pub async fn finish(&self, task: &Task, outcome: Outcome) -> bool {
        self.finish_with(task, outcome, None).await.task
    }

    /// [`Completer::finish`] for an application command, with its last write about its
    /// application (`app`), written first: the outcome is written only when `app` applied
    /// (`app: Some(false)`: the application is no longer this node's at that epoch). A failed
    /// database answers that nothing was written and nothing is known of `app`.
    pub async fn finish_with(&self, task: &Task, outcome: Outcome, app: Option<AppWrite>) -> FinishFlags {
        let (id, claim) = (task.id, task.claim());
        match self.write_row(id, claim, outcome.clone(), app).await {
            Ok(flags) if flags.task => {
                self.finished.fetch_add(1, Ordering::Relaxed);
                if let (Some(parent), false) = (task.parent_id, matches!(outcome, Outcome::Retry { .. })) {
                    // The parent's coordinator may be this node: let it gather now.
                    self.parents.look_at(parent);
                }
                let status = match &outcome {
                    Outcome::Succeeded(_) => "succeeded",
                    Outcome::Failed(_) | Outcome::FailedWithResult { .. } => "failed",
                    Outcome::Retry { .. } => "retried",
                };
                // The row's action text is free (rows are written by hand): only known actions
                // become label values, so the label sets stay bounded.
                let action = Action::label(&task.action);
                self.metrics.tasks.get_or_create(&vec![("action", action), ("status", status)]).inc();
                if let Some(claimed) = task.claimed_at {
                    let secs =
                        (chrono::Utc::now().naive_utc() - claimed).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    self.metrics.execution.get_or_create(&vec![("action", action)]).observe(secs);
                }
                match &outcome {
                    Outcome::Succeeded(_) => tracing::debug!(task.id = id, app.id = ?task.app_id, "task succeeded"),
                    Outcome::Failed(error) | Outcome::FailedWithResult { error, .. } => {
                        tracing::warn!(task.id = id, app.id = ?task.app_id, error = %error, "task failed");
                        let ev = dispatcher_event(
                            &self.node,
                            "task.failed",
                            task.app_id,
                            Some(id),
                            error.clone(),
                            serde_json::json!({
                                "action": task.action, "attempts": task.attempts,
                            }),
                        );
                        record_event(&self.store, ev).await;
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

    /// Queue `outcome` for task `id` held under `claim`, with `app` (an application command's
    /// last write about its application) first, and wait for its batch: the outcome is written
    /// only when `app` applied. Err when the completer has stopped.
    async fn write_row(
        &self,
        id: i64,
        claim: Claim,
        outcome: Outcome,
        app: Option<AppWrite>,
    ) -> Result<FinishFlags, String> {
        let (done, wait) = oneshot::channel();
        let row = Finished { id, claim, outcome, app };
        self.tx.send(Item { row, done }).map_err(|_| "the completer has stopped".to_string())?;
        wait.await.map_err(|_| "the completer has stopped".to_string())?
    }
}

async fn run(
    store: Store,
    node: String,
    membership: watch::Receiver<MembershipState>,
    mut rx: mpsc::UnboundedReceiver<Item>,
) {
    while let Some(first) = rx.recv().await {
        let batch = gather(&mut rx, first, MAX_BATCH).await;
        // Two writes about one application in one statement would let both outcomes through on
        // one applied write. An actor has one outcome out at a time, so this does not happen;
        // if it ever did, the batch is cut before the repeat and the rest follows in order.
        // One batch in flight: the next one gathers in the channel while this one commits.
        for part in cut_at_repeats(batch, |i| i.row.app.as_ref().map(|w| w.id)) {
            write(&store, &node, &membership, part).await;
        }
    }
}

/// `first` and whatever else is waiting in `rx`, up to `max`, after a few yields that let the
/// tasks that are ready queue theirs (no timer: microseconds, not a wait).
pub(super) async fn gather<T>(rx: &mut mpsc::UnboundedReceiver<T>, first: T, max: usize) -> Vec<T> {
    let mut batch = vec![first];
    for round in 0..=GATHER_YIELDS {
        while batch.len() < max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if round == GATHER_YIELDS || batch.len() >= max {
            break;
        }
        tokio::task::yield_now().await;
    }
    batch
}

/// `batch` in order, cut before every item whose `key` an earlier item of the same part had
/// (items without a key are never cut before).
pub(super) fn cut_at_repeats<T, K: Eq + std::hash::Hash>(batch: Vec<T>, key: impl Fn(&T) -> Option<K>) -> Vec<Vec<T>> {
    let mut parts = Vec::new();
    let (mut part, mut seen) = (Vec::new(), std::collections::HashSet::new());
    for item in batch {
        if let Some(k) = key(&item) {
            if seen.contains(&k) {
                parts.push(std::mem::take(&mut part));
                seen.clear();
            }
            seen.insert(k);
        }
        part.push(item);
    }
    parts.push(part);
    parts
}

/// First and longest wait between attempts at a batch that could not be written.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Write one batch, retrying until the database takes it. Giving up would leave its rows
/// `running` under this node's live claim, which no one recovers (invariant I2); retrying is
/// safe because every row's update is conditional on the claim — a batch that did commit before
/// its answer was lost writes no outcome the second time (its rows read as no longer ours, and
/// are answered so); its application writes apply again unchanged, and record no second event.
/// Each attempt carries this node's session at that moment
/// ([`Fence`](crate::store::fence::Fence)): past its deadline, or for rows claimed in an earlier
/// session, nothing is written and the rows are answered as no longer ours (recovered by their
/// new owners).
async fn write(store: &Store, node: &str, membership: &watch::Receiver<MembershipState>, batch: Vec<Item>) {
    let rows: Arc<Vec<Finished>> = Arc::new(batch.iter().map(|i| i.row.clone()).collect());
    let mut wait = RETRY_FIRST;
    for attempt in 1.. {
        let (node, rows, fence) = (node.to_string(), rows.clone(), current_fence(membership));
        match store.run(move |c| complete::finish_batch(c, &node, fence, &rows)).await {
            Ok(flags) => {
                if attempt > 1 {
                    tracing::info!(rows = batch.len(), attempt, "task outcomes written after a retry");
                }
                for (item, ok) in batch.into_iter().zip(flags) {
                    let _ = item.done.send(Ok(ok));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(rows = batch.len(), attempt, error = %e, retry.in_ms = wait.as_millis() as u64,
                    "could not write task outcomes; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cut_at_repeats;

    #[test]
    fn a_batch_is_cut_before_each_repeated_key_and_keyless_items_never_cut_it() {
        let batch = vec![(1, Some('a')), (2, None), (3, Some('b')), (4, None), (5, Some('a')), (6, Some('a'))];
        let parts: Vec<Vec<i32>> =
            cut_at_repeats(batch, |i| i.1).into_iter().map(|p| p.into_iter().map(|i| i.0).collect()).collect();
        assert_eq!(parts, vec![vec![1, 2, 3, 4], vec![5], vec![6]]);
        assert_eq!(cut_at_repeats(Vec::<(i32, Option<char>)>::new(), |i| i.1).len(), 1);
    }
}
