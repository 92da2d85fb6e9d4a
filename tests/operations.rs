//! What an operator runs against: the metrics a scraper reads (`promtool check metrics` on a real
//! node's answer, both formats), `/readyz` while the database is away, the log during an etcd
//! outage, and the files of `deploy/` (alerting rules under `promtool test rules`, the Grafana
//! dashboard's expressions against a real scrape, the example configurations loaded by `rota`).
//!
//! promtool comes from Debian's `prometheus` package (scripts/prereqs.sh installs it for tests):
//! without it a test says SKIPPED, except under CI (`CI=true`), where it fails.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{converge, ttl, Cluster};
use common::{wait_until, Node, PgDb, Proxy, FAST};

/// Where promtool is, or None (with a notice) when it is missing outside CI; under CI a missing
/// promtool fails the test (scripts/prereqs.sh installs it with Debian's `prometheus`).
fn promtool() -> Option<&'static str> {
    let found = std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Some("promtool");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("promtool is missing: scripts/prereqs.sh test installs Debian's `prometheus` package, which has it");
    }
    eprintln!("SKIPPED: promtool is missing (Debian's `prometheus` package; scripts/prereqs.sh test installs it)");
    None
}

/// Run promtool with `args`, `stdin` on its standard input: (success, stdout + stderr).
fn run_promtool(bin: &str, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// GET `url` with `accept`: (content type, body).
fn scrape(url: &str, accept: Option<&str>) -> (String, String) {
    let mut req = ureq::get(url);
    if let Some(accept) = accept {
        req = req.header("Accept", accept);
    }
    let mut resp = req.call().unwrap();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (ct, resp.body_mut().read_to_string().unwrap())
}

/// A node on a fresh PostgreSQL database with a few tasks run, so that the labelled metrics
/// (per action and status, the histograms) have series.
fn node_with_tasks() -> (PgDb, tempfile::TempDir, Node) {
    let pg = PgDb::create();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--database-url", &pg.url], &FAST);
    wait_until(Duration::from_secs(15), "ready", || node.get("/readyz").0 == 200);
    let post = |path: &str, body: &str| common::http("POST", &node.url(path), Some(body), None);
    assert_eq!(post("/api/v1/apps", r#"{"name": "m", "driver": "noop"}"#).0, 201);
    assert_eq!(post("/api/v1/apps/1/start", "{}").0, 202);
    assert_eq!(post("/api/v1/tasks", r#"{"action": "run", "app_id": 1}"#).0, 202);
    wait_until(Duration::from_secs(15), "the tasks to show in the metrics", || {
        let m = node.get("/metrics").1;
        m.contains(r#"rota_tasks_total{action="start",status="succeeded"}"#) && m.contains(r#"action="run""#)
    });
    (pg, dir, node)
}

#[test]
fn metrics_pass_promtool_in_the_format_asked_for() {
    let (_pg, _dir, node) = node_with_tasks();
    let url = node.url("/metrics");
    // Without an Accept header, with curl's `*/*` and with the 0.0.4 asked for: the text format.
    for accept in [None, Some("*/*"), Some("text/plain; version=0.0.4")] {
        let (ct, body) = scrape(&url, accept);
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8", "Accept: {accept:?}");
        assert!(!body.contains("# EOF") && body.contains("# TYPE rota_build_info gauge"), "{body}");
    }
    // What Prometheus sends: OpenMetrics.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                      text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (ct, om) = scrape(&url, Some(prometheus));
    assert_eq!(ct, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE rota_build info"), "{om}");

    let Some(promtool) = promtool() else { return };
    let (_, text) = scrape(&url, Some("text/plain; version=0.0.4"));
    for family in ["rota_tasks_total", "rota_task_execution_seconds", "rota_task_claim_latency_seconds"] {
        assert!(
            text.contains(&format!("{family}{{")) || text.contains(&format!("{family}_count")),
            "{family}:\n{text}"
        );
    }
    let (ok, out) = run_promtool(promtool, &["check", "metrics"], &text);
    assert!(ok, "promtool check metrics refused the 0.0.4 answer:\n{out}\n{text}");
    // The OpenMetrics answer is what promtool cannot read (its `info` type): proof that the
    // check reads what it is given.
    let (ok, out) = run_promtool(promtool, &["check", "metrics"], &om);
    assert!(!ok && out.contains("info"), "promtool accepted OpenMetrics?\n{out}");
}

#[test]
fn readyz_answers_at_once_from_the_last_checks_while_the_database_is_away() {
    let pg = PgDb::create();
    let upstream = common::pg_admin_url();
    let upstream = upstream.split_once('@').and_then(|(_, r)| r.split_once('/')).map(|(hp, _)| hp.to_string()).unwrap();
    let proxy = Proxy::start(&upstream);
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, pg.name);
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--database-url", &url], &FAST);
    // Kubernetes' default probe timeout is 1 s: every answer must come well within it. A bound
    // for correctness (a probe that times out says nothing), not a benchmark.
    let probe = || {
        let t = Instant::now();
        let (status, body) = node.get("/readyz");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "/readyz took {took:?}: {body}");
        (status, serde_json::from_str::<serde_json::Value>(&body).unwrap())
    };
    wait_until(Duration::from_secs(15), "ready", || probe().0 == 200);

    // Away: connections closed, new ones refused (a database that went down), then hung (a
    // frozen server or network path: nothing answers, nothing is reset).
    for (how, away, back) in [
        ("cut", &Proxy::cut as &dyn Fn(&Proxy), &Proxy::restore as &dyn Fn(&Proxy)),
        ("frozen", &Proxy::freeze, &Proxy::thaw),
    ] {
        away(&proxy);
        let mut body = serde_json::Value::Null;
        wait_until(Duration::from_secs(15), &format!("/readyz 503 naming the database ({how})"), || {
            let (status, b) = probe();
            body = b;
            status == 503 && body["checks"]["database"]["ok"] == false
        });
        // The first failure may be quick (a dropped connection); the next checks wait for a
        // connection that does not come: the answers must not.
        for _ in 0..5 {
            (_, body) = probe();
            assert_eq!(body["checks"]["database"]["ok"], false, "{how}: {body}");
        }
        assert!(body["reason"].as_str().unwrap().contains("database: "), "{body}");
        assert!(body["checks"]["database"]["age_ms"].is_u64(), "{body}");
        back(&proxy);
        wait_until(Duration::from_secs(30), &format!("/readyz 200 once the database is back ({how})"), || {
            probe().0 == 200
        });
    }
    let (_, ready) = probe();
    assert!(ready["checks"]["database"]["age_ms"].as_u64().unwrap() < 5_000, "{ready}");
}

/// Lines of `logs` at level WARN (text format: the level is the second word).
fn warn_lines(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.split_whitespace().nth(1) == Some("WARN")).collect()
}

#[test]
fn an_etcd_outage_logs_its_warnings_once_then_in_summaries() {
    let mut c = Cluster::new(&["w1"]);
    converge(&c.these(&["w1"]), &["w1"], Duration::from_secs(20));
    let node = &c.nodes["w1"];
    let before = warn_lines(&node.logs()).len();
    c.etcd.stop();
    wait_until(Duration::from_secs(10), "the first warning of the outage", || {
        warn_lines(&node.logs()).iter().skip(before).any(|l| l.contains("membership::etcd"))
    });
    // A window longer than the lease: the node retries, fences itself and keeps retrying.
    let window = Duration::from_secs(ttl() + 3);
    let t0 = Instant::now();
    let start = warn_lines(&node.logs()).len();
    wait_until(window + Duration::from_secs(1), "the window to pass", || t0.elapsed() >= window);
    let logs = node.logs();
    let during: Vec<&str> = warn_lines(&logs).into_iter().skip(start).collect();
    eprintln!("{} WARN lines in {window:?} of an etcd outage ({} before it)", during.len(), start - before);
    assert!(during.len() <= 4, "{} WARN lines in {window:?}:\n{}", during.len(), during.join("\n"));
    // The warnings held back are counted in a summary, at most every 10 s.
    node.wait_logged("warnings like it held back", Duration::from_secs(15));

    c.etcd.resume();
    converge(&c.these(&["w1"]), &["w1"], Duration::from_secs(30));
}

/// The scrape-time reads behind `rota_queue_depth`, `rota_queue_oldest_due_seconds` and
/// `rota_traffic_failed_over_groups`, on both backends: the deploy/ alerts on backlog age and
/// traffic failover read them.
#[test]
fn the_backlog_age_and_failed_over_groups_are_read_alike_on_both_backends() {
    use diesel::connection::SimpleConnection;
    use rota::store::{jobs, tasks, DbUrl, PoolOptions, Store};
    let pg = PgDb::create();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("rota.db").display());
    for url in [pg.url.as_str(), sqlite.as_str()] {
        let opts = PoolOptions { max_size: 2, connect_timeout: Duration::from_secs(5) };
        let store = Store::connect(&DbUrl::parse(url).unwrap(), &opts).unwrap();
        store.migrate().unwrap();
        let mut c = store.conn().unwrap();
        assert_eq!(tasks::queue_backlog(&mut c).unwrap(), (0, None), "{url}: an empty queue");
        assert_eq!(jobs::failed_over_groups(&mut c).unwrap(), 0);
        // Due for a day (a `run_after` written by hand with a `T`), due now, deferred, running.
        c.batch_execute(
            "INSERT INTO task (action, run_after) VALUES ('run', '2020-01-01T00:00:00');
             INSERT INTO task (action) VALUES ('run');
             INSERT INTO task (action, run_after) VALUES ('run', '2999-01-01 00:00:00');
             INSERT INTO task (action, status, run_after) VALUES ('run', 'running', '2000-01-01 00:00:00');
             INSERT INTO traffic_policy (group_name, preferred, backup, failed_over) VALUES ('a', 'dc1', 'dc2', TRUE);
             INSERT INTO traffic_policy (group_name, preferred, backup, failed_over) VALUES ('b', 'dc1', 'dc2', FALSE);",
        )
        .unwrap();
        let (depth, oldest) = tasks::queue_backlog(&mut c).unwrap();
        let expected = (chrono::Utc::now().naive_utc()
            - chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap())
        .num_seconds() as f64;
        assert_eq!(depth, 2, "{url}");
        let oldest = oldest.unwrap();
        assert!((oldest - expected).abs() < 120.0, "{url}: oldest due {oldest} s, expected about {expected} s");
        assert_eq!(jobs::failed_over_groups(&mut c).unwrap(), 1, "{url}");
    }
}

/// deploy/, from the repository root.
fn deploy(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

#[test]
fn the_alerting_rules_pass_their_promtool_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = deploy("prometheus");
    for args in [&["check", "rules", "rota-alerts.yml"][..], &["test", "rules", "rota-alerts.test.yml"]] {
        let out = std::process::Command::new(promtool).args(args).current_dir(&dir).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
        eprintln!("promtool {}: {}", args.join(" "), text.trim());
    }
}

/// Every `rota_…` name in `text`.
fn rota_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("rota_") {
        let boundary = rest[..i].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let len = rest[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len() - i);
        if boundary {
            names.push(rest[i..i + len].to_string());
        }
        rest = &rest[i + len..];
    }
    names
}

/// Every string under an `expr` or `query` key of the dashboard.
fn expressions(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::Object(q)) => {
                        out.extend(q.get("query").and_then(|s| s.as_str()).map(str::to_string))
                    }
                    _ => expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_and_the_alerts_name_only_metrics_a_node_exports() {
    let (_pg, _dir, node) = node_with_tasks();
    let (_, text) = scrape(&node.url("/metrics"), Some("text/plain; version=0.0.4"));
    // Families and the sample names a query can use (a histogram's `_bucket`, `_sum`, `_count`).
    let mut exported = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        exported.insert(name.to_string());
        if kind == "histogram" {
            exported.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        }
    }
    assert!(exported.contains("rota_tasks_total") && exported.contains("rota_queue_oldest_due_seconds"), "{text}");

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/rota-dashboard.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    for e in &exprs {
        let names = rota_names(e);
        assert!(!names.is_empty(), "the dashboard's `{e}` names no Rota metric");
        for n in names {
            assert!(exported.contains(&n), "the dashboard's `{e}` names `{n}`, which a node does not export");
        }
    }
    let rules = std::fs::read_to_string(deploy("prometheus/rota-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/rota-alerts.test.yml")).unwrap();
    for (file, text) in [("rota-alerts.yml", &rules), ("rota-alerts.test.yml", &tests)] {
        for n in rota_names(text) {
            assert!(exported.contains(&n), "{file} names `{n}`, which a node does not export");
        }
    }
}

#[test]
fn the_example_configurations_load_once_their_tokens_are_set() {
    use rota::config::{Config, MembershipBackend, Overrides};
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for i in 1..=3 {
        let path = deploy(&format!("config/node-{i}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        // As shipped, the placeholders keep a node from starting, with the key named.
        let e = Config::load(Some(&path), &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("api.tokens"), "node-{i}.toml as shipped: {e}");
        let (status, _, err) = common::run(common::rota().arg("serve").arg("--config").arg(&path));
        assert_eq!(status.code(), Some(2), "rota serve with node-{i}.toml as shipped: {err}");
        assert!(err.contains("api.tokens"), "{err}");

        let mut filled = text.clone();
        for (n, placeholder) in
            ["<replace: openssl rand -hex 24>", "<replace: another openssl rand -hex 24>"].iter().enumerate()
        {
            assert!(filled.contains(placeholder), "node-{i}.toml: {placeholder}");
            filled = filled.replace(placeholder, &format!("{n}-0123456789abcdef0123456789abcdef"));
        }
        let ready = dir.path().join(format!("node-{i}.toml"));
        std::fs::write(&ready, filled).unwrap();
        let c = Config::load(Some(&ready), &Overrides::default()).unwrap_or_else(|e| panic!("node-{i}.toml: {e}"));
        assert_eq!(c.membership.backend, MembershipBackend::Etcd);
        assert_eq!(c.membership.etcd_endpoints.len(), 3, "node-{i}.toml");
        assert!(c.database.url.starts_with("postgres://"), "node-{i}.toml");
        assert_eq!(c.api.tokens.len(), 2);
        ids.push((c.node.id.clone(), c.membership.advertise_addr.clone(), c.membership.cluster.clone()));
    }
    // One cluster, three distinct nodes.
    assert!(ids.iter().all(|(_, _, cluster)| *cluster == ids[0].2), "{ids:?}");
    let distinct: std::collections::BTreeSet<_> = ids.iter().map(|(id, addr, _)| (id, addr)).collect();
    assert_eq!(distinct.len(), 3, "{ids:?}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze() {
    let found =
        std::process::Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: systemd-analyze is missing (package systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(deploy("systemd/rota.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/rota serve --config /etc/rota/rota.toml"), "{unit}");
    // Verified against the binary under test (systemd-analyze checks that it exists).
    let unit = unit.replace("/usr/local/bin/rota", env!("CARGO_BIN_EXE_rota"));
    let path = dir.path().join("rota.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify rota.service:\n{text}");
}
