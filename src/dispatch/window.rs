//! The job window: how a member of a larger ring claims a backlog of jobs placed by their id
//! alone, by computing which ids its ring owns instead of reading every due row.
//!
//! Must never: claim a row whose placement depends on labels (selectors, traffic groups, fan-out
//! targets: [`crate::store::claim::claim_jobs`] leaves them out), or keep a window past a view
//! change (its ids were placed by the old ring).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::place::Placement;
use super::Dispatcher;
use crate::ring::Selector;
use crate::store::claim;
use crate::store::StoreError;

/// A member of a larger ring draining a backlog of jobs placed by their id alone (no selector,
/// no target node, an application without selector or traffic group, if any): it computes
/// which of the next ids its ring owns and claims them ([`claim::claim_jobs`]) instead of reading
/// every due row. Why: each member read a batch per member to claim one, so every row of a
/// backlog was read once per member — three nodes drained at 0.63–0.88 of one node's rate on
/// the same database (docs/benchmarks.md#three-nodes). A window starts when a full read was mostly such
/// jobs, and yields to a look at the queue's head at every poll tick.
#[derive(Debug, Clone, Copy)]
pub(super) struct JobWindow {
    /// The next id to look at.
    pub(super) next: i64,
    /// The highest id known to exist.
    pub(super) hi: i64,
    /// When it started: it ends after [`WINDOW_POLLS`] poll intervals.
    pub(super) started: Instant,
    /// When it last yielded to a look at the queue's head: it does once per poll interval.
    pub(super) looked: Instant,
}

/// A job window lasts at most this many poll intervals (10 s at the default): then the node
/// reads the queue from its head, past every row the window left (commands, label-dependent
/// rows, retried, locked or delayed jobs), before a new window may start. Why: while rows kept
/// coming, a window never reached the end of the table, and a command behind a head full of
/// rows no one could claim yet waited for as long as the inserts went on.
const WINDOW_POLLS: u32 = 10;

impl Dispatcher {
    /// One claim of the job window ([`JobWindow`]): the next ids up to a batch that this node's
    /// ring owns, claimed if they are pending, due jobs placed by their id alone
    /// ([`claim::claim_jobs`]). Past the highest id it knew, the window reads the highest id again;
    /// when none was added it ends, and the next round reads from the queue's head, which finds
    /// every row the window left: commands, label-dependent rows, locked or delayed ones.
    pub(super) async fn window_round(&mut self, place: &Placement) -> Result<bool, StoreError> {
        // A backlog's rounds follow one another without a look at the dispatcher's other
        // events (up to 64 rounds, each waiting for room among the jobs in flight): the window
        // claims the turns of applications, and looks at the queue's head, itself.
        if self.takes_turns() {
            self.turn_round().await?;
        }
        let Some(mut w) = self.window.take() else { return Ok(true) };
        let batch = self.shared.cfg.batch_size as usize;
        let poll = Duration::from_millis(self.shared.cfg.poll_interval_ms);
        if w.started.elapsed() >= poll * WINDOW_POLLS {
            tracing::debug!(cursor = w.next, "the job window has run its time; reading from the head");
            self.windowed_to = w.next - 1;
            self.cursor = 0;
            return Ok(true);
        }
        if w.looked.elapsed() >= poll {
            w.looked = Instant::now();
            self.window = Some(w);
            self.label_pass = true;
            return Ok(true);
        }
        // Claim no more than the job slots free now, so that handing out never waits for room
        // while applications' turns wait behind it; with none free, wait for one, or for a
        // turn, for up to a poll interval (then the loop looks at its other events).
        if self.outstanding.available_permits() == 0 {
            self.window = Some(w);
            let slots = self.outstanding.clone();
            return tokio::select! {
                _ = self.shared.turn.notified() => Ok(true),
                slot = slots.acquire_owned() => Ok(slot.is_ok()),
                _ = tokio::time::sleep(poll) => Ok(false),
            };
        }
        let batch = batch.min(self.outstanding.available_permits());
        // Ids looked at per round, at most: a node with a small share of the ring must not walk
        // a long stretch of ids in one go.
        let span = (batch as i64) * 64;
        let mut ids = Vec::with_capacity(batch);
        let mut looked = 0;
        while ids.is_empty() && looked < span {
            if w.next > w.hi {
                let hi = self.shared.store.run(claim::max_task_id).await?;
                if hi < w.next {
                    tracing::debug!(cursor = w.next, "the job window ends");
                    self.windowed_to = w.hi;
                    self.cursor = 0;
                    return Ok(true);
                }
                w.hi = hi;
            }
            while ids.len() < batch && w.next <= w.hi && looked < span {
                if place.owner_of(&w.next.to_string(), &Selector::new()) == Some(place.me.as_str()) {
                    ids.push(w.next);
                }
                w.next += 1;
                looked += 1;
            }
        }
        self.window = Some(w);
        self.windowed_to = w.next - 1;
        let (node, epoch) = (self.shared.node_id.clone(), place.view.epoch as i64);
        let (fence, plans) = (self.shared.fence(), self.shared.store.plans());
        let claimed = self.shared.store.run(move |c| claim::claim_jobs(c, &plans, &ids, &node, epoch, fence)).await?;
        tracing::trace!(claimed = claimed.len(), window = w.next, "window round");
        self.hand_out(self.shared.claimed(claimed), place, HashMap::new()).await;
        Ok(true)
    }
}
