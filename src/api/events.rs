//! `/api/v1/events`: the history, newest first, with filters.

use actix_web::{get, web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::ApiError;
use super::page_size;
use super::views::{next_link, EventView, Page};
use super::ApiState;
use crate::store::events::{self, EventFilter};

/// Register the route.
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(list);
}

/// Filters and paging of the event list (newest first).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Application.
    app_id: Option<i64>,
    /// Task.
    task_id: Option<i64>,
    /// Kind prefix, e.g. `app.`.
    kind: Option<String>,
    /// Node that wrote it.
    node_id: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
    /// Return ids smaller than this.
    before: Option<i64>,
}

#[utoipa::path(tag = "events", params(ListQuery), responses((status = 200, description = "A page of events, newest first", body = Page<EventView>)))]
#[get("/events")]
async fn list(state: web::Data<ApiState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = page_size(q.limit)?;
    let filter = EventFilter { app_id: q.app_id, task_id: q.task_id, kind: q.kind.clone(), node_id: q.node_id.clone() };
    let before = q.before;
    let rows = state.store.run(move |c| events::list_events(c, &filter, before, limit)).await?;
    let full = rows.len() as i64 == limit;
    let items = rows.into_iter().map(|e| (e.id, EventView::from(e))).collect();
    let page = Page::cut(items, full, state.max_response_bytes, |before| {
        next_link(
            "/api/v1/events",
            limit,
            ("before", before),
            &[
                ("app_id", q.app_id.map(|a| a.to_string())),
                ("task_id", q.task_id.map(|t| t.to_string())),
                ("kind", q.kind.clone()),
                ("node_id", q.node_id.clone()),
            ],
        )
    });
    Ok(HttpResponse::Ok().json(page))
}
