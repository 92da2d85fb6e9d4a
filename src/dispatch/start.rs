//! Start marks: a job's attempt counts when its execution starts, not when it is claimed
//! (docs/design.md#an-attempt-counts-when-execution-starts).
//!
//! Why: a node claims jobs ahead of its free execution slots (the claim-ahead keeps the database
//! busy during a drain), and the attempt is counted in the claim's statement. A node that died
//! with rows claimed and not started charged each an attempt it never used: a job with
//! `max_attempts = 1` failed with `no attempts left` without ever running. Just before a job's
//! driver runs, its executor asks for a durable mark (`started_at`); recovery gives the attempt
//! back to a row without one ([`crate::store::recover::recover`]). The mark is written before the
//! driver runs, so a job that brings its node down still spends its attempt (it cannot loop).
//!
//! The marks are batched as outcomes are ([`super::complete`]): the starter takes every mark
//! waiting when it wakes and writes them in one statement; one batch is in flight at a time and
//! the next gathers meanwhile.
//!
//! Must never: let a driver run before its row's mark is written, or write a mark for a claim this
//! node no longer holds (the statement is conditional on the claim and the writer's deadline).

use tokio::sync::{mpsc, oneshot, watch};

use super::complete::gather;
use super::record::current_fence;
use crate::membership::MembershipState;
use crate::store::complete;
use crate::store::models::{Claim, Task};
use crate::store::Store;

/// Marks written per statement, at most.
const MAX_BATCH: usize = 512;

struct Item {
    id: i64,
    claim: Claim,
    done: oneshot::Sender<Result<bool, String>>,
}

/// The start-mark writer (see the module docs).
#[derive(Clone)]
pub struct Starter {
    tx: mpsc::UnboundedSender<Item>,
}

impl Starter {
    /// Start the writer for `node`, whose marks are fenced by its `membership` deadline.
    pub fn spawn(store: Store, node: String, membership: watch::Receiver<MembershipState>) -> Starter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, node, membership, rx));
        Starter { tx }
    }

    /// Mark `task` started, as its driver is about to run. Ok(true) once written; Ok(false)
    /// when the row is no longer this node's claim (recovered, cancelled, or this node is past
    /// its deadline): the job must not run. Err when the database did not take the mark: the
    /// job must not run either (it is recovered, unstarted, once nothing holds it).
    pub async fn start(&self, task: &Task) -> Result<bool, String> {
        let (done, wait) = oneshot::channel();
        let item = Item { id: task.id, claim: task.claim(), done };
        self.tx.send(item).map_err(|_| "the start-mark writer has stopped".to_string())?;
        wait.await.map_err(|_| "the start-mark writer has stopped".to_string())?
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
        let rows: Vec<(i64, Claim)> = batch.iter().map(|i| (i.id, i.claim)).collect();
        let (node, fence) = (node.clone(), current_fence(&membership));
        // No retry, unlike outcomes: a mark not written leaves the job unstarted, which the
        // executor answers by not running it; its row is recovered with its attempt given back.
        match store.run(move |c| complete::mark_started(c, &node, fence, &rows)).await {
            Ok(flags) => {
                for (item, ok) in batch.into_iter().zip(flags) {
                    let _ = item.done.send(Ok(ok));
                }
            }
            Err(e) => {
                tracing::warn!(rows = batch.len(), error = %e, "could not mark jobs started; they do not run now");
                for item in batch {
                    let _ = item.done.send(Err(e.to_string()));
                }
            }
        }
    }
}
