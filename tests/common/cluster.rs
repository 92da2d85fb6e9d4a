//! A cluster of real `rota` nodes on one PostgreSQL database and one etcd, for multi-node tests;
//! and the pieces of it the chaos harness (its own PostgreSQL, its own bookkeeping) uses too: the
//! arguments of a node on etcd ([`serve_args`]) and what a converged view is ([`sees`]).

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use rota::store::{DbUrl, PoolOptions, Store};
use serde_json::Value;

use super::{wait_until, Etcd, Node, PgDb, FAST};

/// Lease TTL of the test nodes, in seconds: 3, or `ROTA_TEST_LEASE_TTL` to measure with another
/// (e.g. the default 5).
pub fn ttl() -> u64 {
    std::env::var("ROTA_TEST_LEASE_TTL").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// The `rota serve` arguments of node `id` on `db_url` with etcd membership at `endpoint`,
/// lease TTL [`ttl`], and `labels` (`key=value`).
pub fn serve_args(db_url: &str, endpoint: &str, id: &str, labels: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--database-url",
        db_url,
        "--membership",
        "etcd",
        "--etcd-endpoints",
        endpoint,
        "--node-id",
        id,
        "--lease-ttl",
        &ttl().to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for l in labels {
        args.extend(["--label".to_string(), l.to_string()]);
    }
    args
}

/// The node's `/api/v1/cluster` answer, when it answers 200 with JSON.
pub fn view(node: &Node) -> Option<Value> {
    let (status, body) = node.get("/api/v1/cluster");
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// The member ids of a view, in the order it lists them.
pub fn members(view: &Value) -> Vec<String> {
    view["members"]
        .as_array()
        .map(|a| a.iter().map(|m| m["node_id"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

/// The node is joined and its view has exactly `ids` (in any order).
pub fn sees(node: &Node, ids: &[&str]) -> bool {
    view(node).is_some_and(|v| {
        let (mut got, mut want) = (members(&v), ids.to_vec());
        got.sort();
        want.sort();
        v["self"]["status"] == "joined" && got == want
    })
}

/// Wait until every one of `nodes` is joined with a view of exactly `ids`, all at one epoch;
/// returns that epoch.
pub fn converge(nodes: &[&Node], ids: &[&str], timeout: Duration) -> u64 {
    let mut epoch = 0;
    wait_until(timeout, &format!("all nodes to agree on {ids:?}"), || {
        let views: Vec<Value> = nodes.iter().filter_map(|n| view(n)).collect();
        if views.len() != nodes.len() || !nodes.iter().all(|n| sees(n, ids)) {
            return false;
        }
        let epochs: Vec<u64> = views.iter().map(|v| v["epoch"].as_u64().unwrap_or(0)).collect();
        epoch = epochs[0];
        epochs.iter().all(|e| *e == epoch)
    });
    epoch
}

pub struct Cluster {
    pub pg: PgDb,
    pub etcd: Etcd,
    pub endpoint: String,
    pub dirs: Vec<tempfile::TempDir>,
    pub nodes: BTreeMap<String, Node>,
    pub store: Store,
}

impl Cluster {
    /// A fresh, migrated database, an etcd, and nodes `ids` (not waited for to converge).
    pub fn new(ids: &[&str]) -> Cluster {
        let pg = PgDb::create();
        let store = Store::connect(
            &DbUrl::parse(&pg.url).unwrap(),
            &PoolOptions { max_size: 2, connect_timeout: Duration::from_secs(5) },
        )
        .unwrap();
        store.migrate().unwrap();
        let etcd = Etcd::start();
        let endpoint = etcd.endpoint();
        let mut c = Cluster { pg, etcd, endpoint, dirs: Vec::new(), nodes: BTreeMap::new(), store };
        for id in ids {
            c.add(id);
        }
        c
    }

    pub fn add(&mut self, id: &str) {
        self.add_labelled(id, &[]);
    }

    pub fn add_labelled(&mut self, id: &str, labels: &[&str]) {
        self.add_with(id, labels, &[]);
    }

    /// A node with `labels`, and `env` set after (over) the fast settings.
    pub fn add_with(&mut self, id: &str, labels: &[&str], env: &[(&str, &str)]) {
        let endpoint = self.endpoint.clone();
        let node = self.start_node(id, &endpoint, labels, env);
        self.nodes.insert(id.to_string(), node);
    }

    /// Start node `id` on this cluster's database with etcd at `endpoint` (the cluster's own,
    /// or a proxy to it) and return it without counting it among [`Cluster::nodes`] (a second
    /// process with a taken id, say).
    pub fn start_node(&mut self, id: &str, endpoint: &str, labels: &[&str], env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let args = serve_args(&self.pg.url, endpoint, id, labels);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = FAST.iter().chain(env).copied().collect();
        let node = Node::start(dir.path(), &args, &envs);
        self.dirs.push(dir);
        node
    }

    pub fn etcd_endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    pub fn sql(&self, sql: &str) {
        self.store.conn().unwrap().batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn apps(&self) -> Vec<App> {
        diesel::sql_query("SELECT id, state, desired_state, owner_node FROM application ORDER BY id")
            .load(&mut *self.store.conn().unwrap())
            .unwrap()
    }

    pub fn task(&self, id: i64) -> TaskRow {
        diesel::sql_query(format!("SELECT status, attempts, owner_node, error FROM task WHERE id = {id}"))
            .get_result(&mut *self.store.conn().unwrap())
            .unwrap()
    }

    pub fn pending_or_running(&self) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let n: N = diesel::sql_query("SELECT COUNT(*) AS n FROM task WHERE status IN ('pending', 'running')")
            .get_result(&mut *self.store.conn().unwrap())
            .unwrap();
        n.n
    }

    /// Events whose kind starts with `prefix`, oldest first.
    pub fn events(&self, prefix: &str) -> Vec<EventRow> {
        diesel::sql_query(
            "SELECT kind, app_id, node_id, message, data FROM event WHERE kind LIKE $1 || '%' ORDER BY id",
        )
        .bind::<Text, _>(prefix)
        .load(&mut *self.store.conn().unwrap())
        .unwrap()
    }

    /// Wait (up to 30 s) until the nodes `ids` are joined with a view of exactly `ids`, all at
    /// one epoch.
    pub fn converge(&self, ids: &[&str]) {
        let nodes: Vec<&Node> = ids.iter().map(|id| &self.nodes[*id]).collect();
        converge(&nodes, ids, Duration::from_secs(30));
    }

    /// The nodes `ids`, in that order.
    pub fn these(&self, ids: &[&str]) -> Vec<&Node> {
        ids.iter().map(|id| &self.nodes[*id]).collect()
    }
}

#[derive(Debug, QueryableByName)]
pub struct App {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Text)]
    pub desired_state: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub owner_node: Option<String>,
}

#[derive(Debug, QueryableByName)]
pub struct TaskRow {
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub owner_node: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
}

#[derive(Debug, QueryableByName)]
pub struct EventRow {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub app_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub node_id: Option<String>,
    #[diesel(sql_type = Text)]
    pub message: String,
    #[diesel(sql_type = Text)]
    pub data: String,
}

impl EventRow {
    /// `data` as JSON.
    pub fn data(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// Whether it is of `kind` about node `node`.
    pub fn is(&self, kind: &str, node: &str) -> bool {
        self.kind == kind && self.node_id.as_deref() == Some(node)
    }
}
