//! Queries of workflows (docs/workflows.md): definitions and their versions, runs, node runs,
//! and the one transaction that advances a run.
//!
//! Every advance is one transaction that begins by taking the coordinator's claim of its task
//! (`owner_node`, `owner_epoch`, `claim_token` and the node's deadline: invariant I3) and the run
//! row's lock, then reads the run, and writes what the pure step decided: a node's job is
//! inserted only together with the move of its `workflow_node_run` row from `waiting` to
//! `running`, and every node write is conditional on the state it was read in. So a coordinator
//! that was replaced (its claim superseded) writes nothing, and two advances can never both
//! start a node. Admin changes (retry, cancel) take the run row's lock first too.
//!
//! Must never: write about a run without holding its coordinator's claim (except the admin
//! changes, which only move nodes back to `waiting` or ask for a cancel).

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::claim::held_under;
use super::fence::{BeforeDeadline, Fence};
use super::models::{Claim, NewTask};
use super::schema::{task, workflow, workflow_node_run, workflow_run, workflow_version};
use super::{AnyConnection, StoreError};
use crate::domain::TaskStatus;

/// A row of `workflow`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = workflow)]
pub struct WorkflowRow {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The current version.
    pub version: i32,
    /// Runs at once, at most.
    pub max_concurrent_runs: Option<i32>,
    /// Created (UTC).
    pub created_at: NaiveDateTime,
    /// Last changed (UTC).
    pub updated_at: NaiveDateTime,
}

/// A row of `workflow_run`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = workflow_run)]
pub struct RunRow {
    /// Id.
    pub id: i64,
    /// The workflow.
    pub workflow_id: i64,
    /// The definition's version it runs.
    pub version: Option<i32>,
    /// `pending` `running` `succeeded` `failed` `cancelled`.
    pub status: String,
    /// The context (a JSON object's text).
    pub context: String,
    /// The coordinator task.
    pub task_id: Option<i64>,
    /// An admin asked for it to stop.
    pub cancel_requested: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// Created (UTC).
    pub created_at: NaiveDateTime,
    /// Last changed (UTC).
    pub updated_at: NaiveDateTime,
    /// Ended (UTC).
    pub finished_at: Option<NaiveDateTime>,
}

/// A row of `workflow_node_run`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = workflow_node_run)]
pub struct NodeRow {
    /// The run.
    pub run_id: i64,
    /// The node's key.
    pub node_key: String,
    /// `waiting` `running` `succeeded` `failed` `skipped` `cancelled`.
    pub status: String,
    /// Its latest job.
    pub task_id: Option<i64>,
    /// Times retried.
    pub round: i32,
    /// A decision's branch.
    pub decision: Option<bool>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its job written (UTC).
    pub started_at: Option<NaiveDateTime>,
    /// Ended (UTC).
    pub finished_at: Option<NaiveDateTime>,
}

fn unique_violation(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Query(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _))
    )
}

/// Why a workflow was not created.
#[derive(Debug)]
pub enum CreateError {
    /// Another workflow has the name.
    Exists,
    /// The database failed.
    Store(StoreError),
}

impl From<StoreError> for CreateError {
    fn from(e: StoreError) -> Self {
        if unique_violation(&e) {
            CreateError::Exists
        } else {
            CreateError::Store(e)
        }
    }
}

impl From<diesel::result::Error> for CreateError {
    fn from(e: diesel::result::Error) -> Self {
        StoreError::Query(e).into()
    }
}

/// Create a workflow with its first version.
pub fn create_workflow(
    conn: &mut AnyConnection,
    name: &str,
    max_concurrent_runs: Option<i32>,
    definition: &str,
) -> Result<WorkflowRow, CreateError> {
    conn.transaction(|c| {
        let id: i64 = diesel::insert_into(workflow::table)
            .values((workflow::name.eq(name), workflow::max_concurrent_runs.eq(max_concurrent_runs)))
            .returning(workflow::id)
            .get_result(c)?;
        let row: WorkflowRow = workflow::table.find(id).select(WorkflowRow::as_select()).first(c)?;
        diesel::insert_into(workflow_version::table)
            .values((
                workflow_version::workflow_id.eq(row.id),
                workflow_version::version.eq(1),
                workflow_version::definition.eq(definition),
            ))
            .execute(c)?;
        Ok(row)
    })
}

/// Replace a workflow's definition (a new version: running runs keep theirs) and/or its limit.
/// None when there is no such workflow.
pub fn update_workflow(
    conn: &mut AnyConnection,
    id: i64,
    max_concurrent_runs: Option<Option<i32>>,
    definition: Option<&str>,
) -> Result<Option<WorkflowRow>, StoreError> {
    conn.transaction(|c| {
        let Some(old) = find_workflow(c, id)? else { return Ok(None) };
        let version = if definition.is_some() { old.version + 1 } else { old.version };
        if let Some(d) = definition {
            diesel::insert_into(workflow_version::table)
                .values((
                    workflow_version::workflow_id.eq(id),
                    workflow_version::version.eq(version),
                    workflow_version::definition.eq(d),
                ))
                .execute(c)?;
        }
        let limit = max_concurrent_runs.unwrap_or(old.max_concurrent_runs);
        diesel::update(workflow::table.find(id))
            .set((
                workflow::version.eq(version),
                workflow::max_concurrent_runs.eq(limit),
                workflow::updated_at.eq(Utc::now().naive_utc()),
            ))
            .execute(c)?;
        find_workflow(c, id)
    })
}

/// One workflow.
pub fn find_workflow(conn: &mut AnyConnection, id: i64) -> Result<Option<WorkflowRow>, StoreError> {
    Ok(workflow::table.find(id).select(WorkflowRow::as_select()).first(conn).optional()?)
}

/// One workflow by name.
pub fn find_workflow_named(conn: &mut AnyConnection, name: &str) -> Result<Option<WorkflowRow>, StoreError> {
    Ok(workflow::table.filter(workflow::name.eq(name)).select(WorkflowRow::as_select()).first(conn).optional()?)
}

/// Workflows with ids above `after`, by id, at most `limit`.
pub fn list_workflows(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<Vec<WorkflowRow>, StoreError> {
    Ok(workflow::table
        .filter(workflow::id.gt(after))
        .select(WorkflowRow::as_select())
        .order(workflow::id)
        .limit(limit)
        .load(conn)?)
}

/// The text of one version of a definition.
pub fn definition(conn: &mut AnyConnection, id: i64, version: i32) -> Result<Option<String>, StoreError> {
    Ok(workflow_version::table.find((id, version)).select(workflow_version::definition).first(conn).optional()?)
}

/// Start a run (the insert's trigger writes its coordinator task and takes the current version).
pub fn start_run(conn: &mut AnyConnection, workflow_id: i64, context: &str) -> Result<RunRow, StoreError> {
    conn.transaction(|c| {
        let id: i64 = diesel::insert_into(workflow_run::table)
            .values((workflow_run::workflow_id.eq(workflow_id), workflow_run::context.eq(context)))
            .returning(workflow_run::id)
            .get_result(c)?;
        Ok(workflow_run::table.find(id).select(RunRow::as_select()).first(c)?)
    })
}

/// Start a run for a schedule's firing (docs/workflows.md#schedules): the run row, carrying
/// `key` (unique: a second run for the same firing is refused), and its coordinator task held
/// until `not_before`, the fire time on the database's clock, as a scheduled job is. Called
/// inside the firing's transaction.
pub fn start_scheduled_run(
    conn: &mut AnyConnection,
    workflow_id: i64,
    context: &str,
    key: &str,
    not_before: NaiveDateTime,
) -> Result<RunRow, StoreError> {
    conn.transaction(|c| {
        let id: i64 = diesel::insert_into(workflow_run::table)
            .values((
                workflow_run::workflow_id.eq(workflow_id),
                workflow_run::context.eq(context),
                workflow_run::idempotency_key.eq(key),
            ))
            .returning(workflow_run::id)
            .get_result(c)?;
        let run: RunRow = workflow_run::table.find(id).select(RunRow::as_select()).first(c)?;
        if let Some(coordinator) = run.task_id {
            diesel::update(task::table.find(coordinator)).set(task::run_after.eq(not_before)).execute(c)?;
        }
        Ok(run)
    })
}

/// Runs of each of `workflows` by status: (workflow, status, count).
pub fn run_counts(conn: &mut AnyConnection, workflows: &[i64]) -> Result<Vec<(i64, String, i64)>, StoreError> {
    Ok(workflow_run::table
        .filter(workflow_run::workflow_id.eq_any(workflows))
        .group_by((workflow_run::workflow_id, workflow_run::status))
        .select((workflow_run::workflow_id, workflow_run::status, diesel::dsl::count_star()))
        .load(conn)?)
}

/// One run.
pub fn find_run(conn: &mut AnyConnection, id: i64) -> Result<Option<RunRow>, StoreError> {
    Ok(workflow_run::table.find(id).select(RunRow::as_select()).first(conn).optional()?)
}

/// Runs of a workflow, newest first, at most `limit`.
pub fn list_runs(conn: &mut AnyConnection, workflow_id: i64, limit: i64) -> Result<Vec<RunRow>, StoreError> {
    Ok(workflow_run::table
        .filter(workflow_run::workflow_id.eq(workflow_id))
        .select(RunRow::as_select())
        .order(workflow_run::id.desc())
        .limit(limit)
        .load(conn)?)
}

/// A node run with its job's state, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// The row.
    #[serde(flatten)]
    pub row: NodeRow,
    /// Its job's status.
    pub task_status: Option<String>,
    /// The node that ran (or runs) its job.
    pub node_id: Option<String>,
}

/// A job's status and the node that ran it.
type JobState = (String, Option<String>);

/// The node runs of a run with their jobs' states.
pub fn node_views(conn: &mut AnyConnection, run: i64) -> Result<Vec<NodeView>, StoreError> {
    let rows: Vec<(NodeRow, Option<JobState>)> = workflow_node_run::table
        .left_join(task::table.on(task::id.nullable().eq(workflow_node_run::task_id)))
        .filter(workflow_node_run::run_id.eq(run))
        .select((NodeRow::as_select(), (task::status, task::owner_node).nullable()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(row, t)| {
            let (task_status, node_id) = t.map(|(s, n)| (Some(s), n)).unwrap_or((None, None));
            NodeView { row, task_status, node_id }
        })
        .collect())
}

/// The context of the run coordinated by task `coordinator`, and whether it was cancelled:
/// what a node's job is given. None when that task coordinates no run.
pub fn node_context(conn: &mut AnyConnection, coordinator: i64) -> Result<Option<(String, bool)>, StoreError> {
    Ok(workflow_run::table
        .filter(workflow_run::task_id.eq(coordinator))
        .select((workflow_run::context, workflow_run::cancel_requested))
        .first(conn)
        .optional()?)
}

/// A node's job seen to end.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedJob {
    /// The node's key.
    pub node_key: String,
    /// Its task.
    pub task_id: i64,
    /// The task's status.
    pub status: String,
    /// Its result.
    pub result: Option<String>,
    /// Its error.
    pub error: Option<String>,
}

/// A node's key, its job's id, status, result and error.
type EndedRow = (String, i64, String, Option<String>, Option<String>);

/// What an advance reads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The run.
    pub run: RunRow,
    /// Its definition's text (its version).
    pub definition: String,
    /// Node runs (empty before the run started).
    pub nodes: Vec<NodeRow>,
    /// Running nodes whose jobs ended.
    pub ended: Vec<EndedJob>,
    /// For a pending run: whether the workflow's limit lets it start now.
    pub may_start: bool,
}

/// A node's change.
#[derive(Debug, Clone)]
pub struct NodeChange {
    /// The node's key.
    pub key: String,
    /// Its state read ([`Snapshot::nodes`]); the write is conditional on it.
    pub from: String,
    /// Its new state.
    pub to: String,
    /// A decision's branch.
    pub decision: Option<bool>,
    /// Its error.
    pub error: Option<String>,
    /// Its job, when it starts one.
    pub job: Option<NewTask>,
}

/// What an advance writes.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// Create the node rows (`waiting`), the first time.
    pub create_nodes: Vec<String>,
    /// Node changes.
    pub nodes: Vec<NodeChange>,
    /// The new context, if it changed.
    pub context: Option<String>,
    /// The run's new status and error.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// How an advance went.
#[derive(Debug, Clone, PartialEq)]
pub enum Advanced {
    /// The coordinator's claim is gone: nothing written.
    NotOurs,
    /// The run or its definition is not there.
    Missing(String),
    /// A node changed under the advance (an admin's retry or cancel): nothing written, look again.
    Raced,
    /// Written: the run's status and the ids of the jobs written.
    Done {
        /// `pending` `running` `succeeded` `failed` `cancelled`.
        status: String,
        /// Jobs written.
        started: Vec<i64>,
    },
}

/// Advance the run that task `coordinator` coordinates, in one transaction fenced by the
/// coordinator's claim: read ([`Snapshot`]), let `decide` say what to write, write it.
pub fn advance(
    conn: &mut AnyConnection,
    coordinator: i64,
    me: &str,
    claim: Claim,
    fence: Fence,
    decide: impl FnOnce(&Snapshot) -> Result<Writes, String>,
) -> Result<Advanced, StoreError> {
    let now = Utc::now().naive_utc();
    let r = conn.transaction(|c| {
        let ours =
            diesel::update(task::table.filter(held_under(coordinator, me, claim)).filter(BeforeDeadline(fence.until)))
                .set(task::stage.eq("gather"))
                .execute(c)?;
        if ours == 0 {
            return Ok(Advanced::NotOurs);
        }
        // The run row's lock: admin changes and advances take it first, one at a time.
        let locked = diesel::update(workflow_run::table.filter(workflow_run::task_id.eq(coordinator)))
            .set(workflow_run::updated_at.eq(now))
            .execute(c)?;
        if locked == 0 {
            return Ok(Advanced::Missing(format!("task {coordinator} coordinates no workflow run")));
        }
        let run: RunRow =
            workflow_run::table.filter(workflow_run::task_id.eq(coordinator)).select(RunRow::as_select()).first(c)?;
        if matches!(run.status.as_str(), "succeeded" | "failed" | "cancelled") {
            return Ok(Advanced::Done { status: run.status, started: Vec::new() });
        }
        let Some(version) = run.version else {
            return Ok(Advanced::Missing(format!("workflow {} does not exist", run.workflow_id)));
        };
        let Some(definition) = definition(c, run.workflow_id, version)? else {
            return Ok(Advanced::Missing(format!("workflow {} has no version {version}", run.workflow_id)));
        };
        let mut may_start = true;
        if run.status == "pending" && !run.cancel_requested {
            // The workflow's row is the lock that counts its runs one start at a time.
            diesel::update(workflow::table.find(run.workflow_id))
                .set(workflow::max_concurrent_runs.eq(workflow::max_concurrent_runs))
                .execute(c)?;
            let limit: Option<i32> =
                workflow::table.find(run.workflow_id).select(workflow::max_concurrent_runs).first(c)?;
            if let Some(limit) = limit {
                let ahead: i64 = workflow_run::table
                    .filter(workflow_run::workflow_id.eq(run.workflow_id))
                    .filter(workflow_run::id.ne(run.id))
                    .filter(
                        workflow_run::status
                            .eq("running")
                            .or(workflow_run::status.eq("pending").and(workflow_run::id.lt(run.id))),
                    )
                    .count()
                    .get_result(c)?;
                may_start = ahead < i64::from(limit);
            }
        }
        let nodes: Vec<NodeRow> = workflow_node_run::table
            .filter(workflow_node_run::run_id.eq(run.id))
            .select(NodeRow::as_select())
            .load(c)?;
        let ended: Vec<EndedRow> = workflow_node_run::table
            .inner_join(task::table.on(task::id.nullable().eq(workflow_node_run::task_id)))
            .filter(workflow_node_run::run_id.eq(run.id))
            .filter(workflow_node_run::status.eq("running"))
            .filter(task::status.eq_any(["succeeded", "failed", "cancelled", "lost"]))
            .select((workflow_node_run::node_key, task::id, task::status, task::result, task::error))
            .load(c)?;
        let ended = ended
            .into_iter()
            .map(|(node_key, task_id, status, result, error)| EndedJob { node_key, task_id, status, result, error })
            .collect();
        let snap = Snapshot { run, definition, nodes, ended, may_start };
        let writes = match decide(&snap) {
            Ok(w) => w,
            Err(msg) => return Ok(Advanced::Missing(msg)),
        };
        let run = snap.run;
        for key in &writes.create_nodes {
            diesel::insert_into(workflow_node_run::table)
                .values((workflow_node_run::run_id.eq(run.id), workflow_node_run::node_key.eq(key)))
                .execute(c)?;
        }
        let mut started = Vec::new();
        for n in &writes.nodes {
            let target = workflow_node_run::table
                .filter(workflow_node_run::run_id.eq(run.id))
                .filter(workflow_node_run::node_key.eq(&n.key))
                .filter(workflow_node_run::status.eq(&n.from));
            let changed = match &n.job {
                Some(job) => {
                    let id: i64 = diesel::insert_into(task::table).values(job).returning(task::id).get_result(c)?;
                    started.push(id);
                    diesel::update(target)
                        .set((
                            workflow_node_run::status.eq(&n.to),
                            workflow_node_run::task_id.eq(id),
                            workflow_node_run::error.eq(None::<String>),
                            workflow_node_run::started_at.eq(now),
                        ))
                        .execute(c)?
                }
                None => diesel::update(target)
                    .set((
                        workflow_node_run::status.eq(&n.to),
                        workflow_node_run::decision.eq(n.decision),
                        workflow_node_run::error.eq(&n.error),
                        workflow_node_run::finished_at.eq(now),
                    ))
                    .execute(c)?,
            };
            if changed != 1 {
                return Err(StoreError::Query(diesel::result::Error::RollbackTransaction));
            }
        }
        let finished = matches!(writes.status.as_str(), "succeeded" | "failed" | "cancelled");
        diesel::update(workflow_run::table.find(run.id))
            .set((
                workflow_run::status.eq(&writes.status),
                workflow_run::error.eq(&writes.error),
                workflow_run::finished_at.eq(finished.then_some(now)),
            ))
            .execute(c)?;
        if let Some(ctx) = &writes.context {
            diesel::update(workflow_run::table.find(run.id)).set(workflow_run::context.eq(ctx)).execute(c)?;
        }
        Ok(Advanced::Done { status: writes.status.clone(), started })
    });
    match r {
        Err(StoreError::Query(diesel::result::Error::RollbackTransaction)) => Ok(Advanced::Raced),
        Err(e) if unique_violation(&e) => Ok(Advanced::Raced),
        other => other,
    }
}

/// Why an admin change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No such run.
    NoRun,
    /// No such node in the run (or the run has not started its nodes yet).
    NoNode,
    /// The run or node is not in a state the change applies to; the message says which.
    State(String),
}

/// Retry a failed (or cancelled) node of run `run`: it and `downstream` nodes that were skipped
/// or cancelled wait again, and the run runs again; a finished run gets a new coordinator task.
/// Returns the run after the change.
pub fn retry_node(
    conn: &mut AnyConnection,
    run: i64,
    key: &str,
    downstream: &[String],
) -> Result<Result<RunRow, Refused>, StoreError> {
    let now = Utc::now().naive_utc();
    conn.transaction(|c| {
        if diesel::update(workflow_run::table.find(run)).set(workflow_run::updated_at.eq(now)).execute(c)? == 0 {
            return Ok(Err(Refused::NoRun));
        }
        let row: RunRow = workflow_run::table.find(run).select(RunRow::as_select()).first(c)?;
        let node: Option<NodeRow> =
            workflow_node_run::table.find((run, key)).select(NodeRow::as_select()).first(c).optional()?;
        let Some(node) = node else { return Ok(Err(Refused::NoNode)) };
        if !matches!(node.status.as_str(), "failed" | "cancelled") {
            return Ok(Err(Refused::State(format!(
                "node `{key}` is {}: only a failed or cancelled node is retried",
                node.status
            ))));
        }
        diesel::update(workflow_node_run::table.find((run, key)))
            .set((
                workflow_node_run::status.eq("waiting"),
                workflow_node_run::round.eq(node.round + 1),
                workflow_node_run::error.eq(None::<String>),
                workflow_node_run::decision.eq(None::<bool>),
                workflow_node_run::finished_at.eq(None::<NaiveDateTime>),
            ))
            .execute(c)?;
        if !downstream.is_empty() {
            diesel::update(
                workflow_node_run::table
                    .filter(workflow_node_run::run_id.eq(run))
                    .filter(workflow_node_run::node_key.eq_any(downstream))
                    .filter(workflow_node_run::status.eq_any(["skipped", "cancelled"])),
            )
            .set((workflow_node_run::status.eq("waiting"), workflow_node_run::finished_at.eq(None::<NaiveDateTime>)))
            .execute(c)?;
        }
        let finished = matches!(row.status.as_str(), "succeeded" | "failed" | "cancelled");
        let mut task_id = row.task_id;
        if finished {
            let coordinator = NewTask {
                action: "run".into(),
                routing: Some("workflow".into()),
                max_attempts: Some(100),
                payload: Some(serde_json::json!({ "workflow_run": run }).to_string()),
                ..Default::default()
            };
            task_id = Some(diesel::insert_into(task::table).values(&coordinator).returning(task::id).get_result(c)?);
        }
        diesel::update(workflow_run::table.find(run))
            .set((
                workflow_run::status.eq("running"),
                workflow_run::task_id.eq(task_id),
                workflow_run::cancel_requested.eq(false),
                workflow_run::error.eq(None::<String>),
                workflow_run::finished_at.eq(None::<NaiveDateTime>),
            ))
            .execute(c)?;
        Ok(Ok(workflow_run::table.find(run).select(RunRow::as_select()).first(c)?))
    })
}

/// Ask a run to stop: nothing starts any more, its pending jobs are cancelled, its running
/// jobs are stopped by the nodes running them ([`node_context`] says so). Returns the run.
pub fn cancel_run(conn: &mut AnyConnection, run: i64) -> Result<Result<RunRow, Refused>, StoreError> {
    let now = Utc::now().naive_utc();
    conn.transaction(|c| {
        if diesel::update(workflow_run::table.find(run)).set(workflow_run::updated_at.eq(now)).execute(c)? == 0 {
            return Ok(Err(Refused::NoRun));
        }
        let row: RunRow = workflow_run::table.find(run).select(RunRow::as_select()).first(c)?;
        if matches!(row.status.as_str(), "succeeded" | "failed" | "cancelled") {
            return Ok(Err(Refused::State(format!(
                "run {run} is {}: only an unfinished run is cancelled",
                row.status
            ))));
        }
        diesel::update(workflow_run::table.find(run)).set(workflow_run::cancel_requested.eq(true)).execute(c)?;
        let jobs: Vec<Option<i64>> = workflow_node_run::table
            .filter(workflow_node_run::run_id.eq(run))
            .filter(workflow_node_run::status.eq("running"))
            .select(workflow_node_run::task_id)
            .load(c)?;
        let jobs: Vec<i64> = jobs.into_iter().flatten().collect();
        diesel::update(task::table.filter(task::id.eq_any(&jobs)).filter(task::status.eq(TaskStatus::Pending)))
            .set((
                task::status.eq(TaskStatus::Cancelled),
                task::error.eq(format!("its workflow run {run} was cancelled")),
                task::finished_at.eq(now),
            ))
            .execute(c)?;
        Ok(Ok(workflow_run::table.find(run).select(RunRow::as_select()).first(c)?))
    })
}
