//! Membership events: each change of the membership recorded once in `event`, by one node.
//!
//! Why: the log of one node says when it was fenced; an admin reading the history needs the whole
//! story — who joined, who left on purpose, who was lost, who fenced itself and came back — in
//! both deployment shapes (docs/membership.md, "Membership events").
//!
//! Who writes what: a node writes its own `membership.joined`, `membership.rejoined` and
//! `membership.fenced` (only it knows), and its own `membership.left` before it gives its lease or
//! lock up. A departure the node could not record (a crash, a pause, a lost database) is recorded
//! as `membership.lost` by those who see it: on etcd every surviving member that sees the key
//! deleted, on standalone the node that takes the stale lock over. Every row carries
//! `data.revision`, the session it begins or ends (an etcd revision, the lock's epoch), and the
//! unique index `event_membership_once` keeps one row per change, so several writers, and a
//! writer's retries, record it once; a departure already recorded as `left` is not recorded
//! again as `lost`.
//!
//! Writes go through one queue, in order, retried with backoff while the database does not
//! answer: the membership loop never waits on the database, except for `left`, which must be
//! written before the lease or lock is given up (so that the others see it recorded).
//!
//! Must never: block the membership loop on the database, or record a change twice.

use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::store::models::NewEvent;
use crate::store::{events, Store};

/// One membership change of node `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Its first session in this process began.
    Joined,
    /// A new session began after it was fenced or left the ring over its database.
    Rejoined,
    /// It stopped acting: its lease or lock lapsed, was lost, or it left the ring over its
    /// database. The reason.
    Fenced(String),
    /// It left gracefully (lease revoked, lock released).
    Left,
    /// It is gone without a graceful leave (crashed, paused, partitioned, lost its database),
    /// as seen by `observed_by`. The reason.
    Lost {
        /// The node that saw it go and writes the event.
        observed_by: String,
        /// How it was seen.
        reason: String,
    },
}

impl Change {
    /// The event kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Joined => "membership.joined",
            Change::Rejoined => "membership.rejoined",
            Change::Fenced(_) => "membership.fenced",
            Change::Left => "membership.left",
            Change::Lost { .. } => "membership.lost",
        }
    }
}

/// Pure: the event of `change` of node `node` in the session `revision` (the etcd revision it
/// registered at, or its key was created at; the standalone lock's epoch), with `detail` (the
/// backend's words: `etcd lease 7f…`, `standalone lock epoch 3`).
pub fn event(node: &str, change: &Change, revision: u64, detail: &str) -> NewEvent {
    let (message, extra) = match change {
        Change::Joined => (format!("node {node} joined ({detail}, revision {revision})"), json!({})),
        Change::Rejoined => {
            (format!("node {node} re-joined with a new session ({detail}, revision {revision})"), json!({}))
        }
        Change::Fenced(why) => {
            (format!("node {node} fenced itself: it stopped acting ({why})"), json!({ "reason": why }))
        }
        Change::Left => (format!("node {node} left the cluster gracefully ({detail})"), json!({})),
        Change::Lost { observed_by, reason } => (
            format!("node {node} was lost: {reason} (seen by {observed_by})"),
            json!({ "observed_by": observed_by, "reason": reason }),
        ),
    };
    let mut data = json!({ "revision": revision, "session": detail });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    NewEvent {
        kind: change.kind().into(),
        node_id: Some(node.to_string()),
        actor: Some("membership".into()),
        message,
        data: Some(data.to_string()),
        ..Default::default()
    }
}

/// The queue of membership events to write.
#[derive(Clone)]
pub struct History {
    tx: mpsc::UnboundedSender<(NewEvent, Option<oneshot::Sender<()>>)>,
}

/// How long a retried write waits at most between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How many attempts before an event is given up (logged): about ten minutes of outage.
const ATTEMPTS: u32 = 130;

impl History {
    /// Start the writer on `store`; it ends when every [`History`] is dropped.
    pub fn start(store: Store) -> History {
        let (tx, mut rx) = mpsc::unbounded_channel::<(NewEvent, Option<oneshot::Sender<()>>)>();
        tokio::spawn(async move {
            while let Some((ev, done)) = rx.recv().await {
                let mut backoff = Duration::from_millis(100);
                for attempt in 1..=ATTEMPTS {
                    let e = ev.clone();
                    match store.run(move |c| events::record_event_once(c, &e)).await {
                        Ok(_) => break,
                        Err(err) if attempt == ATTEMPTS => {
                            tracing::warn!(event.kind = %ev.kind, node.id = ?ev.node_id, error = %err,
                                "could not record a membership event; giving it up");
                        }
                        Err(err) => {
                            tracing::debug!(event.kind = %ev.kind, error = %err, "recording a membership event failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        });
        History { tx }
    }

    /// Queue `change` of `node` for writing.
    pub fn record(&self, node: &str, change: Change, revision: u64, detail: &str) {
        let _ = self.tx.send((event(node, &change, revision, detail), None));
    }

    /// Write `change` of `node` and wait until it is written (or given up), at most `within`.
    /// For `left`, which must be in the database before the lease or lock is given up.
    pub async fn record_now(&self, node: &str, change: Change, revision: u64, detail: &str, within: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send((event(node, &change, revision, detail), Some(done))).is_ok()
            && tokio::time::timeout(within, wait).await.is_err()
        {
            tracing::warn!(node.id = %node, "recording the membership event took longer than {within:?}; leaving anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_names_its_node_and_session() {
        let e = event("n1", &Change::Joined, 42, "etcd lease 7f");
        assert_eq!(e.kind, "membership.joined");
        assert_eq!(e.node_id.as_deref(), Some("n1"));
        let data: serde_json::Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
        assert_eq!(data["revision"], 42);
        let lost = Change::Lost { observed_by: "n2".into(), reason: "its lease expired".into() };
        let e = event("n3", &lost, 7, "etcd");
        assert_eq!(e.kind, "membership.lost");
        assert_eq!(e.node_id.as_deref(), Some("n3"), "the event is about the lost node");
        let data: serde_json::Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
        assert_eq!((data["observed_by"].as_str(), data["revision"].as_u64()), (Some("n2"), Some(7)));
        assert!(e.message.contains("n3 was lost") && e.message.contains("seen by n2"), "{}", e.message);
        let e = event("n1", &Change::Fenced("lease expired".into()), 42, "etcd");
        assert_eq!((e.kind.as_str(), e.message.contains("lease expired")), ("membership.fenced", true));
    }
}
