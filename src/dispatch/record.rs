//! What every writer on the dispatch path stamps on what it writes: this node's fence (its
//! membership deadline and the epoch its session began at, checked by the database against its
//! own clock) and the dispatcher's events.
//!
//! Why apart: the loop, the actors, the job executor and the batched writers all need these,
//! and the writers must not depend on the handles that own them ([`super::shared`]).

use chrono::Utc;
use serde_json::Value;
use std::time::Instant;
use tokio::sync::watch;

use crate::membership::MembershipState;
use crate::store::fence::Fence;
use crate::store::models::NewEvent;
use crate::store::{events, Store};

/// This node's session as every write as owner carries it ([`Fence`]): its deadline on the
/// wall clock ([`MembershipState::deadline_on`], the wall clock read first) and the epoch it
/// began at, from one look at the membership.
pub(crate) fn current_fence(membership: &watch::Receiver<MembershipState>) -> Fence {
    let wall = Utc::now().naive_utc();
    let state = membership.borrow();
    Fence { until: state.deadline_on(wall, Instant::now()), joined: state.joined_epoch as i64 }
}

/// An event written by `node`'s dispatcher.
pub(crate) fn dispatcher_event(
    node: &str,
    kind: &str,
    app_id: Option<i64>,
    task_id: Option<i64>,
    message: String,
    data: Value,
) -> NewEvent {
    NewEvent {
        kind: kind.to_string(),
        app_id,
        task_id,
        node_id: Some(node.to_string()),
        actor: Some("dispatcher".into()),
        message,
        data: Some(data.to_string()),
    }
}

/// Record an event; failures are logged, never fatal.
pub(crate) async fn record_event(store: &Store, ev: NewEvent) {
    if let Err(e) = store.run(move |c| events::record_event(c, &ev)).await {
        tracing::warn!(error = %e, "could not record an event");
    }
}
