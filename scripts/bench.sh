#!/usr/bin/env bash
# Rota side by side with graphile-worker, apalis-postgres and the database's own limit (pgbench),
# in one run, on fresh databases (docs/benchmarks.md). Installs what is missing, builds in release,
# starts a private PostgreSQL (initdb, stock settings) and a private etcd, both stopped at exit,
# then runs scripts/bench.py. Results: benches/results/ (latest.json for a
# full run, quick.json, partial.json for --only; --out PATH elsewhere).
#   scripts/bench.sh --quick      <= 6 minutes, one repetition; last line: one JSON object
#   scripts/bench.sh              the full run (3 repetitions, large preloads)
#   scripts/bench.sh --only rota_drain_1,pg_limit_batch   some cases
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh test
source scripts/lib.sh

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "bench: installing nodejs and npm" >&2
    sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
command -v pgbench >/dev/null || { echo "bench: pgbench is missing (Debian: it ships with postgresql)" >&2; exit 1; }

start_private_postgres bench
start_etcd bench
export ROTA_BENCH_PG="$PG_URL" ROTA_BENCH_PG_LOG="$PG_LOG" ROTA_BENCH_ETCD="$ETCD_ENDPOINT"

echo "bench: building (release)" >&2
cargo build --release -q --bins --benches
(cd benches/peers/graphile && npm ci --silent --no-audit --no-fund)
export APALIS_BENCH_BIN="${CARGO_TARGET_DIR:-$PWD/target}/peers/apalis/release/rota-peer-apalis"
CARGO_TARGET_DIR="$(dirname "$(dirname "$APALIS_BENCH_BIN")")" cargo build --release -q --manifest-path benches/peers/apalis/Cargo.toml

python3 scripts/bench.py "$@"
