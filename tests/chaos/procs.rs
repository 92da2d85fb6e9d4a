//! The live-process sampler: I1 seen from the operating system. The witness proves that no two
//! *commands* on one application overlap; a `process` application is a long-lived child, and
//! what must never happen is two of them alive at once — on two nodes after a hand-off, or a
//! grandchild left behind by a node that died, next to the copy its successor started.
//!
//! Every `process` application of the load carries `CHAOS_MARK=<run tag>:<name>` in its spec's
//! environment, which its children and grandchildren inherit. Its worker is a `sleep` (directly,
//! or under a `/bin/sh -c "sleep … & wait"` wrapper), so the sampler counts, every 100 ms across
//! the whole machine (every node's namespace shares one pid namespace), the live (not zombie)
//! `sleep` processes with the run's mark, per application. A sample with two or more is a
//! violation; consecutive such samples are one episode. Reading `/proc` is all it does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The environment variable that marks a process as a worker of one of this run's applications.
pub const MARK: &str = "CHAOS_MARK";
/// How often the sampler reads `/proc`.
pub const PERIOD: Duration = Duration::from_millis(100);

/// One live worker process.
#[derive(Debug, Clone, PartialEq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// `ROTA_NODE_ID` and `ROTA_EPOCH` of the node that started it (its environment).
    pub node: String,
    pub epoch: String,
}

/// Workers per application name.
pub type Census = BTreeMap<String, Vec<Proc>>;

/// One sample that found an application with two or more workers (only those are kept).
#[derive(Debug, Clone)]
pub struct Crowded {
    /// The sample's number: consecutive numbers are consecutive samples.
    pub index: u64,
    pub at: i64,
    pub app: String,
    pub procs: Vec<Proc>,
}

/// Read `/proc` once: the live workers carrying `tag`'s mark, per application name.
pub fn scan(tag: &str) -> Census {
    let mut census = Census::new();
    let want = format!("{MARK}={tag}:");
    let Ok(dir) = std::fs::read_dir("/proc") else { return census };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        // `pid (comm) S ppid …`; comm may hold spaces, so split after its closing parenthesis.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if &stat[open + 1..close] != "sleep" {
            continue;
        }
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.first().is_none_or(|s| *s == "Z" || *s == "X") {
            continue;
        }
        let ppid = rest.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let mut app = None;
        let (mut node, mut epoch) = (String::new(), String::new());
        for var in env.split(|b| *b == 0).map(String::from_utf8_lossy) {
            if let Some(name) = var.strip_prefix(&want) {
                app = Some(name.to_string());
            } else if let Some(v) = var.strip_prefix("ROTA_NODE_ID=") {
                node = v.to_string();
            } else if let Some(v) = var.strip_prefix("ROTA_EPOCH=") {
                epoch = v.to_string();
            }
        }
        if let Some(app) = app {
            census.entry(app).or_default().push(Proc { pid, ppid, node, epoch });
        }
    }
    census
}

/// SIGKILL every process carrying `tag`'s mark (the end of a run: nothing of it may outlive it);
/// how many there were.
pub fn kill_marked(tag: &str) -> usize {
    let all: Vec<Proc> = scan(tag).into_values().flatten().collect();
    for p in &all {
        // SAFETY: kill has no memory-safety preconditions; the pid carries this run's mark.
        unsafe { libc::kill(p.pid as libc::pid_t, libc::SIGKILL) };
    }
    all.len()
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    latest: Arc<Mutex<Census>>,
    thread: Option<std::thread::JoinHandle<(Vec<Crowded>, u64)>>,
}

impl Sampler {
    pub fn start(tag: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let latest = Arc::new(Mutex::new(Census::new()));
        let (flag, last) = (stop.clone(), latest.clone());
        let thread = std::thread::spawn(move || {
            let (mut crowded, mut index) = (Vec::new(), 0u64);
            while !flag.load(Ordering::SeqCst) {
                let at = super::load::now_ns();
                let census = scan(&tag);
                for (app, procs) in census.iter().filter(|(_, p)| p.len() > 1) {
                    crowded.push(Crowded { index, at, app: app.clone(), procs: procs.clone() });
                }
                *last.lock().unwrap() = census;
                index += 1;
                std::thread::sleep(PERIOD); // the sampling period
            }
            (crowded, index)
        });
        Sampler { stop, latest, thread: Some(thread) }
    }

    /// Workers per application in the latest sample.
    pub fn latest(&self) -> Census {
        self.latest.lock().unwrap().clone()
    }

    /// Stop sampling: the crowded samples and how many samples were taken.
    pub fn finish(mut self) -> (Vec<Crowded>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Kills this run's marked processes when dropped: declared after the nodes in the harness, so
/// that a run that fails half-way leaves no worker behind (a wrapper's grandchild survives its
/// node's SIGKILL).
pub struct Reaper(pub String);

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_marked(&self.0);
    }
}
