//! Rows as Rust types. Status-like columns are TEXT in the database (the SQL interface is the
//! contract and must accept rows written by hand); the vocabulary types of [`crate::domain`] are
//! how the code reads them (the columns' CHECK constraints keep them in the vocabulary). An
//! action is free text: an unknown one is failed at dispatch, naming it.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use crate::domain::{Action, AppState, DesiredState, TaskStatus};

use super::schema::{application, event, membership_lock, task};

/// A row of `task`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = task)]
pub struct Task {
    /// Monotonic id.
    pub id: i64,
    /// The application this command is about; None for jobs.
    pub app_id: Option<i64>,
    /// `start`, `stop`, `restart`, `run`, …
    pub action: String,
    /// JSON parameters.
    pub payload: String,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// Higher runs first among due rows.
    pub priority: i32,
    /// Not before this time (UTC).
    pub run_after: NaiveDateTime,
    /// Attempts made so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Node that claimed it.
    pub owner_node: Option<String>,
    /// Ring epoch under which it was claimed (fencing token).
    pub owner_epoch: Option<i64>,
    /// Unique when set.
    pub idempotency_key: Option<String>,
    /// The job this row is a child of.
    pub parent_id: Option<i64>,
    /// Shard number of a sharded child.
    pub shard_index: Option<i32>,
    /// Shard count of a sharded child.
    pub shard_total: Option<i32>,
    /// The node a fan-out child must run on.
    pub target_node: Option<String>,
    /// JSON result.
    pub result: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Insert time (UTC).
    pub created_at: NaiveDateTime,
    /// Claim time (UTC).
    pub claimed_at: Option<NaiveDateTime>,
    /// Terminal time (UTC).
    pub finished_at: Option<NaiveDateTime>,
    /// How a job picks its node(s); None is `hash`.
    pub routing: Option<String>,
    /// Per-attempt time limit of a job, ms.
    pub timeout_ms: Option<i32>,
    /// A job's own selector (JSON); None uses its application's.
    pub selector: Option<String>,
    /// Fan-out stage of a parent: None, `gather`, `reduce`.
    pub stage: Option<String>,
    /// Set at every claim to a value of the claimant's choosing: told apart from every other
    /// claim of a row with this id, even one by the same node at the same epoch ([`Claim`]).
    pub claim_token: Option<i64>,
    /// When the current attempt began (UTC): written by the claim, cleared from a job that waits
    /// for an execution slot, written again (the node's clock) as it starts; a job claimed and
    /// not started has none (docs/design.md#an-attempt-counts-when-execution-starts).
    pub started_at: Option<NaiveDateTime>,
}

/// The claim a row is held under, as the claim returned it: every write as the claim's holder
/// (outcome, give-back, a fan-out parent's stage and children) is conditional on both, besides
/// the owner (docs/design.md#i3).
/// Why the token: the epoch is the membership's, and a database failover does not change it.
/// After a failover onto an asynchronous replica the promoted server hands out again the ids of
/// the transactions the old primary had not shipped, so one node can hold, at one epoch, a claim
/// of row 42 from before the failover and a claim of another task with id 42 from after it; the
/// first one's late outcome must not land on the second (docs/operations.md#ha).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The epoch it was claimed at (`owner_epoch`).
    pub epoch: i64,
    /// The claim's token (`claim_token`).
    pub token: i64,
}

/// A row of `task` without its payload and result: what lists show. Why: those two are the
/// columns of unbounded size (a hand-inserted payload can be megabytes), and a list of them
/// could hold the API's connections and the node's memory (docs/api.md#lists).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = task)]
pub struct TaskSummary {
    /// Monotonic id.
    pub id: i64,
    /// The application this command is about; None for jobs.
    pub app_id: Option<i64>,
    /// `start`, `stop`, `restart`, `run`, …
    pub action: String,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// Higher runs first among due rows.
    pub priority: i32,
    /// Not before this time (UTC).
    pub run_after: NaiveDateTime,
    /// Attempts made so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Node that claimed it.
    pub owner_node: Option<String>,
    /// Ring epoch under which it was claimed (fencing token).
    pub owner_epoch: Option<i64>,
    /// Unique when set.
    pub idempotency_key: Option<String>,
    /// The job this row is a child of.
    pub parent_id: Option<i64>,
    /// Shard number of a sharded child.
    pub shard_index: Option<i32>,
    /// Shard count of a sharded child.
    pub shard_total: Option<i32>,
    /// The node a fan-out child must run on.
    pub target_node: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Insert time (UTC).
    pub created_at: NaiveDateTime,
    /// Claim time (UTC).
    pub claimed_at: Option<NaiveDateTime>,
    /// When the current attempt began (UTC; [`Task::started_at`]).
    pub started_at: Option<NaiveDateTime>,
    /// Terminal time (UTC).
    pub finished_at: Option<NaiveDateTime>,
    /// How a job picks its node(s); None is `hash`.
    pub routing: Option<String>,
    /// Per-attempt time limit of a job, ms.
    pub timeout_ms: Option<i32>,
    /// A job's own selector (JSON); None uses its application's.
    pub selector: Option<String>,
    /// Fan-out stage of a parent: None, `gather`, `reduce`.
    pub stage: Option<String>,
}

impl Task {
    /// The row as a list shows it, with its payload and result apart.
    pub fn split(self) -> (TaskSummary, String, Option<String>) {
        let summary = TaskSummary {
            id: self.id,
            app_id: self.app_id,
            action: self.action,
            status: self.status,
            priority: self.priority,
            run_after: self.run_after,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            owner_node: self.owner_node,
            owner_epoch: self.owner_epoch,
            idempotency_key: self.idempotency_key,
            parent_id: self.parent_id,
            shard_index: self.shard_index,
            shard_total: self.shard_total,
            target_node: self.target_node,
            error: self.error,
            created_at: self.created_at,
            claimed_at: self.claimed_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            routing: self.routing,
            timeout_ms: self.timeout_ms,
            selector: self.selector,
            stage: self.stage,
        };
        (summary, self.payload, self.result)
    }

    /// The action this row names, or None for text that names none.
    pub fn action_word(&self) -> Option<Action> {
        Action::parse(&self.action)
    }

    /// A job (`run`, or a row of no application) rather than an application command: the
    /// dispatcher hands it to the job pool, not to an application's actor.
    pub fn is_job(&self) -> bool {
        self.app_id.is_none() || self.action_word() == Some(Action::Run)
    }

    /// The claim this row was read under (a row this node claimed: the claim sets both).
    pub fn claim(&self) -> Claim {
        Claim { epoch: self.owner_epoch.unwrap_or_default(), token: self.claim_token.unwrap_or_default() }
    }

    /// True for an application command (a row with an application whose action is not `run`).
    pub fn is_command(&self) -> bool {
        self.app_id.is_some() && self.action_word() != Some(Action::Run)
    }
}

/// A new `task` row; unset fields take the database defaults.
#[derive(Debug, Clone, Default, Insertable)]
#[diesel(table_name = task)]
pub struct NewTask {
    /// See [`Task::app_id`].
    pub app_id: Option<i64>,
    /// See [`Task::action`].
    pub action: String,
    /// See [`Task::payload`].
    pub payload: Option<String>,
    /// See [`Task::priority`].
    pub priority: Option<i32>,
    /// See [`Task::run_after`].
    pub run_after: Option<NaiveDateTime>,
    /// See [`Task::max_attempts`].
    pub max_attempts: Option<i32>,
    /// See [`Task::idempotency_key`].
    pub idempotency_key: Option<String>,
    /// See [`Task::parent_id`].
    pub parent_id: Option<i64>,
    /// See [`Task::routing`].
    pub routing: Option<String>,
    /// See [`Task::timeout_ms`].
    pub timeout_ms: Option<i32>,
    /// See [`Task::selector`].
    pub selector: Option<String>,
    /// See [`Task::shard_index`].
    pub shard_index: Option<i32>,
    /// See [`Task::shard_total`].
    pub shard_total: Option<i32>,
    /// See [`Task::target_node`].
    pub target_node: Option<String>,
}

/// A row of `application`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = application)]
pub struct Application {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// `process`, `shell`, `http`, `noop`.
    pub driver: String,
    /// Driver-specific JSON.
    pub spec: String,
    /// JSON label selector.
    pub selector: String,
    /// What an admin wants it to be.
    pub desired_state: DesiredState,
    /// Observed state.
    pub state: AppState,
    /// Owning node.
    pub owner_node: Option<String>,
    /// Owner's epoch (fencing token).
    pub owner_epoch: Option<i64>,
    /// `never`, `on_failure`, `always`.
    pub restart_policy: String,
    /// Restarts allowed before `failed`.
    pub max_restarts: i32,
    /// Restarts made.
    pub restart_count: i32,
    /// Monitor interval; None = node default.
    pub monitor_interval_ms: Option<i32>,
    /// Last error seen.
    pub last_error: Option<String>,
    /// Created (UTC).
    pub created_at: NaiveDateTime,
    /// Last changed (UTC).
    pub updated_at: NaiveDateTime,
    /// Traffic group (a `traffic_policy` picks its datacenter).
    pub traffic_group: Option<String>,
    /// What its driver keeps between calls and across owners (JSON; e.g. a Flink job's id and
    /// savepoints), written by the owner only ([`crate::drivers::Runtime`]).
    pub runtime: Option<String>,
}

/// A new `application` row.
#[derive(Debug, Clone, Default, Insertable)]
#[diesel(table_name = application)]
pub struct NewApplication {
    /// Unique name.
    pub name: String,
    /// Driver name.
    pub driver: String,
    /// Driver spec (JSON).
    pub spec: Option<String>,
    /// Selector (JSON).
    pub selector: Option<String>,
    /// Restart policy.
    pub restart_policy: Option<String>,
    /// Restarts allowed.
    pub max_restarts: Option<i32>,
    /// Monitor interval.
    pub monitor_interval_ms: Option<i32>,
    /// Traffic group.
    pub traffic_group: Option<String>,
}

/// A row of `event`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = event)]
pub struct Event {
    /// Id.
    pub id: i64,
    /// When (UTC).
    pub at: NaiveDateTime,
    /// What kind of event, dotted: `membership.joined`, `task.failed`, …
    pub kind: String,
    /// Application concerned.
    pub app_id: Option<i64>,
    /// Task concerned.
    pub task_id: Option<i64>,
    /// Node that wrote it.
    pub node_id: Option<String>,
    /// Who caused it (a token name, `system`).
    pub actor: Option<String>,
    /// Readable message.
    pub message: String,
    /// JSON details.
    pub data: String,
}

/// A new `event` row.
#[derive(Debug, Clone, Default, Insertable)]
#[diesel(table_name = event)]
pub struct NewEvent {
    /// See [`Event::kind`].
    pub kind: String,
    /// See [`Event::app_id`].
    pub app_id: Option<i64>,
    /// See [`Event::task_id`].
    pub task_id: Option<i64>,
    /// See [`Event::node_id`].
    pub node_id: Option<String>,
    /// See [`Event::actor`].
    pub actor: Option<String>,
    /// See [`Event::message`].
    pub message: String,
    /// See [`Event::data`].
    pub data: Option<String>,
}

/// The standalone lock row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = membership_lock)]
pub struct LockRow {
    /// Always `standalone`.
    pub name: String,
    /// Holder's node id.
    pub node_id: String,
    /// Holder's per-process token.
    pub holder: String,
    /// Holder's host name.
    pub host: String,
    /// Holder's process id.
    pub pid: i64,
    /// Holder's process space (boot id + pid namespace): its pid means something only there.
    pub pid_space: String,
    /// Holder's HTTP address.
    pub addr: String,
    /// Incremented at every acquisition: the fencing token.
    pub epoch: i64,
    /// When acquired (database clock, UTC).
    pub acquired_at: NaiveDateTime,
    /// Last heartbeat (database clock, UTC).
    pub heartbeat_at: NaiveDateTime,
}
