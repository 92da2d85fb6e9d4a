# Shared by scripts/test.sh and scripts/bench.sh: make sure PostgreSQL answers, or start a private
# one (bench.sh), and start a private etcd on free loopback ports with a temporary data dir (each
# stopped and removed on exit). Source it; it sets PG_URL (and PG_LOG) and ETCD_ENDPOINT.

# What runs at exit, last started first: each start_* below adds its own stop.
cleanups=()
run_cleanups() {
    local rc=$? i
    for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[i]}" || true; done
    exit "$rc"
}
trap run_cleanups EXIT

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
    if [[ -n "$etcd_pid" ]]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    [[ -n "$etcd_dir" ]] && rm -rf "$etcd_dir"
    return 0
}

start_etcd() {
    local who=$1
    etcd_dir=$(mktemp -d /tmp/rota-etcd.XXXXXX)
    local client_port peer_port
    client_port=$(free_port)
    peer_port=$(free_port)
    cleanups+=(cleanup_etcd)
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

# A private PostgreSQL server for one run (scripts/bench.sh): initdb in a temporary directory,
# a free loopback port, its socket in that directory, stopped and removed at exit. Stock
# settings (autovacuum, fsync and synchronous_commit on, initdb's shared_buffers and
# max_connections), so no figure depends on how the machine's own server is configured. Set
# besides the address: the log's line prefix (logging only), which names each line's database
# and backend as Debian's does, since the idle case counts a database's statements in the log.
# initdb refuses to run as root, so as root the server runs as the `postgres` OS user.
private_pg_dir=""
private_pg_bin=""
as_pg_owner() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup_private_pg() {
    if [[ -n "$private_pg_dir" ]]; then
        as_pg_owner "$private_pg_bin/pg_ctl" -D "$private_pg_dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 \
            || as_pg_owner "$private_pg_bin/pg_ctl" -D "$private_pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$private_pg_dir"
    fi
    return 0
}

start_private_postgres() {
    local who=$1 port user
    private_pg_bin=$(pg_bindir)
    private_pg_dir=$(mktemp -d /tmp/rota-pg.XXXXXX)
    cleanups+=(cleanup_private_pg)
    [[ $(id -u) -eq 0 ]] && chown postgres "$private_pg_dir"
    user=$(as_pg_owner id -un)
    as_pg_owner "$private_pg_bin/initdb" -D "$private_pg_dir/data" -U "$user" --auth=trust -E UTF8 >"$private_pg_dir/initdb.log" 2>&1 \
        || { cat "$private_pg_dir/initdb.log" >&2; echo "$who: initdb failed" >&2; exit 1; }
    port=$(free_port)
    as_pg_owner "$private_pg_bin/pg_ctl" -D "$private_pg_dir/data" -l "$private_pg_dir/postgres.log" -w -t 60 \
        -o "-p $port -k $private_pg_dir -c listen_addresses=127.0.0.1 -c log_line_prefix='%m [%p] %q%u@%d '" start >/dev/null \
        || { cat "$private_pg_dir/postgres.log" >&2; echo "$who: the private PostgreSQL did not start" >&2; exit 1; }
    PG_URL="postgres://$user@127.0.0.1:$port/postgres"
    PG_LOG="$private_pg_dir/postgres.log"
    psql "$PG_URL" -qAtc 'SELECT 1' >/dev/null || { echo "$who: cannot connect to the private PostgreSQL" >&2; exit 1; }
    echo "$who: private PostgreSQL $("$private_pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($private_pg_dir)" >&2
}
