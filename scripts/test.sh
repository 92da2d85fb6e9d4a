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

# schemathesis (PyPI) for tests/hostile.rs, and aiosmtpd (an SMTP server with STARTTLS and AUTH)
# for tests/alarms.rs: pinned versions in a venv under target/, installed only when missing or
# at another version.
SCHEMATHESIS_VERSION=4.32.5
AIOSMTPD_VERSION=1.4.6
venv=target/venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\b"; then
    echo "test: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
if [ "$("$venv/bin/python" -c 'import aiosmtpd; print(aiosmtpd.__version__)' 2>/dev/null)" != "$AIOSMTPD_VERSION" ]; then
    echo "test: installing aiosmtpd $AIOSMTPD_VERSION into $venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION"
fi
export ROTA_SCHEMATHESIS="$PWD/$venv/bin/schemathesis"
export ROTA_TEST_PYTHON="$PWD/$venv/bin/python"

# Rules the machine keeps: formatting and lints first (fast to fail, before the long suite).
cargo fmt --check || { echo "test: cargo fmt --check failed; run cargo fmt" >&2; exit 1; }
cargo clippy --all-targets --quiet -- -D warnings

cargo test "$@"
# Reached only when the tests passed (set -e): say so once, after cargo's many summaries.
echo "test: passed (cargo test${*:+ $*}). One suite: scripts/test.sh --test NAME (tests/*.rs); benchmarks: scripts/bench.sh --quick" >&2
