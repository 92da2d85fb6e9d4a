//! Workflows on real nodes (docs/workflows.md): a diamond whose join sees both branches'
//! results, each failure policy, a decision's branch, retry of a failed node, cancel, a run
//! started by an SQL insert, a coordinator SIGKILLed mid-run (every node runs to success exactly
//! once), a 1,000-node-wide fan-in, and a cycle refused naming its nodes. PostgreSQL + etcd, and
//! SQLite where the SQL differs (the run's insert trigger).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::cluster::Cluster;
use common::{http, wait_until, Node};

fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (s, b) = http(method, &node.url(path), text.as_deref(), None);
    (s, serde_json::from_str(&b).unwrap_or(Value::Null))
}

fn create_app(node: &Node, name: &str, spec: Value) -> i64 {
    let (s, v) = call(node, "POST", "/api/v1/apps", Some(json!({"name": name, "driver": "process", "spec": spec})));
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

/// A `process` job handler that logs `start KEY NODE NANOS` and `done KEY NANOS` to `log`,
/// sleeps `$ROTA_PARAM_SLEEP` seconds, exits `$ROTA_PARAM_EXIT` (0 unless set; a marker file
/// `$ROTA_PARAM_ONCE` makes it fail only the first time) and answers `{"key", "context"}` with
/// the context it was given.
fn step_app(node: &Node, name: &str, log: &Path) -> i64 {
    let script = format!(
        r#"echo "start $ROTA_PARAM_KEY $ROTA_NODE_ID $(date +%s%N)" >> {log}
sleep "${{ROTA_PARAM_SLEEP:-0}}"
if [ -n "$ROTA_PARAM_ONCE" ] && [ ! -e "$ROTA_PARAM_ONCE" ]; then touch "$ROTA_PARAM_ONCE"; exit 3; fi
if [ "${{ROTA_PARAM_EXIT:-0}}" != 0 ]; then exit "$ROTA_PARAM_EXIT"; fi
echo "done $ROTA_PARAM_KEY $(date +%s%N)" >> {log}
printf '{{"key": "%s", "rows": %s, "context": %s}}' "$ROTA_PARAM_KEY" "${{ROTA_PARAM_ROWS:-0}}" "${{ROTA_CONTEXT:-null}}" > "$ROTA_RESULT_FILE"
"#,
        log = log.display()
    );
    create_app(node, name, json!({"command": ["/bin/sh", "-c", script]}))
}

fn node(key: &str, app: i64, payload: Value) -> Value {
    let mut p = payload;
    p["key"] = json!(key);
    json!({"key": key, "app_id": app, "payload": p, "max_attempts": 1})
}

fn create_workflow(n: &Node, name: &str, nodes: Vec<Value>, edges: Vec<Value>) -> i64 {
    let (s, v) = call(n, "POST", "/api/v1/workflows", Some(json!({"name": name, "nodes": nodes, "edges": edges})));
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

fn start(n: &Node, workflow: i64, context: Value) -> i64 {
    let (s, v) = call(n, "POST", &format!("/api/v1/workflows/{workflow}/runs"), Some(json!({"context": context})));
    assert_eq!(s, 202, "{v}");
    v["run_id"].as_i64().unwrap()
}

fn run(n: &Node, id: i64) -> Value {
    let (s, v) = call(n, "GET", &format!("/api/v1/workflow-runs/{id}"), None);
    assert_eq!(s, 200, "{v}");
    v
}

fn ended(n: &Node, id: i64, within: Duration) -> Value {
    wait_until(within, &format!("workflow run {id} to end"), || {
        matches!(run(n, id)["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    });
    run(n, id)
}

/// Node key → its status in a run.
fn statuses(r: &Value) -> BTreeMap<String, String> {
    r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["key"].as_str().unwrap().to_string(), n["status"].as_str().unwrap().to_string()))
        .collect()
}

/// The log's lines `(what, key, nanos)`.
fn log_lines(log: &Path) -> Vec<(String, String, u128)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts[0].to_string(), parts[1].to_string(), parts.last().unwrap().parse().unwrap())
        })
        .collect()
}

fn at(lines: &[(String, String, u128)], what: &str, key: &str) -> u128 {
    lines.iter().find(|(w, k, _)| w == what && k == key).map(|l| l.2).unwrap_or_else(|| panic!("no {what} {key}"))
}

fn sqlite_node(dir: &Path) -> Node {
    let db = format!("sqlite://{}", dir.join("r.db").display());
    let envs: Vec<(&str, &str)> = common::FAST.to_vec();
    let n = Node::start(dir, &["--database-url", &db], &envs);
    wait_until(Duration::from_secs(20), "ready", || n.get("/readyz").0 == 200);
    n
}

/// A → B, A → C, B → D, C → D: D starts only after both B and C ended, and its context holds
/// A's, B's and C's results (and the run's own context).
fn diamond(n: &Node, log: &Path) {
    let app = step_app(n, "step", log);
    let wf = create_workflow(
        n,
        "diamond",
        vec![
            node("a", app, json!({})),
            node("b", app, json!({"sleep": 1})),
            node("c", app, json!({"sleep": 2})),
            node("d", app, json!({})),
        ],
        vec![
            json!({"from": "a", "to": "b"}),
            json!({"from": "a", "to": "c"}),
            json!({"from": "b", "to": "d"}),
            json!({"from": "c", "to": "d", "on": "success"}),
        ],
    );
    let t = Instant::now();
    let id = start(n, wf, json!({"date": "2026-12-13"}));
    let r = ended(n, id, Duration::from_secs(60));
    assert_eq!(r["status"], "succeeded", "{r}");
    let lines = log_lines(log);
    assert!(at(&lines, "start", "b") >= at(&lines, "done", "a") && at(&lines, "start", "c") >= at(&lines, "done", "a"));
    assert!(at(&lines, "start", "d") >= at(&lines, "done", "b"), "d began before b ended");
    assert!(at(&lines, "start", "d") >= at(&lines, "done", "c"), "d began before c ended");
    assert_eq!(lines.iter().filter(|l| l.0 == "start").count(), 4, "each node ran once: {lines:?}");
    // What D was given: the run's context with A's, B's and C's results.
    let seen = &r["context"]["d"]["context"];
    assert_eq!(seen["date"], "2026-12-13", "{r}");
    for k in ["a", "b", "c"] {
        assert_eq!(seen[k]["key"], k, "d saw {k}'s result: {seen}");
    }
    assert!(seen.get("d").is_none());
    for nv in r["nodes"].as_array().unwrap() {
        assert!(nv["task_id"].is_i64() && nv["task_status"] == "succeeded", "{nv}");
    }
    eprintln!("measured: diamond of 4 nodes (1 s and 2 s branches) ended in {:?}", t.elapsed());
}

#[test]
fn a_diamond_joins_after_both_branches_on_postgres() {
    let c = Cluster::new(&["n1", "n2"]);
    c.converge(&["n1", "n2"]);
    let dir = tempfile::tempdir().unwrap();
    diamond(c.nodes.values().next().unwrap(), &dir.path().join("log"));
}

#[test]
fn a_diamond_joins_after_both_branches_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let n = sqlite_node(dir.path());
    diamond(&n, &dir.path().join("log"));
}

/// `skip`: its downstream is skipped and the run succeeds; `continue`: its downstream runs as
/// if it had succeeded; `fail`: nothing starts after it, what runs ends, and the run fails.
fn failure_policies(n: &Node, log: &Path) {
    let app = step_app(n, "step", log);
    let failing = |key: &str, policy: &str| {
        let mut v = node(key, app, json!({"exit": 4}));
        v["on_failure"] = json!(policy);
        v
    };
    let wf = create_workflow(
        n,
        "policies",
        vec![
            failing("skipper", "skip"),
            node("after_skip", app, json!({})),
            failing("continuer", "continue"),
            node("after_continue", app, json!({})),
            node("handler", app, json!({})),
        ],
        vec![
            json!({"from": "skipper", "to": "after_skip"}),
            json!({"from": "skipper", "to": "handler", "on": "failure"}),
            json!({"from": "continuer", "to": "after_continue"}),
        ],
    );
    let r = ended(n, start(n, wf, json!({})), Duration::from_secs(60));
    assert_eq!(r["status"], "succeeded", "{r}");
    let s = statuses(&r);
    assert_eq!(s["skipper"], "failed");
    assert_eq!(s["after_skip"], "skipped");
    assert_eq!(s["handler"], "succeeded", "a failure edge follows a failure");
    assert_eq!(s["continuer"], "failed");
    assert_eq!(s["after_continue"], "succeeded");
    assert!(r["context"]["skipper"]["error"].as_str().unwrap().contains("exit"), "{r}");

    let wf = create_workflow(
        n,
        "fails",
        vec![failing("failer", "fail"), node("after_fail", app, json!({})), node("slow", app, json!({"sleep": 2}))],
        vec![json!({"from": "failer", "to": "after_fail"})],
    );
    let r = ended(n, start(n, wf, json!({})), Duration::from_secs(60));
    assert_eq!(r["status"], "failed", "{r}");
    let s = statuses(&r);
    assert_eq!((s["failer"].as_str(), s["after_fail"].as_str()), ("failed", "waiting"));
    assert_eq!(s["slow"], "succeeded", "a node already running ends before the run fails");
    assert!(r["error"].as_str().unwrap().contains("failer"), "{r}");
}

#[test]
fn failure_policies_on_postgres() {
    let c = Cluster::new(&["n1"]);
    c.converge(&["n1"]);
    let dir = tempfile::tempdir().unwrap();
    failure_policies(c.nodes.values().next().unwrap(), &dir.path().join("log"));
}

#[test]
fn failure_policies_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let n = sqlite_node(dir.path());
    failure_policies(&n, &dir.path().join("log"));
}

/// SQLite, one node: a decision's branch, retry of a failed node resuming the run, cancel, an
/// SQL insert starting a run, and a cycle refused naming its nodes.
#[test]
fn decisions_retry_cancel_sql_and_cycles_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let n = sqlite_node(dir.path());
    let log = dir.path().join("log");
    let app = step_app(&n, "step", &log);

    // A decision: `count` says 500 rows, so `bulk` runs and `small` is skipped; `report` joins
    // the branches (`always` holds on a skipped node).
    let wf = create_workflow(
        &n,
        "decide",
        vec![
            node("count", app, json!({"rows": 500})),
            json!({"key": "big", "decision": "context.count.rows > 100 && context.region == \"eu\""}),
            node("bulk", app, json!({})),
            node("small", app, json!({})),
            node("report", app, json!({})),
        ],
        vec![
            json!({"from": "count", "to": "big"}),
            json!({"from": "big", "to": "bulk", "on": "true"}),
            json!({"from": "big", "to": "small", "on": "false"}),
            json!({"from": "bulk", "to": "report", "on": "always"}),
            json!({"from": "small", "to": "report", "on": "always"}),
        ],
    );
    let r = ended(&n, start(&n, wf, json!({"region": "eu"})), Duration::from_secs(60));
    assert_eq!(r["status"], "succeeded", "{r}");
    let s = statuses(&r);
    assert_eq!(
        (s["big"].as_str(), s["bulk"].as_str(), s["small"].as_str(), s["report"].as_str()),
        ("succeeded", "succeeded", "skipped", "succeeded"),
        "{r}"
    );
    assert_eq!(r["nodes"][1]["decision"], true);
    let r = ended(&n, start(&n, wf, json!({"region": "us"})), Duration::from_secs(60));
    let s = statuses(&r);
    assert_eq!((s["bulk"].as_str(), s["small"].as_str()), ("skipped", "succeeded"), "{r}");

    // Retry: `flaky` fails its first run, so the run fails with `load` waiting; retried, it
    // succeeds and the run goes on from there (`extract` does not run again).
    let marker = dir.path().join("flaky-once");
    let wf = create_workflow(
        &n,
        "retry",
        vec![
            node("extract", app, json!({})),
            node("flaky", app, json!({"once": marker.display().to_string()})),
            node("load", app, json!({})),
        ],
        vec![json!({"from": "extract", "to": "flaky"}), json!({"from": "flaky", "to": "load"})],
    );
    let id = start(&n, wf, json!({}));
    let r = ended(&n, id, Duration::from_secs(60));
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(statuses(&r)["load"], "waiting");
    let (s, v) = call(&n, "POST", &format!("/api/v1/workflow-runs/{id}/retry"), Some(json!({"node": "extract"})));
    assert_eq!(s, 409, "only a failed node is retried: {v}");
    let (s, v) = call(&n, "POST", &format!("/api/v1/workflow-runs/{id}/retry"), Some(json!({"node": "nope"})));
    assert_eq!((s, v["error"]["fields"][0]["field"].as_str()), (422, Some("node")), "{v}");
    let (s, v) = call(&n, "POST", &format!("/api/v1/workflow-runs/{id}/retry"), Some(json!({"node": "flaky"})));
    assert_eq!(s, 202, "{v}");
    let r = ended(&n, id, Duration::from_secs(60));
    assert_eq!(r["status"], "succeeded", "{r}");
    let runs = |key: &str| log_lines(&log).iter().filter(|l| l.0 == "start" && l.1 == key).count();
    assert_eq!((runs("extract"), runs("flaky"), runs("load")), (1, 2, 1));
    assert_eq!(r["nodes"][1]["round"], 1);

    // Cancel: the running node is stopped and nothing after it starts.
    let wf = create_workflow(
        &n,
        "cancel",
        vec![node("long", app, json!({"sleep": 30})), node("never", app, json!({}))],
        vec![json!({"from": "long", "to": "never"})],
    );
    let id = start(&n, wf, json!({}));
    wait_until(Duration::from_secs(30), "long running", || runs("long") == 1);
    let t = Instant::now();
    let (s, v) = call(&n, "POST", &format!("/api/v1/workflow-runs/{id}/cancel"), None);
    assert_eq!(s, 202, "{v}");
    let r = ended(&n, id, Duration::from_secs(20));
    assert_eq!(r["status"], "cancelled", "{r}");
    assert!(t.elapsed() < Duration::from_secs(20));
    let s = statuses(&r);
    assert_eq!((s["long"].as_str(), s["never"].as_str()), ("cancelled", "cancelled"), "{r}");
    assert_eq!(runs("never"), 0);
    let (s, _) = call(&n, "POST", &format!("/api/v1/workflow-runs/{id}/cancel"), None);
    assert_eq!(s, 409, "an ended run is not cancelled again");
    eprintln!("measured: a cancelled run ended {:?} after the request, its 30 s node stopped", t.elapsed());

    // SQL: inserting a run row starts a run.
    let store = rota::store::Store::connect(
        &rota::store::DbUrl::parse(&format!("sqlite://{}", dir.path().join("r.db").display())).unwrap(),
        &rota::store::PoolOptions { max_size: 1, connect_timeout: Duration::from_secs(5) },
    )
    .unwrap();
    diesel::connection::SimpleConnection::batch_execute(
        &mut *store.conn().unwrap(),
        &format!(
            "INSERT INTO workflow_run (workflow_id, context) VALUES ({wf_decide}, '{{\"region\": \"eu\"}}')",
            wf_decide = 1
        ),
    )
    .unwrap();
    let (_, runs_of) = call(&n, "GET", "/api/v1/workflows/1/runs", None);
    let id = runs_of[0]["id"].as_i64().unwrap();
    let r = ended(&n, id, Duration::from_secs(60));
    assert_eq!((r["status"].as_str(), r["version"].as_i64()), (Some("succeeded"), Some(1)), "{r}");

    // A cycle is refused naming its nodes; other bad fields are named too.
    let (s, v) = call(
        &n,
        "POST",
        "/api/v1/workflows",
        Some(json!({"name": "loop", "nodes": [{"key": "extract"}, {"key": "transform"}, {"key": "load"}],
                    "edges": [{"from": "extract", "to": "transform"}, {"from": "transform", "to": "load"},
                              {"from": "load", "to": "transform"}]})),
    );
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["fields"][0]["field"], "edges");
    assert!(v["error"]["message"].as_str().unwrap().contains("transform → load → transform"), "{v}");
    for (body, field) in [
        (json!({"name": "x", "nodes": [{"key": "a", "payload": [1]}]}), "nodes[0].payload"),
        (json!({"name": "x", "nodes": [{"key": "a", "app_id": 999}]}), "nodes[0].app_id"),
        (json!({"name": "x", "nodes": [{"key": "a", "on_failure": "explode"}]}), "nodes[0].on_failure"),
        (json!({"name": "x", "nodes": [{"key": "a", "decision": "context.x >"}]}), "nodes[0].decision"),
        (json!({"name": "x", "nodes": [{"key": "a"}], "edges": [{"from": "a", "to": "b"}]}), "edges[0].to"),
        (json!({"name": "x", "nodes": []}), "nodes"),
        (json!({"name": "x", "nodes": [{"key": "a"}], "max_concurrent_runs": 0}), "max_concurrent_runs"),
    ] {
        let (s, v) = call(&n, "POST", "/api/v1/workflows", Some(body.clone()));
        assert_eq!(s, 422, "{body}: {v}");
        assert!(v["error"]["fields"].as_array().unwrap().iter().any(|f| f["field"] == field), "{body}: {v}");
    }
}

/// Three nodes, a chain of three 2-second steps; the coordinator is SIGKILLed while the second
/// runs. Its replacement resumes the run: every step runs to success exactly once, none skipped.
#[test]
fn a_coordinator_killed_mid_run_is_replaced_and_no_node_runs_twice() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let n1 = c.nodes.get("n1").unwrap();
    let app = step_app(n1, "step", &log);
    let wf = create_workflow(
        n1,
        "chain",
        vec![
            node("extract", app, json!({"sleep": 2})),
            node("transform", app, json!({"sleep": 2})),
            node("load", app, json!({"sleep": 2})),
        ],
        vec![json!({"from": "extract", "to": "transform"}), json!({"from": "transform", "to": "load"})],
    );
    let id = start(n1, wf, json!({}));
    let starts = |key: &str| log_lines(&log).iter().filter(|l| l.0 == "start" && l.1 == key).count();
    wait_until(Duration::from_secs(30), "transform running", || starts("transform") == 1);
    let r = run(n1, id);
    let coordinator = c.task(r["task_id"].as_i64().unwrap()).owner_node.unwrap();
    c.nodes.get_mut(&coordinator).unwrap().signal("KILL");
    let t = Instant::now();
    let survivor = c.nodes.iter().find(|(k, _)| **k != coordinator).unwrap().1;
    let r = ended(survivor, id, Duration::from_secs(90));
    assert_eq!(r["status"], "succeeded", "{r}");
    let lines = log_lines(&log);
    for key in ["extract", "transform", "load"] {
        let done = lines.iter().filter(|l| l.0 == "done" && l.1 == key).count();
        assert_eq!(done, 1, "{key} ran to success exactly once: {lines:?}");
    }
    let after = c.task(r["task_id"].as_i64().unwrap());
    assert_ne!(after.owner_node.as_deref(), Some(coordinator.as_str()), "another node finished the run");
    eprintln!(
        "measured: run ended {:?} after its coordinator {coordinator} was SIGKILLed (lease ttl {} s)",
        t.elapsed(),
        common::cluster::ttl()
    );
}

/// One root, 1,000 nodes after it, one node after all of them: the join starts once every one
/// succeeded and sees all their results.
#[test]
fn a_thousand_wide_fan_in_completes() {
    let c = Cluster::new(&["n1", "n2"]);
    c.converge(&["n1", "n2"]);
    let n = c.nodes.values().next().unwrap();
    let mut nodes = vec![json!({"key": "root"})];
    let mut edges = Vec::new();
    for i in 0..1000 {
        nodes.push(json!({"key": format!("w{i}"), "payload": {"i": i}}));
        edges.push(json!({"from": "root", "to": format!("w{i}")}));
        edges.push(json!({"from": format!("w{i}"), "to": "join"}));
    }
    nodes.push(json!({"key": "join"}));
    let wf = create_workflow(n, "wide", nodes, edges);
    let t = Instant::now();
    let id = start(n, wf, json!({}));
    let r = ended(n, id, Duration::from_secs(300));
    let took = t.elapsed();
    assert_eq!(r["status"], "succeeded", "{}", r["error"]);
    let s = statuses(&r);
    assert_eq!(s.len(), 1002);
    assert!(s.values().all(|v| v == "succeeded"));
    assert_eq!(r["context"].as_object().unwrap().len(), 1002, "every result joined the context");
    eprintln!("measured: 1,000-wide fan-in (noop jobs, 2 nodes, PostgreSQL) ended in {took:?}");
}

/// A schedule of a workflow (`rota schedule create --workflow`) starts one run per firing, on a
/// ring of two nodes: every `fired` firing names its run and the run's coordinator task, no two
/// firings share a run, the workflow has exactly the runs the firings name, each run's context
/// is the schedule's payload and each succeeds; the coordinator waits for its fire time. Bad
/// targets are refused with the field named.
#[test]
fn a_schedule_starts_one_workflow_run_per_firing() {
    let c = Cluster::new(&["n1", "n2"]);
    c.converge(&["n1", "n2"]);
    let n = c.nodes.values().next().unwrap();
    let (_, v) = call(n, "POST", "/api/v1/apps", Some(json!({"name": "some-app", "driver": "noop"})));
    let app = v["id"].as_i64().unwrap();
    let wf = create_workflow(
        n,
        "ticked",
        vec![json!({"key": "a"}), json!({"key": "b"}), json!({"key": "c"})],
        vec![json!({"from": "a", "to": "b"}), json!({"from": "a", "to": "c"})],
    );

    let field = |body: Value| {
        let (s, v) = call(n, "POST", "/api/v1/schedules", Some(body));
        assert_eq!(s, 422, "{v}");
        v["error"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(field(json!({"name": "x", "every_ms": 1000, "workflow_id": 999})), ["workflow_id"]);
    assert_eq!(field(json!({"name": "x", "every_ms": 1000, "workflow_id": wf, "app_id": app})), ["workflow_id"]);
    assert_eq!(field(json!({"name": "x", "every_ms": 1000, "workflow_id": wf, "routing": "broadcast"})), ["routing"]);
    let (s, v) = call(n, "POST", "/api/v1/schedules", Some(json!({"name": "x", "every_ms": 1000, "workflow_id": wf})));
    assert_eq!(s, 201, "{v}");
    let x = v["id"].as_i64().unwrap();
    let (s, v) = call(n, "PATCH", &format!("/api/v1/schedules/{x}"), Some(json!({"app_id": app})));
    assert_eq!((s, v["error"]["fields"][0]["field"].as_str()), (422, Some("app_id")), "{v}");
    assert_eq!(call(n, "DELETE", &format!("/api/v1/schedules/{x}"), None).0, 204);

    let (status, out, err) = common::run(common::rota().args([
        "schedule",
        "create",
        "tick",
        "--every",
        "1s",
        "--workflow",
        "ticked",
        "--payload",
        r#"{"date": "2026-12-13"}"#,
        "--json",
        "--url",
        &n.url(""),
    ]));
    assert!(status.success(), "{out}{err}");
    let schedule: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(schedule["workflow_id"], wf, "{schedule}");
    let id = schedule["id"].as_i64().unwrap();
    let firings = || call(n, "GET", &format!("/api/v1/schedules/{id}"), None).1["recent_firings"].clone();
    wait_until(Duration::from_secs(30), "four firings", || firings().as_array().unwrap().len() >= 4);
    let (s, _) = call(n, "PATCH", &format!("/api/v1/schedules/{id}"), Some(json!({"enabled": false})));
    assert_eq!(s, 200);

    let rows = firings();
    let rows = rows.as_array().unwrap();
    let mut named = std::collections::BTreeSet::new();
    for f in rows.iter().filter(|f| f["outcome"] != "skipped") {
        let run_id = f["run_id"].as_i64().unwrap_or_else(|| panic!("a firing without its run: {f}"));
        assert!(named.insert(run_id), "two firings name run {run_id}: {rows:?}");
        let r = ended(n, run_id, Duration::from_secs(60));
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["workflow_id"], wf);
        assert_eq!(r["task_id"], f["task_id"], "the firing's task is the run's coordinator: {f} {r}");
        assert_eq!(r["context"]["date"], "2026-12-13", "{r}");
        let coordinator = rota::store::tasks::find_task(&mut c.store.conn().unwrap(), f["task_id"].as_i64().unwrap())
            .unwrap()
            .unwrap();
        let fire_at = chrono::DateTime::parse_from_rfc3339(f["fire_at"].as_str().unwrap()).unwrap().naive_utc();
        assert_eq!(coordinator.run_after, fire_at, "the coordinator waits for its fire time");
    }
    let (_, runs) = call(n, "GET", &format!("/api/v1/workflows/{wf}/runs"), None);
    let runs: std::collections::BTreeSet<i64> =
        runs.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(runs, named, "the workflow's runs are exactly those its firings name");
    let (status, shown, _) = common::run(common::rota().args(["schedule", "show", "tick", "--url", &n.url("")]));
    assert!(status.success() && shown.contains(&format!("workflow {wf}")), "{shown}");
}

/// `max_concurrent_runs` 2, six runs of a two-step workflow started at once on two nodes: at no
/// look are more than two `running`, every run succeeds, they begin in id order, and a run
/// begins only after the run two ahead of it ended (so they end in id order, two lanes apart).
#[test]
fn the_run_limit_holds_and_runs_start_in_id_order() {
    let c = Cluster::new(&["n1", "n2"]);
    c.converge(&["n1", "n2"]);
    let n = c.nodes.values().next().unwrap();
    let step = json!({"spec": {"delay_ms": 700}});
    let (s, v) = call(
        n,
        "POST",
        "/api/v1/workflows",
        Some(json!({"name": "limited", "max_concurrent_runs": 2,
            "nodes": [{"key": "a", "payload": step}, {"key": "b", "payload": step}],
            "edges": [{"from": "a", "to": "b"}]})),
    );
    assert_eq!(s, 201, "{v}");
    let wf = v["id"].as_i64().unwrap();
    let ids: Vec<i64> = (0..6).map(|_| start(n, wf, json!({}))).collect();
    let mut most = 0;
    let mut looks = 0;
    wait_until(Duration::from_secs(120), "every run to end", || {
        let (_, runs) = call(n, "GET", &format!("/api/v1/workflows/{wf}/runs"), None);
        let runs = runs.as_array().unwrap();
        let running = runs.iter().filter(|r| r["status"] == "running").count();
        assert!(running <= 2, "{running} runs running at once: {runs:?}");
        most = most.max(running);
        looks += 1;
        runs.len() == ids.len() && runs.iter().all(|r| r["status"] == "succeeded")
    });
    assert_eq!(most, 2, "the limit was reached ({looks} looks)");
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let runs: Vec<Value> = ids.iter().map(|id| run(n, *id)).collect();
    let began: Vec<_> = runs.iter().map(|r| time(&r["nodes"][0]["started_at"])).collect();
    let ended: Vec<_> = runs.iter().map(|r| time(&r["finished_at"])).collect();
    // Admitted in id order: two runs admitted together (by two coordinators, after two ended)
    // may begin in either order by a few milliseconds, but never before a run two places
    // earlier — one more had to end in between, which takes a step of 700 ms.
    for i in 2..ids.len() {
        for k in 0..i - 1 {
            assert!(began[k] <= began[i], "run {} began before run {}: {began:?}", ids[i], ids[k]);
        }
        // At most two at once: when run i began, all but one of the runs before it had ended.
        let ended_before = (0..i).filter(|&j| ended[j] <= began[i]).count();
        assert!(ended_before + 1 >= i, "run {} began with {} earlier runs still running", ids[i], i - ended_before);
    }
    eprintln!("measured: six limited runs ({looks} looks, at most {most} running at once)");
}

/// A receiver of `http` calls: answers `{"ok": true}` and keeps each request's body.
fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut len) = (String::new(), 0);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let answer = r#"{"ok": true}"#;
            let _ = write!(
                &stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, bodies)
}

/// A node whose application uses the `http` driver gets the run's context where its request
/// body has `"{{context}}"` (as parameters are given where it has `"{{params}}"`): the run's own
/// and every upstream node's result; and its answer joins the context.
#[test]
fn an_http_node_receives_the_run_context_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let n = sqlite_node(dir.path());
    let (url, bodies) = receiver();
    let (s, v) = call(
        &n,
        "POST",
        "/api/v1/apps",
        Some(json!({"name": "hook", "driver": "http",
            "spec": {"run": {"url": url, "body": {"params": "{{params}}", "context": "{{context}}"}}}})),
    );
    assert_eq!(s, 201, "{v}");
    let hook = v["id"].as_i64().unwrap();
    let wf = create_workflow(
        &n,
        "notify",
        vec![json!({"key": "count"}), json!({"key": "tell", "app_id": hook, "payload": {"channel": "ops"}})],
        vec![json!({"from": "count", "to": "tell"})],
    );
    let id = start(&n, wf, json!({"date": "2026-12-13"}));
    let r = ended(&n, id, Duration::from_secs(60));
    assert_eq!(r["status"], "succeeded", "{r}");
    let seen = bodies.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["params"]["channel"], "ops", "{seen:?}");
    let context = &seen[0]["context"];
    assert!(context.is_object(), "the body's context is the run's: {seen:?}");
    assert_eq!(context["date"], "2026-12-13", "{seen:?}");
    assert!(context.get("count").is_some(), "the upstream node's result is in it: {seen:?}");
    assert_eq!(r["context"]["tell"]["ok"], true, "the answer joined the context: {r}");
}
