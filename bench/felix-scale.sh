#!/usr/bin/env bash
# margay-felix alone at N nodes with a VXLAN pool (issue 12 §3), for each N: a real etcd with
# N-1 other Nodes (address, VTEP address and MAC, a /26 block and its affinity) and 250 local
# pods (veths and WorkloadEndpoints) on the real node; felix runs with --networking-backend
# vxlan (routes from IPAM, no bgpd). Prints per N:
#   cold start      felix's start until N-1 routes via vxlan.margay, N-1 neighbour and N-1 FDB
#                   entries and 250 pod routes are in the kernel
#   steady resync   the mean of felix's own full resyncs afterwards (resync_duration_seconds)
#   join / leave    the kernel notifications `ip monitor` prints about felix's objects while one
#                   more Node joins (its block routed) and then leaves, and felix's route writes
# IP-in-IP is left out: this machine's kernel has no ipip module.
#
# Usage: bench/felix-scale.sh [SIZES] [PROFILE]   (as root; default "100,300,1000", release)
set -euo pipefail
SIZES=${1:-100,300,1000}
PROFILE=${2:-release}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "felix-scale: run as root (it creates network namespaces)" >&2; exit 1; }
"$ROOT/scripts/install-deps.sh" >/dev/null
cd "$ROOT"
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p margay-felix -p margay-ctl -p margay-bench --bins
  DIR=$CARGO_TARGET_DIR/release
else
  cargo build -q -p margay-felix -p margay-ctl -p margay-bench --bins
  DIR=$CARGO_TARGET_DIR/debug
fi
echo "# $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); margay $PROFILE build; sizes=$SIZES"
exec "$DIR/margay-felix-scale" --nodes "$SIZES"
