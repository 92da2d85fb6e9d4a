//! Test harness: a fresh PostgreSQL database per test, real `rota` processes on loopback ports,
//! and polling with deadlines (never fixed sleeps). The one place for what several test files
//! need: the fast settings ([`FAST`]), one node on a fresh database ([`fixture::Fixture`]), a
//! cluster of nodes on etcd ([`cluster::Cluster`]), a real Apache Flink cluster ([`flink::Flink`]).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

pub mod browser;
pub mod cluster;
pub mod fixture;
pub mod flink;
pub mod proxy;
pub mod tls;

/// Dispatch settings that make a test node react in a fraction of a second instead of the
/// production defaults' seconds, as environment variables (later entries of a node's
/// environment override them). [`fast_toml`] gives the same as a config file's table.
pub const FAST: [(&str, &str); 4] = [
    ("ROTA__DISPATCH__POLL_INTERVAL_MS", "200"),
    ("ROTA__DISPATCH__RECONCILE_INTERVAL_MS", "500"),
    ("ROTA__DISPATCH__RETRY_BASE_MS", "100"),
    ("ROTA__DISPATCH__MONITOR_INTERVAL_MS", "300"),
];

/// [`FAST`] as a config file's `[dispatch]` table, with `extra` keys (`retry_max_ms`, …) added
/// or overriding.
pub fn fast_toml(extra: &[(&str, &str)]) -> String {
    let mut keys: Vec<(String, String)> = FAST
        .iter()
        .map(|(k, v)| (k.trim_start_matches("ROTA__DISPATCH__").to_ascii_lowercase(), v.to_string()))
        .collect();
    for (k, v) in extra {
        match keys.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v.to_string(),
            None => keys.push((k.to_string(), v.to_string())),
        }
    }
    let lines: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    format!("[dispatch]\n{lines}")
}

/// Where the test PostgreSQL server is (an admin URL).
pub fn pg_admin_url() -> String {
    std::env::var("ROTA_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn pg_base() -> String {
    let admin = pg_admin_url();
    admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin)
}

/// A database created for one test and dropped afterwards.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub fn create() -> PgDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rota_t_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        );
        let mut admin =
            PgConnection::establish(&pg_admin_url()).expect("PostgreSQL must be up (scripts/test.sh starts it)");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        PgDb { url: format!("{}/{name}", pg_base()), name }
    }

    /// An admin connection (to the `postgres` database), e.g. to block connections.
    pub fn admin(&self) -> PgConnection {
        PgConnection::establish(&pg_admin_url()).unwrap()
    }

    /// Run statements (several, `;`-separated) on this database, panicking with the SQL on an
    /// error.
    #[allow(dead_code)] // not every test binary writes rows by hand
    pub fn exec(&self, sql: &str) {
        PgConnection::establish(&self.url).unwrap().batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Refuse new connections to this database and end the open ones.
    pub fn go_away(&self) {
        self.admin()
            .batch_execute(&format!(
                "ALTER DATABASE {0} ALLOW_CONNECTIONS false; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
                self.name
            ))
            .unwrap();
    }

    /// Accept connections again.
    pub fn come_back(&self) {
        self.admin().batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name)).unwrap();
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&pg_admin_url()) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// Poll `cond` until it holds or `timeout` passes (then panic naming `what`).
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `rota` binary under test.
pub fn rota() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rota"));
    // Tests must not pick up the developer's settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("ROTA_") && !k.starts_with("ROTA_TEST") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Run `rota` to completion (killed after 60 s, which fails the test); (status, stdout, stderr).
pub fn run(cmd: &mut Command) -> (ExitStatus, String, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            // Bytes, then lossy: a stray non-UTF-8 byte must not swallow the whole output.
            let mut bytes = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    use std::io::Read;
    let out = read(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = read(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`rota` did not exit within 60 s: {cmd:?}\n{}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// A running `rota serve` process whose stderr is collected.
pub struct Node {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// The thread reading stderr into `logs`; it ends when the process (and so the pipe) is gone.
    reader: Option<JoinHandle<()>>,
    pub addr: String,
}

impl Node {
    /// Start `rota serve` with `--listen 127.0.0.1:0` and the given extra args; wait for its address.
    pub fn start(data_dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Node {
        Node::start_in(None, "127.0.0.1", data_dir, args, envs)
    }

    /// Start without waiting (for nodes expected to fail).
    pub fn spawn(data_dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Node {
        Node::spawn_in(None, "127.0.0.1", data_dir, args, envs)
    }

    /// Start `rota serve` inside the network namespace `netns` (a name under `/run/netns`, as
    /// `ip netns add` makes them), listening on `host` with a free port; wait for its address.
    /// The node's children inherit the namespace.
    pub fn start_in(
        netns: Option<&str>,
        host: &str,
        data_dir: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Node {
        let mut node = Node::spawn_in(netns, host, data_dir, args, envs);
        node.addr = node.wait_addr();
        node
    }

    fn spawn_in(
        netns: Option<&str>,
        host: &str,
        data_dir: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Node {
        let mut cmd = rota();
        cmd.arg("serve").arg("--listen").arg(format!("{host}:0")).arg("--data-dir").arg(data_dir).args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Some(ns) = netns {
            use std::os::fd::IntoRawFd;
            use std::os::unix::process::CommandExt;
            // Opened here, entered in the child between fork and exec (setns is a plain system
            // call); the descriptor is close-on-exec, and the parent's copy is closed below.
            let fd = std::fs::File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("network namespace {ns}: {e}"))
                .into_raw_fd();
            // SAFETY: the closure only makes the setns system call, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
            // SAFETY: fd is ours (into_raw_fd above) and closed once.
            unsafe { libc::close(fd) };
            return Node::collect(child.unwrap());
        }
        Node::collect(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
    }

    /// Read the stderr of a just-spawned node into its log.
    fn collect(mut child: Child) -> Node {
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Node { child, logs, reader: Some(reader), addr: String::new() }
    }

    fn wait_addr(&mut self) -> String {
        let mut addr = None;
        wait_until(Duration::from_secs(30), "the node to log its http.addr", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("node exited early with {status}:\n{}", self.logs());
            }
            addr = self.logs.lock().unwrap().iter().find_map(|l| {
                let json = serde_json::from_str::<serde_json::Value>(l).ok();
                json.and_then(|v| v["http.addr"].as_str().map(str::to_string))
                    .or_else(|| l.split_whitespace().find_map(|w| w.strip_prefix("http.addr=").map(str::to_string)))
            });
            addr.is_some()
        });
        addr.unwrap()
    }

    /// Everything the node logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Wait until the node has logged a line containing `needle`; everything it logged then.
    pub fn wait_logged(&self, needle: &str, timeout: Duration) -> String {
        let mut logs = String::new();
        wait_until(timeout, &format!("the node to log `{needle}`"), || {
            logs = self.logs();
            logs.contains(needle)
        });
        logs
    }

    /// After the process exited: wait for the reader to reach the end of stderr, so that
    /// [`Node::logs`] holds every line the process wrote. Children the node spawns get pipes of
    /// their own; its watchdog shares its stderr, and exits as soon as it has acted on the
    /// node's end.
    fn drain_logs(&mut self) {
        let Some(reader) = self.reader.take() else { return };
        wait_until(Duration::from_secs(10), "the node's stderr to reach its end", || reader.is_finished());
        reader.join().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET a path: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.url(path))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Wait up to `timeout` for the process to exit; None if it is still running.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain_logs();
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_until(timeout, "the node to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        self.drain_logs();
        status.unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a URL without treating 4xx/5xx as errors: (status, body); (0, error) when unreachable.
pub fn http_get(url: &str) -> (u16, String) {
    http("GET", url, None, None)
}

/// Any request, JSON body optional, bearer token optional: (status, body).
pub fn http(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let result = match body {
        Some(b) => agent.run(req.body(b.to_string()).unwrap()),
        None => agent.run(req.body(()).unwrap()),
    };
    match result {
        Ok(mut resp) => (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// A free loopback port (bound and released; a tiny race we accept in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private etcd cluster of several members, each on free loopback ports with its own data
/// directory, that a test can kill and start one member at a time.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<(String, u16, u16, Option<Child>)>,
    token: String,
}

impl EtcdCluster {
    /// `n` members, started together and healthy.
    pub fn start(n: usize) -> EtcdCluster {
        static N: AtomicU32 = AtomicU32::new(0);
        let token = format!("rota-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let members = (0..n).map(|i| (format!("m{i}"), free_port(), free_port(), None)).collect();
        let mut c = EtcdCluster { dir: tempfile::tempdir().unwrap(), members, token };
        for i in 0..n {
            c.launch(i);
        }
        for i in 0..n {
            c.wait_healthy(i);
        }
        c
    }

    /// Every member's client endpoint, comma-separated (what `--etcd-endpoints` takes).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|(_, client, _, _)| format!("127.0.0.1:{client}")).collect::<Vec<_>>().join(",")
    }

    fn launch(&mut self, i: usize) {
        let cluster = self
            .members
            .iter()
            .map(|(name, _, peer, _)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let (name, client, peer, _) = &self.members[i];
        let (client, peer) = (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        let child = Command::new("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(self.dir.path().join(name))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster, "--initial-cluster-token", &self.token])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd must be installed (scripts/test.sh installs etcd-server)");
        self.members[i].3 = Some(child);
    }

    fn wait_healthy(&self, i: usize) {
        let health = format!("http://127.0.0.1:{}/health", self.members[i].1);
        wait_until(Duration::from_secs(30), &format!("etcd member {i} to be healthy"), || {
            http_get(&health).1.contains("true")
        });
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].3.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its ports and data, and wait until it is healthy.
    pub fn resume(&mut self, i: usize) {
        self.launch(i);
        self.wait_healthy(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A private etcd process on free loopback ports with its own data directory.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
    /// Another address it also serves clients on (e.g. one network namespaces reach).
    also_on: Option<String>,
}

impl Etcd {
    /// A new etcd on two free ports. Ports are picked free and then bound by etcd a moment
    /// later, so a test running beside this one can take one in between (a fresh-clone run saw
    /// etcd never become healthy): a start that fails is tried again on other ports.
    pub fn start() -> Etcd {
        Etcd::start_also_on(None)
    }

    /// As [`Etcd::start`], also serving clients on `host` (same port), when given.
    pub fn start_also_on(host: Option<&str>) -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            client_port: 0,
            peer_port: 0,
            also_on: host.map(str::to_string),
        };
        for attempt in 1..=3 {
            (e.client_port, e.peer_port) = (free_port(), free_port());
            while e.peer_port == e.client_port {
                e.peer_port = free_port();
            }
            if e.try_launch() {
                return e;
            }
            e.stop();
            let log = std::fs::read_to_string(e.dir.path().join("etcd.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
            eprintln!("etcd did not become healthy (attempt {attempt}); its log ends:\n{tail}");
            let _ = std::fs::remove_dir_all(e.dir.path().join("data"));
        }
        panic!("etcd did not become healthy in 3 attempts on fresh ports");
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Start it on its ports and data; panic when it does not become healthy.
    fn launch(&mut self) {
        assert!(self.try_launch(), "timed out after 20s waiting for: etcd to be healthy");
    }

    /// Start it on its ports and data; true once it is healthy (within 20 s).
    fn try_launch(&mut self) -> bool {
        let mut client = format!("http://127.0.0.1:{}", self.client_port);
        if let Some(host) = &self.also_on {
            client = format!("{client},http://{host}:{}", self.client_port);
        }
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::options().create(true).append(true).open(self.dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd must be installed (scripts/test.sh installs etcd-server)");
        self.child = Some(child);
        let health = format!("http://127.0.0.1:{}/health", self.client_port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(&health).1.contains("true") {
                return true;
            }
            // Exited (a port taken, say): no use waiting.
            if self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stop etcd (SIGTERM) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Start it again (after `stop`) on the same ports and data.
    pub fn resume(&mut self) {
        self.launch();
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Run `f` with an etcd client on a fresh runtime.
    pub fn with_client<T>(&self, f: impl AsyncFnOnce(&mut etcd_client::Client) -> T) -> T {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([self.endpoint()], None).await.unwrap();
            f(&mut c).await
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[allow(unused_imports)] // not every test binary uses it
pub use proxy::Proxy;
