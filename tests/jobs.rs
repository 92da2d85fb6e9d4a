//! Jobs across real nodes (PostgreSQL + etcd): each routing strategy's choice of node, the
//! PowerJob #1003 scenario (a broadcast child of a killed node is lost, nothing runs twice),
//! sharding that survives a killed node, map_reduce over 1,000 children; and on SQLite the
//! fan-out path of the other backend plus the bad-input errors.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use serde_json::{json, Value};

use common::cluster::Cluster;
use common::{http, wait_until, Node};

#[derive(Debug, Clone, QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    target_node: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    owner_node: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    shard_index: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    result: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
}

fn rows(c: &Cluster, filter: &str) -> Vec<Row> {
    diesel::sql_query(format!(
        "SELECT id, status, target_node, owner_node, shard_index, result, error FROM task WHERE {filter} ORDER BY id"
    ))
    .load(&mut *c.store.conn().unwrap())
    .unwrap()
}

fn task(c: &Cluster, id: i64) -> Row {
    rows(c, &format!("id = {id}")).remove(0)
}

fn children(c: &Cluster, parent: i64) -> Vec<Row> {
    rows(c, &format!("parent_id = {parent}"))
}

fn any_node(c: &Cluster) -> &Node {
    c.nodes.values().next().unwrap()
}

fn post(node: &Node, path: &str, body: Value) -> (u16, Value) {
    let (s, b) = http("POST", &node.url(path), Some(&body.to_string()), None);
    (s, serde_json::from_str(&b).unwrap_or(Value::Null))
}

fn create_app(node: &Node, name: &str, driver: &str, spec: Value) -> i64 {
    let (s, v) = post(node, "/api/v1/apps", json!({"name": name, "driver": driver, "spec": spec}));
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

fn submit(node: &Node, body: Value) -> i64 {
    let (s, v) = post(node, "/api/v1/tasks", body);
    assert_eq!(s, 202, "{v}");
    v["task_id"].as_i64().unwrap()
}

fn terminal(c: &Cluster, id: i64, within: Duration) -> Row {
    wait_until(within, &format!("task {id} to finish"), || {
        matches!(task(c, id).status.as_str(), "succeeded" | "failed" | "cancelled" | "lost")
    });
    task(c, id)
}

/// Submit a job of `app` with `routing`, wait for it, and return the node its one child ran on.
fn run_one(c: &Cluster, app: i64, routing: &str) -> String {
    let id = submit(any_node(c), json!({"action": "run", "app_id": app, "routing": routing}));
    let parent = terminal(c, id, Duration::from_secs(30));
    assert_eq!(parent.status, "succeeded", "{routing}: {parent:?}");
    let kids = children(c, id);
    assert_eq!(kids.len(), 1, "{routing}: {kids:?}");
    assert_eq!(kids[0].status, "succeeded");
    assert_eq!(kids[0].owner_node, kids[0].target_node, "a child runs on its target");
    kids[0].target_node.clone().unwrap()
}

fn counts(nodes: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in nodes {
        *m.entry(n).or_default() += 1;
    }
    m
}

#[test]
fn every_strategy_picks_nodes_as_defined() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let node = any_node(&c);
    let app = create_app(node, "j", "noop", json!({}));
    let slow = create_app(node, "slow", "noop", json!({"delay_ms": 60000}));
    let mem = create_app(node, "memory", "noop", json!({}));

    // round_robin: 9 jobs submitted at once spread exactly 3/3/3 (one counter, whoever coordinates).
    let ids: Vec<i64> = (0..9)
        .map(|_| submit(any_node(&c), json!({"action": "run", "app_id": app, "routing": "round_robin"})))
        .collect();
    let mut targets = Vec::new();
    for id in &ids {
        assert_eq!(terminal(&c, *id, Duration::from_secs(30)).status, "succeeded");
        targets.extend(children(&c, *id).into_iter().filter_map(|k| k.target_node));
    }
    assert_eq!(counts(targets), BTreeMap::from([("n1".into(), 3), ("n2".into(), 3), ("n3".into(), 3)]));

    // random: 30 jobs reach every node (a miss has probability 3·(2/3)^30 ≈ 1.6e-5).
    let ids: Vec<i64> =
        (0..30).map(|_| submit(any_node(&c), json!({"action": "run", "app_id": app, "routing": "random"}))).collect();
    let mut targets = Vec::new();
    for id in &ids {
        terminal(&c, *id, Duration::from_secs(30));
        targets.extend(children(&c, *id).into_iter().filter_map(|k| k.target_node));
    }
    assert_eq!(counts(targets).len(), 3);

    // first / last: the lowest and highest node id.
    assert_eq!(run_one(&c, app, "first"), "n1");
    assert_eq!(run_one(&c, app, "last"), "n3");

    // lfu / lru share the job's routing memory: 4 runs on n1, then lfu picks the never-used
    // nodes (n2, then n3), then lru picks n1, used longest ago.
    for _ in 0..4 {
        assert_eq!(run_one(&c, mem, "first"), "n1");
    }
    assert_eq!(run_one(&c, mem, "lfu"), "n2");
    assert_eq!(run_one(&c, mem, "lfu"), "n3");
    assert_eq!(run_one(&c, mem, "lru"), "n1");
    // Uses now n1 5, n2 1, n3 1: lfu takes the least used, ties to the one used longest ago.
    assert_eq!(run_one(&c, mem, "lfu"), "n2");

    // least_busy: with two long jobs running on n1, no job goes there.
    let busy: Vec<i64> =
        (0..2).map(|_| submit(any_node(&c), json!({"action": "run", "app_id": slow, "routing": "first"}))).collect();
    wait_until(Duration::from_secs(30), "two slow jobs running on n1", || {
        busy.iter()
            .all(|p| children(&c, *p).iter().any(|k| k.status == "running" && k.owner_node.as_deref() == Some("n1")))
    });
    for _ in 0..6 {
        assert_ne!(run_one(&c, app, "least_busy"), "n1", "least_busy chose the loaded node");
    }

    // failover: n1 is killed; before its lease runs out it is still a member, but it does not
    // answer its health probe, so the job runs on n2.
    c.nodes.get_mut("n1").unwrap().signal("KILL");
    let t = Instant::now();
    let survivor = c.nodes.get("n2").unwrap();
    let id = submit(survivor, json!({"action": "run", "app_id": app, "routing": "failover"}));
    let parent = terminal(&c, id, Duration::from_secs(30));
    let kids = children(&c, id);
    assert_eq!(parent.status, "succeeded", "{parent:?}");
    assert_eq!(kids[0].target_node.as_deref(), Some("n2"), "{kids:?}");
    eprintln!("measured: failover job done on n2 {:?} after n1 was killed", t.elapsed());
}

/// PowerJob #1003: broadcast jobs ran twice on some workers after one died. Here: a broadcast
/// over 3 nodes, one killed mid-run: its child becomes `lost`, no node runs twice, and the job
/// fails saying so.
#[test]
fn powerjob_1003_broadcast_child_of_a_killed_node_is_lost_and_no_node_runs_twice() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs");
    let script = format!("echo \"$ROTA_NODE_ID\" >> {}; sleep 6", log.display());
    let app = create_app(any_node(&c), "bc", "process", json!({"command": ["/bin/sh", "-c", script]}));
    let id = submit(any_node(&c), json!({"action": "run", "app_id": app, "routing": "broadcast"}));
    // Running by their commands' first line, not by their rows: a row is `running` from its
    // claim, a moment before its process starts (under load, the victim was killed in between).
    wait_until(Duration::from_secs(30), "3 broadcast children running", || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.lines().count() == 3)
    });
    let coordinator = task(&c, id).owner_node.unwrap();
    let victim = ["n1", "n2", "n3"].into_iter().find(|n| *n != coordinator).unwrap().to_string();
    c.nodes.get_mut(&victim).unwrap().signal("KILL");
    let parent = terminal(&c, id, Duration::from_secs(60));
    let kids = children(&c, id);
    assert_eq!(kids.len(), 3, "{kids:?}");
    for k in &kids {
        if k.target_node.as_deref() == Some(victim.as_str()) {
            assert_eq!(k.status, "lost", "{k:?}");
            assert!(k.error.as_deref().unwrap_or("").contains("not run"), "{k:?}");
        } else {
            assert_eq!(k.status, "succeeded", "{k:?}");
        }
    }
    assert_eq!(parent.status, "failed");
    assert!(parent.error.as_deref().unwrap_or("").contains("1 lost"), "{parent:?}");
    let runs: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_string).collect();
    let distinct: BTreeSet<&String> = runs.iter().collect();
    assert_eq!(runs.len(), 3, "every node ran its child once, none twice: {runs:?}");
    assert_eq!(distinct.len(), 3, "{runs:?}");
}

/// A broadcast child whose attempt fails on a live node is retried on that node, never on
/// another (docs/jobs.md): every child's first attempt fails here, and each succeeds at its
/// second, on its own node.
#[test]
fn a_broadcast_childs_failed_attempt_is_retried_on_its_own_node() {
    let c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let dir = tempfile::tempdir().unwrap();
    let script = "echo \"$ROTA_TASK_ID $ROTA_NODE_ID\" >> \"$DIR/runs\"; \
                  test -e \"$DIR/tried-$ROTA_TASK_ID\" && exit 0; touch \"$DIR/tried-$ROTA_TASK_ID\"; exit 1";
    let spec = json!({"command": ["/bin/sh", "-c", script], "env": {"DIR": dir.path().to_str().unwrap()}});
    let app = create_app(any_node(&c), "flaky", "process", spec);
    let id = submit(any_node(&c), json!({"action": "run", "app_id": app, "routing": "broadcast", "max_attempts": 3}));
    let parent = terminal(&c, id, Duration::from_secs(60));
    let kids = children(&c, id);
    assert_eq!(parent.status, "succeeded", "{parent:?} {kids:?}");
    assert_eq!(kids.len(), 3, "{kids:?}");
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    for k in &kids {
        assert_eq!((k.status.as_str(), c.task(k.id).attempts), ("succeeded", 2), "{k:?}");
        assert_eq!(k.owner_node, k.target_node, "{k:?}");
        let target = k.target_node.clone().unwrap();
        let on: Vec<&str> = runs.lines().filter_map(|l| l.strip_prefix(&format!("{} ", k.id))).collect();
        assert_eq!(on, vec![target.as_str(); 2], "child {} ran both attempts on its node {target}:\n{runs}", k.id);
    }
}

#[test]
fn sharding_over_three_nodes_with_one_killed_runs_every_shard_once_to_success() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs");
    let script = format!(
        "echo \"start $ROTA_PARAM_SHARD_INDEX $ROTA_NODE_ID\" >> {log}; sleep 5; \
         echo \"done $ROTA_PARAM_SHARD_INDEX $ROTA_PARAM_SHARD_TOTAL $ROTA_PARAM_RANGE\" >> {log}",
        log = log.display()
    );
    let app = create_app(any_node(&c), "sh", "process", json!({"command": ["/bin/sh", "-c", script]}));
    let shard_params: Vec<Value> = (0..6).map(|i| json!({"range": format!("{}-{}", i * 10, i * 10 + 9)})).collect();
    let id = submit(
        any_node(&c),
        json!({"action": "run", "app_id": app, "routing": "sharding", "payload": {"shard_params": shard_params}}),
    );
    wait_until(Duration::from_secs(30), "6 shards running", || {
        children(&c, id).iter().filter(|k| k.status == "running").count() == 6
    });
    let coordinator = task(&c, id).owner_node.unwrap();
    let victim = ["n1", "n2", "n3"].into_iter().find(|n| *n != coordinator).unwrap().to_string();
    c.nodes.get_mut(&victim).unwrap().signal("KILL");
    let t = Instant::now();
    let parent = terminal(&c, id, Duration::from_secs(90));
    assert_eq!(parent.status, "succeeded", "{parent:?} {:?}", children(&c, id));
    let kids = children(&c, id);
    assert_eq!(kids.len(), 6);
    let indices: BTreeSet<i32> = kids.iter().filter_map(|k| k.shard_index).collect();
    assert_eq!(indices, (0..6).collect());
    assert!(kids.iter().all(|k| k.status == "succeeded" && k.owner_node.as_deref() != Some(victim.as_str())));
    let text = std::fs::read_to_string(&log).unwrap();
    let done: Vec<&str> = text.lines().filter(|l| l.starts_with("done ")).collect();
    let mut expected: Vec<String> = (0..6).map(|i| format!("done {i} 6 {}-{}", i * 10, i * 10 + 9)).collect();
    let mut got: Vec<String> = done.iter().map(|s| s.to_string()).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every shard succeeded exactly once, with its own parameters:\n{text}");
    eprintln!(
        "measured: sharded job done {:?} after {victim} was killed (ttl {} s)",
        t.elapsed(),
        common::cluster::ttl()
    );
}

#[test]
fn map_reduce_with_a_thousand_children_reduces_every_result_once() {
    let c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    // The map step lasts 5 s: the children are added meanwhile (as a map step would, by SQL).
    let app = create_app(any_node(&c), "mr", "noop", json!({"delay_ms": 5000}));
    let id = submit(
        any_node(&c),
        json!({"action": "run", "app_id": app, "routing": "map_reduce", "payload": {"echo": "map"}}),
    );
    wait_until(Duration::from_secs(30), "the map step running", || task(&c, id).status == "running");
    c.sql(&format!(
        "INSERT INTO task (action, payload, parent_id) \
         SELECT 'run', '{{\"echo\": ' || g || '}}', {id} FROM generate_series(1, 999) g"
    ));
    // And one through the API, which defaults the child's application to the parent's.
    let (s, v) =
        post(any_node(&c), "/api/v1/tasks", json!({"action": "run", "parent_id": id, "payload": {"echo": 1000}}));
    assert_eq!(s, 202, "{v}");
    let t = Instant::now();
    let parent = terminal(&c, id, Duration::from_secs(120));
    assert_eq!(parent.status, "succeeded", "{parent:?}");
    let result: Value = serde_json::from_str(parent.result.as_deref().unwrap()).unwrap();
    let results = result["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    let mut echoes: Vec<i64> = results.iter().map(|r| r["result"]["echo"].as_i64().unwrap()).collect();
    echoes.sort();
    assert_eq!(echoes, (1..=1000).collect::<Vec<_>>(), "the reduce saw every child's result exactly once");
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
    let nodes: BTreeSet<String> = children(&c, id).into_iter().filter_map(|k| k.owner_node).collect();
    assert_eq!(nodes.len(), 3, "children ran on every node: {nodes:?}");
    eprintln!("measured: 1000 map children + reduce done {:?} after they were added (3 nodes)", t.elapsed());
}

/// SQLite, one node: the fan-out path's other backend, and bad input.
#[test]
fn sqlite_fan_out_and_bad_job_input() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("r.db").display());
    let node = Node::start(dir.path(), &["--database-url", &db], &[("ROTA__DISPATCH__POLL_INTERVAL_MS", "100")]);
    let store = rota::store::Store::connect(
        &rota::store::DbUrl::parse(&db).unwrap(),
        &rota::store::PoolOptions { max_size: 1, connect_timeout: Duration::from_secs(5) },
    )
    .unwrap();
    let q = |sql: &str| -> Vec<Row> { diesel::sql_query(sql).load(&mut *store.conn().unwrap()).unwrap() };
    let one = |id: i64| {
        q(&format!("SELECT id, status, target_node, owner_node, shard_index, result, error FROM task WHERE id = {id}"))
            .remove(0)
    };
    let wait_done = |id: i64| {
        wait_until(Duration::from_secs(30), &format!("task {id}"), || {
            !matches!(one(id).status.as_str(), "pending" | "running")
        });
        one(id)
    };
    let me = serde_json::from_str::<Value>(&node.get("/api/v1/cluster").1).unwrap()["self"]["node_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Fan-out on SQLite: 3 shards, a broadcast and two round-robin runs, all on this node.
    let app = create_app(&node, "j", "noop", json!({}));
    let sharded = submit(&node, json!({"action": "run", "app_id": app, "routing": "sharding", "shard_total": 3}));
    let bcast = submit(&node, json!({"action": "run", "routing": "broadcast"}));
    let rr = [0, 1].map(|_| submit(&node, json!({"action": "run", "app_id": app, "routing": "round_robin"})));
    for id in [sharded, bcast, rr[0], rr[1]] {
        assert_eq!(wait_done(id).status, "succeeded", "{:?}", one(id));
    }
    let shards = q(&format!(
        "SELECT id, status, target_node, owner_node, shard_index, result, error FROM task WHERE parent_id = {sharded}"
    ));
    assert_eq!(shards.iter().filter_map(|k| k.shard_index).collect::<BTreeSet<_>>(), BTreeSet::from([0, 1, 2]));
    assert!(shards.iter().all(|k| k.target_node.as_deref() == Some(me.as_str())));
    let summary: Value = serde_json::from_str(one(sharded).result.as_deref().unwrap()).unwrap();
    assert_eq!(summary["succeeded"], 3, "{summary}");

    // Bad input through the API: 422 naming the field, nothing written.
    let before = q("SELECT id, status, target_node, owner_node, shard_index, result, error FROM task").len();
    for (body, field, needle) in [
        (json!({"action": "run", "routing": "fastest"}), "routing", "use one of hash, round_robin"),
        (json!({"action": "run", "routing": "sharding", "shard_total": 0}), "shard_total", "at least 1"),
        (
            json!({"action": "run", "routing": "broadcast", "shard_total": 2}),
            "shard_total",
            "only with routing `sharding`",
        ),
        (
            json!({"action": "run", "routing": "sharding", "payload": {"shard_params": [1]}}),
            "payload.shard_params[0]",
            "object",
        ),
        (json!({"action": "start", "app_id": app, "routing": "random"}), "routing", "only jobs"),
        (json!({"action": "run", "timeout_ms": 0}), "timeout_ms", "at least 1"),
        (json!({"action": "run", "parent_id": sharded}), "parent_id", "not a map or map_reduce job"),
        (json!({"action": "run", "parent_id": 999999}), "parent_id", "no task with id 999999"),
    ] {
        let (s, v) = post(&node, "/api/v1/tasks", body.clone());
        assert_eq!(s, 422, "{body}: {v}");
        let fields = v["error"]["fields"].as_array().cloned().unwrap_or_default();
        assert!(fields.iter().any(|f| f["field"] == field), "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    assert_eq!(q("SELECT id, status, target_node, owner_node, shard_index, result, error FROM task").len(), before);

    // Bad rows written by hand end `failed` with the reason, and do not block the row behind.
    for sql in [
        "INSERT INTO task (action, routing) VALUES ('run', 'fastest')",
        "INSERT INTO task (action, routing, payload) VALUES ('run', 'sharding', '{\"shard_params\": 3}')",
        "INSERT INTO task (action, selector) VALUES ('run', 'dc=eu')",
        "INSERT INTO task (action) VALUES ('run')",
    ] {
        diesel::sql_query(sql).execute(&mut *store.conn().unwrap()).unwrap();
    }
    let last =
        q("SELECT id, status, target_node, owner_node, shard_index, result, error FROM task ORDER BY id DESC LIMIT 4");
    let ids: Vec<i64> = last.iter().rev().map(|r| r.id).collect();
    for (id, needle) in ids.iter().zip([
        Some("unknown routing `fastest`"),
        Some("payload.shard_params must be an array of objects"),
        Some("selector must be a JSON object"),
        None,
    ]) {
        let r = wait_done(*id);
        match needle {
            Some(n) => {
                assert_eq!(r.status, "failed", "{r:?}");
                assert!(r.error.as_deref().unwrap_or("").contains(n), "{r:?}");
            }
            None => assert_eq!(r.status, "succeeded", "{r:?}"),
        }
    }
}

/// A `hash`, `map` or `map_reduce` job whose selector no live node matches is failed by the rule
/// of the fan-out strategies: retried with backoff, then `failed` with `no live node matches
/// selector …`, with one event. Before, it stayed `pending` for ever, with nothing said.
fn jobs_no_node_matches_fail_like_fan_outs(postgres: bool) {
    let f = common::fixture::Fixture::start(postgres, "", &[], &[]);
    let ids: Vec<i64> = ["hash", "map", "map_reduce", "broadcast"]
        .iter()
        .map(|routing| {
            submit(
                &f.node,
                json!({"action": "run", "routing": routing, "selector": {"dc": "nowhere"}, "max_attempts": 2}),
            )
        })
        .collect();
    let one = |id: i64| -> Row {
        diesel::sql_query(format!(
            "SELECT id, status, target_node, owner_node, shard_index, result, error FROM task WHERE id = {id}"
        ))
        .get_result(&mut *f.store.conn().unwrap())
        .unwrap()
    };
    for id in ids {
        wait_until(Duration::from_secs(30), &format!("job {id} to end"), || {
            !matches!(one(id).status.as_str(), "pending" | "running")
        });
        let row = one(id);
        assert_eq!(row.status, "failed", "{row:?}");
        let error = row.error.unwrap_or_default();
        assert!(error.contains(r#"no live node matches selector {"dc":"nowhere"}"#), "{error}");
        assert!(error.contains("attempt 2 of 2"), "retried first: {error}");
        // Besides the API's `task.submitted`, one event: the failure (recorded just after the
        // outcome is written).
        let count =
            || f.scalar(&format!("SELECT count(*) AS n FROM event WHERE task_id = {id} AND kind <> 'task.submitted'"));
        wait_until(Duration::from_secs(5), "the failure's event", || count() > 0);
        let events = count();
        let kinds: Vec<String> = diesel::sql_query(format!("SELECT kind AS s FROM event WHERE task_id = {id}"))
            .load::<S>(&mut *f.store.conn().unwrap())
            .unwrap()
            .into_iter()
            .map(|s| s.s)
            .collect();
        assert_eq!(events, 1, "one event for job {id}: {kinds:?}");
        let kind = f.scalar(&format!("SELECT count(*) AS n FROM event WHERE task_id = {id} AND kind = 'task.failed'"));
        assert_eq!(kind, 1);
    }
}

#[test]
fn jobs_no_node_matches_fail_like_fan_outs_on_sqlite() {
    jobs_no_node_matches_fail_like_fan_outs(false);
}

#[test]
fn jobs_no_node_matches_fail_like_fan_outs_on_postgres() {
    jobs_no_node_matches_fail_like_fan_outs(true);
}

#[derive(QueryableByName)]
struct S {
    #[diesel(sql_type = Text)]
    s: String,
}

/// A row as the tests below read it, by hand, on either backend.
#[derive(Debug, Clone, QueryableByName)]
struct Ended {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    result: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    stage: Option<String>,
}

fn ended(f: &common::fixture::Fixture, id: i64, within: Duration) -> Ended {
    let one = || -> Ended {
        diesel::sql_query(format!("SELECT id, status, result, error, stage FROM task WHERE id = {id}"))
            .get_result(&mut *f.store.conn().unwrap())
            .unwrap()
    };
    wait_until(within, &format!("task {id} to end"), || !matches!(one().status.as_str(), "pending" | "running"));
    one()
}

/// Rows written by SQL with columns the API refuses are failed at dispatch with an error naming
/// the column (before, the column was ignored: the row ran as if it were not there).
fn hand_written_rows_the_api_refuses_fail_naming_the_column(postgres: bool) {
    let f = common::fixture::Fixture::start(postgres, "", &[], &[]);
    let app = create_app(&f.node, "j", "noop", json!({}));
    let plain = submit(&f.node, json!({"action": "run", "app_id": app}));
    assert_eq!(ended(&f, plain, Duration::from_secs(30)).status, "succeeded");
    let cases = [
        (
            "INSERT INTO task (action, routing, shard_total) VALUES ('run', 'broadcast', 2)".to_string(),
            "shard_total is only for routing `sharding` (this job's routing is `broadcast`)",
        ),
        ("INSERT INTO task (action, shard_total) VALUES ('run', 2)".to_string(), "shard_total is only for routing"),
        (
            format!("INSERT INTO task (app_id, action, parent_id) VALUES ({app}, 'run', {plain})"),
            &*format!("parent_id {plain} is a `hash` job: only map and map_reduce jobs take children"),
        ),
        ("INSERT INTO task (action, parent_id) VALUES ('run', 987654)".to_string(), "parent_id 987654 names no task"),
        (
            format!("INSERT INTO task (app_id, action, routing) VALUES ({app}, 'start', 'random')"),
            "routing is only for jobs (action `run`): an application command (`start`) must leave it NULL",
        ),
        (
            format!("INSERT INTO task (app_id, action, timeout_ms) VALUES ({app}, 'stop', 500)"),
            "timeout_ms is only for jobs",
        ),
        (
            format!("INSERT INTO task (app_id, action, selector) VALUES ({app}, 'restart', '{{\"dc\": \"eu\"}}')"),
            "selector is only for jobs",
        ),
        (
            format!("INSERT INTO task (app_id, action, shard_total) VALUES ({app}, 'start', 3)"),
            "shard_total is only for jobs",
        ),
    ];
    for (sql, needle) in cases {
        f.sql(&sql);
        let id = f.scalar("SELECT max(id) AS n FROM task");
        let row = ended(&f, id, Duration::from_secs(30));
        assert_eq!(row.status, "failed", "{sql}: {row:?}");
        assert!(row.error.as_deref().unwrap_or("").contains(needle), "{sql}: {row:?}");
    }
}

#[test]
fn hand_written_rows_the_api_refuses_fail_naming_the_column_on_sqlite() {
    hand_written_rows_the_api_refuses_fail_naming_the_column(false);
}

#[test]
fn hand_written_rows_the_api_refuses_fail_naming_the_column_on_postgres() {
    hand_written_rows_the_api_refuses_fail_naming_the_column(true);
}

/// A fan-out parent ends as its last child does, not at the dispatcher's next poll: with every
/// periodic wake-up of the node 10 s apart, parents end within seconds. A failed parent carries
/// its children's counts as a succeeded one does; a finished parent has no stage; the API shows
/// a parent's children counted. Prints how long after its last child each parent ended.
fn parents_end_with_their_last_child_with_counts_and_no_stage(postgres: bool) {
    let slow = [
        ("ROTA__DISPATCH__POLL_INTERVAL_MS", "10000"),
        ("ROTA__DISPATCH__RECONCILE_INTERVAL_MS", "10000"),
        ("ROTA__MEMBERSHIP__HEARTBEAT_INTERVAL_MS", "10000"),
        ("ROTA__MEMBERSHIP__LOCK_TTL_MS", "30000"),
    ];
    let f = common::fixture::Fixture::start(postgres, "", &[], &slow);
    let ok = create_app(&f.node, "ok", "noop", json!({}));
    let bad = create_app(&f.node, "bad", "noop", json!({"fail": "run"}));
    let within = Duration::from_secs(5);

    let bcast = submit(&f.node, json!({"action": "run", "app_id": ok, "routing": "broadcast"}));
    let row = ended(&f, bcast, within);
    assert_eq!((row.status.as_str(), row.stage.as_deref()), ("succeeded", None), "{row:?}");
    let (s, shown) = f.node.get(&format!("/api/v1/tasks/{bcast}"));
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        shown["children"],
        json!({"total": 1, "pending": 0, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0, "lost": 0})
    );
    assert!(shown["stage"].is_null(), "{shown}");

    let sharded = submit(
        &f.node,
        json!({"action": "run", "app_id": bad, "routing": "sharding", "shard_total": 3, "max_attempts": 1}),
    );
    let row = ended(&f, sharded, within);
    assert_eq!((row.status.as_str(), row.stage.as_deref()), ("failed", None), "{row:?}");
    assert!(row.error.as_deref().unwrap().starts_with("0 of 3 children succeeded; 3 failed"), "{row:?}");
    let counts: Value = serde_json::from_str(row.result.as_deref().expect("a failed parent has counts")).unwrap();
    assert_eq!(counts, json!({"children": 3, "succeeded": 0, "failed": 3, "lost": 0, "cancelled": 0}));
    let (_, shown) = f.node.get(&format!("/api/v1/tasks/{sharded}"));
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!((&shown["children"]["total"], &shown["children"]["failed"]), (&json!(3), &json!(3)), "{shown}");

    // Map steps that add no children: the gather and reduce stages end too.
    for routing in ["map", "map_reduce"] {
        let id = submit(&f.node, json!({"action": "run", "app_id": ok, "routing": routing}));
        let row = ended(&f, id, within);
        assert_eq!((row.status.as_str(), row.stage.as_deref()), ("succeeded", None), "{routing}: {row:?}");
    }

    // How long after its last child each parent ended (one node; the children are no-ops).
    let mut gaps = Vec::new();
    for _ in 0..20 {
        let id = submit(&f.node, json!({"action": "run", "app_id": ok, "routing": "broadcast"}));
        assert_eq!(ended(&f, id, within).status, "succeeded");
        let gap = if postgres {
            format!(
                "SELECT CAST(EXTRACT(EPOCH FROM (p.finished_at - max(c.finished_at))) * 1000000 AS bigint) AS n \
                 FROM task p JOIN task c ON c.parent_id = p.id WHERE p.id = {id} GROUP BY p.finished_at"
            )
        } else {
            format!(
                "SELECT CAST((julianday(p.finished_at) - julianday(max(c.finished_at))) * 86400000000 AS INTEGER) AS n \
                 FROM task p JOIN task c ON c.parent_id = p.id WHERE p.id = {id} GROUP BY p.finished_at"
            )
        };
        gaps.push(f.scalar(&gap) as f64 / 1000.0);
    }
    gaps.sort_by(f64::total_cmp);
    eprintln!(
        "measured ({}): a broadcast parent ended {:.1} / {:.1} / {:.1} ms (min / median / max of 20) after its last child",
        if postgres { "postgres" } else { "sqlite" },
        gaps[0],
        gaps[10],
        gaps[19]
    );
}

#[test]
fn parents_end_with_their_last_child_with_counts_and_no_stage_on_sqlite() {
    parents_end_with_their_last_child_with_counts_and_no_stage(false);
}

#[test]
fn parents_end_with_their_last_child_with_counts_and_no_stage_on_postgres() {
    parents_end_with_their_last_child_with_counts_and_no_stage(true);
}

/// The map-reduce example of docs/jobs.md, run as it is written there: a `process` handler
/// whose three steps (map, child, reduce) answer through `$ROTA_RESULT_FILE`, so the reduce
/// step sums its children's numbers from their JSON results without parsing any text.
#[test]
fn the_documented_map_reduce_sums_numbers_from_structured_results() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/jobs.md")).unwrap();
    let start = docs.find("```python\n").expect("docs/jobs.md shows the handler") + "```python\n".len();
    let script = &docs[start..start + docs[start..].find("```").unwrap()];
    let f = common::fixture::Fixture::start(false, "", &[], &[]);
    let path = f.dir.path().join("sum.py");
    std::fs::write(&path, script).unwrap();
    let app = create_app(&f.node, "sum", "process", json!({"command": ["python3", path.to_str().unwrap()]}));
    let api = f.node.url("");
    let id = submit(
        &f.node,
        json!({"action": "run", "app_id": app, "routing": "map_reduce",
               "payload": {"api": api.trim_end_matches('/'), "chunks": [[1, 2, 3], [4, 5], [6]]}}),
    );
    let row = ended(&f, id, Duration::from_secs(60));
    assert_eq!(row.status, "succeeded", "{row:?}\n{}", f.node.logs());
    assert_eq!(serde_json::from_str::<Value>(row.result.as_deref().unwrap()).unwrap(), json!({"sum": 21}));
    let children: Vec<Ended> = diesel::sql_query(format!(
        "SELECT id, status, result, error, stage FROM task WHERE parent_id = {id} ORDER BY id"
    ))
    .load(&mut *f.store.conn().unwrap())
    .unwrap();
    let sums: Vec<Value> =
        children.iter().map(|c| serde_json::from_str(c.result.as_deref().unwrap()).unwrap()).collect();
    assert_eq!(sums, vec![json!({"sum": 6}), json!({"sum": 9}), json!({"sum": 6})]);
    // The result files are gone with their commands.
    let left: Vec<_> = std::fs::read_dir(f.dir.path().join("params")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
