//! The load generator: application commands (through the API and as SQL inserts), `run` jobs of
//! every single-node strategy, broadcasts, shards, delayed and idempotent tasks, and noop jobs,
//! at a steady pace on whichever nodes are up, while the fault injector works.
//!
//! It records every task id it was given back (so a row that vanished is noticed) and, per
//! idempotency key, what each submission was answered. A submission that failed (node down,
//! database restarting) is counted and not retried: whether its row exists is then unknown,
//! and the end-of-run checks cover every row in the table anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::{json, Value};

use super::check::Idem;

/// splitmix64: small, seedable, good enough to pick faults and load.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in lo..=hi milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index chosen with the given weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut r = (self.next() % total as u64) as u32;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// What the injector shares with the load: the nodes that answer now.
#[derive(Default)]
pub struct Shared {
    /// (node id, http address) of every node that is up and not paused.
    pub live: Mutex<Vec<(String, String)>>,
    pub stop: AtomicBool,
}

/// What the load did.
#[derive(Debug, Default)]
pub struct LoadLog {
    /// Every task id a submission was answered with.
    pub submitted: Vec<i64>,
    /// (task id, run_after in ns) of delayed tasks.
    pub delayed: Vec<(i64, i64)>,
    pub idem: Vec<Idem>,
    /// Submissions by kind.
    pub counts: std::collections::BTreeMap<&'static str, usize>,
    /// Submissions that failed (node down, database restarting, timeouts).
    pub failed_submissions: usize,
}

pub struct Config {
    pub db_url: String,
    /// The `shell` applications commands are sent to.
    pub apps: Vec<i64>,
    /// The `shell` job handler.
    pub handler: i64,
    pub seed: u64,
}

/// The admin token every node of the suite is configured with: a node in a network namespace
/// listens on a non-loopback address, which Rota refuses without tokens.
pub const TOKEN: &str = "chaos-admin-token-7f3a9c1e5b2d8f4a6c0e9b1d";

/// A request with the admin token and a short timeout (a paused node must not stall the load):
/// (status, JSON).
pub fn request(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into();
    let mut req =
        ureq::http::Request::builder().method(method).uri(url).header("Authorization", format!("Bearer {TOKEN}"));
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let result = match body {
        Some(b) => agent.run(req.body(b.to_string()).unwrap()),
        None => agent.run(req.body(()).unwrap()),
    };
    match result {
        Ok(mut resp) => {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (resp.status().as_u16(), serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// A connection that is re-opened after any error (PostgreSQL restarts under it).
pub struct Db {
    url: String,
    conn: Option<PgConnection>,
}

impl Db {
    pub fn new(url: &str) -> Db {
        Db { url: url.to_string(), conn: None }
    }

    /// Run `f` on the connection; None (and a fresh connection next time) on any error.
    pub fn with<T>(&mut self, f: impl FnOnce(&mut PgConnection) -> QueryResult<T>) -> Option<T> {
        if self.conn.is_none() {
            self.conn = PgConnection::establish(&self.url).ok();
        }
        let conn = self.conn.as_mut()?;
        match f(conn) {
            Ok(v) => Some(v),
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }

    /// Insert rows with `sql` (which must end in `RETURNING id`).
    pub fn ids(&mut self, sql: &str) -> Option<Vec<i64>> {
        self.with(|c| diesel::sql_query(sql).load::<Id>(c)).map(|r| r.into_iter().map(|i| i.id).collect())
    }
}

const ROUTINGS: [&str; 9] = ["hash", "round_robin", "random", "least_busy", "first", "last", "lru", "lfu", "failover"];
const ACTIONS: [&str; 5] = ["start", "stop", "restart", "start", "stop"];

struct Gen {
    cfg: Config,
    shared: Arc<Shared>,
    rng: Rng,
    db: Db,
    log: LoadLog,
    keys: usize,
}

impl Gen {
    fn node(&mut self) -> Option<(String, String)> {
        let live = self.shared.live.lock().unwrap().clone();
        (!live.is_empty()).then(|| self.rng.pick(&live).clone())
    }

    /// How long a job runs: up to half the lease TTL, so a job on a node paused past its
    /// lease has ended before anyone may take it over (docs/reliability.md, "limits").
    fn sleep_param(&mut self) -> String {
        self.rng.pick(&["0.1", "0.3", "0.6", "1.0", "1.5"]).to_string()
    }

    fn accepted(&mut self, kind: &'static str, ids: Option<Vec<i64>>) -> Option<i64> {
        match ids {
            Some(ids) if !ids.is_empty() => {
                *self.log.counts.entry(kind).or_default() += 1;
                self.log.submitted.extend(&ids);
                Some(ids[0])
            }
            _ => {
                self.log.failed_submissions += 1;
                None
            }
        }
    }

    fn api(&mut self, kind: &'static str, path: &str, body: Value) -> Option<i64> {
        let Some((_, addr)) = self.node() else {
            self.log.failed_submissions += 1;
            return None;
        };
        let (status, v) = request("POST", &format!("http://{addr}{path}"), Some(body));
        let id = (status == 202).then(|| v["task_id"].as_i64()).flatten();
        self.accepted(kind, id.map(|i| vec![i]))
    }

    fn step(&mut self) {
        // Weights: app via /apps, app via /tasks, app via SQL, job via API, job via SQL,
        // broadcast, sharding, delayed, idempotent (API), idempotent (SQL), noop jobs (SQL).
        let app = *self.rng.pick(&self.cfg.apps);
        let action = *self.rng.pick(&ACTIONS);
        let handler = self.cfg.handler;
        match self.rng.weighted(&[3, 2, 3, 4, 2, 1, 1, 1, 1, 1, 2]) {
            0 => {
                self.api("app command (API /apps)", &format!("/api/v1/apps/{app}/{action}"), json!({}));
            }
            1 => {
                let body = json!({"action": action, "app_id": app, "max_attempts": 20});
                self.api("app command (API /tasks)", "/api/v1/tasks", body);
            }
            2 => {
                let ids = self.db.ids(&format!(
                    "INSERT INTO task (app_id, action, max_attempts) VALUES ({app}, '{action}', 20) RETURNING id"
                ));
                self.accepted("app command (SQL)", ids);
            }
            3 => {
                let routing = *self.rng.pick(&ROUTINGS);
                let sleep = self.sleep_param();
                let body = json!({"action": "run", "app_id": handler, "routing": routing, "max_attempts": 20, "payload": {"sleep": sleep}});
                self.api("job (API)", "/api/v1/tasks", body);
            }
            4 => {
                let routing = match self.rng.below(3) {
                    0 => "NULL".to_string(),
                    _ => format!("'{}'", self.rng.pick(&ROUTINGS)),
                };
                let sleep = self.sleep_param();
                let ids = self.db.ids(&format!(
                    "INSERT INTO task (app_id, action, payload, routing, max_attempts) \
                     VALUES ({handler}, 'run', '{{\"sleep\": \"{sleep}\"}}', {routing}, 20) RETURNING id"
                ));
                self.accepted("job (SQL)", ids);
            }
            5 => {
                let body = json!({"action": "run", "app_id": handler, "routing": "broadcast", "max_attempts": 20, "payload": {"sleep": "0.2"}});
                self.api("broadcast (API)", "/api/v1/tasks", body);
            }
            6 => {
                let shards = 2 + self.rng.below(5);
                let body = json!({"action": "run", "app_id": handler, "routing": "sharding", "shard_total": shards, "max_attempts": 20, "payload": {"sleep": "0.1"}});
                self.api("sharding (API)", "/api/v1/tasks", body);
            }
            7 => {
                // Whole microseconds: what the column keeps.
                let at_us = (now_ns() + self.rng.millis(1_000, 8_000).as_nanos() as i64) / 1_000;
                let ids = self.db.ids(&format!(
                    "INSERT INTO task (app_id, action, payload, run_after, max_attempts) VALUES ({handler}, 'run', \
                     '{{\"sleep\": \"0.1\"}}', to_timestamp({at_us}::float8 / 1e6) AT TIME ZONE 'UTC', 20) RETURNING id"
                ));
                if let Some(id) = self.accepted("delayed job (SQL)", ids) {
                    self.log.delayed.push((id, at_us * 1_000));
                }
            }
            8 => {
                self.keys += 1;
                let key = format!("chaos-{}-api-{}", self.cfg.seed, self.keys);
                let body = json!({"action": "run", "app_id": handler, "idempotency_key": key, "max_attempts": 20, "payload": {"sleep": "0.1"}});
                let mut record = Idem { key, ..Idem::default() };
                // The same key twice, to two nodes when there are two.
                for _ in 0..2 {
                    let Some((_, addr)) = self.node() else { continue };
                    match request("POST", &format!("http://{addr}/api/v1/tasks"), Some(body.clone())) {
                        (202, v) => {
                            if let Some(id) = v["task_id"].as_i64() {
                                record.accepted.push(id);
                                self.log.submitted.push(id);
                            }
                        }
                        (409, _) => record.refused += 1,
                        _ => self.log.failed_submissions += 1,
                    }
                }
                *self.log.counts.entry("idempotent job (API)").or_default() += 1;
                self.log.idem.push(record);
            }
            9 => {
                self.keys += 1;
                let key = format!("chaos-{}-sql-{}", self.cfg.seed, self.keys);
                let mut record = Idem { key: key.clone(), ..Idem::default() };
                for _ in 0..2 {
                    match self.db.ids(&format!(
                        "INSERT INTO task (app_id, action, payload, idempotency_key, max_attempts) VALUES ({handler}, 'run', \
                         '{{\"sleep\": \"0.1\"}}', '{key}', 20) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
                    )) {
                        Some(ids) if ids.is_empty() => record.refused += 1,
                        Some(ids) => {
                            record.accepted.extend(&ids);
                            self.log.submitted.extend(&ids);
                        }
                        None => self.log.failed_submissions += 1,
                    }
                }
                *self.log.counts.entry("idempotent job (SQL)").or_default() += 1;
                self.log.idem.push(record);
            }
            _ => {
                let n = 1 + self.rng.below(5);
                let ids = self.db.ids(&format!(
                    "INSERT INTO task (action, max_attempts) SELECT 'run', 20 FROM generate_series(1, {n}) RETURNING id"
                ));
                self.accepted("noop jobs (SQL)", ids);
            }
        }
    }
}

/// Generate load until `shared.stop`; returns what was done.
pub fn run(cfg: Config, shared: Arc<Shared>) -> LoadLog {
    let rng = Rng::new(cfg.seed ^ 0x5EED_10AD);
    let db = Db::new(&cfg.db_url);
    let mut g = Gen { cfg, shared, rng, db, log: LoadLog::default(), keys: 0 };
    while !g.shared.stop.load(Ordering::SeqCst) {
        g.step();
        // Load pacing, not waiting for a condition.
        let pause = g.rng.millis(80, 250);
        std::thread::sleep(pause);
    }
    g.log
}
