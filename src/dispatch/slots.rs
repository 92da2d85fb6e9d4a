//! Execution slots for jobs (`dispatch.max_concurrency`), taken in the order the jobs were
//! claimed, so that jobs claimed together run higher priority first (docs/dispatch.md#priority).
//!
//! Why: a claim hands its rows out higher priority first and the dispatcher spawns a task per
//! job in that order, but the runtime first polls new tasks in an order of its own (the last one
//! spawned first, some stolen by the other worker thread), and a job reads its application before
//! it needs a slot. The jobs reached the slots in any order: eight claimed together on one slot
//! ran 8,6,3,1,2,7,5,4 instead of 4,6,8,2,5,3,1,7. A semaphore hands its permits out in the order
//! they were asked for; a [`Ticket`] taken when the job is spawned says when it may ask.
//!
//! Must never: hold later jobs back behind one that will not ask soon. A job that takes another
//! path (it fails, goes back, fans out) passes its turn at once ([`Ticket::pass`]), and a ticket
//! dropped, however its task ends, passes its turn.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// The execution slots and the turns to ask for one. Cheap to clone.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    slots: Arc<Semaphore>,
    turns: Mutex<Turns>,
}

/// The tickets handed out and the turn they are at.
#[derive(Default)]
struct Turns {
    /// The next ticket's number.
    issued: u64,
    /// The ticket whose turn it is to ask: every earlier one has asked or passed.
    head: u64,
    /// Later tickets that wait for their turn, or passed it before it came.
    ahead: HashMap<u64, Turn>,
}

enum Turn {
    Waiting(oneshot::Sender<()>),
    Passed,
}

impl Turns {
    /// Ticket `head` has asked or passed: the turn goes to the next one still to ask.
    fn advance(&mut self) {
        loop {
            self.head += 1;
            match self.ahead.remove(&self.head) {
                Some(Turn::Passed) => {}
                Some(Turn::Waiting(tx)) => {
                    // A waiter that has gone passes too.
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    fn pass(&mut self, n: u64) {
        if n == self.head {
            self.advance();
        } else if n > self.head {
            self.ahead.insert(n, Turn::Passed);
        }
    }
}

impl Slots {
    /// `n` slots.
    pub fn new(n: usize) -> Self {
        Self { inner: Arc::new(Inner { slots: Arc::new(Semaphore::new(n)), turns: Mutex::default() }) }
    }

    /// The next turn to ask for a slot: take it in the order jobs are to run.
    pub fn ticket(&self) -> Ticket {
        let mut turns = self.inner.lock();
        let n = turns.issued;
        turns.issued += 1;
        Ticket { inner: self.inner.clone(), n, done: false }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A job's turn to ask for a slot.
pub struct Ticket {
    inner: Arc<Inner>,
    n: u64,
    done: bool,
}

impl Ticket {
    /// Wait for this turn, ask for a slot and pass the turn on; the slot, once one is free.
    /// `None` once the slots are closed.
    pub async fn slot(mut self) -> Option<OwnedSemaphorePermit> {
        let wait = {
            let mut turns = self.inner.lock();
            (turns.head != self.n).then(|| {
                let (tx, rx) = oneshot::channel();
                turns.ahead.insert(self.n, Turn::Waiting(tx));
                rx
            })
        };
        if let Some(rx) = wait {
            // An error means the sender went: its turn came and went, which passing handles.
            let _ = rx.await;
        }
        // Asking is being in the semaphore's queue: the first poll puts the request there.
        let mut ask = std::pin::pin!(self.inner.slots.clone().acquire_owned());
        let first = std::future::poll_fn(|cx| Poll::Ready(ask.as_mut().poll(cx))).await;
        self.pass();
        match first {
            Poll::Ready(slot) => slot.ok(),
            Poll::Pending => ask.await.ok(),
        }
    }

    /// This job will not ask (or has asked): the next one may.
    pub fn pass(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.inner.lock().pass(self.n);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The order in which tickets, asking in `arrive` order on one slot each held a moment,
    /// got their slots.
    async fn served(slots: usize, tickets: usize, arrive: &[usize], passed: &[usize]) -> Vec<usize> {
        let s = Slots::new(slots);
        let mut issued: Vec<Option<Ticket>> = (0..tickets).map(|_| Some(s.ticket())).collect();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut set = tokio::task::JoinSet::new();
        for &i in passed {
            issued[i].take().unwrap().pass();
        }
        for &i in arrive {
            let ticket = issued[i].take().unwrap();
            let order = order.clone();
            set.spawn(async move {
                let slot = ticket.slot().await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            });
            // Each arrives after the one before has asked, if its turn had come.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        while set.join_next().await.is_some() {}
        let order = order.lock().unwrap().clone();
        order
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_go_in_ticket_order_whatever_order_the_jobs_ask_in() {
        assert_eq!(served(1, 5, &[4, 2, 3, 0, 1], &[]).await, [0, 1, 2, 3, 4]);
        assert_eq!(served(1, 6, &[5, 4, 3, 2, 1, 0], &[]).await, [0, 1, 2, 3, 4, 5]);
        // Two slots: two by two (the two served together record themselves in either order).
        let mut two = served(2, 6, &[5, 4, 3, 2, 1, 0], &[]).await;
        two.chunks_mut(2).for_each(|pair| pair.sort());
        assert_eq!(two, [0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ticket_passed_or_dropped_holds_no_one_back() {
        assert_eq!(served(1, 5, &[4, 3, 1], &[0, 2]).await, [1, 3, 4]);
        let s = Slots::new(1);
        let (first, second) = (s.ticket(), s.ticket());
        // The first job's task ends before it asks (aborted, or it took another path).
        let waiting = tokio::spawn(second.slot());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "the second waits for the first's turn");
        drop(first);
        let slot = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("served").unwrap();
        assert!(slot.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_ticket_dropped_passes_its_turn() {
        let s = Slots::new(1);
        let (first, second, third) = (s.ticket(), s.ticket(), s.ticket());
        let waiting = tokio::spawn(second.slot());
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiting.abort();
        let _ = waiting.await;
        let last = tokio::spawn(third.slot());
        drop(first);
        let slot = tokio::time::timeout(Duration::from_secs(5), last).await.expect("served").unwrap();
        assert!(slot.is_some());
    }
}
