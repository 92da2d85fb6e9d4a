//! Spec secrets are write-only (docs/api.md#secrets), against a real node on PostgreSQL:
//!
//! - a read token (and the admin, and every list) sees `***` for http headers, credential query
//!   parameters, marked fields and `env` values; no secret is in any answer, event or the log;
//! - the spec as read, sent back by PATCH, keeps the stored secrets: a real HTTP endpoint still
//!   gets the real `Authorization` header and a `process` job still sees the real env value; a
//!   new value replaces a secret and a removed field is gone;
//! - `***` where nothing is stored (a create, a new field) is refused with 422 naming the field.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use common::fixture::Fixture;
use common::{http, wait_until};

const ADMIN: &str = "admin-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";

fn node() -> Fixture {
    let config = format!(
        "[api]\ntokens = [{{ name = \"ops\", token = \"{ADMIN}\", scope = \"admin\" }}, \
         {{ name = \"grafana\", token = \"{READER}\", scope = \"read\" }}]\n"
    );
    Fixture::start(true, &config, &[], &[])
}

fn call(f: &Fixture, method: &str, path: &str, body: Option<Value>, token: &str) -> (u16, Value, String) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http(method, &f.node.url(path), body.as_deref(), Some(token));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

/// A request the endpoint saw: the request line and its headers (lower-case names), its body.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// An outside system that records every request and answers `{"ok": true}`.
fn endpoint() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some((n, v)) = h.trim_end().split_once(':') {
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let len = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok());
            let mut body = vec![0; len.unwrap_or(0)];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            record.lock().unwrap().push(Seen { line: line.trim_end().to_string(), headers, body });
            let reply = r#"{"ok": true}"#;
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (addr, seen)
}

/// Run a job of application `app` and wait until it succeeded.
fn run_job(f: &Fixture, app: i64) {
    let (s, accepted, text) = call(f, "POST", "/api/v1/tasks", Some(json!({"action": "run", "app_id": app})), ADMIN);
    assert_eq!(s, 202, "{text}");
    let task = accepted["task"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(20), "the job to succeed", || {
        let (_, t, _) = call(f, "GET", &task, None, READER);
        assert_ne!(t["status"], "failed", "{t}");
        t["status"] == "succeeded"
    });
}

/// No answer, event or log line carries a value containing this.
const MARK: &str = "SECRET";

#[test]
fn reads_show_placeholders_and_a_spec_sent_back_keeps_its_secrets() {
    let f = node();
    let (addr, seen) = endpoint();
    let out = f.dir.path().join("env-seen");
    let http_spec = json!({
        "secrets": ["/run/body/password"],
        "run": {
            "url": format!("http://{addr}/hook?page=1&access_token=qtok-{MARK}"),
            "headers": { "Authorization": format!("Bearer hdr-{MARK}"), "X-Api-Key": format!("key-{MARK}"), "Accept": "application/json" },
            "body": { "user": "ops", "password": format!("body-{MARK}") }
        }
    });
    let (s, created, text) =
        call(&f, "POST", "/api/v1/apps", Some(json!({"name": "hook", "driver": "http", "spec": http_spec})), ADMIN);
    assert_eq!(s, 201, "{text}");
    assert!(!text.contains(MARK), "the create answer shows a secret: {text}");
    let hook = created["id"].as_i64().unwrap();
    let process_spec = json!({
        "command": ["/bin/sh", "-c", format!("printf %s \"$TOKEN\" > '{}'", out.display())],
        "env": { "TOKEN": format!("env-{MARK}") }
    });
    let (s, created, text) = call(
        &f,
        "POST",
        "/api/v1/apps",
        Some(json!({"name": "worker", "driver": "process", "spec": process_spec})),
        ADMIN,
    );
    assert_eq!(s, 201, "{text}");
    let worker = created["id"].as_i64().unwrap();

    // Every read shows the placeholder, to a read token as to the admin.
    for token in [READER, ADMIN] {
        let (s, app, text) = call(&f, "GET", &format!("/api/v1/apps/{hook}"), None, token);
        assert_eq!(s, 200, "{text}");
        let run = &app["spec"]["run"];
        // Every header value: which header carries a credential is the outside system's choice.
        assert_eq!(run["headers"], json!({ "Authorization": "***", "X-Api-Key": "***", "Accept": "***" }));
        assert_eq!(run["url"], format!("http://{addr}/hook?page=1&access_token=***"));
        assert_eq!(run["body"], json!({ "user": "ops", "password": "***" }));
        assert!(!text.contains(MARK), "{text}");
        let (_, app, text) = call(&f, "GET", &format!("/api/v1/apps/{worker}"), None, token);
        assert_eq!(app["spec"]["env"], json!({ "TOKEN": "***" }), "{text}");
        assert!(!text.contains(MARK), "{text}");
        let (s, _, text) = call(&f, "GET", "/api/v1/apps", None, token);
        assert_eq!(s, 200);
        assert!(!text.contains(MARK) && text.contains("***"), "{text}");
    }

    // Read, sent back as it is: the stored values stay, and the drivers get them.
    for app in [hook, worker] {
        let (_, shown, _) = call(&f, "GET", &format!("/api/v1/apps/{app}"), None, ADMIN);
        let (s, updated, text) =
            call(&f, "PATCH", &format!("/api/v1/apps/{app}"), Some(json!({ "spec": shown["spec"] })), ADMIN);
        assert_eq!(s, 200, "{text}");
        assert_eq!(updated["spec"], shown["spec"], "the update answers with the spec as reads show it");
    }
    run_job(&f, hook);
    run_job(&f, worker);
    let request = seen.lock().unwrap().last().cloned().expect("the endpoint was called");
    assert_eq!(request.header("authorization"), Some(format!("Bearer hdr-{MARK}").as_str()), "{request:?}");
    assert_eq!(request.header("x-api-key"), Some(format!("key-{MARK}").as_str()), "{request:?}");
    assert!(request.line.contains(&format!("access_token=qtok-{MARK}")), "{request:?}");
    assert_eq!(serde_json::from_str::<Value>(&request.body).unwrap()["password"], format!("body-{MARK}"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("env-{MARK}"), "the process saw the stored env value");

    // A new value replaces a secret; a field left out is gone.
    let (_, shown, _) = call(&f, "GET", &format!("/api/v1/apps/{hook}"), None, ADMIN);
    let mut spec = shown["spec"].clone();
    spec["run"]["headers"]["X-Api-Key"] = json!(format!("key2-{MARK}"));
    spec["run"]["headers"].as_object_mut().unwrap().remove("Authorization");
    let (s, _, text) = call(&f, "PATCH", &format!("/api/v1/apps/{hook}"), Some(json!({ "spec": spec })), ADMIN);
    assert_eq!(s, 200, "{text}");
    assert!(!text.contains(MARK), "{text}");
    run_job(&f, hook);
    let request = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(request.header("x-api-key"), Some(format!("key2-{MARK}").as_str()), "{request:?}");
    assert_eq!(request.header("authorization"), None, "{request:?}");
    assert!(request.line.contains(&format!("access_token=qtok-{MARK}")), "{request:?}");

    // Nothing else shows them: events, tasks, the log.
    for path in ["/api/v1/events?limit=500", "/api/v1/tasks?limit=500", &format!("/api/v1/apps/{hook}")] {
        let (s, _, text) = call(&f, "GET", path, None, READER);
        assert_eq!(s, 200, "{path}: {text}");
        assert!(!text.contains(MARK), "{path}: {text}");
    }
    assert!(!f.node.logs().contains(MARK), "a secret reached the log");
}

#[test]
fn a_placeholder_with_nothing_stored_is_refused_naming_the_field() {
    let f = node();
    let refused = |method: &str, path: &str, body: Value, fields: &[&str]| {
        let (s, e, text) = call(&f, method, path, Some(body), ADMIN);
        assert_eq!(s, 422, "{text}");
        let named: Vec<&str> =
            e["error"]["fields"].as_array().unwrap().iter().filter_map(|f| f["field"].as_str()).collect();
        assert_eq!(named, fields, "{text}");
    };
    refused(
        "POST",
        "/api/v1/apps",
        json!({"name": "a", "driver": "http", "spec": {"run": {"url": "http://h/?token=***", "headers": {"Authorization": "***"}}}}),
        &["spec.run.headers.Authorization", "spec.run.url"],
    );
    refused(
        "POST",
        "/api/v1/apps",
        json!({"name": "b", "driver": "shell", "spec": {"run": "true", "env": {"A": "***", "B": "b"}}}),
        &["spec.env.A"],
    );
    refused(
        "POST",
        "/api/v1/apps",
        json!({"name": "c", "driver": "process", "spec": {"command": ["/bin/true"], "secrets": ["/cwd", "command"]}}),
        &["spec.secrets[0]", "spec.secrets[1]"],
    );
    let (s, _, text) = call(
        &f,
        "POST",
        "/api/v1/apps",
        Some(json!({"name": "d", "driver": "shell", "spec": {"run": "true", "env": {"A": "a"}}})),
        ADMIN,
    );
    assert_eq!(s, 201, "{text}");
    // A placeholder where the stored spec has nothing: refused, and nothing changes.
    refused(
        "PATCH",
        "/api/v1/apps/1",
        json!({"spec": {"run": "true", "env": {"A": "***", "NEW": "***"}}}),
        &["spec.env.NEW"],
    );
    let spec = f.scalar(
        "SELECT CAST(CASE WHEN spec LIKE '%\"A\":\"a\"%' AND spec NOT LIKE '%NEW%' THEN 1 ELSE 0 END AS BIGINT) AS n \
         FROM application WHERE id = 1",
    );
    assert_eq!(spec, 1, "a refused update changed the stored spec");
}
