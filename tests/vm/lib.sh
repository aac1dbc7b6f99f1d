# What the VM scenarios share (sourced by them, inside the VM, from their WORK_DIR): logging
# and failure, the daemons they start (stopped on exit), the router with a bridge per subnet,
# node and pod namespaces wired as Calico wires pods, waiting for routes, the pings with tunl0
# counters, the per-phase records (routes, tunl0, readiness) and etcd for the cluster
# scenarios. topology.env must be sourced first: SUBNETS, NODES, PINGS and per node <n>_ADDR
# <n>_SUBNET <n>_GW <n>_CALI, <n>_POD, optionally <n>_ADDR6 (a dual-stack node).
# shellcheck shell=bash

log() { echo "scenario: [${SECONDS}s] $*"; }
fail() {
  log "FAIL: $*"
  echo "FAIL: $*" > status
  exit 1
}
var() { local v="$1_$2"; echo "${!v}"; }
ipn() { ip -n "$@" || fail "ip -n $*"; }

# Daemons by name; each logs to <name>.log and is stopped when the scenario exits.
declare -A daemon_pid=()
stop_daemons() {
  local d
  for d in "${!daemon_pid[@]}"; do kill "${daemon_pid[$d]}" 2>/dev/null; done
  wait
}
trap stop_daemons EXIT
# start_daemon NAME NETNS COMMAND...: runs COMMAND in NETNS in the background.
start_daemon() {
  local name=$1 ns=$2
  shift 2
  ip netns exec "$ns" "$@" > "$name.log" 2>&1 &
  daemon_pid[$name]=$!
}
check_daemons() {
  local d
  for d in "${!daemon_pid[@]}"; do
    kill -0 "${daemon_pid[$d]}" 2>/dev/null || fail "$d exited (see $d.log)"
  done
}

# The router namespace `r`: forwarding on, bridge br<i> with the i-th address of SUBNETS.
make_router() {
  local a i=0
  ip link show tunl0 >/dev/null 2>&1 || fail "the ipip module is not loaded (no tunl0)"
  ip netns add r || fail "ip netns add r"
  ipn r link set lo up
  ip netns exec r sysctl -qw net.ipv4.ip_forward=1 || fail "router forwarding"
  for a in $SUBNETS; do
    ipn r link add "br$i" type bridge
    ipn r addr add "$a" dev "br$i"
    ipn r link set "br$i" up
    i=$((i + 1))
  done
}

# make_host NAME ADDR SUBNET GW: namespace NAME with eth0 (ADDR) on bridge br<SUBNET> of the
# router and a default route via GW.
make_host() {
  local n=$1
  ip netns add "$n" || fail "ip netns add $n"
  ipn "$n" link set lo up
  ip link add eth0 netns "$n" type veth peer name "$n" netns r || fail "uplink of $n"
  ipn r link set "$n" master "br$3" up
  ipn "$n" addr add "$2" dev eth0
  ipn "$n" link set eth0 up
  ipn "$n" route add default via "$4"
}

# make_node N: node N's namespace from its topology variables; with <N>_ADDR6 (ADDR/LEN) set,
# that IPv6 address on eth0 too (dual-stack, on the same link).
make_node() {
  local v6="$1_ADDR6"
  make_host "$1" "$(var "$1" ADDR)" "$(var "$1" SUBNET)" "$(var "$1" GW)"
  [ -z "${!v6:-}" ] || ipn "$1" addr add "${!v6}" dev eth0 nodad
}

# make_pod N IP [IP6]: the pod namespace `<N>p` behind node N, on veth <N>_CALI / eth0 with
# IP/32 and the default route via 169.254.1.1; with IP6, dual-stack as Calico wires it: IP6/128
# and the IPv6 default route via the host side's link-local fe80::ecee:eeff:feee:eeee (from its
# MAC ee:ee:ee:ee:ee:ee; no duplicate address detection on it, so it answers at once).
make_pod() {
  local n=$1 pod=${1}p cali
  cali=$(var "$n" CALI)
  ip netns add "$pod" || fail "ip netns add $pod"
  ipn "$pod" link set lo up
  ipn "$n" link add "$cali" type veth peer name eth0 netns "$pod"
  ipn "$n" link set "$cali" address ee:ee:ee:ee:ee:ee
  [ -z "${3:-}" ] || ip netns exec "$n" sysctl -qw "net.ipv6.conf.$cali.accept_dad=0" ||
    fail "accept_dad on $n's $cali"
  ipn "$n" link set "$cali" up
  ipn "$pod" addr add "$2/32" dev eth0
  ipn "$pod" link set eth0 up
  ipn "$pod" route add 169.254.1.1 dev eth0 scope link
  ipn "$pod" route add default via 169.254.1.1 dev eth0
  if [ -n "${3:-}" ]; then
    ipn "$pod" addr add "$3/128" dev eth0 nodad
    ipn "$pod" -6 route add default via fe80::ecee:eeff:feee:eeee dev eth0
  fi
}

# make_topology: the router, every node of NODES and the pod behind each.
make_topology() {
  local n
  make_router
  for n in $NODES; do
    make_node "$n"
    make_pod "$n" "$(var "$n" POD)"
  done
}

tunl0_tx() {
  ip -n "$1" -s -j link show tunl0 2>/dev/null | jq -r '.[0].stats64.tx.packets // 0'
}

# Waits up to 60 s until every "node prefix dev" line of $1 holds in the kernel (IPv4 or IPv6
# prefixes: `ip route show` lists IPv4 only unless told -6).
wait_routes() {
  local deadline=$((SECONDS + 60)) node prefix dev missing family
  while :; do
    missing=""
    while read -r node prefix dev; do
      [ -n "$node" ] || continue
      family=-4
      case "$prefix" in *:*) family=-6 ;; esac
      ip -n "$node" "$family" route show "$prefix" | grep " dev $dev " >/dev/null ||
        missing="$missing $node:$prefix:$dev"
    done < "$1"
    [ -z "$missing" ] && return 0
    check_daemons
    [ $SECONDS -ge $deadline ] && fail "routes not programmed within 60 s:$missing"
    sleep 0.5
  done
}

# ping_pods PHASE: pings pod to pod for each "src:dst" of PINGS (the destination pod's address
# is <dst>_POD) and records PHASE/ping-<src>-<dst>.txt and PHASE/pings.txt.
ping_pods() {
  local phase=$1 pair src dst ip before after rc deadline
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
}

# record_nodes PHASE [COMMAND]: every node's main table, tunl0 and felix's readiness (port
# 9099), and what COMMAND N prints into PHASE/node-<N>.json; nodes in parallel.
record_nodes() {
  local phase=$1 extra=${2:-} n pids=()
  for n in $NODES; do
    (
      ip -n "$n" -j route show table main > "$phase/routes-$n.json"
      ip -n "$n" -j addr show dev tunl0 > "$phase/tunl0-$n.json"
      ip netns exec "$n" curl -s -m 5 -w '\n%{http_code}\n' http://127.0.0.1:9099/readiness \
        > "$phase/readiness-$n.txt" 2>&1
      [ -z "$extra" ] || $extra "$n" > "$phase/node-$n.json" 2>&1
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
}

# start_etcd: etcd in namespace `e` at ETCD_ADDR (topology.env) on the router's ETCD_SUBNET,
# data on the VM's tmpfs, serving $url; returns once the caller's `ctl` gets an answer from it
# (30 s at most).
start_etcd() {
  local deadline
  make_host e "$ETCD_ADDR" "$ETCD_SUBNET" "$ETCD_GW"
  start_daemon etcd e "$ETCD" --name default --data-dir /tmp/etcd-data \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380
  deadline=$((SECONDS + 30))
  until ctl get ippools > /dev/null 2>&1; do
    check_daemons
    [ $SECONDS -ge $deadline ] && fail "etcd does not answer within 30 s"
    sleep 0.3
  done
}
