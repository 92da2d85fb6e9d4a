//! Pure decisions of the dispatch path: what a task row asks for (or why it cannot be done),
//! when a failed attempt runs again, and whether a failed application is restarted.
//!
//! Why pure: these rules decide what happens to rows written by hand, by people who will read
//! the `error` column to find out what they did wrong. They are property-tested here without a
//! database or a driver.

use std::time::Duration;

use serde_json::Value;

use crate::config::DispatchConfig;
use crate::domain::{AppState, DesiredState};
use crate::drivers::DriverError;
use crate::jobs::Strategy;
use crate::store::complete::Outcome;
use crate::store::models::Task;

/// An application command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Bring it up (desired state `running`).
    Start,
    /// Bring it down (desired state `stopped`).
    Stop,
    /// Stop, then start.
    Restart,
    /// Take a savepoint of what runs (drivers that have them: `flink`).
    Savepoint,
}

/// What a task row asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// A command for an application.
    App {
        /// The application.
        app_id: i64,
        /// The command.
        command: Command,
        /// Parameters (a JSON object).
        params: Value,
    },
    /// A job (`run`): its application's driver and spec run it (without an application only
    /// `noop` may: commands and URLs come from application specs, never from task rows).
    Job {
        /// The application whose driver and spec run it.
        app_id: Option<i64>,
        /// Parameters (a JSON object).
        params: Value,
        /// Where it runs.
        strategy: Strategy,
    },
    /// The row cannot be done; the message says what to fix.
    Poison(String),
}

/// Read a task row.
pub fn plan(task: &Task) -> Plan {
    let command = match task.action.as_str() {
        "start" => Some(Command::Start),
        "stop" => Some(Command::Stop),
        "restart" => Some(Command::Restart),
        "savepoint" => Some(Command::Savepoint),
        "run" => None,
        other => {
            return Plan::Poison(format!(
                "unknown action `{}`: use start, stop, restart, savepoint or run",
                other.chars().take(64).collect::<String>()
            ))
        }
    };
    let params = match serde_json::from_str::<Value>(&task.payload) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => {
            return Plan::Poison(format!("payload must be a JSON object, got {}", crate::domain::json_kind(&other)));
        }
        Err(e) => return Plan::Poison(format!("payload is not valid JSON: {e}")),
    };
    let Some(command) = command else {
        let strategy = match Strategy::parse(task.routing.as_deref()) {
            Ok(s) => s,
            Err(e) => return Plan::Poison(e),
        };
        // Columns the API refuses on this job are failed here too, naming the column, rather
        // than ignored (docs/sql.md#task).
        if task.shard_total.is_some() && strategy != Strategy::Sharding {
            return Plan::Poison(format!(
                "shard_total is only for routing `sharding` (this job's routing is `{}`): leave it NULL or set \
                 routing = 'sharding'",
                strategy.as_str()
            ));
        }
        // A routing on a job with a parent is checked where the parent is read
        // (`dispatch/jobs.rs`): a map child may not have one, a workflow's node may.
        if let Some(sel) = &task.selector {
            if let Err(e) = serde_json::from_str::<crate::ring::Selector>(sel) {
                return Plan::Poison(format!(
                    "selector must be a JSON object of strings, like {{\"dc\":\"dc1\"}}: {e}"
                ));
            }
        }
        if matches!(task.timeout_ms, Some(t) if t < 1) {
            return Plan::Poison(format!("timeout_ms must be at least 1 (got {})", task.timeout_ms.unwrap_or(0)));
        }
        if strategy == Strategy::Sharding && task.parent_id.is_none() {
            let obj = params.as_object().cloned().unwrap_or_default();
            if let Err((field, msg)) = crate::jobs::routing::check_shards(task.shard_total, &obj) {
                return Plan::Poison(format!("{field} {msg}"));
            }
        }
        if task.app_id.is_some() {
            return Plan::Job { app_id: task.app_id, params, strategy };
        }
        return match params.get("driver").map(|d| d.as_str()) {
            None | Some(Some("noop")) => Plan::Job { app_id: None, params, strategy },
            Some(d) => Plan::Poison(format!(
                "a job without an application can only use the noop driver (got {}); create an application \
                 with the driver's spec and insert (app_id, 'run', payload)",
                d.map(str::to_string).unwrap_or_else(|| "a non-string".into())
            )),
        };
    };
    if let Some(column) = job_column(task) {
        return Plan::Poison(format!(
            "{column} is only for jobs (action `run`): an application command (`{}`) must leave it NULL",
            task.action
        ));
    }
    match task.app_id {
        Some(app_id) => Plan::App { app_id, command, params },
        None => Plan::Poison(format!("action `{}` needs an app_id: INSERT INTO task (app_id, action) …", task.action)),
    }
}

/// The first job column (routing, fan-out, options) a row sets, if any: an application command
/// takes none of them.
fn job_column(task: &Task) -> Option<&'static str> {
    [
        ("routing", task.routing.is_some()),
        ("shard_total", task.shard_total.is_some()),
        ("shard_index", task.shard_index.is_some()),
        ("timeout_ms", task.timeout_ms.is_some()),
        ("selector", task.selector.is_some()),
        ("parent_id", task.parent_id.is_some()),
        ("target_node", task.target_node.is_some()),
    ]
    .into_iter()
    .find_map(|(column, set)| set.then_some(column))
}

/// Delay before attempt `attempts + 1` after attempt `attempts` (1-based) failed:
/// `base · 2^(attempts-1)`, at most `max`.
pub fn retry_delay(attempts: i32, base: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    base.saturating_mul(1u32 << exp).min(max)
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterError {
    /// Pending again after this delay.
    Retry(Duration),
    /// Failed for good.
    Fail,
}

/// Retry a failed attempt unless the error is permanent or the attempts are used up.
pub fn after_error(attempts: i32, max_attempts: i32, error: &DriverError, base: Duration, max: Duration) -> AfterError {
    if error.is_permanent() || attempts >= max_attempts {
        AfterError::Fail
    } else {
        AfterError::Retry(retry_delay(attempts, base, max))
    }
}

/// The outcome of a failed attempt of `task` at `now`: retry with backoff (`retry_base_ms`
/// doubling up to `retry_max_ms`) or fail for good, with the error saying which attempt it was.
pub fn outcome_after_error(
    task: &Task,
    error: &DriverError,
    cfg: &DispatchConfig,
    now: chrono::NaiveDateTime,
) -> Outcome {
    let base = Duration::from_millis(cfg.retry_base_ms);
    let max = Duration::from_millis(cfg.retry_max_ms);
    match after_error(task.attempts, task.max_attempts, error, base, max) {
        AfterError::Fail => Outcome::Failed(format!("{error} (attempt {} of {})", task.attempts, task.max_attempts)),
        AfterError::Retry(delay) => Outcome::Retry {
            error: format!(
                "{error} (attempt {} of {}; retrying in {:.1} s)",
                task.attempts,
                task.max_attempts,
                delay.as_secs_f64()
            ),
            run_after: now + chrono::Duration::from_std(delay).unwrap_or_default(),
        },
    }
}

/// What the monitor does about what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// Nothing to do.
    No,
    /// Start it again (the n-th restart).
    Yes(i32),
    /// It keeps failing: mark it `failed` and stop trying.
    GiveUp,
}

/// Restart policy: an application that should run but is not running is started again, per
/// its policy (`never`, `on_failure` — only when it failed —, `always` — also when it stopped or
/// is unknown to this node), up to `max_restarts`.
pub fn restart(desired: DesiredState, observed: AppState, policy: &str, restarts: i32, max_restarts: i32) -> Restart {
    // `unknown` is not a failure: restarting what cannot be seen (a Flink JobManager that does
    // not answer) could run a second copy beside one that still runs.
    if desired != DesiredState::Running
        || matches!(observed, AppState::Running | AppState::Starting | AppState::Unknown)
    {
        return Restart::No;
    }
    let wanted = match policy {
        "never" => false,
        "always" => true,
        _ => observed == AppState::Failed,
    };
    if !wanted {
        Restart::No
    } else if restarts >= max_restarts {
        Restart::GiveUp
    } else {
        Restart::Yes(restarts + 1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A running row with the given application, action and payload (other tests use it too).
    pub(crate) fn task(app_id: Option<i64>, action: &str, payload: &str) -> Task {
        Task {
            id: 1,
            app_id,
            action: action.into(),
            payload: payload.into(),
            status: crate::domain::TaskStatus::Running,
            priority: 0,
            run_after: chrono::DateTime::UNIX_EPOCH.naive_utc(),
            attempts: 1,
            max_attempts: 3,
            owner_node: None,
            owner_epoch: None,
            idempotency_key: None,
            parent_id: None,
            shard_index: None,
            shard_total: None,
            target_node: None,
            result: None,
            error: None,
            created_at: chrono::DateTime::UNIX_EPOCH.naive_utc(),
            claimed_at: None,
            finished_at: None,
            routing: None,
            timeout_ms: None,
            selector: None,
            stage: None,
            claim_token: None,
            started_at: None,
        }
    }

    #[test]
    fn good_rows_plan() {
        assert!(matches!(plan(&task(Some(4), "start", "{}")), Plan::App { app_id: 4, command: Command::Start, .. }));
        assert!(matches!(plan(&task(Some(4), "run", r#"{"n":1}"#)), Plan::Job { app_id: Some(4), .. }));
        assert!(matches!(plan(&task(None, "run", "{}")), Plan::Job { .. }));
        assert!(matches!(plan(&task(None, "run", r#"{"driver":"noop"}"#)), Plan::Job { .. }));
    }

    #[test]
    fn poison_rows_say_what_to_fix() {
        let cases = [
            (task(Some(1), "launch", "{}"), "unknown action `launch`"),
            (task(Some(1), "start", "{oops"), "not valid JSON"),
            (task(Some(1), "start", "[1,2]"), "must be a JSON object, got an array"),
            (task(None, "start", "{}"), "needs an app_id"),
            (task(None, "run", r#"{"driver":"shell"}"#), "only use the noop driver"),
            (Task { routing: Some("fastest".into()), ..task(None, "run", "{}") }, "unknown routing `fastest`"),
            (
                Task { routing: Some("sharding".into()), shard_total: Some(0), ..task(None, "run", "{}") },
                "shard_total must be at least 1",
            ),
            (Task { selector: Some("[1]".into()), ..task(None, "run", "{}") }, "selector must be a JSON object"),
            (Task { timeout_ms: Some(0), ..task(None, "run", "{}") }, "timeout_ms must be at least 1"),
            (
                Task { routing: Some("broadcast".into()), shard_total: Some(2), ..task(None, "run", "{}") },
                "shard_total is only for routing `sharding` (this job's routing is `broadcast`)",
            ),
            (Task { shard_total: Some(2), ..task(None, "run", "{}") }, "shard_total is only for routing `sharding`"),
            (
                Task { routing: Some("random".into()), ..task(Some(1), "start", "{}") },
                "routing is only for jobs (action `run`): an application command (`start`) must leave it NULL",
            ),
            (Task { timeout_ms: Some(5), ..task(Some(1), "stop", "{}") }, "timeout_ms is only for jobs"),
            (Task { selector: Some("{}".into()), ..task(Some(1), "restart", "{}") }, "selector is only for jobs"),
            (Task { parent_id: Some(3), ..task(Some(1), "start", "{}") }, "parent_id is only for jobs"),
            (Task { shard_total: Some(3), ..task(Some(1), "start", "{}") }, "shard_total is only for jobs"),
        ];
        for (t, needle) in cases {
            match plan(&t) {
                Plan::Poison(msg) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{t:?} should be poison, got {other:?}"),
            }
        }
    }

    #[test]
    fn restart_policy() {
        assert_eq!(restart(DesiredState::Running, AppState::Failed, "on_failure", 0, 3), Restart::Yes(1));
        assert_eq!(restart(DesiredState::Running, AppState::Stopped, "on_failure", 0, 3), Restart::No);
        assert_eq!(restart(DesiredState::Running, AppState::Stopped, "always", 2, 3), Restart::Yes(3));
        assert_eq!(restart(DesiredState::Running, AppState::Unknown, "always", 2, 3), Restart::No);
        assert_eq!(restart(DesiredState::Running, AppState::Unknown, "on_failure", 0, 3), Restart::No);
        assert_eq!(restart(DesiredState::Running, AppState::Failed, "on_failure", 3, 3), Restart::GiveUp);
        assert_eq!(restart(DesiredState::Running, AppState::Failed, "never", 0, 3), Restart::No);
        assert_eq!(restart(DesiredState::Stopped, AppState::Failed, "always", 0, 3), Restart::No);
        assert_eq!(restart(DesiredState::Running, AppState::Running, "always", 0, 3), Restart::No);
    }

    proptest! {
        #[test]
        fn any_row_plans_without_panicking(action in ".{0,80}", payload in ".{0,200}", app in proptest::option::of(any::<i64>())) {
            let _ = plan(&task(app, &action, &payload));
        }

        #[test]
        fn retry_delays_grow_and_stay_bounded(a in 1i32..100, base_ms in 1u64..10_000, max_ms in 10_000u64..1_000_000) {
            let (base, max) = (Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let d = retry_delay(a, base, max);
            prop_assert!(d >= base.min(max) && d <= max);
            prop_assert!(retry_delay(a + 1, base, max) >= d);
        }

        #[test]
        fn no_retry_past_max_attempts_or_for_invalid(attempts in 0i32..20, max in 1i32..20) {
            let base = Duration::from_secs(1);
            let failed = DriverError::Failed("x".into());
            let r = after_error(attempts, max, &failed, base, base * 60);
            prop_assert_eq!(matches!(r, AfterError::Fail), attempts >= max);
            let invalid = DriverError::Invalid("x".into());
            prop_assert_eq!(after_error(attempts, max, &invalid, base, base * 60), AfterError::Fail);
        }
    }

    #[test]
    fn a_failed_attempt_is_retried_from_the_given_time_until_the_attempts_are_used() {
        let cfg = DispatchConfig { retry_base_ms: 1000, retry_max_ms: 4000, ..DispatchConfig::default() };
        let now = chrono::DateTime::UNIX_EPOCH.naive_utc() + chrono::Duration::days(20_000);
        let failed = DriverError::Failed("boom".into());
        let at = |attempts| Task { attempts, max_attempts: 4, ..task(None, "run", "{}") };
        for (attempts, delay_s) in [(1, 1), (2, 2), (3, 4)] {
            match outcome_after_error(&at(attempts), &failed, &cfg, now) {
                Outcome::Retry { error, run_after } => {
                    assert_eq!(run_after, now + chrono::Duration::seconds(delay_s), "attempt {attempts}");
                    assert!(error.contains(&format!("attempt {attempts} of 4")), "{error}");
                }
                other => panic!("attempt {attempts}: {other:?}"),
            }
        }
        match outcome_after_error(&at(4), &failed, &cfg, now) {
            Outcome::Failed(error) => assert_eq!(error, "boom (attempt 4 of 4)"),
            other => panic!("{other:?}"),
        }
    }
}
