//! The claim pump: while a backlog drains on the only member of the ring, one blocking thread
//! claims batch after batch on one connection, and hands each batch to the dispatcher through
//! a channel that holds one.
//!
//! Why: with the next claim sent by the dispatcher (a task spawned when a full batch came back),
//! every batch went back and forth between the blocking pool, the spawned task and the
//! dispatcher before the next claim left; the claim stream kept the database busy for 67 % of
//! a drain and sat idle 1.5 ms between claims (server log, docs/benchmarks.md session 8). The
//! pump sends the next claim as soon as the rows of the last one are decoded.
//!
//! Must never: claim once this node may not act or the view it started under has changed (it
//! checks both before every claim, and stops); let claimed rows disappear — a batch the
//! dispatcher will not take (it is stopping) is given back, pending again with the attempt
//! uncounted, unless the node is fenced (then its rows are orphans at the old epoch, recovered
//! like those of an aborted job). At most three batches are claimed ahead of the dispatcher:
//! the one in the channel, the one the pump holds waiting to send, and none other.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Shared;
use crate::store::dispatch as q;
use crate::store::models::Task;
use crate::store::StoreError;

/// A running pump: the dispatcher's end of the channel, and the pump's task.
pub(super) struct Pump {
    rx: mpsc::Receiver<Result<Vec<Task>, StoreError>>,
    task: JoinHandle<()>,
}

impl Pump {
    /// Start claiming `batch` rows at a time after id `after`, as `node` at `epoch`, until a
    /// claim comes back short, the view changes or this node may no longer act.
    pub(super) fn start(shared: Arc<Shared>, after: i64, batch: i64, epoch: i64) -> Pump {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let (store, errors) = (shared.store.clone(), tx.clone());
            let node = shared.node_id.clone();
            let mut after = after;
            let pumped = store
                .run(move |c| {
                    while shared.may_act() && shared.membership.borrow().view.epoch as i64 == epoch {
                        let claimed = q::claim_next(c, after, batch, &node, epoch)?;
                        let (full, last) = (claimed.len() as i64 == batch, claimed.iter().map(|t| t.id).max());
                        if let Err(mpsc::error::SendError(back)) = tx.blocking_send(Ok(claimed)) {
                            // The dispatcher is stopping: nobody will run these rows.
                            if let (true, Ok(rows)) = (shared.may_act(), back) {
                                give_back(c, &rows, &node);
                            }
                            return Ok(());
                        }
                        match (full, last) {
                            (true, Some(last)) => after = last,
                            _ => return Ok(()),
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = pumped {
                let _ = errors.send(Err(e)).await;
            }
        });
        Pump { rx, task }
    }

    /// The next batch; `None` once the pump has stopped and every batch was taken.
    pub(super) async fn next(&mut self) -> Option<Result<Vec<Task>, StoreError>> {
        self.rx.recv().await
    }

    /// Fenced: stop without writing. The claim in flight finishes (a blocking thread cannot be
    /// cancelled) and its rows, like those in the channel, stay claimed at this epoch.
    pub(super) fn abort(mut self) {
        self.rx.close();
        self.task.abort();
    }

    /// Stopping gracefully: refuse further batches, give back the ones already claimed, and wait
    /// until the pump has given back its own.
    pub(super) async fn stop(mut self, shared: &Shared) {
        self.rx.close();
        let mut rows = Vec::new();
        while let Some(batch) = self.rx.recv().await {
            rows.extend(batch.into_iter().flatten());
        }
        if !rows.is_empty() {
            let node = shared.node_id.clone();
            let given = shared.store.run(move |c| Ok(give_back(c, &rows, &node))).await;
            if given.is_err() {
                tracing::warn!("could not give back the claims made while stopping; they will be recovered");
            }
        }
        let _ = self.task.await;
    }
}

/// Give back claimed rows this node will not run: pending again, the attempt uncounted.
fn give_back(c: &mut crate::store::AnyConnection, claimed: &[Task], node: &str) -> usize {
    let rows: Vec<(i64, i64)> = claimed.iter().map(|t| (t.id, t.owner_epoch.unwrap_or_default())).collect();
    match q::unclaim_all(c, &rows, node) {
        Ok(n) => {
            tracing::info!(tasks = n, "gave back the tasks of a claim made while stopping");
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not give back a claim made while stopping; it will be recovered");
            0
        }
    }
}
