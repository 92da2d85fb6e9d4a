//! `/api/v1/channels` and `/api/v1/alarms`: where alarm messages go, which events go there, and
//! what became of each delivery (docs/alarms.md).
//!
//! Every field is validated here and a bad one is a 422 naming it (`kind`, `config.url`,
//! `on.0`, `channels.1` …). Secrets in a channel's config are write-only, as in application
//! specs (docs/api.md#secrets): every read shows `***`, and `***` sent back keeps the stored
//! value. Sending happens on the channel's ring owner ([`crate::alarms::runner`]); only the
//! test message is sent from the node that answers, so its answer can be shown.

use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::body::{NoFields, OptionalJson};
use super::error::{ApiError, FieldError};
use super::views::{json_column, next_link, ErrorBody, Page};
use super::{audit, caller, page_size, ApiState};
use crate::alarms::{self as rule, ChannelKind, Filter};
use crate::drivers::secret;
use crate::store::alarms::{self as store, Channel, Delivery, DeliveryFilter, NewRule, RuleRow};
use crate::store::StoreError;

/// Register the routes. `alarms/deliveries` comes before `alarms/{alarm}`, which would take it.
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(create_channel)
        .service(list_channels)
        .service(show_channel)
        .service(update_channel)
        .service(delete_channel)
        .service(test_channel)
        .service(deliveries)
        .service(create_rule)
        .service(list_rules)
        .service(show_rule)
        .service(update_rule)
        .service(delete_rule);
}

/// The longest throttle window: a day.
const MAX_THROTTLE_S: i64 = 86_400;

fn ts(t: chrono::NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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

fn check_name(name: &str, errors: &mut Vec<FieldError>) {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.chars().all(|c| c.is_ascii_digit());
    if !ok {
        push(errors, "name", "1 to 128 letters, digits, `-`, `_` or `.`, not only digits");
    }
}

/// A channel as the API shows it: its config with every secret as `***`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    id: i64,
    name: String,
    kind: String,
    /// The kind's settings; secrets shown as `***`.
    #[schema(value_type = Object)]
    config: Value,
    /// The last event id matched for it.
    cursor: i64,
    /// The node that delivers its messages now (ring owner of `alarm-channel:{id}`), as this
    /// node sees the ring.
    owner_node: Option<String>,
    created_at: String,
    updated_at: String,
}

impl ChannelView {
    fn new(c: Channel, state: &ApiState) -> ChannelView {
        let owner = state.membership.borrow().ring.owner(rule::ring_key(c.id).as_bytes()).map(|m| m.node_id.clone());
        let config = json_column(&c.config);
        let shown = match ChannelKind::parse(&c.kind) {
            Ok(k) => secret::redact(&config, &k.secrets()),
            Err(_) => secret::redact_everything(&config),
        };
        ChannelView {
            id: c.id,
            name: c.name,
            kind: c.kind,
            config: shown,
            cursor: c.cursor,
            owner_node: owner,
            created_at: ts(c.created_at),
            updated_at: ts(c.updated_at),
        }
    }
}

/// A new channel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// Unique name: letters, digits, `-`, `_`, `.` (not only digits).
    name: String,
    /// `webhook`, `slack`, `dingtalk`, `feishu` (Lark), `wecom` or `email`.
    kind: String,
    /// The kind's settings: `url` (and `secret`) for webhooks and robots; `host`, `port`, `tls`,
    /// `from`, `to`, `username`, `password` for e-mail; `ca_file` (a PEM file of the CAs to
    /// trust instead of Mozilla's roots) and `timeout_ms` for any.
    #[schema(value_type = Object)]
    config: Value,
}

/// Changes to a channel (absent fields stay). `***` at a secret keeps the stored value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannel {
    /// A new name.
    name: Option<String>,
    /// The whole new config.
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
}

/// `config` checked for `kind` with the secrets `***` keeps completed from `stored`.
fn checked_config(
    kind: ChannelKind,
    sent: &Value,
    stored: Option<&Value>,
    errors: &mut Vec<FieldError>,
) -> Option<Value> {
    let before = errors.len();
    for (f, m) in kind.check(sent) {
        push(errors, &f, m);
    }
    // The file is read here so that a path the node cannot read, or a file that is not PEM,
    // is refused now rather than found at the first delivery.
    if let (Some(path), true) = (sent.get("ca_file").and_then(Value::as_str), errors.len() == before) {
        if let Err(e) = crate::tls::CaFile::read(path) {
            push(errors, "config.ca_file", e.to_string());
        }
    }
    let merged = match secret::merge(sent, stored, &kind.secrets()) {
        Ok(m) => m,
        Err(es) => {
            for e in es {
                push(errors, &format!("config.{}", e.field), e.message);
            }
            return None;
        }
    };
    (errors.len() == before).then_some(merged)
}

async fn load_channel(state: &ApiState, key: &str) -> Result<Channel, ApiError> {
    let k = key.to_string();
    let found = state
        .store
        .run(move |c| match k.parse::<i64>() {
            Ok(id) => store::find_channel(c, id),
            Err(_) => store::find_channel_by_name(c, &k),
        })
        .await?;
    found.ok_or_else(|| ApiError::NotFound(format!("no channel `{key}` (give its id or name)")))
}

fn conflict(what: &str, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            ApiError::Conflict(format!("a {what} named `{name}` already exists"))
        }
        e => e.into(),
    }
}

#[utoipa::path(tag = "alarms", request_body = CreateChannel, responses(
    (status = 201, description = "Created", body = ChannelView),
    (status = 409, description = "The name is taken", body = ErrorBody),
    (status = 422, description = "Invalid fields, each named", body = ErrorBody)))]
#[post("/channels")]
async fn create_channel(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<CreateChannel>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let mut errors = Vec::new();
    check_name(&b.name, &mut errors);
    let config = match ChannelKind::parse(&b.kind) {
        Ok(kind) => checked_config(kind, &b.config, None, &mut errors),
        Err(m) => {
            push(&mut errors, "kind", m);
            None
        }
    };
    invalid(errors)?;
    let Some(config) = config else { return Err(ApiError::field("config", "invalid")) };
    let (name, kind, text) = (b.name.clone(), b.kind.clone(), config.to_string());
    let id = state
        .store
        .run(move |c| store::insert_channel(c, &name, &kind, &text))
        .await
        .map_err(|e| conflict("channel", &b.name, e))?;
    audit(&state, "channel.created", None, None, caller(&req), format!("alarm channel {id} `{}` created", b.name))
        .await;
    let c = load_channel(&state, &id.to_string()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/channels/{id}")))
        .json(ChannelView::new(c, &state)))
}

/// Paging of a list by id.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
    /// Return ids greater than this (the `next` link sets it).
    after: Option<i64>,
}

#[utoipa::path(tag = "alarms", params(ListQuery), responses((status = 200, description = "A page of channels", body = Page<ChannelView>)))]
#[get("/channels")]
async fn list_channels(state: web::Data<ApiState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page_size(q.limit)?;
    let after = q.after.unwrap_or(0);
    let rows = state.store.run(move |c| store::list_channels(c, after, limit)).await?;
    let full = rows.len() as i64 == limit;
    let items = rows.into_iter().map(|c| (c.id, ChannelView::new(c, &state))).collect();
    let page = Page::cut(items, full, state.max_response_bytes, |after| {
        next_link("/api/v1/channels", limit, ("after", after), &[])
    });
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(tag = "alarms", params(("channel" = String, Path, description = "Channel id or name")), responses(
    (status = 200, description = "The channel", body = ChannelView),
    (status = 404, description = "No such channel", body = ErrorBody)))]
#[get("/channels/{channel}")]
async fn show_channel(state: web::Data<ApiState>, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let c = load_channel(&state, &key).await?;
    Ok(HttpResponse::Ok().json(ChannelView::new(c, &state)))
}

#[utoipa::path(tag = "alarms", params(("channel" = String, Path, description = "Channel id or name")), request_body = UpdateChannel, responses(
    (status = 200, description = "Updated", body = ChannelView),
    (status = 404, description = "No such channel", body = ErrorBody),
    (status = 409, description = "The name is taken", body = ErrorBody),
    (status = 422, description = "Invalid fields", body = ErrorBody)))]
#[patch("/channels/{channel}")]
async fn update_channel(
    state: web::Data<ApiState>,
    req: HttpRequest,
    key: web::Path<String>,
    body: web::Json<UpdateChannel>,
) -> Result<HttpResponse, ApiError> {
    let c = load_channel(&state, &key).await?;
    let b = body.into_inner();
    let mut errors = Vec::new();
    let name = b.name.unwrap_or_else(|| c.name.clone());
    check_name(&name, &mut errors);
    let stored = json_column(&c.config);
    let kind = ChannelKind::parse(&c.kind).map_err(ApiError::Internal)?;
    let config = match &b.config {
        Some(sent) => checked_config(kind, sent, Some(&stored), &mut errors),
        None => Some(stored),
    };
    invalid(errors)?;
    let Some(config) = config else { return Err(ApiError::field("config", "invalid")) };
    let (id, n, text) = (c.id, name.clone(), config.to_string());
    if !state
        .store
        .run(move |x| store::update_channel(x, id, &n, &text))
        .await
        .map_err(|e| conflict("channel", &name, e))?
    {
        return Err(ApiError::NotFound(format!("no channel with id {id}")));
    }
    audit(&state, "channel.updated", None, None, caller(&req), format!("alarm channel {id} `{name}` updated")).await;
    Ok(HttpResponse::Ok().json(ChannelView::new(load_channel(&state, &id.to_string()).await?, &state)))
}

#[utoipa::path(tag = "alarms", params(("channel" = String, Path, description = "Channel id or name")), responses(
    (status = 204, description = "Deleted, with its deliveries"),
    (status = 404, description = "No such channel", body = ErrorBody),
    (status = 409, description = "An alarm still sends to it", body = ErrorBody)))]
#[delete("/channels/{channel}")]
async fn delete_channel(
    state: web::Data<ApiState>,
    req: HttpRequest,
    key: web::Path<String>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let c = load_channel(&state, &key).await?;
    let rules = state.store.run(store::all_rules).await?;
    let users: Vec<String> =
        rules.iter().filter(|r| r.rule().channels.contains(&c.id)).map(|r| r.name.clone()).collect();
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "alarms still send to channel `{}`: {}; change or delete them first",
            c.name,
            users.join(", ")
        )));
    }
    let id = c.id;
    if !state.store.run(move |x| store::delete_channel(x, id)).await? {
        return Err(ApiError::NotFound(format!("no channel with id {id}")));
    }
    audit(&state, "channel.deleted", None, None, caller(&req), format!("alarm channel {id} `{}` deleted", c.name))
        .await;
    Ok(HttpResponse::NoContent().finish())
}

/// What the receiver answered a test message.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestAnswer {
    /// True when the receiver took it (a 2xx, no robot error code; SMTP 250).
    delivered: bool,
    /// The HTTP status or SMTP reply code; null when nothing answered.
    status: Option<u16>,
    /// The start of the answer's body (or the SMTP reply).
    body: String,
    /// Why it does not count as delivered.
    error: Option<String>,
}

#[utoipa::path(tag = "alarms", params(("channel" = String, Path, description = "Channel id or name")), responses(
    (status = 200, description = "The receiver's answer (delivered or not)", body = TestAnswer),
    (status = 404, description = "No such channel", body = ErrorBody)))]
#[post("/channels/{channel}/test")]
async fn test_channel(
    state: web::Data<ApiState>,
    req: HttpRequest,
    key: web::Path<String>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let c = load_channel(&state, &key).await?;
    let kind = ChannelKind::parse(&c.kind).map_err(ApiError::Internal)?;
    let config = json_column(&c.config);
    let timeout = crate::alarms::send::timeout_of(&config, state.alarm_timeout);
    let now = chrono::Utc::now();
    let m = rule::Message {
        delivery_id: 0,
        channel: c.name.clone(),
        rule: None,
        event: rule::Event {
            id: 0,
            at: now.naive_utc(),
            kind: "alarm.test".into(),
            app_id: None,
            task_id: None,
            node_id: Some(state.node_id.clone()),
            message: format!("a test message to channel `{}`, sent by {}", c.name, caller(&req)),
            data: json!({}),
        },
        app: None,
        folded: 1,
        last_event_id: None,
        throttle_s: 0,
    };
    let ms = now.timestamp_millis();
    let a = tokio::task::spawn_blocking(move || crate::alarms::send::send(kind, &config, &m, timeout, ms))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(TestAnswer {
        delivered: a.error.is_none(),
        status: a.status,
        body: a.body,
        error: a.error,
    }))
}

/// A delivery as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The delivery id (`X-Rota-Delivery`).
    id: i64,
    channel_id: i64,
    /// The (first) event.
    event_id: i64,
    /// The last event folded in.
    last_event_id: i64,
    rule_id: Option<i64>,
    /// Events it stands for.
    folded: i64,
    /// `pending`, `delivered` or `failed`.
    status: String,
    attempts: i32,
    /// When it is due (pending): now, the end of its throttle window, or its next attempt.
    next_at: String,
    /// The node of the last attempt.
    owner_node: Option<String>,
    /// The receiver's last status (HTTP, or SMTP's 250).
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: String,
    finished_at: Option<String>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            channel_id: d.channel_id,
            event_id: d.event_id,
            last_event_id: d.last_event_id,
            rule_id: d.rule_id,
            folded: d.folded,
            status: d.status,
            attempts: d.attempts,
            next_at: ts(d.next_at),
            owner_node: d.owner_node,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: ts(d.created_at),
            finished_at: d.finished_at.map(ts),
        }
    }
}

/// Filters and paging of the delivery list (newest first).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Channel id or name.
    channel: Option<String>,
    /// `pending`, `delivered` or `failed`.
    status: Option<String>,
    /// The (first) event.
    event_id: Option<i64>,
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
    /// Return ids smaller than this.
    before: Option<i64>,
}

#[utoipa::path(tag = "alarms", params(DeliveryQuery), responses(
    (status = 200, description = "A page of deliveries, newest first", body = Page<DeliveryView>),
    (status = 404, description = "No such channel", body = ErrorBody),
    (status = 422, description = "Invalid filter", body = ErrorBody)))]
#[get("/alarms/deliveries")]
async fn deliveries(state: web::Data<ApiState>, q: web::Query<DeliveryQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = page_size(q.limit)?;
    if let Some(s) = q.status.as_deref().filter(|s| !["pending", "delivered", "failed"].contains(s)) {
        return Err(ApiError::field("status", format!("`{s}` is not one of pending, delivered, failed")));
    }
    let channel_id = match &q.channel {
        Some(k) => Some(load_channel(&state, k).await?.id),
        None => None,
    };
    let filter = DeliveryFilter { channel_id, status: q.status.clone(), event_id: q.event_id };
    let before = q.before;
    let rows = state.store.run(move |c| store::list_deliveries(c, &filter, before, limit)).await?;
    let full = rows.len() as i64 == limit;
    let items = rows.into_iter().map(|d| (d.id, DeliveryView::from(d))).collect();
    let page = Page::cut(items, full, state.max_response_bytes, |before| {
        next_link(
            "/api/v1/alarms/deliveries",
            limit,
            ("before", before),
            &[
                ("channel", q.channel.clone()),
                ("status", q.status.clone()),
                ("event_id", q.event_id.map(|e| e.to_string())),
            ],
        )
    });
    Ok(HttpResponse::Ok().json(page))
}

/// An alarm (a rule) as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmView {
    id: i64,
    name: String,
    /// The event kinds it fires on.
    on: Vec<String>,
    /// What events must also match.
    #[schema(value_type = Object)]
    filter: Value,
    /// The channels it sends to, by name.
    channels: Vec<String>,
    /// 0: one message per event; N: one per key per N seconds, saying how many it folds.
    throttle_s: i32,
    created_at: String,
    updated_at: String,
}

impl AlarmView {
    fn new(r: RuleRow, channels: &[Channel]) -> AlarmView {
        let rule = r.rule();
        let names = rule
            .channels
            .iter()
            .map(|id| {
                channels.iter().find(|c| c.id == *id).map_or_else(|| format!("#{id} (deleted)"), |c| c.name.clone())
            })
            .collect();
        AlarmView {
            id: r.id,
            name: r.name,
            on: rule.kinds,
            filter: json_column(&r.filter),
            channels: names,
            throttle_s: r.throttle_s,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }
}

/// A new alarm.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAlarm {
    /// Unique name: letters, digits, `-`, `_`, `.` (not only digits).
    name: String,
    /// Event kinds, e.g. `["task.failed", "app.failed"]` (docs/alarms.md lists them).
    on: Vec<Value>,
    /// `apps` (names), `traffic_groups`, `node_labels` (an object), `states` (for `app.state`).
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    /// Channel names (or ids).
    channels: Vec<Value>,
    /// One message per key per this many seconds, 0–86400 (default 0: one per event).
    throttle_s: Option<i64>,
}

/// Changes to an alarm (absent fields stay).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAlarm {
    name: Option<String>,
    on: Option<Vec<Value>>,
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    channels: Option<Vec<Value>>,
    throttle_s: Option<i64>,
}

struct RuleFields<'a> {
    name: &'a str,
    on: &'a [Value],
    filter: &'a Value,
    channels: &'a [Value],
    throttle_s: i64,
}

async fn checked_rule(state: &ApiState, f: RuleFields<'_>) -> Result<NewRule, ApiError> {
    let mut errors = Vec::new();
    check_name(f.name, &mut errors);
    if f.on.is_empty() || f.on.len() > 32 {
        push(&mut errors, "on", "give 1 to 32 event kinds, e.g. [\"task.failed\"]");
    }
    let mut kinds = Vec::new();
    for (i, k) in f.on.iter().enumerate() {
        match k.as_str() {
            Some(k) if rule::is_event_kind(k) => kinds.push(k.to_string()),
            _ => push(
                &mut errors,
                &format!("on.{i}"),
                format!(
                    "{k} is not an event kind; use one of {}",
                    rule::EVENT_KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
    kinds.dedup();
    let filter = match serde_json::from_value::<Filter>(f.filter.clone()) {
        Ok(filter) => Some(filter),
        Err(e) => {
            push(
                &mut errors,
                "filter",
                format!("{e}; e.g. {{\"apps\": [\"billing\"], \"node_labels\": {{\"dc\": \"dc1\"}}}}"),
            );
            None
        }
    };
    if !(0..=MAX_THROTTLE_S).contains(&f.throttle_s) {
        push(&mut errors, "throttle_s", format!("must be between 0 and {MAX_THROTTLE_S}, got {}", f.throttle_s));
    }
    if f.channels.is_empty() || f.channels.len() > 32 {
        push(&mut errors, "channels", "give 1 to 32 channel names");
    }
    let known = state.store.run(store::all_channels).await?;
    let mut ids = Vec::new();
    for (i, c) in f.channels.iter().enumerate() {
        let found = match c {
            Value::String(s) => known.iter().find(|k| &k.name == s),
            Value::Number(n) => known.iter().find(|k| Some(k.id) == n.as_i64()),
            _ => None,
        };
        match found {
            Some(k) if !ids.contains(&k.id) => ids.push(k.id),
            Some(_) => {}
            None => push(
                &mut errors,
                &format!("channels.{i}"),
                format!("no channel {c}: create it first (POST /api/v1/channels)"),
            ),
        }
    }
    invalid(errors)?;
    Ok(NewRule {
        name: f.name.to_string(),
        kinds: json!(kinds).to_string(),
        filter: json!(filter.unwrap_or_default()).to_string(),
        channels: json!(ids).to_string(),
        throttle_s: f.throttle_s as i32,
    })
}

async fn load_rule(state: &ApiState, id: i64) -> Result<RuleRow, ApiError> {
    state
        .store
        .run(move |c| store::find_rule(c, id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no alarm with id {id}")))
}

async fn rule_view(state: &ApiState, r: RuleRow) -> Result<AlarmView, ApiError> {
    let channels = state.store.run(store::all_channels).await?;
    Ok(AlarmView::new(r, &channels))
}

#[utoipa::path(tag = "alarms", request_body = CreateAlarm, responses(
    (status = 201, description = "Created", body = AlarmView),
    (status = 409, description = "The name is taken", body = ErrorBody),
    (status = 422, description = "Invalid fields, each named", body = ErrorBody)))]
#[post("/alarms")]
async fn create_rule(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<CreateAlarm>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let filter = b.filter.clone().unwrap_or_else(|| json!({}));
    let new = checked_rule(
        &state,
        RuleFields {
            name: &b.name,
            on: &b.on,
            filter: &filter,
            channels: &b.channels,
            throttle_s: b.throttle_s.unwrap_or(0),
        },
    )
    .await?;
    let id = state.store.run(move |c| store::insert_rule(c, &new)).await.map_err(|e| conflict("alarm", &b.name, e))?;
    audit(&state, "alarm.created", None, None, caller(&req), format!("alarm {id} `{}` created", b.name)).await;
    let view = rule_view(&state, load_rule(&state, id).await?).await?;
    Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/alarms/{id}"))).json(view))
}

#[utoipa::path(tag = "alarms", params(ListQuery), responses((status = 200, description = "A page of alarms", body = Page<AlarmView>)))]
#[get("/alarms")]
async fn list_rules(state: web::Data<ApiState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page_size(q.limit)?;
    let after = q.after.unwrap_or(0);
    let rows = state.store.run(move |c| store::list_rules(c, after, limit)).await?;
    let channels = state.store.run(store::all_channels).await?;
    let full = rows.len() as i64 == limit;
    let items = rows.into_iter().map(|r| (r.id, AlarmView::new(r, &channels))).collect();
    let page = Page::cut(items, full, state.max_response_bytes, |after| {
        next_link("/api/v1/alarms", limit, ("after", after), &[])
    });
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(tag = "alarms", params(("id" = i64, Path, description = "Alarm id")), responses(
    (status = 200, description = "The alarm", body = AlarmView),
    (status = 404, description = "No such alarm", body = ErrorBody)))]
#[get("/alarms/{id}")]
async fn show_rule(state: web::Data<ApiState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let r = load_rule(&state, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(rule_view(&state, r).await?))
}

#[utoipa::path(tag = "alarms", params(("id" = i64, Path, description = "Alarm id")), request_body = UpdateAlarm, responses(
    (status = 200, description = "Updated", body = AlarmView),
    (status = 404, description = "No such alarm", body = ErrorBody),
    (status = 409, description = "The name is taken", body = ErrorBody),
    (status = 422, description = "Invalid fields", body = ErrorBody)))]
#[patch("/alarms/{id}")]
async fn update_rule(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<UpdateAlarm>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let r = load_rule(&state, id).await?;
    let b = body.into_inner();
    let current = rule_view(&state, r.clone()).await?;
    let name = b.name.unwrap_or(r.name);
    let on = b.on.unwrap_or_else(|| current.on.iter().map(|k| json!(k)).collect());
    let filter = b.filter.unwrap_or(current.filter);
    let stored_ids: Vec<i64> = serde_json::from_str(&r.channels).unwrap_or_default();
    let channels = b.channels.unwrap_or_else(|| stored_ids.iter().map(|i| json!(i)).collect());
    let throttle_s = b.throttle_s.unwrap_or(i64::from(r.throttle_s));
    let change =
        checked_rule(&state, RuleFields { name: &name, on: &on, filter: &filter, channels: &channels, throttle_s })
            .await?;
    if !state.store.run(move |c| store::update_rule(c, id, &change)).await.map_err(|e| conflict("alarm", &name, e))? {
        return Err(ApiError::NotFound(format!("no alarm with id {id}")));
    }
    audit(&state, "alarm.updated", None, None, caller(&req), format!("alarm {id} `{name}` updated")).await;
    let view = rule_view(&state, load_rule(&state, id).await?).await?;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(tag = "alarms", params(("id" = i64, Path, description = "Alarm id")), responses(
    (status = 204, description = "Deleted (its deliveries stay)"),
    (status = 404, description = "No such alarm", body = ErrorBody)))]
#[delete("/alarms/{id}")]
async fn delete_rule(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let r = load_rule(&state, id).await?;
    if !state.store.run(move |c| store::delete_rule(c, id)).await? {
        return Err(ApiError::NotFound(format!("no alarm with id {id}")));
    }
    audit(&state, "alarm.deleted", None, None, caller(&req), format!("alarm {id} `{}` deleted", r.name)).await;
    Ok(HttpResponse::NoContent().finish())
}
