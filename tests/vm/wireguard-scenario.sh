#!/usr/bin/env bash
# WireGuard between the nodes, run inside the test VM (tests/vm/run.sh; this machine's kernel
# has no wireguard module). Cluster mode: etcd, margay-bgpd and margay-felix on three nodes in
# one subnet, a pod behind each, the pool without encapsulation. Its inputs come from WORK_DIR,
# written by felix/tests/wireguard_vm.rs:
#
#   topology.env   as for ipip-cluster-scenario.sh, plus HELPER (this test binary: run with
#                  MARGAY_VM_ETCD and MARGAY_VM_NODE it wires a pod; with MARGAY_VM_FORGET_KEY
#                  it removes that Node's published key)
#   pool.yaml, wg-on.yaml, wg-off.yaml   applied with `margayctl apply`
#
# Phases, each recorded in its directory: `on` (FelixConfiguration default wireguardEnabled:
# true; pods ping while tcpdump captures the router's bridge), `rotated` (n1's published key
# removed: n1 makes a new pair, the others replace the peer; pods ping again), `off`
# (wireguardEnabled: false: device, rule and table gone, key cleared; pods still ping).
# Per phase and node: wg-<n>.txt (`wg show wg.margay dump`), table-<n>.json (table 1),
# rules-<n>.json, link-<n>.json, node-<n>.json; capture.txt (`tcpdump -nn` of the on phase);
# pings.txt. `status` says "done" or "FAIL: why".
set -uo pipefail

work=$1
cd "$work" || exit 1
# shellcheck source=/dev/null
. ./topology.env
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"

url="http://${ETCD_ADDR%/*}:2379"
ctl() { ip netns exec e "$CTL" "$@" --etcd-endpoints "$url"; }
node_json() { ctl get node "$1" -o json; }
helper() { ip netns exec e env MARGAY_VM_ETCD="$url" "$@" $HELPER; }
[ -d /sys/module/wireguard ] || fail "the wireguard module is not loaded"
ip link add wgprobe type wireguard || fail "ip link add type wireguard fails in the VM"
ip link del wgprobe

make_router
start_etcd
ctl apply -f pool.yaml > apply-pool.txt 2>&1 || fail "margayctl apply pool: $(cat apply-pool.txt)"
for n in $NODES; do
  make_node "$n"
  start_daemon "bgpd-$n" "$n" "$BGPD" --datastore etcd --node "$n" --ip "$(var "$n" ADDR)" \
    --etcd-endpoints "$url" --socket "/run/bgpd-$n.sock" --http-port 0
  start_daemon "felix-$n" "$n" "$FELIX" --node "$n" --etcd-endpoints "$url" \
    --bgpd-socket "/run/bgpd-$n.sock" --socket "/run/felix-$n.sock" \
    --http-port 9099 --resync-interval 1 --policy off  # the VM's initramfs has no nft
done
: > pods.env
for n in $NODES; do
  helper MARGAY_VM_NODE="$n" MARGAY_VM_CALI="$(var "$n" CALI)" MARGAY_VM_OUT="$work/pod-$n.env" \
    > "pod-$n.txt" 2>&1 || fail "the pod helper failed for $n: $(tail -20 "pod-$n.txt")"
  cat "pod-$n.env" >> pods.env
  # shellcheck source=/dev/null
  . "./pod-$n.env"
  make_pod "$n" "$(var "$n" POD)"
done
log "pods wired: $(tr '\n' ' ' < pods.env)"
: > plain-expect
for n in $NODES; do
  for m in $NODES; do
    [ "$n" = "$m" ] || echo "$n $(var "$m" BLOCK) eth0" >> plain-expect
  done
done
wait_routes plain-expect
log "remote blocks routed in the main table"

peer_count() { ip netns exec "$1" wg show wg.margay peers 2>/dev/null | grep -c . ; }
key_of() { node_json "$1" | jq -r '.status.wireguardPublicKey // empty'; }

# wait_wg WHAT TEST: until TEST (a command) succeeds on every node, or 60 s.
wait_all() {
  local what=$1 n deadline=$((SECONDS + 60))
  shift
  for n in $NODES; do
    until "$@" "$n"; do
      check_daemons
      if [ $SECONDS -ge $deadline ]; then
        ip -n "$n" -d link show > "fail-links-$n.log" 2>&1
        ip -n "$n" rule show > "fail-rules-$n.log" 2>&1
        fail "$what on $n not within 60 s"
      fi
      sleep 0.3
    done
  done
}
wg_ready() {
  [ "$(peer_count "$1")" = 2 ] && [ -n "$(key_of "$1")" ] &&
    [ "$(ip -n "$1" route show table 1 | grep -c 'dev wg.margay')" = 2 ] &&
    ip -n "$1" rule show | grep '^99:.*not from all fwmark 0x100000/0x100000 lookup 1' >/dev/null
}
record() {
  local phase=$1 n
  mkdir -p "$phase"
  for n in $NODES; do
    ip netns exec "$n" wg show wg.margay dump > "$phase/wg-$n.txt" 2>&1
    ip -n "$n" -j route show table 1 > "$phase/table-$n.json" 2>&1
    ip -n "$n" -j rule show > "$phase/rules-$n.json" 2>&1
    ip -n "$n" -j -d link show wg.margay > "$phase/link-$n.json" 2>&1
    node_json "$n" > "$phase/node-$n.json" 2>&1
  done
}
# pings PHASE: every pod to every other, three each; PHASE/pings.txt has "src dst status".
pings() {
  local phase=$1 src dst rc deadline
  mkdir -p "$phase"
  : > "$phase/pings.txt"
  for src in $NODES; do
    for dst in $NODES; do
      [ "$src" = "$dst" ] && continue
      deadline=$((SECONDS + 20))
      until ip netns exec "${src}p" ping -c 1 -W 1 "$(var "$dst" POD)" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && break
      done
      ip netns exec "${src}p" ping -c 3 -i 0.2 -W 5 "$(var "$dst" POD)" > "$phase/ping-$src-$dst.txt" 2>&1
      rc=$?
      echo "$src $dst $rc" >> "$phase/pings.txt"
      log "phase $phase: ping $src -> $dst: status $rc"
    done
  done
}

log "phase on"
ctl apply -f wg-on.yaml > on-apply.txt 2>&1 || fail "margayctl apply wg-on: $(cat on-apply.txt)"
wait_all "WireGuard (2 peers, key published, table 1, rule 99)" wg_ready
log "phase on: WireGuard programmed on every node"
# Every IPv4 packet the router's bridge ports carry, but etcd's and BGP's (node to node and to
# etcd, never through the tunnel).
ip netns exec r tcpdump -i any -nn -l -U 'ip and not port 2379 and not port 179' \
  > capture.txt 2> capture.err &
capture=$!
sleep 1
pings on
sleep 0.5
kill "$capture"; wait "$capture" 2>/dev/null
record on

log "phase rotated"
old=$(key_of n1)
helper MARGAY_VM_FORGET_KEY=n1 > forget.txt 2>&1 || fail "removing n1's key: $(cat forget.txt)"
new_key() { local k; k=$(key_of n1); [ -n "$k" ] && [ "$k" != "$old" ]; }
deadline=$((SECONDS + 60))
until new_key; do
  check_daemons
  [ $SECONDS -ge $deadline ] && fail "n1 published no new key within 60 s"
  sleep 0.3
done
new=$(key_of n1)
peer_has_new() {
  [ "$1" = n1 ] && return 0
  ip netns exec "$1" wg show wg.margay peers | grep -x "$new" >/dev/null &&
    ! ip netns exec "$1" wg show wg.margay peers | grep -x "$old" >/dev/null
}
wait_all "the peer of n1 replaced by its new key" peer_has_new
echo "$old $new" > rotated-keys.txt
pings rotated
record rotated

log "phase off"
ctl apply -f wg-off.yaml > off-apply.txt 2>&1 || fail "margayctl apply wg-off: $(cat off-apply.txt)"
wg_gone() {
  ! ip -n "$1" link show wg.margay > /dev/null 2>&1 &&
    ! ip -n "$1" rule show | grep 'lookup 1' >/dev/null && [ -z "$(key_of "$1")" ]
}
wait_all "WireGuard removed (device, rule, published key)" wg_gone
pings off
record off
echo done > status
log "done after ${SECONDS} s"
