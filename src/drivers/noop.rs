//! `noop`: does nothing, successfully — for tests and benchmarks. It still tracks the state it
//! was asked for, so status checks agree with start and stop.
//!
//! Spec: `{}`, or `{"delay_ms": N}` to make every call take N ms (to observe ordering and
//! overlap), or `{"fail": "start" | "stop" | "run"}` to make that call fail.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::{BoxFut, Ctx, Driver, DriverError, Observed, SpecError};

/// The no-op driver.
#[derive(Debug, Default)]
pub struct NoopDriver;

static STATES: Mutex<Option<HashMap<i64, bool>>> = Mutex::new(None);

fn set_running(app: Option<i64>, running: bool) {
    if let (Some(app), Ok(mut guard)) = (app, STATES.lock()) {
        guard.get_or_insert_with(HashMap::new).insert(app, running);
    }
}

fn is_running(app: Option<i64>) -> Option<bool> {
    let guard = STATES.lock().ok()?;
    guard.as_ref()?.get(&app?).copied()
}

async fn behave(ctx: &Ctx, op: &str) -> Result<(), DriverError> {
    if let Some(ms) = ctx.spec.get("delay_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if ctx.spec.get("fail").and_then(Value::as_str) == Some(op) {
        return Err(DriverError::Failed(format!("noop asked to fail {op}")));
    }
    Ok(())
}

impl Driver for NoopDriver {
    fn name(&self) -> &'static str {
        "noop"
    }

    /// What it was asked lives in this node's memory, as a `process` child lives on the node:
    /// a new owner has not started it ("unknown") and starts it.
    fn supervises_here(&self) -> bool {
        true
    }

    fn validate(&self, spec: &Value) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        let Some(obj) = spec.as_object() else {
            return Err(vec![SpecError { field: "".into(), message: "the spec must be a JSON object".into() }]);
        };
        for (k, v) in obj {
            match k.as_str() {
                "delay_ms" if v.is_u64() => {}
                "secrets" => super::secret::check_marks(&mut errors, spec, v),
                "fail" if matches!(v.as_str(), Some("start" | "stop" | "run")) => {}
                "delay_ms" => {
                    errors.push(SpecError { field: k.clone(), message: "must be a whole number of ms".into() })
                }
                "fail" => errors.push(SpecError { field: k.clone(), message: "must be start, stop or run".into() }),
                _ => errors.push(SpecError {
                    field: k.clone(),
                    message: "unknown field (known: delay_ms, fail, secrets)".into(),
                }),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn start<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(async move {
            behave(ctx, "start").await?;
            set_running(ctx.app_id, true);
            Ok(())
        })
    }

    fn stop<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(async move {
            behave(ctx, "stop").await?;
            set_running(ctx.app_id, false);
            Ok(())
        })
    }

    fn status<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Observed, DriverError>> {
        Box::pin(async move {
            Ok(match is_running(ctx.app_id) {
                Some(true) => Observed::Running,
                Some(false) => Observed::Stopped,
                None => Observed::Unknown("this node has not started or stopped it".into()),
            })
        })
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>> {
        Box::pin(async move {
            behave(ctx, "run").await?;
            // Echoed so tests (and people trying routing out) can see what reached the node:
            // `echo` as given, the reduce step's `results`, a shard's `shard_index`.
            let mut out = json!({ "node": ctx.node_id });
            for key in ["echo", "results", "shard_index", "shard_total"] {
                if let Some(v) = ctx.params.get(key) {
                    out[key] = v.clone();
                }
            }
            Ok(out)
        })
    }

    fn shutdown(&self) -> BoxFut<'_, ()> {
        Box::pin(async {})
    }
}
