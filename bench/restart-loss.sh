#!/usr/bin/env bash
# Restarts under traffic (issue 7 §1): a 3-node margay lab (etcd, margay-bgpd + margay-felix per
# node, a BIRD 2 ToR, two pods per node through the CNI plugin) with pings every 10 ms between
# node1's pods and every pod on node2/node3 (both ways) and from the ToR to node1's pods: 18
# streams. Each scenario restarts, while they flow:
#   bgpd-term   node1's margay-bgpd (SIGTERM, start again)
#   felix       node1's margay-felix
#   bgpd+felix  both
#   bgpd-kill   node1's margay-bgpd SIGKILLed, start again
#   tor-bird    the ToR's BIRD (SIGKILL, `bird -R`: graceful restart recovery)
# once with graceful restart (RFC 4724) and once without, its peer in the same run, alternated:
# "no-gr" stops with Cease (margay-bgpd SIGINT, BIRD SIGTERM, BIRD then started without -R), so
# the peers flush the routes at once, as peers without graceful restart do. felix has no
# no-gr peer (no BGP session of its own).
#
# Columns: lost/sent pings over all 18 streams; sessions_back_ms from the restart's start to the
# restarted daemon's sessions Established (node status / birdc); whole_after_ms from there to
# every pod routed in every margay-bgpd's RIB, every node's kernel and BIRD (probed every 20 ms;
# one probe round takes ~50-100 ms, the resolution of the figure).
#
# Usage: bench/restart-loss.sh [ROUNDS]   (as root; default 3)
set -euo pipefail
ROUNDS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "restart-loss: run as root (it creates network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build -q -p margay-bgp -p margay-felix -p margay-cni -p margay-ctl --bins
export MARGAY_BIN_DIR="$CARGO_TARGET_DIR/debug"
cargo build -q -p margay-lab --bins --example restart_loss
echo "# $(uname -srm), $(nproc) cores, $(bird --version 2>&1 | head -1); rounds=$ROUNDS"
# The lab removes its namespaces and processes itself, also when a step fails.
exec "$CARGO_TARGET_DIR/debug/examples/restart_loss" "$ROUNDS"
