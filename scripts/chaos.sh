#!/usr/bin/env bash
# Fault-injection run (docs/reliability.md): N real nodes on a private PostgreSQL and a private
# etcd (both restarted by the run, so never the shared ones), load, random faults, then the
# invariant checks. The last line of the output is one JSON object with the figures.
#
#   scripts/chaos.sh [--duration SECONDS] [--nodes N] [--seed SEED] [--faults KIND,KIND...]
#
# Defaults: 120 s, 4 nodes, a random seed (printed; pass it back to replay the same choices),
# every fault (--faults names some of them, e.g. --faults foreign,kill).
# Exit status: 0 when there were no violations and the cluster converged.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
duration=120
nodes=4
seed=""
faults=""
while (($#)); do
    case "$1" in
        --duration) duration=${2:?--duration needs a number of seconds}; shift 2 ;;
        --nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
        --seed) seed=${2:?--seed needs a number}; shift 2 ;;
        --faults) faults=${2:?--faults needs fault names, comma-separated}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "chaos: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$duration" "$nodes" ${seed:+"$seed"}; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "chaos: '$n' is not a whole number" >&2; exit 2; }
done
((nodes >= 1)) || { echo "chaos: --nodes must be at least 1" >&2; exit 2; }

scripts/prereqs.sh test
source scripts/lib.sh
ROTA_CHAOS_PG_BIN=$(pg_bindir)
command -v etcd >/dev/null || { echo "chaos: etcd is not installed" >&2; exit 1; }

report=$(mktemp /tmp/rota-chaos-report.XXXXXX)
trap 'rm -f "$report"' EXIT
export ROTA_CHAOS_PG_BIN ROTA_CHAOS_DURATION=$duration ROTA_CHAOS_NODES=$nodes ROTA_CHAOS_REPORT=$report
if [[ -n "$seed" ]]; then
    export ROTA_CHAOS_SEED=$seed
fi
if [[ -n "$faults" ]]; then
    export ROTA_CHAOS_FAULTS=$faults
fi
echo "chaos: $nodes nodes, $duration s of faults, seed ${seed:-random}" >&2

set +e
cargo test --test chaos -- --nocapture
rc=$?
set -e
if [[ -s "$report" ]]; then
    cat "$report"
else
    echo '{"error": "the run ended without a report (see the output above)", "converged": false}'
fi
exit "$rc"
