//! `/api/v1/workflows` and `/api/v1/workflow-runs`: define workflows (DAGs of jobs), start runs,
//! show a run with each node's state, retry a failed node, cancel a run (docs/workflows.md).
//!
//! Every field of a definition is validated here and a bad one is a 422 naming it
//! (`nodes[2].app_id`, `edges[0].to`); a cycle is refused naming its nodes. The runs themselves
//! advance on their coordinators ([`crate::dispatch`]), not in this module.

use std::collections::{BTreeMap, HashMap};

use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::body::OptionalJson;
use super::error::{ApiError, FieldError};
use super::views::{next_link, ErrorBody, Page};
use super::{audit, caller, page_size, selector_field, ApiState};
use crate::store::workflows::{self as store, CreateError, NodeView, Refused, RunRow, WorkflowRow};
use crate::workflow::{Dag, Definition, Edge, Node, On, Policy};

/// Register the routes (each handler's `#[utoipa::path]` puts it in the OpenAPI document).
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(create)
        .service(list)
        .service(show)
        .service(replace)
        .service(start_run)
        .service(list_runs)
        .service(show_run)
        .service(retry)
        .service(cancel);
}

/// The largest context a run may start with (bytes of JSON): it is read on every advance.
pub(super) const MAX_CONTEXT_BYTES: usize = 1024 * 1024;

fn ts(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A node as a body sends it; checked field by field ([`check_definition`]).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    /// Unique key in the workflow: letters, digits, `_`, `-`.
    key: String,
    /// The job's application; absent for a noop job.
    app_id: Option<i64>,
    /// The job's routing (docs/jobs.md); default `hash`.
    routing: Option<String>,
    /// The job's parameters (a JSON object).
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
    /// Per-attempt time limit, ms.
    timeout_ms: Option<i32>,
    /// Attempts of the job (default 3).
    max_attempts: Option<i32>,
    /// Labels the executing node must have (an object of strings).
    #[schema(value_type = Option<Object>)]
    selector: Option<Value>,
    /// `fail` (default), `skip` or `continue`.
    on_failure: Option<String>,
    /// A decision node's expression, e.g. `context.extract.rows > 0`: it runs no job and its
    /// edges `on: true` / `on: false` are followed.
    decision: Option<String>,
}

/// An edge as a body sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeBody {
    /// Upstream node key.
    from: String,
    /// Downstream node key.
    to: String,
    /// `success` (default), `failure`, `always`; from a decision node `true` or `false`.
    on: Option<String>,
}

/// A new workflow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    name: String,
    /// Its nodes.
    nodes: Vec<NodeBody>,
    /// Its edges (none: every node starts at once).
    #[serde(default)]
    edges: Vec<EdgeBody>,
    /// Runs at once, at most (none: no limit); more wait in id order.
    max_concurrent_runs: Option<i32>,
}

/// A new version of a workflow's definition (running runs keep theirs).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceWorkflow {
    /// Its nodes.
    nodes: Vec<NodeBody>,
    /// Its edges.
    #[serde(default)]
    edges: Vec<EdgeBody>,
    /// Runs at once, at most (none: no limit).
    max_concurrent_runs: Option<i32>,
}

/// A workflow as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    id: i64,
    name: String,
    /// The current version (a new run takes it).
    version: i32,
    max_concurrent_runs: Option<i32>,
    /// The current version's nodes.
    #[schema(value_type = Vec<Object>)]
    nodes: Value,
    /// The current version's edges.
    #[schema(value_type = Vec<Object>)]
    edges: Value,
    /// How many of its runs are in each status (`pending`, `running`, …; absent: none).
    runs: BTreeMap<String, i64>,
    created_at: String,
    updated_at: String,
}

fn view(w: WorkflowRow, definition: &str) -> WorkflowView {
    let d: Value = serde_json::from_str(definition).unwrap_or_else(|_| json!({}));
    WorkflowView {
        id: w.id,
        name: w.name,
        version: w.version,
        max_concurrent_runs: w.max_concurrent_runs,
        nodes: d.get("nodes").cloned().unwrap_or_else(|| json!([])),
        edges: d.get("edges").cloned().unwrap_or_else(|| json!([])),
        runs: BTreeMap::new(),
        created_at: ts(w.created_at),
        updated_at: ts(w.updated_at),
    }
}

fn push(errors: &mut Vec<FieldError>, field: impl Into<String>, message: impl Into<String>) {
    errors.push(FieldError { field: field.into(), message: message.into() });
}

fn invalid(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let message = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
    Err(ApiError::Invalid { message, fields: errors })
}

/// Check a definition's fields, its applications and its shape (no cycle); every problem named.
async fn check_definition(
    state: &ApiState,
    nodes: Vec<NodeBody>,
    edges: Vec<EdgeBody>,
    max_concurrent_runs: Option<i32>,
) -> Result<Dag, ApiError> {
    let mut errors = Vec::new();
    if max_concurrent_runs.is_some_and(|m| m < 1) {
        push(&mut errors, "max_concurrent_runs", "must be at least 1");
    }
    let mut def = Definition::default();
    let mut apps: Vec<(usize, i64)> = Vec::new();
    for (i, n) in nodes.into_iter().enumerate() {
        let payload = match n.payload {
            None => None,
            Some(Value::Object(o)) => Some(o),
            Some(other) => {
                push(&mut errors, format!("nodes[{i}].payload"), format!("must be a JSON object, got {other}"));
                None
            }
        };
        let selector = match n.selector.map(selector_field).transpose() {
            Ok(s) => s,
            Err(ApiError::Invalid { fields, .. }) => {
                for f in fields {
                    push(&mut errors, format!("nodes[{i}].{}", f.field), f.message);
                }
                None
            }
            Err(e) => return Err(e),
        };
        let on_failure = match n.on_failure.as_deref() {
            None | Some("fail") => Policy::Fail,
            Some("skip") => Policy::Skip,
            Some("continue") => Policy::Continue,
            Some(other) => {
                let shown: String = other.chars().take(32).collect();
                push(&mut errors, format!("nodes[{i}].on_failure"), format!("`{shown}`: use fail, skip or continue"));
                Policy::Fail
            }
        };
        if let Some(a) = n.app_id {
            apps.push((i, a));
        }
        def.nodes.push(Node {
            key: n.key,
            app_id: n.app_id,
            routing: n.routing.filter(|r| !r.trim().is_empty()),
            payload,
            timeout_ms: n.timeout_ms,
            max_attempts: n.max_attempts,
            selector,
            on_failure,
            decision: n.decision,
        });
    }
    for (i, e) in edges.into_iter().enumerate() {
        let on = match e.on.as_deref() {
            None | Some("success") => On::Success,
            Some("failure") => On::Failure,
            Some("always") => On::Always,
            Some("true") => On::True,
            Some("false") => On::False,
            Some(other) => {
                let shown: String = other.chars().take(32).collect();
                push(
                    &mut errors,
                    format!("edges[{i}].on"),
                    format!("`{shown}`: use success, failure, always (from a decision: true, false)"),
                );
                On::Success
            }
        };
        def.edges.push(Edge { from: e.from, to: e.to, on });
    }
    let mut checked: HashMap<i64, bool> = HashMap::new();
    for (i, a) in apps.into_iter().take(1000) {
        let exists = match checked.get(&a) {
            Some(&e) => e,
            None => {
                let e = state.store.run(move |c| crate::store::apps::find_application(c, a)).await?.is_some();
                checked.insert(a, e);
                e
            }
        };
        if !exists {
            push(&mut errors, format!("nodes[{i}].app_id"), format!("no application with id {a}"));
        }
    }
    let dag = def.check();
    if let Err(problems) = &dag {
        for (f, m) in problems {
            push(&mut errors, f.clone(), m.clone());
        }
    }
    invalid(errors)?;
    dag.map_err(|_| ApiError::Invalid { message: "invalid definition".into(), fields: Vec::new() })
}

fn definition_text(dag: &Dag) -> String {
    serde_json::to_string(&dag.def).unwrap_or_else(|_| "{}".into())
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[utoipa::path(tag = "workflows", request_body = CreateWorkflow, responses(
    (status = 201, description = "Created (version 1)", body = WorkflowView),
    (status = 409, description = "The name is taken", body = ErrorBody),
    (status = 422, description = "Invalid fields, each named; a cycle names its nodes", body = ErrorBody)))]
#[post("/workflows")]
async fn create(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<CreateWorkflow>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if !name_ok(&b.name) {
        return Err(ApiError::field("name", "1 to 128 letters, digits, `-`, `_` or `.`"));
    }
    let dag = check_definition(&state, b.nodes, b.edges, b.max_concurrent_runs).await?;
    let text = definition_text(&dag);
    let (name, limit) = (b.name.clone(), b.max_concurrent_runs);
    let t = text.clone();
    let row = match state.store.run(move |c| Ok(store::create_workflow(c, &name, limit, &t))).await? {
        Ok(row) => row,
        Err(CreateError::Exists) => {
            return Err(ApiError::Conflict(format!("a workflow named `{}` already exists", b.name)))
        }
        Err(CreateError::Store(e)) => return Err(e.into()),
    };
    audit(&state, "workflow.created", None, None, caller(&req), format!("workflow {} `{}` created", row.id, row.name))
        .await;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/workflows/{}", row.id)))
        .json(view(row, &text)))
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
    /// Return ids greater than this (the `next` link sets it).
    after: Option<i64>,
}

#[utoipa::path(tag = "workflows", params(ListQuery), responses((status = 200, description = "A page of workflows", body = Page<WorkflowView>)))]
#[get("/workflows")]
async fn list(state: web::Data<ApiState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = page_size(q.limit)?;
    let after = q.after.unwrap_or(0);
    let rows = state
        .store
        .run(move |c| {
            let rows = store::list_workflows(c, after, limit)?;
            let ids: Vec<i64> = rows.iter().map(|w| w.id).collect();
            let counts = store::run_counts(c, &ids)?;
            rows.into_iter()
                .map(|w| {
                    let d = store::definition(c, w.id, w.version)?.unwrap_or_default();
                    Ok((w, d))
                })
                .collect::<Result<Vec<_>, crate::store::StoreError>>()
                .map(|rows| (rows, counts))
        })
        .await?;
    let (rows, counts) = rows;
    let full = rows.len() as i64 == limit;
    let items = rows
        .into_iter()
        .map(|(w, d)| {
            let id = w.id;
            let mut v = view(w, &d);
            v.runs = counts.iter().filter(|(w, _, _)| *w == id).map(|(_, s, n)| (s.clone(), *n)).collect();
            (id, v)
        })
        .collect();
    let page = Page::cut(items, full, state.max_response_bytes, |after| {
        next_link("/api/v1/workflows", limit, ("after", after), &[])
    });
    Ok(HttpResponse::Ok().json(page))
}

async fn load(state: &ApiState, id: i64) -> Result<(WorkflowRow, String), ApiError> {
    state
        .store
        .run(move |c| {
            let Some(w) = store::find_workflow(c, id)? else { return Ok(None) };
            let d = store::definition(c, id, w.version)?.unwrap_or_default();
            Ok(Some((w, d)))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no workflow with id {id}")))
}

#[utoipa::path(tag = "workflows", params(("id" = i64, Path, description = "Workflow id")), responses(
    (status = 200, description = "The workflow and its current definition", body = WorkflowView),
    (status = 404, description = "No such workflow", body = ErrorBody)))]
#[get("/workflows/{id}")]
async fn show(state: web::Data<ApiState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let (w, d) = load(&state, id).await?;
    let counts = state.store.run(move |c| store::run_counts(c, &[id])).await?;
    let mut v = view(w, &d);
    v.runs = counts.into_iter().map(|(_, s, n)| (s, n)).collect();
    Ok(HttpResponse::Ok().json(v))
}

#[utoipa::path(tag = "workflows", params(("id" = i64, Path, description = "Workflow id")), request_body = ReplaceWorkflow, responses(
    (status = 200, description = "A new version; runs already started keep theirs", body = WorkflowView),
    (status = 404, description = "No such workflow", body = ErrorBody),
    (status = 422, description = "Invalid fields, each named", body = ErrorBody)))]
#[put("/workflows/{id}")]
async fn replace(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<ReplaceWorkflow>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    load(&state, id).await?;
    let b = body.into_inner();
    let dag = check_definition(&state, b.nodes, b.edges, b.max_concurrent_runs).await?;
    let text = definition_text(&dag);
    let (t, limit) = (text.clone(), b.max_concurrent_runs);
    let row = state
        .store
        .run(move |c| store::update_workflow(c, id, Some(limit), Some(&t)))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no workflow with id {id}")))?;
    audit(
        &state,
        "workflow.updated",
        None,
        None,
        caller(&req),
        format!("workflow {id} `{}` is at version {}", row.name, row.version),
    )
    .await;
    Ok(HttpResponse::Ok().json(view(row, &text)))
}

/// A run's start.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The run's initial context (a JSON object); nodes' results join it under their keys.
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
}

/// A run started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    /// The run.
    run_id: i64,
    /// Its coordinator task.
    task_id: Option<i64>,
    /// The definition's version it runs.
    version: Option<i32>,
}

#[utoipa::path(tag = "workflows", params(("id" = i64, Path, description = "Workflow id")), request_body(content = Option<StartRun>, description = "Optional: the initial context"), responses(
    (status = 202, description = "Started: its coordinator takes it on", body = RunStarted),
    (status = 404, description = "No such workflow", body = ErrorBody),
    (status = 422, description = "Invalid fields", body = ErrorBody)))]
#[post("/workflows/{id}/runs")]
async fn start_run(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: OptionalJson<StartRun>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let b = body.0.unwrap_or_default();
    let context = match b.context {
        None => "{}".to_string(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(other) => return Err(ApiError::field("context", format!("must be a JSON object, got {other}"))),
    };
    if context.len() > MAX_CONTEXT_BYTES {
        return Err(ApiError::field("context", format!("at most {MAX_CONTEXT_BYTES} bytes of JSON")));
    }
    let (w, _) = load(&state, id).await?;
    let run = state.store.run(move |c| store::start_run(c, id, &context)).await?;
    state.wake.notify_one();
    audit(
        &state,
        "workflow.run",
        None,
        run.task_id,
        caller(&req),
        format!("workflow {id} `{}` run {} started", w.name, run.id),
    )
    .await;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/api/v1/workflow-runs/{}", run.id)))
        .json(RunStarted { run_id: run.id, task_id: run.task_id, version: run.version }))
}

/// A node of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeRunView {
    key: String,
    /// The application whose job it runs (none: a noop job, or a decision).
    app_id: Option<i64>,
    /// A decision node's expression.
    expression: Option<String>,
    /// `waiting` `running` `succeeded` `failed` `skipped` `cancelled`.
    status: String,
    /// Its latest job.
    task_id: Option<i64>,
    /// Its job's status.
    task_status: Option<String>,
    /// The node that ran (or runs) its job.
    node_id: Option<String>,
    /// Times retried.
    round: i32,
    /// A decision's branch.
    decision: Option<bool>,
    error: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
}

/// A run as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    id: i64,
    workflow_id: i64,
    version: Option<i32>,
    /// `pending` (waiting for its coordinator or its workflow's limit), `running`,
    /// `succeeded`, `failed`, `cancelled`.
    status: String,
    /// The context: the run's own, with each node's result under its key.
    #[schema(value_type = Object)]
    context: Value,
    /// Its coordinator task.
    task_id: Option<i64>,
    cancel_requested: bool,
    error: Option<String>,
    /// Every node in definition order, with its edges' upstream keys.
    nodes: Vec<NodeRunView>,
    #[schema(value_type = Vec<Object>)]
    edges: Value,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

async fn run_view(state: &ApiState, id: i64) -> Result<RunView, ApiError> {
    let found = state
        .store
        .run(move |c| {
            let Some(run) = store::find_run(c, id)? else { return Ok(None) };
            let def = match run.version {
                Some(v) => store::definition(c, run.workflow_id, v)?,
                None => None,
            };
            let nodes = store::node_views(c, id)?;
            Ok(Some((run, def, nodes)))
        })
        .await?;
    let Some((run, def, nodes)) = found else {
        return Err(ApiError::NotFound(format!("no workflow run with id {id}")));
    };
    Ok(assemble(run, def, nodes))
}

fn assemble(run: RunRow, def: Option<String>, nodes: Vec<NodeView>) -> RunView {
    let def: Definition = def.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default();
    let mut by_key: HashMap<String, NodeView> = nodes.into_iter().map(|n| (n.row.node_key.clone(), n)).collect();
    let nodes = def
        .nodes
        .iter()
        .map(|n| match by_key.remove(&n.key) {
            Some(v) => NodeRunView {
                key: n.key.clone(),
                app_id: n.app_id,
                expression: n.decision.clone(),
                status: v.row.status,
                task_id: v.row.task_id,
                task_status: v.task_status,
                node_id: v.node_id,
                round: v.row.round,
                decision: v.row.decision,
                error: v.row.error,
                started_at: v.row.started_at.map(ts),
                finished_at: v.row.finished_at.map(ts),
            },
            None => NodeRunView {
                key: n.key.clone(),
                app_id: n.app_id,
                expression: n.decision.clone(),
                status: "waiting".into(),
                task_id: None,
                task_status: None,
                node_id: None,
                round: 0,
                decision: None,
                error: None,
                started_at: None,
                finished_at: None,
            },
        })
        .collect();
    RunView {
        id: run.id,
        workflow_id: run.workflow_id,
        version: run.version,
        status: run.status,
        context: serde_json::from_str(&run.context).unwrap_or_else(|_| json!({})),
        task_id: run.task_id,
        cancel_requested: run.cancel_requested,
        error: run.error,
        nodes,
        edges: json!(def.edges),
        created_at: ts(run.created_at),
        updated_at: ts(run.updated_at),
        finished_at: run.finished_at.map(ts),
    }
}

/// How many runs.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// The newest this many, 1–500 (default 50).
    limit: Option<i64>,
}

/// A run in a list (without its nodes).
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    id: i64,
    version: Option<i32>,
    status: String,
    task_id: Option<i64>,
    error: Option<String>,
    created_at: String,
    finished_at: Option<String>,
}

#[utoipa::path(tag = "workflows", params(("id" = i64, Path, description = "Workflow id"), RunsQuery), responses(
    (status = 200, description = "Its newest runs, newest first", body = Vec<RunSummary>),
    (status = 404, description = "No such workflow", body = ErrorBody)))]
#[get("/workflows/{id}/runs")]
async fn list_runs(
    state: web::Data<ApiState>,
    id: web::Path<i64>,
    q: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let limit = page_size(q.into_inner().limit)?;
    load(&state, id).await?;
    let runs = state.store.run(move |c| store::list_runs(c, id, limit)).await?;
    let items: Vec<RunSummary> = runs
        .into_iter()
        .map(|r| RunSummary {
            id: r.id,
            version: r.version,
            status: r.status,
            task_id: r.task_id,
            error: r.error,
            created_at: ts(r.created_at),
            finished_at: r.finished_at.map(ts),
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

#[utoipa::path(tag = "workflows", params(("id" = i64, Path, description = "Run id")), responses(
    (status = 200, description = "The run: status, context, and each node's status, job and node", body = RunView),
    (status = 404, description = "No such run", body = ErrorBody)))]
#[get("/workflow-runs/{id}")]
async fn show_run(state: web::Data<ApiState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(run_view(&state, id.into_inner()).await?))
}

/// Which node to retry.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryNode {
    /// The failed (or cancelled) node's key.
    node: String,
}

fn refused(id: i64, r: Refused, node: Option<&str>) -> ApiError {
    match r {
        Refused::NoRun => ApiError::NotFound(format!("no workflow run with id {id}")),
        Refused::NoNode => ApiError::field("node", format!("run {id} has no node `{}`", node.unwrap_or(""))),
        Refused::State(msg) => ApiError::Conflict(msg),
    }
}

#[utoipa::path(tag = "workflows", params(("id" = i64, Path, description = "Run id")), request_body = RetryNode, responses(
    (status = 202, description = "The node and the nodes it held back wait again; the run goes on", body = RunView),
    (status = 404, description = "No such run", body = ErrorBody),
    (status = 409, description = "The node is not failed or cancelled", body = ErrorBody),
    (status = 422, description = "No such node", body = ErrorBody)))]
#[post("/workflow-runs/{id}/retry")]
async fn retry(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<RetryNode>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let node = body.into_inner().node;
    let run = state
        .store
        .run(move |c| {
            let Some(run) = store::find_run(c, id)? else { return Ok(None) };
            let def = match run.version {
                Some(v) => store::definition(c, run.workflow_id, v)?,
                None => None,
            };
            Ok(Some(def))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no workflow run with id {id}")))?;
    let dag = run
        .and_then(|d| serde_json::from_str::<Definition>(&d).ok())
        .and_then(|d| d.check().ok())
        .ok_or_else(|| ApiError::Conflict(format!("run {id} has no readable definition")))?;
    let Some(&start) = dag.index.get(&node) else {
        return Err(ApiError::field("node", format!("run {id} has no node `{node}`")));
    };
    // Everything downstream of the node may have been skipped or cancelled because of it.
    let mut below = Vec::new();
    let mut seen = vec![false; dag.def.nodes.len()];
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        for &d in &dag.downstream[i] {
            if !seen[d] {
                seen[d] = true;
                below.push(dag.def.nodes[d].key.clone());
                stack.push(d);
            }
        }
    }
    let key = node.clone();
    match state.store.run(move |c| store::retry_node(c, id, &key, &below)).await? {
        Ok(_) => {}
        Err(r) => return Err(refused(id, r, Some(&node))),
    }
    state.wake.notify_one();
    audit(&state, "workflow.retried", None, None, caller(&req), format!("workflow run {id}: node `{node}` retried"))
        .await;
    Ok(HttpResponse::Accepted().json(run_view(&state, id).await?))
}

#[utoipa::path(tag = "workflows", params(("id" = i64, Path, description = "Run id")), responses(
    (status = 202, description = "Cancelling: nothing starts, its jobs are stopped", body = RunView),
    (status = 404, description = "No such run", body = ErrorBody),
    (status = 409, description = "The run has ended", body = ErrorBody)))]
#[post("/workflow-runs/{id}/cancel")]
async fn cancel(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    _body: OptionalJson<super::body::NoFields>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match state.store.run(move |c| store::cancel_run(c, id)).await? {
        Ok(_) => {}
        Err(r) => return Err(refused(id, r, None)),
    }
    audit(&state, "workflow.cancelled", None, None, caller(&req), format!("workflow run {id} cancelled")).await;
    Ok(HttpResponse::Accepted().json(run_view(&state, id).await?))
}
