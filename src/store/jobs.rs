//! Queries of jobs: fan-out of a parent into children addressed to nodes, the routing memory
//! (`job_route`), per-node load, the gather step (children's states, lost and reassigned
//! children), stage changes of a parent, and traffic policies.
//!
//! Every write about a parent is conditional on the coordinator's claim of it (`owner_node`,
//! `owner_epoch`, `claim_token`: invariant I3), and so is every write a coordinator makes about
//! a child: a child is marked `lost` or moved only while its parent is still running under that
//! claim.

use crate::domain::TaskStatus;
use std::collections::HashMap;

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use super::claim::held_under;
use super::events;
use super::models::{Claim, NewEvent, NewTask, Task};
use super::schema::{task, traffic_policy};
use super::{AnyConnection, StoreError};
use crate::jobs::routing::NodeStats;

/// Run `sql` (PostgreSQL `$n` placeholders) on either backend with up to three binds.
macro_rules! both {
    ($conn:expr, $sql:expr, |$q:ident| $bind:expr, $load:ident) => {
        match $conn {
            AnyConnection::Postgresql(c) => {
                let $q = diesel::sql_query($sql);
                $bind.$load(c)
            }
            AnyConnection::Sqlite(c) => {
                let $q = diesel::sql_query($sql.replace('$', "?"));
                $bind.$load(c)
            }
        }
    };
}

#[derive(QueryableByName)]
struct Seq {
    #[diesel(sql_type = BigInt)]
    uses: i64,
}

#[derive(QueryableByName)]
struct RouteRow {
    #[diesel(sql_type = Text)]
    node_id: String,
    #[diesel(sql_type = BigInt)]
    uses: i64,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
}

#[derive(QueryableByName)]
struct LoadRow {
    #[diesel(sql_type = Nullable<Text>)]
    node: Option<String>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Tasks running on each node plus children waiting for it (fan-out parents excluded).
pub fn node_loads(conn: &mut AnyConnection) -> Result<HashMap<String, i64>, StoreError> {
    let sql = "SELECT CASE WHEN status = 'running' THEN owner_node ELSE target_node END AS node, COUNT(*) AS n \
               FROM task WHERE (status = 'running' AND stage IS NULL) \
               OR (status = 'pending' AND target_node IS NOT NULL) GROUP BY 1";
    let rows: Vec<LoadRow> = both!(conn, sql, |q| q, load)?;
    Ok(rows.into_iter().filter_map(|r| Some((r.node?, r.n))).collect())
}

/// What the fan-out transaction gives the choice: the round-robin counter for this choice and
/// the routing memory of every node.
pub struct RouteMemory {
    /// This choice's counter value (1 for the job's first).
    pub seq: i64,
    /// Uses and last use per node (load is filled in by the caller).
    pub stats: HashMap<String, NodeStats>,
}

/// Why a fan-out did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanOut {
    /// Children written; their ids, in order.
    Done(Vec<i64>),
    /// The parent is no longer ours (recovered, cancelled) or already fanned out.
    NotOurs,
    /// The choice found no node: nothing written.
    NoCandidate,
}

/// Fan a parent out, in one transaction: take the parent into the `gather` stage (only if it is
/// running under `me` and `claim` and has no stage yet), advance the job's round-robin counter,
/// let `choose` pick the children from the routing memory, insert them, and count the uses.
pub fn fan_out(
    conn: &mut AnyConnection,
    parent: i64,
    me: &str,
    claim: Claim,
    route_key: &str,
    choose: impl FnOnce(&RouteMemory) -> Vec<NewTask>,
) -> Result<FanOut, StoreError> {
    conn.transaction(|c| {
        let taken = diesel::update(task::table.filter(held_under(parent, me, claim)).filter(task::stage.is_null()))
            .set(task::stage.eq("gather"))
            .execute(c)?;
        if taken == 0 {
            return Ok(FanOut::NotOurs);
        }
        let counter = "INSERT INTO job_route (route_key, node_id, uses, last_seq) VALUES ($1, '', 1, 0) \
                       ON CONFLICT (route_key, node_id) DO UPDATE SET uses = job_route.uses + 1 RETURNING uses";
        let seq: Seq = both!(&mut *c, counter, |q| q.bind::<Text, _>(route_key), get_result)?;
        let rows: Vec<RouteRow> = both!(
            &mut *c,
            "SELECT node_id, uses, last_seq FROM job_route WHERE route_key = $1 AND node_id <> ''",
            |q| q.bind::<Text, _>(route_key),
            load
        )?;
        let memory = RouteMemory {
            seq: seq.uses,
            stats: rows
                .into_iter()
                .map(|r| (r.node_id, NodeStats { uses: r.uses, last_seq: r.last_seq, load: 0 }))
                .collect(),
        };
        let children = choose(&memory);
        if children.is_empty() {
            // Roll back: the parent stays as it was, the counter unmoved.
            return Err(StoreError::Query(diesel::result::Error::RollbackTransaction));
        }
        let mut ids = Vec::with_capacity(children.len());
        let use_sql = "INSERT INTO job_route (route_key, node_id, uses, last_seq) VALUES ($1, $2, 1, $3) \
                       ON CONFLICT (route_key, node_id) DO UPDATE SET uses = job_route.uses + 1, last_seq = $3";
        for child in &children {
            ids.push(diesel::insert_into(task::table).values(child).returning(task::id).get_result(c)?);
            if let Some(node) = &child.target_node {
                both!(
                    &mut *c,
                    use_sql,
                    |q| q.bind::<Text, _>(route_key).bind::<Text, _>(node).bind::<BigInt, _>(memory.seq),
                    execute
                )?;
            }
        }
        Ok(FanOut::Done(ids))
    })
    .or_else(|e| match e {
        StoreError::Query(diesel::result::Error::RollbackTransaction) => Ok(FanOut::NoCandidate),
        other => Err(other),
    })
}

/// What a fan-out child needs of its parent to run: the parent's application and parameters.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct ParentParams {
    /// The parent's application.
    pub app_id: Option<i64>,
    /// The parent's payload (a JSON object's text).
    pub payload: String,
}

/// The application and parameters of task `parent`; None when there is no such task.
pub fn parent_params(conn: &mut AnyConnection, parent: i64) -> Result<Option<ParentParams>, StoreError> {
    Ok(task::table.find(parent).select((task::app_id, task::payload)).first(conn).optional()?)
}

/// The routing of task `parent` (None inside: `hash`); None when there is no such task.
pub fn parent_routing(conn: &mut AnyConnection, parent: i64) -> Result<Option<Option<String>>, StoreError> {
    Ok(task::table.find(parent).select(task::routing).first(conn).optional()?)
}

/// Whether a parent has a child still `pending` or `running` (reads at most one).
pub fn has_active_child(conn: &mut AnyConnection, parent: i64) -> Result<bool, StoreError> {
    let one: Option<i64> = task::table
        .filter(task::parent_id.eq(parent))
        .filter(task::status.eq_any(["pending", "running"]))
        .select(task::id)
        .first(conn)
        .optional()?;
    Ok(one.is_some())
}

/// Move a parent that is running under `me` and `claim` to `stage` (keeping `result`, the map
/// step's output, when given). False when it is no longer ours.
pub fn set_stage(
    conn: &mut AnyConnection,
    parent: i64,
    me: &str,
    claim: Claim,
    stage: &str,
    result: Option<String>,
) -> Result<bool, StoreError> {
    let n = diesel::update(
        task::table
            .filter(task::id.eq(parent))
            .filter(task::status.eq(TaskStatus::Running))
            .filter(task::owner_node.eq(me))
            .filter(task::owner_epoch.eq(claim.epoch))
            .filter(task::claim_token.eq(claim.token)),
    )
    .set((task::stage.eq(stage), task::result.eq(result)))
    .execute(conn)?;
    Ok(n == 1)
}

/// Fan-out parents this node coordinates (running, in a stage).
pub fn my_parents(conn: &mut AnyConnection, me: &str) -> Result<Vec<Task>, StoreError> {
    Ok(task::table
        .filter(task::status.eq(TaskStatus::Running))
        .filter(task::stage.is_not_null())
        .filter(task::owner_node.eq(me))
        .select(Task::as_select())
        .order(task::id)
        .load(conn)?)
}

/// An unfinished child, as the gather step needs it.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct ActiveChild {
    /// Child id.
    pub id: i64,
    /// `pending` or `running`.
    pub status: String,
    /// The node it is addressed to.
    pub target_node: Option<String>,
    /// The node running it.
    pub owner_node: Option<String>,
}

/// The unfinished children of a parent.
pub fn active_children(conn: &mut AnyConnection, parent: i64) -> Result<Vec<ActiveChild>, StoreError> {
    Ok(task::table
        .filter(task::parent_id.eq(parent))
        .filter(task::status.eq_any(["pending", "running"]))
        .select((task::id, task::status, task::target_node, task::owner_node))
        .order(task::id)
        .load(conn)?)
}

/// Every child of a parent, in id order.
pub fn children(conn: &mut AnyConnection, parent: i64) -> Result<Vec<Task>, StoreError> {
    Ok(task::table.filter(task::parent_id.eq(parent)).select(Task::as_select()).order(task::id).load(conn)?)
}

/// The parent running under `me` and `claim`, as a subquery condition for writes about its
/// children.
fn parent_is_mine(parent: i64, me: &str, claim: Claim) -> String {
    let me = me.replace('\'', "''");
    let Claim { epoch, token } = claim;
    format!(
        "EXISTS (SELECT 1 FROM task p WHERE p.id = {parent} AND p.status = 'running' \
         AND p.owner_node = '{me}' AND p.owner_epoch = {epoch} AND p.claim_token = {token})"
    )
}

/// Not claimed under a view newer than `view`: the coordinator decided that the child's node had
/// left from its view at epoch `view`; a claim made at a later epoch means the node was back
/// (a restarted node re-joined) and runs the child now, so it must be neither moved nor lost.
fn claimed_no_later_than(view: i64) -> String {
    format!("(task.status = 'pending' OR task.owner_epoch IS NULL OR task.owner_epoch <= {view})")
}

/// A child whose node left: `lost` (broadcast, invariant I5) — never run anywhere else.
/// Conditional on the child still being unfinished on `dead`, not claimed after the view
/// `view` that says `dead` left, and the parent being ours.
#[allow(clippy::too_many_arguments)]
pub fn lose_child(
    conn: &mut AnyConnection,
    child: i64,
    dead: &str,
    parent: i64,
    me: &str,
    claim: Claim,
    view: i64,
    event: &NewEvent,
) -> Result<bool, StoreError> {
    let now = Utc::now().naive_utc();
    conn.transaction(|c| {
        let n = diesel::update(
            task::table
                .filter(task::id.eq(child))
                .filter(task::status.eq_any(["pending", "running"]))
                .filter(task::target_node.eq(dead))
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&claimed_no_later_than(view)))
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&parent_is_mine(parent, me, claim))),
        )
        .set((
            task::status.eq(TaskStatus::Lost),
            task::error.eq(format!("node {dead} left before this broadcast child finished; it is not run elsewhere")),
            task::finished_at.eq(now),
        ))
        .execute(c)?;
        if n == 1 {
            events::record_event(c, event)?;
        }
        Ok(n == 1)
    })
}

/// A child whose node left, moved to `to` and pending again (a shard, or a single-node job's
/// run). Conditional as [`lose_child`].
#[allow(clippy::too_many_arguments)]
pub fn reassign_child(
    conn: &mut AnyConnection,
    child: i64,
    dead: &str,
    to: &str,
    parent: i64,
    me: &str,
    claim: Claim,
    view: i64,
    event: &NewEvent,
) -> Result<bool, StoreError> {
    conn.transaction(|c| {
        let n = diesel::update(
            task::table
                .filter(task::id.eq(child))
                .filter(task::status.eq_any(["pending", "running"]))
                .filter(task::target_node.eq(dead))
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&claimed_no_later_than(view)))
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&parent_is_mine(parent, me, claim))),
        )
        .set((
            task::status.eq(TaskStatus::Pending),
            task::target_node.eq(to),
            task::owner_node.eq(None::<String>),
            task::owner_epoch.eq(None::<i64>),
            task::claim_token.eq(None::<i64>),
            task::error.eq(format!("node {dead} left; moved to {to}")),
        ))
        .execute(c)?;
        if n == 1 {
            events::record_event(c, event)?;
        }
        Ok(n == 1)
    })
}

/// A row of `traffic_policy`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset, serde::Serialize)]
#[diesel(table_name = traffic_policy)]
pub struct TrafficRow {
    /// The group.
    pub group_name: String,
    /// Label switched (`dc`).
    pub label: String,
    /// Preferred side.
    pub preferred: String,
    /// Backup side.
    pub backup: Option<String>,
    /// Percentage of keys on the preferred side.
    pub percent: i32,
    /// Keys keep their side.
    pub sticky: bool,
    /// Automatic failover.
    pub auto_failover: bool,
    /// Automatic failback.
    pub auto_failback: bool,
    /// Recorded failover state.
    pub failed_over: bool,
    /// Who changed it last (token name, or `system` for automatic switches).
    pub updated_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// When (UTC).
    pub updated_at: chrono::NaiveDateTime,
}

impl TrafficRow {
    /// The pure rules' view of this row.
    pub fn policy(&self) -> crate::jobs::traffic::Policy {
        crate::jobs::traffic::Policy {
            group: self.group_name.clone(),
            label: self.label.clone(),
            preferred: self.preferred.clone(),
            backup: self.backup.clone(),
            percent: self.percent,
            sticky: self.sticky,
            auto_failover: self.auto_failover,
            auto_failback: self.auto_failback,
            failed_over: self.failed_over,
        }
    }
}

/// Every traffic policy.
pub fn traffic_policies(conn: &mut AnyConnection) -> Result<Vec<TrafficRow>, StoreError> {
    Ok(traffic_policy::table.select(TrafficRow::as_select()).order(traffic_policy::group_name).load(conn)?)
}

/// How many traffic groups run on their backup side (failed over, automatically or not), for
/// `/metrics`.
pub fn failed_over_groups(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    Ok(traffic_policy::table.filter(traffic_policy::failed_over.eq(true)).count().get_result(conn)?)
}

/// One traffic policy.
pub fn traffic_policy(conn: &mut AnyConnection, group: &str) -> Result<Option<TrafficRow>, StoreError> {
    Ok(traffic_policy::table.find(group).select(TrafficRow::as_select()).first(conn).optional()?)
}

/// Create or replace a policy, with its event, in one transaction; returns the previous row.
pub fn put_traffic_policy(
    conn: &mut AnyConnection,
    row: &TrafficRow,
    event: &NewEvent,
) -> Result<Option<TrafficRow>, StoreError> {
    conn.transaction(|c| {
        let old = traffic_policy(c, &row.group_name)?;
        if old.is_some() {
            diesel::update(traffic_policy::table.find(&row.group_name)).set(row).execute(c)?;
        } else {
            diesel::insert_into(traffic_policy::table).values(row).execute(c)?;
        }
        events::record_event(c, event)?;
        Ok(old)
    })
}

/// Delete a policy, with its event; false when there was none.
pub fn delete_traffic_policy(conn: &mut AnyConnection, group: &str, event: &NewEvent) -> Result<bool, StoreError> {
    conn.transaction(|c| {
        let n = diesel::delete(traffic_policy::table.find(group)).execute(c)?;
        if n == 1 {
            events::record_event(c, event)?;
        }
        Ok(n == 1)
    })
}

/// Record an automatic switch: only if the recorded state is still `!failed_over` (so the
/// switch is written once however many nodes see it), with its event.
pub fn record_switch(
    conn: &mut AnyConnection,
    group: &str,
    failed_over: bool,
    reason: &str,
    event: &NewEvent,
) -> Result<bool, StoreError> {
    conn.transaction(|c| {
        let n = diesel::update(traffic_policy::table.find(group).filter(traffic_policy::failed_over.eq(!failed_over)))
            .set((
                traffic_policy::failed_over.eq(failed_over),
                traffic_policy::updated_by.eq("system"),
                traffic_policy::reason.eq(reason),
                traffic_policy::updated_at.eq(Utc::now().naive_utc()),
            ))
            .execute(c)?;
        if n == 1 {
            events::record_event(c, event)?;
        }
        Ok(n == 1)
    })
}
