//! Invariant I1 against the node's state, on real nodes (PostgreSQL + etcd): a node paused past
//! its lease, a node killed with a wrapper application whose grandchildren its death signal
//! does not reach, a node whose watchdog died with it, and one whose watchdog died alone. The
//! processes are sampled from `/proc` (every 100 ms) and told apart by a mark in their command
//! line or environment, grandchildren included.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rota::ring::{Member, Ring};

use common::cluster::{ttl, Cluster};
use common::wait_until;

/// A live process (zombies are dead) as `/proc` shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgid: i32,
    comm: String,
    cmdline: String,
    env: BTreeMap<String, String>,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once(" (")?.1.to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    Some(Proc {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        comm,
        cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
        env: env
            .split(|b| *b == 0)
            .filter_map(|e| {
                let e = String::from_utf8_lossy(e);
                e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
    })
}

/// Every live process whose command line or environment holds `mark`.
fn marked(mark: &str) -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .filter(|p| p.cmdline.contains(mark) || p.env.values().any(|v| v.contains(mark)))
        .collect()
}

fn alive(pid: i32) -> bool {
    read_proc(pid).is_some()
}

/// A mark no other test's processes carry.
fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}{:09}", std::process::id() % 10_000, nanos)
}

/// Samples `/proc` every 100 ms until stopped; each sample judged by `check` (a violation's
/// description, or None).
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, Vec<String>)>,
}

impl Sampler {
    fn start(check: impl Fn() -> Option<String> + Send + 'static) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut samples, mut violations) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) {
                samples += 1;
                if let Some(v) = check() {
                    violations.push(v);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (samples, violations)
        });
        Sampler { stop, handle }
    }

    /// Stop; (samples taken, violations seen).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

fn ring(ids: &[&str]) -> Ring {
    let members = ids.iter().map(|id| Member { node_id: id.to_string(), weight: 1, labels: BTreeMap::new() }).collect();
    Ring::build(1, members, rota::ring::DEFAULT_VNODES).unwrap()
}

fn owned_by(ring: &Ring, node: &str, n: usize) -> Vec<i64> {
    (1..).filter(|id: &i64| ring.owner(id.to_string().as_bytes()).unwrap().node_id == node).take(n).collect()
}

/// Create the `process` applications `ids` running `script` under `sh -c`, with `I1_MARK` =
/// `{mark}-{id}` in their environment, and start them.
fn create_apps(c: &Cluster, ids: &[i64], script: &str, mark: &str) {
    for id in ids {
        let spec = serde_json::json!({
            "command": ["/bin/sh", "-c", script],
            "env": { "I1_MARK": format!("{mark}-{id}") },
            "stop_grace_ms": 1000,
        });
        c.sql(&format!(
            "INSERT INTO application (id, name, driver, spec) VALUES ({id}, 'app-{id}', 'process', '{spec}')"
        ));
    }
    c.sql("INSERT INTO task (app_id, action) SELECT id, 'start' FROM application");
}

/// The running instances of each application marked `mark`: application id → process groups
/// (each instance of an application leads a group of its own) → the node it runs on.
fn instances(mark: &str) -> BTreeMap<i64, BTreeMap<i32, String>> {
    let mut apps: BTreeMap<i64, BTreeMap<i32, String>> = BTreeMap::new();
    for p in marked(mark) {
        let Some(app) = p.env.get("I1_MARK").and_then(|m| m.rsplit_once('-')).and_then(|(_, id)| id.parse().ok())
        else {
            continue;
        };
        let node = p.env.get("ROTA_NODE_ID").cloned().unwrap_or_default();
        apps.entry(app).or_default().insert(p.pgid, node);
    }
    apps
}

/// The pid of node `pid`'s watchdog, if it has one.
fn watchdog_of(node: u32) -> Option<i32> {
    let node = i32::try_from(node).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .find(|p| p.ppid == node && p.cmdline.contains("watchdog"))
        .map(|p| p.pid)
}

fn kill(pid: i32, sig: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

#[test]
fn a_paused_owner_s_process_applications_never_run_beside_the_survivors_copies() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let ids = owned_by(&ring(&["n1", "n2", "n3"]), "n3", 10);
    let mark = format!("paused{}", unique());
    // A wrapper: the instance is the shell and its background grandchild.
    create_apps(&c, &ids, "sleep 100000 & wait", &mark);
    wait_until(Duration::from_secs(30), "10 applications running on n3, two processes each", || {
        let now = instances(&mark);
        now.len() == 10
            && now.values().all(|g| g.len() == 1 && g.values().all(|n| n == "n3"))
            && marked(&mark).len() == 20
    });
    let m = mark.clone();
    let sampler = Sampler::start(move || {
        let twice: Vec<String> = instances(&m)
            .into_iter()
            .filter(|(_, groups)| groups.len() > 1)
            .map(|(app, groups)| format!("application {app} on {:?}", groups.values().collect::<Vec<_>>()))
            .collect();
        (!twice.is_empty()).then(|| twice.join("; "))
    });

    let paused = c.nodes.remove("n3").unwrap();
    paused.signal("STOP");
    let t0 = Instant::now();
    wait_until(Duration::from_secs(30), "the survivors to run all 10", || {
        let now = instances(&mark);
        now.len() == 10 && now.values().all(|g| g.values().any(|n| n != "n3"))
    });
    let taken_over = t0.elapsed();
    let pause = Duration::from_secs(2 * ttl());
    wait_until(pause + Duration::from_secs(5), "a pause of twice the lease TTL", || t0.elapsed() >= pause);
    let left: Vec<Proc> =
        marked(&mark).into_iter().filter(|p| p.env.get("ROTA_NODE_ID").is_some_and(|n| n == "n3")).collect();
    if !left.is_empty() {
        let (samples, violations) = sampler.finish();
        paused.signal("CONT");
        panic!(
            "{} processes of the paused node outlived its lease; {} of {samples} samples saw two copies, e.g. {:?}",
            left.len(),
            violations.len(),
            violations.first()
        );
    }
    paused.signal("CONT");
    c.nodes.insert("n3".into(), paused);
    c.converge(&["n1", "n2", "n3"]);
    wait_until(Duration::from_secs(40), "the applications back on n3, once each", || {
        let now = instances(&mark);
        now.len() == 10 && now.values().all(|g| g.len() == 1 && g.values().all(|n| n == "n3"))
    });
    let (samples, violations) = sampler.finish();
    eprintln!(
        "measured: 10 applications taken over {taken_over:?} after SIGSTOP (ttl {} s); {samples} samples, {} with two copies",
        ttl(),
        violations.len()
    );
    assert!(violations.is_empty(), "two copies at once: {violations:?}");
    // The paused node woke, found its children gone, fenced, and went on.
    let n3 = c.nodes.get_mut("n3").unwrap();
    assert!(n3.exited().is_none(), "n3 must not crash:\n{}", n3.logs());
    assert!(n3.logs().contains("fenced"), "{}", n3.logs());
}

#[test]
fn a_killed_node_leaves_no_grandchild_behind_and_its_wrapper_application_runs_once() {
    let mut c = Cluster::new(&["n1", "n2"]);
    c.converge(&["n1", "n2"]);
    let id = owned_by(&ring(&["n1", "n2"]), "n2", 1)[0];
    // Two grandchildren: one in the shell's group, one that left it (a session of its own) and
    // dropped its environment, so only its descent from the shell tells whose it is.
    let mark = format!("1000{}.5", unique());
    let script = format!("env -i setsid sleep {mark} & sleep {mark} & wait");
    create_apps(&c, &[id], &script, "wrapper");
    let sleeps = |node: Option<&str>| -> Vec<Proc> {
        let all = marked(&mark);
        let shells: BTreeSet<i32> = all
            .iter()
            .filter(|p| p.comm == "sh" && node.is_none_or(|n| p.env.get("ROTA_NODE_ID").is_some_and(|v| v == n)))
            .map(|p| p.pid)
            .collect();
        all.into_iter().filter(|p| p.comm == "sleep" && (node.is_none() || shells.contains(&p.ppid))).collect()
    };
    wait_until(Duration::from_secs(30), "the wrapper and its two sleeps on n2", || sleeps(Some("n2")).len() == 2);
    let m = mark.clone();
    let sampler = Sampler::start(move || {
        let n = marked(&m).iter().filter(|p| p.comm == "sleep").count();
        (n > 2).then(|| format!("{n} sleeps"))
    });
    // The watchdog scans for what left a group every 200 ms: give it a few scans.
    let seen = Instant::now();
    wait_until(Duration::from_secs(5), "a few of the watchdog's scans", || seen.elapsed() > Duration::from_millis(800));
    let old: Vec<i32> = sleeps(Some("n2")).iter().map(|p| p.pid).collect();
    let mut victim = c.nodes.remove("n2").unwrap();
    let watchdog = watchdog_of(victim.pid());
    victim.signal("KILL");
    let t0 = Instant::now();
    victim.wait_exit(Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "the grandchildren to die with their node", || !old.iter().any(|p| alive(*p)));
    let died = t0.elapsed();
    if let Some(w) = watchdog {
        wait_until(Duration::from_secs(5), "the watchdog to exit after acting", || !alive(w));
    }
    wait_until(Duration::from_secs(30), "the application to run again on n1", || {
        sleeps(None).len() == 2 && sleeps(None).iter().all(|p| !old.contains(&p.pid))
    });
    let moved = t0.elapsed();
    c.add("n2");
    c.converge(&["n1", "n2"]);
    wait_until(Duration::from_secs(40), "the application back on n2, once", || {
        sleeps(Some("n2")).len() == 2 && sleeps(None).len() == 2
    });
    let (samples, violations) = sampler.finish();
    eprintln!(
        "measured: grandchildren dead {died:?} after SIGKILL, running on n1 {moved:?} after (ttl {} s); {samples} samples",
        ttl()
    );
    assert!(violations.is_empty(), "more than one copy: {violations:?}");
}

#[test]
fn a_node_starting_kills_what_an_earlier_life_left_running_when_its_watchdog_died_too() {
    let mut c = Cluster::new(&["n1"]);
    c.converge(&["n1"]);
    let mark = format!("1000{}.25", unique());
    create_apps(&c, &[1], &format!("sleep {mark} & wait"), "earlier");
    let sleeps = || marked(&mark).into_iter().filter(|p| p.comm == "sleep").collect::<Vec<_>>();
    wait_until(Duration::from_secs(30), "the application running", || sleeps().len() == 1);
    let orphan = sleeps()[0].pid;
    let mut node = c.nodes.remove("n1").unwrap();
    // The node and its watchdog both die (stopped first, so that it cannot start another).
    node.signal("STOP");
    if let Some(w) = watchdog_of(node.pid()) {
        kill(w, "KILL");
    }
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(10));
    assert!(alive(orphan), "the grandchild outlives a node whose watchdog died too");
    c.add("n1");
    c.nodes["n1"].wait_logged("an earlier life of this node", Duration::from_secs(30));
    wait_until(Duration::from_secs(5), "the earlier life's grandchild to be gone", || !alive(orphan));
    c.converge(&["n1"]);
    wait_until(Duration::from_secs(30), "the application running again, once", || {
        let s = sleeps();
        s.len() == 1 && s[0].pid != orphan
    });
}

#[test]
fn a_watchdog_that_dies_is_started_again_and_still_acts_for_its_node() {
    let mut c = Cluster::new(&["n1"]);
    c.converge(&["n1"]);
    let mark = format!("1000{}.75", unique());
    create_apps(&c, &[1], &format!("sleep {mark} & wait"), "again");
    let sleeps = || marked(&mark).into_iter().filter(|p| p.comm == "sleep").collect::<Vec<_>>();
    wait_until(Duration::from_secs(30), "the application running", || sleeps().len() == 1);
    let grandchild = sleeps()[0].pid;
    let node = c.nodes.remove("n1").unwrap();
    let first = watchdog_of(node.pid()).expect("the node has a watchdog");
    kill(first, "KILL");
    let mut second = None;
    wait_until(Duration::from_secs(10), "the node to start another watchdog", || {
        second = watchdog_of(node.pid()).filter(|w| *w != first);
        second.is_some()
    });
    node.wait_logged("watchdog started again", Duration::from_secs(5));
    assert!(alive(grandchild), "the application runs on");
    let mut node = node;
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "the grandchild to die with its node", || !alive(grandchild));
    wait_until(Duration::from_secs(5), "the second watchdog to exit", || !alive(second.unwrap()));
}

#[test]
fn a_node_stopped_gracefully_takes_its_watchdog_with_it() {
    let mut c = Cluster::new(&["n1"]);
    c.converge(&["n1"]);
    let mut node = c.nodes.remove("n1").unwrap();
    let watchdog = watchdog_of(node.pid()).expect("the node has a watchdog");
    node.signal("TERM");
    let status = node.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", node.logs());
    // Reaped by the node before it exited: no zombie left for whoever adopts it.
    assert!(!std::path::Path::new(&format!("/proc/{watchdog}")).exists(), "the watchdog outlived its node");
}
