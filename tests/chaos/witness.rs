//! The witness: what actually ran, where and when, written by the commands themselves.
//!
//! Every command of the suite's `shell` applications runs `witness.sh OP`, which appends one line
//! when it begins and one when it ends to a file shared by all nodes (one machine, one clock):
//!
//! ```text
//! B <node> <epoch> <task|-> <app|-> <op> <pid> <begin_ns>
//! E <node> <epoch> <task|-> <app|-> <op> <pid> <begin_ns> <end_ns>
//! ```
//!
//! The node and epoch come from `ROTA_NODE_ID`/`ROTA_EPOCH`, i.e. from the node that started the
//! command, not from the database: the witness says what ran even when the database was not told.
//! An execution with a `B` line and no `E` line was cut short: its node was killed (the shell
//! dies with it) or aborted it (fenced: the shell's process group is killed). When it really
//! ended is then not in the file, so a [`Watcher`] thread of the harness tails the file and
//! watches the process of every open execution: the last moment it saw it alive is a proven
//! lower bound of its end. Lines are appended with O_APPEND in one `write` each, so they never
//! interleave.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The script every command runs. `start`/`stop` also keep the "outside system" state of the
/// application in `state/<app>`, which `status` reads (0 running, 3 stopped: LSB, as the shell
/// driver expects). `run` prints who ran it, so a task's `result` names its producer.
pub const SCRIPT: &str = r#"#!/bin/sh
# Rota chaos witness (tests/chaos/witness.rs).
op=$1
w="$CHAOS_DIR/witness"
id="$ROTA_NODE_ID $ROTA_EPOCH ${ROTA_TASK_ID:--} ${ROTA_APP_ID:--} $op $$ $(date +%s%N)"
echo "B $id" >> "$w"
rc=0
case "$op" in
  start) sleep 0.4; echo running > "$CHAOS_DIR/state/$ROTA_APP_ID" ;;
  stop) sleep 0.2; echo stopped > "$CHAOS_DIR/state/$ROTA_APP_ID" ;;
  status) [ "$(cat "$CHAOS_DIR/state/$ROTA_APP_ID" 2>/dev/null)" = running ] || rc=3 ;;
  run) sleep "${ROTA_PARAM_SLEEP:-0.2}"; echo "witness $ROTA_NODE_ID $ROTA_EPOCH $ROTA_TASK_ID" ;;
esac
echo "E $id $(date +%s%N)" >> "$w"
exit $rc
"#;

/// Per execution (node, pid, begin): the last time its process was seen alive.
pub type Seen = HashMap<(String, u32, i64), i64>;

/// One execution of one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Exec {
    pub node: String,
    pub epoch: i64,
    pub task: Option<i64>,
    pub app: Option<i64>,
    pub op: String,
    pub pid: u32,
    pub begin: i64,
    /// None: no end line (cut short).
    pub end: Option<i64>,
    /// Cut short: the last time the watcher saw its process alive.
    pub seen_until: Option<i64>,
}

impl Exec {
    /// A line for a fabricated witness (self-checks).
    #[cfg(test)]
    pub fn new(node: &str, task: Option<i64>, app: Option<i64>, op: &str, begin: i64, end: Option<i64>) -> Exec {
        Exec { node: node.into(), epoch: 1, task, app, op: op.into(), pid: 1, begin, end, seen_until: None }
    }
}

fn opt(s: &str) -> Option<i64> {
    if s == "-" {
        None
    } else {
        s.parse().ok()
    }
}

/// Parse a witness; malformed lines (a torn write would be one) are returned apart.
pub fn parse(text: &str) -> (Vec<Exec>, Vec<String>) {
    let mut execs: Vec<Exec> = Vec::new();
    let mut index: HashMap<(String, u32, i64), usize> = HashMap::new();
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = (|| {
            let kind = *f.first()?;
            let (node, epoch, task, app, op) =
                (f.get(1)?, f.get(2)?.parse().ok()?, opt(f.get(3)?), opt(f.get(4)?), f.get(5)?);
            let (pid, begin): (u32, i64) = (f.get(6)?.parse().ok()?, f.get(7)?.parse().ok()?);
            let end = match kind {
                "B" if f.len() == 8 => None,
                "E" if f.len() == 9 => Some(f[8].parse().ok()?),
                _ => return None,
            };
            Some(Exec {
                node: node.to_string(),
                epoch,
                task,
                app,
                op: op.to_string(),
                pid,
                begin,
                end,
                seen_until: None,
            })
        })();
        let Some(e) = parsed else {
            bad.push(line.to_string());
            continue;
        };
        let key = (e.node.clone(), e.pid, e.begin);
        match (index.get(&key), e.end) {
            (Some(&i), Some(end)) => execs[i].end = Some(end),
            (None, _) => {
                index.insert(key, execs.len());
                execs.push(e);
            }
            (Some(_), None) => bad.push(format!("duplicate begin: {line}")),
        }
    }
    (execs, bad)
}

/// Read and parse the witness file; `seen` (from the [`Watcher`]) dates the cut-short ones.
pub fn read(path: &Path, seen: &Seen) -> (Vec<Exec>, Vec<String>) {
    let (mut execs, bad) = parse(&std::fs::read_to_string(path).unwrap_or_default());
    for e in execs.iter_mut().filter(|e| e.end.is_none()) {
        e.seen_until = seen.get(&(e.node.clone(), e.pid, e.begin)).copied();
    }
    (execs, bad)
}

/// Tails the witness file and, for every execution that has begun and not ended, checks every
/// 20 ms that its shell is still alive (`/proc/PID/cmdline` names `witness.sh`; a zombie has
/// none). Records, per execution, the last time it was seen alive.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Seen>>,
}

fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(10).any(|w| w == b"witness.sh"))
}

impl Watcher {
    pub fn start(path: PathBuf) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: Seen = HashMap::new();
            let mut open: HashMap<(String, u32, i64), ()> = HashMap::new();
            let (mut offset, mut partial) = (0u64, String::new());
            while !flag.load(Ordering::SeqCst) {
                if let Ok(mut f) = std::fs::File::open(&path) {
                    let _ = f.seek(SeekFrom::Start(offset));
                    let mut buf = String::new();
                    if let Ok(n) = f.read_to_string(&mut buf) {
                        offset += n as u64;
                        partial.push_str(&buf);
                    }
                }
                while let Some(i) = partial.find('\n') {
                    let line: String = partial.drain(..=i).collect();
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let key = match (
                        f.first(),
                        f.get(1),
                        f.get(6).and_then(|p| p.parse().ok()),
                        f.get(7).and_then(|b| b.parse().ok()),
                    ) {
                        (Some(_), Some(node), Some(pid), Some(begin)) => (node.to_string(), pid, begin),
                        _ => continue,
                    };
                    if f[0] == "B" {
                        seen.insert(key.clone(), key.2);
                        open.insert(key, ());
                    } else {
                        open.remove(&key);
                    }
                }
                let now = super::load::now_ns();
                open.retain(|key, _| {
                    let up = alive(key.1);
                    if up {
                        seen.insert(key.clone(), now);
                    }
                    up
                });
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Watcher { stop, thread: Some(thread) }
    }

    /// Stop watching; per execution (node, pid, begin), the last time it was seen alive.
    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

#[test]
fn witness_lines_pair_up() {
    let (execs, bad) =
        parse("B n1 7 12 3 start 100 1000\nB n2 8 - 3 status 200 1500\nE n1 7 12 3 start 100 1000 2000\nB torn\n");
    assert_eq!(bad, vec!["B torn".to_string()]);
    assert_eq!(execs.len(), 2);
    assert_eq!((execs[0].task, execs[0].end), (Some(12), Some(2000)));
    assert_eq!((execs[1].task, execs[1].app, execs[1].end), (None, Some(3), None));
}
