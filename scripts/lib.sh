# Shared by scripts/test.sh and scripts/bench.sh: make sure PostgreSQL answers, and start a
# private etcd on free loopback ports with a temporary data dir (stopped and removed on exit).
# Source it; it sets PG_URL and ETCD_ENDPOINT.

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }

ensure_postgres() {
    local who=$1
    if ! pg_up; then
        echo "$who: starting PostgreSQL" >&2
        local cluster_version
        cluster_version=$(ls /etc/postgresql | sort -V | tail -1)
        pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start || true
        for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
        pg_up || { echo "$who: PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
    fi
    PG_URL="${ROTA_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    if ! psql "$PG_URL" -qAtc 'SELECT 1' >/dev/null; then
        echo "$who: cannot log in with $PG_URL; set ROTA_TEST_PG_URL to a superuser URL" >&2
        exit 1
    fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

etcd_dir=""
etcd_pid=""
cleanup_etcd() {
    local rc=$?
    if [[ -n "$etcd_pid" ]]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    [[ -n "$etcd_dir" ]] && rm -rf "$etcd_dir"
    exit "$rc"
}

start_etcd() {
    local who=$1
    etcd_dir=$(mktemp -d /tmp/rota-etcd.XXXXXX)
    local client_port peer_port
    client_port=$(free_port)
    peer_port=$(free_port)
    trap cleanup_etcd EXIT
    etcd --name rota-test --data-dir "$etcd_dir/data" \
        --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "rota-test=http://127.0.0.1:$peer_port" >"$etcd_dir/etcd.log" 2>&1 &
    etcd_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$client_port/health" 2>/dev/null | grep -q true && break
        sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$client_port/health" | grep -q true \
        || { cat "$etcd_dir/etcd.log" >&2; echo "$who: etcd did not start" >&2; exit 1; }
    ETCD_ENDPOINT="127.0.0.1:$client_port"
}

# The directory of initdb and pg_ctl (newest /usr/lib/postgresql/*/bin, else pg_config's), for
# suites that run a private PostgreSQL server (scripts/chaos.sh).
pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [[ -z "$dir" ]] && command -v pg_config >/dev/null; then
        dir=$(pg_config --bindir)
    fi
    [[ -x "$dir/initdb" ]] || { echo "no initdb found; install postgresql (scripts/prereqs.sh test)" >&2; return 1; }
    echo "$dir"
}
