//! The watchdog: a small process of its own beside every node (`rota watchdog`, started by the
//! node) that kills the node's supervised children once the node's right to act has ended —
//! its membership deadline passed without renewal, or the node died — whatever state the node
//! is in: running, paused (SIGSTOP), hung, or killed.
//!
//! Why a process apart: the lease is the only right to act (invariant I1, docs/design.md#i1).
//! A node paused past its lease cannot stop anything, and the others start its applications
//! meanwhile; `PR_SET_PDEATHSIG` kills only a node's direct children, not what they forked
//! (`sh -c "worker & wait"`), and a cgroup's `cgroup.kill` is not there on every host (cgroup
//! v1). So the node tells a process it does not share a fate with until when its children may
//! live, and which process groups they are; that process acts on the clock alone.
//!
//! What the node sends, one line each ([`Message`]), over a pipe that only the node holds the
//! write end of (so it reaches end-of-file when the node dies, however it dies):
//! - `deadline <ns>`: the membership deadline on `CLOCK_MONOTONIC`, less the fence's margin
//!   ([`crate::membership::MembershipState::deadline_monotonic`]), each time it changes;
//! - `group <pgid>`: a supervised child began, leading this process group;
//! - `sweep <pgid>` / `end <pgid>`: the group's leader has ended; with `sweep` what the watchdog
//!   followed out of the group dies too (the `process` driver's rule: the group lives as long as
//!   its leader), with `end` the group and what came from it are forgotten (a `shell` command
//!   may leave a daemon behind on purpose).
//!
//! Supervised children (`process` applications and jobs, `shell` jobs) also carry
//! [`MARKER_VAR`] in their environment, naming this node on this database ([`marker`]): the
//! watchdog kills what carries it when it acts (a child forked and not yet announced, a
//! grandchild that left its group), and a node starting kills what an earlier life of its own
//! left behind ([`procfs::sweep`]). A `shell` application's `start`, `stop` and `status`
//! commands are announced while they run, but not marked: what a `start` leaves running is the
//! outside system's, not the node's.
//!
//! Parts: this module has the messages and the node's side ([`Watchdog`]: a thread writing to
//! the watchdog, which starts it again if it dies); `guard` is the watchdog's own loop;
//! `procfs` reads `/proc`. Must never: block a tokio worker (the writes go through a thread of
//! their own), or make a child wait for the watchdog before it runs.

pub mod guard;
pub mod procfs;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::LogFormat;
use crate::membership::{MembershipState, Status};

/// The environment variable that marks a supervised child with its node: `<node id>/<database>`.
pub const MARKER_VAR: &str = "ROTA_SUPERVISOR";

/// How long a node that stops waits for its watchdog to act and exit.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// One line from the node to its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// The children may live until this `CLOCK_MONOTONIC` instant, in nanoseconds (0: passed).
    Deadline(u64),
    /// A supervised child leads this process group.
    Group(i32),
    /// The group's leader ended: kill what was followed out of the group, forget the group.
    Sweep(i32),
    /// The group's leader ended: forget the group and what came from it.
    End(i32),
}

impl Message {
    /// The line, newline included: `deadline 123`, `group 45`, `sweep 45`, `end 45`.
    pub fn line(&self) -> String {
        match self {
            Message::Deadline(ns) => format!("deadline {ns}\n"),
            Message::Group(g) => format!("group {g}\n"),
            Message::Sweep(g) => format!("sweep {g}\n"),
            Message::End(g) => format!("end {g}\n"),
        }
    }

    /// A line read back (without its newline); what is wrong with it otherwise. A process
    /// group id must be above 1 (`kill(-1)` and `kill(0)` would reach far more than a group).
    pub fn parse(line: &str) -> Result<Message, String> {
        let (word, value) = line.trim().split_once(' ').ok_or_else(|| format!("no value in `{line}`"))?;
        let group = || match value.parse::<i32>() {
            Ok(g) if g > 1 => Ok(g),
            _ => Err(format!("`{value}` is not a process group id in `{line}`")),
        };
        match word {
            "deadline" => {
                value.parse().map(Message::Deadline).map_err(|_| format!("`{value}` is not a time in `{line}`"))
            }
            "group" => group().map(Message::Group),
            "sweep" => group().map(Message::Sweep),
            "end" => group().map(Message::End),
            _ => Err(format!("unknown message `{line}`")),
        }
    }
}

/// The marker of this node's supervised children: `<node id>/<16 hex digits>`, the digits a
/// hash of the database (its URL as shown, without the password). Why the database: node ids
/// are unique within a deployment, not on a machine (two deployments, or tests, may both have a
/// node `n1`), and a node's start must find its own earlier life's leftovers only.
pub fn marker(node_id: &str, database: &str) -> String {
    // FNV-1a: the same value in every build, so a node upgraded between two lives finds its
    // earlier children (std's hashers may change between releases).
    let hash = database.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{node_id}/{hash:016x}")
}

/// `CLOCK_MONOTONIC` in nanoseconds (async-signal-safe: callable between fork and exec). Like
/// `Instant`, it counts while a process is stopped; the watchdog's deadlines are on it.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the timespec it is given; CLOCK_MONOTONIC always exists
    // on Linux, so it does not fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// The node's side of its watchdog: cheap to clone, never blocks (a thread does the writing).
#[derive(Clone)]
pub struct Watchdog(Arc<Inner>);

struct Inner {
    marker: String,
    follow: Mutex<Follow>,
    orders: mpsc::Sender<Order>,
}

/// The membership the deadline is read from, and the last one sent (status joined, deadline).
struct Follow {
    membership: watch::Receiver<MembershipState>,
    sent: Option<(bool, Option<Instant>)>,
}

enum Order {
    Send(Message),
    Stop(mpsc::Sender<()>),
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watchdog({})", self.0.marker)
    }
}

impl Watchdog {
    /// Start the watchdog process for the node marked `marker` and the thread that writes to it,
    /// and forward every deadline `membership` publishes (a task on the current runtime).
    pub fn start(
        marker: String,
        log: LogFormat,
        membership: watch::Receiver<MembershipState>,
    ) -> std::io::Result<Watchdog> {
        let launch = {
            let marker = marker.clone();
            move || launch(&marker, log)
        };
        let child = launch()?;
        tracing::info!(watchdog.pid = child.id(), "watchdog started");
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("rota-watchdog".into()).spawn(move || writer(child, launch, rx))?;
        let mut changes = membership.clone();
        let wd =
            Watchdog(Arc::new(Inner { marker, follow: Mutex::new(Follow { membership, sent: None }), orders: tx }));
        let forward = wd.clone();
        tokio::spawn(async move {
            forward.refresh();
            while changes.changed().await.is_ok() {
                forward.refresh();
            }
        });
        Ok(wd)
    }

    /// The value of [`MARKER_VAR`] for this node's supervised children.
    pub fn marker(&self) -> &str {
        &self.0.marker
    }

    /// Send the membership deadline if it changed.
    fn refresh(&self) {
        let mut follow = self.0.follow.lock().unwrap_or_else(PoisonError::into_inner);
        self.forward(&mut follow);
    }

    /// Under the `follow` lock, so that the deadlines sent are in the order they were read (a
    /// registration reads it too): the last one sent is always the newest.
    fn forward(&self, follow: &mut Follow) {
        let (key, ns) = {
            let state = follow.membership.borrow();
            let mono = monotonic_ns();
            let now = Instant::now();
            ((state.status == Status::Joined, state.valid_until), state.deadline_monotonic(mono, now))
        };
        if follow.sent != Some(key) {
            follow.sent = Some(key);
            self.send(Message::Deadline(ns));
        }
    }

    /// A supervised child began, leading group `pgid`. The current deadline goes first, so the
    /// watchdog never judges a group by an older one.
    pub(crate) fn register(&self, pgid: i32) {
        let mut follow = self.0.follow.lock().unwrap_or_else(PoisonError::into_inner);
        self.forward(&mut follow);
        self.send(Message::Group(pgid));
    }

    /// The leader of group `pgid` ended; with `sweep`, what left the group dies too; without,
    /// the group and what came from it are no longer watched.
    pub(crate) fn release(&self, pgid: i32, sweep: bool) {
        self.send(if sweep { Message::Sweep(pgid) } else { Message::End(pgid) });
    }

    fn send(&self, message: Message) {
        if self.0.orders.send(Order::Send(message)).is_err() {
            tracing::debug!(?message, "the watchdog has stopped; message not sent");
        }
    }

    /// The node is exiting: close the pipe (the watchdog kills whatever supervised process is
    /// left, then exits) and wait for it, at most [`STOP_WAIT`]. Blocking.
    pub fn stop(&self) {
        let (done, wait) = mpsc::channel();
        let sent = self.0.orders.send(Order::Stop(done));
        if sent.is_ok() && wait.recv_timeout(STOP_WAIT + Duration::from_secs(1)).is_err() {
            tracing::warn!("the watchdog did not stop in time");
        }
    }
}

/// Start `rota watchdog` from this very binary (`/proc/self/exe` is the running program even
/// when its file was replaced by an upgrade), in a process group of its own (a terminal's
/// Ctrl-C or Ctrl-Z reaches the node, not it), without a death signal (it must outlive the
/// node to act), stdin a pipe from the node, stderr the node's (its log lines join the node's).
fn launch(marker: &str, log: LogFormat) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let format = match log {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    Command::new("/proc/self/exe")
        .arg0("rota-watchdog")
        .args(["watchdog", "--marker", marker, "--log-format", format])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
}

/// What the watchdog must know, kept by the writer to tell a new one.
#[derive(Debug, Default)]
struct Mirror {
    deadline: Option<u64>,
    groups: BTreeSet<i32>,
}

impl Mirror {
    fn apply(&mut self, m: Message) {
        match m {
            Message::Deadline(ns) => self.deadline = Some(ns),
            Message::Group(g) => {
                self.groups.insert(g);
            }
            Message::Sweep(g) | Message::End(g) => {
                self.groups.remove(&g);
            }
        }
    }

    /// Everything, in order, for a watchdog started anew.
    fn replay(&self) -> Vec<Message> {
        self.deadline.map(Message::Deadline).into_iter().chain(self.groups.iter().map(|g| Message::Group(*g))).collect()
    }
}

/// The writer thread: each message to the watchdog's pipe. A watchdog that died (the write
/// fails) is reaped and started again, and told the deadline and the groups it must watch;
/// what it had followed out of those groups is followed again by the new one's first scan.
fn writer(child: Child, launch: impl Fn() -> std::io::Result<Child>, orders: mpsc::Receiver<Order>) {
    let mut child = Some(child);
    let mut mirror = Mirror::default();
    for order in orders {
        match order {
            Order::Send(message) => {
                mirror.apply(message);
                let written = child.as_mut().is_some_and(|c| write(c, &[message]));
                if !written {
                    child = relaunch(child.take(), &launch, &mirror);
                }
            }
            Order::Stop(done) => {
                if let Some(c) = child.take() {
                    finish(c);
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

fn write(child: &mut Child, messages: &[Message]) -> bool {
    let Some(stdin) = child.stdin.as_mut() else { return false };
    let text: String = messages.iter().map(Message::line).collect();
    stdin.write_all(text.as_bytes()).is_ok()
}

fn relaunch(old: Option<Child>, launch: &impl Fn() -> std::io::Result<Child>, mirror: &Mirror) -> Option<Child> {
    if let Some(mut old) = old {
        let _ = old.kill();
        let status = old.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        tracing::error!(watchdog.pid = old.id(), exit = %status, "the watchdog is gone; starting another");
    }
    match launch() {
        Ok(mut c) => {
            if !write(&mut c, &mirror.replay()) {
                tracing::error!("the new watchdog did not take its first messages");
            }
            tracing::info!(watchdog.pid = c.id(), groups = mirror.groups.len(), "watchdog started again");
            Some(c)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the watchdog again; trying again with the next message");
            None
        }
    }
}

/// Close the pipe and wait for the watchdog to act and exit (at most [`STOP_WAIT`]), so it is
/// not left a zombie of a node that goes on living (tests run nodes in-process).
fn finish(mut child: Child) {
    drop(child.stdin.take());
    let until = Instant::now() + STOP_WAIT;
    while Instant::now() < until {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    tracing::warn!(watchdog.pid = child.id(), "the watchdog did not exit after the node closed its pipe; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_message_reads_back_as_itself(ns in any::<u64>(), g in 2..i32::MAX, kind in 0..4u8) {
            let m = match kind {
                0 => Message::Deadline(ns),
                1 => Message::Group(g),
                2 => Message::Sweep(g),
                _ => Message::End(g),
            };
            let line = m.line();
            prop_assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            prop_assert_eq!(Message::parse(line.trim_end()), Ok(m));
        }
    }

    #[test]
    fn the_messages_are_plain_lines_and_no_group_reaches_beyond_itself() {
        assert_eq!(Message::Deadline(12).line(), "deadline 12\n");
        assert_eq!(Message::Group(345).line(), "group 345\n");
        assert_eq!(Message::Sweep(345).line(), "sweep 345\n");
        assert_eq!(Message::End(345).line(), "end 345\n");
        for bad in ["group 1", "group 0", "group -5", "sweep x", "deadline -1", "deadline", "kill 5", ""] {
            assert!(Message::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_marker_names_the_node_and_its_database_and_is_stable() {
        let a = marker("n1", "postgres://rota@db1/rota");
        assert_eq!(a, marker("n1", "postgres://rota@db1/rota"));
        assert!(a.starts_with("n1/") && a.len() == "n1/".len() + 16, "{a}");
        assert_ne!(a, marker("n1", "postgres://rota@db2/rota"), "another database, another marker");
        assert_ne!(a, marker("n2", "postgres://rota@db1/rota"));
        // Fixed: a node upgraded between two lives must find its earlier children.
        assert_eq!(marker("n1", ""), "n1/cbf29ce484222325");
    }

    #[test]
    fn a_new_watchdog_is_told_the_deadline_and_the_groups_still_alive() {
        let mut m = Mirror::default();
        assert!(m.replay().is_empty());
        for msg in
            [Message::Deadline(5), Message::Group(10), Message::Group(11), Message::Sweep(10), Message::Deadline(9)]
        {
            m.apply(msg);
        }
        assert_eq!(m.replay(), vec![Message::Deadline(9), Message::Group(11)]);
    }
}
