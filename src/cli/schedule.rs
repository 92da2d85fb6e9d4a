//! `rota schedule …`: create, list, show, pause, resume and delete schedules through the REST API.
//!
//! Why it exists: a schedule is something an operator sets up once and then looks at when a job
//! did not run: `show` prints its recent firings (fired, caught up, skipped) next to its timing.
//!
//! It must never validate what the node validates (cron syntax, routing names): the API answers
//! with named fields and this module prints them. It only turns `--every 5s` into milliseconds.

use serde_json::{json, Value};

use super::client::{ApiArgs, CliError, Client};
use super::flags;
use super::table::{self, Table};
use super::{items, list_pages, parse_json, print_json};

/// `rota schedule` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: a cron expression (seconds first, UTC) or a fixed rate.
    #[command(after_help = "\
Examples:
  $ rota schedule create tick --every 10s --app report --routing round_robin
  $ rota schedule create nightly --cron '0 0 2 * * *' --app report --routing sharding --shards 4 --misfire skip
  $ rota schedule create later --every 5m --paused --misfire-grace 30s --timeout 10s --max-attempts 5")]
    Create(Box<CreateArgs>),
    /// List schedules.
    #[command(after_help = "\
Examples:
  $ rota schedule list")]
    List {
        /// Page size (1..=500; the API's default is 50).
        #[arg(long, value_name = "N")]
        limit: Option<i64>,
        /// Follow `next` links and print every page.
        #[arg(long)]
        all: bool,
    },
    /// Show a schedule and its recent firings.
    #[command(after_help = "\
Examples:
  $ rota schedule show tick")]
    Show {
        /// Schedule id or name.
        schedule: String,
    },
    /// Stop firing (fire times while paused are not misfires: resume starts from the next one).
    #[command(after_help = "\
Examples:
  $ rota schedule pause tick")]
    Pause {
        /// Schedule id or name.
        schedule: String,
    },
    /// Fire again, from the next fire time after now.
    #[command(after_help = "\
Examples:
  $ rota schedule resume tick")]
    Resume {
        /// Schedule id or name.
        schedule: String,
    },
    /// Delete a schedule and its firing history (its tasks stay).
    #[command(after_help = "\
Examples:
  $ rota schedule delete tick")]
    Delete {
        /// Schedule id or name.
        schedule: String,
    },
}

/// `rota schedule create`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("timing").required(true).args(["cron", "every"])))]
pub struct CreateArgs {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Cron expression, seconds first, UTC: 'SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK [YEAR]',
    /// e.g. '*/5 * * * * *' (every 5 seconds) or '0 30 9 * * Mon-Fri'.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Fixed rate, aligned to the Unix epoch: 500ms, 5s, 10m, 1h, 1d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub every: Option<i64>,
    /// The application whose driver runs the job (id or name); without it the job is a noop.
    #[arg(long, value_name = "ID")]
    pub app: Option<String>,
    /// Start a run of this workflow (id or name) at each firing instead of a job; --payload is
    /// the run's context.
    #[arg(long, value_name = "NAME|ID", conflicts_with = "app")]
    pub workflow: Option<String>,
    /// The tasks' payload as a JSON object (a workflow run's context).
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub payload: Option<Value>,
    /// The tasks' routing strategy (hash, round_robin, broadcast, sharding, …).
    #[arg(long, value_name = "STRATEGY")]
    pub routing: Option<String>,
    /// The tasks' shard count (with --routing sharding).
    #[arg(long, value_name = "N")]
    pub shards: Option<i32>,
    /// The tasks' per-attempt time limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub timeout: Option<i64>,
    /// Attempts per task.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i32>,
    /// What to do with fire times missed by more than the grace: fire_once (default) or skip.
    #[arg(long, value_name = "skip|fire_once")]
    pub misfire: Option<String>,
    /// A fire time later than this is missed (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub misfire_grace: Option<i64>,
    /// Create it paused (`rota schedule resume` starts it).
    #[arg(long)]
    pub paused: bool,
}

/// Parse `500ms`, `5s`, `10m`, `1h`, `1d` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().map_err(|_| format!("`{s}` is not a duration like 500ms, 5s, 10m, 1h or 1d"))?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("`{s}` has no unit: write {s}ms or {s}s")),
        u => return Err(format!("unknown unit `{u}` in `{s}`: use ms, s, m, h or d")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{s}` is too large"))
}

/// Run one `rota schedule` command.
pub fn run(api: &ApiArgs, command: &ScheduleCommand) -> Result<(), CliError> {
    let client = Client::new(api);
    match command {
        ScheduleCommand::Create(args) => {
            create(&client, api.json, args).map_err(|e| e.with_flags(flags::SCHEDULE_CREATE))
        }
        ScheduleCommand::List { limit, all } => {
            list(&client, api.json, *limit, *all).map_err(|e| e.with_flags(flags::LIMIT))
        }
        ScheduleCommand::Show { schedule } => {
            let id = resolve(&client, schedule)?;
            let s = client.get(&format!("/api/v1/schedules/{id}"), &[])?;
            if api.json {
                return print_json(&s);
            }
            print!("{}", render(&s));
            Ok(())
        }
        ScheduleCommand::Pause { schedule } => set_enabled(&client, api.json, schedule, false),
        ScheduleCommand::Resume { schedule } => set_enabled(&client, api.json, schedule, true),
        ScheduleCommand::Delete { schedule } => {
            let id = resolve(&client, schedule)?;
            client.delete(&format!("/api/v1/schedules/{id}"), &[])?;
            if api.json {
                return print_json(&json!({ "deleted": id }));
            }
            println!("deleted schedule {id}");
            Ok(())
        }
    }
}

/// A schedule id, or the id of the schedule with this name.
pub fn resolve(client: &Client, schedule: &str) -> Result<i64, CliError> {
    if let Ok(id) = schedule.parse::<i64>() {
        return Ok(id);
    }
    let all = list_pages(client, "/api/v1/schedules", &[("limit", "500".into())], true)?;
    items(&all)
        .iter()
        .find(|s| s["name"].as_str() == Some(schedule))
        .and_then(|s| s["id"].as_i64())
        .ok_or_else(|| CliError::Input(format!("no schedule named `{schedule}` (see `rota schedule list`)")))
}

fn create(client: &Client, json: bool, args: &CreateArgs) -> Result<(), CliError> {
    let mut body = json!({ "name": args.name });
    let optional = [
        ("cron", args.cron.as_ref().map(|c| json!(c))),
        ("every_ms", args.every.map(|e| json!(e))),
        ("payload", args.payload.clone()),
        ("routing", args.routing.as_ref().map(|r| json!(r))),
        ("shard_total", args.shards.map(|n| json!(n))),
        ("timeout_ms", args.timeout.map(|t| json!(t))),
        ("max_attempts", args.max_attempts.map(|n| json!(n))),
        ("misfire", args.misfire.as_ref().map(|m| json!(m))),
        ("misfire_grace_ms", args.misfire_grace.map(|g| json!(g))),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    if let Some(app) = &args.app {
        body["app_id"] = json!(super::resolve_app(client, app)?);
    }
    if let Some(workflow) = &args.workflow {
        body["workflow_id"] = json!(super::workflow::resolve(client, workflow)?);
    }
    if args.paused {
        body["enabled"] = json!(false);
    }
    let s = client.post("/api/v1/schedules", Some(&body))?;
    if json {
        return print_json(&s);
    }
    println!(
        "created schedule {} `{}`: next fire at {} (follow it with `rota schedule show {}`)",
        table::cell(&s["id"]),
        table::cell(&s["name"]),
        table::cell(&s["next_fire_at"]),
        table::cell(&s["id"])
    );
    Ok(())
}

fn set_enabled(client: &Client, json: bool, schedule: &str, enabled: bool) -> Result<(), CliError> {
    let id = resolve(client, schedule)?;
    let s = client.patch(&format!("/api/v1/schedules/{id}"), &json!({ "enabled": enabled }))?;
    if json {
        return print_json(&s);
    }
    if enabled {
        println!("schedule {id} resumed: next fire at {}", table::cell(&s["next_fire_at"]));
    } else {
        println!("schedule {id} paused");
    }
    Ok(())
}

/// What a firing writes: a workflow's run, an application's job, or a noop job.
fn target(s: &Value) -> String {
    match (s["workflow_id"].as_i64(), s["app_id"].as_i64()) {
        (Some(w), _) => format!("workflow {w}"),
        (None, Some(a)) => format!("app {a}"),
        _ => "noop job".into(),
    }
}

fn timing(s: &Value) -> String {
    match (s["cron"].as_str(), s["every_ms"].as_i64()) {
        (Some(c), _) => format!("cron {c}"),
        (None, Some(ms)) => format!("every {ms} ms"),
        _ => "-".into(),
    }
}

fn list(client: &Client, json: bool, limit: Option<i64>, all: bool) -> Result<(), CliError> {
    let mut query = Vec::new();
    if let Some(n) = limit.or(all.then_some(500)) {
        query.push(("limit", n.to_string()));
    }
    let page = list_pages(client, "/api/v1/schedules", &query, all)?;
    if json {
        return print_json(&page);
    }
    let mut t = Table::new(&["ID", "NAME", "TIMING", "STARTS", "ENABLED", "MISFIRE", "NEXT FIRE", "OWNER"]);
    for s in items(&page) {
        t.row(vec![
            table::cell(&s["id"]),
            table::cell(&s["name"]),
            timing(s),
            target(s),
            table::cell(&s["enabled"]),
            table::cell(&s["misfire"]),
            table::cell(&s["next_fire_at"]),
            table::cell(&s["owner_node"]),
        ]);
    }
    print!("{}", t.render());
    if let Some(next) = page["next"].as_str() {
        eprintln!("(more: use --all, or --limit; next page at {next})");
    }
    Ok(())
}

/// A schedule as `key: value` lines, then its recent firings.
pub fn render(s: &Value) -> String {
    let pairs = vec![
        ("id", table::cell(&s["id"])),
        ("name", table::cell(&s["name"])),
        ("timing", timing(s)),
        ("enabled", table::cell(&s["enabled"])),
        ("next fire", table::cell(&s["next_fire_at"])),
        ("owner", table::cell(&s["owner_node"])),
        ("misfire", format!("{} (grace {} ms)", table::cell(&s["misfire"]), table::cell(&s["misfire_grace_ms"]))),
        ("starts", target(s)),
        ("payload", s["payload"].to_string()),
        ("routing", table::cell(&s["routing"])),
        ("shards", table::cell(&s["shard_total"])),
        ("timeout ms", table::cell(&s["timeout_ms"])),
        ("max attempts", table::cell(&s["max_attempts"])),
        ("created", table::cell(&s["created_at"])),
        ("updated", table::cell(&s["updated_at"])),
    ];
    let mut out = table::fields(&pairs);
    if let Some(firings) = s["recent_firings"].as_array().filter(|f| !f.is_empty()) {
        let mut t = Table::new(&["FIRE AT", "OUTCOME", "TIMES", "LAST", "TASK", "RUN", "NODE"]);
        for f in firings {
            t.row(vec![
                table::cell(&f["fire_at"]),
                table::cell(&f["outcome"]),
                table::cell(&f["times"]),
                table::cell(&f["last_at"]),
                table::cell(&f["task_id"]),
                table::cell(&f["run_id"]),
                table::cell(&f["node_id"]),
            ]);
        }
        out.push_str("\nrecent firings (newest first):\n");
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("5s"), Ok(5000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert!(parse_duration_ms("5").unwrap_err().contains("no unit"));
        assert!(parse_duration_ms("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration_ms("soon").is_err());
    }
}
