// graphile-worker's side of scripts/bench.sh (docs/benchmarks.md), measured the way
// benches/dispatch.rs measures Rota so the figures can stand in one table.
//
//   node bench.mjs --db-url URL --mode drain|latency --config batched|default
//                  [--drain cold|steady|backlog] [--jobs N] [--rate R] [--seconds S] [--concurrency C]
//
// The database must be empty (scripts/bench.py makes a fresh one per call); the schema is
// installed here with graphile-worker's own migrations. The last stdout line is one JSON
// object; progress and graphile-worker's warnings go to stderr.
//
// drain   — the runner is up first, then N no-op jobs are added in ONE add_jobs statement; the
//           clock starts when that statement has committed and stops when the jobs table is
//           empty (graphile-worker deletes a job when it completes), polled every 10 ms. This is
//           Rota's definition (rows inserted while the nodes are up, clock from the commit), so
//           neither side's start-up is counted. That is `--drain cold` (the default): a burst
//           into a fresh table with no statistics. `--drain steady`: a first burst of the same
//           size is added, `ANALYZE` runs right after it (the statistics autovacuum takes once a
//           burst has landed), it drains, and the second burst is measured. `--drain backlog`:
//           the jobs are added and analyzed before the runner starts, and the clock starts as
//           it is started (its start-up counted), as benches/dispatch.rs does for Rota.
// latency — the runner is up; an inserter on its own thread (inserter.mjs: its own event loop,
//           as Rota's inserter is its own process; on one loop the worker slowed the inserter)
//           adds one job per statement at a fixed rate, scheduled against the start time (no
//           sleep drift). Insert-to-start is the moment the task function is entered minus the
//           moment just before that job's add_job was sent, both on the process's monotonic
//           clock (process.hrtime, shared by its threads), matched by job id. (Rota's bench uses
//           claimed_at - created_at on the database clock; graphile-worker deletes its rows on
//           completion, so this clock is the one both ends can share. It also counts the
//           client->server send and the lock->handler hop, well under 1 ms.)
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import pg from "pg";
import { Logger, run, runMigrations } from "graphile-worker";
import { now, sleep } from "./inserter.mjs";

const VERSION = JSON.parse(
  readFileSync(new URL("./node_modules/graphile-worker/package.json", import.meta.url)),
).version;

const log = (msg) => process.stderr.write(`graphile-worker bench: ${msg}\n`);
function die(msg) {
  log(`FAILED: ${msg}`);
  process.exit(1);
}

const { values: a } = parseArgs({
  options: {
    "db-url": { type: "string" },
    mode: { type: "string" },
    config: { type: "string" },
    drain: { type: "string", default: "cold" },
    jobs: { type: "string", default: "20000" },
    rate: { type: "string", default: "500" },
    seconds: { type: "string", default: "10" },
    concurrency: { type: "string" }, // override, to try other values by hand
  },
});
if (!a["db-url"]) die("--db-url is required");
if (!["drain", "latency"].includes(a.mode)) die(`--mode must be drain or latency, got ${a.mode}`);
if (!["cold", "steady", "backlog"].includes(a.drain)) die(`--drain must be cold, steady or backlog, got ${a.drain}`);
const jobs = Number(a.jobs), rate = Number(a.rate), seconds = Number(a.seconds);
if (!(jobs > 0 && rate > 0 && seconds > 0)) die("--jobs, --rate and --seconds must be positive numbers");

// `default`: graphile-worker 0.17's own defaults, stated here so they cannot drift silently
// (dist/config.js): concurrentJobs 1, maxPoolSize 10, pollInterval 2000 ms, no local queue,
// no completion batching. `batched`: the configuration of graphile-worker's published
// performance figures (worker.graphile.org/docs/performance): concurrentJobs 24, maxPoolSize 25,
// localQueue 500, completeJobBatchDelay 0, failJobBatchDelay 0.
const CONFIGS = {
  default: { concurrentJobs: 1, maxPoolSize: 10, pollInterval: 2000 },
  batched: {
    concurrentJobs: 24,
    maxPoolSize: 25,
    pollInterval: 2000,
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};
if (!CONFIGS[a.config]) die(`--config must be batched or default, got ${a.config}`);
const worker = { ...CONFIGS[a.config] };
if (a.concurrency) {
  worker.concurrentJobs = Number(a.concurrency);
  worker.maxPoolSize = Math.max(worker.maxPoolSize, worker.concurrentJobs + 1);
}

// graphile-worker logs to stdout by default; keep stdout for the result line.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") log(`${level}: ${message}`);
});
const preset = { worker: { connectionString: a["db-url"], logger, ...worker } };

let runs = 0; // task entries, to catch a job run twice or never
const started = new Map(); // job id -> now() at task entry (latency mode)
const taskList = {
  noop: async (_payload, helpers) => {
    runs++;
    if (a.mode === "latency") started.set(helpers.job.id, now());
  },
};

// Until the jobs table is empty (a completed job is deleted; a failed one stays for its retry).
async function drained(c, withinMs) {
  const deadline = now() + withinMs;
  for (;;) {
    const { rows } = await c.query("SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs) AS any");
    if (!rows[0].any) return;
    if (now() > deadline) {
      const r = await c.query(
        "SELECT count(*)::int AS left, count(*) FILTER (WHERE last_error IS NOT NULL)::int AS failed, " +
          "max(last_error) AS error FROM graphile_worker._private_jobs",
      );
      die(`not drained within ${withinMs} ms: ${JSON.stringify(r.rows[0])}`);
    }
    await sleep(10);
  }
}

// percentile_cont, as Rota's bench computes it in SQL.
function pct(sorted, p) {
  const x = p * (sorted.length - 1), lo = Math.floor(x), hi = Math.ceil(x);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo);
}

async function main() {
  log(`graphile-worker ${VERSION}, config ${a.config}: ${JSON.stringify(worker)}`);
  await runMigrations({ preset });
  const c = new pg.Client({ connectionString: a["db-url"] });
  await c.connect();
  const { rows: pre } = await c.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs");
  if (pre[0].n !== 0) die(`the database already holds ${pre[0].n} jobs: give a fresh one`);

  const spec = "('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec";
  const add = () =>
    c.query(
      `SELECT count(*) FROM graphile_worker.add_jobs((SELECT array_agg(${spec}) FROM generate_series(1, $1::int)))`,
      [jobs],
    );
  const backlog = a.mode === "drain" && a.drain === "backlog";
  if (backlog) {
    log(`adding ${jobs} jobs in one statement, then ANALYZE, before the runner starts`);
    await add();
    await c.query("ANALYZE");
  }
  const t0 = now(); // a backlog's clock: the runner's start-up is counted
  const runner = await run({ preset, taskList, noHandleSignals: true });
  let out;
  try {
    if (a.mode === "drain") {
      let expected = jobs;
      if (a.drain === "steady") {
        log(`first burst: ${jobs} jobs, ANALYZE, drained`);
        await add();
        await c.query("ANALYZE");
        await drained(c, 1_800_000);
        expected += jobs;
      }
      let t = t0;
      if (!backlog) {
        log(`adding ${jobs} jobs in one statement`);
        await add();
        t = now(); // autocommit: the statement has committed
      }
      await drained(c, 1_800_000);
      const secs = (now() - t) / 1000;
      if (runs !== expected) die(`${runs} task runs for ${expected} jobs`);
      out = { peer: "graphile-worker", version: VERSION, config: a.config, case: "drain", drain: a.drain, jobs, seconds: secs, per_s: jobs / secs, concurrency: worker.concurrentJobs };
    } else {
      const n = Math.floor(rate * seconds);
      log(`adding ${n} jobs, one per statement, at ${rate}/s`);
      const { sent, achieved } = await new Promise((resolve, reject) => {
        const w = new Worker(new URL("./inserter.mjs", import.meta.url), { workerData: { url: a["db-url"], rate, n } });
        w.once("message", resolve);
        w.once("error", reject);
        w.once("exit", (code) => reject(new Error(`inserter exited (${code}) before reporting`)));
      });
      await drained(c, 120_000);
      const ms = [];
      for (const [id, at] of sent) {
        const s = started.get(id);
        if (s === undefined) die(`job ${id} was never started`);
        ms.push(s - at);
      }
      if (runs !== n) die(`${runs} task runs for ${n} jobs`);
      ms.sort((x, y) => x - y);
      out = { peer: "graphile-worker", version: VERSION, config: a.config, case: "latency", rate, achieved_rate: achieved, n: ms.length,
        p50_ms: pct(ms, 0.5), p99_ms: pct(ms, 0.99), max_ms: ms[ms.length - 1], concurrency: worker.concurrentJobs };
    }
  } finally {
    await runner.stop();
    await c.end();
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => die(e?.stack || String(e)));
