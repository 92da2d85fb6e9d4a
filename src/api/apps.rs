//! `/api/v1/apps`: create, list, show, update, delete applications, and start / stop / restart
//! them (each writes a `task` and answers 202 with its id and link).

use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::body::{NoFields, OptionalJson};
use super::error::{ApiError, FieldError};
use super::views::{next_link, Accepted, AppView, ErrorBody, EventView, Liveness, Page};
use super::{audit, caller, page_size, ApiState};
use crate::drivers::{secret, SpecError};
use crate::store::apps::{self, AppFilter, AppUpdate, Deleted};
use crate::store::events::{self, EventFilter};
use crate::store::models::{NewApplication, NewTask};
use crate::store::StoreError;

/// Register the routes (each handler's `#[utoipa::path]` puts it in the OpenAPI document).
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(create)
        .service(list)
        .service(show)
        .service(update)
        .service(delete)
        .service(start)
        .service(stop)
        .service(restart)
        .service(savepoint);
}

/// A new application.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    name: String,
    /// `process`, `shell`, `http` or `noop` (docs/drivers.md).
    driver: String,
    /// The driver's spec (validated now; errors per field). `***` as a secret field's value is
    /// refused: there is no stored value to keep (docs/api.md#secrets).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    spec: Value,
    /// Labels a node must have to own it, e.g. `{"dc": "dc1"}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    selector: Value,
    restart_policy: Option<String>,
    max_restarts: Option<i32>,
    monitor_interval_ms: Option<i32>,
    /// Traffic group: a traffic policy of that name picks the datacenter it (and its jobs) run in.
    traffic_group: Option<String>,
}

fn check_group(group: Option<&str>, errors: &mut Vec<FieldError>) {
    if let Some(g) = group {
        if let Err(msg) = super::traffic::check_group_name(g) {
            errors.push(FieldError { field: "traffic_group".into(), message: msg });
        }
    }
}

fn empty_object() -> Value {
    json!({})
}

const POLICIES: [&str; 3] = ["never", "on_failure", "always"];

fn check_name(name: &str, errors: &mut Vec<FieldError>) {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        errors.push(FieldError { field: "name".into(), message: "1 to 128 letters, digits, `-`, `_` or `.`".into() });
    }
}

fn check_policy(policy: Option<&str>, max: Option<i32>, interval: Option<i32>, errors: &mut Vec<FieldError>) {
    if let Some(p) = policy.filter(|p| !POLICIES.contains(p)) {
        errors.push(FieldError {
            field: "restart_policy".into(),
            message: format!("`{p}` is not one of never, on_failure, always"),
        });
    }
    if max.is_some_and(|m| m < 0) {
        errors.push(FieldError { field: "max_restarts".into(), message: "must be 0 or more".into() });
    }
    if interval.is_some_and(|i| i <= 0) {
        errors.push(FieldError { field: "monitor_interval_ms".into(), message: "must be at least 1".into() });
    }
}

/// A spec problem as a body field (`spec.env.A`).
fn spec_field(e: SpecError) -> FieldError {
    FieldError {
        field: if e.field.is_empty() { "spec".into() } else { format!("spec.{}", e.field) },
        message: e.message,
    }
}

/// The spec to store: `sent` with each `***` at a secret place replaced by what `stored` holds
/// there (`stored` is None on create, where `***` is refused: there is nothing to keep), then
/// validated. Problems go to `errors`, each naming its field and none quoting a value.
fn complete_spec(
    state: &ApiState,
    driver: &str,
    sent: Value,
    stored: Option<&Value>,
    errors: &mut Vec<FieldError>,
) -> Value {
    let Some(d) = state.drivers.get(driver) else {
        errors.push(FieldError {
            field: "driver".into(),
            message: format!("unknown driver `{driver}` (available: {})", state.drivers.names().join(", ")),
        });
        return sent;
    };
    let secrets = secret::all(d.secrets(&sent), &sent);
    let spec = match secret::merge(&sent, stored, &secrets) {
        Ok(spec) => spec,
        Err(found) => {
            errors.extend(found.into_iter().map(spec_field));
            return sent;
        }
    };
    if let Err(found) = d.validate(&spec) {
        errors.extend(found.into_iter().map(spec_field));
    }
    spec
}

fn invalid(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let message = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
    Err(ApiError::Invalid { message, fields: errors })
}

#[utoipa::path(tag = "apps", request_body = CreateApp, responses(
    (status = 201, description = "Created", body = AppView),
    (status = 409, description = "The name is taken", body = ErrorBody),
    (status = 422, description = "Invalid fields, each named", body = ErrorBody)))]
#[post("/apps")]
async fn create(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<CreateApp>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let selector = super::selector_field(b.selector)?;
    let mut errors = Vec::new();
    check_name(&b.name, &mut errors);
    let spec = complete_spec(&state, &b.driver, b.spec, None, &mut errors);
    check_policy(b.restart_policy.as_deref(), b.max_restarts, b.monitor_interval_ms, &mut errors);
    check_group(b.traffic_group.as_deref(), &mut errors);
    invalid(errors)?;
    let new = NewApplication {
        name: b.name.clone(),
        driver: b.driver,
        spec: Some(spec.to_string()),
        selector: Some(json!(selector).to_string()),
        restart_policy: b.restart_policy,
        max_restarts: b.max_restarts,
        monitor_interval_ms: b.monitor_interval_ms,
        traffic_group: b.traffic_group,
    };
    let id = match state.store.run(move |c| apps::insert_application(c, &new)).await {
        Ok(id) => id,
        Err(StoreError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => {
            return Err(ApiError::Conflict(format!("an application named `{}` already exists", b.name)));
        }
        Err(e) => return Err(e.into()),
    };
    audit(&state, "app.created", Some(id), None, caller(&req), format!("application {id} `{}` created", b.name)).await;
    let app = load(&state, id).await?;
    Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/apps/{id}"))).json(AppView::seen(
        app,
        &state.drivers,
        live(&state).as_ref(),
    )))
}

async fn load(state: &ApiState, id: i64) -> Result<crate::store::models::Application, ApiError> {
    state
        .store
        .run(move |c| apps::find_application(c, id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no application with id {id}")))
}

/// Filters and paging of the application list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Observed state.
    state: Option<String>,
    /// Driver.
    driver: Option<String>,
    /// Owning node.
    owner: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
    /// Return ids greater than this (the `next` link sets it).
    after: Option<i64>,
}

#[utoipa::path(tag = "apps", params(ListQuery), responses((status = 200, description = "A page of applications", body = Page<AppView>)))]
#[get("/apps")]
async fn list(state: web::Data<ApiState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = page_size(q.limit)?;
    const STATES: [&str; 6] = ["stopped", "starting", "running", "stopping", "failed", "unknown"];
    if let Some(s) = q.state.as_deref().filter(|s| !STATES.contains(s)) {
        return Err(ApiError::field("state", format!("`{s}` is not one of {}", STATES.join(", "))));
    }
    let filter = AppFilter { state: q.state.clone(), driver: q.driver.clone(), owner: q.owner.clone() };
    let after = q.after.unwrap_or(0);
    let rows = state.store.run(move |c| apps::list_applications(c, &filter, after, limit)).await?;
    let full = rows.len() as i64 == limit;
    let items = {
        let live = live(&state);
        rows.into_iter().map(|a| (a.id, AppView::seen(a, &state.drivers, live.as_ref()))).collect()
    };
    let page = Page::cut(items, full, state.max_response_bytes, |after| {
        next_link(
            "/api/v1/apps",
            limit,
            ("after", after),
            &[("state", q.state.clone()), ("driver", q.driver.clone()), ("owner", q.owner.clone())],
        )
    });
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(tag = "apps", params(("id" = i64, Path, description = "Application id")), responses(
    (status = 200, description = "The application with its recent events", body = AppView),
    (status = 404, description = "No such application", body = ErrorBody)))]
#[get("/apps/{id}")]
async fn show(state: web::Data<ApiState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let app = load(&state, id).await?;
    let filter = EventFilter { app_id: Some(id), ..Default::default() };
    let recent = state.store.run(move |c| events::list_events(c, &filter, None, 20)).await?;
    let mut body = json!(AppView::seen(app, &state.drivers, live(&state).as_ref()));
    body["recent_events"] = json!(recent.into_iter().map(EventView::from).collect::<Vec<_>>());
    Ok(HttpResponse::Ok().json(body))
}

/// `Some(None)` for an explicit `null`, `None` when absent.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Changes to an application (absent fields stay as they are).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApp {
    /// The whole new spec. `***` as a secret field's value keeps the stored value, so a spec
    /// read back can be sent as it is (docs/api.md#secrets).
    #[schema(value_type = Option<Object>)]
    spec: Option<Value>,
    /// Labels a node must have to own it, e.g. `{"dc": "dc1"}`.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    selector: Option<Value>,
    restart_policy: Option<String>,
    max_restarts: Option<i32>,
    #[serde(default, deserialize_with = "double_option")]
    monitor_interval_ms: Option<Option<i32>>,
    /// Traffic group: a name sets it, `null` clears it, leaving the field out keeps it.
    #[serde(default, deserialize_with = "double_option")]
    traffic_group: Option<Option<String>>,
}

#[utoipa::path(tag = "apps", params(("id" = i64, Path, description = "Application id")), request_body = UpdateApp, responses(
    (status = 200, description = "Updated", body = AppView),
    (status = 404, description = "No such application", body = ErrorBody),
    (status = 422, description = "Invalid fields", body = ErrorBody)))]
#[patch("/apps/{id}")]
async fn update(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<UpdateApp>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let b = body.into_inner();
    let selector = b.selector.map(super::selector_field).transpose()?;
    let app = load(&state, id).await?;
    let mut errors = Vec::new();
    // `***` keeps what is stored: the spec a read shows can be edited and sent back whole.
    let stored = serde_json::from_str::<Value>(&app.spec).unwrap_or(Value::Null);
    let spec = b.spec.map(|sent| complete_spec(&state, &app.driver, sent, Some(&stored), &mut errors));
    check_policy(b.restart_policy.as_deref(), b.max_restarts, b.monitor_interval_ms.flatten(), &mut errors);
    check_group(b.traffic_group.clone().flatten().as_deref(), &mut errors);
    invalid(errors)?;
    let moves = selector.is_some() || b.traffic_group.is_some();
    let change = AppUpdate {
        spec: spec.map(|s| s.to_string()),
        selector: selector.map(|s| json!(s).to_string()),
        restart_policy: b.restart_policy,
        max_restarts: b.max_restarts,
        monitor_interval_ms: b.monitor_interval_ms,
        traffic_group: b.traffic_group,
    };
    if !state.store.run(move |c| apps::update_application(c, id, &change)).await? {
        return Err(ApiError::NotFound(format!("no application with id {id}")));
    }
    if moves {
        // This node's next round places by the new rule, even before the database's
        // notification arrives; the other nodes follow that (docs/jobs.md#placement-changes).
        crate::dispatch::wake::Config::announce(&state.config);
    }
    audit(&state, "app.updated", Some(id), None, caller(&req), format!("application {id} updated")).await;
    Ok(HttpResponse::Ok().json(AppView::seen(load(&state, id).await?, &state.drivers, live(&state).as_ref())))
}

/// Delete options.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete even when not stopped.
    #[serde(default)]
    force: bool,
}

#[utoipa::path(tag = "apps", params(("id" = i64, Path, description = "Application id"), DeleteQuery), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "No such application", body = ErrorBody),
    (status = 409, description = "Not stopped (use force)", body = ErrorBody)))]
#[delete("/apps/{id}")]
async fn delete(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    q: web::Query<DeleteQuery>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let force = q.force;
    match state.store.run(move |c| apps::delete_application(c, id, force)).await? {
        Deleted::Yes => {
            audit(
                &state,
                "app.deleted",
                Some(id),
                None,
                caller(&req),
                format!("application {id} deleted{}", if force { " (forced)" } else { "" }),
            )
            .await;
            Ok(HttpResponse::NoContent().finish())
        }
        Deleted::Missing => Err(ApiError::NotFound(format!("no application with id {id}"))),
        Deleted::NotStopped(s, d) => Err(ApiError::Conflict(format!(
            "application {id} is not stopped (state {s}, desired {d}): stop it first, or delete with ?force=true"
        ))),
    }
}

/// Optional body of start / stop / restart.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// A second command with the same key is refused (409).
    idempotency_key: Option<String>,
    /// Parameters for the driver (a JSON object).
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
}

#[utoipa::path(tag = "apps", params(("id" = i64, Path, description = "Application id")), request_body(content = Option<CommandBody>), responses(
    (status = 202, description = "A task was written", body = Accepted),
    (status = 404, description = "No such application", body = ErrorBody),
    (status = 409, description = "Idempotency key already used", body = ErrorBody)))]
#[post("/apps/{id}/start")]
async fn start(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: OptionalJson<CommandBody>,
) -> Result<HttpResponse, ApiError> {
    command(&state, &req, id.into_inner(), "start", body.into_inner().unwrap_or_default()).await
}

#[utoipa::path(tag = "apps", params(("id" = i64, Path, description = "Application id")), request_body(content = Option<CommandBody>), responses(
    (status = 202, description = "A task was written", body = Accepted),
    (status = 404, description = "No such application", body = ErrorBody),
    (status = 409, description = "Idempotency key already used", body = ErrorBody)))]
#[post("/apps/{id}/stop")]
async fn stop(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: OptionalJson<CommandBody>,
) -> Result<HttpResponse, ApiError> {
    command(&state, &req, id.into_inner(), "stop", body.into_inner().unwrap_or_default()).await
}

#[utoipa::path(tag = "apps", params(("id" = i64, Path, description = "Application id")), request_body(content = Option<CommandBody>), responses(
    (status = 202, description = "A task was written", body = Accepted),
    (status = 404, description = "No such application", body = ErrorBody),
    (status = 409, description = "Idempotency key already used", body = ErrorBody)))]
#[post("/apps/{id}/restart")]
async fn restart(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: OptionalJson<CommandBody>,
) -> Result<HttpResponse, ApiError> {
    command(&state, &req, id.into_inner(), "restart", body.into_inner().unwrap_or_default()).await
}

#[utoipa::path(tag = "apps", params(("id" = i64, Path, description = "Application id")), request_body(content = Option<CommandBody>), responses(
    (status = 202, description = "A task was written: its owner takes a savepoint of what runs (drivers that take savepoints: `flink`)", body = Accepted),
    (status = 404, description = "No such application", body = ErrorBody),
    (status = 409, description = "Idempotency key already used", body = ErrorBody),
    (status = 422, description = "The application's driver takes no savepoints", body = ErrorBody)))]
#[post("/apps/{id}/savepoint")]
async fn savepoint(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: OptionalJson<CommandBody>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let app = load(&state, id).await?;
    if app.driver != "flink" {
        return Err(ApiError::field(
            "driver",
            format!(
                "application {id} uses the {} driver, which takes no savepoints (only flink applications do)",
                app.driver
            ),
        ));
    }
    command(&state, &req, id, "savepoint", body.into_inner().unwrap_or_default()).await
}

async fn command(
    state: &ApiState,
    req: &HttpRequest,
    id: i64,
    action: &str,
    body: CommandBody,
) -> Result<HttpResponse, ApiError> {
    load(state, id).await?;
    if let Some(p) = body.payload.as_ref().filter(|p| !p.is_object()) {
        return Err(ApiError::field("payload", format!("must be a JSON object, got {p}")));
    }
    let new = NewTask {
        app_id: Some(id),
        action: action.into(),
        payload: body.payload.map(|p| p.to_string()),
        idempotency_key: body.idempotency_key.clone(),
        ..Default::default()
    };
    let task_id = super::tasks::insert(state, new).await?;
    audit(
        state,
        "app.command",
        Some(id),
        Some(task_id),
        caller(req),
        format!("{action} requested for application {id} (task {task_id})"),
    )
    .await;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/api/v1/tasks/{task_id}")))
        .json(json!({ "task_id": task_id, "task": format!("/api/v1/tasks/{task_id}") })))
}

/// Who this node sees as live owners, for the state applications are shown in
/// ([`super::views::shown_state`]).
fn live(state: &ApiState) -> Option<Liveness> {
    Liveness::of(&state.node_id, &state.membership.borrow())
}
