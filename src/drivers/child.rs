//! Running a child process of the node: its environment, spawning it in its own process group
//! tied to the node, signalling that group, keeping the last lines of its output, and running a
//! command to its end (or its timeout).
//!
//! Why it exists: the `process` driver (a long-running child it supervises) and the `shell`
//! driver (one command per operation) start programs the same way, and what makes that safe is
//! kept in one place: task parameters reach a child only as environment variables; the node's own
//! `ROTA_*` variables are not passed on; the child leads its own process group, so one signal
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
//! worker. What an exit means (a status, a restart) is for the drivers to decide, not for it.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::watchdog::{monotonic_ns, Watchdog, MARKER_VAR};
use super::{Ctx, DriverError};

/// A line longer than this is cut, so a child writing without newlines cannot exhaust memory.
const MAX_LINE_BYTES: usize = 4_096;
/// How long SIGKILL may take to be reaped before `stop` reports failure (a process stuck in
/// uninterruptible sleep cannot be killed sooner).
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);
/// After a command exits, how long to wait for its pipes to reach end-of-file: a background
/// grandchild may hold them open for ever, and the result must not wait for it.
const PIPE_DRAIN: Duration = Duration::from_millis(500);
/// Lines of stderr quoted in an error message, and its cap in bytes (it ends up in a task row).
const ERROR_TAIL_LINES: usize = 20;
const ERROR_TAIL_BYTES: usize = 2_000;

/// The variables every command gets: who is calling, and the task's parameters.
///
/// Parameters travel only here (and in `ROTA_PARAMS`), never in a command line. A parameter
/// containing a NUL byte cannot be an environment variable and makes the call `Invalid`.
pub(crate) fn task_env(ctx: &Ctx) -> Result<Vec<(String, String)>, DriverError> {
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
    env.push(("ROTA_PARAMS".to_string(), ctx.params.to_string()));
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
            env.push((format!("ROTA_PARAM_{}", env_key(key)), text));
        }
    }
    Ok(env)
}

/// `foo-bar` → `FOO_BAR`: upper-case ASCII, everything else `_`.
fn env_key(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// A command ready to spawn, and the watchdog its process group is announced to.
pub(crate) struct ChildCommand {
    cmd: Command,
    watch: Option<Watchdog>,
}

/// A command ready to spawn: no shell, own process group, death signal, stdin closed, the node's
/// environment without its own `ROTA_*` variables (which may hold credentials, and must not be
/// confused with the task's), then the spec's `env`, then the task variables. With `watch`, the
/// group is announced to the node's watchdog as it begins (killed once the node may no longer
/// act); with `mark` too, the child carries the node's marker ([`MARKER_VAR`]), so that what it
/// leaves behind is the node's to kill (a supervised child: a `process` application or job, a
/// `shell` job — not a `shell` application's `start`, which may leave a daemon on purpose).
pub(crate) fn command_for(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&std::path::Path>,
    ctx: &Ctx,
    watch: Option<&Watchdog>,
    mark: bool,
) -> Result<ChildCommand, DriverError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ROTA_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env);
    cmd.envs(task_env(ctx)?);
    if let (Some(w), true) = (watch, mark) {
        cmd.env(MARKER_VAR, w.marker());
    }
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
    Ok(ChildCommand { cmd, watch: watch.cloned() })
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
                        while let Some(SpawnRequest { cmd: ChildCommand { mut cmd, watch }, reply }) = rx.recv().await {
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

/// Spawn on the spawner thread (and announce it to the watchdog, if it has one).
pub(crate) async fn spawn(cmd: ChildCommand) -> Result<Child, DriverError> {
    let program = format!("{:?}", cmd.cmd.as_std().get_program());
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send(SpawnRequest { cmd, reply })
        .map_err(|_| DriverError::Failed("the spawner thread has stopped".into()))?;
    match answer.await {
        Ok(Ok(child)) => Ok(child),
        Ok(Err(e)) if e.raw_os_error() == Some(FENCED_ERRNO) => Err(DriverError::Fenced(format!(
            "{program} was not begun: this node's membership deadline passed before the command could start"
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
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self { lines: Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(cap.min(64)))), cap }
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
                let n = match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
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
}

impl Completed {
    /// `{"exit_code": N, "stdout_tail": [...], "stderr_tail": [...]}`
    pub(crate) fn to_json(&self) -> Value {
        json!({ "exit_code": self.status.code(), "stdout_tail": self.stdout, "stderr_tail": self.stderr })
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
    let mut child = spawn(cmd).await?;
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
                drain(out_reader, err_reader).await;
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
    drain(out_reader, err_reader).await;
    tracing::debug!(pid, elapsed_ms = started.elapsed().as_millis() as u64, exit = %describe_exit(status), "command finished");
    Ok(Completed { status, stdout: stdout.snapshot(), stderr: stderr.snapshot() })
}

async fn drain(a: Option<JoinHandle<()>>, b: Option<JoinHandle<()>>) {
    let _ = tokio::time::timeout(PIPE_DRAIN, async move {
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_deadline_passing_between_the_check_and_the_fork_stops_the_child_before_exec() {
        // A node paused after its driver asked `ActBy` and before the spawner forked: the child
        // itself sees the deadline passed and never execs.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let by = std::time::Instant::now() + Duration::from_millis(300);
        let c = Ctx { act_by: crate::drivers::ActBy::new(move |_, _| Some(by)), ..ctx(None, json!({}), json!({})) };
        let cmd =
            command_for("/usr/bin/touch", &[marker.display().to_string()], &BTreeMap::new(), None, &c, None, false)
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
}
