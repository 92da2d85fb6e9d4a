//! One `rota serve` node on a fresh database of either backend, with the fast settings, and a
//! store on the same database to write rows by hand and read what the node did.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use rota::store::{DbUrl, PoolOptions, Store};

use super::{wait_until, Node, PgDb, FAST};

/// A node and its database. Fields drop in order: the node is gone before its database is.
pub struct Fixture {
    pub node: Node,
    pub store: Store,
    pub postgres: bool,
    pub pg: Option<PgDb>,
    /// The node's data directory (and the SQLite file, the config file).
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A ready node on PostgreSQL (`postgres`) or SQLite, with [`FAST`] and then `env` in its
    /// environment, `config` (when not empty) as its config file, and `args` after the others.
    pub fn start(postgres: bool, config: &str, args: &[&str], env: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pg = postgres.then(PgDb::create);
        let url = match &pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}", dir.path().join("rota.db").display()),
        };
        let cfg = dir.path().join("rota.toml");
        let mut all = vec!["--database-url", url.as_str()];
        if !config.is_empty() {
            std::fs::write(&cfg, config).unwrap();
            all.extend(["--config", cfg.to_str().unwrap()]);
        }
        all.extend_from_slice(args);
        let envs: Vec<(&str, &str)> = FAST.iter().chain(env).copied().collect();
        let node = Node::start(dir.path(), &all, &envs);
        wait_until(Duration::from_secs(15), "ready", || node.get("/readyz").0 == 200);
        let store = Store::connect(
            &DbUrl::parse(&url).unwrap(),
            &PoolOptions { max_size: 2, connect_timeout: Duration::from_secs(5) },
        )
        .unwrap();
        Fixture { node, store, postgres, pg, dir }
    }

    /// Run statements (several, `;`-separated), panicking with the SQL on an error.
    pub fn sql(&self, sql: &str) {
        self.store.conn().unwrap().batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The one `bigint` column `n` of the first row of `sql`.
    pub fn scalar(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let n: N = diesel::sql_query(sql)
            .get_result(&mut *self.store.conn().unwrap())
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        n.n
    }
}
