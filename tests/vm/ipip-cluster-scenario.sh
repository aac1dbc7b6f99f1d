#!/usr/bin/env bash
# The IPIP scenario in cluster mode, run inside the test VM (tests/vm/run.sh): the route set
# comes from a real etcd and margay-bgpd, not from state files. Its inputs come from WORK_DIR,
# written by felix/tests/ipip_vm_cluster.rs:
#
#   topology.env    FELIX BGPD CTL ETCD (binaries), POD_HELPER (a command that, run with
#                   MARGAY_VM_ETCD, MARGAY_VM_NODE, MARGAY_VM_CALI and MARGAY_VM_OUT in its
#                   environment, takes a pod address through IPAM, writes the pod's
#                   WorkloadEndpoint and writes "<node>_POD=ip" and "<node>_BLOCK=cidr" to
#                   MARGAY_VM_OUT), SUBNETS, NODES, PINGS, per node <n>_ADDR <n>_SUBNET <n>_GW
#                   <n>_CALI, and ETCD_ADDR ETCD_SUBNET ETCD_GW for etcd's namespace
#   <phase>/pool.yaml  the IPPool applied with `margayctl apply` in that phase
#                   (phases: always, crosssubnet)
#
# It builds the router `r` with a bridge per subnet, etcd in namespace `e` (data on the VM's
# tmpfs), the node namespaces with margay-bgpd (cluster mode: the mesh forms from the Nodes) and
# margay-felix (cluster mode) in each, and a pod behind each node wired as a CNI plugin would
# (IPAM, WorkloadEndpoint, veth). For each phase it applies the pool, waits until every node
# routes every other node's block through tunl0 (or, in CrossSubnet, eth0 for a node in its own
# subnet), pings pod to pod and records in <phase>/ what lib.sh's record_nodes and ping_pods
# record plus node-<n>.json (`margayctl get node -o json`). pods.env holds every pod's address
# and block. The file `status` says "done" when every step ran, or "FAIL: why". Logs:
# etcd.log, bgpd-<n>.log, felix-<n>.log.
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

make_router
start_etcd
log "etcd answers"

ctl apply -f always/pool.yaml > always/apply.txt 2>&1 || fail "margayctl apply: $(cat always/apply.txt)"
for n in $NODES; do
  make_node "$n"
  start_daemon "bgpd-$n" "$n" "$BGPD" --datastore etcd --node "$n" --ip "$(var "$n" ADDR)" \
    --etcd-endpoints "$url" --socket "/run/bgpd-$n.sock" --http-port 0
  start_daemon "felix-$n" "$n" "$FELIX" --node "$n" --etcd-endpoints "$url" \
    --bgpd-socket "/run/bgpd-$n.sock" --socket "/run/felix-$n.sock" \
    --http-port 9099 --resync-interval 1 --policy off  # the VM's initramfs has no nft
done
# felix takes its tunnel address first (IPAM, then the Node, then tunl0 from the Node), so the
# pods' addresses come from the same block.
deadline=$((SECONDS + 60))
for n in $NODES; do
  until ip -n "$n" -j addr show dev tunl0 2>/dev/null | jq -e '.[0].addr_info[0].local' > /dev/null; do
    check_daemons
    [ $SECONDS -ge $deadline ] && fail "no IPIP tunnel address on $n's tunl0 within 60 s"
    sleep 0.3
  done
done
log "tunnel addresses on tunl0"
: > pods.env
pids=()
for n in $NODES; do
  ip netns exec e env MARGAY_VM_ETCD="$url" MARGAY_VM_NODE="$n" MARGAY_VM_CALI="$(var "$n" CALI)" \
    MARGAY_VM_OUT="$work/pod-$n.env" $POD_HELPER > "pod-$n.txt" 2>&1 &
  pids+=($!)
done
i=0
for n in $NODES; do
  wait "${pids[$i]}" || fail "the pod helper failed for $n: $(tail -20 "pod-$n.txt")"
  i=$((i + 1))
  cat "pod-$n.env" >> pods.env
  # shellcheck source=/dev/null
  . "./pod-$n.env"
  make_pod "$n" "$(var "$n" POD)"
done
log "pods wired: $(tr '\n' ' ' < pods.env)"

run_phase() {
  local phase=$1 n m dev
  log "phase $phase"
  if [ "$phase" != always ]; then
    ctl apply -f "$phase/pool.yaml" > "$phase/apply.txt" 2>&1 ||
      fail "margayctl apply: $(cat "$phase/apply.txt")"
  fi
  : > "$phase/expect"
  for n in $NODES; do
    for m in $NODES; do
      [ "$n" = "$m" ] && continue
      dev=tunl0
      [ "$phase" = crosssubnet ] && [ "$(var "$n" SUBNET)" = "$(var "$m" SUBNET)" ] && dev=eth0
      echo "$n $(var "$m" BLOCK) $dev" >> "$phase/expect"
    done
  done
  wait_routes "$phase/expect"
  log "phase $phase: routes programmed after ${SECONDS} s"
  ping_pods "$phase"
  record_nodes "$phase" node_json
}

run_phase always
run_phase crosssubnet
echo done > status
log "done after ${SECONDS} s"
