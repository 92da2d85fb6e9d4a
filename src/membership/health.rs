//! Health-gated membership: a node whose database has not answered for longer than a bound,
//! while etcd answers, leaves the ring until the database answers again.
//!
//! Why: membership only said "this node's process and its etcd session are alive". A node that
//! lost PostgreSQL but kept etcd kept its share of the ring: commands for its applications waited
//! for the whole outage (27 s measured) and its children ran unmonitored. Out of the ring, its
//! applications and commands go to nodes that can reach the database.
//!
//! How (docs/design.md, "Health-gated membership"): [`watch_database`] pings the database and
//! publishes a hold — the reason to stay out — once no ping has succeeded for the bound, and
//! lifts it at the first ping that succeeds. The etcd backend, seeing a hold, stops acting (the
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

use crate::store::Store;

/// The pure rule: out once every ping has failed for `bound`, counted from the first failure
/// (never earlier than `bound` into an outage), back at the first success.
#[derive(Debug, Clone)]
pub struct Gate {
    bound: Duration,
    failing_since: Option<Instant>,
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
    /// A gate whose database answers.
    pub fn new(bound: Duration) -> Self {
        Self { bound, failing_since: None, last_error: String::new(), out: false }
    }

    /// A ping finished at `now`: `Ok` or the error. A ping still waiting for its answer counts
    /// as an error.
    pub fn observe(&mut self, answer: Result<(), String>, now: Instant) -> Option<Change> {
        match answer {
            Ok(()) => {
                self.failing_since = None;
                std::mem::replace(&mut self.out, false).then_some(Change::Return)
            }
            Err(e) => {
                self.last_error = e;
                let silent = now.saturating_duration_since(*self.failing_since.get_or_insert(now));
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
    let mut gate = Gate::new(bound);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping: Option<tokio::task::JoinHandle<Result<(), String>>> = None;
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
                let mut p = tokio::spawn(async move { s.ping(every).await.map(|_| ()).map_err(|e| e.to_string()) });
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
        match gate.observe(answer, Instant::now()) {
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
    fn out_after_the_bound_without_an_answer_and_back_at_the_first() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut g = Gate::new(s(10));
        assert_eq!(g.observe(Ok(()), t), None);
        assert_eq!(g.observe(Err("refused".into()), t + s(1)), None);
        assert_eq!(g.observe(Err("refused".into()), t + s(10)), None, "within the bound of the first failure");
        let Some(Change::Leave(why)) = g.observe(Err("refused".into()), t + s(11)) else { panic!("out at the bound") };
        assert!(why.contains("10.0 s") && why.contains("refused"), "{why}");
        assert_eq!(g.observe(Err("refused".into()), t + s(20)), None, "out once");
        assert_eq!(g.observe(Ok(()), t + s(21)), Some(Change::Return));
        assert_eq!(g.observe(Ok(()), t + s(22)), None);
        // An answer between failures starts the count again.
        assert_eq!(g.observe(Err("x".into()), t + s(30)), None);
        assert_eq!(g.observe(Ok(()), t + s(35)), None);
        assert_eq!(g.observe(Err("x".into()), t + s(36)), None);
        assert_eq!(g.observe(Err("x".into()), t + s(45)), None);
        assert!(matches!(g.observe(Err("x".into()), t + s(46)), Some(Change::Leave(_))));
    }
}
