#!/usr/bin/env bash
# Route-reflector throughput: BIRD 2 and margay-bgpd as the reflector, same topology, same run.
#
# In a private network namespace, the reflector under test listens on 198.18.0.1:179 (RFC 2544
# benchmarking range, never routed); margay-bgp-blast opens an injector session from 198.18.0.2 and two client
# sessions from 198.18.0.3 and .4 (all iBGP, all route reflector clients), injects N IPv4 /24s and
# reports the time from its first UPDATE to both clients holding every prefix. The reflector's
# peak RSS (VmHWM) is read from /proc before it is stopped.
#
# With RULES > 0, every session's export runs through a filter of RULES rules that never match
# (`reject` of 100.64.0.0/24, 100.64.1.0/24, ...; the injected prefixes are 1.0.0.0/24 onwards),
# so each route is checked against all of them: a BGPFilter `[[filters]]` table in margay, the
# equivalent `if net ~ ... then reject;` lines in BIRD.
#
# Usage: bench/rr-throughput.sh [COUNT] [which: both|bird|margay] [RULES]   (as root)
set -euo pipefail
COUNT=${1:-1000000}
WHICH=${2:-both}
RULES=${3:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
NS="mgbench-$$"
WORK=$(mktemp -d /tmp/mgbench.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "rr-throughput: run as root (it creates a network namespace)" >&2; exit 1; }
"$ROOT/scripts/install-deps.sh" >/dev/null
(cd "$ROOT" && cargo build --release -q -p margay-bench $( [ "$WHICH" = bird ] || echo -p margay-bgp ))
BLAST="$TARGET/release/margay-bgp-blast"
BGPD="$TARGET/release/margay-bgpd"

ip netns add "$NS"
ip -n "$NS" link set lo up
# A veth pair inside the namespace gives BIRD a connected route for the injector's next hop
# (iBGP next hops are resolved recursively; BIRD does not resolve through lo).
ip -n "$NS" link add mgbA type veth peer name mgbB
ip -n "$NS" addr add 198.18.0.1/24 dev mgbA
for a in 2 3 4; do ip -n "$NS" addr add 198.18.0.$a/24 dev mgbB; done
ip -n "$NS" link set mgbA up
ip -n "$NS" link set mgbB up

# The i-th never-matching rule's cidr.
rule_cidr() { echo "100.$((64 + $1 / 256)).$(($1 % 256)).0/24"; }

peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# Runs the blaster against the reflector with PID $1; prints "seconds peak_rss_kib".
measure() {
  local pid=$1 out
  out=$(ip netns exec "$NS" "$BLAST" --reflector 198.18.0.1 --injector 198.18.0.2 --clients 198.18.0.3 198.18.0.4 --count "$COUNT" --timeout 900 2>"$WORK/blast.log") || {
    echo "rr-throughput: blaster failed:" >&2; cat "$WORK/blast.log" >&2; return 1; }
  local secs rss
  secs=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$out")
  rss=$(peak_rss_kib "$pid")
  echo "$secs $rss"
}

run_bird() {
  local export="export all;"
  : > "$WORK/bird-filter.conf"
  if [ "$RULES" -gt 0 ]; then
    {
      echo "filter bench_rules {"
      for ((i = 0; i < RULES; i++)); do echo "  if net ~ $(rule_cidr $i) then reject;"; done
      echo "  accept;"
      echo "}"
    } > "$WORK/bird-filter.conf"
    export="export filter bench_rules;"
  fi
  cat > "$WORK/bird.conf" <<CONF
router id 198.18.0.1;
include "$WORK/bird-filter.conf";
protocol device { }
protocol direct { ipv4; interface "mgbA"; }
template bgp rrc {
  local 198.18.0.1 as 64512;
  rr client;
  rr cluster id 198.18.0.1;
  passive;
  hold time 240;
  ipv4 { import all; $export };
}
protocol bgp inj from rrc { neighbor 198.18.0.2 as 64512; }
protocol bgp c1 from rrc { neighbor 198.18.0.3 as 64512; }
protocol bgp c2 from rrc { neighbor 198.18.0.4 as 64512; }
CONF
  ip netns exec "$NS" bird -f -c "$WORK/bird.conf" -s "$WORK/bird.ctl" -P "$WORK/bird.pid" >"$WORK/bird.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  sleep 0.5
  local r; r=$(measure "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$r"
}

run_margay() {
  cat > "$WORK/bgpd.toml" <<CONF
router-id = "198.18.0.1"
asn = 64512
listen-address = "198.18.0.1"
cluster-id = "198.18.0.1"
socket = "$WORK/bgpd.sock"
http-port = 0
CONF
  for a in 2 3 4; do
    cat >> "$WORK/bgpd.toml" <<CONF
[[neighbors]]
address = "198.18.0.$a"
asn = 64512
passive = true
route-reflector-client = true
hold-time = 240
CONF
    [ "$RULES" -gt 0 ] && echo 'filters = ["bench"]' >> "$WORK/bgpd.toml"
  done
  if [ "$RULES" -gt 0 ]; then
    echo '[[filters]]' >> "$WORK/bgpd.toml"
    echo 'name = "bench"' >> "$WORK/bgpd.toml"
    for ((i = 0; i < RULES; i++)); do
      printf '[[filters.export-v4]]\naction = "reject"\nmatch-operator = "in"\ncidr = "%s"\n' "$(rule_cidr $i)"
    done >> "$WORK/bgpd.toml"
  fi
  ip netns exec "$NS" env MARGAY_LOG_LEVEL=warn "$BGPD" --config "$WORK/bgpd.toml" >"$WORK/bgpd.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  sleep 0.5
  local r; r=$(measure "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$r"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(bird --version 2>&1 | head -1)"
echo "command: bench/rr-throughput.sh $COUNT $WHICH $RULES"
if [ "$WHICH" = both ] || [ "$WHICH" = bird ]; then
  read -r bs br < <(run_bird)
  printf 'BIRD 2        time %8.3f s   peak RSS %8.1f MiB   %6.1f bytes/route\n' "$bs" "$(echo "$br/1024" | bc -l)" "$(echo "$br*1024/$COUNT" | bc -l)"
fi
if [ "$WHICH" = both ] || [ "$WHICH" = margay ]; then
  read -r ms mr < <(run_margay)
  printf 'margay-bgpd   time %8.3f s   peak RSS %8.1f MiB   %6.1f bytes/route\n' "$ms" "$(echo "$mr/1024" | bc -l)" "$(echo "$mr*1024/$COUNT" | bc -l)"
fi
if [ "$WHICH" = both ]; then
  printf 'ratio margay/BIRD: time %.2f, peak RSS %.2f\n' "$(echo "$ms/$bs" | bc -l)" "$(echo "$mr/$br" | bc -l)"
fi
