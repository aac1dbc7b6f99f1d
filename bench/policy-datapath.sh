#!/bin/sh
# Policy data-path benchmark (issue 16 §6): iperf3 (Debian's) TCP throughput, a 1-byte TCP
# request/response rate on one connection, and the same with a new connection per exchange,
# between two pods of one node, with no policy and with 1,000 policies selecting other
# endpoints plus 100 selecting these two; ROUNDS (default 6) interleaved rounds, each figure's
# median and range. Prints Markdown tables and the load average before and after.
set -eu
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
# debug profile: the same build the tests use (nft and the kernel do the work measured)
echo "machine: $(uname -srm), $(nproc) cores, $(iperf3 --version | head -1)"
echo "before: $(uptime)"
cargo test -p margay-felix --test policy_bench datapath -- --ignored --nocapture 2>&1 \
  | grep '^|'
echo "after: $(uptime)"
