#!/usr/bin/env bash
# Dual-homed nodes (issue 13 §4): a `margay-lab --tors 2` lab (3 nodes, each on its own link to
# two BIRD 2 ToRs, BFD 3 x 100 ms), beside a BIRD<->BIRD pair with the same BFD timers, in the
# same run:
#   1. detection time, failure -> BGP session down -> kernel route updated, TRIALS trials: node1's
#      link to the first ToR and the BIRD pair's link cut one after the other (nftables drop
#      both ways; no carrier change), each timed from its own cut: session states polled every
#      2 ms, each side on a thread of its own (gRPC for margay, birdc for BIRD), kernel routes
#      read from `ip monitor route` in each namespace; also the far ends (the ToR noticing
#      node1's silence, y noticing x's);
#   2. pings lost per ToR failure (8 flows x 100/s between node1's and node2's pods), ROUNDS
#      failures with BFD, then ROUNDS with BFD off on the second ToR's sessions (hold time 9 s).
#
# Usage: bench/ecmp-failover.sh [TRIALS] [ROUNDS]   (as root; defaults 20 and 5)
set -euo pipefail
TRIALS=${1:-20}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "ecmp-failover: run as root (it creates network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build -q -p margay-bgp -p margay-felix -p margay-cni -p margay-ctl --bins
export MARGAY_BIN_DIR="$CARGO_TARGET_DIR/debug"
cargo build -q -p margay-tests --example ecmp_failover
echo "# $(uname -srm), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(bird --version 2>&1 | head -1); debug build"
echo "# bench/ecmp-failover.sh $TRIALS $ROUNDS"
# The lab removes its namespaces and processes itself, also when a step fails.
exec "$CARGO_TARGET_DIR/debug/examples/ecmp_failover" "$TRIALS" "$ROUNDS"
