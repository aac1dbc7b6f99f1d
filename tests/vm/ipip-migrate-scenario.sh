#!/usr/bin/env bash
# A mixed IP-in-IP cluster moving from Calico to margay, inside the test VM (tests/vm/run.sh).
# Inputs from WORK_DIR, written by felix/tests/ipip_vm_migrate.rs: topology.env (as
# ipip-cluster-scenario.sh, plus per node <n>_POD <n>_BLOCK <n>_TUNNEL), calico-keys.json
# (Calico's etcd keys as one /v3/kv/txn body: IPPool in ipipMode Always, Nodes with their
# ipv4IPIPTunnelAddr, blocks, handles, WorkloadEndpoints) and bird-<n>.conf (BIRD on the
# configuration calico-node's confd renders, the IPIP pool's routes through tunl0 onlink).
#
# Each node starts as calico-node leaves it: tunl0 up with the tunnel address, its pod wired as
# Calico wires it (the /32 with protocol boot), BIRD on confd's configuration. Once every node
# routes every other block through tunl0 (BIRD's routes), every pod pings every other at 100/s
# and `ip monitor route` runs on every node; `margayctl datastore migrate from-calico` imports
# Calico's keys, and node by node BIRD is killed and margay-bgpd and margay-felix
# (`--adopt-route-protocols calico`) start in its place; before the next node, felix owns the
# node's routes (protocol 81, remote blocks through tunl0) and every other node routes to its
# block through tunl0 again. Records: migrate.txt, monitor-<n>.txt, ping-<src>-<dst>.txt,
# routes-<n>.json (at the end). `status` says "done" or "FAIL: why".
set -uo pipefail

work=$1
cd "$work" || exit 1
# shellcheck source=/dev/null
. ./topology.env
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"

url="http://${ETCD_ADDR%/*}:2379"
ctl() { ip netns exec e "$CTL" "$@" --etcd-endpoints "$url"; }

make_router
start_etcd
ip netns exec e curl -sS -m 10 -X POST "$url/v3/kv/txn" --data-binary @calico-keys.json \
  > keys.txt 2>&1 || fail "writing Calico's keys: $(cat keys.txt)"
grep '"succeeded":true' keys.txt > /dev/null || fail "Calico's keys not written: $(cat keys.txt)"
log "Calico's keys in etcd"

for n in $NODES; do
  make_node "$n"
  make_pod "$n" "$(var "$n" POD)"
  cali=$(var "$n" CALI)
  ipn "$n" link set tunl0 up
  ipn "$n" addr add "$(var "$n" TUNNEL)/32" dev tunl0
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1 "net.ipv4.conf.$cali.proxy_arp=1" \
    "net.ipv4.neigh.$cali.proxy_delay=0" net.ipv4.conf.tunl0.rp_filter=0 \
    net.ipv4.conf.all.rp_filter=0 || fail "sysctls of $n"
  ipn "$n" route add "$(var "$n" POD)/32" dev "$cali" scope link proto boot
  start_daemon "bird-$n" "$n" bird -f -c "$work/bird-$n.conf" -s "/run/bird-$n.ctl"
done

# waits until every node routes every other block as `want` says ("bird" or "81") through
# tunl0, and the blocks of the nodes in $2 (default: all) at the others.
wait_blocks() {
  local what=$1 deadline=$((SECONDS + 90)) n m missing
  while :; do
    missing=""
    for n in $NODES; do
      for m in $NODES; do
        [ "$n" = "$m" ] && continue
        ip -n "$n" route show "$(var "$m" BLOCK)" | grep " dev tunl0 " > /dev/null ||
          missing="$missing $n->$m"
      done
    done
    [ -z "$missing" ] && return 0
    check_daemons
    [ $SECONDS -ge $deadline ] && fail "$what: no route through tunl0 within 90 s:$missing"
    sleep 0.3
  done
}
wait_blocks "Calico's BIRD"
log "every block routed through tunl0 by Calico's BIRD"

mon=()
for n in $NODES; do
  ip netns exec "$n" ip -4 monitor route > "monitor-$n.txt" 2>&1 &
  mon+=($!)
done
pings=()
for src in $NODES; do
  for dst in $NODES; do
    [ "$src" = "$dst" ] && continue
    deadline=$((SECONDS + 20))
    until ip netns exec "${src}p" ping -c 1 -W 1 "$(var "$dst" POD)" > /dev/null 2>&1; do
      [ $SECONDS -ge $deadline ] && fail "pod $src cannot reach pod $dst through Calico's routes"
    done
    ip netns exec "${src}p" ping -n -i 0.01 -W 1 "$(var "$dst" POD)" > "ping-$src-$dst.txt" 2>&1 &
    pings+=($!)
  done
done
log "pings running"
sleep 1

ctl datastore migrate from-calico > migrate.txt 2>&1 || fail "the import: $(cat migrate.txt)"
log "imported: $(tail -1 migrate.txt)"

for n in $NODES; do
  kill -9 "${daemon_pid[bird-$n]}"
  wait "${daemon_pid[bird-$n]}" 2> /dev/null
  unset "daemon_pid[bird-$n]"
  start_daemon "bgpd-$n" "$n" "$BGPD" --datastore etcd --node "$n" --ip "$(var "$n" ADDR)" \
    --etcd-endpoints "$url" --socket "/run/bgpd-$n.sock" --http-port 0
  start_daemon "felix-$n" "$n" "$FELIX" --node "$n" --etcd-endpoints "$url" \
    --bgpd-socket "/run/bgpd-$n.sock" --socket "/run/felix-$n.sock" --http-port 9099 \
    --resync-interval 1 --policy off --adopt-route-protocols calico
  deadline=$((SECONDS + 90))
  while :; do
    missing=""
    for m in $NODES; do
      [ "$m" = "$n" ] && continue
      ip -n "$n" route show "$(var "$m" BLOCK)" proto 81 | grep " dev tunl0 " > /dev/null ||
        missing="$missing $n->$m"
    done
    ip -n "$n" route show "$(var "$n" BLOCK)" proto 81 | grep blackhole > /dev/null ||
      missing="$missing $n:blackhole"
    [ -z "$missing" ] && break
    check_daemons
    [ $SECONDS -ge $deadline ] && fail "$n: routes not felix's within 90 s:$missing"
    sleep 0.3
  done
  wait_blocks "after $n moved"
  log "$n runs margay: its routes are felix's"
  sleep 2
done

kill -INT "${pings[@]}"
wait "${pings[@]}"
kill "${mon[@]}"
for n in $NODES; do
  ip -n "$n" -j route show table main > "routes-$n.json"
done
echo done > status
log "done after ${SECONDS} s"
