#!/usr/bin/env bash
# The database's own limit for Rota's queue shape (scripts/bench.sh, docs/benchmarks.md):
# pgbench clients doing nothing but claim + complete (claim_complete.sql) on Rota's real task
# table, with no dispatcher in between.
#   limit.sh DB_URL JOBS BATCH      DB_URL: an empty database (bench.py makes a fresh one)
#   LIMIT_EXTRA_SQL='…' limit.sh …   the same after a schema change run after the migrations
# Last stdout line: {"peer":"pgbench","case":"limit","batch":..,"jobs":..,"seconds":..,"per_s":..,"clients":..}
set -Eeuo pipefail  # -E: the ERR trap below also fires inside q()
[[ $# -eq 3 ]] || { echo "usage: $0 DB_URL JOBS BATCH" >&2; exit 2; }
url=$1 jobs=$2 batch=$3
[[ $jobs =~ ^[1-9][0-9]*$ && $batch =~ ^[1-9][0-9]*$ ]] || { echo "limit.sh: JOBS and BATCH must be positive integers" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
# 4 clients on 2 threads: the machine has 2 cores, and PostgreSQL needs them as much as pgbench.
clients=4 threads=2
q() { psql "$url" -v ON_ERROR_STOP=1 -qAtX "$@"; }
log() { echo "limit.sh: $*" >&2; }
trap 'rc=$?; log "FAILED (exit $rc): $BASH_COMMAND"' ERR

# Rota's own schema, every migration unchanged: the same columns, CHECKs and indexes (each one
# the claim and completion updates must maintain). The one trigger is a per-statement NOTIFY
# on INSERT: it fires once for the preload and never for the UPDATEs measured here.
for f in "$root"/migrations/postgres/*/up.sql; do q -f "$f" >/dev/null; done
# A schema change to weigh, run after the migrations (docs/benchmarks.md: what a job costs).
if [[ -n "${LIMIT_EXTRA_SQL:-}" ]]; then q -c "$LIMIT_EXTRA_SQL" >/dev/null; fi
log "preloading $jobs pending rows"
q -c "INSERT INTO task (action) SELECT 'run' FROM generate_series(1, $jobs)"
# Statistics, as a live queue database has them: without, the planner guesses a handful of
# pending rows and plans a claim as a bitmap scan + sort of ALL of them (60-120 ms instead of
# 2-4 ms at 200k rows, EXPLAIN ANALYZE) until each client's prepared claim turns generic.
# Autovacuum would analyze within a minute, too late for a run this short.
q -c "ANALYZE task"

# Enough transactions per client to claim every row if each claims a full batch, plus one:
# SKIP LOCKED can hand a client a short batch in a race, and a spare empty claim costs little.
# Rows still pending after a round get another round, inside the clock (and so does the
# check between rounds; the clock stops as the last round's pgbench exits).
# WAL written and checkpoints begun during the rounds, as the Rota drain reports them.
marks() { q -F ' ' -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,
    checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"; }
read -r wal0 ckpt0 <<<"$(marks)"
left=$jobs
t0=$(date +%s.%N)
for round in 1 2 3 4 5; do
    per_client=$(( (left + batch * clients - 1) / (batch * clients) + 1 ))
    log "round $round: $left pending, pgbench -c $clients -j $threads -t $per_client, batch $batch"
    pgbench -n -M prepared -c "$clients" -j "$threads" -t "$per_client" -D batch="$batch" \
        -f "$here/claim_complete.sql" "$url" >&2
    t1=$(date +%s.%N)
    left=$(q -c "SELECT count(*) FROM task WHERE status = 'pending'")
    [[ $left -eq 0 ]] && break
done
read -r wal1 ckpt1 <<<"$(marks)"

row=$(q -F ' ' -c "SELECT count(*) FILTER (WHERE status = 'succeeded'),
    count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending') FROM task")
read -r done running pending <<<"$row"
[[ $done -eq 0 ]] && { log "FAILED: no row completed"; exit 1; }
[[ $done -ne $jobs ]] && log "WARNING: $done of $jobs rows succeeded ($running running, $pending pending); per_s counts $done"
python3 -c 'import json, sys
b, j, t0, t1, c = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
wal, ckpt = int(sys.argv[6]), int(sys.argv[7])
s = t1 - t0
print(json.dumps({"peer": "pgbench", "case": "limit", "batch": b, "jobs": j, "seconds": s, "per_s": j / s, "clients": c,
                  "wal_bytes_per_row": wal / j, "checkpoints_during": ckpt}))' \
    "$batch" "$done" "$t0" "$t1" "$clients" "$((wal1 - wal0))" "$((ckpt1 - ckpt0))"
