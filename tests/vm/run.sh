#!/usr/bin/env bash
# Boots the IPIP test VM: Debian's kernel and the initramfs from tests/vm/prepare.sh, this
# machine's root shared read-only over 9p, WORK_DIR shared writable at the same path, and runs
# SCRIPT (a path on this machine) inside with bash; the VM powers off when it returns. The serial
# console is this script's stdout. qemu replaces this shell (exec), so its PID is this PID:
# stop a hung VM with kill on it.
#
#   tests/vm/run.sh SCRIPT WORK_DIR
#
# KVM is used when /dev/kvm works, TCG otherwise. MARGAY_VM_MEM (MiB, default 1024) and
# MARGAY_VM_CPUS (default 2) size the VM.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 SCRIPT WORK_DIR" >&2; exit 2; }
script=$(realpath "$1")
work=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
command -v qemu-system-x86_64 >/dev/null ||
  { echo "run.sh: qemu-system-x86_64 not found (Debian package qemu-system-x86; run scripts/install-deps.sh)" >&2; exit 1; }
[ -f "$script" ] || { echo "run.sh: no script $script" >&2; exit 1; }
[ -d "$work" ] || { echo "run.sh: no directory $work" >&2; exit 1; }
case "$script$work" in *' '*) echo "run.sh: paths with spaces are not supported" >&2; exit 1 ;; esac

# Directories the VM must see at their own paths even where its tmpfs hides the host's (a
# checkout or a target dir under /tmp): the repository, plus MARGAY_VM_SHARES (space-separated).
repo=$(cd "$here/../.." && pwd)
shares=()
for d in "$repo" ${MARGAY_VM_SHARES:-}; do
  case "$d" in /*) ;; *) echo "run.sh: share $d is not an absolute path" >&2; exit 1 ;; esac
  case "$d" in *,*) echo "run.sh: share $d has a comma" >&2; exit 1 ;; esac
  [ -d "$d" ] || { echo "run.sh: no directory $d to share" >&2; exit 1; }
  case " ${shares[*]:-} " in *" $d "*) ;; *) shares+=("$d") ;; esac
done
share_args=()
for i in "${!shares[@]}"; do
  share_args+=(-virtfs "local,path=${shares[$i]},mount_tag=ro$i,security_model=none,readonly=on,multidevs=remap")
done
share_list=$(IFS=,; echo "${shares[*]}")

paths=$("$here/prepare.sh")
kernel=$(sed -n 's/^KERNEL=//p' <<<"$paths")
initrd=$(sed -n 's/^INITRD=//p' <<<"$paths")

# KVM needs /dev/kvm and the CPU's virtualization flag: a nested guest can have a /dev/kvm whose
# VMs never run (they hang without output), so without vmx/svm it is TCG. MARGAY_VM_ACCEL
# (kvm or tcg) overrides.
accel=${MARGAY_VM_ACCEL:-tcg}
if [ -z "${MARGAY_VM_ACCEL:-}" ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
  grep -qwE 'vmx|svm' /proc/cpuinfo; then
  accel=kvm
fi

exec qemu-system-x86_64 \
  -machine q35 -accel "$accel" -cpu max \
  -m "${MARGAY_VM_MEM:-1024}" -smp "${MARGAY_VM_CPUS:-2}" \
  -nodefaults -no-user-config -display none -serial stdio -monitor none -no-reboot \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=4 margay.work=$work margay.run=$script margay.shares=$share_list" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$work",mount_tag=work,security_model=none,multidevs=remap \
  "${share_args[@]}" \
  </dev/null
