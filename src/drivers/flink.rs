//! `flink`: an Apache Flink job on a standalone or session cluster, driven through the
//! JobManager's REST API — submitted from a jar, stopped with a savepoint, restored from one, and
//! adopted by a new owner without a second submission (docs/drivers.md#flink).
//!
//! Why it keeps a runtime state: a Flink job outlives the node that submitted it. Its id is
//! chosen here and recorded in `application.runtime` *before* the job is submitted (with that id,
//! `jobId` of `POST /jars/{id}/run`), so whichever node owns the application next — after a
//! hand-off or a crash, even one between the record and the submission — finds the job and
//! monitors it instead of submitting another. The savepoints taken are recorded there too:
//! `restore: latest` starts from the newest.
//!
//! The pieces: the spec and its checks, Flink's job states read as Rota's, the choice of the
//! savepoint to restore and the runtime record are pure (unit- and property-tested); the REST
//! calls are in [`Rest`] (blocking `ureq`, each call in `spawn_blocking`).
//!
//! Must never: submit while the recorded job still runs; report `failed` for a JobManager that
//! does not answer (that is `unknown`, which sets off no restart, with a backoff between looks);
//! count a savepoint as taken without its location (Flink answers `COMPLETED` for a failed one
//! too, with a `failure-cause`); quote the spec's `rest_url` with its credentials.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::secret::{check_marks, redact_url, Secret};
use super::spec::{check_ms, problem, spec_object};
use super::{BoxFut, Ctx, Driver, DriverError, Note, Observed, SpecError};

/// The fields a spec may have.
const FIELDS: &str = "rest_url, jar, jar_id, entry_class, args, parallelism, savepoint_dir, restore, stop, drain, \
                      allow_non_restored_state, start_timeout_ms, savepoint_timeout_ms, request_timeout_ms, secrets";

/// Savepoints kept in the runtime record, newest last.
const KEPT_SAVEPOINTS: usize = 20;

/// How often a wait for Flink looks again.
const POLL: Duration = Duration::from_millis(250);

/// The longest pause between status looks at a JobManager that does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where a start restores from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// The newest savepoint Rota recorded for the application; none when there is none.
    Latest,
    /// Never: a fresh start.
    None,
    /// This savepoint (or retained checkpoint) path.
    Path(String),
}

impl Restore {
    fn parse(text: &str) -> Restore {
        match text {
            "latest" => Restore::Latest,
            "none" => Restore::None,
            path => Restore::Path(path.to_string()),
        }
    }
}

/// How a stop ends the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Stop with a savepoint (recorded); a failed savepoint fails the stop and the job runs on.
    Savepoint,
    /// Cancel, without a savepoint.
    Cancel,
}

/// A validated `flink` spec.
#[derive(Debug, Clone, PartialEq)]
pub struct FlinkSpec {
    /// The JobManager's REST address, without a trailing `/`.
    pub rest_url: String,
    /// The jar: a path on the node (uploaded once per node and cluster), or an uploaded jar's id.
    pub jar: Jar,
    /// The job's main class; the jar's manifest names it when absent.
    pub entry_class: Option<String>,
    /// Program arguments.
    pub args: Vec<String>,
    /// The job's parallelism; the cluster's default when absent.
    pub parallelism: Option<u32>,
    /// Where savepoints go; the cluster's `execution.checkpointing.savepoint-dir` when absent.
    pub savepoint_dir: Option<String>,
    /// Where a start restores from.
    pub restore: Restore,
    /// How a stop ends the job.
    pub stop: StopMode,
    /// Stop with `drain` (sources send MAX_WATERMARK: event-time windows fire).
    pub drain: bool,
    /// Start even when a savepoint holds state no operator of the new job takes.
    pub allow_non_restored_state: bool,
    /// How long a start waits for the job and all its tasks to run.
    pub start_timeout: Duration,
    /// How long a savepoint may take.
    pub savepoint_timeout: Duration,
    /// How long one REST request may take.
    pub request_timeout: Duration,
}

/// The jar a job runs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jar {
    /// A file on the node.
    Path(PathBuf),
    /// The id of a jar uploaded to the cluster already.
    Id(String),
}

impl FlinkSpec {
    /// The spec, or every problem with it.
    pub fn parse(spec: &Value) -> Result<FlinkSpec, Vec<SpecError>> {
        let mut errors = Vec::new();
        let Some(obj) = spec_object(spec, &mut errors) else { return Err(errors) };
        for (key, value) in obj {
            match key.as_str() {
                "rest_url" => match value.as_str() {
                    Some(url) if is_http_url(url) => {}
                    _ => problem(&mut errors, key, "must be the JobManager's REST address, e.g. \"http://127.0.0.1:8081\""),
                },
                "jar" | "entry_class" | "savepoint_dir" => match value.as_str() {
                    Some(s) if !s.trim().is_empty() && !s.contains('\0') => {}
                    _ => problem(&mut errors, key, "must be a non-empty string"),
                },
                "jar_id" => match value.as_str() {
                    Some(s) if is_jar_id(s) => {}
                    _ => problem(
                        &mut errors,
                        key,
                        "must be an uploaded jar's id (its file name as `GET /jars` lists it: letters, digits, `_`, `-`, \
                         `.`)",
                    ),
                },
                "args" => match value.as_array() {
                    Some(args) => {
                        for (i, arg) in args.iter().enumerate() {
                            if !arg.is_string() {
                                problem(&mut errors, format!("args.{i}"), "must be a string (quote numbers)");
                            }
                        }
                    }
                    None => problem(&mut errors, key, "must be an array of strings"),
                },
                "parallelism" => match value.as_u64() {
                    Some(1..=32_768) => {}
                    _ => problem(&mut errors, key, "must be a whole number from 1 to 32768"),
                },
                "restore" => match value.as_str() {
                    Some(s) if !s.trim().is_empty() => {}
                    _ => problem(&mut errors, key, "must be \"latest\", \"none\" or a savepoint path"),
                },
                "stop" => match value.as_str() {
                    Some("savepoint" | "cancel") => {}
                    _ => problem(&mut errors, key, "must be \"savepoint\" or \"cancel\""),
                },
                "drain" | "allow_non_restored_state" => {
                    if !value.is_boolean() {
                        problem(&mut errors, key, "must be true or false");
                    }
                }
                "start_timeout_ms" | "savepoint_timeout_ms" => check_ms(&mut errors, key, value, 1_000, 86_400_000),
                "request_timeout_ms" => check_ms(&mut errors, key, value, 100, 600_000),
                "secrets" => check_marks(&mut errors, spec, value),
                _ => problem(&mut errors, key, format!("unknown field (known: {FIELDS})")),
            }
        }
        if !obj.contains_key("rest_url") {
            problem(&mut errors, "rest_url", "is required: the JobManager's REST address");
        }
        match (obj.contains_key("jar"), obj.contains_key("jar_id")) {
            (false, false) => problem(&mut errors, "jar", "is required (a jar file on the node), or give `jar_id`"),
            (true, true) => problem(&mut errors, "jar_id", "give either `jar` or `jar_id`, not both"),
            _ => {}
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        let ms = |k: &str, default: u64| Duration::from_millis(obj.get(k).and_then(Value::as_u64).unwrap_or(default));
        Ok(FlinkSpec {
            rest_url: text("rest_url").unwrap_or_default().trim_end_matches('/').to_string(),
            jar: match (text("jar"), text("jar_id")) {
                (Some(path), _) => Jar::Path(PathBuf::from(path)),
                (None, id) => Jar::Id(id.unwrap_or_default()),
            },
            entry_class: text("entry_class"),
            args: obj
                .get("args")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
            parallelism: obj.get("parallelism").and_then(Value::as_u64).map(|p| p as u32),
            savepoint_dir: text("savepoint_dir"),
            restore: text("restore").map_or(Restore::Latest, |r| Restore::parse(&r)),
            stop: if text("stop").as_deref() == Some("cancel") { StopMode::Cancel } else { StopMode::Savepoint },
            drain: flag("drain"),
            allow_non_restored_state: flag("allow_non_restored_state"),
            start_timeout: ms("start_timeout_ms", 120_000),
            savepoint_timeout: ms("savepoint_timeout_ms", 300_000),
            request_timeout: ms("request_timeout_ms", 10_000),
        })
    }
}

fn is_http_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

fn is_jar_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A savepoint Rota took and recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Savepoint {
    /// Where Flink wrote it (what `savepointPath` takes).
    pub location: String,
    /// When it was recorded (RFC 3339, UTC).
    pub at: String,
    /// The job it was taken of.
    pub job_id: String,
    /// `stop` (a stop with savepoint) or `savepoint` (taken on demand).
    pub trigger: String,
    /// The task that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i64>,
}

/// What this driver records in `application.runtime`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The job last submitted, while it may run; None once it was stopped or cancelled.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Savepoints taken, newest last (at most [`KEPT_SAVEPOINTS`]).
    #[serde(default)]
    pub savepoints: Vec<Savepoint>,
    /// Why the last start failed before a job ran (none was submitted, or Flink refused it):
    /// the application is `failed`, not `stopped`, until the next start or stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Record {
    /// The record in a runtime state (Null, or a state of another shape: an empty record).
    pub fn read(state: &Value) -> Record {
        serde_json::from_value(state.clone()).unwrap_or_default()
    }

    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// This record with `savepoint` added (the oldest dropped past [`KEPT_SAVEPOINTS`]).
    pub fn with_savepoint(mut self, savepoint: Savepoint) -> Record {
        self.savepoints.push(savepoint);
        let excess = self.savepoints.len().saturating_sub(KEPT_SAVEPOINTS);
        self.savepoints.drain(..excess);
        self
    }
}

/// The savepoint a start restores from: the one a restart's own stop just took (whatever
/// `restore` says: a restart continues where it stopped), else as `restore` says.
pub fn restore_from(restore: &Restore, record: &Record, task_id: Option<i64>) -> Option<String> {
    let newest = record.savepoints.last();
    if let (Some(sp), Some(task)) = (newest, task_id) {
        if sp.task_id == Some(task) && sp.trigger == "stop" {
            return Some(sp.location.clone());
        }
    }
    match restore {
        Restore::Latest => newest.map(|sp| sp.location.clone()),
        Restore::None => None,
        Restore::Path(path) => Some(path.clone()),
    }
}

/// A job's state as Flink reports it (`GET /jobs/{id}`), read as Rota's; `root_cause` is
/// consulted for FAILED only.
pub fn observe(job: &Value, root_cause: impl FnOnce() -> String) -> Observed {
    let state = job.get("state").and_then(Value::as_str).unwrap_or("");
    match state {
        "RUNNING" => {
            let vertices = job.get("vertices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            let waiting: Vec<&str> = vertices
                .iter()
                .filter_map(|v| v.get("status").and_then(Value::as_str))
                .filter(|s| !matches!(*s, "RUNNING" | "FINISHED"))
                .collect();
            if vertices.is_empty() || !waiting.is_empty() {
                Observed::Starting
            } else {
                Observed::Running
            }
        }
        "CREATED" | "INITIALIZING" | "RESTARTING" | "RECONCILING" => Observed::Starting,
        "FINISHED" | "CANCELED" => Observed::Stopped,
        "FAILED" => Observed::Failed(root_cause()),
        other => {
            Observed::Unknown(format!("the Flink job is {}", if other.is_empty() { "in no state" } else { other }))
        }
    }
}

/// True for a job state Flink never leaves.
fn is_terminal(state: &str) -> bool {
    matches!(state, "FINISHED" | "CANCELED" | "FAILED")
}

/// The root cause of a failed job from `GET /jobs/{id}/exceptions`: the newest entry of the
/// exception history — the first line of its trace and its deepest `Caused by:` (Flink 2 wraps
/// the job's own exception in "Recovery is suppressed by …") — or the older `root-exception`.
pub fn root_cause(exceptions: &Value) -> Option<String> {
    let entry = exceptions.pointer("/exceptionHistory/entries/0");
    let (name, trace) = match entry {
        Some(e) => (e.get("exceptionName").and_then(Value::as_str), e.get("stacktrace").and_then(Value::as_str)),
        None => (None, exceptions.get("root-exception").and_then(Value::as_str)),
    };
    let text = match (trace.map(deepest_cause).filter(|t| !t.is_empty()), name) {
        (Some(t), _) => t,
        (None, Some(n)) => n.to_string(),
        (None, None) => return None,
    };
    Some(cut(&text, 500))
}

/// What a savepoint trigger's answer (`GET /jobs/{id}/savepoints/{request}`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Still being taken.
    InProgress,
    /// Taken, here.
    Taken(String),
    /// Failed, for this reason (Flink still says `COMPLETED`).
    Failed(String),
}

/// Read a savepoint trigger's answer: taken only when it names a location.
pub fn trigger(answer: &Value) -> Trigger {
    if answer.pointer("/status/id").and_then(Value::as_str) != Some("COMPLETED") {
        return Trigger::InProgress;
    }
    if let Some(location) = answer.pointer("/operation/location").and_then(Value::as_str) {
        return Trigger::Taken(location.to_string());
    }
    let cause = answer.pointer("/operation/failure-cause");
    let text = cause
        .and_then(|c| c.get("stack-trace").and_then(Value::as_str))
        .map(deepest_cause)
        .or_else(|| cause.and_then(|c| c.get("class").and_then(Value::as_str)).map(str::to_string))
        .unwrap_or_else(|| "Flink answered COMPLETED with neither a location nor a cause".to_string());
    Trigger::Failed(cut(&text, 500))
}

/// The most telling line of a Java stack trace: its first line, and the last `Caused by:`.
fn deepest_cause(trace: &str) -> String {
    let first = trace.lines().next().unwrap_or("").trim();
    match trace.lines().rev().find(|l| l.trim_start().starts_with("Caused by:")) {
        Some(caused) if !first.is_empty() => format!("{first} ({})", caused.trim()),
        Some(caused) => caused.trim().to_string(),
        None => first.to_string(),
    }
}

/// Flink's error answer (`{"errors": [...]}`), shortened: each error's first line and its
/// deepest `Caused by:` (where a missing class or a bad path is named).
fn flink_errors(body: &Value, raw: &str) -> String {
    let text = match body.get("errors").and_then(Value::as_array) {
        Some(errors) => errors.iter().filter_map(Value::as_str).map(deepest_cause).collect::<Vec<_>>().join("; "),
        None => raw.to_string(),
    };
    cut(&text, 600)
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// A job id chosen for a submission: 32 hex digits (Flink's `JobID`), unique per application
/// and instant, so the id of each submission is new.
fn new_job_id(app_id: i64) -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{:016x}{:016x}", app_id as u64, (nanos as u64) ^ (u64::from(std::process::id()) << 48))
}

/// An answer from the JobManager.
struct Answer {
    status: u16,
    body: Value,
    raw: String,
}

/// The JobManager did not answer (refused, timed out, reset).
#[derive(Debug)]
struct Unreachable(String);

/// Blocking REST calls to one JobManager, each run in `spawn_blocking`.
#[derive(Clone)]
struct Rest {
    agent: ureq::Agent,
    base: String,
    shown: String,
    timeout: Duration,
}

impl Rest {
    fn new(agent: &ureq::Agent, spec: &FlinkSpec) -> Rest {
        Rest {
            agent: agent.clone(),
            base: spec.rest_url.clone(),
            shown: redact_url(&spec.rest_url),
            timeout: spec.request_timeout,
        }
    }

    async fn call(&self, method: &'static str, path: String, body: Option<Value>) -> Result<Answer, Unreachable> {
        let (rest, url) = (self.clone(), format!("{}{path}", self.base));
        let joined = tokio::task::spawn_blocking(move || {
            let builder = ureq::http::Request::builder().method(method).uri(&url).header("Accept", "application/json");
            let bad = |e: ureq::http::Error| Unreachable(format!("{method} {path}: {e}"));
            // No body at all (not an empty one) for a call without one: ureq refuses a body
            // on a GET.
            let response = match body {
                Some(body) => {
                    let request = builder
                        .header("Content-Type", "application/json")
                        .body(body.to_string().into_bytes())
                        .map_err(bad)?;
                    rest.agent.run(rest.agent.configure_request(request).timeout_global(Some(rest.timeout)).build())
                }
                None => {
                    let request = builder.body(()).map_err(bad)?;
                    rest.agent.run(rest.agent.configure_request(request).timeout_global(Some(rest.timeout)).build())
                }
            };
            rest.read(response, method, &path)
        })
        .await;
        joined.unwrap_or_else(|e| Err(Unreachable(format!("internal: the request's thread failed: {e}"))))
    }

    fn read(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        method: &str,
        path: &str,
    ) -> Result<Answer, Unreachable> {
        let mut response = response.map_err(|e| {
            Unreachable(format!("the JobManager at {} did not answer {method} {path}: {e}", self.shown))
        })?;
        let status = response.status().as_u16();
        let raw = response.body_mut().with_config().limit(16 * 1024 * 1024).read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Ok(Answer { status, body, raw })
    }

    /// Upload the jar at `path`: its id on the cluster.
    async fn upload(&self, path: &Path) -> Result<String, DriverError> {
        let bytes = on_disk(path.to_path_buf(), |p| std::fs::read(p)).await?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "job.jar".into());
        let boundary = format!(
            "rota-{:x}",
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos()
        );
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"jarfile\"; filename=\"{}\"\r\nContent-Type: \
             application/x-java-archive\r\n\r\n",
            name.replace('"', "_")
        )
        .into_bytes();
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let rest = self.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let url = format!("{}/jars/upload", rest.base);
            let request = ureq::http::Request::builder()
                .method("POST")
                .uri(&url)
                .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
                .body(body)
                .map_err(|e| Unreachable(format!("POST /jars/upload: {e}")))?;
            // An upload may be large: a minute more than one request's allowance.
            let request = rest
                .agent
                .configure_request(request)
                .timeout_global(Some(rest.timeout + Duration::from_secs(60)))
                .build();
            rest.read(rest.agent.run(request), "POST", "/jars/upload")
        })
        .await
        .unwrap_or_else(|e| Err(Unreachable(format!("internal: the upload's thread failed: {e}"))))
        .map_err(|u| DriverError::Failed(u.0))?;
        let file = answer.body.get("filename").and_then(Value::as_str);
        match (answer.status, file) {
            (200, Some(file)) => Ok(file.rsplit('/').next().unwrap_or(file).to_string()),
            (status, _) => Err(DriverError::Failed(format!(
                "uploading {} to the JobManager at {} answered {status}: {}",
                path.display(),
                self.shown,
                flink_errors(&answer.body, &answer.raw)
            ))),
        }
    }

    /// The job, None when Flink does not know it.
    async fn job(&self, id: &str) -> Result<Option<Value>, Unreachable> {
        let answer = self.call("GET", format!("/jobs/{id}"), None).await?;
        match answer.status {
            200 => Ok(Some(answer.body)),
            404 => Ok(None),
            status => Err(Unreachable(format!(
                "GET /jobs/{id} at {} answered {status}: {}",
                self.shown,
                flink_errors(&answer.body, &answer.raw)
            ))),
        }
    }

    /// Why job `id` failed, as its exception history says.
    async fn root_cause(&self, id: &str) -> String {
        match self.call("GET", format!("/jobs/{id}/exceptions"), None).await {
            Ok(a) if a.status == 200 => {
                root_cause(&a.body).unwrap_or_else(|| "the job failed; Flink lists no exception".into())
            }
            Ok(a) => format!("the job failed; its exceptions could not be read ({})", a.status),
            Err(u) => format!("the job failed; its exceptions could not be read: {}", u.0),
        }
    }
}

/// Per application: the JobManager did not answer its last look; the next look waits.
#[derive(Debug, Clone)]
struct Backoff {
    failures: u32,
    until: Instant,
    why: String,
}

/// A jar this node uploaded to a cluster (keyed by REST address and path): the file's length
/// and modification time when uploaded, and its id there.
type Uploaded = (u64, SystemTime, String);

/// The `flink` driver.
pub struct FlinkDriver {
    agent: ureq::Agent,
    jars: Mutex<HashMap<(String, PathBuf), Uploaded>>,
    backoff: Mutex<HashMap<i64, Backoff>>,
}

impl Default for FlinkDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl FlinkDriver {
    /// A driver with its own HTTP agent (no redirects followed).
    pub fn new() -> FlinkDriver {
        let config = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build();
        FlinkDriver {
            agent: ureq::Agent::new_with_config(config),
            jars: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// The call's spec and the application's record.
    fn parse(ctx: &Ctx) -> Result<(FlinkSpec, Record), DriverError> {
        let spec = FlinkSpec::parse(&ctx.spec).map_err(|e| DriverError::Invalid(super::spec::join_spec_errors(&e)))?;
        Ok((spec, Record::read(&ctx.runtime.get())))
    }

    fn rest(&self, spec: &FlinkSpec) -> Rest {
        Rest::new(&self.agent, spec)
    }

    /// The jar's id on the cluster: uploaded when this node has not uploaded this file (as it
    /// is now) to this cluster yet.
    async fn jar_id(&self, spec: &FlinkSpec, rest: &Rest, fresh: bool) -> Result<String, DriverError> {
        let path = match &spec.jar {
            Jar::Id(id) => return Ok(id.clone()),
            Jar::Path(path) => path.clone(),
        };
        let meta = on_disk(path.clone(), |p| std::fs::metadata(p)).await?;
        let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        let key = (spec.rest_url.clone(), path.clone());
        if !fresh {
            if let Some((len, modified, id)) = self.jars.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
                if (*len, *modified) == stamp {
                    return Ok(id.clone());
                }
            }
        }
        let id = rest.upload(&path).await?;
        tracing::info!(flink.jar = %path.display(), flink.jar_id = %id, "uploaded the jar");
        self.jars.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (stamp.0, stamp.1, id.clone()));
        Ok(id)
    }

    /// Submit the job as `job_id`: Ok when Flink took it.
    async fn submit(
        &self,
        spec: &FlinkSpec,
        rest: &Rest,
        job_id: &str,
        savepoint: Option<&str>,
    ) -> Result<(), DriverError> {
        let mut body = Map::new();
        body.insert("jobId".into(), json!(job_id));
        body.insert("programArgsList".into(), json!(spec.args));
        if let Some(class) = &spec.entry_class {
            body.insert("entryClass".into(), json!(class));
        }
        if let Some(p) = spec.parallelism {
            body.insert("parallelism".into(), json!(p));
        }
        if let Some(path) = savepoint {
            body.insert("savepointPath".into(), json!(path));
            body.insert("allowNonRestoredState".into(), json!(spec.allow_non_restored_state));
        }
        let mut fresh = false;
        loop {
            let jar = self.jar_id(spec, rest, fresh).await?;
            let answer = rest
                .call("POST", format!("/jars/{jar}/run"), Some(Value::Object(body.clone())))
                .await
                .map_err(|u| DriverError::Failed(u.0))?;
            let message = flink_errors(&answer.body, &answer.raw);
            match answer.status {
                200 => return Ok(()),
                // The cluster lost the uploaded jar (a JobManager restarted): upload it again, once.
                404 | 500 if !fresh && matches!(spec.jar, Jar::Path(_)) && message.contains("does not exist") => {
                    fresh = true;
                }
                status => {
                    return Err(DriverError::Failed(format!(
                        "Flink refused the job (POST /jars/{jar}/run answered {status}): {message}"
                    )))
                }
            }
        }
    }

    /// Wait until job `id` and all its tasks run: Ok(true); Ok(false) when the wait ran out
    /// first (it is still starting); an error when it failed or ended.
    async fn wait_running(&self, rest: &Rest, id: &str, limit: Duration) -> Result<bool, DriverError> {
        let deadline = Instant::now() + limit;
        loop {
            match rest.job(id).await {
                Ok(Some(job)) => {
                    let state = job.get("state").and_then(Value::as_str).unwrap_or("").to_string();
                    match observe(&job, String::new) {
                        Observed::Running => return Ok(true),
                        Observed::Failed(_) => {
                            return Err(DriverError::Failed(format!(
                                "the Flink job {id} failed: {}",
                                rest.root_cause(id).await
                            )))
                        }
                        Observed::Stopped => {
                            return Err(DriverError::Failed(format!(
                                "the Flink job {id} ended as it started ({state})"
                            )))
                        }
                        _ => {}
                    }
                }
                Ok(None) => {}
                Err(u) => tracing::debug!(flink.job = id, error = %u.0, "the JobManager did not answer; looking again"),
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Trigger a savepoint of job `id` through `route` (`stop`: stop with a savepoint;
    /// `savepoints`: one on demand) with `body`, and wait for it: its location.
    async fn savepoint_of(
        &self,
        rest: &Rest,
        id: &str,
        route: &str,
        body: Value,
        limit: Duration,
    ) -> Result<String, DriverError> {
        let answer =
            rest.call("POST", format!("/jobs/{id}/{route}"), Some(body)).await.map_err(|u| DriverError::Failed(u.0))?;
        let request = match (answer.status, answer.body.get("request-id").and_then(Value::as_str)) {
            (200 | 202, Some(r)) => r.to_string(),
            (status, _) => {
                return Err(DriverError::Failed(format!(
                    "POST /jobs/{id}/{route} (a savepoint) answered {status}: {}",
                    flink_errors(&answer.body, &answer.raw)
                )))
            }
        };
        self.wait_trigger(rest, &format!("/jobs/{id}/savepoints"), &request, limit).await
    }

    /// Wait for a savepoint trigger (`path` is the job's savepoint route) to end.
    async fn wait_trigger(
        &self,
        rest: &Rest,
        path: &str,
        request: &str,
        limit: Duration,
    ) -> Result<String, DriverError> {
        let deadline = Instant::now() + limit;
        loop {
            match rest.call("GET", format!("{path}/{request}"), None).await {
                Ok(a) if a.status == 200 => match trigger(&a.body) {
                    Trigger::Taken(location) => return Ok(location),
                    Trigger::Failed(why) => return Err(DriverError::Failed(format!("the savepoint failed: {why}"))),
                    Trigger::InProgress => {}
                },
                Ok(a) => {
                    return Err(DriverError::Failed(format!(
                        "GET {path}/{request} answered {}: {}",
                        a.status,
                        flink_errors(&a.body, &a.raw)
                    )))
                }
                Err(u) => tracing::debug!(error = %u.0, "the JobManager did not answer; looking again"),
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout(format!(
                    "the savepoint was not done within {} ms (savepoint_timeout_ms)",
                    limit.as_millis()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait until job `id` has ended (or Flink forgot it).
    async fn wait_ended(&self, rest: &Rest, id: &str, limit: Duration) -> Result<(), DriverError> {
        let deadline = Instant::now() + limit;
        loop {
            match rest.job(id).await {
                Ok(None) => return Ok(()),
                Ok(Some(job)) if is_terminal(job.get("state").and_then(Value::as_str).unwrap_or("")) => return Ok(()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout(format!(
                    "the Flink job {id} had not ended after {} ms",
                    limit.as_millis()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`FlinkDriver::submit_or_adopt`], and a start that failed with no job left running
    /// recorded as such, so the status checks say `failed` rather than `stopped`.
    async fn start_job(&self, ctx: &Ctx) -> Result<(), DriverError> {
        let result = self.submit_or_adopt(ctx).await;
        if let Err(e) = &result {
            let record = Record::read(&ctx.runtime.get());
            if record.job_id.is_none() && !matches!(e, DriverError::Fenced(_)) {
                let failed = Record { failed: Some(e.to_string()), ..record };
                if let Err(not) = ctx.runtime.set(failed.to_value(), None).await {
                    tracing::warn!(error = %not, "could not record the failed start");
                }
            }
        }
        result
    }

    async fn submit_or_adopt(&self, ctx: &Ctx) -> Result<(), DriverError> {
        let (spec, record) = Self::parse(ctx)?;
        let rest = self.rest(&spec);
        if let Some(id) = &record.job_id {
            // The recorded job may still run (an adoption, a start after a start): never a
            // second submission beside it.
            match rest.job(id).await {
                Ok(Some(job)) if !is_terminal(job.get("state").and_then(Value::as_str).unwrap_or("")) => {
                    tracing::info!(flink.job = %id, "the recorded Flink job still runs: not submitted again");
                    self.wait_running(&rest, id, spec.start_timeout).await?;
                    return Ok(());
                }
                Ok(_) => {}
                Err(u) => {
                    return Err(DriverError::Failed(format!(
                        "{}; not submitted, since the recorded job {id} may still run",
                        u.0
                    )))
                }
            }
        }
        let restore = match ctx.params.get("restore") {
            None => spec.restore.clone(),
            Some(Value::String(r)) => Restore::parse(r),
            Some(_) => {
                return Err(DriverError::Invalid("payload `restore` must be \"latest\", \"none\" or a path".into()))
            }
        };
        let savepoint = restore_from(&restore, &record, ctx.task_id);
        let job_id = new_job_id(ctx.app_id.unwrap_or_default());
        // Recorded before the submission: an owner that dies between the two leaves the id for
        // the next one, which finds the job (or finds none and submits).
        let submitting = Record { job_id: Some(job_id.clone()), failed: None, ..record.clone() };
        ctx.act_by.left(ctx.epoch, &"the Flink job's submission")?;
        ctx.runtime.set(submitting.to_value(), None).await?;
        ctx.act_by.left(ctx.epoch, &"the Flink job's submission")?;
        if let Err(e) = self.submit(&spec, &rest, &job_id, savepoint.as_deref()).await {
            // Refused: nothing runs under the id (a request that timed out keeps it: the job
            // may have been created, and the next start looks for it first).
            if !matches!(e, DriverError::Timeout(_)) {
                let _ = ctx.runtime.set(Record { failed: None, ..record.clone() }.to_value(), None).await;
            }
            return Err(e);
        }
        tracing::info!(flink.job = %job_id, flink.restored_from = savepoint.as_deref().unwrap_or(""), "submitted the Flink job");
        if !self.wait_running(&rest, &job_id, spec.start_timeout).await? {
            tracing::info!(flink.job = %job_id, "the Flink job is not running yet; its status checks follow it");
        }
        Ok(())
    }

    async fn stop_job(&self, ctx: &Ctx) -> Result<(), DriverError> {
        let (spec, record) = Self::parse(ctx)?;
        let rest = self.rest(&spec);
        let ended = Record { job_id: None, failed: None, ..record.clone() };
        let Some(id) = record.job_id.clone() else {
            // Nothing runs; a failed start is forgotten: the application is stopped as asked.
            return match record.failed {
                Some(_) => ctx.runtime.set(ended.to_value(), None).await,
                None => Ok(()),
            };
        };
        match rest.job(&id).await.map_err(|u| DriverError::Failed(u.0))? {
            Some(job) if !is_terminal(job.get("state").and_then(Value::as_str).unwrap_or("")) => {}
            // Ended already, or unknown to Flink: nothing to stop.
            _ => return ctx.runtime.set(ended.to_value(), None).await,
        }
        let mode = match ctx.params.get("stop").and_then(Value::as_str) {
            Some("cancel") => StopMode::Cancel,
            Some("savepoint") => StopMode::Savepoint,
            Some(other) => {
                return Err(DriverError::Invalid(format!(
                    "payload `stop` must be \"savepoint\" or \"cancel\", got {other:?}"
                )))
            }
            None => spec.stop,
        };
        ctx.act_by.left(ctx.epoch, &"the Flink job's stop")?;
        match mode {
            StopMode::Cancel => {
                let answer = rest
                    .call("PATCH", format!("/jobs/{id}?mode=cancel"), None)
                    .await
                    .map_err(|u| DriverError::Failed(u.0))?;
                // 409: it ended meanwhile.
                if !matches!(answer.status, 200 | 202 | 409) {
                    return Err(DriverError::Failed(format!(
                        "cancelling the Flink job {id} answered {}: {}",
                        answer.status,
                        flink_errors(&answer.body, &answer.raw)
                    )));
                }
                self.wait_ended(&rest, &id, spec.request_timeout * 6).await?;
                ctx.runtime.set(ended.to_value(), None).await
            }
            StopMode::Savepoint => {
                let mut body =
                    json!({ "drain": ctx.params.get("drain").and_then(Value::as_bool).unwrap_or(spec.drain) });
                if let Some(dir) = &spec.savepoint_dir {
                    body["targetDirectory"] = json!(dir);
                }
                let location =
                    self.savepoint_of(&rest, &id, "stop", body, spec.savepoint_timeout).await.map_err(|e| match e {
                        DriverError::Failed(why) => DriverError::Failed(format!(
                            "{why}; the job {id} runs on (stop with {{\"stop\": \"cancel\"}} to cancel it without one)"
                        )),
                        other => other,
                    })?;
                self.wait_ended(&rest, &id, spec.request_timeout * 6).await?;
                let taken = savepoint_record(&location, &id, "stop", ctx.task_id);
                let note = savepoint_note(&taken);
                ctx.runtime.set(ended.with_savepoint(taken).to_value(), Some(note)).await
            }
        }
    }

    async fn take_savepoint(&self, ctx: &Ctx) -> Result<Value, DriverError> {
        let (spec, record) = Self::parse(ctx)?;
        let rest = self.rest(&spec);
        let Some(id) = record.job_id.clone() else {
            return Err(DriverError::Invalid("no Flink job runs for this application: start it first".into()));
        };
        ctx.act_by.left(ctx.epoch, &"the savepoint")?;
        let mut body = json!({ "cancel-job": false });
        if let Some(dir) = &spec.savepoint_dir {
            body["target-directory"] = json!(dir);
        }
        let location = self.savepoint_of(&rest, &id, "savepoints", body, spec.savepoint_timeout).await?;
        let taken = savepoint_record(&location, &id, "savepoint", ctx.task_id);
        let note = savepoint_note(&taken);
        ctx.runtime.set(record.with_savepoint(taken).to_value(), Some(note)).await?;
        Ok(json!({ "location": location, "job_id": id }))
    }

    async fn status_of(&self, ctx: &Ctx) -> Result<Observed, DriverError> {
        let (spec, record) = Self::parse(ctx)?;
        let Some(id) = record.job_id else {
            return Ok(match record.failed {
                Some(why) => Observed::Failed(why),
                None => Observed::Stopped,
            });
        };
        let app = ctx.app_id.unwrap_or_default();
        if let Some(b) = self.backoff.lock().unwrap_or_else(|e| e.into_inner()).get(&app) {
            if Instant::now() < b.until {
                return Ok(Observed::Unknown(b.why.clone()));
            }
        }
        let rest = self.rest(&spec);
        match rest.job(&id).await {
            Ok(found) => {
                self.backoff.lock().unwrap_or_else(|e| e.into_inner()).remove(&app);
                match found {
                    None => Ok(Observed::Failed(format!(
                        "the JobManager at {} does not know the Flink job {id} (it may have restarted without high \
                         availability)",
                        rest.shown
                    ))),
                    Some(job) => {
                        let failed = job.get("state").and_then(Value::as_str) == Some("FAILED");
                        let cause = if failed { rest.root_cause(&id).await } else { String::new() };
                        Ok(observe(&job, || cause))
                    }
                }
            }
            Err(u) => {
                let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
                let failures = backoff.get(&app).map_or(0, |b| b.failures) + 1;
                let wait = Duration::from_secs(1 << failures.min(5)).min(MAX_BACKOFF);
                let why = format!("{} (looked {failures} times; next look in {} s)", u.0, wait.as_secs());
                backoff.insert(app, Backoff { failures, until: Instant::now() + wait, why: why.clone() });
                Ok(Observed::Unknown(why))
            }
        }
    }
}

/// `read` of the jar at `path`, off the async workers; an error names the path.
async fn on_disk<T: Send + 'static>(path: PathBuf, read: fn(&Path) -> std::io::Result<T>) -> Result<T, DriverError> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || read(&path))
        .await
        .map_err(|e| DriverError::Failed(format!("internal: reading {shown} failed: {e}")))?
        .map_err(|e| DriverError::Invalid(format!("the jar {shown} cannot be read on this node: {e}")))
}

fn savepoint_record(location: &str, job_id: &str, trigger: &str, task_id: Option<i64>) -> Savepoint {
    Savepoint {
        location: location.to_string(),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        job_id: job_id.to_string(),
        trigger: trigger.to_string(),
        task_id,
    }
}

fn savepoint_note(sp: &Savepoint) -> Note {
    Note {
        kind: "app.savepoint",
        message: format!("savepoint of Flink job {} at {} ({})", sp.job_id, sp.location, sp.trigger),
        data: json!({ "location": sp.location, "job_id": sp.job_id, "trigger": sp.trigger, "task_id": sp.task_id }),
    }
}

impl Driver for FlinkDriver {
    fn name(&self) -> &'static str {
        "flink"
    }

    fn validate(&self, spec: &Value) -> Result<(), Vec<SpecError>> {
        FlinkSpec::parse(spec).map(|_| ())
    }

    /// The credentials in `rest_url`.
    fn secrets(&self, spec: &Value) -> Vec<Secret> {
        match spec.get("rest_url") {
            Some(Value::String(_)) => vec![Secret::UrlParts("/rest_url".into())],
            Some(_) => vec![Secret::Whole("/rest_url".into())],
            None => Vec::new(),
        }
    }

    fn start<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(self.start_job(ctx))
    }

    fn stop<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(self.stop_job(ctx))
    }

    fn status<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Observed, DriverError>> {
        Box::pin(self.status_of(ctx))
    }

    fn savepoint<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>> {
        Box::pin(self.take_savepoint(ctx))
    }

    fn run<'a>(&'a self, _ctx: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>> {
        Box::pin(async {
            Err(DriverError::Invalid(
                "a flink application takes commands (start, stop, restart, savepoint), not jobs".into(),
            ))
        })
    }

    fn shutdown(&self) -> BoxFut<'_, ()> {
        // Flink jobs run on the cluster, not on the node: they outlive it by design.
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(extra: Value) -> Value {
        let mut s = json!({ "rest_url": "http://127.0.0.1:8081", "jar": "/opt/jobs/counter.jar" });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            s[k] = v;
        }
        s
    }

    fn fields(spec: &Value) -> Vec<String> {
        FlinkSpec::parse(spec).err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_minimal_spec_takes_the_defaults() {
        let s = FlinkSpec::parse(&spec(json!({}))).unwrap();
        assert_eq!(s.restore, Restore::Latest);
        assert_eq!(s.stop, StopMode::Savepoint);
        assert_eq!(s.jar, Jar::Path("/opt/jobs/counter.jar".into()));
        assert!(!s.drain && !s.allow_non_restored_state && s.args.is_empty());
        let s =
            FlinkSpec::parse(&spec(json!({ "rest_url": "http://h:1/", "restore": "none", "stop": "cancel" }))).unwrap();
        assert_eq!((s.rest_url.as_str(), s.restore, s.stop), ("http://h:1", Restore::None, StopMode::Cancel));
        let s = FlinkSpec::parse(&spec(json!({ "restore": "file:///sp/savepoint-1" }))).unwrap();
        assert_eq!(s.restore, Restore::Path("file:///sp/savepoint-1".into()));
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(fields(&json!({})), vec!["rest_url", "jar"]);
        assert_eq!(fields(&json!({ "rest_url": "ftp://x", "jar_id": "a/b" })), vec!["jar_id", "rest_url"]);
        let bad = spec(json!({
            "args": ["a", 1], "parallelism": 0, "stop": "kill", "drain": "yes", "restore": "",
            "start_timeout_ms": 5, "colour": "red", "jar_id": "x.jar"
        }));
        let mut got = fields(&bad);
        got.sort();
        assert_eq!(
            got,
            vec!["args.1", "colour", "drain", "jar_id", "parallelism", "restore", "start_timeout_ms", "stop"]
        );
        assert_eq!(fields(&json!("flink")), vec![""]);
    }

    #[test]
    fn a_job_runs_once_every_task_runs() {
        let job = |state: &str, vertices: &[&str]| json!({ "state": state, "vertices": vertices.iter().map(|s| json!({ "status": s })).collect::<Vec<_>>() });
        let never = || -> String { panic!("the cause is read for FAILED only") };
        assert_eq!(observe(&job("RUNNING", &["RUNNING", "RUNNING"]), never), Observed::Running);
        assert_eq!(observe(&job("RUNNING", &["RUNNING", "FINISHED"]), never), Observed::Running);
        assert_eq!(observe(&job("RUNNING", &["RUNNING", "DEPLOYING"]), never), Observed::Starting);
        assert_eq!(observe(&job("RUNNING", &[]), never), Observed::Starting);
        for s in ["CREATED", "INITIALIZING", "RESTARTING", "RECONCILING"] {
            assert_eq!(observe(&job(s, &[]), never), Observed::Starting, "{s}");
        }
        for s in ["FINISHED", "CANCELED"] {
            assert_eq!(observe(&job(s, &[]), never), Observed::Stopped, "{s}");
        }
        assert_eq!(observe(&job("FAILED", &[]), || "boom".into()), Observed::Failed("boom".into()));
        assert!(matches!(observe(&job("SUSPENDED", &[]), never), Observed::Unknown(_)));
        assert!(matches!(observe(&json!({}), never), Observed::Unknown(_)));
    }

    #[test]
    fn a_savepoint_is_taken_only_with_its_location() {
        assert_eq!(trigger(&json!({ "status": { "id": "IN_PROGRESS" } })), Trigger::InProgress);
        assert_eq!(
            trigger(&json!({ "status": { "id": "COMPLETED" }, "operation": { "location": "file:/sp/savepoint-ab" } })),
            Trigger::Taken("file:/sp/savepoint-ab".into())
        );
        let failed = json!({ "status": { "id": "COMPLETED" }, "operation": { "failure-cause": {
            "class": "java.util.concurrent.CompletionException",
            "stack-trace": "java.util.concurrent.CompletionException: x\n\tat a.b\nCaused by: java.io.IOException: disk full\n\tat c.d"
        } } });
        let Trigger::Failed(why) = trigger(&failed) else { panic!("a failure cause is a failure") };
        assert!(why.contains("disk full"), "{why}");
        assert!(matches!(trigger(&json!({ "status": { "id": "COMPLETED" } })), Trigger::Failed(_)));
    }

    #[test]
    fn the_root_cause_comes_from_the_exception_history() {
        let history = json!({ "exceptionHistory": { "entries": [
            { "exceptionName": "java.lang.IllegalStateException", "stacktrace": "java.lang.IllegalStateException: bad input\n\tat x" }
        ] } });
        assert_eq!(root_cause(&history).unwrap(), "java.lang.IllegalStateException: bad input");
        // Flink 2.3 with no restarts: the job's own exception is the deepest cause.
        let suppressed = json!({ "exceptionHistory": { "entries": [{
            "exceptionName": "org.apache.flink.runtime.JobException",
            "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy\n\tat a\nCaused by: java.lang.RuntimeException: boom on the first record\n\tat b"
        }] } });
        let cause = root_cause(&suppressed).unwrap();
        assert!(cause.contains("boom on the first record"), "{cause}");
        assert_eq!(
            root_cause(&json!({ "root-exception": "java.lang.Error: old\n\tat y" })).unwrap(),
            "java.lang.Error: old"
        );
        assert_eq!(root_cause(&json!({})), None);
    }

    fn sp(n: i64, trigger: &str) -> Savepoint {
        Savepoint {
            location: format!("file:/sp/{n}"),
            at: String::new(),
            job_id: "j".into(),
            trigger: trigger.into(),
            task_id: Some(n),
        }
    }

    #[test]
    fn a_restart_restores_from_its_own_stop() {
        let record = Record { savepoints: vec![sp(1, "stop"), sp(2, "savepoint"), sp(3, "stop")], ..Record::default() };
        assert_eq!(restore_from(&Restore::Latest, &record, Some(9)).as_deref(), Some("file:/sp/3"));
        assert_eq!(restore_from(&Restore::None, &record, Some(9)), None);
        assert_eq!(restore_from(&Restore::Path("p".into()), &record, None).as_deref(), Some("p"));
        // Task 3 stopped with a savepoint and now starts: a restart, whatever `restore` says.
        assert_eq!(restore_from(&Restore::None, &record, Some(3)).as_deref(), Some("file:/sp/3"));
        assert_eq!(restore_from(&Restore::Path("p".into()), &record, Some(3)).as_deref(), Some("file:/sp/3"));
        assert_eq!(restore_from(&Restore::Latest, &Record::default(), Some(3)), None);
    }

    #[test]
    fn a_runtime_of_another_shape_reads_as_empty() {
        assert_eq!(Record::read(&Value::Null), Record::default());
        assert_eq!(Record::read(&json!("x")), Record::default());
        let r = Record::read(&json!({ "job_id": "ab", "other": 1 }));
        assert_eq!(r.job_id.as_deref(), Some("ab"));
    }

    #[test]
    fn job_ids_are_flinks_shape_and_new_each_time() {
        let a = new_job_id(7);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a.starts_with("0000000000000007"));
    }

    #[tokio::test]
    async fn a_start_that_failed_before_a_job_ran_is_failed_until_a_stop() {
        let d = FlinkDriver::new();
        let mut c = super::super::testing::ctx(Some(5), spec(json!({ "jar": "/nowhere/job.jar" })), json!({}));
        c.runtime = super::super::Runtime::in_memory(Value::Null);
        assert_eq!(d.status(&c).await.unwrap(), Observed::Stopped, "nothing submitted yet");
        let e = d.start(&c).await.unwrap_err();
        assert!(e.to_string().contains("/nowhere/job.jar"), "{e}");
        let Observed::Failed(why) = d.status(&c).await.unwrap() else { panic!("a failed start is failed") };
        assert!(why.contains("/nowhere/job.jar"), "{why}");
        d.stop(&c).await.unwrap();
        assert_eq!(d.status(&c).await.unwrap(), Observed::Stopped);
    }

    #[test]
    fn the_rest_url_credentials_are_secret() {
        let d = FlinkDriver::new();
        let s = spec(json!({ "rest_url": "http://admin:hunter2@jm:8081" }));
        let shown = super::super::secret::redact(&s, &d.secrets(&s));
        assert!(!shown.to_string().contains("hunter2"), "{shown}");
    }

    proptest! {
        #[test]
        fn the_record_keeps_the_newest_savepoints(n in 0usize..60) {
            let mut r = Record::default();
            for i in 0..n {
                r = r.with_savepoint(sp(i as i64, "savepoint"));
            }
            prop_assert_eq!(r.savepoints.len(), n.min(KEPT_SAVEPOINTS));
            if n > 0 {
                prop_assert_eq!(r.savepoints.last().map(|s| s.task_id), Some(Some(n as i64 - 1)));
            }
            prop_assert_eq!(Record::read(&r.to_value()), r);
        }

        #[test]
        fn any_json_job_is_read_without_panicking(state in "[A-Z]{0,12}", statuses in proptest::collection::vec("[A-Z]{0,10}", 0..5)) {
            let job = json!({ "state": state, "vertices": statuses.iter().map(|s| json!({ "status": s })).collect::<Vec<_>>() });
            let seen = observe(&job, || "cause".into());
            if seen == Observed::Running {
                prop_assert!(state == "RUNNING" && !statuses.is_empty());
            }
        }
    }
}
