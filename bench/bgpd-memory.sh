#!/usr/bin/env bash
# margay-bgpd's peak RSS and CPU at cold start beside BIRD's, in the same run (issue 12 §3):
# `margay-scale` (bench/scale.sh's harness) with N-1 simulated nodes, mesh and reflector, RUNS
# times each, cold start only. margay-bgpd is the shipped build (`--profile dist`, see
# Cargo.toml); felix, margayctl and the harness are release builds. The load average is printed
# beside each run: the peak depends on how busy the machine is during the burst.
#
# With BEFORE=/path/to/an/older/margay-bgpd, that binary runs first in each run (margay only),
# so before and after sit beside BIRD in one run.
#
# Usage: sudo bench/bgpd-memory.sh [SIZES] [RUNS] [ROLES]   (defaults: 1000, 3, "mesh reflector")
set -euo pipefail
SIZES=${1:-1000}
RUNS=${2:-3}
ROLES=${3:-mesh reflector}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "bgpd-memory: run as root (it creates network namespaces)" >&2; exit 1; }
cd "$ROOT"
if [ -z "${NO_BUILD:-}" ]; then
    "$ROOT/scripts/install-deps.sh" >/dev/null
    cargo build -q --profile dist -p margay-bgp --bin margay-bgpd
    cargo build -q --release -p margay-felix -p margay-ctl -p margay-cni -p margay-bench --bins
fi
SCALE=${SCALE:-$CARGO_TARGET_DIR/release/margay-scale}
BGPD=${BGPD:-$CARGO_TARGET_DIR/dist/margay-bgpd}
bindir() { # the daemons margay-scale runs: $1 as margay-bgpd, the rest from target/release
    local d
    d=$(mktemp -d /tmp/bgpd-memory.XXXXXX)
    ln -s "$1" "$d/margay-bgpd"
    for b in margay-felix margayctl margay; do ln -s "$CARGO_TARGET_DIR/release/$b" "$d/$b"; done
    echo "$d"
}
AFTER_DIR=$(bindir "$BGPD")
BEFORE_DIR=""
[ -n "${BEFORE:-}" ] && BEFORE_DIR=$(bindir "$BEFORE")
trap 'rm -rf "$AFTER_DIR" ${BEFORE_DIR:+"$BEFORE_DIR"}' EXIT
echo "# $(uname -r), $(nproc) cores; $(bird --version 2>&1 | head -1); bgpd=$BGPD${BEFORE:+ before=$BEFORE}"
for role in $ROLES; do
    for run in $(seq 1 "$RUNS"); do
        echo "## role=$role run=$run sizes=$SIZES load average $(cut -d' ' -f1-3 /proc/loadavg)"
        if [ -n "$BEFORE_DIR" ]; then
            MARGAY_BIN_DIR=$BEFORE_DIR "$SCALE" --nodes "$SIZES" --trials 0 --role "$role" --no-bird 2>&1 \
                | grep -E '^N=[0-9]+ margay:' | sed 's/^/before /'
        fi
        MARGAY_BIN_DIR=$AFTER_DIR "$SCALE" --nodes "$SIZES" --trials 0 --role "$role" 2>&1 \
            | grep -E '^N=[0-9]+ (margay|bird):|ratio' | sed 's/^/after  /'
    done
done
