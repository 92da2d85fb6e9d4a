//! `/metrics`: the Prometheus exposition, in the format the `Accept` header asks for
//! ([`crate::metrics::Format::negotiate`]: OpenMetrics when asked, the 0.0.4 text otherwise).
//! Mirrored gauges are refreshed here, at scrape time, from their sources of truth.

use std::time::Instant;

use actix_web::http::header::{ACCEPT, VARY};
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{not_found, ApiError};
use super::ApiState;

use crate::metrics::Format;

/// The content types `/metrics` answers with, as the OpenAPI document lists them.
pub const CONTENT_TYPES: [&str; 2] = [crate::metrics::TEXT_CONTENT_TYPE, crate::metrics::OPENMETRICS_CONTENT_TYPE];

/// Register the route.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(metrics)).default_service(web::to(not_found)));
}

async fn metrics(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    // An Accept header that is not text is read as absent: the 0.0.4 text, readable by all.
    let format = Format::negotiate(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
    let m = &state.metrics;
    {
        let ms = state.membership.borrow();
        m.membership_joined.set(i64::from(ms.may_act(Instant::now())));
        m.members.set(ms.view.members.len() as i64);
        m.ring_epoch.set(ms.view.epoch as i64);
    }
    // Read from the database at scrape time, within one bound: a database that does not
    // answer leaves the last values (the node's log says why, at debug level).
    let read = state.store.run(|c| {
        let backlog = crate::store::tasks::queue_backlog(c)?;
        let failed_over = crate::store::jobs::failed_over_groups(c)?;
        Ok((backlog, failed_over))
    });
    match tokio::time::timeout(state.ready_timeout, read).await {
        Ok(Ok(((depth, oldest), failed_over))) => {
            m.queue_depth.set(depth);
            m.queue_oldest_due.set(oldest.unwrap_or(0.0));
            m.traffic_failed_over.set(failed_over);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "queue and traffic state unavailable for /metrics"),
        Err(_) => tracing::debug!("queue and traffic state timed out for /metrics"),
    }
    let (open, idle) = state.store.pool_state();
    m.db_pool_connections.set(i64::from(open));
    m.db_pool_idle.set(i64::from(idle));
    let body = m.encode(format).map_err(|e| ApiError::Internal(format!("encoding metrics failed: {e}")))?;
    Ok(HttpResponse::Ok().content_type(format.content_type()).insert_header((VARY, "Accept")).body(body))
}
