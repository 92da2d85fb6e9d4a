//! Running a child process of the node: its environment, spawning it in its own process group
//! tied to the node, signalling that group, keeping the last lines of its output, and running a
//! command to its end (or its timeout).
//!
//! Why it exists: the `process` driver (a long-running child it supervises) and the `shell`
//! driver (one command per operation) start programs the same way, and what makes that safe is
//! kept in one place: task parameters reach a child only as environment variables (or, too long
//! for one, in a private file named by one); the child gets a minimal environment, not the
//! node's, which may hold its credentials; the child leads its own process group, so one signal
//! reaches everything it forked; it is forked from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the node; between fork and exec it checks
//! that the node's membership deadline (`ActBy`) has not passed, so a node paused past it begins
//! nothing; and a supervised child ([`ChildCommand`] with a watchdog) carries the node's marker
//! and is announced to the node's watchdog as it begins, which kills its whole group (and what
//! left it) once the node may no longer act (`drivers::watchdog`, docs/design.md#i1).
//!
//! Must never: put a shell of its own in front of a program or splice task parameters into a
//! command line; fork from any thread but the spawner's; signal anything but a child's own
//! process group; leave a command running once its caller stops waiting for it; block a tokio
//! worker; pass on more of the node's environment than `inherited` says. What an exit means (a
//! status, a restart) is for the drivers to decide, not for it.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::watchdog::{monotonic_ns, Watchdog, MARKER_VAR};
use super::{ChildSetup, Ctx, DriverError};

/// A line longer than this is cut, so a child writing without newlines cannot exhaust memory.
const MAX_LINE_BYTES: usize = 4_096;
/// How long SIGKILL may take to be reaped before `stop` reports failure (a process stuck in
/// uninterruptible sleep cannot be killed sooner).
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);
/// After a command exits, how long its pipes may stay silent before their readers stop short of
/// end-of-file: a background grandchild may hold them open for ever, and the result must not wait
/// for it. Counted by the reader itself, from a read that found nothing, so a reader that a busy
/// machine schedules late still takes what the command wrote before it exited.
const PIPE_DRAIN: Duration = Duration::from_millis(500);
/// The longest a result waits for its readers after the command exits, however late they run.
const DRAIN_CAP: Duration = Duration::from_secs(10);
/// Lines of stderr quoted in an error message, and its cap in bytes (it ends up in a task row).
const ERROR_TAIL_LINES: usize = 20;
const ERROR_TAIL_BYTES: usize = 2_000;

/// The longest value of a variable Rota sets for a command (64 KiB). Linux refuses to execute a
/// program with any one environment string longer than 128 KiB (`MAX_ARG_STRLEN`), and with all
/// of them together longer than a quarter of the stack limit (2 MiB with the usual 8 MiB): half
/// the first leaves room for the rest. Parameters longer than this as JSON go through a file
/// (`ROTA_PARAMS_FILE`), docs/drivers.md#large-parameters.
pub(crate) const ENV_VALUE_MAX: usize = 64 * 1024;
/// The name of every parameter file starts with this (so the node can clear its directory).
pub(crate) const PARAMS_FILE_PREFIX: &str = "params-";
/// The variable naming the parameter file.
const PARAMS_FILE_VAR: &str = "ROTA_PARAMS_FILE";
/// The variable holding a workflow run's context (docs/workflows.md#context).
const CONTEXT_VAR: &str = "ROTA_CONTEXT";
/// The variable naming the context's file, when it is too long for [`CONTEXT_VAR`].
const CONTEXT_FILE_VAR: &str = "ROTA_CONTEXT_FILE";
/// The name of every result file starts with this (cleared at start with the parameter files).
pub(crate) const RESULT_FILE_PREFIX: &str = "result-";
/// The variable naming the file a job may write its result to (docs/drivers.md#results).
const RESULT_FILE_VAR: &str = "ROTA_RESULT_FILE";
/// The largest result file read (1 MiB): a result is stored in the task row and read back by the
/// API and a reduce step, so it is bounded like what the node keeps of output.
pub(crate) const RESULT_FILE_MAX: u64 = 1024 * 1024;
/// What a command inherits from the node's environment whatever the configuration: where
/// programs are, whose home, the language, locale and time zone — nothing that holds a
/// credential. `drivers.pass_env` adds names (docs/drivers.md#environment-variables-process-and-shell).
pub(crate) const ALWAYS_INHERITED: [&str; 5] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// The variables of the task: who is calling, and its parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TaskEnv {
    /// Set on the command as they are.
    pub(crate) vars: Vec<(String, String)>,
    /// The parameters' JSON when it is longer than [`ENV_VALUE_MAX`]: written to a file whose
    /// path the command gets in `ROTA_PARAMS_FILE` instead of `ROTA_PARAMS`.
    pub(crate) params_file: Option<String>,
    /// A workflow node's context when it is longer than [`ENV_VALUE_MAX`]: written to a file
    /// named by `ROTA_CONTEXT_FILE` instead of `ROTA_CONTEXT`.
    pub(crate) context_file: Option<String>,
}

/// The variables every command gets: who is calling, and the task's parameters.
///
/// Parameters travel only here (in `ROTA_PARAMS`, or the file `ROTA_PARAMS_FILE` names when they
/// are too long for a variable, and in `ROTA_PARAM_<KEY>`), never in a command line. A
/// `ROTA_PARAM_<KEY>` value longer than [`ENV_VALUE_MAX`] is only in the JSON. A parameter
/// containing a NUL byte cannot be an environment variable and makes the call `Invalid`.
pub(crate) fn task_env(ctx: &Ctx) -> Result<TaskEnv, DriverError> {
    let mut env = Vec::new();
    if let Some(app) = ctx.app_id {
        env.push(("ROTA_APP_ID".to_string(), app.to_string()));
    }
    env.push(("ROTA_APP_NAME".to_string(), ctx.app_name.clone()));
    env.push(("ROTA_NODE_ID".to_string(), ctx.node_id.clone()));
    env.push(("ROTA_EPOCH".to_string(), ctx.epoch.to_string()));
    if let Some(task) = ctx.task_id {
        env.push(("ROTA_TASK_ID".to_string(), task.to_string()));
    }
    let json = ctx.params.to_string();
    let params_file = if json.len() > ENV_VALUE_MAX {
        Some(json)
    } else {
        env.push(("ROTA_PARAMS".to_string(), json));
        None
    };
    if let Some(params) = ctx.params.as_object() {
        for (key, value) in params {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                // Objects, arrays and null are only in ROTA_PARAMS.
                _ => continue,
            };
            if text.contains('\0') {
                return Err(DriverError::Invalid(format!(
                    "parameter `{key}` contains a NUL byte and cannot be passed as an environment variable"
                )));
            }
            if text.len() <= ENV_VALUE_MAX {
                env.push((format!("ROTA_PARAM_{}", env_key(key)), text));
            }
        }
    }
    let mut context_file = None;
    if let Some(context) = &ctx.context {
        let json = context.to_string();
        if json.len() > ENV_VALUE_MAX {
            context_file = Some(json);
        } else {
            env.push((CONTEXT_VAR.to_string(), json));
        }
    }
    Ok(TaskEnv { vars: env, params_file, context_file })
}

/// `foo-bar` → `FOO_BAR`: upper-case ASCII, everything else `_`.
fn env_key(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The node's variables a command inherits: those named in [`ALWAYS_INHERITED`] or `pass_env`
/// that `parent` (the node's environment) has. Never a `ROTA_*` one: the node's own settings
/// (`ROTA__…`) may hold credentials, and the task's variables must not be confused with them.
pub(crate) fn inherited<I>(parent: I, pass_env: &[String]) -> Vec<(OsString, OsString)>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    parent
        .into_iter()
        .filter(|(name, _)| {
            name.to_str().is_some_and(|name| {
                !name.starts_with("ROTA_") && (ALWAYS_INHERITED.contains(&name) || pass_env.iter().any(|p| p == name))
            })
        })
        .collect()
}

/// A command ready to spawn, the watchdog its process group is announced to, and the parameters
/// to write to a file first (too long for the environment).
pub(crate) struct ChildCommand {
    cmd: Command,
    watch: Option<Watchdog>,
    params: Vec<PendingParams>,
    /// Where to create the command's result file, when it may write one (a job).
    result_dir: Option<PathBuf>,
}

impl ChildCommand {
    /// Give the command a result file: an empty private file in the node's parameter
    /// directory, named by `ROTA_RESULT_FILE`, read when the command has exited
    /// ([`Completed::output`]) and removed then. Only jobs (`run`) get one.
    pub(crate) fn with_result_file(mut self, setup: &ChildSetup) -> Self {
        self.result_dir = Some(setup.params_dir.clone().unwrap_or_else(std::env::temp_dir));
        self
    }
}

/// Parameters to write to a file before the command is spawned.
struct PendingParams {
    dir: PathBuf,
    json: String,
    /// The variable that names the file.
    var: &'static str,
}

/// A parameter file (0600), removed when this is dropped: when the command has ended (a `run`,
/// a `shell` command) or the supervised child has exited (`process` `start`).
#[derive(Debug)]
pub(crate) struct ParamsFile {
    path: PathBuf,
    /// Another file of the same command (its context's), removed with this one.
    also: Option<Box<ParamsFile>>,
}

impl ParamsFile {
    /// Write `json` to a new file in `dir` that only the node's user can read. `create_new`: an
    /// existing file (or a link planted in a shared temporary directory) is never written through.
    fn write(dir: &Path, json: &str) -> io::Result<ParamsFile> {
        use std::io::Write;
        let (guard, mut file) = ParamsFile::create(dir, PARAMS_FILE_PREFIX)?;
        file.write_all(json.as_bytes())?;
        Ok(guard)
    }

    /// A new empty file in `dir` named `{prefix}{pid}-{n}.json`, readable by the node's user
    /// only, and its guard.
    fn create(dir: &Path, prefix: &str) -> io::Result<(ParamsFile, std::fs::File)> {
        use std::os::unix::fs::OpenOptionsExt;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, AtomicOrdering::Relaxed);
        let path = dir.join(format!("{prefix}{}-{n}.json", std::process::id()));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        Ok((ParamsFile { path, also: None }, file))
    }
}

/// Read a job's result file after its command exited: None when it is empty (whitespace only)
/// or gone; the JSON value it holds; an error saying what is wrong with it otherwise (not a
/// regular file, larger than [`RESULT_FILE_MAX`], not JSON).
pub(crate) fn read_result_file(path: &Path) -> Result<Option<Value>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Not through a link or into a FIFO the command left in its place: a regular file only.
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open its result file ({RESULT_FILE_VAR}): {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("cannot read its result file ({RESULT_FILE_VAR}): {e}"))?;
    if !meta.is_file() {
        return Err(format!("its result file ({RESULT_FILE_VAR}) was replaced by something that is not a file"));
    }
    let mut text = Vec::new();
    file.take(RESULT_FILE_MAX + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read its result file ({RESULT_FILE_VAR}): {e}"))?;
    if text.len() as u64 > RESULT_FILE_MAX {
        return Err(format!(
            "its result file ({RESULT_FILE_VAR}) is larger than {RESULT_FILE_MAX} bytes: write a smaller result \
             (large data belongs in storage the result names)"
        ));
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        format!("its result file ({RESULT_FILE_VAR}) is not valid JSON ({e}): write one JSON value, or nothing")
    })
}

impl Drop for ParamsFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a parameter file");
            }
        }
    }
}

/// A command ready to spawn: no shell, own process group, death signal, stdin closed, a minimal
/// environment — the node's variables [`inherited`] says, then the spec's `env`, then the task
/// variables. With a watchdog in `setup`, the group is announced to it as it begins (killed once
/// the node may no longer act); with `mark` too, the child carries the node's marker
/// ([`MARKER_VAR`]), so that what it leaves behind is the node's to kill (a supervised child: a
/// `process` application or job, a `shell` job — not a `shell` application's `start`, which may
/// leave a daemon on purpose).
pub(crate) fn command_for(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&std::path::Path>,
    ctx: &Ctx,
    setup: &ChildSetup,
    mark: bool,
) -> Result<ChildCommand, DriverError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd.env_clear();
    cmd.envs(inherited(std::env::vars_os(), &setup.pass_env));
    cmd.envs(env);
    let task = task_env(ctx)?;
    cmd.envs(task.vars);
    let watch = setup.watchdog.as_ref();
    if let (Some(w), true) = (watch, mark) {
        cmd.env(MARKER_VAR, w.marker());
    }
    let dir = || setup.params_dir.clone().unwrap_or_else(std::env::temp_dir);
    let params: Vec<PendingParams> = [(task.params_file, PARAMS_FILE_VAR), (task.context_file, CONTEXT_FILE_VAR)]
        .into_iter()
        .filter_map(|(json, var)| Some(PendingParams { dir: dir(), json: json?, var }))
        .collect();
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.kill_on_drop(false);
    cmd.process_group(0);
    // The monotonic clock read before the time left, so the deadline can only come out earlier.
    let start = monotonic_ns();
    let left = ctx.act_by.left(ctx.epoch, &format_args!("{program:?}"))?;
    // Off Linux only this check is made (the child's needs `pre_exec` and its Linux calls).
    #[cfg(not(target_os = "linux"))]
    let _ = (start, left);
    #[cfg(target_os = "linux")]
    {
        let act_by = start.saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX));
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
        // (prctl, getppid, clock_gettime) and builds an io::Error without allocating.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The node may have died between fork and prctl; no signal would ever come then.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // The node may have been paused past its deadline after it asked (`ActBy`): the
                // command must not begin then. `ETIME` reaches `spawn` as the exec error.
                if monotonic_ns() >= act_by {
                    return Err(io::Error::from_raw_os_error(FENCED_ERRNO));
                }
                Ok(())
            });
        }
    }
    Ok(ChildCommand { cmd, watch: watch.cloned(), params, result_dir: None })
}

/// The errno a child reports from between fork and exec when its node's deadline had passed
/// (`execve` itself never returns `ETIME`).
const FENCED_ERRNO: i32 = libc::ETIME;

struct SpawnRequest {
    cmd: ChildCommand,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The thread every child is forked from.
///
/// Why: `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
/// Forking from whatever thread a tokio task happens to run on (a blocking-pool thread retires
/// after 10 s idle) would kill healthy children at random. This thread lives as long as the node,
/// and runs its own small runtime so the children's pipes and exits are driven there.
fn spawner() -> Result<&'static mpsc::UnboundedSender<SpawnRequest>, DriverError> {
    static SPAWNER: OnceLock<Result<mpsc::UnboundedSender<SpawnRequest>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot build the spawner runtime: {e}"))?;
            let (tx, mut rx) = mpsc::unbounded_channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("rota-spawner".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(SpawnRequest { cmd: ChildCommand { mut cmd, watch, .. }, reply }) =
                            rx.recv().await
                        {
                            let spawned = cmd.spawn();
                            // Announced at once, from this thread, before anyone hears of it.
                            if let (Ok(child), Some(w)) = (&spawned, &watch) {
                                if let Some(pid) = child.id().and_then(|id| libc::pid_t::try_from(id).ok()) {
                                    w.register(pid);
                                }
                            }
                            // The caller may have gone; the child then is dropped and reaped.
                            let _ = reply.send(spawned);
                        }
                    })
                })
                .map_err(|e| format!("cannot start the spawner thread: {e}"))?;
            Ok(tx)
        })
        .as_ref()
        .map_err(|e| DriverError::Failed(e.clone()))
}

/// Spawn on the spawner thread (and announce it to the watchdog, if it has one); the parameter
/// file it reads, if any, which must be kept until the command has ended.
pub(crate) async fn spawn(mut cmd: ChildCommand) -> Result<(Child, Option<ParamsFile>), DriverError> {
    let program = format!("{:?}", cmd.cmd.as_std().get_program());
    let mut params: Option<ParamsFile> = None;
    for PendingParams { dir, json, var } in std::mem::take(&mut cmd.params) {
        // Written off the tokio workers: it may be megabytes.
        let mut file = {
            let file = tokio::task::spawn_blocking(move || ParamsFile::write(&dir, &json).map_err(|e| (dir, e)))
                .await
                .map_err(|e| {
                    DriverError::Failed(format!("cannot start {program}: writing its parameters was lost: {e}"))
                })?
                .map_err(|(dir, e)| {
                    DriverError::Failed(format!(
                        "cannot start {program}: cannot write its parameters to a file in {}: {e}",
                        dir.display()
                    ))
                })?;
            cmd.cmd.env(var, &file.path);
            file
        };
        file.also = params.take().map(Box::new);
        params = Some(file);
    }
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send(SpawnRequest { cmd, reply })
        .map_err(|_| DriverError::Failed("the spawner thread has stopped".into()))?;
    match answer.await {
        Ok(Ok(child)) => Ok((child, params)),
        Ok(Err(e)) if e.raw_os_error() == Some(FENCED_ERRNO) => Err(DriverError::Fenced(format!(
            "{program} was not begun: this node's membership deadline passed before the command could start"
        ))),
        // Too long a command line or environment: the same call fails the same way every time.
        Ok(Err(e)) if e.raw_os_error() == Some(libc::E2BIG) => Err(DriverError::Invalid(format!(
            "cannot start {program}: its arguments and environment are too long for the system (E2BIG: at most \
             128 KiB per argument or variable, and a quarter of the stack limit for all of them); shorten the \
             spec's `command` or `env`, or the parameters"
        ))),
        Ok(Err(e)) => Err(DriverError::Failed(format!("cannot start {program}: {e}"))),
        Err(_) => Err(DriverError::Failed("the spawner thread dropped the request".into())),
    }
}

/// Send `signal` to the whole process group led by `pid`. A group that is already gone is fine.
pub(crate) fn signal_group(pid: libc::pid_t, signal: libc::c_int) {
    if pid <= 1 {
        // kill(-1) or kill(0) would signal far more than the group.
        return;
    }
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(-pid, signal) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pid, signal, error = %e, "cannot signal process group");
        }
    }
}

/// "exited with code 3" / "killed by signal 9 (SIGKILL)".
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        (None, None) => format!("ended ({status})"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGPIPE => " (SIGPIPE)",
        _ => "",
    }
}

/// "stderr tail: a | b" (the last lines, capped), or "stderr empty".
pub(crate) fn stderr_summary(lines: &[String]) -> String {
    summary("stderr", lines)
}

/// The stderr tail; when stderr is empty, the stdout tail instead (some programs report errors
/// there, e.g. `systemctl status`).
pub(crate) fn output_summary(stdout: &[String], stderr: &[String]) -> String {
    if stderr.is_empty() && !stdout.is_empty() {
        format!("stderr empty; {}", summary("stdout", stdout))
    } else {
        stderr_summary(stderr)
    }
}

/// "stdout tail: …" or "stdout empty", capped like [`stderr_summary`].
pub(crate) fn summary(stream: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return format!("{stream} empty");
    }
    let start = lines.len().saturating_sub(ERROR_TAIL_LINES);
    let mut text = lines[start..].join(" | ");
    if text.len() > ERROR_TAIL_BYTES {
        // Keep the end: the last words are usually the reason.
        let mut cut = text.len() - ERROR_TAIL_BYTES;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = format!("…{}", &text[cut..]);
    }
    format!("{stream} tail: {text}")
}

/// The last lines of one output stream.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    lines: Arc<std::sync::Mutex<VecDeque<String>>>,
    cap: usize,
    /// Set once the command has exited: its reader then stops at a silence of [`PIPE_DRAIN`].
    exited: Arc<std::sync::atomic::AtomicBool>,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            lines: Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(cap.min(64)))),
            cap,
            exited: Arc::default(),
        }
    }

    /// The command has exited: what its pipe still holds is read, then the reader stops at the
    /// first silence, even if a grandchild keeps the pipe open.
    fn command_exited(&self) {
        self.exited.store(true, AtomicOrdering::SeqCst);
    }

    fn push(&self, line: String) {
        if self.cap == 0 {
            return;
        }
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == self.cap {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

/// Read `pipe` to its end in the background, keeping its last `cap` lines.
pub(crate) fn capture<R>(pipe: Option<R>, cap: usize) -> (Tail, Option<JoinHandle<()>>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let tail = Tail::new(cap);
    let handle = pipe.map(|mut pipe| {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8_192];
            let mut line = Vec::new();
            let mut cut = false;
            loop {
                // `read` is cancel-safe: a read given up at the silence loses nothing. The timer
                // only runs after the read found the pipe empty (a timeout polls its future first).
                let n = match tokio::time::timeout(PIPE_DRAIN, pipe.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) if tail.exited.load(AtomicOrdering::SeqCst) => break,
                    Err(_) => continue,
                };
                for &byte in &buf[..n] {
                    if byte == b'\n' {
                        tail.push(finish_line(&mut line, &mut cut));
                    } else if line.len() < MAX_LINE_BYTES {
                        line.push(byte);
                    } else {
                        cut = true;
                    }
                }
            }
            if !line.is_empty() {
                tail.push(finish_line(&mut line, &mut cut));
            }
        })
    });
    (tail, handle)
}

fn finish_line(line: &mut Vec<u8>, cut: &mut bool) -> String {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(line).into_owned();
    if *cut {
        text.push_str(" [line cut]");
    }
    line.clear();
    *cut = false;
    text
}

/// A command that ran to its end.
#[derive(Debug)]
pub(crate) struct Completed {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<String>,
    pub(crate) stderr: Vec<String>,
    /// What its result file held ([`read_result_file`]); `Ok(None)` without one.
    pub(crate) result: Result<Option<Value>, String>,
}

impl Completed {
    /// `{"exit_code": N, "stdout_tail": [...], "stderr_tail": [...]}`
    pub(crate) fn to_json(&self) -> Value {
        json!({ "exit_code": self.status.code(), "stdout_tail": self.stdout, "stderr_tail": self.stderr })
    }

    /// A job's result: what it wrote to its result file, else [`Completed::to_json`]. A result
    /// file that cannot be taken (too large, not JSON) fails the attempt, saying why.
    pub(crate) fn output(&self) -> Result<Value, DriverError> {
        match &self.result {
            Ok(Some(v)) => Ok(v.clone()),
            Ok(None) => Ok(self.to_json()),
            Err(why) => Err(DriverError::Failed(format!("the command succeeded but {why}"))),
        }
    }
}

/// Kills the group if the caller stops waiting (the future is dropped) before the leader exits,
/// so a cancelled call does not leave a command running unsupervised; and tells the watchdog the
/// group ended, however it ended (swept when the group was killed or `sweep` asked for).
struct GroupGuard {
    pid: libc::pid_t,
    armed: bool,
    sweep: bool,
    watch: Option<Watchdog>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pid, libc::SIGKILL);
        }
        if let Some(w) = &self.watch {
            w.release(self.pid, self.armed || self.sweep);
        }
    }
}

/// Spawn `cmd`, wait for it (at most `timeout`: then SIGKILL its group and answer `Timeout`) and
/// collect the last `tail_lines` lines of its output. With `sweep`, whatever is left of the group
/// after the leader exits is killed too (the process driver's rule: the group lives as long as
/// its leader); without, background processes it started are left alone (a shell `start` command
/// may daemonize on purpose).
pub(crate) async fn run_to_completion(
    cmd: ChildCommand,
    timeout: Option<Duration>,
    tail_lines: usize,
    sweep: bool,
) -> Result<Completed, DriverError> {
    let started = Instant::now();
    let watch = cmd.watch.clone();
    let mut cmd = cmd;
    // Removed when this returns, however it returns: the command has ended (or was killed).
    let result_file = match cmd.result_dir.take() {
        Some(dir) => {
            let (file, _) =
                tokio::task::spawn_blocking(move || ParamsFile::create(&dir, RESULT_FILE_PREFIX).map_err(|e| (dir, e)))
                    .await
                    .map_err(|e| DriverError::Failed(format!("cannot create a result file: {e}")))?
                    .map_err(|(dir, e)| {
                        DriverError::Failed(format!("cannot create a result file in {}: {e}", dir.display()))
                    })?;
            cmd.cmd.env(RESULT_FILE_VAR, &file.path);
            Some(file)
        }
        None => None,
    };
    let (mut child, _params) = spawn(cmd).await?;
    let pid = child_pid(&child)?;
    let mut guard = GroupGuard { pid, armed: true, sweep, watch };
    let (stdout, out_reader) = capture(child.stdout.take(), tail_lines);
    let (stderr, err_reader) = capture(child.stderr.take(), tail_lines);
    let waited = match timeout {
        Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
            Ok(waited) => waited,
            Err(_) => {
                signal_group(pid, libc::SIGKILL);
                // Reap it, so no zombie is left; SIGKILL makes this quick.
                let _ = tokio::time::timeout(KILL_WAIT, child.wait()).await;
                (guard.armed, guard.sweep) = (false, true);
                drain([&stdout, &stderr], out_reader, err_reader).await;
                return Err(DriverError::Timeout(format!(
                    "did not finish within {} ms; its process group was killed; {}",
                    limit.as_millis(),
                    stderr_summary(&stderr.snapshot())
                )));
            }
        },
        None => child.wait().await,
    };
    guard.armed = false;
    let status = waited.map_err(|e| DriverError::Failed(format!("cannot wait for the command: {e}")))?;
    if sweep {
        signal_group(pid, libc::SIGKILL);
    }
    drain([&stdout, &stderr], out_reader, err_reader).await;
    tracing::debug!(pid, elapsed_ms = started.elapsed().as_millis() as u64, exit = %describe_exit(status), "command finished");
    // Read after the command exited (and its group is gone when swept), then removed.
    let result = match result_file {
        Some(file) if status.success() => tokio::task::spawn_blocking(move || read_result_file(&file.path))
            .await
            .unwrap_or_else(|e| Err(format!("reading its result file was lost: {e}"))),
        _ => Ok(None),
    };
    Ok(Completed { status, stdout: stdout.snapshot(), stderr: stderr.snapshot(), result })
}

async fn drain(tails: [&Tail; 2], a: Option<JoinHandle<()>>, b: Option<JoinHandle<()>>) {
    for tail in tails {
        tail.command_exited();
    }
    let _ = tokio::time::timeout(DRAIN_CAP, async move {
        for handle in [a, b].into_iter().flatten() {
            let _ = handle.await;
        }
    })
    .await;
}

pub(crate) fn child_pid(child: &Child) -> Result<libc::pid_t, DriverError> {
    child
        .id()
        .and_then(|id| libc::pid_t::try_from(id).ok())
        .ok_or_else(|| DriverError::Failed("the child exited before its pid could be read".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::testing::ctx;

    /// A pipe whose first read holds its thread for 800 ms before it returns the command's last
    /// line — a reader that a busy machine runs late — and then ends.
    struct LateReader(bool);

    impl AsyncRead for LateReader {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if !self.0 {
                std::thread::sleep(Duration::from_millis(800));
                buf.put_slice(b"k=1\n");
                self.0 = true;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_run_late_still_takes_what_the_command_wrote() {
        let (tail, reader) = capture(Some(LateReader(false)), 10);
        tokio::time::sleep(Duration::from_millis(50)).await;
        drain([&tail, &Tail::new(10)], reader, None).await;
        assert_eq!(tail.snapshot(), ["k=1"]);
    }

    #[tokio::test]
    async fn a_pipe_a_grandchild_holds_open_does_not_hold_the_result() {
        let (mut write, read) = tokio::io::duplex(64);
        let (tail, reader) = capture(Some(read), 10);
        tokio::io::AsyncWriteExt::write_all(&mut write, b"last\n").await.unwrap();
        let started = Instant::now();
        drain([&tail, &Tail::new(10)], reader, None).await;
        assert!(started.elapsed() < DRAIN_CAP, "the silence ends the wait: {:?}", started.elapsed());
        assert_eq!(tail.snapshot(), ["last"]);
        drop(write);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_deadline_passing_between_the_check_and_the_fork_stops_the_child_before_exec() {
        // A node paused after its driver asked `ActBy` and before the spawner forked: the child
        // itself sees the deadline passed and never execs.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let by = std::time::Instant::now() + Duration::from_millis(300);
        let c = Ctx { act_by: crate::drivers::ActBy::new(move |_, _| Some(by)), ..ctx(None, json!({}), json!({})) };
        let cmd = command_for(
            "/usr/bin/touch",
            &[marker.display().to_string()],
            &BTreeMap::new(),
            None,
            &c,
            &ChildSetup::default(),
            false,
        )
        .unwrap();
        tokio::time::sleep_until(Instant::from_std(by + Duration::from_millis(50))).await;
        let err = spawn(cmd).await.unwrap_err();
        assert!(matches!(&err, DriverError::Fenced(m) if m.contains("touch")), "{err:?}");
        assert!(!marker.exists(), "the child began after the deadline");
    }

    #[test]
    fn env_keys_are_sanitised() {
        assert_eq!(env_key("foo-bar.baz"), "FOO_BAR_BAZ");
        assert_eq!(env_key("é1"), "_1");
        let err = task_env(&ctx(None, json!({}), json!({ "a": "x\u{0}y" }))).unwrap_err();
        assert!(err.is_permanent());
    }

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    #[test]
    fn a_command_inherits_only_the_minimal_set_and_the_allowlist() {
        let node = os(&[
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/rota"),
            ("LANG", "C.UTF-8"),
            ("TZ", "UTC"),
            ("PGPASSWORD", "pg-secret"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
            ("ROTA__DATABASE__URL", "postgres://u:pw@db/rota"),
            ("ROTA_SUPERVISOR", "an-older-marker"),
            ("AWS_PROFILE", "ops"),
            ("USER", "rota"),
        ]);
        let names = |pass: &[&str]| -> Vec<String> {
            let pass: Vec<String> = pass.iter().map(|p| p.to_string()).collect();
            inherited(node.clone(), &pass).into_iter().map(|(k, _)| k.into_string().unwrap()).collect()
        };
        assert_eq!(names(&[]), ["PATH", "HOME", "LANG", "TZ"]);
        // An allowlisted name passes; a ROTA_ one never does, even if it were listed.
        assert_eq!(
            names(&["AWS_PROFILE", "ROTA__DATABASE__URL", "ABSENT"]),
            ["PATH", "HOME", "LANG", "TZ", "AWS_PROFILE"]
        );
        let all = inherited(node.clone(), &["AWS_PROFILE".into()]);
        assert!(all.contains(&(OsString::from("AWS_PROFILE"), OsString::from("ops"))));
    }

    #[test]
    fn a_workflow_context_is_a_variable_or_a_file() {
        let none = task_env(&ctx(None, json!({}), json!({}))).unwrap();
        assert!(none.vars.iter().all(|(k, _)| k != "ROTA_CONTEXT") && none.context_file.is_none());
        let small = Ctx { context: Some(json!({ "a": 1 })), ..ctx(None, json!({}), json!({})) };
        let small = task_env(&small).unwrap();
        assert!(small.vars.contains(&("ROTA_CONTEXT".into(), r#"{"a":1}"#.into())));
        let big = json!({ "a": "x".repeat(ENV_VALUE_MAX + 1) });
        let large = task_env(&Ctx { context: Some(big.clone()), ..ctx(None, json!({}), json!({})) }).unwrap();
        assert_eq!(large.context_file, Some(big.to_string()));
        assert!(large.vars.iter().all(|(k, _)| k != "ROTA_CONTEXT"));
    }

    #[test]
    fn parameters_too_long_for_a_variable_go_to_a_file() {
        let small = task_env(&ctx(None, json!({}), json!({ "name": "n" }))).unwrap();
        assert_eq!(small.params_file, None);
        assert!(small.vars.contains(&("ROTA_PARAMS".into(), r#"{"name":"n"}"#.into())));
        let big = "x".repeat(ENV_VALUE_MAX + 1);
        let params = json!({ "blob": big, "name": "n", "n": 5 });
        let large = task_env(&ctx(None, json!({}), params.clone())).unwrap();
        assert_eq!(large.params_file.as_deref(), Some(params.to_string().as_str()));
        let names: Vec<&str> = large.vars.iter().map(|(k, _)| k.as_str()).collect();
        assert!(!names.contains(&"ROTA_PARAMS"), "{names:?}");
        assert!(!names.contains(&"ROTA_PARAM_BLOB"), "a value too long for a variable is only in the file");
        assert!(names.contains(&"ROTA_PARAM_NAME") && names.contains(&"ROTA_PARAM_N"), "{names:?}");
        assert!(large.vars.iter().all(|(_, v)| v.len() <= ENV_VALUE_MAX));
    }

    #[test]
    fn the_nodes_parameter_directory_is_private_and_cleared_at_start() {
        use std::os::unix::fs::PermissionsExt;
        let data = tempfile::tempdir().unwrap();
        let dir = ChildSetup::params_dir_in(data.path()).unwrap();
        assert!(dir.is_absolute() && dir.ends_with("params"));
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        // What an earlier life of the node left is removed; anything else is left alone.
        let left = ParamsFile::write(&dir, "{}").unwrap();
        let path = left.path.clone();
        std::mem::forget(left);
        let (result, _) = ParamsFile::create(&dir, RESULT_FILE_PREFIX).unwrap();
        let result_path = result.path.clone();
        std::mem::forget(result);
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ChildSetup::params_dir_in(data.path()).unwrap(), dir);
        assert!(!path.exists() && !result_path.exists());
        assert!(dir.join("notes.txt").exists());
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_parameter_file_is_private_and_removed_with_its_guard() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = ParamsFile::write(dir.path(), "{\"a\":1}").unwrap();
        let path = file.path.clone();
        assert!(path.file_name().unwrap().to_string_lossy().starts_with(PARAMS_FILE_PREFIX));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}");
        drop(file);
        assert!(!path.exists());
    }
}
