//! The HTTP surface: health (`/livez`, `/readyz`), Prometheus `/metrics`, and `/api/v1`.
//!
//! Why one server for all of it: operators get one port to probe, scrape and call. Each route
//! module exposes `config(cfg)` and reads shared state from [`ApiState`]; errors go through
//! [`error::ApiError`] so every failure is JSON `{"error": {"code", "message"}}`.
//!
//! Must never: run SQL itself (it calls the store), or block a worker on the database outside
//! `Store::run`.

pub mod alarms;
pub mod apps;
pub mod auth;
pub mod body;
pub mod cluster;
pub mod document;
pub mod error;
pub mod events;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod nodes;
pub mod schedules;
pub mod tasks;
pub mod traffic;
pub mod views;
pub mod workflows;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use tokio::sync::watch;

use actix_web::{HttpMessage, HttpRequest};

use crate::membership::MembershipState;
use crate::metrics::Metrics;
use crate::store::events as event_store;
use crate::store::models::NewEvent;
use crate::store::Store;
use auth::Caller;
use error::ApiError;

/// What every handler can read.
#[derive(Clone)]
pub struct ApiState {
    /// The database, through the API's own pool (`api.pool_size`): requests never take the
    /// connections the node's dispatch and membership need.
    pub store: Store,
    /// The time limit of one alarm delivery (`alarms.timeout_ms`), for `channels/{id}/test`.
    pub alarm_timeout: Duration,
    /// Membership as published by the backend.
    pub membership: watch::Receiver<MembershipState>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// This node's id.
    pub node_id: String,
    /// The address this node advertises (`host:port`): without tokens, its host is the one name
    /// besides the loopback ones that requests may carry in `Host` ([`guard`]).
    pub advertise: String,
    /// Membership backend name (`standalone`, `etcd`).
    pub backend: &'static str,
    /// API tokens (empty: loopback callers only).
    pub tokens: Arc<Vec<crate::config::TokenConfig>>,
    /// Wakes this node's dispatcher after an insert (the only wake-up on SQLite).
    pub wake: Arc<tokio::sync::Notify>,
    /// Tells this node's dispatcher that an application's placement changed
    /// ([`crate::dispatch::wake::Config::announce`]).
    pub config: Arc<watch::Sender<crate::dispatch::wake::Config>>,
    /// Drivers, to validate specs.
    pub drivers: crate::drivers::Registry,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Where a list response is cut.
    pub max_response_bytes: usize,
    /// Most bytes of parameters one fan-out writes into its children (`dispatch.fan_out_max_bytes`).
    pub fan_out_max_bytes: u64,
    /// Drain control (etcd membership only).
    pub drain: Option<Arc<Drain>>,
    /// How long the database check (and the queue depth read of `/metrics`) waits for the
    /// database.
    pub ready_timeout: Duration,
    /// The database check's last state, refreshed in the background ([`health::spawn_database_check`]).
    pub database_check: health::DatabaseCheck,
}

// Helpers every route module uses.

/// The caller set by the auth middleware.
pub fn caller(req: &HttpRequest) -> String {
    req.extensions().get::<Caller>().map(|c| c.name.clone()).unwrap_or_else(|| "unknown".into())
}

/// Record an admin action in `event`.
pub async fn audit(
    state: &ApiState,
    kind: &str,
    app_id: Option<i64>,
    task_id: Option<i64>,
    actor: String,
    message: String,
) {
    let ev = NewEvent {
        kind: kind.into(),
        app_id,
        task_id,
        node_id: Some(state.node_id.clone()),
        actor: Some(actor),
        message,
        data: None,
    };
    if let Err(e) = state.store.run(move |c| event_store::record_event(c, &ev)).await {
        tracing::warn!(error = %e, "could not record an audit event");
    }
}

/// `limit` within 1..=500 (default 50).
pub fn page_size(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::field("limit", format!("must be between 1 and 500, got {n}"))),
    }
}

/// A time the API stores or compares in SQL: years 1 to 9999, the range both backends hold and
/// order alike (PostgreSQL refuses later years and years before 1 BC; SQLite would store
/// `+10000-…` or `0000-…` as text that sorts wrongly).
pub fn stored_time(
    field: &str,
    t: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<chrono::NaiveDateTime>, ApiError> {
    use chrono::Datelike;
    match t {
        Some(t) if !(1..=9999).contains(&t.year()) => {
            Err(ApiError::field(field, format!("year {} is outside 1 to 9999", t.year())))
        }
        t => Ok(t.map(|t| t.naive_utc())),
    }
}

/// A label selector as a body sends it: a JSON object of string values. Bodies take it as any
/// JSON value and check it here, so a mistyped one is a 422 naming `selector` or
/// `selector.<key>` (a typed field fails inside serde, whose error names no field). Each bad
/// key is named.
pub fn selector_field(value: serde_json::Value) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    use serde_json::Value;
    let Value::Object(map) = value else {
        return Err(ApiError::field(
            "selector",
            format!(
                "must be a JSON object of strings, like {{\"dc\": \"dc1\"}}; got {}",
                crate::domain::json_kind(&value)
            ),
        ));
    };
    let mut labels = std::collections::BTreeMap::new();
    let mut fields = Vec::new();
    for (key, v) in map {
        match v {
            Value::String(s) => {
                labels.insert(key, s);
            }
            other => fields.push(error::FieldError {
                field: format!("selector.{key}"),
                message: format!("a label value must be a string, got {}", crate::domain::json_kind(&other)),
            }),
        }
    }
    if fields.is_empty() {
        return Ok(labels);
    }
    let message = fields.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
    Err(ApiError::Invalid { message, fields })
}

/// Drain control: this node's ring weight as published in membership.
pub struct Drain {
    /// Set 0 to drain, the configured weight to undrain.
    pub weight: watch::Sender<u32>,
    /// The weight from the configuration.
    pub configured: u32,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker threads.
    pub workers: usize,
    /// Graceful shutdown wait.
    pub shutdown_timeout: Duration,
}

/// The OpenAPI document as served at `/api/v1/openapi.json`.
struct Document(String);

async fn openapi_json(doc: web::Data<Document>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().content_type("application/json").body(doc.0.clone())
}

/// Start serving on an already bound listener (tests bind `127.0.0.1:0`). The caller stops it
/// through the returned server's handle; signals are the caller's business.
pub fn start(listener: TcpListener, state: ApiState, opts: &ServerOptions) -> std::io::Result<actix_web::dev::Server> {
    use utoipa_actix_web::AppExt;
    let limit = state.max_body_bytes;
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        let (app, mut doc) = App::new()
            .wrap(actix_web::middleware::from_fn(guard::middleware))
            .app_data(data.clone())
            .app_data(web::JsonConfig::default().limit(limit).error_handler(error::json_error))
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .app_data(web::PayloadConfig::default().limit(limit))
            .configure(health::config)
            .configure(metrics::config)
            .configure(crate::console::config)
            .service(
                web::resource("/api/v1/openapi.json")
                    .route(web::get().to(openapi_json))
                    .default_service(web::to(error::not_found)),
            )
            .into_utoipa_app()
            .openapi(document::base())
            .service(
                utoipa_actix_web::scope("/api/v1")
                    .wrap(actix_web::middleware::from_fn(auth::middleware))
                    .configure(cluster::config)
                    .configure(apps::config)
                    .configure(tasks::config)
                    .configure(events::config)
                    .configure(nodes::config)
                    .configure(traffic::config)
                    .configure(schedules::config)
                    .configure(workflows::config)
                    .configure(alarms::config)
                    .default_service(web::to(error::not_found)),
            )
            .split_for_parts();
        document::complete(&mut doc);
        let routes = web::Data::new(document::Routes::of(&doc));
        let json = doc.to_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        app.app_data(web::Data::new(Document(json))).app_data(routes).default_service(web::to(crate::console::fallback))
    })
    .workers(opts.workers)
    .disable_signals()
    .shutdown_timeout(opts.shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}
