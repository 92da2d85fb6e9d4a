#!/usr/bin/env python3
"""Rota against the best PostgreSQL queues, in one run (issue 8). Called by scripts/bench.sh,
which installs what is missing, builds, and starts a private etcd.

Each contender gets a fresh database per case; contenders alternate within a repetition; each
figure is the median of the repetitions. Results go to benches/results/: latest.json for a full
run (the one docs/benchmarks.md quotes), quick.json with --quick, partial.json with --only (the
last two are not committed), or --out PATH; the last line printed is one JSON object with the
headline figures.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = os.environ.get("ROTA_BENCH_PG", "postgres://postgres@127.0.0.1:5432/postgres")
PEERS = os.path.join(ROOT, "benches", "peers")
APALIS_BIN = os.environ.get("APALIS_BENCH_BIN", os.path.join(ROOT, "target", "peers", "apalis", "release", "rota-peer-apalis"))


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def psql(sql, url=ADMIN):
    subprocess.run(["psql", url, "-qAtc", sql], check=True, stdout=subprocess.DEVNULL)


class FreshDb:
    """A database created for one case and dropped after it."""

    n = 0

    def __enter__(self):
        FreshDb.n += 1
        self.name = f"bench_{os.getpid()}_{FreshDb.n}"
        psql(f"CREATE DATABASE {self.name}")
        return ADMIN.rsplit("/", 1)[0] + "/" + self.name

    def __exit__(self, *exc):
        psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def last_json(out, what):
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what} printed no JSON:\n{out}")


def run(cmd, what, cwd=ROOT, env=None, timeout=3600):
    log(f"{what}: {' '.join(cmd)}")
    load = os.getloadavg()[0]
    t = time.time()
    p = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-4000:]}")
    r = last_json(p.stdout, what)
    r["load_before"] = round(load, 2)
    r["wall_s"] = round(time.time() - t, 2)
    log(f"{what}: {json.dumps(r)}")
    return r


# The binaries under test, copied once at the start of a run (`snapshot`). Why: `cargo bench`
# rebuilds whatever changed, so a source edited during a run would silently change the binary in
# the middle of it, and the later repetitions would measure an unfinished edit.
BIN = {}


def snapshot():
    """Copy the rota binary and the dispatch bench executable (built by bench.sh) aside."""
    out = subprocess.run(["cargo", "bench", "-q", "--bench", "dispatch", "--no-run", "--message-format=json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    exes = [m.get("executable") for m in map(json.loads, filter(lambda l: l.startswith("{"), out.splitlines()))
            if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "dispatch"]
    if not exes or not exes[-1]:
        raise RuntimeError("cargo bench --no-run named no dispatch bench executable")
    BIN["commit"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                   capture_output=True, text=True).stdout.strip()
    d = os.path.join(ROOT, "target", "bench", "bin")
    os.makedirs(d, exist_ok=True)
    target = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
    for name, src in (("dispatch", exes[-1]), ("rota", os.path.join(target, "release", "rota"))):
        BIN[name] = os.path.join(d, name)
        shutil.copy2(src, BIN[name])


def rota(case, nodes, **kw):
    args = [BIN["dispatch"], case, "--nodes", str(nodes)]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    return run(args, f"rota {case} x{nodes}", env={"ROTA_BIN": BIN["rota"]})


def graphile(mode, config, db, **kw):
    args = ["node", "bench.mjs", "--db-url", db, "--mode", mode, "--config", config]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    return run(args, f"graphile-worker {mode} {config}", cwd=os.path.join(PEERS, "graphile"))


def apalis(mode, db, **kw):
    args = [APALIS_BIN, "--db-url", db, "--mode", mode]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    return run(args, f"apalis {mode}")


def pg_limit(db, jobs, batch):
    return run(["bash", os.path.join(PEERS, "pgbench", "limit.sh"), db, str(jobs), str(batch)], f"pg limit batch {batch}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition, no sustained or scale case (<= 6 min)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated case names to run (default: all)")
    ap.add_argument("--sustained-seconds", type=int, default=300, help="length of the sustained case")
    ap.add_argument("--sustained-rate", type=int, default=10_000, help="its rate when no drain ran")
    ap.add_argument("--sustained-reps", type=int, default=None, help="its repetitions (default: --reps)")
    ap.add_argument("--out", default=None, help="results file (default: benches/results/latest.json, "
                    "quick.json with --quick, partial.json with --only)")
    a = ap.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    snapshot()
    quick = a.quick
    reps = a.reps or (1 if quick else 3)
    # Quick sizes still take several seconds a drain, so start-up does not dominate the figure.
    jobs = 100_000 if quick else 200_000
    peer_jobs = 100_000
    # Slow contenders get smaller preloads, so a full run stays near 20 minutes.
    apalis_jobs = 5_000 if quick else 20_000
    slow_jobs = 20_000
    lat = {"rate": 500, "seconds": 10 if quick else 30}
    batch = 256  # dispatch.batch_size: Rota's claim size

    # Each drain case for every contender (docs/benchmarks.md): `cold` is named as before.
    cases = {}
    for d in DRAINS:
        cases.update({
            f"rota_drain_1{SUFFIX[d]}": lambda d=d: rota("drain", 1, jobs=jobs, drain=d),
            f"graphile_drain_batched{SUFFIX[d]}":
                lambda d=d: with_db(lambda db: graphile("drain", "batched", db, jobs=peer_jobs, drain=d)),
            f"apalis_drain{SUFFIX[d]}": lambda d=d: with_db(lambda db: apalis("drain", db, jobs=apalis_jobs, drain=d)),
        })
    cases.update({
        "pg_limit_batch": lambda: with_db(lambda db: pg_limit(db, jobs, batch)),
        "rota_latency_1": lambda: rota("latency", 1, **lat),
        "graphile_latency_batched": lambda: with_db(lambda db: graphile("latency", "batched", db, **lat)),
    })
    if not quick:
        for d in DRAINS:
            cases[f"rota_drain_3{SUFFIX[d]}"] = lambda d=d: rota("drain", 3, jobs=jobs, drain=d)
        cases.update({
            "rota_scale_3": lambda: rota("scale", 3, apps=10_000, seconds=20),
            "rota_apps_1": lambda: rota("apps", 1, apps=1000, jobs=slow_jobs),
            "graphile_drain_default": lambda: with_db(lambda db: graphile("drain", "default", db, jobs=slow_jobs)),
            "pg_limit_batch_1": lambda: with_db(lambda db: pg_limit(db, slow_jobs // 2, 1)),
            "pg_limit_batch_10": lambda: with_db(lambda db: pg_limit(db, jobs, 10)),
            "graphile_latency_default": lambda: with_db(lambda db: graphile("latency", "default", db, **lat)),
            "apalis_latency": lambda: with_db(lambda db: apalis("latency", db, **lat)),
            "rota_idle_1": lambda: rota("idle", 1, seconds=20),
            "rota_idle_3": lambda: rota("idle", 3, seconds=20),
        })
    # The sustained case runs at the highest rate the drain reached, so it goes after the drains.
    sustained = not quick and (not a.only or "rota_sustained_1" in a.only.split(","))
    # 100,000 applications: minutes and a few GB, so only when named.
    if "rota_scale_3_100k" in a.only.split(","):
        cases["rota_scale_3_100k"] = lambda: rota("scale", 3, apps=100_000, seconds=30)
    if a.only:
        cases = {k: v for k, v in cases.items() if k in a.only.split(",")}
    results = {k: [] for k in cases}
    for rep in range(reps):
        log(f"repetition {rep + 1} of {reps}")
        order = list(cases)
        if rep % 2 == 1:
            order.reverse()  # alternate who goes first
        for name in order:
            try:
                results[name].append(cases[name]())
            except Exception as e:  # a contender that cannot run is reported, not hidden
                log(f"{name}: FAILED: {e}")
                results[name].append({"error": str(e)[-2000:]})

    if sustained:
        drains = [r["per_s"] for r in results.get("rota_drain_1", []) if "per_s" in r]
        rate = round(statistics.median(drains)) if drains else a.sustained_rate
        results["rota_sustained_1"] = []
        sreps = a.sustained_reps or reps
        for rep in range(sreps):
            log(f"sustained at {rate}/s, repetition {rep + 1} of {sreps}")
            try:
                results["rota_sustained_1"].append(rota("sustained", 1, rate=rate, seconds=a.sustained_seconds))
            except Exception as e:
                log(f"rota_sustained_1: FAILED: {e}")
                results["rota_sustained_1"].append({"error": str(e)[-2000:]})

    def med(name, key):
        vals = [r[key] for r in results.get(name, []) if key in r]
        return round(statistics.median(vals), 3) if vals else None

    summary = {
        "rota_drain_per_s": med("rota_drain_1", "per_s"),
        "graphile_worker_drain_per_s": med("graphile_drain_batched", "per_s"),
        "apalis_drain_per_s": med("apalis_drain", "per_s"),
        "pg_limit_per_s": med("pg_limit_batch", "per_s"),
        "latency_p50_ms": med("rota_latency_1", "p50_ms"),
        "latency_p99_ms": med("rota_latency_1", "p99_ms"),
        "graphile_worker_latency_p50_ms": med("graphile_latency_batched", "p50_ms"),
        "graphile_worker_latency_p99_ms": med("graphile_latency_batched", "p99_ms"),
    }
    ratio = lambda x, y: round(x / y, 3) if x and y else None  # noqa: E731
    # Per drain case, each contender's median and Rota's ratios; the headline ratios are the
    # worst case of each (the targets hold on every case), `worst_case` names it.
    by_case = {}
    for d in DRAINS:
        r = med(f"rota_drain_1{SUFFIX[d]}", "per_s")
        g = med(f"graphile_drain_batched{SUFFIX[d]}", "per_s")
        p = med(f"apalis_drain{SUFFIX[d]}", "per_s")
        by_case[d] = {"rota_per_s": r, "graphile_worker_per_s": g, "apalis_per_s": p,
                      "ratio_vs_graphile_worker": ratio(r, g), "ratio_vs_apalis": ratio(r, p),
                      "ratio_vs_pg_limit": ratio(r, summary["pg_limit_per_s"])}
        if not quick:
            by_case[d]["rota_3_nodes_per_s"] = med(f"rota_drain_3{SUFFIX[d]}", "per_s")
    summary["drain_cases"] = by_case
    summary["worst_case"] = {}
    for key in ("ratio_vs_graphile_worker", "ratio_vs_apalis", "ratio_vs_pg_limit"):
        known = [(v[key], d) for d, v in by_case.items() if v[key] is not None]
        summary[key] = min(known)[0] if known else None
        summary["worst_case"][key] = min(known)[1] if known else None
    if not quick:
        summary["rota_drain_3_nodes_per_s"] = med("rota_drain_3", "per_s")
        summary["rota_apps_per_s"] = med("rota_apps_1", "per_s")
        summary["idle_queries_per_s_1"] = med("rota_idle_1", "queries_per_s_per_node")
        summary["idle_queries_per_s_3"] = med("rota_idle_3", "queries_per_s_per_node")
        summary["sustained_last_over_first"] = med("rota_sustained_1", "ratio_last_over_first")
    for name in ("rota_scale_3", "rota_scale_3_100k"):
        runs = [r for r in results.get(name, []) if "start_s" in r]
        if runs:
            m = lambda f: round(statistics.median(f(r) for r in runs), 3)  # noqa: E731
            summary[name] = {
                "apps": runs[0]["apps"],
                "start_s": m(lambda r: r["start_s"]),
                "join_moved": m(lambda r: r["join"]["moved"]),
                "join_spawn_to_running_s": m(lambda r: r["join"]["spawn_to_running_s"]),
                "join_joined_to_running_s": m(lambda r: r["join"]["joined_to_running_s"]),
                "failover_kill_to_running_s": m(lambda r: r["failover"]["kill_to_running_s"]),
                "double_starts": max(r["join"]["checks"]["double_starts"] + r["failover"]["checks"]["double_starts"]
                                     for r in runs),
                "statements_per_s_per_node": m(lambda r: r["steady"]["statements_per_s_per_node"]),
                "max_rss_mb": m(lambda r: max(n["rss_mb"] for n in r["steady"]["by_node"].values())),
                "max_cpu_share": m(lambda r: max(n["cpu_share"] for n in r["steady"]["by_node"].values())),
            }

    name = "quick.json" if quick else "partial.json" if a.only else "latest.json"
    path = os.path.abspath(a.out or os.path.join(ROOT, "benches", "results", name))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    utc = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    date = {"started": utc(started), "finished": utc(datetime.datetime.now(datetime.timezone.utc))}
    with open(path, "w") as f:
        json.dump({"date": date, "quick": quick, "reps": reps, "only": a.only or None, "machine": machine(),
                   "runs": results, "summary": summary}, f, indent=2)
        f.write("\n")
    log(f"results in {path}")
    print(json.dumps(summary))


# The drain cases (benches/dispatch.rs `Drain`) and their case-name suffixes.
DRAINS = ("cold", "steady", "backlog")
SUFFIX = {"cold": "", "steady": "_steady", "backlog": "_backlog"}


def with_db(f):
    with FreshDb() as db:
        return f(db)


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except Exception:
            return ""

    return {
        "cpus": os.cpu_count(),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "mem": sh("grep MemTotal /proc/meminfo"),
        "postgres": sh("psql '" + ADMIN + "' -qAtc 'SHOW server_version'"),
        "server": server_settings(),
        "node": sh("node --version"),
        "rustc": sh("rustc --version"),
        "rota": BIN.get("commit", ""),
    }


# The server's settings that move the figures, as the run found them (scripts/bench.sh starts a
# private server with initdb's defaults; another server can be named with ROTA_BENCH_PG).
SETTINGS = ("server_version", "autovacuum", "autovacuum_naptime", "fsync", "synchronous_commit", "shared_buffers",
            "max_connections", "wal_level", "max_wal_size", "checkpoint_timeout", "work_mem")


def server_settings():
    names = ", ".join(f"'{n}'" for n in SETTINGS)
    try:
        out = subprocess.run(["psql", ADMIN, "-qAtF", "\t", "-c",
                              f"SELECT name, current_setting(name) FROM pg_settings WHERE name IN ({names})"],
                             capture_output=True, text=True, check=True).stdout
    except Exception as e:  # reported, not fatal: the figures are still figures
        return {"error": str(e)}
    got = dict(line.split("\t", 1) for line in out.strip().splitlines() if "\t" in line)
    got["url"] = ADMIN
    return got


if __name__ == "__main__":
    main()
