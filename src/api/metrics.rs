//! `/metrics`: the Prometheus text exposition. Mirrored gauges are refreshed here, at scrape
//! time, from their sources of truth.

use std::time::Instant;

use actix_web::{web, HttpResponse};

use super::error::{not_found, ApiError};
use super::ApiState;

/// What `/metrics` answers: the OpenMetrics text format, which Prometheus negotiates.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Register the route.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(metrics)).default_service(web::to(not_found)));
}

async fn metrics(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let m = &state.metrics;
    {
        let ms = state.membership.borrow();
        m.membership_joined.set(i64::from(ms.may_act(Instant::now())));
        m.members.set(ms.view.members.len() as i64);
        m.ring_epoch.set(ms.view.epoch as i64);
    }
    match tokio::time::timeout(state.ready_timeout, state.store.run(crate::store::tasks::queue_depth)).await {
        Ok(Ok(n)) => {
            m.queue_depth.set(n);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "queue depth unavailable for /metrics"),
        Err(_) => tracing::debug!("queue depth timed out for /metrics"),
    }
    let (open, idle) = state.store.pool_state();
    m.db_pool_connections.set(i64::from(open));
    m.db_pool_idle.set(i64::from(idle));
    let body = m.encode().map_err(|e| ApiError::Internal(format!("encoding metrics failed: {e}")))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(body))
}
