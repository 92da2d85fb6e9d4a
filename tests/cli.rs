//! The admin CLI (`rota app|task|cluster|events`) as a user runs it: the real binary against a
//! real node with API tokens, checking stdout, stderr and exit codes.
//!
//! Examples are tested as written. Every `--help` marks its examples as lines starting with
//! `  $ rota ` under an `Examples:` heading; [`every_help_example_runs_against_a_node`] walks the
//! command tree (`rota --help`, then each subcommand's), requires examples of every command but
//! `serve` (which does not return), and runs them all, in the order the tree lists them, against
//! one node: SQLite for the queue, a private etcd for membership (so `cluster drain` works). The
//! README's tour, every line that starts with `target/release/rota ` in its code blocks, runs the
//! same way in [`readme_tour_runs_against_a_node`]; its placeholders are filled in (`NODE`: the node
//! id, `NODE-ADDR`: its address, `ID`: the task the previous `task submit` printed). Not run: the
//! `rota serve` loop of the cluster walk-through (it starts the nodes) and the `curl`, `sqlite3` and
//! `createdb` lines.

mod common;

use std::process::ExitStatus;
use std::time::Duration;

use common::{fast_toml, free_port, rota, run, wait_until, Etcd, Node};
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

/// Run, expect a usage error (exit 2), return stderr.
fn usage(node: &Node, args: &[&str]) -> String {
    let (status, out, err) = cli(node, args);
    assert_eq!(status.code(), Some(2), "rota {args:?}: expected exit 2\nstdout: {out}\nstderr: {err}");
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{err}");
    err
}

#[test]
fn application_lifecycle() {
    let (_dir, node) = node();
    let out =
        ok(&node, &["app", "create", "demo", "--driver", "noop", "--selector", "tier=web", "--max-restarts", "2"]);
    assert!(out.contains("created application 1 `demo`"), "{out}");
    // Both uses: start it, or use it as a job handler, which needs no start.
    assert!(out.contains("rota app start demo") && out.contains("rota task submit run --app demo"), "{out}");
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

    // A running application is not deleted without --force; the message names the flag.
    let err = fails(&node, &["app", "delete", "demo"]);
    assert!(err.contains("is not stopped") && err.contains("--force") && !err.contains("?force"), "{err}");

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
    // Invalid spec: each field once, named as the flag that holds it.
    let err = fails(&node, &["app", "create", "p", "--driver", "process", "--spec", r#"{"stop_grace_ms": -1}"#]);
    assert!(err.lines().any(|l| l.trim_start().starts_with("`command` in --spec:")), "{err}");
    assert!(err.lines().any(|l| l.trim_start().starts_with("`stop_grace_ms` in --spec:")), "{err}");
    assert_eq!(err.matches("stop_grace_ms").count(), 1, "said once: {err}");
    // One invalid field: one line.
    let err = fails(&node, &["app", "create", "p", "--driver", "noop", "--max-restarts=-1"]);
    assert_eq!(err.trim_end(), "error: --max-restarts: must be 0 or more");
    let err = fails(&node, &["app", "create", "d", "--driver", "docker"]);
    assert!(err.contains("unknown driver"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = usage(&node, &["app", "create", "f", "--driver", "noop", "--spec-file", missing.to_str().unwrap()]);
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

    // Usage errors exit 2, whether clap or the CLI finds them.
    let not_json = dir.path().join("bad.json");
    std::fs::write(&not_json, "{oops").unwrap();
    for args in [
        &["task", "submit", "run", "--payload", "{not json"][..],
        &["task", "submit", "run", "--run-after", "tomorrow"],
        &["task", "submit", "run", "--selector", "dc9"],
        &["app", "create", "x"],
        &["app", "create", "x", "--driver", "noop", "--selector", "dc9"],
        &["app", "create", "x", "--driver", "noop", "--spec-file", not_json.to_str().unwrap()],
        &["app", "start", "x", "--timeout", "5"],
        &["app", "update", "f"],
        &["app", "update", "f", "--traffic-group", "g", "--clear-traffic-group"],
        &["cluster", "owner", "1", "--selector", "dc9"],
        &["schedule", "create", "s", "--every", "5"],
        &["ring", "simulate", "--nodes", "0"],
        &["ring", "simulate", "--nodes", "3", "--weights", "1,1"],
    ] {
        usage(&node, args);
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
    // A finished parent has no stage left, and says what its children did.
    assert!(shown.contains("routing") && shown.contains("sharding") && !shown.contains("stage"), "{shown}");
    assert!(shown.contains("children:        3: 3 succeeded"), "{shown}");
    let kids = ok(&node, &["task", "children", &id]);
    assert_eq!(kids.lines().filter(|l| l.contains("succeeded")).count(), 3, "{kids}");
    assert!(kids.lines().next().unwrap().contains("SHARD"), "{kids}");

    let err = fails(&node, &["task", "submit", "run", "--routing", "fastest"]);
    assert!(err.contains("routing") && err.contains("round_robin"), "{err}");
    let err = fails(&node, &["task", "submit", "run", "--routing", "sharding", "--shards", "0"]);
    assert!(err.contains("--shards") && !err.contains("shard_total"), "{err}");
    // The flag to add is named, not the API's field.
    let err = fails(&node, &["task", "submit", "run", "--shards", "3"]);
    assert_eq!(err.trim_end(), "error: --shards: only with --routing `sharding`");
    let err = usage(&node, &["task", "submit", "run", "--selector", "dc"]);
    assert!(err.contains("key=value"), "{err}");

    let out = ok(
        &node,
        &["traffic", "set", "g", "--preferred", "dc1", "--backup", "dc2", "--percent", "80", "--reason", "canary"],
    );
    assert!(out.contains("dc1=80 dc2=20") && out.contains("canary"), "{out}");
    assert!(out.starts_with("traffic policy of group g set") && !out.contains("reconciliation"), "{out}");
    let list = ok(&node, &["traffic", "list"]);
    assert!(list.lines().nth(1).is_some_and(|l| l.starts_with("g ") && l.contains("ops")), "{list}");
    let err = fails(&node, &["traffic", "set", "g", "--preferred", "dc1", "--percent", "150", "--reason", "x"]);
    assert!(err.contains("percent"), "{err}");
    let events = ok(&node, &["events", "--kind", "traffic.switched"]);
    assert!(events.contains("canary"), "{events}");
    ok(&node, &["traffic", "delete", "g", "--reason", "done"]);
    assert!(fails(&node, &["traffic", "show", "g"]).contains("no traffic policy"));
}

#[test]
fn update_changes_every_field_and_show_prints_them() {
    let (_dir, node) = node();
    let out = ok(&node, &["app", "create", "web", "--driver", "noop", "--traffic-group", "billing"]);
    assert!(out.contains("created application 1 `web`"), "{out}");
    let shown = ok(&node, &["app", "show", "web"]);
    assert!(shown.lines().any(|l| l.starts_with("traffic group:") && l.ends_with("billing")), "{shown}");

    let out = ok(
        &node,
        &[
            "app",
            "update",
            "web",
            "--spec",
            r#"{"delay_ms": 5}"#,
            "--selector",
            "tier=web",
            "--restart-policy",
            "always",
            "--max-restarts",
            "7",
            "--monitor-interval-ms",
            "250",
            "--traffic-group",
            "payments",
        ],
    );
    assert!(out.contains("updated application 1 `web`") && out.contains("payments"), "{out}");
    let app = json(&node, &["app", "show", "web"]);
    assert_eq!(app["spec"], serde_json::json!({"delay_ms": 5}));
    assert_eq!(app["selector"], serde_json::json!({"tier": "web"}));
    assert_eq!((app["restart_policy"].as_str(), app["max_restarts"].as_i64()), (Some("always"), Some(7)));
    assert_eq!((app["monitor_interval_ms"].as_i64(), app["traffic_group"].as_str()), (Some(250), Some("payments")));
    let events = ok(&node, &["events", "--app", "web", "--kind", "app.updated"]);
    assert!(events.contains("app.updated") && events.contains("ops"), "{events}");

    // What is not given stays; the clearing flags clear.
    let app =
        json(&node, &["app", "update", "1", "--clear-selector", "--clear-traffic-group", "--default-monitor-interval"]);
    assert_eq!(app["selector"], serde_json::json!({}));
    assert!(app["traffic_group"].is_null() && app["monitor_interval_ms"].is_null(), "{app}");
    assert_eq!((app["max_restarts"].as_i64(), &app["spec"]), (Some(7), &serde_json::json!({"delay_ms": 5})));

    // A spec read back with its secrets as *** can be sent as it is: the secret is kept.
    let dir = tempfile::tempdir().unwrap();
    ok(
        &node,
        &["app", "create", "p", "--driver", "process", "--spec", r#"{"command": ["true"], "env": {"KEY": "s3cret"}}"#],
    );
    let spec = json(&node, &["app", "show", "p"])["spec"].clone();
    assert_eq!(spec["env"]["KEY"], "***");
    let file = dir.path().join("spec.json");
    let mut edited = spec.clone();
    edited["command"] = serde_json::json!(["echo", "hi"]);
    std::fs::write(&file, edited.to_string()).unwrap();
    let app = json(&node, &["app", "update", "p", "--spec-file", file.to_str().unwrap()]);
    assert_eq!(
        (&app["spec"]["command"], &app["spec"]["env"]["KEY"]),
        (&serde_json::json!(["echo", "hi"]), &"***".into())
    );
    // A *** where nothing is stored is refused, named in the flag.
    let err = fails(&node, &["app", "update", "p", "--spec", r#"{"command": ["true"], "env": {"NEW": "***"}}"#]);
    assert!(err.contains("`env.NEW` in --spec"), "{err}");
    let err = fails(&node, &["app", "update", "p", "--restart-policy", "sometimes"]);
    assert!(err.starts_with("error: --restart-policy: `sometimes`"), "{err}");
    let err = fails(&node, &["app", "update", "nope", "--max-restarts", "1"]);
    assert!(err.contains("no application named `nope`"), "{err}");
}

/// What `app delete --help` says of --force: the owner stops what it runs at its next check.
#[test]
fn force_delete_stops_the_process_at_the_owners_next_check() {
    let (dir, node) = node();
    let pid_file = dir.path().join("pid");
    let spec = serde_json::json!({
        "command": ["sh", "-c", format!("echo $$ > {}; exec sleep 600", pid_file.display())]
    })
    .to_string();
    ok(&node, &["app", "create", "sleeper", "--driver", "process", "--spec", &spec, "--monitor-interval-ms", "200"]);
    ok(&node, &["app", "start", "sleeper", "--wait", "--timeout", "30"]);
    wait_until(Duration::from_secs(10), "the pid file", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
    };
    assert!(alive());
    assert!(ok(&node, &["app", "delete", "sleeper", "--force"]).contains("deleted application 1"));
    wait_until(Duration::from_secs(15), "the deleted application's process to be stopped", || !alive());
    let events = json(&node, &["events", "--kind", "app.deleted"]);
    assert!(events["items"][0]["message"].as_str().is_some_and(|m| m.contains("(forced)")), "{events}");
}

/// Split a shell command line as `sh` would for the quoting the examples use: single quotes,
/// double quotes with `\"` and `\\`, backslashes, and a `#` comment at the start of a word.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref().take_while(|&c| c != '\'') {
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => w.push(n),
                            Some(n) => {
                                w.push('\\');
                                w.push(n);
                            }
                            None => w.push('\\'),
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    word.get_or_insert_with(String::new).push(n);
                }
            }
            '#' if word.is_none() => break,
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[test]
fn shell_words_split_like_sh() {
    assert_eq!(shell_words(r#"a 'b c' "d \"e\"" f\ g # h"#), ["a", "b c", "d \"e\"", "f g"]);
    assert_eq!(shell_words(r#"--spec '{"command": ["x"]}'   # comment"#), ["--spec", r#"{"command": ["x"]}"#]);
    assert_eq!(shell_words("--reason \"move 10% back (canary)\""), ["--reason", "move 10% back (canary)"]);
}

/// `rota PATH… --help`.
fn help(path: &[String]) -> String {
    let (status, out, err) = run(rota().args(path).arg("--help"));
    assert!(status.success(), "rota {path:?} --help: {err}");
    out
}

/// The subcommands a help text lists (clap's `Commands:` section), `help` left out.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The example command lines of a help text: `  $ rota …` lines under `Examples:`.
fn examples(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Examples:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.strip_prefix("  $ "))
        .map(str::to_string)
        .collect()
}

/// Every leaf command's path and examples, depth first in the order the help lists them.
fn help_tree(path: Vec<String>, out: &mut Vec<(Vec<String>, Vec<String>)>) {
    let text = help(&path);
    let subs = subcommands(&text);
    if subs.is_empty() {
        out.push((path.clone(), examples(&text)));
    }
    for sub in subs {
        let mut p = path.clone();
        p.push(sub);
        help_tree(p, out);
    }
}

/// A node the examples can run against: SQLite, etcd membership (drain needs it), node id
/// `node-1` with `dc=dc1`, the test's tokens; and a working directory for relative paths.
fn example_node() -> (Etcd, tempfile::TempDir, Node) {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rota.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\ntokens = [{{ name = \"ops\", token = \"{ADMIN}\", scope = \"admin\" }}]\n{}",
            fast_toml(&[("retry_base_ms", "50"), ("retry_max_ms", "100")])
        ),
    )
    .unwrap();
    let cluster = format!("cli-examples-{}", free_port());
    let node = Node::start(
        &dir.path().join("node"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--membership",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoint(),
            "--cluster",
            &cluster,
            "--node-id",
            "node-1",
            "--label",
            "dc=dc1",
            "--lease-ttl",
            "3",
        ],
        &[],
    );
    wait_until(Duration::from_secs(20), "ready", || node.get("/readyz").0 == 200);
    (etcd, dir, node)
}

/// Run one example line (its words after `rota`) against `node` from `cwd`, expecting success.
fn run_example(node: &Node, cwd: &std::path::Path, words: &[String], source: &str) -> String {
    let (status, out, err) =
        run(rota().args(words).current_dir(cwd).env("ROTA_URL", node.url("")).env("ROTA_TOKEN", ADMIN));
    assert!(
        status.success(),
        "{source}: `rota {}` failed with {status}\nstdout: {out}\nstderr: {err}",
        words.join(" ")
    );
    out
}

#[test]
fn every_help_example_runs_against_a_node() {
    let mut leaves = Vec::new();
    help_tree(Vec::new(), &mut leaves);
    assert!(leaves.len() >= 25, "the walk found the commands: {leaves:?}");
    let missing: Vec<String> = leaves
        .iter()
        .filter(|(path, ex)| ex.is_empty() && path.first().map(String::as_str) != Some("serve"))
        .map(|(path, _)| path.join(" "))
        .collect();
    assert!(missing.is_empty(), "commands without examples in --help: {missing:?}");

    let (_etcd, dir, node) = example_node();
    for (path, lines) in &leaves {
        for line in lines {
            let words = shell_words(line);
            assert_eq!(words.first().map(String::as_str), Some("rota"), "an example starts with `rota`: {line}");
            assert!(
                words[1..].starts_with(path),
                "`rota {} --help` shows an example of another command: {line}",
                path.join(" ")
            );
            run_example(&node, dir.path(), &words[1..], &format!("rota {} --help", path.join(" ")));
        }
    }
}

#[test]
fn readme_tour_runs_against_a_node() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut in_code = false;
    let mut lines = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code {
            if let Some(rest) = line.strip_prefix("target/release/rota ") {
                lines.push(rest.to_string());
            }
        }
    }
    assert!(lines.len() >= 15, "the README's tour was found: {lines:?}");

    let (_etcd, dir, node) = example_node();
    let mut last_task = None::<String>;
    for line in &lines {
        let words: Vec<String> = shell_words(line)
            .into_iter()
            .map(|w| match w.as_str() {
                "NODE" => "node-1".to_string(),
                "http://NODE-ADDR" => node.url(""),
                "ID" => last_task.clone().unwrap_or_else(|| panic!("`ID` before any `task submit`: {line}")),
                _ => w,
            })
            .collect();
        let out = run_example(&node, dir.path(), &words, "README.md");
        if let Some(id) = out.strip_prefix("submitted task ").and_then(|r| r.split_whitespace().next()) {
            last_task = Some(id.to_string());
        }
    }
}
