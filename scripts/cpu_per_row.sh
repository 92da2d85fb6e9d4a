#!/usr/bin/env bash
# CPU per row of one bench case, split between the PostgreSQL server and the nodes: runs the
# bench executable under `perf record -a` (software clock, every CPU) and divides the samples of
# the middle of the run (35–75 % of its time: after the preload, before the tail) by the rate.
#   scripts/cpu_per_row.sh BENCH_EXE ROTA_BIN CASE NODES JOBS [extra bench args...]
# e.g. scripts/cpu_per_row.sh target/bench/bin/dispatch target/release/rota drain 1 300000
# Needs perf, ROTA_BENCH_PG (default: the local server) and, for NODES > 1, ROTA_BENCH_ETCD.
# Do not run it next to a build or another bench: the machine's idle time is part of the answer.
set -euo pipefail
exe=$1 bin=$2 case=$3 nodes=$4 jobs=$5
shift 5
export ROTA_BIN=$bin ROTA_BENCH_PG=${ROTA_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
data=$(mktemp --suffix=.perf)
trap 'rm -f "$data"' EXIT
out=$(perf record -q -e cpu-clock -a -F 499 -o "$data" -- "$exe" "$case" --nodes "$nodes" --jobs "$jobs" "$@" 2>/dev/null | tail -1)
perf report -i "$data" --time 35%-75% --no-children --sort comm --stdio 2>/dev/null \
    | python3 -c '
import json, re, sys
rate = json.loads(sys.argv[1])["per_s"]
server = nodes = idle = 0.0
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(.*)", line)
    if not m:
        continue
    share, comm = float(m.group(1)), m.group(2).strip()
    if comm == "postgres":
        server += share
    elif comm.startswith(("tokio", "rota", "r2d2")):
        nodes += share
    elif comm == "swapper":
        idle += share
cpus = len(__import__("os").sched_getaffinity(0))
us = cpus * 1e6 / rate / 100
print(json.dumps({"per_s": round(rate), "server_us_per_row": round(server * us, 1),
                  "nodes_us_per_row": round(nodes * us, 1), "idle_pct": round(idle)}))
' "$out"
