//! etcd membership with real etcd processes and real `rota serve` processes: joins, graceful and
//! crash departures, pauses past the lease, etcd restarts, compacted watches, and bad input.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Etcd, Node, PgDb, Proxy};
use serde_json::Value;

/// Lease TTL of the test nodes (`ROTA_TEST_LEASE_TTL` to measure with another, e.g. the default 5).
fn ttl() -> u64 {
    std::env::var("ROTA_TEST_LEASE_TTL").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

fn etcd_node(pg: &PgDb, endpoint: &str, id: &str, dir: &std::path::Path) -> Node {
    let ttl = ttl().to_string();
    Node::start(
        dir,
        &[
            "--database-url",
            &pg.url,
            "--membership",
            "etcd",
            "--etcd-endpoints",
            endpoint,
            "--node-id",
            id,
            "--lease-ttl",
            &ttl,
            "--label",
            &format!("name={id}"),
        ],
        &[],
    )
}

fn cluster(node: &Node) -> Option<Value> {
    let (status, body) = node.get("/api/v1/cluster");
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

fn members(v: &Value) -> Vec<String> {
    v["members"]
        .as_array()
        .map(|a| a.iter().map(|m| m["node_id"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

/// Wait until every node reports `expected` members with one epoch; returns that epoch.
fn converge(nodes: &[&Node], expected: &[&str], timeout: Duration) -> u64 {
    let mut epoch = 0;
    wait_until(timeout, &format!("all nodes to agree on {expected:?}"), || {
        let views: Vec<Value> = nodes.iter().filter_map(|n| cluster(n)).collect();
        if views.len() != nodes.len() {
            return false;
        }
        let epochs: Vec<u64> = views.iter().map(|v| v["epoch"].as_u64().unwrap_or(0)).collect();
        let agree = views.iter().all(|v| members(v) == expected && v["self"]["status"] == "joined")
            && epochs.iter().all(|e| *e == epochs[0]);
        epoch = epochs[0];
        agree
    });
    epoch
}

struct Cluster {
    _pg: PgDb,
    etcd: Etcd,
    _dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Node>,
}

fn three_nodes() -> Cluster {
    let pg = PgDb::create();
    let etcd = Etcd::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes =
        ["n1", "n2", "n3"].iter().zip(&dirs).map(|(id, d)| etcd_node(&pg, &etcd.endpoint(), id, d.path())).collect();
    let c = Cluster { _pg: pg, etcd, _dirs: dirs, nodes };
    converge(&c.nodes.iter().collect::<Vec<_>>(), &["n1", "n2", "n3"], Duration::from_secs(20));
    c
}

#[test]
fn three_nodes_join_and_report_the_same_view() {
    let c = three_nodes();
    let v = cluster(&c.nodes[0]).unwrap();
    assert_eq!(v["backend"], "etcd");
    let m = &v["members"].as_array().unwrap()[1];
    assert_eq!(m["labels"]["name"], "n2");
    assert_eq!(m["weight"], 1);
    assert!(v["self"]["session"].as_str().unwrap().starts_with("etcd lease"));
    assert_eq!(v["ring"]["epoch"], v["epoch"], "the ring is built at the view's epoch");
    for n in &c.nodes {
        assert_eq!(n.get("/readyz").0, 200);
    }
}

#[test]
fn a_graceful_leave_is_seen_at_once() {
    let mut c = three_nodes();
    let leaving = c.nodes.pop().unwrap();
    leaving.signal("TERM");
    let t0 = Instant::now();
    converge(&[&c.nodes[0], &c.nodes[1]], &["n1", "n2"], Duration::from_secs(2));
    eprintln!("measured: graceful leave seen after {:?}", t0.elapsed());
    let mut leaving = leaving;
    assert!(leaving.wait_exit(Duration::from_secs(10)).success());
    assert!(leaving.logs().contains("lease revoked"), "{}", leaving.logs());
}

#[test]
fn a_crashed_node_is_gone_within_the_lease_ttl() {
    let mut c = three_nodes();
    let crashed = c.nodes.pop().unwrap();
    crashed.signal("KILL");
    let t0 = Instant::now();
    converge(&[&c.nodes[0], &c.nodes[1]], &["n1", "n2"], Duration::from_secs(ttl() + 2));
    eprintln!("measured: crash seen after {:?} (ttl {} s)", t0.elapsed(), ttl());
}

#[test]
fn a_paused_node_is_removed_then_fences_itself_before_rejoining() {
    let c = three_nodes();
    let paused = &c.nodes[2];
    let before = cluster(paused).unwrap()["self"]["session"].as_str().unwrap().to_string();
    paused.signal("STOP");
    let t0 = Instant::now();
    converge(&[&c.nodes[0], &c.nodes[1]], &["n1", "n2"], Duration::from_secs(ttl() + 3));
    eprintln!("measured: pause seen after {:?}", t0.elapsed());
    paused.signal("CONT");
    converge(&[&c.nodes[0], &c.nodes[1], paused], &["n1", "n2", "n3"], Duration::from_secs(15));
    let logs = paused.logs();
    let fenced = logs.find("fenced: stopped acting").expect("the resumed node must report itself fenced");
    let rejoined = logs.find("re-joined the cluster with a new lease").expect("then re-join");
    assert!(fenced < rejoined, "fenced must come first:\n{logs}");
    let after = cluster(paused).unwrap()["self"]["session"].as_str().unwrap().to_string();
    assert_ne!(before, after, "a new lease");
}

#[test]
fn nodes_rejoin_and_converge_after_etcd_restarts() {
    let mut c = three_nodes();
    c.etcd.restart();
    let refs: Vec<&Node> = c.nodes.iter().collect();
    converge(&refs, &["n1", "n2", "n3"], Duration::from_secs(30));
    // A longer outage than the TTL: all fence, then all re-join.
    c.etcd.stop();
    wait_until(Duration::from_secs(ttl() + 5), "nodes to fence while etcd is down", || {
        c.nodes.iter().all(|n| n.get("/readyz").0 == 503)
    });
    c.etcd.restart();
    converge(&refs, &["n1", "n2", "n3"], Duration::from_secs(30));
    for n in &c.nodes {
        wait_until(Duration::from_secs(5), "ready again", || n.get("/readyz").0 == 200);
    }
}

#[test]
fn a_watch_from_a_compacted_revision_recovers() {
    let pg = PgDb::create();
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let node = etcd_node(&pg, &format!("127.0.0.1:{}", proxy.port), "solo", dir.path());
    converge(&[&node], &["solo"], Duration::from_secs(15));

    // Break the node's streams; while it is away, a member joins and history is compacted.
    proxy.cut();
    let record = r#"{"addr":"127.0.0.1:1","labels":{},"weight":1,"started_at":"2026-11-22T00:00:00Z","instance":"x"}"#;
    etcd.with_client(async |c| {
        let lease = c.lease_grant(60, None).await.unwrap().id();
        c.put("/rota/members/other", record, Some(etcd_client::PutOptions::new().with_lease(lease))).await.unwrap();
        for i in 0..5 {
            c.put("/unrelated/key", i.to_string(), None).await.unwrap();
        }
        let rev = c.get("/unrelated/key", None).await.unwrap().header().unwrap().revision();
        c.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    });
    proxy.restore();
    converge(&[&node], &["other", "solo"], Duration::from_secs(15));
    assert!(node.logs().contains("was compacted"), "{}", node.logs());
}

#[test]
fn an_unreachable_etcd_is_reported_without_a_crash() {
    let pg = PgDb::create();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let node = etcd_node(&pg, &format!("127.0.0.1:{port}"), "lonely", dir.path());
    let mut body = String::new();
    wait_until(Duration::from_secs(15), "/readyz to explain the unreachable etcd", || {
        let (status, b) = node.get("/readyz");
        body = b;
        status == 503 && body.contains("unreachable") && body.contains(&port.to_string())
    });
    assert_eq!(node.get("/livez").0, 200);
    assert_eq!(cluster(&node).unwrap()["self"]["status"], "joining");
}

#[test]
fn a_malformed_member_value_is_ignored_with_a_warning() {
    let pg = PgDb::create();
    let etcd = Etcd::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = etcd_node(&pg, &etcd.endpoint(), "a", dirs[0].path());
    let b = etcd_node(&pg, &etcd.endpoint(), "b", dirs[1].path());
    converge(&[&a, &b], &["a", "b"], Duration::from_secs(15));
    etcd.with_client(async |c| {
        c.put("/rota/members/junk", "{not json", None).await.unwrap();
        c.put("/rota/members/bad id!", r#"{"addr":"x","weight":1,"started_at":"","instance":""}"#, None).await.unwrap();
    });
    wait_until(Duration::from_secs(10), "a warning about the malformed entry", || {
        a.logs().contains("ignoring a malformed member entry") && b.logs().contains("ignoring a malformed member entry")
    });
    converge(&[&a, &b], &["a", "b"], Duration::from_secs(10));
    assert_eq!(a.get("/readyz").0, 200);
    // A second process with a taken node id waits instead of acting twice.
    let dir = tempfile::tempdir().unwrap();
    let twin = etcd_node(&pg, &etcd.endpoint(), "a", dir.path());
    wait_until(Duration::from_secs(10), "the twin to explain why it waits", || {
        twin.get("/readyz").1.contains("already registered by another process")
    });
    assert_eq!(twin.get("/readyz").0, 503);
}

/// Rows of `db` matching `filter`.
fn count(db: &mut diesel::PgConnection, filter: &str) -> i64 {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(format!("SELECT count(*) AS n FROM task WHERE {filter}")).get_result::<N>(db).unwrap().n
}

/// A node paused mid-drain past its lease fences itself — its claim pump dropped without a
/// write, the rows it had claimed left at the old epoch — re-joins, and recovers them: every
/// row succeeds, none is left running or pending.
#[test]
fn a_node_fenced_in_the_middle_of_a_backlog_loses_no_row() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    const ROWS: i64 = 50_000;
    let pg = PgDb::create();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let node = etcd_node(&pg, &etcd.endpoint(), "solo", dir.path());
    converge(&[&node], &["solo"], Duration::from_secs(15));
    let mut db = diesel::PgConnection::establish(&pg.url).unwrap();
    db.batch_execute(&format!("INSERT INTO task (action) SELECT 'run' FROM generate_series(1, {ROWS})")).unwrap();
    wait_until(Duration::from_secs(60), "the backlog to be draining", || count(&mut db, "status = 'succeeded'") >= 500);

    node.signal("STOP");
    assert!(
        count(&mut db, "status = 'pending'") > 0,
        "the backlog drained before the pause; nothing was fenced mid-drain"
    );
    let member = "/rota/members/solo";
    wait_until(Duration::from_secs(ttl() + 5), "the paused node's lease to expire", || {
        etcd.with_client(async |c| c.get(member, None).await.unwrap().kvs().is_empty())
    });
    node.signal("CONT");
    wait_until(Duration::from_secs(120), "every row to succeed after the re-join", || {
        count(&mut db, "status = 'succeeded'") == ROWS
    });
    let logs = node.logs();
    assert!(logs.contains("fenced: aborted all work"), "the resumed node's dispatcher must have fenced:\n{logs}");
    assert_eq!(count(&mut db, "status <> 'succeeded'"), 0, "{logs}");
}
