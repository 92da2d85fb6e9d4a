//! Prometheus metrics: one registry per node, handles shared by the services that update them.
//!
//! Why here and not in `api`: membership, the store and the dispatcher update these; the API only
//! encodes them. Gauges that mirror state (ring epoch, pool use, queue depth) are set at scrape
//! time from the source of truth, so they can never drift from it.
//!
//! Must never: take a label value from data (a task row's text, an application id, an error):
//! every label set costs memory and scrape bytes for the node's lifetime, and rows are written
//! by hand. Label values are `&'static str` from a closed vocabulary ([`crate::domain::Action::label`]),
//! so the type refuses anything else (docs/security.md).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Label set of the task metrics: `[("action", …), ("status", …)]` or `[("action", …)]`, each
/// value from a closed set (an unknown action is `other`), so the label sets are bounded.
pub type Labels = Vec<(&'static str, &'static str)>;

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Failed membership operations (heartbeats, keep-alives, watches, re-joins).
    pub membership_errors: Counter,
    /// 1 while this node is a member and may act.
    pub membership_joined: Gauge,
    /// Members in the current view.
    pub members: Gauge,
    /// Epoch of the current ring.
    pub ring_epoch: Gauge,
    /// Open database connections in the pool.
    pub db_pool_connections: Gauge,
    /// Idle database connections in the pool.
    pub db_pool_idle: Gauge,
    /// Tasks this node finished, by action and final (or retry) status.
    pub tasks: Family<Labels, Counter>,
    /// Seconds from when a task was due (created or `run_after`) to its claim.
    pub claim_latency: Histogram,
    /// Seconds a task took to execute on this node, by action.
    pub execution: Family<Labels, Histogram>,
    /// Pending tasks that are due now (all nodes' queue).
    pub queue_depth: Gauge,
    /// Applications this node owns (one actor each).
    pub owned_applications: Gauge,
    /// Tasks this node claimed that its executors hold (queued, running, or a parent gathering
    /// its children); kept by the dispatcher's holds themselves.
    pub tasks_held: Gauge,
    /// Due rows the dispatcher read to place them itself (a member of a larger ring, or the
    /// only member looking for label-dependent rows); claims that find their rows in the same
    /// statement read none.
    pub rows_read: Counter,
    /// 1 while the PostgreSQL `LISTEN` connection is subscribed (wake-ups and announced
    /// configuration changes arrive); 0 on SQLite, with `listen_notify = false`, or while it
    /// reconnects (the poll interval and the 5 s re-reads cover the gap).
    pub notify_listening: Gauge,
    /// Member records under this cluster's etcd prefix whose nodes run on another database:
    /// another deployment sharing the etcd and cluster name, ignored (docs/design.md, "Cluster
    /// identity"). Anything but 0 needs a person: give each deployment its own `--cluster`.
    pub foreign_members: Gauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rota");
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
        );
        let m = Self {
            membership_errors: Counter::default(),
            membership_joined: Gauge::default(),
            members: Gauge::default(),
            ring_epoch: Gauge::default(),
            db_pool_connections: Gauge::default(),
            db_pool_idle: Gauge::default(),
            tasks: Family::default(),
            claim_latency: latency_histogram(),
            execution: Family::new_with_constructor(latency_histogram),
            queue_depth: Gauge::default(),
            owned_applications: Gauge::default(),
            tasks_held: Gauge::default(),
            notify_listening: Gauge::default(),
            foreign_members: Gauge::default(),
            rows_read: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("membership_errors", "Failed membership operations", m.membership_errors.clone());
        registry.register(
            "membership_joined",
            "1 while this node is a member and may act",
            m.membership_joined.clone(),
        );
        registry.register("members", "Members in the current membership view", m.members.clone());
        registry.register("ring_epoch", "Epoch of the current ring", m.ring_epoch.clone());
        registry.register(
            "db_pool_connections",
            "Open connections in the database pool",
            m.db_pool_connections.clone(),
        );
        registry.register("db_pool_idle_connections", "Idle connections in the database pool", m.db_pool_idle.clone());
        registry.register("tasks", "Tasks finished by this node, by action and status", m.tasks.clone());
        registry.register(
            "task_claim_latency_seconds",
            "Seconds from a task being due to its claim",
            m.claim_latency.clone(),
        );
        registry.register("task_execution_seconds", "Seconds a task took to execute, by action", m.execution.clone());
        registry.register("queue_depth", "Pending tasks due now, cluster-wide", m.queue_depth.clone());
        registry.register("owned_applications", "Applications this node owns", m.owned_applications.clone());
        registry.register(
            "tasks_held",
            "Tasks claimed by this node that its executors hold (queued, running, gathering)",
            m.tasks_held.clone(),
        );
        registry.register(
            "notify_listening",
            "1 while the LISTEN connection for wake-ups and configuration changes is subscribed",
            m.notify_listening.clone(),
        );
        registry.register(
            "membership_foreign_members",
            "Member records in this cluster's etcd prefix from nodes on another database (ignored)",
            m.foreign_members.clone(),
        );
        registry.register(
            "dispatch_rows_read",
            "Due rows the dispatcher read to place them itself",
            m.rows_read.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
