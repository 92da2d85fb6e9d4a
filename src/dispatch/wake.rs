//! Waking the dispatcher: PostgreSQL `LISTEN rota_task` on one dedicated connection
//! (tokio-postgres, event-driven: no sleep loop adding latency), plus in-process wake-ups.
//! The same connection listens on `rota_config`, which triggers send when an admin changes a
//! schedule or a traffic policy ([`Config`]): those are read again at once, and otherwise
//! seldom (docs/dispatch.md, *What a node asks of the database when idle*); and on
//! `rota_release`, sent when a node releases applications, so a node waiting to acquire them
//! tries again at once instead of at its next retry.
//!
//! The listener subscribes *before* it reports itself ready, and wakes the dispatcher after every
//! (re)connection, so a notification sent while it was away costs at most one extra read — never
//! a lost row (the poll interval is the final backstop). A (re)connection also counts as a change
//! of configuration, and while the listener is away its readers go back to reading on their own.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::FusedFuture;
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

/// While changes are announced, schedules and traffic policies are still read this often: the
/// backstop for a notification that could not say what it missed (a change of `next_fire_at`
/// alone, made by hand).
pub const CONFIG_BACKSTOP: Duration = Duration::from_secs(30);

/// What the database announced about schedules and traffic policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// Moves on at every `rota_config` notification and every (re)connection of the listener.
    pub generation: u64,
    /// A listener is connected and subscribed: changes are announced. When false (SQLite, no
    /// listener configured, connection lost), readers read on their own short period.
    pub listening: bool,
}

impl Config {
    /// Announce a change made on this node (through its API) to this node's readers at once,
    /// without waiting for the database's notification (there is none on SQLite).
    pub fn announce(config: &watch::Sender<Config>) {
        config.send_modify(|c| c.generation += 1);
    }

    /// How often a reader reads on its own: `short` while nothing announces changes, `long`
    /// (a backstop) while the listener does.
    pub fn period(&self, short: Duration, long: Duration) -> Duration {
        if self.listening {
            long
        } else {
            short
        }
    }
}

/// Fan-out parents this node should look at now: a child of theirs ended here, or the parent
/// has just begun to wait for its children (which may all have ended already). The dispatcher
/// gathers each at once if this node coordinates it, instead of at its next periodic pass.
///
/// Why: gathered only on the loop's periodic pass (at most every 200 ms, and only when
/// something else woke the loop), a parent ended 135–850 ms after its last child, and every
/// job chained after it waited as long. A child's coordinator is usually the node that ran its
/// last child (always on a single node); a coordinator elsewhere gathers at its next wake-up
/// (docs/jobs.md#routing-strategies).
#[derive(Debug, Default)]
pub struct Parents {
    ids: std::sync::Mutex<std::collections::HashSet<i64>>,
    notify: Notify,
}

impl Parents {
    /// Ask for parent `id` to be looked at now.
    pub fn look_at(&self, id: i64) {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        self.notify.notify_one();
    }

    /// Wait for [`Parents::look_at`].
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// The parents asked for since the last call, each once.
    pub fn take(&self) -> std::collections::HashSet<i64> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Keep a `LISTEN rota_task, rota_config, rota_release` connection to `url` open until
/// `shutdown`, calling `wake` on every task notification and after every (re)connection, and
/// moving `config` on at every configuration notification, `released` at every release
/// notification ([`crate::store::apps::RELEASED_CHANNEL`]), both at every (re)connection.
/// `listening` is 1 while the connection is subscribed (`rota_notify_listening`).
pub async fn listen(
    url: String,
    wake: Arc<Notify>,
    config: Arc<watch::Sender<Config>>,
    released: Arc<watch::Sender<u64>>,
    listening: prometheus_client::metrics::gauge::Gauge,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let done = connect_and_listen(&url, &wake, (&config, &released), &listening, &shutdown).await;
        listening.set(0);
        // Only a change of state is news: a retry that failed again wakes nobody.
        config.send_if_modified(|c| std::mem::replace(&mut c.listening, false));
        match done {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY listener lost its connection; the poll interval covers the gap");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How often the listener checks that its connection still answers, and how long it waits.
/// Why: a connection that hangs without being reset (a frozen server, a cut network, a stuck
/// proxy) delivers no notification and raises no error; without a check
/// `rota_notify_listening` would read 1 for the whole hang while the node hears nothing
/// (docs/operations.md#ha).
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_WITHIN: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("the connection did not answer a check within {0:?}")]
    Hung(Duration),
}

/// The listener's connection settings: the URL's, with the TCP liveness settings the pooled
/// connections get (`store::connection::PG_LIVENESS`) where the URL sets none.
fn listener_config(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut cfg: tokio_postgres::Config = url.parse()?;
    if cfg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        cfg.keepalives_idle(Duration::from_secs(5));
    }
    if cfg.get_keepalives_interval().is_none() {
        cfg.keepalives_interval(Duration::from_secs(2));
    }
    if cfg.get_keepalives_retries().is_none() {
        cfg.keepalives_retries(3);
    }
    if cfg.get_tcp_user_timeout().is_none() {
        cfg.tcp_user_timeout(Duration::from_secs(10));
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    Ok(cfg)
}

async fn connect_and_listen(
    url: &str,
    wake: &Notify,
    (config, released): (&watch::Sender<Config>, &watch::Sender<u64>),
    gauge: &prometheus_client::metrics::gauge::Gauge,
    shutdown: &CancellationToken,
) -> Result<(), ListenError> {
    let (client, mut connection) = listener_config(url)?.connect(NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The connection must be polled for LISTEN to complete: drive both together.
    let subscribe = format!("LISTEN rota_task; LISTEN rota_config; LISTEN {}", crate::store::apps::RELEASED_CHANNEL);
    let listen = client.batch_execute(&subscribe);
    tokio::pin!(listen);
    let mut listening = false;
    let mut probe_tick = tokio::time::interval(PROBE_EVERY);
    probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe_tick.reset();
    let probe = futures_util::future::Fuse::terminated();
    tokio::pin!(probe);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = probe_tick.tick(), if listening && probe.is_terminated() => {
                probe.set(futures_util::FutureExt::fuse(tokio::time::timeout(PROBE_WITHIN, client.batch_execute("SELECT 1"))));
            }
            answered = &mut probe => match answered {
                Ok(done) => done?,
                Err(_) => return Err(ListenError::Hung(PROBE_WITHIN)),
            },
            done = &mut listen, if !listening => {
                done?;
                listening = true;
                tracing::debug!("listening for rota_task, rota_config and rota_release notifications");
                wake.notify_one();
                released.send_modify(|g| *g += 1);
                config.send_modify(|c| {
                    c.generation += 1;
                    c.listening = true;
                });
                gauge.set(1);
            }
            msg = messages.next() => match msg {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == "rota_config" => {
                    Config::announce(config);
                }
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == crate::store::apps::RELEASED_CHANNEL => {
                    released.send_modify(|g| *g += 1);
                }
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ListenError::Closed),
            }
        }
    }
}
