#!/usr/bin/env bash
# Install what building (and, with `test`, testing) Rota needs on Debian/Ubuntu, only when missing.
#   scripts/prereqs.sh build   compilers, protoc (etcd-client), libpq, libsqlite3, sqlite3 CLI
#   scripts/prereqs.sh test    the above + etcd, PostgreSQL, python3-venv (for schemathesis) and
#                              libfaketime (a node started with its clock shifted, tests/serve.rs),
#                              iproute2 and nftables (the chaos suite's network partitions),
#                              prometheus (its promtool checks /metrics and deploy/'s alerting rules),
#                              chromium and chromium-driver (tests/console.rs drives the web console)
set -euo pipefail

lean=()
want=(build-essential pkg-config protobuf-compiler libprotobuf-dev libpq-dev libsqlite3-dev sqlite3 curl)
if [[ "${1:-build}" == "test" ]]; then
    want+=(etcd-server postgresql libfaketime iproute2 nftables)
    # tests/hostile.rs runs schemathesis from a venv (scripts/test.sh); Debian splits venv out.
    python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
    # Only for promtool; its recommends (node exporter, smartmontools, ipmitool, …) are not needed.
    lean+=(prometheus)
    # tests/console.rs: a headless browser and its WebDriver server; no recommends (the browser
    # runs headless, without a desktop's services).
    lean+=(chromium chromium-driver)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${want[@]}"; do
    installed "$p" || missing+=("$p")
done
missing_lean=()
for p in "${lean[@]}"; do
    installed "$p" || missing_lean+=("$p")
done

if ((${#missing[@]} + ${#missing_lean[@]})); then
    if ! command -v apt-get >/dev/null; then
        echo "rota: please install: ${missing[*]} ${missing_lean[*]} (no apt-get on this machine)" >&2
        exit 1
    fi
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "rota: run as root or install sudo to install: ${missing[*]} ${missing_lean[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "rota: installing ${missing[*]} ${missing_lean[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # Named explicitly: --no-install-recommends would silently drop libprotobuf-dev otherwise.
    if ((${#missing[@]})); then
        $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ((${#missing_lean[@]})); then
        $sudo apt-get install -y -qq --no-install-recommends "${missing_lean[@]}" >/dev/null
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "rota: cargo is missing; install Rust (https://rustup.rs) and run this again" >&2
    exit 1
fi
