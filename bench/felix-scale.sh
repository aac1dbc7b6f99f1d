#!/usr/bin/env bash
# margay-felix alone at N nodes (issue 12 §3), for each N, with a VXLAN or an IP-in-IP pool:
#   vxlan  a real etcd with N-1 other Nodes (address, VTEP address and MAC, a /26 block and its
#          affinity) and 250 local pods (veths and WorkloadEndpoints) on the real node; felix
#          runs with --networking-backend vxlan (routes from IPAM, no bgpd)
#   ipip   the same Nodes without VTEPs, an ipipMode Always pool, margay-bgpd beside felix
#          (backend bird) meshed with N-1 simulated BGP speakers announcing the blocks; felix
#          routes each `via <node address> dev tunl0 onlink`. This machine's kernel has no ipip
#          module, so it runs inside the VM of tests/vm/ (TCG unless KVM works: its times are
#          not comparable with the host's; the kernel writes and the resync are the point)
# Prints per N:
#   cold start      the start until the N-1 remote routes (VXLAN: and N-1 neighbour and N-1 FDB
#                   entries) and 250 pod routes are in the kernel
#   steady resync   the mean of felix's own full resyncs afterwards (resync_duration_seconds)
#   join / leave    the kernel notifications `ip monitor` prints about felix's objects while one
#                   more Node joins (its block routed) and then leaves, and felix's route writes
#   CPU per change  (VXLAN) felix's CPU per Node join or leave over CHURN more of them, each
#                   waited for in the kernel, counted between felix's periodic resyncs, less its
#                   idle CPU over as long
#
# Usage: bench/felix-scale.sh [SIZES] [PROFILE] [BACKEND] [CHURN]
#   (as root; default "100,300,1000", release, vxlan, 100; MARGAY_VM_MEM sizes the VM, default
#   2048; MARGAY_BIN_DIR runs another felix build)
set -euo pipefail
SIZES=${1:-100,300,1000}
PROFILE=${2:-release}
BACKEND=${3:-vxlan}
CHURN=${4:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "felix-scale: run as root (it creates network namespaces)" >&2; exit 1; }
case "$BACKEND" in vxlan | ipip) ;; *) echo "felix-scale: backend $BACKEND is not vxlan or ipip" >&2; exit 2 ;; esac
"$ROOT/scripts/install-deps.sh" >/dev/null
cd "$ROOT"
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p margay-felix -p margay-bgp -p margay-ctl -p margay-bench --bins
  DIR=$CARGO_TARGET_DIR/release
else
  cargo build -q -p margay-felix -p margay-bgp -p margay-ctl -p margay-bench --bins
  DIR=$CARGO_TARGET_DIR/debug
fi
echo "# $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); margay $PROFILE build; backend=$BACKEND sizes=$SIZES churn=$CHURN"
if [ "$BACKEND" = vxlan ]; then
  exec "$DIR/margay-felix-scale" --backend vxlan --nodes "$SIZES" --churn "$CHURN"
fi

# IP-in-IP: the same binary inside the VM (tests/vm/felix-scale-scenario.sh), the target
# directory shared into it.
WORK=$(mktemp -d /tmp/margay-felixscale-vm.XXXXXX)
echo "CMD=\"$DIR/margay-felix-scale --backend ipip --nodes $SIZES --timeout 1800\"" > "$WORK/scale.env"
accel=TCG
[ -w /dev/kvm ] && grep -wE 'vmx|svm' /proc/cpuinfo >/dev/null && accel=KVM
echo "# VM: kernel $(tests/vm/prepare.sh | sed -n 's|^KERNEL=.*/vmlinuz-||p'), ${MARGAY_VM_ACCEL:-$accel}, ${MARGAY_VM_CPUS:-2} vCPUs, ${MARGAY_VM_MEM:-2048} MiB; work directory $WORK"
status=0
MARGAY_VM_MEM=${MARGAY_VM_MEM:-2048} MARGAY_VM_SHARES="$DIR" \
  tests/vm/run.sh tests/vm/felix-scale-scenario.sh "$WORK" > "$WORK/console.log" 2>&1 || status=$?
grep -E '^(init|scenario):' "$WORK/console.log" | grep -E 'booted|done|FAIL' || true
cat "$WORK/result.txt" 2>/dev/null || true
if [ "$status" -ne 0 ] || [ "$(cat "$WORK/status" 2>/dev/null)" != done ]; then
  echo "felix-scale: the VM run failed (qemu status $status): $(cat "$WORK/status" 2>/dev/null)" >&2
  tail -20 "$WORK/felix-scale.log" >&2 2>/dev/null || true
  echo "felix-scale: kept $WORK" >&2
  exit 1
fi
rm -rf "$WORK"
