#!/usr/bin/env bash
# margay-felix at N nodes with an IP-in-IP pool (issue 12 §3), run inside the test VM
# (tests/vm/run.sh) because this machine's kernel has no ipip module. The command comes from
# WORK_DIR, written by bench/felix-scale.sh or bench/blast/tests/felix_scale_ipip_vm.rs:
#
#   scale.env   CMD: the command to run (margay-felix-scale --backend ipip, or the test binary
#               running its in-VM half); it builds its own namespaces, etcd, margay-bgpd and
#               margay-felix (bench/blast/src/sim/felixscale.rs) and removes them
#
# The command's stdout goes to result.txt, its stderr (progress, failures) to felix-scale.log.
# felix runs with policy off (MARGAY_FELIX_POLICY): the VM's initramfs has no nf_tables; the
# lab's daemon start timeouts are stretched (MARGAY_LAB_SLOWDOWN). The
# file `status` says "done" when the command succeeded, or "FAIL: why".
set -uo pipefail

work=$1
cd "$work" || exit 1
# shellcheck source=/dev/null
. ./scale.env
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"

ip link show tunl0 >/dev/null 2>&1 || fail "the ipip module is not loaded (no tunl0)"
# A thousand BGP sessions and listeners in one process, beside etcd's clients.
ulimit -n 65536 || fail "raising the open-file limit"
# The simulated nodes' permanent ARP entries and a thousand routes fit the defaults; the
# speakers' 1,000 addresses on one interface need nothing more.
# Under TCG a daemon's start takes many times what it takes on the machine (margay-bgpd with
# 999 peers took over 15 s, the lab's own limit).
log "running: $CMD"
MARGAY_LAB_SLOWDOWN=20 MARGAY_FELIX_POLICY=off bash -c "$CMD" > result.txt 2> felix-scale.log
rc=$?
[ "$rc" -eq 0 ] || fail "the command exited with status $rc: $(tail -5 felix-scale.log)"
echo done > status
log "done after ${SECONDS} s: $(tr '\n' ' ' < result.txt)"
