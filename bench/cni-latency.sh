#!/usr/bin/env bash
# CNI ADD/DEL latency: the `margay` plugin (→ margay-felix over its socket → IPAM in etcd, veth,
# routes, WorkloadEndpoint) against the reference `ptp` + `host-local` plugins from Debian's
# containernetworking-plugins, on the same node namespace, in the same run.
#
# Topology: namespace E runs etcd on 198.18.7.1 (RFC 2544 benchmarking range, never routed);
# namespace N, the node, is joined to it by a veth (198.18.7.2/24, default route via .1) and runs
# margay-bgpd and margay-felix in cluster mode (IPPool 10.104.0.0/16, default block size /26).
# Both plugins run from N (`margay-cni-bench` is started there and spawns them), so their host
# sides land in N: margay's `cali*` veths with a /32 route each, ptp's `veth*` with a /32 route
# each from host-local's 10.105.0.0/16 (data in the work directory). MTU 1450 for both.
#
# For each parallelism in PARALLELS, margay-cni-bench adds PODS pods per implementation in rounds
# of ROUND (the implementation going first alternates per round), then deletes them the same way,
# and prints p50/p99 per implementation and command; pod namespaces are reused across
# parallelisms. After each pass the node must hold no pod veth, route, IPAM address or
# host-local lease. Everything made here (namespaces, daemons, etcd data, files) goes on exit,
# also on failure.
#
# CPU: margay-cni-bench reports each plugin process's CPU time and charges felix's, etcd's and
# bgpd's (from /proc, with their waited-for children such as felix's nft) to the batch that ran
# meanwhile: "IMPL CMD cpu_per_op_ms ..." lines. PERF_PAR=N PERF_OUT=FILE records the whole
# machine with `perf record -a -g` during the pass at N at a time (see BENCHMARKS.md for how to
# read it).
#
# WEP_WRITE="own rider" measures both ways of writing the WorkloadEndpoint, felix restarted in
# between: "own" (MARGAY_ENDPOINT_OWN_WRITE=1: its own etcd transaction after IPAM's, as before)
# and "rider" (in IPAM's transaction: one etcd write per ADD; the default).
# PLUGIN_LINK=static (the default) links the plugin statically, as deploy/Containerfile ships
# it (there for musl; here glibc's crt-static, relinking only the binary); PLUGIN_LINK=dynamic
# measures the plain `cargo build` binary.
#
# Usage: [READS="linearizable serializable"] [WEP_WRITE="own rider"] [PLUGIN_LINK=dynamic]
#        [PERF_PAR=4 PERF_OUT=/tmp/x.data]
#        bench/cni-latency.sh [PODS] [PARALLELS] [ROUND]   (as root; e.g. 200 "1 4" 10)
set -euo pipefail
PODS=${1:-200}
PARALLELS=${2:-1 4}
ROUND=${3:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TAG="mgcb$$"
NODE="${TAG}n"
ETCDNS="${TAG}e"
WORK=$(mktemp -d /tmp/mgcnibench.XXXXXX)
PIDS=()
NODENAME=bench
POOL=10.104.0.0/16
PTP_SUBNET=10.105.0.0/16

cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    for f in "$WORK"/*.log; do
      [ -f "$f" ] && { echo "--- $f (tail)" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^${TAG}" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "cni-latency: run as root (it creates network namespaces)" >&2; exit 1; }
"$ROOT/scripts/install-deps.sh" >/dev/null
(cd "$ROOT" && cargo build --release -q -p margay-bgp --bin margay-bgpd -p margay-felix --bin margay-felix \
  -p margay-cni --bin margay -p margay-ctl --bin margayctl -p margay-bench --bin margay-cni-bench)
PLUGIN_LINK=${PLUGIN_LINK:-static}
if [ "$PLUGIN_LINK" = static ]; then
  (cd "$ROOT" && cargo rustc --release -q -p margay-cni --bin margay -- -C target-feature=+crt-static)
fi
BIN="$CARGO_TARGET_DIR/release"

# --- the node and etcd ---
ip netns add "$ETCDNS"
ip netns add "$NODE"
ip -n "$ETCDNS" link set lo up
ip -n "$NODE" link set lo up
ip -n "$ETCDNS" link add up0 type veth peer name up0 netns "$NODE"
ip -n "$ETCDNS" addr add 198.18.7.1/24 dev up0
ip -n "$NODE" addr add 198.18.7.2/24 dev up0
ip -n "$ETCDNS" link set up0 up
ip -n "$NODE" link set up0 up
ip -n "$NODE" route add default via 198.18.7.1
ETCD=http://198.18.7.1:2379

ip netns exec "$ETCDNS" /usr/bin/etcd --name=bench --data-dir="$WORK/etcd.data" \
  --listen-client-urls=$ETCD --advertise-client-urls=$ETCD \
  --listen-peer-urls=http://198.18.7.1:2380 --initial-advertise-peer-urls=http://198.18.7.1:2380 \
  --initial-cluster=bench=http://198.18.7.1:2380 --initial-cluster-state=new \
  --logger=zap --log-level=warn >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
PIDS+=($!)
wait_until() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "cni-latency: timed out waiting for $what" >&2; return 1; }
    sleep 0.2
  done
}
wait_until "etcd /health" 30 sh -c "ip netns exec $ETCDNS curl -s --max-time 1 $ETCD/health | grep '\"health\":\"true\"' >/dev/null"

ctl() { ip netns exec "$NODE" "$BIN/margayctl" --etcd-endpoints "$ETCD" "$@"; }
cat >"$WORK/pool.yaml" <<YAML
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: benchpool}
spec: {cidr: $POOL, ipipMode: Never, vxlanMode: Never}
YAML
ctl apply -f "$WORK/pool.yaml" >/dev/null

ip netns exec "$NODE" env MARGAY_LOG_LEVEL=warn "$BIN/margay-bgpd" --datastore etcd --node "$NODENAME" \
  --etcd-endpoints "$ETCD" --socket "$WORK/bgpd.sock" --http-port 0 --ip 198.18.7.2/24 \
  >"$WORK/bgpd.log" 2>&1 &
BGPD_PID=$!
PIDS+=($!)
wait_until "margay-bgpd's socket" 30 test -S "$WORK/bgpd.sock"
# felix at warn, but its endpoint service at info: the "endpoint added" lines carry the ADD phases.
# READS=linearizable starts it with MARGAY_ETCD_LINEARIZABLE_READS=1 (IPAM's first try reads
# linearizably, as before serializable reads); READS="linearizable serializable" measures both,
# one after the other, felix restarted in between.
FELIX_PID=
start_felix() { # reads mode, WorkloadEndpoint write
  local lin=0 own=0
  [ "$1" = linearizable ] && lin=1
  [ "$2" = own ] && own=1
  ip netns exec "$NODE" env MARGAY_LOG_LEVEL=warn,margay_felix::endpoints=info MARGAY_ETCD_LINEARIZABLE_READS=$lin \
    MARGAY_ENDPOINT_OWN_WRITE=$own \
    "$BIN/margay-felix" --node "$NODENAME" \
    --etcd-endpoints "$ETCD" --bgpd-socket "$WORK/bgpd.sock" --socket "$WORK/felix.sock" \
    --http-port 0 >>"$WORK/felix.log" 2>&1 &
  FELIX_PID=$!
  PIDS+=($!)
}
stop_felix() {
  kill "$FELIX_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$FELIX_PID" 2>/dev/null || break; sleep 0.1; done
  rm -f "$WORK/felix.sock"
}
READS=${READS:-serializable}
WEP_WRITE=${WEP_WRITE:-rider}
VARIANTS=()
for r in $READS; do for w in $WEP_WRITE; do VARIANTS+=("$r/$w"); done; done
start_felix "${VARIANTS[0]%/*}" "${VARIANTS[0]#*/}"

cat >"$WORK/margay.conf" <<JSON
{"cniVersion": "1.0.0", "name": "bench-margay", "type": "margay", "mtu": 1450,
 "ipam": {"type": "margay-ipam"}, "felix_socket": "$WORK/felix.sock", "nodename": "$NODENAME",
 "log_level": "warn"}
JSON
cat >"$WORK/ptp.conf" <<JSON
{"cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "mtu": 1450, "ipMasq": false,
 "ipam": {"type": "host-local", "ranges": [[{"subnet": "$PTP_SUBNET"}]],
          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$WORK/host-local"}}
JSON
sed 's/"1.0.0"/"1.1.0"/' "$WORK/margay.conf" >"$WORK/margay-status.conf"
felix_ready() {
  env -i CNI_COMMAND=STATUS PATH=/usr/bin:/bin "$BIN/margay" <"$WORK/margay-status.conf"
}
wait_until "felix ready (CNI STATUS)" 60 felix_ready

# --- pod namespaces, made once, outside the timing ---
for impl in margay ptp; do
  for i in $(seq 0 $((PODS - 1))); do echo "netns add ${TAG}-${impl}-$i"; done
done >"$WORK/netns.batch"
ip -batch "$WORK/netns.batch"

# Nothing of any pod left on the node.
assert_clean() {
  local links routes leases report
  links=$(ip -n "$NODE" -o link show | grep -cE ': (cali|veth)' || true)
  routes=$(ip -n "$NODE" route show | grep -cE "dev (cali|veth)" || true)
  leases=$(find "$WORK/host-local" -type f -name '10.*' 2>/dev/null | wc -l)
  report=$(ctl ipam check --json)
  if [ "$links" != 0 ] || [ "$routes" != 0 ] || [ "$leases" != 0 ] \
     || [ "$(jq .addresses_in_use <<<"$report")" != 0 ] || [ "$(jq .handles <<<"$report")" != 0 ]; then
    echo "cni-latency: left behind: $links veths, $routes routes, $leases host-local leases, IPAM $report" >&2
    return 1
  fi
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME"), containernetworking-plugins $(dpkg-query -W -f='${Version}' containernetworking-plugins), etcd $(/usr/bin/etcd --version | awk '/etcd Version/ {print $3}')"
echo "command: READS=\"$READS\" WEP_WRITE=\"$WEP_WRITE\" PLUGIN_LINK=$PLUGIN_LINK bench/cni-latency.sh $PODS \"$PARALLELS\" $ROUND"
echo "plugin: $(file -b "$BIN/margay" | cut -d, -f1-2)"
echo "date: $(date -u +%Y-%m-%d)"
# Medians of felix's ADD phases (its "endpoint added" log lines after line $1): IPAM, veth +
# WorkloadEndpoint (built at once), and the wait for the host route.
phase_medians() {
  local k
  for k in ipam wire route policy; do
    { tail -n +"$(($1 + 1))" "$WORK/felix.log" | grep 'endpoint added' || true; } | grep -oE "${k}_ms=[0-9.]+" \
      | cut -d= -f2 | sort -n | awk -v k="$k" '{v[NR]=$1} END {if (NR) printf "felix ADD phase %s_ms p50=%.2f\n", k, v[int((NR+1)/2)]}'
  done
}
# etcd's own count of the requests it served (KV methods) and of raft proposals committed
# (every write is one), to print per pod of a pass (its ADDs and DELs, and what felix's
# tasks read meanwhile).
etcd_counts() {
  ip netns exec "$ETCDNS" curl -s --max-time 5 "$ETCD/metrics" | awk '
    /^grpc_server_handled_total\{.*grpc_service="etcdserverpb.KV"/ {
      match($0, /grpc_method="[A-Za-z]+"/); m = substr($0, RSTART + 13, RLENGTH - 14); n[m] += $2 }
    /^etcd_server_proposals_committed_total / { n["proposals"] = $2 }
    END { for (m in n) print m, n[m] }'
}
etcd_per_pod() { # before-file after-file
  awk -v pods="$PODS" 'NR == FNR { b[$1] = $2; next } { d = $2 - b[$1]; line = line sprintf(" %s=%.1f", $1, d / pods) }
    END { print "etcd per pod (ADD + DEL):" line }' "$1" "$2"
}
first=1
for variant in "${VARIANTS[@]}"; do
reads=${variant%/*}
wep=${variant#*/}
if [ "$first" = 0 ]; then
  stop_felix
  start_felix "$reads" "$wep"
  wait_until "felix ready (CNI STATUS)" 60 felix_ready
fi
first=0
for par in $PARALLELS; do
  echo "== $PODS pods each, $par at a time, rounds of $ROUND, IPAM reads $reads, WorkloadEndpoint write $wep"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  log_lines=$(wc -l <"$WORK/felix.log")
  etcd_counts >"$WORK/etcd-before.txt"
  PERF_PID=
  if [ -n "${PERF_OUT:-}" ] && [ "${PERF_PAR:-}" = "$par" ]; then
    perf record -a -g -F 499 -o "$PERF_OUT" >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
    PIDS+=($!)
    sleep 1
  fi
  ip netns exec "$NODE" "$BIN/margay-cni-bench" \
    --impl "margay=$BIN/margay=$WORK/margay.conf" --impl "ptp=/usr/lib/cni/ptp=$WORK/ptp.conf" \
    --pods "$PODS" --round "$ROUND" --parallel "$par" --netns-prefix "$TAG" \
    --daemon "felix=$FELIX_PID" --daemon "etcd=$ETCD_PID" --daemon "bgpd=$BGPD_PID" \
    --samples "$WORK/samples-$par.txt" | tee "$WORK/summary-$par.txt"
  if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
  fi
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  etcd_counts >"$WORK/etcd-after.txt"
  etcd_per_pod "$WORK/etcd-before.txt" "$WORK/etcd-after.txt"
  assert_clean
  phase_medians "$log_lines"
  for cmd in ADD DEL; do
    m50=$(awk -v c=$cmd '$1=="margay" && $2==c && $3 ~ /^n=/ {sub("p50_ms=","",$4); print $4}' "$WORK/summary-$par.txt")
    p50=$(awk -v c=$cmd '$1=="ptp" && $2==c && $3 ~ /^n=/ {sub("p50_ms=","",$4); print $4}' "$WORK/summary-$par.txt")
    m99=$(awk -v c=$cmd '$1=="margay" && $2==c && $3 ~ /^n=/ {sub("p99_ms=","",$5); print $5}' "$WORK/summary-$par.txt")
    p99=$(awk -v c=$cmd '$1=="ptp" && $2==c && $3 ~ /^n=/ {sub("p99_ms=","",$5); print $5}' "$WORK/summary-$par.txt")
    printf 'ratio margay/ptp %s: p50 %.2f, p99 %.2f\n' "$cmd" "$(echo "$m50/$p50" | bc -l)" "$(echo "$m99/$p99" | bc -l)"
  done
  if [ -n "${KEEP_SAMPLES:-}" ]; then cp "$WORK/samples-$par.txt" "$KEEP_SAMPLES-$reads-$wep-$par.txt"; fi
done
done
