//! Rota's side of `scripts/bench.sh`: real `rota serve` processes on a fresh PostgreSQL database
//! per case, measured from the database.
//!
//! ```text
//! cargo bench --bench dispatch -- drain   [--nodes N] [--jobs N] [--drain cold|steady|backlog]
//!                                         [--failing N] [--hanging-alarm]
//! cargo bench --bench dispatch -- scale   [--apps A]   (3 nodes on etcd, then a 4th, then a SIGKILL)
//! cargo bench --bench dispatch -- apps    [--nodes N] [--apps A] [--jobs N]   (start/stop commands)
//! cargo bench --bench dispatch -- latency [--nodes N] [--rate R] [--seconds S]
//! cargo bench --bench dispatch -- idle    [--nodes N] [--seconds S]
//! cargo bench --bench dispatch -- sustained [--nodes N] [--rate R] [--seconds S]
//! ```
//!
//! Env: `ROTA_BENCH_PG` (admin URL, default `postgres://postgres@127.0.0.1:5432/postgres`),
//! `ROTA_BENCH_ETCD` (endpoint, needed for `--nodes` > 1), `ROTA_BIN` (default
//! `target/release/rota`). Each case prints one JSON line on stdout.
//!
//! How each figure is taken: drain — rows are inserted in one statement while the nodes are up,
//! the clock starts at its commit and stops at the last row's `finished_at` (`drain_seconds`); latency — one
//! row per INSERT at a fixed rate from this process, insert-to-start is `started_at − created_at`
//! (the job's start mark, the node's clock, against the database's; `claimed_at` for a build
//! without start marks) over every row; sustained — rows inserted at a fixed rate for S
//! seconds in small batches (every 10 ms), completions counted per minute by `finished_at`,
//! the last full minute over the first, with the dead tuples left in `task`; idle — the statements
//! of the nodes' database in the server log (`log_statement = 'all'` on that database) per second and
//! per node, leaving out this process's own, and the transactions `pg_stat_database` counted.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::{Client, NoTls};

struct Args {
    case: String,
    /// How a drain meets its table (`--drain`): see [`Drain`].
    drain: Drain,
    nodes: usize,
    jobs: i64,
    apps: i64,
    rate: f64,
    seconds: f64,
    /// Drain: every Nth job fails (its task.failed event is an alarm's to deliver).
    failing: i64,
    /// Drain: an alarm on task.failed sends to a webhook that accepts and never answers.
    hanging_alarm: bool,
}

fn args() -> Args {
    let mut a = Args {
        case: String::new(),
        drain: Drain::Cold,
        nodes: 1,
        jobs: 20_000,
        apps: 1000,
        rate: 500.0,
        seconds: 10.0,
        failing: 0,
        hanging_alarm: false,
    };
    let mut it = std::env::args().skip(1).filter(|s| s != "--bench");
    while let Some(x) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{x} needs a value"));
        match x.as_str() {
            "--nodes" => a.nodes = val().parse().expect("--nodes N"),
            "--drain" => a.drain = Drain::parse(&val()),
            "--jobs" => a.jobs = val().parse().expect("--jobs N"),
            "--apps" => a.apps = val().parse().expect("--apps N"),
            "--rate" => a.rate = val().parse().expect("--rate R"),
            "--seconds" => a.seconds = val().parse().expect("--seconds S"),
            "--failing" => a.failing = val().parse().expect("--failing N"),
            "--hanging-alarm" => a.hanging_alarm = true,
            case if !case.starts_with('-') && a.case.is_empty() => a.case = case.to_string(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The three drain cases (docs/benchmarks.md), the same for every contender.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Drain {
    /// Rows added in one statement to a fresh table while the nodes are up; the clock runs from
    /// that commit. The table has no statistics: a burst into a new queue.
    Cold,
    /// The same burst into a table that has run one before: a first burst of the same size is
    /// added, `ANALYZE` runs right after its commit (the statistics autovacuum takes once a
    /// burst has landed), it drains, and the second burst is the one measured.
    Steady,
    /// Rows preloaded and analyzed while no node runs; the clock starts as the nodes are
    /// started, so their start-up is counted.
    Backlog,
}

impl Drain {
    fn parse(s: &str) -> Drain {
        match s {
            "cold" => Drain::Cold,
            "steady" => Drain::Steady,
            "backlog" => Drain::Backlog,
            other => panic!("--drain {other}: cold, steady or backlog"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Drain::Cold => "cold",
            Drain::Steady => "steady",
            Drain::Backlog => "backlog",
        }
    }
}

struct Node {
    child: Child,
    addr: String,
    id: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> String {
    std::env::var("ROTA_BIN").unwrap_or_else(|_| format!("{}/target/release/rota", env!("CARGO_MANIFEST_DIR")))
}

fn start_node(url: &str, id: &str, cluster: &str, etcd: Option<&str>, dir: &std::path::Path) -> Node {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--node-id", id, "--database-url", url, "--no-migrate"])
        .arg("--data-dir")
        .arg(dir.join(id))
        .env("ROTA__LOG__LEVEL", std::env::var("ROTA_BENCH_NODE_LOG").unwrap_or_else(|_| "warn,rota::node=info".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(e) = etcd {
        cmd.args(["--membership", "etcd", "--etcd-endpoints", e, "--cluster", cluster, "--lease-ttl", "3"]);
    }
    let mut child =
        cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e} (build it: cargo build --release)", bin()));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    // Every line into `$ROTA_BENCH_NODE_LOG_DIR/<node>.log` when set (with `ROTA_BENCH_NODE_LOG`,
    // the nodes' log filter, to see what a case's nodes did).
    let mut keep = std::env::var_os("ROTA_BENCH_NODE_LOG_DIR").map(|d| {
        let path = std::path::Path::new(&d).join(format!("{id}.log"));
        std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    });
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = keep.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if !sent {
                if let Some(a) = line.split_whitespace().find_map(|w| w.strip_prefix("http.addr=")) {
                    let _ = tx.send(a.to_string());
                    sent = true;
                }
            }
            // What a failed case needs to be explained (scripts/bench.py shows it on failure).
            if ["ERROR", "WARN", "panicked"].iter().any(|w| line.contains(w)) {
                eprintln!("node: {line}");
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("node did not log its http.addr");
    Node { child, addr, id: id.to_string() }
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

fn wait(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Bench {
    admin: String,
    db: String,
    url: String,
    etcd: Option<String>,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// A fresh database with Rota's schema and, with `start`, `nodes` nodes on it (etcd
    /// membership when more than one is asked for, by `nodes` or later).
    async fn new(nodes: usize, log_statements: bool, start: bool) -> (Bench, Client) {
        let admin =
            std::env::var("ROTA_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let db = format!("rota_bench_{}_{}", std::process::id(), chrono::Utc::now().timestamp_micros());
        let (c, conn) = tokio_postgres::connect(&admin, NoTls).await.expect("admin connection");
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE DATABASE {db}")).await.expect("create database");
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
        let url = format!("{base}/{db}");
        let st = Command::new(bin()).args(["migrate", "--database-url", &url]).status().expect("rota migrate");
        assert!(st.success(), "rota migrate failed");
        if log_statements {
            // Every statement of the nodes' sessions goes to the server log (set before they connect).
            c.batch_execute(&format!("ALTER DATABASE {db} SET log_statement = 'all'")).await.expect("log_statement");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = std::env::var("ROTA_BENCH_ETCD").ok();
        if nodes > 1 {
            assert!(etcd.is_some(), "--nodes > 1 needs ROTA_BENCH_ETCD");
        }
        let etcd = etcd.filter(|_| nodes > 1);
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("bench connection");
        tokio::spawn(conn);
        let mut b = Bench { admin, db, url, etcd, nodes: Vec::new(), _dir: dir };
        if start {
            b.start_nodes(nodes);
        }
        (b, client)
    }

    /// Start `n` more nodes (`b0`, `b1`, … in order) and wait until each is ready and sees
    /// every node started so far.
    fn start_nodes(&mut self, n: usize) {
        self.spawn_nodes(n);
        self.wait_nodes();
    }

    /// Start `n` more nodes without waiting for them to join.
    fn spawn_nodes(&mut self, n: usize) {
        let first = self.nodes.len();
        for i in first..first + n {
            let node = start_node(&self.url, &format!("b{i}"), &self.db, self.etcd.as_deref(), self._dir.path());
            self.nodes.push(node);
        }
    }

    /// Wait until every node is ready and sees all of them.
    fn wait_nodes(&self) {
        let total = self.nodes.len();
        for n in &self.nodes {
            wait("a node to be ready", Duration::from_secs(120), || get(&format!("http://{}/readyz", n.addr)).0 == 200);
            wait("every member in the view", Duration::from_secs(120), || {
                let (_, body) = get(&format!("http://{}/api/v1/cluster", n.addr));
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                v["members"].as_array().map(|m| m.len()).unwrap_or(0) == total && v["self"]["status"] == "joined"
            });
        }
    }

    async fn drop_db(self) {
        let Bench { admin, db, nodes, .. } = self;
        drop(nodes);
        let (c, conn) = tokio_postgres::connect(&admin, NoTls).await.expect("admin connection");
        tokio::spawn(conn);
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    }
}

/// Waits until no task is pending or running, polling every `every`; false if `within` passed
/// first.
async fn drained(c: &Client, within: Duration, every: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let row = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM task WHERE status = 'pending') \
                 OR EXISTS (SELECT 1 FROM task WHERE status = 'running')",
                &[],
            )
            .await
            .expect("poll");
        if !row.get::<_, bool>(0) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// How often `drained` looks. Each look is an index probe on a table full of rows just
/// finished (0.7 ms of the server's time): every 10 ms that was 7% of a core taken from the
/// drain it measures. The drain's figure does not depend on it (`drain_seconds`).
const POLL: Duration = Duration::from_millis(100);

/// The seconds a drain of rows just committed takes: from now (the database's clock) to the
/// last `finished_at`, which the node stamps on each completion batch just before it sends it
/// (one completion statement, ~3 ms, before its commit). Also the time until `drained` saw it,
/// which is up to one `POLL` later. Why not the poll alone: a poll fine enough to time a 4 s
/// drain to 1% costs the drain itself a share of the machine (`POLL`).
async fn drain_seconds(c: &Client) -> (f64, f64) {
    let start = db_clock(c).await;
    drain_seconds_from(c, start, 0).await
}

/// [`drain_seconds`] from `start` (epoch seconds, the database's clock), to the last
/// `finished_at` of the rows after id `after_id`.
async fn drain_seconds_from(c: &Client, start: f64, after_id: i64) -> (f64, f64) {
    let t = Instant::now();
    assert!(drained(c, Duration::from_secs(1800), POLL).await, "not drained within 30 minutes");
    let polled = t.elapsed().as_secs_f64();
    let end: f64 = c
        .query_one("SELECT extract(epoch FROM max(finished_at))::float8 FROM task WHERE id > $1", &[&after_id])
        .await
        .expect("last finish")
        .get(0);
    (end - start, polled)
}

/// Now, on the database's clock (epoch seconds).
async fn db_clock(c: &Client) -> f64 {
    c.query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[]).await.expect("clock").get(0)
}

/// Rows that succeeded between two epoch times (seconds, the database's clock).
async fn finished_between(c: &Client, from: f64, to: f64) -> i64 {
    c.query_one(
        "SELECT count(*) FROM task WHERE status = 'succeeded' \
         AND extract(epoch FROM finished_at)::float8 >= $1 AND extract(epoch FROM finished_at)::float8 < $2",
        &[&from, &to],
    )
    .await
    .expect("finished between")
    .get(0)
}

/// The PostgreSQL server log: `ROTA_BENCH_PG_LOG`, or Debian's newest
/// `/var/log/postgresql/postgresql-*.log`.
fn server_log() -> String {
    if let Ok(p) = std::env::var("ROTA_BENCH_PG_LOG") {
        return p;
    }
    let mut logs: Vec<_> = std::fs::read_dir("/var/log/postgresql")
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect()
        })
        .unwrap_or_default();
    logs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    logs.last().map(|p| p.display().to_string()).expect("no server log: set ROTA_BENCH_PG_LOG")
}

/// Statements of database `db` logged (`log_statement = 'all'`) after byte `from` of `log`,
/// except those of backend `ours` (this process's own reads; Debian's `log_line_prefix` names
/// each line's backend as `[pid]`).
fn statements_logged(log: &str, from: u64, db: &str, ours: i32) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log).expect("server log");
    f.seek(SeekFrom::Start(from)).expect("seek");
    let mut text = String::new();
    f.read_to_string(&mut text).expect("read server log");
    let (tag, mine) = (format!("@{db} LOG:"), format!("[{ours}]"));
    text.lines()
        .filter(|l| l.contains(&tag) && !l.contains(&mine) && (l.contains(" execute ") || l.contains(" statement: ")))
        .count()
}

/// What the server did during a drain besides the queue's own work: WAL written (bytes) and
/// checkpoints begun, read before and after. Why: a checkpoint that starts inside a drain makes
/// every first touch of a page write a full-page image, and a repetition that met one is not
/// comparable with one that did not.
async fn server_marks(c: &Client) -> (f64, i64) {
    let r = c
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8, \
             (checkpoints_timed + checkpoints_req)::bigint FROM pg_stat_bgwriter",
            &[],
        )
        .await
        .expect("server marks");
    (r.get(0), r.get(1))
}

/// Transactions committed or rolled back in database `db` so far (every statement of a node is
/// one): over a drain, with this process's few polls, the statements it took per row.
async fn transactions(c: &Client, db: &str) -> i64 {
    count(c, &format!("SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = '{db}'"))
        .await
}

/// A webhook that accepts connections and never answers, and an alarm on `task.failed` that
/// sends to it through the node at `addr`: every delivery hangs until its time limit. Returns
/// the accepted connections, to be held open.
fn hanging_alarm(addr: &str) -> std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            keep.lock().expect("held").push(conn);
        }
    });
    let post = |path: &str, body: serde_json::Value| {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let r = agent.post(&format!("http://{addr}{path}")).send_json(&body).expect("post");
        assert!(r.status().is_success(), "{path}: {}", r.status());
    };
    post("/api/v1/channels", json!({"name": "hang", "kind": "webhook", "config": {"url": url, "timeout_ms": 2000}}));
    post("/api/v1/alarms", json!({"name": "failed", "on": ["task.failed"], "channels": ["hang"], "throttle_s": 0}));
    held
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    // A backlog's nodes start on the clock, and the scale case starts its own.
    let start_now = !(a.case == "drain" && a.drain == Drain::Backlog) && a.case != "scale";
    let (mut bench, c) = Bench::new(a.nodes, a.case == "idle", start_now).await;
    let out = match a.case.as_str() {
        "drain" => {
            // Every `failing`th job fails for good (`--failing`; none by default).
            const BURST: &str = "INSERT INTO task (action, payload, max_attempts) SELECT 'run', \
                 CASE WHEN $2::bigint > 0 AND g % $2::bigint = 0 THEN '{\"spec\": {\"fail\": \"run\"}}' ELSE '{}' END, 1 \
                 FROM generate_series(1, $1::bigint) g";
            assert!(
                !(a.hanging_alarm && a.drain == Drain::Backlog),
                "--hanging-alarm needs the nodes up: not with --drain backlog"
            );
            // Kept open for the drain: the listener that never answers, and what it accepted.
            let _hanging = a.hanging_alarm.then(|| hanging_alarm(&bench.nodes[0].addr));
            if a.drain == Drain::Steady {
                c.execute(BURST, &[&a.jobs, &a.failing]).await.expect("first burst");
                c.batch_execute("ANALYZE").await.expect("analyze");
                assert!(
                    drained(&c, Duration::from_secs(1800), POLL).await,
                    "first burst not drained within 30 minutes"
                );
            }
            // The measured rows are those after this id (a steady drain's table holds a first burst).
            let after_id = count(&c, "SELECT COALESCE(max(id), 0) FROM task").await;
            if a.drain == Drain::Backlog {
                c.execute(BURST, &[&a.jobs, &a.failing]).await.expect("backlog");
                c.batch_execute("ANALYZE").await.expect("analyze");
            }
            let (wal0, ckpt0) = server_marks(&c).await;
            let tx0 = transactions(&c, &bench.db).await;
            if a.drain != Drain::Backlog {
                c.execute(BURST, &[&a.jobs, &a.failing]).await.expect("burst");
            }
            let start = db_clock(&c).await;
            if a.drain == Drain::Backlog {
                bench.start_nodes(a.nodes);
            }
            let sessions = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'", bench.db);
            let sessions0 = count(&c, &sessions).await;
            let (secs, polled) = drain_seconds_from(&c, start, after_id).await;
            let (wal1, ckpt1) = server_marks(&c).await;
            // Backends flush their statistics at most once a second.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let tx1 = transactions(&c, &bench.db).await;
            let sessions1 = count(&c, &sessions).await;
            // When each node finished its last row, and its share: with several nodes the drain
            // ends with the last one, and the others idle meanwhile.
            let by_node: serde_json::Map<String, serde_json::Value> = c
                .query(
                    "SELECT owner_node, count(*), extract(epoch FROM max(finished_at))::float8 - $1 FROM task WHERE id > $2 \
                     GROUP BY owner_node ORDER BY 1",
                    &[&start, &after_id],
                )
                .await
                .expect("by node")
                .iter()
                .map(|r| (r.get::<_, String>(0), json!({"rows": r.get::<_, i64>(1), "last_finish_s": r.get::<_, f64>(2)})))
                .collect();
            // The first completion: in a backlog, what the nodes' start-up took before any work.
            let first_finish: f64 = c
                .query_one(
                    "SELECT extract(epoch FROM min(finished_at))::float8 - $1 FROM task WHERE id > $2",
                    &[&start, &after_id],
                )
                .await
                .expect("first finish")
                .get(0);
            let ok =
                count(&c, &format!("SELECT count(*) FROM task WHERE status = 'succeeded' AND id > {after_id}")).await;
            let failing = if a.failing > 0 { a.jobs / a.failing } else { 0 };
            assert_eq!(ok, a.jobs - failing, "every task but the failing ones succeeded");
            // Each completion transaction stamps its rows with one `finished_at`.
            let commits =
                count(&c, &format!("SELECT count(DISTINCT finished_at) FROM task WHERE id > {after_id}")).await;
            // Each vacuum (the nodes', or autovacuum's analyze) changes the table's statistics and so
            // makes every session rebuild its plans of the table.
            let (vacuums, analyzes) = {
                let r = c
                    .query_one(
                        "SELECT (vacuum_count + autovacuum_count)::bigint, (analyze_count + autoanalyze_count)::bigint \
                         FROM pg_stat_user_tables WHERE relname = 'task'",
                        &[],
                    )
                    .await
                    .expect("vacuums");
                (r.get::<_, i64>(0), r.get::<_, i64>(1))
            };
            json!({"peer": "rota", "case": "drain", "drain": a.drain.name(), "nodes": a.nodes, "jobs": a.jobs, "failing_every": a.failing, "hanging_alarm": a.hanging_alarm, "seconds": secs, "seconds_polled": polled, "per_s": a.jobs as f64 / secs,
                   "first_finish_s": first_finish,
                   "completion_batches": commits, "rows_per_completion": a.jobs as f64 / commits.max(1) as f64,
                   "transactions_per_row": (tx1 - tx0) as f64 / a.jobs as f64, "vacuums": vacuums, "analyzes": analyzes,
                   "sessions_before": sessions0, "sessions_after": sessions1, "by_node": by_node,
                   "wal_bytes_per_row": (wal1 - wal0) / a.jobs as f64, "checkpoints_during": ckpt1 - ckpt0})
        }
        "apps" => {
            c.execute(
                "INSERT INTO application (name, driver) SELECT 'a' || g, 'noop' FROM generate_series(1, $1::bigint) g",
                &[&a.apps],
            )
            .await
            .expect("apps");
            let ids: Vec<i64> = c
                .query("SELECT id FROM application ORDER BY id", &[])
                .await
                .expect("ids")
                .iter()
                .map(|r| r.get(0))
                .collect();
            let first = ids[0];
            c.execute(
                "INSERT INTO task (app_id, action) SELECT $2::bigint + (g % $3::bigint), CASE WHEN (g / $3::bigint) % 2 = 0 THEN 'start' ELSE 'stop' END \
                 FROM generate_series(0, $1::bigint - 1) g",
                &[&a.jobs, &first, &a.apps],
            )
            .await
            .expect("commands");
            let (secs, polled) = drain_seconds(&c).await;
            let ok = count(&c, "SELECT count(*) FROM task WHERE status = 'succeeded'").await;
            assert_eq!(ok, a.jobs, "every command succeeded");
            json!({"peer": "rota", "case": "apps", "nodes": a.nodes, "apps": a.apps, "jobs": a.jobs, "seconds": secs,
                   "seconds_polled": polled, "per_s": a.jobs as f64 / secs})
        }
        "latency" => {
            let (ins, conn) = tokio_postgres::connect(&bench.url, NoTls).await.expect("inserter");
            tokio::spawn(conn);
            let stmt = ins.prepare("INSERT INTO task (action) VALUES ('run')").await.expect("prepare");
            let n = (a.rate * a.seconds) as u64;
            let t0 = Instant::now();
            for i in 0..n {
                let at = t0 + Duration::from_secs_f64(i as f64 / a.rate);
                tokio::time::sleep_until(at.into()).await;
                ins.execute(&stmt, &[]).await.expect("insert");
            }
            let achieved = n as f64 / t0.elapsed().as_secs_f64();
            assert!(drained(&c, Duration::from_secs(120), POLL).await, "not drained within 2 minutes");
            let row = c
                .query_one(
                    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), \
                     max(ms), count(*) FROM (SELECT (extract(epoch FROM \
                     coalesce((to_jsonb(t) ->> 'started_at')::timestamp, t.claimed_at) - t.created_at) * 1000)::float8 AS ms \
                     FROM task t) l",
                    &[],
                )
                .await
                .expect("percentiles");
            let (p50, p99, max, cnt): (f64, f64, f64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
            json!({"peer": "rota", "case": "latency", "nodes": a.nodes, "rate": a.rate, "achieved_rate": achieved, "n": cnt,
                   "p50_ms": p50, "p99_ms": p99, "max_ms": max})
        }
        "idle" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let ours: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.expect("backend pid").get(0);
            // Statistics are flushed by backends at most once a second: read, wait, read.
            let before = transactions(&c, &bench.db).await;
            let log = server_log();
            let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let t = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
            let queries = statements_logged(&log, from, &bench.db, ours);
            let logged_secs = t.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = transactions(&c, &bench.db).await;
            let secs = t.elapsed().as_secs_f64();
            // Our two reads (one counted in `after`), the rest is the nodes'.
            let theirs = (after - before - 1).max(0) as f64;
            json!({"peer": "rota", "case": "idle", "nodes": a.nodes, "seconds": secs, "server_log": log,
                   "queries_per_s_per_node": queries as f64 / logged_secs / a.nodes as f64,
                   "tx_per_s_per_node": theirs / secs / a.nodes as f64})
        }
        "sustained" => {
            let (ins, conn) = tokio_postgres::connect(&bench.url, NoTls).await.expect("inserter");
            tokio::spawn(conn);
            let stmt = ins
                .prepare("INSERT INTO task (action) SELECT 'run' FROM generate_series(1, $1::bigint)")
                .await
                .expect("prepare");
            // Epoch seconds on the database's clock (`finished_at` is UTC without a zone).
            let start: f64 = c.query_one("SELECT extract(epoch FROM now())::float8", &[]).await.expect("clock").get(0);
            let t0 = Instant::now();
            let (mut sent, mut tick) = (0i64, tokio::time::interval(Duration::from_millis(10)));
            while t0.elapsed().as_secs_f64() < a.seconds {
                tick.tick().await;
                let due = (a.rate * t0.elapsed().as_secs_f64()) as i64;
                if due > sent {
                    ins.execute(&stmt, &[&(due - sent)]).await.expect("insert");
                    sent = due;
                }
            }
            let last_from = (a.seconds as i64 - 60).max(0) as f64;
            let first = finished_between(&c, start, start + 60.0).await;
            let last = finished_between(&c, start + last_from, start + last_from + 60.0).await;
            let backlog = count(&c, "SELECT count(*) FROM task WHERE status IN ('pending', 'running')").await;
            let dead = c
                .query_one(
                    "SELECT n_dead_tup, n_live_tup, autovacuum_count, vacuum_count FROM pg_stat_user_tables WHERE relname = 'task'",
                    &[],
                )
                .await
                .expect("tuples");
            let (dead, live, vacuums, by_nodes): (i64, i64, i64, i64) =
                (dead.get(0), dead.get(1), dead.get(2), dead.get(3));
            // The backlog left is part of the result, not a failure: how long it takes to drain
            // (at most 10 minutes looked at; null if longer).
            let t = Instant::now();
            let left_after = drained(&c, Duration::from_secs(600), POLL).await.then(|| t.elapsed().as_secs_f64());
            json!({"peer": "rota", "case": "sustained", "backlog_drained_after_s": left_after, "nodes": a.nodes, "rate": a.rate, "seconds": a.seconds, "inserted": sent,
                   "first_minute_per_s": first as f64 / 60.0, "last_minute_per_s": last as f64 / 60.0,
                   "ratio_last_over_first": last as f64 / first.max(1) as f64, "backlog_at_end": backlog,
                   "dead_tuples_at_end": dead, "live_tuples_at_end": live, "autovacuums": vacuums,
                   "vacuums_by_nodes": by_nodes})
        }
        "scale" => scale(&a, &mut bench, &c).await,
        other => panic!("unknown case `{other}`: drain, apps, latency, idle, sustained, scale"),
    };
    println!("{out}");
    bench.drop_db().await;
}

/// The ring the nodes place applications by, for these node ids (weight 1, no labels, the
/// default points per node): where each application should run.
fn app_ring(ids: &[String]) -> rota::ring::Ring {
    let members = ids
        .iter()
        .map(|id| rota::ring::Member { node_id: id.clone(), weight: 1, labels: Default::default() })
        .collect();
    rota::ring::Ring::build(1, members, rota::ring::DEFAULT_VNODES).expect("ring")
}

fn ring_owner(ring: &rota::ring::Ring, app: i64) -> String {
    ring.owner(app.to_string().as_bytes()).expect("a ring with members").node_id.clone()
}

/// Waits until each application of `want` (id, node) is `running` and owned by its node;
/// returns the database's clock then, or panics after `within`. Polls every `every`.
async fn wait_owned(c: &Client, want: &[(i64, String)], within: Duration, every: Duration) -> f64 {
    let (ids, nodes): (Vec<i64>, Vec<String>) = want.iter().cloned().unzip();
    let deadline = Instant::now() + within;
    loop {
        let r = c
            .query_one(
                "SELECT count(*), extract(epoch FROM clock_timestamp())::float8 FROM application a \
                 JOIN unnest($1::bigint[], $2::text[]) AS w(id, node) ON a.id = w.id \
                 WHERE a.owner_node = w.node AND a.state = 'running'",
                &[&ids, &nodes],
            )
            .await
            .expect("owned");
        let (n, at): (i64, f64) = (r.get(0), r.get(1));
        if n == want.len() as i64 {
            return at;
        }
        assert!(Instant::now() < deadline, "{n} of {} applications running where the ring places them", want.len());
        tokio::time::sleep(every).await;
    }
}

/// CPU seconds (user + system) a process has used, and its resident memory in MB.
fn proc_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (ticks(11) + ticks(12)) / tick; // utime, stime: fields 14 and 15 of stat
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kb / 1024.0)
}

/// The nodes' steady state over `seconds`: per node its statements per second (the database's
/// transactions: each statement of a node is one), CPU share of one core and resident memory,
/// and the tuples the database read per second for them.
async fn steady_state(c: &Client, bench: &Bench, seconds: f64) -> serde_json::Value {
    let tuples =
        format!("SELECT (tup_returned + tup_fetched)::bigint FROM pg_stat_database WHERE datname = '{}'", bench.db);
    let (tx0, tup0) = (transactions(c, &bench.db).await, count(c, &tuples).await);
    let cpu0: Vec<f64> = bench.nodes.iter().map(|n| proc_usage(n.child.id()).0).collect();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (tx1, tup1) = (transactions(c, &bench.db).await, count(c, &tuples).await);
    let secs = t.elapsed().as_secs_f64();
    let nodes: serde_json::Map<String, serde_json::Value> = bench
        .nodes
        .iter()
        .zip(cpu0)
        .map(|(n, cpu0)| {
            let (cpu1, rss) = proc_usage(n.child.id());
            (n.id.clone(), json!({"cpu_share": (cpu1 - cpu0) / secs, "rss_mb": rss}))
        })
        .collect();
    let k = bench.nodes.len() as f64;
    // Two of the transactions counted are this function's own reads.
    json!({"seconds": secs, "statements_per_s_per_node": ((tx1 - tx0 - 2).max(0) as f64) / secs / k,
           "tuples_read_per_s": (tup1 - tup0) as f64 / secs, "by_node": nodes})
}

/// Acquisitions recorded after event `from`: how many, how many by a node other than `by`
/// (or of an application outside `apps`), and how many were not preceded by their previous
/// owner's release after `from` (with `need_release`: a hand-off, not a departed owner).
async fn acquisitions(c: &Client, from: i64, by: &[String], apps: &[i64], need_release: bool) -> serde_json::Value {
    let r = c
        .query_one(
            "SELECT count(*), \
                    count(*) FILTER (WHERE NOT (node_id = ANY($2)) OR NOT (app_id = ANY($3))), \
                    count(*) FILTER (WHERE $4 AND NOT EXISTS (SELECT 1 FROM event r WHERE r.kind = 'app.released' \
                        AND r.app_id = a.app_id AND r.id > $1 AND r.id < a.id)), \
                    count(DISTINCT app_id) \
             FROM event a WHERE a.id > $1 AND a.kind = 'app.acquired'",
            &[&from, &by, &apps, &need_release],
        )
        .await
        .expect("acquisitions");
    let (n, elsewhere, unreleased, distinct): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    json!({"acquisitions": n, "distinct_apps": distinct, "outside_the_moved_set": elsewhere,
           "before_the_release": unreleased,
           "double_starts": (n - distinct) + elsewhere + unreleased})
}

/// Where a hand-off's time goes: per kind of ownership event and node, how many were recorded
/// after event `from`, and the first and last at (seconds after `t0`).
async fn steps_after(c: &Client, from: i64, t0: f64) -> serde_json::Value {
    let rows = c
        .query(
            "SELECT kind || ' ' || node_id, count(*), extract(epoch FROM min(at))::float8 - $2, \
                    extract(epoch FROM max(at))::float8 - $2 \
             FROM event WHERE id > $1 AND kind IN ('app.released', 'app.acquired', 'app.state') GROUP BY 1 ORDER BY 1",
            &[&from, &t0],
        )
        .await
        .expect("steps");
    let by: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|r| {
            let (n, first, last) = (r.get::<_, i64>(1), r.get::<_, f64>(2), r.get::<_, f64>(3));
            (r.get::<_, String>(0), json!({"n": n, "first_s": first, "last_s": last}))
        })
        .collect();
    by.into()
}

/// StreamPark-size clusters: `--apps` running `noop` applications on `--nodes` nodes (etcd).
/// Start: the applications exist (desired `running`), the nodes start, the clock runs from
/// their start until each application runs on the node the ring names. Steady state: statements,
/// CPU and memory per node over `--seconds`. Join: one more node starts; the time until every
/// application the ring moves to it runs there, from its start and from its own
/// `membership.joined` event, and no application acquired twice or before its release. Failover:
/// a node is SIGKILLed; the time until each of its applications runs on its new owner.
async fn scale(a: &Args, bench: &mut Bench, c: &Client) -> serde_json::Value {
    assert!(a.nodes >= 2, "the scale case needs --nodes 2 or more (and ROTA_BENCH_ETCD)");
    let apps = a.apps;
    let poll = if apps > 20_000 { Duration::from_millis(250) } else { Duration::from_millis(100) };
    let within = Duration::from_secs(1800);
    c.execute(
        "INSERT INTO application (name, driver, desired_state) \
         SELECT 's' || g, 'noop', 'running' FROM generate_series(1, $1::bigint) g",
        &[&apps],
    )
    .await
    .expect("applications");
    c.batch_execute("ANALYZE").await.expect("analyze");
    let ids: Vec<i64> =
        c.query("SELECT id FROM application ORDER BY id", &[]).await.expect("ids").iter().map(|r| r.get(0)).collect();
    let mut names: Vec<String> = (0..a.nodes).map(|i| format!("b{i}")).collect();
    let ring = app_ring(&names);
    let place = |ring: &rota::ring::Ring, ids: &[i64]| -> Vec<(i64, String)> {
        ids.iter().map(|&id| (id, ring_owner(ring, id))).collect()
    };

    // Start.
    let t0 = db_clock(c).await;
    bench.spawn_nodes(a.nodes);
    let started = wait_owned(c, &place(&ring, &ids), within, poll).await;
    bench.wait_nodes();
    eprintln!("scale: {apps} applications running on {} nodes after {:.2} s", a.nodes, started - t0);

    // Steady state, once the first monitor ticks and the start's writes are behind.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady = steady_state(c, bench, a.seconds).await;
    eprintln!("scale: steady state {steady}");

    // Join.
    let joiner = format!("b{}", a.nodes);
    names.push(joiner.clone());
    let ring4 = app_ring(&names);
    let moved: Vec<i64> = ids.iter().copied().filter(|&id| ring_owner(&ring4, id) == joiner).collect();
    let between_others = ids.iter().filter(|&&id| {
        let (o3, o4) = (ring_owner(&ring, id), ring_owner(&ring4, id));
        o4 != joiner && o3 != o4
    });
    assert_eq!(between_others.count(), 0, "a join moves applications only to the joiner");
    let ev0 = count(c, "SELECT COALESCE(max(id), 0) FROM event").await;
    let t_spawn = db_clock(c).await;
    bench.spawn_nodes(1);
    let want: Vec<(i64, String)> = moved.iter().map(|&id| (id, joiner.clone())).collect();
    let handed = wait_owned(c, &want, within, poll).await;
    bench.wait_nodes();
    let joined_at: f64 = c
        .query_one(
            "SELECT extract(epoch FROM min(at))::float8 FROM event WHERE id > $1 AND kind = 'membership.joined' AND node_id = $2",
            &[&ev0, &joiner],
        )
        .await
        .expect("joined event")
        .get(0);
    let last_acquired: f64 = c
        .query_one(
            "SELECT extract(epoch FROM max(at))::float8 FROM event WHERE id > $1 AND kind = 'app.acquired'",
            &[&ev0],
        )
        .await
        .expect("acquired")
        .get(0);
    // The old owners' first release: the moment the view that adds the joiner applied there (it
    // waits `membership.settle_ms` for the view to settle, docs/design.md#settled-start).
    let first_release: f64 = c
        .query_one(
            "SELECT extract(epoch FROM min(at))::float8 FROM event WHERE id > $1 AND kind = 'app.released'",
            &[&ev0],
        )
        .await
        .expect("released")
        .get(0);
    let steps = steps_after(c, ev0, joined_at).await;
    let join = json!({"moved": moved.len(), "spawn_to_running_s": handed - t_spawn, "joined_to_running_s": handed - joined_at,
                      "steps_after_joined": steps,
                      "joined_to_first_release_s": first_release - joined_at, "first_release_to_running_s": handed - first_release,
                      "spawn_to_joined_s": joined_at - t_spawn, "joined_to_last_acquired_s": last_acquired - joined_at,
                      "checks": acquisitions(c, ev0, std::slice::from_ref(&joiner), &moved, true).await});
    eprintln!("scale: join {join}");

    // Failover: the second node dies without a word.
    let victim = names.remove(1);
    let ring3 = app_ring(&names);
    let orphans: Vec<i64> = ids.iter().copied().filter(|&id| ring_owner(&ring4, id) == victim).collect();
    let ev1 = count(c, "SELECT COALESCE(max(id), 0) FROM event").await;
    let idx = bench.nodes.iter().position(|n| n.id == victim).expect("victim");
    let t_kill = db_clock(c).await;
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(bench.nodes[idx].child.id() as i32, libc::SIGKILL) };
    let dead = bench.nodes.remove(idx);
    let want: Vec<(i64, String)> = orphans.iter().map(|&id| (id, ring_owner(&ring3, id))).collect();
    let recovered = wait_owned(c, &want, within, poll).await;
    drop(dead);
    let seen_lost: Option<f64> = c
        .query_one(
            "SELECT extract(epoch FROM min(at))::float8 FROM event WHERE id > $1 AND kind IN ('membership.lost', 'membership.left') AND node_id = $2",
            &[&ev1, &victim],
        )
        .await
        .expect("lost event")
        .get(0);
    let steps = steps_after(c, ev1, t_kill).await;
    let failover = json!({"orphans": orphans.len(), "lease_ttl_s": 3, "kill_to_running_s": recovered - t_kill,
                          "steps_after_kill": steps,
                          "kill_to_departure_event_s": seen_lost.map(|t| t - t_kill),
                          "checks": acquisitions(c, ev1, &names, &orphans, false).await});
    eprintln!("scale: failover {failover}");
    json!({"peer": "rota", "case": "scale", "nodes": a.nodes, "apps": apps, "start_s": started - t0,
           "steady": steady, "join": join, "failover": failover})
}
