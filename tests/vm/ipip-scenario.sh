#!/usr/bin/env bash
# The IPIP scenario, run inside the test VM (tests/vm/run.sh) with this machine's binaries.
# Everything it needs comes from WORK_DIR, written by felix/tests/ipip_vm.rs:
#
#   topology.env          FELIX (binary), SUBNETS (router addresses, one bridge each), NODES,
#                         per node <n>_ADDR <n>_SUBNET (index) <n>_GW <n>_POD <n>_CALI, PINGS
#   <phase>/<n>.json      felix's state for node n in that phase (phases: always, crosssubnet)
#   <phase>/expect        lines "node prefix dev": the routes to wait for before pinging
#
# It builds a router namespace `r` with one bridge per subnet, a namespace per node on its
# subnet's bridge, a pod namespace `<n>p` behind each node (veth `cali...` / eth0, as Calico
# wires pods) and starts margay-felix in every node. For each phase it installs the phase's
# state (SIGHUP), waits for the expected routes, pings pod to pod and records, in <phase>/:
# routes-<n>.json and tunl0-<n>.json (`ip -j`), readiness-<n>.txt, ping-<src>-<dst>.txt and
# pings.txt (lines "src dst status tunl0_tx_before tunl0_tx_after" on the source node). The
# file `status` says "done" when every step ran, or "FAIL: why". Felix logs: felix-<n>.log.
set -uo pipefail

work=$1
cd "$work" || exit 1
# shellcheck source=/dev/null
. ./topology.env

log() { echo "scenario: [${SECONDS}s] $*"; }
fail() {
  log "FAIL: $*"
  echo "FAIL: $*" > status
  exit 1
}
declare -A felix_pid=()
stop_felix() {
  local n
  for n in "${!felix_pid[@]}"; do kill "${felix_pid[$n]}" 2>/dev/null; done
  wait
}
trap stop_felix EXIT
var() { local v="$1_$2"; echo "${!v}"; }
ipn() { ip -n "$@" || fail "ip -n $*"; }

ip link show tunl0 >/dev/null 2>&1 || fail "the ipip module is not loaded (no tunl0)"

ip netns add r || fail "ip netns add r"
ipn r link set lo up
ip netns exec r sysctl -qw net.ipv4.ip_forward=1 || fail "router forwarding"
i=0
for a in $SUBNETS; do
  ipn r link add "br$i" type bridge
  ipn r addr add "$a" dev "br$i"
  ipn r link set "br$i" up
  i=$((i + 1))
done

for n in $NODES; do
  pod=${n}p
  cali=$(var "$n" CALI)
  ip netns add "$n" || fail "ip netns add $n"
  ip netns add "$pod" || fail "ip netns add $pod"
  ipn "$n" link set lo up
  ipn "$pod" link set lo up
  ip link add eth0 netns "$n" type veth peer name "$n" netns r || fail "uplink of $n"
  ipn r link set "$n" master "br$(var "$n" SUBNET)" up
  ipn "$n" addr add "$(var "$n" ADDR)" dev eth0
  ipn "$n" link set eth0 up
  ipn "$n" route add default via "$(var "$n" GW)"
  ipn "$n" link add "$cali" type veth peer name eth0 netns "$pod"
  ipn "$n" link set "$cali" address ee:ee:ee:ee:ee:ee up
  ipn "$pod" addr add "$(var "$n" POD)/32" dev eth0
  ipn "$pod" link set eth0 up
  ipn "$pod" route add 169.254.1.1 dev eth0 scope link
  ipn "$pod" route add default via 169.254.1.1 dev eth0
done
log "namespaces ready"

tunl0_tx() {
  ip -n "$1" -s -j link show tunl0 2>/dev/null | jq -r '.[0].stats64.tx.packets // 0'
}

# Waits up to 60 s until every "node prefix dev" line of $1 holds in the kernel.
wait_routes() {
  local deadline=$((SECONDS + 60)) node prefix dev missing n
  while :; do
    missing=""
    while read -r node prefix dev; do
      [ -n "$node" ] || continue
      ip -n "$node" route show "$prefix" | grep -q " dev $dev " || missing="$missing $node:$prefix:$dev"
    done < "$1"
    [ -z "$missing" ] && return 0
    for n in "${!felix_pid[@]}"; do
      kill -0 "${felix_pid[$n]}" 2>/dev/null || fail "felix on $n exited (see felix-$n.log)"
    done
    [ $SECONDS -ge $deadline ] && fail "routes not programmed within 60 s:$missing"
    sleep 0.5
  done
}

run_phase() {
  local phase=$1 n src dst ip before after rc deadline
  log "phase $phase"
  mkdir -p "$phase"
  for n in $NODES; do
    cp "$phase/$n.json" "$n.state.json"
    if [ -z "${felix_pid[$n]:-}" ]; then
      ip netns exec "$n" "$FELIX" --node "$n" --state "$work/$n.state.json" \
        --http-port 9099 --resync-interval 1 > "felix-$n.log" 2>&1 &
      felix_pid[$n]=$!
    else
      kill -HUP "${felix_pid[$n]}"
    fi
  done
  wait_routes "$phase/expect"
  log "phase $phase: routes programmed after ${SECONDS} s"
  : > "$phase/pings.txt"
  for pair in $PINGS; do
    src=${pair%%:*}
    dst=${pair##*:}
    ip=$(var "$dst" POD)
    # The first packets wait for ARP on every hop.
    deadline=$((SECONDS + 20))
    until ip netns exec "${src}p" ping -c 1 -W 1 "$ip" >/dev/null 2>&1; do
      [ $SECONDS -ge $deadline ] && break
    done
    before=$(tunl0_tx "$src")
    ip netns exec "${src}p" ping -c 3 -i 0.2 -W 5 "$ip" > "$phase/ping-$src-$dst.txt" 2>&1
    rc=$?
    after=$(tunl0_tx "$src")
    echo "$src $dst $rc $before $after" >> "$phase/pings.txt"
    log "phase $phase: ping $src -> $dst: status $rc, tunl0 tx $before -> $after"
  done
  for n in $NODES; do
    ip -n "$n" -j route show table main > "$phase/routes-$n.json"
    ip -n "$n" -j addr show dev tunl0 > "$phase/tunl0-$n.json"
    ip netns exec "$n" curl -s -m 5 -w '\n%{http_code}\n' http://127.0.0.1:9099/readiness \
      > "$phase/readiness-$n.txt" 2>&1
  done
}

run_phase always
run_phase crosssubnet
echo done > status
log "done after ${SECONDS} s"
