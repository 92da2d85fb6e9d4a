//! The checks: pure functions from what happened (the witness, the database rows, the audit of
//! every row update, the fault log) to a list of violations. No I/O, so each can be fed a
//! fabricated history and shown to fail (the self-checks at the bottom).
//!
//! Each check names the invariant of docs/design.md#invariants it tests. A check must be able to fail: where a
//! rule has legitimate exceptions (a task re-run after its node died), the exception must be
//! justified by a recorded fault on that node in that time window, not merely allowed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::procs::{Census, Crowded, Proc};
use super::witness::Exec;

/// Slack after a fault's recovery during which its effects may still show (leases, backoff).
pub const FAULT_SLACK_NS: i64 = 5_000_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

fn v(check: &'static str, detail: String) -> Violation {
    Violation { check, detail }
}

/// One life of one node process.
#[derive(Debug, Clone)]
pub struct Life {
    pub node: String,
    pub start: i64,
    /// When the process was known gone (killed, or exited).
    pub end: Option<i64>,
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: &'static str,
    /// The node it hit; None for etcd and PostgreSQL restarts (they hit every node).
    pub node: Option<String>,
    pub at: i64,
    /// When the injector had finished (resumed, restarted …).
    pub done: i64,
    pub recovered: Option<i64>,
    /// For faults that end the node's membership session (stop, kill, restart): the highest
    /// epoch it can have known before, and when it could act again. Anything it does after
    /// `resume` under an epoch <= `epoch` is a stale write or a stale action.
    pub stale: Option<(i64, i64)>,
}

impl Fault {
    /// Whether this fault may explain something odd on `node` during [from, to].
    pub fn touches(&self, node: &str, from: i64, to: i64) -> bool {
        let hits = self.node.as_deref().is_none_or(|n| n == node);
        let until = self.recovered.unwrap_or(self.done).max(self.done) + FAULT_SLACK_NS;
        hits && self.at <= to && until >= from
    }
}

fn touched(faults: &[Fault], node: &str, from: i64, to: i64) -> bool {
    faults.iter().any(|f| f.touches(node, from, to))
}

/// A task row at the end of the run.
#[derive(Debug, Clone, Default)]
pub struct Task {
    pub id: i64,
    pub app_id: Option<i64>,
    pub action: String,
    pub status: String,
    pub routing: Option<String>,
    pub parent_id: Option<i64>,
    pub shard_index: Option<i32>,
    pub shard_total: Option<i32>,
    pub target_node: Option<String>,
    pub owner_node: Option<String>,
    pub owner_epoch: Option<i64>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub created: i64,
    pub finished: Option<i64>,
}

/// One row update, recorded by a trigger with the writer's `application_name` (its node id).
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub at: i64,
    pub writer: String,
    pub table: String,
    pub row_id: i64,
    pub old_status: Option<String>,
    pub new_status: Option<String>,
    pub old_owner: Option<String>,
    pub old_epoch: Option<i64>,
    pub new_owner: Option<String>,
    pub new_epoch: Option<i64>,
    pub new_error: Option<String>,
}

/// An `app.acquired` / `app.released` event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub app_id: i64,
    pub node: String,
}

/// What the load generator did with one idempotency key.
#[derive(Debug, Clone, Default)]
pub struct Idem {
    pub key: String,
    /// Task ids the submissions were answered with (a second one is a violation).
    pub accepted: Vec<i64>,
    /// Submissions answered "already used" (409 / ON CONFLICT DO NOTHING).
    pub refused: usize,
}

const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "lost"];
/// Operations that act on an application (jobs of a handler are not commands: they may overlap).
const APP_OPS: [&str; 3] = ["start", "stop", "status"];

/// When an execution ended: its end line; else (cut short) the last time the watcher saw it
/// alive — a proven lower bound, so an overlap reported is an overlap that happened; else when
/// its node's process was gone (the shell dies with its node); else `now` (still running at the
/// end: reported).
fn end_of(e: &Exec, lives: &[Life], now: i64) -> (i64, bool) {
    if let Some(end) = e.end.or(e.seen_until) {
        return (end, true);
    }
    let life = lives.iter().filter(|l| l.node == e.node && l.start <= e.begin).max_by_key(|l| l.start);
    match life.and_then(|l| l.end) {
        Some(end) => (end.max(e.begin), true),
        None => (now, false),
    }
}

fn describe(e: &Exec, end: i64) -> String {
    let task = e.task.map(|t| format!(" task {t}")).unwrap_or_default();
    let cut = if e.end.is_none() { " (cut short)" } else { "" };
    format!("{}{task} on {} epoch {} [{} .. {}]{cut}", e.op, e.node, e.epoch, e.begin, end)
}

/// I1 — one actor: no two executions acting on one application (start/stop/status), and no two
/// executions of one task, overlap in time. Also: an execution that never ended on a live node.
pub fn overlaps(execs: &[Exec], lives: &[Life], now: i64) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut groups: BTreeMap<(&str, i64), Vec<(&Exec, i64)>> = BTreeMap::new();
    for e in execs {
        let (end, ended) = end_of(e, lives, now);
        if !ended && now - e.begin > 30_000_000_000 {
            out.push(v("I1", format!("{} never ended on a live node", describe(e, end))));
        }
        if let (Some(app), true) = (e.app, APP_OPS.contains(&e.op.as_str())) {
            groups.entry(("application", app)).or_default().push((e, end));
        }
        if let Some(t) = e.task {
            groups.entry(("task", t)).or_default().push((e, end));
        }
    }
    for ((what, id), mut list) in groups {
        list.sort_by_key(|(e, _)| e.begin);
        for i in 0..list.len() {
            let (a, a_end) = list[i];
            for &(b, b_end) in &list[i + 1..] {
                if b.begin >= a_end {
                    break;
                }
                // A restart runs stop then start in one task on one node: sequential, never
                // overlapping; any overlap is a violation.
                out.push(v("I1", format!("{what} {id}: {} overlaps {}", describe(a, a_end), describe(b, b_end))));
            }
        }
    }
    out
}

/// I5 — broadcast: a child runs only on its target node, on one node only, and one node runs at
/// most one child of a parent. A `lost` child's node must have had a fault while it was open.
pub fn broadcast(tasks: &[Task], execs: &[Exec], faults: &[Fault]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut ran: HashMap<i64, BTreeSet<&str>> = HashMap::new();
    for e in execs {
        if let Some(t) = e.task {
            ran.entry(t).or_default().insert(&e.node);
        }
    }
    let mut per_parent: BTreeMap<i64, BTreeMap<&str, Vec<i64>>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.parent_id.is_some() && t.routing.as_deref() == Some("broadcast")) {
        let nodes = ran.get(&t.id).cloned().unwrap_or_default();
        if nodes.len() > 1 {
            out.push(v("I5", format!("broadcast child {} (parent {:?}) ran on {nodes:?}", t.id, t.parent_id)));
        }
        for n in &nodes {
            if Some(*n) != t.target_node.as_deref() {
                out.push(v("I5", format!("broadcast child {} for {:?} ran on {n}", t.id, t.target_node)));
            }
            per_parent.entry(t.parent_id.unwrap_or(0)).or_default().entry(n).or_default().push(t.id);
        }
        if t.status == "lost" {
            let target = t.target_node.as_deref().unwrap_or("?");
            if !touched(faults, target, t.created, t.finished.unwrap_or(i64::MAX)) {
                out.push(v(
                    "I5",
                    format!("broadcast child {} lost though its node {target} had no fault: {:?}", t.id, t.error),
                ));
            }
        }
    }
    for (parent, nodes) in per_parent {
        for (node, kids) in nodes.into_iter().filter(|(_, k)| k.len() > 1) {
            out.push(v("I5", format!("broadcast {parent}: node {node} ran children {kids:?}")));
        }
    }
    out
}

/// I5 — sharding: every shard index of a sharded job has exactly one succeeded child, and the
/// job succeeded.
pub fn shards(tasks: &[Task]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut kids: BTreeMap<i64, Vec<&Task>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.parent_id.is_some()) {
        kids.entry(t.parent_id.unwrap_or(0)).or_default().push(t);
    }
    for p in tasks.iter().filter(|t| t.parent_id.is_none() && t.routing.as_deref() == Some("sharding")) {
        let children = kids.get(&p.id).cloned().unwrap_or_default();
        let total = p.shard_total.map(|n| n as usize).unwrap_or_else(|| children.len());
        for i in 0..total {
            let ok = children.iter().filter(|c| c.shard_index == Some(i as i32) && c.status == "succeeded").count();
            if ok != 1 {
                let all: Vec<String> = children
                    .iter()
                    .filter(|c| c.shard_index == Some(i as i32))
                    .map(|c| format!("{} {} on {:?}", c.id, c.status, c.owner_node))
                    .collect();
                out.push(v("I5", format!("sharded job {}: shard {i} succeeded {ok} times: {all:?}", p.id)));
            }
        }
        if p.status != "succeeded" {
            out.push(v("I5", format!("sharded job {} ended {}: {:?}", p.id, p.status, p.error)));
        }
    }
    out
}

/// I2 — nothing lost: every task the load was told exists, every row is terminal, `lost` only
/// for broadcast children, and `failed` only when explained (attempts used up by faults, or a
/// broadcast parent with lost children). Returns (violations, number not terminal or missing).
pub fn terminal(tasks: &[Task], submitted: &[i64]) -> (Vec<Violation>, usize) {
    let mut out = Vec::new();
    let by_id: HashMap<i64, &Task> = tasks.iter().map(|t| (t.id, t)).collect();
    let mut lost = 0;
    for id in submitted {
        if !by_id.contains_key(id) {
            lost += 1;
            out.push(v("I2", format!("task {id} was accepted but is not in the table")));
        }
    }
    let mut kids: HashMap<i64, Vec<&Task>> = HashMap::new();
    for t in tasks.iter().filter(|t| t.parent_id.is_some()) {
        kids.entry(t.parent_id.unwrap_or(0)).or_default().push(t);
    }
    for t in tasks {
        if !TERMINAL.contains(&t.status.as_str()) {
            lost += 1;
            out.push(v(
                "I2",
                format!("task {} is still {} on {:?} (epoch {:?})", t.id, t.status, t.owner_node, t.owner_epoch),
            ));
            continue;
        }
        let broadcast_child = t.parent_id.is_some() && t.routing.as_deref() == Some("broadcast");
        if t.status == "lost" && !broadcast_child {
            out.push(v("I2", format!("task {} ({}) is lost but is no broadcast child: {:?}", t.id, t.action, t.error)));
        }
        if t.status == "failed" {
            let exhausted = t.error.as_deref().is_some_and(|e| e.contains("no attempts left"));
            let children = kids.get(&t.id).cloned().unwrap_or_default();
            let lost_kids = t.routing.as_deref() == Some("broadcast")
                && !children.is_empty()
                && children.iter().all(|c| c.status == "succeeded" || c.status == "lost");
            if !exhausted && !lost_kids {
                out.push(v(
                    "I2",
                    format!("task {} ({} {:?}, app {:?}) failed: {:?}", t.id, t.action, t.routing, t.app_id, t.error),
                ));
            }
        }
        if t.status == "cancelled" {
            out.push(v("I2", format!("task {} was cancelled, and nobody cancels in this suite", t.id)));
        }
    }
    (out, lost)
}

/// I3 (results) — a `run` result says who produced it (`witness NODE EPOCH TASK` in its stdout);
/// it must be the row's owner at its epoch: a completion from any other claim was a stale write.
pub fn result_producers(tasks: &[Task]) -> Vec<Violation> {
    let mut out = Vec::new();
    for t in tasks.iter().filter(|t| t.status == "succeeded") {
        let Some(result) = &t.result else { continue };
        let Some(pos) = result.find("witness ") else { continue };
        let words: Vec<&str> = result[pos..].split(|c: char| c.is_whitespace() || c == '"').collect();
        let (node, epoch, task) = (
            words.get(1).copied(),
            words.get(2).and_then(|e| e.parse::<i64>().ok()),
            words.get(3).and_then(|e| e.parse::<i64>().ok()),
        );
        if node != t.owner_node.as_deref() || epoch != t.owner_epoch || task != Some(t.id) {
            out.push(v(
                "I3",
                format!(
                    "task {}: result produced by {node:?} epoch {epoch:?} for task {task:?}, but the row's owner is {:?} epoch {:?}",
                    t.id, t.owner_node, t.owner_epoch
                ),
            ));
        }
    }
    out
}

/// I3 (writes) — from the audit of every row update: (a) after a node's session ended (paused
/// past its lease, killed, restarted) it writes nothing as owner under an epoch of that session;
/// (b) only a row's owner completes it; (c) only an application's owner changes its observed
/// state. Recoveries (back to pending, owner cleared; `lost`; "no attempts left") are allowed.
pub fn stale_writes(audit: &[Audit], faults: &[Fault]) -> Vec<Violation> {
    let mut out = Vec::new();
    let recovery = |a: &Audit| {
        (a.new_status.as_deref() == Some("pending") && a.new_owner.is_none())
            || a.new_status.as_deref() == Some("lost")
            || a.new_error.as_deref().is_some_and(|e| e.contains("no attempts left"))
    };
    for f in faults {
        let (Some(node), Some((epoch, resume))) = (&f.node, f.stale) else { continue };
        for a in audit.iter().filter(|a| &a.writer == node && a.at > resume) {
            let as_owner = a.new_owner.as_deref() == Some(node.as_str()) && a.new_epoch.is_some_and(|e| e <= epoch);
            let stale = match a.table.as_str() {
                "task" => as_owner && !recovery(a),
                _ => as_owner,
            };
            if stale {
                out.push(v(
                    "I3",
                    format!(
                        "{} {}: {node} wrote {:?} -> {:?} (epoch {:?} -> {:?}) after its session ended ({} at {}, epoch <= {epoch}, resumed {resume}); write at {}",
                        a.table, a.row_id, a.old_status, a.new_status, a.old_epoch, a.new_epoch, f.kind, f.at, a.at
                    ),
                ));
            }
        }
    }
    for a in audit {
        let nodeish = a.writer.starts_with('n');
        match a.table.as_str() {
            "task"
                if nodeish
                    && a.old_status.as_deref() == Some("running")
                    && a.new_status.as_deref() == Some("succeeded")
                    && a.old_owner.as_deref() != Some(a.writer.as_str()) =>
            {
                out.push(v(
                    "I3",
                    format!("task {}: {} wrote succeeded on a row owned by {:?}", a.row_id, a.writer, a.old_owner),
                ));
            }
            "application"
                if nodeish
                    && a.old_status != a.new_status
                    && (a.old_owner.as_deref() != Some(a.writer.as_str())
                        || a.new_owner.as_deref() != Some(a.writer.as_str())) =>
            {
                out.push(v(
                    "I3",
                    format!(
                        "application {}: {} changed its state {:?} -> {:?} while the owner was {:?}",
                        a.row_id, a.writer, a.old_status, a.new_status, a.old_owner
                    ),
                ));
            }
            _ => {}
        }
    }
    out
}

/// I3 (actions) — the witness: no command begins on a node under an epoch of a session that had
/// already ended when it began (a paused node that wakes with an old view acts on nothing).
pub fn stale_actions(execs: &[Exec], faults: &[Fault]) -> Vec<Violation> {
    let mut out = Vec::new();
    for f in faults {
        let (Some(node), Some((epoch, resume))) = (&f.node, f.stale) else { continue };
        for e in execs.iter().filter(|e| &e.node == node && e.begin > resume && e.epoch <= epoch) {
            out.push(v(
                "I3",
                format!(
                    "{} began after its node's session ended ({} at {}, epoch <= {epoch})",
                    describe(e, e.end.unwrap_or(e.begin)),
                    f.kind,
                    f.at
                ),
            ));
        }
    }
    out
}

/// I4 — hand-off: an application is acquired only when nobody holds it, or when its holder has
/// left (a fault hit the holder since it acquired); and each application's commands execute in
/// id order (a re-run of a recovered command may repeat it, never go back past a later one).
pub fn handoffs(events: &[Event], execs: &[Exec], faults: &[Fault]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut holder: HashMap<i64, (&str, i64)> = HashMap::new();
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.id);
    for e in sorted {
        match e.kind.as_str() {
            "app.acquired" => {
                if let Some((h, since)) = holder.get(&e.app_id).copied() {
                    if h != e.node && !touched(faults, h, since, e.at) {
                        out.push(v(
                            "I4",
                            format!(
                                "application {} acquired by {} (event {}) while {h} held it and had no fault",
                                e.app_id, e.node, e.id
                            ),
                        ));
                    }
                }
                holder.insert(e.app_id, (&e.node, e.at));
            }
            "app.released" => {
                holder.remove(&e.app_id);
            }
            _ => {}
        }
    }
    let mut per_app: BTreeMap<i64, Vec<&Exec>> = BTreeMap::new();
    for e in execs.iter().filter(|e| e.task.is_some() && e.app.is_some() && (e.op == "start" || e.op == "stop")) {
        per_app.entry(e.app.unwrap_or(0)).or_default().push(e);
    }
    for (app, mut list) in per_app {
        list.sort_by_key(|e| e.begin);
        let mut highest: Option<&Exec> = None;
        for e in list {
            if let Some(h) = highest {
                if e.task < h.task {
                    out.push(v(
                        "I4",
                        format!(
                            "application {app}: task {:?} ({} on {}) executed after task {:?} ({} on {})",
                            e.task, e.op, e.node, h.task, h.op, h.node
                        ),
                    ));
                    continue;
                }
            }
            highest = Some(e);
        }
    }
    out
}

/// Duplicate executions: a task (one operation of it) that ran to its end more than once. Each
/// extra run must be explained by a fault on the node of the run before it (its completion was
/// cut off, or its node left): otherwise the dispatcher ran finished work again. Returns
/// (violations, number of extra runs).
pub fn duplicates(execs: &[Exec], faults: &[Fault]) -> (Vec<Violation>, usize) {
    let mut out = Vec::new();
    let mut runs: BTreeMap<(i64, &str), Vec<&Exec>> = BTreeMap::new();
    for e in execs.iter().filter(|e| e.end.is_some()) {
        if let Some(t) = e.task {
            runs.entry((t, &e.op)).or_default().push(e);
        }
    }
    let mut extra = 0;
    for ((task, op), mut list) in runs {
        list.sort_by_key(|e| e.begin);
        for pair in list.windows(2) {
            extra += 1;
            let (a, b) = (pair[0], pair[1]);
            if !touched(faults, &a.node, a.begin, b.begin) {
                out.push(v(
                    "duplicate",
                    format!(
                        "task {task} ({op}) ran to its end twice with no fault on {} in between: {} then {}",
                        a.node,
                        describe(a, a.end.unwrap_or(0)),
                        describe(b, b.end.unwrap_or(0))
                    ),
                ));
            }
        }
    }
    (out, extra)
}

/// Idempotency keys: one row per key; a second submission is refused, never accepted; the task
/// holding the key ran to its end at least once when it succeeded.
pub fn idempotency(idem: &[Idem], tasks: &[Task], execs: &[Exec]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut rows: HashMap<&str, Vec<i64>> = HashMap::new();
    for t in tasks {
        if let Some(k) = &t.idempotency_key {
            rows.entry(k).or_default().push(t.id);
        }
    }
    for i in idem {
        let distinct: BTreeSet<i64> = i.accepted.iter().copied().collect();
        if distinct.len() > 1 {
            out.push(v("idempotency", format!("key {}: accepted twice, as tasks {distinct:?}", i.key)));
        }
        let held = rows.get(i.key.as_str()).cloned().unwrap_or_default();
        if held.len() > 1 {
            out.push(v("idempotency", format!("key {}: {} rows {held:?}", i.key, held.len())));
        }
        if let (Some(id), Some(row)) = (i.accepted.first(), held.first()) {
            if id != row {
                out.push(v("idempotency", format!("key {}: accepted as {id}, but the row holding it is {row}", i.key)));
            }
        }
        if !i.accepted.is_empty() && held.is_empty() {
            out.push(v("idempotency", format!("key {}: accepted, but no row holds it", i.key)));
        }
        for id in &held {
            let succeeded = tasks.iter().any(|t| t.id == *id && t.status == "succeeded");
            let ran = execs.iter().any(|e| e.task == Some(*id) && e.end.is_some());
            if succeeded && !ran {
                out.push(v(
                    "idempotency",
                    format!("key {}: task {id} succeeded but the witness never saw it end", i.key),
                ));
            }
        }
    }
    // A way of submitting that was never answered, neither accepted nor refused, is broken, not
    // unlucky: faults make some submissions fail, not all of a run's. (An idempotent SQL insert
    // whose `ON CONFLICT (idempotency_key)` no longer matched the schema failed every time and
    // was counted as a failed submission only.)
    for kind in ["-api-", "-sql-"] {
        let of_kind: Vec<&Idem> = idem.iter().filter(|i| i.key.contains(kind)).collect();
        if of_kind.len() >= 3 && of_kind.iter().all(|i| i.accepted.is_empty() && i.refused == 0) {
            out.push(v(
                "idempotency",
                format!("none of {} idempotent submissions ({kind}) was answered: every one failed", of_kind.len()),
            ));
        }
    }
    out
}

/// Delayed tasks never begin before their `run_after`.
pub fn delays(delayed: &[(i64, i64)], execs: &[Exec]) -> Vec<Violation> {
    let mut out = Vec::new();
    let due: HashMap<i64, i64> = delayed.iter().copied().collect();
    for e in execs {
        if let Some(&at) = e.task.as_ref().and_then(|t| due.get(t)) {
            // run_after is stored with microsecond precision.
            if e.begin + 1_000 < at {
                out.push(v(
                    "delay",
                    format!(
                        "{} began {} ms before its run_after",
                        describe(e, e.end.unwrap_or(e.begin)),
                        (at - e.begin) / 1_000_000
                    ),
                ));
            }
        }
    }
    out
}

fn procs_list(procs: &[Proc]) -> String {
    let each: Vec<String> =
        procs.iter().map(|p| format!("pid {} on {} epoch {} (parent {})", p.pid, p.node, p.epoch, p.ppid)).collect();
    each.join(", ")
}

/// I1 — one actor, seen from the operating system: no sample of `/proc` finds two live workers
/// of one `process` application (children or grandchildren, on any node). Consecutive crowded
/// samples of one application are one episode, reported once with its length.
pub fn live_processes(crowded: &[Crowded], period_ns: i64) -> Vec<Violation> {
    let mut by_app: BTreeMap<&str, Vec<&Crowded>> = BTreeMap::new();
    for c in crowded {
        by_app.entry(&c.app).or_default().push(c);
    }
    let mut out = Vec::new();
    for (app, mut list) in by_app {
        list.sort_by_key(|c| c.index);
        let mut i = 0;
        while i < list.len() {
            let mut j = i;
            while j + 1 < list.len() && list[j + 1].index == list[j].index + 1 {
                j += 1;
            }
            let (first, last) = (list[i], list[j]);
            let most = list[i..=j].iter().max_by_key(|c| c.procs.len()).copied().unwrap_or(first);
            out.push(v(
                "I1",
                format!(
                    "application {app}: {} live processes at once for at least {:.1} s ({} samples from {} to {}): {}",
                    most.procs.len(),
                    ((last.at - first.at) + period_ns) as f64 / 1e9,
                    j - i + 1,
                    first.at,
                    last.at,
                    procs_list(&most.procs)
                ),
            ));
            i = j + 1;
        }
    }
    out
}

/// I1 — nothing outlives its node: once every node has stopped, no worker of any application
/// is alive (a grandchild that escaped its node's death would run on unsupervised).
pub fn survivors(census: &Census) -> Vec<Violation> {
    census
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(app, procs)| {
            v("I1", format!("application {app}: {} processes outlived every node: {}", procs.len(), procs_list(procs)))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Self-checks: fabricated histories with a known fault must be reported; a clean one must not.

#[cfg(test)]
mod self_checks {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn life(node: &str, start: i64, end: Option<i64>) -> Life {
        Life { node: node.into(), start, end }
    }

    fn kill(node: &str, at: i64) -> Fault {
        Fault { kind: "kill", node: Some(node.into()), at, done: at, recovered: Some(at + S), stale: None }
    }

    fn child(id: i64, parent: i64, target: &str, status: &str) -> Task {
        Task {
            id,
            parent_id: Some(parent),
            routing: Some("broadcast".into()),
            target_node: Some(target.into()),
            owner_node: Some(target.into()),
            status: status.into(),
            action: "run".into(),
            ..Task::default()
        }
    }

    #[test]
    fn an_overlap_of_one_application_on_two_nodes_is_reported() {
        let lives = [life("n1", 0, None), life("n2", 0, None)];
        let execs = [
            Exec::new("n1", Some(10), Some(3), "start", 100 * S, Some(101 * S)),
            Exec::new("n2", None, Some(3), "status", 100 * S + S / 2, Some(100 * S + S / 2 + 1)),
        ];
        let found = overlaps(&execs, &lives, 200 * S);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].detail.contains("application 3"), "{found:?}");
    }

    #[test]
    fn a_cut_short_execution_lasts_until_its_node_died() {
        // n1 was killed at 105 s with the start running: n2's start at 103 s overlapped it.
        let lives = [life("n1", 0, Some(105 * S)), life("n2", 0, None)];
        let mut execs = vec![
            Exec::new("n1", Some(10), Some(3), "start", 100 * S, None),
            Exec::new("n2", Some(10), Some(3), "start", 103 * S, Some(104 * S)),
        ];
        assert_eq!(overlaps(&execs, &lives, 200 * S).len(), 2, "one per group: application and task");
        // Taken over after the death: fine.
        execs[1].begin = 106 * S;
        execs[1].end = Some(107 * S);
        assert!(overlaps(&execs, &lives, 200 * S).is_empty());
        // Sequential runs of one application on two nodes: fine.
        let clean = [
            Exec::new("n1", Some(10), Some(3), "start", 100 * S, Some(101 * S)),
            Exec::new("n2", None, Some(3), "status", 101 * S + 1, Some(102 * S)),
        ];
        assert!(overlaps(&clean, &lives, 200 * S).is_empty());
        // Aborted by its own (fenced) node, which lives on: the watcher dates its end.
        let mut aborted = vec![
            Exec { seen_until: Some(101 * S), ..Exec::new("n1", Some(12), Some(4), "start", 100 * S, None) },
            Exec::new("n2", None, Some(4), "status", 102 * S, Some(102 * S + 1)),
        ];
        assert!(overlaps(&aborted, &[life("n1", 0, None), life("n2", 0, None)], 200 * S).is_empty());
        aborted[1].begin = 100 * S + S / 2;
        assert_eq!(overlaps(&aborted, &[life("n1", 0, None), life("n2", 0, None)], 200 * S).len(), 1);
    }

    #[test]
    fn a_broadcast_child_on_two_nodes_is_reported() {
        let tasks = [child(21, 20, "n1", "succeeded"), child(22, 20, "n2", "succeeded")];
        let execs = [
            Exec::new("n1", Some(21), Some(5), "run", S, Some(2 * S)),
            Exec::new("n2", Some(21), Some(5), "run", 3 * S, Some(4 * S)),
            Exec::new("n2", Some(22), Some(5), "run", S, Some(2 * S)),
        ];
        let found = broadcast(&tasks, &execs, &[]);
        assert!(found.iter().any(|f| f.detail.contains("ran on {\"n1\", \"n2\"}")), "{found:?}");
        assert!(found.iter().any(|f| f.detail.contains("ran children [21, 22]")), "{found:?}");
        // A lost child needs a fault on its node.
        let lost = [child(23, 20, "n3", "lost")];
        assert_eq!(broadcast(&lost, &[], &[]).len(), 1);
        assert!(broadcast(&lost, &[], &[kill("n3", S)]).is_empty());
    }

    #[test]
    fn a_shard_that_succeeded_twice_or_never_is_reported() {
        let parent = Task {
            id: 30,
            routing: Some("sharding".into()),
            shard_total: Some(2),
            status: "succeeded".into(),
            ..Task::default()
        };
        let shard = |id, i, status: &str| Task {
            id,
            parent_id: Some(30),
            shard_index: Some(i),
            status: status.into(),
            ..Task::default()
        };
        let tasks = [parent, shard(31, 0, "succeeded"), shard(32, 0, "succeeded"), shard(33, 1, "failed")];
        let found = shards(&tasks);
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn unfinished_missing_and_unexplained_failed_tasks_are_reported() {
        let t = |id, status: &str, error: Option<&str>| Task {
            id,
            status: status.into(),
            error: error.map(String::from),
            action: "run".into(),
            ..Task::default()
        };
        let tasks = [
            t(1, "running", None),
            t(2, "succeeded", None),
            t(3, "failed", Some("boom")),
            t(4, "failed", Some("node left; no attempts left")),
        ];
        let (found, lost) = terminal(&tasks, &[1, 2, 3, 4, 5]);
        assert_eq!(lost, 2, "task 1 running, task 5 missing");
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn a_result_from_another_claim_is_reported() {
        let t = Task {
            id: 7,
            status: "succeeded".into(),
            owner_node: Some("n2".into()),
            owner_epoch: Some(40),
            result: Some(r#"{"exit_code":0,"stdout_tail":["witness n1 33 7"]}"#.into()),
            ..Task::default()
        };
        assert_eq!(result_producers(std::slice::from_ref(&t)).len(), 1);
        let ok = Task { owner_node: Some("n1".into()), owner_epoch: Some(33), ..t };
        assert!(result_producers(&[ok]).is_empty());
    }

    #[test]
    fn a_write_from_a_fenced_node_is_reported() {
        let stop = Fault {
            kind: "stop",
            node: Some("n1".into()),
            at: 10 * S,
            done: 15 * S,
            recovered: Some(17 * S),
            stale: Some((40, 15 * S)),
        };
        let completion = Audit {
            at: 15 * S + 1,
            writer: "n1".into(),
            table: "task".into(),
            row_id: 9,
            old_status: Some("running".into()),
            new_status: Some("succeeded".into()),
            old_owner: Some("n1".into()),
            old_epoch: Some(40),
            new_owner: Some("n1".into()),
            new_epoch: Some(40),
            new_error: None,
        };
        assert_eq!(stale_writes(std::slice::from_ref(&completion), std::slice::from_ref(&stop)).len(), 1);
        // The same write before the pause, or its own recovery after it, is fine.
        let before = Audit { at: 9 * S, ..completion.clone() };
        let recovered =
            Audit { new_status: Some("pending".into()), new_owner: None, new_epoch: None, ..completion.clone() };
        assert!(stale_writes(&[before, recovered], std::slice::from_ref(&stop)).is_empty());
        // Completing someone else's row.
        let foreign = Audit { at: 5 * S, writer: "n3".into(), ..completion };
        assert_eq!(stale_writes(&[foreign], &[]).len(), 1);
        // Acting under the old epoch after waking.
        let act = Exec { epoch: 40, ..Exec::new("n1", None, Some(3), "status", 16 * S, Some(16 * S + 1)) };
        assert_eq!(stale_actions(&[act], &[stop]).len(), 1);
    }

    #[test]
    fn an_acquisition_from_a_live_holder_and_commands_out_of_order_are_reported() {
        let ev = |id, kind: &str, node: &str, at| Event { id, at, kind: kind.into(), app_id: 3, node: node.into() };
        let events = [ev(1, "app.acquired", "n1", S), ev(2, "app.acquired", "n2", 2 * S)];
        assert_eq!(handoffs(&events, &[], &[]).len(), 1);
        assert!(handoffs(&events, &[], &[kill("n1", S + S / 2)]).is_empty(), "n1 died: taking over is right");
        let released =
            [ev(1, "app.acquired", "n1", S), ev(2, "app.released", "n1", 2 * S), ev(3, "app.acquired", "n2", 3 * S)];
        assert!(handoffs(&released, &[], &[]).is_empty());
        let order = [
            Exec::new("n1", Some(11), Some(3), "start", S, Some(2 * S)),
            Exec::new("n1", Some(10), Some(3), "stop", 3 * S, Some(4 * S)),
        ];
        assert_eq!(handoffs(&[], &order, &[]).len(), 1);
    }

    #[test]
    fn a_duplicate_without_a_fault_is_reported_and_one_after_a_kill_is_counted() {
        let execs = [
            Exec::new("n1", Some(5), None, "run", 100 * S, Some(101 * S)),
            Exec::new("n2", Some(5), None, "run", 130 * S, Some(131 * S)),
        ];
        let (found, extra) = duplicates(&execs, &[]);
        assert_eq!((found.len(), extra), (1, 1));
        let (found, extra) = duplicates(&execs, &[kill("n1", 101 * S)]);
        assert_eq!((found.len(), extra), (0, 1));
    }

    #[test]
    fn an_idempotency_key_accepted_twice_and_an_early_delayed_task_are_reported() {
        let idem = [Idem { key: "k".into(), accepted: vec![1, 2], refused: 0 }];
        let t = |id| Task { id, idempotency_key: Some("k".into()), status: "succeeded".into(), ..Task::default() };
        let found = idempotency(&idem, &[t(1), t(2)], &[]);
        assert!(found.len() >= 3, "{found:?}");
        let failed = |n| Idem { key: format!("chaos-1-sql-{n}"), accepted: vec![], refused: 0 };
        let all_failed = [failed(1), failed(2), failed(3)];
        assert_eq!(idempotency(&all_failed, &[], &[]).len(), 1);
        let one_refused = [failed(1), failed(2), Idem { refused: 1, ..failed(3) }];
        assert!(idempotency(&one_refused, &[], &[]).is_empty());
        let early = [Exec::new("n1", Some(8), Some(5), "run", 10 * S, Some(11 * S))];
        assert_eq!(delays(&[(8, 12 * S)], &early).len(), 1);
        assert!(delays(&[(8, 9 * S)], &early).is_empty());
    }

    fn worker(pid: u32, node: &str) -> Proc {
        Proc { pid, ppid: 1, node: node.into(), epoch: "7".into() }
    }

    #[test]
    fn two_live_workers_are_one_violation_per_episode_and_a_survivor_is_one_too() {
        let crowd = |index, app: &str| Crowded {
            index,
            at: index as i64 * 100_000_000,
            app: app.into(),
            procs: vec![worker(10, "n1"), worker(20, "n2")],
        };
        // Samples 3-5 and 9 of one application: two episodes; one sample of another: a third.
        let found =
            live_processes(&[crowd(3, "a"), crowd(4, "a"), crowd(5, "a"), crowd(9, "a"), crowd(4, "b")], 100_000_000);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].detail.contains("3 samples") && found[0].detail.contains("pid 20 on n2"), "{found:?}");
        assert!(live_processes(&[], 100_000_000).is_empty());
        let mut census = Census::new();
        census.insert("a".into(), vec![]);
        assert!(survivors(&census).is_empty());
        census.insert("b".into(), vec![worker(30, "n3")]);
        assert_eq!(survivors(&census).len(), 1);
    }
}
