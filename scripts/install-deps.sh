#!/usr/bin/env bash
# Installs every system package margay's build, tests and lab need on a fresh Debian machine.
# Idempotent: packages already present are skipped. Daemons from these packages (bird, etcd) are
# never started by the package manager: tests and the lab start their own copies in namespaces.
set -euo pipefail

PACKAGES=(
  protobuf-compiler   # protoc for tonic-prost-build and etcd-client
  libprotobuf-dev     # google/protobuf/*.proto that etcd-client's protos import
  openssl             # test CA and certificates for the etcd TLS tests
  iproute2            # ip netns / link / route for the lab
  iputils-ping        # ping between lab namespaces (L2 checks in the lab self-test)
  bird2               # BIRD 2: interop peer and benchmark reference
  frr                 # FRR: its bfdd is the second BFD interop peer (never started as a service)
  etcd-server         # the datastore the tests start on loopback
  tcpdump             # capturing golden bytes from BIRD
  nftables            # nft: felix programs natOutgoing with it (and its tests read it back)
  iperf3              # bench/policy-datapath.sh: pod-to-pod throughput with and without policy
  containernetworking-plugins  # reference CNI plugins in /usr/lib/cni: host-local (delegated IPAM tests), portmap, ptp
  iptables            # portmap (containernetworking-plugins 1.1.1) writes its DNAT rules with iptables
  procps              # ps / pgrep used by diagnostics
  psmisc
  jq
  curl                # HTTP health and metrics checks in the daemon suites
  bc                  # arithmetic in bench scripts
  qemu-system-x86     # the VM the IPIP test runs in (this kernel has no ipip; tests/vm/)
  wireguard-tools     # wg: felix configures the WireGuard device with it (wireguardEnabled)
  busybox-static      # PID 1 and tools of that VM's initramfs
  cpio                # packs the initramfs
  kmod                # modinfo: module dependencies of the VM's kernel
  python3-venv        # scripts/python-tools.sh: kubernetes-validate for the deploy/ manifest test
  podman              # the container runtime of the CNI plugin's podman test (4.3: CNI network backend)
  runc                # the OCI runtime that test's containers.conf names
  conmon              # podman's container monitor
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all system packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
# Keep package scripts from starting bird or etcd as system services.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
