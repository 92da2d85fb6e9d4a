//! The coordinator of a workflow run (docs/workflows.md): the ring owner of the run's
//! coordinator task (routing `workflow`). It holds the task like a fan-out parent (stage
//! `gather`) and advances the run whenever one of its node jobs ends here (the completer asks),
//! at each gather pass (about every 200 ms while woken, at least every poll interval) and when it
//! takes the task over from a coordinator that died. Each advance is one fenced transaction
//! (`store::workflows::advance`) applying what the pure rules decide (`crate::workflow::step`);
//! when the run ends the coordinator task ends with it.
//!
//! Must never: decide from anything but what the database holds (a replaced coordinator reaches
//! the same decisions), or write a node's job outside the transaction that marks it started.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::Shared;
use crate::domain::Action;
use crate::store::complete::Outcome;
use crate::store::models::{NewTask, Task};
use crate::store::workflows::{self as wq, Advanced, NodeChange, Snapshot, Writes};
use crate::workflow::step::{self, Ended, NodeRun, RunState, State};
use crate::workflow::Definition;

/// A claimed coordinator task without a stage: take the run on. Returns the task, now in stage
/// `gather`, when the run goes on.
pub(super) async fn begin(shared: &Shared, task: Task) -> Option<Task> {
    if advance(shared, &task).await {
        None
    } else {
        Some(Task { stage: Some("gather".into()), ..task })
    }
}

/// Advance the run `coordinator` coordinates. True when done with it (the run ended and the
/// task with it, or the task is no longer this node's).
pub(super) async fn advance(shared: &Shared, coordinator: &Task) -> bool {
    if !shared.may_act() {
        return false;
    }
    let (id, me, claim, fence) = (coordinator.id, shared.node_id.clone(), coordinator.claim(), shared.fence());
    let outcome = shared.store.run(move |c| wq::advance(c, id, &me, claim, fence, |s| decide(s, id))).await;
    match outcome {
        Ok(Advanced::NotOurs) => true,
        Ok(Advanced::Raced) => false,
        Ok(Advanced::Missing(msg)) => {
            tracing::warn!(task.id = id, reason = %msg, "a workflow coordinator has no run to advance");
            finish(shared, coordinator, Outcome::Failed(msg)).await;
            true
        }
        Ok(Advanced::Done { status, started }) => {
            if !started.is_empty() {
                tracing::debug!(task.id = id, started = started.len(), "workflow nodes started");
                // Jobs this node owns are claimed now, not at the next poll (SQLite announces
                // no insert).
                shared.wake.notify_one();
            }
            let summary = json!({ "status": status });
            let outcome = match status.as_str() {
                "succeeded" => Outcome::Succeeded(Some(summary.to_string())),
                "failed" | "cancelled" => Outcome::FailedWithResult {
                    error: format!("the workflow run {status}"),
                    result: summary.to_string(),
                },
                _ => return false,
            };
            tracing::info!(task.id = id, status = %status, "workflow run ended");
            finish(shared, coordinator, outcome).await;
            true
        }
        Err(e) => {
            tracing::warn!(task.id = id, error = %e, "could not advance a workflow run; it is looked at again");
            false
        }
    }
}

async fn finish(shared: &Shared, task: &Task, outcome: Outcome) {
    if shared.may_act() {
        shared.completer.finish(task, outcome).await;
    }
}

/// The pure rules applied to what the advance read: what to write.
fn decide(snap: &Snapshot, coordinator: i64) -> Result<Writes, String> {
    let run = &snap.run;
    let def: Definition = serde_json::from_str(&snap.definition).map_err(|e| {
        format!("workflow {} version {:?} has a definition that cannot be read: {e}", run.workflow_id, run.version)
    })?;
    let dag = def.check().map_err(|problems| {
        let first = problems.first().map(|(f, m)| format!("{f}: {m}")).unwrap_or_default();
        format!("workflow {} version {:?} has an invalid definition: {first}", run.workflow_id, run.version)
    })?;
    let mut writes = Writes { status: run.status.clone(), ..Default::default() };
    if run.status == "pending" {
        if run.cancel_requested {
            writes.status = "cancelled".into();
            return Ok(writes);
        }
        if !snap.may_start {
            return Ok(writes);
        }
        writes.create_nodes = dag.def.nodes.iter().map(|n| n.key.clone()).collect();
    }
    let rows: HashMap<&str, &wq::NodeRow> = snap.nodes.iter().map(|n| (n.node_key.as_str(), n)).collect();
    let mut nodes: Vec<NodeRun> = dag
        .def
        .nodes
        .iter()
        .map(|n| match rows.get(n.key.as_str()) {
            Some(r) => NodeRun { state: State::parse(&r.status).unwrap_or(State::Waiting), decision: r.decision },
            None => NodeRun { state: State::Waiting, decision: None },
        })
        .collect();
    let cancelled = run.cancel_requested;
    let ended: Vec<(usize, Ended)> = snap
        .ended
        .iter()
        .filter_map(|e| {
            let i = *dag.index.get(&e.node_key)?;
            let how = match e.status.as_str() {
                "succeeded" => Ended::Succeeded(
                    e.result.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()).unwrap_or(Value::Null),
                ),
                _ if cancelled => Ended::Cancelled,
                other => Ended::Failed(
                    e.error.clone().unwrap_or_else(|| format!("its job (task {}) ended {other}", e.task_id)),
                ),
            };
            Some((i, how))
        })
        .collect();
    let before = nodes.clone();
    let mut context = serde_json::from_str::<Value>(&run.context).unwrap_or_else(|_| json!({}));
    let adv = step::advance(&dag, &mut nodes, &ended, &mut context, cancelled);
    for (i, now, error) in adv.changed {
        let node = &dag.def.nodes[i];
        let round = rows.get(node.key.as_str()).map(|r| r.round).unwrap_or(0);
        let job = (now.state == State::Running && before[i].state == State::Waiting).then(|| NewTask {
            app_id: node.app_id,
            action: Action::Run.to_string(),
            payload: Some(Value::Object(node.payload.clone().unwrap_or_default()).to_string()),
            max_attempts: node.max_attempts,
            idempotency_key: Some(format!("workflow-run:{}:{}:{round}", run.id, node.key)),
            parent_id: Some(coordinator),
            routing: node.routing.clone(),
            timeout_ms: node.timeout_ms,
            selector: node.selector.as_ref().map(|s| json!(s).to_string()),
            ..Default::default()
        });
        writes.nodes.push(NodeChange {
            key: node.key.clone(),
            from: before[i].state.as_str().into(),
            to: now.state.as_str().into(),
            decision: now.decision,
            error,
            job,
        });
    }
    if adv.context_changed {
        writes.context = Some(context.to_string());
    }
    match adv.run {
        Some(RunState::Running) | None => writes.status = "running".into(),
        Some(RunState::Succeeded) => writes.status = "succeeded".into(),
        Some(RunState::Cancelled) => writes.status = "cancelled".into(),
        Some(RunState::Failed(e)) => {
            writes.status = "failed".into();
            writes.error = Some(e);
        }
    }
    Ok(writes)
}
