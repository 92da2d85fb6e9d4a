//! Recovery: putting back running rows that nobody runs any more.
//!
//! A node that leaves (it crashed, lost its lease, or started again as a new life) leaves its
//! claimed rows `running`, and a node can strand rows of its own that no executor holds; the
//! nodes that own them now read them ([`orphans`]) and put each back
//! ([`recover`]): pending again with its attempt counted (given back to a job that never
//! started), failed when its attempts are used up,
//! lost for a broadcast child (invariant I5). Each recovery is conditional on the orphan's claim
//! as it was read (owner, epoch, token, attempt) and on the recovering node's [`Fence`].
//!
//! Must never: put back a row its owner may still be running — one claimed under a newer view
//! than the recovering node's, within the membership's grace of its claim ([`recover`]).

use crate::domain::{Action, TaskStatus};
use chrono::Utc;
use diesel::prelude::*;

use super::fence::{BeforeDeadline, Fence};
use super::schema::task;
use super::{AnyConnection, StoreError};

/// A running task whose owner is gone (or is this node, in an earlier life or in this one).
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct Orphan {
    /// Task id.
    pub id: i64,
    /// Its application.
    pub app_id: Option<i64>,
    /// Its action.
    pub action: String,
    /// A job's own selector.
    pub selector: Option<String>,
    /// The owner that claimed it.
    pub owner_node: Option<String>,
    /// The epoch it claimed it at.
    pub owner_epoch: Option<i64>,
    /// The claim's token.
    pub claim_token: Option<i64>,
    /// Its attempt (counted at the claim).
    pub attempts: i32,
    /// A fan-out child's node.
    pub target_node: Option<String>,
    /// Its routing (a child carries its parent's).
    pub routing: Option<String>,
    /// A fan-out parent's stage.
    pub stage: Option<String>,
    /// Whether its execution began (`started_at` set: [`super::complete::mark_started`]).
    pub started: bool,
}

impl Orphan {
    /// A job (not an application command) claimed by a node and never started: its attempt,
    /// counted at the claim, was not used. Commands carry no start mark: their actor runs them as
    /// soon as it holds the application, and one that cannot run yet is given back uncounted. A
    /// row without a claim token was not claimed by a node (written `running` by hand): nothing
    /// says it did not start, and it is charged as before start marks existed.
    pub fn unstarted_job(&self) -> bool {
        !self.started
            && self.claim_token.is_some()
            && self.stage.is_none()
            && (self.app_id.is_none() || Action::parse(&self.action) == Some(Action::Run))
    }
}

/// Running tasks whose owner is not in `live`, or is `me` (the caller tells the rows of its
/// earlier lives, orphans, from those of its current one, which it recovers only when none of
/// its executors holds them), or is NULL. Children addressed to another node are left to their
/// parent's coordinator (it loses or moves them) — unless they have no owner at all, which no
/// coordinator looks at. One statement for all: an idle node's queries per second are the sum
/// of its periodic reads.
/// Why NULL apart: `owner_node <> ALL(live)` is NULL, not true, for a NULL owner, so a row
/// written `running` without an owner was never read and never recovered
/// (docs/design.md#no-row-stalls).
pub fn orphans(conn: &mut AnyConnection, live: &[String], me: &str) -> Result<Vec<Orphan>, StoreError> {
    Ok(task::table
        .filter(task::status.eq(TaskStatus::Running))
        .filter(
            task::owner_node
                .is_null()
                .or(task::owner_node.ne_all(live.to_vec()).and(task::target_node.is_null()))
                .or(task::owner_node.eq(me)),
        )
        .select((
            task::id,
            task::app_id,
            task::action,
            task::selector,
            task::owner_node,
            task::owner_epoch,
            task::claim_token,
            task::attempts,
            task::target_node,
            task::routing,
            task::stage,
            task::started_at.is_not_null(),
        ))
        .order(task::id)
        .load(conn)?)
}

diesel::define_sql_function! {
    /// `coalesce` of a nullable text with a text.
    #[sql_name = "coalesce"]
    fn coalesce_text(x: diesel::sql_types::Nullable<diesel::sql_types::Text>, y: diesel::sql_types::Text) -> diesel::sql_types::Text;
}
diesel::define_sql_function! {
    /// `coalesce` of a nullable bigint with a bigint.
    #[sql_name = "coalesce"]
    fn coalesce_bigint(x: diesel::sql_types::Nullable<diesel::sql_types::BigInt>, y: diesel::sql_types::BigInt) -> diesel::sql_types::BigInt;
}

/// What stands for a NULL owner, epoch or token in [`recover`]'s comparison with the claim as
/// read: no node is named `""`, no epoch is negative and no token is (`claim::claim_token`), so
/// NULL matches NULL and nothing else.
const NO_OWNER: &str = "";
const NO_EPOCH: i64 = -1;
const NO_TOKEN: i64 = -1;

/// Recover an orphan: back to `pending` with its attempt counted, or `failed` when its attempts
/// are used up — a job that never started goes back to `pending` with its attempt given back
/// ([`Orphan::unstarted_job`]); a broadcast child becomes `lost` (invariant I5), and a fan-out
/// parent always goes back to `pending` (its stage says where its next coordinator resumes). Conditional on the
/// orphan's claim: owner, epoch, token and attempt. Returns the new status, if changed.
/// Nothing is written when `view`, the epoch of the view whose live members made `o` an orphan,
/// is older than the recovering node's session, or past its deadline ([`Fence`]), nor — for
/// `grace` after its claim — when the row was claimed under a view newer than `view`: a node
/// with an old list of live members (paused, or only slow to see a join) would otherwise put
/// back a row that a node which joined meanwhile is running (the rule of `store::jobs` for
/// moving a child). Past the grace the claim is taken as what it then is — from a node that
/// never joined this cluster, or from before its etcd was reset (revisions start again) — and
/// recovered: a permanent rule would leave such a row running for ever. The caller's grace is
/// the membership's (the lease TTL on etcd; none for the standalone node, beside which no other
/// node can be a member). A NULL owner or epoch is compared as NULL, not with `=`, which NULL
/// never satisfies.
pub fn recover(
    conn: &mut AnyConnection,
    o: &Orphan,
    reason: &str,
    (fence, view, grace): (Fence, i64, chrono::TimeDelta),
) -> Result<Option<&'static str>, StoreError> {
    if !fence.admits(view) {
        return Ok(None);
    }
    let now = Utc::now().naive_utc();
    let same = || {
        task::table
            .filter(task::id.eq(o.id))
            .filter(task::status.eq(TaskStatus::Running))
            .filter(coalesce_text(task::owner_node, NO_OWNER).eq(o.owner_node.clone().unwrap_or_default()))
            .filter(coalesce_bigint(task::owner_epoch, NO_EPOCH).eq(o.owner_epoch.unwrap_or(NO_EPOCH)))
            .filter(coalesce_bigint(task::claim_token, NO_TOKEN).eq(o.claim_token.unwrap_or(NO_TOKEN)))
            .filter(task::attempts.eq(o.attempts))
            .filter(
                task::owner_epoch
                    .le(view)
                    .or(task::owner_epoch.is_null())
                    .or(task::claimed_at.is_null())
                    .or(task::claimed_at.lt(now - grace)),
            )
            .filter(BeforeDeadline(fence.until))
    };
    if o.target_node.is_some() && o.routing.as_deref() == Some("broadcast") {
        let n = diesel::update(same())
            .set((
                task::status.eq(TaskStatus::Lost),
                task::error.eq(format!("{reason}; a broadcast child is not run again")),
                task::finished_at.eq(now),
            ))
            .execute(conn)?;
        return Ok((n == 1).then_some("lost"));
    }
    if o.unstarted_job() {
        // Its attempt was counted at the claim and never used: given back with the row.
        let n = diesel::update(same().filter(task::started_at.is_null()))
            .set((
                task::status.eq(TaskStatus::Pending),
                task::error.eq(format!("{reason}; it had not started, so its attempt is not counted")),
                task::attempts.eq((o.attempts - 1).max(0)),
                task::owner_node.eq(None::<String>),
                task::owner_epoch.eq(None::<i64>),
                task::claim_token.eq(None::<i64>),
            ))
            .execute(conn)?;
        return Ok((n == 1).then_some("pending"));
    }
    let failed = diesel::update(same().filter(task::attempts.ge(task::max_attempts)).filter(task::stage.is_null()))
        .set((
            task::status.eq(TaskStatus::Failed),
            task::error.eq(format!("{reason}; no attempts left")),
            task::finished_at.eq(now),
        ))
        .execute(conn)?;
    if failed == 1 {
        return Ok(Some("failed"));
    }
    let pending = diesel::update(same().filter(task::attempts.lt(task::max_attempts).or(task::stage.is_not_null())))
        .set((
            task::status.eq(TaskStatus::Pending),
            task::error.eq(reason),
            task::owner_node.eq(None::<String>),
            task::owner_epoch.eq(None::<i64>),
            task::claim_token.eq(None::<i64>),
        ))
        .execute(conn)?;
    Ok((pending == 1).then_some("pending"))
}
