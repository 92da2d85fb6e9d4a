//! `GET /api/v1/cluster`: the membership view this node acts on — epoch, members with labels and
//! weights, and this node's own status. Read-only.

use std::time::Instant;

use actix_web::{get, web, HttpResponse};
use serde_json::json;
use utoipa_actix_web::service_config::ServiceConfig;

use super::ApiState;
use crate::membership::Status;

/// Register the routes.
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(cluster).service(owner).service(whoami);
}

/// Which key, under which selector.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OwnerQuery {
    /// The key: an application id, or a task id for jobs.
    key: String,
    /// `k=v,k2=v2`
    selector: Option<String>,
}

/// `GET /api/v1/owner?key=K[&selector=dc=eu]`: who owns K on this node's ring, and why.
#[utoipa::path(tag = "cluster", params(OwnerQuery), responses(
    (status = 200, description = "The owner, the hash, the ring position, the candidates", body = Object),
    (status = 422, description = "A malformed selector", body = super::views::ErrorBody)))]
#[get("/owner")]
async fn owner(state: web::Data<ApiState>, q: web::Query<OwnerQuery>) -> Result<HttpResponse, super::error::ApiError> {
    let mut selector = crate::ring::Selector::new();
    for pair in q.selector.as_deref().unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        let (k, v) = crate::config::parse_label(pair).map_err(|e| super::error::ApiError::field("selector", e))?;
        selector.insert(k, v);
    }
    let m = state.membership.borrow().clone();
    let explanation = m.ring.explain(q.key.as_bytes(), &selector);
    let candidates: Vec<&str> = m
        .ring
        .members()
        .iter()
        .filter(|mem| mem.matches(&selector) && mem.weight > 0)
        .map(|mem| mem.node_id.as_str())
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "key": q.key,
        "ring_epoch": m.ring.epoch(),
        "explanation": explanation,
        "candidates": candidates,
        "why": "the key is hashed with Murmur3 (x64_128, low 64 bits); the owner is the node of the first ring point \
                at or after the hash, clockwise, whose labels match the selector",
    })))
}

/// How finely `ring.arcs` divides the hash space: half a degree of a drawn circle.
const RING_SLICES: u32 = 720;

/// Who the caller is: the token's name and scope (`local` and `admin` without tokens), so a client
/// such as the console shows only what the token may do.
#[utoipa::path(tag = "cluster", responses((status = 200, description = "The caller's name and scope: {\"name\", \"scope\": \"read\" | \"admin\"}", body = Object)))]
#[get("/whoami")]
async fn whoami(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::HttpMessage;
    let caller = req.extensions().get::<super::auth::Caller>().cloned();
    let (name, scope) = caller.map_or(("unknown".to_string(), "read"), |c| {
        (c.name, if c.scope == crate::config::Scope::Admin { "admin" } else { "read" })
    });
    HttpResponse::Ok().json(json!({ "name": name, "scope": scope }))
}

/// The membership view this node acts on, and the ring drawn from it: each member's exact
/// share of the hash space (`ring.shares`) and the circle as arcs of `ring.slices` slices, each
/// slice given to the member owning most of it (`ring.arcs`, clockwise from hash 0).
#[utoipa::path(tag = "cluster", responses((status = 200, description = "Epoch, members with labels and weights, this node's status, the ring's shares and arcs", body = Object)))]
#[get("/cluster")]
async fn cluster(state: web::Data<ApiState>) -> Result<HttpResponse, super::error::ApiError> {
    let counts: std::collections::HashMap<String, i64> = state
        .store
        .run(crate::store::apps::owned_counts)
        .await?
        .into_iter()
        .filter_map(|(node, n)| node.map(|node| (node, n)))
        .collect();
    let m = state.membership.borrow().clone();
    let members: Vec<serde_json::Value> = m
        .view
        .members
        .iter()
        .map(|mem| {
            let mut v = json!(mem);
            v["owned_applications"] = json!(counts.get(&mem.node_id).copied().unwrap_or(0));
            v
        })
        .collect();
    let now = Instant::now();
    let status = m.effective_status(now);
    let (name, reason) = match &status {
        Status::Joining(r) => ("joining", Some(r.clone()).filter(|r| !r.is_empty())),
        Status::Joined => ("joined", None),
        Status::Fenced(r) => ("fenced", Some(r.clone())),
        Status::Left => ("left", None),
    };
    Ok(HttpResponse::Ok().json(json!({
        "epoch": m.view.epoch,
        "backend": state.backend,
        "members": members,
        "ring": {
            "epoch": m.ring.epoch(),
            "points": m.ring.point_count(),
            "shares": m.ring.shares().into_iter().map(|(node, share)| (node.to_string(), json!(share))).collect::<serde_json::Map<_, _>>(),
            "slices": RING_SLICES,
            "arcs": m.ring.arcs(RING_SLICES).into_iter().map(|(node, from, to)| json!({"node_id": node, "from": from, "to": to})).collect::<Vec<_>>(),
        },
        "self": {
            "node_id": state.node_id,
            "status": name,
            "reason": reason,
            "session": m.session,
            "valid_for_ms": m.valid_until.map(|d| d.saturating_duration_since(now).as_millis() as u64),
        },
    })))
}
