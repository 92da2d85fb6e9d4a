//! `/api/v1/events`: the history, newest first, with filters.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::apps::page_size;
use super::error::ApiError;
use super::views::{EventView, Page};
use super::ApiState;
use crate::store::events::{self, EventFilter};

/// Register the route.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(list));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    app_id: Option<i64>,
    task_id: Option<i64>,
    kind: Option<String>,
    node_id: Option<String>,
    limit: Option<i64>,
    before: Option<i64>,
}

async fn list(state: web::Data<ApiState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = page_size(q.limit)?;
    let filter = EventFilter { app_id: q.app_id, task_id: q.task_id, kind: q.kind.clone(), node_id: q.node_id.clone() };
    let before = q.before;
    let rows = state.store.run(move |c| events::list_events(c, &filter, before, limit)).await?;
    let next = (rows.len() as i64 == limit).then(|| {
        let mut url = format!("/api/v1/events?limit={limit}&before={}", rows.last().map(|e| e.id).unwrap_or(0));
        if let Some(a) = q.app_id {
            url.push_str(&format!("&app_id={a}"));
        }
        if let Some(t) = q.task_id {
            url.push_str(&format!("&task_id={t}"));
        }
        if let Some(k) = &q.kind {
            url.push_str(&format!("&kind={k}"));
        }
        if let Some(n) = &q.node_id {
            url.push_str(&format!("&node_id={n}"));
        }
        url
    });
    Ok(HttpResponse::Ok().json(Page { items: rows.into_iter().map(EventView::from).collect(), next }))
}
