#!/usr/bin/env bash
# A node joining a running cluster (issue 18): a 3-node margay lab (etcd, margay-bgpd +
# margay-felix per node, a BIRD 2 ToR with a BGP listen range per rack, two pods per node
# through the CNI plugin). In one run:
#   restart     node1's margay-bgpd and margay-felix restarted (SIGTERM, start again) with a
#               dead BGPPeer configured: start -> felix ready, and the route events (proto 81)
#               in node1's kernel until 11 s after (past the restarted table's completion)
#   join        a fourth node joins and leaves (`margay-lab node add` / `node remove`),
#               ROUNDS times with no dead peer, then ROUNDS times with one configured BGPPeer
#               that never answers: start -> felix ready, start -> first remote route in its
#               kernel, first pod ADD -> routed in every kernel, Node deletion -> gone
#   bird        BIRD 2 started fresh as the fourth node, with the same peers (the three nodes,
#               which peer with it through its Node resource, the ToR, the dead peer) and a
#               kernel protocol exporting all: start -> first route in its kernel
# Kernels are probed every 5 ms; felix's /readiness every 20 ms.
#
# Usage: bench/node-join.sh [ROUNDS]   (as root; default 10)
set -euo pipefail
ROUNDS=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "node-join: run as root (it creates network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build -q -p margay-bgp -p margay-felix -p margay-cni -p margay-ctl --bins
export MARGAY_BIN_DIR=${MARGAY_BIN_DIR:-$CARGO_TARGET_DIR/debug}
cargo build -q -p margay-lab --bins --example join_bench
echo "# $(uname -srm), $(nproc) cores, $(bird --version 2>&1 | head -1); rounds=$ROUNDS; binaries from $MARGAY_BIN_DIR"
# The lab removes its namespaces and processes itself, also when a step fails.
exec "$CARGO_TARGET_DIR/debug/examples/join_bench" "$ROUNDS"
