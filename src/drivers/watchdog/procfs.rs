//! What the watchdog and a starting node read from `/proc`: every process's parent, process
//! group and start time; whether a process carries a node's marker; and killing, so that a
//! pid reused by an unrelated process is never the one killed.
//!
//! Why the start time: a pid is reused once its process is gone, so a pid alone is not a
//! process. A process is (pid, start time in clock ticks since boot), both in
//! `/proc/<pid>/stat`; the marker in `/proc/<pid>/environ` names a node whatever the pid.
//!
//! Must never: kill the calling process, its node, their process groups, or a group id of 1
//! or less (`kill(-1)` reaches every process).

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Process id.
    pub pid: i32,
    /// Parent's pid.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Start time, in clock ticks after boot: with the pid, one process.
    pub start: u64,
    /// Already dead, waiting for its parent to reap it (nothing left to kill).
    pub zombie: bool,
}

/// Parse a `/proc/<pid>/stat` line: `pid (comm) state ppid pgrp session … starttime …`. The
/// command name may hold spaces and parentheses, so the fields are read after the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let (head, rest) = line.rsplit_once(')')?;
    let pid = head.split_once(" (")?.0.trim().parse().ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, ppid 4, pgrp 5, starttime 22.
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        pid,
        ppid: field(4)?.parse().ok()?,
        pgid: field(5)?.parse().ok()?,
        start: field(22)?.parse().ok()?,
        zombie: matches!(field(3)?, "Z" | "X"),
    })
}

/// The process `pid` now, if there is one.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process now (those that end while being read are left out).
pub fn table() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).filter_map(stat).collect()
}

/// Whether an environment block (`NAME=value` entries, NUL-separated) has exactly `entry`.
pub fn environ_has(environ: &[u8], entry: &[u8]) -> bool {
    environ.split(|b| *b == 0).any(|e| e == entry)
}

/// `MARKER_VAR=marker`, as it appears in an environment block.
fn entry(marker: &str) -> Vec<u8> {
    format!("{}={marker}", super::MARKER_VAR).into_bytes()
}

/// The live processes, other than `spare`, whose environment carries `marker` (a process whose
/// environment cannot be read — another user's, without the right — is not seen).
pub fn marked(marker: &str, spare: &[i32]) -> Vec<Stat> {
    let entry = entry(marker);
    table()
        .into_iter()
        .filter(|s| !s.zombie && !spare.contains(&s.pid))
        .filter(|s| std::fs::read(format!("/proc/{}/environ", s.pid)).is_ok_and(|env| environ_has(&env, &entry)))
        .collect()
}

/// The processes the killing must spare: this one and its parent, and their process groups.
#[derive(Debug, Clone)]
pub struct Spare {
    pids: Vec<i32>,
    groups: Vec<i32>,
}

impl Spare {
    /// This process and `node` (its parent, when it is the watchdog; itself otherwise).
    pub fn me_and(node: i32) -> Spare {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: getpgid has no memory-safety preconditions.
        let groups = [me, node].iter().map(|p| unsafe { libc::getpgid(*p) }).filter(|g| *g > 0).collect();
        Spare { pids: vec![me, node], groups }
    }

    /// The pids spared.
    pub fn pids(&self) -> &[i32] {
        &self.pids
    }
}

/// SIGKILL the process (pid, start) if it is still that process, and its process group if it
/// leads one; true when it was there to kill.
pub fn kill_process(pid: i32, start: u64, spare: &Spare) -> bool {
    let Some(now) = stat(pid) else { return false };
    if now.start != start || now.zombie || spare.pids.contains(&pid) || pid <= 1 {
        return false;
    }
    if now.pgid == pid {
        kill_group(pid, spare);
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// SIGKILL every process of group `pgid`; true when the group existed.
pub fn kill_group(pgid: i32, spare: &Spare) -> bool {
    if pgid <= 1 || spare.groups.contains(&pgid) {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, libc::SIGKILL) == 0 }
}

/// Kill every process (and the group it leads) carrying `marker`, but `spare`, until none is
/// left (at most a few passes: a process may fork while the pass before is killing); how many
/// were killed.
pub fn kill_marked(marker: &str, spare: &Spare) -> usize {
    let mut killed = 0;
    for _ in 0..5 {
        let found = marked(marker, &spare.pids);
        if found.is_empty() {
            break;
        }
        killed += found.iter().filter(|s| kill_process(s.pid, s.start, spare)).count();
    }
    killed
}

/// At a node's start: kill what an earlier life of this node left running — processes whose
/// environment carries this node's `marker` (its watchdog, had it been killed too, could not
/// act). How many were killed.
pub fn sweep(marker: &str) -> usize {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    kill_marked(marker, &Spare::me_and(me))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_the_last_parenthesis() {
        let line = "4242 (we (ird) name) S 17 4240 4240 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(Stat { pid: 4242, ppid: 17, pgid: 4240, start: 987654, zombie: false }));
        let zombie = "7 (sh) Z 1 7 7 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        assert!(parse_stat(zombie).unwrap().zombie);
        assert_eq!(parse_stat("7 (sh) S 1"), None, "cut short");
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn this_process_is_in_the_table_with_its_parent() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = stat(me).unwrap();
        // SAFETY: getppid has no preconditions.
        assert_eq!(s.ppid, unsafe { libc::getppid() });
        assert!(table().contains(&s));
    }

    #[test]
    fn an_environment_has_an_entry_only_whole() {
        let env = b"A=1\0ROTA_SUPERVISOR=n1/00ff\0B=2\0";
        assert!(environ_has(env, b"ROTA_SUPERVISOR=n1/00ff"));
        assert!(!environ_has(env, b"ROTA_SUPERVISOR=n1/00f"), "a prefix is another node");
        assert!(!environ_has(env, b"ROTA_SUPERVISOR=n1"));
        assert!(!environ_has(b"", b"A=1"));
    }

    fn marked_child(marker: &str, script: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .env(super::super::MARKER_VAR, marker)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn wait_marked(marker: &str, n: usize) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while marked(marker, &[]).len() != n {
            assert!(std::time::Instant::now() < until, "expected {n} marked processes");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn marked_processes_are_killed_with_their_groups_and_the_spared_are_not() {
        let marker = format!("test-{}/{:x}", std::process::id(), super::super::monotonic_ns());
        let mut wrapper = marked_child(&marker, "sleep 300 & wait");
        wait_marked(&marker, 2);
        assert!(sweep(&marker) >= 1);
        wrapper.wait().unwrap();
        wait_marked(&marker, 0);

        let mut spared = marked_child(&marker, "exec sleep 300");
        wait_marked(&marker, 1);
        let pid = i32::try_from(spared.id()).unwrap();
        assert_eq!(kill_marked(&marker, &Spare::me_and(pid)), 0, "the spared process lives");
        assert_eq!(sweep(&marker), 1);
        spared.wait().unwrap();
        wait_marked(&marker, 0);
    }
}
