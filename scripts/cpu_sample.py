#!/usr/bin/env python3
"""CPU seconds spent per interval by PostgreSQL's backends (the vacuum apart) and by processes
whose name starts with given prefixes, read from /proc: how docs/benchmarks.md splits the
machine during a benchmark (e.g. the node's vacuum against the rest in the sustained case).

    scripts/cpu_sample.py SECONDS [--every 10] [--prefix rota --prefix dispatch]

One JSON line per interval: {"t": …, "vacuum": …, "pg": …, "<prefix>": …, "vac_samples": …}.
A backend counts as the vacuum while `pg_stat_activity` shows it running `VACUUM` (sampled
twice a second, through psql as user postgres on 127.0.0.1). A process's first sample is its
baseline, so one that lives less than half a second is not counted."""
import argparse, json, os, subprocess, time

HZ = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def vacuum_pids():
    out = subprocess.run(["psql", "-U", "postgres", "-h", "127.0.0.1", "-Atc",
                          "SELECT pid FROM pg_stat_activity WHERE query LIKE 'VACUUM%' AND state = 'active'"],
                         capture_output=True, text=True).stdout
    return {int(x) for x in out.split()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("seconds", type=float)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--prefix", action="append", default=[])
    a = ap.parse_args()
    kinds = ["vacuum", "pg"] + a.prefix
    last, acc, vac_seen = {}, dict.fromkeys(kinds, 0.0), 0
    t0 = tick = time.time()
    while time.time() - t0 < a.seconds:
        vac = vacuum_pids()
        vac_seen += bool(vac)
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                name = comm(p)
                kind = ("vacuum" if int(p) in vac else "pg") if name.startswith("postgres") else \
                    next((x for x in a.prefix if name.startswith(x)), None)
                if kind is None:
                    continue
                v = cpu(p)
            except OSError:
                continue
            if p in last:
                acc[kind] += v - last[p]
            last[p] = v
        time.sleep(0.5)
        if time.time() - tick >= a.every:
            tick = time.time()
            print(json.dumps({"t": round(tick - t0), **{k: round(v, 2) for k, v in acc.items()},
                              "vac_samples": vac_seen}), flush=True)
            acc, vac_seen = dict.fromkeys(kinds, 0.0), 0


if __name__ == "__main__":
    main()
