//! `/livez` and `/readyz`.
//!
//! `/livez` answers 200 while the process serves HTTP at all. `/readyz` answers 200 only when the
//! database answers and this node is a member that may act; otherwise 503 with every failing
//! check and its reason, so a load balancer stops sending work and a person sees why. The
//! reasons carry no connection details (user, host, database, URL): `/readyz` is open to anyone
//! who can reach the port; the node's log has the driver's message with the URL redacted.
//!
//! `/readyz` answers from the last known state of each check and never waits for one: a probe
//! has a timeout of its own (Kubernetes' default is 1 s), and a database that does not answer
//! would otherwise make the probe wait for the database's timeout, so the probe itself fails
//! with no reason given. The database is checked in the background
//! ([`spawn_database_check`], every [`CHECK_EVERY`] with its own timeout); membership is the
//! state the backend publishes. Each check says how old it is (`age_ms`), and a database check
//! older than it can be while its task runs counts as failed.
//!
//! Members of another deployment seen under this cluster's etcd prefix (docs/design.md,
//! "Cluster identity") are named in `warnings` and in the `cluster` check without making the node
//! unready: it places nothing on them and serves its own deployment correctly, and both
//! deployments going unready over a shared name would be an outage of both. A node that refuses
//! to join such a cluster is not a member, so it is unready with the refusal as its reason.

use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::not_found;
use super::ApiState;
use crate::membership::Status;
use crate::store::{Store, StoreError};

/// How often the database check runs.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The last answer of the database check.
#[derive(Debug, Clone)]
pub struct Checked {
    /// When this state was last confirmed: the check's end, or, while a check hangs, the moment
    /// it was last seen still without an answer.
    pub at: Instant,
    /// Ok, or why not, without connection details.
    pub result: Result<(), String>,
}

/// The database check's last state, as `/readyz` reads it; `None` until the first check ends.
pub type DatabaseCheck = watch::Receiver<Option<Checked>>;

/// Check the database every [`CHECK_EVERY`], each check bounded by `timeout`, and publish each
/// state; until `stop`. A check that hangs past `timeout` (a frozen connection: the query
/// waits on a socket the kernel keeps open) is published as failed and awaited, not
/// abandoned: checks never pile up on blocked threads. The log gets the driver's message once
/// per change, not once per check.
pub fn spawn_database_check(store: Store, timeout: Duration, stop: CancellationToken) -> DatabaseCheck {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut logged_failing = false;
        loop {
            let ping_store = store.clone();
            let mut ping = tokio::spawn(async move { ping_store.ping(timeout).await.map(|_| ()) });
            let result = loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    done = &mut ping => break done.unwrap_or_else(|e| Err(StoreError::Aborted(e.to_string()))),
                    // A little past the check's own bound, so that its own error wins the race.
                    _ = tokio::time::sleep(timeout + timeout / 4) => {
                        tx.send_replace(Some(Checked { at: Instant::now(), result: Err(hung_reason(timeout)) }));
                    }
                }
            };
            match &result {
                Ok(()) if logged_failing => {
                    tracing::info!("readyz: the database answers again");
                    logged_failing = false;
                }
                Err(e) if !logged_failing => {
                    // The driver's message names the user, host and database (and a URL may
                    // hold a password): only the node's log gets it, redacted (docs/security.md).
                    tracing::warn!(error = %e, "readyz: the database does not answer");
                    logged_failing = true;
                }
                _ => {}
            }
            let result = result.map_err(|e| database_reason(&e, timeout));
            tx.send_replace(Some(Checked { at: Instant::now(), result }));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    });
    rx
}

fn hung_reason(timeout: Duration) -> String {
    format!("no answer within {} ms (the node's log has the driver's message once it fails)", timeout.as_millis())
}

/// The database part of `/readyz` from the last known state: the check's JSON and, when it
/// fails, the reason. A state older than `stale_after` means the check has stopped running.
pub fn database_check(last: Option<&Checked>, now: Instant, stale_after: Duration) -> (Value, Option<String>) {
    let Some(last) = last else {
        let why = "not checked yet (the node has just started)".to_string();
        return (json!({ "ok": false, "error": why }), Some(why));
    };
    let age = now.saturating_duration_since(last.at);
    let age_ms = age.as_millis() as u64;
    match &last.result {
        _ if age > stale_after => {
            let why = format!("the last check is {age_ms} ms old: the node's check has stopped");
            (json!({ "ok": false, "error": why, "age_ms": age_ms }), Some(why))
        }
        Ok(()) => (json!({ "ok": true, "age_ms": age_ms }), None),
        Err(why) => (json!({ "ok": false, "error": why, "age_ms": age_ms }), Some(why.clone())),
    }
}

/// Register the health routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/livez").route(web::get().to(livez)).default_service(web::to(not_found)))
        .service(web::resource("/readyz").route(web::get().to(readyz)).default_service(web::to(not_found)));
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let now = Instant::now();
    // A running check publishes at least every `CHECK_EVERY + timeout * 5/4`; twice that is a
    // check that stopped.
    let stale_after = 2 * (CHECK_EVERY + state.ready_timeout * 2);
    let (database, db_failing) = database_check(state.database_check.borrow().as_ref(), now, stale_after);
    let m = state.membership.borrow().clone();
    let status = m.effective_status(now);
    let mut reasons = Vec::new();
    if let Some(why) = db_failing {
        reasons.push(format!("database: {why}"));
    }
    // The backend publishes every change as it happens, and the lease deadline is judged now:
    // membership and cluster are current (age 0).
    let membership = if status == Status::Joined {
        json!({ "ok": true, "status": "joined", "epoch": m.view.epoch, "age_ms": 0 })
    } else {
        let text = describe(&status);
        reasons.push(format!("membership: {text}"));
        json!({ "ok": false, "status": status, "error": text, "age_ms": 0 })
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
    let cluster = json!({ "ok": true, "foreign_members": *m.foreign, "age_ms": 0 });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_check_is_read_from_its_last_state_with_its_age() {
        let now = Instant::now();
        let stale = Duration::from_secs(10);
        let (v, why) = database_check(None, now, stale);
        assert_eq!(v["ok"], false);
        assert!(why.unwrap().contains("not checked yet"));

        let ok = Checked { at: now - Duration::from_millis(300), result: Ok(()) };
        let (v, why) = database_check(Some(&ok), now, stale);
        assert_eq!((v["ok"].as_bool(), v["age_ms"].as_u64(), why), (Some(true), Some(300), None));

        let failed =
            Checked { at: now - Duration::from_millis(20), result: Err("no connection within 2000 ms".into()) };
        let (v, why) = database_check(Some(&failed), now, stale);
        assert_eq!((v["ok"].as_bool(), v["age_ms"].as_u64()), (Some(false), Some(20)));
        assert_eq!(why.as_deref(), Some("no connection within 2000 ms"));

        // An answer that stopped being refreshed is no answer.
        let old = Checked { at: now - Duration::from_secs(11), result: Ok(()) };
        let (v, why) = database_check(Some(&old), now, stale);
        assert_eq!(v["ok"], false);
        assert!(why.unwrap().contains("11000 ms old"), "{v}");
    }
}
