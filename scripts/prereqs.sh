#!/usr/bin/env bash
# Install what building (and, with `test`, testing) Rota needs on Debian/Ubuntu, only when missing.
#   scripts/prereqs.sh build   compilers, protoc (etcd-client), libpq, libsqlite3, sqlite3 CLI
#   scripts/prereqs.sh test    the above + etcd, PostgreSQL, python3-venv (for schemathesis) and
#                              libfaketime (a node started with its clock shifted, tests/serve.rs),
#                              iproute2 and nftables (the chaos suite's network partitions),
#                              prometheus (its promtool checks /metrics and deploy/'s alerting rules),
#                              chromium and chromium-driver (tests/console.rs drives the web console),
#                              a JDK and Apache Flink 2.3.0 (tests/flink.rs runs a real cluster)
#   scripts/prereqs.sh flink   only the JDK and Flink
# Flink comes from PyPI (its wheels hold the whole distribution) into ROTA_FLINK_CACHE, by default
# ~/.cache/rota/flink-2.3.0, outside the repository; it is downloaded once and reused.
set -euo pipefail

FLINK_VERSION=2.3.0
flink_cache="${ROTA_FLINK_CACHE:-$HOME/.cache/rota/flink-$FLINK_VERSION}"

# Unzip the two wheels into one folder: <folder>/pyflink is a FLINK_HOME (lib/ from
# apache-flink-libraries, bin/ and conf/ from apache-flink). A marker is written last, so an
# interrupted install is redone rather than half-used.
install_flink() {
    [[ -f "$flink_cache/.complete" ]] && return 0
    python3 -m pip --version >/dev/null 2>&1 \
        || { echo "rota: pip is missing; install python3-pip to fetch Apache Flink $FLINK_VERSION" >&2; exit 1; }
    echo "rota: installing Apache Flink $FLINK_VERSION into $flink_cache" >&2
    local wheels
    wheels=$(mktemp -d)
    # The wheels are platform-neutral (jars and scripts); --no-deps skips PyFlink's Python packages.
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$wheels" \
        "apache-flink-libraries==$FLINK_VERSION" "apache-flink==$FLINK_VERSION" \
        || { rm -rf "$wheels"; echo "rota: could not download Apache Flink $FLINK_VERSION from PyPI" >&2; exit 1; }
    rm -rf "$flink_cache"
    mkdir -p "$flink_cache"
    local w
    for w in "$wheels"/*.whl; do
        python3 -m zipfile -e "$w" "$flink_cache"
    done
    rm -rf "$wheels"
    # zipfile drops the executable bit the scripts need.
    chmod +x "$flink_cache"/pyflink/bin/*
    [[ -f "$flink_cache/pyflink/lib/flink-dist-$FLINK_VERSION.jar" && -x "$flink_cache/pyflink/bin/start-cluster.sh" ]] \
        || { echo "rota: $flink_cache/pyflink is not a complete Flink distribution" >&2; exit 1; }
    touch "$flink_cache/.complete"
}

lean=()
want=(build-essential pkg-config protobuf-compiler libprotobuf-dev libpq-dev libsqlite3-dev sqlite3 curl)
if [[ "${1:-build}" == "flink" ]]; then
    want=()
fi
if [[ "${1:-build}" == "test" || "${1:-build}" == "flink" ]]; then
    # javac and jar compile the Flink test job; the image usually has them already.
    command -v javac >/dev/null && command -v jar >/dev/null || want+=(openjdk-17-jdk-headless)
fi
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

if [[ "${1:-build}" == "test" || "${1:-build}" == "flink" ]]; then
    install_flink
fi
