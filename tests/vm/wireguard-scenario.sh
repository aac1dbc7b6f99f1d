#!/usr/bin/env bash
# WireGuard between the nodes, run inside the test VM (tests/vm/run.sh; this machine's kernel
# has no wireguard module). Cluster mode: etcd, margay-bgpd and margay-felix on three
# dual-stack nodes in one subnet, a dual-stack pod behind each, an IPv4 and an IPv6 pool
# without encapsulation. Its inputs come from WORK_DIR, written by felix/tests/wireguard_vm.rs:
#
#   topology.env   as for ipip-cluster-scenario.sh, plus <n>_ADDR6 (each node's IPv6 address)
#                  and HELPER (this test binary: run with MARGAY_VM_ETCD and MARGAY_VM_NODE it
#                  wires a dual-stack pod; with MARGAY_VM_FORGET_KEY it removes both of that
#                  Node's published keys)
#   pool.yaml, wg-on.yaml, wg-off.yaml   applied with `margayctl apply`
#
# Phases, each recorded in its directory: `on` (FelixConfiguration default wireguardEnabled and
# wireguardEnabledV6: true; pods ping over both families while tcpdump captures the router's
# bridge), `rotated` (n1's published keys removed: n1 makes new pairs, the others replace the
# peers of both devices; pods ping again), `off` (both false: devices, rules and tables gone,
# keys cleared; pods still ping).
# Per phase, node and family (F: 4 = wg.margay and table 1, 6 = wg-v6.margay and table 2):
# wg<F>-<n>.txt (`wg show DEV dump`), table<F>-<n>.json, rules<F>-<n>.json, link<F>-<n>.json;
# node-<n>.json; pings.txt (IPv4) and pings6.txt. capture.txt: `tcpdump -nn` of the on phase.
# rotated-keys<F>.txt: n1's old and new key. `status` says "done" or "FAIL: why".
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
    --ip6 "$(var "$n" ADDR6)" --etcd-endpoints "$url" --socket "/run/bgpd-$n.sock" --http-port 0
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
  make_pod "$n" "$(var "$n" POD)" "$(var "$n" POD6)"
done
log "pods wired: $(tr '\n' ' ' < pods.env)"
: > plain-expect
for n in $NODES; do
  for m in $NODES; do
    [ "$n" = "$m" ] ||
      printf '%s %s eth0\n' "$n" "$(var "$m" BLOCK)" "$n" "$(var "$m" BLOCK6)" >> plain-expect
  done
done
wait_routes plain-expect
log "remote blocks of both families routed in the main table"

# Per family F (4 or 6): the device, its table, the Node's key field.
dev() { if [ "$1" = 6 ]; then echo wg-v6.margay; else echo wg.margay; fi; }
table() { if [ "$1" = 6 ]; then echo 2; else echo 1; fi; }
key_field() { if [ "$1" = 6 ]; then echo wireguardPublicKeyV6; else echo wireguardPublicKey; fi; }
peer_count() { ip netns exec "$2" wg show "$(dev "$1")" peers 2>/dev/null | grep -c . ; }
key_of() { node_json "$2" | jq -r ".status.$(key_field "$1") // empty"; }

# wait_all WHAT TEST: until TEST (a command) succeeds on every node, or 60 s.
wait_all() {
  local what=$1 n deadline=$((SECONDS + 60))
  shift
  for n in $NODES; do
    until "$@" "$n"; do
      check_daemons
      if [ $SECONDS -ge $deadline ]; then
        ip -n "$n" -d link show > "fail-links-$n.log" 2>&1
        ip -n "$n" rule show > "fail-rules-$n.log" 2>&1
        ip -n "$n" -6 rule show > "fail-rules6-$n.log" 2>&1
        fail "$what on $n not within 60 s"
      fi
      sleep 0.3
    done
  done
}
wg_ready_family() {
  local f=$1 n=$2
  [ "$(peer_count "$f" "$n")" = 2 ] && [ -n "$(key_of "$f" "$n")" ] &&
    [ "$(ip -n "$n" -"$f" route show table "$(table "$f")" | grep -c "dev $(dev "$f")")" = 2 ] &&
    ip -n "$n" -"$f" rule show |
    grep "^99:.*not from all fwmark 0x100000/0x100000 lookup $(table "$f")" >/dev/null
}
wg_ready() { wg_ready_family 4 "$1" && wg_ready_family 6 "$1"; }
# record PHASE: per node and family the device, table, rules and link, and the Node; nodes in
# parallel (each command is slow in the VM).
record() {
  local phase=$1 n f pids=()
  mkdir -p "$phase"
  for n in $NODES; do
    (
      for f in 4 6; do
        ip netns exec "$n" wg show "$(dev "$f")" dump > "$phase/wg$f-$n.txt" 2>&1
        ip -n "$n" -"$f" -j route show table "$(table "$f")" > "$phase/table$f-$n.json" 2>&1
        ip -n "$n" -"$f" -j rule show > "$phase/rules$f-$n.json" 2>&1
        ip -n "$n" -j -d link show "$(dev "$f")" > "$phase/link$f-$n.json" 2>&1
      done
      node_json "$n" > "$phase/node-$n.json" 2>&1
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
}
# ping_pair PHASE F SRC DST: SRC's pod pings DST's over IPv F (after up to 20 s of single
# pings while the first packets wait for ARP or NDP on every hop), three times; the output in
# PHASE/ping[6]-SRC-DST.txt, the status in PHASE/ping[6]-SRC-DST.rc.
ping_pair() {
  local phase=$1 f=$2 src=$3 dst=$4 suffix dst_ip deadline out
  suffix=${f/4/}
  dst_ip=$(var "$dst" "POD$suffix")
  out="$phase/ping$suffix-$src-$dst"
  deadline=$((SECONDS + 20))
  until ip netns exec "${src}p" ping -"$f" -c 1 -W 1 "$dst_ip" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && break
  done
  ip netns exec "${src}p" ping -"$f" -c 3 -i 0.2 -w 20 "$dst_ip" > "$out.txt" 2>&1
  echo $? > "$out.rc"
}
# pings PHASE: every pod to every other over both families, all at once (the VM is slow);
# PHASE/pings.txt (IPv4) and PHASE/pings6.txt have "src dst status".
pings() {
  local phase=$1 src dst f suffix pids=()
  mkdir -p "$phase"
  for f in 4 6; do
    for src in $NODES; do
      for dst in $NODES; do
        [ "$src" = "$dst" ] || { ping_pair "$phase" "$f" "$src" "$dst" & pids+=($!); }
      done
    done
  done
  wait "${pids[@]}"
  for f in 4 6; do
    suffix=${f/4/}
    : > "$phase/pings$suffix.txt"
    for src in $NODES; do
      for dst in $NODES; do
        [ "$src" = "$dst" ] && continue
        echo "$src $dst $(cat "$phase/ping$suffix-$src-$dst.rc")" >> "$phase/pings$suffix.txt"
      done
    done
    log "phase $phase: IPv$f pings (src dst status): $(tr '\n' ';' < "$phase/pings$suffix.txt")"
  done
}

log "phase on"
ctl apply -f wg-on.yaml > on-apply.txt 2>&1 || fail "margayctl apply wg-on: $(cat on-apply.txt)"
wait_all "WireGuard of both families (2 peers, key published, table, rule 99)" wg_ready
log "phase on: WireGuard programmed on every node"
# Every IPv4 and IPv6 packet the router's bridge ports carry, but etcd's and BGP's (node to
# node and to etcd, never through the tunnels) and the nodes' own IPv6 neighbour discovery
# (ICMPv6 133 to 137, never with extension headers) and multicast (MLD): what the pods send
# must show as WireGuard's UDP only.
# A short snapshot and a large buffer: with whole packets (the default) and immediate
# delivery the ring holds a few frames only, and the kernel drops what tcpdump cannot take in
# time (the test requires no drop, so the capture is whole).
ip netns exec r tcpdump -i any -nn -l -U -s 128 -B 8192 \
  '(ip or ip6) and not port 2379 and not port 179 and not ip6 multicast and
   not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)' > capture.txt 2> capture.err &
capture=$!
sleep 1
pings on
sleep 0.5
kill "$capture"; wait "$capture" 2>/dev/null
record on

log "phase rotated"
old_4=$(key_of 4 n1)
old_6=$(key_of 6 n1)
helper MARGAY_VM_FORGET_KEY=n1 > forget.txt 2>&1 || fail "removing n1's keys: $(cat forget.txt)"
new_keys() {
  local k4 k6
  k4=$(key_of 4 n1)
  k6=$(key_of 6 n1)
  [ -n "$k4" ] && [ "$k4" != "$old_4" ] && [ -n "$k6" ] && [ "$k6" != "$old_6" ]
}
deadline=$((SECONDS + 60))
until new_keys; do
  check_daemons
  [ $SECONDS -ge $deadline ] && fail "n1 published no new keys within 60 s"
  sleep 0.3
done
new_4=$(key_of 4 n1)
new_6=$(key_of 6 n1)
# peer_has_new F N: N's device of family F peers with n1's new key and not the old one.
peer_has_new() {
  local f=$1 old new peers
  old=$(var old "$f")
  new=$(var new "$f")
  [ "$2" = n1 ] && return 0
  peers=$(ip netns exec "$2" wg show "$(dev "$f")" peers) || return 1
  grep -x "$new" <<<"$peers" >/dev/null && ! grep -x "$old" <<<"$peers" >/dev/null
}
wait_all "the IPv4 peer of n1 replaced by its new key" peer_has_new 4
wait_all "the IPv6 peer of n1 replaced by its new key" peer_has_new 6
echo "$old_4 $new_4" > rotated-keys4.txt
echo "$old_6 $new_6" > rotated-keys6.txt
pings rotated
record rotated

log "phase off"
ctl apply -f wg-off.yaml > off-apply.txt 2>&1 || fail "margayctl apply wg-off: $(cat off-apply.txt)"
wg_gone_family() {
  ! ip -n "$2" link show "$(dev "$1")" > /dev/null 2>&1 &&
    ! ip -n "$2" -"$1" rule show | grep "lookup $(table "$1")" >/dev/null &&
    [ -z "$(key_of "$1" "$2")" ]
}
wg_gone() { wg_gone_family 4 "$1" && wg_gone_family 6 "$1"; }
wait_all "WireGuard of both families removed (devices, rules, published keys)" wg_gone
pings off
record off
echo done > status
log "done after ${SECONDS} s"
