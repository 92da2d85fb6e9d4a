//! The web console (docs/console.md) in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (tests/common/browser.rs) against real `rota` nodes. Each test opens pages the way
//! an operator would, saves screenshots under target/console-screenshots/, and fails when a page
//! logs an error in the browser's console. Plus the headers every console answer carries.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::browser::Browser;
use common::cluster::Cluster;
use common::fixture::Fixture;
use common::{http, wait_until};

const ADMIN: &str = "console-admin-0123456789abcdef";
const READER: &str = "console-reader-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

fn tokens_config() -> String {
    format!(
        "[api]\ntokens = [{{ name = \"ops\", token = \"{ADMIN}\", scope = \"admin\" }}, \
         {{ name = \"viewer\", token = \"{READER}\", scope = \"read\" }}]\n"
    )
}

fn api(url: &str, method: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
    let (s, text) = http(method, url, body.map(|b| b.to_string()).as_deref(), token);
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every response header of a GET, lowercased names.
fn headers(url: &str) -> (u16, Vec<(String, String)>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(url).call().unwrap();
    let h = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    (r.status().as_u16(), h, r.body_mut().read_to_string().unwrap_or_default())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Every console answer carries the policy; API answers stay JSON, unknown pages get the shell.
#[test]
fn console_answers_carry_a_strict_policy_and_api_404s_stay_json() {
    let f = Fixture::start(false, "", &["--node-id", "c1"], &[]);
    let (s, h, shell) = headers(&f.node.url("/apps/42"));
    assert_eq!(s, 200, "a deep link reloads into the shell");
    let csp = header(&h, "content-security-policy").expect("a CSP header");
    for part in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&h, "cache-control"), Some("no-cache"));
    assert!(header(&h, "content-type").is_some_and(|t| t.starts_with("text/html")));
    // The shell's scripts are files of this origin, none inline.
    assert_eq!(shell.matches("<script").count(), shell.matches("<script type=\"module\" src=\"/console/").count());
    let script = shell.split("src=\"").nth(1).and_then(|s| s.split('"').next()).expect("a script src").to_string();
    let (s, h, js) = headers(&f.node.url(&script));
    assert_eq!(s, 200, "{script}");
    assert!(header(&h, "content-security-policy").is_some(), "assets carry the policy too");
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
    assert!(header(&h, "content-type").is_some_and(|t| t.starts_with("text/javascript")));
    assert!(header(&h, "cache-control").is_some_and(|c| c.contains("immutable")), "{h:?}");
    assert!(js.contains("import"), "{js}");
    for path in ["/", "/traffic", "/apps/42/edit"] {
        let (s, h, _) = headers(&f.node.url(path));
        assert_eq!((s, header(&h, "content-type").map(|t| t.starts_with("text/html"))), (200, Some(true)), "{path}");
        assert!(header(&h, "content-security-policy").is_some(), "{path}");
    }
    // The API's unknown paths, unknown assets, paths that are no console page and other
    // methods are the API's JSON errors.
    for path in ["/api/v1/nothing", "/api/nothing", "/console/0/none.js", "/no/such/page"] {
        let (s, h, body) = headers(&f.node.url(path));
        assert_eq!(s, 404, "{path}");
        assert!(header(&h, "content-type").is_some_and(|t| t.starts_with("application/json")), "{path}");
        assert!(body.contains("not_found"), "{path}: {body}");
    }
    let (s, _) = http("POST", &f.node.url("/apps"), Some("{}"), None);
    assert_eq!(s, 404, "the console takes no writes");
    // The API the console reads: who is calling, and the ring to draw.
    let (s, me) = api(&f.node.url("/api/v1/whoami"), "GET", None, None);
    assert_eq!((s, me), (200, json!({"name": "local", "scope": "admin"})));
    let (_, cluster) = api(&f.node.url("/api/v1/cluster"), "GET", None, None);
    assert_eq!(cluster["ring"]["shares"], json!({"c1": 1.0}), "{cluster}");
    assert_eq!(cluster["ring"]["arcs"], json!([{"node_id": "c1", "from": 0, "to": 720}]), "{cluster}");
    // A foreign Host is refused before the console is served (no tokens: loopback names only).
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = agent.get(&f.node.url("/")).header("Host", "attacker.example").call().unwrap();
    assert_eq!(r.status().as_u16(), 421);
}

/// Without tokens: every page opens; an application is created through the form (a 422 shown on
/// its field first), started until `running`, and stopped; a schedule is created and paused.
#[test]
fn pages_open_and_an_application_is_created_started_and_stopped() {
    let f = Fixture::start(false, "", &["--node-id", "c1", "--label", "dc=eu"], &[]);
    let mut b = Browser::start("local");
    for (path, heading) in [
        ("/", "Overview"),
        ("/apps", "Applications"),
        ("/tasks", "Tasks and jobs"),
        ("/schedules", "Schedules"),
        ("/traffic", "Traffic"),
        ("/events", "Events"),
    ] {
        b.goto(&f.node.url(path));
        b.wait_text("h1", heading, WAIT);
        b.screenshot(&format!("page{}", path.replace('/', "-")));
    }
    b.goto(&f.node.url("/"));
    b.wait_text(".members", "c1", WAIT);
    b.wait(".ring path, .ring circle", WAIT);
    b.fill("#lookup-key", "42");
    b.click("form.inline button[type=submit]");
    b.wait_text(".lookup-result", "owned by c1", WAIT);

    // Create: a bad name first, refused per field.
    b.goto(&f.node.url("/apps"));
    b.click("#new-app");
    b.wait_text("h1", "New application", WAIT);
    b.fill("#name", "not a name!");
    b.click("#save");
    b.wait(".field-error[data-field=name]", WAIT);
    assert_eq!(b.js("return document.getElementById('name').getAttribute('aria-invalid')", json!([])), json!("true"));
    b.screenshot("form-422");
    b.fill("#name", "web");
    b.click("#save");
    b.wait_text("h1", "web", WAIT);
    let detail = b.url();
    assert!(detail.contains("/apps/"), "{detail}");
    b.wait_text("h1 .badge", "stopped", WAIT);

    b.click("#act-start");
    b.click("[data-confirm=Start]");
    b.wait_text("h1 .badge", "running", WAIT);
    b.wait_text(".timeline", "app.", WAIT);
    b.screenshot("app-running");
    // The address survives a reload.
    b.refresh();
    b.wait_text("h1", "web", WAIT);
    assert_eq!(b.url(), detail);
    b.click("#act-stop");
    b.click("[data-confirm=Stop]");
    b.wait_text("h1 .badge", "stopped", WAIT);

    // The list, filtered by state through the address.
    b.goto(&f.node.url("/apps?state=stopped"));
    b.wait_text("table.apps", "web", WAIT);
    b.goto(&f.node.url("/apps?state=running"));
    b.wait_text("table.apps caption", "0 applications", WAIT);

    // A schedule: created, paused.
    b.goto(&f.node.url("/schedules"));
    b.fill("#s-name", "tick");
    b.fill("#s-every", "60000");
    b.click("form.card button[type=submit]");
    b.wait_text("table.schedules", "tick", WAIT);
    b.click("[data-schedule=tick] .row-actions button");
    b.wait_text("[data-schedule=tick]", "paused", WAIT);
    b.screenshot("schedules");
    b.goto(&f.node.url("/events"));
    b.wait_text(".timeline", "schedule", WAIT);
    b.assert_clean(&["422"]);
}

/// With tokens: the console asks once, keeps the token for the tab, and a read token sees no
/// write control anywhere.
#[test]
fn a_read_token_sees_no_write_control() {
    let f = Fixture::start(false, &tokens_config(), &["--node-id", "c1"], &[]);
    let (s, app) =
        api(&f.node.url("/api/v1/apps"), "POST", Some(json!({"name": "web", "driver": "noop"})), Some(ADMIN));
    assert_eq!(s, 201, "{app}");
    let id = app["id"].as_i64().unwrap();
    let (s, me) = api(&f.node.url("/api/v1/whoami"), "GET", None, Some(READER));
    assert_eq!((s, me), (200, json!({"name": "viewer", "scope": "read"})));

    let mut b = Browser::start("read-token");
    b.goto(&f.node.url(&format!("/apps/{id}")));
    b.wait("#token", WAIT);
    b.fill("#token", "not-the-token-0123456789");
    b.click(".signin button[type=submit]");
    b.wait_text(".signin .error", "unknown token", WAIT);
    b.fill("#token", READER);
    b.click(".signin button[type=submit]");
    b.wait_text("h1", "web", WAIT);
    b.wait_text(".who", "read only", WAIT);
    b.screenshot("app");
    let writes = "#act-start, #act-stop, #act-delete, #act-edit, #new-app, form.policy, form.card button.primary, \
                  #wf-cancel, .wf-nodes .row-actions";
    assert!(!b.exists(writes), "a write control is shown to a read token");
    // The token is kept for the tab: other pages open without asking again.
    let (s, wf) = api(
        &f.node.url("/api/v1/workflows"),
        "POST",
        Some(json!({"name": "slow", "nodes": [{"key": "wait", "payload": {"spec": {"delay_ms": 60000}}}]})),
        Some(ADMIN),
    );
    assert_eq!(s, 201, "{wf}");
    let (s, run) =
        api(&f.node.url(&format!("/api/v1/workflows/{}/runs", wf["id"])), "POST", Some(json!({})), Some(ADMIN));
    assert_eq!(s, 202, "{run}");
    let run_page = format!("/workflows/runs/{}", run["run_id"]);
    for (path, heading) in [
        ("/apps", "Applications"),
        ("/traffic", "Traffic"),
        ("/schedules", "Schedules"),
        ("/workflows", "Workflows"),
        (run_page.as_str(), "Run"),
    ] {
        b.goto(&f.node.url(path));
        b.wait_text("h1", heading, WAIT);
        assert!(!b.exists(writes), "{path}: a write control is shown to a read token");
        assert!(!b.exists("#token"), "{path}: asked for the token again");
    }
    b.screenshot("traffic");
    assert!(!b.exists("button.primary"), "no primary (write) button for a read token");
    // The admin token shows them.
    b.click(".who button");
    b.wait("#token", WAIT);
    b.fill("#token", ADMIN);
    b.click(".signin button[type=submit]");
    b.goto(&f.node.url(&format!("/apps/{id}")));
    b.wait("#act-start", WAIT);
    // 401: the first load without a token and the wrong token, on purpose.
    b.assert_clean(&["401"]);
}

/// A workflow run drawn as its DAG: a diamond (a → b, c → d, d failing) shows four boxes in three
/// layers with their states and its edges' conditions; a box links to its node's task; the
/// failed node is retried after a confirmation; a running run refreshes live and is cancelled;
/// the list counts runs by status; the run's address survives a reload.
#[test]
fn a_workflow_run_is_drawn_as_its_dag_with_retry_and_cancel() {
    let f = Fixture::start(false, "", &["--node-id", "c1"], &[]);
    let post = |path: &str, body: Value| {
        let (s, v) = api(&f.node.url(path), "POST", Some(body), None);
        assert!(s == 201 || s == 202, "{path}: {s} {v}");
        v
    };
    let run_of = |id: i64| api(&f.node.url(&format!("/api/v1/workflow-runs/{id}")), "GET", None, None).1;
    let wf = post(
        "/api/v1/workflows",
        json!({"name": "diamond", "nodes": [
            {"key": "a"}, {"key": "b"}, {"key": "c"},
            {"key": "d", "payload": {"spec": {"fail": "run"}}, "max_attempts": 1}],
          "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"},
                    {"from": "b", "to": "d"}, {"from": "c", "to": "d", "on": "always"}]}),
    );
    let wf = wf["id"].as_i64().unwrap();
    let id = post(&format!("/api/v1/workflows/{wf}/runs"), json!({}))["run_id"].as_i64().unwrap();
    wait_until(WAIT, "the diamond run to fail at d", || run_of(id)["status"] == "failed");
    let r = run_of(id);

    let mut b = Browser::start("workflows");
    b.goto(&f.node.url("/workflows"));
    b.wait_text("table.workflows", "diamond", WAIT);
    b.wait_text("[data-workflow=diamond] [data-runs=failed]", "1", WAIT);
    b.click("[data-workflow=diamond] a");
    b.wait_text("h1", "Workflow diamond", WAIT);
    b.click(&format!("[data-run='{id}'] a"));
    b.wait_text("h1", &format!("Run {id}"), WAIT);
    assert_eq!(b.url(), f.node.url(&format!("/workflows/runs/{id}")));
    b.refresh();
    b.wait("svg.dag g.wf-node", WAIT);
    let drawn = b.js(
        "return Array.from(document.querySelectorAll('svg.dag g.wf-node')).map(g =>          [g.dataset.node, Number(g.dataset.layer), g.dataset.state, (g.querySelector('a') || {}).getAttribute ?          g.querySelector('a').getAttribute('href') : null])",
        json!([]),
    );
    let task = |key: &str| {
        r["nodes"].as_array().unwrap().iter().find(|n| n["key"] == key).unwrap()["task_id"].as_i64().unwrap()
    };
    let link = |key: &str| json!(format!("/tasks/{}", task(key)));
    assert_eq!(
        drawn,
        json!([
            ["a", 0, "succeeded", link("a")],
            ["b", 1, "succeeded", link("b")],
            ["c", 1, "succeeded", link("c")],
            ["d", 2, "failed", link("d")]
        ]),
        "four boxes in three layers with their states, each linked to its task"
    );
    assert_eq!(b.find_all("svg.dag g.wf-edge").len(), 4);
    assert!(b.text("body").contains("Run"));
    let labels = b.js(
        "return Array.from(document.querySelectorAll('svg.dag g.wf-edge text')).map(t => t.textContent)",
        json!([]),
    );
    assert_eq!(labels, json!(["success", "success", "success", "always"]));
    b.screenshot("diamond");

    // The failed node is retried, after a confirmation.
    assert!(!b.exists("#wf-cancel"), "no cancel for a finished run");
    b.click("[data-node-row=d] .row-actions button");
    b.click("[data-confirm=Retry]");
    b.wait_text(".notice", "node d retried", WAIT);
    wait_until(WAIT, "d to run again", || {
        let r = run_of(id);
        r["status"] == "failed" && r["nodes"][3]["round"] == 1
    });
    b.wait_text("[data-node-row=d]", "failed", WAIT);

    // A box links to its node's task.
    b.click("svg.dag g[data-node=a] a");
    b.wait_text("h1", &format!("Task {}", task("a")), WAIT);

    // A running run refreshes live, and is cancelled after a confirmation.
    let slow = post(
        "/api/v1/workflows",
        json!({"name": "slow", "nodes": [{"key": "wait", "payload": {"spec": {"delay_ms": 60000}}}, {"key": "after"}],
               "edges": [{"from": "wait", "to": "after"}]}),
    )["id"]
        .as_i64()
        .unwrap();
    let id = post(&format!("/api/v1/workflows/{slow}/runs"), json!({}))["run_id"].as_i64().unwrap();
    b.goto(&f.node.url(&format!("/workflows/runs/{id}")));
    b.wait("svg.dag g[data-node=wait][data-state=running]", WAIT);
    b.screenshot("running");
    b.click("#wf-cancel");
    b.click("[data-confirm='Cancel run']");
    b.wait_text("h1 .badge", "cancelled", Duration::from_secs(30));
    b.wait("svg.dag g[data-node=after][data-state=cancelled], svg.dag g[data-node=after][data-state=skipped], svg.dag g[data-node=after][data-state=waiting]", WAIT);
    b.assert_clean(&[]);
}

/// Three nodes on etcd: the overview draws each node's arcs; a traffic group is switched with a
/// reason and the audit shows it; a broadcast job's children appear with their nodes.
#[test]
fn a_cluster_its_ring_traffic_switch_and_job_children() {
    let mut c = Cluster::new(&[]);
    c.add_labelled("n1", &["dc=a"]);
    c.add_labelled("n2", &["dc=a"]);
    c.add_labelled("n3", &["dc=b"]);
    c.converge(&["n1", "n2", "n3"]);
    let n1 = &c.nodes["n1"];
    let (s, body) = api(
        &n1.url("/api/v1/traffic/payments"),
        "PUT",
        Some(json!({"preferred": "a", "backup": "b", "reason": "initial placement"})),
        None,
    );
    assert_eq!(s, 200, "{body}");

    let mut b = Browser::start("cluster");
    b.goto(&n1.url("/"));
    for n in ["n1", "n2", "n3"] {
        b.wait(&format!(".members tr[data-node={n}]"), WAIT);
    }
    wait_until(WAIT, "arcs of all three nodes", || {
        ["n1", "n2", "n3"].iter().all(|n| b.exists(&format!(".ring path[data-node={n}]")))
    });
    b.fill("#lookup-key", "7");
    b.click("form.inline button[type=submit]");
    b.wait(".lookup-result[data-owner^=n]", WAIT);
    b.wait(".ring .marker", WAIT);
    b.screenshot("overview");

    b.goto(&n1.url("/traffic"));
    b.wait("[data-group=payments]", WAIT);
    b.wait_text("[data-group=payments] .sides", "a", WAIT);
    b.click("[data-group=payments] form.policy .actions button[type=button]");
    b.fill("#t-payments-reason", "dc a maintenance window");
    b.click("[data-group=payments] form.policy button[type=submit]");
    b.wait_text(".audit", "dc a maintenance window", WAIT);
    b.wait_text("[data-group=payments] .preferred", "b", WAIT);
    b.screenshot("traffic");

    let (s, job) = api(&n1.url("/api/v1/tasks"), "POST", Some(json!({"action": "run", "routing": "broadcast"})), None);
    assert_eq!(s, 202, "{job}");
    let id = job["task_id"].as_i64().unwrap();
    b.goto(&n1.url(&format!("/tasks/{id}")));
    wait_until(Duration::from_secs(60), "each node's child on the page", || {
        ["n1", "n2", "n3"].iter().all(|n| b.exists(&format!("table.children tr[data-node={n}]")))
    });
    b.wait_text("h1 .badge", "succeeded", Duration::from_secs(60));
    b.wait_text(".per-node", "n3", WAIT);
    b.screenshot("job-children");
    b.assert_clean(&[]);
}

/// A node holding 1,000 applications: the list and the overview render their data, and the time
/// from navigation to the console's first render with data (`rota:rendered`, a performance mark
/// the console sets once the first page's data is on screen) is printed for docs/console.md. No
/// speed is asserted: the figure depends on the machine.
#[test]
fn first_render_with_a_thousand_applications_is_measured() {
    let f = Fixture::start(false, "", &["--node-id", "c1"], &[]);
    let values: Vec<String> = (0..1000).map(|i| format!("('app-{i:04}', 'noop')")).collect();
    f.sql(&format!("INSERT INTO application (name, driver) VALUES {}", values.join(",")));
    let mut b = Browser::start("thousand");
    // A first page that is not the console's, so that the browser's own start-up is not counted.
    b.goto(&f.node.url("/livez"));
    for (path, rows) in [("/apps", "table.apps tbody tr"), ("/", ".members tbody tr")] {
        let mut times = Vec::new();
        for _ in 0..5 {
            b.goto(&f.node.url(path));
            b.wait(rows, WAIT);
            wait_until(WAIT, "the render mark", || {
                b.js("return performance.getEntriesByName('rota:rendered').length", json!([])) == json!(1)
            });
            let at = b.js("return performance.getEntriesByName('rota:rendered')[0].startTime", json!([]));
            times.push(at.as_f64().unwrap());
        }
        assert_eq!(b.find_all("table.apps tbody tr").len(), if path == "/apps" { 100 } else { 0 });
        // The first load fetches the assets; the others find them cached (`immutable`).
        let cold = times.remove(0);
        times.sort_by(f64::total_cmp);
        eprintln!(
            "console first render of {path} with 1,000 applications: {cold:.0} ms with an empty cache, \
             {:.0} to {:.0} ms cached (4 loads)",
            times[0], times[3]
        );
    }
    b.screenshot("apps");
    b.assert_clean(&[]);
}
