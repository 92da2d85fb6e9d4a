//! `rota serve` as a user runs it: health, metrics, standalone exclusivity, shutdown, and
//! readiness following the database.

mod common;

use std::time::Duration;

use common::{wait_until, Node, PgDb};

const FAST_LOCK: [(&str, &str); 2] =
    [("ROTA__MEMBERSHIP__HEARTBEAT_INTERVAL_MS", "300"), ("ROTA__MEMBERSHIP__LOCK_TTL_MS", "2000")];

#[test]
fn a_node_on_the_embedded_default_serves_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[], &[]);
    wait_until(Duration::from_secs(10), "/readyz 200", || node.get("/readyz").0 == 200);
    let (_, body) = node.get("/readyz");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["membership"]["status"], "joined");
    assert_eq!(node.get("/livez").0, 200);
    // The start-up message shows where to go next: the console first.
    node.wait_logged(&format!("Open {} in a browser for the web console", node.url("/")), Duration::from_secs(5));

    let (status, metrics) = node.get("/metrics");
    assert_eq!(status, 200);
    for line in ["rota_membership_joined 1", "rota_members 1", "rota_membership_errors_total 0"] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    let (status, body) = node.get("/no/such/route");
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "not_found");

    // The embedded database and the node id live in the data directory.
    assert!(dir.path().join("rota.db").exists());
    let id = std::fs::read_to_string(dir.path().join("node-id")).unwrap();
    assert_eq!(ready["node_id"], id.trim());
}

fn second_node_is_refused(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let first = Node::start(dir.path(), args, &[]);
    wait_until(Duration::from_secs(10), "first node ready", || first.get("/readyz").0 == 200);
    let other_dir = tempfile::tempdir().unwrap();
    let second_args = with_db(args, dir.path());
    let second_args: Vec<&str> = second_args.iter().map(String::as_str).collect();
    let mut second = Node::spawn(other_dir.path(), &second_args, &[]);
    let status = second.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let logs = second.logs();
    assert!(logs.contains("already runs standalone on this database"), "{logs}");
    assert!(logs.contains("--membership etcd"), "the refusal must say what to use instead: {logs}");
    // The first node is unaffected.
    assert_eq!(first.get("/readyz").0, 200);
}

/// The second node gets its own data dir but must share the first one's database.
fn with_db(args: &[&str], first_dir: &std::path::Path) -> Vec<String> {
    if args.is_empty() {
        vec!["--database-url".into(), format!("sqlite://{}", first_dir.join("rota.db").display())]
    } else {
        args.iter().map(|s| s.to_string()).collect()
    }
}

#[test]
fn a_second_standalone_node_on_the_same_sqlite_database_is_refused() {
    second_node_is_refused(&[]);
}

#[test]
fn a_second_standalone_node_on_the_same_postgres_database_is_refused() {
    let pg = PgDb::create();
    second_node_is_refused(&["--database-url", &pg.url]);
}

#[test]
fn graceful_shutdown_releases_the_lock_for_the_next_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Node::start(dir.path(), &[], &[]);
    wait_until(Duration::from_secs(10), "first node ready", || first.get("/readyz").0 == 200);
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM must be a clean exit: {status}\n{}", first.logs());
    assert!(first.logs().contains("released the standalone lock"), "{}", first.logs());
    // The lock is free at once: no waiting out the TTL.
    let next = Node::start(dir.path(), &[], &[]);
    wait_until(Duration::from_secs(10), "next node ready", || next.get("/readyz").0 == 200);
}

#[test]
fn a_killed_holder_on_this_machine_is_recognised_as_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Node::start(dir.path(), &[], &[]);
    wait_until(Duration::from_secs(10), "first node ready", || first.get("/readyz").0 == 200);
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10));
    // Its lock row is fresh, but its pid is gone on this host: take over without the 10 s TTL.
    let next = Node::start(dir.path(), &[], &[]);
    wait_until(Duration::from_secs(5), "next node ready", || next.get("/readyz").0 == 200);
}

#[test]
fn readyz_follows_the_database_away_and_back() {
    let pg = PgDb::create();
    let dir = tempfile::tempdir().unwrap();
    // libpq takes a password from the query string too (the server trusts us and ignores it).
    const SECRET: &str = "hunter2-in-the-query";
    let url = format!("{}?sslmode=disable&password={SECRET}", pg.url);
    let node = Node::start(dir.path(), &["--database-url", &url], &FAST_LOCK);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);

    pg.go_away();
    let mut body = String::new();
    // The membership may fence first (its lock lapses quickly here); the database check fails once
    // the last statement the database answered is over a second old (docs/operations.md).
    wait_until(Duration::from_secs(15), "/readyz 503 with its database check failed", || {
        let (status, b) = node.get("/readyz");
        body = b;
        let db_failed = serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|v| v["checks"]["database"]["ok"] == serde_json::Value::Bool(false));
        status == 503 && db_failed
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["checks"]["database"]["ok"], false, "{body}");
    assert!(v["reason"].as_str().unwrap().contains("database"), "{body}");
    // Past the lock TTL without a heartbeat the node fences itself. Every answer meanwhile (a
    // dropped connection first, then refused new ones) is open to anyone: no URL, user, host or
    // database name (docs/security.md).
    let mut seen = vec![body];
    wait_until(Duration::from_secs(15), "the node to fence itself", || {
        let b = node.get("/readyz").1;
        seen.push(b.clone());
        b.contains("fenced")
    });
    let user = pg.url.split("://").nth(1).unwrap().split(['@', ':']).next().unwrap();
    for body in &seen {
        for detail in ["postgres://", &format!("\"{user}\""), &pg.name, "127.0.0.1", "localhost", SECRET] {
            assert!(!body.contains(detail), "/readyz shows `{detail}`: {body}");
        }
    }

    pg.come_back();
    wait_until(Duration::from_secs(20), "/readyz 200 once the database is back", || node.get("/readyz").0 == 200);
    // The node's output is read by another thread: the line may land just after /readyz flips.
    wait_until(Duration::from_secs(5), "the re-join in the node's log", || {
        node.logs().contains("re-joined as the standalone node")
    });
    assert_eq!(node.get("/livez").0, 200);
    let logs = node.logs();
    assert!(!logs.contains(SECRET), "the password reached the log:\n{logs}");
    assert!(logs.contains("password=***"), "the log keeps the redacted URL:\n{logs}");
}

#[test]
fn json_logs_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--log-format", "json"], &[]);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);
    let logs = node.logs();
    let serving = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "rota node is serving")
        .unwrap_or_else(|| panic!("no JSON line for the start:\n{logs}"));
    assert_eq!(serving["level"], "INFO");
    assert!(serving["node.id"].is_string(), "{serving}");
}

#[test]
fn cluster_endpoint_in_standalone_mode() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--node-id", "solo-1", "--label", "dc=eu", "--weight", "3"], &[]);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);
    let (status, body) = node.get("/api/v1/cluster");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["backend"], "standalone");
    assert_eq!(v["self"]["node_id"], "solo-1");
    assert_eq!(v["self"]["status"], "joined");
    assert_eq!(v["members"][0]["labels"]["dc"], "eu");
    assert_eq!(v["members"][0]["weight"], 3);
    assert_eq!(v["ring"]["points"], 3 * 1024);
}

/// libfaketime's library (Debian: `/usr/lib/<triplet>/faketime/libfaketime.so.1`), to start a
/// node with its clock shifted (`scripts/prereqs.sh test` installs it).
fn libfaketime() -> String {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is missing: scripts/prereqs.sh test installs it")
        .display()
        .to_string()
}

/// A node whose clock runs ahead of the database's by more than the fence's margin would have
/// its writes taken after its membership ended: it refuses to start, naming the skew and the
/// fix, before it takes the lock or serves. One whose clock runs behind starts, with a warning
/// (`membership::clock`). The node's wall clock is shifted with libfaketime (its monotonic clock
/// is left alone); PostgreSQL only, since SQLite reads the node's own clock.
#[test]
fn a_node_whose_clock_is_ahead_of_the_databases_refuses_to_start() {
    let pg = PgDb::create();
    let dir = tempfile::tempdir().unwrap();
    let lib = libfaketime();
    let shifted = |by| [("LD_PRELOAD", lib.as_str()), ("FAKETIME", by), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];

    let mut ahead = Node::spawn(dir.path(), &["--database-url", &pg.url], &shifted("+5s"));
    let status = ahead.wait_exit(Duration::from_secs(30));
    let logs = ahead.logs();
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(logs.contains("the database's clock is") && logs.contains("behind this node's"), "{logs}");
    assert!(logs.contains("synchronise both clocks (NTP)"), "{logs}");
    assert!(!logs.contains("http.addr"), "it must not have served: {logs}");

    let behind = Node::start(dir.path(), &["--database-url", &pg.url], &shifted("-5s"));
    wait_until(Duration::from_secs(10), "the node whose clock is behind to be ready", || {
        behind.get("/readyz").0 == 200
    });
    assert!(behind.logs().contains("the database's clock is ahead of this node's"), "{}", behind.logs());
}

/// Many concurrent reads of rows with large payloads, from any reader, leave the node's own
/// work alone: the API has its own connections and waits for them without holding threads,
/// lists leave payloads and results out (docs/api.md#load), so the node neither fences itself
/// nor restarts what it supervises.
#[test]
fn concurrent_task_lists_over_large_rows_do_not_starve_the_node() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let pg = PgDb::create();
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let env: Vec<(&str, &str)> = common::FAST.iter().chain(FAST_LOCK.iter()).copied().collect();
    let node = Node::start(dir.path(), &["--database-url", &pg.url], &env);
    wait_until(Duration::from_secs(15), "ready", || node.get("/readyz").0 == 200);
    let spec = serde_json::json!({
        "command": ["sh", "-c", "echo started >> \"$STARTS\"; exec sleep 1000"],
        "env": { "STARTS": starts.to_str().unwrap() },
    });
    pg.exec(&format!(
        "INSERT INTO application (name, driver, spec) VALUES ('worker', 'process', '{spec}');
         INSERT INTO task (app_id, action) VALUES (1, 'start');
         INSERT INTO task (action, status, payload, result)
           SELECT 'start', 'succeeded', '{{\"blob\": \"' || repeat('x', 1000000) || '\"}}',
                  '{{\"blob\": \"' || repeat('y', 1000000) || '\"}}'
           FROM generate_series(1, 20)"
    ));
    let started = || std::fs::read_to_string(&starts).map(|s| s.lines().count()).unwrap_or(0);
    wait_until(Duration::from_secs(20), "the worker to start", || started() == 1);

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    // Half the readers list, half read one large row whole.
    let urls = [node.url("/api/v1/tasks?limit=50"), node.url("/api/v1/tasks/2")];
    let readers: Vec<_> = (0..200)
        .map(|i| {
            let (stop, served, url) = (stop.clone(), served.clone(), urls[i % 2].clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if common::http_get(&url).0 == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Three times the lock's time to live under load.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    wait_until(Duration::from_secs(60), "the load to run its course", || std::time::Instant::now() >= until);
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(served.load(Ordering::Relaxed) > 0, "no list was served");
    let logs = node.logs();
    assert!(!logs.contains("fenced"), "the node fenced itself under read load:\n{logs}");
    assert_eq!(started(), 1, "the supervised process was restarted");
    // Task 1 is the worker's start; the large rows follow.
    let (status, page) = node.get("/api/v1/tasks?limit=5&after=1");
    assert_eq!(status, 200);
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    let first = &page["items"][0];
    assert!(first.get("payload").is_none() && first.get("result").is_none(), "lists carry no payload: {first}");
    let one = node.get(&format!("/api/v1/tasks/{}", first["id"]));
    let one: serde_json::Value = serde_json::from_str(&one.1).unwrap();
    assert_eq!(one["payload"]["blob"].as_str().map(str::len), Some(1_000_000), "the task itself has it");
}

/// A database connection that hangs without being reset (here a proxy that stops forwarding,
/// as a frozen server or a stuck network path does) is noticed: the NOTIFY listener checks its
/// connection, `rota_notify_listening` drops to 0 within seconds, and comes back with the
/// database (docs/operations.md#ha).
#[test]
fn a_hung_database_connection_is_noticed_by_the_listener() {
    let pg = PgDb::create();
    let upstream = common::pg_admin_url();
    let upstream = upstream.split_once('@').and_then(|(_, r)| r.split_once('/')).map(|(hp, _)| hp.to_string()).unwrap();
    let proxy = common::Proxy::start(&upstream);
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, pg.name);
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(&str, &str)> = common::FAST.to_vec();
    let node = Node::start(dir.path(), &["--database-url", &url], &env);
    let listening = |v: u8| {
        let (_, m) = node.get("/metrics");
        m.lines().any(|l| l == format!("rota_notify_listening {v}"))
    };
    wait_until(Duration::from_secs(15), "the listener to subscribe", || listening(1));
    proxy.freeze();
    let frozen = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "the gauge to say the listener is not listening", || listening(0));
    eprintln!("noticed after {:?}", frozen.elapsed());
    let logs = node.wait_logged("did not answer a check", Duration::from_secs(5));
    assert!(logs.contains("NOTIFY listener lost its connection"), "{logs}");
    proxy.thaw();
    wait_until(Duration::from_secs(30), "the listener to come back", || listening(1));
}
