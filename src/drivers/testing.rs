//! Helpers the drivers' unit tests share: a call context, polling with a deadline, and whether
//! a process is alive.
//!
//! Why apart: the tests of `process`, `shell`, `http` and the child toolkit all need them, and
//! none of those modules should reach into another's tests for them.
//!
//! Must never: be compiled outside tests, or wait for a condition with a fixed sleep.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Ctx;

/// A call context for app `app` with `spec` and `params`.
pub(crate) fn ctx(app: Option<i64>, spec: Value, params: Value) -> Ctx {
    Ctx {
        app_id: app,
        app_name: "demo".into(),
        task_id: Some(77),
        spec,
        params,
        node_id: "node-a".into(),
        epoch: 9,
        act_by: crate::drivers::ActBy::unbounded(),
        runtime: crate::drivers::Runtime::in_memory(Value::Null),
        context: None,
    }
}

/// Poll `check` until it is true or `limit` passes.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Alive and not a zombie (an orphan's zombie may linger under an init that does not reap).
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}
