// The latency inserter of bench.mjs, run as a worker thread so that it has its own event loop
// (as Rota's inserter is its own process): one add_job per statement at `rate` per second,
// scheduled against the start time. Posts back {sent: [[job id, ms just before its add_job]],
// achieved}. Imported by bench.mjs for the shared clock only.
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import pg from "pg";

export const now = () => Number(process.hrtime.bigint()) / 1e6; // ms, monotonic, same in every thread
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (!isMainThread) {
  const { url, rate, n } = workerData;
  const ins = new pg.Client({ connectionString: url });
  await ins.connect();
  const sent = [];
  const t0 = now();
  for (let i = 0; i < n; i++) {
    const wait = t0 + (i * 1000) / rate - now();
    if (wait > 0) await sleep(wait);
    const at = now();
    const { rows } = await ins.query({
      name: "add", // prepared once, as Rota's inserter does
      text: "SELECT id FROM graphile_worker.add_job('noop', '{}')",
    });
    sent.push([rows[0].id, at]);
  }
  const achieved = n / ((now() - t0) / 1000);
  await ins.end();
  parentPort.postMessage({ sent, achieved }); // the thread then ends by itself
}
