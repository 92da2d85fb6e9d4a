//! The admin CLI (`rota app|task|cluster|events`) as a user runs it: the real binary against a
//! real node with API tokens, checking stdout, stderr and exit codes.

mod common;

use std::process::ExitStatus;
use std::time::Duration;

use common::{fast_toml, free_port, rota, run, wait_until, Node};
use serde_json::Value;

const ADMIN: &str = "admin-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";

fn node() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rota.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\ntokens = [{{ name = \"ops\", token = \"{ADMIN}\", scope = \"admin\" }}, \
             {{ name = \"grafana\", token = \"{READER}\", scope = \"read\" }}]\n\
             {}[membership.labels]\ntier = \"web\"\n",
            fast_toml(&[("retry_base_ms", "50"), ("retry_max_ms", "100")])
        ),
    )
    .unwrap();
    let node = Node::start(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    wait_until(Duration::from_secs(10), "ready", || node.get("/readyz").0 == 200);
    (dir, node)
}

/// `rota ARGS --url NODE --token TOKEN`: (status, stdout, stderr).
fn cli_as(node: &Node, token: &str, args: &[&str]) -> (ExitStatus, String, String) {
    run(rota().args(args).args(["--url", &node.url(""), "--token", token]))
}

fn cli(node: &Node, args: &[&str]) -> (ExitStatus, String, String) {
    cli_as(node, ADMIN, args)
}

/// Run, expect success, return stdout.
fn ok(node: &Node, args: &[&str]) -> String {
    let (status, out, err) = cli(node, args);
    assert!(status.success(), "rota {args:?} failed with {status}\nstdout: {out}\nstderr: {err}");
    out
}

/// Run with `--json`, expect success, parse stdout as one JSON document.
fn json(node: &Node, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(node, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("rota {args:?} printed no JSON ({e}): {out}"))
}

/// Run, expect exit 1, return stderr.
fn fails(node: &Node, args: &[&str]) -> String {
    let (status, out, err) = cli(node, args);
    assert_eq!(status.code(), Some(1), "rota {args:?}: expected exit 1\nstdout: {out}\nstderr: {err}");
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{err}");
    err
}

#[test]
fn application_lifecycle() {
    let (_dir, node) = node();
    let out =
        ok(&node, &["app", "create", "demo", "--driver", "noop", "--selector", "tier=web", "--max-restarts", "2"]);
    assert!(out.contains("created application 1 `demo`"), "{out}");
    let other = json(&node, &["app", "create", "other", "--driver", "noop", "--spec", r#"{"delay_ms": 1}"#]);
    assert_eq!((other["id"].as_i64(), other["spec"]["delay_ms"].as_i64()), (Some(2), Some(1)));

    let table = ok(&node, &["app", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATE"), "{table}");
    assert!(lines[1].contains("demo") && lines[1].contains("stopped") && lines[2].contains("other"), "{table}");
    // --all follows `next` links and prints one document.
    let all = json(&node, &["app", "list", "--limit", "1", "--all"]);
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    let one = json(&node, &["app", "list", "--limit", "1"]);
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    assert!(one["next"].is_string());
    assert_eq!(json(&node, &["app", "list", "--driver", "shell"])["items"], serde_json::json!([]));

    let shown = ok(&node, &["app", "show", "demo"]);
    assert!(shown.contains("name:") && shown.contains("demo") && shown.contains("tier=web"), "{shown}");
    assert!(shown.contains("recent events:") && shown.contains("app.created"), "{shown}");

    // start --wait: progress on stderr, the outcome on stdout.
    let (status, out, err) = cli(&node, &["app", "start", "demo", "--wait", "--timeout", "30"]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("application 1 is running"), "{out}");
    assert!(err.contains("task ") && err.contains("succeeded") && err.contains("application 1: running"), "{err}");
    let app = json(&node, &["app", "show", "1"]);
    assert_eq!(app["state"], "running");
    assert!(app["recent_events"].is_array());

    let events = ok(&node, &["events", "--app", "demo", "--kind", "app.state"]);
    assert!(events.lines().count() >= 2 && events.contains("is running"), "{events}");
    let events = json(&node, &["events", "--app", "1", "--limit", "1"]);
    assert_eq!(events["items"].as_array().unwrap().len(), 1);

    // A running application is not deleted without --force; the API's message says so.
    let err = fails(&node, &["app", "delete", "demo"]);
    assert!(err.contains("is not stopped"), "{err}");

    let (status, out, err) = cli(&node, &["app", "stop", "1", "--wait"]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("is stopped") && err.contains("application 1: stopped"), "{err}");

    // restart without --wait just reports the task.
    let out = ok(&node, &["app", "restart", "other"]);
    assert!(out.contains("restart requested for application 2: task"), "{out}");

    assert!(ok(&node, &["app", "delete", "demo"]).contains("deleted application 1"));
    let err = fails(&node, &["app", "show", "1"]);
    assert!(err.contains("no application with id 1"), "{err}");
    let err = fails(&node, &["app", "show", "demo"]);
    assert!(err.contains("no application named `demo`"), "{err}");
    assert!(ok(&node, &["app", "delete", "other", "--force"]).contains("deleted application 2"));
}

#[test]
fn start_wait_reports_the_task_error() {
    let (_dir, node) = node();
    ok(&node, &["app", "create", "broken", "--driver", "noop", "--spec", r#"{"fail": "start"}"#]);
    let err = fails(&node, &["app", "start", "broken", "--wait", "--timeout", "30"]);
    assert!(err.contains("task 1 failed") && err.contains("noop asked to fail start"), "{err}");

    // A wait that cannot finish in time says so and exits 1.
    ok(&node, &["app", "create", "slow", "--driver", "noop", "--spec", r#"{"delay_ms": 5000}"#]);
    let err = fails(&node, &["app", "start", "slow", "--wait", "--timeout", "1"]);
    assert!(err.contains("timed out after 1s"), "{err}");
}

#[test]
fn start_wait_fails_for_an_application_that_exits_at_once() {
    let (_dir, node) = node();
    let spec = r#"{"command": ["sh", "-c", "echo starting; exit 3"]}"#;
    for policy in ["on_failure", "never"] {
        let name = format!("exits-{policy}");
        ok(&node, &["app", "create", &name, "--driver", "process", "--spec", spec, "--restart-policy", policy]);
        let err = fails(&node, &["app", "start", &name, "--wait", "--timeout", "30"]);
        assert!(err.contains("waiting for a status check to confirm"), "{err}");
        assert!(err.contains("exited with code 3"), "{policy}: the reason: {err}");
    }
    // One that keeps running is confirmed by the check, which the events record.
    ok(&node, &["app", "create", "stays", "--driver", "process", "--spec", r#"{"command": ["sleep", "30"]}"#]);
    let out = ok(&node, &["app", "start", "stays", "--wait", "--timeout", "30"]);
    assert!(out.contains("confirmed by a status check"), "{out}");
    let events = ok(&node, &["events", "--app", "stays", "--kind", "app.confirmed"]);
    assert!(events.contains("first status check"), "{events}");
    ok(&node, &["app", "stop", "stays", "--wait"]);
}

#[test]
fn events_show_the_node_of_each_event() {
    let (_dir, node) = node();
    ok(&node, &["app", "create", "demo", "--driver", "noop"]);
    let table = ok(&node, &["events"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let column = header.iter().position(|h| *h == "NODE").unwrap_or_else(|| panic!("no NODE column: {table}"));
    let node_id = json(&node, &["cluster", "status"])["self"]["node_id"].as_str().unwrap().to_string();
    let joined = table.lines().find(|l| l.contains("membership.joined")).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(joined.split_whitespace().nth(column), Some(node_id.as_str()), "{table}");
    let by_node = ok(&node, &["events", "--node", &node_id]);
    assert!(by_node.contains("membership.joined"), "{by_node}");
}

#[test]
fn tasks_submit_list_show_cancel() {
    let (_dir, node) = node();
    let out = ok(
        &node,
        &[
            "task",
            "submit",
            "run",
            "--run-after",
            "2999-01-01T00:00:00Z",
            "--idempotency-key",
            "k-1",
            "--priority",
            "-1",
        ],
    );
    assert!(out.contains("submitted task 1"), "{out}");
    let err = fails(&node, &["task", "submit", "run", "--idempotency-key", "k-1"]);
    assert!(err.contains("already used by task 1"), "{err}");

    let shown = ok(&node, &["task", "show", "1"]);
    assert!(shown.contains("status:") && shown.contains("pending") && shown.contains("k-1"), "{shown}");
    let listed = ok(&node, &["task", "list", "--status", "pending"]);
    assert!(listed.lines().nth(1).is_some_and(|l| l.starts_with("1 ") && l.contains("run")), "{listed}");
    assert_eq!(json(&node, &["task", "list", "--until", "2000-01-01T00:00:00+01:00"])["items"], serde_json::json!([]));

    let out = ok(&node, &["task", "cancel", "1"]);
    assert!(out.contains("task 1 is cancelled"), "{out}");
    let err = fails(&node, &["task", "cancel", "1"]);
    assert!(err.contains("only pending tasks can be cancelled"), "{err}");

    let accepted = json(&node, &["task", "submit", "run", "--payload", r#"{"n": 1}"#, "--max-attempts", "2"]);
    let id = accepted["task_id"].as_i64().unwrap().to_string();
    wait_until(Duration::from_secs(15), "the run task to succeed", || {
        json(&node, &["task", "show", &id])["status"] == "succeeded"
    });
    let done = json(&node, &["task", "list", "--status", "succeeded", "--all"]);
    assert_eq!(done["items"][0]["id"].to_string(), id, "{done}");
    assert!(done["items"][0].get("payload").is_none(), "lists leave payloads out: {done}");
    assert_eq!(json(&node, &["task", "show", &id])["payload"]["n"], 1);
    let events = ok(&node, &["events", "--task", &id]);
    assert!(events.contains("task.submitted") && events.contains("ops"), "{events}");

    // The API validates; the CLI passes the field along.
    let err = fails(&node, &["task", "submit", "run", "--payload", "[1]"]);
    assert!(err.contains("payload"), "{err}");
}

#[test]
fn cluster_status_and_owner() {
    let (_dir, node) = node();
    let status = json(&node, &["cluster", "status"]);
    let me = status["self"]["node_id"].as_str().unwrap().to_string();
    let text = ok(&node, &["cluster", "status"]);
    assert!(text.contains(&me) && text.contains("joined") && text.contains("1 member(s)"), "{text}");

    let owner = ok(&node, &["cluster", "owner", "42"]);
    assert!(owner.lines().any(|l| l.starts_with("owner:") && l.contains(&me)), "{owner}");
    let o = json(&node, &["cluster", "owner", "42"]);
    assert_eq!(o["explanation"]["owner"]["node_id"], me.as_str());
    let none = ok(&node, &["cluster", "owner", "42", "--selector", "dc=mars,zone=a"]);
    assert!(none.contains("owner:") && none.contains("none"), "{none}");
    // A read token is enough for the read-only views.
    let (s, out, err) = cli_as(&node, READER, &["cluster", "status"]);
    assert!(s.success(), "{out}{err}");

    // Events recorded by this node, and by no other.
    ok(&node, &["app", "create", "a", "--driver", "noop"]);
    let mine = json(&node, &["events", "--node", &me]);
    assert!(!mine["items"].as_array().unwrap().is_empty(), "{mine}");
    assert_eq!(json(&node, &["events", "--node", "someone-else"])["items"], serde_json::json!([]));
}

#[test]
fn errors_are_clear_and_exit_1() {
    let (_dir, node) = node();
    // Invalid spec: the API's message and each field.
    let err = fails(&node, &["app", "create", "p", "--driver", "process", "--spec", r#"{"stop_grace_ms": -1}"#]);
    assert!(err.lines().any(|l| l.trim_start().starts_with("spec.command:")), "{err}");
    assert!(err.lines().any(|l| l.trim_start().starts_with("spec.stop_grace_ms:")), "{err}");
    let err = fails(&node, &["app", "create", "d", "--driver", "docker"]);
    assert!(err.contains("unknown driver"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = fails(&node, &["app", "create", "f", "--driver", "noop", "--spec-file", missing.to_str().unwrap()]);
    assert!(err.contains("cannot read --spec-file"), "{err}");
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, r#"{"delay_ms": 2}"#).unwrap();
    let app = json(&node, &["app", "create", "f", "--driver", "noop", "--spec-file", spec.to_str().unwrap()]);
    assert_eq!(app["spec"]["delay_ms"], 2);

    // A wrong token: the hint, and the token itself is never echoed.
    let (s, out, err) = cli_as(&node, "wrong-token-wrong-token", &["app", "list"]);
    assert_eq!(s.code(), Some(1), "{out}{err}");
    assert!(err.contains("unknown token") && err.contains("--token") && err.contains("ROTA_TOKEN"), "{err}");
    assert!(!err.contains("wrong-token-wrong-token") && !out.contains("wrong-token"));
    // A read token cannot change things.
    let (s, _, err) = cli_as(&node, READER, &["app", "create", "x", "--driver", "noop"]);
    assert_eq!(s.code(), Some(1));
    assert!(err.contains("admin"), "{err}");
    // The token from the environment works, and no token at all is a 401 with the hint.
    let (s, out, err) = run(rota().args(["app", "list", "--url", &node.url("")]).env("ROTA_TOKEN", ADMIN));
    assert!(s.success(), "{out}{err}");
    let (s, _, err) = run(rota().args(["app", "list"]).env("ROTA_URL", node.url("")));
    assert_eq!(s.code(), Some(1));
    assert!(err.contains("missing credentials") && err.contains("ROTA_TOKEN"), "{err}");
    // --help does not print the token from the environment.
    let (_, help, _) = run(rota().args(["app", "list", "--help"]).env("ROTA_TOKEN", ADMIN));
    assert!(help.contains("--token") && !help.contains(ADMIN), "{help}");

    // Nothing listening.
    let url = format!("http://127.0.0.1:{}", free_port());
    let (s, _, err) = run(rota().args(["app", "list", "--url", &url]));
    assert_eq!(s.code(), Some(1));
    assert!(
        err.starts_with(&format!("error: cannot reach the Rota node at {url} (is it running? set --url or ROTA_URL)")),
        "{err}"
    );

    // Usage errors are clap's: exit 2.
    for args in [
        &["task", "submit", "run", "--payload", "{not json"][..],
        &["task", "submit", "run", "--run-after", "tomorrow"],
        &["app", "create", "x"],
        &["app", "start", "x", "--timeout", "5"],
    ] {
        let (s, _, err) = cli(&node, args);
        assert_eq!(s.code(), Some(2), "rota {args:?}: {err}");
    }
}

#[test]
fn jobs_and_traffic_from_the_command_line() {
    let (_dir, node) = node();
    ok(&node, &["app", "create", "j", "--driver", "noop"]);
    let accepted = json(
        &node,
        &["task", "submit", "run", "--app", "j", "--routing", "sharding", "--shards", "3", "--timeout-ms", "5000"],
    );
    let id = accepted["task_id"].as_i64().unwrap().to_string();
    wait_until(Duration::from_secs(20), "sharded job done", || {
        json(&node, &["task", "show", &id])["status"] == "succeeded"
    });
    let shown = ok(&node, &["task", "show", &id]);
    assert!(shown.contains("routing") && shown.contains("sharding") && shown.contains("stage"), "{shown}");
    let kids = ok(&node, &["task", "children", &id]);
    assert_eq!(kids.lines().filter(|l| l.contains("succeeded")).count(), 3, "{kids}");
    assert!(kids.lines().next().unwrap().contains("SHARD"), "{kids}");

    let err = fails(&node, &["task", "submit", "run", "--routing", "fastest"]);
    assert!(err.contains("routing") && err.contains("round_robin"), "{err}");
    let err = fails(&node, &["task", "submit", "run", "--routing", "sharding", "--shards", "0"]);
    assert!(err.contains("shard_total"), "{err}");
    let err = fails(&node, &["task", "submit", "run", "--selector", "dc"]);
    assert!(err.contains("expected key=value"), "{err}");

    let out = ok(
        &node,
        &["traffic", "set", "g", "--preferred", "dc1", "--backup", "dc2", "--percent", "80", "--reason", "canary"],
    );
    assert!(out.contains("dc1=80 dc2=20") && out.contains("canary"), "{out}");
    let list = ok(&node, &["traffic", "list"]);
    assert!(list.lines().nth(1).is_some_and(|l| l.starts_with("g ") && l.contains("ops")), "{list}");
    let err = fails(&node, &["traffic", "set", "g", "--preferred", "dc1", "--percent", "150", "--reason", "x"]);
    assert!(err.contains("percent"), "{err}");
    let events = ok(&node, &["events", "--kind", "traffic.switched"]);
    assert!(events.contains("canary"), "{events}");
    ok(&node, &["traffic", "delete", "g", "--reason", "done"]);
    assert!(fails(&node, &["traffic", "show", "g"]).contains("no traffic policy"));
}
