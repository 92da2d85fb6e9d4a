//! Traffic policies across two datacenters of real nodes (PostgreSQL + etcd): an admin switch
//! moves a group's applications and jobs, a percentage split places each key on its side, and
//! when the preferred datacenter loses every node the group fails over to the backup by itself
//! and comes back when a node returns — each switch recorded once, with who and why.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use serde_json::{json, Value};

use common::cluster::Cluster;
use common::{http, wait_until, Node};

#[derive(Debug, QueryableByName)]
struct Ev {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    actor: Option<String>,
    #[diesel(sql_type = Text)]
    message: String,
}

#[derive(Debug, QueryableByName)]
struct Owned {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    owner_node: Option<String>,
}

fn call(node: &Node, method: &str, path: &str, body: Value) -> (u16, Value) {
    let (s, b) = http(method, &node.url(path), Some(&body.to_string()), None);
    (s, serde_json::from_str(&b).unwrap_or(Value::Null))
}

fn events(c: &Cluster) -> Vec<Ev> {
    diesel::sql_query("SELECT kind, actor, message FROM event WHERE kind LIKE 'traffic.%' ORDER BY id")
        .load(&mut *c.store.conn().unwrap())
        .unwrap()
}

fn owners(c: &Cluster) -> Vec<Owned> {
    diesel::sql_query("SELECT id, state, owner_node FROM application ORDER BY id")
        .load(&mut *c.store.conn().unwrap())
        .unwrap()
}

/// Wait until every application runs on a node that `want(app_id)` allows.
fn wait_placed(c: &Cluster, what: &str, want: impl Fn(i64) -> &'static [&'static str]) {
    wait_until(Duration::from_secs(60), what, || {
        owners(c)
            .iter()
            .all(|a| a.state == "running" && a.owner_node.as_deref().is_some_and(|o| want(a.id).contains(&o)))
    });
}

const DC1: &[&str] = &["a1", "a2"];
const DC2: &[&str] = &["b1", "b2"];

fn set(node: &Node, body: Value) {
    let (s, v) = call(node, "PUT", "/api/v1/traffic/g", body);
    assert_eq!(s, 200, "{v}");
}

#[test]
fn traffic_switches_splits_and_fails_over_between_datacenters_and_back() {
    let mut c = Cluster::new(&[]);
    for (id, dc) in [("a1", "dc1"), ("a2", "dc1"), ("b1", "dc2"), ("b2", "dc2")] {
        c.add_labelled(id, &[&format!("dc={dc}")]);
    }
    c.converge(&["a1", "a2", "b1", "b2"]);
    let b1 = c.nodes.get("b1").unwrap();

    // Bad input first: clear errors, nothing written.
    for (body, field) in [
        (json!({"preferred": "dc1", "backup": "dc2", "percent": 150, "reason": "x"}), "percent"),
        (json!({"preferred": "dc1", "percent": 50, "reason": "x"}), "percent"),
        (json!({"preferred": "dc1", "backup": "dc1", "reason": "x"}), "backup"),
        (json!({"preferred": "dc1", "reason": ""}), "reason"),
        (json!({"preferred": "dc 1", "reason": "x"}), "preferred"),
    ] {
        let (s, v) = call(b1, "PUT", "/api/v1/traffic/g", body.clone());
        assert_eq!(s, 422, "{body}: {v}");
        assert!(v["error"]["fields"].as_array().unwrap().iter().any(|f| f["field"] == field), "{body}: {v}");
    }
    let (s, v) = call(b1, "POST", "/api/v1/apps", json!({"name": "x", "driver": "noop", "traffic_group": "a b"}));
    assert_eq!(s, 422, "{v}");
    assert!(events(&c).is_empty());

    set(b1, json!({"preferred": "dc1", "backup": "dc2", "reason": "initial placement"}));
    for i in 0..8 {
        let (s, v) = call(
            b1,
            "POST",
            "/api/v1/apps",
            json!({"name": format!("app{i}"), "driver": "noop", "traffic_group": "g"}),
        );
        assert_eq!(s, 201, "{v}");
        let (s, v) = call(b1, "POST", &format!("/api/v1/apps/{}/start", v["id"]), json!({}));
        assert_eq!(s, 202, "{v}");
    }
    wait_placed(&c, "every app on dc1", |_| DC1);

    // Jobs of the group follow it too.
    let first_app = owners(&c)[0].id;
    let jobs: Vec<i64> = (0..6)
        .map(|_| {
            let (s, v) = call(b1, "POST", "/api/v1/tasks", json!({"action": "run", "app_id": first_app}));
            assert_eq!(s, 202, "{v}");
            v["task_id"].as_i64().unwrap()
        })
        .collect();
    wait_until(Duration::from_secs(30), "jobs done", || {
        jobs.iter().all(|id| {
            let (_, v) = call(b1, "GET", &format!("/api/v1/tasks/{id}"), Value::Null);
            v["status"] == "succeeded"
        })
    });
    for id in &jobs {
        let (_, v) = call(b1, "GET", &format!("/api/v1/tasks/{id}"), Value::Null);
        assert!(DC1.contains(&v["owner_node"].as_str().unwrap()), "job {id} ran on {}", v["owner_node"]);
    }

    // An admin switch moves the group.
    set(b1, json!({"preferred": "dc2", "backup": "dc1", "reason": "dc1 maintenance"}));
    wait_placed(&c, "every app on dc2", |_| DC2);

    // A 50 % split: each application sits on the side its key hashes to.
    set(b1, json!({"preferred": "dc1", "backup": "dc2", "percent": 50, "reason": "gradual move back"}));
    let side = |id: i64| if rota::ring::hash_key(id.to_string().as_bytes()) % 100 < 50 { DC1 } else { DC2 };
    wait_placed(&c, "apps split by key", side);
    let sides: BTreeSet<bool> = owners(&c).iter().map(|a| side(a.id) == DC1).collect();
    assert_eq!(sides.len(), 2, "the split used both sides");
    let (_, v) = call(b1, "GET", "/api/v1/traffic/g", Value::Null);
    assert_eq!(v["active"], json!({"dc1": 50, "dc2": 50}), "{v}");

    set(b1, json!({"preferred": "dc1", "backup": "dc2", "reason": "move complete"}));
    wait_placed(&c, "every app back on dc1", |_| DC1);

    // dc1 dies: the group fails over by itself, and one node records it.
    for id in DC1 {
        c.nodes.get_mut(*id).unwrap().signal("KILL");
    }
    let t = Instant::now();
    wait_placed(&c, "every app failed over to dc2", |_| DC2);
    eprintln!(
        "measured: group failed over to dc2 {:?} after dc1 was killed (ttl {} s)",
        t.elapsed(),
        common::cluster::ttl()
    );
    let (_, v) = call(c.nodes.get("b2").unwrap(), "GET", "/api/v1/traffic/g", Value::Null);
    assert_eq!(v["failed_over"], true, "{v}");

    // A dc1 node returns: back, by itself.
    c.add_labelled("a1", &["dc=dc1"]);
    let t = Instant::now();
    wait_placed(&c, "every app back on a1", |_| &["a1"]);
    eprintln!("measured: group back on dc1 {:?} after a1 rejoined", t.elapsed());

    let evs = events(&c);
    let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "traffic.switched",
            "traffic.switched",
            "traffic.switched",
            "traffic.switched",
            "traffic.failover",
            "traffic.failback"
        ],
        "{evs:#?}"
    );
    assert!(evs[1].message.contains("dc1 maintenance") && evs[1].actor.as_deref() == Some("local"), "{evs:#?}");
    assert!(
        evs[4].actor.as_deref() == Some("system") && evs[4].message.contains("no live node has dc=dc1"),
        "{evs:#?}"
    );
    assert!(evs[5].message.contains("dc=dc1 has 1 live node"), "{evs:#?}");
}

/// A change of an application's selector (or traffic group) through the API applies at once
/// on every node: no job inserted after the change's answer runs in the place it moved out of
/// (docs/jobs.md#placement-changes).
#[test]
fn a_selector_change_applies_to_the_next_job_at_once() {
    let mut c = Cluster::new(&[]);
    for (id, dc) in [("a1", "dc1"), ("b1", "dc2")] {
        c.add_labelled(id, &[&format!("dc={dc}")]);
    }
    c.converge(&["a1", "b1"]);
    let (a1, b1) = (c.nodes.get("a1").unwrap(), c.nodes.get("b1").unwrap());
    let (s, v) = call(a1, "POST", "/api/v1/apps", json!({"name": "x", "driver": "noop", "selector": {"dc": "dc1"}}));
    assert_eq!(s, 201, "{v}");
    let app = v["id"].as_i64().unwrap();
    for (round, (dc, node, via)) in
        [("dc2", "b1", a1), ("dc1", "a1", b1), ("dc2", "b1", b1), ("dc1", "a1", a1)].into_iter().enumerate()
    {
        let (s, v) = call(via, "PATCH", &format!("/api/v1/apps/{app}"), json!({"selector": {"dc": dc}}));
        assert_eq!(s, 200, "{v}");
        let jobs: Vec<i64> = (0..16)
            .map(|_| {
                let (s, v) = call(via, "POST", "/api/v1/tasks", json!({"action": "run", "app_id": app}));
                assert_eq!(s, 202, "{v}");
                v["task_id"].as_i64().unwrap()
            })
            .collect();
        let mut ran = Vec::new();
        wait_until(Duration::from_secs(30), "the jobs to finish", || {
            ran = jobs
                .iter()
                .map(|id| call(via, "GET", &format!("/api/v1/tasks/{id}"), Value::Null).1)
                .filter(|v| v["status"] == "succeeded")
                .map(|v| v["owner_node"].as_str().unwrap_or_default().to_string())
                .collect();
            ran.len() == jobs.len()
        });
        assert!(ran.iter().all(|o| o == node), "round {round}: selector dc={dc}, jobs ran on {ran:?}");
    }
}

/// On SQLite there is no notification between nodes: the node that serves `PUT /traffic` must
/// place by the new policy at once, not at its next reconciliation (here a minute away).
#[test]
fn a_policy_set_on_a_single_sqlite_node_applies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rota.toml");
    std::fs::write(
        &cfg,
        format!("{}[membership.labels]\ndc = \"dc1\"\n", common::fast_toml(&[("reconcile_interval_ms", "60000")])),
    )
    .unwrap();
    let node = Node::start(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);
    let (s, v) = call(&node, "POST", "/api/v1/apps", json!({"name": "x", "driver": "noop", "traffic_group": "g"}));
    assert_eq!(s, 201, "{v}");
    assert_eq!(call(&node, "POST", "/api/v1/apps/1/start", json!({})).0, 202);
    let app = || call(&node, "GET", "/api/v1/apps/1", Value::Null).1;
    wait_until(Duration::from_secs(10), "the application to run here", || {
        app()["state"] == "running" && app()["owner_node"].is_string()
    });
    // No live node is in dc2: the group runs nowhere, so the node lets the application go.
    set(&node, json!({"preferred": "dc2", "auto_failover": false, "reason": "move to dc2"}));
    wait_until(Duration::from_secs(15), "the node to release the application", || app()["owner_node"].is_null());
}
