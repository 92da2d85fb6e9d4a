//! The Flink test harness against a real Apache Flink 2.3.0 cluster, with no Rota code: what the
//! `flink` driver relies on holds. A submitted job runs, stop-with-savepoint keeps its keyed
//! state and a run from that savepoint continues from it, cancel cancels, a failing job ends
//! FAILED with its exception, errors have the statuses the driver expects, and a killed
//! TaskManager fails its job and can be replaced.
//!
//! Needs Flink installed by `scripts/prereqs.sh test` (scripts/test.sh runs it); fails naming
//! that step otherwise. Takes about a minute, most of it the cluster's start.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::flink::{alive, first_lines, read_count, Flink, COUNTER, FAILING};
use common::wait_until;

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
