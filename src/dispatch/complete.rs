//! Batched completion: outcomes of finished tasks are written many per transaction.
//!
//! Why: a commit (an fsync) per finished task caps a node at a few thousand tasks per second on
//! PostgreSQL, and far fewer on SQLite. The completer takes every outcome waiting when it wakes
//! (up to `MAX_BATCH`) and writes them in one transaction; under light load a batch is one row,
//! so nothing waits for a batch to fill. Each row's update stays conditional on the claim's
//! owner and epoch (I3), and each caller learns whether its own row was written.

use tokio::sync::{mpsc, oneshot};

use crate::store::dispatch::{self as q, Outcome};
use crate::store::Store;

/// Outcomes written per transaction, at most.
const MAX_BATCH: usize = 512;

struct Item {
    id: i64,
    epoch: i64,
    outcome: Outcome,
    done: oneshot::Sender<Result<bool, String>>,
}

/// Handle to the completer task.
#[derive(Clone)]
pub struct Completer {
    tx: mpsc::UnboundedSender<Item>,
}

impl Completer {
    /// Start the completer for `node`.
    pub fn spawn(store: Store, node: String) -> Completer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, node, rx));
        Completer { tx }
    }

    /// Record `outcome` for task `id` claimed at `epoch`: Ok(true) when written, Ok(false) when
    /// the row is no longer ours, Err when the database failed.
    pub async fn finish(&self, id: i64, epoch: i64, outcome: Outcome) -> Result<bool, String> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Item { id, epoch, outcome, done }).map_err(|_| "the completer has stopped".to_string())?;
        wait.await.map_err(|_| "the completer has stopped".to_string())?
    }
}

async fn run(store: Store, node: String, mut rx: mpsc::UnboundedReceiver<Item>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let rows: Vec<(i64, i64, Outcome)> = batch.iter().map(|i| (i.id, i.epoch, i.outcome.clone())).collect();
        let node = node.clone();
        let written = store.run(move |c| q::finish_batch(c, &node, &rows)).await;
        match written {
            Ok(flags) => {
                for (item, ok) in batch.into_iter().zip(flags) {
                    let _ = item.done.send(Ok(ok));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for item in batch {
                    let _ = item.done.send(Err(msg.clone()));
                }
            }
        }
    }
}
