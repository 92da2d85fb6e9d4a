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

/// A claimant's membership deadline an hour from now: claims made with it are never fenced.
fn later() -> chrono::NaiveDateTime {
    Utc::now().naive_utc() + chrono::TimeDelta::hours(1)
}

/// A writer's session that admits every epoch, its deadline an hour from now.
fn open() -> rota::store::fence::Fence {
    rota::store::fence::Fence { until: later(), joined: 0 }
}

/// Run `f` on a fresh, migrated database of each backend.
/// The grace of a claim under a newer view, in these tests.
const GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

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

/// An event about application `app` written by node `n1`'s dispatcher.
fn app_event(kind: &str, app: i64) -> rota::store::models::NewEvent {
    rota::store::models::NewEvent {
        kind: kind.into(),
        app_id: Some(app),
        task_id: None,
        node_id: Some("n1".into()),
        actor: Some("dispatcher".into()),
        message: format!("{kind} {app}"),
        data: None,
    }
}

/// `n` new `noop` applications named `{prefix}0`…, each acquired by `n1` at epoch 5.
fn acquired_apps(conn: &mut rota::store::AnyConnection, prefix: &str, n: usize) -> Vec<i64> {
    use rota::store::apps::acquire_app;
    use rota::store::apps::insert_application;
    use rota::store::models::NewApplication;
    (0..n)
        .map(|i| {
            let new = NewApplication { name: format!("{prefix}{i}"), driver: "noop".into(), ..Default::default() };
            let id = insert_application(conn, &new).unwrap();
            let acquired =
                acquire_app(conn, id, "n1", open(), 5, &["n1".into()], &app_event("app.acquired", id)).unwrap();
            assert!(acquired.is_some());
            id
        })
        .collect()
}

/// The claim of row `id` among `claimed` (the rows a claim returned), with its epoch replaced by
/// `epoch`: a write as the claim's holder at that epoch.
fn held_at(claimed: &[rota::store::models::Task], id: i64, epoch: i64) -> rota::store::models::Claim {
    let row = claimed.iter().find(|t| t.id == id).unwrap_or_else(|| panic!("row {id} was not claimed"));
    rota::store::models::Claim { epoch, ..row.claim() }
}

/// The claim row `id` is held under now, as read from the table.
fn claim_now(conn: &mut rota::store::AnyConnection, id: i64) -> rota::store::models::Claim {
    tasks::find_task(conn, id).unwrap().unwrap().claim()
}

/// Migrations shipped (the same number on both backends).
fn migration_count() -> usize {
    let dir = |b: &str| std::fs::read_dir(format!("{}/migrations/{b}", env!("CARGO_MANIFEST_DIR"))).unwrap().count();
    assert_eq!(dir("postgres"), dir("sqlite"), "both backends ship the same migrations");
    dir("postgres")
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
    let n = migration_count();
    assert!(out.contains(&format!("applied {n} migration")), "{out}");
}

#[test]
fn a_row_inserted_by_plain_sql_gets_every_default() {
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        conn.batch_execute("INSERT INTO application (name, driver) VALUES ('web', 'noop')").unwrap();
        conn.batch_execute("INSERT INTO task (app_id, action) VALUES (1, 'start')").unwrap();
        let t = tasks::find_task(&mut conn, 1).unwrap().expect("row 1");
        assert_eq!((t.app_id, t.action.as_str()), (Some(1), "start"));
        assert_eq!(t.status.as_str(), "pending");
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

/// A fresh, migrated PostgreSQL database, a store on it, and a connection listening on `channel`.
fn pg_listening(channel: &str) -> (PgDb, Store, PgConnection) {
    let pg = PgDb::create();
    let store = Store::connect(&DbUrl::parse(&pg.url).unwrap(), &opts()).unwrap();
    store.migrate().unwrap();
    let mut listener = PgConnection::establish(&pg.url).unwrap();
    listener.batch_execute(&format!("LISTEN {channel}")).unwrap();
    (pg, store, listener)
}

/// The `rota_task` notification: one trigger run per inserting statement, however many rows it
/// inserts (a per-row trigger would run its `pg_notify` once per row of a bulk insert), and one
/// notification delivered per committed statement. Counting the notifications delivered cannot
/// tell the two triggers apart (PostgreSQL folds identical notifications of one transaction into
/// one), so the trigger's runs are counted in the inserting transaction itself.
#[test]
fn postgres_notifies_once_per_inserting_statement_not_per_row() {
    use diesel::sql_types::BigInt;
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Calls {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let (pg, _store, mut listener) = pg_listening("rota_task");
    let mut conn = PgConnection::establish(&pg.url).unwrap();
    // The count is kept per session until it is reported: read it before and after.
    let calls = |conn: &mut PgConnection| {
        diesel::sql_query("SELECT COALESCE(pg_stat_get_xact_function_calls('rota_task_notify'::regproc), 0) AS n")
            .get_result::<Calls>(conn)
            .unwrap()
            .n
    };
    let mut deliveries = |want: usize| {
        let mut got = Vec::new();
        wait_until(Duration::from_secs(5), &format!("{want} rota_task notifications"), || {
            listener.batch_execute("SELECT 1").unwrap();
            got.extend(listener.notifications_iter().filter_map(Result::ok).map(|n| n.channel));
            got.len() >= want
        });
        got
    };
    let runs = conn
        .transaction(|c| {
            c.batch_execute("SET LOCAL track_functions = 'pl'")?;
            let before = calls(c);
            c.batch_execute("INSERT INTO task (action) SELECT 'run' FROM generate_series(1, 3)")?;
            Ok::<_, diesel::result::Error>(calls(c) - before)
        })
        .unwrap();
    assert_eq!(runs, 1, "the notify trigger ran {runs} times for one statement inserting 3 rows");
    assert_eq!(deliveries(1), vec!["rota_task".to_string()], "one notification for the statement");
    // A statement of its own, committed on its own, is announced on its own.
    conn.batch_execute("INSERT INTO task (action) VALUES ('run')").unwrap();
    assert_eq!(deliveries(1), vec!["rota_task".to_string()]);
}

/// An admin's change of a schedule or a traffic policy is announced on `rota_config` (a NULL
/// becoming a value, a firing that disables its schedule, a delete included); a firing's advance
/// (`next_fire_at`, `enabled` written unchanged) and an update that matched no row are not.
/// Notifications arrive in commit order, so once the last change's has arrived, one for an
/// earlier statement would have too.
#[test]
fn postgres_announces_configuration_changes_but_not_firings() {
    let (_pg, store, mut listener) = pg_listening("rota_config");
    let mut conn = store.conn().unwrap();
    // (statement, what it announces)
    let steps = [
        ("INSERT INTO schedule (name, every_ms) VALUES ('s', 1000)", Some("schedule")),
        ("UPDATE schedule SET next_fire_at = next_fire_at + interval '1 second', enabled = TRUE", None),
        ("UPDATE schedule SET every_ms = 2000", Some("schedule")),
        ("UPDATE schedule SET shard_total = 2", Some("schedule")),
        ("UPDATE schedule SET next_fire_at = next_fire_at, enabled = FALSE", Some("schedule")),
        ("INSERT INTO traffic_policy (group_name, preferred) VALUES ('g', 'dc1')", Some("traffic_policy")),
        ("UPDATE traffic_policy SET failed_over = TRUE WHERE failed_over", None),
        ("UPDATE traffic_policy SET failed_over = TRUE WHERE NOT failed_over", Some("traffic_policy")),
        ("DELETE FROM schedule", Some("schedule")),
        ("INSERT INTO alarm_channel (name, kind) VALUES ('c', 'webhook')", Some("alarm_channel")),
        ("UPDATE alarm_channel SET cursor = cursor + 5, updated_at = updated_at + interval '1 second'", None),
        ("UPDATE alarm_channel SET config = '{\"url\": \"http://127.0.0.1:1/\"}'", Some("alarm_channel")),
        ("INSERT INTO alarm_rule (name, kinds) VALUES ('r', '[\"app.failed\"]')", Some("alarm_rule")),
        ("UPDATE alarm_rule SET throttle_s = 60", Some("alarm_rule")),
        ("UPDATE alarm_rule SET throttle_s = 60", None),
        ("DELETE FROM alarm_channel", Some("alarm_channel")),
    ];
    for (sql, _) in steps {
        conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let want: Vec<&str> = steps.iter().filter_map(|(_, n)| *n).collect();
    let mut got = Vec::new();
    wait_until(Duration::from_secs(5), "the rota_config notifications", || {
        listener.batch_execute("SELECT 1").unwrap();
        got.extend(listener.notifications_iter().filter_map(Result::ok).map(|n| n.payload));
        got.len() >= want.len()
    });
    assert_eq!(got, want, "a firing's advance, a channel's cursor and an update that changed nothing announce nothing");
}

/// A ping right after a call through the store succeeded sends nothing (an idle node's
/// `/readyz` and database watch asked one `SELECT 1` a second each); a store that has not been
/// answered lately sends one, and a second pool sharing the first's record counts its answers.
#[test]
fn a_ping_after_a_recent_answer_sends_nothing() {
    use rota::store::Answer;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    on_both(|store| {
        let ping = |s: &Store| rt.block_on(s.ping(Duration::from_secs(5))).unwrap();
        // A fresh pool that only migrated (through a connection of its own) has no answer yet.
        let fresh = Store::connect(store.url(), &opts()).unwrap();
        assert_eq!(ping(&fresh), Answer::Pinged);
        rt.block_on(fresh.run(|c| rota::store::apps::app(c, 1))).unwrap();
        assert_eq!(ping(&fresh), Answer::Recent, "a statement just answered");
        let other = Store::connect(store.url(), &opts()).unwrap();
        assert_eq!(ping(&other), Answer::Pinged, "another pool has its own record");
        let sharing = Store::connect_sharing(store.url(), &opts(), fresh.answered()).unwrap();
        assert_eq!(ping(&sharing), Answer::Recent, "a pool sharing the record counts the other's answers");
        // A call that returns without sending a statement is no answer.
        let idle = Store::connect(store.url(), &opts()).unwrap();
        rt.block_on(idle.run(|_| Ok(()))).unwrap();
        assert_eq!(ping(&idle), Answer::Pinged);
    });
}

#[test]
fn an_unreachable_database_fails_fast_with_the_real_cause() {
    let url = DbUrl::parse("postgres://postgres:secret@127.0.0.1:1/none").unwrap();
    let err = Store::connect(&url, &opts()).err().expect("must fail").to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(err.to_lowercase().contains("refused") || err.contains("connect"), "{err}");
    assert!(!err.contains("secret"), "password leaked: {err}");
}

#[test]
fn batched_completion_writes_each_outcome_only_for_its_own_claim() {
    use rota::store::claim::claim;
    use rota::store::complete::{finish_batch, FinishFlags, Finished, Outcome};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        let ids: Vec<i64> = (0..4)
            .map(|_| tasks::insert_task(&mut conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap())
            .collect();
        let claimed = claim(&mut conn, &plans, &ids, "n1", 7, open()).unwrap();
        assert_eq!(claimed.len(), 4);
        let retry_at = Utc::now().naive_utc() + chrono::Duration::hours(1);
        let row = |id: i64, epoch: i64, outcome: Outcome| Finished {
            id,
            claim: held_at(&claimed, id, epoch),
            outcome,
            app: None,
        };
        let rows = vec![
            row(ids[0], 7, Outcome::Succeeded(Some("{\"ok\":1}".into()))),
            row(ids[1], 7, Outcome::Failed("boom".into())),
            row(ids[2], 7, Outcome::Retry { error: "again".into(), run_after: retry_at }),
            row(ids[3], 6, Outcome::Succeeded(None)), // an older epoch: not ours to write
        ];
        let flags: Vec<bool> = finish_batch(&mut conn, "n1", open(), &rows).unwrap().iter().map(|f| f.task).collect();
        assert_eq!(flags, vec![true, true, true, false]);
        assert!(
            finish_batch(&mut conn, "n1", open(), &rows[..1]).unwrap() == vec![FinishFlags { task: false, app: None }]
        );
        let t: Vec<_> = ids.iter().map(|id| tasks::find_task(&mut conn, *id).unwrap().unwrap()).collect();
        assert_eq!(
            (t[0].status.as_str(), t[0].result.as_deref(), t[0].error.as_deref()),
            ("succeeded", Some("{\"ok\":1}"), None)
        );
        assert!(t[0].finished_at.is_some());
        assert_eq!((t[1].status.as_str(), t[1].error.as_deref()), ("failed", Some("boom")));
        assert!(t[1].finished_at.is_some() && t[1].result.is_none());
        assert_eq!(
            (t[2].status.as_str(), t[2].error.as_deref(), t[2].owner_node.as_deref()),
            ("pending", Some("again"), None)
        );
        assert!(t[2].finished_at.is_none() && (t[2].run_after - retry_at).num_milliseconds().abs() < 1);
        assert_eq!((t[3].status.as_str(), t[3].owner_node.as_deref()), ("running", Some("n1")));
    });
}

/// An application command's outcome goes with its last write about its application: both are
/// written when the application is still this node's at the epoch, neither when it is not; a
/// job's outcome in the same batch is written as usual; an event only for a write that applied.
#[test]
fn a_commands_outcome_is_written_only_with_its_application_write() {
    use rota::store::apps::find_application;
    use rota::store::apps::{AppChange, AppWrite};
    use rota::store::claim::claim;
    use rota::store::complete::{finish_batch, FinishFlags, Finished, Outcome};
    use rota::store::events::{list_events, EventFilter};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        let ev = |app: i64| app_event("app.state", app);
        let apps = acquired_apps(&mut conn, "c", 3);
        let task = |app_id: Option<i64>, action: &str| NewTask { app_id, action: action.into(), ..Default::default() };
        let ids = [
            tasks::insert_task(&mut conn, &task(Some(apps[0]), "start")).unwrap(),
            tasks::insert_task(&mut conn, &task(Some(apps[1]), "start")).unwrap(),
            tasks::insert_task(&mut conn, &task(None, "run")).unwrap(),
            tasks::insert_task(&mut conn, &task(Some(apps[2]), "start")).unwrap(),
        ];
        let claimed = claim(&mut conn, &plans, &ids, "n1", 5, open()).unwrap();
        assert_eq!(claimed.len(), 4);
        let running = AppChange {
            desired_state: Some(rota::domain::DesiredState::Running),
            state: Some(rota::domain::AppState::Running),
            last_error: Some(None),
            restart_count: Some(0),
        };
        let write = |id: i64, epoch: i64| AppWrite { id, epoch, change: running.clone(), event: Some(ev(id)) };
        let done = |id: i64, app: Option<AppWrite>| Finished {
            id,
            claim: held_at(&claimed, id, 5),
            outcome: Outcome::Succeeded(None),
            app,
        };
        let rows = vec![
            done(ids[0], Some(write(apps[0], 5))),
            done(ids[1], Some(write(apps[1], 4))), // the application at an older epoch: not ours
            done(ids[2], None),
            // The task claimed at another epoch (recovered and claimed again): its outcome is
            // not ours to write; the application's state is, without an event.
            Finished { claim: held_at(&claimed, ids[3], 4), ..done(ids[3], Some(write(apps[2], 5))) },
        ];
        let flags = finish_batch(&mut conn, "n1", open(), &rows).unwrap();
        assert_eq!(
            flags,
            vec![
                FinishFlags { task: true, app: Some(true) },
                FinishFlags { task: false, app: Some(false) },
                FinishFlags { task: true, app: None },
                FinishFlags { task: false, app: Some(true) },
            ]
        );
        // Written again (a retry of a batch whose answer was lost): nothing is recorded twice.
        let again: Vec<bool> = finish_batch(&mut conn, "n1", open(), &rows).unwrap().iter().map(|f| f.task).collect();
        assert_eq!(again, vec![false, false, false, false]);
        let status = |id: i64, conn: &mut _| tasks::find_task(conn, id).unwrap().unwrap().status.as_str();
        assert_eq!(
            [status(ids[0], &mut conn), status(ids[1], &mut conn), status(ids[2], &mut conn)],
            ["succeeded", "running", "succeeded"]
        );
        let state = |id: i64, conn: &mut _| find_application(conn, id).unwrap().unwrap().state.as_str();
        assert_eq!(
            [state(apps[0], &mut conn), state(apps[1], &mut conn), state(apps[2], &mut conn)],
            ["running", "stopped", "running"]
        );
        let events = |app: i64, conn: &mut _| {
            let f = EventFilter { app_id: Some(app), ..Default::default() };
            list_events(conn, &f, None, 10).unwrap().len()
        };
        assert_eq!(
            [events(apps[0], &mut conn), events(apps[1], &mut conn), events(apps[2], &mut conn)],
            [2, 1, 1],
            "acquired, and a state event only with a written outcome"
        );
    });
}

/// SQLite keeps any bytes as TEXT. A claim whose batch holds a row that cannot be decoded must
/// not leave the batch's good rows `running` with nobody working on them: the claim fails as a
/// whole, the bad row is failed with its column named, and the next claim takes the good rows.
#[test]
fn sqlite_claim_of_a_batch_with_unreadable_text_leaves_no_row_claimed() {
    use diesel::RunQueryDsl;
    use rota::store::claim::{claim, claim_next, fail_unreadable};
    use rota::store::AnyConnection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("u.db").display());
    let store = Store::connect(&DbUrl::parse(&url).unwrap(), &opts()).unwrap();
    store.migrate().unwrap();
    let mut conn = store.conn().unwrap();
    let plans = store.plans();
    let sql = |conn: &mut AnyConnection, q: &str| {
        let AnyConnection::Sqlite(c) = conn else { unreachable!() };
        diesel::sql_query(q).execute(c).unwrap();
    };
    let good = |conn: &mut AnyConnection| {
        tasks::insert_task(conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap()
    };
    let a = good(&mut conn);
    sql(&mut conn, "INSERT INTO task (action, payload) VALUES ('run', CAST(X'7B2261223A2280FF227D' AS TEXT))");
    let b = good(&mut conn);
    let statuses = |conn: &mut AnyConnection| -> Vec<String> {
        [a, a + 1, b]
            .iter()
            .map(|id| tasks::find_task(conn, *id).map(|t| t.unwrap().status.to_string()).unwrap_or_default())
            .collect()
    };

    let err = claim_next(&mut conn, &plans, 0, 10, "n1", 1, open()).expect_err("the batch holds an undecodable row");
    assert!(err.to_string().to_lowercase().contains("utf-8"), "{err}");
    let err =
        claim(&mut conn, &plans, &[a, a + 1, b], "n1", 1, open()).expect_err("the batch holds an undecodable row");
    assert!(err.to_string().to_lowercase().contains("utf-8"), "{err}");
    // Nothing was claimed by either statement (the bad row itself cannot be read yet).
    for id in [a, b] {
        assert_eq!(tasks::find_task(&mut conn, id).unwrap().unwrap().status.as_str(), "pending", "task {id}");
    }

    assert_eq!(fail_unreadable(&mut conn, 0, 10).unwrap(), 1);
    let bad = tasks::find_task(&mut conn, a + 1).unwrap().unwrap();
    assert_eq!(bad.status.as_str(), "failed");
    assert!(bad.error.as_deref().unwrap_or("").contains("`payload` is not valid UTF-8"), "{:?}", bad.error);
    let claimed: Vec<i64> =
        claim_next(&mut conn, &plans, 0, 10, "n1", 1, open()).unwrap().iter().map(|t| t.id).collect();
    assert_eq!(claimed, vec![a, b]);
    assert_eq!(statuses(&mut conn), ["running", "failed", "running"]);
}

/// The claim's per-application ordering, on both backends (PostgreSQL finds each application's
/// head with a loose index scan, SQLite checks row by row: they must agree). A command is taken
/// only when no earlier command of its application is running or pending and due; a delayed
/// command holds nothing back; jobs, with or without an application, wait for nothing; rows of
/// an application with a selector are left to the dispatcher's own placement.
#[test]
fn claim_next_takes_each_applications_first_command_and_every_job() {
    use rota::store::apps::insert_application;
    use rota::store::claim::claim_next;
    use rota::store::models::NewApplication;
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        let app = |conn: &mut _, name: &str, selector: Option<&str>| {
            let new = NewApplication {
                name: name.into(),
                driver: "noop".into(),
                selector: selector.map(str::to_string),
                ..Default::default()
            };
            insert_application(conn, &new).unwrap()
        };
        let (busy, delayed, idle, labelled) = (
            app(&mut conn, "busy", None),
            app(&mut conn, "delayed", None),
            app(&mut conn, "idle", None),
            app(&mut conn, "labelled", Some(r#"{"dc":"a"}"#)),
        );
        let task = |conn: &mut _, app_id: Option<i64>, action: &str, later: bool| {
            let run_after = later.then(|| Utc::now().naive_utc() + chrono::Duration::hours(1));
            tasks::insert_task(conn, &NewTask { app_id, action: action.into(), run_after, ..Default::default() })
                .unwrap()
        };
        let busy_first = task(&mut conn, Some(busy), "start", false);
        let busy_second = task(&mut conn, Some(busy), "stop", false);
        let busy_job = task(&mut conn, Some(busy), "run", false);
        let delayed_first = task(&mut conn, Some(delayed), "start", true);
        let delayed_second = task(&mut conn, Some(delayed), "stop", false);
        let delayed_third = task(&mut conn, Some(delayed), "start", false);
        let idle_first = task(&mut conn, Some(idle), "start", false);
        let idle_second = task(&mut conn, Some(idle), "stop", false);
        let job = task(&mut conn, None, "run", false);
        let _labelled = task(&mut conn, Some(labelled), "start", false);

        // The busy application's first command is running.
        let first: Vec<i64> =
            claim_next(&mut conn, &plans, 0, 1, "n1", 1, open()).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(first, vec![busy_first]);
        let mut claimed: Vec<i64> =
            claim_next(&mut conn, &plans, 0, 100, "n1", 1, open()).unwrap().iter().map(|t| t.id).collect();
        claimed.sort();
        assert_eq!(claimed, vec![busy_job, delayed_second, idle_first, job]);
        // Nothing more until a running command ends; then only the one after it.
        assert!(claim_next(&mut conn, &plans, 0, 100, "n1", 1, open()).unwrap().is_empty());
        let done = |id: i64, conn: &mut rota::store::AnyConnection| rota::store::complete::Finished {
            id,
            claim: claim_now(conn, id),
            outcome: rota::store::complete::Outcome::Succeeded(None),
            app: None,
        };
        let row = done(idle_first, &mut conn);
        rota::store::complete::finish_batch(&mut conn, "n1", open(), &[row]).unwrap();
        let next: Vec<i64> =
            claim_next(&mut conn, &plans, 0, 100, "n1", 1, open()).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(next, vec![idle_second]);
        // The cursor: only rows after it.
        let row = done(delayed_second, &mut conn);
        rota::store::complete::finish_batch(&mut conn, "n1", open(), &[row]).unwrap();
        assert!(claim_next(&mut conn, &plans, delayed_third, 100, "n1", 1, open()).unwrap().is_empty());
        let next: Vec<i64> =
            claim_next(&mut conn, &plans, 0, 100, "n1", 1, open()).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(next, vec![delayed_third]);
        let _ = (busy_second, delayed_first);
    });
}

/// Priority orders the rows one claim takes, higher first, then by id; it does not let a later
/// row jump the rows before it: a claim of a batch takes the first due rows by id, whatever the
/// priority of those after them (docs/dispatch.md).
#[test]
fn a_claim_hands_out_its_rows_higher_priority_first_and_takes_them_in_id_order() {
    use rota::store::claim::claim_next;
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        let ids: Vec<i64> = [0, 5, 1, 5, 9, 7]
            .into_iter()
            .map(|p| {
                let new = NewTask { action: "run".into(), priority: Some(p), ..Default::default() };
                tasks::insert_task(&mut conn, &new).unwrap()
            })
            .collect();
        let mut claim = |batch| -> Vec<i64> {
            claim_next(&mut conn, &plans, 0, batch, "n1", 1, open()).unwrap().iter().map(|t| t.id).collect()
        };
        // The first four by id (not the 9 and the 7 behind them), the two at 5 first.
        assert_eq!(claim(4), vec![ids[1], ids[3], ids[2], ids[0]]);
        assert_eq!(claim(4), vec![ids[4], ids[5]]);
    });
}

/// The one-statement claim runs as a prepared statement on PostgreSQL (`pg_prepared`), with
/// the node id written as a literal: a node id with quotes and backslashes is claimed under
/// exactly its own name, and a connection whose prepared statements were dropped (`DEALLOCATE
/// ALL`, as a pooler reset would) prepares it again instead of failing the round.
#[test]
fn claim_next_keeps_an_odd_node_id_and_survives_a_lost_prepared_statement() {
    use diesel::connection::SimpleConnection;
    use rota::store::claim::{claim, claim_next};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        let node = r"o'brien\'; DROP TABLE task; --";
        let a = tasks::insert_task(&mut conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap();
        let claimed = claim_next(&mut conn, &plans, 0, 10, node, 7, open()).unwrap();
        assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![a]);
        assert_eq!(claimed[0].owner_node.as_deref(), Some(node));
        assert_eq!(claimed[0].owner_epoch, Some(7));
        if let rota::store::AnyConnection::Postgresql(c) = &mut *conn {
            c.batch_execute("DEALLOCATE ALL").unwrap();
        }
        let b = tasks::insert_task(&mut conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap();
        let claimed = claim_next(&mut conn, &plans, 0, 10, node, 8, open()).unwrap();
        assert_eq!(claimed.iter().map(|t| (t.id, t.owner_epoch)).collect::<Vec<_>>(), vec![(b, Some(8))]);
        // The claim of a member of a larger ring is prepared the same way.
        let c = tasks::insert_task(&mut conn, &NewTask { action: "run".into(), ..Default::default() }).unwrap();
        let claimed = claim(&mut conn, &plans, &[c, b], node, 9, open()).unwrap();
        assert_eq!(claimed.iter().map(|t| (t.id, t.owner_node.as_deref())).collect::<Vec<_>>(), vec![(c, Some(node))]);
    });
}

/// Batched acquisitions: a free, abandoned or already-held application is acquired at the new
/// epoch with its event; one a live node holds, or a missing one, is not (and records nothing).
#[test]
fn batched_acquisitions_take_only_free_or_abandoned_applications() {
    use rota::store::apps::{apps_batch, AppAcquire};
    use rota::store::apps::{find_application, insert_application};
    use rota::store::events::{list_events, EventFilter};
    use rota::store::models::{NewApplication, NewEvent};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let ids: Vec<i64> = (0..4)
            .map(|i| {
                let new = NewApplication { name: format!("q{i}"), driver: "noop".into(), ..Default::default() };
                insert_application(&mut conn, &new).unwrap()
            })
            .collect();
        // ids[1] is held by a live node, ids[2] by a node that left, ids[3] by this node already.
        for (id, owner) in [(ids[1], "n2"), (ids[2], "gone"), (ids[3], "n1")] {
            conn.batch_execute(&format!(
                "UPDATE application SET owner_node = '{owner}', owner_epoch = 3 WHERE id = {id}"
            ))
            .unwrap();
        }
        let live = vec!["n1".to_string(), "n2".to_string()];
        let acquire = |id: i64| AppAcquire {
            id,
            epoch: 7,
            live: live.clone(),
            event: NewEvent {
                kind: "app.acquired".into(),
                app_id: Some(id),
                task_id: None,
                node_id: Some("n1".into()),
                actor: Some("dispatcher".into()),
                message: format!("application {id} acquired at epoch 7"),
                data: Some(r#"{"epoch":7}"#.into()),
            },
        };
        let all: Vec<AppAcquire> = ids.iter().copied().chain([999_999]).map(acquire).collect();
        let done = apps_batch(&mut conn, "n1", open(), &all, &[], &[]).unwrap();
        assert!(done.written.is_empty() && done.read.is_empty());
        assert_eq!(done.missing, vec![999_999], "the missing application is told from a held one");
        type Owned = Option<(i64, Option<String>, Option<i64>)>;
        let got: Vec<Owned> =
            done.acquired.iter().map(|a| a.as_ref().map(|a| (a.id, a.owner_node.clone(), a.owner_epoch))).collect();
        let mine = |id| Some((id, Some("n1".to_string()), Some(7)));
        assert_eq!(got, vec![mine(ids[0]), None, mine(ids[2]), mine(ids[3]), None]);
        let held = find_application(&mut conn, ids[1]).unwrap().unwrap();
        assert_eq!((held.owner_node.as_deref(), held.owner_epoch), (Some("n2"), Some(3)), "a live owner keeps it");
        // Each acquisition's event names the owner before and why it moved.
        let why = [(ids[0], None, "new"), (ids[2], Some("gone"), "departed"), (ids[3], Some("n1"), "rejoined")];
        for (id, previous, reason) in why {
            let f = EventFilter { app_id: Some(id), ..Default::default() };
            let list = list_events(&mut conn, &f, None, 10).unwrap();
            assert_eq!(list.len(), 1, "events of application {id}: {list:?}");
            let e = &list[0];
            assert_eq!((e.kind.as_str(), e.node_id.as_deref()), ("app.acquired", Some("n1")));
            assert!(e.message.starts_with(&format!("application {id} acquired at epoch 7 (")), "{}", e.message);
            let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!((data["epoch"].as_i64(), data["previous_owner"].as_str()), (Some(7), previous), "{data}");
            assert_eq!(data["reason"], reason, "{}", e.message);
        }
        let f = EventFilter { app_id: Some(ids[1]), ..Default::default() };
        assert!(list_events(&mut conn, &f, None, 10).unwrap().is_empty(), "a live owner's: not taken");
    });
}

/// Batched releases: each application is released only while this node owns it at the epoch the
/// release names, with its `app.released` event; one owned at another epoch or by another node
/// keeps its owner and records nothing.
#[test]
fn batched_releases_free_only_what_this_node_owns_at_the_named_epoch() {
    use rota::store::apps::{find_application, insert_application, release_apps, AppRelease};
    use rota::store::events::{list_events, EventFilter};
    use rota::store::models::NewApplication;
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let ids: Vec<i64> = (0..4)
            .map(|i| {
                let new = NewApplication { name: format!("r{i}"), driver: "noop".into(), ..Default::default() };
                insert_application(&mut conn, &new).unwrap()
            })
            .collect();
        // ids[0] and ids[1] are this node's at epoch 3, ids[2] at epoch 2, ids[3] another node's.
        for (id, owner, epoch) in [(ids[0], "n1", 3), (ids[1], "n1", 3), (ids[2], "n1", 2), (ids[3], "n2", 3)] {
            conn.batch_execute(&format!(
                "UPDATE application SET owner_node = '{owner}', owner_epoch = {epoch} WHERE id = {id}"
            ))
            .unwrap();
        }
        let release = |id: i64| AppRelease { id, epoch: 3, event: app_event("app.released", id) };
        let flags = release_apps(&mut conn, "n1", &ids.iter().copied().map(release).collect::<Vec<_>>()).unwrap();
        assert_eq!(flags, vec![true, true, false, false]);
        let owner = |conn: &mut rota::store::AnyConnection, id| {
            let a = find_application(conn, id).unwrap().unwrap();
            (a.owner_node, a.owner_epoch)
        };
        assert_eq!(owner(&mut conn, ids[0]), (None, None));
        assert_eq!(owner(&mut conn, ids[1]), (None, None));
        assert_eq!(owner(&mut conn, ids[2]), (Some("n1".into()), Some(2)), "another epoch's ownership is kept");
        assert_eq!(owner(&mut conn, ids[3]), (Some("n2".into()), Some(3)), "another node's is kept");
        for (id, want) in ids.iter().zip([1, 1, 0, 0]) {
            let f = EventFilter { app_id: Some(*id), kind: Some("app.released".into()), ..Default::default() };
            assert_eq!(list_events(&mut conn, &f, None, 10).unwrap().len(), want, "events of application {id}");
        }
        assert_eq!(release_apps(&mut conn, "n1", &[]).unwrap(), Vec::<bool>::new());
    });
}

/// The batched application statements stay linear in their batch whatever statistics the planner
/// has. With statistics taken before any node owned anything, `owner_node = 'n1'` is estimated
/// at one row, and PostgreSQL planned a batch of writes or releases as a scan of every row `n1`
/// owns, each compared with every row of the batch (8-24 s per batch of 1,024 at 100,000
/// applications: docs/benchmarks.md#scale). Likewise for acquisitions of what `n1` released, after
/// statistics taken while it owned everything. Such a plan runs into the statement timeout here;
/// probing the batch's ids, each statement takes milliseconds.
#[test]
fn batched_application_statements_stay_linear_on_stale_statistics() {
    use rota::domain::AppState;
    use rota::store::apps::{app_owners, apps_batch, release_apps, AppAcquire, AppChange, AppRelease, AppWrite};
    let pg = PgDb::create();
    let store = Store::connect(&DbUrl::parse(&pg.url).unwrap(), &opts()).unwrap();
    store.migrate().unwrap();
    let mut conn = store.conn().unwrap();
    let own_all_then = |conn: &mut rota::store::AnyConnection, analyze_first: bool| {
        let (before, after) = if analyze_first { ("ANALYZE application;", "") } else { ("", "ANALYZE application;") };
        conn.batch_execute(&format!(
            "SET statement_timeout = 0; {before} UPDATE application SET owner_node = 'n1', owner_epoch = 3; {after} \
             SET statement_timeout = '5s'"
        ))
        .unwrap();
    };
    conn.batch_execute(
        "INSERT INTO application (name, driver, desired_state) \
         SELECT 's' || g, 'noop', 'running' FROM generate_series(1, 60000) g",
    )
    .unwrap();
    let ids: Vec<i64> = app_owners(&mut conn).unwrap().iter().map(|a| a.id).collect();
    let release = |id: i64| AppRelease { id, epoch: 3, event: app_event("app.released", id) };

    // Statistics from before anything was owned.
    own_all_then(&mut conn, true);
    let writes: Vec<AppWrite> = ids[..1024]
        .iter()
        .map(|&id| AppWrite {
            id,
            epoch: 3,
            change: AppChange { state: Some(AppState::Running), ..Default::default() },
            event: Some(app_event("app.state", id)),
        })
        .collect();
    let done = apps_batch(&mut conn, "n1", open(), &[], &writes, &[]).expect("a batch of writes");
    assert!(done.written.iter().all(|&w| w) && done.written.len() == 1024);
    let flags = release_apps(&mut conn, "n1", &ids[..1024].iter().copied().map(release).collect::<Vec<_>>())
        .expect("a batch of releases");
    assert!(flags.iter().all(|&f| f));

    // Statistics from while n1 owned everything; then it releases 50,000.
    own_all_then(&mut conn, false);
    for chunk in ids[..50_000].chunks(1024) {
        let flags = release_apps(&mut conn, "n1", &chunk.iter().copied().map(release).collect::<Vec<_>>()).unwrap();
        assert!(flags.iter().all(|&f| f));
    }
    let live = vec!["n1".to_string(), "n2".to_string()];
    let acquires: Vec<AppAcquire> = ids[..2048]
        .iter()
        .map(|&id| AppAcquire { id, epoch: 4, live: live.clone(), event: app_event("app.acquired", id) })
        .collect();
    let done = apps_batch(&mut conn, "n2", open(), &acquires, &[], &[]).expect("a batch of acquisitions");
    assert!(done.acquired.iter().all(|a| a.as_ref().is_some_and(|a| a.owner_node.as_deref() == Some("n2"))));
}

/// Two transactions that write the same claimed rows one by one — a stop's give-back of the rows
/// claimed ahead and a take-back of their start marks — wait for each other instead of
/// deadlocking, whatever order each was handed its rows in. A third session holding the middle
/// row makes them meet: without a common lock order each holds one half and waits for the other,
/// and PostgreSQL fails one of them ("deadlock detected"); a failed give-back left the rows
/// `running` under a node that had stopped.
#[test]
fn a_give_back_and_a_take_back_of_the_same_rows_do_not_deadlock() {
    use rota::store::claim::claim;
    use rota::store::complete::{take_back_starts, unclaim_all};
    use rota::store::models::Claim;
    let pg = PgDb::create();
    let store = Store::connect(&DbUrl::parse(&pg.url).unwrap(), &PoolOptions { max_size: 3, ..opts() }).unwrap();
    store.migrate().unwrap();
    let mut conn = store.conn().unwrap();
    conn.batch_execute("INSERT INTO task (action) SELECT 'run' FROM generate_series(1, 200)").unwrap();
    let ids: Vec<i64> = (1..=200).collect();
    let claimed = claim(&mut conn, &store.plans(), &ids, "n1", 5, open()).unwrap();
    assert_eq!(claimed.len(), 200);
    drop(conn);
    let mut rows: Vec<(i64, Claim)> = claimed.iter().map(|t| (t.id, t.claim())).collect();
    rows.sort_by_key(|r| r.0);
    let backwards: Vec<(i64, Claim)> = rows.iter().rev().copied().collect();

    let mut blocker = PgConnection::establish(&pg.url).unwrap();
    blocker.batch_execute("BEGIN; SELECT 1 FROM task WHERE id = 100 FOR UPDATE").unwrap();
    let count = |sql: &str| {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = PgConnection::establish(&pg.url).unwrap();
        diesel::RunQueryDsl::get_result::<N>(diesel::sql_query(sql), &mut conn).unwrap().n
    };
    let waiting = |n: i64| {
        let sql = "SELECT count(*) AS n FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
        wait_until(Duration::from_secs(10), &format!("{n} sessions waiting for a row lock"), || count(sql) == n);
    };
    let take_back = {
        let store = store.clone();
        std::thread::spawn(move || take_back_starts(&mut store.conn().unwrap(), "n1", open(), &backwards))
    };
    waiting(1);
    let give_back = {
        let store = store.clone();
        std::thread::spawn(move || unclaim_all(&mut store.conn().unwrap(), &rows, "n1"))
    };
    waiting(2);
    blocker.batch_execute("COMMIT").unwrap();
    let taken = take_back.join().unwrap();
    let given = give_back.join().unwrap();
    assert_eq!((taken.map_err(|e| e.to_string()), given.map_err(|e| e.to_string())), (Ok(200), Ok(200)));
    let given_back = "SELECT count(*) AS n FROM task \
                      WHERE status = 'pending' AND owner_node IS NULL AND attempts = 0 AND started_at IS NULL";
    assert_eq!(count(given_back), 200, "every row given back, its attempt uncounted");
}

/// A batch that released something is announced on `rota_release` (a node waiting for the
/// release tries again at once); one that released nothing is not.
#[test]
fn postgres_announces_releases() {
    use rota::store::apps::{insert_application, release_apps, AppRelease, RELEASED_CHANNEL};
    use rota::store::models::NewApplication;
    let (_pg, store, mut listener) = pg_listening(RELEASED_CHANNEL);
    let mut conn = store.conn().unwrap();
    let new = NewApplication { name: "r".into(), driver: "noop".into(), ..Default::default() };
    let id = insert_application(&mut conn, &new).unwrap();
    conn.batch_execute(&format!("UPDATE application SET owner_node = 'n1', owner_epoch = 3 WHERE id = {id}")).unwrap();
    let release = AppRelease { id, epoch: 3, event: app_event("app.released", id) };
    let heard = |listener: &mut PgConnection| {
        listener.batch_execute("SELECT 1").unwrap();
        listener.notifications_iter().filter_map(Result::ok).map(|n| n.channel).collect::<Vec<_>>()
    };
    // Nothing to release (another epoch's): no announcement.
    let other = AppRelease { epoch: 4, ..release.clone() };
    assert_eq!(release_apps(&mut conn, "n1", &[other]).unwrap(), vec![false]);
    assert_eq!(release_apps(&mut conn, "n1", &[release]).unwrap(), vec![true]);
    let mut got = Vec::new();
    wait_until(Duration::from_secs(5), "the release's notification", || {
        got.extend(heard(&mut listener));
        !got.is_empty()
    });
    assert_eq!(got, vec![RELEASED_CHANNEL.to_string()], "one announcement, for the batch that released");
}

/// `claim_turns`: per application only its next command, none while one of it is running, none
/// of an application placed by labels, and none of an application not asked for.
#[test]
fn claim_turns_takes_only_each_applications_next_command() {
    use diesel::connection::SimpleConnection;
    use rota::store::claim::claim_turns;
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        conn.batch_execute(
            "INSERT INTO application (id, name, driver) VALUES (1, 'idle', 'noop'), (2, 'busy', 'noop'), \
               (4, 'other', 'noop'); \
             INSERT INTO application (id, name, driver, selector) VALUES (3, 'labelled', 'noop', '{\"zone\":\"a\"}'); \
             INSERT INTO task (id, app_id, action) VALUES (10, 1, 'start'), (11, 1, 'stop'), (12, 2, 'start'), \
               (13, 2, 'stop'), (14, 3, 'start'), (15, 4, 'start'), (16, 1, 'run'); \
             UPDATE task SET status = 'running', owner_node = 'n1', owner_epoch = 1 WHERE id = 12;",
        )
        .unwrap();
        let claimed = claim_turns(&mut conn, &plans, &[1, 2, 3, 1, 99], "n1", 5, open()).unwrap();
        let got: Vec<(i64, Option<&str>, Option<i64>, i32)> =
            claimed.iter().map(|t| (t.id, t.owner_node.as_deref(), t.owner_epoch, t.attempts)).collect();
        assert_eq!(got, vec![(10, Some("n1"), Some(5), 1)]);
        // Its next command waits while that one runs; once it is done, it is the next turn.
        assert!(claim_turns(&mut conn, &plans, &[1], "n1", 5, open()).unwrap().is_empty());
        conn.batch_execute("UPDATE task SET status = 'succeeded' WHERE id IN (10, 12)").unwrap();
        let ids: Vec<i64> =
            claim_turns(&mut conn, &plans, &[2, 1], "n1", 5, open()).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![11, 13]);
    });
}

/// The job window's claim: of the ids it is given, only pending, due jobs placed by their id
/// alone — not a command, a row with a selector or a target node, a job of an application with a
/// selector or a traffic group, a delayed or finished row.
#[test]
fn claim_jobs_takes_only_jobs_placed_by_their_id() {
    use diesel::connection::SimpleConnection;
    use rota::store::claim::{claim_jobs, max_task_id};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        assert_eq!(max_task_id(&mut conn).unwrap(), 0);
        conn.batch_execute(
            "INSERT INTO application (id, name, driver) VALUES (1, 'plain', 'noop'); \
             INSERT INTO application (id, name, driver, selector) VALUES (2, 'labelled', 'noop', '{\"zone\":\"a\"}'); \
             INSERT INTO application (id, name, driver, traffic_group) VALUES (3, 'grouped', 'noop', 'g'); \
             INSERT INTO task (id, action) VALUES (10, 'run'); \
             INSERT INTO task (id, app_id, action) VALUES (11, 1, 'run'), (12, 1, 'start'), (13, 2, 'run'), (14, 3, 'run'); \
             INSERT INTO task (id, action, selector) VALUES (15, 'run', '{}'); \
             INSERT INTO task (id, action, target_node) VALUES (16, 'run', 'n1'); \
             INSERT INTO task (id, action, run_after) VALUES (17, 'run', '2999-01-01 00:00:00'); \
             INSERT INTO task (id, action, status) VALUES (18, 'run', 'succeeded'); \
             INSERT INTO task (id, action) VALUES (19, 'run');",
        )
        .unwrap();
        assert_eq!(max_task_id(&mut conn).unwrap(), 19);
        let claimed = claim_jobs(&mut conn, &plans, &(10..=25).collect::<Vec<_>>(), "n1", 7, open()).unwrap();
        let got: Vec<(i64, Option<&str>, Option<i64>, &str)> =
            claimed.iter().map(|t| (t.id, t.owner_node.as_deref(), t.owner_epoch, t.status.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (10, Some("n1"), Some(7), "running"),
                (11, Some("n1"), Some(7), "running"),
                (19, Some("n1"), Some(7), "running")
            ]
        );
        assert!(claim_jobs(&mut conn, &plans, &[10, 11, 19], "n2", 8, open()).unwrap().is_empty(), "claimed once");
    });
}

/// Invariant I3 at the database: a write as owner that arrives after its writer's membership
/// deadline (a node paused between its check and its claim, CI seed 155236777), or under an
/// epoch older than its session, changes nothing: each of the four claims, completions (alone,
/// batched, with and without application writes), application writes, acquisitions and a
/// recovery; the same writes within the session go through.
#[test]
fn a_write_past_the_writers_deadline_or_session_changes_nothing() {
    use diesel::connection::SimpleConnection;
    use rota::store::apps::find_application;
    use rota::store::apps::{apps_batch, AppAcquire, AppChange, AppWrite};
    use rota::store::claim::{claim, claim_jobs, claim_next, claim_turns};
    use rota::store::complete::{finish_batch, FinishFlags, Finished, Outcome};
    use rota::store::fence::Fence;
    use rota::store::recover::{orphans, recover};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        conn.batch_execute(
            "INSERT INTO application (id, name, driver) VALUES (1, 'a', 'noop'); \
             INSERT INTO task (id, action) VALUES (10, 'run'), (11, 'run'); \
             INSERT INTO task (id, app_id, action) VALUES (12, 1, 'start');",
        )
        .unwrap();
        let past = Fence { until: Utc::now().naive_utc() - chrono::TimeDelta::milliseconds(1), joined: 0 };
        // A session that began at epoch 4: epoch 3 is an earlier life's.
        let later_session = Fence { until: later(), joined: 4 };
        for fence in [past, later_session] {
            assert!(claim(&mut conn, &plans, &[10, 11, 12], "n1", 3, fence).unwrap().is_empty(), "claim {fence:?}");
            assert!(
                claim_jobs(&mut conn, &plans, &[10, 11], "n1", 3, fence).unwrap().is_empty(),
                "claim_jobs {fence:?}"
            );
            assert!(claim_turns(&mut conn, &plans, &[1], "n1", 3, fence).unwrap().is_empty(), "claim_turns {fence:?}");
            assert!(claim_next(&mut conn, &plans, 0, 10, "n1", 3, fence).unwrap().is_empty(), "claim_next {fence:?}");
        }
        for id in [10, 11, 12] {
            let t = tasks::find_task(&mut conn, id).unwrap().unwrap();
            assert_eq!((t.status.as_str(), t.owner_node, t.attempts), ("pending", None, 0), "task {id}");
        }

        let mut claimed = claim_jobs(&mut conn, &plans, &[10], "n1", 3, open()).unwrap();
        claimed.extend(claim_turns(&mut conn, &plans, &[1], "n1", 3, open()).unwrap());
        claimed.extend(claim(&mut conn, &plans, &[11], "n1", 3, open()).unwrap());
        assert_eq!(claimed.len(), 3);

        // Completions, application writes and acquisitions past the deadline write nothing
        // either, by every path: a batch of outcomes, a single one, one with its application
        // write, a batch of both; several acquisitions and one alone; a batch of writes.
        let acquire =
            |id: i64| AppAcquire { id, epoch: 3, live: vec!["n1".into()], event: app_event("app.acquired", id) };
        let change = AppChange { state: Some(rota::domain::AppState::Running), ..Default::default() };
        let write =
            |id: i64| AppWrite { id, epoch: 3, change: change.clone(), event: Some(app_event("app.state", id)) };
        let done = |id: i64, app: Option<AppWrite>| Finished {
            id,
            claim: held_at(&claimed, id, 3),
            outcome: Outcome::Succeeded(None),
            app,
        };
        conn.batch_execute("INSERT INTO application (id, name, driver) VALUES (2, 'b', 'noop'), (3, 'c', 'noop');")
            .unwrap();
        assert!(apps_batch(&mut conn, "n1", open(), &[acquire(1)], &[], &[]).unwrap().acquired[0].is_some());
        let refused = FinishFlags { task: false, app: None };
        let refused_with_app = FinishFlags { task: false, app: Some(false) };
        for fence in [past, later_session] {
            let two = [done(10, None), done(11, None)];
            assert_eq!(finish_batch(&mut conn, "n1", fence, &two).unwrap(), [refused; 2], "{fence:?}");
            assert_eq!(finish_batch(&mut conn, "n1", fence, &[done(10, None)]).unwrap(), [refused]);
            assert_eq!(finish_batch(&mut conn, "n1", fence, &[done(12, Some(write(1)))]).unwrap(), [refused_with_app]);
            let mixed = [done(11, None), done(12, Some(write(1)))];
            assert_eq!(finish_batch(&mut conn, "n1", fence, &mixed).unwrap(), [refused, refused_with_app]);
            let batch = apps_batch(&mut conn, "n1", fence, &[acquire(2), acquire(3)], &[write(1)], &[1]).unwrap();
            assert_eq!((batch.acquired.iter().flatten().count(), batch.written), (0, vec![false]));
            assert_eq!(batch.read.len(), 1, "reads are answered all the same");
            assert!(apps_batch(&mut conn, "n1", fence, &[acquire(2)], &[], &[]).unwrap().acquired[0].is_none());
        }
        for id in [10, 11, 12] {
            assert_eq!(tasks::find_task(&mut conn, id).unwrap().unwrap().status.as_str(), "running", "task {id}");
        }
        for id in [2, 3] {
            assert_eq!(find_application(&mut conn, id).unwrap().unwrap().owner_node, None, "application {id}");
        }
        assert_eq!(find_application(&mut conn, 1).unwrap().unwrap().state.as_str(), "stopped");

        // A recovery of task 11 by n2, with a live list in which n1 is gone: not past its
        // deadline, nor from a view older than its session.
        let found = orphans(&mut conn, &["n2".into()], "n2").unwrap();
        let eleven = found.iter().find(|o| o.id == 11).expect("task 11 is an orphan to a view without n1").clone();
        assert_eq!(recover(&mut conn, &eleven, "test", (past, 7, GRACE)).unwrap(), None);
        assert_eq!(recover(&mut conn, &eleven, "test", (Fence { until: later(), joined: 8 }, 7, GRACE)).unwrap(), None);
        assert_eq!(tasks::find_task(&mut conn, 11).unwrap().unwrap().status.as_str(), "running");

        // Within the session, the same writes go through.
        assert_eq!(
            finish_batch(&mut conn, "n1", open(), &[done(10, None), done(12, Some(write(1)))]).unwrap(),
            [FinishFlags { task: true, app: None }, FinishFlags { task: true, app: Some(true) }]
        );
        assert_eq!(recover(&mut conn, &eleven, "test", (open(), 7, GRACE)).unwrap(), Some("pending"));

        // One batch holding writes of this session and of an earlier one: each answered as its
        // own, in order.
        let session = Fence { until: later(), joined: 4 };
        conn.batch_execute("INSERT INTO task (id, action) VALUES (20, 'run'), (21, 'run'), (22, 'run');").unwrap();
        let mut claimed = claim(&mut conn, &plans, &[20], "n1", 5, open()).unwrap();
        claimed.extend(claim(&mut conn, &plans, &[21], "n1", 3, open()).unwrap());
        assert_eq!(claimed.len(), 2);
        let at = |id: i64, epoch: i64| Finished {
            id,
            claim: held_at(&claimed, id, epoch),
            outcome: Outcome::Succeeded(None),
            app: None,
        };
        let written = FinishFlags { task: true, app: None };
        assert_eq!(finish_batch(&mut conn, "n1", session, &[at(21, 3), at(20, 5)]).unwrap(), [refused, written]);
        let acquire_at = |id: i64, epoch: i64| AppAcquire {
            id,
            epoch,
            live: vec!["n1".into()],
            event: app_event("app.acquired", id),
        };
        let batch = apps_batch(&mut conn, "n1", session, &[acquire_at(3, 3), acquire_at(2, 5)], &[], &[]).unwrap();
        assert_eq!(batch.acquired.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true]);
        let write_at = |id: i64, epoch: i64| AppWrite { id, epoch, change: change.clone(), event: None };
        let batch = apps_batch(&mut conn, "n1", session, &[], &[write_at(1, 3), write_at(2, 5)], &[]).unwrap();
        assert_eq!(batch.written, [false, true]);

        // A row claimed under a view newer than the recovering node's (a node that joined since)
        // is not put back on that view's word.
        assert_eq!(claim(&mut conn, &plans, &[22], "n3", 9, open()).unwrap().len(), 1);
        let found = orphans(&mut conn, &["n2".into()], "n2").unwrap();
        let newer = found.iter().find(|o| o.id == 22).expect("task 22 is an orphan to a view without n3").clone();
        assert_eq!(recover(&mut conn, &newer, "test", (open(), 7, GRACE)).unwrap(), None);
        assert_eq!(recover(&mut conn, &newer, "test", (open(), 9, GRACE)).unwrap(), Some("pending"));
        // …for a while only: a claim under a newer view that stays unexplained (a node that
        // never joined, an etcd reset) is recovered once it is older than the grace.
        assert_eq!(claim(&mut conn, &plans, &[22], "n3", 9, open()).unwrap().len(), 1);
        conn.batch_execute("UPDATE task SET claimed_at = '2000-01-01 00:00:00' WHERE id = 22").unwrap();
        let found = orphans(&mut conn, &["n2".into()], "n2").unwrap();
        let old = found.iter().find(|o| o.id == 22).expect("task 22 is an orphan again").clone();
        assert_eq!(recover(&mut conn, &old, "test", (open(), 7, GRACE)).unwrap(), Some("pending"));
    });
}

/// A failover onto an asynchronous replica loses the transactions the old primary had not
/// shipped, and the promoted server's sequence hands their ids out again: one node can hold, at
/// one membership epoch (etcd's, which a database failover does not change), a claim of task 1
/// from before the failover and a claim of another task 1 from after it. Every write as the
/// first claim's holder — outcomes by each path, give-backs, a parent's stage and fan-out, moving
/// and losing its children, a recovery decided on the first claim — leaves the second row alone;
/// the second claim's own writes go through (docs/design.md#i3, docs/operations.md#ha).
#[test]
fn a_write_of_an_earlier_claim_never_lands_on_a_new_row_with_the_same_id() {
    use rota::store::claim::claim;
    use rota::store::complete::{finish_batch, unclaim, unclaim_all, FinishFlags, Finished, Outcome};
    use rota::store::jobs::{fan_out, lose_child, reassign_child, set_stage, FanOut};
    use rota::store::recover::{orphans, recover};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let plans = store.plans();
        let app = acquired_apps(&mut conn, "f", 1)[0];
        // Rows 1–6 jobs, row 7 a command of the application, row 8 a parent.
        let rows = |payload: &str| {
            format!(
                "INSERT INTO task (id, action, payload) VALUES (1, 'run', '{payload}'), (2, 'run', '{payload}'), \
                 (3, 'run', '{payload}'), (4, 'run', '{payload}'), (5, 'run', '{payload}'), (6, 'run', '{payload}'), \
                 (8, 'run', '{payload}'); \
                 INSERT INTO task (id, app_id, action, payload) VALUES (7, {app}, 'start', '{payload}');"
            )
        };
        conn.batch_execute(&rows(r#"{"before":true}"#)).unwrap();
        let ids: Vec<i64> = (1..=8).collect();
        let before = claim(&mut conn, &plans, &ids, "n1", 5, open()).unwrap();
        assert_eq!(before.len(), 8);
        // A recovery decided on the first claims (n1 gone from the view of the recovering node).
        let seen = orphans(&mut conn, &["n2".into()], "n2").unwrap();
        assert_eq!(seen.len(), 8);

        // The failover: the rows are gone, and new tasks take their ids. Task 8's child 9 runs
        // on a node that left.
        conn.batch_execute("DELETE FROM task").unwrap();
        conn.batch_execute(&rows(r#"{"after":true}"#)).unwrap();
        conn.batch_execute(
            "INSERT INTO task (id, action, parent_id, target_node, routing) VALUES (9, 'run', 8, 'gone', 'sharding')",
        )
        .unwrap();
        let after = claim(&mut conn, &plans, &ids, "n1", 5, open()).unwrap();
        assert_eq!(after.len(), 8);
        for t in &after {
            let old = before.iter().find(|b| b.id == t.id).unwrap();
            assert_eq!((t.owner_node.as_deref(), t.owner_epoch, t.attempts), (Some("n1"), Some(5), old.attempts));
            assert_ne!(t.claim_token, old.claim_token, "row {}: a claim's token is its own", t.id);
        }
        let old = |id: i64| before.iter().find(|t| t.id == id).unwrap().claim();
        let new = |id: i64| after.iter().find(|t| t.id == id).unwrap().claim();

        // The first claims' late writes, by every path.
        let done = |id: i64, claim, outcome| Finished { id, claim, outcome, app: None };
        let retry = Outcome::Retry { error: "again".into(), run_after: Utc::now().naive_utc() };
        let batch = [
            done(1, old(1), Outcome::Succeeded(Some(r#"{"stale":1}"#.into()))),
            done(2, old(2), Outcome::Failed("stale".into())),
            done(3, old(3), retry.clone()),
        ];
        let refused = FinishFlags { task: false, app: None };
        assert_eq!(finish_batch(&mut conn, "n1", open(), &batch).unwrap(), [refused; 3], "a batch");
        let one = [done(4, old(4), Outcome::Succeeded(Some(r#"{"stale":4}"#.into())))];
        assert_eq!(finish_batch(&mut conn, "n1", open(), &one).unwrap(), [refused], "alone");
        let change =
            rota::store::apps::AppChange { state: Some(rota::domain::AppState::Running), ..Default::default() };
        let write = rota::store::apps::AppWrite { id: app, epoch: 5, change, event: None };
        let with_app = [Finished { app: Some(write.clone()), ..done(7, old(7), Outcome::Failed("stale".into())) }];
        assert!(!finish_batch(&mut conn, "n1", open(), &with_app).unwrap()[0].task, "with its application write");
        assert!(!unclaim(&mut conn, 5, "n1", old(5)).unwrap(), "a give-back");
        assert_eq!(unclaim_all(&mut conn, &[(5, old(5)), (6, old(6))], "n1").unwrap(), 0, "give-backs");
        assert!(!set_stage(&mut conn, 8, "n1", old(8), "gather", None).unwrap(), "a stage");
        let fanned = fan_out(&mut conn, 8, "n1", old(8), "k", |_| vec![Default::default()]).unwrap();
        assert_eq!(fanned, FanOut::NotOurs, "a fan-out");
        let ev = app_event("task.reassigned", app);
        assert!(!reassign_child(&mut conn, 9, "gone", "n1", 8, "n1", old(8), 9, &ev).unwrap(), "moving a child");
        assert!(!lose_child(&mut conn, 9, "gone", 8, "n1", old(8), 9, &ev).unwrap(), "losing a child");
        for o in &seen {
            let fence = (open(), 9, GRACE);
            assert_eq!(recover(&mut conn, o, "test", fence).unwrap(), None, "a recovery of task {}", o.id);
        }
        for id in 1..=9 {
            let t = tasks::find_task(&mut conn, id).unwrap().unwrap();
            assert_eq!(t.payload, if id == 9 { "{}" } else { r#"{"after":true}"# }, "task {id}");
            let want = if id == 9 { ("pending", None) } else { ("running", Some(new(id))) };
            assert_eq!((t.status.as_str(), (id != 9).then(|| t.claim())), want, "task {id}: untouched");
            assert_eq!((t.result, t.error, t.stage, t.target_node.is_some()), (None, None, None, id == 9), "task {id}");
        }

        // The second claims' own writes go through.
        let batch: Vec<Finished> =
            (1..=4).map(|id| done(id, new(id), Outcome::Succeeded(Some(format!(r#"{{"ok":{id}}}"#))))).collect();
        let written = FinishFlags { task: true, app: None };
        assert_eq!(finish_batch(&mut conn, "n1", open(), &batch).unwrap(), [written; 4]);
        assert!(unclaim(&mut conn, 5, "n1", new(5)).unwrap());
        let given_back = tasks::find_task(&mut conn, 5).unwrap().unwrap();
        assert_eq!(
            (given_back.status.as_str(), given_back.started_at),
            ("pending", None),
            "a given-back row never started"
        );
        assert!(set_stage(&mut conn, 8, "n1", new(8), "gather", None).unwrap());
        assert!(reassign_child(&mut conn, 9, "gone", "n1", 8, "n1", new(8), 9, &ev).unwrap());
        let with_app = [Finished { app: Some(write), ..done(7, new(7), Outcome::Succeeded(None)) }];
        assert!(finish_batch(&mut conn, "n1", open(), &with_app).unwrap()[0].task);
    });
}

/// A `running` row whose `owner_node` or `owner_epoch` is NULL is an orphan to every node, and is
/// put back (or failed, with no attempt left): `=` and `<> ALL` never hold for NULL, so such rows
/// were never read as orphans and never recovered (docs/design.md#no-row-stalls).
#[test]
fn running_rows_without_an_owner_or_an_epoch_are_recovered() {
    use rota::store::recover::{orphans, recover};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        conn.batch_execute(
            "INSERT INTO task (id, action, status, attempts, max_attempts, owner_node, owner_epoch) VALUES \
             (1, 'run', 'running', 1, 3, NULL, NULL), (2, 'run', 'running', 1, 1, NULL, 4), \
             (3, 'run', 'running', 1, 3, 'n1', NULL), (4, 'run', 'running', 1, 3, 'gone', NULL), \
             (5, 'run', 'running', 1, 3, NULL, NULL)",
        )
        .unwrap();
        conn.batch_execute("UPDATE task SET target_node = 'n1' WHERE id = 5").unwrap();
        let found = orphans(&mut conn, &["n1".into()], "n1").unwrap();
        assert_eq!(found.iter().map(|o| o.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let open = rota::store::fence::Fence { until: later(), joined: 0 };
        let want = [Some("pending"), Some("failed"), Some("pending"), Some("pending"), Some("pending")];
        for (o, want) in found.iter().zip(want) {
            assert_eq!(recover(&mut conn, o, "test", (open, 7, GRACE)).unwrap(), want, "{o:?}");
        }
        // Recovered once: the claim changed, so a second recovery of the same read does nothing.
        assert_eq!(recover(&mut conn, &found[0], "test", (open, 7, GRACE)).unwrap(), None);
        assert!(orphans(&mut conn, &["n1".into()], "n1").unwrap().is_empty());
    });
}

/// Batched application writes: each row is written only under its own (owner, epoch), its
/// event only when it was, `last_error` can be cleared, and the reads see the batch's writes.
#[test]
fn batched_application_writes_keep_each_rows_owner_and_epoch() {
    use rota::store::apps::find_application;
    use rota::store::apps::{apps_batch, AppChange, AppWrite};
    use rota::store::events::{list_events, EventFilter};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let ev = app_event;
        let ids = acquired_apps(&mut conn, "a", 3);
        let write = |id: i64, epoch: i64, change: AppChange, kind: &str| AppWrite {
            id,
            epoch,
            change,
            event: Some(ev(kind, id)),
        };
        let set = |state: &str, error: Option<Option<&str>>| AppChange {
            state: Some(state.parse().unwrap()),
            desired_state: Some(rota::domain::DesiredState::Running),
            last_error: error.map(|e| e.map(str::to_string)),
            restart_count: Some(2),
        };
        let writes = vec![
            write(ids[0], 5, set("failed", Some(Some("boom"))), "app.state"),
            write(ids[1], 4, set("running", None), "app.state"), // an older epoch: not ours
            write(ids[2], 5, set("running", None), "app.state"),
        ];
        let done = apps_batch(&mut conn, "n1", open(), &[], &writes, &[ids[0], 999_999]).unwrap();
        let (flags, read) = (done.written, done.read);
        assert_eq!(flags, vec![true, false, true]);
        assert_eq!(read.len(), 1, "a missing application reads as absent");
        assert_eq!((read[0].state.as_str(), read[0].last_error.as_deref()), ("failed", Some("boom")));
        let a1 = find_application(&mut conn, ids[1]).unwrap().unwrap();
        assert_eq!((a1.state.as_str(), a1.desired_state.as_str(), a1.restart_count), ("stopped", "stopped", 0));
        let a2 = find_application(&mut conn, ids[2]).unwrap().unwrap();
        assert_eq!((a2.state.as_str(), a2.desired_state.as_str(), a2.restart_count), ("running", "running", 2));
        // Clearing the error; a field left out stays as it was.
        let clear = AppChange { last_error: Some(None), ..Default::default() };
        let flags = apps_batch(
            &mut conn,
            "n1",
            open(),
            &[],
            &[write(ids[0], 5, clear, "app.cleared"), write(ids[2], 5, AppChange::default(), "app.same")],
            &[],
        )
        .unwrap()
        .written;
        assert_eq!(flags, vec![true, true]);
        let a0 = find_application(&mut conn, ids[0]).unwrap().unwrap();
        assert_eq!((a0.state.as_str(), a0.last_error.as_deref(), a0.restart_count), ("failed", None, 2));
        let kinds = |app: i64, conn: &mut _| -> Vec<String> {
            let f = EventFilter { app_id: Some(app), ..Default::default() };
            list_events(conn, &f, None, 10).unwrap().into_iter().rev().map(|e| e.kind).collect()
        };
        assert_eq!(kinds(ids[0], &mut conn), ["app.acquired", "app.state", "app.cleared"]);
        assert_eq!(kinds(ids[1], &mut conn), ["app.acquired"], "no event for a write that was not ours");
        assert_eq!(kinds(ids[2], &mut conn), ["app.acquired", "app.state", "app.same"]);
    });
}

/// A claim statement prepared while `task` was empty is prepared again once the table is
/// large: PostgreSQL's generic plan, cached after five executions and never replanned without
/// new statistics (autovacuum is off on the test server, as on many), scanned the whole table
/// at every claim (docs/benchmarks.md#the-claims-plan). The claim renews its statements, and the
/// renewed plan reaches the rows through indexes.
#[test]
fn a_claim_plan_made_on_an_empty_table_is_replaced_once_the_table_is_large() {
    use diesel::RunQueryDsl;
    use rota::store::claim::claim_next;
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    fn pg(conn: &mut rota::store::AnyConnection) -> &mut PgConnection {
        match conn {
            rota::store::AnyConnection::Postgresql(c) => c,
            _ => unreachable!("a PostgreSQL store"),
        }
    }
    let held = |conn: &mut rota::store::AnyConnection| -> Vec<String> {
        diesel::sql_query("SELECT name FROM pg_prepared_statements WHERE name LIKE 'rota_claim_next_256_g%'")
            .load::<Name>(pg(conn))
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect()
    };
    let db = PgDb::create();
    let store = Store::connect(&DbUrl::parse(&db.url).unwrap(), &opts()).unwrap();
    store.migrate().unwrap();
    let mut conn = store.conn().unwrap();
    let plans = store.plans();
    let any = &mut *conn;
    for _ in 0..8 {
        assert!(claim_next(any, &plans, 0, 256, "n1", 1, open()).unwrap().is_empty());
    }
    let first = held(any);
    assert_eq!(first.len(), 1, "one generation prepared: {first:?}");
    let rows = 300_000;
    pg(any).batch_execute(&format!("INSERT INTO task (action) SELECT 'run' FROM generate_series(1, {rows})")).unwrap();
    let mut claimed = 0;
    let mut now = Vec::new();
    wait_until(Duration::from_secs(120), "the claim statement prepared again", || {
        claimed += claim_next(any, &plans, 0, 256, "n1", 1, open()).unwrap().len();
        now = held(any);
        now != first
    });
    assert_eq!(now.len(), 1, "the older generation was deallocated: {now:?}");
    // Past the custom plans of the first executions, to the generic plan. (These claims may
    // renew the generation again meanwhile, so the name is read again.)
    for _ in 0..8 {
        claimed += claim_next(any, &plans, 0, 256, "n1", 1, open()).unwrap().len();
    }
    let now = held(any);
    assert_eq!(now.len(), 1, "one generation held: {now:?}");
    let plan: Vec<String> = diesel::sql_query(format!("EXPLAIN EXECUTE {}('n1', 1, 0, '2999-01-01', 1)", now[0]))
        .load::<Line>(pg(any))
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert!(!plan.iter().any(|l| l.contains("Seq Scan on task")), "{}", plan.join("\n"));
    assert!(claimed > 0 && claimed < rows, "claimed {claimed} of {rows}");
}

/// The node's start-up check of the clocks (`membership::clock`) against each real database:
/// the database's clock as read through the store agrees with this machine's, within the
/// fence's margin, and the reading is no further off than its round trip allows.
#[test]
fn the_databases_clock_agrees_with_this_nodes() {
    use rota::membership::clock::{best, judge, Reading, Verdict};
    on_both(|store| {
        let mut conn = store.conn().unwrap();
        let readings: Vec<Reading> =
            (0..3).map(|_| Reading::take(|| rota::store::lock::db_now(&mut conn)).unwrap()).collect();
        assert_eq!(judge(&readings), Verdict::Agree, "{readings:?}");
        let best = best(&readings).unwrap();
        // SQLite's clock has milliseconds: a reading may be up to 1 ms off beyond its round trip.
        let slack = chrono::TimeDelta::milliseconds(1);
        assert!(best.offset().abs() <= best.uncertainty() + slack, "{best:?}");
    });
}
