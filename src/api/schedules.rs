//! `/api/v1/schedules`: create, list, show (with recent firings), change, pause / resume
//! (`enabled`) and delete cron and fixed-rate schedules (docs/schedules.md).
//!
//! Every field is validated here and a bad one is a 422 naming it — a cron expression that does
//! not parse says which of its fields is wrong and shows an example. The firing itself happens on
//! the ring owner of `schedule:{id}` ([`crate::schedule::runner`]), not in this module.

use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::body::{NoFields, OptionalJson};
use super::error::{ApiError, FieldError};
use super::views::{json_column, next_link, ErrorBody, Page};
use super::{audit, caller, page_size, ApiState};
use crate::schedule::{self as rule, Misfire, Timing, TimingError, MAX_EVERY_MS, MIN_EVERY_MS};
use crate::store::schedules::{self as store, Firing, NewSchedule, Schedule, ScheduleUpdate};
use crate::store::StoreError;

/// Register the routes (each handler's `#[utoipa::path]` puts it in the OpenAPI document).
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(create).service(list).service(show).service(update).service(remove);
}

/// The largest misfire grace accepted: a week.
const MAX_GRACE_MS: i64 = 7 * 24 * 3_600_000;
/// The largest payload: a workflow run's context is limited so (docs/workflows.md).
const MAX_PAYLOAD_BYTES: usize = super::workflows::MAX_CONTEXT_BYTES;

fn ts(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    id: i64,
    name: String,
    app_id: Option<i64>,
    /// The workflow a firing starts a run of (the payload is the run's context), instead of a job.
    workflow_id: Option<i64>,
    cron: Option<String>,
    every_ms: Option<i64>,
    #[schema(value_type = Object)]
    payload: Value,
    routing: Option<String>,
    shard_total: Option<i32>,
    timeout_ms: Option<i32>,
    max_attempts: i32,
    misfire: String,
    misfire_grace_ms: i64,
    enabled: bool,
    next_fire_at: String,
    /// The node that fires it now (ring owner of `schedule:{id}`), as this node sees the ring.
    owner_node: Option<String>,
    created_at: String,
    updated_at: String,
}

impl ScheduleView {
    fn new(s: Schedule, state: &ApiState) -> ScheduleView {
        let owner = state.membership.borrow().ring.owner(rule::ring_key(s.id).as_bytes()).map(|m| m.node_id.clone());
        ScheduleView {
            id: s.id,
            payload: json_column(&s.payload),
            name: s.name,
            app_id: s.app_id,
            workflow_id: s.workflow_id,
            cron: s.cron,
            every_ms: s.every_ms,
            routing: s.routing,
            shard_total: s.shard_total,
            timeout_ms: s.timeout_ms,
            max_attempts: s.max_attempts,
            misfire: s.misfire,
            misfire_grace_ms: s.misfire_grace_ms,
            enabled: s.enabled,
            next_fire_at: ts(s.next_fire_at),
            owner_node: owner,
            created_at: ts(s.created_at),
            updated_at: ts(s.updated_at),
        }
    }
}

/// One `schedule_firing` row.
#[derive(Debug, Serialize, ToSchema)]
pub struct FiringView {
    /// The fire time (the first of a skipped span).
    fire_at: String,
    /// The last fire time the row covers.
    last_at: String,
    /// How many fire times it covers.
    times: i64,
    /// `fired`, `caught_up` or `skipped`.
    outcome: String,
    /// The task written: the job, or the coordinator of the workflow run started.
    task_id: Option<i64>,
    /// The workflow run started (a schedule of a workflow).
    run_id: Option<i64>,
    /// The node that recorded it.
    node_id: String,
    /// When it was recorded.
    created_at: String,
}

impl From<Firing> for FiringView {
    fn from(f: Firing) -> Self {
        FiringView {
            fire_at: ts(f.fire_at),
            last_at: ts(f.last_at),
            times: f.times,
            outcome: f.outcome,
            task_id: f.task_id,
            run_id: f.run_id,
            node_id: f.node_id,
            created_at: ts(f.created_at),
        }
    }
}

/// A new schedule: exactly one of `cron` and `every_ms`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    name: String,
    /// Cron expression, seconds first, UTC: `SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK [YEAR]`,
    /// e.g. `*/5 * * * * *`.
    cron: Option<String>,
    /// Fixed rate in ms (at least 100), aligned to the Unix epoch.
    every_ms: Option<i64>,
    /// The application whose driver runs the job; absent for a noop job.
    app_id: Option<i64>,
    /// Start a run of this workflow at each firing instead of writing a job (not with `app_id`,
    /// `routing`, `shard_total`, `timeout_ms`, `max_attempts`: its nodes have their own).
    workflow_id: Option<i64>,
    /// The tasks' payload (a JSON object); a workflow run's initial context.
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
    /// The tasks' routing strategy (default `hash`).
    routing: Option<String>,
    /// The tasks' shard count (at least 1).
    shard_total: Option<i32>,
    /// The tasks' per-attempt time limit, ms.
    timeout_ms: Option<i32>,
    /// The tasks' attempts (default 3).
    max_attempts: Option<i32>,
    /// `fire_once` (default) or `skip`: what happens to fire times missed by more than the grace.
    misfire: Option<String>,
    /// A fire time later than this is missed (default 60000).
    misfire_grace_ms: Option<i64>,
    /// Start paused with `false` (default true).
    enabled: Option<bool>,
}

/// `Some(None)` for an explicit `null`, `None` when absent.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Changes to a schedule (absent fields stay; `null` clears a nullable one). Setting one of
/// `cron` and `every_ms` clears the other; a timing change or a resume (`enabled: true` on a
/// paused schedule) restarts from the next fire time after now.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    #[serde(default, deserialize_with = "double_option")]
    cron: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    every_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    app_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    workflow_id: Option<Option<i64>>,
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
    #[serde(default, deserialize_with = "double_option")]
    routing: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    shard_total: Option<Option<i32>>,
    #[serde(default, deserialize_with = "double_option")]
    timeout_ms: Option<Option<i32>>,
    max_attempts: Option<i32>,
    misfire: Option<String>,
    misfire_grace_ms: Option<i64>,
    enabled: Option<bool>,
}

fn push(errors: &mut Vec<FieldError>, field: &str, message: impl Into<String>) {
    errors.push(FieldError { field: field.into(), message: message.into() });
}

fn invalid(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let message = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
    Err(ApiError::Invalid { message, fields: errors })
}

/// Check a timing: the error names `cron` or `every_ms`.
fn check_timing(cron: Option<&str>, every_ms: Option<i64>, errors: &mut Vec<FieldError>) -> Option<Timing> {
    if let Some(ms) = every_ms.filter(|ms| !(MIN_EVERY_MS..=MAX_EVERY_MS).contains(ms)) {
        push(errors, "every_ms", format!("must be between {MIN_EVERY_MS} and {MAX_EVERY_MS} ms, got {ms}"));
        return None;
    }
    match Timing::from_parts(cron, every_ms) {
        Ok(t) => Some(t),
        Err(TimingError { field, message }) => {
            push(errors, field, message);
            None
        }
    }
}

/// The fields shared by create and update.
struct Fields<'a> {
    payload: Option<&'a Value>,
    routing: Option<&'a str>,
    shard_total: Option<i32>,
    timeout_ms: Option<i32>,
    max_attempts: Option<i32>,
    misfire: Option<&'a str>,
    misfire_grace_ms: Option<i64>,
}

fn check_fields(f: &Fields<'_>, errors: &mut Vec<FieldError>) {
    if let Some(p) = f.payload.filter(|p| !p.is_object()) {
        push(errors, "payload", format!("must be a JSON object, got {p}"));
    }
    if let Some(p) = f.payload.filter(|p| p.to_string().len() > MAX_PAYLOAD_BYTES) {
        push(errors, "payload", format!("at most {MAX_PAYLOAD_BYTES} bytes of JSON, got {}", p.to_string().len()));
    }
    match crate::jobs::Strategy::parse(f.routing) {
        Ok(crate::jobs::Strategy::Workflow) => {
            push(errors, "routing", "a schedule writes jobs, not workflow coordinators".to_string())
        }
        Ok(_) => {}
        Err(e) => push(errors, "routing", e),
    }
    if let Some(n) = f.shard_total.filter(|n| *n < 1) {
        push(errors, "shard_total", format!("must be at least 1, got {n}"));
    }
    if let Some(n) = f.timeout_ms.filter(|n| *n < 1) {
        push(errors, "timeout_ms", format!("must be at least 1, got {n}"));
    }
    if let Some(n) = f.max_attempts.filter(|n| *n < 1) {
        push(errors, "max_attempts", format!("must be at least 1, got {n}"));
    }
    if let Some(Err(e)) = f.misfire.map(Misfire::parse) {
        push(errors, "misfire", e);
    }
    if let Some(g) = f.misfire_grace_ms.filter(|g| !(0..=MAX_GRACE_MS).contains(g)) {
        push(errors, "misfire_grace_ms", format!("must be between 0 and {MAX_GRACE_MS} ms, got {g}"));
    }
}

/// What a firing writes, as the schedule will be once created or changed.
struct Target<'a> {
    app_id: Option<i64>,
    workflow_id: Option<i64>,
    /// The job fields set (`routing`, …), by name: meaningless for a workflow.
    job_fields: &'a [(&'a str, bool)],
    /// The field to name when both `app_id` and `workflow_id` are set.
    both: &'a str,
}

/// A schedule starts a workflow or writes a job, not both; a workflow's nodes carry their own
/// job fields; the workflow exists.
async fn check_target(state: &ApiState, t: &Target<'_>, errors: &mut Vec<FieldError>) -> Result<(), ApiError> {
    let Some(id) = t.workflow_id else { return Ok(()) };
    if t.app_id.is_some() {
        push(
            errors,
            t.both,
            "a schedule starts a workflow (`workflow_id`) or runs an application's job (`app_id`), not both",
        );
    }
    for (field, set) in t.job_fields {
        if *set {
            push(errors, field, "only for a job: a workflow's nodes have their own (docs/workflows.md)");
        }
    }
    if state.store.run(move |c| crate::store::workflows::find_workflow(c, id)).await?.is_none() {
        push(errors, "workflow_id", format!("no workflow with id {id} (see `rota workflow list`)"));
    }
    Ok(())
}

async fn check_app(state: &ApiState, app_id: Option<i64>, errors: &mut Vec<FieldError>) -> Result<(), ApiError> {
    if let Some(id) = app_id {
        if state.store.run(move |c| crate::store::apps::find_application(c, id)).await?.is_none() {
            push(errors, "app_id", format!("no application with id {id}"));
        }
    }
    Ok(())
}

/// The first fire time at least one reload interval after the database's now (so that the
/// owner has loaded the schedule by then and its first firing is on time); a 422 on `cron` when
/// there is none.
async fn first_fire(state: &ApiState, timing: &Timing) -> Result<NaiveDateTime, ApiError> {
    let now = state.store.run(store::db_now).await?;
    let lead = chrono::Duration::from_std(rule::runner::RELOAD_EVERY).unwrap_or_default();
    rule::first_fire_after(timing, now + lead).ok_or_else(|| {
        ApiError::field("cron", "never fires after now (check the year and day fields), e.g. `*/5 * * * * *`")
    })
}

#[utoipa::path(tag = "schedules", request_body = CreateSchedule, responses(
    (status = 201, description = "Created", body = ScheduleView),
    (status = 409, description = "The name is taken", body = ErrorBody),
    (status = 422, description = "Invalid fields, each named", body = ErrorBody)))]
#[post("/schedules")]
async fn create(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<CreateSchedule>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let mut errors = Vec::new();
    let name_ok = !b.name.is_empty()
        && b.name.len() <= 128
        && b.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        push(&mut errors, "name", "1 to 128 letters, digits, `-`, `_` or `.`");
    }
    let timing = check_timing(b.cron.as_deref(), b.every_ms, &mut errors);
    check_fields(
        &Fields {
            payload: b.payload.as_ref(),
            routing: b.routing.as_deref(),
            shard_total: b.shard_total,
            timeout_ms: b.timeout_ms,
            max_attempts: b.max_attempts,
            misfire: b.misfire.as_deref(),
            misfire_grace_ms: b.misfire_grace_ms,
        },
        &mut errors,
    );
    check_app(&state, b.app_id, &mut errors).await?;
    check_target(
        &state,
        &Target {
            app_id: b.app_id,
            workflow_id: b.workflow_id,
            job_fields: &[
                ("routing", b.routing.as_deref().is_some_and(|r| !r.trim().is_empty())),
                ("shard_total", b.shard_total.is_some()),
                ("timeout_ms", b.timeout_ms.is_some()),
                ("max_attempts", b.max_attempts.is_some()),
            ],
            both: "workflow_id",
        },
        &mut errors,
    )
    .await?;
    invalid(errors)?;
    let Some(timing) = timing else { return Err(ApiError::field("cron", "invalid timing")) };
    let next_fire_at = first_fire(&state, &timing).await?;
    let new = NewSchedule {
        name: b.name.clone(),
        app_id: b.app_id,
        cron: match &timing {
            Timing::Cron(c) => Some(c.as_str().to_string()),
            Timing::Every(_) => None,
        },
        every_ms: b.every_ms,
        payload: b.payload.unwrap_or_else(|| json!({})).to_string(),
        routing: b.routing.filter(|r| !r.trim().is_empty()),
        shard_total: b.shard_total,
        timeout_ms: b.timeout_ms,
        max_attempts: b.max_attempts.unwrap_or(3),
        misfire: b.misfire.unwrap_or_else(|| Misfire::FireOnce.as_str().into()),
        misfire_grace_ms: b.misfire_grace_ms.unwrap_or(rule::DEFAULT_MISFIRE_GRACE_MS),
        enabled: b.enabled.unwrap_or(true),
        next_fire_at,
        workflow_id: b.workflow_id,
    };
    let id = match state.store.run(move |c| store::insert_schedule(c, &new)).await {
        Ok(id) => id,
        Err(StoreError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => {
            return Err(ApiError::Conflict(format!("a schedule named `{}` already exists", b.name)));
        }
        Err(e) => return Err(e.into()),
    };
    audit(&state, "schedule.created", b.app_id, None, caller(&req), format!("schedule {id} `{}` created", b.name))
        .await;
    let s = load(&state, id).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/schedules/{id}")))
        .json(ScheduleView::new(s, &state)))
}

async fn load(state: &ApiState, id: i64) -> Result<Schedule, ApiError> {
    state
        .store
        .run(move |c| store::find_schedule(c, id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule with id {id}")))
}

/// Paging of the schedule list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
    /// Return ids greater than this (the `next` link sets it).
    after: Option<i64>,
}

#[utoipa::path(tag = "schedules", params(ListQuery), responses((status = 200, description = "A page of schedules", body = Page<ScheduleView>)))]
#[get("/schedules")]
async fn list(state: web::Data<ApiState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = page_size(q.limit)?;
    let after = q.after.unwrap_or(0);
    let rows = state.store.run(move |c| store::list_schedules(c, after, limit)).await?;
    let full = rows.len() as i64 == limit;
    let items = rows.into_iter().map(|s| (s.id, ScheduleView::new(s, &state))).collect();
    let page = Page::cut(items, full, state.max_response_bytes, |after| {
        next_link("/api/v1/schedules", limit, ("after", after), &[])
    });
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(tag = "schedules", params(("id" = i64, Path, description = "Schedule id")), responses(
    (status = 200, description = "The schedule with its recent firings (`recent_firings`, newest first)", body = ScheduleView),
    (status = 404, description = "No such schedule", body = ErrorBody)))]
#[get("/schedules/{id}")]
async fn show(state: web::Data<ApiState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let s = load(&state, id).await?;
    let firings = state.store.run(move |c| store::recent_firings(c, id, 20)).await?;
    let mut body = json!(ScheduleView::new(s, &state));
    body["recent_firings"] = json!(firings.into_iter().map(FiringView::from).collect::<Vec<_>>());
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(tag = "schedules", params(("id" = i64, Path, description = "Schedule id")), request_body = UpdateSchedule, responses(
    (status = 200, description = "Updated", body = ScheduleView),
    (status = 404, description = "No such schedule", body = ErrorBody),
    (status = 422, description = "Invalid fields", body = ErrorBody)))]
#[patch("/schedules/{id}")]
async fn update(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<UpdateSchedule>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let b = body.into_inner();
    let s = load(&state, id).await?;
    let mut errors = Vec::new();
    // Setting one of cron / every_ms clears the other unless the body says otherwise.
    let (cron, every_ms) = match (&b.cron, &b.every_ms) {
        (None, None) => (s.cron.clone(), s.every_ms),
        (Some(c), None) => (c.clone(), if c.is_some() { None } else { s.every_ms }),
        (None, Some(e)) => (if e.is_some() { None } else { s.cron.clone() }, *e),
        (Some(c), Some(e)) => (c.clone(), *e),
    };
    let timing_changed = cron != s.cron || every_ms != s.every_ms;
    let timing = check_timing(cron.as_deref(), every_ms, &mut errors);
    check_fields(
        &Fields {
            payload: b.payload.as_ref(),
            routing: b.routing.as_ref().and_then(|r| r.as_deref()),
            shard_total: b.shard_total.flatten(),
            timeout_ms: b.timeout_ms.flatten(),
            max_attempts: b.max_attempts,
            misfire: b.misfire.as_deref(),
            misfire_grace_ms: b.misfire_grace_ms,
        },
        &mut errors,
    );
    check_app(&state, b.app_id.flatten(), &mut errors).await?;
    // Set to a value: the body's; else the schedule's (`null` clears).
    let (routing, shard_total, timeout_ms) = (
        b.routing.clone().unwrap_or_else(|| s.routing.clone()).filter(|r| !r.trim().is_empty()),
        b.shard_total.unwrap_or(s.shard_total),
        b.timeout_ms.unwrap_or(s.timeout_ms),
    );
    check_target(
        &state,
        &Target {
            app_id: b.app_id.unwrap_or(s.app_id),
            workflow_id: b.workflow_id.unwrap_or(s.workflow_id),
            job_fields: &[
                ("routing", routing.is_some()),
                ("shard_total", shard_total.is_some()),
                ("timeout_ms", timeout_ms.is_some()),
                ("max_attempts", b.max_attempts.is_some()),
            ],
            both: if b.workflow_id.is_some() { "workflow_id" } else { "app_id" },
        },
        &mut errors,
    )
    .await?;
    invalid(errors)?;
    let resumed = b.enabled == Some(true) && !s.enabled;
    let next_fire_at = match (&timing, timing_changed || resumed) {
        (Some(t), true) => Some(first_fire(&state, t).await?),
        _ => None,
    };
    let change = ScheduleUpdate {
        app_id: b.app_id,
        cron: timing_changed.then(|| match &timing {
            Some(Timing::Cron(c)) => Some(c.as_str().to_string()),
            _ => None,
        }),
        every_ms: timing_changed.then_some(every_ms),
        payload: b.payload.map(|p| p.to_string()),
        routing: b.routing.map(|r| r.filter(|r| !r.trim().is_empty())),
        shard_total: b.shard_total,
        timeout_ms: b.timeout_ms,
        max_attempts: b.max_attempts,
        misfire: b.misfire,
        misfire_grace_ms: b.misfire_grace_ms,
        enabled: b.enabled,
        next_fire_at,
        workflow_id: b.workflow_id,
    };
    if !state.store.run(move |c| store::update_schedule(c, id, &change)).await? {
        return Err(ApiError::NotFound(format!("no schedule with id {id}")));
    }
    let what = match b.enabled {
        Some(false) if s.enabled => "paused",
        Some(true) if !s.enabled => "resumed",
        _ => "updated",
    };
    audit(
        &state,
        &format!("schedule.{what}"),
        s.app_id,
        None,
        caller(&req),
        format!("schedule {id} `{}` {what}", s.name),
    )
    .await;
    Ok(HttpResponse::Ok().json(ScheduleView::new(load(&state, id).await?, &state)))
}

#[utoipa::path(tag = "schedules", params(("id" = i64, Path, description = "Schedule id")), responses(
    (status = 204, description = "Deleted (its tasks stay)"),
    (status = 404, description = "No such schedule", body = ErrorBody)))]
#[delete("/schedules/{id}")]
async fn remove(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let s = load(&state, id).await?;
    if !state.store.run(move |c| store::delete_schedule(c, id)).await? {
        return Err(ApiError::NotFound(format!("no schedule with id {id}")));
    }
    audit(&state, "schedule.deleted", s.app_id, None, caller(&req), format!("schedule {id} `{}` deleted", s.name))
        .await;
    Ok(HttpResponse::NoContent().finish())
}
