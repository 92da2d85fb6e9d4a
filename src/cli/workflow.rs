//! `rota workflow …`: create workflows (DAGs of jobs), start runs, show a run node by node,
//! retry a failed node, cancel a run — through the REST API (docs/workflows.md).
//!
//! Why `show --wait`: a script that starts a run usually wants its outcome; waiting here keeps it
//! from writing a polling loop. It must never validate a definition itself: the API answers with
//! named fields (`nodes[2].app_id`) and this module prints them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{ApiArgs, CliError, Client};
use super::flags;
use super::table::{self, Table};
use super::{items, list_pages, parse_json, print_json};

/// `rota workflow` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WorkflowCommand {
    /// Create a workflow from a definition: nodes (jobs, or decisions) and edges.
    #[command(after_help = "\
Examples:
  $ rota workflow create etl --definition '{\"nodes\": [{\"key\": \"extract\"}, {\"key\": \"transform\"}, {\"key\": \"load\"}], \"edges\": [{\"from\": \"extract\", \"to\": \"transform\"}, {\"from\": \"transform\", \"to\": \"load\"}]}'
  $ rota workflow create checks --definition '{\"nodes\": [{\"key\": \"probe\", \"payload\": {\"spec\": {\"fail\": \"run\"}}, \"max_attempts\": 1}]}'
  $ rota workflow create slow --max-runs 1 --definition '{\"nodes\": [{\"key\": \"wait\", \"payload\": {\"spec\": {\"delay_ms\": 60000}}}]}'")]
    Create {
        /// Unique name: letters, digits, `-`, `_`, `.`.
        name: String,
        /// The definition as JSON: `{"nodes": [...], "edges": [...]}` (docs/workflows.md).
        #[arg(long, value_name = "JSON", value_parser = parse_json, required_unless_present = "file")]
        definition: Option<Value>,
        /// Read the definition from this file instead.
        #[arg(long, value_name = "PATH", conflicts_with = "definition")]
        file: Option<std::path::PathBuf>,
        /// Runs of this workflow at once, at most (more wait in order).
        #[arg(long, value_name = "N")]
        max_runs: Option<i32>,
    },
    /// List workflows.
    #[command(after_help = "\
Examples:
  $ rota workflow list")]
    List,
    /// Start a run of a workflow.
    #[command(after_help = "\
Examples:
  $ rota workflow run etl --context '{\"date\": \"2026-12-13\"}'
  $ rota workflow run checks
  $ rota workflow run slow")]
    Run {
        /// Workflow id or name.
        workflow: String,
        /// The run's initial context as a JSON object.
        #[arg(long, value_name = "JSON", value_parser = parse_json)]
        context: Option<Value>,
    },
    /// Show a run: its status, context and every node's state, job and node.
    #[command(after_help = "\
Examples:
  $ rota workflow show 1
  $ rota workflow show 2 --wait 30s")]
    Show {
        /// Run id.
        run: i64,
        /// Wait until the run has ended (at most this long), then show it.
        #[arg(long, value_name = "DURATION", value_parser = super::schedule::parse_duration_ms)]
        wait: Option<i64>,
    },
    /// Retry a failed node of a run: it and what it held back run again, the run goes on.
    #[command(after_help = "\
Examples:
  $ rota workflow retry 2 --node probe")]
    Retry {
        /// Run id.
        run: i64,
        /// The failed node's key.
        #[arg(long, value_name = "KEY")]
        node: String,
    },
    /// Cancel a run: nothing more starts and its running jobs are stopped.
    #[command(after_help = "\
Examples:
  $ rota workflow cancel 3")]
    Cancel {
        /// Run id.
        run: i64,
    },
}

/// Run one `rota workflow` command.
pub fn run(api: &ApiArgs, command: &WorkflowCommand) -> Result<(), CliError> {
    let client = Client::new(api);
    match command {
        WorkflowCommand::Create { name, definition, file, max_runs } => {
            let def = match (definition, file) {
                (Some(d), _) => d.clone(),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| CliError::Input(format!("cannot read {}: {e}", path.display())))?;
                    parse_json(&text).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?
                }
                (None, None) => return Err(CliError::Input("give --definition JSON or --file PATH".into())),
            };
            let Value::Object(mut body) = def else {
                return Err(CliError::Input("the definition must be a JSON object with `nodes` and `edges`".into()));
            };
            body.insert("name".into(), json!(name));
            if let Some(n) = max_runs {
                body.insert("max_concurrent_runs".into(), json!(n));
            }
            let w = client
                .post("/api/v1/workflows", Some(&Value::Object(body)))
                .map_err(|e| e.with_flags(flags::WORKFLOW_CREATE))?;
            if api.json {
                return print_json(&w);
            }
            println!(
                "created workflow {} `{}` (version {}, {} nodes): start it with `rota workflow run {}`",
                table::cell(&w["id"]),
                table::cell(&w["name"]),
                table::cell(&w["version"]),
                w["nodes"].as_array().map(Vec::len).unwrap_or(0),
                table::cell(&w["name"])
            );
            Ok(())
        }
        WorkflowCommand::List => {
            let page = list_pages(&client, "/api/v1/workflows", &[("limit", "500".into())], true)?;
            if api.json {
                return print_json(&page);
            }
            let mut t = Table::new(&["ID", "NAME", "VERSION", "NODES", "MAX RUNS"]);
            for w in items(&page) {
                t.row(vec![
                    table::cell(&w["id"]),
                    table::cell(&w["name"]),
                    table::cell(&w["version"]),
                    w["nodes"].as_array().map(Vec::len).unwrap_or(0).to_string(),
                    table::cell(&w["max_concurrent_runs"]),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        WorkflowCommand::Run { workflow, context } => {
            let id = resolve(&client, workflow)?;
            let body = context.as_ref().map(|c| json!({ "context": c }));
            let r = client
                .post(&format!("/api/v1/workflows/{id}/runs"), body.as_ref())
                .map_err(|e| e.with_flags(&[flags::Flag { api: "context", cli: "--context" }]))?;
            if api.json {
                return print_json(&r);
            }
            println!(
                "started run {} of workflow {id} (coordinator task {}): follow it with `rota workflow show {}`",
                table::cell(&r["run_id"]),
                table::cell(&r["task_id"]),
                table::cell(&r["run_id"])
            );
            Ok(())
        }
        WorkflowCommand::Show { run, wait } => {
            let path = format!("/api/v1/workflow-runs/{run}");
            let mut r = client.get(&path, &[])?;
            if let Some(ms) = wait {
                let until = Instant::now() + Duration::from_millis((*ms).max(0) as u64);
                while !ended(&r) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(200));
                    r = client.get(&path, &[])?;
                }
                if !ended(&r) {
                    return Err(CliError::Input(format!(
                        "run {run} is still {} after --wait: wait longer, or look again later",
                        table::cell(&r["status"])
                    )));
                }
            }
            if api.json {
                return print_json(&r);
            }
            print!("{}", render(&r));
            Ok(())
        }
        WorkflowCommand::Retry { run, node } => {
            let r = client
                .post(&format!("/api/v1/workflow-runs/{run}/retry"), Some(&json!({ "node": node })))
                .map_err(|e| e.with_flags(&[flags::Flag { api: "node", cli: "--node" }]))?;
            if api.json {
                return print_json(&r);
            }
            println!("run {run}: node `{node}` runs again; the run is {}", table::cell(&r["status"]));
            Ok(())
        }
        WorkflowCommand::Cancel { run } => {
            let r = client.post(&format!("/api/v1/workflow-runs/{run}/cancel"), None)?;
            if api.json {
                return print_json(&r);
            }
            println!("run {run} is cancelling: nothing more starts and its running jobs are stopped");
            Ok(())
        }
    }
}

fn ended(r: &Value) -> bool {
    matches!(r["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// A workflow id, or the id of the workflow with this name.
pub fn resolve(client: &Client, workflow: &str) -> Result<i64, CliError> {
    if let Ok(id) = workflow.parse::<i64>() {
        return Ok(id);
    }
    let all = list_pages(client, "/api/v1/workflows", &[("limit", "500".into())], true)?;
    items(&all)
        .iter()
        .find(|w| w["name"].as_str() == Some(workflow))
        .and_then(|w| w["id"].as_i64())
        .ok_or_else(|| CliError::Input(format!("no workflow named `{workflow}` (see `rota workflow list`)")))
}

/// A run as `key: value` lines, then its nodes.
pub fn render(r: &Value) -> String {
    let pairs = vec![
        ("run", table::cell(&r["id"])),
        ("workflow", format!("{} (version {})", table::cell(&r["workflow_id"]), table::cell(&r["version"]))),
        ("status", table::cell(&r["status"])),
        ("error", table::cell(&r["error"])),
        ("coordinator task", table::cell(&r["task_id"])),
        ("context", r["context"].to_string()),
        ("created", table::cell(&r["created_at"])),
        ("finished", table::cell(&r["finished_at"])),
    ];
    let mut out = table::fields(&pairs);
    let mut t = Table::new(&["NODE", "STATUS", "TASK", "JOB", "ON", "ROUND", "ERROR"]);
    for n in r["nodes"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let status = match n["decision"].as_bool() {
            Some(d) => format!("{} ({d})", table::cell(&n["status"])),
            None => table::cell(&n["status"]),
        };
        t.row(vec![
            table::cell(&n["key"]),
            status,
            table::cell(&n["task_id"]),
            table::cell(&n["task_status"]),
            table::cell(&n["node_id"]),
            table::cell(&n["round"]),
            table::cell(&n["error"]),
        ]);
    }
    out.push_str("\nnodes:\n");
    out.push_str(&t.render());
    out
}
