//! The Flink test harness against a real Apache Flink 2.3.0 cluster, with no Rota code: what the
//! `flink` driver relies on holds. A submitted job runs, stop-with-savepoint keeps its keyed
//! state and a run from that savepoint continues from it, cancel cancels, a failing job ends
//! FAILED with its exception, errors have the statuses the driver expects, and a killed
//! TaskManager fails its job and can be replaced.
//!
//! The second test drives the `flink` driver through three Rota nodes on PostgreSQL and etcd:
//! start, stop with a savepoint, a start restored from it, a SIGKILLed owner whose job is adopted
//! without a new submission, a savepoint on demand, a lost TaskManager and the restart policy, a
//! cancel, and bad specs (docs/drivers.md#flink).
//!
//! Needs Flink installed by `scripts/prereqs.sh test` (scripts/test.sh runs it); fails naming
//! that step otherwise. Takes about a minute, most of it the cluster's start.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::flink::{alive, first_lines, read_count, Flink, COUNTER, FAILING};
use common::{http, wait_until};
use serde_json::{json, Value};

/// Wait until the counter job has written a highest count of at least `at_least`; (that count,
/// the first count of the run).
fn wait_count(path: &Path, at_least: u64) -> (u64, u64) {
    let mut counts = (0, 0);
    wait_until(Duration::from_secs(60), &format!("{} to reach {at_least}", path.display()), || {
        counts = read_count(path).unwrap_or((0, 0));
        counts.0 >= at_least
    });
    counts
}

#[test]
fn a_real_cluster_runs_stops_with_a_savepoint_resumes_cancels_and_fails() {
    let began = Instant::now();
    let mut flink = Flink::start();
    eprintln!("flink: ready after {:.1}s at {}", began.elapsed().as_secs_f64(), flink.rest_url());
    let out = tempfile::tempdir().unwrap();

    let jar = flink.upload_jar(&flink.job_jar());
    assert!(jar.ends_with("_rota-flink-test.jar"), "jar id {jar}");

    // Run: the job and each of its vertices reach RUNNING, and the count grows.
    let first = out.path().join("first");
    let submitted = Instant::now();
    let job = flink.submit(&jar, COUNTER, &["--out", first.to_str().unwrap()], None);
    flink.wait_running(&job, Duration::from_secs(60));
    eprintln!("flink: submit to all vertices RUNNING {:.1}s", submitted.elapsed().as_secs_f64());
    let (early, started_at) = wait_count(&first, 1);
    assert_eq!(started_at, 1, "a run from nothing counts from 1");
    wait_count(&first, early + 1);
    assert!(flink.jobs().iter().any(|j| j.id == job && j.state == "RUNNING"), "{:?}", flink.jobs());
    eprintln!("flink: JVM RSS (pid, MiB) {:?}", flink.rss_mib());

    // Stop with a savepoint: the job ends FINISHED and its count stops.
    let stopping = Instant::now();
    let savepoint = flink.stop_with_savepoint(&job);
    eprintln!("flink: stop with savepoint {:.2}s -> {savepoint}", stopping.elapsed().as_secs_f64());
    assert!(savepoint.starts_with(&format!("file:{}", flink.savepoint_dir().display())), "{savepoint}");
    flink.wait_state(&job, "FINISHED", Duration::from_secs(30));
    let (at_stop, _) = read_count(&first).expect("a count at the stop");

    // Resume into another file: its very first count continues from the savepoint's.
    let second = out.path().join("second");
    let resumed = flink.submit(&jar, COUNTER, &["--out", second.to_str().unwrap()], Some(&savepoint));
    flink.wait_running(&resumed, Duration::from_secs(60));
    let (_, started_at) = wait_count(&second, 1);
    assert!(started_at >= at_stop, "the resumed job counted from {started_at}, not from {at_stop} (the savepoint's)");
    wait_count(&second, at_stop + 1);
    let restored = &flink.get(&format!("/jobs/{resumed}/checkpoints")).1["latest"]["restored"];
    assert_eq!(restored["external_path"], savepoint.as_str(), "{restored}");
    assert_eq!(restored["is_savepoint"], true, "{restored}");

    // Cancel; a second cancel of an ended job is refused.
    flink.cancel(&resumed);
    let (status, body) = flink.patch(&format!("/jobs/{job}?mode=cancel"));
    assert_eq!(status, 409, "cancel of a FINISHED job: {}", first_lines(&body));

    // A job that fails at once ends FAILED, and its exceptions name the cause.
    let failing = flink.submit(&jar, FAILING, &[], None);
    flink.wait_state(&failing, "FAILED", Duration::from_secs(60));
    let (status, exceptions) = flink.get(&format!("/jobs/{failing}/exceptions"));
    assert_eq!(status, 200);
    let entry = &exceptions["exceptionHistory"]["entries"][0];
    assert!(entry["stacktrace"].as_str().unwrap_or_default().contains("fails on purpose"), "{}", first_lines(entry));

    // Errors the driver has to tell apart.
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(flink.get(&format!("/jobs/{unknown}")).0, 404);
    let (status, body) = flink.run_jar(&jar, "rota.flinktest.NoSuchJob", &[], None);
    assert_eq!(status, 500, "{}", first_lines(&body));
    assert!(body.to_string().contains("was not found in the jar file"), "{}", first_lines(&body));
    let (status, body) = flink.run_jar("no-such.jar", COUNTER, &[], None);
    assert_eq!(status, 500, "{}", first_lines(&body));
    // The program's own error (here: its required argument missing) is a 400 and starts no job.
    let jobs_before = flink.jobs().len();
    let (status, body) = flink.run_jar(&jar, COUNTER, &[], None);
    assert_eq!(status, 400, "{}", first_lines(&body));
    assert!(body.to_string().contains("--out PATH is required"), "{}", first_lines(&body));
    assert_eq!(flink.jobs().len(), jobs_before);

    // The TaskManager dies: a job without restarts fails; a new TaskManager takes jobs again.
    let third = out.path().join("third");
    let doomed = flink.submit(&jar, COUNTER, &["--out", third.to_str().unwrap()], None);
    flink.wait_running(&doomed, Duration::from_secs(60));
    let killed = Instant::now();
    flink.kill_taskmanager();
    flink.wait_state(&doomed, "FAILED", Duration::from_secs(60));
    eprintln!("flink: TaskManager killed to job FAILED {:.1}s", killed.elapsed().as_secs_f64());
    flink.start_taskmanager();
    let fourth = out.path().join("fourth");
    let after = flink.submit(&jar, COUNTER, &["--out", fourth.to_str().unwrap()], None);
    flink.wait_running(&after, Duration::from_secs(60));
    wait_count(&fourth, 1);

    let pids = flink.pids();
    drop(flink);
    assert!(pids.iter().all(|p| !alive(*p)), "JVMs {pids:?} outlived the cluster");
    eprintln!("flink: test wall time {:.1}s", began.elapsed().as_secs_f64());
}

// ---- The `flink` driver on a real cluster: three Rota nodes on PostgreSQL and etcd ----

/// An application as `GET /api/v1/apps/{id}` shows it.
fn app(node: &common::Node, id: i64) -> Value {
    let (status, body) = http("GET", &node.url(&format!("/api/v1/apps/{id}")), None, None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The Flink job id an application's runtime records.
fn job_of(a: &Value) -> Option<String> {
    a["runtime"]["job_id"].as_str().map(str::to_string)
}

/// POST a command (`start`, `stop`, `restart`, `savepoint`) with `payload`: its task id.
fn command(node: &common::Node, id: i64, action: &str, payload: Value) -> i64 {
    let body = json!({ "payload": payload }).to_string();
    let (status, answer) = http("POST", &node.url(&format!("/api/v1/apps/{id}/{action}")), Some(&body), None);
    assert_eq!(status, 202, "{action}: {answer}");
    serde_json::from_str::<Value>(&answer).unwrap()["task_id"].as_i64().unwrap()
}

/// Wait until task `id` has ended; its document.
fn task_done(node: &common::Node, id: i64, timeout: Duration) -> Value {
    let mut task = Value::Null;
    wait_until(timeout, &format!("task {id} to end"), || {
        let (_, body) = http("GET", &node.url(&format!("/api/v1/tasks/{id}")), None, None);
        task = serde_json::from_str(&body).unwrap_or(Value::Null);
        matches!(task["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    });
    task
}

/// Wait until application `id` is in `state` as some node shows it; the application.
fn app_in(node: &common::Node, id: i64, state: &str, timeout: Duration) -> Value {
    let mut a = Value::Null;
    wait_until(timeout, &format!("application {id} to be {state}"), || {
        a = app(node, id);
        a["state"] == state
    });
    a
}

/// Every vertex of Flink job `job` is RUNNING, and the job too.
fn all_running(flink: &Flink, job: &str) -> bool {
    let (state, vertices) = flink.job_states(job);
    state == "RUNNING" && !vertices.is_empty() && vertices.iter().all(|v| v == "RUNNING")
}

#[test]
fn flink_applications_start_stop_restore_adopt_and_fail_as_flink_says() {
    let flink = Flink::start();
    let mut flink = flink;
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.converge(&["n1", "n2", "n3"]);
    let out = tempfile::tempdir().unwrap();
    let count_file = out.path().join("count");
    let jar = flink.job_jar();
    let spec = json!({
        "rest_url": flink.rest_url(),
        "jar": jar.to_str().unwrap(),
        "entry_class": COUNTER,
        "args": ["--out", count_file.to_str().unwrap()],
        "savepoint_dir": format!("file://{}", flink.savepoint_dir().display()),
    });
    let create = json!({
        "name": "counter", "driver": "flink", "spec": spec,
        "restart_policy": "on_failure", "max_restarts": 3, "monitor_interval_ms": 500
    });
    let n1 = &c.nodes["n1"];
    let (status, body) = http("POST", &n1.url("/api/v1/apps"), Some(&create.to_string()), None);
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"].as_i64().unwrap();

    // 1. start: `running` once the job and every vertex run.
    let t0 = Instant::now();
    let task = command(n1, id, "start", json!({}));
    assert_eq!(task_done(n1, task, Duration::from_secs(120))["status"], "succeeded");
    let a = app_in(n1, id, "running", Duration::from_secs(30));
    let first = job_of(&a).expect("the job id is recorded");
    assert!(all_running(&flink, &first), "{:?}", flink.job_states(&first));
    eprintln!("measured: start to running {:.1}s", t0.elapsed().as_secs_f64());
    let (counted, began) = wait_count(&count_file, 150);
    assert_eq!(began, 1, "a fresh job counts from 1");

    // 2. stop: a savepoint recorded (with its event), the job FINISHED.
    let task = command(n1, id, "stop", json!({}));
    assert_eq!(task_done(n1, task, Duration::from_secs(120))["status"], "succeeded");
    let a = app_in(n1, id, "stopped", Duration::from_secs(30));
    assert_eq!(a["runtime"]["job_id"], Value::Null, "{a}");
    let savepoints = a["runtime"]["savepoints"].as_array().cloned().unwrap_or_default();
    assert_eq!(savepoints.len(), 1, "{a}");
    assert_eq!(
        (savepoints[0]["trigger"].as_str(), savepoints[0]["job_id"].as_str()),
        (Some("stop"), Some(first.as_str()))
    );
    assert_eq!(flink.job_states(&first).0, "FINISHED");
    assert_eq!(c.events("app.savepoint").len(), 1);
    let (at_stop, _) = read_count(&count_file).unwrap();
    assert!(at_stop >= counted, "{at_stop} < {counted}");

    // 3. start again: restored from that savepoint, the count goes on from where it stopped.
    let task = command(n1, id, "start", json!({}));
    assert_eq!(task_done(n1, task, Duration::from_secs(120))["status"], "succeeded");
    let a = app_in(n1, id, "running", Duration::from_secs(30));
    let second = job_of(&a).unwrap();
    assert_ne!(second, first);
    std::fs::remove_file(&count_file).unwrap();
    let (_, resumed_from) = wait_count(&count_file, at_stop + 1);
    assert!(
        resumed_from >= at_stop,
        "restored from the savepoint: the run began at {resumed_from}, the stop was at {at_stop}"
    );

    // 4. SIGKILL of the owner: a survivor adopts the same job and submits nothing.
    let owner = a["owner_node"].as_str().unwrap().to_string();
    let jobs_before = flink.jobs().len();
    let victim = c.nodes.remove(&owner).unwrap();
    victim.signal("KILL");
    drop(victim);
    let survivor = c.nodes.keys().next().unwrap().clone();
    let s = &c.nodes[&survivor];
    wait_until(Duration::from_secs(30), "a survivor to own the application", || {
        let a = app(s, id);
        a["owner_node"].as_str().is_some_and(|o| o != owner)
    });
    // A savepoint on demand, by the CLI: it runs on the new owner after its adoption, so once
    // it is done the adoption is too.
    let (status, printed, err) = common::run(
        common::rota().args(["app", "savepoint", "counter", "--wait", "--timeout", "120"]).env("ROTA_URL", s.url("")),
    );
    assert!(status.success(), "{printed}\n{err}");
    assert!(printed.contains("savepoint of application") && printed.contains("file:"), "{printed}");
    let a = app(s, id);
    assert_eq!(job_of(&a).as_deref(), Some(second.as_str()), "the new owner kept the job: {a}");
    assert_eq!(flink.jobs().len(), jobs_before, "no job was submitted: {:?}", flink.jobs());
    assert!(all_running(&flink, &second));
    let savepoints = a["runtime"]["savepoints"].as_array().cloned().unwrap_or_default();
    assert_eq!(savepoints.last().unwrap()["trigger"], "savepoint", "{a}");
    let (status, shown, err) = common::run(common::rota().args(["app", "show", "counter"]).env("ROTA_URL", s.url("")));
    assert!(status.success(), "{err}");
    assert!(shown.contains(&second) && shown.contains("savepoints") && shown.contains("(savepoint)"), "{shown}");

    // A restart: stopped with a savepoint, started from that one.
    let (before, run_began) = read_count(&count_file).unwrap();
    let task = command(s, id, "restart", json!({}));
    assert_eq!(task_done(s, task, Duration::from_secs(180))["status"], "succeeded");
    let a = app_in(s, id, "running", Duration::from_secs(30));
    let restarted = job_of(&a).unwrap();
    assert_ne!(restarted, second);
    let last = a["runtime"]["savepoints"].as_array().and_then(|all| all.last().cloned()).unwrap();
    assert_eq!((last["trigger"].as_str(), last["task_id"].as_i64()), (Some("stop"), Some(task)), "{a}");
    let mut began = run_began;
    wait_until(Duration::from_secs(60), "the restarted job to write its count", || {
        began = read_count(&count_file).map_or(run_began, |(_, first)| first);
        began != run_began
    });
    assert!(began >= before, "the restart continued from its savepoint: began at {began}, counted {before} before it");
    let second = restarted;

    // 5. The TaskManager killed: Flink fails the job (no restart strategy of its own), Rota
    // sees `failed` with Flink's cause and restarts it by its policy from the newest savepoint
    // once a TaskManager is back.
    flink.kill_taskmanager();
    wait_until(Duration::from_secs(120), "the job to fail or restart in Flink", || {
        matches!(flink.job_states(&second).0.as_str(), "FAILED" | "RESTARTING")
    });
    flink.start_taskmanager();
    wait_until(Duration::from_secs(180), "the application to run a new job by its policy", || {
        let a = app(s, id);
        a["state"] == "running" && job_of(&a).is_some_and(|j| j != second && all_running(&flink, &j))
    });
    let a = app(s, id);
    assert_eq!(a["restart_count"], 1, "{a}");
    assert!(!c.events("app.restart").is_empty());

    // 7 (rest). A stop with `{"stop": "cancel"}` cancels: no savepoint is added.
    let third = job_of(&a).unwrap();
    let kept = a["runtime"]["savepoints"].as_array().map(Vec::len).unwrap_or(0);
    let task = command(s, id, "stop", json!({ "stop": "cancel" }));
    assert_eq!(task_done(s, task, Duration::from_secs(60))["status"], "succeeded");
    let a = app_in(s, id, "stopped", Duration::from_secs(30));
    assert_eq!(flink.job_states(&third).0, "CANCELED");
    assert_eq!(a["runtime"]["savepoints"].as_array().map(Vec::len).unwrap_or(0), kept);

    // 6. Bad specs: refused at create naming the field, or a failed start naming the cause.
    let refused = |spec: Value, field: &str| {
        let body = json!({ "name": format!("bad-{field}"), "driver": "flink", "spec": spec }).to_string();
        let (status, answer) = http("POST", &s.url("/api/v1/apps"), Some(&body), None);
        assert_eq!(status, 422, "{answer}");
        assert!(answer.contains(&format!("\"spec.{field}\"")), "names spec.{field}: {answer}");
    };
    refused(json!({ "rest_url": flink.rest_url() }), "jar");
    refused(json!({ "rest_url": "ftp://x", "jar": "/a.jar" }), "rest_url");
    refused(json!({ "rest_url": flink.rest_url(), "jar": "/a.jar", "stop": "kill" }), "stop");
    let fails = |name: &str, spec: Value, needle: &str| {
        let body = json!({ "name": name, "driver": "flink", "spec": spec, "restart_policy": "never" }).to_string();
        let (status, answer) = http("POST", &s.url("/api/v1/apps"), Some(&body), None);
        assert_eq!(status, 201, "{answer}");
        let id = serde_json::from_str::<Value>(&answer).unwrap()["id"].as_i64().unwrap();
        let task = command(s, id, "start", json!({}));
        let done = task_done(s, task, Duration::from_secs(120));
        assert_eq!(done["status"], "failed", "{done}");
        let a = app_in(s, id, "failed", Duration::from_secs(30));
        let error = a["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{name}: `{needle}` in {error}");
    };
    fails("missing-jar", json!({ "rest_url": flink.rest_url(), "jar": "/nowhere/job.jar" }), "/nowhere/job.jar");
    fails(
        "no-such-class",
        json!({ "rest_url": flink.rest_url(), "jar": jar.to_str().unwrap(), "entry_class": "rota.flinktest.Nope" }),
        "rota.flinktest.Nope",
    );
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    fails("unreachable", json!({ "rest_url": closed, "jar": jar.to_str().unwrap() }), "127.0.0.1");
    fails(
        "failing-job",
        json!({ "rest_url": flink.rest_url(), "jar": jar.to_str().unwrap(), "entry_class": FAILING }),
        "failed",
    );
}
