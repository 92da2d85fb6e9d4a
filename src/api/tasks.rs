//! `/api/v1/tasks`: submit any task, list with filters, show, cancel.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::body::{NoFields, OptionalJson};
use super::error::ApiError;
use super::views::{next_link, Accepted, ErrorBody, Page, TaskSummaryView, TaskView};
use super::ApiState;
use super::{audit, caller, page_size, stored_time};
use crate::domain::Action;
use crate::domain::TaskStatus;
use crate::jobs::routing::{check_shards, fan_out_payloads};
use crate::jobs::Strategy;
use crate::store::models::NewTask;
use crate::store::tasks::{self, TaskFilter};
use crate::store::StoreError;

/// Register the routes.
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(submit).service(list).service(show).service(cancel);
}

/// Insert a task and wake this node's dispatcher; a taken idempotency key is a 409 naming the
/// task that holds it.
pub async fn insert(state: &ApiState, new: NewTask) -> Result<i64, ApiError> {
    let key = new.idempotency_key.clone();
    match state.store.run(move |c| tasks::insert_task(c, &new)).await {
        Ok(id) => {
            state.wake.notify_one();
            Ok(id)
        }
        Err(StoreError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => {
            let key = key.unwrap_or_default();
            let holder = existing_task(state, key.clone()).await?;
            Err(ApiError::Conflict(format!(
                "idempotency key `{key}` is already used by task {}",
                holder.map(|h| h.to_string()).unwrap_or_else(|| "?".into())
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// A task to write.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// `start`, `stop`, `restart` or `run`.
    action: String,
    /// The application (absent for a job).
    app_id: Option<i64>,
    /// Parameters (a JSON object).
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
    /// Higher first within a claimed batch.
    priority: Option<i32>,
    /// Not before this time (RFC 3339).
    run_after: Option<DateTime<Utc>>,
    /// Attempts allowed (default 3).
    max_attempts: Option<i32>,
    /// A second task with the same key is refused (409).
    idempotency_key: Option<String>,
    /// Jobs (`run`): hash (default), round_robin, random, least_busy, first, last, lru, lfu,
    /// failover, broadcast, sharding, map, map_reduce.
    routing: Option<String>,
    /// Sharding: number of shards (default: one per matching node, or `payload.shard_params`'s
    /// length).
    shard_total: Option<i32>,
    /// Jobs: per-attempt time limit in ms.
    timeout_ms: Option<i32>,
    /// Jobs: labels the executing node must have (default: the application's selector).
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    selector: Option<Value>,
    /// A child of a running `map` / `map_reduce` job (its application by default).
    parent_id: Option<i64>,
}

#[utoipa::path(tag = "tasks", request_body = Submit, responses(
    (status = 202, description = "Written", body = Accepted),
    (status = 409, description = "Idempotency key already used", body = ErrorBody),
    (status = 422, description = "Invalid fields", body = ErrorBody)))]
#[post("/tasks")]
async fn submit(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<Submit>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    // Dispatch fails a row whose action it does not know; the API refuses it at the door.
    let Some(action) = Action::parse(&b.action) else {
        let shown: String = b.action.chars().take(64).collect();
        let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        return Err(ApiError::field("action", format!("unknown action `{shown}`: use one of {}", all.join(", "))));
    };
    if let Some(p) = b.payload.as_ref().filter(|p| !p.is_object()) {
        return Err(ApiError::field("payload", format!("must be a JSON object, got {p}")));
    }
    if b.max_attempts.is_some_and(|m| m < 1) {
        return Err(ApiError::field("max_attempts", "must be at least 1"));
    }
    if b.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 256) {
        return Err(ApiError::field("idempotency_key", "1 to 256 characters"));
    }
    let is_job = action == Action::Run;
    let selector = b.selector.map(super::selector_field).transpose()?;
    for (field, set) in [
        ("routing", b.routing.is_some()),
        ("shard_total", b.shard_total.is_some()),
        ("timeout_ms", b.timeout_ms.is_some()),
        ("selector", selector.is_some()),
        ("parent_id", b.parent_id.is_some()),
    ] {
        if set && !is_job {
            return Err(ApiError::field(field, "only jobs (action `run`) take this"));
        }
    }
    let strategy = Strategy::parse(b.routing.as_deref()).map_err(|e| ApiError::field("routing", e))?;
    if strategy == Strategy::Workflow {
        return Err(ApiError::field(
            "routing",
            "a workflow's coordinator is written by its run: start one with POST /api/v1/workflows/{id}/runs",
        ));
    }
    if b.shard_total.is_some() && strategy != Strategy::Sharding {
        return Err(ApiError::field("shard_total", "only with routing `sharding`"));
    }
    if strategy == Strategy::Sharding {
        let obj = b.payload.as_ref().and_then(Value::as_object).cloned().unwrap_or_default();
        let shards = check_shards(b.shard_total, &obj).map_err(|(field, msg)| ApiError::field(&field, msg))?;
        // Without a count it is one shard per matching node, each storing only its index.
        if let Some(n) = shards {
            fan_out_payloads(&obj, true, n as usize, state.fan_out_max_bytes)
                .map_err(|msg| ApiError::field("payload.shard_params", msg))?;
        }
    }
    if b.timeout_ms.is_some_and(|t| t < 1) {
        return Err(ApiError::field("timeout_ms", "must be at least 1"));
    }
    let mut app_id = b.app_id;
    if let Some(pid) = b.parent_id {
        let parent = state.store.run(move |c| tasks::find_task(c, pid)).await?;
        let Some(parent) = parent else {
            return Err(ApiError::field("parent_id", format!("no task with id {pid}")));
        };
        if !matches!(parent.routing.as_deref(), Some("map" | "map_reduce")) {
            return Err(ApiError::field("parent_id", format!("task {pid} is not a map or map_reduce job")));
        }
        if parent.status != TaskStatus::Running || parent.stage.is_some() {
            return Err(ApiError::field(
                "parent_id",
                format!("task {pid} is {} (children are added while its map step runs)", parent.status),
            ));
        }
        if b.routing.is_some() {
            return Err(ApiError::field("routing", "a map child runs on its own ring owner: leave routing out"));
        }
        app_id = app_id.or(parent.app_id);
    }
    if let Some(app_id) = app_id {
        let exists = state.store.run(move |c| crate::store::apps::find_application(c, app_id)).await?.is_some();
        if !exists {
            return Err(ApiError::field("app_id", format!("no application with id {app_id}")));
        }
    }
    let run_after = stored_time("run_after", b.run_after)?;
    let new = NewTask {
        app_id,
        routing: b.routing,
        shard_total: b.shard_total,
        timeout_ms: b.timeout_ms,
        selector: selector.map(|s| json!(s).to_string()),
        parent_id: b.parent_id,
        action: b.action.clone(),
        payload: b.payload.map(|p| p.to_string()),
        priority: b.priority,
        run_after,
        max_attempts: b.max_attempts,
        idempotency_key: b.idempotency_key,
        ..Default::default()
    };
    let id = insert(&state, new).await?;
    audit(&state, "task.submitted", app_id, Some(id), caller(&req), format!("task {id} `{}` submitted", b.action))
        .await;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/api/v1/tasks/{id}")))
        .json(json!({ "task_id": id, "task": format!("/api/v1/tasks/{id}") })))
}

/// Filters and paging of the task list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// pending, running, succeeded, failed, cancelled, lost.
    status: Option<String>,
    /// Application.
    app_id: Option<i64>,
    /// Claiming node.
    owner: Option<String>,
    /// Children of this job.
    parent_id: Option<i64>,
    /// Created at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
    /// Return ids greater than this.
    after: Option<i64>,
}

const STATUSES: [&str; 6] = ["pending", "running", "succeeded", "failed", "cancelled", "lost"];

#[utoipa::path(tag = "tasks", params(ListQuery), responses((status = 200, description = "A page of tasks", body = Page<TaskSummaryView>)))]
#[get("/tasks")]
async fn list(state: web::Data<ApiState>, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let qy = query.into_inner();
    let limit = page_size(qy.limit)?;
    if let Some(s) = qy.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::field("status", format!("`{s}` is not one of {}", STATUSES.join(", "))));
    }
    let filter = TaskFilter {
        status: qy.status.clone(),
        app_id: qy.app_id,
        owner: qy.owner.clone(),
        parent_id: qy.parent_id,
        since: stored_time("since", qy.since)?,
        until: stored_time("until", qy.until)?,
    };
    let after = qy.after.unwrap_or(0);
    let rows = state.store.run(move |c| tasks::list_tasks(c, &filter, after, limit)).await?;
    let full = rows.len() as i64 == limit;
    let items = rows.into_iter().map(|t| (t.id, TaskSummaryView::from(t))).collect();
    let page = Page::cut(items, full, state.max_response_bytes, |after| {
        let time = |t: Option<DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string());
        next_link(
            "/api/v1/tasks",
            limit,
            ("after", after),
            &[
                ("status", qy.status.clone()),
                ("app_id", qy.app_id.map(|a| a.to_string())),
                ("owner", qy.owner.clone()),
                ("parent_id", qy.parent_id.map(|p| p.to_string())),
                ("since", time(qy.since)),
                ("until", time(qy.until)),
            ],
        )
    });
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(tag = "tasks", params(("id" = i64, Path, description = "Task id")), responses(
    (status = 200, description = "The task", body = TaskView),
    (status = 404, description = "No such task", body = ErrorBody)))]
#[get("/tasks/{id}")]
async fn show(state: web::Data<ApiState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let task = state
        .store
        .run(move |c| tasks::find_task(c, id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task with id {id}")))?;
    // A job that fans out or maps is a parent: its view counts its children.
    let parent = task.parent_id.is_none()
        && task.action_word() == Some(Action::Run)
        && Strategy::parse(task.routing.as_deref()).is_ok_and(|s| s.fans_out() || s.is_map());
    let view = TaskView::from(task);
    if !parent {
        return Ok(HttpResponse::Ok().json(view));
    }
    let counts = state.store.run(move |c| tasks::child_counts(c, id)).await?;
    Ok(HttpResponse::Ok().json(view.with_children(&counts)))
}

#[utoipa::path(tag = "tasks", params(("id" = i64, Path, description = "Task id")), responses(
    (status = 200, description = "Cancelled", body = TaskView),
    (status = 404, description = "No such task", body = ErrorBody),
    (status = 409, description = "Not pending", body = ErrorBody)))]
#[post("/tasks/{id}/cancel")]
async fn cancel(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if state.store.run(move |c| tasks::cancel(c, id)).await? {
        let task = state.store.run(move |c| tasks::find_task(c, id)).await?;
        let app_id = task.as_ref().and_then(|t| t.app_id);
        audit(&state, "task.cancelled", app_id, Some(id), caller(&req), format!("task {id} cancelled")).await;
        let task = task.ok_or_else(|| ApiError::NotFound(format!("task {id} was deleted after it was cancelled")))?;
        return Ok(HttpResponse::Ok().json(TaskView::from(task)));
    }
    match state.store.run(move |c| tasks::find_task(c, id)).await? {
        None => Err(ApiError::NotFound(format!("no task with id {id}"))),
        Some(t) => Err(ApiError::Conflict(format!("task {id} is {}; only pending tasks can be cancelled", t.status))),
    }
}

/// The task holding an idempotency key, if any.
async fn existing_task(state: &ApiState, key: String) -> Result<Option<i64>, ApiError> {
    Ok(state.store.run(move |c| tasks::find_by_idempotency_key(c, &key)).await?.map(|t| t.id))
}
