//! `/livez` and `/readyz`.
//!
//! `/livez` answers 200 while the process serves HTTP at all. `/readyz` answers 200 only when the
//! database answers and this node is a member that may act; otherwise 503 with every failing
//! check and its reason, so a load balancer stops sending work and a person sees why. The
//! reasons carry no connection details (user, host, database, URL): `/readyz` is open to anyone
//! who can reach the port; the node's log has the driver's message with the URL redacted.
//!
//! Members of another deployment seen under this cluster's etcd prefix (docs/design.md,
//! "Cluster identity") are named in `warnings` and in the `cluster` check without making the node
//! unready: it places nothing on them and serves its own deployment correctly, and both
//! deployments going unready over a shared name would be an outage of both. A node that refuses
//! to join such a cluster is not a member, so it is unready with the refusal as its reason.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::not_found;
use super::ApiState;
use crate::membership::Status;
use crate::store::StoreError;

/// Register the health routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/livez").route(web::get().to(livez)).default_service(web::to(not_found)))
        .service(web::resource("/readyz").route(web::get().to(readyz)).default_service(web::to(not_found)));
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let db = state.store.ping(state.ready_timeout).await;
    let m = state.membership.borrow().clone();
    let status = m.effective_status(Instant::now());
    let mut reasons = Vec::new();
    let database = match &db {
        Ok(()) => json!({ "ok": true }),
        Err(e) => {
            // The driver's message names the user, host and database (and a URL may hold a
            // password): only the node's log gets it, redacted (docs/security.md).
            tracing::warn!(error = %e, "readyz: the database does not answer");
            let text = database_reason(e, state.ready_timeout);
            reasons.push(format!("database: {text}"));
            json!({ "ok": false, "error": text })
        }
    };
    let membership = if status == Status::Joined {
        json!({ "ok": true, "status": "joined", "epoch": m.view.epoch })
    } else {
        let text = describe(&status);
        reasons.push(format!("membership: {text}"));
        json!({ "ok": false, "status": status, "error": text })
    };
    let warnings: Vec<String> = m
        .foreign
        .iter()
        .map(|f| {
            format!(
                "ignoring member {} at {}: it runs on database {}, another deployment's, under this cluster's \
                 etcd prefix; give each deployment its own --cluster",
                f.node_id, f.addr, f.database
            )
        })
        .collect();
    let cluster = json!({ "ok": true, "foreign_members": *m.foreign });
    let body = json!({
        "status": if reasons.is_empty() { "ready" } else { "unavailable" },
        "node_id": state.node_id,
        "reason": reasons.join("; "),
        "warnings": warnings,
        "checks": { "database": database, "membership": membership, "cluster": cluster },
    });
    if reasons.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Why the database check failed, without connection details: `/readyz` answers anyone.
fn database_reason(e: &StoreError, timeout: std::time::Duration) -> String {
    let what = match e {
        StoreError::Unavailable(_) => format!("no connection within {} ms", timeout.as_millis()),
        StoreError::Query(_) => "the check query failed".to_string(),
        _ => "the check could not run".to_string(),
    };
    format!("{what} (the node's log has the driver's message)")
}

fn describe(status: &Status) -> String {
    match status {
        Status::Joined => "joined".to_string(),
        Status::Joining(why) if why.is_empty() => "joining: not yet a member".to_string(),
        Status::Joining(why) => format!("joining: {why}"),
        Status::Fenced(why) => format!("fenced: {why}"),
        Status::Left => "left the cluster (shutting down)".to_string(),
    }
}
