//! Outgoing TLS of the `http` driver (docs/drivers.md#http): an https outside system, served by
//! Python's `ssl` (OpenSSL) with a certificate of a private CA made at test time, called by a
//! real node; verified against the spec's `ca_file`, refused without it.

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use common::tls::{PyServer, TestCa};
use common::{http, wait_until};
use serde_json::{json, Value};

fn call(node: &common::Node, method: &str, path: &str, body: Value) -> (u16, Value) {
    let (s, text) = http(method, &node.url(path), Some(&body.to_string()), None);
    (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn task(f: &Fixture, app: i64) -> Value {
    let (s, t) = call(&f.node, "POST", "/api/v1/tasks", json!({"action": "run", "app_id": app, "max_attempts": 1}));
    assert!(s == 201 || s == 202, "{t}");
    let id = t["task_id"].as_i64().unwrap();
    let mut last = Value::Null;
    wait_until(Duration::from_secs(20), "the task to finish", || {
        let (_, text) = http("GET", &f.node.url(&format!("/api/v1/tasks/{id}")), None, None);
        last = serde_json::from_str(&text).unwrap_or(Value::Null);
        matches!(last["status"].as_str(), Some("succeeded" | "failed"))
    });
    last
}

#[test]
fn the_http_driver_verifies_https_against_the_spec_ca_file() {
    let f = Fixture::start(true, "", &[], &[]);
    let ca = TestCa::new();
    let rx = PyServer::https(&ca);
    let url = format!("https://127.0.0.1:{}/run", rx.port);
    let ca_file = ca.ca_pem.to_str().unwrap();

    let spec = json!({"run": {"url": url, "body": {"p": "{{params}}"}}, "ca_file": ca_file});
    let (s, app) = call(&f.node, "POST", "/api/v1/apps", json!({"name": "private", "driver": "http", "spec": spec}));
    assert_eq!(s, 201, "{app}");
    let done = task(&f, app["id"].as_i64().unwrap());
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(rx.requests()[0]["path"], "/run");

    let spec = json!({"run": {"url": url}});
    let (s, app) = call(&f.node, "POST", "/api/v1/apps", json!({"name": "public", "driver": "http", "spec": spec}));
    assert_eq!(s, 201, "{app}");
    let done = task(&f, app["id"].as_i64().unwrap());
    assert_eq!(done["status"], "failed", "{done}");
    let error = done.to_string();
    assert!(error.contains("certificate") && error.contains("UnknownIssuer"), "{done}");
    assert_eq!(rx.requests().len(), 1, "an unverified server gets no request");

    let spec = json!({"run": {"url": url}, "ca_file": "/nonexistent/ca.pem"});
    let (s, e) = call(&f.node, "POST", "/api/v1/apps", json!({"name": "bad", "driver": "http", "spec": spec}));
    assert_eq!(s, 422, "{e}");
    assert!(e.to_string().contains("spec.ca_file") && e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}
