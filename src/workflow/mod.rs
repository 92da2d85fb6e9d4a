//! Workflows: DAGs of jobs (docs/workflows.md). This module is the pure part — the definition
//! and its validation (a cycle is refused naming its nodes), when a node may start given its
//! upstream nodes' states and its edges' conditions, how a failure policy spreads, how a node's
//! result joins the run's context, and the decision expression ([`expr`]).
//!
//! Why pure: a run's coordinator may be replaced at any moment, and the one that takes over must
//! reach the same decisions from what the database holds. [`step::advance`] is a function of the
//! definition, the nodes' recorded states and the context only, so the coordinator (I/O,
//! `dispatch/workflow.rs`, SQL in `store/workflows.rs`) only reads, calls it and writes what it
//! says in one fenced transaction; the rules are property-tested here.

pub mod expr;
pub mod step;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// At most this many nodes in one definition (each run writes one row per node).
pub const MAX_NODES: usize = 10_000;
/// At most this many edges.
pub const MAX_EDGES: usize = 100_000;
/// The longest node key.
pub const MAX_KEY_LEN: usize = 128;

/// What a node does when its job fails (after its own attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The run fails: no node starts after it; nodes already running finish.
    #[default]
    Fail,
    /// Its downstream is skipped (edges `on: success` out of it never hold); the rest goes on.
    Skip,
    /// Its downstream runs as if it had succeeded.
    Continue,
}

/// When an edge holds, by the state of its upstream node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// The upstream succeeded (or failed with policy `continue`).
    #[default]
    Success,
    /// The upstream failed.
    Failure,
    /// The upstream ended, succeeded or failed.
    Always,
    /// The upstream is a decision whose expression held.
    True,
    /// The upstream is a decision whose expression did not hold.
    False,
}

/// One node: a job (application, routing, payload, …) or a decision.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Its key, unique in the workflow: letters, digits, `_` and `-`.
    pub key: String,
    /// The job's application (its driver and spec run it); none: a `noop` job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<i64>,
    /// The job's routing (docs/jobs.md); none: `hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    /// The job's parameters (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Map<String, Value>>,
    /// Time limit of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i32>,
    /// Attempts of the job (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    /// Labels the executing node must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// What its failure does to the run: `fail` (default), `skip`, `continue`.
    #[serde(default)]
    pub on_failure: Policy,
    /// A decision node's expression on the context (it runs no job): its edges `on: true` or
    /// `on: false` are followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

/// An edge: `to` may start once `from` is in the state `on` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// The upstream node's key.
    pub from: String,
    /// The downstream node's key.
    pub to: String,
    /// When it holds: `success` (default), `failure`, `always`; from a decision: `true`, `false`.
    #[serde(default)]
    pub on: On,
}

/// A workflow's definition (one version of it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Definition {
    /// Its nodes.
    pub nodes: Vec<Node>,
    /// Its edges.
    #[serde(default)]
    pub edges: Vec<Edge>,
}

/// A definition checked: its nodes in an order where every edge goes forward, and each node's
/// incoming edges (by index).
#[derive(Debug, Clone)]
pub struct Dag {
    /// The definition.
    pub def: Definition,
    /// Node indices, upstream before downstream.
    pub order: Vec<usize>,
    /// Per node: (upstream node, condition).
    pub upstream: Vec<Vec<(usize, On)>>,
    /// Per node: its downstream nodes.
    pub downstream: Vec<Vec<usize>>,
    /// Per node: its parsed decision.
    pub decisions: Vec<Option<expr::Expr>>,
    /// Node index by key.
    pub index: HashMap<String, usize>,
}

/// A problem with a definition: the field (`nodes[2].key`, `edges[0].to`) and what to fix.
pub type Problem = (String, String);

fn key_ok(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Definition {
    /// Check a definition: keys, edges, decisions, policies, and that it has no cycle (a cycle is
    /// named by its nodes, `a → b → a`). Every problem found, each with its field.
    pub fn check(self) -> Result<Dag, Vec<Problem>> {
        let mut problems = Vec::new();
        if self.nodes.is_empty() {
            problems.push(("nodes".into(), "a workflow needs at least one node".into()));
        }
        if self.nodes.len() > MAX_NODES {
            problems.push(("nodes".into(), format!("at most {MAX_NODES} nodes (got {})", self.nodes.len())));
        }
        if self.edges.len() > MAX_EDGES {
            problems.push(("edges".into(), format!("at most {MAX_EDGES} edges (got {})", self.edges.len())));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut index = HashMap::new();
        let mut decisions = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            if !key_ok(&n.key) {
                problems.push((
                    format!("nodes[{i}].key"),
                    format!("must be 1 to {MAX_KEY_LEN} letters, digits, `_` or `-`"),
                ));
            } else if index.insert(n.key.clone(), i).is_some() {
                problems.push((format!("nodes[{i}].key"), format!("`{}` is the key of an earlier node", n.key)));
            }
            if let Some(r) = &n.routing {
                match crate::jobs::Strategy::parse(Some(r)) {
                    Ok(crate::jobs::Strategy::Workflow) => {
                        problems.push((format!("nodes[{i}].routing"), "a node cannot be a workflow of its own".into()))
                    }
                    Ok(_) => {}
                    Err(e) => problems.push((format!("nodes[{i}].routing"), e)),
                }
            }
            if n.timeout_ms.is_some_and(|t| t < 1) {
                problems.push((format!("nodes[{i}].timeout_ms"), "must be at least 1".into()));
            }
            if n.max_attempts.is_some_and(|t| t < 1) {
                problems.push((format!("nodes[{i}].max_attempts"), "must be at least 1".into()));
            }
            match &n.decision {
                Some(text) => {
                    let job_field = [
                        ("app_id", n.app_id.is_some()),
                        ("routing", n.routing.is_some()),
                        ("payload", n.payload.is_some()),
                        ("timeout_ms", n.timeout_ms.is_some()),
                        ("max_attempts", n.max_attempts.is_some()),
                        ("selector", n.selector.is_some()),
                    ]
                    .into_iter()
                    .find_map(|(f, set)| set.then_some(f));
                    if let Some(f) = job_field {
                        problems.push((format!("nodes[{i}].{f}"), "a decision node runs no job: leave it out".into()));
                    }
                    match expr::parse(text) {
                        Ok(e) => decisions.push(Some(e)),
                        Err(e) => {
                            problems.push((format!("nodes[{i}].decision"), e));
                            decisions.push(None);
                        }
                    }
                }
                None => decisions.push(None),
            }
        }
        let n = self.nodes.len();
        let mut upstream = vec![Vec::new(); n];
        let mut downstream = vec![Vec::new(); n];
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.edges.iter().enumerate() {
            let from = index.get(&e.from).copied();
            let to = index.get(&e.to).copied();
            if from.is_none() {
                problems.push((format!("edges[{i}].from"), format!("no node has the key `{}`", e.from)));
            }
            if to.is_none() {
                problems.push((format!("edges[{i}].to"), format!("no node has the key `{}`", e.to)));
            }
            let (Some(f), Some(t)) = (from, to) else { continue };
            if !seen.insert((f, t)) {
                problems.push((format!("edges[{i}]"), format!("a second edge from `{}` to `{}`", e.from, e.to)));
                continue;
            }
            let decision = self.nodes[f].decision.is_some();
            match e.on {
                On::True | On::False if !decision => problems.push((
                    format!("edges[{i}].on"),
                    format!("`{}` is not a decision node: use success, failure or always", e.from),
                )),
                On::Success | On::Failure if decision => problems.push((
                    format!("edges[{i}].on"),
                    format!("`{}` is a decision node: use true, false or always", e.from),
                )),
                On::Failure if self.nodes[f].on_failure == Policy::Fail => problems.push((
                    format!("edges[{i}].on"),
                    format!(
                        "under `{}`'s failure policy `fail` the run stops at its failure, so this edge would never \
                         follow one: give `{}` on_failure `skip` or `continue`",
                        e.from, e.from
                    ),
                )),
                _ => {}
            }
            upstream[t].push((f, e.on));
            downstream[f].push(t);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        match topological(&downstream) {
            Ok(order) => Ok(Dag { def: self, order, upstream, downstream, decisions, index }),
            Err(cycle) => {
                let names: Vec<&str> = cycle.iter().map(|&i| self.nodes[i].key.as_str()).collect();
                Err(vec![(
                    "edges".into(),
                    format!("the edges make a cycle: {} → {}", names.join(" → "), names.first().unwrap_or(&"")),
                )])
            }
        }
    }
}

/// Kahn's order of a graph, or one cycle (its nodes in edge order) when there is one.
pub fn topological(downstream: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = downstream.len();
    let mut indegree = vec![0usize; n];
    for outs in downstream {
        for &t in outs {
            indegree[t] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..n).rev().filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &t in downstream[i].iter().rev() {
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(t);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every node left has an incoming edge from another node left: walk backwards along them
    // until a node repeats; the walk between its two visits is a cycle.
    let left: Vec<bool> = indegree.iter().map(|&d| d > 0).collect();
    let mut from_of = vec![None; n];
    for (f, outs) in downstream.iter().enumerate() {
        for &t in outs {
            if left[f] && left[t] && from_of[t].is_none() {
                from_of[t] = Some(f);
            }
        }
    }
    let start = (0..n).find(|&i| left[i]).unwrap_or(0);
    let mut pos = vec![usize::MAX; n];
    let mut walk = Vec::new();
    let mut at = start;
    while pos[at] == usize::MAX {
        pos[at] = walk.len();
        walk.push(at);
        match from_of[at] {
            Some(f) => at = f,
            None => break,
        }
    }
    let mut cycle: Vec<usize> = walk[pos[at].min(walk.len())..].to_vec();
    cycle.reverse();
    // Start the cycle at its first node in definition order, so the message is stable.
    if let Some(min) = cycle.iter().enumerate().min_by_key(|(_, &v)| v).map(|(i, _)| i) {
        cycle.rotate_left(min);
    }
    Err(cycle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(k: &str) -> Node {
        Node { key: k.into(), ..Default::default() }
    }
    fn edge(f: &str, t: &str) -> Edge {
        Edge { from: f.into(), to: t.into(), on: On::Success }
    }

    #[test]
    fn a_cycle_is_refused_naming_its_nodes() {
        let def = Definition {
            nodes: ["extract", "transform", "load", "report"].map(node).to_vec(),
            edges: vec![
                edge("extract", "transform"),
                edge("transform", "load"),
                edge("load", "transform"),
                edge("load", "report"),
            ],
        };
        let err = def.check().unwrap_err();
        assert_eq!(
            err,
            vec![("edges".to_string(), "the edges make a cycle: transform → load → transform".to_string())]
        );
        let self_loop = Definition { nodes: vec![node("a")], edges: vec![edge("a", "a")] };
        assert_eq!(self_loop.check().unwrap_err()[0].1, "the edges make a cycle: a → a");
    }

    #[test]
    fn bad_definitions_name_their_fields() {
        let def = Definition {
            nodes: vec![
                node("a"),
                node("a"),
                node("b c"),
                Node { decision: Some("context.x >".into()), app_id: Some(1), ..node("d") },
                Node { routing: Some("fastest".into()), ..node("e") },
            ],
            edges: vec![
                edge("a", "zz"),
                Edge { on: On::True, ..edge("a", "e") },
                Edge { on: On::Failure, ..edge("a", "e") },
            ],
        };
        let fields: Vec<String> = def.check().unwrap_err().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "nodes[1].key",
                "nodes[2].key",
                "nodes[3].app_id",
                "nodes[3].decision",
                "nodes[4].routing",
                "edges[0].to",
                "edges[1].on",
                "edges[2]"
            ]
        );
        let fail_edge =
            Definition { nodes: vec![node("a"), node("b")], edges: vec![Edge { on: On::Failure, ..edge("a", "b") }] };
        assert!(fail_edge.check().unwrap_err()[0].1.contains("on_failure `skip` or `continue`"));
    }

    proptest! {
        /// A graph whose edges all go forward is accepted, in an order that keeps every edge
        /// forward; one edge back from a descendant to an ancestor makes a cycle, which is
        /// refused naming nodes that do form a cycle.
        #[test]
        fn cycles_are_found_and_named(n in 2usize..30, raw in proptest::collection::vec((0usize..30, 0usize..30), 0..80), back in (0usize..30, 0usize..30)) {
            let mut pairs: Vec<(usize, usize)> = raw.into_iter().map(|(a, b)| (a % n, b % n)).filter(|(a, b)| a < b).collect();
            pairs.sort();
            pairs.dedup();
            let keys: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let edges: Vec<Edge> = pairs.iter().map(|&(a, b)| edge(&keys[a], &keys[b])).collect();
            let def = Definition { nodes: keys.iter().map(|k| node(k)).collect(), edges: edges.clone() };
            let dag = def.clone().check().expect("forward edges make no cycle");
            let pos: HashMap<usize, usize> = dag.order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
            for &(a, b) in &pairs {
                prop_assert!(pos[&a] < pos[&b]);
            }
            // A path a → … → b exists for each edge (a, b); add b → a.
            if let Some(&(a, b)) = pairs.get((back.0 + back.1) % pairs.len().max(1)) {
                let mut edges = edges;
                edges.push(edge(&keys[b], &keys[a]));
                let err = Definition { nodes: def.nodes.clone(), edges: edges.clone() }.check().unwrap_err();
                prop_assert_eq!(err.len(), 1);
                let names: Vec<&str> = err[0].1.trim_start_matches("the edges make a cycle: ").split(" → ").collect();
                prop_assert!(names.len() >= 3 && names.first() == names.last(), "{:?}", names);
                let set: std::collections::HashSet<(&str, &str)> = edges.iter().map(|e| (e.from.as_str(), e.to.as_str())).collect();
                for w in names.windows(2) {
                    prop_assert!(set.contains(&(w[0], w[1])), "{:?} is not an edge of {:?}", w, names);
                }
            }
        }
    }
}
