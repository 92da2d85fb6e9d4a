//! `shell`: admin-defined command lines that start, stop and look at an application that lives
//! outside Rota (a systemd unit, a Kubernetes deployment, a vendor's CLI).
//!
//! Why it exists: many applications already have a manager; Rota only needs to tell it what to do
//! from the node that owns the application. The commands come from the application's spec, which
//! only an admin can write; each runs as `/bin/sh -c <line>` in its own process group, with a
//! timeout after which the whole group is killed.
//!
//! Must never: splice task parameters into a command line. Parameters reach the command only as
//! environment variables (`ROTA_PARAMS` or the file `ROTA_PARAMS_FILE` names, `ROTA_PARAM_<KEY>`,
//! see `child::task_env`), which the line may quote: `echo "$ROTA_PARAM_NAME"`. Must never retry a failed command on its own.
//!
//! Status convention (LSB, as `systemctl status` answers): exit 0 → running, 3 → stopped, any
//! other code → failed, with the code and the output tail.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::child::{command_for, describe_exit, output_summary, run_to_completion, summary, Completed};
use super::secret::{self, check_marks, Secret};
use super::spec::{check_env, check_ms, join_spec_errors, problem, spec_object};
use super::{BoxFut, ChildSetup, Ctx, Driver, DriverError, Observed, SpecError};

/// Default time a command may take before its process group is killed.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Lines of output kept per stream (for error messages and `run` results).
const TAIL_LINES: usize = 50;
/// The exit code of a status command for "not running" (LSB `program is not running`).
const LSB_NOT_RUNNING: i32 = 3;
const OPERATIONS: [&str; 4] = ["start", "stop", "status", "run"];

/// The shell driver. Stateless: the outside system holds the state.
#[derive(Debug, Default)]
pub struct ShellDriver {
    /// How commands are started: the node's watchdog, told of every command (none in tests and
    /// tools), what they inherit, where large parameters go.
    setup: ChildSetup,
}

impl ShellDriver {
    /// The driver.
    pub fn new() -> Self {
        Self::default()
    }

    /// A driver starting its commands as `setup` says (its watchdog kills a job's processes
    /// once the node may no longer act).
    pub fn with_setup(setup: ChildSetup) -> Self {
        Self { setup }
    }
}

/// The parsed spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellSpec {
    start: Option<String>,
    stop: Option<String>,
    status: Option<String>,
    run: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    /// Marks of more secret fields: only reads use them.
    #[serde(default, rename = "secrets")]
    _secrets: serde::de::IgnoredAny,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl ShellSpec {
    fn parse(spec: &Value) -> Result<Self, DriverError> {
        validate_shell(spec).map_err(|errors| DriverError::Invalid(join_spec_errors(&errors)))?;
        serde_json::from_value(spec.clone()).map_err(|e| DriverError::Invalid(format!("spec: {e}")))
    }

    fn line(&self, op: &str) -> Option<&str> {
        match op {
            "start" => self.start.as_deref(),
            "stop" => self.stop.as_deref(),
            "status" => self.status.as_deref(),
            "run" => self.run.as_deref(),
            _ => None,
        }
    }
}

/// Run the `op` command of the application to its end (or its timeout), announced to the watchdog
/// while it runs: no command runs on past the node's right to act while another node runs it.
/// Only a `run` command (a job) carries the node's marker, so that what it leaves behind dies
/// with the node's right to act too; a `start` may leave a daemon behind on purpose, which is
/// the outside system's.
async fn execute(ctx: &Ctx, op: &str, setup: &ChildSetup) -> Result<Completed, DriverError> {
    let spec = ShellSpec::parse(&ctx.spec)?;
    let line = spec.line(op).ok_or_else(|| DriverError::Invalid(format!("this application has no `{op}` command")))?;
    // `$0` names the operation, so the shell's own errors say which command failed
    // ("rota-stop: 1: kubectl: not found"). The line is the script; nothing is appended to it.
    let args = ["-c".to_string(), line.to_string(), format!("rota-{op}")];
    let mut cmd = command_for("/bin/sh", &args, &spec.env, None, ctx, setup, op == "run")?;
    if op == "run" {
        cmd = cmd.with_result_file(setup);
    }
    tracing::debug!(app.id = ?ctx.app_id, task.id = ?ctx.task_id, op, "running shell command");
    // No sweep: a start command may leave a daemon behind on purpose.
    run_to_completion(cmd, Some(Duration::from_millis(spec.timeout_ms)), TAIL_LINES, false).await.map_err(|e| match e {
        DriverError::Timeout(why) => DriverError::Timeout(format!("`{op}` command {why}")),
        other => other,
    })
}

/// Exit 0 → `Ok`; anything else → `Failed` with the code and the output tail.
fn require_success(op: &str, done: &Completed) -> Result<(), DriverError> {
    if done.status.success() {
        Ok(())
    } else {
        Err(DriverError::Failed(format!(
            "`{op}` command {}; {}",
            describe_exit(done.status),
            output_summary(&done.stdout, &done.stderr)
        )))
    }
}

impl Driver for ShellDriver {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn validate(&self, spec: &Value) -> Result<(), Vec<SpecError>> {
        validate_shell(spec)
    }

    fn secrets(&self, spec: &Value) -> Vec<Secret> {
        secret::env_values(spec)
    }

    fn start<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(async move { require_success("start", &execute(ctx, "start", &self.setup).await?) })
    }

    fn stop<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(async move { require_success("stop", &execute(ctx, "stop", &self.setup).await?) })
    }

    fn status<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Observed, DriverError>> {
        Box::pin(async move {
            let done = execute(ctx, "status", &self.setup).await?;
            Ok(match done.status.code() {
                Some(0) => Observed::Running,
                Some(LSB_NOT_RUNNING) => Observed::Stopped,
                _ => Observed::Failed(format!(
                    "status command {}; {}; {}",
                    describe_exit(done.status),
                    summary("stdout", &done.stdout),
                    summary("stderr", &done.stderr)
                )),
            })
        })
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>> {
        Box::pin(async move {
            let done = execute(ctx, "run", &self.setup).await?;
            require_success("run", &done)?;
            done.output()
        })
    }

    fn shutdown(&self) -> BoxFut<'_, ()> {
        // Nothing supervised: a command in flight belongs to a call, whose cancellation kills
        // its group.
        Box::pin(async {})
    }
}

fn validate_shell(spec: &Value) -> Result<(), Vec<SpecError>> {
    let mut errors = Vec::new();
    let Some(obj) = spec_object(spec, &mut errors) else { return Err(errors) };
    if !OPERATIONS.iter().any(|op| obj.contains_key(*op)) {
        problem(&mut errors, "", "needs at least one of the commands start, stop, status, run");
    }
    for (key, value) in obj {
        match key.as_str() {
            "start" | "stop" | "status" | "run" => match value.as_str() {
                Some(line) if line.trim().is_empty() => problem(&mut errors, key, "must not be empty"),
                Some(line) if line.contains('\0') => problem(&mut errors, key, "must not contain a NUL byte"),
                Some(_) => {}
                None => problem(&mut errors, key, "must be a shell command line (a string)"),
            },
            "env" => check_env(&mut errors, value),
            "secrets" => check_marks(&mut errors, spec, value),
            "timeout_ms" => check_ms(&mut errors, key, value, 1, u64::MAX),
            _ => problem(&mut errors, key, "unknown field (known: start, stop, status, run, env, timeout_ms, secrets)"),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::testing::{alive, ctx, eventually};
    use serde_json::json;

    fn app(spec: Value) -> Ctx {
        ctx(Some(1), spec, json!({}))
    }

    #[tokio::test]
    async fn status_follows_the_lsb_convention() {
        let d = ShellDriver::new();
        assert_eq!(d.status(&app(json!({ "status": "exit 0" }))).await.unwrap(), Observed::Running);
        assert_eq!(d.status(&app(json!({ "status": "exit 3" }))).await.unwrap(), Observed::Stopped);
        let Observed::Failed(detail) = d.status(&app(json!({ "status": "echo degraded; exit 5" }))).await.unwrap()
        else {
            panic!("expected Failed")
        };
        assert!(detail.contains("exited with code 5") && detail.contains("degraded"), "{detail}");
    }

    #[tokio::test]
    async fn start_stop_exit_codes() {
        let d = ShellDriver::new();
        let spec = json!({ "start": "true", "stop": "echo 'unit not loaded' >&2; exit 5" });
        d.start(&app(spec.clone())).await.unwrap();
        let err = d.stop(&app(spec)).await.unwrap_err();
        let DriverError::Failed(msg) = err else { panic!("expected Failed, got {err:?}") };
        assert!(msg.contains("code 5") && msg.contains("unit not loaded"), "{msg}");
    }

    #[tokio::test]
    async fn parameters_are_never_executed() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let m = marker.display();
        for hostile in [
            format!("\"; touch {m}; echo \""),
            format!("'; touch {m}; echo '"),
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!("x; touch {m}"),
        ] {
            let d = ShellDriver::new();
            let c = ctx(Some(1), json!({ "run": "echo \"$ROTA_PARAM_NAME\"" }), json!({ "name": hostile }));
            let out = d.run(&c).await.unwrap();
            assert_eq!(out["stdout_tail"], json!([hostile]), "printed literally");
            assert!(!marker.exists(), "parameter {hostile:?} was executed");
        }
    }

    #[tokio::test]
    async fn missing_command_is_invalid() {
        let d = ShellDriver::new();
        let err = d.stop(&app(json!({ "start": "true" }))).await.unwrap_err();
        assert_eq!(err, DriverError::Invalid("this application has no `stop` command".into()));
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let spec = json!({ "status": format!("sleep 30 & echo $! > {}; wait", pidfile.display()), "timeout_ms": 300 });
        let d = ShellDriver::new();
        let err = d.status(&app(spec)).await.unwrap_err();
        assert!(matches!(&err, DriverError::Timeout(m) if m.contains("`status` command")), "{err:?}");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(eventually(Duration::from_secs(2), || async { !alive(pid) }).await, "background sleep survived");
    }

    /// A `run` command may answer through `$ROTA_RESULT_FILE` (only `run`: the other
    /// operations' answers are their exit codes).
    #[tokio::test]
    async fn run_returns_its_result_file() {
        let spec = json!({ "run": "echo '{\"sum\": 3}' > \"$ROTA_RESULT_FILE\"", "status": "test -z \"${ROTA_RESULT_FILE-}\"" });
        assert_eq!(ShellDriver::new().run(&app(spec.clone())).await.unwrap(), json!({ "sum": 3 }));
        assert_eq!(ShellDriver::new().status(&app(spec)).await.unwrap(), Observed::Running);
    }

    #[tokio::test]
    async fn run_returns_output() {
        let d = ShellDriver::new();
        let spec = json!({ "run": "echo \"$GREETING $ROTA_APP_NAME\"", "env": { "GREETING": "hi" } });
        let out = d.run(&app(spec)).await.unwrap();
        assert_eq!(out, json!({ "exit_code": 0, "stdout_tail": ["hi demo"], "stderr_tail": [] }));
    }

    #[test]
    fn validate_names_every_field() {
        let d = ShellDriver::new();
        assert!(d.validate(&json!({ "status": "systemctl is-active foo" })).is_ok());
        let errors = d.validate(&json!({ "env": { "A": 1 }, "timeout_ms": "soon", "restart": "x" })).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in ["", "env.A", "timeout_ms", "restart"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let errors = d.validate(&json!({ "start": 5, "stop": " " })).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["start", "stop"]);
    }
}
