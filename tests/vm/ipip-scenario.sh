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
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"

make_topology
log "namespaces ready"

run_phase() {
  local phase=$1 n
  log "phase $phase"
  mkdir -p "$phase"
  for n in $NODES; do
    cp "$phase/$n.json" "$n.state.json"
    if [ -z "${daemon_pid[felix-$n]:-}" ]; then
      start_daemon "felix-$n" "$n" "$FELIX" --node "$n" --state "$work/$n.state.json" \
        --http-port 9099 --resync-interval 1
    else
      kill -HUP "${daemon_pid[felix-$n]}"
    fi
  done
  wait_routes "$phase/expect"
  log "phase $phase: routes programmed after ${SECONDS} s"
  ping_pods "$phase"
  record_nodes "$phase"
}

run_phase always
run_phase crosssubnet
echo done > status
log "done after ${SECONDS} s"
