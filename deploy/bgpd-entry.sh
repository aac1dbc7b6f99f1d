#!/bin/bash
# margay-bgpd-entry: the command of the margay-node DaemonSet's bgpd container.
#
# The networking backend (MARGAY_NETWORKING_BACKEND, else calico-node's
# CALICO_NETWORKING_BACKEND, else bird) decides whether margay-bgpd runs:
#   bird         exec margay-bgpd with the remaining arguments;
#   vxlan, none  no BGP: margay-bgpd is not started (margay-felix registers the Node and
#                routes every VXLAN block from IPAM); the container idles until SIGTERM.
#
#   margay-bgpd-entry run [BGPD-ARGS...]
#   margay-bgpd-entry probe PATH PORT   the container's probes: GET http://127.0.0.1:PORT/PATH
#                                       must answer 200 under bird; always passes otherwise.
#
# bash for /dev/tcp (the image has no HTTP client). MARGAY_BGPD_BIN overrides the daemon's
# path (tests).
set -eu

backend=${MARGAY_NETWORKING_BACKEND:-${CALICO_NETWORKING_BACKEND:-bird}}
backend=$(printf '%s' "$backend" | tr '[:upper:]' '[:lower:]')
case "$backend" in
  bird | vxlan | none) ;;
  *)
    echo "margay-bgpd-entry: networking backend '$backend' is not bird, vxlan or none" >&2
    exit 2
    ;;
esac
bgpd=${MARGAY_BGPD_BIN:-/usr/local/bin/margay-bgpd}

cmd=${1:-run}
[ $# -gt 0 ] && shift
case "$cmd" in
  run)
    if [ "$backend" = bird ]; then
      exec "$bgpd" "$@"
    fi
    echo "margay-bgpd-entry: networking backend $backend: margay-bgpd is not started" >&2
    idle=
    trap '[ -n "$idle" ] && kill "$idle" 2>/dev/null; exit 0' TERM INT
    while :; do
      sleep 3600 &
      idle=$!
      wait "$idle" || true
    done
    ;;
  probe)
    path=${1:?probe PATH PORT}
    port=${2:?probe PATH PORT}
    [ "$backend" = bird ] || exit 0
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: bgpd\r\n\r\n' "$path" >&3
    read -r _ code _ <&3 || exit 1
    [ "$code" = 200 ]
    ;;
  *)
    echo "usage: margay-bgpd-entry run [ARGS...] | probe PATH PORT" >&2
    exit 2
    ;;
esac
