//! Inputs that cannot exhaust a node (docs/security.md): task rows written by hand and jobs
//! submitted through the API, against a real node on each backend. What it proves:
//!
//! - **Metric labels**: 20,000 rows with distinct bogus actions all fail, and `/metrics` stays
//!   under 1 MB, counting them under `action="other"`.

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use common::wait_until;

fn status_and_error(f: &Fixture, id: i64) -> (String, String) {
    let rows: Vec<(String, Option<String>)> = {
        use diesel::prelude::*;
        use diesel::sql_types::{Nullable, Text};
        #[derive(QueryableByName)]
        struct R {
            #[diesel(sql_type = Text)]
            status: String,
            #[diesel(sql_type = Nullable<Text>)]
            error: Option<String>,
        }
        diesel::sql_query(format!("SELECT status, error FROM task WHERE id = {id}"))
            .load::<R>(&mut *f.store.conn().unwrap())
            .unwrap()
            .into_iter()
            .map(|r| (r.status, r.error))
            .collect()
    };
    let (s, e) = rows.into_iter().next().unwrap();
    (s, e.unwrap_or_default())
}

/// The value of the sample `name{labels…}` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn twenty_thousand_bogus_actions_leave_metrics_small() {
    let f = Fixture::start(true, "", &[], &[]);
    f.sql(
        "INSERT INTO task (action) \
         SELECT 'bogus-' || g || '-' || repeat('x', 40) FROM generate_series(1, 20000) g",
    );
    wait_until(Duration::from_secs(300), "20,000 bogus rows failed", || {
        f.scalar("SELECT COUNT(*) AS n FROM task WHERE status = 'failed'") == 20_000
    });
    let error = status_and_error(&f, f.scalar("SELECT MIN(id) AS n FROM task")).1;
    assert!(error.contains("unknown action `bogus-1-"), "{error}");
    // Read whole, however large (the shared client stops at 10 MB).
    let mut resp = ureq::get(&f.node.url("/metrics")).call().unwrap();
    let metrics = resp.body_mut().with_config().limit(1 << 30).read_to_string().unwrap();
    assert!(metrics.len() < 1024 * 1024, "/metrics is {} bytes", metrics.len());
    assert!(!metrics.contains("bogus-"), "a row's action text became a label");
    assert_eq!(
        sample(&metrics, "rota_tasks_total", &["action=\"other\"", "status=\"failed\""]),
        Some(20_000.0),
        "{}",
        metrics.lines().filter(|l| l.starts_with("rota_tasks_total")).collect::<Vec<_>>().join("\n")
    );
    let executions = sample(&metrics, "rota_task_execution_seconds_count", &["action=\"other\""]);
    assert_eq!(executions, Some(20_000.0));
}

