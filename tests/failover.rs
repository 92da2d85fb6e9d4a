//! A real PostgreSQL failover under load: a primary and its streaming replica (initdb,
//! `pg_basebackup -R`, each on a free loopback port), two `rota` nodes on etcd given both hosts
//! (`…?target_session_attrs=read-write`), a producer inserting `run` jobs and counting the
//! inserts whose commit it saw, then the primary crashed (`pg_ctl stop -m immediate`) and the
//! replica promoted while the load goes on. Every job is a `shell` command that writes to a
//! witness file when it begins and when it ends, so what ran, where and when comes from outside
//! the code under test.
//!
//! Checked (docs/operations.md#ha): with synchronous replication no acknowledged row is lost;
//! with asynchronous replication rows are lost and their ids handed out again, and still no row
//! takes another task's result (the claim token, docs/design.md#i3); either way every row ends
//! `succeeded` within a bound, no task runs twice at once, and every result is its own task's.
//!
//! Must never: touch the machine's shared PostgreSQL (the servers are private), or wait with a
//! fixed sleep (the producer's pauses pace the load).

mod common;
#[path = "chaos/pg.rs"]
mod pg;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use common::proxy::Proxy;
use common::{cluster, wait_until, Etcd, Node, FAST};
use pg::{PrivatePg, StopMode};

/// One scenario at a time: each keeps two cores busy, and the bounds are for one.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// Rows per insert statement.
const BATCH: usize = 20;
/// How long every row has, from the last insert, to end `succeeded`.
const SETTLE: Duration = Duration::from_secs(40);

/// Rows inserted around the crash whose jobs take [`SLOW`] seconds instead of 0.02: they are
/// still running when the promoted server takes over (their outcomes are written there), and
/// after an asynchronous failover the new rows that take the lost rows' ids are claimed by the
/// same nodes (the ring places a job by its id) while the lost rows' runs are still going.
const AROUND: usize = 200;
const SLOW: &str = "1.5";

/// The job: a witness line when it begins and one when it ends, then its own `k` as its output
/// (so its result names the task it ran for).
const RUN: &str = r#"b=$(date +%s%N); echo "B $ROTA_PARAM_K $ROTA_TASK_ID $ROTA_NODE_ID $$ $b" >> "$FO_DIR/witness"; [ "$ROTA_PARAM_S" = 0 ] || sleep "$ROTA_PARAM_S"; echo "E $ROTA_PARAM_K $ROTA_TASK_ID $ROTA_NODE_ID $$ $b $(date +%s%N)" >> "$FO_DIR/witness"; echo "k=$ROTA_PARAM_K""#;

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// What the producer saw: the `k` of every row whose insert committed, and of those whose
/// insert failed (committed or not: in doubt).
#[derive(Default)]
struct Produced {
    acked: Vec<i64>,
    doubt: Vec<i64>,
    /// When a commit first succeeded after the crash.
    first_after_crash: Option<i64>,
}

/// The producer and how the scenario steers it.
#[derive(Default)]
struct Load {
    /// Rows are [`SLOW`] while set.
    slow: AtomicBool,
    /// No insert while set.
    hold: AtomicBool,
    /// Set by the producer when it has seen `hold` (no insert in flight).
    held: AtomicBool,
    /// When the primary was down.
    crashed_at: Mutex<Option<i64>>,
    out: Mutex<Produced>,
}

impl Load {
    fn acked(&self) -> usize {
        self.out.lock().unwrap().acked.len()
    }
}

/// Insert `run` jobs of application `app`, `BATCH` per statement, until `total` are
/// acknowledged, reconnecting whenever a statement fails (the primary went away).
fn produce((url, app, total): (String, i64, usize), load: Arc<Load>) {
    let mut conn: Option<PgConnection> = None;
    let mut next_k = 1i64;
    while load.acked() < total {
        if load.hold.load(Ordering::SeqCst) {
            load.held.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let Some(c) = conn.as_mut() else {
            conn = PgConnection::establish(&url).ok();
            if conn.is_none() {
                // Pacing while no server takes writes.
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        let ks: Vec<i64> = (next_k..next_k + BATCH as i64).collect();
        next_k += BATCH as i64;
        let s = if load.slow.load(Ordering::SeqCst) { SLOW } else { "0" };
        let values: Vec<String> = ks.iter().map(|k| format!("({app}, 'run', '{{\"k\":{k},\"s\":{s}}}')")).collect();
        let sql = format!("INSERT INTO task (app_id, action, payload) VALUES {}", values.join(", "));
        let result = c.batch_execute(&sql);
        let mut o = load.out.lock().unwrap();
        match result {
            Ok(()) => {
                o.acked.extend(&ks);
                if o.first_after_crash.is_none() && load.crashed_at.lock().unwrap().is_some() {
                    o.first_after_crash = Some(now_ns());
                }
            }
            Err(_) => {
                o.doubt.extend(&ks);
                conn = None;
            }
        }
        drop(o);
        // Pacing: about 2,000 rows a second while the primary answers.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One execution of a job, from the witness.
#[derive(Debug, Clone)]
struct Exec {
    k: i64,
    task: i64,
    node: String,
    begin: i64,
    /// None: no end line (cut short).
    end: Option<i64>,
}

fn witness(path: &Path) -> Vec<Exec> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    // A line being written is not read yet.
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    let mut open: BTreeMap<(String, String, i64), Exec> = BTreeMap::new();
    let mut done = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or_default();
        match f.first().copied() {
            Some("B") if f.len() == 6 => {
                let e = Exec { k: num(1), task: num(2), node: f[3].into(), begin: num(5), end: None };
                open.insert((f[3].into(), f[4].into(), num(5)), e);
            }
            Some("E") if f.len() == 7 => {
                if let Some(mut e) = open.remove(&(f[3].to_string(), f[4].to_string(), num(5))) {
                    e.end = Some(num(6));
                    done.push(e);
                }
            }
            _ => panic!("a witness line that no job wrote: {line:?}"),
        }
    }
    done.extend(open.into_values());
    done
}

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    result: Option<String>,
}

/// The `k` of a row's payload.
fn k_of(payload: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(payload).unwrap()["k"].as_i64().unwrap()
}

/// What one failover did.
struct Outcome {
    acked: BTreeSet<i64>,
    rows: Vec<Row>,
    execs: Vec<Exec>,
    /// Ids of rows lost with the old primary that the promoted server handed out again.
    reused: usize,
}

/// Run the scenario with synchronous or asynchronous replication — `total` jobs acknowledged,
/// the crash after `crash_at` (and [`AROUND`] more) — check what holds either way, and return
/// what happened for the caller's own checks.
fn failover(synchronous: bool, total: usize, crash_at: usize) -> Outcome {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut primary = PrivatePg::start(None);
    // The replica streams through a proxy: frozen, it holds back what the primary sends, as a
    // slow link does; dropped at the crash, what it held is lost.
    let link = Proxy::start(&format!("127.0.0.1:{}", primary.port));
    let mut replica = PrivatePg::replica_of(&primary, link.port, "replica", "-c wal_retrieve_retry_interval=100ms");
    let mut admin = PgConnection::establish(&primary.url("postgres", "failover-test")).unwrap();
    if synchronous {
        // After the backup, so that the promoted replica does not wait for a standby of its own.
        for sql in [
            "ALTER SYSTEM SET synchronous_standby_names = 'replica'",
            "ALTER SYSTEM SET synchronous_commit = 'on'",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).unwrap();
        }
    }
    let want = if synchronous { "sync" } else { "async" };
    wait_until(Duration::from_secs(20), &format!("the replica to stream ({want})"), || {
        #[derive(QueryableByName)]
        struct S {
            #[diesel(sql_type = Text)]
            s: String,
        }
        diesel::sql_query(
            "SELECT sync_state AS s FROM pg_stat_replication WHERE application_name = 'replica' AND state = 'streaming'",
        )
        .load::<S>(&mut admin)
        .is_ok_and(|r| r.iter().any(|s| s.s == want))
    });
    admin.batch_execute("CREATE DATABASE rota").unwrap();
    let direct = primary.url("rota", "failover-test");
    let store = rota::store::Store::connect(
        &rota::store::DbUrl::parse(&direct).unwrap(),
        &rota::store::PoolOptions { max_size: 1, connect_timeout: Duration::from_secs(5) },
    )
    .unwrap();
    store.migrate().unwrap();
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({ "run": RUN, "env": { "FO_DIR": dir.path() }, "timeout_ms": 10000 });
    let mut db = PgConnection::establish(&direct).unwrap();
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let app =
        diesel::sql_query("INSERT INTO application (name, driver, spec) VALUES ('jobs', 'shell', $1) RETURNING id")
            .bind::<Text, _>(spec.to_string())
            .get_result::<Id>(&mut db)
            .unwrap()
            .id;
    drop(db);

    let both = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/rota?target_session_attrs=read-write",
        primary.port, replica.port
    );
    let etcd = Etcd::start();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = ["n1", "n2"]
        .iter()
        .zip(&dirs)
        .map(|(id, d)| {
            let args = cluster::serve_args(&both, &etcd.endpoint(), id, &[]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Node::start(d.path(), &args, &FAST)
        })
        .collect();
    cluster::converge(&[&nodes[0], &nodes[1]], &["n1", "n2"], Duration::from_secs(30));
    eprintln!("failover ({want}): set up in {:.1} s", started.elapsed().as_secs_f64());

    let load = Arc::new(Load::default());
    let producer = {
        let (url, load) = (both.clone(), load.clone());
        std::thread::spawn(move || produce((url, app, total), load))
    };
    let load_began = Instant::now();
    wait_until(Duration::from_secs(30), "the first rows acknowledged", || load.acked() >= crash_at);
    if !synchronous {
        // The replica stops receiving and the primary goes on acknowledging: what it had not
        // shipped is lost with it. (Frozen first: every slow row is then a lost one.)
        link.freeze();
    }
    load.slow.store(true, Ordering::SeqCst);
    let before = load.acked();
    wait_until(Duration::from_secs(10), "rows acknowledged just before the crash", || load.acked() >= before + AROUND);
    load.hold.store(true, Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "the producer to hold", || load.held.load(Ordering::SeqCst));
    // The crash comes while jobs of those rows run: a slow job of the rows acknowledged last
    // has begun (its run spans the crash, and its id, after an asynchronous failover, another
    // task's).
    let last = {
        let o = load.out.lock().unwrap();
        o.acked.iter().chain(&o.doubt).copied().max().unwrap_or_default()
    };
    let witness_file = dir.path().join("witness");
    wait_until(Duration::from_secs(10), "a job of the last rows before the crash to begin", || {
        witness(&witness_file).iter().any(|e| e.k > last - AROUND as i64 / 2)
    });
    let crash = now_ns();
    primary.stop(StopMode::Immediate);
    // From now on a commit can only be the promoted server's.
    let down = now_ns();
    *load.crashed_at.lock().unwrap() = Some(down);
    load.hold.store(false, Ordering::SeqCst);
    drop(link);
    replica.promote();
    let promoted = now_ns();
    let after = load.acked();
    wait_until(Duration::from_secs(20), "rows acknowledged by the promoted server", || {
        load.acked() >= (after + AROUND).min(total)
    });
    load.slow.store(false, Ordering::SeqCst);
    producer.join().unwrap();
    let last_insert = Instant::now();
    let load_secs = load_began.elapsed().as_secs_f64();

    // Every row ends succeeded (the new primary's rows: those the old one lost are gone).
    let mut db = PgConnection::establish(&replica.url("rota", "failover-test")).unwrap();
    let mut rows: Vec<Row> = Vec::new();
    wait_until(SETTLE, "every row to end", || {
        rows = diesel::sql_query("SELECT id, payload, status, result FROM task ORDER BY id").load(&mut db).unwrap();
        rows.iter().all(|r| r.status != "pending" && r.status != "running")
    });
    let settled = last_insert.elapsed().as_secs_f64();
    // The first claim the nodes made on the promoted server (the database's clock is this
    // machine's).
    #[derive(QueryableByName)]
    struct At {
        #[diesel(sql_type = Nullable<diesel::sql_types::Timestamp>)]
        at: Option<chrono::NaiveDateTime>,
    }
    let down_utc = chrono::DateTime::from_timestamp_nanos(down).naive_utc();
    let first_claim = diesel::sql_query("SELECT min(claimed_at) AS at FROM task WHERE claimed_at > $1")
        .bind::<diesel::sql_types::Timestamp, _>(down_utc)
        .get_result::<At>(&mut db)
        .unwrap()
        .at
        .and_then(|t| t.and_utc().timestamp_nanos_opt());
    let execs = witness(&dir.path().join("witness"));
    for n in &nodes {
        assert!(!n.logs().contains("fenced"), "a node was fenced by a database failover:\n{}", n.logs());
    }
    drop(nodes);

    let p = load.out.lock().unwrap();
    let acked: BTreeSet<i64> = p.acked.iter().copied().collect();
    let present: BTreeSet<i64> = rows.iter().map(|r| k_of(&r.payload)).collect();
    assert_eq!(present.len(), rows.len(), "a task inserted twice");
    let lost = acked.difference(&present).count();
    // Ids the promoted server handed out again: a witness of a run under an id whose row now
    // holds another k.
    let now: BTreeMap<i64, i64> = rows.iter().map(|r| (r.id, k_of(&r.payload))).collect();
    let reused: BTreeSet<i64> =
        execs.iter().filter(|e| now.get(&e.task).is_some_and(|k| *k != e.k)).map(|e| e.task).collect();
    // The first run of a task inserted after the crash (every row up to `last` was inserted
    // before it): the whole path — insert, claim, start — on the promoted server.
    let first_run_after = execs.iter().filter(|e| e.k > last).map(|e| e.begin).min();
    let reruns = {
        let mut per: BTreeMap<i64, usize> = BTreeMap::new();
        for e in &execs {
            *per.entry(e.k).or_default() += 1;
        }
        per.values().filter(|n| **n > 1).count()
    };
    // Runs of one task at once: in order of their beginning, each run must end before the next
    // begins (a run without an end line never ended, as far as anyone knows).
    let mut by_k: BTreeMap<i64, Vec<&Exec>> = BTreeMap::new();
    for e in &execs {
        by_k.entry(e.k).or_default().push(e);
    }
    let mut at_once = Vec::new();
    for runs in by_k.values_mut() {
        runs.sort_by_key(|e| e.begin);
        for w in runs.windows(2) {
            if w[0].end.is_none_or(|end| end > w[1].begin) {
                at_once.push((w[0].clone(), w[1].clone()));
            }
        }
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &execs {
        *per_node.entry(e.node.as_str()).or_default() += 1;
    }
    let ms = |ns: i64| ns as f64 / 1e6;
    eprintln!(
        "failover ({want}): {} rows acknowledged ({} in doubt), {lost} acknowledged rows lost, {} ids handed out \
         again; crash to promoted {:.0} ms, to the first acknowledged insert {:.0} ms, to the first claim on the \
         promoted server {:.0} ms, to the first run of a task inserted after it {:.0} ms (behind the backlog); {} rows, {} runs {per_node:?}, {reruns} tasks run more than once, {} twice at once; load {load_secs:.1} s, settled \
         {settled:.1} s after the last insert; {:.1} s in all",
        acked.len(),
        p.doubt.len(),
        reused.len(),
        ms(promoted - crash),
        p.first_after_crash.map_or(f64::NAN, |t| ms(t - crash)),
        first_claim.map_or(f64::NAN, |t| ms(t - crash)),
        first_run_after.map_or(f64::NAN, |t| ms(t - crash)),
        rows.len(),
        execs.len(),
        at_once.len(),
        started.elapsed().as_secs_f64(),
    );
    // Nothing run twice at once — where the promoted server knows every claim. After an
    // asynchronous failover it may not: a claim the old primary had not shipped is lost, its
    // row is pending again, and a run that spans the crash can meet the next one
    // (docs/operations.md#ha).
    if synchronous {
        assert!(at_once.is_empty(), "tasks ran twice at once: {at_once:?}");
    } else if !at_once.is_empty() {
        let some = &at_once[..at_once.len().min(3)];
        eprintln!("failover ({want}): runs at once (claims lost with the old primary; crash at {crash}): {some:?}");
    }

    // Every row succeeded with its own task's result, from a run of that task under that id.
    for r in &rows {
        let k = k_of(&r.payload);
        assert_eq!(r.status, "succeeded", "task {} (k {k}): {:?}", r.id, r.result);
        let result: serde_json::Value = serde_json::from_str(r.result.as_deref().unwrap_or("null")).unwrap();
        assert_eq!(
            result["stdout_tail"],
            serde_json::json!([format!("k={k}")]),
            "task {} (k {k}) took another task's result: {result}",
            r.id
        );
        assert!(
            execs.iter().any(|e| e.k == k && e.task == r.id && e.end.is_some()),
            "task {} (k {k}) succeeded without a run of it",
            r.id
        );
    }
    Outcome { acked, rows, execs, reused: reused.len() }
}

/// Synchronous replication: acknowledged means kept, through a crash of the primary.
#[test]
fn a_failover_to_a_synchronous_replica_loses_no_acknowledged_row() {
    let o = failover(true, 2000, 800);
    let present: BTreeSet<i64> = o.rows.iter().map(|r| k_of(&r.payload)).collect();
    let lost: Vec<&i64> = o.acked.difference(&present).collect();
    assert!(lost.is_empty(), "{} acknowledged rows lost: {lost:?}", lost.len());
    assert_eq!(o.reused, 0, "ids handed out again");
    assert!(o.execs.len() >= o.rows.len());
}

/// Asynchronous replication: the rows the old primary had not shipped are lost, acknowledged or
/// not, and the promoted server hands their ids out again — to new tasks that the same nodes
/// claim at the same membership epoch while the lost tasks' runs are still going. Their late
/// outcomes are refused (the claim token): every row keeps its own task's result.
#[test]
fn a_failover_to_an_asynchronous_replica_loses_rows_but_no_result_lands_on_another_task() {
    let o = failover(false, 1000, 400);
    let present: BTreeSet<i64> = o.rows.iter().map(|r| k_of(&r.payload)).collect();
    assert!(o.acked.difference(&present).count() > 0, "the scenario lost nothing: the replica was not behind");
    assert!(o.reused > 0, "no id was handed out again: the scenario did not test what it is for");
}
