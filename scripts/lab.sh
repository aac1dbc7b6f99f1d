#!/usr/bin/env bash
# The local lab: a margay cluster in network namespaces on this machine. Installs the system
# packages, builds every binary the lab runs (margay-bgpd, margay-felix, the CNI plugin margay,
# margayctl, margay-lab; release), then runs margay-lab: etcd, margay-bgpd and margay-felix per
# node, a BIRD ToR, two pods per node through the CNI plugin, and a ping matrix.
# Needs root (it creates network namespaces).
#
#   sudo scripts/lab.sh                      # = up: build a 3-node mesh, report, remove it
#   sudo scripts/lab.sh up --nodes 5 --mode route-reflectors --pool-mode vxlan
#   sudo scripts/lab.sh up --keep            # leave it running, then:
#   sudo scripts/lab.sh status               # report on it again
#   sudo scripts/lab.sh down                 # remove it
#   sudo scripts/lab.sh --help               # every option
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "lab.sh: must run as root: the lab creates network namespaces and veths" >&2
  echo "lab.sh: (CAP_SYS_ADMIN, CAP_NET_ADMIN). Run: sudo scripts/lab.sh $*" >&2
  exit 1
fi

scripts/install-deps.sh

# sudo resets PATH; root's own rustup install is the usual place for cargo then.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "lab.sh: cargo not found. Install Rust (1.90 or newer, https://rustup.rs) for root," >&2
  echo "lab.sh: or run with the toolchain on PATH: sudo env PATH=\"\$PATH\" scripts/lab.sh" >&2
  exit 1
fi

echo "lab.sh: building margay-bgpd, margay-felix, margay (CNI), margayctl and margay-lab (release)"
cargo build --release -p margay-bgp -p margay-felix -p margay-cni -p margay-ctl -p margay-lab

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$PWD/$target_dir" ;;
esac
export MARGAY_BIN_DIR="$target_dir/release"

if [ $# -eq 0 ]; then
  set -- up
fi
exec "$MARGAY_BIN_DIR/margay-lab" "$@"
