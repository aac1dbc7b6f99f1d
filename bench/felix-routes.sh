#!/usr/bin/env bash
# felix route programming against `ip -batch`, same namespace setup, same run.
#
# In a private network namespace with an uplink veth (10.99.0.1/24, gateways .2 and .3 on the
# link) and VETHS workload veths (bcali0..), felix's reconciler (felix/examples/route_bench.rs,
# release build, run under `ip netns exec`) programs WORKLOADS /32 device routes and REMOTE /26
# remote block routes into an empty table, then applies CHANGES changes (half the blocks change
# next hop, a quarter of the /32s go away, as many new ones come). Then the table is flushed and
# `ip -batch` does the same operations from files of commands (time includes the `ip` process,
# ~1 ms). ROUNDS rounds alternate felix and ip; all routes carry protocol 81.
#
# FAMILY=dual makes the node dual-stack (issue 14): each workload also has an IPv6 /128
# (fd00:100:: + i), REMOTE IPv6 /122 blocks (fd00:200:: + 64 i) go via fd00:99::2 (uplink
# fd00:99::1/64), and every change applies to both families, in felix and in the ip batches.
#
# BENCH_VERBOSE=1 prints felix's own breakdown (compute vs writes) of each round.
#
# Usage: bench/felix-routes.sh [WORKLOADS] [REMOTE] [CHANGES] [VETHS] [ROUNDS] [FAMILY]  (as root)
set -euo pipefail
WORKLOADS=${1:-10000}
REMOTE=${2:-1000}
CHANGES=${3:-1000}
VETHS=${4:-100}
ROUNDS=${5:-3}
FAMILY=${6:-ipv4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NS="mgfxbench-$$"
WORK=$(mktemp -d /tmp/mgfxbench.XXXXXX)

cleanup() {
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "felix-routes: run as root (it creates a network namespace)" >&2; exit 1; }
(cd "$ROOT" && cargo build -q --release -p margay-felix --example route_bench)
BENCH="$CARGO_TARGET_DIR/release/examples/route_bench"

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add up0 type veth peer name up1
ip -n "$NS" addr add 10.99.0.1/24 dev up0
ip -n "$NS" addr add fd00:99::1/64 dev up0 nodad
ip -n "$NS" link set up0 up
ip -n "$NS" link set up1 up
for i in $(seq 0 $((VETHS - 1))); do
  echo "link add bcali$i type veth peer name bpeer$i"
  echo "link set bcali$i up"
  echo "link set bpeer$i up"
done > "$WORK/links.batch"
ip -n "$NS" -batch "$WORK/links.batch"

# The same operations as ip commands. Addresses as route_bench makes them: workload i is
# 10.100.0.0 + i on bcali(i % VETHS); block i is 10.200.0.0 + 64 i /26.
python3 - "$WORKLOADS" "$REMOTE" "$CHANGES" "$VETHS" "$WORK" "$FAMILY" <<'PY'
import ipaddress, sys
w, r, c, v, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dual = sys.argv[6] == "dual"
wl = lambda i: ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.100.0.0")) + i)
bl = lambda i: ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.200.0.0")) + 64 * i)
wl6 = lambda i: ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd00:100::")) + i)
bl6 = lambda i: ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd00:200::")) + 64 * i)
def add_wl(f, i):
    f.write(f"route add {wl(i)}/32 dev bcali{i % v} scope link proto 81\n")
    if dual:
        f.write(f"route add {wl6(i)}/128 dev bcali{i % v} proto 81\n")
with open(f"{work}/initial.batch", "w") as f:
    for i in range(w):
        add_wl(f, i)
    for i in range(r):
        f.write(f"route add {bl(i)}/26 via 10.99.0.2 proto 81\n")
        if dual:
            f.write(f"route add {bl6(i)}/122 via fd00:99::2 proto 81\n")
moved = min(c // 2, r); removed = (c - moved) // 2; added = c - moved - removed
with open(f"{work}/changes.batch", "w") as f:
    for i in range(moved):
        f.write(f"route replace {bl(i)}/26 via 10.99.0.3 proto 81\n")
        if dual:
            f.write(f"route replace {bl6(i)}/122 via fd00:99::3 proto 81\n")
    for i in range(removed):
        f.write(f"route del {wl(i)}/32 proto 81\n")
        if dual:
            f.write(f"route del {wl6(i)}/128 proto 81\n")
    for i in range(w, w + added):
        add_wl(f, i)
PY

now_ms() { date +%s.%N; }
count81() { echo $(( $(ip -n "$NS" -4 route show proto 81 | wc -l) + $(ip -n "$NS" -6 route show proto 81 | wc -l) )); }
flush81() { ip -n "$NS" -4 route flush proto 81; ip -n "$NS" -6 route flush proto 81; }
EXPECT=$((WORKLOADS + REMOTE))
[ "$FAMILY" = dual ] && EXPECT=$((2 * EXPECT))

echo "round felix_initial_ms ip_initial_ms initial_ratio felix_changes_ms ip_changes_ms changes_ratio felix_idle_resync_ms"
for round in $(seq 1 "$ROUNDS"); do
  flush81
  out=$(ip netns exec "$NS" "$BENCH" "$VETHS" "$WORKLOADS" "$REMOTE" "$CHANGES" 10.99.0 "$FAMILY")
  n=$(count81)
  [ "$n" = "$EXPECT" ] || { echo "felix left $n routes, expected $EXPECT: $out" >&2; exit 1; }
  f_init=$(echo "$out" | jq .initial_ms)
  f_chg=$(echo "$out" | jq .changes_ms)
  f_idle=$(echo "$out" | jq .idle_resync_ms)
  [ -n "${BENCH_VERBOSE:-}" ] && echo "$out" >&2
  errs=$(echo "$out" | jq '.initial_errors + .changes_errors')
  [ "$errs" = 0 ] || { echo "felix reported errors: $out" >&2; exit 1; }
  [ "$(echo "$out" | jq .idle_writes)" = 0 ] || { echo "felix rewrote routes on an idle resync: $out" >&2; exit 1; }

  flush81
  t0=$(now_ms); ip -n "$NS" -batch "$WORK/initial.batch"; t1=$(now_ms)
  ip -n "$NS" -batch "$WORK/changes.batch"; t2=$(now_ms)
  n=$(count81)
  [ "$n" = "$EXPECT" ] || { echo "ip -batch left $n routes, expected $EXPECT" >&2; exit 1; }
  i_init=$(echo "($t1 - $t0) * 1000" | bc -l)
  i_chg=$(echo "($t2 - $t1) * 1000" | bc -l)
  printf "%d %.1f %.1f %.2f %.1f %.1f %.2f %.1f\n" "$round" "$f_init" "$i_init" \
    "$(echo "$f_init / $i_init" | bc -l)" "$f_chg" "$i_chg" "$(echo "$f_chg / $i_chg" | bc -l)" "$f_idle"
done
