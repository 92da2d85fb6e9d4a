//! One advance of a run: from the nodes' recorded states (and the outcomes of jobs just seen to
//! end), which nodes start, which are skipped, which decisions are taken, what the context
//! becomes and whether the run is over.
//!
//! The rules (docs/workflows.md#semantics):
//! - An edge holds by its upstream node's state: `success` when it succeeded (or failed with
//!   policy `continue`), `failure` when it failed, `always` when it did either, `true` / `false`
//!   when a decision took that branch. A skipped upstream holds only `always` (so branches after a
//!   decision can join again); a cancelled one holds none.
//! - A waiting node starts when every incoming edge holds, and is skipped as soon as one never
//!   can; a node without incoming edges starts at once.
//! - A failed node with policy `fail` fails the run: nothing starts after it, and the run ends
//!   `failed` when no node runs any more. A cancelled run starts nothing and ends `cancelled`
//!   when no node runs.
//! - A node's result joins the context under its key (a failed node's: `{"error": …}`), in
//!   definition order; the context is otherwise the run's own.
//!
//! Must never: start a node twice in one run (a node leaves `waiting` once, until an admin
//! retries it), or start one whose upstream has not ended.

use serde_json::{json, Value};

use super::{expr, Dag, On, Policy};

/// A node's state in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started.
    Waiting,
    /// Its job was written and has not been seen to end.
    Running,
    /// Ended well (a decision: evaluated).
    Succeeded,
    /// Its job failed after its attempts.
    Failed,
    /// Never to run: an upstream condition can no longer hold.
    Skipped,
    /// The run was cancelled before it ran, or while it ran.
    Cancelled,
}

impl State {
    /// The name stored in `workflow_node_run.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Skipped => "skipped",
            State::Cancelled => "cancelled",
        }
    }

    /// Read a stored name.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "waiting" => State::Waiting,
            "running" => State::Running,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            "skipped" => State::Skipped,
            "cancelled" => State::Cancelled,
            _ => return None,
        })
    }

    /// Succeeded, failed, skipped or cancelled.
    pub fn ended(self) -> bool {
        !matches!(self, State::Waiting | State::Running)
    }
}

/// A node's state with a decision's branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRun {
    /// Its state.
    pub state: State,
    /// A decision's branch, once taken.
    pub decision: Option<bool>,
}

/// How a running node's job ended (read from its task).
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// Succeeded, with its result (`null` when none).
    Succeeded(Value),
    /// Failed (or was cancelled or lost), with the reason.
    Failed(String),
    /// Cancelled (the run was cancelled).
    Cancelled,
}

/// Where the run is after an advance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Nodes run (or are still to be seen to end).
    Running,
    /// Every node ended and no `fail` node failed.
    Succeeded,
    /// A node with policy `fail` failed; the error names it.
    Failed(String),
    /// Cancelled, and no node runs any more.
    Cancelled,
}

/// What one advance decided. Node indices are the definition's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Advance {
    /// Nodes whose jobs are to be written, in topological order.
    pub start: Vec<usize>,
    /// Every node whose state changed, with its new state (started ones included), and the
    /// error of a failed one.
    pub changed: Vec<(usize, NodeRun, Option<String>)>,
    /// Whether the context changed.
    pub context_changed: bool,
    /// The run's state.
    pub run: Option<RunState>,
}

/// Whether edge `on` out of `up` holds (Some(true)), never can (Some(false)), or may yet (None).
fn holds(dag: &Dag, up: usize, on: On, state: NodeRun) -> Option<bool> {
    match state.state {
        State::Waiting | State::Running => None,
        State::Cancelled => Some(false),
        State::Skipped => Some(on == On::Always),
        State::Succeeded => Some(match on {
            On::Success | On::Always => true,
            On::Failure => false,
            On::True => state.decision == Some(true),
            On::False => state.decision == Some(false),
        }),
        State::Failed => Some(match on {
            On::Failure | On::Always => true,
            On::Success => dag.def.nodes[up].on_failure == Policy::Continue,
            On::True | On::False => false,
        }),
    }
}

/// Advance a run: apply the outcomes of jobs just seen to end (`ended`, by node), then start,
/// skip and decide what the rules allow, in topological order (so a chain of decisions and skips
/// resolves in one advance). `nodes` and `context` are updated in place.
pub fn advance(
    dag: &Dag,
    nodes: &mut [NodeRun],
    ended: &[(usize, Ended)],
    context: &mut Value,
    cancelled: bool,
) -> Advance {
    let mut out = Advance::default();
    if !context.is_object() {
        *context = json!({});
    }
    let mut ended: Vec<&(usize, Ended)> = ended.iter().filter(|(i, _)| nodes[*i].state == State::Running).collect();
    ended.sort_by_key(|(i, _)| *i);
    for (i, how) in ended {
        let key = dag.def.nodes[*i].key.clone();
        let (state, error) = match how {
            Ended::Succeeded(result) => {
                context[&key] = result.clone();
                (State::Succeeded, None)
            }
            Ended::Failed(error) => {
                context[&key] = json!({ "error": error });
                (State::Failed, Some(error.clone()))
            }
            Ended::Cancelled => (State::Cancelled, None),
        };
        out.context_changed |= state != State::Cancelled;
        nodes[*i].state = state;
        out.changed.push((*i, nodes[*i], error));
    }
    let failed: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].state == State::Failed && dag.def.nodes[i].on_failure == Policy::Fail)
        .collect();
    if cancelled {
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.state == State::Waiting {
                n.state = State::Cancelled;
                out.changed.push((i, *n, None));
            }
        }
    } else if failed.is_empty() {
        for &i in &dag.order {
            if nodes[i].state != State::Waiting {
                continue;
            }
            let mut ready = true;
            let mut never = false;
            for &(up, on) in &dag.upstream[i] {
                match holds(dag, up, on, nodes[up]) {
                    Some(true) => {}
                    Some(false) => never = true,
                    None => ready = false,
                }
            }
            if never {
                nodes[i].state = State::Skipped;
                out.changed.push((i, nodes[i], None));
            } else if ready {
                match &dag.decisions[i] {
                    Some(e) => {
                        nodes[i] = NodeRun { state: State::Succeeded, decision: Some(expr::eval(e, context)) };
                    }
                    None => {
                        nodes[i].state = State::Running;
                        out.start.push(i);
                    }
                }
                out.changed.push((i, nodes[i], None));
            }
        }
    }
    let running = nodes.iter().any(|n| n.state == State::Running);
    out.run = Some(if running {
        RunState::Running
    } else if cancelled {
        RunState::Cancelled
    } else if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|&i| dag.def.nodes[i].key.as_str()).collect();
        RunState::Failed(format!("node {} failed (on_failure: fail)", names.join(", ")))
    } else if nodes.iter().any(|n| n.state == State::Waiting) {
        // Unreachable by the rules (a waiting node's upstream has all ended here, so it started
        // or was skipped); kept running rather than ended wrongly.
        RunState::Running
    } else {
        RunState::Succeeded
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{Definition, Edge, Node};
    use proptest::prelude::*;

    fn dag(nodes: Vec<Node>, edges: &[(&str, &str, On)]) -> Dag {
        Definition { nodes, edges: edges.iter().map(|&(f, t, on)| Edge { from: f.into(), to: t.into(), on }).collect() }
            .check()
            .unwrap()
    }
    fn node(k: &str) -> Node {
        Node { key: k.into(), ..Default::default() }
    }
    fn fresh(d: &Dag) -> Vec<NodeRun> {
        vec![NodeRun { state: State::Waiting, decision: None }; d.def.nodes.len()]
    }
    fn states(nodes: &[NodeRun]) -> Vec<&'static str> {
        nodes.iter().map(|n| n.state.as_str()).collect()
    }

    #[test]
    fn a_diamond_joins_after_both_branches_and_sees_both_results() {
        let d = dag(
            ["a", "b", "c", "d"].map(node).to_vec(),
            &[("a", "b", On::Success), ("a", "c", On::Success), ("b", "d", On::Success), ("c", "d", On::Success)],
        );
        let (mut n, mut ctx) = (fresh(&d), json!({"date": "2026-12-13"}));
        assert_eq!(advance(&d, &mut n, &[], &mut ctx, false).start, vec![0]);
        assert_eq!(
            advance(&d, &mut n, &[(0, Ended::Succeeded(json!({"rows": 3})))], &mut ctx, false).start,
            vec![1, 2]
        );
        let a = advance(&d, &mut n, &[(1, Ended::Succeeded(json!("b")))], &mut ctx, false);
        assert!(a.start.is_empty(), "d waits for c");
        let a = advance(&d, &mut n, &[(2, Ended::Succeeded(json!("c")))], &mut ctx, false);
        assert_eq!(a.start, vec![3]);
        assert_eq!(ctx, json!({"date": "2026-12-13", "a": {"rows": 3}, "b": "b", "c": "c"}));
        let a = advance(&d, &mut n, &[(3, Ended::Succeeded(Value::Null))], &mut ctx, false);
        assert_eq!(a.run, Some(RunState::Succeeded));
    }

    #[test]
    fn failure_policies() {
        let chain = |p: Policy| {
            dag(
                vec![Node { on_failure: p, ..node("a") }, node("b"), node("c"), node("side")],
                &[("a", "b", On::Success), ("b", "c", On::Success)],
            )
        };
        let run = |p: Policy| {
            let d = chain(p);
            let (mut n, mut ctx) = (fresh(&d), json!({}));
            advance(&d, &mut n, &[], &mut ctx, false);
            let a = advance(&d, &mut n, &[(0, Ended::Failed("boom".into()))], &mut ctx, false);
            let a = if a.start.contains(&1) {
                advance(&d, &mut n, &[(1, Ended::Succeeded(json!(1)))], &mut ctx, false)
            } else {
                a
            };
            let a = if a.start.contains(&2) {
                advance(&d, &mut n, &[(2, Ended::Succeeded(json!(1)))], &mut ctx, false)
            } else {
                a
            };
            let last = advance(&d, &mut n, &[(3, Ended::Succeeded(json!(1)))], &mut ctx, false);
            let _ = a;
            (states(&n), last.run.unwrap(), ctx)
        };
        let (s, r, ctx) = run(Policy::Fail);
        assert_eq!(s, ["failed", "waiting", "waiting", "succeeded"]);
        assert_eq!(r, RunState::Failed("node a failed (on_failure: fail)".into()));
        assert_eq!(ctx["a"], json!({"error": "boom"}));
        let (s, r, _) = run(Policy::Skip);
        assert_eq!((s, r), (vec!["failed", "skipped", "skipped", "succeeded"], RunState::Succeeded));
        let (s, r, _) = run(Policy::Continue);
        assert_eq!((s, r), (vec!["failed", "succeeded", "succeeded", "succeeded"], RunState::Succeeded));
    }

    #[test]
    fn a_decision_follows_one_branch() {
        let d = dag(
            vec![
                node("count"),
                Node { decision: Some("context.count.rows > 100".into()), ..node("big") },
                node("bulk"),
                node("small"),
                node("report"),
            ],
            &[
                ("count", "big", On::Success),
                ("big", "bulk", On::True),
                ("big", "small", On::False),
                ("bulk", "report", On::Always),
                ("small", "report", On::Always),
            ],
        );
        let (mut n, mut ctx) = (fresh(&d), json!({}));
        advance(&d, &mut n, &[], &mut ctx, false);
        let a = advance(&d, &mut n, &[(0, Ended::Succeeded(json!({"rows": 500})))], &mut ctx, false);
        assert_eq!(a.start, vec![2]);
        assert_eq!(states(&n), ["succeeded", "succeeded", "running", "skipped", "waiting"]);
        // `report` joins the branches: `always` holds on the skipped one too.
        let a = advance(&d, &mut n, &[(2, Ended::Succeeded(json!(1)))], &mut ctx, false);
        assert_eq!(a.start, vec![4]);
        let a = advance(&d, &mut n, &[(4, Ended::Succeeded(json!(1)))], &mut ctx, false);
        assert_eq!(a.run, Some(RunState::Succeeded));
    }

    #[test]
    fn a_cancelled_run_starts_nothing_and_ends_once_nothing_runs() {
        let d = dag(["a", "b"].map(node).to_vec(), &[("a", "b", On::Success)]);
        let (mut n, mut ctx) = (fresh(&d), json!({}));
        advance(&d, &mut n, &[], &mut ctx, false);
        assert_eq!(advance(&d, &mut n, &[], &mut ctx, true).run, Some(RunState::Running));
        let a = advance(&d, &mut n, &[(0, Ended::Cancelled)], &mut ctx, true);
        assert_eq!((states(&n), a.run), (vec!["cancelled", "cancelled"], Some(RunState::Cancelled)));
    }

    fn any_dag() -> impl Strategy<Value = (Dag, Vec<bool>)> {
        (
            2usize..25,
            proptest::collection::vec((0usize..25, 0usize..25, 0u8..3), 0..60),
            proptest::collection::vec((0u8..3, any::<bool>()), 25),
        )
            .prop_map(|(n, raw, per)| {
                let mut seen = std::collections::HashSet::new();
                let edges: Vec<(String, String, On)> = raw
                    .into_iter()
                    .map(|(a, b, on)| (a % n, b % n, on))
                    .filter(|(a, b, _)| a < b && seen.insert((*a, *b)))
                    .map(|(a, b, on)| {
                        let on = match on {
                            0 => On::Success,
                            1 => On::Failure,
                            _ => On::Always,
                        };
                        (format!("n{a}"), format!("n{b}"), on)
                    })
                    .collect();
                let nodes: Vec<Node> = (0..n)
                    .map(|i| {
                        let policy = match per[i].0 {
                            0 => Policy::Fail,
                            1 => Policy::Skip,
                            _ => Policy::Continue,
                        };
                        Node { key: format!("n{i}"), on_failure: policy, ..Default::default() }
                    })
                    .collect();
                // A failure edge needs a policy other than fail: soften those nodes.
                let mut nodes = nodes;
                for (f, _, on) in &edges {
                    if *on == On::Failure {
                        let i: usize = f[1..].parse().unwrap();
                        if nodes[i].on_failure == Policy::Fail {
                            nodes[i].on_failure = Policy::Skip;
                        }
                    }
                }
                let def = Definition {
                    nodes,
                    edges: edges.into_iter().map(|(from, to, on)| Edge { from, to, on }).collect(),
                };
                (def.check().unwrap(), per.iter().map(|p| p.1).collect())
            })
    }

    proptest! {
        /// Driving a run to its end by the rules, with each job's outcome chosen at random and
        /// jobs ending in random order: every node starts at most once and only after every
        /// upstream node ended; the run ends; it succeeds exactly when no `fail` node failed,
        /// and then no node is left waiting.
        #[test]
        fn runs_end_and_start_each_node_once((d, outcomes) in any_dag(), order in proptest::collection::vec(any::<prop::sample::Index>(), 64)) {
            let (mut n, mut ctx) = (fresh(&d), json!({}));
            let mut started = vec![0usize; n.len()];
            let mut a = advance(&d, &mut n, &[], &mut ctx, false);
            let mut running: Vec<usize> = Vec::new();
            let mut k = 0;
            loop {
                for &s in &a.start {
                    started[s] += 1;
                    for &(up, _) in &d.upstream[s] {
                        prop_assert!(n[up].state.ended(), "{} started before {} ended", s, up);
                    }
                    running.push(s);
                }
                if a.run != Some(RunState::Running) {
                    break;
                }
                prop_assert!(!running.is_empty(), "a running run with nothing running");
                let pick = order[k % order.len()].index(running.len());
                k += 1;
                let i = running.swap_remove(pick);
                let how = if outcomes[i] { Ended::Succeeded(json!(i)) } else { Ended::Failed("x".into()) };
                a = advance(&d, &mut n, &[(i, how)], &mut ctx, false);
            }
            prop_assert!(started.iter().all(|&s| s <= 1));
            let fail = (0..n.len()).any(|i| n[i].state == State::Failed && d.def.nodes[i].on_failure == Policy::Fail);
            match a.run {
                Some(RunState::Succeeded) => {
                    prop_assert!(!fail);
                    prop_assert!(n.iter().all(|x| x.state.ended()));
                }
                Some(RunState::Failed(_)) => prop_assert!(fail),
                other => prop_assert!(false, "ended {:?}", other),
            }
            // The context holds exactly the results of the nodes that ended by their job.
            for (i, x) in n.iter().enumerate() {
                let has = ctx.get(format!("n{i}")).is_some();
                prop_assert_eq!(has, matches!(x.state, State::Succeeded | State::Failed));
            }
        }
    }
}
