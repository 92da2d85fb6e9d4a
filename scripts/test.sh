#!/usr/bin/env bash
# Run the whole test suite against real services: makes sure PostgreSQL is up, starts a private
# etcd on a free loopback port with a temporary data dir, runs `cargo test`, and cleans up.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh test

# --- PostgreSQL -------------------------------------------------------------------------------
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
if ! pg_up; then
    echo "test: starting PostgreSQL" >&2
    cluster_version=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start || true
    for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
    pg_up || { echo "test: PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi
export ROTA_TEST_PG_URL="${ROTA_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! psql "$ROTA_TEST_PG_URL" -qAtc 'SELECT 1' >/dev/null; then
    echo "test: cannot log in with $ROTA_TEST_PG_URL; set ROTA_TEST_PG_URL to a superuser URL" >&2
    exit 1
fi

# --- etcd -------------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_dir=$(mktemp -d /tmp/rota-test-etcd.XXXXXX)
client_port=$(free_port)
peer_port=$(free_port)
etcd_pid=""
cleanup() {
    local rc=$?
    if [[ -n "$etcd_pid" ]]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    rm -rf "$etcd_dir"
    exit "$rc"
}
trap cleanup EXIT
etcd --name rota-test --data-dir "$etcd_dir/data" \
    --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "rota-test=http://127.0.0.1:$peer_port" >"$etcd_dir/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$client_port/health" 2>/dev/null | grep -q true && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$client_port/health" | grep -q true || { cat "$etcd_dir/etcd.log" >&2; echo "test: etcd did not start" >&2; exit 1; }
export ROTA_TEST_ETCD_ENDPOINTS="127.0.0.1:$client_port"
echo "test: PostgreSQL at $ROTA_TEST_PG_URL, etcd at $ROTA_TEST_ETCD_ENDPOINTS" >&2

cargo test "$@"
