//! apalis-postgres 1.0.0 as a benchmark peer for Rota (called by scripts/bench.py).
//!
//! ```text
//! rota-peer-apalis --db-url URL --mode drain   [--jobs N] [--drain D] [--wake W]
//! rota-peer-apalis --db-url URL --mode latency [--rate R] [--seconds S] [--wake W]
//! ```
//!
//! The database is fresh and empty; this program runs apalis-postgres's own migrations
//! (`PostgresStorage::setup`, schema `apalis`), then one worker with
//!
//! * `Config::default().queue(QUEUE).batch_size(10)` — fetch batch 10 (`apalis.get_jobs(worker, queue, 10)`),
//! * `WorkerBuilder::new(..).backend(..).concurrency(32)` — `apalis::prelude::WorkerBuilderExt::concurrency`,
//!   tower's `ConcurrencyLimitLayer`: at most 32 handlers in flight,
//! * everything else at the library's defaults: `lock_tasks` and `persist_results` on (each job is
//!   marked Running, then its result and `Done` written back, by the backend in batched
//!   statements), heartbeat every 30 s, default sqlx pool (10 connections),
//!
//! and a no-op handler.
//!
//! How an idle worker is woken (`--wake`, default `notify,interval=5000`): apalis-postgres 1.0.0
//! has no poll interval of its own. A plain `PostgresStorage` that found the queue empty fetches
//! again only when the worker is woken for another reason (a handler finishing, or the heartbeat
//! timer, every 30 s). Its low-latency path is `with_pubsub()`: LISTEN on `apalis::job::insert`,
//! which a trigger NOTIFYs once per inserted row. The default here is the README's pubsub
//! example: `with_pubsub()` plus a 5 s interval (`poll_with_interval`, as `Strategy::new().interval(5 s)`
//! there). `--wake notify` is `with_pubsub()` alone, `--wake interval=MS` polling alone.
//! With `notify` alone the worker loses its wake-up within the first second at 500 jobs/s and
//! then sleeps until the 30 s heartbeat: `PollWith::poll_next` polls the listener once per call
//! and drops a `Ready`, so a notification taken on the poll whose fetch came back empty leaves
//! no waker on the listener. The interval is the library's own fallback for that.
//!
//! drain: N jobs are pushed with the library's own bulk push (`apalis_postgres::queries::push_tasks`,
//! one `INSERT … SELECT unnest(…)` per 10 000 jobs, one transaction); the clock stops when a poll
//! (every 10 ms, own connection) finds no job of the queue whose status is not `Done`. `--drain`
//! says how the jobs meet the worker (docs/benchmarks.md, the same three cases for every
//! contender): `cold` (the default) — the worker runs (1 s to register and LISTEN), the jobs are
//! pushed into the fresh table, the clock starts at the commit; `steady` — the same, after a
//! first push of N jobs followed by `ANALYZE` (the statistics autovacuum takes once a burst has
//! landed) has drained; `backlog` — the jobs are pushed and analyzed before the worker starts,
//! and the clock starts as it is spawned.
//!
//! latency: the worker runs first (1 s to register and LISTEN); a separate connection pushes one
//! job per statement (again `push_tasks`, one row, autocommit, as in the crate's
//! `examples/pubsub.rs`) at R per second for S seconds, each push scheduled at `t0 + i/R`. The
//! job's argument is its sequence number; insert-to-start is from the `Instant` taken just before
//! the push to the `Instant` the handler is entered, in this process.
//!
//! The last line on stdout is one JSON object; progress goes to stderr.

use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::{Config, PgTask, PostgresStorage};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};

const VERSION: &str = "1.0.0";
const QUEUE: &str = "rota-bench";
const BATCH: usize = 10;
const CONCURRENCY: usize = 32;
/// `--wake` when not given: see the module doc.
const DEFAULT_WAKE: &str = "notify,interval=5000";

macro_rules! say {
    ($($t:tt)*) => { eprintln!("apalis-peer: {}", format!($($t)*)) };
}

type Res<T> = Result<T, String>;

struct Args {
    db_url: String,
    mode: String,
    jobs: u64,
    rate: f64,
    seconds: f64,
    wake: Wake,
    /// `--drain`: cold, steady or backlog (module doc).
    drain: String,
}

/// How an idle worker learns that there is work (`--wake`).
#[derive(Clone, Copy, Debug)]
struct Wake {
    /// `with_pubsub()`: the library's LISTEN/NOTIFY.
    notify: bool,
    /// `poll_with_interval(d)`: a timer that wakes the worker every `d`.
    interval: Option<Duration>,
}

impl Wake {
    fn parse(s: &str) -> Res<Self> {
        let mut w = Wake { notify: false, interval: None };
        for part in s.split(',') {
            match part.trim() {
                "notify" => w.notify = true,
                p if p.starts_with("interval=") => {
                    let ms: u64 = p["interval=".len()..].parse().map_err(|e| format!("--wake {p}: {e}"))?;
                    w.interval = Some(Duration::from_millis(ms.max(1)));
                }
                p => return Err(format!("--wake: unknown part `{p}` (notify, interval=MS)")),
            }
        }
        if !w.notify && w.interval.is_none() {
            return Err("--wake needs notify and/or interval=MS".into());
        }
        Ok(w)
    }

    fn describe(&self) -> String {
        match (self.notify, self.interval) {
            (true, None) => "notify".into(),
            (true, Some(d)) => format!("notify,interval={}", d.as_millis()),
            (false, Some(d)) => format!("interval={}", d.as_millis()),
            (false, None) => unreachable!(),
        }
    }
}

fn args() -> Res<Args> {
    let mut a = Args { db_url: String::new(), mode: String::new(), jobs: 50_000, rate: 500.0, seconds: 10.0, wake: Wake::parse(DEFAULT_WAKE)?, drain: "cold".into() };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--db-url" => a.db_url = val()?,
            "--mode" => a.mode = val()?,
            "--jobs" => a.jobs = val()?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--rate" => a.rate = val()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--seconds" => a.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--wake" => a.wake = Wake::parse(&val()?)?,
            "--drain" => a.drain = val()?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.mode != "drain" && a.mode != "latency" {
        return Err(format!("--mode must be drain or latency, not `{}`", a.mode));
    }
    if !["cold", "steady", "backlog"].contains(&a.drain.as_str()) {
        return Err(format!("--drain must be cold, steady or backlog, not `{}`", a.drain));
    }
    if a.db_url.is_empty() {
        return Err("--db-url URL is required".into());
    }
    if a.jobs == 0 || !(a.rate > 0.0) || !(a.seconds > 0.0) {
        return Err("--jobs, --rate and --seconds must be positive".into());
    }
    Ok(a)
}

/// Per sequence number: nanoseconds since `base` of the push and of the handler's entry (0 = not yet).
struct Latency {
    base: Instant,
    pushed: Vec<AtomicU64>,
    started: Vec<AtomicU64>,
}

static LATENCY: OnceLock<Latency> = OnceLock::new();

fn stamp(slot: &AtomicU64, base: Instant) {
    slot.store((base.elapsed().as_nanos() as u64).max(1), Ordering::Relaxed);
}

/// The job: does nothing but note when it was entered (latency mode).
async fn handler(seq: u64) -> Result<(), BoxDynError> {
    if let Some(l) = LATENCY.get() {
        if let Some(slot) = l.started.get(seq as usize) {
            stamp(slot, l.base);
        }
    }
    Ok(())
}

/// One worker as described in the module doc, running until `ctx.stop()`.
fn spawn_worker(pool: &PgPool, ctx: &WorkerContext, wake: Wake) -> tokio::task::JoinHandle<Result<(), WorkerError>> {
    let config = Config::default().queue(QUEUE).batch_size(BATCH);
    let storage = PostgresStorage::<u64>::new(pool).with_config(config);
    macro_rules! spawn {
        ($backend:expr) => {
            tokio::spawn(WorkerBuilder::new(ctx).backend($backend).concurrency(CONCURRENCY).build(handler).run())
        };
    }
    match (wake.notify, wake.interval) {
        (true, None) => spawn!(storage.with_pubsub()),
        (true, Some(d)) => spawn!(storage.with_pubsub().poll_with_interval(d)),
        (false, Some(d)) => spawn!(storage.poll_with_interval(d)),
        (false, None) => unreachable!("Wake::parse refuses it"),
    }
}

async fn stop_worker(ctx: &WorkerContext, w: tokio::task::JoinHandle<Result<(), WorkerError>>) {
    if let Err(e) = ctx.stop() {
        say!("stopping the worker: {e}");
    }
    match tokio::time::timeout(Duration::from_secs(10), w).await {
        Ok(Ok(Ok(()))) => say!("worker stopped"),
        Ok(Ok(Err(e))) => say!("worker ended with an error: {e}"),
        Ok(Err(e)) => say!("worker task: {e}"),
        Err(_) => say!("worker did not stop within 10 s; leaving it"),
    }
}

fn job(seq: u64) -> PgTask {
    TaskBuilder::new(serde_json::to_vec(&seq).expect("u64 encodes")).build()
}

async fn not_done(c: &mut PgConnection) -> Res<i64> {
    sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status <> 'Done'")
        .bind(QUEUE)
        .fetch_one(c)
        .await
        .map_err(|e| format!("poll: {e}"))
}

/// Pushes `n` jobs in one transaction (one statement per 10 000), as the crate's bulk push does.
async fn push(pool: &PgPool, n: u64) -> Res<()> {
    let mut tx = pool.begin().await.map_err(|e| format!("begin: {e}"))?;
    let mut seq = 0;
    while seq < n {
        let end = (seq + 10_000).min(n);
        let tasks: Vec<PgTask> = (seq..end).map(job).collect();
        apalis_postgres::queries::push_tasks(&mut *tx, QUEUE, tasks).await.map_err(|e| format!("push: {e}"))?;
        seq = end;
    }
    tx.commit().await.map_err(|e| format!("push commit: {e}"))
}

async fn analyze(c: &mut PgConnection) -> Res<()> {
    sqlx::query("ANALYZE").execute(c).await.map(|_| ()).map_err(|e| format!("ANALYZE: {e}"))
}

/// Until no job of the queue is left to do, or an error when the worker ended or stalled.
async fn until_done(
    mon: &mut PgConnection,
    w: &tokio::task::JoinHandle<Result<(), WorkerError>>,
    t: Instant,
) -> Res<()> {
    let (mut last, mut last_change, mut last_log) = (-1, Instant::now(), Instant::now());
    loop {
        let left = not_done(mon).await?;
        if left == 0 {
            return Ok(());
        }
        if w.is_finished() {
            return Err(format!("worker ended with {left} jobs left"));
        }
        if left != last {
            (last, last_change) = (left, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(90) {
            return Err(format!("no progress for 90 s, {left} jobs left"));
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            say!("{left} left after {:.1} s", t.elapsed().as_secs_f64());
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn drain(a: &Args, pool: &PgPool, mon: &mut PgConnection) -> Res<serde_json::Value> {
    let n = a.jobs;
    let ctx = WorkerContext::new("rota-peer-apalis-drain");
    let (t, w, expected) = if a.drain == "backlog" {
        let t = Instant::now();
        push(pool, n).await?;
        analyze(mon).await?;
        let pending = not_done(mon).await?;
        if pending != n as i64 {
            return Err(format!("preloaded {n} jobs but {pending} are waiting"));
        }
        say!("preloaded and analyzed {n} jobs in {:.2} s", t.elapsed().as_secs_f64());
        (Instant::now(), spawn_worker(pool, &ctx, a.wake), n)
    } else {
        let w = spawn_worker(pool, &ctx, a.wake);
        // Let the worker register and its LISTEN connection come up before the first push.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut expected = n;
        if a.drain == "steady" {
            let t = Instant::now();
            push(pool, n).await?;
            analyze(mon).await?;
            until_done(mon, &w, t).await?;
            say!("first burst of {n} jobs drained in {:.2} s", t.elapsed().as_secs_f64());
            expected += n;
        }
        push(pool, n).await?;
        (Instant::now(), w, expected)
    };
    if let Err(e) = until_done(mon, &w, t).await {
        return Err(if w.is_finished() { format!("{e}: {:?}", w.await) } else { e });
    }
    let secs = t.elapsed().as_secs_f64();
    say!("drained {n} jobs in {secs:.3} s");
    stop_worker(&ctx, w).await;
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
        .bind(QUEUE)
        .fetch_one(&mut *mon)
        .await
        .map_err(|e| format!("count: {e}"))?;
    if done != expected as i64 {
        return Err(format!("{done} of {expected} jobs are Done"));
    }
    Ok(json!({"peer": "apalis-postgres", "version": VERSION, "case": "drain", "drain": a.drain, "jobs": n, "seconds": secs,
              "per_s": n as f64 / secs, "batch": BATCH, "concurrency": CONCURRENCY, "wake": a.wake.describe()}))
}

/// Linear interpolation between closest ranks, like PostgreSQL's `percentile_cont`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let x = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo as f64)
}

async fn latency(a: &Args, pool: &PgPool) -> Res<serde_json::Value> {
    let n = (a.rate * a.seconds) as usize;
    let l = LATENCY.get_or_init(|| Latency {
        base: Instant::now(),
        pushed: (0..n).map(|_| AtomicU64::new(0)).collect(),
        started: (0..n).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut ins = PgConnection::connect(&a.db_url).await.map_err(|e| format!("inserter connect: {e}"))?;

    let ctx = WorkerContext::new("rota-peer-apalis-latency");
    let w = spawn_worker(pool, &ctx, a.wake);
    // Let the worker register and its LISTEN connection come up before the first push.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if w.is_finished() {
        return Err(format!("worker ended before the pushes: {:?}", w.await));
    }

    say!("pushing {n} jobs at {} per s", a.rate);
    let t0 = Instant::now();
    for i in 0..n {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / a.rate)).into()).await;
        stamp(&l.pushed[i], l.base);
        apalis_postgres::queries::push_tasks(&mut ins, QUEUE, vec![job(i as u64)])
            .await
            .map_err(|e| format!("push {i}: {e}"))?;
    }
    let achieved = n as f64 / t0.elapsed().as_secs_f64();
    say!("pushed {n} jobs in {:.2} s ({achieved:.1} per s)", t0.elapsed().as_secs_f64());

    // Every job must have started; a job whose wake-up was missed is picked up at the next
    // heartbeat (30 s), so wait a little longer than that before calling it lost.
    let deadline = Instant::now() + Duration::from_secs(40);
    let missing = loop {
        let missing = l.started.iter().filter(|s| s.load(Ordering::Relaxed) == 0).count();
        if missing == 0 || Instant::now() > deadline || w.is_finished() {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop_worker(&ctx, w).await;
    if missing > 0 {
        return Err(format!("{missing} of {n} jobs never started"));
    }
    let mut ms: Vec<f64> = (0..n)
        .map(|i| (l.started[i].load(Ordering::Relaxed) as f64 - l.pushed[i].load(Ordering::Relaxed) as f64) / 1e6)
        .collect();
    ms.sort_by(|x, y| x.total_cmp(y));
    Ok(json!({"peer": "apalis-postgres", "version": VERSION, "case": "latency", "rate": a.rate, "achieved_rate": achieved,
              "n": n, "p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "max_ms": ms[n - 1],
              "min_ms": ms[0], "batch": BATCH, "concurrency": CONCURRENCY, "wake": a.wake.describe()}))
}

async fn run() -> Res<serde_json::Value> {
    let a = args()?;
    let pool = PgPool::connect(&a.db_url).await.map_err(|e| format!("connect {}: {e}", a.db_url))?;
    PostgresStorage::setup(&pool).await.map_err(|e| format!("apalis-postgres setup (migrations): {e}"))?;
    say!("apalis-postgres {VERSION} migrations applied");
    let mut mon = PgConnection::connect(&a.db_url).await.map_err(|e| format!("monitor connect: {e}"))?;
    match a.mode.as_str() {
        "drain" => drain(&a, &pool, &mut mon).await,
        "latency" => {
            if a.rate * a.seconds < 1.0 {
                return Err("--rate × --seconds must be at least 1".into());
            }
            latency(&a, &pool).await
        }
        other => Err(format!("--mode must be drain or latency, not `{other}`")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("apalis-peer: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
