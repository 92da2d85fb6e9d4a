//! Health-gated membership: a node whose database has not answered for longer than a bound,
//! while etcd answers, leaves the ring until the database answers again.
//!
//! Why: membership only said "this node's process and its etcd session are alive". A node that
//! lost PostgreSQL but kept etcd kept its share of the ring: commands for its applications waited
//! for the whole outage (27 s measured) and its children ran unmonitored. Out of the ring, its
//! applications and commands go to nodes that can reach the database.
//!
//! How (docs/design.md, "Health-gated membership"): [`watch_database`] pings the database and
//! publishes a hold — the reason to stay out — once the database has not answered the node for
//! the bound (counted from its last answer, [`Gate`]), and lifts it at the first ping that
//! succeeds. The etcd backend, seeing a hold, stops acting (the
//! dispatcher stops every actor and supervised process, as when fenced), waits until the
//! dispatcher says it has, then revokes its lease: the others see it leave at once and take its
//! work, which its own processes no longer do. When the hold lifts it joins again with a new
//! lease (a new session, settling like any join).
//!
//! Must never: revoke the lease while this node's processes may still run (the others would
//! start them too), or count a ping that has not come back as an answer.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{Answer, Store};

/// The pure rule: out once the database has not answered for `bound`, counted from its last
/// answer (never earlier than `bound` after it), back at the first answer.
/// Why from the last answer rather than from the first failed ping: a ping is answered without
/// a statement while another statement succeeded within [`crate::store::ANSWER_PROVES_FOR`], and
/// pings come every tick, so the first failure is seen up to that second and a tick after the
/// database stopped answering. Counted from there, a 3 s bound left the ring 5–6.3 s after the
/// cut; the bound is what an operator sets as "how long without the database".
#[derive(Debug, Clone)]
pub struct Gate {
    bound: Duration,
    /// When the database last answered (or the watch started, before any answer).
    last_answer: Instant,
    last_error: String,
    out: bool,
}

/// What an observation changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Leave the ring, for this reason.
    Leave(String),
    /// The database answers again: join again.
    Return,
}

impl Gate {
    /// A gate started at `now`, which counts as an answer.
    pub fn new(bound: Duration, now: Instant) -> Self {
        Self { bound, last_answer: now, last_error: String::new(), out: false }
    }

    /// A ping finished at `now`: `Ok(at)`, the database answered at `at`, or the error (a ping
    /// still waiting for its answer counts as one). `answered`: when any statement of this node
    /// last succeeded — a ping that fails while other statements are answered (it waited for a
    /// connection, say) is no outage.
    pub fn observe(
        &mut self,
        answer: Result<Instant, String>,
        answered: Option<Instant>,
        now: Instant,
    ) -> Option<Change> {
        self.last_answer = self.last_answer.max(answered.unwrap_or(self.last_answer));
        match answer {
            Ok(at) => {
                self.last_answer = self.last_answer.max(at);
                std::mem::replace(&mut self.out, false).then_some(Change::Return)
            }
            Err(e) => {
                self.last_error = e;
                let silent = now.saturating_duration_since(self.last_answer);
                if self.out || silent < self.bound {
                    return None;
                }
                self.out = true;
                Some(Change::Leave(format!(
                    "the database has not answered for {:.1} s (bound {:.1} s, membership.database_outage_ms): {}",
                    silent.as_secs_f64(),
                    self.bound.as_secs_f64(),
                    self.last_error
                )))
            }
        }
    }
}

/// Ping the database until `shutdown`, publishing on `hold` the reason to stay out of the ring
/// (None while it answers). One ping at a time: a ping that hangs (a connection that never
/// answers) is an error at each tick until it returns, and no second one piles up behind it.
pub async fn watch_database(
    store: Store,
    bound: Duration,
    hold: watch::Sender<Option<String>>,
    shutdown: CancellationToken,
) {
    let every = (bound / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut gate = Gate::new(bound, Instant::now());
    let answered = store.answered();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping: Option<tokio::task::JoinHandle<Result<Instant, String>>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let answer = match ping.take() {
            Some(p) if p.is_finished() => p.await.unwrap_or_else(|e| Err(e.to_string())),
            Some(p) => {
                ping = Some(p);
                Err(format!("no answer to a ping within {:.1} s", every.as_secs_f64()))
            }
            None => {
                let s = store.clone();
                let mut p = tokio::spawn(async move {
                    match s.ping(every).await {
                        // Answered without a statement: as of the statement that proved it.
                        Ok(Answer::Recent) => Ok(s.answered().last().unwrap_or_else(Instant::now)),
                        Ok(Answer::Pinged) => Ok(Instant::now()),
                        Err(e) => Err(e.to_string()),
                    }
                });
                // Most pings answer within the tick: wait for it, so an answer is never a tick late.
                match tokio::time::timeout(every, &mut p).await {
                    Ok(done) => done.unwrap_or_else(|e| Err(e.to_string())),
                    Err(_) => {
                        ping = Some(p);
                        Err(format!("no answer to a ping within {:.1} s", every.as_secs_f64()))
                    }
                }
            }
        };
        match gate.observe(answer, answered.last(), Instant::now()) {
            Some(Change::Leave(why)) => {
                tracing::error!(reason = %why, "leaving the ring until the database answers");
                hold.send_replace(Some(why));
            }
            Some(Change::Return) => {
                tracing::info!("the database answers again: joining the ring");
                hold.send_replace(None);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_once_the_bound_has_passed_since_the_last_answer_and_back_at_the_first() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let mut g = Gate::new(s(10), t);
        assert_eq!(g.observe(Ok(t), None, t), None);
        // The first failure is seen late (the last answer proved a ping for a while): the bound
        // runs from the answer, not from the failure.
        assert_eq!(g.observe(Err("refused".into()), None, t + ms(1600)), None);
        assert_eq!(g.observe(Err("refused".into()), None, t + ms(9999)), None, "within the bound of the answer");
        let Some(Change::Leave(why)) = g.observe(Err("refused".into()), None, t + s(10)) else {
            panic!("out at the bound")
        };
        assert!(why.contains("10.0 s") && why.contains("refused"), "{why}");
        assert_eq!(g.observe(Err("refused".into()), None, t + s(20)), None, "out once");
        assert_eq!(g.observe(Ok(t + s(21)), None, t + s(21)), Some(Change::Return));
        assert_eq!(g.observe(Ok(t + s(22)), None, t + s(22)), None);
        // An answer between failures starts the count again.
        assert_eq!(g.observe(Err("x".into()), None, t + s(30)), None);
        assert_eq!(g.observe(Ok(t + s(35)), None, t + s(35)), None);
        assert_eq!(g.observe(Err("x".into()), None, t + s(44)), None);
        assert!(matches!(g.observe(Err("x".into()), None, t + s(45)), Some(Change::Leave(_))));
    }

    #[test]
    fn a_failed_ping_while_other_statements_are_answered_is_no_outage() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut g = Gate::new(s(3), t);
        // Pings wait for a connection the node's busy statements hold; those statements succeed.
        for k in 1..=10 {
            assert_eq!(g.observe(Err("no connection".into()), Some(t + s(k) - s(1) / 2), t + s(k)), None, "at {k} s");
        }
        // The last of them answered at 9.5 s.
        assert_eq!(g.observe(Err("x".into()), Some(t + s(9)), t + s(12)), None);
        assert!(matches!(g.observe(Err("x".into()), None, t + s(13)), Some(Change::Leave(_))));
    }

    #[test]
    fn a_node_that_never_reached_its_database_counts_from_its_start() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut g = Gate::new(s(3), t);
        assert_eq!(g.observe(Err("refused".into()), None, t + s(2)), None);
        assert!(matches!(g.observe(Err("refused".into()), None, t + s(3)), Some(Change::Leave(_))));
    }
}
