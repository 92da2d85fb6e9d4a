//! The claim pump: while a backlog drains on the only member of the ring, a blocking thread
//! claims batch after batch and hands each to the dispatcher through a channel that holds two.
//!
//! Why: with the next claim sent by the dispatcher (a task spawned when a full batch came back),
//! every batch went back and forth between the blocking pool, the spawned task and the
//! dispatcher before the next claim left; the claim stream kept the database busy for 67 % of
//! a drain and sat idle 1.5 ms between claims (server log, docs/benchmarks.md#round-trips). The
//! pump sends the next claim as soon as the channel has room for its rows.
//!
//! Must never: claim rows the channel cannot take — it reserves a slot before each claim, so a
//! claimed batch is always delivered, and no pooled connection is held while it waits for the
//! dispatcher (the completer, the heartbeat and the application writer share the pool); claim
//! once this node may not act or the view it started under has changed (checked before every
//! claim); write anything once fenced ([`Pump::abort`]: the claim in flight, if any, stays
//! claimed at the old epoch and is recovered like the rows of the jobs aborted with it). At
//! most two batches are claimed ahead of the one being handed out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::held::Claimed;
use super::{Dispatcher, Shared};
use crate::store::claim;
use crate::store::complete;
use crate::store::models::Claim;
use crate::store::StoreError;

/// A running pump: the dispatcher's end of the channel, and the pump's thread.
pub(super) struct Pump {
    rx: mpsc::Receiver<Result<Vec<Claimed>, StoreError>>,
    task: JoinHandle<()>,
}

impl Pump {
    /// Start claiming `batch` rows at a time after id `after`, as this node at `epoch`, until a
    /// claim comes back short or fails, the view changes, this node may no longer act, or the
    /// dispatcher closes the channel.
    pub(super) fn start(shared: Arc<Shared>, after: i64, batch: i64, epoch: i64) -> Pump {
        let (tx, rx) = mpsc::channel(2);
        let runtime = tokio::runtime::Handle::current();
        // On a blocking thread of its own: between two claims the pump waits only for room in
        // the channel, never for a turn among the runtime's tasks (hundreds of jobs in a drain;
        // as an async task the pump drained 8–15 % slower, docs/benchmarks.md#round-trips).
        let task = tokio::task::spawn_blocking(move || {
            let mut after = after;
            let plans = shared.store.plans();
            // A slot first, then a connection, then the claim: what is claimed is delivered.
            while let Ok(slot) = runtime.block_on(tx.reserve()) {
                if !shared.may_act() || shared.membership.borrow().view.epoch as i64 != epoch {
                    tracing::debug!(cursor = after, "the pump stops: this node may not act, or the view changed");
                    return;
                }
                let node = shared.node_id.clone();
                let fence = shared.fence();
                let claimed =
                    shared.store.run_here(|c| claim::claim_next(c, &plans, after, batch, &node, epoch, fence));
                let next = match &claimed {
                    Ok(rows) => Dispatcher::summary(rows.iter(), batch),
                    Err(_) => (false, None),
                };
                slot.send(claimed.map(|rows| shared.claimed(rows)));
                match next {
                    (true, Some(last)) => after = last,
                    _ => {
                        tracing::debug!(cursor = after, "the pump stops: a claim came back short or failed");
                        return;
                    }
                }
            }
        });
        Pump { rx, task }
    }

    /// The next batch; `None` once the pump has stopped and every batch was taken.
    pub(super) async fn next(&mut self) -> Option<Result<Vec<Claimed>, StoreError>> {
        self.rx.recv().await
    }

    /// Fenced: stop without writing. The claim in flight finishes (a blocking thread cannot be
    /// cancelled) and its rows, like those in the channel, stay claimed at this epoch; the
    /// pump finds the channel closed and claims no more.
    pub(super) fn abort(mut self) {
        self.rx.close();
    }

    /// Stopping, or the view changed: refuse further claims, take the batches claimed ahead
    /// and give them back — pending again, the attempt uncounted — unless this node may no
    /// longer act. Waits at most `within` for that: a claim in flight on a database that does
    /// not answer is given back by a task of its own when it returns (or, if this process ends
    /// first, its rows are recovered as the orphans of a departed node). Rows that could not be
    /// given back are recovered by this node once nothing holds them ([`super::held`]).
    pub(super) async fn stop(mut self, shared: Arc<Shared>, within: Duration) {
        self.rx.close();
        let mut rx = self.rx;
        let give_back = tokio::spawn(async move {
            let mut rows = Vec::new();
            while let Some(batch) = rx.recv().await {
                match batch {
                    Ok(batch) => rows.extend(batch),
                    Err(e) => tracing::warn!(error = %e, "a claim made ahead failed"),
                }
            }
            if rows.is_empty() || !shared.may_act() {
                return;
            }
            let node = shared.node_id.clone();
            let ids: Vec<(i64, Claim)> = rows.iter().map(|c| (c.task.id, c.task.claim())).collect();
            match shared.store.run(move |c| complete::unclaim_all(c, &ids, &node)).await {
                Ok(n) => tracing::info!(tasks = n, "gave back the tasks claimed ahead (stop or view change)"),
                Err(e) => tracing::warn!(
                    error = %e, tasks = rows.len(),
                    "could not give back the tasks claimed ahead (stop or view change); they are recovered once nothing holds them"
                ),
            }
        });
        match tokio::time::timeout(within, give_back).await {
            // Every batch was taken: the pump is past its last claim.
            Ok(_) => {
                let _ = self.task.await;
            }
            Err(_) => {
                tracing::warn!(within = ?within, "the claim in flight is slow; its rows are given back when it returns")
            }
        }
    }
}
