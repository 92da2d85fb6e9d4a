//! `rota task …`: submit any task, list with filters, show one, cancel a pending one.
//!
//! Why it exists: tasks are the queue; an operator needs to put one in (with the same options as
//! SQL: priority, run-after, attempts, idempotency key) and to see what happened to it without
//! opening the database.
//!
//! It must never validate what the node validates (actions, payload shapes): the API answers with
//! named fields and this module prints them.

use serde_json::{json, Value};

use super::client::{ApiArgs, CliError, Client};
use super::flags;
use super::table::{self, Table};
use super::{items, list_pages, parse_json, parse_pair, parse_time, print_json};

/// `rota task` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TaskCommand {
    /// Submit a task (start, stop, restart, run, …).
    #[command(after_help = "\
Examples:
  $ rota task submit run --app report --payload '{\"date\": \"2030-01-01\"}'
  $ rota task submit run --run-after 2099-01-01T00:00:00Z --idempotency-key nightly-2099-01-01
  $ rota task submit run --app report --routing sharding --shards 4 --timeout-ms 60000
  $ rota task submit restart --app report --priority 10")]
    Submit(SubmitArgs),
    /// List tasks, oldest first.
    #[command(after_help = "\
Examples:
  $ rota task list --status pending
  $ rota task list --app report --since 2026-01-01T00:00:00Z --all")]
    List(ListArgs),
    /// Show one task.
    #[command(after_help = "\
Examples:
  $ rota task show 5
  $ rota task show 5 --json")]
    Show {
        /// Task id.
        id: i64,
    },
    /// Cancel a pending task.
    #[command(after_help = "\
Examples:
  $ rota task cancel 6")]
    Cancel {
        /// Task id.
        id: i64,
    },
    /// The children of a fan-out or map job: where each ran and how it ended.
    #[command(after_help = "\
Examples:
  $ rota task children 7")]
    Children {
        /// The parent task id.
        id: i64,
    },
}

/// `rota task submit`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// The action: start, stop, restart, savepoint or run.
    pub action: String,
    /// The application it is for (id or name).
    #[arg(long, value_name = "ID")]
    pub app: Option<String>,
    /// Payload as a JSON object.
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub payload: Option<Value>,
    /// Higher runs first.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Not before this time (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub run_after: Option<String>,
    /// Attempts before the task is failed.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i32>,
    /// A key that makes resubmitting the same task a no-op (the node answers with a conflict).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Jobs: where it runs — hash (default), round_robin, random, least_busy, first, last, lru,
    /// lfu, failover, broadcast, sharding, map, map_reduce (docs/jobs.md).
    #[arg(long, value_name = "STRATEGY")]
    pub routing: Option<String>,
    /// Sharding: number of shards (default one per matching node).
    #[arg(long, value_name = "N")]
    pub shards: Option<i32>,
    /// Jobs: time limit of each attempt, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<i32>,
    /// Jobs: a label the executing node must have, `key=value` (repeatable).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub selector: Vec<(String, String)>,
    /// A child of this running map / map_reduce job.
    #[arg(long, value_name = "ID")]
    pub parent: Option<i64>,
}

/// `rota task list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// pending, running, succeeded, failed, cancelled or lost.
    #[arg(long)]
    pub status: Option<String>,
    /// Only tasks of this application (id or name).
    #[arg(long, value_name = "ID")]
    pub app: Option<String>,
    /// Only tasks claimed by this node id.
    #[arg(long, value_name = "NODE")]
    pub owner: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<String>,
    /// Page size (1..=500; the API's default is 50).
    #[arg(long, value_name = "N")]
    pub limit: Option<i64>,
    /// Follow `next` links and print every page.
    #[arg(long)]
    pub all: bool,
}

/// Run one `rota task` command.
pub fn run(api: &ApiArgs, command: &TaskCommand) -> Result<(), CliError> {
    let client = Client::new(api);
    match command {
        TaskCommand::Submit(args) => submit(&client, api.json, args).map_err(|e| e.with_flags(flags::TASK_SUBMIT)),
        TaskCommand::List(args) => list(&client, api.json, args).map_err(|e| e.with_flags(flags::TASK_LIST)),
        TaskCommand::Show { id } => {
            let task = client.get(&format!("/api/v1/tasks/{id}"), &[])?;
            if api.json {
                return print_json(&task);
            }
            print!("{}", render_task(&task));
            Ok(())
        }
        TaskCommand::Cancel { id } => {
            let task = client.post(&format!("/api/v1/tasks/{id}/cancel"), None)?;
            if api.json {
                return print_json(&task);
            }
            println!("task {id} is {}", table::cell(&task["status"]));
            Ok(())
        }
        TaskCommand::Children { id } => {
            let page =
                list_pages(&client, "/api/v1/tasks", &[("parent_id", id.to_string()), ("limit", "500".into())], true)?;
            if api.json {
                return print_json(&page);
            }
            let mut t = Table::new(&["ID", "SHARD", "TARGET", "OWNER", "STATUS", "ATTEMPTS", "FINISHED", "ERROR"]);
            for task in items(&page) {
                t.row(vec![
                    table::cell(&task["id"]),
                    table::cell(&task["shard_index"]),
                    table::cell(&task["target_node"]),
                    table::cell(&task["owner_node"]),
                    table::cell(&task["status"]),
                    format!("{}/{}", table::cell(&task["attempts"]), table::cell(&task["max_attempts"])),
                    table::cell(&task["finished_at"]),
                    table::cell(&task["error"]),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}

fn submit(client: &Client, json: bool, args: &SubmitArgs) -> Result<(), CliError> {
    let mut body = json!({ "action": args.action });
    if let Some(app) = &args.app {
        body["app_id"] = json!(super::resolve_app(client, app)?);
    }
    if let Some(p) = &args.payload {
        body["payload"] = p.clone();
    }
    if let Some(p) = args.priority {
        body["priority"] = json!(p);
    }
    if let Some(t) = &args.run_after {
        body["run_after"] = json!(t);
    }
    if let Some(m) = args.max_attempts {
        body["max_attempts"] = json!(m);
    }
    if let Some(k) = &args.idempotency_key {
        body["idempotency_key"] = json!(k);
    }
    if let Some(r) = &args.routing {
        body["routing"] = json!(r);
    }
    if let Some(n) = args.shards {
        body["shard_total"] = json!(n);
    }
    if let Some(ms) = args.timeout_ms {
        body["timeout_ms"] = json!(ms);
    }
    if !args.selector.is_empty() {
        body["selector"] = json!(args.selector.iter().cloned().collect::<std::collections::BTreeMap<_, _>>());
    }
    if let Some(p) = args.parent {
        body["parent_id"] = json!(p);
    }
    let accepted = client.post("/api/v1/tasks", Some(&body))?;
    if json {
        return print_json(&accepted);
    }
    let id = table::cell(&accepted["task_id"]);
    println!("submitted task {id} (follow it with `rota task show {id}`)");
    Ok(())
}

fn list(client: &Client, json: bool, args: &ListArgs) -> Result<(), CliError> {
    let mut query = Vec::new();
    for (k, v) in [("status", &args.status), ("owner", &args.owner), ("since", &args.since), ("until", &args.until)] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    if let Some(app) = &args.app {
        query.push(("app_id", super::resolve_app(client, app)?.to_string()));
    }
    if let Some(n) = args.limit.or(args.all.then_some(500)) {
        query.push(("limit", n.to_string()));
    }
    let page = list_pages(client, "/api/v1/tasks", &query, args.all)?;
    if json {
        return print_json(&page);
    }
    let mut t = Table::new(&["ID", "ACTION", "APP", "STATUS", "ATTEMPTS", "OWNER", "CREATED", "FINISHED", "ERROR"]);
    for task in items(&page) {
        t.row(vec![
            table::cell(&task["id"]),
            table::cell(&task["action"]),
            table::cell(&task["app_id"]),
            table::cell(&task["status"]),
            format!("{}/{}", table::cell(&task["attempts"]), table::cell(&task["max_attempts"])),
            table::cell(&task["owner_node"]),
            table::cell(&task["created_at"]),
            table::cell(&task["finished_at"]),
            table::cell(&task["error"]),
        ]);
    }
    print!("{}", t.render());
    if let Some(next) = page["next"].as_str() {
        eprintln!("(more: use --all, or --limit; next page at {next})");
    }
    Ok(())
}

/// A task as `key: value` lines.
pub fn render_task(t: &Value) -> String {
    let mut pairs = vec![
        ("id", table::cell(&t["id"])),
        ("action", table::cell(&t["action"])),
        ("app", table::cell(&t["app_id"])),
        ("status", table::cell(&t["status"])),
        ("attempts", format!("{} of {}", table::cell(&t["attempts"]), table::cell(&t["max_attempts"]))),
        ("priority", table::cell(&t["priority"])),
        ("run after", table::cell(&t["run_after"])),
        ("owner", format!("{} (epoch {})", table::cell(&t["owner_node"]), table::cell(&t["owner_epoch"]))),
        ("payload", t["payload"].to_string()),
        ("result", table::cell(&t["result"])),
        ("error", table::cell(&t["error"])),
        ("idempotency key", table::cell(&t["idempotency_key"])),
        ("created", table::cell(&t["created_at"])),
        ("claimed", table::cell(&t["claimed_at"])),
        ("started", table::cell(&t["started_at"])),
        ("finished", table::cell(&t["finished_at"])),
    ];
    for (label, key) in [
        ("routing", "routing"),
        ("stage", "stage"),
        ("parent", "parent_id"),
        ("target node", "target_node"),
        ("shard", "shard_index"),
        ("shards", "shard_total"),
        ("timeout ms", "timeout_ms"),
    ] {
        if !t[key].is_null() {
            pairs.push((label, table::cell(&t[key])));
        }
    }
    if !t["selector"].is_null() {
        pairs.push(("selector", t["selector"].to_string()));
    }
    if let Some(c) = t["children"].as_object() {
        // Counts in the order of a task's life; statuses with none are left out.
        let counts: Vec<String> = ["pending", "running", "succeeded", "failed", "cancelled", "lost"]
            .iter()
            .filter_map(|s| c.get(*s).and_then(Value::as_i64).filter(|n| *n > 0).map(|n| format!("{n} {s}")))
            .collect();
        let total = c.get("total").and_then(Value::as_i64).unwrap_or(0);
        let detail = if counts.is_empty() { String::new() } else { format!(": {}", counts.join(", ")) };
        pairs.push(("children", format!("{total}{detail}")));
    }
    table::fields(&pairs)
}
