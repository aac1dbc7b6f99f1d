#!/usr/bin/env bash
# Taking over Calico nodes (issue 17 §2, §4), the runbook's way beside a plain calico-node pod
# deletion, in the same lab and run: `margay-lab up --keep --nodes NODES --calico-nodes 2`,
# then `node migrate calico1` (BIRD killed: peers keep its routes by graceful restart) and
# `node migrate calico2 --bird-stop term` (BIRD's SIGTERM: a Cease, peers drop its routes until
# margay-bgpd announces them again). The migrating node's pod pings every other pod at 100/s
# throughout; each ping's summary is printed. Then the way back, the runbook's (`node rollback
# calico1`: margay stopped by SIGTERM, its routes handed to BIRD in place, BIRD -R, flush of
# proto 81) beside the same without the handover (`node rollback calico2 --no-handover`).
# ROUNDS labs in a row.
#
# Usage: bench/takeover.sh [NODES] [ROUNDS]   (as root; binaries from scripts/lab.sh or a
# debug build, found as margay-lab finds them)
set -euo pipefail
NODES=${1:-2}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${MARGAY_LAB:-$ROOT/target/debug/margay-lab}
STATE=$(mktemp -d /tmp/mgtakeover.XXXXXX)
export MARGAY_LAB_STATE=$STATE/state.json
cleanup() {
  "$LAB" down >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "takeover: run as root (it creates network namespaces)" >&2; exit 1; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), load $(cut -d' ' -f1 /proc/loadavg); $LAB"
for r in $(seq 1 "$ROUNDS"); do
  "$LAB" up --keep --nodes "$NODES" --calico-nodes 2 > "$STATE/up.txt" 2>&1 ||
    { cat "$STATE/up.txt"; exit 1; }
  echo "== round $r: runbook (SIGKILL)"
  "$LAB" node migrate calico1 || true
  echo "== round $r: plain pod deletion (SIGTERM)"
  "$LAB" node migrate calico2 --bird-stop term || true
  echo "== round $r: way back, runbook (handover to BIRD)"
  "$LAB" node rollback calico1 || true
  echo "== round $r: way back without the handover"
  "$LAB" node rollback calico2 --no-handover || true
  "$LAB" down > /dev/null
done
