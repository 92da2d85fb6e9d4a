//! `rota traffic …`: see and switch the traffic policies of groups (which datacenter — or any
//! label value — their applications and jobs run in). Every switch needs a `--reason`, which the
//! node records with the caller in the event history.
//!
//! It must never decide anything itself: the node validates and answers with named fields.

use serde_json::{json, Value};

use super::client::{ApiArgs, CliError, Client};
use super::flags;
use super::table::{self, Table};
use super::{items, print_json};

/// `rota traffic` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TrafficCommand {
    /// Set (or replace) a group's policy: where it runs, where it fails over to, a split.
    #[command(after_help = "\
Examples:
  $ rota traffic set billing --preferred dc1 --backup dc2 --reason \"initial placement\"
  $ rota traffic set billing --preferred dc2 --backup dc1 --percent 90 --reason \"move 10% back to dc1 (canary)\"

Applications join a group with `rota app create|update NAME --traffic-group GROUP`.")]
    Set(SetArgs),
    /// Every policy: the share each side gets now, and its live nodes.
    #[command(after_help = "\
Examples:
  $ rota traffic list")]
    List,
    /// One group's policy.
    #[command(after_help = "\
Examples:
  $ rota traffic show billing")]
    Show {
        /// Traffic group.
        group: String,
    },
    /// Remove a group's policy (its work runs wherever its selectors allow).
    #[command(after_help = "\
Examples:
  $ rota traffic delete billing --reason \"back to selectors only\"")]
    Delete {
        /// Traffic group.
        group: String,
        /// Why (recorded in the event history).
        #[arg(long)]
        reason: String,
    },
}

/// `rota traffic set`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// Traffic group (applications name it in `traffic_group`).
    pub group: String,
    /// Where the group runs, e.g. `dc1`.
    #[arg(long)]
    pub preferred: String,
    /// Where it fails over to (and where a split sends the rest).
    #[arg(long)]
    pub backup: Option<String>,
    /// Percentage of keys on the preferred side, for a gradual move (default 100).
    #[arg(long, value_name = "0-100")]
    pub percent: Option<i32>,
    /// The node label switched (default `dc`).
    #[arg(long)]
    pub label: Option<String>,
    /// Jobs: split per run instead of keeping each job on one side.
    #[arg(long)]
    pub no_sticky: bool,
    /// Do not move to the backup automatically when the preferred side has no live node.
    #[arg(long)]
    pub no_failover: bool,
    /// Stay on the backup after a failover until an admin switches back.
    #[arg(long)]
    pub no_failback: bool,
    /// Why (recorded in the event history).
    #[arg(long)]
    pub reason: String,
}

/// Run one `rota traffic` command.
pub fn run(api: &ApiArgs, command: &TrafficCommand) -> Result<(), CliError> {
    run_command(api, command).map_err(|e| e.with_flags(flags::TRAFFIC_SET))
}

fn run_command(api: &ApiArgs, command: &TrafficCommand) -> Result<(), CliError> {
    let client = Client::new(api);
    let (policy, what) = match command {
        TrafficCommand::List => {
            let page = client.get("/api/v1/traffic", &[])?;
            if api.json {
                return print_json(&page);
            }
            let mut t =
                Table::new(&["GROUP", "LABEL", "PREFERRED", "BACKUP", "ACTIVE", "FAILED OVER", "LIVE", "BY", "REASON"]);
            for p in items(&page) {
                t.row(vec![
                    table::cell(&p["group"]),
                    table::cell(&p["label"]),
                    table::cell(&p["preferred"]),
                    table::cell(&p["backup"]),
                    shares(&p["active"]),
                    table::cell(&p["failed_over"]),
                    shares(&p["live_nodes"]),
                    table::cell(&p["updated_by"]),
                    table::cell(&p["reason"]),
                ]);
            }
            print!("{}", t.render());
            return Ok(());
        }
        TrafficCommand::Show { group } => (client.get(&format!("/api/v1/traffic/{group}"), &[])?, None),
        TrafficCommand::Set(a) => {
            let mut body = json!({
                "preferred": a.preferred, "reason": a.reason,
                "sticky": !a.no_sticky, "auto_failover": !a.no_failover, "auto_failback": !a.no_failback,
            });
            for (k, v) in [("backup", &a.backup), ("label", &a.label)] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(p) = a.percent {
                body["percent"] = json!(p);
            }
            (client.put(&format!("/api/v1/traffic/{}", a.group), &body)?, Some("set"))
        }
        TrafficCommand::Delete { group, reason } => {
            client.delete(&format!("/api/v1/traffic/{group}"), &[("reason", reason.clone())])?;
            if api.json {
                return print_json(&json!({ "deleted": group }));
            }
            println!("traffic policy of group {group} removed");
            return Ok(());
        }
    };
    if api.json {
        return print_json(&policy);
    }
    if let Some(what) = what {
        // When nodes apply it depends on the database (at once on PostgreSQL, which announces
        // it; docs/jobs.md): the message claims no timing.
        println!("traffic policy of group {} {what}:", table::cell(&policy["group"]));
    }
    print!(
        "{}",
        table::fields(&[
            ("group", table::cell(&policy["group"])),
            ("label", table::cell(&policy["label"])),
            ("preferred", table::cell(&policy["preferred"])),
            ("backup", table::cell(&policy["backup"])),
            ("active", shares(&policy["active"])),
            ("failed over", table::cell(&policy["failed_over"])),
            ("live nodes", shares(&policy["live_nodes"])),
            ("sticky", table::cell(&policy["sticky"])),
            ("auto failover", table::cell(&policy["auto_failover"])),
            ("auto failback", table::cell(&policy["auto_failback"])),
            ("updated by", table::cell(&policy["updated_by"])),
            ("reason", table::cell(&policy["reason"])),
            ("updated", table::cell(&policy["updated_at"])),
        ])
    );
    Ok(())
}

/// `{"dc1": 50, "dc2": 50}` as `dc1=50 dc2=50`.
fn shares(v: &Value) -> String {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", table::cell(v))).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
