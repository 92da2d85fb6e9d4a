//! Inputs that cannot exhaust a node (docs/security.md): task rows written by hand and jobs
//! submitted through the API, against a real node on each backend. What it proves:
//!
//! - **Metric labels**: 20,000 rows with distinct bogus actions all fail, and `/metrics` stays
//!   under 1 MB, counting them under `action="other"`.
//! - **Shards**: `payload.shard_params` is held to the 10,000-shard cap of `shard_total` — 422
//!   from the API, and a row written by hand fails at dispatch with the same message, with no
//!   child written.
//! - **Fan-out bytes**: a fan-out whose children would hold more than `dispatch.fan_out_max_bytes`
//!   of parameters is refused (422) or failed with the numbers, with no child written.
//! - **Children reference their parent**: 1,000 shards of a job with a 200 KB payload store only
//!   their own parameters, and each child's job still sees the parent's fields.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::fixture::Fixture;
use common::{http, wait_until};

fn post(f: &Fixture, body: &Value) -> (u16, Value) {
    let (s, b) = http("POST", &f.node.url("/api/v1/tasks"), Some(&body.to_string()), None);
    (s, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// Insert one row by hand; its id.
fn insert(f: &Fixture, payload: &Value) -> i64 {
    let payload = payload.to_string().replace('\'', "''");
    f.sql(&format!("INSERT INTO task (action, routing, payload) VALUES ('run', 'sharding', '{payload}')"));
    f.scalar("SELECT MAX(id) AS n FROM task")
}

fn status_and_error(f: &Fixture, id: i64) -> (String, String) {
    let rows: Vec<(String, Option<String>)> = {
        use diesel::prelude::*;
        use diesel::sql_types::{Nullable, Text};
        #[derive(QueryableByName)]
        struct R {
            #[diesel(sql_type = Text)]
            status: String,
            #[diesel(sql_type = Nullable<Text>)]
            error: Option<String>,
        }
        diesel::sql_query(format!("SELECT status, error FROM task WHERE id = {id}"))
            .load::<R>(&mut *f.store.conn().unwrap())
            .unwrap()
            .into_iter()
            .map(|r| (r.status, r.error))
            .collect()
    };
    let (s, e) = rows.into_iter().next().unwrap();
    (s, e.unwrap_or_default())
}

fn finished(f: &Fixture, id: i64, within: Duration) -> (String, String) {
    wait_until(within, &format!("task {id} to finish"), || {
        matches!(status_and_error(f, id).0.as_str(), "succeeded" | "failed")
    });
    status_and_error(f, id)
}

/// The value of the sample `name{labels…}` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn twenty_thousand_bogus_actions_leave_metrics_small() {
    let f = Fixture::start(true, "", &[], &[]);
    f.sql(
        "INSERT INTO task (action) \
         SELECT 'bogus-' || g || '-' || repeat('x', 40) FROM generate_series(1, 20000) g",
    );
    wait_until(Duration::from_secs(300), "20,000 bogus rows failed", || {
        f.scalar("SELECT COUNT(*) AS n FROM task WHERE status = 'failed'") == 20_000
    });
    let error = status_and_error(&f, f.scalar("SELECT MIN(id) AS n FROM task")).1;
    assert!(error.contains("unknown action `bogus-1-"), "{error}");
    // Read whole, however large (the shared client stops at 10 MB). A row is counted once its
    // outcome is written, so the last rows' counts may follow their status by a moment.
    let scrape = || {
        let mut resp = ureq::get(&f.node.url("/metrics")).call().unwrap();
        resp.body_mut().with_config().limit(1 << 30).read_to_string().unwrap()
    };
    let mut metrics = String::new();
    wait_until(Duration::from_secs(30), "every failed row counted", || {
        metrics = scrape();
        sample(&metrics, "rota_task_execution_seconds_count", &["action=\"other\""]) == Some(20_000.0)
    });
    assert!(metrics.len() < 1024 * 1024, "/metrics is {} bytes", metrics.len());
    assert!(!metrics.contains("bogus-"), "a row's action text became a label");
    assert_eq!(
        sample(&metrics, "rota_tasks_total", &["action=\"other\"", "status=\"failed\""]),
        Some(20_000.0),
        "{}",
        metrics.lines().filter(|l| l.starts_with("rota_tasks_total")).collect::<Vec<_>>().join("\n")
    );
    let executions = sample(&metrics, "rota_task_execution_seconds_count", &["action=\"other\""]);
    assert_eq!(executions, Some(20_000.0));
}

/// `payload.shard_params` of 20,000 entries: 422 from the API, and a row written by hand fails
/// with the same message without writing any child.
fn shard_params_are_capped(postgres: bool) {
    let f = Fixture::start(postgres, "", &[], &[]);
    let payload = json!({ "shard_params": vec![json!({}); 20_000] });
    let (s, v) = post(&f, &json!({"action": "run", "routing": "sharding", "payload": payload}));
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["fields"][0]["field"], "payload.shard_params", "{v}");
    let want = "at most 10000 shards (got 20000 entries)";
    assert!(v["error"]["message"].as_str().unwrap().contains(want), "{v}");
    assert_eq!(f.scalar("SELECT COUNT(*) AS n FROM task"), 0);

    let id = insert(&f, &payload);
    let (status, error) = finished(&f, id, Duration::from_secs(30));
    assert_eq!(status, "failed");
    assert!(error.contains(&format!("payload.shard_params {want}")), "{error}");
    assert_eq!(f.scalar(&format!("SELECT COUNT(*) AS n FROM task WHERE parent_id = {id}")), 0);
}

#[test]
fn shard_params_are_capped_on_postgres() {
    shard_params_are_capped(true);
}

#[test]
fn shard_params_are_capped_on_sqlite() {
    shard_params_are_capped(false);
}

/// With `dispatch.fan_out_max_bytes` at 100,000: 100 shards of 2 KB each are refused by the API
/// and failed at dispatch when written by hand, naming the numbers; none of their children is
/// written. A job under the cap still fans out.
fn fan_out_bytes_are_capped(postgres: bool) {
    let f = Fixture::start(postgres, "", &[], &[("ROTA__DISPATCH__FAN_OUT_MAX_BYTES", "100000")]);
    let shard_params: Vec<Value> = (0..100).map(|i| json!({"blob": format!("{i}{}", "x".repeat(2000))})).collect();
    let payload = json!({ "shard_params": shard_params });
    let (s, v) = post(&f, &json!({"action": "run", "routing": "sharding", "payload": payload}));
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["fields"][0]["field"], "payload.shard_params", "{v}");
    let message = v["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("would write 100 children holding 204780 bytes of parameters")
            && message.contains("more than the 100000 a fan-out may write (dispatch.fan_out_max_bytes)"),
        "{message}"
    );
    assert_eq!(f.scalar("SELECT COUNT(*) AS n FROM task"), 0);

    let id = insert(&f, &payload);
    let (status, error) = finished(&f, id, Duration::from_secs(30));
    assert_eq!(status, "failed");
    assert!(error.contains("payload.shard_params would write 100 children holding"), "{error}");
    assert_eq!(f.scalar(&format!("SELECT COUNT(*) AS n FROM task WHERE parent_id = {id}")), 0);

    let small = json!({ "shard_params": (0..10).map(|i| json!({"blob": i})).collect::<Vec<_>>() });
    let (s, v) = post(&f, &json!({"action": "run", "routing": "sharding", "payload": small}));
    assert_eq!(s, 202, "{v}");
    let ok = v["task_id"].as_i64().unwrap();
    assert_eq!(finished(&f, ok, Duration::from_secs(30)).0, "succeeded");
    assert_eq!(f.scalar(&format!("SELECT COUNT(*) AS n FROM task WHERE parent_id = {ok}")), 10);
}

#[test]
fn fan_out_bytes_are_capped_on_postgres() {
    fan_out_bytes_are_capped(true);
}

#[test]
fn fan_out_bytes_are_capped_on_sqlite() {
    fan_out_bytes_are_capped(false);
}

/// 1,000 shards of a job whose payload holds 200 KB: each child stores only its own
/// parameters (a few dozen bytes, not the parent's 200 KB), and each child's job sees the
/// parent's fields merged with its own.
fn children_reference_their_parent(postgres: bool) {
    let f = Fixture::start(postgres, "", &[], &[]);
    let shard_params: Vec<Value> = (0..1000).map(|i| json!({ "part": i })).collect();
    let payload = json!({"echo": "from the parent", "big": "x".repeat(200_000), "shard_params": shard_params});
    let (s, v) = post(&f, &json!({"action": "run", "routing": "sharding", "payload": payload}));
    assert_eq!(s, 202, "{v}");
    let id = v["task_id"].as_i64().unwrap();
    let (status, error) = finished(&f, id, Duration::from_secs(180));
    assert_eq!(status, "succeeded", "{error}");
    let kids = format!("FROM task WHERE parent_id = {id}");
    assert_eq!(f.scalar(&format!("SELECT COUNT(*) AS n {kids} AND status = 'succeeded'")), 1000);
    let bytes = if postgres { "octet_length(payload)" } else { "length(CAST(payload AS BLOB))" };
    let largest = f.scalar(&format!("SELECT CAST(MAX({bytes}) AS BIGINT) AS n {kids}"));
    let total = f.scalar(&format!("SELECT CAST(SUM({bytes}) AS BIGINT) AS n {kids}"));
    assert!(largest < 100, "a child stores {largest} bytes of parameters");
    assert!(total < 100_000, "the children store {total} bytes of parameters");
    // The noop driver echoes `echo` (the parent's field) and `shard_index` (the child's own).
    let mut seen = 0;
    for (index, result) in results(&f, id) {
        let r: Value = serde_json::from_str(&result).unwrap();
        assert_eq!(r["echo"], "from the parent", "{r}");
        assert_eq!(r["shard_index"], index, "{r}");
        assert_eq!(r["shard_total"], 1000, "{r}");
        seen += 1;
    }
    assert_eq!(seen, 1000);
}

/// `(shard_index, result)` of every child of `parent`.
fn results(f: &Fixture, parent: i64) -> Vec<(i32, String)> {
    use diesel::prelude::*;
    use diesel::sql_types::{Integer, Text};
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Integer)]
        shard_index: i32,
        #[diesel(sql_type = Text)]
        result: String,
    }
    diesel::sql_query(format!("SELECT shard_index, result FROM task WHERE parent_id = {parent} ORDER BY id"))
        .load::<R>(&mut *f.store.conn().unwrap())
        .unwrap()
        .into_iter()
        .map(|r| (r.shard_index, r.result))
        .collect()
}

#[test]
fn children_reference_their_parent_on_postgres() {
    children_reference_their_parent(true);
}

#[test]
fn children_reference_their_parent_on_sqlite() {
    children_reference_their_parent(false);
}
