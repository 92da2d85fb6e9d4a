//! etcd membership with real etcd processes and real `rota serve` processes: joins, graceful and
//! crash departures, pauses past the lease, etcd restarts, compacted watches, and bad input.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{converge, ttl, view, Cluster};
use common::{wait_until, Node, Proxy};

/// A node of `c` labelled `name=<id>` whose etcd is `endpoint` (the cluster's, a proxy, or none).
fn member(c: &mut Cluster, id: &str, endpoint: &str) -> Node {
    c.start_node(id, endpoint, &[&format!("name={id}")], &[])
}

/// Nodes n1, n2, n3 on one etcd, converged.
fn three_nodes() -> Cluster {
    let mut c = Cluster::new(&[]);
    for id in ["n1", "n2", "n3"] {
        c.add_labelled(id, &[&format!("name={id}")]);
    }
    converge(&c.these(&["n1", "n2", "n3"]), &["n1", "n2", "n3"], Duration::from_secs(20));
    c
}

#[test]
fn three_nodes_join_and_report_the_same_view() {
    let c = three_nodes();
    let v = view(&c.nodes["n1"]).unwrap();
    assert_eq!(v["backend"], "etcd");
    let m = &v["members"].as_array().unwrap()[1];
    assert_eq!(m["labels"]["name"], "n2");
    assert_eq!(m["weight"], 1);
    assert!(v["self"]["session"].as_str().unwrap().starts_with("etcd lease"));
    assert_eq!(v["ring"]["epoch"], v["epoch"], "the ring is built at the view's epoch");
    for n in c.nodes.values() {
        assert_eq!(n.get("/readyz").0, 200);
    }
}

#[test]
fn a_graceful_leave_is_seen_at_once() {
    let mut c = three_nodes();
    let mut leaving = c.nodes.remove("n3").unwrap();
    leaving.signal("TERM");
    let t0 = Instant::now();
    converge(&c.these(&["n1", "n2"]), &["n1", "n2"], Duration::from_secs(2));
    eprintln!("measured: graceful leave seen after {:?}", t0.elapsed());
    assert!(leaving.wait_exit(Duration::from_secs(10)).success());
    assert!(leaving.logs().contains("lease revoked"), "{}", leaving.logs());
}

#[test]
fn a_crashed_node_is_gone_within_the_lease_ttl() {
    let mut c = three_nodes();
    let crashed = c.nodes.remove("n3").unwrap();
    crashed.signal("KILL");
    let t0 = Instant::now();
    converge(&c.these(&["n1", "n2"]), &["n1", "n2"], Duration::from_secs(ttl() + 2));
    eprintln!("measured: crash seen after {:?} (ttl {} s)", t0.elapsed(), ttl());
}

#[test]
fn a_paused_node_is_removed_then_fences_itself_before_rejoining() {
    let c = three_nodes();
    let paused = &c.nodes["n3"];
    let before = view(paused).unwrap()["self"]["session"].as_str().unwrap().to_string();
    paused.signal("STOP");
    let t0 = Instant::now();
    converge(&c.these(&["n1", "n2"]), &["n1", "n2"], Duration::from_secs(ttl() + 3));
    eprintln!("measured: pause seen after {:?}", t0.elapsed());
    paused.signal("CONT");
    converge(&c.these(&["n1", "n2", "n3"]), &["n1", "n2", "n3"], Duration::from_secs(15));
    // The view shows the node joined as soon as it has re-joined; the line saying so is logged
    // right after: wait for it rather than read the log at convergence.
    let logs = paused.wait_logged("re-joined the cluster with a new lease", Duration::from_secs(10));
    let fenced = logs.find("fenced: stopped acting").expect("the resumed node must report itself fenced");
    let rejoined = logs.find("re-joined the cluster with a new lease").unwrap();
    assert!(fenced < rejoined, "fenced must come first:\n{logs}");
    let after = view(paused).unwrap()["self"]["session"].as_str().unwrap().to_string();
    assert_ne!(before, after, "a new lease");
}

#[test]
fn nodes_rejoin_and_converge_after_etcd_restarts() {
    let mut c = three_nodes();
    let ids = ["n1", "n2", "n3"];
    c.etcd.restart();
    converge(&c.these(&ids), &ids, Duration::from_secs(30));
    // A longer outage than the TTL: all fence, then all re-join.
    c.etcd.stop();
    wait_until(Duration::from_secs(ttl() + 5), "nodes to fence while etcd is down", || {
        c.nodes.values().all(|n| n.get("/readyz").0 == 503)
    });
    c.etcd.restart();
    converge(&c.these(&ids), &ids, Duration::from_secs(30));
    for n in c.nodes.values() {
        wait_until(Duration::from_secs(5), "ready again", || n.get("/readyz").0 == 200);
    }
}

#[test]
fn a_watch_from_a_compacted_revision_recovers() {
    let mut c = Cluster::new(&[]);
    let proxy = Proxy::start(c.etcd.endpoint());
    let node = member(&mut c, "solo", &format!("127.0.0.1:{}", proxy.port));
    converge(&[&node], &["solo"], Duration::from_secs(15));

    // Break the node's streams; while it is away, a member joins and history is compacted.
    proxy.cut();
    let record = r#"{"addr":"127.0.0.1:1","labels":{},"weight":1,"started_at":"2026-11-22T00:00:00Z","instance":"x"}"#;
    c.etcd.with_client(async |c| {
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
    node.wait_logged("was compacted", Duration::from_secs(10));
}

#[test]
fn an_unreachable_etcd_is_reported_without_a_crash() {
    let mut c = Cluster::new(&[]);
    let port = common::free_port();
    let node = member(&mut c, "lonely", &format!("127.0.0.1:{port}"));
    let mut body = String::new();
    wait_until(Duration::from_secs(15), "/readyz to explain the unreachable etcd", || {
        let (status, b) = node.get("/readyz");
        body = b;
        status == 503 && body.contains("unreachable") && body.contains(&port.to_string())
    });
    assert_eq!(node.get("/livez").0, 200);
    assert_eq!(view(&node).unwrap()["self"]["status"], "joining");
}

#[test]
fn a_malformed_member_value_is_ignored_with_a_warning() {
    let mut c = Cluster::new(&[]);
    c.add_labelled("a", &["name=a"]);
    c.add_labelled("b", &["name=b"]);
    converge(&c.these(&["a", "b"]), &["a", "b"], Duration::from_secs(15));
    c.etcd.with_client(async |c| {
        c.put("/rota/members/junk", "{not json", None).await.unwrap();
        c.put("/rota/members/bad id!", r#"{"addr":"x","weight":1,"started_at":"","instance":""}"#, None).await.unwrap();
    });
    for n in c.these(&["a", "b"]) {
        n.wait_logged("ignoring a malformed member entry", Duration::from_secs(10));
    }
    converge(&c.these(&["a", "b"]), &["a", "b"], Duration::from_secs(10));
    assert_eq!(c.nodes["a"].get("/readyz").0, 200);
    // A second process with a taken node id waits instead of acting twice.
    let endpoint = c.endpoint.clone();
    let twin = member(&mut c, "a", &endpoint);
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
    let mut c = Cluster::new(&["solo"]);
    c.converge(&["solo"]);
    let mut db = diesel::PgConnection::establish(&c.pg.url).unwrap();
    let node = c.nodes.remove("solo").unwrap();
    db.batch_execute(&format!("INSERT INTO task (action) SELECT 'run' FROM generate_series(1, {ROWS})")).unwrap();
    wait_until(Duration::from_secs(60), "the backlog to be draining", || count(&mut db, "status = 'succeeded'") >= 500);

    node.signal("STOP");
    assert!(
        count(&mut db, "status = 'pending'") > 0,
        "the backlog drained before the pause; nothing was fenced mid-drain"
    );
    let member = "/rota/members/solo";
    wait_until(Duration::from_secs(ttl() + 5), "the paused node's lease to expire", || {
        c.etcd.with_client(async |c| c.get(member, None).await.unwrap().kvs().is_empty())
    });
    node.signal("CONT");
    wait_until(Duration::from_secs(120), "every row to succeed after the re-join", || {
        count(&mut db, "status = 'succeeded'") == ROWS
    });
    let logs = node.logs();
    assert!(logs.contains("fenced: aborted all work"), "the resumed node's dispatcher must have fenced:\n{logs}");
    assert_eq!(count(&mut db, "status <> 'succeeded'"), 0, "{logs}");
}
