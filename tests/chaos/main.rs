//! The chaos suite: N real `rota serve` nodes, each in a network namespace of its own, on a
//! private PostgreSQL and a private etcd, a load generator, and a fault injector choosing at
//! random among SIGKILL + restart, SIGSTOP past the lease TTL + SIGCONT, graceful restart,
//! drain/undrain, an etcd restart, a PostgreSQL restart (fast or immediate), adding and removing
//! a node, network partitions of one node (cut from etcd, from PostgreSQL, from both, one
//! way only, or slowed), and a node of a second deployment (another database) joining the same
//! etcd under the same cluster name. Afterwards it quiesces and checks the invariants of
//! docs/design.md#invariants against what really ran (docs/reliability.md), including every
//! 100 ms sample of the live processes of the `process` applications.
//!
//! Why: each invariant has a focused test elsewhere; this suite looks for the interleavings
//! nobody wrote a test for. Everything it checks comes from outside the code under test — a
//! witness written by the commands themselves, the rows, and a trigger-written audit of every
//! row update tagged with the writing node — so a bug cannot hide by also misreporting.
//!
//! Must never: touch the machine's shared PostgreSQL or etcd (it restarts its own, started on
//! free loopback ports with temporary data directories); wait for a condition with a fixed sleep
//! (sleeps between faults are load pacing; a SIGSTOP lasts TTL + 1.5 s by definition).
//!
//! Settings (environment, so `cargo test` runs the default): `ROTA_CHAOS_DURATION` (seconds of
//! faults, default 120), `ROTA_CHAOS_NODES` (default 4), `ROTA_CHAOS_SEED` (default random,
//! printed: the same seed replays the same choices, though not the same timing),
//! `ROTA_CHAOS_REPORT` (also write the JSON report there), `ROTA_CHAOS_FAULTS` (only these faults,
//! comma-separated; default all). `scripts/chaos.sh` sets them. Without
//! root, `ip` or `nft` the nodes run on loopback and the partition faults are left out, with a
//! notice; under `CI=true` that fails the test instead.

#[path = "../common/mod.rs"]
mod common;

mod check;
mod load;
mod net;
mod pg;
mod procs;
mod witness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use serde_json::{json, Value};

use check::{Audit, Event, Fault, Life, Task, Violation};
use common::{cluster, Etcd, Node};
use load::{now_ns, request, Db, Rng, Shared};
use net::{Dir, Impair, Net, Ports};
use pg::{PrivatePg, StopMode};

/// Over the shared fast settings: status checks of the load's many applications once a second
/// instead of every 300 ms, so that they do not crowd out the load itself.
const MONITOR: (&str, &str) = ("ROTA__DISPATCH__MONITOR_INTERVAL_MS", "1000");
/// Managed `shell` applications the load starts and stops.
const APPS: usize = 10;
/// Long-lived `process` applications (a `sleep` each; every other one under a `/bin/sh -c
/// "sleep … & wait"` wrapper, so the worker is a grandchild), counted by the process sampler.
const PROC_APPS: usize = 4;
/// How long a fault may take to recover before it counts as not recovered.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// How long the quiesce may take before the run counts as not converged.
const QUIESCE_BOUND: Duration = Duration::from_secs(60);
const DB: &str = "rota";
/// The database of the second deployment the `foreign` fault starts on the same etcd.
const FOREIGN_DB: &str = "rota_foreign";

struct Settings {
    duration: Duration,
    nodes: usize,
    seed: u64,
    /// Only these faults (`ROTA_CHAOS_FAULTS`, comma-separated); empty: every fault.
    only: Vec<String>,
}

/// Every fault the injector knows, in the order of its weights.
const FAULTS: [&str; 14] = [
    "kill",
    "stop",
    "graceful_restart",
    "drain",
    "etcd_restart",
    "pg_restart",
    "add_node",
    "remove_node",
    "cut_etcd",
    "cut_pg",
    "cut_both",
    "one_way",
    "slow",
    "foreign",
];

fn settings() -> Settings {
    let num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let seed = std::env::var("ROTA_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_ns() as u64 % 1_000_000_007);
    let only: Vec<String> = std::env::var("ROTA_CHAOS_FAULTS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    for f in &only {
        assert!(FAULTS.contains(&f.as_str()), "ROTA_CHAOS_FAULTS: unknown fault `{f}` (known: {})", FAULTS.join(", "));
    }
    Settings {
        duration: Duration::from_secs(num("ROTA_CHAOS_DURATION", 120)),
        nodes: num("ROTA_CHAOS_NODES", 4).max(1) as usize,
        seed,
        only,
    }
}

/// The audit of every update of `task` and `application`, with the writer's application_name
/// (each node connects with its node id; see `PrivatePg::url`).
const AUDIT_SQL: &str = r#"
CREATE TABLE chaos_audit (
    id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), writer TEXT NOT NULL,
    tbl TEXT NOT NULL, row_id BIGINT NOT NULL, old_status TEXT, new_status TEXT, old_owner TEXT,
    old_epoch BIGINT, new_owner TEXT, new_epoch BIGINT, new_error TEXT);
CREATE FUNCTION chaos_audit_task() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO chaos_audit (writer, tbl, row_id, old_status, new_status, old_owner, old_epoch, new_owner, new_epoch, new_error)
    VALUES (current_setting('application_name'), 'task', NEW.id, OLD.status, NEW.status, OLD.owner_node, OLD.owner_epoch,
            NEW.owner_node, NEW.owner_epoch, NEW.error);
    RETURN NULL; END $$;
CREATE FUNCTION chaos_audit_app() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO chaos_audit (writer, tbl, row_id, old_status, new_status, old_owner, old_epoch, new_owner, new_epoch, new_error)
    VALUES (current_setting('application_name'), 'application', NEW.id, OLD.state, NEW.state, OLD.owner_node, OLD.owner_epoch,
            NEW.owner_node, NEW.owner_epoch, NEW.last_error);
    RETURN NULL; END $$;
CREATE TRIGGER chaos_audit_task AFTER UPDATE ON task FOR EACH ROW EXECUTE FUNCTION chaos_audit_task();
CREATE TRIGGER chaos_audit_app AFTER UPDATE ON application FOR EACH ROW EXECUTE FUNCTION chaos_audit_app();
"#;

struct Harness {
    settings: Settings,
    pg: PrivatePg,
    etcd: Etcd,
    /// Witness file, `state/`, `witness.sh`.
    dir: tempfile::TempDir,
    nodes: BTreeMap<String, Node>,
    node_dirs: BTreeMap<String, tempfile::TempDir>,
    /// Processes that are gone, kept for their logs.
    retired: Vec<(String, Node)>,
    /// The node of another deployment, while a `foreign` fault runs.
    foreign: Option<Node>,
    next_foreign: usize,
    lives: Vec<Life>,
    faults: Vec<Fault>,
    next_node: usize,
    drained: Option<String>,
    shared: Arc<Shared>,
    rng: Rng,
    db: Db,
    apps: Vec<i64>,
    handler: i64,
    /// Probe tasks (recovery measurement); they are checked like every other task.
    probes: Vec<i64>,
    /// The `process` applications: (id, name).
    proc_apps: Vec<(i64, String)>,
    /// Marks this run's processes (procs::MARK), and kills what is left of them on Drop.
    reaper: procs::Reaper,
    /// The nodes' network namespaces; last, so that it is dropped after the nodes.
    net: Option<Net>,
}

impl Harness {
    fn new(settings: Settings) -> Harness {
        let net = match Net::new() {
            Ok(net) => Some(net),
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("chaos: no network namespaces ({why}); CI runs the partition faults")
            }
            Err(why) => {
                eprintln!("chaos: NOTICE: no network namespaces ({why}): nodes on loopback, no partition faults");
                None
            }
        };
        let host = net.as_ref().map(|n| n.host.clone());
        let pg = PrivatePg::start(host.as_deref());
        let mut admin = PgConnection::establish(&pg.url("postgres", "chaos-harness")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {DB}")).unwrap();
        let url = pg.url(DB, "chaos-harness");
        let store = rota::store::Store::connect(
            &rota::store::DbUrl::parse(&url).unwrap(),
            &rota::store::PoolOptions { max_size: 1, connect_timeout: Duration::from_secs(5) },
        )
        .unwrap();
        store.migrate().unwrap();
        drop(store);
        PgConnection::establish(&url).unwrap().batch_execute(AUDIT_SQL).unwrap();
        let etcd = Etcd::start_also_on(host.as_deref());
        let dir = tempfile::Builder::new().prefix("rota-chaos").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("witness.sh"), witness::SCRIPT).unwrap();
        std::fs::write(dir.path().join("witness"), "").unwrap();
        let rng = Rng::new(settings.seed);
        let mut h = Harness {
            settings,
            pg,
            etcd,
            dir,
            nodes: BTreeMap::new(),
            node_dirs: BTreeMap::new(),
            retired: Vec::new(),
            foreign: None,
            next_foreign: 1,
            lives: Vec::new(),
            faults: Vec::new(),
            next_node: 1,
            drained: None,
            shared: Arc::default(),
            rng,
            db: Db::new(&url),
            apps: Vec::new(),
            handler: 0,
            probes: Vec::new(),
            proc_apps: Vec::new(),
            reaper: procs::Reaper(format!("rota-chaos-{}", std::process::id())),
            net,
        };
        for _ in 0..h.settings.nodes {
            let id = format!("n{}", h.next_node);
            h.next_node += 1;
            h.start_node(&id);
        }
        h
    }

    fn start_node(&mut self, id: &str) {
        let dir = self.node_dirs.entry(id.to_string()).or_insert_with(|| tempfile::tempdir().unwrap());
        // In its namespace a node reaches the servers only through the bridge's address.
        let (netns, listen, server) = match self.net.as_mut() {
            Some(net) => {
                let n = net.node(id);
                (Some(n.ns), n.ip, net.host.clone())
            }
            None => (None, "127.0.0.1".to_string(), "127.0.0.1".to_string()),
        };
        let etcd = format!("{server}:{}", self.etcd.client_port);
        let config = dir.path().join("chaos.toml");
        let tokens =
            format!("[api]\ntokens = [{{ name = \"chaos\", token = \"{}\", scope = \"admin\" }}]\n", load::TOKEN);
        std::fs::write(&config, tokens).unwrap();
        let mut args = cluster::serve_args(&self.pg.url_at(&server, DB, id), &etcd, id, &[]);
        args.extend(["--config".to_string(), config.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = common::FAST.iter().copied().chain([MONITOR]).collect();
        let node = Node::start_in(netns.as_deref(), &listen, dir.path(), &args, &env);
        self.lives.push(Life { node: id.to_string(), start: now_ns(), end: None });
        self.nodes.insert(id.to_string(), node);
        self.publish_live(None);
    }

    /// Start a node of another deployment: its own database (created on first use), this
    /// cluster's etcd and cluster name, outside the namespaces (it only needs to reach etcd).
    fn start_foreign(&mut self) -> String {
        let id = format!("x{}", self.next_foreign);
        self.next_foreign += 1;
        let server = self.net.as_ref().map_or_else(|| "127.0.0.1".to_string(), |n| n.host.clone());
        if self.next_foreign == 2 {
            let mut admin = PgConnection::establish(&self.pg.url("postgres", "chaos-harness")).unwrap();
            admin.batch_execute(&format!("CREATE DATABASE {FOREIGN_DB}")).unwrap();
        }
        let dir = self.node_dirs.entry(id.clone()).or_insert_with(|| tempfile::tempdir().unwrap());
        let etcd = format!("{server}:{}", self.etcd.client_port);
        let args = cluster::serve_args(&self.pg.url_at(&server, FOREIGN_DB, &id), &etcd, &id, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = common::FAST.iter().copied().chain([MONITOR]).collect();
        self.foreign = Some(Node::start_in(None, "127.0.0.1", dir.path(), &args, &env));
        id
    }

    /// Tell the load which nodes answer (all but `paused`).
    fn publish_live(&self, paused: Option<&str>) {
        let live = self
            .nodes
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != paused)
            .map(|(id, n)| (id.clone(), n.addr.clone()))
            .collect();
        *self.shared.live.lock().unwrap() = live;
    }

    fn end_life(&mut self, id: &str) {
        let now = now_ns();
        if let Some(l) = self.lives.iter_mut().rev().find(|l| l.node == id && l.end.is_none()) {
            l.end = Some(now);
        }
    }

    /// SIGKILL `id` and wait until the process is gone.
    fn kill_node(&mut self, id: &str) {
        let mut node = self.nodes.remove(id).unwrap();
        self.publish_live(None);
        signal(&node, libc::SIGKILL);
        node.try_wait_exit(Duration::from_secs(10));
        self.end_life(id);
        self.retired.push((id.to_string(), node));
    }

    /// SIGTERM `id` and wait for it to exit (SIGKILL after 30 s, reported in the figures).
    fn stop_node(&mut self, id: &str) -> bool {
        let mut node = self.nodes.remove(id).unwrap();
        self.publish_live(None);
        signal(&node, libc::SIGTERM);
        let clean = node.try_wait_exit(Duration::from_secs(30)).is_some();
        if !clean {
            eprintln!("chaos: node {id} did not exit within 30 s of SIGTERM; killing it");
            signal(&node, libc::SIGKILL);
            node.try_wait_exit(Duration::from_secs(10));
        }
        self.end_life(id);
        self.retired.push((id.to_string(), node));
        clean
    }

    /// The etcd revision now: no node can know a higher epoch.
    fn etcd_revision(&self) -> i64 {
        self.etcd.with_client(async |c| {
            c.get("/", None).await.ok().and_then(|r| r.header().map(|h| h.revision())).unwrap_or(i64::MAX)
        })
    }

    fn create_apps(&mut self) {
        let node = self.nodes.values().next().unwrap();
        let dir = self.dir.path().display().to_string();
        let line = |op: &str| format!("/bin/sh {dir}/witness.sh {op}");
        let spec = json!({"start": line("start"), "stop": line("stop"), "status": line("status"), "run": line("run"),
                          "env": {"CHAOS_DIR": dir}, "timeout_ms": 10000});
        for i in 0..APPS {
            let (s, v) = request(
                "POST",
                &node.url("/api/v1/apps"),
                Some(json!({"name": format!("app-{i}"), "driver": "shell", "spec": spec, "monitor_interval_ms": 1000})),
            );
            assert_eq!(s, 201, "{v}");
            self.apps.push(v["id"].as_i64().unwrap());
        }
        let (s, v) = request(
            "POST",
            &node.url("/api/v1/apps"),
            Some(json!({"name": "jobs", "driver": "shell", "spec": spec, "monitor_interval_ms": 60000})),
        );
        assert_eq!(s, 201, "{v}");
        self.handler = v["id"].as_i64().unwrap();
        for i in 0..PROC_APPS {
            let (name, command) = if i % 2 == 0 {
                (format!("proc-{i}"), json!(["/bin/sleep", "100000"]))
            } else {
                (format!("wrapper-{i}"), json!(["/bin/sh", "-c", "sleep 100000 & wait"]))
            };
            let mark = format!("{}:{name}", self.reaper.0);
            let spec = json!({"command": command, "env": {procs::MARK: mark}, "stop_grace_ms": 2000});
            let (s, v) = request(
                "POST",
                &node.url("/api/v1/apps"),
                Some(json!({"name": name, "driver": "process", "spec": spec, "monitor_interval_ms": 1000})),
            );
            assert_eq!(s, 201, "{v}");
            let id = v["id"].as_i64().unwrap();
            let (s, v) = request("POST", &node.url(&format!("/api/v1/apps/{id}/start")), Some(json!({})));
            assert_eq!(s, 202, "{v}");
            self.proc_apps.push((id, name));
        }
    }

    /// Insert probe jobs (retrying while PostgreSQL is away, up to `deadline`); None when none
    /// could be inserted by then. (An empty list would make the recovery wait for no job at
    /// all and measure a database that never came back as recovered.)
    fn probe(&mut self, deadline: Instant) -> Option<Vec<i64>> {
        while Instant::now() < deadline {
            let n = 2 * self.nodes.len().max(1);
            if let Some(ids) = self.db.ids(&format!(
                "INSERT INTO task (action, max_attempts) SELECT 'run', 20 FROM generate_series(1, {n}) RETURNING id"
            )) {
                assert!(!ids.is_empty(), "an insert of {n} probe jobs returned no id");
                self.probes.extend(&ids);
                return Some(ids);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Every node answers, is joined, sees exactly the intended members, and is ready.
    fn membership_converged(&self) -> bool {
        let want: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
        self.nodes.values().all(|n| sees(n, &want) && request("GET", &n.url("/readyz"), None).0 == 200)
    }

    fn all_succeeded(&mut self, ids: &[i64]) -> bool {
        if ids.is_empty() {
            return true;
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        self.db
            .ids(&format!("SELECT id FROM task WHERE id IN ({list}) AND status = 'succeeded'"))
            .is_some_and(|ok| ok.len() == ids.len())
    }

    fn drained_ok(&self) -> bool {
        let Some(id) = &self.drained else { return true };
        let Some(n) = self.nodes.get(id) else { return true };
        request("GET", &n.url(&format!("/api/v1/nodes/{id}")), None).1["drained"] == true
    }

    /// Poll until the cluster is back in its intended shape and `probes` succeeded.
    fn wait_recovered(&mut self, probes: &[i64], deadline: Instant) -> Option<i64> {
        while Instant::now() < deadline {
            if self.membership_converged() && self.drained_ok() && self.all_succeeded(probes) {
                return Some(now_ns());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn pick_node(&mut self) -> String {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        self.rng.pick(&ids).clone()
    }

    /// Inject one fault chosen at random, undo it, and measure the recovery.
    fn fault(&mut self) {
        let n = self.settings.nodes;
        let count = self.nodes.len();
        let kinds = FAULTS;
        let mut weights = [3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        if self.net.is_none() {
            weights[8..13].fill(0);
        }
        if count > n {
            weights[6] = 0;
        }
        if count <= n.saturating_sub(1).max(1) {
            weights[7] = 0;
        }
        if count < 2 {
            weights[3] = 0;
        }
        if !self.settings.only.is_empty() {
            for (w, k) in weights.iter_mut().zip(kinds) {
                if !self.settings.only.iter().any(|o| o == k) {
                    *w = 0;
                }
            }
        }
        if weights.iter().all(|&w| w == 0) {
            return; // none of the chosen faults applies now (e.g. no namespaces): load only
        }
        let kind = kinds[self.rng.weighted(&weights)];
        let at = now_ns();
        let t0 = Instant::now();
        let mut node = None;
        let mut stale = None;
        let mut note = String::new();
        match kind {
            "kill" => {
                let id = self.pick_node();
                self.kill_node(&id);
                let epoch = self.etcd_revision();
                // Restart at once (its old lease is still in etcd) or after the lease expired.
                if self.rng.below(2) == 0 {
                    note = format!("restarted after {} s", cluster::ttl() + 1);
                    std::thread::sleep(Duration::from_secs(cluster::ttl() + 1));
                } else {
                    note = "restarted at once".into();
                }
                if self.drained.as_deref() == Some(id.as_str()) {
                    self.drained = None; // a restarted node comes back with its configured weight
                }
                self.start_node(&id);
                stale = Some((epoch, now_ns()));
                node = Some(id);
            }
            "stop" => {
                let id = self.pick_node();
                self.publish_live(Some(&id));
                signal(&self.nodes[&id], libc::SIGSTOP);
                let epoch = self.etcd_revision();
                std::thread::sleep(Duration::from_millis(cluster::ttl() * 1000 + 1500));
                signal(&self.nodes[&id], libc::SIGCONT);
                self.publish_live(None);
                stale = Some((epoch, now_ns()));
                node = Some(id);
            }
            "graceful_restart" | "remove_node" => {
                let id = self.pick_node();
                let clean = self.stop_node(&id);
                if !clean {
                    note = "did not exit within 30 s of SIGTERM (killed)".into();
                }
                let epoch = self.etcd_revision();
                if self.drained.as_deref() == Some(id.as_str()) {
                    self.drained = None;
                }
                if kind == "graceful_restart" {
                    self.start_node(&id);
                    stale = Some((epoch, now_ns()));
                }
                node = Some(id);
            }
            "drain" => {
                if let Some(id) = self.drained.take() {
                    let (s, v) = request("DELETE", &self.nodes[&id].url(&format!("/api/v1/nodes/{id}/drain")), None);
                    note = format!("undrain: {s} {v}");
                    node = Some(id);
                } else {
                    let id = self.pick_node();
                    let (s, v) = request("POST", &self.nodes[&id].url(&format!("/api/v1/nodes/{id}/drain")), None);
                    note = format!("drain: {s}");
                    if s == 202 {
                        self.drained = Some(id.clone());
                    } else {
                        note = format!("drain: {s} {v}");
                    }
                    node = Some(id);
                }
            }
            "etcd_restart" => {
                self.etcd.stop();
                let down = self.rng.millis(0, 2000);
                note = format!("down {} ms", down.as_millis());
                std::thread::sleep(down);
                self.etcd.resume();
            }
            "pg_restart" => {
                let mode = if self.rng.below(2) == 0 { StopMode::Fast } else { StopMode::Immediate };
                self.pg.stop(mode);
                let down = self.rng.millis(0, 2000);
                note = format!("{mode:?}, down {} ms", down.as_millis());
                std::thread::sleep(down);
                self.pg.start_again();
            }
            "add_node" => {
                let id = format!("n{}", self.next_node);
                self.next_node += 1;
                self.start_node(&id);
                node = Some(id);
            }
            "cut_etcd" | "cut_pg" | "cut_both" | "one_way" | "slow" => {
                let id = self.pick_node();
                let imp = match kind {
                    "cut_etcd" => Impair::Cut { etcd: true, pg: false, dir: Dir::Both },
                    "cut_pg" => Impair::Cut { etcd: false, pg: true, dir: Dir::Both },
                    "cut_both" => Impair::Cut { etcd: true, pg: true, dir: Dir::Both },
                    "one_way" => {
                        let dir = if self.rng.below(2) == 0 { Dir::Out } else { Dir::In };
                        let (etcd, pg) = *self.rng.pick(&[(true, false), (false, true), (true, true)]);
                        Impair::Cut { etcd, pg, dir }
                    }
                    _ => Impair::Slow {
                        delay_ms: self.rng.millis(50, 400).as_millis() as u32,
                        rate_kbit: *self.rng.pick(&[64, 128, 256]),
                        loss_pct: self.rng.millis(2, 20).as_millis() as u32,
                    },
                };
                // Healed after 1 s to twice the TTL + 2 s: shorter and longer than the lease.
                let hold = self.rng.millis(1000, (2 * cluster::ttl() + 2) * 1000);
                let ports = Ports { etcd: self.etcd.client_port, pg: self.pg.port };
                let net = self.net.as_mut().expect("partition faults only with namespaces");
                let how = net.impair(&id, ports, &imp);
                let epoch = self.etcd_revision();
                std::thread::sleep(hold); // the fault's length, chosen above
                self.net.as_mut().expect("namespaces").heal(&id);
                let how = if how.is_empty() { String::new() } else { format!(" ({how})") };
                note = format!("{imp:?}{how} for {} ms", hold.as_millis());
                // Cut both ways from etcd for longer than the TTL (+ 1.5 s for etcd to expire it),
                // its lease is gone: its session ended, and it may act again only under a new one.
                let from_etcd = matches!(imp, Impair::Cut { etcd: true, dir: Dir::Both, .. });
                if from_etcd && hold > Duration::from_millis(cluster::ttl() * 1000 + 1500) {
                    stale = Some((epoch, now_ns()));
                }
                node = Some(id);
            }
            "foreign" => {
                // A second deployment — its own database — started on this cluster's etcd under
                // the same cluster name: the nodes must ignore it (docs/design.md, "Cluster
                // identity"). Were anything placed on it, it would never run there, and the probe
                // jobs below would not recover.
                let id = self.start_foreign();
                let hold = self.rng.millis(1000, (2 * cluster::ttl() + 2) * 1000);
                std::thread::sleep(hold); // the fault's length, chosen above
                let mut foreign = self.foreign.take().expect("the foreign node was started");
                signal(&foreign, libc::SIGKILL);
                foreign.try_wait_exit(Duration::from_secs(10));
                self.retired.push((id.clone(), foreign));
                note = format!("a node of another database for {} ms", hold.as_millis());
                node = Some(id);
            }
            _ => unreachable!(),
        }
        let done = now_ns();
        let recovered = match self.probe(t0 + RECOVERY_BOUND) {
            Some(probes) => self.wait_recovered(&probes, t0 + RECOVERY_BOUND),
            None => {
                let sep = if note.is_empty() { "" } else { "; " };
                note = format!("{note}{sep}no probe job could be inserted within the recovery bound");
                None
            }
        };
        let took =
            recovered.map(|r| format!("{:.2} s", (r - at) as f64 / 1e9)).unwrap_or_else(|| "NOT RECOVERED".into());
        eprintln!(
            "chaos: fault {} {kind} {} {note} -> recovered in {took}",
            self.faults.len() + 1,
            node.as_deref().unwrap_or("-")
        );
        self.faults.push(Fault { kind, node, at, done, recovered, stale });
    }
}

/// The node is joined and its view has exactly `ids` (`cluster::sees`, with the token).
fn sees(node: &Node, ids: &[&str]) -> bool {
    let (status, v) = request("GET", &node.url("/api/v1/cluster"), None);
    let (mut got, mut want) = (cluster::members(&v), ids.to_vec());
    got.sort();
    want.sort();
    status == 200 && v["self"]["status"] == "joined" && got == want
}

/// Signal a node directly (not through a `kill` process: under load that can take 100 ms and
/// blur the moment a fault happened).
fn signal(node: &Node, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
    let rc = unsafe { libc::kill(node.pid() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig}): {}", node.pid(), std::io::Error::last_os_error());
}

/// Rows at the end of the run.
#[derive(QueryableByName)]
struct TaskSql {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    app_id: Option<i64>,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    routing: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    parent_id: Option<i64>,
    #[diesel(sql_type = Nullable<Integer>)]
    shard_index: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    shard_total: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    target_node: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    owner_node: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    owner_epoch: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    result: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    idempotency_key: Option<String>,
    #[diesel(sql_type = Double)]
    created: f64,
    #[diesel(sql_type = Nullable<Double>)]
    finished: Option<f64>,
}

#[derive(QueryableByName)]
struct AuditSql {
    #[diesel(sql_type = Double)]
    at: f64,
    #[diesel(sql_type = Text)]
    writer: String,
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = BigInt)]
    row_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    old_status: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    new_status: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    old_owner: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    old_epoch: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    new_owner: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    new_epoch: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    new_error: Option<String>,
}

#[derive(QueryableByName)]
struct EventSql {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Double)]
    at: f64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    app_id: i64,
    #[diesel(sql_type = Text)]
    node_id: String,
}

#[derive(QueryableByName, Debug)]
struct AppSql {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    desired_state: String,
    #[diesel(sql_type = Nullable<Text>)]
    owner_node: Option<String>,
}

fn ns(secs: f64) -> i64 {
    (secs * 1e9) as i64
}

fn load_tasks(db: &mut Db) -> Vec<Task> {
    let rows: Vec<TaskSql> = db
        .with(|c| {
            diesel::sql_query(
                "SELECT id, app_id, action, status, routing, parent_id, shard_index, shard_total, target_node, owner_node, \
                 owner_epoch, result, error, idempotency_key, EXTRACT(EPOCH FROM created_at)::float8 AS created, \
                 EXTRACT(EPOCH FROM finished_at)::float8 AS finished FROM task ORDER BY id",
            )
            .load(c)
        })
        .expect("reading the task table");
    rows.into_iter()
        .map(|r| Task {
            id: r.id,
            app_id: r.app_id,
            action: r.action,
            status: r.status,
            routing: r.routing,
            parent_id: r.parent_id,
            shard_index: r.shard_index,
            shard_total: r.shard_total,
            target_node: r.target_node,
            owner_node: r.owner_node,
            owner_epoch: r.owner_epoch,
            result: r.result,
            error: r.error,
            idempotency_key: r.idempotency_key,
            created: ns(r.created),
            finished: r.finished.map(ns),
        })
        .collect()
}

fn load_audit(db: &mut Db) -> Vec<Audit> {
    let rows: Vec<AuditSql> = db
        .with(|c| {
            diesel::sql_query(
                "SELECT EXTRACT(EPOCH FROM at)::float8 AS at, writer, tbl, row_id, old_status, new_status, old_owner, old_epoch, \
                 new_owner, new_epoch, new_error FROM chaos_audit ORDER BY id",
            )
            .load(c)
        })
        .expect("reading the audit");
    rows.into_iter()
        .map(|r| Audit {
            at: ns(r.at),
            writer: r.writer,
            table: r.tbl,
            row_id: r.row_id,
            old_status: r.old_status,
            new_status: r.new_status,
            old_owner: r.old_owner,
            old_epoch: r.old_epoch,
            new_owner: r.new_owner,
            new_epoch: r.new_epoch,
            new_error: r.new_error,
        })
        .collect()
}

fn load_events(db: &mut Db) -> Vec<Event> {
    let rows: Vec<EventSql> = db
        .with(|c| {
            diesel::sql_query(
                "SELECT id, EXTRACT(EPOCH FROM at)::float8 AS at, kind, app_id, node_id FROM event \
                 WHERE kind IN ('app.acquired', 'app.released') AND app_id IS NOT NULL AND node_id IS NOT NULL ORDER BY id",
            )
            .load(c)
        })
        .expect("reading events");
    rows.into_iter()
        .map(|r| Event { id: r.id, at: ns(r.at), kind: r.kind, app_id: r.app_id, node: r.node_id })
        .collect()
}

fn load_apps(db: &mut Db) -> Option<Vec<AppSql>> {
    db.with(|c| diesel::sql_query("SELECT id, state, desired_state, owner_node FROM application ORDER BY id").load(c))
}

fn count_active(db: &mut Db) -> Option<usize> {
    db.ids("SELECT id FROM task WHERE status IN ('pending', 'running')").map(|v| v.len())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Run the whole thing; returns (report, violations).
fn run(settings: Settings) -> (Value, Vec<Violation>) {
    let seed = settings.seed;
    let duration = settings.duration;
    eprintln!(
        "chaos: seed {seed}, {} nodes, {} s of faults (replay: ROTA_CHAOS_SEED={seed})",
        settings.nodes,
        duration.as_secs()
    );
    let mut h = Harness::new(settings);
    let ids: Vec<String> = h.nodes.keys().cloned().collect();
    common::wait_until(Duration::from_secs(60), "the first members to converge", || h.membership_converged());
    h.create_apps();
    eprintln!(
        "chaos: {} nodes up ({ids:?}); PostgreSQL on port {}, etcd at {}",
        ids.len(),
        h.pg.port,
        h.etcd.endpoint()
    );

    let watcher = witness::Watcher::start(h.dir.path().join("witness"));
    let sampler = procs::Sampler::start(h.reaper.0.clone());

    // Load: commands to the shell and the process applications alike.
    let all_apps: Vec<i64> = h.apps.iter().copied().chain(h.proc_apps.iter().map(|p| p.0)).collect();
    let cfg = load::Config { db_url: h.pg.url(DB, "chaos-load"), apps: all_apps.clone(), handler: h.handler, seed };
    let shared = h.shared.clone();
    let loader = std::thread::spawn(move || load::run(cfg, shared));

    // Faults, until the duration is used (a fault in progress completes).
    let started = Instant::now();
    while started.elapsed() + Duration::from_secs(5) < duration {
        h.fault();
        let pause = h.rng.millis(500, 3000);
        if started.elapsed() + pause < duration {
            std::thread::sleep(pause); // pacing between faults
        }
    }
    let fault_phase = started.elapsed();

    // Quiesce: stop the load, undo a drain, let every task finish, then one last command per
    // application, and wait for observed = desired everywhere.
    h.shared.stop.store(true, Ordering::SeqCst);
    let log = loader.join().expect("load thread");
    let q0 = Instant::now();
    let deadline = q0 + QUIESCE_BOUND;
    if let Some(id) = h.drained.take() {
        let _ = request("DELETE", &h.nodes[&id].url(&format!("/api/v1/nodes/{id}/drain")), None);
    }
    let mut unconverged = Vec::new();
    while Instant::now() < deadline && count_active(&mut h.db) != Some(0) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut finals: Vec<(i64, i64, &str)> = Vec::new(); // (app, task, desired)
    for app in all_apps.clone() {
        let target = if h.rng.below(2) == 0 { "running" } else { "stopped" };
        let action = if target == "running" { "start" } else { "stop" };
        while Instant::now() < deadline {
            let addrs: Vec<String> = h.nodes.values().map(|n| n.addr.clone()).collect();
            let addr = h.rng.pick(&addrs).clone();
            let (s, v) = request(
                "POST",
                &format!("http://{addr}/api/v1/tasks"),
                Some(json!({"action": action, "app_id": app, "max_attempts": 20})),
            );
            if let (202, Some(id)) = (s, v["task_id"].as_i64()) {
                finals.push((app, id, target));
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let final_ids: Vec<i64> = finals.iter().map(|f| f.1).collect();
    let state_dir = h.dir.path().join("state");
    let file_state = |app: i64| {
        std::fs::read_to_string(state_dir.join(app.to_string()))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "stopped".into())
    };
    let names: BTreeMap<i64, String> = h.proc_apps.iter().cloned().collect();
    // The outside system of a process application: how many workers the sampler sees.
    let workers = |census: &procs::Census, app: i64| {
        let n = names.get(&app).and_then(|name| census.get(name)).map_or(0, Vec::len);
        match n {
            0 => "stopped".to_string(),
            1 => "running".to_string(),
            n => format!("{n} processes"),
        }
    };
    let mut converged = false;
    while Instant::now() < deadline {
        let apps = load_apps(&mut h.db).unwrap_or_default();
        let by_id: BTreeMap<i64, &AppSql> = apps.iter().map(|a| (a.id, a)).collect();
        let census = sampler.latest();
        unconverged = finals
            .iter()
            .filter_map(|(app, task, want)| {
                let a = by_id.get(app)?;
                let f = if names.contains_key(app) { workers(&census, *app) } else { file_state(*app) };
                let ok = a.desired_state == *want && a.state == *want;
                (!(ok && f == *want)).then(|| format!("application {app}: final task {task} wants {want}; desired {}, observed {}, outside system {f}, owner {:?}", a.desired_state, a.state, a.owner_node))
            })
            .collect();
        if finals.len() == all_apps.len()
            && unconverged.is_empty()
            && !apps.is_empty()
            && h.all_succeeded(&final_ids)
            && count_active(&mut h.db) == Some(0)
            && h.membership_converged()
        {
            converged = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !converged && unconverged.is_empty() {
        unconverged.push(format!(
            "final commands {finals:?} not all succeeded, tasks still active, or membership not converged"
        ));
    }
    let quiesce = q0.elapsed();

    // Stop every node (so every life has an end), then read what happened.
    for id in h.nodes.keys().cloned().collect::<Vec<_>>() {
        h.stop_node(&id);
    }
    let now = now_ns();
    let (crowded, samples) = sampler.finish();
    let leftover = procs::scan(&h.reaper.0);
    procs::kill_marked(&h.reaper.0);
    let tasks = load_tasks(&mut h.db);
    let audit = load_audit(&mut h.db);
    let events = load_events(&mut h.db);
    let seen = watcher.finish();
    let (execs, torn) = witness::read(&h.dir.path().join("witness"), &seen);

    let mut violations = Vec::new();
    for t in &torn {
        violations.push(Violation { check: "witness", detail: format!("malformed witness line: {t}") });
    }
    violations.extend(check::overlaps(&execs, &h.lives, now));
    violations.extend(check::live_processes(&crowded, procs::PERIOD.as_nanos() as i64));
    violations.extend(check::survivors(&leftover));
    violations.extend(check::broadcast(&tasks, &execs, &h.faults));
    violations.extend(check::shards(&tasks));
    let mut submitted = log.submitted.clone();
    submitted.extend(&h.probes);
    submitted.extend(&final_ids);
    let (i2, lost) = check::terminal(&tasks, &submitted);
    violations.extend(i2);
    violations.extend(check::result_producers(&tasks));
    violations.extend(check::stale_writes(&audit, &h.faults));
    violations.extend(check::stale_actions(&execs, &h.faults));
    violations.extend(check::handoffs(&events, &execs, &h.faults));
    let (dups, duplicate_executions) = check::duplicates(&execs, &h.faults);
    violations.extend(dups);
    violations.extend(check::idempotency(&log.idem, &tasks, &execs));
    violations.extend(check::delays(&log.delayed, &execs));
    for f in h.faults.iter().filter(|f| f.recovered.is_none()) {
        violations.push(Violation {
            check: "recovery",
            detail: format!("{} {:?} at {} did not recover within {RECOVERY_BOUND:?}", f.kind, f.node, f.at),
        });
    }

    // Figures.
    let mut rec: Vec<f64> = h.faults.iter().filter_map(|f| f.recovered.map(|r| (r - f.at) as f64 / 1e9)).collect();
    rec.sort_by(f64::total_cmp);
    let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for f in &h.faults {
        by_kind.entry(f.kind).or_default().extend(f.recovered.map(|r| (r - f.at) as f64 / 1e9));
    }
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &tasks {
        *statuses.entry(t.status.as_str()).or_default() += 1;
    }
    let routings: BTreeSet<&str> = tasks.iter().filter_map(|t| t.routing.as_deref()).collect();
    eprintln!("\n== chaos figures (seed {seed}) ==");
    eprintln!(
        "fault phase {:.0} s, quiesce {:.1} s, {} node lives",
        fault_phase.as_secs_f64(),
        quiesce.as_secs_f64(),
        h.lives.len()
    );
    eprintln!("faults: {}", h.faults.len());
    for (kind, times) in &by_kind {
        let mut t = times.clone();
        t.sort_by(f64::total_cmp);
        let n = h.faults.iter().filter(|f| f.kind == *kind).count();
        eprintln!(
            "  {kind:<17} {n:>3}  recovery p50 {:>6.2} s  max {:>6.2} s",
            percentile(&t, 0.5),
            t.last().copied().unwrap_or(0.0)
        );
    }
    eprintln!("load: {:?}; {} submissions failed (node or database away)", log.counts, log.failed_submissions);
    eprintln!("tasks: {} rows {statuses:?}; routings {routings:?}", tasks.len());
    eprintln!(
        "witness: {} executions ({} cut short), {duplicate_executions} duplicate executions",
        execs.len(),
        execs.iter().filter(|e| e.end.is_none()).count()
    );
    eprintln!("audit: {} row updates; events: {} acquisitions/releases", audit.len(), events.len());
    eprintln!(
        "processes: {samples} samples of {} process applications every {} ms, {} crowded, {} left after the nodes",
        h.proc_apps.len(),
        procs::PERIOD.as_millis(),
        crowded.len(),
        leftover.values().map(Vec::len).sum::<usize>()
    );
    let results = tasks.iter().filter(|t| t.result.as_deref().is_some_and(|r| r.contains("witness "))).count();
    let stale_windows = h.faults.iter().filter(|f| f.stale.is_some()).count();
    let children = tasks.iter().filter(|t| t.parent_id.is_some() && t.routing.as_deref() == Some("broadcast")).count();
    let sharded = tasks.iter().filter(|t| t.parent_id.is_none() && t.routing.as_deref() == Some("sharding")).count();
    let shard_rows = tasks
        .iter()
        .filter(|t| t.parent_id.is_some() && t.shard_index.is_some() && t.routing.as_deref() != Some("broadcast"))
        .count();
    let refused: usize = log.idem.iter().map(|i| i.refused).sum();
    let app_execs = execs.iter().filter(|e| e.app.is_some_and(|a| h.apps.contains(&a))).count();
    eprintln!(
        "checked: {app_execs} executions on managed applications, {results} results against their row's owner, \
         {stale_windows} ended sessions against {} audited writes, {children} broadcast children, {sharded} sharded jobs \
         ({shard_rows} shard rows), {} idempotency keys ({refused} second submissions refused), {} delayed tasks",
        audit.len(),
        log.idem.len(),
        log.delayed.len()
    );
    let exhausted = tasks
        .iter()
        .filter(|t| t.status == "failed" && t.error.as_deref().is_some_and(|e| e.contains("no attempts left")))
        .count();
    let failed_parents =
        tasks.iter().filter(|t| t.status == "failed" && t.routing.as_deref() == Some("broadcast")).count();
    eprintln!("failed: {failed_parents} broadcast parents, {exhausted} attempts used up");
    eprintln!("converged: {converged}");
    for u in &unconverged {
        eprintln!("  not converged: {u}");
    }

    // Keep the evidence: node logs, witness, report.
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join(format!("chaos-{seed}"));
    let _ = std::fs::create_dir_all(&out_dir);
    let mut life_no: BTreeMap<String, usize> = BTreeMap::new();
    for (id, node) in &h.retired {
        let k = life_no.entry(id.clone()).or_default();
        *k += 1;
        let _ = std::fs::write(out_dir.join(format!("{id}-{k}.log")), node.logs());
    }
    let _ = std::fs::copy(h.dir.path().join("witness"), out_dir.join("witness"));
    write_faults(&out_dir, &h.faults);

    let report = json!({
        "seed": seed,
        "duration_s": duration.as_secs(),
        "nodes": h.settings.nodes,
        "faults": h.faults.len(),
        "tasks": tasks.len(),
        "violations": violations.len(),
        "lost": lost,
        "duplicate_executions": duplicate_executions,
        "process_samples": samples,
        "crowded_samples": crowded.len(),
        "partitions": h.net.is_some(),
        "recovery_p50_s": round2(percentile(&rec, 0.5)),
        "recovery_max_s": round2(rec.last().copied().unwrap_or(0.0)),
        "converged": converged,
    });
    eprintln!("evidence: {}", out_dir.display());
    let _ = std::fs::write(out_dir.join("report.json"), report.to_string());
    (report, violations)
}

fn write_faults(dir: &Path, faults: &[Fault]) {
    let lines: Vec<String> = faults
        .iter()
        .map(|f| {
            format!(
                "{} {} {:?} at={} done={} recovered={:?} stale={:?}",
                f.kind,
                f.node.as_deref().unwrap_or("-"),
                f.kind,
                f.at,
                f.done,
                f.recovered,
                f.stale
            )
        })
        .collect();
    let _ = std::fs::write(dir.join("faults"), lines.join("\n"));
}

#[test]
fn chaos_faults_keep_every_invariant() {
    let (report, violations) = run(settings());
    if !violations.is_empty() {
        eprintln!("\n== {} violations ==", violations.len());
        for v in &violations {
            eprintln!("VIOLATION [{}] {}", v.check, v.detail);
        }
    }
    if let Ok(path) = std::env::var("ROTA_CHAOS_REPORT") {
        let _ = std::fs::write(path, format!("{report}\n"));
    }
    // The last line of the run: one JSON object.
    eprintln!("{report}");
    assert!(
        violations.is_empty(),
        "{} invariant violations (listed above); replay with ROTA_CHAOS_SEED={}",
        violations.len(),
        report["seed"]
    );
    assert_eq!(report["converged"], true, "the cluster did not converge within {QUIESCE_BOUND:?} after the faults");
}
