//! `process`: a supervised child process on the node that owns the application.
//!
//! Why it exists: the simplest application is a program that should be running somewhere. The
//! dispatcher decides where (the owner) and when; this driver starts the program, watches it and
//! stops it. The child gets its own process group, so `stop` reaches everything it forked, and is
//! tied to the node with `PR_SET_PDEATHSIG = SIGKILL` and announced to the node's watchdog, so
//! neither a SIGKILLed node nor a paused one leaves a copy running beside the one the next owner
//! starts (docs/design.md#i1). The last lines of stdout/stderr are kept so that a crash can be
//! reported with its cause.
//!
//! Must never: run the command through a shell or splice task parameters into it (parameters reach
//! the child only as environment variables); restart a child on its own (the dispatcher owns the
//! restart policy); block a tokio worker; leave part of a process group running once its leader has
//! exited.
//!
//! Supervision is in memory and per node: after a hand-off the new owner has no record of the
//! application and says so (`Unknown`), and the dispatcher restarts it there per its policy.
//!
//! How a child is spawned, signalled and read (what the `shell` driver shares with this one) is in
//! `drivers::child`; this module keeps the driver: its spec, its table of supervised children and
//! what their exits mean.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{watch, Mutex};

use super::child::{
    capture, child_pid, command_for, describe_exit, output_summary, run_to_completion, signal_group, spawn,
    ChildCommand, Tail, KILL_WAIT,
};
use super::secret::{self, check_marks, Secret};
use super::spec::{check_env, check_ms, join_spec_errors, problem, spec_object};
use super::{BoxFut, ChildSetup, Ctx, Driver, DriverError, Observed, SpecError};

/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE_MS: u64 = 5_000;
/// Default number of lines kept of stdout and of stderr.
pub const DEFAULT_TAIL_LINES: usize = 50;
/// Longest grace accepted (one hour): a longer one would hold a stop, and the node's exit, hostage.
const MAX_STOP_GRACE_MS: u64 = 3_600_000;
/// Most lines kept per stream; the tails live in memory for every supervised child.
const MAX_TAIL_LINES: u64 = 10_000;

/// The process driver: one supervised child per application on this node.
#[derive(Debug, Default)]
pub struct ProcessDriver {
    /// Supervised children by application id. Held across a spawn, so two starts of one
    /// application cannot both spawn; never held across a wait.
    children: Mutex<HashMap<i64, Arc<Supervised>>>,
    /// How children are started: the node's watchdog, told of every child (none in tests and
    /// tools), what they inherit, where large parameters go.
    setup: ChildSetup,
}

impl ProcessDriver {
    /// A driver supervising nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A driver starting its children as `setup` says (its watchdog kills them once the node
    /// may no longer act).
    pub fn with_setup(setup: ChildSetup) -> Self {
        Self { setup, ..Self::default() }
    }
}

/// One supervised child.
#[derive(Debug)]
struct Supervised {
    app: i64,
    /// The leader's pid, which is also the process group id.
    pid: libc::pid_t,
    grace: Duration,
    /// Set by `stop`/`shutdown` before signalling, so the exit that follows is read as asked for.
    stop_requested: Arc<AtomicBool>,
    /// `None` while the leader lives; how it ended afterwards.
    exit: watch::Receiver<Option<Exit>>,
    stdout: Tail,
    stderr: Tail,
}

#[derive(Debug, Clone)]
struct Exit {
    status: Result<ExitStatus, String>,
    /// A stop had been requested when the leader exited.
    during_stop: bool,
}

impl Supervised {
    fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// What a status check reports.
    fn observe(&self) -> Observed {
        let Some(exit) = self.exited() else { return Observed::Running };
        let stopped = self.stop_requested.load(Ordering::SeqCst);
        // A child that crashed before the stop is acknowledged by it: it is down, as asked.
        // One that exited during the stop is stopped if it ended the way a stop ends it.
        if stopped && (!exit.during_stop || exit.status.as_ref().is_ok_and(ends_like_a_stop)) {
            return Observed::Stopped;
        }
        let how = match &exit.status {
            Ok(status) if status.code() == Some(0) => "exited with code 0 without being asked to stop".to_string(),
            Ok(status) => describe_exit(*status),
            Err(e) => format!("could not be waited for: {e}"),
        };
        Observed::Failed(format!("{how}; {}", output_summary(&self.stdout.snapshot(), &self.stderr.snapshot())))
    }
}

/// SIGTERM (and the shell's 128+15), SIGKILL after the grace, or a clean exit.
fn ends_like_a_stop(status: &ExitStatus) -> bool {
    matches!(status.code(), Some(0) | Some(143)) || matches!(status.signal(), Some(libc::SIGTERM | libc::SIGKILL))
}

/// The parsed spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessSpec {
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    #[serde(default = "default_grace")]
    stop_grace_ms: u64,
    #[serde(default = "default_tail")]
    tail_lines: usize,
    timeout_ms: Option<u64>,
    /// Marks of more secret fields: only reads use them.
    #[serde(default, rename = "secrets")]
    _secrets: serde::de::IgnoredAny,
}

fn default_grace() -> u64 {
    DEFAULT_STOP_GRACE_MS
}

fn default_tail() -> usize {
    DEFAULT_TAIL_LINES
}

impl ProcessSpec {
    /// Validate, then parse: the same rules as at creation, so a spec edited in the database
    /// behind the API's back still fails with field names.
    fn parse(spec: &Value) -> Result<Self, DriverError> {
        validate_process(spec).map_err(|errors| DriverError::Invalid(join_spec_errors(&errors)))?;
        serde_json::from_value(spec.clone()).map_err(|e| DriverError::Invalid(format!("spec: {e}")))
    }

    fn command(&self, ctx: &Ctx, setup: &ChildSetup) -> Result<ChildCommand, DriverError> {
        let (program, args) =
            self.command.split_first().ok_or_else(|| DriverError::Invalid("spec: `command` is empty".into()))?;
        command_for(program, args, &self.env, self.cwd.as_deref(), ctx, setup, true)
    }
}

impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    fn supervises_here(&self) -> bool {
        true
    }

    fn validate(&self, spec: &Value) -> Result<(), Vec<SpecError>> {
        validate_process(spec)
    }

    fn secrets(&self, spec: &Value) -> Vec<Secret> {
        secret::env_values(spec)
    }

    fn start<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let app = app_id(ctx)?;
            let spec = ProcessSpec::parse(&ctx.spec)?;
            let mut children = self.children.lock().await;
            if let Some(existing) = children.get(&app) {
                if existing.exited().is_none() {
                    tracing::debug!(app.id = app, pid = existing.pid, "process already running; start is a no-op");
                    return Ok(());
                }
            }
            let cmd = spec.command(ctx, &self.setup)?;
            let (mut child, params) = spawn(cmd).await?;
            let pid = child_pid(&child)?;
            let tail_lines = spec.tail_lines;
            let (stdout, _) = capture(child.stdout.take(), tail_lines);
            let (stderr, _) = capture(child.stderr.take(), tail_lines);
            let stop_requested = Arc::new(AtomicBool::new(false));
            let (tx, rx) = watch::channel(None);
            let flag = Arc::clone(&stop_requested);
            let watch = self.setup.watchdog.clone();
            tokio::spawn(async move {
                let status = child.wait().await.map_err(|e| e.to_string());
                // The parameters live as long as the leader: it may read them at any time.
                drop(params);
                // The group lives as long as its leader: sweep what it left behind now. The kernel
                // does not hand out a pid still used as a group id, so while members remain this
                // reaches only them; once the group is empty the signal finds nothing (ESRCH).
                // The watchdog kills what it saw leave the group.
                signal_group(pid, libc::SIGKILL);
                if let Some(w) = &watch {
                    w.release(pid, true);
                }
                let during_stop = flag.load(Ordering::SeqCst);
                match &status {
                    Ok(s) => {
                        tracing::info!(app.id = app, pid, during_stop, exit = %describe_exit(*s), "process exited")
                    }
                    Err(e) => tracing::warn!(app.id = app, pid, error = %e, "cannot wait for process"),
                }
                // No receiver left means the record was replaced; nobody needs this exit.
                let _ = tx.send(Some(Exit { status, during_stop }));
            });
            tracing::info!(app.id = app, task.id = ?ctx.task_id, pid, command = ?spec.command, "process started");
            let grace = Duration::from_millis(spec.stop_grace_ms);
            children.insert(app, Arc::new(Supervised { app, pid, grace, stop_requested, exit: rx, stdout, stderr }));
            Ok(())
        })
    }

    fn stop<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let app = app_id(ctx)?;
            let Some(child) = self.children.lock().await.get(&app).cloned() else {
                tracing::debug!(app.id = app, "process not supervised here; stop is a no-op");
                return Ok(());
            };
            terminate(&child).await
        })
    }

    fn status<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Observed, DriverError>> {
        Box::pin(async move {
            let app = app_id(ctx)?;
            Ok(match self.children.lock().await.get(&app) {
                Some(child) => child.observe(),
                None => Observed::Unknown("not started on this node".into()),
            })
        })
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>> {
        Box::pin(async move {
            let spec = ProcessSpec::parse(&ctx.spec)?;
            let cmd = spec.command(ctx, &self.setup)?.with_result_file(&self.setup);
            let timeout = spec.timeout_ms.map(Duration::from_millis);
            let done = run_to_completion(cmd, timeout, spec.tail_lines, true).await?;
            if done.status.success() {
                done.output()
            } else {
                Err(DriverError::Failed(format!(
                    "{}; {}",
                    describe_exit(done.status),
                    output_summary(&done.stdout, &done.stderr)
                )))
            }
        })
    }

    fn shutdown(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let children: Vec<(i64, Arc<Supervised>)> =
                self.children.lock().await.iter().map(|(app, c)| (*app, Arc::clone(c))).collect();
            // In parallel: the node's exit should take one grace period, not one per child.
            let mut set = tokio::task::JoinSet::new();
            for (app, child) in children {
                set.spawn(async move { (app, terminate(&child).await) });
            }
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok((app, Err(e))) => tracing::error!(app.id = app, error = %e, "process survived shutdown"),
                    Err(e) => tracing::error!(error = %e, "process shutdown task failed"),
                    Ok((_, Ok(()))) => {}
                }
            }
        })
    }
}

/// SIGTERM to the group, SIGKILL after the grace; done when the leader is gone (its exit sweeps
/// the rest of the group).
async fn terminate(child: &Supervised) -> Result<(), DriverError> {
    child.stop_requested.store(true, Ordering::SeqCst);
    if child.exited().is_some() {
        return Ok(());
    }
    tracing::info!(
        app.id = child.app,
        pid = child.pid,
        grace_ms = child.grace.as_millis() as u64,
        "stopping process group"
    );
    signal_group(child.pid, libc::SIGTERM);
    if wait_exit(child, child.grace).await {
        return Ok(());
    }
    tracing::warn!(app.id = child.app, pid = child.pid, "process ignored SIGTERM for the whole grace; sending SIGKILL");
    signal_group(child.pid, libc::SIGKILL);
    if wait_exit(child, KILL_WAIT).await {
        return Ok(());
    }
    Err(DriverError::Failed(format!(
        "process {} still alive {} s after SIGKILL (uninterruptible sleep?)",
        child.pid,
        KILL_WAIT.as_secs()
    )))
}

/// Whether the leader exited within `limit`.
async fn wait_exit(child: &Supervised, limit: Duration) -> bool {
    let mut exit = child.exit.clone();
    tokio::time::timeout(limit, exit.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok())
}

fn app_id(ctx: &Ctx) -> Result<i64, DriverError> {
    ctx.app_id.ok_or_else(|| {
        DriverError::Invalid("this call has no application id; the driver supervises applications".into())
    })
}

fn validate_process(spec: &Value) -> Result<(), Vec<SpecError>> {
    let mut errors = Vec::new();
    let Some(obj) = spec_object(spec, &mut errors) else { return Err(errors) };
    match obj.get("command") {
        None => problem(
            &mut errors,
            "command",
            "required: the program and its arguments, e.g. [\"/usr/bin/app\", \"--flag\"]",
        ),
        Some(Value::Array(items)) if items.is_empty() => {
            problem(&mut errors, "command", "must name at least the program")
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("command[{i}]");
                match item.as_str() {
                    None => problem(&mut errors, field, "must be a string"),
                    Some("") if i == 0 => problem(&mut errors, field, "the program must not be empty"),
                    Some(s) if s.contains('\0') => problem(&mut errors, field, "must not contain a NUL byte"),
                    Some(_) => {}
                }
            }
        }
        Some(_) => problem(&mut errors, "command", "must be an array of strings (no shell is involved)"),
    }
    for (key, value) in obj {
        match key.as_str() {
            "command" => {}
            "env" => check_env(&mut errors, value),
            "secrets" => check_marks(&mut errors, spec, value),
            "cwd" => match value.as_str() {
                Some(dir) if dir.starts_with('/') && !dir.contains('\0') => {}
                _ => problem(&mut errors, "cwd", "must be an absolute directory path"),
            },
            "stop_grace_ms" => check_ms(&mut errors, key, value, 0, MAX_STOP_GRACE_MS),
            "timeout_ms" => check_ms(&mut errors, key, value, 1, u64::MAX),
            "tail_lines" => {
                if value.as_u64().is_none_or(|n| n > MAX_TAIL_LINES) {
                    problem(&mut errors, key, format!("must be a whole number from 0 to {MAX_TAIL_LINES}"));
                }
            }
            _ => problem(
                &mut errors,
                key,
                "unknown field (known: command, env, cwd, stop_grace_ms, tail_lines, timeout_ms, secrets)",
            ),
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
    use std::process::Stdio;
    use tokio::time::Instant;

    async fn pid_of(driver: &ProcessDriver, app: i64) -> i32 {
        driver.children.lock().await.get(&app).map(|c| c.pid).unwrap()
    }

    async fn read_pid(path: &std::path::Path) -> i32 {
        assert!(
            eventually(Duration::from_secs(5), || async {
                std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n'))
            })
            .await
        );
        std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
    }

    fn sh(script: &str) -> Value {
        json!({ "command": ["/bin/sh", "-c", script], "stop_grace_ms": 2000 })
    }

    #[tokio::test]
    async fn start_status_stop() {
        let d = ProcessDriver::new();
        let c = ctx(Some(1), json!({ "command": ["sleep", "30"] }), json!({}));
        d.start(&c).await.unwrap();
        assert_eq!(d.status(&c).await.unwrap(), Observed::Running);
        let pid = pid_of(&d, 1).await;
        assert!(alive(pid));
        d.stop(&c).await.unwrap();
        assert!(!alive(pid));
        assert_eq!(d.status(&c).await.unwrap(), Observed::Stopped);
    }

    #[tokio::test]
    async fn start_and_stop_are_idempotent() {
        let d = ProcessDriver::new();
        let c = ctx(Some(2), json!({ "command": ["sleep", "30"] }), json!({}));
        assert_eq!(d.status(&c).await.unwrap(), Observed::Unknown("not started on this node".into()));
        d.stop(&c).await.unwrap(); // never started: fine
        d.start(&c).await.unwrap();
        let pid = pid_of(&d, 2).await;
        d.start(&c).await.unwrap();
        assert_eq!(pid_of(&d, 2).await, pid, "a second start must not spawn a second child");
        d.stop(&c).await.unwrap();
        d.stop(&c).await.unwrap();
        assert_eq!(d.status(&c).await.unwrap(), Observed::Stopped);
        // Started again after a stop: a new child.
        d.start(&c).await.unwrap();
        assert_eq!(d.status(&c).await.unwrap(), Observed::Running);
        assert_ne!(pid_of(&d, 2).await, pid);
        d.stop(&c).await.unwrap();
    }

    #[tokio::test]
    async fn sigterm_ignoring_child_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let script = format!("trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done", ready.display());
        let d = ProcessDriver::new();
        let c = ctx(Some(3), json!({ "command": ["/bin/sh", "-c", script], "stop_grace_ms": 300 }), json!({}));
        d.start(&c).await.unwrap();
        let pid = read_pid(&ready).await;
        let t = Instant::now();
        d.stop(&c).await.unwrap();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300), "stop returned before the grace: {took:?}");
        assert!(took < Duration::from_secs(3), "stop took too long: {took:?}");
        assert!(!alive(pid));
        assert_eq!(d.status(&c).await.unwrap(), Observed::Stopped);
    }

    #[tokio::test]
    async fn crashed_child_is_failed_with_code_and_stderr() {
        let d = ProcessDriver::new();
        let c = ctx(Some(4), sh("echo first >&2; echo 'disk on fire' >&2; exit 7"), json!({}));
        d.start(&c).await.unwrap();
        let failed =
            eventually(Duration::from_secs(5), || async { matches!(d.status(&c).await, Ok(Observed::Failed(_))) })
                .await;
        assert!(failed);
        let Observed::Failed(detail) = d.status(&c).await.unwrap() else { unreachable!() };
        assert!(detail.contains("exited with code 7"), "{detail}");
        assert!(detail.contains("first | disk on fire"), "{detail}");
        // A stop acknowledges the crash.
        d.stop(&c).await.unwrap();
        assert_eq!(d.status(&c).await.unwrap(), Observed::Stopped);
    }

    #[tokio::test]
    async fn clean_exit_without_stop_is_a_failure() {
        let d = ProcessDriver::new();
        let c = ctx(Some(5), json!({ "command": ["true"] }), json!({}));
        d.start(&c).await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || async { !matches!(d.status(&c).await, Ok(Observed::Running)) }).await
        );
        let Observed::Failed(detail) = d.status(&c).await.unwrap() else { panic!("expected Failed") };
        assert!(detail.contains("code 0 without being asked"), "{detail}");
    }

    #[tokio::test]
    async fn the_whole_group_goes_including_a_term_ignoring_grandchild() {
        let dir = tempfile::tempdir().unwrap();
        let gc = dir.path().join("gc.pid");
        // The grandchild ignores SIGTERM; the leader exits on it; the group sweep kills the rest.
        let script = format!("sh -c \"trap '' TERM; echo \\$\\$ > {}; exec sleep 30\" & wait", gc.display());
        let d = ProcessDriver::new();
        let c = ctx(Some(6), sh(&script), json!({}));
        d.start(&c).await.unwrap();
        let grandchild = read_pid(&gc).await;
        assert!(alive(grandchild));
        d.stop(&c).await.unwrap();
        assert!(eventually(Duration::from_secs(2), || async { !alive(grandchild) }).await, "grandchild survived");
    }

    /// Not a test on its own: the stand-in node for `children_die_with_a_killed_node`.
    #[tokio::test]
    #[ignore = "run by children_die_with_a_killed_node"]
    async fn stand_in_node() {
        let Ok(pidfile) = std::env::var("ROTA_TEST_PIDFILE") else { return };
        let d = ProcessDriver::new();
        let script = format!("echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; exec sleep 30");
        d.start(&ctx(Some(1), sh(&script), json!({}))).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await; // until SIGKILLed
    }

    #[tokio::test]
    async fn children_die_with_a_killed_node() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let mut node = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "drivers::process::tests::stand_in_node", "--ignored", "--nocapture"])
            .env("ROTA_TEST_PIDFILE", &pidfile)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let child = read_pid(&pidfile).await;
        assert!(alive(child));
        node.kill().unwrap(); // SIGKILL: no shutdown hook runs
        node.wait().unwrap();
        assert!(eventually(Duration::from_secs(5), || async { !alive(child) }).await, "child outlived its node");
    }

    #[tokio::test]
    async fn shutdown_stops_everything() {
        let d = ProcessDriver::new();
        let a = ctx(Some(7), json!({ "command": ["sleep", "30"] }), json!({}));
        let b = ctx(Some(8), json!({ "command": ["sleep", "30"] }), json!({}));
        d.start(&a).await.unwrap();
        d.start(&b).await.unwrap();
        let (pa, pb) = (pid_of(&d, 7).await, pid_of(&d, 8).await);
        d.shutdown().await;
        assert!(!alive(pa) && !alive(pb));
        assert_eq!(d.status(&a).await.unwrap(), Observed::Stopped);
    }

    #[tokio::test]
    async fn run_returns_output_and_exit_code() {
        let d = ProcessDriver::new();
        let params = json!({ "foo-bar": 5, "name": "x y", "flag": true, "obj": { "k": 1 } });
        let script = "echo \"$ROTA_APP_ID $ROTA_APP_NAME $ROTA_NODE_ID $ROTA_EPOCH $ROTA_TASK_ID\"; \
                      echo \"$ROTA_PARAM_FOO_BAR|$ROTA_PARAM_NAME|$ROTA_PARAM_FLAG|${ROTA_PARAM_OBJ-unset}\"; \
                      echo \"$ROTA_PARAMS\"; echo \"$EXTRA\"";
        let spec = json!({ "command": ["/bin/sh", "-c", script], "env": { "EXTRA": "from-spec" } });
        let out = d.run(&ctx(None, spec, params.clone())).await.unwrap();
        assert_eq!(out["exit_code"], 0);
        let lines: Vec<&str> = out["stdout_tail"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        assert_eq!(lines[0], " demo node-a 9 77");
        assert_eq!(lines[1], "5|x y|true|unset");
        assert_eq!(serde_json::from_str::<Value>(lines[2]).unwrap(), params);
        assert_eq!(lines[3], "from-spec");
    }

    #[tokio::test]
    async fn run_keeps_only_the_tail() {
        let d = ProcessDriver::new();
        let spec = json!({ "command": ["/bin/sh", "-c", "for i in $(seq 1 100); do echo $i; done"], "tail_lines": 3 });
        let out = d.run(&ctx(None, spec, json!({}))).await.unwrap();
        assert_eq!(out["stdout_tail"], json!(["98", "99", "100"]));
    }

    #[tokio::test]
    async fn run_nonzero_exit_fails_with_stderr() {
        let d = ProcessDriver::new();
        let err = d.run(&ctx(None, sh("echo nope >&2; exit 3"), json!({}))).await.unwrap_err();
        let DriverError::Failed(msg) = err else { panic!("expected Failed, got {err:?}") };
        assert!(msg.contains("exited with code 3") && msg.contains("stderr tail: nope"), "{msg}");
    }

    #[tokio::test]
    async fn run_timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; sleep 30", pidfile.display());
        let d = ProcessDriver::new();
        let spec = json!({ "command": ["/bin/sh", "-c", script], "timeout_ms": 300 });
        let t = Instant::now();
        let err = d.run(&ctx(None, spec, json!({}))).await.unwrap_err();
        assert!(matches!(err, DriverError::Timeout(_)), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(3));
        let pid = read_pid(&pidfile).await;
        assert!(eventually(Duration::from_secs(2), || async { !alive(pid) }).await);
    }

    #[tokio::test]
    async fn a_node_past_its_deadline_begins_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let spec = json!({ "command": ["/usr/bin/touch", marker.display().to_string()] });
        let fenced = Ctx { act_by: crate::drivers::ActBy::new(|_, _| None), ..ctx(Some(3), spec.clone(), json!({})) };
        let d = ProcessDriver::new();
        let err = d.run(&fenced).await.unwrap_err();
        assert!(matches!(&err, DriverError::Fenced(m) if m.contains("deadline")), "{err:?}");
        let err = d.start(&fenced).await.unwrap_err();
        assert!(matches!(err, DriverError::Fenced(_)), "{err:?}");
        assert!(!marker.exists(), "a fenced node began the command");
        // The same command with time left runs: the marker is the command's doing.
        d.run(&ctx(Some(3), spec, json!({}))).await.unwrap();
        assert!(marker.exists());
    }

    #[tokio::test]
    async fn spawn_error_is_failed() {
        let d = ProcessDriver::new();
        let err = d.run(&ctx(None, json!({ "command": ["/nonexistent/bin"] }), json!({}))).await.unwrap_err();
        assert!(matches!(&err, DriverError::Failed(m) if m.contains("/nonexistent/bin")), "{err:?}");
    }

    /// 200 KB of parameters is more than Linux takes in one environment string (128 KiB): the
    /// command reads them from the file `ROTA_PARAMS_FILE` names, which only the node's user can
    /// read and which is gone once the command has ended.
    #[tokio::test]
    async fn large_parameters_reach_a_job_through_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let params_dir = dir.path().join("params");
        std::fs::create_dir(&params_dir).unwrap();
        let copy = dir.path().join("copy.json");
        let d = ProcessDriver::with_setup(ChildSetup { params_dir: Some(params_dir.clone()), ..Default::default() });
        let params = json!({ "blob": "p".repeat(200_000), "name": "n" });
        let script = format!(
            "cp \"$ROTA_PARAMS_FILE\" {}; echo \"$ROTA_PARAMS_FILE\"; echo \"${{ROTA_PARAMS-unset}}|$ROTA_PARAM_NAME|${{ROTA_PARAM_BLOB-unset}}\"",
            copy.display()
        );
        let out = d.run(&ctx(None, sh(&script), params.clone())).await.unwrap();
        let lines = out["stdout_tail"].as_array().unwrap();
        let file = std::path::PathBuf::from(lines[0].as_str().unwrap());
        assert_eq!(file.parent(), Some(params_dir.as_path()), "written in the node's directory");
        assert_eq!(lines[1], "unset|n|unset");
        let copied: Value = serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
        assert_eq!(copied, params);
        assert!(!file.exists(), "the file outlived its command");
        assert_eq!(std::fs::read_dir(&params_dir).unwrap().count(), 0);

        // An application keeps its file while it runs.
        let script = format!("cp \"$ROTA_PARAMS_FILE\" {}; exec sleep 30", copy.display());
        std::fs::remove_file(&copy).unwrap();
        let c = ctx(Some(9), sh(&script), params.clone());
        d.start(&c).await.unwrap();
        assert!(eventually(Duration::from_secs(5), || async { copy.exists() }).await);
        let files: Vec<_> = std::fs::read_dir(&params_dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
        d.stop(&c).await.unwrap();
        assert!(eventually(Duration::from_secs(5), || async { !files[0].exists() }).await, "kept after the exit");
    }

    /// A job's result file: what it writes there (JSON) is its result, read after it exited from
    /// a private file in the node's directory, which is gone afterwards; left empty, the result
    /// is the exit code and output tails; not JSON or too large, the attempt fails saying why.
    #[tokio::test]
    async fn a_job_returns_what_it_writes_to_its_result_file() {
        let dir = tempfile::tempdir().unwrap();
        let params_dir = dir.path().join("params");
        std::fs::create_dir(&params_dir).unwrap();
        let d = ProcessDriver::with_setup(ChildSetup { params_dir: Some(params_dir.clone()), ..Default::default() });
        let mode = dir.path().join("mode");
        let script = format!(
            "stat -c %a \"$ROTA_RESULT_FILE\" > {}; echo text; echo '{{\"sum\": 21, \"parts\": [6, 9, 6]}}' > \"$ROTA_RESULT_FILE\"",
            mode.display()
        );
        let out = d.run(&ctx(None, sh(&script), json!({}))).await.unwrap();
        assert_eq!(out, json!({ "sum": 21, "parts": [6, 9, 6] }));
        assert_eq!(std::fs::read_to_string(&mode).unwrap().trim(), "600");
        assert_eq!(std::fs::read_dir(&params_dir).unwrap().count(), 0, "removed after the command");

        let out = d.run(&ctx(None, sh("echo plain"), json!({}))).await.unwrap();
        assert_eq!(out["stdout_tail"], json!(["plain"]), "no result written: {out}");
        let out = d.run(&ctx(None, sh("echo 42 > \"$ROTA_RESULT_FILE\""), json!({}))).await.unwrap();
        assert_eq!(out, json!(42), "any JSON value");

        for (script, needle) in [
            ("echo '{oops' > \"$ROTA_RESULT_FILE\"", "is not valid JSON"),
            ("head -c 1048577 /dev/zero | tr '\\0' ' ' > \"$ROTA_RESULT_FILE\"", "larger than 1048576 bytes"),
            ("rm \"$ROTA_RESULT_FILE\"; mkfifo \"$ROTA_RESULT_FILE\"", "not a file"),
        ] {
            let err = d.run(&ctx(None, sh(script), json!({}))).await.unwrap_err();
            let DriverError::Failed(msg) = &err else { panic!("{script}: expected Failed, got {err:?}") };
            assert!(
                msg.contains("the command succeeded but its result file (ROTA_RESULT_FILE)") && msg.contains(needle),
                "{msg}"
            );
        }
        assert_eq!(std::fs::read_dir(&params_dir).unwrap().count(), 0);
        // A failed command's result file is not read: its error is the result.
        let err = d.run(&ctx(None, sh("echo '{}' > \"$ROTA_RESULT_FILE\"; exit 4"), json!({}))).await.unwrap_err();
        assert!(err.to_string().contains("exited with code 4"), "{err}");
    }

    /// Small parameters travel as before: `ROTA_PARAMS`, no file.
    #[tokio::test]
    async fn small_parameters_stay_in_the_environment() {
        let d = ProcessDriver::new();
        let script = "echo \"${ROTA_PARAMS_FILE-none}|$ROTA_PARAMS\"";
        let out = d.run(&ctx(None, sh(script), json!({ "a": 1 }))).await.unwrap();
        assert_eq!(out["stdout_tail"], json!([r#"none|{"a":1}"#]));
    }

    /// A command line or environment too long for the system fails the same way every time: the
    /// failure is permanent, not retried.
    #[tokio::test]
    async fn an_environment_too_long_for_the_system_is_invalid() {
        let d = ProcessDriver::new();
        let spec = json!({ "command": ["true"], "env": { "HUGE": "h".repeat(200_000) } });
        let err = d.run(&ctx(None, spec, json!({}))).await.unwrap_err();
        assert!(err.is_permanent(), "{err:?}");
        assert!(err.to_string().contains("E2BIG") && !err.to_string().contains("hhhh"), "{err}");
    }

    #[tokio::test]
    async fn start_without_app_id_is_invalid() {
        let d = ProcessDriver::new();
        let err = d.start(&ctx(None, json!({ "command": ["true"] }), json!({}))).await.unwrap_err();
        assert!(err.is_permanent());
    }

    #[test]
    fn validate_names_every_field() {
        let d = ProcessDriver::new();
        assert!(d
            .validate(&json!({ "command": ["/bin/app", "--x"], "env": { "A": "1" }, "cwd": "/tmp",
            "stop_grace_ms": 10, "tail_lines": 5, "timeout_ms": 100 }))
            .is_ok());
        let errors = d
            .validate(&json!({
                "command": ["/bin/app", 5],
                "env": { "FOO": 1, "ROTA_X": "y" },
                "cwd": "relative",
                "stop_grace_ms": -1,
                "tail_lines": "many",
                "bogus": true
            }))
            .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in ["command[1]", "env.FOO", "env.ROTA_X", "cwd", "stop_grace_ms", "tail_lines", "bogus"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let errors = d.validate(&json!({})).unwrap_err();
        assert_eq!(errors[0].field, "command");
        let errors = d.validate(&json!({ "command": [] })).unwrap_err();
        assert_eq!(errors[0].field, "command");
        assert_eq!(d.validate(&json!([])).unwrap_err()[0].field, "");
    }
}
