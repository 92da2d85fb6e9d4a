//! `rota serve`: wires the store, membership and the HTTP server into one running node, and
//! takes it down in the safe order on shutdown.
//!
//! Start order: database (fail fast with the driver's message) → migrations → kill what an
//! earlier life of this node left running → bind the HTTP port (fail fast if taken) →
//! membership (a refused standalone lock stops the start) → the watchdog (`drivers::watchdog`)
//! → dispatcher → HTTP.
//! Stop order: stop acting (the dispatcher releases its applications) → leave membership (release the lock / revoke the lease, so others
//! react at once) → stop the watchdog → stop HTTP.

use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, ServerOptions};
use crate::config::{Config, MembershipBackend};
use crate::dispatch;
use crate::domain::NodeId;
use crate::drivers::watchdog::{self, Watchdog};
use crate::drivers::{ChildSetup, Registry};
use crate::membership::settle::SettleRule;
use crate::membership::{clock, etcd, standalone, LocalNode};
use crate::metrics::Metrics;
use crate::store::{DbUrl, PoolOptions, Store};

/// Open the database described by `cfg`, failing with an actionable message.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    open_pool(cfg, cfg.database.pool_size, Default::default()).await
}

/// A store on the database of `cfg` with a pool of `size` connections, recording the database's
/// answers in `answered` ([`Store::connect_sharing`]).
async fn open_pool(cfg: &Config, size: u32, answered: Arc<crate::store::Answered>) -> anyhow::Result<Store> {
    let url = DbUrl::parse(&cfg.database_url())?;
    let opts = PoolOptions { max_size: size, connect_timeout: Duration::from_millis(cfg.database.connect_timeout_ms) };
    let shown = url.to_string();
    tokio::task::spawn_blocking(move || Store::connect_sharing(&url, &opts, answered)).await?.with_context(|| {
        format!("cannot open the database {shown} (check --database-url / ROTA_DATABASE_URL and that the server is up)")
    })
}

/// Run one node until `shutdown` is cancelled.
pub async fn serve(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let node_id = resolve_node_id(&cfg)?;
    let store = open_store(&cfg).await?;
    if cfg.database.migrate {
        let s = store.clone();
        let applied = tokio::task::spawn_blocking(move || s.migrate()).await??;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied migrations");
        }
    }
    check_clock(&store).await?;
    // Before this node can act: what an earlier life of it left running (its watchdog could
    // not act, killed with it) must not run beside what it starts now (docs/design.md#i1).
    let marker = watchdog::marker(&node_id, &store.url().to_string());
    let m = marker.clone();
    let swept = tokio::task::spawn_blocking(move || watchdog::procfs::sweep(&m)).await?;
    if swept > 0 {
        tracing::warn!(node.id = %node_id, killed = swept, "killed processes an earlier life of this node had left running");
    }
    let listener = TcpListener::bind(&cfg.server.listen).with_context(|| {
        format!("cannot listen on {} (set --listen / ROTA_LISTEN to a free address)", cfg.server.listen)
    })?;
    let bound = listener.local_addr()?;
    let advertise = if cfg.membership.advertise_addr.is_empty() {
        bound.to_string()
    } else {
        cfg.membership.advertise_addr.clone()
    };
    let me = LocalNode {
        node_id: node_id.clone(),
        addr: advertise.clone(),
        labels: cfg.membership.labels.clone(),
        weight: cfg.membership.weight,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        host: host_name(),
        pid: std::process::id(),
        instance: format!("{}-{}-{:016x}", host_name(), std::process::id(), random_u64()),
    };
    let metrics = Arc::new(Metrics::new());
    let membership_stop = CancellationToken::new();
    let (weight_tx, weight_rx) = tokio::sync::watch::channel(cfg.membership.weight);
    // The dispatcher says whether it acts; membership waits for it to stop before it leaves
    // the ring over the database's health (membership::health).
    let (acting_tx, acting_rx) = tokio::sync::watch::channel(false);
    let membership = match cfg.membership.backend {
        MembershipBackend::Standalone => {
            let opts = standalone::Options {
                heartbeat: Duration::from_millis(cfg.membership.heartbeat_interval_ms),
                ttl: Duration::from_millis(cfg.membership.lock_ttl_ms),
                vnodes: cfg.membership.vnodes,
            };
            standalone::start(store.clone(), me.clone(), opts, metrics.clone(), membership_stop.clone()).await?
        }
        MembershipBackend::Etcd => {
            if store.backend() == crate::store::Backend::Sqlite {
                tracing::warn!("etcd membership on SQLite: every node must share this one file on one machine; use PostgreSQL for a real cluster");
            }
            let database = store.run(crate::store::identity::database_id).await?;
            tracing::info!(database.id = %database, "this node's database");
            let opts = etcd::Options {
                database: database.0,
                database_shown: store.url().to_string(),
                endpoints: cfg.membership.etcd_endpoints.clone(),
                cluster: cfg.membership.cluster.clone(),
                ttl: Duration::from_secs(cfg.membership.lease_ttl_s),
                vnodes: cfg.membership.vnodes,
                settle: SettleRule {
                    quiet: Duration::from_millis(cfg.membership.settle_ms),
                    max_wait: Duration::from_millis(cfg.membership.settle_max_ms),
                },
            };
            let (hold_tx, hold_rx) = tokio::sync::watch::channel(None);
            tokio::spawn(crate::membership::health::watch_database(
                store.clone(),
                Duration::from_millis(cfg.membership.database_outage_ms),
                hold_tx,
                membership_stop.clone(),
            ));
            let health = etcd::Health { hold: hold_rx, acting: acting_rx };
            let history = crate::membership::history::History::start(store.clone());
            etcd::start(me.clone(), opts, weight_rx, health, history, metrics.clone(), membership_stop.clone())
        }
    };
    tokio::spawn(crate::membership::record_foreign(store.clone(), node_id.clone(), membership.subscribe()));
    let watchdog = Watchdog::start(marker, cfg.log.format, membership.subscribe())
        .context("cannot start the watchdog process (`rota watchdog`, from this binary)")?;
    let params_dir = ChildSetup::params_dir_in(&cfg.node.data_dir).with_context(|| {
        format!("cannot prepare {}/params, the directory of large task parameters", cfg.node.data_dir.display())
    })?;
    let dispatch_stop = CancellationToken::new();
    let shared = dispatch::Shared::new(
        store.clone(),
        Registry::builtin_with(ChildSetup {
            watchdog: Some(watchdog.clone()),
            pass_env: cfg.drivers.pass_env.clone(),
            params_dir: Some(params_dir),
        }),
        node_id.clone(),
        dispatch::MembershipLink {
            state: membership.subscribe(),
            newer_claim_grace: match cfg.membership.backend {
                MembershipBackend::Standalone => Duration::ZERO,
                MembershipBackend::Etcd => Duration::from_secs(cfg.membership.lease_ttl_s),
            },
            acting: acting_tx,
        },
        cfg.dispatch.clone(),
        metrics.clone(),
    );
    let wake = shared.wake.clone();
    let config = shared.config.subscribe();
    let alarms_config = shared.config.subscribe();
    let announce = shared.config.clone();
    let drivers = shared.drivers.clone();
    let dispatcher = tokio::spawn(dispatch::run(shared, store.url().clone(), dispatch_stop.clone()));
    let schedules =
        crate::schedule::runner::Options { retention_hours: cfg.dispatch.retention_hours, ..Default::default() };
    tokio::spawn(crate::schedule::runner::run(
        store.clone(),
        node_id.clone(),
        membership.subscribe(),
        wake.clone(),
        config,
        schedules,
        crate::clock::SystemClock::shared(),
        dispatch_stop.clone(),
    ));
    // The API's own pool: no number of requests can take the connections the node's
    // heartbeat and dispatcher need (docs/api.md#load).
    let api_store = open_pool(&cfg, cfg.api.pool_size, store.answered()).await?;
    let ready_timeout = Duration::from_secs(2);
    let database_check = api::health::spawn_database_check(api_store.clone(), ready_timeout, dispatch_stop.clone());
    // Alarms on the API's pool as well: a slow receiver or a backlog of events never takes a
    // connection dispatch needs (docs/alarms.md).
    let alarms = crate::alarms::runner::Options::from_config(&cfg.alarms);
    tokio::spawn(crate::alarms::runner::run(
        api_store.clone(),
        node_id.clone(),
        membership.subscribe(),
        alarms_config,
        alarms.clone(),
        dispatch_stop.clone(),
    ));
    let state = ApiState {
        store: api_store,
        alarm_timeout: alarms.timeout,
        membership: membership.subscribe(),
        metrics,
        node_id: node_id.clone(),
        advertise,
        backend: match cfg.membership.backend {
            MembershipBackend::Standalone => "standalone",
            MembershipBackend::Etcd => "etcd",
        },
        tokens: Arc::new(cfg.api.tokens.clone()),
        wake,
        drivers,
        config: announce,
        max_body_bytes: cfg.api.max_body_bytes,
        max_response_bytes: cfg.api.max_response_bytes,
        fan_out_max_bytes: cfg.dispatch.fan_out_max_bytes,
        drain: (cfg.membership.backend == MembershipBackend::Etcd)
            .then(|| Arc::new(api::Drain { weight: weight_tx, configured: cfg.membership.weight })),
        ready_timeout,
        database_check,
    };
    let server_opts = ServerOptions {
        workers: cfg.server.workers,
        shutdown_timeout: Duration::from_secs(cfg.server.shutdown_timeout_s),
    };
    let server = api::start(listener, state, &server_opts)?;
    let server_handle = server.handle();
    let server_task = tokio::spawn(server);
    tracing::info!(
        node.id = %node_id, http.addr = %bound, db.url = %store.url(), membership = ?cfg.membership.backend,
        "rota node is serving"
    );
    print_next_steps(&bound.to_string(), store.url());

    shutdown.cancelled().await;
    tracing::info!(node.id = %node_id, "shutting down");
    dispatch_stop.cancel();
    if let Err(e) = dispatcher.await {
        tracing::error!(error = %e, "dispatcher ended abnormally");
    }
    membership_stop.cancel();
    membership.stopped().await;
    // The children are stopped; the watchdog kills what may be left (a job's background
    // processes) and exits.
    tokio::task::spawn_blocking(move || watchdog.stop()).await?;
    server_handle.stop(true).await;
    if let Err(e) = server_task.await? {
        tracing::warn!(error = %e, "http server ended with an error");
    }
    tracing::info!(node.id = %node_id, "stopped");
    Ok(())
}

fn print_next_steps(addr: &str, url: &DbUrl) {
    let sql = match url {
        DbUrl::Sqlite(p) => format!("sqlite3 {} \"SELECT id, action, status FROM task\"", p.display()),
        DbUrl::Postgres(_) => format!("psql '{url}' -c 'SELECT id, action, status FROM task'"),
    };
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "rota".into());
    let url = if addr == "127.0.0.1:8080" { String::new() } else { format!(" --url http://{addr}") };
    eprintln!(
        "\nRota is up.  Open http://{addr}/ in a browser for the web console, or, in another terminal:\n  \
         {exe} app create demo --driver noop{url}\n  \
         {exe} app start demo --wait{url}\n  \
         {exe} events --app demo{url}\n  \
         curl http://{addr}/readyz       # ready: database + membership\n  \
         curl http://{addr}/metrics      # Prometheus metrics\n  {sql}\n  \
         README.md \"What next\" for clusters (PostgreSQL + etcd) and the SQL interface.\n  Ctrl-C stops the node.\n"
    );
}

/// The configured node id, or the one kept in `{data_dir}/node-id` (created on first start).
pub fn resolve_node_id(cfg: &Config) -> anyhow::Result<String> {
    if !cfg.node.id.is_empty() {
        return Ok(cfg.node.id.clone());
    }
    let dir = &cfg.node.data_dir;
    let path = dir.join("node-id");
    if let Some(id) = read_node_id(&path)? {
        return Ok(id);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let host: String = host_name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .take(48)
        .collect();
    let id = format!("{host}-{:06x}", random_u64() & 0xff_ffff);
    std::fs::write(&path, format!("{id}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

fn read_node_id(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = text.trim().to_string();
            if !NodeId::is_valid(&id) {
                bail!("{} holds `{id}`, which is not a valid node id; fix or delete the file", path.display());
            }
            Ok(Some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// This machine's host name ("localhost" if it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// 64 random bits from std's per-process random hasher keys: enough for ids that must not
/// collide, not for secrets.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// Read the database's clock against this node's (three readings, the quickest decides) and
/// refuse to start when it is behind by more than the fence's margin; warn when it is ahead or
/// cannot be told ([`clock`]). A read that fails is left to the node's first writes to show.
async fn check_clock(store: &Store) -> anyhow::Result<()> {
    let read = store
        .run(|c| (0..3).map(|_| clock::Reading::take(|| crate::store::lock::db_now(c))).collect::<Result<Vec<_>, _>>())
        .await;
    let readings = match read {
        Ok(readings) => readings,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the database's clock to compare it with this node's");
            return Ok(());
        }
    };
    let margin_ms = crate::membership::DEADLINE_MARGIN.as_millis();
    match clock::judge(&readings) {
        clock::Verdict::Agree => {
            let offset = clock::best(&readings).map_or(0, |r| r.offset().num_milliseconds());
            tracing::info!(clock.offset_ms = offset, "the database's clock agrees with this node's");
            Ok(())
        }
        clock::Verdict::Behind(by) => bail!(
            "the database's clock is {} ms behind this node's: the database would take this node's writes up to \
             that long after its membership ended, when another node may own the work (docs/membership.md); \
             synchronise both clocks (NTP) to within {margin_ms} ms",
            by.num_milliseconds()
        ),
        clock::Verdict::Ahead(by) => {
            tracing::warn!(clock.offset_ms = by.num_milliseconds(), margin_ms = margin_ms as u64,
                "the database's clock is ahead of this node's: it refuses this node's writes that long before its deadline; synchronise both clocks (NTP)");
            Ok(())
        }
        clock::Verdict::Unsure => {
            tracing::warn!(
                margin_ms = margin_ms as u64,
                "could not tell whether the database's clock agrees with this node's (its answers took too long, or this node's clock stepped)"
            );
            Ok(())
        }
    }
}
