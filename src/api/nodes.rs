//! `/api/v1/nodes/{id}`: a node's drain status, and `POST …/drain` to take it out of the ring
//! gracefully (its weight becomes 0: every node rebuilds its ring, this node releases its
//! applications — stopping `process` children — and the new owners acquire them), `DELETE
//! …/drain` to bring it back. A node answers for itself only; the error names the address of
//! the node asked for.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use utoipa_actix_web::service_config::ServiceConfig;

use super::views::ErrorBody;
use serde_json::json;

use super::body::{NoFields, OptionalJson};
use super::error::ApiError;
use super::ApiState;
use super::{audit, caller};
use crate::store::tasks;

/// Register the routes.
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(status).service(drain).service(undrain);
}

fn this_node(state: &ApiState, id: &str) -> Result<(), ApiError> {
    if id == state.node_id {
        return Ok(());
    }
    let m = state.membership.borrow();
    match m.view.members.iter().find(|m| m.node_id == id) {
        Some(other) => Err(ApiError::Conflict(format!(
            "this is node `{}`; send the request to node `{id}` at http://{}",
            state.node_id, other.addr
        ))),
        None => Err(ApiError::NotFound(format!("no member `{id}` in the current view"))),
    }
}

async fn report(state: &ApiState) -> Result<serde_json::Value, ApiError> {
    let me = state.node_id.clone();
    let running = state.store.run(move |c| tasks::running_on(c, &me)).await?;
    let owned = state.metrics.owned_applications.get();
    let weight = state.drain.as_ref().map(|d| *d.weight.borrow());
    let draining = weight == Some(0);
    Ok(json!({
        "node_id": state.node_id,
        "weight": weight,
        "draining": draining,
        "owned_applications": owned,
        "running_tasks": running,
        "drained": draining && owned == 0 && running == 0,
    }))
}

#[utoipa::path(tag = "nodes", params(("id" = String, Path, description = "Node id")), responses(
    (status = 200, description = "Drain status: weight, owned applications, running tasks, drained", body = Object),
    (status = 404, description = "Not a member", body = ErrorBody),
    (status = 409, description = "Another node (its address is named) or a standalone node", body = ErrorBody)))]
#[get("/nodes/{id}")]
async fn status(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    this_node(&state, &id)?;
    Ok(HttpResponse::Ok().json(report(&state).await?))
}

#[utoipa::path(tag = "nodes", params(("id" = String, Path, description = "Node id")), responses(
    (status = 202, description = "Draining: weight 0; poll GET /nodes/{id} until drained", body = Object),
    (status = 404, description = "Not a member", body = ErrorBody),
    (status = 409, description = "Another node (its address is named) or a standalone node", body = ErrorBody)))]
#[post("/nodes/{id}/drain")]
async fn drain(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    this_node(&state, &id)?;
    let Some(d) = state.drain.as_ref() else {
        return Err(ApiError::Conflict(
            "a standalone node has nobody to hand its work to; drain needs etcd membership".into(),
        ));
    };
    d.weight.send_replace(0);
    audit(&state, "node.drain", None, None, caller(&req), format!("node {} draining: weight 0", state.node_id)).await;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/api/v1/nodes/{}", state.node_id)))
        .json(report(&state).await?))
}

#[utoipa::path(tag = "nodes", params(("id" = String, Path, description = "Node id")), responses(
    (status = 200, description = "Back in the ring with its configured weight", body = Object),
    (status = 404, description = "Not a member", body = ErrorBody),
    (status = 409, description = "Another node (its address is named) or a standalone node", body = ErrorBody)))]
#[delete("/nodes/{id}/drain")]
async fn undrain(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    this_node(&state, &id)?;
    let Some(d) = state.drain.as_ref() else {
        return Err(ApiError::Conflict("a standalone node cannot be drained".into()));
    };
    d.weight.send_replace(d.configured);
    audit(
        &state,
        "node.undrain",
        None,
        None,
        caller(&req),
        format!("node {} back in the ring: weight {}", state.node_id, d.configured),
    )
    .await;
    Ok(HttpResponse::Ok().json(report(&state).await?))
}
