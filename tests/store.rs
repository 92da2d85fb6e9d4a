//! The SQL interface on both backends: migrations, defaults of hand-written rows, constraints,
//! and the PostgreSQL NOTIFY trigger.

mod common;

use std::time::Duration;

use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, PgConnection};
use rota::store::models::NewTask;
use rota::store::{tasks, DbUrl, PoolOptions, Store, StoreError};

use common::{rota, run, wait_until, PgDb};

fn opts() -> PoolOptions {
    PoolOptions { max_size: 2, connect_timeout: Duration::from_secs(5) }
}

/// Run `f` on a fresh, migrated database of each backend.
fn on_both(f: impl Fn(&Store)) {
    let pg = PgDb::create();
    let pg_store = Store::connect(&DbUrl::parse(&pg.url).unwrap(), &opts()).unwrap();
    pg_store.migrate().unwrap();
    f(&pg_store);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let lite = Store::connect(&DbUrl::parse(&url).unwrap(), &opts()).unwrap();
    lite.migrate().unwrap();
    f(&lite);
}

/// How many migrations ship (the same on both backends).
fn migration_count() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count()
}

#[test]
fn migrations_apply_from_scratch_and_twice_on_both_backends() {
    let pg = PgDb::create();
    let dir = tempfile::tempdir().unwrap();
    let lite = format!("sqlite://{}", dir.path().join("m.db").display());
    for url in [pg.url.as_str(), lite.as_str()] {
        let store = Store::connect(&DbUrl::parse(url).unwrap(), &opts()).unwrap();
        let first = store.migrate().unwrap();
        assert_eq!(first.len(), migration_count(), "{url}: {first:?}");
        assert!(store.migrate().unwrap().is_empty(), "{url}: second run must apply nothing");
        // And through the command, twice.
        for _ in 0..2 {
            let (status, out, err) = run(rota().args(["migrate", "--database-url", url]));
            assert!(status.success(), "{url}: {status}: {err}");
            assert!(out.contains("up to date"), "{url}: {out}");
        }
    }
}

#[test]
fn migrate_command_applies_on_a_fresh_database() {
    let pg = PgDb::create();
    let (status, out, err) = run(rota().args(["migrate", "--database-url", &pg.url]));
    assert!(status.success(), "{err}");
    assert!(out.contains(&format!("applied {} migration", migration_count())), "{out}");
}

#[test]
fn a_row_inserted_by_plain_sql_gets_every_default() {
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        conn.batch_execute("INSERT INTO application (name, driver) VALUES ('web', 'noop')").unwrap();
        conn.batch_execute("INSERT INTO task (app_id, action) VALUES (1, 'start')").unwrap();
        let t = tasks::find_task(&mut conn, 1).unwrap().expect("row 1");
        assert_eq!((t.app_id, t.action.as_str()), (Some(1), "start"));
        assert_eq!(t.status, "pending");
        assert_eq!(t.payload, "{}");
        assert_eq!((t.priority, t.attempts, t.max_attempts), (0, 0, 3));
        assert_eq!((t.owner_node, t.owner_epoch, t.idempotency_key), (None, None, None));
        assert_eq!((t.parent_id, t.shard_index, t.shard_total, t.target_node), (None, None, None, None));
        assert_eq!((t.result, t.error, t.claimed_at, t.finished_at), (None, None, None, None));
        let now = Utc::now().naive_utc();
        for (what, at) in [("run_after", t.run_after), ("created_at", t.created_at)] {
            let skew = (now - at).num_milliseconds().abs();
            assert!(skew < 60_000, "{what} should be now in UTC, got {at} (now {now})");
        }
        let app = rota::store::apps::find_application(&mut conn, 1).unwrap().unwrap();
        assert_eq!((app.desired_state.as_str(), app.state.as_str()), ("stopped", "stopped"));
        assert_eq!((app.spec.as_str(), app.selector.as_str(), app.restart_policy.as_str()), ("{}", "{}", "on_failure"));
        assert_eq!((app.owner_node, app.owner_epoch), (None, None));
    });
}

#[test]
fn ids_grow_and_inserted_rows_read_back() {
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let a = tasks::insert_task(&mut conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap();
        let b = tasks::insert_task(&mut conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap();
        assert!(b > a);
        assert_eq!(tasks::find_task(&mut conn, b).unwrap().unwrap().action, "run");
    });
}

#[test]
fn a_second_insert_with_the_same_idempotency_key_is_refused_by_the_database() {
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let new = NewTask { action: "run".into(), idempotency_key: Some("order-7".into()), ..Default::default() };
        tasks::insert_task(&mut conn, &new).unwrap();
        match tasks::insert_task(&mut conn, &new) {
            Err(StoreError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => {}
            other => panic!("expected a unique violation, got {other:?}"),
        }
        // Rows without a key never collide.
        tasks::insert_task(&mut conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap();
        tasks::insert_task(&mut conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap();
    });
}

#[test]
fn impossible_values_are_refused_with_the_constraint_named() {
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        for (sql, needle) in [
            ("INSERT INTO task (action, status) VALUES ('run', 'done')", "CHECK"),
            ("INSERT INTO task (action, attempts) VALUES ('run', -1)", "CHECK"),
            ("INSERT INTO task (action, max_attempts) VALUES ('run', 0)", "CHECK"),
            ("INSERT INTO task (app_id) VALUES (1)", "NOT NULL"),
            ("INSERT INTO application (name, driver) VALUES ('x', 'docker')", "CHECK"),
        ] {
            let err = conn.batch_execute(sql).expect_err(sql).to_string();
            assert!(err.to_uppercase().contains(needle) || err.contains("violates"), "{sql}: {err}");
        }
    });
}

#[test]
fn postgres_notifies_on_task_insert() {
    let pg = PgDb::create();
    let store = Store::connect(&DbUrl::parse(&pg.url).unwrap(), &opts()).unwrap();
    store.migrate().unwrap();
    let mut listener = PgConnection::establish(&pg.url).unwrap();
    listener.batch_execute("LISTEN rota_task").unwrap();
    store.conn().unwrap().batch_execute("INSERT INTO task (action) VALUES ('run'), ('run')").unwrap();
    let mut got = Vec::new();
    wait_until(Duration::from_secs(5), "a rota_task notification", || {
        got.extend(listener.notifications_iter().filter_map(Result::ok).map(|n| n.channel));
        !got.is_empty()
    });
    assert_eq!(got, vec!["rota_task".to_string()], "one notification per statement");
}

#[test]
fn an_unreachable_database_fails_fast_with_the_real_cause() {
    let url = DbUrl::parse("postgres://postgres:secret@127.0.0.1:1/none").unwrap();
    let err = Store::connect(&url, &opts()).err().expect("must fail").to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(err.to_lowercase().contains("refused") || err.contains("connect"), "{err}");
    assert!(!err.contains("secret"), "password leaked: {err}");
}
