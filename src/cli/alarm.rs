//! `rota channel …` and `rota alarm …`: where alarm messages go, which events send them, and
//! what became of each delivery, through the REST API (docs/alarms.md).
//!
//! Why it exists: an operator sets alarms up once and looks at them when a message did not
//! arrive: `channel test` sends a test message and prints what the receiver answered, and
//! `alarm deliveries` shows each delivery's attempts and last answer.
//!
//! It must never validate what the node validates (kinds, URLs, event kinds): the API answers
//! with named fields and this module prints them with the flags that set them.

use serde_json::{json, Value};

use super::client::{ApiArgs, CliError, Client};
use super::flags;
use super::schedule::parse_duration_ms;
use super::table::{self, Table};
use super::{items, list_pages, parse_json, parse_pair, print_json};

/// `rota channel` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ChannelCommand {
    /// Create a channel: a webhook, a chat robot (slack, dingtalk, feishu, wecom) or e-mail.
    #[command(after_help = "\
Examples:
  $ rota channel create ops --kind webhook --endpoint http://127.0.0.1:9/rota --secret s3cret
  $ rota channel create team-chat --kind slack --endpoint https://hooks.slack.com/services/T000/B000/XXXX
  $ rota channel create oncall --kind email --config '{\"host\": \"127.0.0.1\", \"port\": 25, \"from\": \"rota@example.org\", \"to\": [\"oncall@example.org\"]}'
  $ rota channel create mail --kind email --config '{\"host\": \"smtp.example.org\", \"tls\": \"starttls\", \"username\": \"rota\", \"password\": \"…\", \"from\": \"rota@example.org\", \"to\": [\"oncall@example.org\"]}'")]
    Create {
        /// Unique name: letters, digits, `-`, `_`, `.`.
        name: String,
        /// webhook, slack, dingtalk, feishu, wecom or email.
        #[arg(long)]
        kind: String,
        /// The URL to POST to (webhook and robots); `--url` is the node's.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// Signing secret: the webhook's HMAC-SHA256 key, or the DingTalk / Feishu robot's.
        #[arg(long)]
        secret: Option<String>,
        /// Time limit of one attempt (e.g. 5s; default alarms.timeout_ms).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
        timeout: Option<i64>,
        /// More config as a JSON object (e-mail: host, port, tls, from, to, username, password;
        /// any kind: ca_file, a PEM file of the CAs to trust instead of Mozilla's roots).
        #[arg(long, value_name = "JSON", value_parser = parse_json)]
        config: Option<Value>,
    },
    /// Send a test message now, from the node you ask, and print the receiver's answer.
    #[command(after_help = "\
Examples:
  $ rota channel test ops")]
    Test {
        /// Channel id or name.
        channel: String,
    },
    /// List channels (secrets shown as ***).
    #[command(after_help = "\
Examples:
  $ rota channel list")]
    List {
        /// Page size (1..=500; the API's default is 50).
        #[arg(long, value_name = "N")]
        limit: Option<i64>,
    },
}

/// `rota alarm` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AlarmCommand {
    /// Create an alarm: which events, filtered how, go to which channels.
    #[command(after_help = "\
Examples:
  $ rota alarm create failures --on task.failed --on app.failed --channel ops
  $ rota alarm create dc1-nodes --on membership.lost --on membership.fenced --node-label dc=dc1 --channel ops --channel oncall --throttle 5m")]
    Create {
        /// Unique name: letters, digits, `-`, `_`, `.`.
        name: String,
        /// An event kind (repeatable): task.failed, app.failed, traffic.failover, membership.lost, …
        #[arg(long = "on", value_name = "KIND", required = true)]
        on: Vec<String>,
        /// A channel name (repeatable).
        #[arg(long = "channel", value_name = "NAME", required = true)]
        channels: Vec<String>,
        /// Only events of this application (repeatable).
        #[arg(long = "app", value_name = "NAME")]
        apps: Vec<String>,
        /// Only events of this traffic group (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Only events about a node with this label (repeatable, key=value).
        #[arg(long = "node-label", value_name = "KEY=VALUE", value_parser = parse_pair)]
        node_labels: Vec<(String, String)>,
        /// For app.state: only these states (repeatable), e.g. failed.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// One message per key per window (e.g. 5m), saying how many events it folds.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
        throttle: Option<i64>,
    },
    /// List alarms.
    #[command(after_help = "\
Examples:
  $ rota alarm list")]
    List {
        /// Page size (1..=500; the API's default is 50).
        #[arg(long, value_name = "N")]
        limit: Option<i64>,
    },
    /// Deliveries, newest first: each message, its attempts and the receiver's last answer.
    #[command(after_help = "\
Examples:
  $ rota alarm deliveries --channel ops
  $ rota alarm deliveries --status failed --limit 20")]
    Deliveries {
        /// Only this channel (id or name).
        #[arg(long)]
        channel: Option<String>,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        /// Page size (1..=500; the API's default is 50).
        #[arg(long, value_name = "N")]
        limit: Option<i64>,
    },
}

/// Run one `rota channel` command.
pub fn channel(api: &ApiArgs, command: &ChannelCommand) -> Result<(), CliError> {
    let client = Client::new(api);
    match command {
        ChannelCommand::Create { name, kind, endpoint, secret, timeout, config } => {
            let mut cfg = config.clone().unwrap_or_else(|| json!({}));
            if !cfg.is_object() {
                return Err(CliError::Input("--config must be a JSON object".into()));
            }
            for (k, v) in [
                ("url", endpoint.as_ref().map(|u| json!(u))),
                ("secret", secret.as_ref().map(|s| json!(s))),
                ("timeout_ms", timeout.map(|t| json!(t))),
            ] {
                if let Some(v) = v {
                    cfg[k] = v;
                }
            }
            let body = json!({ "name": name, "kind": kind, "config": cfg });
            let c = client.post("/api/v1/channels", Some(&body)).map_err(|e| e.with_flags(flags::CHANNEL_CREATE))?;
            if api.json {
                return print_json(&c);
            }
            println!(
                "created channel {} `{}` ({}); try it with `rota channel test {}`",
                table::cell(&c["id"]),
                table::cell(&c["name"]),
                table::cell(&c["kind"]),
                table::cell(&c["name"])
            );
            Ok(())
        }
        ChannelCommand::Test { channel } => {
            let a = client.post(&format!("/api/v1/channels/{}/test", path(channel)), None)?;
            if api.json {
                return print_json(&a);
            }
            let status = a["status"].as_i64().map_or("no answer".to_string(), |s| s.to_string());
            if a["delivered"] == true {
                println!("delivered: the receiver answered {status}");
            } else {
                println!("NOT delivered: {}", table::cell(&a["error"]));
            }
            if let Some(body) = a["body"].as_str().filter(|b| !b.is_empty()) {
                println!("answer: {body}");
            }
            Ok(())
        }
        ChannelCommand::List { limit } => {
            let query: Vec<(&str, String)> = limit.iter().map(|n| ("limit", n.to_string())).collect();
            let page =
                list_pages(&client, "/api/v1/channels", &query, false).map_err(|e| e.with_flags(flags::LIMIT))?;
            if api.json {
                return print_json(&page);
            }
            let mut t = Table::new(&["ID", "NAME", "KIND", "TARGET", "OWNER"]);
            for c in items(&page) {
                let target = c["config"]["url"].as_str().map(str::to_string).unwrap_or_else(|| {
                    c["config"]["to"]
                        .as_array()
                        .map(|to| to.iter().map(table::cell).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                });
                t.row(vec![
                    table::cell(&c["id"]),
                    table::cell(&c["name"]),
                    table::cell(&c["kind"]),
                    target,
                    table::cell(&c["owner_node"]),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}

/// A path segment for a channel id or name (names are letters, digits, `-`, `_`, `.`).
fn path(channel: &str) -> String {
    url::form_urlencoded::byte_serialize(channel.as_bytes()).collect()
}

/// Run one `rota alarm` command.
pub fn alarm(api: &ApiArgs, command: &AlarmCommand) -> Result<(), CliError> {
    let client = Client::new(api);
    match command {
        AlarmCommand::Create { name, on, channels, apps, groups, node_labels, states, throttle } => {
            let mut filter = json!({});
            if !apps.is_empty() {
                filter["apps"] = json!(apps);
            }
            if !groups.is_empty() {
                filter["traffic_groups"] = json!(groups);
            }
            if !node_labels.is_empty() {
                filter["node_labels"] =
                    json!(node_labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>());
            }
            if !states.is_empty() {
                filter["states"] = json!(states);
            }
            let mut body = json!({ "name": name, "on": on, "channels": channels, "filter": filter });
            if let Some(ms) = throttle {
                body["throttle_s"] = json!((ms + 999) / 1000);
            }
            let a = client.post("/api/v1/alarms", Some(&body)).map_err(|e| e.with_flags(flags::ALARM_CREATE))?;
            if api.json {
                return print_json(&a);
            }
            println!(
                "created alarm {} `{}`: {} → {}",
                table::cell(&a["id"]),
                table::cell(&a["name"]),
                on.join(", "),
                channels.join(", ")
            );
            Ok(())
        }
        AlarmCommand::List { limit } => {
            let query: Vec<(&str, String)> = limit.iter().map(|n| ("limit", n.to_string())).collect();
            let page = list_pages(&client, "/api/v1/alarms", &query, false).map_err(|e| e.with_flags(flags::LIMIT))?;
            if api.json {
                return print_json(&page);
            }
            let mut t = Table::new(&["ID", "NAME", "ON", "FILTER", "CHANNELS", "THROTTLE S"]);
            let join = |v: &Value| {
                v.as_array().map(|a| a.iter().map(table::cell).collect::<Vec<_>>().join(",")).unwrap_or_default()
            };
            for a in items(&page) {
                t.row(vec![
                    table::cell(&a["id"]),
                    table::cell(&a["name"]),
                    join(&a["on"]),
                    a["filter"].to_string(),
                    join(&a["channels"]),
                    table::cell(&a["throttle_s"]),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        AlarmCommand::Deliveries { channel, status, limit } => {
            let mut query: Vec<(&str, String)> = Vec::new();
            for (k, v) in
                [("channel", channel.clone()), ("status", status.clone()), ("limit", limit.map(|n| n.to_string()))]
            {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let page = list_pages(&client, "/api/v1/alarms/deliveries", &query, false)
                .map_err(|e| e.with_flags(flags::DELIVERIES))?;
            if api.json {
                return print_json(&page);
            }
            let mut t = Table::new(&[
                "ID", "CHANNEL", "EVENT", "FOLDED", "STATUS", "ATTEMPTS", "LAST", "NEXT AT", "NODE", "ERROR",
            ]);
            for d in items(&page) {
                t.row(vec![
                    table::cell(&d["id"]),
                    table::cell(&d["channel_id"]),
                    table::cell(&d["event_id"]),
                    table::cell(&d["folded"]),
                    table::cell(&d["status"]),
                    table::cell(&d["attempts"]),
                    table::cell(&d["last_status"]),
                    table::cell(&d["next_at"]),
                    table::cell(&d["owner_node"]),
                    table::cell(&d["last_error"]),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}
