#!/usr/bin/env bash
# Importing a synthetic Calico datastore (issue 17 §5): NODES nodes with PODS pods each in
# libcalico-go's etcd layout, in a fresh etcd on loopback, then `margayctl datastore migrate
# from-calico` under /usr/bin/time -v, twice (the second run must write nothing). Prints wall
# time, etcd writes (revisions added) and margayctl's peak RSS per run
# (ctl/examples/migrate_bench.rs does the work).
#
# Usage: bench/migrate-import.sh [NODES] [PODS]      PROFILE=debug for a debug build
set -euo pipefail
NODES=${1:-1000}
PODS=${2:-50}
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
flag=()
[ "$PROFILE" = release ] && flag=(--release)
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); profile $PROFILE"
cargo build -q -p margay-ctl --bin margayctl "${flag[@]}"
cargo run -q -p margay-ctl --example migrate_bench "${flag[@]}" -- "$NODES" "$PODS"
