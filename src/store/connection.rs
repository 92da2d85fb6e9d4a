//! One connection type for both backends, and the pool manager that opens it.
//!
//! Why a manager of our own: diesel's derived `MultiConnection` manager reports a refused
//! PostgreSQL connection as "Invalid connection url for multiconnection" after r2d2's timeout.
//! Users need the real error (refused, bad password, no such database), so we pick the backend
//! from the URL scheme ourselves and keep the driver's message.
//!
//! Every new connection is prepared the same way: PostgreSQL sessions run in UTC (the schema
//! stores `TIMESTAMP` in UTC); SQLite runs in WAL mode with a busy timeout so concurrent readers
//! and one writer do not fail with "database is locked".

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ManageConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;

/// A connection to either backend; shared queries go through this type, backend-specific ones
/// match on it.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    /// PostgreSQL (a cluster).
    Postgresql(PgConnection),
    /// SQLite (the embedded default).
    Sqlite(SqliteConnection),
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        })
    }
}

/// A parsed database URL.
#[derive(Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// `postgres://…` or `postgresql://…`, passed to libpq as is.
    Postgres(String),
    /// `sqlite://PATH` or `sqlite:PATH`: a file path.
    Sqlite(PathBuf),
}

/// A URL that names no backend we support.
#[derive(Debug, thiserror::Error)]
#[error("unsupported database URL `{0}`: use postgres://user@host:5432/db or sqlite://path/to/file.db")]
pub struct BadUrl(String);

impl DbUrl {
    /// Parse a URL; the scheme picks the backend.
    pub fn parse(url: &str) -> Result<DbUrl, BadUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(url.to_string()));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"));
        match path {
            Some(p) if !p.is_empty() && p != ":memory:" => Ok(DbUrl::Sqlite(PathBuf::from(p))),
            _ => Err(BadUrl(redact(url))),
        }
    }

    /// The backend this URL names.
    pub fn backend(&self) -> Backend {
        match self {
            DbUrl::Postgres(_) => Backend::Postgres,
            DbUrl::Sqlite(_) => Backend::Sqlite,
        }
    }
}

impl fmt::Display for DbUrl {
    /// Printable form, with any password hidden: safe for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUrl::Postgres(u) => f.write_str(&redact(u)),
            DbUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
        }
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The URL with its secrets hidden: the password of `scheme://user:password@host…` and the value
/// of every query parameter whose name contains `password` (`?password=`, `sslpassword=`: libpq
/// takes both from the URL). Safe for logs and error messages; the user, host and database stay,
/// so an operator can tell which server is meant (docs/security.md).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The last `@` ends the userinfo: a password may hold an unencoded `@`, and hiding too much
    // is the safe side.
    let mut out = format!("{scheme}://");
    match before_query.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            out.push_str(host);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if secret_key(k) => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// A query parameter that holds a secret: its name, percent-decoded, contains `password`.
fn secret_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                decoded.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).to_ascii_lowercase().contains("password")
}

/// TCP settings libpq applies to every PostgreSQL connection of the node unless the URL sets
/// them: a server that stops answering — a crashed host, a cut network, a hung failover — is
/// seen within about ten seconds instead of the operating system's two hours (keepalives) or
/// fifteen minutes (unacknowledged data), and the connection is replaced (docs/operations.md#ha).
pub const PG_LIVENESS: [(&str, &str); 5] = [
    ("keepalives", "1"),
    ("keepalives_idle", "5"),
    ("keepalives_interval", "2"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

/// `url` with [`PG_LIVENESS`] and a `connect_timeout` of `connect` (whole seconds, at least 2,
/// libpq's minimum) added where the URL does not set them: an operator's own value wins.
pub fn with_liveness(url: &str, connect: Duration) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let set = |key: &str| query.split('&').any(|kv| kv.split('=').next() == Some(key));
    let timeout = connect.as_secs().max(2).to_string();
    let mut out = url.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (key, value) in PG_LIVENESS.iter().copied().chain([("connect_timeout", timeout.as_str())]) {
        if !set(key) {
            out.push(sep);
            out.push_str(key);
            out.push('=');
            out.push_str(value);
            sep = '&';
        }
    }
    out
}

/// Opening or checking a connection failed; the message is the driver's, with the URL redacted.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Could not open a connection.
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// redacted URL
        url: String,
        /// the driver's error
        message: String,
    },
    /// A query on an open connection failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// r2d2 manager that opens [`AnyConnection`]s for one URL.
#[derive(Debug, Clone)]
pub struct Manager {
    url: DbUrl,
    /// How long to wait: PostgreSQL's connect timeout, SQLite's busy timeout.
    wait: Duration,
    /// Where its connections record the statements the database answered.
    answered: Option<std::sync::Arc<super::Answered>>,
}

/// Records each statement that finished without an error ([`super::Answered`]).
struct Recorder(std::sync::Arc<super::Answered>);

impl diesel::connection::Instrumentation for Recorder {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let diesel::connection::InstrumentationEvent::FinishQuery { error: None, .. } = event {
            self.0.record();
        }
    }
}

impl Manager {
    /// A manager for `url`.
    pub fn new(url: DbUrl, wait: Duration) -> Self {
        Self { url, wait, answered: None }
    }

    /// Its connections record the statements the database answered in `answered`.
    pub fn recording(mut self, answered: std::sync::Arc<super::Answered>) -> Self {
        self.answered = Some(answered);
        self
    }

    /// Open and prepare one connection.
    pub fn open(&self) -> Result<AnyConnection, ConnectError> {
        let mut conn = self.open_unrecorded()?;
        if let Some(answered) = &self.answered {
            conn.set_instrumentation(Recorder(answered.clone()));
        }
        Ok(conn)
    }

    fn open_unrecorded(&self) -> Result<AnyConnection, ConnectError> {
        let fail = |message: String| ConnectError::Connect { url: self.url.to_string(), message };
        match &self.url {
            DbUrl::Postgres(url) => {
                let url = with_liveness(url, self.wait);
                let mut conn = PgConnection::establish(&url).map_err(|e| fail(e.to_string().trim().to_string()))?;
                // An `application_name` the operator put in the URL (e.g. one per node, to tell
                // the nodes apart in `pg_stat_activity` or an audit trigger) is kept.
                //
                // No bitmap scans: every query of Rota's reads an ordered index, mostly with a
                // LIMIT. After a burst of inserts, before autovacuum has analyzed the table, the
                // planner guesses a few dozen pending rows and plans the claim as a bitmap scan
                // of *every* pending row plus a sort — measured 58–133 ms per claim of 256 over
                // 150 k pending rows, against 3–4 ms for the ordered index scan it then picks
                // (docs/benchmarks.md). This setting applies to Rota's own sessions only.
                let setup = if url.contains("application_name=") {
                    "SET TIME ZONE 'UTC'; SET enable_bitmapscan = off"
                } else {
                    "SET TIME ZONE 'UTC'; SET enable_bitmapscan = off; SET application_name = 'rota'"
                };
                conn.batch_execute(setup).map_err(|e| fail(e.to_string()))?;
                Ok(AnyConnection::Postgresql(conn))
            }
            DbUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| fail(format!("cannot create directory {}: {e}", dir.display())))?;
                }
                let path_str = path.to_str().ok_or_else(|| fail("the path is not valid UTF-8".into()))?;
                let mut conn = SqliteConnection::establish(path_str).map_err(|e| fail(e.to_string()))?;
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON;",
                    self.wait.as_millis()
                ))
                .map_err(|e| fail(e.to_string()))?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<AnyConnection, ConnectError> {
        self.open()
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), ConnectError> {
        match conn {
            AnyConnection::Postgresql(c) => c.ping()?,
            AnyConnection::Sqlite(c) => c.ping()?,
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        match conn {
            AnyConnection::Postgresql(c) => c.is_broken(),
            AnyConnection::Sqlite(c) => c.is_broken(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_backends() {
        assert_eq!(DbUrl::parse("postgres://u@h/db").unwrap().backend(), Backend::Postgres);
        assert_eq!(DbUrl::parse("postgresql://u@h/db").unwrap().backend(), Backend::Postgres);
        assert_eq!(DbUrl::parse("sqlite://data/x.db").unwrap(), DbUrl::Sqlite("data/x.db".into()));
        assert_eq!(DbUrl::parse("sqlite:///abs/x.db").unwrap(), DbUrl::Sqlite("/abs/x.db".into()));
        assert!(DbUrl::parse("mysql://x").is_err());
        assert!(DbUrl::parse("sqlite://").is_err());
        assert!(DbUrl::parse("sqlite::memory:").is_err());
    }

    #[test]
    fn liveness_settings_are_added_unless_the_url_sets_them() {
        let url = with_liveness("postgres://u@h/db", Duration::from_millis(5_000));
        assert_eq!(
            url,
            "postgres://u@h/db?keepalives=1&keepalives_idle=5&keepalives_interval=2&keepalives_count=3\
             &tcp_user_timeout=10000&connect_timeout=5"
        );
        let url = with_liveness(
            "postgres://u@h1:1,h2:2/db?target_session_attrs=read-write&keepalives_idle=60",
            Duration::ZERO,
        );
        assert!(
            url.starts_with(
                "postgres://u@h1:1,h2:2/db?target_session_attrs=read-write&keepalives_idle=60&keepalives=1&"
            ),
            "{url}"
        );
        assert_eq!(url.matches("keepalives_idle").count(), 1, "the operator's value wins: {url}");
        assert!(url.ends_with("&connect_timeout=2"), "libpq's minimum: {url}");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://bob:s3cret@h:5432/db"), "postgres://bob:***@h:5432/db");
        assert_eq!(redact("postgres://bob@h/db"), "postgres://bob@h/db");
        assert_eq!(redact("postgres://bob@h/db?password=s3cret"), "postgres://bob@h/db?password=***");
        assert_eq!(
            redact("postgres://h/db?user=bob&sslmode=verify-full&sslpassword=k3y&PassWord=x&pass%77ord=y"),
            "postgres://h/db?user=bob&sslmode=verify-full&sslpassword=***&PassWord=***&pass%77ord=***"
        );
        assert_eq!(redact("postgres://bob:p@ss@h/db"), "postgres://bob:***@h/db");
        assert_eq!(redact("postgres://bob:pw@h1:1,h2:2/db?x=1"), "postgres://bob:***@h1:1,h2:2/db?x=1");
        let err = DbUrl::parse("mysql://bob:s3cret@h").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        let shown = DbUrl::parse("postgres://bob@h/db?password=s3cret").unwrap().to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    mod property {
        use super::super::redact;
        use proptest::prelude::*;

        /// A secret no other part of the generated URL can spell (those are lowercase words).
        fn secret() -> impl Strategy<Value = String> {
            "[A-Z0-9][A-Za-z0-9!$*()_~.:@/-]{5,24}".prop_map(|s| format!("Q{s}"))
        }

        proptest! {
            #[test]
            fn the_secret_never_appears(
                secret in secret(),
                user in "[a-z]{1,8}",
                host in "[a-z]{1,8}",
                db in "[a-z]{1,8}",
                where_ in 0..4usize,
                key in prop::sample::select(vec!["password", "sslpassword", "PASSWORD", "db_password", "pass%77ord"]),
                before in prop::collection::vec("[a-z]{1,6}=[a-z0-9]{0,6}", 0..3),
                after in prop::collection::vec("[a-z]{1,6}=[a-z0-9]{0,6}", 0..3),
            ) {
                let mut params = before.clone();
                // The secret in the userinfo, in a query parameter, or both.
                let userinfo = if where_ % 2 == 0 { format!("{user}:{secret}@") } else { format!("{user}@") };
                if where_ >= 1 {
                    params.push(format!("{key}={}", secret.replace(['&', '#'], "")));
                }
                params.extend(after.iter().cloned());
                let query = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
                let url = format!("postgres://{userinfo}{host}:5432/{db}{query}");
                let shown = redact(&url);
                prop_assert!(!shown.contains(&secret), "{} -> {}", url, shown);
                // What is not secret stays, so the operator can tell which server is meant.
                let host_port = format!("{host}:5432/{db}");
                prop_assert!(shown.contains(&host_port), "{} -> {}", url, shown);
            }
        }
    }
}
