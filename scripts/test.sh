#!/usr/bin/env bash
# Run the whole test suite against real services: makes sure PostgreSQL is up, starts a private
# etcd on a free loopback port with a temporary data dir, runs `cargo test`, and cleans up.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh test
source scripts/lib.sh

ensure_postgres test
start_etcd test
export ROTA_TEST_PG_URL="$PG_URL"
export ROTA_TEST_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
echo "test: PostgreSQL at $ROTA_TEST_PG_URL, etcd at $ROTA_TEST_ETCD_ENDPOINTS" >&2

cargo test "$@"
