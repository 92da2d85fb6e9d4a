//! What this node's executors hold: every row it claimed, from the claim until whoever ran it
//! is done with it — and the rule that finds the rows it claimed that nothing holds any more.
//!
//! Why: a write about a claimed row can fail (the database restarts under a hand-back or an
//! outcome), and an executor can end without writing (an actor that lost its application, a
//! job that panicked). Orphan recovery looks only at the rows of departed nodes and of this
//! node's earlier lives, so such a row stayed `running` under a live node for good (chaos seed
//! 853741529: a fan-out's hand-back failed in a PostgreSQL restart). Every claimed row travels
//! in a [`Claimed`] whose drop forgets it; a row `running` under this node's current life that
//! no [`Claimed`] holds, seen so in two looks at least a reconcile interval (and [`STRANDED_AFTER`]) apart with the same
//! claim (epoch, token and attempt), is stranded: recovered like an orphan ([`Stranded::sweep`]).
//!
//! Must never: call stranded a row an executor still holds. A row is counted held from just
//! after its claim returns (the claim's commit comes a moment earlier) until just after its
//! executor's last write about it returns (the write's commit comes a moment earlier); a look
//! can fall in either moment, which is why one look is never enough. Holds are counted, not
//! flags: a row given back and claimed again before the first hold is dropped stays held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use crate::store::models::Task;

/// How long a row must be seen running here and held by nothing before it is recovered, at
/// least: far longer than the moments between a commit and the hold that follows or precedes
/// it. The wait is the reconcile interval (two looks at consecutive reconciliations), not less
/// than this, so a stranded row is recovered within the lease TTL plus the reconcile interval
/// (docs/design.md#no-row-stalls); it was 10 s, looked at every sixth reconciliation.
pub const STRANDED_AFTER: Duration = Duration::from_secs(1);

/// The rows this node's executors hold, with how many holds each (see the module docs).
#[derive(Default)]
pub struct Held {
    ids: Mutex<HashMap<i64, u32>>,
    /// How many rows are held (`rota_tasks_held`).
    gauge: Gauge,
}

impl Held {
    /// No rows held yet; `gauge` follows how many are.
    pub fn new(gauge: Gauge) -> Held {
        Held { ids: Mutex::default(), gauge }
    }

    /// Hold freshly claimed rows.
    pub fn claimed(self: &Arc<Self>, rows: Vec<Task>) -> Vec<Claimed> {
        let mut ids = self.lock();
        let claimed = rows
            .into_iter()
            .map(|task| {
                *ids.entry(task.id).or_default() += 1;
                Claimed { hold: Hold { id: task.id, held: self.clone() }, task }
            })
            .collect::<Vec<_>>();
        self.gauge.set(ids.len() as i64);
        claimed
    }

    /// True when an executor holds row `id`.
    pub fn holds(&self, id: i64) -> bool {
        self.lock().contains_key(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, u32>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A claimed row and its hold: the row is this node's executors' until this is dropped.
pub struct Claimed {
    /// The row as claimed.
    pub task: Task,
    hold: Hold,
}

impl Claimed {
    /// The row, and the hold to keep while it is worked on.
    pub fn into_parts(self) -> (Task, Hold) {
        (self.task, self.hold)
    }

    /// The same hold on the row as it is now (a parent that moved to its `gather` stage).
    pub fn from_parts(task: Task, hold: Hold) -> Claimed {
        debug_assert_eq!(task.id, hold.id);
        Claimed { task, hold }
    }
}

/// One hold on a row; dropping it releases the hold.
pub struct Hold {
    id: i64,
    held: Arc<Held>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut ids = self.held.lock();
        if let Some(n) = ids.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                ids.remove(&self.id);
                self.held.gauge.set(ids.len() as i64);
            }
        }
    }
}

/// A running row of this node's current life as a look found it: its claim is told apart
/// from a later claim of the same row by the epoch, the claim's token and the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Task id.
    pub id: i64,
    /// The epoch it was claimed at.
    pub epoch: i64,
    /// The claim's token.
    pub token: Option<i64>,
    /// Its attempt when claimed.
    pub attempts: i32,
}

/// The rows seen unheld by earlier looks, with when first seen so.
#[derive(Debug, Default)]
pub struct Stranded {
    suspects: HashMap<i64, (Seen, Instant)>,
}

impl Stranded {
    /// One look at `running` (this node's rows of its current life, as read just before):
    /// returns the ids to recover — unheld now and unheld, with the same claim, in a look at
    /// least `after` ago — and remembers the other unheld ones. Pure but for `holds`.
    pub fn sweep(&mut self, running: &[Seen], holds: impl Fn(i64) -> bool, now: Instant, after: Duration) -> Vec<i64> {
        let mut next = HashMap::new();
        let mut recover = Vec::new();
        for seen in running.iter().filter(|s| !holds(s.id)) {
            let since = match self.suspects.get(&seen.id) {
                Some((was, since)) if was == seen => *since,
                _ => now,
            };
            if now.saturating_duration_since(since) >= after {
                recover.push(seen.id);
            } else {
                next.insert(seen.id, (*seen, since));
            }
        }
        self.suspects = next;
        recover
    }

    /// Forget every suspect (this node was fenced: its rows are an earlier life's now).
    pub fn clear(&mut self) {
        self.suspects.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task(id: i64) -> Task {
        Task { id, ..crate::dispatch::plan::tests::task(None, "run", "{}") }
    }

    #[test]
    fn holds_are_counted_and_released_on_drop() {
        let held = Arc::new(Held::default());
        let first = held.claimed(vec![task(1), task(2)]);
        assert!(held.holds(1) && held.holds(2));
        assert_eq!(held.gauge.get(), 2);
        // Row 1 given back and claimed again before the first hold is dropped.
        let again = held.claimed(vec![task(1)]);
        drop(first);
        assert!(held.holds(1), "the second claim still holds row 1");
        assert!(!held.holds(2));
        let (t, hold) = again.into_iter().next().unwrap().into_parts();
        let parked = Claimed::from_parts(t, hold);
        assert!(held.holds(1));
        drop(parked);
        assert!(!held.holds(1));
        assert_eq!(held.gauge.get(), 0);
    }

    #[test]
    fn a_row_is_recovered_only_when_unheld_in_two_looks_far_enough_apart() {
        let mut s = Stranded::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        let row = Seen { id: 7, epoch: 3, token: Some(1), attempts: 1 };
        assert!(s.sweep(&[row], |_| false, t0, after).is_empty(), "one look is never enough");
        assert!(s.sweep(&[row], |_| false, t0 + Duration::from_secs(5), after).is_empty());
        assert_eq!(s.sweep(&[row], |_| false, t0 + after, after), vec![7]);
    }

    #[test]
    fn a_later_claim_of_the_same_row_starts_the_clock_again() {
        let mut s = Stranded::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        s.sweep(&[Seen { id: 7, epoch: 3, token: Some(1), attempts: 1 }], |_| false, t0, after);
        let later = Seen { id: 7, epoch: 3, token: Some(1), attempts: 2 };
        assert!(s.sweep(&[later], |_| false, t0 + after, after).is_empty());
        assert_eq!(s.sweep(&[later], |_| false, t0 + after * 2, after), vec![7]);
    }

    #[test]
    fn a_claim_with_another_token_is_another_claim() {
        // Given back and claimed again at the same epoch, or a row with the same id after a
        // database failover: the attempt can be the same, the token is not.
        let mut s = Stranded::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        s.sweep(&[Seen { id: 7, epoch: 3, token: Some(1), attempts: 1 }], |_| false, t0, after);
        let again = Seen { id: 7, epoch: 3, token: Some(2), attempts: 1 };
        assert!(s.sweep(&[again], |_| false, t0 + after, after).is_empty());
    }

    proptest! {
        /// Whatever the looks, no row held at a look is returned by it, and a returned row was
        /// unheld with the same claim in every look of the last `after`.
        #[test]
        fn only_rows_unheld_throughout_are_recovered(
            looks in proptest::collection::vec(
                (0u64..8, proptest::collection::vec((0i64..6, 0i32..3, any::<bool>()), 0..6)),
                1..12,
            ),
        ) {
            let after = Duration::from_secs(10);
            let t0 = Instant::now();
            let mut s = Stranded::default();
            let mut now = t0;
            // Every look so far: (time, rows running and unheld).
            let mut history: Vec<(Instant, Vec<Seen>)> = Vec::new();
            for (gap, rows) in looks {
                now += Duration::from_secs(gap);
                let mut running: Vec<Seen> = Vec::new();
                let mut held = std::collections::HashSet::new();
                for (id, attempts, is_held) in rows {
                    if running.iter().any(|r| r.id == id) {
                        continue;
                    }
                    running.push(Seen { id, epoch: 1, token: Some(1), attempts });
                    if is_held {
                        held.insert(id);
                    }
                }
                let out = s.sweep(&running, |id| held.contains(&id), now, after);
                let unheld: Vec<Seen> = running.iter().copied().filter(|r| !held.contains(&r.id)).collect();
                for id in &out {
                    prop_assert!(!held.contains(id));
                    let seen = *unheld.iter().find(|r| r.id == *id).unwrap();
                    // Some earlier look at least `after` ago saw it unheld with this claim,
                    // and every look since did too.
                    let mut ok = false;
                    for (at, rows) in history.iter().rev() {
                        if !rows.contains(&seen) {
                            break;
                        }
                        if now.duration_since(*at) >= after {
                            ok = true;
                            break;
                        }
                    }
                    prop_assert!(ok, "row {} recovered too early", id);
                }
                history.push((now, unheld));
            }
        }
    }
}
