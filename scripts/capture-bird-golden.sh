#!/usr/bin/env bash
# Captures real BGP messages between two BIRD 2 daemons and writes them, one message per file,
# as hex into bgp/tests/fixtures/bird/. The wire codec's golden tests decode these files.
#
# Two network namespaces joined by a veth pair; daemon A originates static routes with
# communities, large communities, MED, LOCAL_PREF and a long AS path; daemon B only listens.
# Sessions (A -> B), each on its own address pair so every TCP flow maps to one session:
#   ibgp4  iBGP AS 65000,           IPv4 transport, ipv4 channel
#   ibgp6  iBGP AS 65000,           IPv6 transport, ipv6 channel
#   ebgp4  eBGP 4200000001 -> 65010, IPv4 transport, ipv4 channel, 4-octet AS
#   ebgp6  eBGP 4200000001 -> 65010, IPv6 transport, ipv6 channel (global + link-local next hop)
#   as2    eBGP 65001 -> 65020,      IPv4 transport, 4-octet AS disabled on both sides
# At the end B asks A for a route refresh on ibgp4 and A shuts ibgp4 down (NOTIFICATION).
#
# Usage: scripts/capture-bird-golden.sh [output-dir]   (root; needs bird, birdc, tcpdump, python3)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../bgp/tests/fixtures/bird}"
tag="mgcap-$$"
nsa="$tag-a"
nsb="$tag-b"
veth_a="mgc$$a"
veth_b="mgc$$b"
tmp="$(mktemp -d /tmp/$tag.XXXXXX)"
pids=()

cleanup() {
    set +e
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null
    done
    for f in "$tmp"/bird-a.pid "$tmp"/bird-b.pid; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    sleep 0.5
    ip netns del "$nsa" 2>/dev/null
    ip netns del "$nsb" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

ip netns add "$nsa"
ip netns add "$nsb"
ip link add "$veth_a" type veth peer name "$veth_b"
ip link set "$veth_a" netns "$nsa"
ip link set "$veth_b" netns "$nsb"
ip -n "$nsa" link set lo up
ip -n "$nsb" link set lo up
for addr in 10.99.0.1/24 10.99.1.1/24 10.99.2.1/24; do ip -n "$nsa" addr add "$addr" dev "$veth_a"; done
for addr in 10.99.0.2/24 10.99.1.2/24 10.99.2.2/24; do ip -n "$nsb" addr add "$addr" dev "$veth_b"; done
ip -n "$nsa" addr add fd00:99::1/64 dev "$veth_a" nodad
ip -n "$nsa" addr add fd00:99:1::1/64 dev "$veth_a" nodad
ip -n "$nsb" addr add fd00:99::2/64 dev "$veth_b" nodad
ip -n "$nsb" addr add fd00:99:1::2/64 dev "$veth_b" nodad
ip -n "$nsa" link set "$veth_a" up
ip -n "$nsb" link set "$veth_b" up

# Wait for the link-local addresses to leave DAD (BIRD sends them as the second IPv6 next hop).
for _ in $(seq 1 50); do
    if ! ip -n "$nsa" -6 addr show dev "$veth_a" | grep tentative >/dev/null &&
        ! ip -n "$nsb" -6 addr show dev "$veth_b" | grep tentative >/dev/null; then
        break
    fi
    sleep 0.1
done

cat >"$tmp/bird-a.conf" <<CONF
router id 10.99.0.1;
log "$tmp/bird-a.log" all;
protocol device { scan time 1; }
protocol static st4 {
    ipv4;
    route 10.200.0.0/24 blackhole;
    route 10.200.1.0/26 blackhole;
    route 10.200.2.5/32 blackhole;
    route 10.201.0.0/16 blackhole;
}
protocol static st6 {
    ipv6;
    route fd00:200::/64 blackhole;
    route fd00:200:1::/48 blackhole;
    route fd00:200:2::5/128 blackhole;
}
# Attributes by prefix, the same on every session (LOCAL_PREF only reaches iBGP peers).
filter tag_routes {
    if net = 10.200.0.0/24 || net = fd00:200::/64 then {
        bgp_community.add((65000,100));
        bgp_community.add((65000,200));
        bgp_large_community.add((4200000001,1,2));
        bgp_med = 50;
        bgp_local_pref = 300;
    }
    if net = 10.200.1.0/26 || net = fd00:200:1::/48 then {
        bgp_origin = ORIGIN_INCOMPLETE;
        bgp_path.prepend(4200000005);
        bgp_path.prepend(64512);
        bgp_community.add((65535,65281));
    }
    if net = 10.201.0.0/16 then {
        bgp_large_community.add((65000,7,8));
        bgp_large_community.add((65000,9,10));
    }
    accept;
}
template bgp tmpl {
    connect delay time 1;
    connect retry time 2;
    hold time 90;
}
protocol bgp ibgp4 from tmpl {
    local 10.99.0.1 as 65000;
    neighbor 10.99.0.2 as 65000;
    ipv4 { import all; export filter tag_routes; };
}
protocol bgp ibgp6 from tmpl {
    local fd00:99::1 as 65000;
    neighbor fd00:99::2 as 65000;
    ipv6 { import all; export filter tag_routes; };
}
protocol bgp ebgp4 from tmpl {
    local 10.99.1.1 as 4200000001;
    neighbor 10.99.1.2 as 65010;
    ipv4 { import all; export filter tag_routes; };
}
protocol bgp ebgp6 from tmpl {
    local fd00:99:1::1 as 4200000001;
    neighbor fd00:99:1::2 as 65010;
    interface "$veth_a";
    ipv6 { import all; export filter tag_routes; };
}
protocol bgp as2 from tmpl {
    local 10.99.2.1 as 65001;
    neighbor 10.99.2.2 as 65020;
    enable as4 off;
    ipv4 { import all; export filter tag_routes; };
}
CONF

cat >"$tmp/bird-b.conf" <<CONF
router id 10.99.0.2;
log "$tmp/bird-b.log" all;
protocol device { scan time 1; }
template bgp tmpl {
    passive on;
    hold time 90;
}
protocol bgp ibgp4 from tmpl {
    local 10.99.0.2 as 65000;
    neighbor 10.99.0.1 as 65000;
    ipv4 { import all; export none; };
}
protocol bgp ibgp6 from tmpl {
    local fd00:99::2 as 65000;
    neighbor fd00:99::1 as 65000;
    ipv6 { import all; export none; };
}
protocol bgp ebgp4 from tmpl {
    local 10.99.1.2 as 65010;
    neighbor 10.99.1.1 as 4200000001;
    ipv4 { import all; export none; };
}
protocol bgp ebgp6 from tmpl {
    local fd00:99:1::2 as 65010;
    neighbor fd00:99:1::1 as 4200000001;
    interface "$veth_b";
    ipv6 { import all; export none; };
}
protocol bgp as2 from tmpl {
    local 10.99.2.2 as 65020;
    neighbor 10.99.2.1 as 65001;
    enable as4 off;
    ipv4 { import all; export none; };
}
CONF

ip netns exec "$nsa" tcpdump -i "$veth_a" -U -s 0 -w "$tmp/bgp.pcap" 'tcp port 179' 2>"$tmp/tcpdump.log" &
pids+=($!)
sleep 1

ip netns exec "$nsb" bird -c "$tmp/bird-b.conf" -s "$tmp/bird-b.sock" -P "$tmp/bird-b.pid"
ip netns exec "$nsa" bird -c "$tmp/bird-a.conf" -s "$tmp/bird-a.sock" -P "$tmp/bird-a.pid"

established=0
for _ in $(seq 1 60); do
    n="$(birdc -s "$tmp/bird-b.sock" show protocols | grep -c Established || true)"
    if [ "$n" -eq 5 ]; then
        established=1
        break
    fi
    sleep 0.5
done
if [ "$established" -ne 1 ]; then
    echo "sessions did not come up:" >&2
    birdc -s "$tmp/bird-b.sock" show protocols >&2 || true
    cat "$tmp/bird-a.log" >&2 || true
    exit 1
fi
sleep 2
birdc -s "$tmp/bird-b.sock" reload in ibgp4 >/dev/null
sleep 1
birdc -s "$tmp/bird-a.sock" disable ibgp4 >/dev/null
sleep 1
birdc -s "$tmp/bird-a.sock" down >/dev/null || true
birdc -s "$tmp/bird-b.sock" down >/dev/null || true
sleep 1
kill -INT "${pids[0]}"
wait "${pids[0]}" || true
pids=()

mkdir -p "$out"
rm -f "$out"/*.hex
python3 "$here/pcap-bgp-messages.py" "$tmp/bgp.pcap" "$out" \
    10.99.0.1=ibgp4 fd00:99::1=ibgp6 10.99.1.1=ebgp4 fd00:99:1::1=ebgp6 10.99.2.1=as2
echo "wrote $(ls "$out" | wc -l) messages to $out"
