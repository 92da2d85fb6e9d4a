//! `rota app …`: create, list, show, start / stop / restart (optionally waiting for the outcome)
//! and delete applications through the REST API.
//!
//! Why it exists: an operator should not need curl and jq to run an application and see whether
//! it came up. `--wait` turns the API's asynchronous commands (202 + a task) into a command that
//! returns when the application is where it was asked to be, or fails with the task's error.
//!
//! It must never decide anything the node decides (validation, state transitions): it sends the
//! request, polls what the API reports, and prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{ApiArgs, CliError, Client};
use super::flags;
use super::table::{self, Table};
use super::{items, list_pages, parse_json, parse_pair, print_json, resolve_app as resolve};

/// How often `--wait` asks the node.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// `rota app` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AppCommand {
    /// Create an application (it starts `stopped`).
    #[command(after_help = "\
Examples:
  $ rota app create web --driver process --spec '{\"command\": [\"sleep\", \"600\"]}'
  $ rota app create report --driver noop --selector dc=dc1 --traffic-group billing
  $ rota app create scratch --driver noop
  $ rota app create stream --driver flink --spec '{\"rest_url\": \"http://127.0.0.1:8081\", \"jar\": \"/opt/jobs/counter.jar\"}'

An application runs in one of two ways: `rota app start` runs it for good on its owning node
(a `process` child, a service a `shell` or `http` spec manages); as the handler of jobs
(`rota task submit run --app NAME`, schedules) it needs no start.")]
    Create(CreateArgs),
    /// List applications.
    #[command(after_help = "\
Examples:
  $ rota app list
  $ rota app list --state running --all")]
    List(ListArgs),
    /// Show an application (every field the API has) and its recent events.
    #[command(after_help = "\
Examples:
  $ rota app show web
  $ rota app show 1 --json")]
    Show {
        /// Application id or name.
        app: String,
    },
    /// Change an application: spec, selector, restart policy, max restarts, monitor interval,
    /// traffic group (what is not given stays as it is).
    #[command(after_help = "\
Examples:
  $ rota app update web --restart-policy on_failure --max-restarts 5 --monitor-interval-ms 1000
  $ rota app update web --spec '{\"command\": [\"sleep\", \"300\"]}'
  $ rota app update report --clear-selector --clear-traffic-group

A new spec replaces the whole spec. Secret fields are shown as \"***\" (`rota app show`);
\"***\" sent back at a secret field keeps the stored value, so a spec read with
`rota app show NAME --json` can be edited and given to --spec-file as it is.
A running `process` application keeps its process until it is restarted.")]
    Update(UpdateArgs),
    /// Ask the owning node to start the application.
    #[command(after_help = "\
Examples:
  $ rota app start web --wait")]
    Start(CommandArgs),
    /// Ask the owning node to stop the application.
    #[command(after_help = "\
Examples:
  $ rota app stop web --wait --timeout 30")]
    Stop(CommandArgs),
    /// Ask the owning node to stop, then start the application.
    #[command(after_help = "\
Examples:
  $ rota app restart web")]
    Restart(CommandArgs),
    /// Ask the owning node to take a savepoint of the application (flink); --wait prints where.
    #[command(after_help = "\
Examples:
  $ rota app savepoint stream

The savepoint is recorded with the application (`rota app show`); a later start restores from
the newest one unless the spec's `restore` says otherwise.")]
    Savepoint(CommandArgs),
    /// Delete an application (it must be stopped unless --force).
    #[command(after_help = "\
Examples:
  $ rota app delete scratch
  $ rota app delete web --force")]
    Delete {
        /// Application id or name.
        app: String,
        /// Delete it even when it is not stopped. Its owning node notices at its next status
        /// check of the application (the application's monitor interval; 5 s by default), stops
        /// what it runs there (a `process` child is stopped; a `shell` or `http` spec's `stop` is
        /// called) and logs it; the `app.deleted` event says "(forced)", and no later event is
        /// recorded for it.
        #[arg(long)]
        force: bool,
    },
}

/// `rota app create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Driver: noop, process, shell or http.
    #[arg(long, value_name = "DRIVER")]
    pub driver: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Run only on nodes with this label, key=value (repeatable).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub selector: Vec<(String, String)>,
    /// never, on_failure or always.
    #[arg(long, value_name = "POLICY")]
    pub restart_policy: Option<String>,
    /// Restarts allowed before the application is left `failed`.
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<i32>,
    /// How often the owner checks the application (default: the node's setting).
    #[arg(long, value_name = "MS")]
    pub monitor_interval_ms: Option<i32>,
    /// Traffic group: the traffic policy of that name picks the side (datacenter) it and its
    /// jobs run in (`rota traffic set`).
    #[arg(long, value_name = "GROUP")]
    pub traffic_group: Option<String>,
}

/// `--spec` / `--spec-file`, shared by create and update.
#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// Driver spec as JSON, e.g. '{"command": ["sleep", "60"]}' for `process` (docs/drivers.md).
    #[arg(long, value_name = "JSON", value_parser = parse_json, conflicts_with = "spec_file")]
    pub spec: Option<Value>,
    /// Read the driver spec (JSON) from a file.
    #[arg(long, value_name = "FILE")]
    pub spec_file: Option<PathBuf>,
}

impl SpecArgs {
    /// The spec given, if any; a file that cannot be read or is not JSON is a usage error.
    fn read(&self) -> Result<Option<Value>, CliError> {
        match (&self.spec, &self.spec_file) {
            (Some(spec), _) => Ok(Some(spec.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Usage(format!("cannot read --spec-file {}: {e}", path.display())))?;
                parse_json(&text).map(Some).map_err(|e| CliError::Usage(format!("--spec-file {}: {e}", path.display())))
            }
            (None, None) => Ok(None),
        }
    }
}

/// `rota app update`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args([
    "spec", "spec_file", "selector", "clear_selector", "restart_policy", "max_restarts",
    "monitor_interval_ms", "default_monitor_interval", "traffic_group", "clear_traffic_group",
])))]
pub struct UpdateArgs {
    /// Application id or name.
    pub app: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Run only on nodes with these labels, key=value (repeatable; replaces the whole selector).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub selector: Vec<(String, String)>,
    /// Remove the selector (run on any node).
    #[arg(long, conflicts_with = "selector")]
    pub clear_selector: bool,
    /// never, on_failure or always.
    #[arg(long, value_name = "POLICY")]
    pub restart_policy: Option<String>,
    /// Restarts allowed before the application is left `failed`.
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<i32>,
    /// How often the owner checks the application.
    #[arg(long, value_name = "MS")]
    pub monitor_interval_ms: Option<i32>,
    /// Check it as often as the node's setting says (`dispatch.monitor_interval_ms`).
    #[arg(long, conflicts_with = "monitor_interval_ms")]
    pub default_monitor_interval: bool,
    /// Traffic group (a traffic policy of that name picks where it runs).
    #[arg(long, value_name = "GROUP")]
    pub traffic_group: Option<String>,
    /// Leave its traffic group (only its selector places it).
    #[arg(long, conflicts_with = "traffic_group")]
    pub clear_traffic_group: bool,
}

/// `rota app list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only applications in this observed state (running, stopped, failed, …).
    #[arg(long)]
    pub state: Option<String>,
    /// Only applications with this driver.
    #[arg(long)]
    pub driver: Option<String>,
    /// Only applications owned by this node id.
    #[arg(long, value_name = "NODE")]
    pub owner: Option<String>,
    /// Page size (1..=500; the API's default is 50).
    #[arg(long, value_name = "N")]
    pub limit: Option<i64>,
    /// Follow `next` links and print every page.
    #[arg(long)]
    pub all: bool,
}

/// `rota app start|stop|restart`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommandArgs {
    /// Application id or name.
    pub app: String,
    /// Wait until the task is done and the application is running (start, restart) or stopped.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (the command still runs on the node).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, requires = "wait")]
    pub timeout: u64,
}

/// Run one `rota app` command.
pub fn run(api: &ApiArgs, command: &AppCommand) -> Result<(), CliError> {
    let client = Client::new(api);
    match command {
        AppCommand::Create(args) => create(&client, api.json, args).map_err(|e| e.with_flags(flags::APP_CREATE)),
        AppCommand::List(args) => list(&client, api.json, args).map_err(|e| e.with_flags(flags::APP_LIST)),
        AppCommand::Show { app } => show(&client, api.json, app),
        AppCommand::Update(args) => update(&client, api.json, args).map_err(|e| e.with_flags(flags::APP_UPDATE)),
        AppCommand::Start(args) => command_and_wait(&client, api.json, "start", args),
        AppCommand::Stop(args) => command_and_wait(&client, api.json, "stop", args),
        AppCommand::Restart(args) => command_and_wait(&client, api.json, "restart", args),
        AppCommand::Savepoint(args) => command_and_wait(&client, api.json, "savepoint", args),
        AppCommand::Delete { app, force } => {
            delete(&client, api.json, app, *force).map_err(|e| e.with_flags(flags::APP_DELETE))
        }
    }
}

fn create(client: &Client, json: bool, args: &CreateArgs) -> Result<(), CliError> {
    let spec = args.spec.read()?.unwrap_or_else(|| json!({}));
    let mut body = json!({
        "name": args.name,
        "driver": args.driver,
        "spec": spec,
        "selector": args.selector.iter().cloned().collect::<BTreeMap<_, _>>(),
    });
    if let Some(p) = &args.restart_policy {
        body["restart_policy"] = json!(p);
    }
    if let Some(n) = args.max_restarts {
        body["max_restarts"] = json!(n);
    }
    if let Some(n) = args.monitor_interval_ms {
        body["monitor_interval_ms"] = json!(n);
    }
    if let Some(g) = &args.traffic_group {
        body["traffic_group"] = json!(g);
    }
    let app = client.post("/api/v1/apps", Some(&body))?;
    if json {
        return print_json(&app);
    }
    let name = table::cell(&app["name"]);
    println!(
        "created application {} `{name}` ({}, {})\n\
         run it: rota app start {name}   (not needed when it only handles jobs: rota task submit run --app {name})",
        table::cell(&app["id"]),
        table::cell(&app["driver"]),
        table::cell(&app["state"]),
    );
    Ok(())
}

/// The PATCH body of `rota app update`: only what was given. The spec is sent as given (a
/// `"***"` in it keeps a stored secret, docs/api.md#secrets).
fn update_body(args: &UpdateArgs, spec: Option<Value>) -> Value {
    let mut body = json!({});
    if let Some(spec) = spec {
        body["spec"] = spec;
    }
    if !args.selector.is_empty() {
        body["selector"] = json!(args.selector.iter().cloned().collect::<BTreeMap<_, _>>());
    }
    if args.clear_selector {
        body["selector"] = json!({});
    }
    if let Some(p) = &args.restart_policy {
        body["restart_policy"] = json!(p);
    }
    if let Some(n) = args.max_restarts {
        body["max_restarts"] = json!(n);
    }
    if let Some(n) = args.monitor_interval_ms {
        body["monitor_interval_ms"] = json!(n);
    }
    if args.default_monitor_interval {
        body["monitor_interval_ms"] = Value::Null;
    }
    if let Some(g) = &args.traffic_group {
        body["traffic_group"] = json!(g);
    }
    if args.clear_traffic_group {
        body["traffic_group"] = Value::Null;
    }
    body
}

fn update(client: &Client, json: bool, args: &UpdateArgs) -> Result<(), CliError> {
    let spec = args.spec.read()?;
    let id = resolve(client, &args.app)?;
    let app = client.patch(&format!("/api/v1/apps/{id}"), &update_body(args, spec))?;
    if json {
        return print_json(&app);
    }
    println!("updated application {id} `{}`", table::cell(&app["name"]));
    print!("{}", render_app(&app));
    Ok(())
}

fn list(client: &Client, json: bool, args: &ListArgs) -> Result<(), CliError> {
    let mut query = Vec::new();
    for (k, v) in [("state", &args.state), ("driver", &args.driver), ("owner", &args.owner)] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    if let Some(n) = args.limit.or(args.all.then_some(500)) {
        query.push(("limit", n.to_string()));
    }
    let page = list_pages(client, "/api/v1/apps", &query, args.all)?;
    if json {
        return print_json(&page);
    }
    let mut t = Table::new(&["ID", "NAME", "DRIVER", "STATE", "DESIRED", "OWNER", "RESTARTS", "UPDATED"]);
    for a in items(&page) {
        t.row(vec![
            table::cell(&a["id"]),
            table::cell(&a["name"]),
            table::cell(&a["driver"]),
            table::cell(&a["state"]),
            table::cell(&a["desired_state"]),
            table::cell(&a["owner_node"]),
            table::cell(&a["restart_count"]),
            table::cell(&a["updated_at"]),
        ]);
    }
    print!("{}", t.render());
    if let Some(next) = page["next"].as_str() {
        eprintln!("(more: use --all, or --limit; next page at {next})");
    }
    Ok(())
}

fn show(client: &Client, json: bool, app: &str) -> Result<(), CliError> {
    let id = resolve(client, app)?;
    let a = client.get(&format!("/api/v1/apps/{id}"), &[])?;
    if json {
        return print_json(&a);
    }
    print!("{}", render_app(&a));
    let events = a["recent_events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    println!("\nrecent events:");
    print!("{}", super::cluster::events_table(events).render());
    Ok(())
}

/// The keys of an application document that [`render_app`] prints in its own lines.
const SHOWN: &[&str] = &[
    "id",
    "name",
    "driver",
    "state",
    "desired_state",
    "owner_node",
    "owner_epoch",
    "restart_count",
    "max_restarts",
    "restart_policy",
    "monitor_interval_ms",
    "selector",
    "traffic_group",
    "spec",
    "last_error",
    "created_at",
    "updated_at",
    "recent_events",
    "runtime",
];

/// An application as `key: value` lines: every field the API sends, those it adds after this
/// CLI was built too (under their API names), so `show` never hides one.
pub fn render_app(a: &Value) -> String {
    let restarts = format!(
        "{} of {} ({})",
        table::cell(&a["restart_count"]),
        table::cell(&a["max_restarts"]),
        table::cell(&a["restart_policy"])
    );
    let owner = format!("{} (epoch {})", table::cell(&a["owner_node"]), table::cell(&a["owner_epoch"]));
    let mut pairs = vec![
        ("id", table::cell(&a["id"])),
        ("name", table::cell(&a["name"])),
        ("driver", table::cell(&a["driver"])),
        ("state", table::cell(&a["state"])),
        ("desired", table::cell(&a["desired_state"])),
        ("owner", owner),
        ("restarts", restarts),
        ("monitor every", a["monitor_interval_ms"].as_i64().map_or("node default".into(), |ms| format!("{ms} ms"))),
        ("selector", table::labels(&a["selector"])),
        ("traffic group", table::cell(&a["traffic_group"])),
        ("spec", a["spec"].to_string()),
        ("last error", table::cell(&a["last_error"])),
        ("created", table::cell(&a["created_at"])),
        ("updated", table::cell(&a["updated_at"])),
    ];
    // A flink application's job and savepoints, one line each (the rest of a runtime state as
    // its JSON).
    let runtime = &a["runtime"];
    let savepoints: Vec<String> = runtime["savepoints"]
        .as_array()
        .map(|all| {
            all.iter()
                .rev()
                .map(|sp| {
                    format!(
                        "{} {} ({})",
                        table::cell(&sp["at"]),
                        table::cell(&sp["location"]),
                        table::cell(&sp["trigger"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !runtime.is_null() {
        match runtime.get("job_id") {
            Some(job) => pairs.push(("flink job", table::cell(job))),
            None => pairs.push(("runtime", runtime.to_string())),
        }
    }
    let count = savepoints.len();
    for (i, line) in savepoints.into_iter().enumerate() {
        pairs.push((
            if i == 0 { "savepoints" } else { "" },
            if i == 0 { format!("{line}  [{count}, newest first]") } else { line },
        ));
    }
    let others: Vec<(String, String)> = a
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !SHOWN.contains(&k.as_str()))
                .map(|(k, v)| (k.replace('_', " "), table::cell(v)))
                .collect()
        })
        .unwrap_or_default();
    pairs.extend(others.iter().map(|(k, v)| (k.as_str(), v.clone())));
    table::fields(&pairs)
}

fn delete(client: &Client, json: bool, app: &str, force: bool) -> Result<(), CliError> {
    let id = resolve(client, app)?;
    let query = if force { vec![("force", "true".to_string())] } else { Vec::new() };
    client.delete(&format!("/api/v1/apps/{id}"), &query)?;
    if json {
        return print_json(&json!({ "deleted": id }));
    }
    println!("deleted application {id}");
    Ok(())
}

fn command_and_wait(client: &Client, json: bool, action: &str, args: &CommandArgs) -> Result<(), CliError> {
    let id = resolve(client, &args.app)?;
    let accepted = client.post(&format!("/api/v1/apps/{id}/{action}"), None)?;
    let task_id = accepted["task_id"].as_i64().ok_or_else(|| {
        CliError::Transport(format!("the node accepted the {action} but named no task_id: {accepted}"))
    })?;
    if !args.wait {
        if json {
            return print_json(&accepted);
        }
        println!("{action} requested for application {id}: task {task_id} (follow it with `rota task show {task_id}`)");
        return Ok(());
    }
    let expected = if action == "stop" { "stopped" } else { "running" };
    eprintln!(
        "{action} requested for application {id}: task {task_id}; waiting up to {}s for `{expected}`",
        args.timeout
    );
    // A savepoint leaves the application running: no start for a status check to confirm.
    let confirm = matches!(action, "start" | "restart");
    let task = wait(client, id, task_id, expected, confirm, Duration::from_secs(args.timeout))?;
    if json {
        return print_json(&task);
    }
    if action == "savepoint" {
        let at = task["result"]["location"].as_str().unwrap_or("(the task's result names no location)");
        println!("savepoint of application {id} taken at {at} (task {task_id})");
    } else if expected == "running" {
        println!("application {id} is running (task {task_id} succeeded; confirmed by a status check)");
    } else {
        println!("application {id} is {expected} (task {task_id} succeeded)");
    }
    Ok(())
}

/// What `--wait` has seen so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    task_status: String,
    app_state: String,
}

/// What to do after one look at the task and the application.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Done,
    Wait,
    Fail(String),
}

/// Pure: decide from one observation. The task must be terminal first (a `running` app before
/// the task finishes may be the old state), then the application must reach `expected`. With
/// `confirm` (a start or restart) a task that succeeded is `Done` whatever the application's
/// state: [`judge_confirmed`] decides from there, since the status check right after the start
/// may already have seen it exit (it then says so, with the reason).
fn judge(task_id: i64, task: &Value, app: &Value, expected: &str, confirm: bool) -> Verdict {
    let status = task["status"].as_str().unwrap_or("");
    match status {
        "succeeded" if confirm => return Verdict::Done,
        "succeeded" => {}
        "failed" | "cancelled" | "lost" => {
            let why = task["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
            return Verdict::Fail(format!("task {task_id} {status}{why}"));
        }
        _ => return Verdict::Wait,
    }
    match app["state"].as_str().unwrap_or("") {
        s if s == expected => Verdict::Done,
        "failed" => {
            let why = app["last_error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
            Verdict::Fail(format!("task {task_id} succeeded but the application failed{why}"))
        }
        _ => Verdict::Wait,
    }
}

/// Pure: after a start's task succeeded with the application `running`, decide from the
/// application and whether its owner has confirmed it (`app.confirmed`, recorded at the first
/// status check after the start: docs/api.md#confirm). An application that exited at once is
/// `failed` or `stopped` at that check, or was restarted by its policy (`restart_count` > 0).
fn judge_confirmed(task_id: i64, app: &Value, confirmed: bool) -> Verdict {
    let state = app["state"].as_str().unwrap_or("");
    let restarts = app["restart_count"].as_i64().unwrap_or(0);
    let why = app["last_error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
    match state {
        "running" if restarts > 0 => Verdict::Fail(format!(
            "task {task_id} started the application, but it did not stay up: restarted {restarts} time(s) by its policy{why}"
        )),
        "running" if confirmed => Verdict::Done,
        "failed" | "stopped" => Verdict::Fail(format!(
            "task {task_id} started the application, but it is {state} at its first status check{why}"
        )),
        _ => Verdict::Wait,
    }
}

/// Poll until [`judge`] says done or fail, printing each change on stderr; the last task document.
/// With `confirm` (a start or restart), done only once a status check after it confirms the
/// application runs ([`judge_confirmed`]).
fn wait(
    client: &Client,
    app_id: i64,
    task_id: i64,
    expected: &str,
    confirm: bool,
    timeout: Duration,
) -> Result<Value, CliError> {
    let deadline = Instant::now() + timeout;
    let mut seen = Seen::default();
    let mut confirming = false;
    loop {
        let task = client.get(&format!("/api/v1/tasks/{task_id}"), &[])?;
        let app = client.get(&format!("/api/v1/apps/{app_id}"), &[])?;
        let now = Seen {
            task_status: task["status"].as_str().unwrap_or("?").to_string(),
            app_state: app["state"].as_str().unwrap_or("?").to_string(),
        };
        if now.task_status != seen.task_status {
            // A retried attempt goes back to pending with the last error: say why.
            match task["error"].as_str().filter(|_| now.task_status == "pending") {
                Some(e) => eprintln!("task {task_id}: {} (last error: {e})", now.task_status),
                None => eprintln!("task {task_id}: {}", now.task_status),
            }
        }
        if now.app_state != seen.app_state {
            eprintln!("application {app_id}: {}", now.app_state);
        }
        seen = now;
        let verdict = match judge(task_id, &task, &app, expected, confirm) {
            Verdict::Done if confirm => {
                if !confirming {
                    eprintln!(
                        "task {task_id}: waiting for a status check to confirm that application {app_id} keeps running"
                    );
                    confirming = true;
                }
                let query = [("task_id", task_id.to_string()), ("kind", "app.confirmed".to_string())];
                let events = client.get("/api/v1/events", &query)?;
                match judge_confirmed(task_id, &app, !items(&events).is_empty()) {
                    // Restarted by its policy: the restart's event says what it restarted after.
                    Verdict::Fail(why) if app["last_error"].is_null() => {
                        let query = [
                            ("app_id", app_id.to_string()),
                            ("kind", "app.restart".to_string()),
                            ("limit", "1".to_string()),
                        ];
                        let restart = client.get("/api/v1/events", &query)?;
                        match items(&restart).first().and_then(|e| e["message"].as_str()) {
                            Some(m) => Verdict::Fail(format!("{why} ({m})")),
                            None => Verdict::Fail(why),
                        }
                    }
                    other => other,
                }
            }
            other => other,
        };
        match verdict {
            Verdict::Done => return Ok(task),
            Verdict::Fail(why) => return Err(CliError::Failed(why)),
            Verdict::Wait => {}
        }
        if Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "timed out after {}s: task {task_id} is {}, application {app_id} is {} (wanted {expected}); \
                 the node keeps working on it — check with `rota task show {task_id}`",
                timeout.as_secs(),
                seen.task_status,
                seen.app_state
            )));
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_task_then_the_state() {
        let running = json!({"state": "running"});
        assert_eq!(judge(1, &json!({"status": "running"}), &running, "running", false), Verdict::Wait);
        assert_eq!(
            judge(1, &json!({"status": "succeeded"}), &json!({"state": "starting"}), "running", false),
            Verdict::Wait
        );
        assert_eq!(judge(1, &json!({"status": "succeeded"}), &running, "running", false), Verdict::Done);
        assert_eq!(
            judge(1, &json!({"status": "succeeded"}), &json!({"state": "stopped"}), "stopped", false),
            Verdict::Done
        );
    }

    fn update_args(extra: &[&str]) -> UpdateArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            u: UpdateArgs,
        }
        let mut argv = vec!["x", "web"];
        argv.extend_from_slice(extra);
        P::try_parse_from(argv).map(|p| p.u).unwrap()
    }

    #[test]
    fn update_sends_only_what_was_given() {
        let a = update_args(&["--max-restarts", "5", "--traffic-group", "billing", "--selector", "dc=dc1"]);
        assert_eq!(
            update_body(&a, None),
            json!({"max_restarts": 5, "traffic_group": "billing", "selector": {"dc": "dc1"}})
        );
        let a = update_args(&["--clear-traffic-group", "--clear-selector", "--default-monitor-interval"]);
        assert_eq!(update_body(&a, None), json!({"traffic_group": null, "selector": {}, "monitor_interval_ms": null}));
        // The spec goes as the user gave it, placeholders included.
        let spec = json!({"command": ["x"], "env": {"K": "***"}});
        assert_eq!(update_body(&update_args(&["--restart-policy", "always"]), Some(spec.clone()))["spec"], spec);
    }

    #[test]
    fn show_prints_every_field() {
        let a = json!({"id": 1, "name": "web", "traffic_group": "billing", "new_field": 7, "recent_events": []});
        let text = render_app(&a);
        assert!(text.contains("traffic group: billing"), "{text}");
        assert!(text.contains("new field:") && text.contains(" 7"), "{text}");
        assert!(!text.contains("recent events"), "{text}");
    }

    #[test]
    fn a_start_is_done_once_a_status_check_confirms_it() {
        let running = json!({"state": "running", "restart_count": 0});
        assert_eq!(judge_confirmed(3, &running, false), Verdict::Wait);
        assert_eq!(judge_confirmed(3, &running, true), Verdict::Done);
        let exited = json!({"state": "failed", "restart_count": 0, "last_error": "exited with status 3"});
        assert_eq!(
            judge_confirmed(3, &exited, false),
            Verdict::Fail(
                "task 3 started the application, but it is failed at its first status check: exited with status 3"
                    .into()
            )
        );
        let restarted = json!({"state": "running", "restart_count": 1, "last_error": "exited"});
        assert!(matches!(judge_confirmed(3, &restarted, true), Verdict::Fail(m) if m.contains("restarted 1 time")));
        assert_eq!(judge_confirmed(3, &json!({"state": "orphaned"}), false), Verdict::Wait);
    }

    #[test]
    fn a_start_that_exited_before_its_task_was_seen_done_says_why() {
        // The status check right after the start saw the process exit: the task succeeded and the
        // application is already failed, with the reason.
        let task = json!({"status": "succeeded"});
        let exited = json!({"state": "failed", "restart_count": 0, "last_error": "exited with code 3"});
        assert_eq!(judge(2, &task, &exited, "running", true), Verdict::Done, "on to the confirmation");
        assert_eq!(
            judge_confirmed(2, &exited, false),
            Verdict::Fail(
                "task 2 started the application, but it is failed at its first status check: exited with code 3".into()
            )
        );
        assert_eq!(judge(2, &json!({"status": "running"}), &exited, "running", true), Verdict::Wait);
    }

    #[test]
    fn failures_carry_the_reason() {
        let v =
            judge(7, &json!({"status": "failed", "error": "exit 3"}), &json!({"state": "failed"}), "running", false);
        assert_eq!(v, Verdict::Fail("task 7 failed: exit 3".into()));
        let v = judge(
            7,
            &json!({"status": "succeeded"}),
            &json!({"state": "failed", "last_error": "crashed"}),
            "running",
            false,
        );
        assert_eq!(v, Verdict::Fail("task 7 succeeded but the application failed: crashed".into()));
        assert!(matches!(judge(7, &json!({"status": "cancelled"}), &json!({}), "running", false), Verdict::Fail(_)));
    }
}
