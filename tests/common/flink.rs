//! A real Apache Flink 2.3.0 standalone cluster (one JobManager, one TaskManager with 2 slots) on
//! loopback ports, and the small test jobs under `tests/flink/`, for tests of the `flink` driver.
//!
//! Flink is not in the repository: `scripts/prereqs.sh test` (which `scripts/test.sh` runs)
//! unpacks it from PyPI into `ROTA_FLINK_CACHE` (default `~/.cache/rota/flink-2.3.0`); a test
//! fails naming that step when it is missing. Each [`Flink`] has a private configuration and
//! keeps every file it writes (pid files, logs, uploads, temporary files, checkpoints,
//! savepoints) in its own temporary directory, because Flink's defaults put them in /tmp, shared
//! between runs.
//!
//! Ports: the REST port and the JobManager's RPC port are picked free at start (the TaskManager
//! must be told the RPC port); every other listening port (TaskManager RPC and data, blob server,
//! metrics query service) is 0, so the kernel picks it as it binds and no other process can take
//! it in between. A start whose JobManager dies (a picked port taken after all) is tried again on
//! fresh ports.
//!
//! The JVMs are daemons (`start-cluster.sh` detaches them), so they are not this process's
//! children: Drop kills them by their pid files and by their command line naming this cluster's
//! directory, and a small watchdog shell kills them too if the test process dies without
//! dropping (a SIGKILL, an abort), so no JVM outlives its test.
//!
//! Memory: each JVM is given 1024m (`memory.process.size`) and takes ~250–360 MB resident;
//! managed memory is 64m, since the default fraction leaves the task heap too small at 1 GiB.
//! Time: start to ready takes 12–16 s on two cores (33 s seen when they were busier).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, wait_until};

/// The Flink version `scripts/prereqs.sh` installs.
pub const VERSION: &str = "2.3.0";

/// Entry class of the unbounded keyed counter (`tests/flink/rota/flinktest/CounterJob.java`):
/// `--out PATH` (`"<max> <first>"`: the highest per-key count and the first this run saw,
/// rewritten atomically at most every 200 ms; see [`read_count`]), `--rate N` records/s (default
/// 200), `--restarts N` (default 0: any failure fails the job).
pub const COUNTER: &str = "rota.flinktest.CounterJob";
/// Entry class of a job that is accepted and fails on its first record, with no restarts.
pub const FAILING: &str = "rota.flinktest.FailingJob";

/// How long a cluster may take to become ready (two busy cores have taken 33 s).
const START_DEADLINE: Duration = Duration::from_secs(90);
/// Name in the pid and log files, instead of `$USER` (unset in some containers).
const IDENT: &str = "rota-test";

/// Where `scripts/prereqs.sh` unpacked Flink (the folder holding `pyflink/`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("ROTA_FLINK_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").expect("HOME must be set to find the Flink cache");
            PathBuf::from(home).join(".cache/rota").join(format!("flink-{VERSION}"))
        }
    }
}

/// `FLINK_HOME`; panics naming the install step when Flink is not there.
pub fn flink_home() -> PathBuf {
    let cache = cache_dir();
    let home = cache.join("pyflink");
    let complete = cache.join(".complete").is_file()
        && home.join("bin/start-cluster.sh").is_file()
        && home.join(format!("lib/flink-dist-{VERSION}.jar")).is_file();
    assert!(
        complete,
        "Apache Flink {VERSION} is not installed in {}: run `scripts/prereqs.sh test` (scripts/test.sh runs it; \
         `scripts/prereqs.sh flink` installs only Flink and a JDK), or set ROTA_FLINK_CACHE to where it is",
        cache.display()
    );
    home
}

/// The test jobs' jar, compiled once per test binary against this Flink and cached by the hash of
/// the sources (under the Flink cache, outside the repository), so an unchanged source costs
/// nothing and a changed one is compiled again.
pub fn job_jar() -> PathBuf {
    static JAR: OnceLock<PathBuf> = OnceLock::new();
    JAR.get_or_init(compile_jobs).clone()
}

fn compile_jobs() -> PathBuf {
    let home = flink_home();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flink");
    let mut sources: Vec<PathBuf> = Vec::new();
    collect_java(&src, &mut sources);
    sources.sort();
    assert!(!sources.is_empty(), "no Java sources under {}", src.display());
    // FNV-1a over the Flink version, each source's path and its bytes: stable across Rust
    // versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(VERSION.as_bytes());
    for s in &sources {
        feed(s.strip_prefix(&src).unwrap().to_string_lossy().as_bytes());
        feed(&std::fs::read(s).unwrap());
    }
    let dir = cache_dir().join("test-jobs").join(format!("{hash:016x}"));
    let jar = dir.join("rota-flink-test.jar");
    if jar.is_file() {
        return jar;
    }
    // Built beside the final place and renamed into it, so test binaries compiling at once never
    // see half a jar; the loser of the race drops its copy.
    let work = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("classes")).unwrap();
    let classpath = home.join(format!("lib/flink-dist-{VERSION}.jar"));
    let out = Command::new("javac")
        .args(["--release", "17", "-nowarn", "-cp"])
        .arg(&classpath)
        .arg("-d")
        .arg(work.join("classes"))
        .args(&sources)
        .output()
        .expect("javac must be installed (scripts/prereqs.sh test installs openjdk-17-jdk-headless)");
    assert!(out.status.success(), "javac failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("jar")
        .args(["--create", "--file"])
        .arg(work.join("rota-flink-test.jar"))
        .args(["--main-class", COUNTER, "-C"])
        .arg(work.join("classes"))
        .arg(".")
        .output()
        .expect("jar must be installed (it comes with javac)");
    assert!(out.status.success(), "jar failed:\n{}", String::from_utf8_lossy(&out.stderr));
    if std::fs::rename(&work, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&work);
    }
    assert!(jar.is_file(), "{} was not built", jar.display());
    jar
}

fn collect_java(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_java(&path, out);
        } else if path.extension().is_some_and(|e| e == "java") {
            out.push(path);
        }
    }
}

/// One job as `GET /jobs/overview` lists it.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub id: String,
    pub name: String,
    pub state: String,
}

/// A running standalone cluster; stopped (every JVM killed) on drop.
pub struct Flink {
    home: PathBuf,
    dir: tempfile::TempDir,
    rest_port: u16,
    /// TaskManager ids killed by [`Flink::kill_taskmanager`]: the JobManager lists them until it
    /// notices, so a new one is told apart by its id.
    dead_taskmanagers: HashSet<String>,
    watchdog: Option<Child>,
}

impl Flink {
    /// A cluster that is ready: the JobManager answers and one TaskManager has registered.
    pub fn start() -> Flink {
        let home = flink_home();
        let dir = tempfile::Builder::new().prefix("rota-flink-").tempdir().unwrap();
        let mut flink = Flink { home, dir, rest_port: 0, dead_taskmanagers: HashSet::new(), watchdog: None };
        flink.watchdog = Some(flink.spawn_watchdog());
        for attempt in 1..=3 {
            flink.rest_port = free_port();
            let mut rpc_port = free_port();
            while rpc_port == flink.rest_port {
                rpc_port = free_port();
            }
            flink.write_config(rpc_port);
            let out = flink.script("start-cluster.sh", &[]);
            assert!(out.status.success(), "start-cluster.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
            match flink.wait_ready() {
                Ok(()) => return flink,
                Err(why) => {
                    eprintln!(
                        "flink did not become ready (attempt {attempt}): {why}\n{}",
                        flink.jobmanager_log_tail(40)
                    );
                    flink.kill_all();
                    // A fresh start: stale pid files would make the next one count dead JVMs.
                    let _ = std::fs::remove_dir_all(flink.dir.path().join("pid"));
                }
            }
        }
        panic!("the Flink cluster did not become ready in 3 attempts; logs in {}", flink.dir.path().display());
    }

    /// The REST API's base URL, e.g. `http://127.0.0.1:40123`.
    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    /// The test jobs' jar (see [`job_jar`]).
    pub fn job_jar(&self) -> PathBuf {
        job_jar()
    }

    /// The cluster's default savepoint directory (a plain path; Flink wants it as `file://…`).
    pub fn savepoint_dir(&self) -> PathBuf {
        self.dir.path().join("savepoints")
    }

    /// This cluster's private directory (config, logs, uploads, checkpoints, savepoints).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `FLINK_HOME` (the installed distribution, shared and read-only).
    pub fn home(&self) -> &Path {
        &self.home
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    fn pid_dir(&self) -> PathBuf {
        self.dir.path().join("pid")
    }

    /// The private `conf/`: the distribution's files (log4j settings) and a `config.yaml` of
    /// small, loopback-only settings.
    fn write_config(&self, rpc_port: u16) {
        let d = self.dir.path();
        let conf = self.conf_dir();
        std::fs::create_dir_all(&conf).unwrap();
        for entry in std::fs::read_dir(self.home.join("conf")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), conf.join(entry.file_name())).unwrap();
        }
        for sub in ["log", "pid", "tmp", "web", "upload", "blobs", "checkpoints", "savepoints"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // The distribution's JVM options hold the --add-opens/--add-exports Java 17 needs; they
        // are kept and added to. Serial GC and C1 only: fewer threads on two shared cores and a
        // JobManager ~50 MB smaller, where the JVMs' throughput does not matter.
        let original = std::fs::read_to_string(self.home.join("conf/config.yaml")).unwrap();
        let java_opts = original
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("all:"))
            .map(str::trim)
            .expect("the distribution's config.yaml has env.java.opts.all");
        let tmp = d.join("tmp");
        let java_opts =
            format!("{java_opts} -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.io.tmpdir={}", tmp.display());
        let p = |sub: &str| d.join(sub).display().to_string();
        // JSON is YAML: no quoting rules of our own for paths and the long options string.
        let config = json!({
            "env": {
                "java": { "opts": { "all": java_opts } },
                "pid": { "dir": p("pid") },
                "log": { "dir": p("log") },
            },
            "io": { "tmp": { "dirs": p("tmp") } },
            "web": { "tmpdir": p("web"), "upload": { "dir": p("upload") } },
            "blob": { "server": { "port": "0" }, "storage": { "directory": p("blobs") } },
            "jobmanager": {
                "bind-host": "127.0.0.1",
                "rpc": { "address": "127.0.0.1", "port": rpc_port },
                "memory": { "process": { "size": "1024m" } },
                "execution": { "failover-strategy": "region" },
            },
            "taskmanager": {
                "bind-host": "127.0.0.1",
                "host": "127.0.0.1",
                "numberOfTaskSlots": 2,
                "rpc": { "port": "0" },
                "data": { "port": 0 },
                "memory": { "process": { "size": "1024m" }, "managed": { "size": "64m" } },
            },
            "metrics": { "internal": { "query-service": { "port": "0" } } },
            "rest": { "address": "127.0.0.1", "bind-address": "127.0.0.1", "port": self.rest_port },
            "execution": {
                "checkpointing": {
                    "dir": format!("file://{}", p("checkpoints")),
                    "savepoint-dir": format!("file://{}", p("savepoints")),
                },
            },
            // A killed TaskManager is noticed in seconds (two failed heartbeat calls), not the
            // default 50 s timeout's worth; a slow but live one still has 20 s.
            "heartbeat": { "interval": 2000, "timeout": 20000 },
            "parallelism": { "default": 1 },
        });
        std::fs::write(conf.join("config.yaml"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
        std::fs::write(conf.join("workers"), "127.0.0.1\n").unwrap();
        std::fs::write(conf.join("masters"), format!("127.0.0.1:{}\n", self.rest_port)).unwrap();
    }

    /// Run one of `bin/`'s scripts with this cluster's configuration.
    fn script(&self, name: &str, args: &[&str]) -> std::process::Output {
        Command::new(self.home.join("bin").join(name))
            .args(args)
            .env("FLINK_CONF_DIR", self.conf_dir())
            .env("FLINK_IDENT_STRING", IDENT)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Until [`START_DEADLINE`]: both JVMs alive and `/overview` counting one TaskManager.
    /// `start-cluster.sh` exits 0 even when the JobManager died at once, so a dead JVM ends the
    /// wait early with an error.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            for daemon in ["standalonesession", "taskexecutor"] {
                let pids = self.daemon_pids(daemon);
                if pids.is_empty() || !pids.iter().any(|p| alive(*p)) {
                    return Err(format!("the {daemon} JVM is not running (pids {pids:?})"));
                }
            }
            if self.get("/overview").1["taskmanagers"] == 1 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no TaskManager registered within {START_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pids in a daemon's pid file (`flink-daemon.sh` appends one line per start).
    fn daemon_pids(&self, daemon: &str) -> Vec<u32> {
        let file = self.pid_dir().join(format!("flink-{IDENT}-{daemon}.pid"));
        std::fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Every live JVM of this cluster: those in the pid files, and any process whose command line
    /// names this cluster's directory (one started but not yet in a pid file).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = ["standalonesession", "taskexecutor"]
            .iter()
            .flat_map(|d| self.daemon_pids(d))
            .filter(|p| alive(*p))
            .collect();
        let needle = self.dir.path().as_os_str().as_encoded_bytes().to_vec();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                if pid == std::process::id() || pids.contains(&pid) {
                    continue;
                }
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
                let is_java = cmdline.split(|b| *b == 0).next().is_some_and(|a| a.ends_with(b"java"));
                if is_java && cmdline.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Resident memory of each live JVM, in MiB (from /proc).
    pub fn rss_mib(&self) -> Vec<(u32, u64)> {
        self.pids()
            .into_iter()
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let kb: u64 =
                    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
                Some((pid, kb / 1024))
            })
            .collect()
    }

    /// The last `n` lines of the JobManager's log (and its stdout), for a failure message.
    pub fn jobmanager_log_tail(&self, n: usize) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) else { return out };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().contains("standalonesession")))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(n)..].join("\n");
            out.push_str(&format!("--- {} (last {n} lines)\n{tail}\n", f.display()));
        }
        out
    }

    /// SIGKILL the TaskManager (a machine lost, not a clean stop) and wait until it is gone. Its
    /// jobs fail or restart once the JobManager notices (seconds, see the heartbeat settings).
    pub fn kill_taskmanager(&mut self) {
        for id in self.taskmanager_ids() {
            self.dead_taskmanagers.insert(id);
        }
        let pids: Vec<u32> = self.daemon_pids("taskexecutor").into_iter().filter(|p| alive(*p)).collect();
        assert!(!pids.is_empty(), "no TaskManager is running");
        for pid in &pids {
            kill9(*pid);
        }
        wait_until(Duration::from_secs(10), "the killed TaskManager to be gone", || !pids.iter().any(|p| alive(*p)));
    }

    /// Start a new TaskManager and wait until the JobManager has registered it.
    pub fn start_taskmanager(&mut self) {
        let out = self.script("taskmanager.sh", &["start"]);
        assert!(out.status.success(), "taskmanager.sh start failed:\n{}", String::from_utf8_lossy(&out.stderr));
        wait_until(START_DEADLINE, "a new TaskManager to register", || {
            self.taskmanager_ids().iter().any(|id| !self.dead_taskmanagers.contains(id))
        });
    }

    /// Ids of the TaskManagers the JobManager lists (`GET /taskmanagers`).
    pub fn taskmanager_ids(&self) -> Vec<String> {
        let (_, v) = self.get("/taskmanagers");
        v["taskmanagers"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Every job the cluster knows, running or ended (`GET /jobs/overview`).
    pub fn jobs(&self) -> Vec<JobSummary> {
        let (status, v) = self.get("/jobs/overview");
        assert_eq!(status, 200, "GET /jobs/overview: {v}");
        v["jobs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|j| JobSummary {
                        id: j["jid"].as_str().unwrap_or_default().to_string(),
                        name: j["name"].as_str().unwrap_or_default().to_string(),
                        state: j["state"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// GET a REST path: (status, JSON body or the body as a string; (0, error) when unreachable).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    /// POST a JSON body to a REST path.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }

    /// PATCH a REST path (no body), e.g. `/jobs/{id}?mode=cancel`.
    pub fn patch(&self, path: &str) -> (u16, Value) {
        self.call("PATCH", path, None)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.rest_url()));
        let bytes = match body {
            Some(b) => {
                req = req.header("Content-Type", "application/json");
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        send(req.body(bytes).unwrap())
    }

    /// Upload a jar (`POST /jars/upload`, multipart field `jarfile`); its jar id.
    pub fn upload_jar(&self, jar: &Path) -> String {
        let boundary = format!("rota-test-{}", std::process::id());
        let name = jar.file_name().unwrap().to_string_lossy();
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"jarfile\"; filename=\"{name}\"\r\n\
             Content-Type: application/x-java-archive\r\n\r\n"
        )
        .into_bytes();
        body.extend(std::fs::read(jar).unwrap());
        body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/jars/upload", self.rest_url()))
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .body(body)
            .unwrap();
        let (status, v) = send(req);
        assert_eq!(status, 200, "POST /jars/upload: {v}");
        let filename = v["filename"].as_str().unwrap_or_else(|| panic!("no filename in {v}"));
        filename.rsplit('/').next().unwrap().to_string()
    }

    /// `POST /jars/{jar}/run`: (status, body); the job id is `body["jobid"]` on 200.
    pub fn run_jar(&self, jar_id: &str, entry_class: &str, args: &[&str], savepoint: Option<&str>) -> (u16, Value) {
        let mut body = json!({ "entryClass": entry_class, "programArgsList": args, "parallelism": 1 });
        if let Some(path) = savepoint {
            body["savepointPath"] = json!(path);
        }
        self.post(&format!("/jars/{jar_id}/run"), &body)
    }

    /// Run and return the job id, panicking with Flink's error otherwise.
    pub fn submit(&self, jar_id: &str, entry_class: &str, args: &[&str], savepoint: Option<&str>) -> String {
        let (status, v) = self.run_jar(jar_id, entry_class, args, savepoint);
        assert_eq!(status, 200, "POST /jars/{jar_id}/run: {}", first_lines(&v));
        v["jobid"].as_str().unwrap_or_else(|| panic!("no jobid in {v}")).to_string()
    }

    /// `GET /jobs/{id}`.
    pub fn job(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/jobs/{id}"));
        assert_eq!(status, 200, "GET /jobs/{id}: {}", first_lines(&v));
        v
    }

    /// The job's state and every vertex's status.
    pub fn job_states(&self, id: &str) -> (String, Vec<String>) {
        let v = self.job(id);
        let vertices = v["vertices"]
            .as_array()
            .map(|a| a.iter().map(|x| x["status"].as_str().unwrap_or_default().to_string()).collect())
            .unwrap_or_default();
        (v["state"].as_str().unwrap_or_default().to_string(), vertices)
    }

    /// Wait until the job is RUNNING and so is every vertex (the job is RUNNING seconds before
    /// its tasks are; a savepoint before that fails).
    pub fn wait_running(&self, id: &str, timeout: Duration) {
        wait_until(timeout, &format!("job {id} and all its vertices to be RUNNING"), || {
            let (state, vertices) = self.job_states(id);
            assert!(!is_terminal(&state), "job {id} ended {state} while waiting for it to run");
            state == "RUNNING" && !vertices.is_empty() && vertices.iter().all(|s| s == "RUNNING")
        });
    }

    /// Wait until the job's state is `state`.
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) {
        let mut last = String::new();
        wait_until(timeout, &format!("job {id} to be {state}"), || {
            last = self.job_states(id).0;
            last == state
        });
    }

    /// Stop with a savepoint into [`Flink::savepoint_dir`] (`drain: false`) and wait for it; the
    /// savepoint's location. A failed savepoint also reports `status.id: COMPLETED`: only
    /// `operation.location` means success.
    pub fn stop_with_savepoint(&self, id: &str) -> String {
        let target = format!("file://{}", self.savepoint_dir().display());
        let (status, v) = self.post(&format!("/jobs/{id}/stop"), &json!({ "targetDirectory": target, "drain": false }));
        assert_eq!(status, 202, "POST /jobs/{id}/stop: {}", first_lines(&v));
        let request = v["request-id"].as_str().unwrap_or_else(|| panic!("no request-id in {v}")).to_string();
        let mut last = Value::Null;
        wait_until(Duration::from_secs(60), &format!("the savepoint of job {id}"), || {
            last = self.get(&format!("/jobs/{id}/savepoints/{request}")).1;
            last["status"]["id"] == "COMPLETED"
        });
        match last["operation"]["location"].as_str() {
            Some(location) => location.to_string(),
            None => panic!("stop-with-savepoint of job {id} failed: {}", first_lines(&last["operation"])),
        }
    }

    /// Cancel (`PATCH /jobs/{id}?mode=cancel`) and wait until it is CANCELED.
    pub fn cancel(&self, id: &str) {
        let (status, v) = self.patch(&format!("/jobs/{id}?mode=cancel"));
        assert_eq!(status, 202, "PATCH /jobs/{id}?mode=cancel: {}", first_lines(&v));
        self.wait_state(id, "CANCELED", Duration::from_secs(30));
    }

    /// A small watchdog that kills this cluster's JVMs and removes its directory when the test
    /// process is gone without having dropped the cluster.
    fn spawn_watchdog(&self) -> Child {
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
for f in "$2"/pid/*.pid; do [ -f "$f" ] && kill -9 $(cat "$f") 2>/dev/null; done
rm -rf "$2""#;
        Command::new("sh")
            .args(["-c", script, "flink-watchdog"])
            .arg(std::process::id().to_string())
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh must be available")
    }

    /// SIGKILL every JVM of this cluster and wait until they are gone. A kill, not
    /// `stop-cluster.sh`: that waits up to ~20 s for a graceful JobManager shutdown, and nothing
    /// of a test cluster needs to survive.
    fn kill_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in &pids {
                kill9(*pid);
            }
            if Instant::now() > deadline {
                eprintln!("flink: JVMs {pids:?} still alive after SIGKILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Flink {
    fn drop(&mut self) {
        self.kill_all();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// A terminal job state (the job will not run again by itself).
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "FINISHED" | "CANCELED" | "FAILED")
}

/// What a [`COUNTER`] job last wrote to `path`, if it wrote: (the highest per-key count, the
/// first count this run saw). A run restored from a savepoint starts where the stopped run's
/// highest count was (or one above); a run from nothing starts at 1.
pub fn read_count(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Flink's errors carry whole Java stack traces: the first line of each string, for a message.
pub fn first_lines(v: &Value) -> String {
    fn cut(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(s.lines().next().unwrap_or_default().to_string()),
            Value::Array(a) => Value::Array(a.iter().map(cut).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), cut(v))).collect()),
            other => other.clone(),
        }
    }
    cut(v).to_string()
}

fn send(req: ureq::http::Request<Vec<u8>>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .allow_non_standard_methods(true)
        .build()
        .into();
    match agent.run(req) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// The process exists and has not exited (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let ok = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    // A zombie (exited, not yet reaped) still answers; it is gone for our purposes.
    ok && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn kill9(pid: u32) {
    // SAFETY: a plain kill system call on a pid of this cluster.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}
