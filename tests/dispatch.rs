//! The dispatch engine on one node, on both backends: commands inserted by plain SQL run where
//! and when they should, in order per application, with poison rows failed clearly and retries.

mod common;

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
use rota::store::{DbUrl, PoolOptions, Store};

use common::{wait_until, Node, PgDb};

/// Fast settings for tests.
const FAST: [(&str, &str); 4] = [
    ("ROTA__DISPATCH__POLL_INTERVAL_MS", "200"),
    ("ROTA__DISPATCH__RECONCILE_INTERVAL_MS", "500"),
    ("ROTA__DISPATCH__RETRY_BASE_MS", "100"),
    ("ROTA__DISPATCH__MONITOR_INTERVAL_MS", "300"),
];

/// A node on a fresh database of one backend, and a store to inspect it.
struct Fixture {
    _pg: Option<PgDb>,
    _dir: tempfile::TempDir,
    node: Node,
    store: Store,
}

fn fixture(postgres: bool, extra_env: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pg = postgres.then(PgDb::create);
    let url = match &pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", dir.path().join("rota.db").display()),
    };
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.extend_from_slice(extra_env);
    let node = Node::start(dir.path(), &["--database-url", &url], &env);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);
    let store = Store::connect(&DbUrl::parse(&url).unwrap(), &PoolOptions { max_size: 2, connect_timeout: Duration::from_secs(5) }).unwrap();
    Fixture { _pg: pg, _dir: dir, node, store }
}

impl Fixture {
    fn sql(&self, sql: &str) {
        self.store.conn().unwrap().batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn tasks(&self) -> Vec<Row> {
        diesel::sql_query("SELECT id, action, status, attempts, error, owner_node, claimed_at, finished_at FROM task ORDER BY id")
            .load(&mut *self.store.conn().unwrap())
            .unwrap()
    }

    fn app_state(&self, id: i64) -> (String, String, Option<String>) {
        #[derive(QueryableByName)]
        struct A {
            #[diesel(sql_type = Text)]
            state: String,
            #[diesel(sql_type = Text)]
            desired_state: String,
            #[diesel(sql_type = Nullable<Text>)]
            owner_node: Option<String>,
        }
        let a: A = diesel::sql_query(format!("SELECT state, desired_state, owner_node FROM application WHERE id = {id}"))
            .get_result(&mut *self.store.conn().unwrap())
            .unwrap();
        (a.state, a.desired_state, a.owner_node)
    }

    fn wait_all_terminal(&self, timeout: Duration) -> Vec<Row> {
        let mut rows = Vec::new();
        wait_until(timeout, "every task to be terminal", || {
            rows = self.tasks();
            !rows.is_empty() && rows.iter().all(|r| matches!(r.status.as_str(), "succeeded" | "failed" | "cancelled" | "lost"))
        });
        rows
    }
}

#[derive(Debug, QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    owner_node: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    claimed_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    finished_at: Option<NaiveDateTime>,
}

fn start_stop_restart(postgres: bool) {
    let f = fixture(postgres, &[]);
    f.sql("INSERT INTO application (name, driver) VALUES ('web', 'noop')");
    f.sql("INSERT INTO task (app_id, action) VALUES (1, 'start')");
    f.wait_all_terminal(Duration::from_secs(15));
    assert_eq!(f.app_state(1).0, "running");
    assert_eq!(f.app_state(1).1, "running");
    f.sql("INSERT INTO task (app_id, action) VALUES (1, 'stop')");
    wait_until(Duration::from_secs(15), "stopped", || f.app_state(1).0 == "stopped");
    assert_eq!(f.app_state(1).1, "stopped");
    f.sql("INSERT INTO task (app_id, action) VALUES (1, 'restart')");
    wait_until(Duration::from_secs(15), "running again", || f.app_state(1).0 == "running");
    let rows = f.wait_all_terminal(Duration::from_secs(15));
    assert!(rows.iter().all(|r| r.status == "succeeded"), "{rows:?}");
    let node_id = rows[0].owner_node.clone().unwrap();
    assert_eq!(f.app_state(1).2, Some(node_id), "the application is owned by the node that ran it");
}

#[test]
fn start_stop_restart_on_sqlite() {
    start_stop_restart(false);
}

#[test]
fn start_stop_restart_on_postgres() {
    start_stop_restart(true);
}

fn commands_run_in_order_one_at_a_time(postgres: bool) {
    let f = fixture(postgres, &[]);
    f.sql(r#"INSERT INTO application (name, driver, spec) VALUES ('serial', 'noop', '{"delay_ms": 5}')"#);
    let values: Vec<String> = (0..100).map(|i| format!("(1, '{}')", if i % 2 == 0 { "start" } else { "stop" })).collect();
    f.sql(&format!("INSERT INTO task (app_id, action) VALUES {}", values.join(",")));
    let rows = f.wait_all_terminal(Duration::from_secs(60));
    assert_eq!(rows.len(), 100);
    assert!(rows.iter().all(|r| r.status == "succeeded" && r.attempts == 1), "{rows:?}");
    // SQLite's clock has millisecond precision: allow that much.
    let slack = chrono::Duration::milliseconds(if postgres { 0 } else { 1 });
    for w in rows.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        assert!(
            next.claimed_at.unwrap() + slack >= prev.finished_at.unwrap(),
            "task {} was claimed before task {} finished: {prev:?} {next:?}",
            next.id,
            prev.id
        );
    }
    assert_eq!(f.app_state(1).0, "stopped");
}

#[test]
fn a_hundred_commands_run_in_id_order_never_two_at_a_time_on_postgres() {
    commands_run_in_order_one_at_a_time(true);
}

#[test]
fn a_hundred_commands_run_in_id_order_never_two_at_a_time_on_sqlite() {
    commands_run_in_order_one_at_a_time(false);
}

fn poison_rows(postgres: bool) {
    let f = fixture(postgres, &[]);
    f.sql("INSERT INTO application (name, driver) VALUES ('good', 'noop')");
    f.sql(r#"INSERT INTO application (name, driver, spec) VALUES ('badspec', 'noop', '{"delay_ms": "soon"}')"#);
    f.sql("INSERT INTO application (name, driver, spec) VALUES ('notjson', 'noop', 'nope')");
    f.sql(
        "INSERT INTO task (app_id, action) VALUES (1, 'start');
         INSERT INTO task (app_id, action) VALUES (1, 'explode');
         INSERT INTO task (action) VALUES ('run');
         INSERT INTO task (app_id, action, payload) VALUES (1, 'stop', '{not json');
         INSERT INTO task (app_id, action, payload) VALUES (1, 'run', '[1, 2]');
         INSERT INTO task (app_id, action) VALUES (424242, 'start');
         INSERT INTO task (app_id, action) VALUES (2, 'start');
         INSERT INTO task (app_id, action) VALUES (3, 'start');
         INSERT INTO task (action) VALUES ('start');
         INSERT INTO task (action, payload) VALUES ('run', '{\"driver\": \"shell\"}');
         INSERT INTO task (app_id, action) VALUES (1, 'stop');
         INSERT INTO task (action, payload) VALUES ('run', '{\"n\": 2}');",
    );
    let rows = f.wait_all_terminal(Duration::from_secs(20));
    let expect: [(&str, Option<&str>); 12] = [
        ("succeeded", None),
        ("failed", Some("unknown action `explode`")),
        ("succeeded", None),
        ("failed", Some("payload is not valid JSON")),
        ("failed", Some("payload must be a JSON object")),
        ("failed", Some("application 424242 does not exist")),
        ("failed", Some("delay_ms: must be a whole number")),
        ("failed", Some("spec that is not valid JSON")),
        ("failed", Some("needs an app_id")),
        ("failed", Some("only use the noop driver")),
        ("succeeded", None),
        ("succeeded", None),
    ];
    for (row, (status, needle)) in rows.iter().zip(expect) {
        assert_eq!(row.status, status, "{row:?}");
        if let Some(n) = needle {
            let err = row.error.as_deref().unwrap_or_default();
            assert!(err.contains(n), "task {} ({}) error should mention `{n}`: {err}", row.id, row.action);
        }
    }
    // Every failure is also an event.
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query("SELECT COUNT(*) AS n FROM event WHERE kind = 'task.failed'")
        .get_result(&mut *f.store.conn().unwrap())
        .unwrap();
    assert_eq!(n.n, 8);
    assert_eq!(f.app_state(1).0, "stopped");
    assert_eq!(f.node.get("/readyz").0, 200, "the node stays up");
}

#[test]
fn malformed_rows_fail_clearly_and_the_good_ones_flow_on_sqlite() {
    poison_rows(false);
}

#[test]
fn malformed_rows_fail_clearly_and_the_good_ones_flow_on_postgres() {
    poison_rows(true);
}

#[test]
fn failed_attempts_are_retried_then_failed() {
    let f = fixture(false, &[]);
    f.sql(r#"INSERT INTO application (name, driver, spec) VALUES ('flaky', 'noop', '{"fail": "start"}')"#);
    f.sql("INSERT INTO task (app_id, action, max_attempts) VALUES (1, 'start', 3)");
    let rows = f.wait_all_terminal(Duration::from_secs(20));
    assert_eq!(rows[0].status, "failed");
    assert_eq!(rows[0].attempts, 3);
    assert!(rows[0].error.as_deref().unwrap().contains("attempt 3 of 3"), "{rows:?}");
    assert_eq!(f.app_state(1).0, "failed");
}

#[test]
fn delayed_tasks_wait_and_do_not_hold_back_later_ones() {
    let f = fixture(true, &[]);
    f.sql("INSERT INTO application (name, driver) VALUES ('a', 'noop')");
    f.sql("INSERT INTO task (app_id, action, run_after) VALUES (1, 'stop', (now() AT TIME ZONE 'utc') + interval '1 hour')");
    f.sql("INSERT INTO task (app_id, action) VALUES (1, 'start')");
    wait_until(Duration::from_secs(15), "the later start to run", || f.tasks()[1].status == "succeeded");
    assert_eq!(f.tasks()[0].status, "pending", "the delayed stop waits for its time");
    assert_eq!(f.app_state(1).0, "running");
}

#[test]
fn a_row_inserted_by_sql_runs_within_the_poll_interval_without_notify() {
    let f = fixture(true, &[("ROTA__DISPATCH__LISTEN_NOTIFY", "false")]);
    f.sql("INSERT INTO task (action) VALUES ('run')");
    f.wait_all_terminal(Duration::from_secs(5));
}

#[test]
fn notify_wakes_the_node_long_before_the_poll_interval() {
    let f = fixture(true, &[("ROTA__DISPATCH__POLL_INTERVAL_MS", "600000"), ("ROTA__DISPATCH__RECONCILE_INTERVAL_MS", "600000")]);
    // Inserted before or after the listener subscribed, the row is found: the listener wakes
    // the dispatcher once when it subscribes, and on every notification after.
    f.sql("INSERT INTO task (action) VALUES ('run')");
    f.wait_all_terminal(Duration::from_secs(10));
}

#[test]
fn cancelled_pending_tasks_never_run_and_old_rows_are_pruned() {
    let f = fixture(false, &[("ROTA__DISPATCH__RETENTION_HOURS", "1")]);
    f.sql("INSERT INTO task (action, run_after) VALUES ('run', datetime('now', '+1 hour'))");
    assert!(rota::store::dispatch::cancel(&mut f.store.conn().unwrap(), 1).unwrap());
    assert!(!rota::store::dispatch::cancel(&mut f.store.conn().unwrap(), 1).unwrap(), "only pending rows cancel");
    assert_eq!(f.tasks()[0].status, "cancelled");
    // A row that finished two hours ago goes at the next reconciliation; a fresh one stays.
    f.sql("UPDATE task SET finished_at = datetime('now', '-2 hours') WHERE id = 1");
    f.sql("INSERT INTO task (action) VALUES ('run')");
    wait_until(Duration::from_secs(10), "the old row to be pruned", || {
        let rows = f.tasks();
        rows.len() == 1 && rows[0].id == 2 && rows[0].status == "succeeded"
    });
}
