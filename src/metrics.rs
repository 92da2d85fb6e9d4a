//! Prometheus metrics: one registry per node, handles shared by the services that update them.
//!
//! Why here and not in `api`: membership, the store and the dispatcher update these; the API only
//! encodes them. Gauges that mirror state (ring epoch, pool use, queue depth) are set at scrape
//! time from the source of truth, so they can never drift from it.
//!
//! Two exposition formats, negotiated per scrape ([`Format::negotiate`]): OpenMetrics, which the
//! prometheus-client crate writes, and the Prometheus text format 0.0.4, which it does not, so
//! it is converted from the OpenMetrics text ([`openmetrics_to_text`]). Why both: Prometheus asks
//! for OpenMetrics, but `promtool check metrics`, older scrapers and people with `curl` read only
//! 0.0.4, which has no `info` type and names counters by their `_total` samples
//! (docs/operations.md#metrics).
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
use std::sync::atomic::AtomicU64;

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
    /// Seconds the oldest pending due task has been due (0 when none is): the backlog's age.
    pub queue_oldest_due: Gauge<f64, AtomicU64>,
    /// Traffic groups running on their backup side (cluster-wide).
    pub traffic_failed_over: Gauge,
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
            queue_oldest_due: Gauge::default(),
            traffic_failed_over: Gauge::default(),
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
        registry.register(
            "queue_oldest_due_seconds",
            "Seconds the oldest pending due task has been due, cluster-wide (0 when none is)",
            m.queue_oldest_due.clone(),
        );
        registry.register(
            "traffic_failed_over_groups",
            "Traffic groups running on their backup side, cluster-wide",
            m.traffic_failed_over.clone(),
        );
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

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(match format {
            Format::OpenMetrics => out,
            Format::Text => openmetrics_to_text(&out),
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text exposition, format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text`): what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Text,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }

    /// The format an `Accept` header asks for, as Prometheus' own client libraries choose it: the
    /// media ranges by falling quality (in their order at equal quality), the first that names
    /// OpenMetrics or `text/plain` (of version 0.0.4 or none) wins; anything else — no header,
    /// `*/*`, an unknown type — gets the 0.0.4 text, which every reader understands. A range with
    /// `q=0` is refused, so it never wins.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Text };
        let mut ranges: Vec<(f32, Option<Format>)> = accept.split(',').map(media_range).collect();
        // A stable sort keeps the header's order among equal qualities.
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranges.into_iter().filter(|(q, _)| *q > 0.0).find_map(|(_, f)| f).unwrap_or(Format::Text)
    }
}

/// One media range of an `Accept` header: its quality (1 when absent or unreadable) and the
/// format it names, if any.
fn media_range(range: &str) -> (f32, Option<Format>) {
    let mut parts = range.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default().to_ascii_lowercase();
    let (mut q, mut version) = (1.0f32, None);
    for param in parts {
        let Some((key, value)) = param.split_once('=') else { continue };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "q" => q = value.parse().ok().filter(|q: &f32| q.is_finite()).unwrap_or(1.0),
            "version" => version = Some(value.to_string()),
            _ => {}
        }
    }
    let format = match media.as_str() {
        "application/openmetrics-text" => Some(Format::OpenMetrics),
        "text/plain" if version.as_deref().is_none_or(|v| v == "0.0.4") => Some(Format::Text),
        _ => None,
    };
    (q, format)
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition as prometheus-client writes it.
///
/// What differs: a counter's family is named by its samples (`x_total`, where OpenMetrics names
/// it `x`), and its `_created` sample goes; an `info` family becomes a gauge named by its sample
/// (`x_info`, value 1); `stateset` becomes a gauge, `unknown` and the types 0.0.4 lacks become
/// `untyped`; `# UNIT` lines, exemplars and `# EOF` go. HELP text and samples pass unchanged
/// (both formats escape label values alike, and the registry's help strings hold no newline).
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    // The current family: its OpenMetrics name and type.
    let mut family: (String, String) = (String::new(), String::new());
    // A family's HELP line comes before its TYPE line; both need the family's new name, which
    // the TYPE gives: hold the help until then.
    let mut help: Option<(String, String)> = None;
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_string(), text.to_string()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (renamed, kind_004) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "stateset" => (name.to_string(), "gauge"),
                "histogram" => (name.to_string(), "histogram"),
                "summary" => (name.to_string(), "summary"),
                _ => (name.to_string(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(n, _)| n == name) {
                out.push_str(&format!("# HELP {renamed} {text}\n"));
            }
            out.push_str(&format!("# TYPE {renamed} {kind_004}\n"));
            family = (name.to_string(), kind.to_string());
        } else if line.starts_with('#') {
            // `# UNIT` (the unit is already part of the name) and `# EOF`.
        } else if !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let sample = &line[..name_end];
            let counted = matches!(family.1.as_str(), "counter" | "histogram" | "summary");
            if counted && sample.strip_prefix(family.0.as_str()) == Some("_created") {
                continue;
            }
            out.push_str(without_exemplar(line));
            out.push('\n');
        }
    }
    out
}

/// A sample line without its exemplar (` # {…} value`), which 0.0.4 does not have. The exemplar
/// starts at the first ` # ` outside the quoted label values.
fn without_exemplar(line: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '#' if !quoted && line[..i].ends_with(' ') => return line[..i].trim_end(),
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_header_chooses_the_format() {
        let cases = [
            (None, Format::Text),
            (Some(""), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("text/plain; version=0.0.4"), Format::Text),
            (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), Format::Text),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (Some("Application/OpenMetrics-Text; version=1.0.0"), Format::OpenMetrics),
            // What Prometheus 2.x sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                     text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                Format::OpenMetrics,
            ),
            // Quality decides, then order.
            (Some("application/openmetrics-text;q=0.3, text/plain;q=0.9"), Format::Text),
            (Some("text/plain, application/openmetrics-text"), Format::Text),
            (Some("application/openmetrics-text, text/plain"), Format::OpenMetrics),
            // Refused or unknown ranges never win.
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (Some("text/plain;version=0.0.5, application/openmetrics-text;q=0.2"), Format::OpenMetrics),
            (Some("application/json"), Format::Text),
            (Some("application/openmetrics-text;q=oops"), Format::OpenMetrics),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "Accept: {accept:?}");
        }
    }

    #[test]
    fn a_counter_is_named_by_its_total_and_loses_created() {
        let om = "# HELP rota_tasks Tasks finished.\n# TYPE rota_tasks counter\n\
                  rota_tasks_total{action=\"start\",status=\"succeeded\"} 3\nrota_tasks_created 1.7e9\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP rota_tasks_total Tasks finished.\n# TYPE rota_tasks_total counter\n\
             rota_tasks_total{action=\"start\",status=\"succeeded\"} 3\n"
        );
    }

    #[test]
    fn an_info_metric_becomes_a_gauge_of_one() {
        let om = "# HELP rota_build Build information.\n# TYPE rota_build info\nrota_build_info{version=\"0.1.0\"} 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP rota_build_info Build information.\n# TYPE rota_build_info gauge\nrota_build_info{version=\"0.1.0\"} 1\n"
        );
    }

    #[test]
    fn units_exemplars_and_unknown_types_are_translated() {
        let om = "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
                  x_seconds_sum 1.5\nx_seconds_count 2\nx_seconds_bucket{le=\"+Inf\"} 2 # {trace=\"a # b\"} 0.7\n\
                  x_seconds_created 12\n# TYPE y unknown\ny{l=\"say \\\"# hi\\\"\"} 4\n# TYPE z stateset\nz{z=\"on\"} 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\nx_seconds_sum 1.5\nx_seconds_count 2\n\
             x_seconds_bucket{le=\"+Inf\"} 2\n# TYPE y untyped\ny{l=\"say \\\"# hi\\\"\"} 4\n# TYPE z gauge\nz{z=\"on\"} 1\n"
        );
    }

    #[test]
    fn the_registry_in_0_0_4_has_no_openmetrics_left() {
        let m = Metrics::new();
        m.tasks.get_or_create(&vec![("action", "start"), ("status", "succeeded")]).inc();
        m.execution.get_or_create(&vec![("action", "start")]).observe(0.01);
        let text = m.encode(Format::Text).unwrap();
        for line in [
            "# TYPE rota_build_info gauge",
            "# TYPE rota_tasks_total counter",
            "rota_tasks_total{action=\"start\",status=\"succeeded\"} 1",
            "# TYPE rota_membership_errors_total counter",
            "# TYPE rota_dispatch_rows_read_total counter",
            "# TYPE rota_task_execution_seconds histogram",
            "rota_task_execution_seconds_count{action=\"start\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert!(!text.contains("# EOF") && !text.contains(" info\n") && !text.contains("# UNIT"), "{text}");
        let om = m.encode(Format::OpenMetrics).unwrap();
        assert!(om.ends_with("# EOF\n") && om.contains("# TYPE rota_build info"), "{om}");
    }
}
