//! Dispatch across real nodes (PostgreSQL + etcd): ownership follows the ring, a join moves only
//! about 1/(N+1) of the applications, a crashed node's applications and running tasks are taken
//! over, and a paused node that wakes up changes nothing.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use rota::ring::{Member, Ring};

use common::cluster::{ttl, App, Cluster};
use common::wait_until;

/// The ring the nodes build for these ids (same code, same defaults).
fn ring(ids: &[&str]) -> Ring {
    let members = ids.iter().map(|id| Member { node_id: id.to_string(), weight: 1, labels: BTreeMap::new() }).collect();
    Ring::build(1, members, rota::ring::DEFAULT_VNODES).unwrap()
}

fn owner(ring: &Ring, app: i64) -> String {
    ring.owner(app.to_string().as_bytes()).unwrap().node_id.clone()
}

/// Wait until every application is running and owned by the node `ring` names.
fn wait_owned_as(c: &Cluster, ring: &Ring, what: &str) -> Vec<App> {
    let mut apps = Vec::new();
    wait_until(Duration::from_secs(40), what, || {
        apps = c.apps();
        apps.iter().all(|a| a.state == "running" && a.owner_node.as_deref() == Some(owner(ring, a.id).as_str()))
    });
    apps
}

#[test]
fn ownership_follows_the_ring_and_a_join_moves_about_a_quarter() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let values: Vec<String> = (1..=60).map(|i| format!("('app-{i}', 'noop')")).collect();
    c.sql(&format!("INSERT INTO application (name, driver) VALUES {}", values.join(",")));
    c.sql("INSERT INTO task (app_id, action) SELECT id, 'start' FROM application");
    let three = ring(&["n1", "n2", "n3"]);
    let before = wait_owned_as(&c, &three, "each application running on the node the ring names");
    wait_until(Duration::from_secs(20), "every start to finish", || c.pending_or_running() == 0);

    c.add("n4");
    c.converge(&["n1", "n2", "n3", "n4"]);
    let four = ring(&["n1", "n2", "n3", "n4"]);
    let after = wait_owned_as(&c, &four, "applications to follow the new ring");
    let moved = before.iter().zip(&after).filter(|(b, a)| b.owner_node != a.owner_node).count();
    let to_new = after.iter().filter(|a| a.owner_node.as_deref() == Some("n4")).count();
    eprintln!("measured: {moved} of 60 applications moved on join (ideal 15)");
    assert_eq!(moved, to_new, "applications move only to the joining node");
    assert!((5..=25).contains(&moved), "about a quarter should move, moved {moved}");
    assert!(after.iter().all(|a| a.desired_state == "running"));
    assert_graceful_handoffs(&c);
    let acquired = c.events("app.acquired");
    for (b, a) in before.iter().zip(&after).filter(|(b, a)| b.owner_node != a.owner_node) {
        let last = acquired.iter().rev().find(|e| e.app_id == Some(a.id)).unwrap();
        let data = last.data();
        assert_eq!(
            (data["previous_owner"].as_str(), data["reason"].as_str()),
            (b.owner_node.as_deref(), Some("hand-off")),
            "{}",
            last.message
        );
    }
}

/// I4 on a graceful ring change: every application is acquired only when nobody holds it —
/// the previous holder released it first. Read from the `app.acquired` / `app.released` events.
fn assert_graceful_handoffs(c: &Cluster) {
    #[derive(QueryableByName)]
    struct Ev {
        #[diesel(sql_type = Nullable<BigInt>)]
        app_id: Option<i64>,
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = Nullable<Text>)]
        node_id: Option<String>,
    }
    let events: Vec<Ev> = diesel::sql_query(
        "SELECT app_id, kind, node_id FROM event WHERE kind IN ('app.acquired', 'app.released') ORDER BY id",
    )
    .load(&mut *c.store.conn().unwrap())
    .unwrap();
    let mut holder: BTreeMap<i64, String> = BTreeMap::new();
    for e in &events {
        let (app, node) = (e.app_id.unwrap(), e.node_id.clone().unwrap());
        match e.kind.as_str() {
            "app.acquired" => {
                if let Some(h) = holder.get(&app) {
                    assert_eq!(h, &node, "application {app} acquired by {node} while {h} still held it");
                }
                holder.insert(app, node);
            }
            _ => {
                assert_eq!(
                    holder.remove(&app).as_deref(),
                    Some(node.as_str()),
                    "application {app} released by a non-holder"
                );
            }
        }
    }
    assert!(events.iter().any(|e| e.kind == "app.released"), "the join must have moved something");
}

#[test]
fn a_crashed_nodes_applications_and_running_tasks_are_taken_over() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let three = ring(&["n1", "n2", "n3"]);
    // Applications 1..=20 are quick; the first id after them that n3 owns is slow to start.
    let slow = (21..).find(|id| owner(&three, *id) == "n3").unwrap();
    let values: Vec<String> = (1..slow).map(|i| format!("('app-{i}', 'noop', '{{}}')")).collect();
    c.sql(&format!("INSERT INTO application (name, driver, spec) VALUES {}", values.join(",")));
    c.sql("INSERT INTO task (app_id, action) SELECT id, 'start' FROM application");
    wait_owned_as(&c, &three, "quick applications running");
    c.sql(&format!(
        r#"INSERT INTO application (id, name, driver, spec) VALUES ({slow}, 'slow', 'noop', '{{"delay_ms": 3000}}')"#
    ));
    c.sql(&format!("INSERT INTO task (app_id, action) VALUES ({slow}, 'start')"));
    let task_id: i64 = {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        let r: Id = diesel::sql_query(format!("SELECT MAX(id) AS id FROM task WHERE app_id = {slow}"))
            .get_result(&mut *c.store.conn().unwrap())
            .unwrap();
        r.id
    };
    wait_until(Duration::from_secs(10), "n3 to be running the slow start", || {
        let t = c.task(task_id);
        t.status == "running" && t.owner_node.as_deref() == Some("n3")
    });

    let victim = c.nodes.remove("n3").unwrap();
    victim.signal("KILL");
    let t0 = Instant::now();
    let two = ring(&["n1", "n2"]);
    wait_owned_as(&c, &two, "the survivors to own and run every application");
    let took_over = t0.elapsed();
    wait_until(Duration::from_secs(20), "the interrupted start to be recovered and run again", || {
        c.task(task_id).status == "succeeded"
    });
    let t = c.task(task_id);
    eprintln!(
        "measured: applications taken over {took_over:?} after SIGKILL, task recovered after {:?} (ttl {} s)",
        t0.elapsed(),
        ttl()
    );
    assert_eq!(t.attempts, 2, "the interrupted attempt counts: {t:?}");
    assert_ne!(t.owner_node.as_deref(), Some("n3"));
    assert!(t.error.is_none(), "{t:?}");
    // Each takeover names the node it was taken from and why.
    assert_taken_over(&c, &three, "n3", "departed");
}

/// Every application the ring `before` gave to `from`, and that `from` had acquired, was last
/// acquired (by another node) from `from` for `reason`, as its `app.acquired` event says in its
/// message and data. (One whose first command `from` was still running had no owner yet.)
fn assert_taken_over(c: &Cluster, before: &Ring, from: &str, reason: &str) {
    let acquired = c.events("app.acquired");
    let held = |id: i64| acquired.iter().any(|e| e.app_id == Some(id) && e.node_id.as_deref() == Some(from));
    let apps: Vec<i64> = c.apps().iter().map(|a| a.id).filter(|id| owner(before, *id) == from && held(*id)).collect();
    assert!(!apps.is_empty());
    for app in apps {
        let last = acquired.iter().rev().find(|e| e.app_id == Some(app)).unwrap();
        let data = last.data();
        assert_ne!(last.node_id.as_deref(), Some(from), "application {app}: {}", last.message);
        assert_eq!(
            (data["previous_owner"].as_str(), data["reason"].as_str()),
            (Some(from), Some(reason)),
            "{}",
            last.message
        );
        assert!(last.message.contains(&format!("from {from}")) && last.message.contains(reason), "{}", last.message);
    }
}

#[test]
fn a_paused_node_changes_nothing_when_it_wakes() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let three = ring(&["n1", "n2", "n3"]);
    let slow = (1..).find(|id| owner(&three, *id) == "n3").unwrap();
    let values: Vec<String> = (1..slow).map(|i| format!("('app-{i}', 'noop', '{{}}')")).collect();
    if !values.is_empty() {
        c.sql(&format!("INSERT INTO application (name, driver, spec) VALUES {}", values.join(",")));
    }
    c.sql(&format!(
        r#"INSERT INTO application (id, name, driver, spec) VALUES ({slow}, 'slow', 'noop', '{{"delay_ms": 5000}}')"#
    ));
    c.sql(&format!("INSERT INTO task (id, app_id, action) VALUES (1000, {slow}, 'start')"));
    wait_until(Duration::from_secs(10), "n3 to be running the slow start", || {
        let t = c.task(1000);
        t.status == "running" && t.owner_node.as_deref() == Some("n3")
    });
    let paused = c.nodes.remove("n3").unwrap();
    paused.signal("STOP");
    wait_until(Duration::from_secs(30), "another node to recover and finish the start", || {
        let t = c.task(1000);
        t.status == "succeeded" && t.owner_node.as_deref() != Some("n3")
    });
    let done = c.task(1000);
    paused.signal("CONT");
    c.nodes.insert("n3".into(), paused);
    c.converge(&["n1", "n2", "n3"]);
    // n3 woke mid-command with an old view: it fenced, and its late completion was dropped.
    let logs = c.nodes["n3"].logs();
    assert!(logs.contains("fenced"), "{logs}");
    let after = c.task(1000);
    assert_eq!(
        (after.status.as_str(), after.owner_node.clone(), after.attempts),
        (done.status.as_str(), done.owner_node.clone(), done.attempts)
    );
    // And the application settles back on the ring's owner, running.
    wait_owned_as(&c, &three, "the application back on n3, running");
}

#[test]
fn a_crashed_nodes_process_applications_die_with_it_and_run_again_on_a_survivor() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let three = ring(&["n1", "n2", "n3"]);
    let id = (1..).find(|id| owner(&three, *id) == "n3").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({
        "command": ["sh", "-c", "echo $$ > \"$DIR/pid-$ROTA_NODE_ID\"; exec sleep 300"],
        "env": { "DIR": dir.path().to_str().unwrap() },
    });
    for i in 1..id {
        c.sql(&format!("INSERT INTO application (id, name, driver) VALUES ({i}, 'filler-{i}', 'noop')"));
    }
    c.sql(&format!("INSERT INTO application (id, name, driver, spec) VALUES ({id}, 'worker', 'process', '{spec}')"));
    c.sql(&format!("INSERT INTO task (app_id, action) VALUES ({id}, 'start')"));
    let pid_of = |node: &str| {
        std::fs::read_to_string(dir.path().join(format!("pid-{node}"))).ok().and_then(|s| s.trim().parse::<i32>().ok())
    };
    wait_until(Duration::from_secs(20), "the process to run on n3", || pid_of("n3").is_some());
    let old = pid_of("n3").unwrap();

    let victim = c.nodes.remove("n3").unwrap();
    victim.signal("KILL");
    let t0 = Instant::now();
    let alive = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    wait_until(Duration::from_secs(5), "the child to die with its node", || !alive(old));
    let survivor = owner(&ring(&["n1", "n2"]), id);
    wait_until(Duration::from_secs(20), "the process to run again on the survivor", || {
        pid_of(&survivor).is_some_and(alive)
    });
    eprintln!(
        "measured: process application running again on {survivor} {:?} after SIGKILL (ttl {} s)",
        t0.elapsed(),
        ttl()
    );
    let apps = c.apps();
    let app = apps.iter().find(|a| a.id == id).unwrap();
    assert_eq!((app.owner_node.as_deref(), app.state.as_str()), (Some(survivor.as_str()), "running"));
}

#[test]
fn a_drained_node_hands_its_applications_off_gracefully_and_comes_back() {
    let c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let values: Vec<String> = (1..=30).map(|i| format!("('app-{i}', 'noop')")).collect();
    c.sql(&format!("INSERT INTO application (name, driver) VALUES {}", values.join(",")));
    c.sql("INSERT INTO task (app_id, action) SELECT id, 'start' FROM application");
    let three = ring(&["n1", "n2", "n3"]);
    wait_owned_as(&c, &three, "applications running on their ring owners");

    let n3 = &c.nodes["n3"];
    // The CLI drains and waits until the node owns and runs nothing.
    let (status, out, err) =
        common::run(common::rota().args(["cluster", "drain", "n3", "--wait", "--timeout", "60", "--url", &n3.url("")]));
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("drained"), "{out}");
    // Asking another node to drain n3 names n3's address.
    let (s, body) = common::http("POST", &c.nodes["n1"].url("/api/v1/nodes/n3/drain"), None, None);
    assert_eq!(s, 409);
    assert!(body.contains(&n3.addr), "{body}");
    let two = ring(&["n1", "n2"]);
    wait_owned_as(&c, &two, "n3's applications to move to n1 and n2");
    wait_until(Duration::from_secs(20), "n3 to report itself drained", || {
        let (_, body) = n3.get("/api/v1/nodes/n3");
        serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["drained"] == true)
    });
    // Still a member, with weight 0 and nothing owned; the others own all 30.
    let (_, view) = c.nodes["n1"].get("/api/v1/cluster");
    let v: serde_json::Value = serde_json::from_str(&view).unwrap();
    let members = v["members"].as_array().unwrap();
    let n3m = members.iter().find(|m| m["node_id"] == "n3").unwrap();
    assert_eq!((n3m["weight"].as_i64(), n3m["owned_applications"].as_i64()), (Some(0), Some(0)));
    assert_eq!(members.iter().filter_map(|m| m["owned_applications"].as_i64()).sum::<i64>(), 30);
    assert_taken_over(&c, &three, "n3", "drained");

    let (s, _) = common::http("DELETE", &n3.url("/api/v1/nodes/n3/drain"), None, None);
    assert_eq!(s, 200);
    wait_owned_as(&c, &three, "applications back on the full ring");
    assert_graceful_handoffs(&c);
}

#[test]
fn application_selectors_pick_matching_nodes_and_nothing_runs_where_none_matches() {
    let mut c = Cluster::new(&[]);
    c.add_labelled("n1", &["dc=dc1"]);
    c.add_labelled("n2", &["dc=dc1"]);
    c.add_labelled("n3", &["dc=dc2"]);
    c.converge(&["n1", "n2", "n3"]);
    let values: Vec<String> = (1..=20)
        .map(|i| format!("('app-{i}', 'noop', '{}')", if i <= 10 { r#"{"dc":"dc2"}"# } else { r#"{"dc":"dc1"}"# }))
        .collect();
    c.sql(&format!("INSERT INTO application (name, driver, selector) VALUES {}", values.join(",")));
    c.sql("INSERT INTO task (app_id, action) SELECT id, 'start' FROM application");
    let labelled: Vec<Member> = [("n1", "dc1"), ("n2", "dc1"), ("n3", "dc2")]
        .iter()
        .map(|(id, dc)| Member {
            node_id: id.to_string(),
            weight: 1,
            labels: [("dc".to_string(), dc.to_string())].into(),
        })
        .collect();
    let ring = Ring::build(1, labelled, rota::ring::DEFAULT_VNODES).unwrap();
    let expected = |id: i64| {
        let sel: rota::ring::Selector = [("dc".to_string(), if id <= 10 { "dc2" } else { "dc1" }.to_string())].into();
        ring.owner_matching(id.to_string().as_bytes(), &sel).unwrap().node_id.clone()
    };
    let mut apps = Vec::new();
    wait_until(Duration::from_secs(30), "every application running on a node its selector matches", || {
        apps = c.apps();
        apps.iter().all(|a| a.state == "running" && a.owner_node.as_deref() == Some(expected(a.id).as_str()))
    });
    assert!(apps.iter().filter(|a| a.id <= 10).all(|a| a.owner_node.as_deref() == Some("n3")));
    assert!(apps.iter().filter(|a| a.id > 10).all(|a| a.owner_node.as_deref() != Some("n3")));

    // No node in "mars": its command waits, unclaimed.
    c.sql(r#"INSERT INTO application (id, name, driver, selector) VALUES (100, 'lost', 'noop', '{"dc":"mars"}')"#);
    c.sql("INSERT INTO task (id, app_id, action) VALUES (5000, 100, 'start')");
    c.sql("INSERT INTO task (action) VALUES ('run')");
    wait_until(Duration::from_secs(10), "a later job to run past it", || c.pending_or_running() == 1);
    let t = c.task(5000);
    assert_eq!((t.status.as_str(), t.attempts), ("pending", 0));
}

/// `name` of a node's `/metrics`, as a whole number.
fn metric(c: &Cluster, node: &str, name: &str) -> u64 {
    let body = c.nodes[node].get("/metrics").1;
    let line = body.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}:\n{body}"));
    line[name.len() + 1..].trim().parse().expect("a whole number")
}

/// A backlog of jobs on three nodes: each member claims the jobs its ring owns by their ids (the
/// job window) instead of reading every row to claim its third — together the nodes read fewer
/// rows than the backlog holds, where reading every row on every member reads three per job.
/// Every job, and the rows the window leaves to reads among them (application commands, a job
/// with a selector, one addressed to a node), runs exactly once, on the node its placement names.
#[test]
fn three_nodes_claim_a_job_backlog_by_their_ids_without_reading_every_row() {
    const JOBS: i64 = 30_000;
    let mut c = Cluster::new(&[]);
    // The poll tick's look at the queue's head reads a batch: at the default interval, as in use.
    for id in ["n1", "n2", "n3"] {
        c.add_with(id, &[], &[("ROTA__DISPATCH__POLL_INTERVAL_MS", "1000")]);
    }
    c.converge(&["n1", "n2", "n3"]);
    let values: Vec<String> = (1..=6).map(|i| format!("({i}, 'app-{i}', 'noop')")).collect();
    c.sql(&format!("INSERT INTO application (id, name, driver) VALUES {}", values.join(",")));
    // One transaction: the commands and the label-dependent rows sit in the middle of the jobs.
    c.sql(&format!(
        "INSERT INTO task (action) SELECT 'run' FROM generate_series(1, {half}); \
         INSERT INTO task (app_id, action) SELECT id, a FROM application, (VALUES (1, 'start'), (2, 'stop'), (3, 'start')) v(n, a) ORDER BY id, n; \
         INSERT INTO task (action, selector) VALUES ('run', '{{}}'); \
         INSERT INTO task (action, target_node) VALUES ('run', 'n2'); \
         INSERT INTO task (action) SELECT 'run' FROM generate_series(1, {half});",
        half = JOBS / 2
    ));
    let total = JOBS + 6 * 3 + 2;
    wait_until(Duration::from_secs(120), "the backlog to drain", || c.pending_or_running() == 0);

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Nullable<BigInt>)]
        app_id: Option<i64>,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        attempts: i32,
        #[diesel(sql_type = Nullable<Text>)]
        owner_node: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        target_node: Option<String>,
    }
    let rows: Vec<Row> =
        diesel::sql_query("SELECT id, app_id, status, attempts, owner_node, target_node FROM task ORDER BY id")
            .load(&mut *c.store.conn().unwrap())
            .unwrap();
    assert_eq!(rows.len() as i64, total);
    let three = ring(&["n1", "n2", "n3"]);
    for r in &rows {
        assert_eq!((r.status.as_str(), r.attempts), ("succeeded", 1), "task {}", r.id);
        let expected = match (&r.target_node, r.app_id) {
            (Some(node), _) => node.clone(),
            (None, Some(app)) => owner(&three, app),
            (None, None) => owner(&three, r.id),
        };
        assert_eq!(r.owner_node.as_deref(), Some(expected.as_str()), "task {} ran on its owner", r.id);
    }
    let apps = c.apps();
    assert!(apps.iter().all(|a| a.state == "running"), "each application's commands ran in order: {apps:?}");
    let read: u64 = ["n1", "n2", "n3"].iter().map(|n| metric(&c, n, "rota_dispatch_rows_read_total")).sum();
    eprintln!("measured: the three nodes read {read} rows for a backlog of {total}");
    assert!(read < total as u64, "{read} rows read for {total}: each member read every row");
}

/// While jobs keep coming, the job windows hold nothing back that they leave to reads. Three
/// nodes drain a job backlog that grows faster than they drain; the head of the queue is full of commands no node
/// may ever claim (their application's selector matches no member; a job no member matches
/// would be failed instead, docs/jobs.md). An application's queue of 60 commands runs
/// one command after the other (each next one claimed by its turn, not at a poll tick), and a
/// command behind the backlog runs while the inserts go on (a window ends after ten poll
/// intervals, and the node reads past what it left).
#[test]
fn under_continuous_inserts_job_windows_hold_back_no_command() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    c.sql(
        "INSERT INTO application (id, name, driver) VALUES (1, 'queue', 'noop'), (2, 'behind', 'noop'); \
         INSERT INTO application (id, name, driver, selector) VALUES (3, 'mars', 'noop', '{\"dc\":\"mars\"}')",
    );
    c.sql(
        "INSERT INTO task (app_id, action) SELECT 3, 'start' FROM generate_series(1, 300); \
         INSERT INTO task (app_id, action) SELECT 1, CASE WHEN g % 2 = 0 THEN 'start' ELSE 'stop' END \
           FROM generate_series(0, 59) g; \
         INSERT INTO task (action) SELECT 'run' FROM generate_series(1, 20000); \
         INSERT INTO task (app_id, action) VALUES (2, 'start');",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (stop, url) = (stop.clone(), c.pg.url.clone());
        std::thread::spawn(move || {
            use diesel::connection::SimpleConnection;
            let mut conn = diesel::PgConnection::establish(&url).unwrap();
            let mut batches = 0;
            // Faster than the nodes drain: the highest id grows all along, so no window ends
            // by reaching it.
            while !stop.load(Ordering::Relaxed) {
                conn.batch_execute("INSERT INTO task (action) SELECT 'run' FROM generate_series(1, 1000)").unwrap();
                batches += 1;
            }
            batches
        })
    };
    let commands = || {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let n: N = diesel::sql_query(
            "SELECT count(*) AS n FROM task WHERE app_id IN (1, 2) AND status = 'succeeded' AND attempts = 1",
        )
        .get_result(&mut *c.store.conn().unwrap())
        .unwrap();
        n.n
    };
    let started = Instant::now();
    wait_until(Duration::from_secs(40), "all 61 commands to run while jobs keep coming", || commands() == 61);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let batches = inserter.join().unwrap();
    eprintln!("measured: 61 commands in {took:?} while {batches} batches of 1,000 jobs were inserted");
    let apps = c.apps();
    assert!(apps.iter().filter(|a| a.id != 3).all(|a| a.owner_node.is_some()), "{apps:?}");
    assert_eq!(c.task(1).status, "pending", "a command no member matches waits");
}

/// Settled cold start (docs/design.md): three nodes started together over 30 applications that
/// should run start each of them once. Before, the first node to join adopted all 30 and handed
/// two thirds over a moment later (49 starts were measured).
#[test]
fn nodes_started_together_start_each_running_application_once() {
    let mut c = Cluster::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<String> = (1..=30)
        .map(|i| {
            let spec = serde_json::json!({
                "command": ["sh", "-c", "echo \"$ROTA_NODE_ID\" >> \"$DIR/starts-$APP\"; exec sleep 300"],
                "env": { "DIR": dir.path().to_str().unwrap(), "APP": i.to_string() },
            });
            format!("({i}, 'w-{i}', 'process', '{spec}', 'running', 'running')")
        })
        .collect();
    c.sql(&format!("INSERT INTO application (id, name, driver, spec, desired_state, state) VALUES {}", rows.join(",")));
    let t0 = Instant::now();
    for id in ["n1", "n2", "n3"] {
        c.add(id);
    }
    eprintln!("measured: three nodes started within {:?}", t0.elapsed());
    c.converge(&["n1", "n2", "n3"]);
    let three = ring(&["n1", "n2", "n3"]);
    wait_owned_as(&c, &three, "every application running on its ring owner");
    let starts = || -> Vec<(i64, Vec<String>)> {
        (1..=30)
            .map(|i| {
                let text = std::fs::read_to_string(dir.path().join(format!("starts-{i}"))).unwrap_or_default();
                (i, text.lines().map(str::to_string).collect())
            })
            .collect()
    };
    wait_until(Duration::from_secs(20), "every application's process to have started", || {
        starts().iter().all(|(_, s)| !s.is_empty())
    });
    let all = starts();
    let total: usize = all.iter().map(|(_, s)| s.len()).sum();
    eprintln!("measured: {total} process starts for 30 applications on 3 nodes started together");
    let twice: Vec<_> = all.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(twice.is_empty(), "applications started more than once (app, nodes): {twice:?}");
    for (app, nodes) in &all {
        assert_eq!(nodes, &vec![owner(&three, *app)], "application {app} started on its ring owner alone");
    }
}
