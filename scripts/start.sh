#!/usr/bin/env bash
# Start one Rota node on the embedded default: SQLite in ./data, standalone membership,
# HTTP on 127.0.0.1:8080. Extra arguments go to `rota serve` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh build
echo "rota: building (the first build takes a few minutes)…" >&2
cargo build --release
exec target/release/rota serve "$@"
