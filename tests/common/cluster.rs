//! A cluster of real `rota` nodes on one PostgreSQL database and one etcd, for multi-node tests.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use rota::store::{DbUrl, PoolOptions, Store};

use super::{wait_until, Etcd, Node, PgDb};

pub const TTL: &str = "3";
pub const FAST: [(&str, &str); 4] = [
    ("ROTA__DISPATCH__POLL_INTERVAL_MS", "200"),
    ("ROTA__DISPATCH__RECONCILE_INTERVAL_MS", "500"),
    ("ROTA__DISPATCH__RETRY_BASE_MS", "100"),
    ("ROTA__DISPATCH__MONITOR_INTERVAL_MS", "500"),
];

pub struct Cluster {
    pub pg: PgDb,
    pub etcd: Etcd,
    pub endpoint: String,
    pub dirs: Vec<tempfile::TempDir>,
    pub nodes: BTreeMap<String, Node>,
    pub store: Store,
}

impl Cluster {
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

    /// A node with `labels`, and `env` set after (over) the cluster's fast settings.
    pub fn add_with(&mut self, id: &str, labels: &[&str], env: &[(&str, &str)]) {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--database-url",
            &self.pg.url,
            "--membership",
            "etcd",
            "--etcd-endpoints",
            self.etcd_endpoint(),
            "--node-id",
            id,
            "--lease-ttl",
            TTL,
        ];
        for l in labels {
            args.extend(["--label", l]);
        }
        let envs: Vec<(&str, &str)> = FAST.iter().chain(env).copied().collect();
        let node = Node::start(dir.path(), &args, &envs);
        self.dirs.push(dir);
        self.nodes.insert(id.to_string(), node);
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

    /// Wait until every node's view has exactly `ids`.
    pub fn converge(&self, ids: &[&str]) {
        wait_until(Duration::from_secs(30), &format!("views of {ids:?}"), || {
            self.nodes.iter().filter(|(id, _)| ids.contains(&id.as_str())).all(|(_, n)| {
                let (status, body) = n.get("/api/v1/cluster");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let members: Vec<&str> = v["members"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|m| m["node_id"].as_str()).collect())
                    .unwrap_or_default();
                status == 200 && members == ids && v["self"]["status"] == "joined"
            })
        });
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
