//! Routing strategies: which live node(s) run a job, and how a fan-out parent ends.
//!
//! A job's coordinator is the ring owner of its task id. For `hash` it is also the executor. For
//! the single-node strategies it writes one child addressed to the chosen node (`target_node`),
//! for `broadcast` one per matching node, for `sharding` one per shard; `map`/`map_reduce` run
//! the job's own step on the coordinator and wait for the children the step adds. The parent's
//! status is derived from its children once every one is terminal ([`gather`]).
//!
//! A fan-out's children store only their own parameters and get their parent's merged in when
//! they run ([`child_payload`], [`merge_params`]); what one fan-out writes is capped in shards
//! and bytes (docs/jobs.md#caps), because its input may be a row written by hand.
//!
//! Routing memory (round-robin counter, per-node uses for lru/lfu) lives in `job_route`, keyed by
//! the job's application, so every coordinator continues the same rotation.

use crate::domain::TaskStatus;
use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

/// The `job_route` key of jobs without an application.
pub const JOB_ROUTE_NONE: &str = "-";

/// How a job picks its node(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The ring owner of the task id (default; no child rows).
    Hash,
    /// The matching nodes in turn (per application).
    RoundRobin,
    /// Any matching node.
    Random,
    /// The matching node with the fewest running tasks.
    LeastBusy,
    /// The first matching node by id.
    First,
    /// The last matching node by id.
    Last,
    /// The matching node this job used least recently (never used first).
    Lru,
    /// The matching node this job used least often.
    Lfu,
    /// The first matching node by id that answers a health probe now.
    Failover,
    /// Every matching node once; a child whose node dies is `lost`, never re-run elsewhere.
    Broadcast,
    /// N shards (default one per matching node); a shard whose node dies is reassigned.
    Sharding,
    /// The job's step runs on its coordinator and adds children (`parent_id`); the job ends
    /// when they all have.
    Map,
    /// As `map`, then a reduce step runs with every child's result.
    MapReduce,
    /// The coordinator of a workflow run (docs/workflows.md): written when a `workflow_run` row
    /// is inserted; its children are the run's node jobs, started as their upstream conditions
    /// hold.
    Workflow,
}

impl Strategy {
    /// Every strategy, in the order the docs list them.
    pub const ALL: [Strategy; 14] = [
        Strategy::Hash,
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastBusy,
        Strategy::First,
        Strategy::Last,
        Strategy::Lru,
        Strategy::Lfu,
        Strategy::Failover,
        Strategy::Broadcast,
        Strategy::Sharding,
        Strategy::Map,
        Strategy::MapReduce,
        Strategy::Workflow,
    ];

    /// The name used in `task.routing`, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Hash => "hash",
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastBusy => "least_busy",
            Strategy::First => "first",
            Strategy::Last => "last",
            Strategy::Lru => "lru",
            Strategy::Lfu => "lfu",
            Strategy::Failover => "failover",
            Strategy::Broadcast => "broadcast",
            Strategy::Sharding => "sharding",
            Strategy::Map => "map",
            Strategy::MapReduce => "map_reduce",
            Strategy::Workflow => "workflow",
        }
    }

    /// Read a `routing` value; None (or empty) is `hash`. The error lists the valid names.
    pub fn parse(text: Option<&str>) -> Result<Strategy, String> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(Strategy::Hash) };
        Strategy::ALL.iter().copied().find(|s| s.as_str() == text).ok_or_else(|| {
            format!(
                "unknown routing `{}`: use one of {}",
                text.chars().take(64).collect::<String>(),
                Strategy::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The strategies whose coordinator writes children addressed to nodes.
    pub fn fans_out(self) -> bool {
        !matches!(self, Strategy::Hash | Strategy::Map | Strategy::MapReduce)
    }

    /// Map and map_reduce: the job's own step runs, then its children are gathered.
    pub fn is_map(self) -> bool {
        matches!(self, Strategy::Map | Strategy::MapReduce)
    }

    /// What happens to an unfinished child whose node left: broadcast children are lost (I5),
    /// everything else is data and moves to another node.
    pub fn child_on_dead_node(self) -> DeadChild {
        if self == Strategy::Broadcast {
            DeadChild::Lost
        } else {
            DeadChild::Reassign
        }
    }
}

/// What becomes of an unfinished child whose node left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadChild {
    /// `lost`, never run elsewhere.
    Lost,
    /// Pending again, addressed to another node.
    Reassign,
}

/// What the routing memory and the database say about one candidate node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Times this job (application) was routed to the node.
    pub uses: i64,
    /// The round-robin counter value of its last use (0: never).
    pub last_seq: i64,
    /// Tasks running on it plus children waiting for it.
    pub load: i64,
}

/// Everything a choice depends on. `candidates` are the live, matching, non-drained nodes,
/// sorted by id (for `failover`, only those that answered the probe).
#[derive(Debug, Clone)]
pub struct Choice<'a> {
    /// Candidate node ids, sorted.
    pub candidates: &'a [String],
    /// Per-node memory and load; missing nodes are fresh and idle.
    pub stats: &'a HashMap<String, NodeStats>,
    /// This choice's round-robin counter value (1 for the job's first choice).
    pub seq: i64,
    /// A random number, for `random`.
    pub random: u64,
    /// Shards asked for (`task.shard_total`); None: one per candidate.
    pub shards: Option<i32>,
}

/// The nodes children go to: one entry per child, in shard order for `sharding`. Empty when
/// there is no candidate. `hash`, `map` and `map_reduce` have no children: empty.
pub fn choose(strategy: Strategy, c: &Choice<'_>) -> Vec<String> {
    let n = c.candidates.len();
    if n == 0 {
        return Vec::new();
    }
    let stat = |id: &String| c.stats.get(id).copied().unwrap_or_default();
    let one = |i: usize| vec![c.candidates[i].clone()];
    let by_key = |key: &dyn Fn(&String) -> (i64, i64)| {
        // Ties go to the smaller id: candidates are sorted and min_by_key keeps the first.
        let best = c.candidates.iter().min_by_key(|id| key(id)).cloned();
        best.into_iter().collect::<Vec<_>>()
    };
    match strategy {
        Strategy::Hash | Strategy::Map | Strategy::MapReduce | Strategy::Workflow => Vec::new(),
        Strategy::RoundRobin => one(((c.seq.max(1) - 1) as u64 % n as u64) as usize),
        Strategy::Random => one((c.random % n as u64) as usize),
        Strategy::First | Strategy::Failover => one(0),
        Strategy::Last => one(n - 1),
        Strategy::LeastBusy => by_key(&|id| (stat(id).load, 0)),
        Strategy::Lru => by_key(&|id| (stat(id).last_seq, 0)),
        Strategy::Lfu => by_key(&|id| (stat(id).uses, stat(id).last_seq)),
        Strategy::Broadcast => c.candidates.to_vec(),
        Strategy::Sharding => {
            let total = c.shards.map(|s| s.max(1) as usize).unwrap_or(n);
            // Start where the last run's rotation ended so repeated runs spread shard 0 too.
            let start = (c.seq.max(1) - 1) as usize;
            (0..total).map(|i| c.candidates[(start + i) % n].clone()).collect()
        }
    }
}

/// Where a node goes when its child must move: the least loaded other candidate (ties: lowest
/// id). None when no other candidate is live.
pub fn reassign_to(candidates: &[String], dead: &str, stats: &HashMap<String, NodeStats>) -> Option<String> {
    candidates.iter().filter(|c| c.as_str() != dead).min_by_key(|c| stats.get(*c).map(|s| s.load).unwrap_or(0)).cloned()
}

/// Most shards one job may have, however they are asked for (`shard_total` or the length of
/// `payload.shard_params`): each is a row written in one transaction.
pub const MAX_SHARDS: usize = 10_000;

/// The parameters child `index` of `total` stores: for sharding, its shard's own parameters
/// (`shard_params[index]`, when given), then `shard_index` and `shard_total`; otherwise none.
/// The parent's other parameters are not copied (a fan-out would write them once per child):
/// the child's job gets them at execution from [`merge_params`] (docs/jobs.md#caps).
pub fn child_payload(parent: &Map<String, Value>, sharded: bool, index: usize, total: usize) -> Value {
    let mut out = Map::new();
    if sharded {
        if let Some(Value::Object(own)) = parent.get("shard_params").and_then(|p| p.get(index)) {
            out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.insert("shard_index".into(), json!(index));
        out.insert("shard_total".into(), json!(total));
    }
    Value::Object(out)
}

/// What a fan-out child's job sees: its parent's parameters without `shard_params`, then the
/// child's own stored ones ([`child_payload`]), which win. A child that stored a full copy of
/// its parent's parameters sees the same object.
pub fn merge_params(parent: &Map<String, Value>, own: &Map<String, Value>) -> Value {
    let mut out = parent.clone();
    out.remove("shard_params");
    for (k, v) in own {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

/// How many children a fan-out writes when `candidates` nodes match: what [`choose`] returns.
pub fn child_count(strategy: Strategy, candidates: usize, shards: Option<i32>) -> usize {
    if candidates == 0 {
        return 0;
    }
    match strategy {
        Strategy::Hash | Strategy::Map | Strategy::MapReduce | Strategy::Workflow => 0,
        Strategy::Broadcast => candidates,
        Strategy::Sharding => shards.map(|s| s.max(1) as usize).unwrap_or(candidates),
        _ => 1,
    }
}

/// The stored parameters of every child of a fan-out of `total` children, checked against the
/// bytes a fan-out may write (`dispatch.fan_out_max_bytes`); the error gives the numbers.
pub fn fan_out_payloads(
    parent: &Map<String, Value>,
    sharded: bool,
    total: usize,
    max_bytes: u64,
) -> Result<Vec<String>, String> {
    let mut bytes = 0u64;
    let mut out = Vec::with_capacity(total);
    for i in 0..total {
        let payload = child_payload(parent, sharded, i, total).to_string();
        bytes += payload.len() as u64;
        out.push(payload);
    }
    if bytes > max_bytes {
        return Err(format!(
            "would write {total} children holding {bytes} bytes of parameters, more than the \
             {max_bytes} a fan-out may write (dispatch.fan_out_max_bytes): give fewer or smaller shard_params"
        ));
    }
    Ok(out)
}

/// Check a sharding job's `shard_total` and `shard_params` together; the error names the field.
pub fn check_shards(shard_total: Option<i32>, params: &Map<String, Value>) -> Result<Option<i32>, (String, String)> {
    if let Some(n) = shard_total {
        if n < 1 {
            return Err(("shard_total".into(), format!("must be at least 1 (got {n})")));
        }
        if n as usize > MAX_SHARDS {
            return Err(("shard_total".into(), format!("at most {MAX_SHARDS} shards (got {n})")));
        }
    }
    match params.get("shard_params") {
        None => Ok(shard_total),
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(("payload.shard_params".into(), "must not be empty (leave it out instead)".into()));
            }
            if list.len() > MAX_SHARDS {
                return Err((
                    "payload.shard_params".into(),
                    format!("at most {MAX_SHARDS} shards (got {} entries)", list.len()),
                ));
            }
            if let Some(i) = list.iter().position(|p| !p.is_object()) {
                return Err((format!("payload.shard_params[{i}]"), "each shard's parameters must be an object".into()));
            }
            match shard_total {
                Some(n) if n as usize != list.len() => {
                    Err(("shard_total".into(), format!("is {n} but payload.shard_params has {} entries", list.len())))
                }
                _ => Ok(Some(list.len() as i32)),
            }
        }
        Some(_) => Err(("payload.shard_params".into(), "must be an array of objects, one per shard".into())),
    }
}

/// A child's state, as the gather step reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildState {
    /// Child task id.
    pub id: i64,
    /// Its status.
    pub status: TaskStatus,
    /// Node it was addressed to or ran on.
    pub node: Option<String>,
}

/// How a parent ends once all its children are terminal.
#[derive(Debug, Clone, PartialEq)]
pub enum Gathered {
    /// Some child is still pending or running.
    Waiting {
        /// Children not yet terminal.
        active: usize,
    },
    /// Every child is terminal.
    Done {
        /// `succeeded` when every child succeeded, else `failed`.
        succeeded: bool,
        /// Counts per status, for `result`.
        summary: Value,
        /// Why the parent failed (None when it succeeded).
        error: Option<String>,
    },
}

/// Derive a parent's outcome from its children. A parent without children (a map step that
/// added none) succeeds.
pub fn gather(children: &[ChildState]) -> Gathered {
    let active = children.iter().filter(|c| !c.status.is_terminal()).count();
    if active > 0 {
        return Gathered::Waiting { active };
    }
    let count = |s: TaskStatus| children.iter().filter(|c| c.status == s).count();
    let (ok, failed, lost, cancelled) = (
        count(TaskStatus::Succeeded),
        count(TaskStatus::Failed),
        count(TaskStatus::Lost),
        count(TaskStatus::Cancelled),
    );
    let summary = json!({
        "children": children.len(), "succeeded": ok, "failed": failed, "lost": lost, "cancelled": cancelled,
    });
    if ok == children.len() {
        return Gathered::Done { succeeded: true, summary, error: None };
    }
    let mut parts = Vec::new();
    for (what, n) in [(TaskStatus::Failed, failed), (TaskStatus::Lost, lost), (TaskStatus::Cancelled, cancelled)] {
        if n > 0 {
            let ids: Vec<String> = children
                .iter()
                .filter(|c| c.status == what)
                .take(10)
                .map(|c| match &c.node {
                    Some(node) => format!("{} on {node}", c.id),
                    None => c.id.to_string(),
                })
                .collect();
            let more = if n > ids.len() { ", …" } else { "" };
            parts.push(format!("{n} {what} ({}{more})", ids.join(", ")));
        }
    }
    let error = format!("{ok} of {} children succeeded; {}", children.len(), parts.join("; "));
    Gathered::Done { succeeded: false, summary, error: Some(error) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    fn choice<'a>(c: &'a [String], stats: &'a HashMap<String, NodeStats>, seq: i64) -> Choice<'a> {
        Choice { candidates: c, stats, seq, random: 7, shards: None }
    }

    #[test]
    fn parse_names_and_errors() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(Some(s.as_str())), Ok(s));
        }
        assert_eq!(Strategy::parse(None), Ok(Strategy::Hash));
        assert_eq!(Strategy::parse(Some(" ")), Ok(Strategy::Hash));
        let e = Strategy::parse(Some("fastest")).unwrap_err();
        assert!(
            e.contains("unknown routing `fastest`") && e.contains("round_robin") && e.contains("map_reduce"),
            "{e}"
        );
    }

    #[test]
    fn single_node_strategies() {
        let c = nodes(3);
        let mut stats = HashMap::new();
        stats.insert("n0".to_string(), NodeStats { uses: 5, last_seq: 9, load: 4 });
        stats.insert("n1".to_string(), NodeStats { uses: 1, last_seq: 3, load: 0 });
        stats.insert("n2".to_string(), NodeStats { uses: 1, last_seq: 8, load: 2 });
        let ch = choice(&c, &stats, 10);
        assert_eq!(choose(Strategy::First, &ch), vec!["n0"]);
        assert_eq!(choose(Strategy::Last, &ch), vec!["n2"]);
        assert_eq!(choose(Strategy::LeastBusy, &ch), vec!["n1"]);
        assert_eq!(choose(Strategy::Lru, &ch), vec!["n1"]);
        assert_eq!(choose(Strategy::Lfu, &ch), vec!["n1"]);
        assert_eq!(choose(Strategy::Random, &ch), vec!["n1"]); // 7 % 3
        assert_eq!(choose(Strategy::Broadcast, &ch), c);
        assert!(choose(Strategy::Hash, &ch).is_empty());
        assert!(choose(Strategy::First, &choice(&[], &stats, 1)).is_empty());
    }

    #[test]
    fn sharding_defaults_to_one_shard_per_node_and_rotates() {
        let c = nodes(3);
        let stats = HashMap::new();
        assert_eq!(choose(Strategy::Sharding, &choice(&c, &stats, 1)), vec!["n0", "n1", "n2"]);
        let mut ch = choice(&c, &stats, 2);
        ch.shards = Some(5);
        assert_eq!(choose(Strategy::Sharding, &ch), vec!["n1", "n2", "n0", "n1", "n2"]);
    }

    #[test]
    fn shard_payloads_and_checks() {
        let parent = json!({"a": 1, "shard_params": [{"range": "0-9"}, {"range": "10-19", "a": 2}]});
        let p = parent.as_object().unwrap();
        assert_eq!(check_shards(None, p), Ok(Some(2)));
        assert!(check_shards(Some(3), p).unwrap_err().1.contains("has 2 entries"));
        assert_eq!(check_shards(Some(0), &Map::new()).unwrap_err().0, "shard_total");
        assert_eq!(child_payload(p, true, 1, 2), json!({"a": 2, "range": "10-19", "shard_index": 1, "shard_total": 2}));
        assert_eq!(child_payload(p, false, 0, 1), json!({}));
        let own = child_payload(p, true, 1, 2);
        assert_eq!(
            merge_params(p, own.as_object().unwrap()),
            json!({"a": 2, "range": "10-19", "shard_index": 1, "shard_total": 2})
        );
        assert_eq!(merge_params(p, &Map::new()), json!({"a": 1}));
        let many = json!({"shard_params": vec![json!({}); MAX_SHARDS + 1]});
        assert_eq!(
            check_shards(None, many.as_object().unwrap()),
            Err(("payload.shard_params".into(), "at most 10000 shards (got 10001 entries)".into()))
        );
        let bad = json!({"shard_params": [1]});
        assert_eq!(check_shards(None, bad.as_object().unwrap()).unwrap_err().0, "payload.shard_params[0]");
    }

    #[test]
    fn a_fan_out_over_its_bytes_is_refused_with_the_numbers() {
        let parent = json!({"big": "x".repeat(100_000), "shard_params": [{"r": "a"}, {"r": "b"}]});
        let p = parent.as_object().unwrap();
        // The parent's own parameters are not copied: two small children.
        let kids = fan_out_payloads(p, true, 2, 200).unwrap();
        assert_eq!(kids[0], r#"{"r":"a","shard_index":0,"shard_total":2}"#);
        let e = fan_out_payloads(p, true, 2, 50).unwrap_err();
        assert!(e.contains("2 children holding 82 bytes") && e.contains("than the 50 a fan-out may write"), "{e}");
    }

    #[test]
    fn gather_derives_the_parent() {
        let ch = |id, status: &str| ChildState { id, status: status.parse().unwrap(), node: Some(format!("n{id}")) };
        assert_eq!(gather(&[ch(1, "succeeded"), ch(2, "running")]), Gathered::Waiting { active: 1 });
        assert!(matches!(gather(&[]), Gathered::Done { succeeded: true, .. }));
        match gather(&[ch(1, "succeeded"), ch(2, "lost"), ch(3, "failed")]) {
            Gathered::Done { succeeded: false, error: Some(e), summary } => {
                assert_eq!(e, "1 of 3 children succeeded; 1 failed (3 on n3); 1 lost (2 on n2)");
                assert_eq!(summary["lost"], 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reassignment_avoids_the_dead_node() {
        let c = nodes(3);
        let mut stats = HashMap::new();
        stats.insert("n1".to_string(), NodeStats { load: 3, ..Default::default() });
        assert_eq!(reassign_to(&c, "n0", &stats).as_deref(), Some("n2"));
        assert_eq!(reassign_to(&c[..1], "n0", &stats), None);
    }

    proptest! {
        /// Round robin over k·n consecutive choices uses every node exactly k times.
        #[test]
        fn round_robin_is_even(n in 1usize..12, k in 1i64..6, start in 0i64..1000) {
            let c = nodes(n);
            let stats = HashMap::new();
            let mut counts: HashMap<String, i64> = HashMap::new();
            for seq in start + 1..=start + k * n as i64 {
                for id in choose(Strategy::RoundRobin, &choice(&c, &stats, seq)) {
                    *counts.entry(id).or_default() += 1;
                }
            }
            prop_assert_eq!(counts.len(), n);
            prop_assert!(counts.values().all(|&v| v == k));
        }

        /// LRU with its memory updated after each choice visits every node once per n choices.
        #[test]
        fn lru_cycles_through_every_node(n in 1usize..10, rounds in 1usize..4) {
            let c = nodes(n);
            let mut stats: HashMap<String, NodeStats> = HashMap::new();
            let mut seen = Vec::new();
            for seq in 1..=(rounds * n) as i64 {
                let pick = choose(Strategy::Lru, &choice(&c, &stats, seq)).remove(0);
                let s = stats.entry(pick.clone()).or_default();
                s.uses += 1;
                s.last_seq = seq;
                seen.push(pick);
            }
            for window in seen.chunks(n) {
                let mut w = window.to_vec();
                w.sort();
                prop_assert_eq!(&w, &c);
            }
        }

        /// LFU keeps use counts within one of each other, whatever the starting counts were
        /// once the counts have caught up.
        #[test]
        fn lfu_levels_uses(n in 2usize..8, extra in 0i64..20) {
            let c = nodes(n);
            let mut stats: HashMap<String, NodeStats> = HashMap::new();
            stats.insert("n0".into(), NodeStats { uses: extra, last_seq: 1, load: 0 });
            for seq in 2..(2 + extra * n as i64 + n as i64) {
                let pick = choose(Strategy::Lfu, &choice(&c, &stats, seq)).remove(0);
                let s = stats.entry(pick).or_default();
                s.uses += 1;
                s.last_seq = seq;
            }
            let uses: Vec<i64> = c.iter().map(|id| stats.get(id).map(|s| s.uses).unwrap_or(0)).collect();
            prop_assert!(uses.iter().max().unwrap() - uses.iter().min().unwrap() <= 1, "{:?}", uses);
        }

        /// [`child_count`] is what [`choose`] writes, for every strategy.
        #[test]
        fn child_count_is_what_choose_returns(n in 0usize..8, shards in proptest::option::of(1i32..40), seq in 1i64..50) {
            let c = nodes(n);
            let stats = HashMap::new();
            let mut ch = choice(&c, &stats, seq);
            ch.shards = shards;
            for s in Strategy::ALL {
                prop_assert_eq!(choose(s, &ch).len(), child_count(s, n, shards));
            }
        }

        /// A child's job sees what a full copy of its parent's parameters gave it: the parent's
        /// without `shard_params`, its shard's own over them, then its index and total.
        #[test]
        fn merged_params_equal_a_full_copy(
            keys in proptest::collection::vec("[a-e]", 0..6),
            own in proptest::collection::vec("[a-e]", 0..4),
            total in 1usize..5,
        ) {
            let own: Map<String, Value> = own.into_iter().map(|k| (k, json!("own"))).collect();
            let mut parent: Map<String, Value> = keys.into_iter().map(|k| (k, json!("parent"))).collect();
            parent.insert("shard_params".into(), Value::Array(vec![Value::Object(own.clone()); total]));
            for i in 0..total {
                let mut copy = parent.clone();
                copy.remove("shard_params");
                copy.extend(own.clone());
                copy.insert("shard_index".into(), json!(i));
                copy.insert("shard_total".into(), json!(total));
                let stored = child_payload(&parent, true, i, total);
                prop_assert_eq!(merge_params(&parent, stored.as_object().unwrap()), Value::Object(copy));
            }
        }

        /// Every shard gets a node, shard i goes to a candidate, and no node has more than
        /// ceil(total/n) shards.
        #[test]
        fn sharding_spreads(n in 1usize..8, total in 1i32..40, seq in 1i64..100) {
            let c = nodes(n);
            let stats = HashMap::new();
            let mut ch = choice(&c, &stats, seq);
            ch.shards = Some(total);
            let out = choose(Strategy::Sharding, &ch);
            prop_assert_eq!(out.len(), total as usize);
            let mut counts: HashMap<&String, usize> = HashMap::new();
            for id in &out {
                prop_assert!(c.contains(id));
                *counts.entry(id).or_default() += 1;
            }
            let cap = (total as usize).div_ceil(n);
            prop_assert!(counts.values().all(|&v| v <= cap));
        }
    }
}
