//! Start marks: a job's attempt counts when its execution starts, not when it is claimed
//! (docs/design.md#an-attempt-counts-when-execution-starts).
//!
//! Why: a node claims jobs ahead of its free execution slots (the claim-ahead keeps the database
//! busy during a drain), and the attempt is counted in the claim's statement. A node that died
//! with rows claimed and not started charged each an attempt it never used: a job with
//! `max_attempts = 1` failed with `no attempts left` without ever running. Recovery gives the
//! attempt back to a claimed job whose `started_at` is NULL ([`crate::store::recover::recover`]).
//!
//! What it costs, and why it is built this way: the claim writes `started_at` (most jobs start
//! within moments of their claim). A job that has not started [`START_SOON`] after its claim —
//! it waits for an execution slot behind long jobs, or in the claim-ahead — has its mark taken
//! back (`started_at = NULL`, batched, written behind: until it lands the row is charged as
//! before), and when it does start its mark is written again *before* its driver runs. A drain,
//! whose jobs start within milliseconds, writes nothing more than before; a mark written before
//! every start held each execution slot for a round trip and drained three times slower (50.9k
//! jobs/s against 17.4k and 15.3k, `benches/dispatch.rs drain`). The rows charged at a crash are
//! those claimed within [`START_SOON`] of it — what the node was about to start.
//!
//! Must never: let a driver run before the mark of a job whose mark was taken back is written
//! again (a job that brings its node down must still spend its attempt), or write a mark for a
//! claim this node no longer holds (every statement is conditional on the claim and the
//! writer's deadline).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::held::Held;
use super::record::current_fence;
use crate::membership::MembershipState;
use crate::store::complete;
use crate::store::models::{Claim, Task};
use crate::store::Store;

/// A job not started this long after its claim has its start mark taken back: "about to start"
/// is what a node may claim ahead and still be charged for at a crash.
pub const START_SOON: Duration = Duration::from_millis(500);

/// Marks written per statement, at most.
const MAX_BATCH: usize = 512;

/// A claimed job that has not started yet.
struct Waiting {
    claim: Claim,
    since: Instant,
    /// Its mark was taken back (or is being): it must be written again before it starts.
    taken_back: bool,
}

enum Op {
    /// Take back the marks of jobs claimed a while ago and not started.
    TakeBack(Vec<(i64, Claim)>),
    /// Write the mark of a job about to start; answered once written.
    Mark { id: i64, claim: Claim, done: oneshot::Sender<Result<bool, String>> },
}

/// The start marks of this node's claimed jobs (see the module docs).
pub struct Starts {
    waiting: Mutex<HashMap<i64, Waiting>>,
    tx: mpsc::UnboundedSender<Op>,
}

impl Starts {
    /// Start the writer for `node` (fenced by its `membership` deadline) and the look, every
    /// half [`START_SOON`], for jobs that have waited too long; `held` tells which claimed rows
    /// an executor still holds (the others are forgotten).
    pub fn spawn(
        store: Store,
        node: String,
        membership: watch::Receiver<MembershipState>,
        held: Arc<Held>,
    ) -> Arc<Starts> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(store, node, membership, rx));
        let starts = Arc::new(Starts { waiting: Mutex::default(), tx });
        let weak = Arc::downgrade(&starts);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(START_SOON / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(starts) = weak.upgrade() else { return };
                starts.take_back_overdue(&held);
            }
        });
        starts
    }

    /// Rows just claimed (their claim wrote `started_at`): follow the jobs among them until they
    /// start. Application commands are not followed: their actor runs them at once.
    pub fn claimed(&self, rows: &[Task]) {
        let now = Instant::now();
        let mut waiting = self.lock();
        for t in rows.iter().filter(|t| t.is_job()) {
            waiting.insert(t.id, Waiting { claim: t.claim(), since: now, taken_back: false });
        }
    }

    /// `task`'s driver is about to run. Ok(true): it may (nothing to write, or its mark is
    /// written again). Ok(false): the row is no longer this node's claim. Err: the database did
    /// not take the mark; the job must not run now (it is recovered with its attempt given back).
    pub async fn start(&self, task: &Task) -> Result<bool, String> {
        let claim = task.claim();
        let rewrite = match self.lock().remove(&task.id) {
            Some(w) => w.claim == claim && w.taken_back,
            None => false,
        };
        if !rewrite {
            return Ok(true);
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Op::Mark { id: task.id, claim, done })
            .map_err(|_| "the start-mark writer has stopped".to_string())?;
        wait.await.map_err(|_| "the start-mark writer has stopped".to_string())?
    }

    /// Take back the marks of the jobs waiting longer than [`START_SOON`]; forget those no
    /// executor holds any more (ended, given back, recovered).
    fn take_back_overdue(&self, held: &Held) {
        let mut overdue = Vec::new();
        {
            let mut waiting = self.lock();
            waiting.retain(|id, w| held.holds(*id) || w.since.elapsed() < START_SOON);
            for (id, w) in waiting.iter_mut() {
                if !w.taken_back && w.since.elapsed() >= START_SOON {
                    w.taken_back = true;
                    overdue.push((*id, w.claim));
                }
            }
        }
        if !overdue.is_empty() {
            let _ = self.tx.send(Op::TakeBack(overdue));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one writer of marks: operations in the order they came (a job's mark written again
/// always follows the statement that took it back), the marks waiting together written in one
/// statement.
async fn write(
    store: Store,
    node: String,
    membership: watch::Receiver<MembershipState>,
    mut rx: mpsc::UnboundedReceiver<Op>,
) {
    let mut next = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => op,
                None => return,
            },
        };
        match op {
            Op::TakeBack(rows) => {
                let (node, fence, n) = (node.clone(), current_fence(&membership), rows.len());
                // Written behind: until it lands the rows are charged at a crash, as before.
                match store.run(move |c| complete::take_back_starts(c, &node, fence, &rows)).await {
                    Ok(taken) => tracing::debug!(jobs = n, taken, "start marks taken back from jobs still waiting"),
                    Err(e) => tracing::warn!(jobs = n, error = %e,
                        "could not take back start marks; those jobs are charged an attempt if this node dies before they start"),
                }
            }
            Op::Mark { id, claim, done } => {
                let mut batch = vec![(id, claim, done)];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Op::Mark { id, claim, done }) => batch.push((id, claim, done)),
                        // A take-back goes after this batch, in its turn.
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let rows: Vec<(i64, Claim)> = batch.iter().map(|(id, claim, _)| (*id, *claim)).collect();
                let (node, fence) = (node.clone(), current_fence(&membership));
                match store.run(move |c| complete::mark_started(c, &node, fence, &rows)).await {
                    Ok(flags) => {
                        for ((_, _, done), ok) in batch.into_iter().zip(flags) {
                            let _ = done.send(Ok(ok));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(jobs = batch.len(), error = %e, "could not write start marks; those jobs do not run now");
                        for (_, _, done) in batch {
                            let _ = done.send(Err(e.to_string()));
                        }
                    }
                }
            }
        }
    }
}
