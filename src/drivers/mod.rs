//! Drivers: what `start`, `stop`, `status` and `run` mean for one kind of application.
//!
//! Why a trait: the dispatcher decides *when* and *where* (ownership, order, fencing); a driver
//! only knows *how*.
//!
//! The modules, one driver each:
//! - `process`: a supervised child on the owner;
//! - `shell`: admin-defined commands for outside systems;
//! - `http`: calls to an outside API;
//! - `flink`: a Flink job through its JobManager's REST API (savepoints, adoption);
//! - `noop`: tests, benchmarks.
//!
//! and beside them, no driver:
//! - `child`: running a child of the node (its environment, spawning it in its own process group
//!   tied to the node, signals, output tails, running a command to its end), for `process` and
//!   `shell`;
//! - `spec`: what the spec validators of `process`, `shell` and `http` share;
//! - `secret`: where a spec holds secrets, the spec as reads show it, and a spec sent back with
//!   placeholders completed from the stored one (each driver names its own secret fields);
//! - `watchdog`: the process beside the node that kills its supervised children once the node
//!   may no longer act (its deadline passed, or it died), and the node's side of it;
//! - `testing` (tests only): the helpers the drivers' unit tests share.
//!
//! Security: commands and URLs come only from application specs (written by an admin). A task
//! row carries parameters, which reach a driver as JSON (`Ctx::params`) and, for commands, as
//! environment variables — never spliced into a shell line.
//!
//! Must never: retry on its own (the dispatcher owns retries and backoff), or block a tokio
//! worker (blocking work goes to `spawn_blocking`).

mod child;
pub mod flink;
pub mod http;
pub mod noop;
pub mod process;
pub mod secret;
pub mod shell;
mod spec;
#[cfg(test)]
mod testing;
pub mod watchdog;

use crate::domain::AppState;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// A boxed future, so drivers can be used as `dyn Driver`.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a driver call gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The application, when the call is about one.
    pub app_id: Option<i64>,
    /// The application's name ("" for jobs).
    pub app_name: String,
    /// The task being executed, if any (monitor checks have none).
    pub task_id: Option<i64>,
    /// The driver spec (from `application.spec`), already validated.
    pub spec: Value,
    /// The task's parameters (`task.payload`); `{}` when none.
    pub params: Value,
    /// This node.
    pub node_id: String,
    /// The ring epoch under which the caller owns the work.
    pub epoch: u64,
    /// Until when the caller may begin work outside the node (the membership deadline).
    pub act_by: ActBy,
    /// What the driver keeps about the application between calls and across owners.
    pub runtime: Runtime,
    /// A workflow node's run context (docs/workflows.md#context): `ROTA_CONTEXT` for commands.
    pub context: Option<Value>,
}

/// A note a driver records with its runtime state: an event of the application (kind, message,
/// data), e.g. `app.savepoint`.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The event's kind.
    pub kind: &'static str,
    /// One line for people.
    pub message: String,
    /// Structured detail.
    pub data: Value,
}

/// Writes a runtime state (and its note) as the application's owner; Ok(false) when this node
/// no longer owns it at its epoch (nothing written).
pub type RecordRuntime = Arc<dyn Fn(Value, Option<Note>) -> BoxFut<'static, Result<bool, String>> + Send + Sync>;

/// What a driver keeps about an application between its calls and across owners, in
/// `application.runtime` (a JSON object): a Flink job's id, the savepoints taken.
///
/// Why in the database: the next owner — after a hand-off or a crash — must find the job the
/// last one started, or it would submit a second copy (I1 for work outside the node). Why
/// written by the driver during a call, not with the call's outcome: a job id is recorded
/// *before* the job is submitted, so an owner that dies between the two leaves the id behind.
/// Every write carries the owner's fence; a write refused (the node lost the application) is a
/// `Fenced` error, so the driver begins nothing after it.
#[derive(Clone)]
pub struct Runtime {
    current: Arc<std::sync::Mutex<Value>>,
    record: Option<RecordRuntime>,
}

impl Runtime {
    /// A runtime state held in memory only (jobs, tools, driver tests): starts as `initial`
    /// (Null: nothing recorded).
    pub fn in_memory(initial: Value) -> Runtime {
        Runtime { current: Arc::new(std::sync::Mutex::new(initial)), record: None }
    }

    /// The state as recorded in the database (`initial`, Null when none), written through
    /// `record` by the application's owner.
    pub fn recorded(initial: Value, record: RecordRuntime) -> Runtime {
        Runtime { current: Arc::new(std::sync::Mutex::new(initial)), record: Some(record) }
    }

    /// The state last recorded (Null when none).
    pub fn get(&self) -> Value {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Record `state` (with `note`, as an event): the next call and the next owner see it.
    /// `Fenced` when this node no longer owns the application (nothing was written: begin
    /// nothing after it); `Failed` when the database did not answer.
    pub async fn set(&self, state: Value, note: Option<Note>) -> Result<(), DriverError> {
        if let Some(record) = &self.record {
            match record(state.clone(), note).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(DriverError::Fenced(
                        "this node no longer owns the application: its runtime state was not recorded".into(),
                    ))
                }
                Err(e) => return Err(DriverError::Failed(format!("could not record the runtime state: {e}"))),
            }
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = state;
        Ok(())
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Runtime({})", self.get())
    }
}

/// Until when this node may begin work outside itself: read by a driver at the last moment
/// before it starts anything (a child process, a request).
///
/// Why: the dispatcher checks its membership before it calls a driver, but the call crosses
/// threads before anything starts (the spawner thread forks every child). A node paused between
/// the check and the fork (SIGSTOP, a stalled process) past its lease would otherwise begin the
/// command after its session ended, while the row's next owner may already run it (invariant
/// I3; the chaos suite caught one, `run` task 1488, seed 83404385). A driver therefore asks
/// again, and the process driver asks a last time in the child itself, between fork and exec, on
/// the monotonic clock (`child::command_for`).
#[derive(Clone)]
pub struct ActBy(Arc<dyn Fn(Instant, u64) -> Option<Instant> + Send + Sync>);

impl ActBy {
    /// `until(now, epoch)`: the instant before which the caller may act on work it owns at
    /// `epoch`; None when it may not (fenced, or the work belongs to an earlier session).
    pub fn new(until: impl Fn(Instant, u64) -> Option<Instant> + Send + Sync + 'static) -> ActBy {
        ActBy(Arc::new(until))
    }

    /// No session bounds the caller (driver tests, tools): a day from each look.
    pub fn unbounded() -> ActBy {
        ActBy::new(|now, _| Some(now + Duration::from_secs(86_400)))
    }

    /// The time left to begin work owned at `epoch` in, read now; `Fenced` naming `what` when
    /// none is left (`what` is written out only then).
    pub fn left(&self, epoch: u64, what: &dyn std::fmt::Display) -> Result<Duration, DriverError> {
        let now = Instant::now();
        match (self.0)(now, epoch) {
            Some(until) if until > now => Ok(until - now),
            _ => Err(DriverError::Fenced(format!(
                "{what} was not begun: this node's membership deadline has passed (it may not act until it re-joins)"
            ))),
        }
    }
}

impl std::fmt::Debug for ActBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActBy(..)")
    }
}

/// What a status check saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "lowercase")]
pub enum Observed {
    /// Up.
    Running,
    /// On its way up (e.g. a Flink job whose tasks are not all running yet, or restarting):
    /// not a failure, and nothing to restart.
    Starting,
    /// Down, as asked.
    Stopped,
    /// Down, not as asked (exit code, error state); the detail says why.
    Failed(String),
    /// Could not tell; the detail says why.
    Unknown(String),
}

impl Observed {
    /// The `application.state` value for this observation.
    pub fn state(&self) -> AppState {
        match self {
            Observed::Running => AppState::Running,
            Observed::Starting => AppState::Starting,
            Observed::Stopped => AppState::Stopped,
            Observed::Failed(_) => AppState::Failed,
            Observed::Unknown(_) => AppState::Unknown,
        }
    }
}

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecError {
    /// JSON pointer-ish path of the field, e.g. `command` or `status.url`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Every spec problem on one line: `field: message; field: message`.
pub fn describe(errors: &[SpecError]) -> String {
    errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
}

/// A driver call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The spec or the parameters cannot work: retrying will not help.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The operation failed (non-zero exit, HTTP error, spawn error): a retry may help.
    #[error("{0}")]
    Failed(String),
    /// The operation took longer than its timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Nothing was begun: the node's membership deadline passed before it could ([`ActBy`]).
    #[error("fenced: {0}")]
    Fenced(String),
}

impl DriverError {
    /// Retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DriverError::Invalid(_))
    }
}

/// A kind of application.
pub trait Driver: Send + Sync {
    /// `process`, `shell`, `http`, `noop`.
    fn name(&self) -> &'static str;
    /// Check a spec; every problem, each with its field.
    fn validate(&self, spec: &Value) -> Result<(), Vec<SpecError>>;
    /// Where `spec` holds secrets by this driver's rules (docs/drivers.md#secrets); the spec's
    /// own `secrets` marks are added by [`Registry::secrets`]. Called on any spec, valid or not
    /// (an invalid one is shown redacted too). Default: none.
    fn secrets(&self, _spec: &Value) -> Vec<secret::Secret> {
        Vec::new()
    }
    /// True when what this driver starts runs on the node itself (a child process): it is
    /// stopped when the node hands the application over, and `Observed::Unknown` from it means
    /// "not started here", so a new owner starts it. False (the default) for what runs outside
    /// (a Flink job, a service behind a URL): it keeps running across a hand-off, and a new
    /// owner that cannot see it does not start a second copy.
    fn supervises_here(&self) -> bool {
        false
    }
    /// Bring the application up.
    fn start<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>>;
    /// Bring it down.
    fn stop<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>>;
    /// Look at it.
    fn status<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Observed, DriverError>>;
    /// Take a savepoint of what runs (`savepoint` command); its result (JSON, e.g. the
    /// location) on success. Default: this driver takes none.
    fn savepoint<'a>(&'a self, _ctx: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>> {
        let name = self.name();
        Box::pin(async move {
            Err(DriverError::Invalid(format!("the {name} driver takes no savepoints (only flink applications do)")))
        })
    }
    /// Run a one-shot job; its result (JSON) on success.
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>>;
    /// The node is exiting: stop everything it supervises (e.g. kill child process groups).
    fn shutdown(&self) -> BoxFut<'_, ()>;
}

/// How `process` and `shell` start commands on this node: who watches them, which of the node's
/// environment variables they inherit, and where parameters too large for the environment go
/// (docs/drivers.md#environment-variables-process-and-shell).
#[derive(Debug, Clone, Default)]
pub struct ChildSetup {
    /// The node's watchdog, told of every child; none in tests and tools.
    pub watchdog: Option<watchdog::Watchdog>,
    /// Names of the node's variables passed on beyond the minimal set (`drivers.pass_env`).
    pub pass_env: Vec<String>,
    /// Where parameters too large for an environment variable, and jobs' result files, are
    /// written; none: the system's temporary directory. [`ChildSetup::params_dir_in`] prepares the node's.
    pub params_dir: Option<PathBuf>,
}

impl ChildSetup {
    /// Prepare `{data_dir}/params`, the node's directory of parameter files: created if missing,
    /// readable by the node's user only, emptied of files an earlier life of the node left (their
    /// commands were killed with it), and absolute, so a command with another `cwd` finds it.
    pub fn params_dir_in(data_dir: &Path) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = std::path::absolute(data_dir.join("params"))?;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(child::PARAMS_FILE_PREFIX) || name.starts_with(child::RESULT_FILE_PREFIX) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(dir)
    }
}

/// The drivers by name.
#[derive(Clone)]
pub struct Registry {
    drivers: BTreeMap<&'static str, Arc<dyn Driver>>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self { drivers: BTreeMap::new() }
    }

    /// Add a driver (replacing one of the same name).
    pub fn with(mut self, driver: Arc<dyn Driver>) -> Self {
        self.drivers.insert(driver.name(), driver);
        self
    }

    /// Every built-in driver.
    pub fn builtin() -> Self {
        Self::builtin_with(ChildSetup::default())
    }

    /// Every built-in driver; `process` and `shell` start their children as `setup` says (with
    /// a watchdog, they announce the children it must kill once the node may no longer act;
    /// docs/drivers.md).
    pub fn builtin_with(setup: ChildSetup) -> Self {
        Self::empty()
            .with(Arc::new(noop::NoopDriver))
            .with(Arc::new(process::ProcessDriver::with_setup(setup.clone())))
            .with(Arc::new(shell::ShellDriver::with_setup(setup)))
            .with(Arc::new(http::HttpDriver::new()))
            .with(Arc::new(flink::FlinkDriver::new()))
    }

    /// The driver called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.drivers.get(name).cloned()
    }

    /// Names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.drivers.keys().copied().collect()
    }

    /// Every secret place of `spec` for the driver `name` (its own and the spec's marks); None
    /// when no driver has that name.
    pub fn secrets(&self, name: &str, spec: &Value) -> Option<Vec<secret::Secret>> {
        self.get(name).map(|driver| secret::all(driver.secrets(spec), spec))
    }

    /// `spec` as every read shows it (docs/api.md#secrets): each secret replaced by
    /// [`secret::PLACEHOLDER`]; every string when no driver has the name `name`, since nobody
    /// knows where that spec's secrets are.
    pub fn redacted(&self, name: &str, spec: &Value) -> Value {
        match self.secrets(name, spec) {
            Some(secrets) => secret::redact(spec, &secrets),
            None => secret::redact_everything(spec),
        }
    }

    /// Stop everything every driver supervises, in parallel, waiting at most `limit`.
    pub async fn shutdown_within(&self, limit: std::time::Duration) {
        let all = futures_util::future::join_all(self.drivers.values().map(|d| d.shutdown()));
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("drivers took longer than {limit:?} to stop what they supervise");
        }
    }
}
