#!/bin/sh
# Policy data-path benchmark (issue 16 §6): iperf3 (Debian's) TCP throughput and a 1-byte TCP
# request/response rate between two pods of one node, with no policy and with 1,000 policies
# selecting other endpoints plus 100 selecting these two. Prints a Markdown table.
set -eu
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
# debug profile: the same build the tests use (nft and the kernel do the work measured)
echo "machine: $(uname -srm), $(nproc) cores, $(iperf3 --version | head -1)"
cargo test -p margay-felix --test policy_bench datapath -- --ignored --nocapture 2>&1 \
  | grep '^|'
