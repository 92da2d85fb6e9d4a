//! `GET /api/v1/cluster`: the membership view this node acts on — epoch, members with labels and
//! weights, and this node's own status. Read-only.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiState;
use crate::membership::Status;

/// Register the route.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/cluster", web::get().to(cluster));
}

async fn cluster(state: web::Data<ApiState>) -> HttpResponse {
    let m = state.membership.borrow().clone();
    let now = Instant::now();
    let status = m.effective_status(now);
    let (name, reason) = match &status {
        Status::Joining(r) => ("joining", Some(r.clone()).filter(|r| !r.is_empty())),
        Status::Joined => ("joined", None),
        Status::Fenced(r) => ("fenced", Some(r.clone())),
        Status::Left => ("left", None),
    };
    HttpResponse::Ok().json(json!({
        "epoch": m.view.epoch,
        "backend": state.backend,
        "members": m.view.members,
        "ring": { "epoch": m.ring.epoch(), "points": m.ring.point_count() },
        "self": {
            "node_id": state.node_id,
            "status": name,
            "reason": reason,
            "session": m.session,
            "valid_for_ms": m.valid_until.map(|d| d.saturating_duration_since(now).as_millis() as u64),
        },
    }))
}
