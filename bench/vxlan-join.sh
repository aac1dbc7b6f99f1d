#!/usr/bin/env bash
# VXLAN without BGP (issue 14 §5): a node joining a 3-node cluster with a VXLAN (Always) pool,
# TRIALS times, with the `vxlan` networking backend (felix alone, remote blocks from IPAM) and
# then with `bird` (margay-bgpd beside every felix, node-to-node mesh), in one run. Join: the
# node's daemons start -> its block routed through vxlan.margay in all three other kernels
# (polled every 5 ms); leave: daemons stopped and Node deleted -> gone from all three.
# Prints p50 / p90 / p99 / max of each.
#
# Usage: bench/vxlan-join.sh [TRIALS]   (as root; default 100)
set -euo pipefail
TRIALS=${1:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "vxlan-join: run as root (it creates network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build -q -p margay-bgp -p margay-felix -p margay-ctl --bins
export MARGAY_BIN_DIR=${MARGAY_BIN_DIR:-$CARGO_TARGET_DIR/debug}
cargo build -q -p margay-felix --example vxlan_join_bench
echo "# $(uname -srm), $(nproc) cores; trials=$TRIALS; debug binaries from $MARGAY_BIN_DIR"
exec "$CARGO_TARGET_DIR/debug/examples/vxlan_join_bench" "$TRIALS"
