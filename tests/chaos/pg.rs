//! A private PostgreSQL server for the chaos suite and the failover test: its own data directory
//! and loopback port, so a test can crash and restart it without touching the machine's shared
//! server (other tests use that one), and a streaming replica of it ([`PrivatePg::replica_of`])
//! that a test can promote. initdb refuses to run as root, so as root the server runs as the
//! `postgres` OS user; the data directory belongs to that user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diesel::{Connection, PgConnection};

use super::common::{free_port, wait_until};

/// How a restart stops the server.
#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    /// Clean shutdown: sessions are ended, a checkpoint is written.
    #[allow(dead_code)] // the chaos suite's, not the failover test's
    Fast,
    /// A crash as far as PostgreSQL is concerned: recovery replays the WAL at the next start.
    Immediate,
}

pub struct PrivatePg {
    bin: PathBuf,
    // Kept for its Drop (removes the data directory).
    _root: tempfile::TempDir,
    data: PathBuf,
    socket: PathBuf,
    pub port: u16,
    /// Another address it also listens on, reachable from the nodes' network namespaces.
    also_on: Option<String>,
    running: bool,
    /// Options added to every start (`-c name=value …`).
    options: String,
}

/// The directory with initdb and pg_ctl: `ROTA_CHAOS_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("ROTA_CHAOS_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, p)) = versions.pop() {
        return p;
    }
    let out =
        Command::new("pg_config").arg("--bindir").output().expect("no PostgreSQL binaries: set ROTA_CHAOS_PG_BIN");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run a PostgreSQL tool, as `postgres` when we are root.
fn pg_tool(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    cmd.args(args).current_dir("/").output().unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

fn chown_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let out = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).output().unwrap();
    assert!(out.status.success(), "chown postgres {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}

impl PrivatePg {
    /// initdb a fresh cluster and start it, listening on loopback and on `also_on` (the host end
    /// of the nodes' network, whose /24 may connect; trust, like loopback).
    pub fn start(also_on: Option<&str>) -> PrivatePg {
        PrivatePg::create(also_on)
    }

    /// A root directory for a server's data and socket, the server's user's.
    fn root() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::Builder::new().prefix("rota-chaos-pg").tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (data, socket) = (root.path().join("data"), root.path().join("sock"));
        std::fs::create_dir_all(&socket).unwrap();
        (root, data, socket)
    }

    fn create(also_on: Option<&str>) -> PrivatePg {
        let bin = pg_bin();
        let (root, data, socket) = PrivatePg::root();
        std::fs::create_dir_all(&data).unwrap();
        chown_postgres(root.path());
        let out = pg_tool(
            &bin,
            "initdb",
            &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        );
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(host) = also_on {
            let net = host.rsplit_once('.').map(|(a, _)| format!("{a}.0/24")).unwrap_or_else(|| host.to_string());
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            text.push_str(&format!("host all all {net} trust\n"));
            std::fs::write(&hba, text).unwrap();
        }
        let mut pg = PrivatePg {
            bin,
            _root: root,
            data,
            socket,
            port: free_port(),
            also_on: also_on.map(str::to_string),
            running: false,
            options: String::new(),
        };
        pg.start_again();
        pg
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`: it follows the primary from the
    /// backup on), which reaches the primary at loopback port `via` (the primary's, or that of a
    /// proxy in front of it, which the replica then keeps using), started on a port of its own
    /// with `options` added, its `cluster_name` — the name the primary's
    /// `synchronous_standby_names` knows it by — `name`. Read-only until
    /// [`PrivatePg::promote`]. The primary's `postgresql.auto.conf` is copied with the backup.
    #[allow(dead_code)] // the failover test's (tests/failover.rs), not the chaos suite's
    pub fn replica_of(primary: &PrivatePg, via: u16, name: &str, options: &str) -> PrivatePg {
        let (root, data, socket) = PrivatePg::root();
        chown_postgres(root.path());
        let port = via.to_string();
        let out = pg_tool(
            &primary.bin,
            "pg_basebackup",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D", data.to_str().unwrap(), "-R", "-c", "fast"],
        );
        assert!(
            out.status.success(),
            "pg_basebackup: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let options = format!("{options} -c cluster_name={name}");
        let bin = primary.bin.clone();
        let mut pg =
            PrivatePg { bin, _root: root, data, socket, port: free_port(), also_on: None, running: false, options };
        pg.start_again();
        pg
    }

    /// Promote this replica to a primary, and wait until it accepts writes.
    #[allow(dead_code)] // the failover test's (tests/failover.rs), not the chaos suite's
    pub fn promote(&mut self) {
        let out = pg_tool(&self.bin, "pg_ctl", &["-D", self.data.to_str().unwrap(), "-w", "-t", "60", "promote"]);
        assert!(
            out.status.success(),
            "pg_ctl promote: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An admin URL of database `db`, tagged with `application_name` (the audit trigger's writer).
    pub fn url(&self, db: &str, app_name: &str) -> String {
        self.url_at("127.0.0.1", db, app_name)
    }

    /// [`PrivatePg::url`] through `host` (one of the addresses it listens on).
    pub fn url_at(&self, host: &str, db: &str, app_name: &str) -> String {
        format!("postgres://postgres@{host}:{}/{db}?application_name={app_name}", self.port)
    }

    /// Start the (stopped) server on the same port and data directory and wait until it answers.
    pub fn start_again(&mut self) {
        // `fsync=off`: the suite crashes PostgreSQL, never the machine, so the page cache survives.
        let opts = format!(
            "-p {} -k {} -c listen_addresses='{}' -c fsync=off -c max_connections=200 {}",
            self.port,
            self.socket.display(),
            ["127.0.0.1"].into_iter().chain(self.also_on.as_deref()).collect::<Vec<_>>().join(","),
            self.options
        );
        let log = self.data.parent().unwrap().join("sock").join("postgres.log");
        let out = pg_tool(
            &self.bin,
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let url = self.url("postgres", "chaos-harness");
        wait_until(Duration::from_secs(60), "the private PostgreSQL to accept connections", || {
            PgConnection::establish(&url).is_ok()
        });
        self.running = true;
    }

    /// Stop the server.
    pub fn stop(&mut self, mode: StopMode) {
        let m = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let out = pg_tool(&self.bin, "pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", m, "-w", "-t", "60", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.running {
            let _ = pg_tool(&self.bin, "pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        }
    }
}
