//! Jobs on the dispatch path: execute a claimed `run` row, coordinate a fan-out parent (pick
//! nodes, write children), run a map step and the reduce step, and gather children into their
//! parent's status. The pure rules are in [`crate::jobs`]; the SQL in [`crate::store::jobs`].
//!
//! ```text
//!   claimed run row ─┬─ child (target_node) or hash ─► execute ─► finish
//!                    ├─ fan-out strategy ─► fan_out (children + stage gather) ─┐
//!                    ├─ map / map_reduce ─► map step ─► stage gather ──────────┤
//!                    └─ stage gather (recovered) ──────────────────────────────┤
//!   gather pass (coordinator): dead target ─► lost (broadcast) | moved ◄───────┘
//!                              all terminal ─► parent succeeded/failed, or reduce ─► finish
//! ```
//!
//! Must never: run a broadcast child on a node other than its own (I5); write about a child
//! unless its parent is still this coordinator's at the claimed epoch (I3).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::place::Placement;
use super::plan::{self, Plan};
use super::slots::Ticket;
use super::Shared;
use crate::domain::Action;
use crate::drivers::{Ctx, Driver, DriverError};
use crate::jobs::routing::{self, ChildState, Choice, Gathered, NodeStats};
use crate::jobs::{Strategy, JOB_ROUTE_NONE};
use crate::store::apps;
use crate::store::complete::{self, Outcome};
use crate::store::jobs::{self as jq, FanOut};
use crate::store::models::{NewTask, Task};

/// A random number (SipHash with fresh random keys): enough for `random` routing.
fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Run a claimed job row, its turn for an execution slot `ticket` (passed on at once when it
/// will not run here now). Returns the row when it is a parent that now waits for its children.
pub(super) async fn run(shared: &Shared, place: &Placement, task: Task, mut ticket: Ticket) -> Option<Task> {
    let (app_id, params, strategy) = match plan::plan(&task) {
        Plan::Poison(msg) => {
            ticket.pass();
            shared.completer.finish(&task, Outcome::Failed(msg)).await;
            return None;
        }
        Plan::App { .. } => {
            ticket.pass();
            shared
                .completer
                .finish(&task, Outcome::Failed("internal: an application command reached the job pool".into()))
                .await;
            return None;
        }
        Plan::Job { app_id, params, strategy } => (app_id, params, strategy),
    };
    match task.stage.as_deref() {
        Some("gather") => return Some(task),
        Some("reduce") => {
            ticket.pass();
            reduce(shared, task).await;
            return None;
        }
        _ if strategy == Strategy::Workflow => {
            ticket.pass();
            return super::workflow::begin(shared, task).await;
        }
        _ => {}
    }
    if task.target_node.is_none() && !strategy.fans_out() {
        // Runs here only where its selector matches: claimed by its plain owner because none
        // did ([`Placement::owns`]), it fails by the fan-out rule, or goes back when one
        // matches now (the claim was placed by an older view).
        let selector = place.job_selector(task.id, app_id, task.selector.as_deref());
        match place.owner_of(&task.id.to_string(), &selector) {
            None => {
                ticket.pass();
                no_candidate(shared, &task, &selector, strategy).await;
                return None;
            }
            Some(owner) if owner != shared.node_id => {
                ticket.pass();
                return release(shared, &task).await;
            }
            Some(_) => {}
        }
    }
    // A job naming a parent without being addressed to a node is a map child or a workflow's
    // node; a workflow's node is a job of its own routing, given its run's context.
    let mut context = None;
    if let (Some(parent), None) = (task.parent_id, task.target_node.as_deref()) {
        match parent_kind(shared, parent, strategy).await {
            Ok(ParentKind::Map) => {}
            Ok(ParentKind::Workflow { context: c, cancelled }) => {
                if cancelled {
                    ticket.pass();
                    let msg = "its workflow run was cancelled before it began".to_string();
                    finish_checked(shared, &task, Outcome::Failed(msg)).await;
                    return None;
                }
                context = Some(c);
            }
            Err(None) => {
                ticket.pass();
                return release(shared, &task).await;
            }
            Err(Some(msg)) => {
                ticket.pass();
                finish_checked(shared, &task, Outcome::Failed(msg)).await;
                return None;
            }
        }
    }
    let map_child = task.parent_id.is_some() && context.is_none();
    if task.target_node.is_some() || strategy == Strategy::Hash || map_child {
        let params = match task.parent_id.filter(|_| strategy.fans_out()) {
            Some(parent) => match with_parent_params(shared, &task, parent, params).await {
                Ok(p) => p,
                Err(None) => {
                    ticket.pass();
                    return release(shared, &task).await;
                }
                Err(Some(msg)) => {
                    ticket.pass();
                    finish_checked(shared, &task, Outcome::Failed(msg)).await;
                    return None;
                }
            },
            None => params,
        };
        let outcome = match execute(shared, &task, app_id, params, context, ticket).await {
            Some(Ok(v)) => Outcome::Succeeded(Some(v.to_string())),
            Some(Err(e)) => plan::outcome_after_error(&task, &e, &shared.cfg, chrono::Utc::now().naive_utc()),
            None => return None,
        };
        // A child's completion wakes its parent's coordinator (the completer does).
        finish_checked(shared, &task, outcome).await;
        return None;
    }
    if strategy.is_map() {
        return match execute(shared, &task, app_id, params, context, ticket).await {
            Some(Ok(v)) => {
                let (id, me, claim) = (task.id, shared.node_id.clone(), task.claim());
                let result = Some(v.to_string());
                match shared.store.run(move |c| jq::set_stage(c, id, &me, claim, "gather", result.clone())).await {
                    Ok(true) => Some(Task { stage: Some("gather".into()), ..task }),
                    Ok(false) => None,
                    Err(e) => {
                        tracing::warn!(task.id = id, error = %e, "could not record the end of a map step; it is recovered once nothing holds it");
                        None
                    }
                }
            }
            Some(Err(e)) => {
                let outcome = plan::outcome_after_error(&task, &e, &shared.cfg, chrono::Utc::now().naive_utc());
                finish_checked(shared, &task, outcome).await;
                None
            }
            None => None,
        };
    }
    ticket.pass();
    coordinate(shared, place, task, app_id, strategy, params).await
}

/// What a job's parent (by `parent_id`, the job not addressed to a node) makes it.
enum ParentKind {
    /// A map child.
    Map,
    /// A workflow run's node, with the run's context.
    Workflow { context: Value, cancelled: bool },
}

/// A job naming a parent without being addressed to a node is a map child or a workflow's node:
/// its parent must be a `map` or `map_reduce` job, which gathers it, or a workflow run's
/// coordinator (the API refuses others; a row written by hand fails here naming the column
/// rather than running as a child nobody gathers). A map child runs on its own ring owner, so it
/// takes no routing; a workflow's node has its own. `Err(None)`: the database did not answer
/// (hand the row back).
async fn parent_kind(shared: &Shared, parent: i64, own: Strategy) -> Result<ParentKind, Option<String>> {
    let routing = shared.store.run(move |c| jq::parent_routing(c, parent)).await;
    match routing {
        Ok(Some(Some(r))) if r == Strategy::Workflow.as_str() => {
            match shared.store.run(move |c| crate::store::workflows::node_context(c, parent)).await {
                Ok(Some((text, cancelled))) => {
                    let context = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| json!({}));
                    Ok(ParentKind::Workflow { context, cancelled })
                }
                Ok(None) => Err(Some(format!(
                    "parent_id {parent} is a workflow coordinator of no run: a workflow's node jobs are written by its coordinator"
                ))),
                Err(e) => {
                    tracing::warn!(parent.id = parent, error = %e, "could not read a workflow node's context; the job is handed back");
                    Err(None)
                }
            }
        }
        Ok(Some(_)) if own != Strategy::Hash => Err(Some(format!(
            "routing `{}` on a child of a map job (parent_id set): a map child runs on its own ring owner; \
             leave routing NULL",
            own.as_str()
        ))),
        Ok(Some(routing)) if Strategy::parse(routing.as_deref()).is_ok_and(Strategy::is_map) => Ok(ParentKind::Map),
        Ok(Some(routing)) => Err(Some(format!(
            "parent_id {parent} is a `{}` job: only map and map_reduce jobs take children by parent_id; \
             leave parent_id NULL for a plain job",
            routing.as_deref().unwrap_or("hash")
        ))),
        Ok(None) => Err(Some(format!("parent_id {parent} names no task: leave parent_id NULL for a plain job"))),
        Err(e) => {
            tracing::warn!(parent.id = parent, error = %e, "could not read a map child's parent; the child is handed back");
            Err(None)
        }
    }
}

/// A fan-out child's parameters as its job sees them: its parent's, with its own stored ones
/// over them ([`routing::merge_params`]); a child stores only its own (docs/jobs.md#caps).
/// `Err(None)`: the database did not answer (hand the row back); `Err(Some(_))`: the child can
/// never run, and why. Only a parent of the same application lends its parameters: they were
/// given to that application's jobs.
async fn with_parent_params(shared: &Shared, task: &Task, parent: i64, own: Value) -> Result<Value, Option<String>> {
    let found = match shared.store.run(move |c| jq::parent_params(c, parent)).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(task.id = task.id, parent.id = parent, error = %e, "could not read a child's parent parameters; the child is handed back");
            return Err(None);
        }
    };
    let Some(p) = found else {
        return Err(Some(format!(
            "its parent job {parent} does not exist: a fan-out child takes its parameters from its parent"
        )));
    };
    if p.app_id != task.app_id {
        return Err(Some(format!(
            "its parent job {parent} belongs to another application: a fan-out child takes its parameters \
             from a parent of its own application"
        )));
    }
    let parent_obj = match serde_json::from_str::<Value>(&p.payload) {
        Ok(Value::Object(o)) => o,
        _ => return Err(Some(format!("the payload of its parent job {parent} is not a JSON object"))),
    };
    let own = own.as_object().cloned().unwrap_or_default();
    Ok(routing::merge_params(&parent_obj, &own))
}

/// Finish unless fenced meanwhile (then the row is recovered by its key's owner).
async fn finish_checked(shared: &Shared, task: &Task, outcome: Outcome) {
    if shared.may_act() {
        shared.completer.finish(task, outcome).await;
    }
}

/// Run the job's handler: its application's driver and spec, or `noop` with `params.spec`, in an
/// execution slot taken at `ticket`'s turn. None when this node may no longer act (nothing is
/// written then).
async fn execute(
    shared: &Shared,
    task: &Task,
    app_id: Option<i64>,
    params: Value,
    context: Option<Value>,
    ticket: Ticket,
) -> Option<Result<Value, DriverError>> {
    let (driver, spec, app_name): (Arc<dyn Driver>, Value, String) = match app_id {
        Some(id) => {
            let app = match shared.store.run(move |c| apps::app(c, id)).await {
                Ok(Some(app)) => app,
                Ok(None) => {
                    return Some(Err(DriverError::Invalid(format!(
                        "application {id} does not exist: create it (POST /api/v1/apps) or fix app_id"
                    ))))
                }
                Err(e) => return Some(Err(DriverError::Failed(format!("could not read application {id}: {e}")))),
            };
            let Some(driver) = shared.drivers.get(&app.driver) else {
                return Some(Err(DriverError::Invalid(format!("driver `{}` is not available", app.driver))));
            };
            let spec = match serde_json::from_str::<Value>(&app.spec) {
                Ok(v) => v,
                Err(e) => return Some(Err(DriverError::Invalid(format!("application spec is not valid JSON: {e}")))),
            };
            (driver, spec, app.name)
        }
        None => {
            let Some(driver) = shared.drivers.get("noop") else {
                return Some(Err(DriverError::Invalid("the noop driver is not available".into())));
            };
            (driver, params.get("spec").cloned().unwrap_or_else(|| json!({})), String::new())
        }
    };
    if let Err(errors) = driver.validate(&spec) {
        return Some(Err(DriverError::Invalid(format!("job spec is invalid: {}", crate::drivers::describe(&errors)))));
    }
    let ctx = Ctx {
        app_id,
        app_name,
        task_id: Some(task.id),
        spec,
        params,
        node_id: shared.node_id.clone(),
        epoch: task.owner_epoch.unwrap_or_default() as u64,
        act_by: shared.act_by.clone(),
        // A job's runs share nothing: what its driver keeps lasts the one call.
        runtime: crate::drivers::Runtime::in_memory(Value::Null),
        context,
    };
    let _slot = ticket.slot().await?;
    if !shared.may_act() {
        return None;
    }
    // The attempt counts from here: a job whose start mark was taken back while it waited
    // gets it written again before its driver runs.
    match shared.starts.start(task).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(task.id = task.id, "the job is no longer this node's claim: it does not start");
            return None;
        }
        Err(e) => {
            tracing::warn!(task.id = task.id, error = %e, "the job's start could not be marked: it does not start now, and is recovered with its attempt given back");
            return None;
        }
    }
    let run = async {
        match task.timeout_ms {
            Some(ms) if ms > 0 => {
                let limit = Duration::from_millis(ms as u64);
                match tokio::time::timeout(limit, driver.run(&ctx)).await {
                    Ok(r) => r,
                    Err(_) => Err(DriverError::Timeout(format!("the job ran longer than its timeout_ms of {ms}"))),
                }
            }
            _ => driver.run(&ctx).await,
        }
    };
    // A workflow's node stops when its run is cancelled: dropping the driver's call kills what
    // it started (a command's process group).
    let result = match task.parent_id.filter(|_| ctx.context.is_some()) {
        Some(parent) => tokio::select! {
            r = run => r,
            _ = run_cancelled(shared, parent) => {
                tracing::info!(task.id = task.id, parent.id = parent, "workflow run cancelled: its node's job was stopped");
                Err(DriverError::Invalid("its workflow run was cancelled: the job was stopped".into()))
            }
        },
        None => run.await,
    };
    shared.unfenced(result).filter(|_| shared.may_act())
}

/// Returns once the workflow run coordinated by task `coordinator` is asked to stop (looked at
/// twice a second: one indexed read per running workflow node).
async fn run_cancelled(shared: &Shared, coordinator: i64) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Some((_, true))) =
            shared.store.run(move |c| crate::store::workflows::node_context(c, coordinator)).await
        {
            return;
        }
    }
}

/// Probe a member's `/livez` (500 ms): `failover` skips nodes that do not answer now, even
/// before their lease runs out.
async fn answers(addr: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(500)))
            .build()
            .into();
        agent.get(&format!("http://{addr}/livez")).call().map(|r| r.status().is_success()).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Coordinate a fan-out parent: choose its nodes and write its children in one transaction.
async fn coordinate(
    shared: &Shared,
    place: &Placement,
    task: Task,
    app_id: Option<i64>,
    strategy: Strategy,
    params: Value,
) -> Option<Task> {
    let selector = place.job_selector(task.id, app_id, task.selector.as_deref());
    let mut candidates = place.candidates(&selector);
    if strategy == Strategy::Failover {
        let mut first = None;
        for node in &candidates {
            let Some(addr) = place.addr(node) else { continue };
            if answers(addr.to_string()).await {
                first = Some(node.clone());
                break;
            }
            tracing::info!(task.id = task.id, node.id = %node, "failover: node did not answer its health probe; trying the next");
        }
        candidates = first.into_iter().collect();
    }
    let loads = if matches!(strategy, Strategy::LeastBusy) {
        match shared.store.run(jq::node_loads).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(task.id = task.id, error = %e, "could not read node loads; the job waits for the next round");
                return release(shared, &task).await;
            }
        }
    } else {
        HashMap::new()
    };
    let route_key = app_id.map(|a| a.to_string()).unwrap_or_else(|| JOB_ROUTE_NONE.to_string());
    let obj = params.as_object().cloned().unwrap_or_default();
    let shards = if strategy == Strategy::Sharding {
        match routing::check_shards(task.shard_total, &obj) {
            Ok(s) => s,
            Err((field, msg)) => {
                finish_checked(shared, &task, Outcome::Failed(format!("{field} {msg}"))).await;
                return None;
            }
        }
    } else {
        None
    };
    let sharded = strategy == Strategy::Sharding;
    let total = routing::child_count(strategy, candidates.len(), shards);
    let payloads = match routing::fan_out_payloads(&obj, sharded, total, shared.cfg.fan_out_max_bytes) {
        Ok(p) => p,
        Err(msg) => {
            // Rows written by hand reach here unchecked: fail before writing anything.
            finish_checked(shared, &task, Outcome::Failed(format!("payload.shard_params {msg}"))).await;
            return None;
        }
    };
    let random = random_u64();
    let parent = task.clone();
    let cands = candidates.clone();
    let choose = move |mem: &jq::RouteMemory| -> Vec<NewTask> {
        let mut stats = mem.stats.clone();
        for (node, load) in &loads {
            stats.entry(node.clone()).or_default().load = *load;
        }
        let targets =
            routing::choose(strategy, &Choice { candidates: &cands, stats: &stats, seq: mem.seq, random, shards });
        let total = targets.len();
        targets
            .into_iter()
            .enumerate()
            .map(|(i, node)| NewTask {
                app_id: parent.app_id,
                action: Action::Run.to_string(),
                // The children's stored parameters were counted against the cap above;
                // `child_count` is what `choose` returns, so every child has its entry.
                payload: Some(
                    payloads
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| routing::child_payload(&obj, sharded, i, total).to_string()),
                ),
                priority: Some(parent.priority),
                max_attempts: Some(parent.max_attempts),
                parent_id: Some(parent.id),
                routing: parent.routing.clone(),
                timeout_ms: parent.timeout_ms,
                shard_index: sharded.then_some(i as i32),
                shard_total: sharded.then_some(total as i32),
                target_node: Some(node),
                ..Default::default()
            })
            .collect()
    };
    let (id, me, claim) = (task.id, shared.node_id.clone(), task.claim());
    match shared.store.run(move |c| jq::fan_out(c, id, &me, claim, &route_key, &choose)).await {
        Ok(FanOut::Done(children)) => {
            tracing::info!(task.id = id, routing = strategy.as_str(), children = children.len(), "fanned out");
            // Children addressed to this node are claimed now, not at the next poll: SQLite
            // announces no insert (PostgreSQL's NOTIFY wakes every node anyway).
            shared.wake.notify_one();
            Some(Task { stage: Some("gather".into()), ..task })
        }
        Ok(FanOut::NotOurs) => None,
        Ok(FanOut::NoCandidate) => {
            no_candidate(shared, &task, &selector, strategy).await;
            None
        }
        Err(e) => {
            tracing::warn!(task.id = id, error = %e, "fan-out failed; the job is handed back");
            release(shared, &task).await
        }
    }
}

/// The one rule for a job that no live node can take, whatever its strategy: a failed attempt
/// (retried with backoff, then `failed` with the reason; the `task.failed` event is the one
/// event). For fan-out strategies the coordinator finds no candidate; a `hash`, `map` or
/// `map_reduce` job is claimed for it by its plain ring owner ([`Placement::owns`]).
async fn no_candidate(shared: &Shared, task: &Task, selector: &crate::ring::Selector, strategy: Strategy) {
    let why = if selector.is_empty() {
        "no live node can take it".to_string()
    } else {
        format!("no live node matches selector {}", json!(selector))
    };
    let why = if strategy == Strategy::Failover { format!("{why} (or none answered its health probe)") } else { why };
    tracing::warn!(task.id = task.id, routing = strategy.as_str(), reason = %why, "no live node can run the job");
    let outcome =
        plan::outcome_after_error(task, &DriverError::Failed(why), &shared.cfg, chrono::Utc::now().naive_utc());
    finish_checked(shared, task, outcome).await;
}

/// Hand a claimed row back untouched (a passing database problem).
async fn release(shared: &Shared, task: &Task) -> Option<Task> {
    let (id, node, claim) = (task.id, shared.node_id.clone(), task.claim());
    if let Err(e) = shared.store.run(move |c| complete::unclaim(c, id, &node, claim)).await {
        tracing::warn!(task.id = id, error = %e, "could not hand a job back; it is recovered once nothing holds it");
    }
    None
}

/// One gather pass over a parent. Returns true when the parent is done with (finished, handed
/// to the reduce step, or no longer ours).
pub(super) async fn gather(shared: &Shared, place: &Placement, parent: &Task) -> bool {
    if parent.routing.as_deref() == Some(Strategy::Workflow.as_str()) {
        return super::workflow::advance(shared, parent).await;
    }
    let pid = parent.id;
    let active = match shared.store.run(move |c| jq::active_children(c, pid)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(task.id = pid, error = %e, "could not read a job's children");
            return false;
        }
    };
    let strategy = Strategy::parse(parent.routing.as_deref()).unwrap_or(Strategy::Hash);
    let claim = parent.claim();
    let view = place.view.epoch as i64;
    let mut loads: Option<HashMap<String, i64>> = None;
    for child in &active {
        let Some(dead) = child.target_node.as_deref().filter(|t| !place.is_member(t)) else { continue };
        let me = shared.node_id.clone();
        let (cid, dead_s) = (child.id, dead.to_string());
        match strategy.child_on_dead_node() {
            routing::DeadChild::Lost => {
                let ev = shared.new_event(
                    "task.lost",
                    parent.app_id,
                    Some(cid),
                    format!(
                        "node {dead} left before broadcast child {cid} of job {pid} finished: lost, not run elsewhere"
                    ),
                    json!({ "parent": pid, "node": dead, "was": child.status }),
                );
                match shared.store.run(move |c| jq::lose_child(c, cid, &dead_s, pid, &me, claim, view, &ev)).await {
                    Ok(true) => {
                        tracing::warn!(task.id = cid, parent.id = pid, node.id = %dead, "broadcast child lost with its node")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(task.id = cid, error = %e, "could not mark a child lost"),
                }
            }
            routing::DeadChild::Reassign => {
                if loads.is_none() {
                    loads = shared.store.run(jq::node_loads).await.ok();
                }
                let stats: HashMap<String, NodeStats> = loads
                    .iter()
                    .flatten()
                    .map(|(n, l)| (n.clone(), NodeStats { load: *l, ..Default::default() }))
                    .collect();
                let candidates = place.candidates(&place.job_selector(pid, parent.app_id, parent.selector.as_deref()));
                let Some(to) = routing::reassign_to(&candidates, dead, &stats) else {
                    tracing::warn!(task.id = cid, node.id = %dead, "a child's node left and no other node matches: it waits");
                    continue;
                };
                let ev = shared.new_event(
                    "task.reassigned",
                    parent.app_id,
                    Some(cid),
                    format!("node {dead} left before child {cid} of job {pid} finished: moved to {to}"),
                    json!({ "parent": pid, "from": dead, "to": to, "was": child.status }),
                );
                let to_s = to.clone();
                match shared
                    .store
                    .run(move |c| jq::reassign_child(c, cid, &dead_s, &to_s, pid, &me, claim, view, &ev))
                    .await
                {
                    Ok(true) => {
                        tracing::info!(task.id = cid, parent.id = pid, from.node = %dead, to.node = %to, "child moved off a departed node");
                        if let Some(l) = loads.as_mut() {
                            *l.entry(to).or_default() += 1;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(task.id = cid, error = %e, "could not move a child"),
                }
            }
        }
    }
    if !active.is_empty() {
        return false;
    }
    conclude(shared, parent).await
}

/// End a parent none of whose children is left unfinished: its status and counts from theirs,
/// or its reduce step. True when the parent is done with (as [`gather`]).
pub(super) async fn conclude(shared: &Shared, parent: &Task) -> bool {
    let pid = parent.id;
    let strategy = Strategy::parse(parent.routing.as_deref()).unwrap_or(Strategy::Hash);
    let claim = parent.claim();
    let all = match shared.store.run(move |c| jq::children(c, pid)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(task.id = pid, error = %e, "could not read a job's children");
            return false;
        }
    };
    let states: Vec<ChildState> = all
        .iter()
        .map(|c| ChildState { id: c.id, status: c.status, node: c.owner_node.clone().or(c.target_node.clone()) })
        .collect();
    let Gathered::Done { succeeded, summary, error } = routing::gather(&states) else { return false };
    if strategy == Strategy::MapReduce {
        let (me, result) = (shared.node_id.clone(), parent.result.clone());
        return match shared.store.run(move |c| jq::set_stage(c, pid, &me, claim, "reduce", result.clone())).await {
            Ok(true) => {
                reduce_with(shared, parent, &all).await;
                true
            }
            Ok(false) => true,
            Err(e) => {
                tracing::warn!(task.id = pid, error = %e, "could not start a reduce step");
                false
            }
        };
    }
    let mut result = summary;
    if let Some(map) = parent.result.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()) {
        result["map"] = map;
    }
    // Counts either way: a failed parent says how its children ended as a succeeded one does.
    let outcome = match (succeeded, error) {
        (true, _) | (_, None) => Outcome::Succeeded(Some(result.to_string())),
        (false, Some(error)) => Outcome::FailedWithResult { error, result: result.to_string() },
    };
    tracing::info!(task.id = pid, routing = strategy.as_str(), succeeded, "job gathered its children");
    finish_checked(shared, parent, outcome).await;
    true
}

/// The reduce step of a map_reduce parent recovered in stage `reduce`.
async fn reduce(shared: &Shared, parent: Task) {
    let pid = parent.id;
    match shared.store.run(move |c| jq::children(c, pid)).await {
        Ok(all) => reduce_with(shared, &parent, &all).await,
        Err(e) => {
            tracing::warn!(task.id = pid, error = %e, "could not read a job's children for its reduce step");
            release(shared, &parent).await;
        }
    }
}

/// Run the reduce step with every child's outcome (`params.results`, in child id order).
async fn reduce_with(shared: &Shared, parent: &Task, children: &[Task]) {
    let results: Vec<Value> = children
        .iter()
        .map(|c| {
            json!({
                "task_id": c.id,
                "shard_index": c.shard_index,
                "status": c.status,
                "result": c.result.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()),
                "error": c.error,
            })
        })
        .collect();
    let Plan::Job { app_id, mut params, .. } = plan::plan(parent) else { return };
    params["reduce"] = json!(true);
    params["results"] = Value::Array(results);
    let outcome = match execute(shared, parent, app_id, params, None, shared.exec_slots.ticket()).await {
        Some(Ok(v)) => Outcome::Succeeded(Some(v.to_string())),
        Some(Err(e)) => plan::outcome_after_error(parent, &e, &shared.cfg, chrono::Utc::now().naive_utc()),
        None => return,
    };
    finish_checked(shared, parent, outcome).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::Value;
    use tokio::sync::watch;

    use super::super::place::Placement;
    use super::super::{MembershipLink, Shared};
    use crate::config::DispatchConfig;
    use crate::drivers::{BoxFut, Ctx, Driver, DriverError, Observed, Registry, SpecError};
    use crate::membership::{MembershipState, Status};
    use crate::metrics::Metrics;
    use crate::store::claim;
    use crate::store::{tasks, DbUrl, PoolOptions, Store};

    /// A `noop` whose `run` began nothing: it answers `Fenced`, as a driver does that read its
    /// deadline passed ([`crate::drivers::ActBy`]). With `fence_node` it first fences the node,
    /// as a node paused between its executor's check and the driver's is when it wakes.
    struct PastDeadline {
        membership: watch::Sender<MembershipState>,
        fence_node: bool,
    }

    impl Driver for PastDeadline {
        fn name(&self) -> &'static str {
            "noop"
        }
        fn validate(&self, _: &Value) -> Result<(), Vec<SpecError>> {
            Ok(())
        }
        fn start<'a>(&'a self, _: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
            Box::pin(async { Ok(()) })
        }
        fn stop<'a>(&'a self, _: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
            Box::pin(async { Ok(()) })
        }
        fn status<'a>(&'a self, _: &'a Ctx) -> BoxFut<'a, Result<Observed, DriverError>> {
            Box::pin(async { Ok(Observed::Running) })
        }
        fn run<'a>(&'a self, _: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>> {
            if self.fence_node {
                self.membership.send_modify(|s| s.status = Status::Fenced("its lease expired".into()));
            }
            Box::pin(async { Err(DriverError::Fenced("the deadline had passed: nothing was begun".into())) })
        }
        fn shutdown(&self) -> BoxFut<'_, ()> {
            Box::pin(async {})
        }
    }

    /// Run one claimed job on node `n1` with [`PastDeadline`]; the job's row afterwards.
    async fn run_past_deadline(fence_node: bool) -> crate::store::models::Task {
        let dir = tempfile::tempdir().unwrap();
        let url = DbUrl::parse(&format!("sqlite://{}/rota.db", dir.path().display())).unwrap();
        let store =
            Store::connect(&url, &PoolOptions { max_size: 4, connect_timeout: Duration::from_secs(5) }).unwrap();
        store.migrate().unwrap();
        let mut joined = MembershipState::joining();
        (joined.status, joined.valid_until, joined.joined_epoch) =
            (Status::Joined, Some(Instant::now() + Duration::from_secs(60)), 1);
        // n1 is the only member, so the job is its own (a job no member can take fails by
        // another rule, `no_candidate`).
        let me = crate::membership::Member {
            node_id: "n1".into(),
            addr: "n1.test:7000".into(),
            labels: Default::default(),
            weight: 1,
            started_at: String::new(),
        };
        joined.adopt_view(crate::membership::View { epoch: 1, members: vec![me] }, 16);
        let (membership, watched) = watch::channel(joined);
        let place = Placement::new("n1", &watched.borrow(), Arc::default(), Arc::default());
        let driver = Arc::new(PastDeadline { membership, fence_node });
        let shared = Shared::new(
            store.clone(),
            Registry::empty().with(driver),
            "n1".into(),
            MembershipLink { state: watched, newer_claim_grace: Duration::ZERO, acting: watch::channel(false).0 },
            DispatchConfig::default(),
            Arc::new(Metrics::new()),
        );
        let (fence, plans) = (shared.fence(), store.plans());
        let claimed = store
            .run(move |c| {
                diesel::connection::SimpleConnection::batch_execute(
                    c,
                    "INSERT INTO task (id, action) VALUES (7, 'run')",
                )?;
                claim::claim(c, &plans, &[7], "n1", 1, fence)
            })
            .await
            .unwrap();
        let task = claimed.into_iter().next().expect("the job is claimed");
        assert!(super::run(&shared, &place, task, shared.exec_slots.ticket()).await.is_none());
        store.run(|c| tasks::find_task(c, 7)).await.unwrap().unwrap()
    }

    /// A driver that began nothing because the node's deadline had passed, on a node that may no
    /// longer act: nothing is written about the job (it stays `running` under this node until
    /// its key's new owner recovers it), not even a failure. Two guards hold this: the executor
    /// asks for no write ([`Shared::unfenced`], [`finish_checked`]), and a write it asked for
    /// would carry the fenced node's passed deadline, which the database refuses; the test
    /// fails only when both break (the next one fails when the first is too strict).
    #[tokio::test]
    async fn a_fenced_answer_on_a_fenced_node_writes_nothing() {
        let row = run_past_deadline(true).await;
        assert_eq!(
            (row.status.as_str(), row.owner_node.as_deref(), row.error, row.attempts),
            ("running", Some("n1"), None, 1)
        );
    }

    /// The same answer on a node that may still act (held up past the deadline the driver read,
    /// not paused): the attempt failed as any other and is retried.
    #[tokio::test]
    async fn a_fenced_answer_on_a_node_that_may_act_is_a_failed_attempt() {
        let row = run_past_deadline(false).await;
        assert_eq!((row.status.as_str(), row.owner_node), ("pending", None));
        let error = row.error.unwrap_or_default();
        assert!(error.contains("the deadline had passed") && error.contains("retrying"), "{error}");
    }
}
