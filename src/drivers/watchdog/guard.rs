//! The watchdog process itself (`rota watchdog`, started by its node): read the node's
//! messages, follow the supervised processes, kill them all when the deadline passes or the
//! node is gone.
//!
//! It kills, with SIGKILL:
//! - when the deadline the node sent last passes (the node was paused, hung, or its lease
//!   lapsed; a deadline sent later arms it again), and every group announced while it is past;
//! - when its pipe from the node reaches end-of-file (the node exited or died); then it exits;
//! - on `sweep <pgid>`, what it followed out of that group (the group itself is the node's);
//!   on `end <pgid>` it forgets the group and what came from it.
//!
//! What it kills: every announced process group; every process it saw descend from one, even
//! after it left the group or lost its parent (a scan of `/proc` every [`SCAN_INTERVAL`] while
//! there is anything to follow, every [`YOUNG_SCAN_INTERVAL`] in the [`YOUNG`] after a group
//! is announced, when wrappers fork their workers; each process known by pid and start time);
//! and every process whose environment carries the node's marker. What can escape: a process
//! that leaves its group, drops the marker from its environment (`env -i`, a program that
//! clears it) and loses its parent, all between two scans; one whose environment cannot be
//! read; a process stuck in uninterruptible sleep dies only when it leaves it.
//! docs/design.md#i1.
//!
//! It must not die before it acts: SIGINT, SIGTERM and SIGHUP are ignored (it ends when its
//! node does), it has no death signal, and it is in a process group of its own. It forks
//! nothing, so it leaves no zombie; the processes it kills are reaped by their parents (a
//! paused node's children stay zombies until the node wakes and reaps them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use super::procfs::{self, Spare, Stat};
use super::{monotonic_ns, Message};

/// How often the processes descending from the announced groups are looked for.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// How often in the [`YOUNG`] after a group is announced: a wrapper forks its workers as it
/// starts, and an application stopped soon after it started (a hand-off at a cold start) must
/// not leave a worker behind that left the group before the first scan.
pub const YOUNG_SCAN_INTERVAL: Duration = Duration::from_millis(25);
/// How long a group counts as young.
pub const YOUNG: Duration = Duration::from_secs(1);

/// A process followed: its start time (with its pid, the process) and the group it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    /// Start time (clock ticks after boot).
    pub start: u64,
    /// The announced group it descends from.
    pub root: i32,
}

/// What to do after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Nothing now.
    Wait,
    /// Kill everything: a group was announced after the deadline had passed.
    KillAll,
    /// Kill these followed processes (a group's leader ended with `sweep`).
    Kill(Vec<(i32, Followed)>),
}

/// The watchdog's knowledge: pure, so its rules are tested without processes.
#[derive(Debug, Default)]
pub struct State {
    /// The last deadline sent (`CLOCK_MONOTONIC` ns); None until the node sends one.
    deadline: Option<u64>,
    /// The deadline everything was killed at, so that one passing deadline kills once.
    killed_for: Option<u64>,
    groups: BTreeSet<i32>,
    followed: BTreeMap<i32, Followed>,
    /// Until when the latest group announced is young (`CLOCK_MONOTONIC` ns).
    young_until: u64,
}

impl State {
    /// Take in a message at `now`.
    pub fn apply(&mut self, message: Message, now: u64) -> Act {
        match message {
            Message::Deadline(ns) => {
                self.deadline = Some(ns);
                Act::Wait
            }
            Message::Group(g) => {
                self.groups.insert(g);
                self.young_until = now.saturating_add(duration_ns(YOUNG));
                if self.deadline.is_some_and(|d| now >= d) {
                    Act::KillAll
                } else {
                    Act::Wait
                }
            }
            Message::Sweep(g) => {
                self.groups.remove(&g);
                let (gone, kept) = std::mem::take(&mut self.followed).into_iter().partition(|(_, f)| f.root == g);
                self.followed = kept;
                Act::Kill(gone.into_iter().collect())
            }
            Message::End(g) => {
                self.groups.remove(&g);
                self.followed.retain(|_, f| f.root != g);
                Act::Wait
            }
        }
    }

    /// True when the deadline has passed at `now` and everything was not yet killed for it.
    pub fn due(&self, now: u64) -> bool {
        self.deadline.is_some_and(|d| now >= d) && self.killed_for != self.deadline
    }

    /// Everything to kill, forgotten: the groups and the followed processes. Marks the current
    /// deadline as acted on.
    pub fn take_all(&mut self) -> (BTreeSet<i32>, BTreeMap<i32, Followed>) {
        self.killed_for = self.deadline;
        (std::mem::take(&mut self.groups), std::mem::take(&mut self.followed))
    }

    /// Anything to follow (so `/proc` is worth scanning).
    pub fn following(&self) -> bool {
        !self.groups.is_empty() || !self.followed.is_empty()
    }

    /// How often to scan `/proc` at `now` ([`YOUNG_SCAN_INTERVAL`] while a group is young).
    pub fn scan_interval(&self, now: u64) -> Duration {
        if now < self.young_until {
            YOUNG_SCAN_INTERVAL
        } else {
            SCAN_INTERVAL
        }
    }

    /// How long to wait for a message at `now`: until the deadline, at most a scan interval
    /// while there is something to follow (a minute otherwise).
    pub fn wait(&self, now: u64) -> Duration {
        let idle = if self.following() { self.scan_interval(now) } else { Duration::from_secs(60) };
        match self.deadline {
            Some(d) if !self.due(now) && d > now => idle.min(Duration::from_nanos(d - now)),
            _ => idle,
        }
    }

    /// Follow, from a `/proc` table, every process of an announced group and every descendant
    /// of a followed process (but `spare`); forget the followed that are gone.
    pub fn adopt(&mut self, table: &[Stat], spare: &[i32]) {
        let live: HashMap<i32, &Stat> = table.iter().map(|s| (s.pid, s)).collect();
        self.followed.retain(|pid, f| live.get(pid).is_some_and(|s| s.start == f.start && !s.zombie));
        for s in table {
            if self.groups.contains(&s.pgid) && !s.zombie && !spare.contains(&s.pid) {
                self.followed.entry(s.pid).or_insert(Followed { start: s.start, root: s.pgid });
            }
        }
        let mut children: HashMap<i32, Vec<&Stat>> = HashMap::new();
        for s in table {
            children.entry(s.ppid).or_default().push(s);
        }
        let mut todo: Vec<i32> = self.followed.keys().copied().collect();
        while let Some(parent) = todo.pop() {
            let Some(root) = self.followed.get(&parent).map(|f| f.root) else { continue };
            for c in children.get(&parent).into_iter().flatten() {
                if c.zombie || spare.contains(&c.pid) || self.followed.contains_key(&c.pid) {
                    continue;
                }
                self.followed.insert(c.pid, Followed { start: c.start, root });
                todo.push(c.pid);
            }
        }
    }
}

/// `rota watchdog`: run until the node's pipe (stdin) ends, then kill and exit.
pub fn run(marker: &str) -> ExitCode {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // SAFETY: getppid has no preconditions.
    let node = unsafe { libc::getppid() };
    let spare = Spare::me_and(node);
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::Builder::new().name("watchdog-pipe".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match Message::parse(&line) {
                Ok(m) => {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watchdog: a message from the node could not be read"),
            }
        }
        // Dropping the sender is the end of the pipe.
    });
    if let Err(e) = reader {
        tracing::error!(error = %e, "watchdog: cannot read from the node");
        return ExitCode::FAILURE;
    }
    tracing::debug!(node.pid = node, watchdog.marker = marker, "watchdog watching");
    let mut state = State::default();
    let mut scanned = 0u64;
    loop {
        let message = rx.recv_timeout(state.wait(monotonic_ns()));
        let mut next = match message {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                kill_all(&mut state, marker, &spare, node, "the node exited");
                return ExitCode::SUCCESS;
            }
        };
        // Every message waiting first: a newer deadline may have come after the one passing.
        while let Some(m) = next {
            if let Message::Sweep(_) = m {
                // What the group's last members forked since the last scan is followed too.
                state.adopt(&procfs::table(), spare.pids());
            }
            match state.apply(m, monotonic_ns()) {
                Act::Wait => {}
                Act::KillAll => kill_all(&mut state, marker, &spare, node, "a group began after the deadline"),
                Act::Kill(followed) => {
                    let n = followed.iter().filter(|(pid, f)| procfs::kill_process(*pid, f.start, &spare)).count();
                    if n > 0 {
                        tracing::info!(
                            node.pid = node,
                            killed = n,
                            "watchdog: killed what had left the group of an ended process"
                        );
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        let now = monotonic_ns();
        if state.due(now) {
            kill_all(&mut state, marker, &spare, node, "the node's membership deadline passed");
        } else if state.following() && now.saturating_sub(scanned) >= duration_ns(state.scan_interval(now)) {
            scanned = now;
            state.adopt(&procfs::table(), spare.pids());
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Kill every announced group, every followed process and every process carrying the marker.
fn kill_all(state: &mut State, marker: &str, spare: &Spare, node: i32, why: &str) {
    // The latest descendants first, while they can still be told from others by their parents.
    if state.following() {
        state.adopt(&procfs::table(), spare.pids());
    }
    let (groups, followed) = state.take_all();
    let groups_killed = groups.iter().filter(|g| procfs::kill_group(**g, spare)).count();
    let followed_killed = followed.iter().filter(|(pid, f)| procfs::kill_process(**pid, f.start, spare)).count();
    let marked_killed = procfs::kill_marked(marker, spare);
    if groups_killed + followed_killed + marked_killed > 0 {
        tracing::warn!(
            node.pid = node,
            reason = why,
            groups = groups_killed,
            processes = followed_killed,
            marked = marked_killed,
            "watchdog: killed the node's supervised processes"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: i32, ppid: i32, pgid: i32) -> Stat {
        Stat { pid, ppid, pgid, start: u64::try_from(pid).unwrap() * 10, zombie: false }
    }

    #[test]
    fn a_passing_deadline_kills_once_and_a_later_one_arms_it_again() {
        let mut s = State::default();
        assert!(!s.due(u64::MAX), "nothing is due before the node sends a deadline");
        s.apply(Message::Deadline(100), 0);
        assert_eq!(s.apply(Message::Group(7), 50), Act::Wait);
        assert!(!s.due(99));
        assert!(s.due(100));
        let (groups, _) = s.take_all();
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), vec![7]);
        assert!(!s.due(150), "killed once for this deadline");
        assert_eq!(s.apply(Message::Group(8), 150), Act::KillAll, "a group announced past the deadline");
        s.apply(Message::Deadline(300), 160);
        assert!(!s.due(299));
        assert!(s.due(300), "renewed, then passed again");
        s.apply(Message::Deadline(0), 310);
        assert!(s.due(310), "fenced: passed at once");
    }

    #[test]
    fn the_wait_ends_at_the_deadline_or_the_next_scan() {
        let mut s = State::default();
        assert_eq!(s.wait(0), Duration::from_secs(60));
        s.apply(Message::Deadline(5_000_000), 0);
        assert_eq!(s.wait(0), Duration::from_millis(5));
        s.apply(Message::Deadline(60_000_000_000), 0);
        s.apply(Message::Group(7), 0);
        assert_eq!(s.wait(0), YOUNG_SCAN_INTERVAL, "a group just announced");
        let later = duration_ns(YOUNG);
        assert_eq!(s.wait(later), SCAN_INTERVAL);
        s.apply(Message::Group(8), later);
        assert_eq!(s.wait(later), YOUNG_SCAN_INTERVAL, "another one");
    }

    #[test]
    fn descendants_are_followed_after_they_leave_the_group_or_lose_their_parent() {
        let mut s = State::default();
        s.apply(Message::Deadline(u64::MAX), 0);
        s.apply(Message::Group(10), 0);
        // 10 leads the group; 11 is in it; 12 (child of 11) did setsid; 13 is 12's child; 20
        // is someone else's; 1 is init.
        let table =
            [stat(1, 0, 1), stat(10, 1, 10), stat(11, 10, 10), stat(12, 11, 12), stat(13, 12, 12), stat(20, 1, 20)];
        s.adopt(&table, &[]);
        let followed: Vec<i32> = s.followed.keys().copied().collect();
        assert_eq!(followed, vec![10, 11, 12, 13]);
        // 11 died; 12 was reparented to init: still followed, and its new child too.
        let table =
            [stat(1, 0, 1), stat(10, 1, 10), stat(12, 1, 12), stat(13, 12, 12), stat(14, 12, 12), stat(20, 1, 20)];
        s.adopt(&table, &[]);
        let followed: Vec<i32> = s.followed.keys().copied().collect();
        assert_eq!(followed, vec![10, 12, 13, 14]);
        // 13's pid reused by another process (another start time): not that process any more.
        let mut reused = stat(13, 1, 30);
        reused.start = 999;
        s.adopt(&[stat(10, 1, 10), stat(12, 1, 12), reused, stat(14, 12, 12)], &[]);
        assert!(!s.followed.contains_key(&13));
        // The spared are never followed.
        let mut t = State::default();
        t.apply(Message::Group(10), 0);
        t.adopt(&[stat(10, 1, 10), stat(11, 10, 10)], &[11]);
        assert_eq!(t.followed.keys().copied().collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn a_sweep_kills_what_came_from_its_group_and_an_end_forgets_it() {
        let mut s = State::default();
        s.apply(Message::Deadline(u64::MAX), 0);
        for g in [10, 20, 30] {
            s.apply(Message::Group(g), 0);
        }
        let table = [stat(10, 1, 10), stat(11, 10, 11), stat(20, 1, 20), stat(21, 20, 21), stat(30, 1, 30)];
        s.adopt(&table, &[]);
        let Act::Kill(gone) = s.apply(Message::Sweep(10), 0) else { panic!("expected a kill") };
        assert_eq!(gone.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(s.apply(Message::End(20), 0), Act::Wait);
        let (groups, followed) = s.take_all();
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), vec![30]);
        assert_eq!(followed.keys().copied().collect::<Vec<_>>(), vec![30], "an ended group's descendants are left");
    }
}
