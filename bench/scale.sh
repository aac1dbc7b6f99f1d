#!/usr/bin/env bash
# A real node's cold start, joins and leaves against N-1 simulated nodes in a full mesh
# (issue 12), margay (margay-bgpd + margay-felix) and BIRD 2 in the same run, for each N:
#   cold start  the real node's daemons start in an empty namespace; time until every simulated
#               speaker has its session Established and holds the real node's block and the real
#               node's kernel routes every simulated block; CPU seconds and peak RSS at that moment
#   join/leave  one more node's Node and block written to etcd (then deleted) until its block is
#               in (then out of) the real node's kernel; BIRD: Calico's pattern, the config
#               re-rendered with every node and `birdc configure`d
#   stop        margay-bgpd's SIGTERM with N-1 Established peers, timed
# Simulated nodes: a Node and an IPAM block each in real etcd, a light iBGP speaker each
# (margay-bench's own BGP code), all in one process and one namespace. See BENCHMARKS.md.
#
# With ROLE "reflector" the real node is instead the route reflector of every simulated node
# (the mesh off), and a join or leave also waits for every simulated client.
#
# With CHURN > 0, margay then sees CHURN joins and CHURN leaves per second for 60 s (CPU of
# bgpd, felix and etcd; resets), and after its cold start BIRD sees the same churn as Calico
# drives it: the configuration re-rendered and `birdc configure`d on every change (its CPU,
# the changes it could take in the minute, resets).
#
# Usage: bench/scale.sh [SIZES] [TRIALS] [ROLE] [CHURN]   (as root; default "100,300", 100,
# mesh, 0)
set -euo pipefail
SIZES=${1:-100,300}
TRIALS=${2:-100}
ROLE=${3:-mesh}
CHURN=${4:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "scale: run as root (it creates network namespaces)" >&2; exit 1; }
"$ROOT/scripts/install-deps.sh" >/dev/null
cd "$ROOT"
cargo build -q --release -p margay-bgp -p margay-felix -p margay-ctl -p margay-bench --bins
echo "# $(bird --version 2>&1 | head -1); margay release build; sizes=$SIZES trials=$TRIALS role=$ROLE churn=$CHURN"
# margay-scale finds the daemons beside itself (target/release) and removes its namespaces and
# processes itself, also when a step fails.
exec "$CARGO_TARGET_DIR/release/margay-scale" --nodes "$SIZES" --trials "$TRIALS" --role "$ROLE" --churn-rate "$CHURN"
