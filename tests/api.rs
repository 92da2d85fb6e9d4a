//! The admin API against a real node: routes, status codes, bodies, pagination, filters, auth and
//! bad input.

mod common;

use std::time::Duration;

use common::{fast_toml, http, rota, run, wait_until, Node};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";

fn node_with_tokens() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rota.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nmax_body_bytes = 4096\ntokens = [{{ name = \"ops\", token = \"{ADMIN}\", scope = \"admin\" }}, \
             {{ name = \"grafana\", token = \"{READER}\", scope = \"read\" }}]\n\
             {}[membership.labels]\ndc = \"eu\"\n",
            fast_toml(&[])
        ),
    )
    .unwrap();
    let node = Node::start(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);
    (dir, node)
}

fn call(node: &Node, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http(method, &node.url(path), body.as_deref(), token);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn admin(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(node, method, path, body, Some(ADMIN))
}

#[test]
fn applications_lifecycle_through_the_api() {
    let (_dir, node) = node_with_tokens();
    let (s, app) =
        admin(&node, "POST", "/api/v1/apps", Some(json!({"name": "web", "driver": "noop", "selector": {"dc": "eu"}})));
    assert_eq!(s, 201, "{app}");
    assert_eq!(
        (app["id"].as_i64(), app["state"].as_str(), app["selector"]["dc"].as_str()),
        (Some(1), Some("stopped"), Some("eu"))
    );

    let (s, accepted) = admin(&node, "POST", "/api/v1/apps/1/start", None);
    assert_eq!(s, 202);
    let task = accepted["task"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(10), "the start to succeed", || {
        admin(&node, "GET", &task, None).1["status"] == "succeeded"
    });
    let (_, shown) = admin(&node, "GET", "/api/v1/apps/1", None);
    assert_eq!(shown["state"], "running");
    assert!(shown["owner_node"].is_string() && shown["owner_epoch"].is_i64());
    let kinds: Vec<&str> =
        shown["recent_events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"app.created") && kinds.contains(&"app.state"), "{kinds:?}");

    // Deleting a running application is refused unless forced.
    let (s, err) = admin(&node, "DELETE", "/api/v1/apps/1", None);
    assert_eq!((s, err["error"]["code"].as_str()), (409, Some("conflict")));
    let (s, _) = admin(&node, "POST", "/api/v1/apps/1/stop", None);
    assert_eq!(s, 202);
    wait_until(Duration::from_secs(10), "stopped", || {
        admin(&node, "GET", "/api/v1/apps/1", None).1["state"] == "stopped"
    });
    let (s, updated) = admin(
        &node,
        "PATCH",
        "/api/v1/apps/1",
        Some(json!({"spec": {"delay_ms": 1}, "max_restarts": 5, "monitor_interval_ms": null})),
    );
    assert_eq!(s, 200, "{updated}");
    assert_eq!((updated["spec"]["delay_ms"].as_i64(), updated["max_restarts"].as_i64()), (Some(1), Some(5)));
    assert_eq!(admin(&node, "DELETE", "/api/v1/apps/1", None).0, 204);
    assert_eq!(admin(&node, "GET", "/api/v1/apps/1", None).0, 404);

    // Who did it is on record, by token name.
    let (_, events) = admin(&node, "GET", "/api/v1/events?kind=app.deleted", None);
    assert_eq!(events["items"][0]["actor"], "ops");
}

#[test]
fn lists_filter_and_paginate() {
    let (_dir, node) = node_with_tokens();
    for i in 0..5 {
        let driver = if i % 2 == 0 { "noop" } else { "shell" };
        let spec = if driver == "shell" { json!({"status": "exit 3"}) } else { json!({}) };
        assert_eq!(
            admin(
                &node,
                "POST",
                "/api/v1/apps",
                Some(json!({"name": format!("a{i}"), "driver": driver, "spec": spec}))
            )
            .0,
            201
        );
    }
    let (_, page) = admin(&node, "GET", "/api/v1/apps?limit=2", None);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_string();
    let (_, page2) = admin(&node, "GET", &next, None);
    assert_eq!(page2["items"][0]["id"], 3);
    let (_, shells) = admin(&node, "GET", "/api/v1/apps?driver=shell", None);
    assert_eq!(shells["items"].as_array().unwrap().len(), 2);
    assert!(shells["next"].is_null());

    for i in 0..3 {
        let (s, _) = admin(&node, "POST", "/api/v1/tasks", Some(json!({"action": "run", "payload": {"n": i}})));
        assert_eq!(s, 202);
    }
    admin(&node, "POST", "/api/v1/tasks", Some(json!({"action": "run", "run_after": "2999-01-01T00:00:00Z"})));
    wait_until(Duration::from_secs(10), "three jobs done", || {
        admin(&node, "GET", "/api/v1/tasks?status=succeeded", None).1["items"].as_array().map_or(0, |a| a.len()) == 3
    });
    let (_, pending) = admin(&node, "GET", "/api/v1/tasks?status=pending", None);
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    let (_, future) = admin(&node, "GET", "/api/v1/tasks?since=2000-01-01T00:00:00Z&limit=1", None);
    assert!(future["next"].as_str().unwrap().contains("since="));
    let (_, none) = admin(&node, "GET", "/api/v1/tasks?until=2000-01-01T00:00:00Z", None);
    assert!(none["items"].as_array().unwrap().is_empty());
}

#[test]
fn tasks_submit_show_cancel_and_idempotency() {
    let (_dir, node) = node_with_tokens();
    let later = json!({"action": "run", "run_after": "2999-01-01T00:00:00Z", "idempotency_key": "k-1"});
    let (s, a) = admin(&node, "POST", "/api/v1/tasks", Some(later.clone()));
    assert_eq!(s, 202);
    let id = a["task_id"].as_i64().unwrap();
    let (s, dup) = admin(&node, "POST", "/api/v1/tasks", Some(later));
    assert_eq!(s, 409);
    assert!(dup["error"]["message"].as_str().unwrap().contains(&format!("task {id}")), "{dup}");
    let (s, t) = admin(&node, "GET", &format!("/api/v1/tasks/{id}"), None);
    assert_eq!((s, t["status"].as_str(), t["idempotency_key"].as_str()), (200, Some("pending"), Some("k-1")));
    let (s, c) = admin(&node, "POST", &format!("/api/v1/tasks/{id}/cancel"), None);
    assert_eq!((s, c["status"].as_str()), (200, Some("cancelled")));
    let (_, events) = admin(&node, "GET", &format!("/api/v1/events?task_id={id}&kind=task.cancelled"), None);
    assert_eq!(events["items"][0]["actor"], "ops");
    let (s, again) = admin(&node, "POST", &format!("/api/v1/tasks/{id}/cancel"), None);
    assert_eq!(s, 409, "{again}");
    assert_eq!(admin(&node, "POST", "/api/v1/tasks/999/cancel", None).0, 404);
    assert_eq!(admin(&node, "GET", "/api/v1/tasks/999", None).0, 404);
}

#[test]
fn cluster_and_owner() {
    let (_dir, node) = node_with_tokens();
    let (s, c) = call(&node, "GET", "/api/v1/cluster", None, Some(READER));
    assert_eq!(s, 200);
    let me = c["self"]["node_id"].as_str().unwrap().to_string();
    let (s, o) = call(&node, "GET", "/api/v1/owner?key=42", None, Some(READER));
    assert_eq!(s, 200);
    assert_eq!(o["explanation"]["owner"]["node_id"], me.as_str());
    assert_eq!(o["candidates"], json!([me]));
    let (_, none) = call(&node, "GET", "/api/v1/owner?key=42&selector=dc=mars", None, Some(READER));
    assert!(none["explanation"]["owner"].is_null(), "{none}");
    assert_eq!(call(&node, "GET", "/api/v1/owner?key=1&selector=broken", None, Some(READER)).0, 422);
}

#[test]
fn auth_is_required_and_scoped() {
    let (_dir, node) = node_with_tokens();
    let (s, e) = call(&node, "GET", "/api/v1/apps", None, None);
    assert_eq!((s, e["error"]["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(call(&node, "GET", "/api/v1/apps", None, Some("wrong-token-wrong-token")).0, 401);
    assert_eq!(call(&node, "GET", "/api/v1/apps", None, Some(READER)).0, 200);
    for (method, path) in [
        ("POST", "/api/v1/apps"),
        ("PATCH", "/api/v1/apps/1"),
        ("DELETE", "/api/v1/apps/1"),
        ("POST", "/api/v1/apps/1/start"),
        ("POST", "/api/v1/apps/1/stop"),
        ("POST", "/api/v1/apps/1/restart"),
        ("POST", "/api/v1/tasks"),
        ("POST", "/api/v1/tasks/1/cancel"),
    ] {
        assert_eq!(call(&node, method, path, Some(json!({})), None).0, 401, "{method} {path} without a token");
        assert_eq!(
            call(&node, method, path, Some(json!({})), Some("nope-nope-nope-nope")).0,
            401,
            "{method} {path} bad token"
        );
        let (s, e) = call(&node, method, path, Some(json!({})), Some(READER));
        assert_eq!(s, 403, "{method} {path} with a read token: {e}");
    }
    // Health and metrics stay open; the token never reaches the log.
    assert_eq!(node.get("/readyz").0, 200);
    assert_eq!(node.get("/metrics").0, 200);
    assert!(!node.logs().contains(ADMIN) && !node.logs().contains(READER));
}

#[test]
fn bad_input_gets_clear_json_errors() {
    let (_dir, node) = node_with_tokens();
    let raw = |method: &str, path: &str, body: &str| {
        let (s, text) = http(method, &node.url(path), Some(body), Some(ADMIN));
        (s, serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
    };
    let (s, e) = raw("POST", "/api/v1/apps", "{\"name\": ");
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("bad_request")));
    let (s, e) = raw("POST", "/api/v1/apps", r#"{"name": "x", "driver": "noop", "colour": "red"}"#);
    assert_eq!(s, 422);
    assert!(e["error"]["message"].as_str().unwrap().contains("colour"));
    let (s, e) = admin(
        &node,
        "POST",
        "/api/v1/apps",
        Some(json!({"name": "p", "driver": "process", "spec": {"command": "ls", "stop_grace_ms": -1}})),
    );
    assert_eq!(s, 422);
    let fields: Vec<&str> =
        e["error"]["fields"].as_array().unwrap().iter().filter_map(|f| f["field"].as_str()).collect();
    assert!(
        fields.iter().any(|f| f.starts_with("spec.command"))
            && fields.iter().any(|f| f.starts_with("spec.stop_grace_ms")),
        "{e}"
    );
    let (s, e) = admin(&node, "POST", "/api/v1/apps", Some(json!({"name": "d", "driver": "docker"})));
    assert_eq!(s, 422);
    assert!(e["error"]["message"].as_str().unwrap().contains("unknown driver"));
    let huge = format!(r#"{{"name": "h", "driver": "noop", "spec": {{"pad": "{}"}}}}"#, "x".repeat(10_000));
    let (s, e) = raw("POST", "/api/v1/apps", &huge);
    assert_eq!((s, e["error"]["code"].as_str()), (413, Some("payload_too_large")));
    assert_eq!(admin(&node, "GET", "/api/v1/apps/abc", None).0, 400);
    assert_eq!(admin(&node, "GET", "/api/v1/apps/999", None).0, 404);
    assert_eq!(admin(&node, "GET", "/api/v1/apps?limit=lots", None).0, 400);
    assert_eq!(admin(&node, "GET", "/api/v1/apps?colour=red", None).0, 400);
    assert_eq!(admin(&node, "GET", "/api/v1/tasks?status=done", None).0, 422);
    let (s, e) = admin(&node, "GET", "/api/v1/nothing-here", None);
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, e) = admin(&node, "POST", "/api/v1/tasks", Some(json!({"action": "run", "payload": [1]})));
    assert_eq!(s, 422, "{e}");
    assert_eq!(admin(&node, "POST", "/api/v1/tasks", Some(json!({"action": ""}))).0, 422);
    assert_eq!(admin(&node, "GET", "/api/v1/apps?state=bogus", None).0, 422);
    let (s, e) = admin(&node, "POST", "/api/v1/tasks", Some(json!({"action": "start", "app_id": 999})));
    assert_eq!(s, 422);
    assert_eq!(e["error"]["fields"][0]["field"], "app_id");
    assert_eq!(node.get("/readyz").0, 200, "still up");
}

/// What dispatch would fail is refused at the door, with the field named: an unknown action
/// (202 before, then `failed` at dispatch) and a mistyped selector (422 before, but with
/// `fields: []`), on tasks and on applications.
#[test]
fn the_api_refuses_what_dispatch_would_fail_naming_the_field() {
    let (_dir, node) = node_with_tokens();
    let fields = |e: &Value| -> Vec<String> {
        e["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap().to_string()).collect()
    };
    let (s, e) = admin(&node, "POST", "/api/v1/tasks", Some(json!({"action": "fly"})));
    assert_eq!((s, fields(&e)), (422, vec!["action".to_string()]), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("`fly`") && message.contains("start, stop, restart, savepoint, run"), "{message}");
    let (_, list) = admin(&node, "GET", "/api/v1/tasks", None);
    assert_eq!(list["items"], json!([]), "nothing written");

    for (body, field) in [
        (json!({"action": "run", "selector": "dc=eu"}), "selector"),
        (json!({"action": "run", "selector": ["dc"]}), "selector"),
        (json!({"action": "run", "selector": {"dc": 5}}), "selector.dc"),
    ] {
        let (s, e) = admin(&node, "POST", "/api/v1/tasks", Some(body.clone()));
        assert_eq!((s, fields(&e)), (422, vec![field.to_string()]), "{body}: {e}");
    }
    let (s, e) = admin(
        &node,
        "POST",
        "/api/v1/apps",
        Some(json!({"name": "s", "driver": "noop", "selector": {"dc": "eu", "zone": 1, "rack": null}})),
    );
    assert_eq!((s, fields(&e)), (422, vec!["selector.rack".to_string(), "selector.zone".to_string()]), "{e}");
    let (s, app) =
        admin(&node, "POST", "/api/v1/apps", Some(json!({"name": "s", "driver": "noop", "selector": {"dc": "eu"}})));
    assert_eq!(s, 201, "{app}");
    let path = format!("/api/v1/apps/{}", app["id"]);
    let (s, e) = admin(&node, "PATCH", &path, Some(json!({"selector": "dc=eu"})));
    assert_eq!((s, fields(&e)), (422, vec!["selector".to_string()]), "{e}");
    let (s, a) = admin(&node, "PATCH", &path, Some(json!({"selector": {"dc": "us"}})));
    assert_eq!((s, &a["selector"]), (200, &json!({"dc": "us"})), "{a}");
}

#[test]
fn without_tokens_only_loopback_is_served_and_serve_refuses_a_public_listen() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[], &[]);
    assert_eq!(call(&node, "GET", "/api/v1/apps", None, None).0, 200, "loopback callers need no token");
    let (status, _, err) =
        run(rota().args(["serve", "--listen", "0.0.0.0:0", "--data-dir"]).arg(dir.path().join("other")));
    assert!(!status.success());
    assert!(err.contains("server.listen") && err.contains("[api]") && err.contains("tokens"), "{err}");
}

#[test]
fn metrics_cover_tasks_latency_queue_and_ownership() {
    let (_dir, node) = node_with_tokens();
    admin(&node, "POST", "/api/v1/apps", Some(json!({"name": "m", "driver": "noop"})));
    let (_, a) = admin(&node, "POST", "/api/v1/apps/1/start", None);
    let task = a["task"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(10), "the start to succeed", || {
        admin(&node, "GET", &task, None).1["status"] == "succeeded"
    });
    admin(&node, "POST", "/api/v1/tasks", Some(json!({"action": "run", "run_after": "2999-01-01T00:00:00Z"})));
    let mut text = String::new();
    wait_until(Duration::from_secs(10), "metrics to show the finished task", || {
        text = node.get("/metrics").1;
        text.contains(r#"rota_tasks_total{action="start",status="succeeded"} 1"#)
    });
    // A claim given back unstarted (a placement change right after the create gives back what
    // was claimed ahead) is claimed, and timed, again: at least one claim, not exactly one.
    let claims: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rota_task_claim_latency_seconds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(claims >= 1.0, "no claim timed in:\n{text}");
    for needle in [
        "rota_task_execution_seconds_count{action=\"start\"} 1",
        "rota_queue_depth 0",
        "rota_owned_applications 1",
        "rota_ring_epoch 1",
        "rota_members 1",
        "rota_db_pool_connections",
        "rota_membership_errors_total 0",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn the_openapi_document_covers_every_route_and_every_documented_route_is_served() {
    let (_dir, node) = node_with_tokens();
    // Open without a token, like health.
    let (s, doc) = call(&node, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = [
        ("GET", "/api/v1/apps"),
        ("POST", "/api/v1/apps"),
        ("GET", "/api/v1/apps/{id}"),
        ("PATCH", "/api/v1/apps/{id}"),
        ("DELETE", "/api/v1/apps/{id}"),
        ("POST", "/api/v1/apps/{id}/start"),
        ("POST", "/api/v1/apps/{id}/stop"),
        ("POST", "/api/v1/apps/{id}/restart"),
        ("POST", "/api/v1/apps/{id}/savepoint"),
        ("GET", "/api/v1/tasks"),
        ("POST", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks/{id}"),
        ("POST", "/api/v1/tasks/{id}/cancel"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/cluster"),
        ("GET", "/api/v1/owner"),
        ("GET", "/api/v1/whoami"),
        ("GET", "/api/v1/nodes/{id}"),
        ("POST", "/api/v1/nodes/{id}/drain"),
        ("DELETE", "/api/v1/nodes/{id}/drain"),
        ("GET", "/api/v1/traffic"),
        ("GET", "/api/v1/traffic/{group}"),
        ("PUT", "/api/v1/traffic/{group}"),
        ("DELETE", "/api/v1/traffic/{group}"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/livez"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/schedules"),
        ("POST", "/api/v1/schedules"),
        ("GET", "/api/v1/schedules/{id}"),
        ("PATCH", "/api/v1/schedules/{id}"),
        ("DELETE", "/api/v1/schedules/{id}"),
        ("GET", "/api/v1/workflows"),
        ("POST", "/api/v1/workflows"),
        ("GET", "/api/v1/workflows/{id}"),
        ("PUT", "/api/v1/workflows/{id}"),
        ("GET", "/api/v1/workflows/{id}/runs"),
        ("POST", "/api/v1/workflows/{id}/runs"),
        ("GET", "/api/v1/workflow-runs/{id}"),
        ("POST", "/api/v1/workflow-runs/{id}/retry"),
        ("POST", "/api/v1/workflow-runs/{id}/cancel"),
        ("GET", "/api/v1/channels"),
        ("POST", "/api/v1/channels"),
        ("GET", "/api/v1/channels/{channel}"),
        ("PATCH", "/api/v1/channels/{channel}"),
        ("DELETE", "/api/v1/channels/{channel}"),
        ("POST", "/api/v1/channels/{channel}/test"),
        ("GET", "/api/v1/alarms"),
        ("POST", "/api/v1/alarms"),
        ("GET", "/api/v1/alarms/{id}"),
        ("PATCH", "/api/v1/alarms/{id}"),
        ("DELETE", "/api/v1/alarms/{id}"),
        ("GET", "/api/v1/alarms/deliveries"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Every documented operation reaches a handler (not the unknown-route 404).
    let me =
        call(&node, "GET", "/api/v1/cluster", None, Some(ADMIN)).1["self"]["node_id"].as_str().unwrap().to_string();
    for (method, path) in &documented {
        let concrete = path
            .replace("/nodes/{id}", &format!("/nodes/{me}"))
            .replace("{id}", "1")
            .replace("{group}", "g")
            .replace("{channel}", "c");
        let (s, body) = http(method, &node.url(&concrete), Some("{}"), Some(ADMIN));
        assert!(!(s == 404 && body.contains("no route for")), "{method} {concrete} is documented but not served");
    }
}

/// After every node has stopped, an application recorded as running has no live owner: a node
/// that cannot adopt it (its selector matches no member) shows it `orphaned`, not `running`.
/// The standalone membership records the story: joined, left, joined again.
#[test]
fn an_application_nobody_owns_is_orphaned_and_membership_changes_are_events() {
    let dir = tempfile::tempdir().unwrap();
    let envs: Vec<(&str, &str)> = common::FAST.to_vec();
    let mut node = Node::start(dir.path(), &["--label", "dc=eu"], &envs);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);
    let (s, _) = call(
        &node,
        "POST",
        "/api/v1/apps",
        Some(json!({"name": "web", "driver": "noop", "selector": {"dc": "eu"}})),
        None,
    );
    assert_eq!(s, 201);
    let (s, accepted) = call(&node, "POST", "/api/v1/apps/1/start", None, None);
    assert_eq!(s, 202, "{accepted}");
    wait_until(Duration::from_secs(10), "the application to run", || {
        call(&node, "GET", "/api/v1/apps/1", None, None).1["state"] == "running"
    });
    node.signal("TERM");
    assert!(node.wait_exit(Duration::from_secs(20)).success());

    let node = Node::start(dir.path(), &["--label", "dc=us"], &envs);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);
    let (_, app) = call(&node, "GET", "/api/v1/apps/1", None, None);
    assert_eq!((app["state"].as_str(), app["owner_node"].as_str()), (Some("orphaned"), None), "{app}");
    let (_, page) = call(&node, "GET", "/api/v1/apps", None, None);
    assert_eq!(page["items"][0]["state"], "orphaned", "{page}");

    let (_, page) = call(&node, "GET", "/api/v1/events?kind=membership.", None, None);
    let kinds: Vec<&str> =
        page["items"].as_array().unwrap().iter().rev().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["membership.joined", "membership.left", "membership.joined"], "{page}");
    let (_, page) = call(&node, "GET", "/api/v1/events?kind=app.released", None, None);
    assert_eq!(page["items"][0]["data"]["reason"], "stopped", "{page}");
}
