//! `/api/v1/traffic`: traffic policies per group — which datacenter (any label value) the
//! group's applications and jobs run in, a percentage split for a gradual move, automatic
//! failover and failback — switched at run time. Every change is an `event` naming who made it
//! and why (`reason` is required); automatic switches are recorded by the nodes as `system`.
//!
//! Nodes pick a change up at their next reconciliation (`dispatch.reconcile_interval_ms`).

use actix_web::{delete, get, put, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::body::{NoFields, OptionalJson};
use super::error::{ApiError, FieldError};
use super::views::ErrorBody;
use super::{caller, ApiState};
use crate::membership::MembershipState;
use crate::store::jobs::{self as jq, TrafficRow};
use crate::store::models::NewEvent;

/// Register the routes.
pub fn config(cfg: &mut ServiceConfig) {
    cfg.service(list).service(show).service(put_policy).service(delete_policy);
}

/// A group or label name: letters, digits, `-`, `_`, `.`, 1–64 characters.
pub fn check_group_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid name: 1–64 letters, digits, `-`, `_`, `.`"))
    }
}

/// A policy and what this node sees of it now.
fn view(row: &TrafficRow, ms: &MembershipState) -> Value {
    let p = row.policy();
    let live = |v: &str| {
        ms.view.members.iter().filter(|m| m.weight > 0 && m.labels.get(&p.label).is_some_and(|x| x == v)).count()
    };
    let has_live = |v: &str| live(v) > 0;
    let failed_over = p.effective_failed_over(&has_live);
    let mut sides = serde_json::Map::new();
    sides.insert(p.preferred.clone(), json!(live(&p.preferred)));
    if let Some(b) = &p.backup {
        sides.insert(b.clone(), json!(live(b)));
    }
    let active = match (&p.backup, failed_over) {
        (Some(b), true) => json!({ b.clone(): 100 }),
        (Some(b), false) if p.percent < 100 => json!({ p.preferred.clone(): p.percent, b.clone(): 100 - p.percent }),
        _ => json!({ p.preferred.clone(): 100 }),
    };
    json!({
        "group": row.group_name, "label": row.label, "preferred": row.preferred, "backup": row.backup,
        "percent": row.percent, "sticky": row.sticky, "auto_failover": row.auto_failover,
        "auto_failback": row.auto_failback, "failed_over": failed_over,
        "active": active, "live_nodes": sides,
        "updated_by": row.updated_by, "reason": row.reason,
        "updated_at": row.updated_at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

#[utoipa::path(tag = "traffic", responses((status = 200, description = "Every traffic policy, with the share each side gets now and its live nodes")))]
#[get("/traffic")]
async fn list(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let rows = state.store.run(jq::traffic_policies).await?;
    let ms = state.membership.borrow().clone();
    Ok(HttpResponse::Ok().json(json!({ "items": rows.iter().map(|r| view(r, &ms)).collect::<Vec<_>>() })))
}

#[utoipa::path(tag = "traffic", params(("group" = String, Path, description = "Traffic group")), responses(
    (status = 200, description = "The policy"),
    (status = 404, description = "No such group", body = ErrorBody)))]
#[get("/traffic/{group}")]
async fn show(state: web::Data<ApiState>, group: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let g = group.into_inner();
    let gq = g.clone();
    let row = state.store.run(move |c| jq::traffic_policy(c, &gq)).await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no traffic policy for group `{g}`")))?;
    let ms = state.membership.borrow().clone();
    Ok(HttpResponse::Ok().json(view(&row, &ms)))
}

/// A policy to set (replaces the group's policy; clears any automatic failover state).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicy {
    /// The label switched (default `dc`).
    label: Option<String>,
    /// Where the group runs.
    preferred: String,
    /// Where it fails over to, and where the split sends the rest.
    backup: Option<String>,
    /// Percentage of keys on the preferred side, 0–100 (default 100).
    percent: Option<i32>,
    /// Keys keep their side (default true). Jobs: all runs of one job on one side; false: a
    /// percentage of runs.
    sticky: Option<bool>,
    /// Move to the backup when the preferred side has no live node (default true).
    auto_failover: Option<bool>,
    /// Move back when it has one again (default true).
    auto_failback: Option<bool>,
    /// Why (recorded in the event).
    reason: String,
}

#[utoipa::path(tag = "traffic", params(("group" = String, Path, description = "Traffic group")), request_body = PutPolicy, responses(
    (status = 200, description = "The policy as set"),
    (status = 422, description = "Invalid fields", body = ErrorBody)))]
#[put("/traffic/{group}")]
async fn put_policy(
    state: web::Data<ApiState>,
    req: HttpRequest,
    group: web::Path<String>,
    body: web::Json<PutPolicy>,
) -> Result<HttpResponse, ApiError> {
    let group = group.into_inner();
    let b = body.into_inner();
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| errors.push(FieldError { field: field.into(), message });
    if let Err(m) = check_group_name(&group) {
        bad("group", m);
    }
    let label = b.label.unwrap_or_else(|| "dc".into());
    for (field, v) in [("label", Some(&label)), ("preferred", Some(&b.preferred)), ("backup", b.backup.as_ref())] {
        if let Some(Err(m)) = v.map(|v| check_group_name(v)) {
            bad(field, m);
        }
    }
    if b.backup.as_ref() == Some(&b.preferred) {
        bad("backup", "must differ from preferred".into());
    }
    let percent = b.percent.unwrap_or(100);
    if !(0..=100).contains(&percent) {
        bad("percent", format!("must be between 0 and 100, got {percent}"));
    }
    if percent < 100 && b.backup.is_none() {
        bad("percent", "a split needs a backup to send the rest to".into());
    }
    if b.reason.trim().is_empty() || b.reason.len() > 500 {
        bad("reason", "say why, in 1–500 characters (it is recorded in the event)".into());
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            message: errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "),
            fields: errors,
        });
    }
    let who = caller(&req);
    let row = TrafficRow {
        group_name: group.clone(),
        label,
        preferred: b.preferred,
        backup: b.backup,
        percent,
        sticky: b.sticky.unwrap_or(true),
        auto_failover: b.auto_failover.unwrap_or(true),
        auto_failback: b.auto_failback.unwrap_or(true),
        failed_over: false,
        updated_by: Some(who.clone()),
        reason: Some(b.reason.clone()),
        updated_at: chrono::Utc::now().naive_utc(),
    };
    let describe = |r: &TrafficRow| {
        let split = match (&r.backup, r.percent) {
            (Some(b), p) if p < 100 => format!(" ({p}% {}={}, {}% {}={b})", r.label, r.preferred, 100 - p, r.label),
            _ => String::new(),
        };
        format!("{}={}{split}", r.label, r.preferred)
    };
    let ev = NewEvent {
        kind: "traffic.switched".into(),
        node_id: Some(state.node_id.clone()),
        actor: Some(who),
        message: format!("group {group} → {}: {}", describe(&row), b.reason),
        data: Some(json!({ "group": group, "policy": row }).to_string()),
        ..Default::default()
    };
    let r = row.clone();
    let old = state.store.run(move |c| jq::put_traffic_policy(c, &r, &ev)).await?;
    // This node places by the new policy at once; the others follow the database's notification
    // (on SQLite, where there is none, this node is the only one).
    crate::dispatch::wake::Config::announce(&state.config);
    tracing::info!(traffic.group = %group, from = ?old.as_ref().map(describe), to = %describe(&row), "traffic policy set");
    let ms = state.membership.borrow().clone();
    Ok(HttpResponse::Ok().json(view(&row, &ms)))
}

/// Why a policy is removed.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Why (recorded in the event).
    reason: String,
}

#[utoipa::path(tag = "traffic", params(("group" = String, Path, description = "Traffic group"), DeleteQuery), responses(
    (status = 204, description = "Removed: the group runs wherever its selectors allow"),
    (status = 404, description = "No such group", body = ErrorBody)))]
#[delete("/traffic/{group}")]
async fn delete_policy(
    state: web::Data<ApiState>,
    req: HttpRequest,
    group: web::Path<String>,
    query: web::Query<DeleteQuery>,
    _body: OptionalJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let group = group.into_inner();
    let reason = query.into_inner().reason;
    let ev = NewEvent {
        kind: "traffic.removed".into(),
        node_id: Some(state.node_id.clone()),
        actor: Some(caller(&req)),
        message: format!("group {group}: policy removed: {reason}"),
        data: Some(json!({ "group": group }).to_string()),
        ..Default::default()
    };
    let g = group.clone();
    if state.store.run(move |c| jq::delete_traffic_policy(c, &g, &ev)).await? {
        crate::dispatch::wake::Config::announce(&state.config);
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no traffic policy for group `{group}`")))
    }
}
