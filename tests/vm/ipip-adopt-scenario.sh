#!/usr/bin/env bash
# Taking over IP-in-IP nodes calico-node wired, inside the test VM (tests/vm/run.sh). Inputs from
# WORK_DIR, written by felix/tests/ipip_vm.rs: topology.env (as ipip-scenario.sh, plus per node
# <n>_TUNNEL and <n>_BLOCK) and adopt/<n>.json (felix's state, pool in IPIP Always).
#
# First each node is left as calico-node leaves it: tunl0 up with the Node's tunnel address
# (/32), forwarding and proxy ARP on the pod's veth, the pod's /32 (protocol boot), the block's
# blackhole and every other block `via <node> dev tunl0 onlink` (protocol bird, as Calico's
# BIRD programs them). Pods ping pods every 20 ms throughout, `ip monitor route` runs on every
# node, and margay-felix starts on each with `--adopt-route-protocols calico`. Once every
# block's route is felix's, the pings stop. Records in adopt/: routes-<n>.json, tunl0-<n>.json,
# readiness-<n>.txt, monitor-<n>.txt, ping-<src>-<dst>.txt. `status` says "done" or "FAIL: why".
set -uo pipefail

work=$1
cd "$work" || exit 1
# shellcheck source=/dev/null
. ./topology.env
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"

make_topology
mkdir -p adopt
for n in $NODES; do
  cali=$(var "$n" CALI)
  ipn "$n" link set tunl0 up
  ipn "$n" addr add "$(var "$n" TUNNEL)/32" dev tunl0
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1 "net.ipv4.conf.$cali.proxy_arp=1" \
    net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.all.rp_filter=0 || fail "sysctls of $n"
  ipn "$n" route add "$(var "$n" POD)/32" dev "$cali" scope link proto boot
  ipn "$n" route add blackhole "$(var "$n" BLOCK)" proto bird
  for m in $NODES; do
    [ "$m" = "$n" ] && continue
    ipn "$n" route add "$(var "$m" BLOCK)" via "$(var "$m" ADDR | cut -d/ -f1)" dev tunl0 \
      onlink proto bird
  done
done
log "nodes wired as calico-node leaves them"

pids=()
for n in $NODES; do
  ip netns exec "$n" ip -4 monitor route > "adopt/monitor-$n.txt" 2>&1 &
  pids+=($!)
done
ping_pids=()
for pair in $PINGS; do
  src=${pair%%:*}
  dst=${pair##*:}
  # Calico's routes carry the pods before felix starts.
  deadline=$((SECONDS + 20))
  until ip netns exec "${src}p" ping -c 1 -W 1 "$(var "$dst" POD)" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && fail "pod $src cannot reach pod $dst through Calico's routes"
  done
  ip netns exec "${src}p" ping -n -i 0.02 -W 2 "$(var "$dst" POD)" \
    > "adopt/ping-$src-$dst.txt" 2>&1 &
  ping_pids+=($!)
done
log "pings running"
sleep 1

for n in $NODES; do
  cp "adopt/$n.json" "$n.state.json"
  start_daemon "felix-$n" "$n" "$FELIX" --node "$n" --state "$work/$n.state.json" \
    --http-port 9099 --resync-interval 1 --adopt-route-protocols calico
done
# Every block's route felix's (protocol 81) and through tunl0.
deadline=$((SECONDS + 60))
while :; do
  missing=""
  while read -r node prefix dev; do
    [ -n "$node" ] || continue
    ip -n "$node" route show "$prefix" proto 81 | grep " dev $dev " >/dev/null ||
      missing="$missing $node:$prefix"
  done < adopt/expect
  [ -z "$missing" ] && break
  check_daemons
  [ $SECONDS -ge $deadline ] && fail "routes not adopted within 60 s:$missing"
  sleep 0.5
done
log "routes adopted after ${SECONDS} s"
sleep 2
kill -INT "${ping_pids[@]}"
wait "${ping_pids[@]}"
kill "${pids[@]}"
record_nodes adopt
echo done > status
log "done after ${SECONDS} s"
