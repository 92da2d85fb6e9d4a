//! JSON shapes of resources: JSON columns (stored as TEXT) become JSON values, timestamps RFC 3339.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::drivers::{secret, Registry};
use crate::store::models::{Application, Event, Task, TaskSummary};

/// Parse a JSON column; a value that is not JSON (written by hand) is returned as a string.
pub fn json_column(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn ts(t: chrono::NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An application as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppView {
    id: i64,
    name: String,
    driver: String,
    /// The driver's spec, each secret field shown as `***` (docs/api.md#secrets).
    #[schema(value_type = Object)]
    spec: Value,
    #[schema(value_type = Object)]
    selector: Value,
    desired_state: String,
    /// The observed state as its owner last recorded it, or `orphaned` when no live member owns
    /// an application recorded as running (docs/api.md#orphaned).
    state: String,
    owner_node: Option<String>,
    owner_epoch: Option<i64>,
    restart_policy: String,
    max_restarts: i32,
    restart_count: i32,
    monitor_interval_ms: Option<i32>,
    /// Traffic group.
    traffic_group: Option<String>,
    last_error: Option<String>,
    /// What its driver keeps between calls and across owners (`flink`: the job's id and the
    /// savepoints taken, newest last); null when nothing is recorded (docs/drivers.md#flink).
    #[schema(value_type = Option<Object>)]
    runtime: Option<Value>,
    created_at: String,
    updated_at: String,
}

/// The observed state an application is shown in, from the API node's membership
/// (docs/api.md#orphaned): `orphaned` when it claims to run (`starting`, `running`, `stopping`,
/// `unknown`) and no live member owns it — no owner, an owner that is not a member, or this node
/// in an earlier session of its own (what it ran then was stopped with it). Until a node adopts
/// it, nobody watches it, so `running` would be a claim nobody stands behind. `stopped` and
/// `failed` stay: they say nothing runs. `live` is None when this node has no current view (not
/// joined): it cannot tell, and shows the recorded state.
pub fn shown_state(
    state: crate::domain::AppState,
    owner: Option<&str>,
    owner_epoch: Option<i64>,
    live: Option<&Liveness>,
) -> &'static str {
    use crate::domain::AppState;
    let Some(live) = live else { return state.as_str() };
    if matches!(state, AppState::Stopped | AppState::Failed) {
        return state.as_str();
    }
    let owned = match owner {
        Some(o) if o == live.me => owner_epoch.is_some_and(|e| e >= live.my_session as i64),
        Some(o) => live.members.iter().any(|m| m == o),
        None => false,
    };
    if owned {
        state.as_str()
    } else {
        ORPHANED
    }
}

/// The state shown for an application no live member owns ([`shown_state`]).
pub const ORPHANED: &str = "orphaned";

/// Who is a live owner, as the API node sees it.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// This node's id.
    pub me: String,
    /// The epoch its current session began at: what it owns from before is not run any more.
    pub my_session: u64,
    /// The members of its view.
    pub members: Vec<String>,
}

impl Liveness {
    /// From this node's membership: None unless it is joined (its view is current).
    pub fn of(me: &str, ms: &crate::membership::MembershipState) -> Option<Liveness> {
        (ms.status == crate::membership::Status::Joined).then(|| Liveness {
            me: me.to_string(),
            my_session: ms.joined_epoch,
            members: ms.view.members.iter().map(|m| m.node_id.clone()).collect(),
        })
    }
}

impl AppView {
    /// [`AppView::new`], its state as [`shown_state`] says from `live`.
    pub fn seen(a: Application, drivers: &Registry, live: Option<&Liveness>) -> Self {
        let shown = shown_state(a.state, a.owner_node.as_deref(), a.owner_epoch, live);
        let mut view = AppView::new(a, drivers);
        view.state = shown.to_string();
        view
    }

    /// The application as every read shows it: its spec with each secret replaced by the
    /// placeholder, by the rules of its driver in `drivers` (docs/api.md#secrets). A spec that is
    /// not JSON (written by hand) is hidden whole: nobody can tell where its secrets are.
    pub fn new(a: Application, drivers: &Registry) -> Self {
        let spec = match serde_json::from_str::<Value>(&a.spec) {
            Ok(spec) => drivers.redacted(&a.driver, &spec),
            Err(_) => Value::String(secret::PLACEHOLDER.into()),
        };
        AppView {
            id: a.id,
            spec,
            selector: json_column(&a.selector),
            name: a.name,
            driver: a.driver,
            desired_state: a.desired_state.to_string(),
            state: a.state.to_string(),
            owner_node: a.owner_node,
            owner_epoch: a.owner_epoch,
            restart_policy: a.restart_policy,
            max_restarts: a.max_restarts,
            restart_count: a.restart_count,
            monitor_interval_ms: a.monitor_interval_ms,
            traffic_group: a.traffic_group,
            last_error: a.last_error,
            runtime: a.runtime.as_deref().map(json_column),
            created_at: ts(a.created_at),
            updated_at: ts(a.updated_at),
        }
    }
}

/// A task as lists show it: every column but the payload and the result, which only
/// `GET /tasks/{id}` returns (docs/api.md#lists).
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskSummaryView {
    id: i64,
    app_id: Option<i64>,
    action: String,
    status: String,
    priority: i32,
    run_after: String,
    attempts: i32,
    max_attempts: i32,
    owner_node: Option<String>,
    owner_epoch: Option<i64>,
    idempotency_key: Option<String>,
    parent_id: Option<i64>,
    shard_index: Option<i32>,
    shard_total: Option<i32>,
    target_node: Option<String>,
    error: Option<String>,
    created_at: String,
    claimed_at: Option<String>,
    /// When the current attempt began (its claim; for a job that waited for an execution slot,
    /// its start); none for a job claimed and still waiting.
    started_at: Option<String>,
    finished_at: Option<String>,
    /// Jobs: how it picks its node(s) (`hash` when absent).
    routing: Option<String>,
    /// Jobs: per-attempt time limit (ms).
    timeout_ms: Option<i32>,
    /// Jobs: own selector. Any JSON value: a row written by SQL may hold text the API would
    /// refuse, shown as a string when it is not JSON (docs/api.md#sql-rows).
    #[schema(value_type = Option<Value>)]
    selector: Option<Value>,
    /// Fan-out parents: `gather` (waiting for children) or `reduce`.
    stage: Option<String>,
}

impl From<TaskSummary> for TaskSummaryView {
    fn from(t: TaskSummary) -> Self {
        TaskSummaryView {
            id: t.id,
            app_id: t.app_id,
            action: t.action,
            status: t.status.to_string(),
            priority: t.priority,
            run_after: ts(t.run_after),
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            owner_node: t.owner_node,
            owner_epoch: t.owner_epoch,
            idempotency_key: t.idempotency_key,
            parent_id: t.parent_id,
            shard_index: t.shard_index,
            shard_total: t.shard_total,
            target_node: t.target_node,
            error: t.error,
            created_at: ts(t.created_at),
            claimed_at: t.claimed_at.map(ts),
            started_at: t.started_at.map(ts),
            finished_at: t.finished_at.map(ts),
            routing: t.routing,
            timeout_ms: t.timeout_ms,
            selector: t.selector.as_deref().map(json_column),
            stage: t.stage,
        }
    }
}

/// A task as the API shows it: its summary, its payload and its result.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    #[serde(flatten)]
    summary: TaskSummaryView,
    /// Parameters: an object when the API wrote them; a row written by SQL may hold any JSON,
    /// or text that is not JSON, shown as a string (docs/api.md#sql-rows).
    #[schema(value_type = Value)]
    payload: Value,
    /// What the execution returned, any JSON (a job's output that is not JSON, as a string).
    #[schema(value_type = Option<Value>)]
    result: Option<Value>,
    /// Fan-out and map parents: how many children are in each status (`GET
    /// /tasks?parent_id=` lists them).
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<ChildCounts>,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        let (summary, payload, result) = t.split();
        TaskView {
            summary: summary.into(),
            payload: json_column(&payload),
            result: result.as_deref().map(json_column),
            children: None,
        }
    }
}

impl TaskView {
    /// The view with a parent's children counted (`(status, count)` rows).
    pub fn with_children(mut self, counts: &[(String, i64)]) -> Self {
        let mut c = ChildCounts::default();
        for (status, n) in counts {
            c.total += n;
            match status.as_str() {
                "pending" => c.pending += n,
                "running" => c.running += n,
                "succeeded" => c.succeeded += n,
                "failed" => c.failed += n,
                "cancelled" => c.cancelled += n,
                "lost" => c.lost += n,
                _ => {}
            }
        }
        self.children = Some(c);
        self
    }
}

/// How a parent's children stand: how many there are, and in each status.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ChildCounts {
    total: i64,
    pending: i64,
    running: i64,
    succeeded: i64,
    failed: i64,
    cancelled: i64,
    lost: i64,
}

/// An event as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    id: i64,
    at: String,
    kind: String,
    app_id: Option<i64>,
    task_id: Option<i64>,
    node_id: Option<String>,
    actor: Option<String>,
    message: String,
    #[schema(value_type = Object)]
    data: Value,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            id: e.id,
            at: ts(e.at),
            data: json_column(&e.data),
            kind: e.kind,
            app_id: e.app_id,
            task_id: e.task_id,
            node_id: e.node_id,
            actor: e.actor,
            message: e.message,
        }
    }
}

/// A page of a list, with the link to the next page (None on the last).
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The next page's URL.
    pub next: Option<String>,
}

impl<T: Serialize> Page<T> {
    /// A page of `items`, each with its cursor, cut where its JSON would pass `max_bytes`; the
    /// first item always stays, so paging always moves on. `full` says the query filled its
    /// limit; `next` makes the link after a cursor. Why: a response's size stays bounded
    /// whatever the rows hold (docs/api.md#lists).
    pub fn cut(items: Vec<(i64, T)>, full: bool, max_bytes: usize, next: impl FnOnce(i64) -> String) -> Page<T> {
        let total = items.len();
        let (mut kept, mut bytes, mut last) = (Vec::with_capacity(total), 0usize, None);
        for (cursor, item) in items {
            // A view that cannot be measured is measured as empty: serialising it fails again,
            // with the error, when the page is written.
            bytes += serde_json::to_vec(&item).map(|v| v.len() + 1).unwrap_or(0);
            if !kept.is_empty() && bytes > max_bytes {
                break;
            }
            kept.push(item);
            last = Some(cursor);
        }
        let more = full || kept.len() < total;
        Page { next: last.filter(|_| more).map(next), items: kept }
    }
}

/// The answer to a request that wrote a task (202).
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The task's id.
    pub task_id: i64,
    /// Its URL.
    pub task: String,
}

/// Every error: `{"error": {"code", "message", "fields"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `invalid`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `payload_too_large`, `unsupported_media_type`,
    /// `misdirected_request`, `unavailable`, `internal`.
    pub code: String,
    /// What is wrong and what to do.
    pub message: String,
    /// For `invalid`: each bad field.
    pub fields: Option<Vec<super::error::FieldError>>,
}

/// Percent-encode a query value (everything but RFC 3986 unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `next` link of a list: same filters, the cursor moved on.
pub fn next_link(path: &str, limit: i64, cursor: (&str, i64), filters: &[(&str, Option<String>)]) -> String {
    let mut url = format!("{path}?limit={limit}&{}={}", cursor.0, cursor.1);
    for (k, v) in filters {
        if let Some(v) = v {
            url.push_str(&format!("&{k}={}", encode(v)));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_application_no_live_member_owns_is_orphaned() {
        use crate::domain::AppState::*;
        let live = Liveness { me: "a".into(), my_session: 10, members: vec!["a".into(), "b".into()] };
        let l = Some(&live);
        assert_eq!(shown_state(Running, Some("b"), Some(3), l), "running");
        assert_eq!(shown_state(Running, Some("c"), Some(3), l), ORPHANED, "its owner left");
        assert_eq!(shown_state(Running, None, None, l), ORPHANED, "released, not adopted yet");
        assert_eq!(shown_state(Starting, Some("c"), Some(3), l), ORPHANED);
        assert_eq!(shown_state(Running, Some("a"), Some(12), l), "running");
        assert_eq!(shown_state(Running, Some("a"), Some(9), l), ORPHANED, "this node's earlier session");
        assert_eq!(shown_state(Stopped, None, None, l), "stopped", "says nothing runs");
        assert_eq!(shown_state(Failed, Some("c"), Some(3), l), "failed");
        assert_eq!(shown_state(Running, None, None, None), "running", "no current view: cannot tell");
    }

    #[test]
    fn pages_are_cut_at_the_byte_cap_and_link_on_from_the_last_item_kept() {
        let items = |n: i64| (1..=n).map(|i| (i, "x".repeat(10))).collect::<Vec<_>>();
        let link = |c: i64| format!("after={c}");
        // Each item is 12 bytes of JSON and a separator.
        let page = Page::cut(items(5), false, 30, link);
        assert_eq!((page.items.len(), page.next.as_deref()), (2, Some("after=2")));
        let page = Page::cut(items(5), false, 1_000, link);
        assert_eq!((page.items.len(), page.next), (5, None));
        let page = Page::cut(items(5), true, 1_000, link);
        assert_eq!(page.next.as_deref(), Some("after=5"), "a full page links on");
        let page = Page::cut(items(3), false, 1, link);
        assert_eq!((page.items.len(), page.next.as_deref()), (1, Some("after=1")), "one item always");
        let page = Page::cut(Vec::<(i64, String)>::new(), true, 1, link);
        assert_eq!((page.items.len(), page.next), (0, None));
    }

    #[test]
    fn next_links_encode_values() {
        let url = next_link("/api/v1/apps", 2, ("after", 7), &[("owner", Some("a b&c=d".into())), ("state", None)]);
        assert_eq!(url, "/api/v1/apps?limit=2&after=7&owner=a%20b%26c%3Dd");
    }
}
