//! Settings: one struct tree, its defaults, and how they are layered and validated.
//!
//! Why: a node must start from `config/default.toml`'s values with no file at all, and every
//! mistake in a file, an environment variable or a flag must stop it at start with the key named.
//! Layers, later wins: built-in defaults → `--config FILE` → `ROTA__SECTION__KEY` environment
//! variables → command-line flags. `config/default.toml` documents every key and is kept equal to
//! [`Config::default`] by a test.
//!
//! Must never: read settings from anywhere else, or accept a key it does not know.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything a node can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity and local files of this node.
    pub node: NodeConfig,
    /// The queue database.
    pub database: DatabaseConfig,
    /// The HTTP server (health, metrics, API).
    pub server: ServerConfig,
    /// Who is in the cluster.
    pub membership: MembershipConfig,
    /// The admin API.
    pub api: ApiConfig,
    /// The dispatcher.
    pub dispatch: DispatchConfig,
    /// What the drivers' commands get from the node.
    pub drivers: DriversConfig,
    /// `[alarms]`
    pub alarms: AlarmsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// A token's rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read everything.
    Read,
    /// Read and change everything.
    Admin,
}

/// One bearer token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (recorded as the actor of what it does; never the token itself).
    pub name: String,
    /// The secret.
    pub token: String,
    /// `read` or `admin`.
    pub scope: Scope,
}

/// Every token must be able to match a request and to match only one entry: a header carries
/// visible ASCII only, a client strips the spaces around a token, and two entries with one
/// secret would leave its scope to the order of the list. Messages name the token, never its
/// secret.
fn check_tokens(tokens: &[TokenConfig]) -> Result<(), String> {
    for (i, t) in tokens.iter().enumerate() {
        if t.name.is_empty() {
            return Err(format!("token {} has an empty name", i + 1));
        }
        if t.token.len() < 16 {
            return Err(format!("token `{}` is shorter than 16 characters", t.name));
        }
        if !t.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "token `{}` holds a space, a control or a non-ASCII character: an Authorization header \
                 can only carry visible ASCII, so it could never match",
                t.name
            ));
        }
        if let Some(first) = tokens[..i].iter().find(|o| o.token == t.token) {
            return Err(format!(
                "tokens `{}` and `{}` have the same secret: give each its own (a request must map to one \
                 scope)",
                first.name, t.name
            ));
        }
    }
    Ok(())
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("TokenConfig").field("name", &self.name).field("scope", &self.scope).finish_non_exhaustive()
    }
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer tokens. None configured: the API answers only on a loopback address.
    pub tokens: Vec<TokenConfig>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A list response is cut (with its `next` link) where its JSON would pass this many bytes.
    pub max_response_bytes: usize,
    /// Database connections of the API's own pool: the API's requests use only these, so any
    /// number of them never delays the node's dispatch or membership (docs/api.md#load).
    pub pool_size: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { tokens: Vec::new(), max_body_bytes: 256 * 1024, max_response_bytes: 4 * 1024 * 1024, pool_size: 4 }
    }
}

/// `[dispatch]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Read the queue at least this often, even without a notification.
    pub poll_interval_ms: u64,
    /// Pending rows read (and at most claimed) per round.
    pub batch_size: u32,
    /// Jobs (tasks without an application) run at once on this node.
    pub max_concurrency: u32,
    /// Wake on PostgreSQL `NOTIFY rota_task` (ignored on SQLite).
    pub listen_notify: bool,
    /// Default interval between status checks of an owned application.
    pub monitor_interval_ms: u64,
    /// How often owned applications, departed owners' tasks and retention are reconciled.
    pub reconcile_interval_ms: u64,
    /// First retry delay; doubles with each attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Finished tasks older than this are deleted (0 keeps them forever).
    pub retention_hours: u64,
    /// PostgreSQL: `VACUUM` the task table when autovacuum is off for it and dead row versions
    /// pile up (a node that finished many tasks looks at most once per reconciliation).
    pub vacuum: bool,
    /// Most bytes of parameters one fan-out writes into its children's rows together; a job
    /// over it fails (422 at the API) instead of writing them (docs/jobs.md#caps).
    pub fan_out_max_bytes: u64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1_000,
            batch_size: 256,
            max_concurrency: 64,
            listen_notify: true,
            monitor_interval_ms: 5_000,
            reconcile_interval_ms: 5_000,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            retention_hours: 168,
            vacuum: true,
            fan_out_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[alarms]` (docs/alarms.md)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmsConfig {
    /// Look for new events and due deliveries this often.
    pub poll_interval_ms: u64,
    /// Time limit of one attempt, connecting included, unless the channel sets `timeout_ms`.
    pub timeout_ms: u64,
    /// First retry delay; doubles with each attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Attempts before a delivery is `failed` for good.
    pub max_attempts: u32,
    /// How long a missing event id holds a channel's cursor back (a transaction still writing it).
    pub gap_grace_ms: u64,
    /// Write a `queue.stalled` event when the oldest due pending task is older than this many
    /// seconds (0: never).
    pub pending_alarm_s: u64,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1_000,
            timeout_ms: 10_000,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            max_attempts: 12,
            gap_grace_ms: 5_000,
            pending_alarm_s: 300,
        }
    }
}

/// `[drivers]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DriversConfig {
    /// Names of the node's environment variables that `process` and `shell` commands inherit
    /// beyond `PATH`, `HOME`, `LANG`, `LC_ALL` and `TZ` (docs/drivers.md): a command gets nothing
    /// else of the node's environment, which may hold its credentials.
    pub pass_env: Vec<String>,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node id; empty means a stable id generated once and kept in `{data_dir}/node-id`.
    pub id: String,
    /// Directory for the node's local files (node id, the default SQLite database).
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { id: String::new(), data_dir: PathBuf::from("./data") }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://PATH`; empty means `sqlite://{node.data_dir}/rota.db`.
    pub url: String,
    /// Connections of the node's own pool (dispatch, membership, schedules); the API has its
    /// own (`api.pool_size`).
    pub pool_size: u32,
    /// How long to wait for a pooled connection before an operation fails.
    pub connect_timeout_ms: u64,
    /// Apply pending migrations when `serve` starts.
    pub migrate: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), pool_size: 8, connect_timeout_ms: 5_000, migrate: true }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds (port 0 picks a free port; the bound address is logged).
    pub listen: String,
    /// HTTP worker threads.
    pub workers: usize,
    /// Seconds a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), workers: 2, shutdown_timeout_s: 10 }
    }
}

/// Which membership backend a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipBackend {
    /// This node alone, guarded by a lock row in the database.
    Standalone,
    /// Leases and watches in etcd.
    Etcd,
}

impl FromStr for MembershipBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standalone" => Ok(Self::Standalone),
            "etcd" => Ok(Self::Etcd),
            other => Err(format!("unknown membership backend `{other}` (use `standalone` or `etcd`)")),
        }
    }
}

/// `[membership]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// `standalone` or `etcd`.
    pub backend: MembershipBackend,
    /// Standalone: how often the lock row's heartbeat is written.
    pub heartbeat_interval_ms: u64,
    /// Standalone: a lock whose heartbeat is older than this may be taken over; the holder
    /// fences itself after the same time without a successful heartbeat.
    pub lock_ttl_ms: u64,
    /// etcd endpoints, `host:port`.
    pub etcd_endpoints: Vec<String>,
    /// Cluster name: the etcd key prefix `/{cluster}/`.
    pub cluster: String,
    /// etcd lease TTL in seconds (keep-alive every TTL/3).
    pub lease_ttl_s: u64,
    /// This node's labels (`dc`, `zone`, …), matched by selectors.
    pub labels: BTreeMap<String, String>,
    /// This node's weight on the ring (0 = takes no keys).
    pub weight: u32,
    /// Virtual points per unit of weight on the ring.
    pub vnodes: u32,
    /// Address other nodes and clients reach this node at; empty means the bound listen address.
    pub advertise_addr: String,
    /// etcd: a view that adds members places applications once no member change has been seen
    /// for this many milliseconds (docs/design.md, "Settled cold start").
    pub settle_ms: u64,
    /// etcd: … or at the latest this many milliseconds after the first change still waiting.
    pub settle_max_ms: u64,
    /// etcd: a node whose database has not answered for this many milliseconds leaves the ring
    /// until it answers again (docs/design.md, "Health-gated membership").
    pub database_outage_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            backend: MembershipBackend::Standalone,
            heartbeat_interval_ms: 3_000,
            lock_ttl_ms: 10_000,
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
            cluster: "rota".into(),
            lease_ttl_s: 5,
            labels: BTreeMap::new(),
            weight: 1,
            vnodes: 1024,
            advertise_addr: String::new(),
            settle_ms: 2_000,
            settle_max_ms: 10_000,
            database_outage_ms: 10_000,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format `{other}` (use `text` or `json`)")),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `rota=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// Values given on the command line; only the ones set override the other layers.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--database-url`
    pub database_url: Option<String>,
    /// `--listen`
    pub listen: Option<String>,
    /// `--node-id`
    pub node_id: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--no-migrate`
    pub no_migrate: bool,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
    /// `--membership`
    pub membership: Option<MembershipBackend>,
    /// `--etcd-endpoints`
    pub etcd_endpoints: Option<Vec<String>>,
    /// `--cluster`
    pub cluster: Option<String>,
    /// `--label key=value`, repeatable (replaces the configured labels when given)
    pub labels: Option<BTreeMap<String, String>>,
    /// `--weight`
    pub weight: Option<u32>,
    /// `--lease-ttl`
    pub lease_ttl_s: Option<u64>,
    /// `--advertise-addr`
    pub advertise_addr: Option<String>,
    /// `--pass-env NAME`, repeatable (replaces the configured list when given)
    pub pass_env: Option<Vec<String>>,
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` points at nothing.
    #[error("config file {path} does not exist (check --config)")]
    MissingFile {
        /// the path given
        path: PathBuf,
    },
    /// A key is unknown or a value has the wrong type (from figment, which names key and source).
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value has the right type but is not acceptable.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// dotted key, e.g. `database.pool_size`
        key: &'static str,
        /// what is wrong and what to do
        message: String,
    },
}

impl Config {
    /// Layer defaults, the optional file, `ROTA__…` environment variables and flags; validate.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_env(file, overrides, Env::prefixed("ROTA__").split("__"))
    }

    fn load_with_env(file: Option<&Path>, overrides: &Overrides, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile { path: path.to_path_buf() });
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(env);
        let mut config: Config = figment.extract().map_err(|e| {
            // figment reports every error it found; one per line reads best.
            ConfigError::Parse(e.into_iter().map(describe).collect::<Vec<_>>().join("; "))
        })?;
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.database_url {
            self.database.url = v.clone();
        }
        if let Some(v) = &o.listen {
            self.server.listen = v.clone();
        }
        if let Some(v) = &o.node_id {
            self.node.id = v.clone();
        }
        if let Some(v) = &o.data_dir {
            self.node.data_dir = v.clone();
        }
        if o.no_migrate {
            self.database.migrate = false;
        }
        if let Some(v) = o.log_format {
            self.log.format = v;
        }
        if let Some(v) = o.membership {
            self.membership.backend = v;
        }
        if let Some(v) = &o.etcd_endpoints {
            self.membership.etcd_endpoints = v.clone();
        }
        if let Some(v) = &o.cluster {
            self.membership.cluster = v.clone();
        }
        if let Some(v) = &o.labels {
            self.membership.labels = v.clone();
        }
        if let Some(v) = o.weight {
            self.membership.weight = v;
        }
        if let Some(v) = o.lease_ttl_s {
            self.membership.lease_ttl_s = v;
        }
        if let Some(v) = &o.advertise_addr {
            self.membership.advertise_addr = v.clone();
        }
        if let Some(v) = &o.pass_env {
            self.drivers.pass_env = v.clone();
        }
    }

    /// Check values whose type is right but whose content may not be.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid { key, message: message.into() }
        }
        if !self.node.id.is_empty() && !crate::domain::NodeId::is_valid(&self.node.id) {
            return Err(invalid(
                "node.id",
                format!("`{}` may only contain letters, digits, `-`, `_` and `.` (at most 128)", self.node.id),
            ));
        }
        if !self.database.url.is_empty() {
            crate::store::DbUrl::parse(&self.database.url).map_err(|e| invalid("database.url", e.to_string()))?;
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        if self.database.connect_timeout_ms == 0 {
            return Err(invalid("database.connect_timeout_ms", "must be at least 1"));
        }
        self.server.listen.parse::<SocketAddr>().map_err(|e| {
            invalid("server.listen", format!("`{}` is not an address like 127.0.0.1:8080: {e}", self.server.listen))
        })?;
        if self.server.workers == 0 {
            return Err(invalid("server.workers", "must be at least 1"));
        }
        let m = &self.membership;
        if m.heartbeat_interval_ms == 0 {
            return Err(invalid("membership.heartbeat_interval_ms", "must be at least 1"));
        }
        if m.lock_ttl_ms < 1_000 {
            return Err(invalid(
                "membership.lock_ttl_ms",
                format!(
                    "must be at least 1000 ms (the database stops taking a node's writes {} ms before its lock \
                     runs out), got {} ms",
                    crate::membership::DEADLINE_MARGIN.as_millis(),
                    m.lock_ttl_ms
                ),
            ));
        }
        if m.lock_ttl_ms < 2 * m.heartbeat_interval_ms {
            return Err(invalid(
                "membership.lock_ttl_ms",
                format!(
                    "must be at least twice membership.heartbeat_interval_ms ({} ms), got {} ms",
                    m.heartbeat_interval_ms, m.lock_ttl_ms
                ),
            ));
        }
        if m.backend == MembershipBackend::Etcd && m.etcd_endpoints.is_empty() {
            return Err(invalid("membership.etcd_endpoints", "at least one host:port is needed with the etcd backend"));
        }
        if m.cluster.is_empty() || m.cluster.contains('/') {
            return Err(invalid("membership.cluster", format!("`{}` must be non-empty and contain no `/`", m.cluster)));
        }
        if m.lease_ttl_s < 2 {
            return Err(invalid(
                "membership.lease_ttl_s",
                format!("etcd's minimum lease is 2 s, got {}", m.lease_ttl_s),
            ));
        }
        if m.vnodes == 0 {
            return Err(invalid("membership.vnodes", "must be at least 1"));
        }
        if m.settle_max_ms < m.settle_ms {
            return Err(invalid(
                "membership.settle_max_ms",
                format!("must be at least membership.settle_ms ({} ms), got {} ms", m.settle_ms, m.settle_max_ms),
            ));
        }
        if m.database_outage_ms < 1_000 {
            return Err(invalid(
                "membership.database_outage_ms",
                format!(
                    "must be at least 1000 ms (a node would leave the ring over a slow query), got {} ms",
                    m.database_outage_ms
                ),
            ));
        }
        if !m.advertise_addr.is_empty() {
            m.advertise_addr.parse::<SocketAddr>().map_err(|e| {
                invalid("membership.advertise_addr", format!("`{}` is not host:port: {e}", m.advertise_addr))
            })?;
        }
        check_tokens(&self.api.tokens).map_err(|m| invalid("api.tokens", m))?;
        if self.api.max_response_bytes == 0 {
            return Err(invalid("api.max_response_bytes", "must be at least 1"));
        }
        if self.api.pool_size == 0 {
            return Err(invalid("api.pool_size", "must be at least 1"));
        }
        if self.api.max_body_bytes == 0 {
            return Err(invalid("api.max_body_bytes", "must be at least 1"));
        }
        let listen: SocketAddr = self.server.listen.parse().map_err(|e| invalid("server.listen", format!("{e}")))?;
        if self.api.tokens.is_empty() && !listen.ip().is_loopback() {
            return Err(invalid(
                "server.listen",
                format!(
                    "{listen} is not a loopback address and no API token is configured: anyone could drive this \
                     node. Add tokens under [api] (e.g. `tokens = [{{ name = \"ops\", token = \"<32 random \
                     characters>\", scope = \"admin\" }}]`) or listen on 127.0.0.1"
                ),
            ));
        }
        let d = &self.dispatch;
        for (key, value) in [
            ("dispatch.poll_interval_ms", d.poll_interval_ms),
            ("dispatch.batch_size", u64::from(d.batch_size)),
            ("dispatch.max_concurrency", u64::from(d.max_concurrency)),
            ("dispatch.monitor_interval_ms", d.monitor_interval_ms),
            ("dispatch.reconcile_interval_ms", d.reconcile_interval_ms),
            ("dispatch.retry_base_ms", d.retry_base_ms),
            ("dispatch.fan_out_max_bytes", d.fan_out_max_bytes),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if d.retry_max_ms < d.retry_base_ms {
            return Err(invalid("dispatch.retry_max_ms", "must be at least dispatch.retry_base_ms"));
        }
        let a = &self.alarms;
        for (key, value) in [
            ("alarms.poll_interval_ms", a.poll_interval_ms),
            ("alarms.timeout_ms", a.timeout_ms),
            ("alarms.retry_base_ms", a.retry_base_ms),
            ("alarms.max_attempts", u64::from(a.max_attempts)),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if a.retry_max_ms < a.retry_base_ms {
            return Err(invalid("alarms.retry_max_ms", "must be at least alarms.retry_base_ms"));
        }
        if a.timeout_ms > crate::alarms::MAX_TIMEOUT_MS {
            return Err(invalid("alarms.timeout_ms", format!("must be at most {}", crate::alarms::MAX_TIMEOUT_MS)));
        }
        for name in &self.drivers.pass_env {
            check_pass_env(name).map_err(|message| invalid("drivers.pass_env", message))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("`{}` is not a tracing filter: {e}", self.log.level)))?;
        Ok(())
    }

    /// The database URL to use: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.node.data_dir.join("rota.db").display())
        } else {
            self.database.url.clone()
        }
    }
}

/// One figment error as `key: problem (source)`, with the key in the dotted lower-case form
/// that `config/default.toml` uses, whichever layer it came from.
fn describe(e: figment::Error) -> String {
    let key = e.path.join(".").to_lowercase();
    let source = e.metadata.as_ref().map(|m| match &m.source {
        Some(src) => format!("{} {src}", m.name),
        None => m.name.to_string(),
    });
    let at = if key.is_empty() { String::new() } else { format!("`{key}`: ") };
    match source {
        Some(src) => format!("{at}{} (in {src})", e.kind),
        None => format!("{at}{}", e.kind),
    }
}

/// One name of `drivers.pass_env`: a portable variable name (letters, digits, `_`, not starting
/// with a digit), and not a `ROTA_` one — the node's own settings (`ROTA__…`) may hold its
/// credentials, and the task's variables are Rota's to set.
fn check_pass_env(name: &str) -> Result<(), String> {
    let portable = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !portable {
        return Err(format!("`{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"));
    }
    if name.starts_with("ROTA_") {
        return Err(format!(
            "`{name}`: ROTA_ variables are the node's settings and the task's; they are never passed on"
        ));
    }
    Ok(())
}

/// Parse one `key=value` label given on the command line.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load_with_env(Some(&path), &Overrides::default(), Env::prefixed("ROTA_TEST_NONE__"))
    }

    fn token(name: &str, secret: &str, scope: Scope) -> TokenConfig {
        TokenConfig { name: name.into(), token: secret.into(), scope }
    }

    #[test]
    fn tokens_that_could_never_match_or_would_match_twice_are_refused() {
        let good = "0123456789abcdef-ok";
        assert_eq!(check_tokens(&[token("ops", good, Scope::Admin)]), Ok(()));
        for (secret, needle) in [
            (" 0123456789abcdef", "space"),
            ("0123456789abcdef\t", "control"),
            ("0123456789abcdéf", "non-ASCII"),
            ("0123456789 abcdef", "space"),
            ("tiny", "shorter than 16"),
        ] {
            let e = check_tokens(&[token("ops", secret, Scope::Admin)]).unwrap_err();
            assert!(e.contains(needle) && e.contains("`ops`") && !e.contains(secret), "{secret:?}: {e}");
        }
        let e = check_tokens(&[token("ops", good, Scope::Admin), token("ci", good, Scope::Read)]).unwrap_err();
        assert!(e.contains("`ops`") && e.contains("`ci`") && !e.contains(good), "{e}");
        // One name may hold two secrets (rotation).
        assert_eq!(
            check_tokens(&[token("ops", good, Scope::Admin), token("ops", "fedcba9876543210", Scope::Admin)]),
            Ok(())
        );
    }

    #[test]
    fn shipped_default_file_equals_code_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml")).unwrap();
        // Every key present, no key unknown, and every value the code's default.
        let file: toml::Table = toml::from_str(&text).unwrap();
        let code = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(keys(&file), keys(&code), "config/default.toml and Config::default() list different keys");
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    fn keys(t: &toml::Table) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in t {
            match v {
                toml::Value::Table(inner) if k != "labels" => {
                    out.extend(keys(inner).into_iter().map(|ik| format!("{k}.{ik}")))
                }
                _ => out.push(k.clone()),
            }
        }
        out.sort();
        out
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str("[database]\npool_sise = 3\n").unwrap_err().to_string();
        assert!(err.contains("pool_sise"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = load_str("[database]\npool_size = \"many\"\n").unwrap_err().to_string();
        assert!(err.contains("pool_size"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (toml, key) in [
            ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
            ("[database]\npool_size = 0\n", "database.pool_size"),
            ("[database]\nurl = \"mysql://x\"\n", "database.url"),
            ("[log]\nlevel = \"[[[\"\n", "log.level"),
            ("[membership]\nlock_ttl_ms = 10\n", "membership.lock_ttl_ms"),
            ("[membership]\nlock_ttl_ms = 900\nheartbeat_interval_ms = 100\n", "at least 1000 ms"),
            ("[node]\nid = \"a b\"\n", "node.id"),
            ("[drivers]\npass_env = [\"A-B\"]\n", "drivers.pass_env"),
            ("[drivers]\npass_env = [\"\"]\n", "drivers.pass_env"),
            ("[drivers]\npass_env = [\"1A\"]\n", "drivers.pass_env"),
            ("[drivers]\npass_env = [\"ROTA__DATABASE__URL\"]\n", "never passed on"),
        ] {
            let err = load_str(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn overrides_win() {
        let o = Overrides { listen: Some("127.0.0.1:9".into()), no_migrate: true, ..Default::default() };
        let c = Config::load_with_env(None, &o, Env::prefixed("ROTA_TEST_NONE__")).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9");
        assert!(!c.database.migrate);
    }

    #[test]
    fn pass_env_comes_from_the_file_or_the_flag() {
        let c = load_str("[drivers]\npass_env = [\"AWS_PROFILE\", \"_X1\"]\n").unwrap();
        assert_eq!(c.drivers.pass_env, ["AWS_PROFILE", "_X1"]);
        let o = Overrides { pass_env: Some(vec!["C".into()]), ..Default::default() };
        let c = Config::load_with_env(None, &o, Env::prefixed("ROTA_TEST_NONE__")).unwrap();
        assert_eq!(c.drivers.pass_env, ["C"]);
    }

    #[test]
    fn labels_parse() {
        assert_eq!(parse_label("dc=eu").unwrap(), ("dc".into(), "eu".into()));
        assert!(parse_label("=x").is_err());
        assert!(parse_label("novalue").is_err());
    }
}
