//! `rota cluster status`, `rota cluster owner KEY` and `rota events`: the read-only views of a
//! node — who is in the cluster, who owns a key and why, and what happened.
//!
//! Why it exists: "which node runs application 42, and is that node healthy?" is the first
//! question in any incident; these commands answer it from any node's API.
//!
//! It must never compute ownership itself: the node's own ring (as that node sees it) is the
//! answer that matters, so the CLI asks `/api/v1/owner`.

use serde_json::Value;

use super::client::{ApiArgs, CliError, Client};
use super::flags;
use super::table::{self, Table};
use super::{items, parse_pair, print_json};

/// `rota cluster` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Members with labels and weights, this node's status, the epoch.
    #[command(after_help = "\
Examples:
  $ rota cluster status
  $ rota cluster status --json")]
    Status,
    /// Which node owns KEY (an application or task id) on this node's ring, and why.
    #[command(after_help = "\
Examples:
  $ rota cluster owner 1
  $ rota cluster owner 1 --selector dc=dc1")]
    Owner {
        /// The key, e.g. an application id.
        key: String,
        /// Only nodes with these labels, key=value[,key=value…].
        #[arg(long, value_name = "KEY=VALUE,…", value_delimiter = ',', value_parser = parse_pair)]
        selector: Vec<(String, String)>,
    },
    /// Take NODE out of the ring gracefully (send it to that node's --url): its applications move
    /// to the others. `--undo` brings it back.
    #[command(after_help = "\
Examples:
  $ rota cluster drain node-1 --wait
  $ rota cluster drain node-1 --undo

Send it to the node drained (--url or ROTA_URL); another node answers with that node's address.
Only nodes on etcd can drain: a standalone node has nobody to hand its work to.")]
    Drain {
        /// The node id.
        node: String,
        /// Bring the node back into the ring instead.
        #[arg(long)]
        undo: bool,
        /// Wait until the node reports itself drained.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        timeout: u64,
    },
}

/// `rota events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Only events of this application (id or name).
    #[arg(long, value_name = "ID")]
    pub app: Option<String>,
    /// Only events of this task.
    #[arg(long, value_name = "ID")]
    pub task: Option<i64>,
    /// Only kinds starting with this (e.g. `app.` or `app.state`).
    #[arg(long, value_name = "PREFIX")]
    pub kind: Option<String>,
    /// Only events of this node id (the NODE column: the node that recorded it, or for
    /// `membership.*` events the member that joined, left or was lost).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// How many, newest first (1..=500; the API's default is 50).
    #[arg(long, value_name = "N")]
    pub limit: Option<i64>,
}

/// Run one `rota cluster` command.
pub fn run(api: &ApiArgs, command: &ClusterCommand) -> Result<(), CliError> {
    let client = Client::new(api);
    match command {
        ClusterCommand::Status => status(&client, api.json),
        ClusterCommand::Owner { key, selector } => {
            owner(&client, api.json, key, selector).map_err(|e| e.with_flags(flags::OWNER))
        }
        ClusterCommand::Drain { node, undo, wait, timeout } => drain(&client, api.json, node, *undo, *wait, *timeout),
    }
}

fn drain(client: &Client, json: bool, node: &str, undo: bool, wait: bool, timeout: u64) -> Result<(), CliError> {
    let path = format!("/api/v1/nodes/{node}/drain");
    let mut report = if undo { client.delete(&path, &[])? } else { client.post(&path, None)? };
    if wait && !undo {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
        let mut last = String::new();
        while report["drained"] != true {
            let line = format!(
                "node {node}: {} application(s) owned, {} task(s) running",
                table::cell(&report["owned_applications"]),
                table::cell(&report["running_tasks"])
            );
            if line != last {
                eprintln!("{line}");
                last = line;
            }
            if std::time::Instant::now() > deadline {
                return Err(CliError::Failed(format!("node {node} was not drained within {timeout} s")));
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            report = client.get(&format!("/api/v1/nodes/{node}"), &[])?;
        }
    }
    if json {
        return print_json(&report);
    }
    let state = if undo {
        "back in the ring".to_string()
    } else if report["drained"] == true {
        "drained: it owns nothing and runs nothing".to_string()
    } else {
        format!(
            "draining ({} application(s) still owned; `rota cluster drain {node} --wait` waits)",
            table::cell(&report["owned_applications"])
        )
    };
    println!("node {node}: {state}");
    Ok(())
}

fn status(client: &Client, json: bool) -> Result<(), CliError> {
    let c = client.get("/api/v1/cluster", &[])?;
    if json {
        return print_json(&c);
    }
    let me = &c["self"];
    let mut node_status = table::cell(&me["status"]);
    if let Some(reason) = me["reason"].as_str() {
        node_status.push_str(&format!(" ({reason})"));
    }
    print!(
        "{}",
        table::fields(&[
            ("node", table::cell(&me["node_id"])),
            ("status", node_status),
            ("backend", table::cell(&c["backend"])),
            ("epoch", table::cell(&c["epoch"])),
            (
                "ring",
                format!("epoch {}, {} points", table::cell(&c["ring"]["epoch"]), table::cell(&c["ring"]["points"]))
            ),
        ])
    );
    let members = c["members"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut t = Table::new(&["NODE", "ADDR", "WEIGHT", "APPS", "LABELS", "STARTED"]);
    for m in members {
        let mut node = table::cell(&m["node_id"]);
        if m["node_id"] == me["node_id"] {
            node.push_str(" *");
        }
        t.row(vec![
            node,
            table::cell(&m["addr"]),
            table::cell(&m["weight"]),
            table::cell(&m["owned_applications"]),
            table::labels(&m["labels"]),
            table::cell(&m["started_at"]),
        ]);
    }
    println!("\n{} member(s) (* = this node):", t.len());
    print!("{}", t.render());
    Ok(())
}

fn owner(client: &Client, json: bool, key: &str, selector: &[(String, String)]) -> Result<(), CliError> {
    let mut query = vec![("key", key.to_string())];
    if !selector.is_empty() {
        query.push(("selector", selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")));
    }
    let o = client.get("/api/v1/owner", &query)?;
    if json {
        return print_json(&o);
    }
    let e = &o["explanation"];
    let owner = match e["owner"]["node_id"].as_str() {
        Some(n) => n.to_string(),
        None => "none (no member with weight > 0 matches the selector)".into(),
    };
    let candidates: Vec<String> =
        o["candidates"].as_array().map(|c| c.iter().map(table::cell).collect()).unwrap_or_default();
    let mut pairs = vec![
        ("key", table::cell(&o["key"])),
        ("owner", owner),
        ("ring epoch", table::cell(&o["ring_epoch"])),
        ("hash", table::cell(&e["hash_hex"])),
        ("selector", table::labels(&e["selector"])),
        ("candidates", if candidates.is_empty() { "-".into() } else { candidates.join(", ") }),
    ];
    if let Some(skipped) = e["skipped_nodes"].as_array().filter(|s| !s.is_empty()) {
        pairs.push(("skipped", skipped.iter().map(table::cell).collect::<Vec<_>>().join(", ")));
    }
    print!("{}", table::fields(&pairs));
    Ok(())
}

/// Run `rota events`.
pub fn events(api: &ApiArgs, args: &EventsArgs) -> Result<(), CliError> {
    list_events(api, args).map_err(|e| e.with_flags(flags::EVENTS))
}

fn list_events(api: &ApiArgs, args: &EventsArgs) -> Result<(), CliError> {
    let client = Client::new(api);
    let mut query = Vec::new();
    if let Some(app) = &args.app {
        query.push(("app_id", super::resolve_app(&client, app)?.to_string()));
    }
    if let Some(t) = args.task {
        query.push(("task_id", t.to_string()));
    }
    if let Some(k) = &args.kind {
        query.push(("kind", k.clone()));
    }
    if let Some(n) = &args.node {
        query.push(("node_id", n.clone()));
    }
    if let Some(n) = args.limit {
        query.push(("limit", n.to_string()));
    }
    let page = client.get("/api/v1/events", &query)?;
    if api.json {
        return print_json(&page);
    }
    print!("{}", events_table(items(&page)).render());
    Ok(())
}

/// Events as a table, in the order given (the API sends newest first).
pub fn events_table(events: &[Value]) -> Table {
    // NODE is the node the event is about (the one `--node` filters on); BY who caused it.
    let mut t = Table::new(&["ID", "AT", "KIND", "NODE", "APP", "TASK", "BY", "MESSAGE"]);
    for e in events {
        t.row(vec![
            table::cell(&e["id"]),
            table::cell(&e["at"]),
            table::cell(&e["kind"]),
            table::cell(&e["node_id"]),
            table::cell(&e["app_id"]),
            table::cell(&e["task_id"]),
            table::cell(&e["actor"]),
            table::cell(&e["message"]),
        ]);
    }
    t
}
