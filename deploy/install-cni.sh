#!/bin/sh
# margay-install-cni: installs margay's CNI plugin and network configuration on the host.
#
# Runs as the `install-cni` init container of the margay-node DaemonSet, with the host's
# /opt/cni/bin and /etc/cni/net.d mounted at /host/opt/cni/bin and /host/etc/cni/net.d.
# POSIX sh plus cp, mv, rm, mkdir, chmod, sed, grep, sort, tr: nothing else from the image.
#
#   1. copies the `margay` plugin into the CNI bin directory (replacing an older copy
#      atomically, so kubelet never executes a half-written file), and `portmap` when the
#      host has none (a distribution's own portmap is left alone);
#   2. fills the conflist template (CNI_NETWORK_CONFIG) with this node's name and the MTU
#      and writes it as CNI_NET_DIR/CNI_CONF_NAME, again by rename.
#
# Environment (defaults in brackets):
#   NODENAME                 this node's name (the pod's spec.nodeName)          [required]
#   CNI_MTU                  MTU of the pods' interfaces                          [required]
#   CNI_NETWORK_CONFIG       the conflist template with __NODENAME__ and __MTU__  [required]
#   CNI_BIN_DIR              [/host/opt/cni/bin]
#   CNI_NET_DIR              [/host/etc/cni/net.d]
#   CNI_CONF_NAME            [10-margay.conflist]
#   MARGAY_CNI_PLUGIN        the plugin in the image        [/usr/local/bin/margay]
#   PORTMAP_PLUGIN           portmap in the image           [/usr/lib/cni/portmap]
set -eu

fail() {
  echo "install-cni: $*" >&2
  exit 1
}

CNI_BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
CNI_CONF_NAME=${CNI_CONF_NAME:-10-margay.conflist}
MARGAY_CNI_PLUGIN=${MARGAY_CNI_PLUGIN:-/usr/local/bin/margay}
PORTMAP_PLUGIN=${PORTMAP_PLUGIN:-/usr/lib/cni/portmap}

[ -n "${NODENAME:-}" ] || fail "NODENAME is not set (the DaemonSet sets it from spec.nodeName)"
[ -n "${CNI_MTU:-}" ] || fail "CNI_MTU is not set (veth_mtu in the margay-config ConfigMap)"
[ -n "${CNI_NETWORK_CONFIG:-}" ] || fail "CNI_NETWORK_CONFIG is not set (cni_network_config in margay-config)"

# A node name is a DNS subdomain (RFC 1123): lower-case letters, digits, '-' and '.'. Checking
# it here also keeps it safe to put into sed's replacement and into a JSON string.
case $NODENAME in
  *[!a-z0-9.-]* | [!a-z0-9]* | *[!a-z0-9]) fail "NODENAME '$NODENAME' is not a valid node name" ;;
esac
[ "${#NODENAME}" -le 253 ] || fail "NODENAME is longer than 253 characters"
case $CNI_MTU in
  '' | *[!0-9]*) fail "CNI_MTU '$CNI_MTU' is not a number" ;;
esac
[ "$CNI_MTU" -ge 576 ] && [ "$CNI_MTU" -le 9216 ] ||
  fail "CNI_MTU $CNI_MTU is outside 576..9216"
[ -x "$MARGAY_CNI_PLUGIN" ] || fail "the plugin $MARGAY_CNI_PLUGIN is missing from the image"

mkdir -p "$CNI_BIN_DIR" "$CNI_NET_DIR"

# install SRC NAME: copy next to the target, then rename over it. cp onto a binary kubelet is
# running fails with "text file busy"; a rename replaces it safely.
install_plugin() {
  tmp="$CNI_BIN_DIR/.$2.margay-tmp"
  cp "$1" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$CNI_BIN_DIR/$2"
  echo "install-cni: installed $CNI_BIN_DIR/$2"
}

install_plugin "$MARGAY_CNI_PLUGIN" margay
if [ -e "$CNI_BIN_DIR/portmap" ]; then
  echo "install-cni: keeping the host's $CNI_BIN_DIR/portmap"
elif [ -x "$PORTMAP_PLUGIN" ]; then
  install_plugin "$PORTMAP_PLUGIN" portmap
else
  echo "install-cni: warning: no portmap plugin on the host or in the image; hostPort will not work" >&2
fi

conf="$CNI_NET_DIR/$CNI_CONF_NAME"
tmp="$CNI_NET_DIR/.$CNI_CONF_NAME.margay-tmp"
printf '%s\n' "$CNI_NETWORK_CONFIG" |
  sed -e "s/__NODENAME__/$NODENAME/g" -e "s/__MTU__/$CNI_MTU/g" >"$tmp"
if grep -q '__[A-Z0-9_]*__' "$tmp"; then
  left=$(grep -o '__[A-Z0-9_]*__' "$tmp" | sort -u | tr '\n' ' ')
  rm -f "$tmp"
  fail "the conflist template has placeholders this script does not fill: $left"
fi
chmod 0644 "$tmp"
mv -f "$tmp" "$conf"
echo "install-cni: wrote $conf for node $NODENAME (MTU $CNI_MTU)"
